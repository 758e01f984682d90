//! Forwarding writes from a follower to the leader, batched: every write a
//! follower receives while a batch is on its way joins the next one, and
//! a batch is one binary request (`POST /internal/propose`, the commands
//! encoded with `rafter::codec`) that the leader proposes with one
//! `Raft::propose_many`, answering the responses once applied. So a
//! follower does not relay each HTTP request (parsing and rendering JSON
//! twice); at load, dozens of writes share one hop, as etcd's followers
//! forward proposals inside Raft.
//!
//! The internal route takes exactly what the public API takes (commands
//! built from it); it adds no authority, so it needs none of its own.

use axum::http::{Method, Request, StatusCode, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use rafter::codec;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::api::error::{code, ApiError};
use crate::command::{KvCommand, KvResponse};
use crate::metrics::ServiceMetrics;

/// The internal route.
pub const PROPOSE_PATH: &str = "/internal/propose";
/// Most commands in one batch (below `rafter::Config::proposal_batch_max`).
pub const BATCH_COMMANDS_MAX: usize = 1024;
/// A batch stops growing past this many bytes of encoded commands (a
/// single larger command travels alone).
const BATCH_BYTES_TARGET: usize = 4 << 20;
/// Most bytes of one batch's body, and the leader's decode limit: a batch
/// of target size plus one command of the largest request `serve` accepts
/// (`--max-request-bytes` is at most 64 MiB) and its encoding.
pub const BATCH_BYTES_MAX: usize = BATCH_BYTES_TARGET + (64 << 20) + (1 << 20);
/// Batches in flight to the leader at once: while they are out, new writes
/// gather into the next batch.
const BATCHES_IN_FLIGHT_MAX: usize = 4;
/// Writes waiting to join a batch; a full queue makes the write's handler
/// wait (backpressure), within its deadline.
const QUEUE_MAX: usize = 65_536;
/// The leader's answer carries one response per command: far under this.
const ANSWER_BYTES_MAX: usize = 64 << 20;

/// Why a forwarded write got no response.
#[derive(Debug, Clone)]
pub enum Forwarded {
    /// The node asked is not the leader: nothing was appended.
    NotLeader,
    /// Refused with nothing appended (leadership transfer, leader
    /// unreachable): try again.
    Retry,
    /// Refused for good, with the error to answer.
    Refused(ApiError),
    /// The outcome is unknown (the write may yet apply).
    Unknown(String),
}

struct Pending {
    leader: String,
    /// The command's encoded size.
    size: usize,
    command: KvCommand,
    answer: oneshot::Sender<Result<KvResponse, Forwarded>>,
}

/// The follower's side: cheap to clone.
#[derive(Debug, Clone)]
pub struct ProposalForwarder {
    queue: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("leader", &self.leader)
            .finish_non_exhaustive()
    }
}

impl ProposalForwarder {
    /// Starts the batching task.
    pub fn start(metrics: Arc<ServiceMetrics>) -> Self {
        let (queue, pending) = mpsc::channel(QUEUE_MAX);
        let client = crate::forward::peer_client();
        tokio::spawn(batch_loop(pending, client, metrics));
        Self { queue }
    }

    /// Sends `command` to the leader at `leader` (its HTTP address) with
    /// the next batch; resolves with its response once the leader applied
    /// it.
    pub async fn forward(
        &self,
        leader: String,
        command: KvCommand,
    ) -> Result<KvResponse, Forwarded> {
        let (answer, answered) = oneshot::channel();
        let pending = Pending {
            leader,
            size: codec::encode(&command).len(),
            command,
            answer,
        };
        if self.queue.send(pending).await.is_err() {
            return Err(Forwarded::Refused(ApiError::stopped(
                "the node is stopping",
            )));
        }
        answered
            .await
            .unwrap_or_else(|_| Err(Forwarded::Unknown("the forwarding task stopped".into())))
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn batch_loop(
    mut pending: mpsc::Receiver<Pending>,
    client: HttpClient,
    metrics: Arc<ServiceMetrics>,
) {
    let in_flight = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT_MAX));
    // A write taken that belongs to another leader, or did not fit in the
    // batch being made: it starts the next one.
    let mut held: Option<Pending> = None;
    loop {
        // Wait for a free slot first: writes keep gathering meanwhile.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let first = match held.take() {
            Some(first) => first,
            None => match pending.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let leader = first.leader.clone();
        let (batch, next) = fill_batch(first, || pending.try_recv().ok());
        held = next;
        metrics.forwarded_batches.inc();
        metrics.forwarded.inc_by(batch.len() as u64);
        let client = client.clone();
        tokio::spawn(async move {
            send_batch(&client, &leader, batch).await;
            drop(permit);
        });
    }
}

/// A batch led by `first`: the writes `next` yields for the same leader,
/// up to [`BATCH_COMMANDS_MAX`] and [`BATCH_BYTES_TARGET`] (a first write
/// larger than that travels alone); the write that did not fit, if any,
/// is returned to start the next batch.
fn fill_batch(
    first: Pending,
    mut next: impl FnMut() -> Option<Pending>,
) -> (Vec<Pending>, Option<Pending>) {
    let mut bytes = first.size;
    let mut batch = vec![first];
    while batch.len() < BATCH_COMMANDS_MAX && bytes < BATCH_BYTES_TARGET {
        let Some(write) = next() else { break };
        if write.leader != batch[0].leader || bytes + write.size > BATCH_BYTES_TARGET {
            return (batch, Some(write));
        }
        bytes += write.size;
        batch.push(write);
    }
    (batch, None)
}

/// Sends one batch and answers each of its writes.
async fn send_batch(client: &HttpClient, leader: &str, batch: Vec<Pending>) {
    let (commands, answers): (Vec<KvCommand>, Vec<_>) =
        batch.into_iter().map(|p| (p.command, p.answer)).unzip();
    let outcome = exchange(client, leader, &commands).await;
    match outcome {
        Ok(responses) if responses.len() == answers.len() => {
            for (answer, response) in answers.into_iter().zip(responses) {
                let _ = answer.send(Ok(response));
            }
        }
        Ok(responses) => {
            let reason = format!("{} responses to {} writes", responses.len(), answers.len());
            for answer in answers {
                let _ = answer.send(Err(Forwarded::Unknown(reason.clone())));
            }
        }
        Err(failure) => {
            for answer in answers {
                let _ = answer.send(Err(failure.clone()));
            }
        }
    }
}

async fn exchange(
    client: &HttpClient,
    leader: &str,
    commands: &[KvCommand],
) -> Result<Vec<KvResponse>, Forwarded> {
    let body = codec::encode(commands);
    debug_assert!(
        body.len() <= BATCH_BYTES_MAX,
        "a batch of {} bytes: batches are cut at {BATCH_BYTES_TARGET} plus one command",
        body.len()
    );
    let uri: Uri = format!("http://{leader}{PROPOSE_PATH}")
        .parse()
        .map_err(|e| {
            Forwarded::Refused(ApiError::new(
                code::INTERNAL,
                format!("leader address {leader:?}: {e}"),
            ))
        })?;
    let request = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header("content-type", "application/octet-stream")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| Forwarded::Refused(ApiError::new(code::INTERNAL, e.to_string())))?;
    let response = match client.request(request).await {
        Ok(response) => response,
        // Nothing reached the leader.
        Err(error) if error.is_connect() => return Err(Forwarded::Retry),
        Err(error) => return Err(Forwarded::Unknown(format!("leader {leader}: {error}"))),
    };
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| Forwarded::Unknown(format!("leader {leader}: {e}")))?
        .to_bytes();
    match status {
        StatusCode::OK => codec::decode(&body, ANSWER_BYTES_MAX)
            .map_err(|e| Forwarded::Unknown(format!("leader's answer does not decode: {e}"))),
        StatusCode::MISDIRECTED_REQUEST => Err(Forwarded::NotLeader),
        StatusCode::CONFLICT => Err(Forwarded::Retry),
        StatusCode::TOO_MANY_REQUESTS => Err(Forwarded::Refused(ApiError::too_many_requests())),
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::BAD_REQUEST => Err(Forwarded::Refused(
            ApiError::invalid(String::from_utf8_lossy(&body).into_owned()),
        )),
        _ => Err(Forwarded::Unknown(format!(
            "leader {leader} answered {status}: {}",
            String::from_utf8_lossy(&body)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::CommandV1;
    use crate::store::{DeleteRangeRequest, WriteRequest};

    fn write(leader: &str, size: usize) -> Pending {
        let command = KvCommand::V1(CommandV1 {
            session: None,
            time_ms: 0,
            request: WriteRequest::DeleteRange(DeleteRangeRequest::default()),
        });
        Pending {
            leader: leader.into(),
            size,
            command,
            answer: oneshot::channel().0,
        }
    }

    fn sizes(batch: &[Pending]) -> Vec<usize> {
        batch.iter().map(|p| p.size).collect()
    }

    /// A batch of big writes used to grow past what the leader decodes,
    /// and was then retried whole until its writes timed out.
    #[test]
    fn a_batch_is_cut_at_its_byte_target_and_big_writes_travel_alone() {
        const MIB: usize = 1 << 20;
        let mut queue = vec![write("a", 3 * MIB), write("a", 1024)].into_iter();
        let (batch, held) = fill_batch(write("a", 3 * MIB), || queue.next());
        assert_eq!(sizes(&batch), [3 * MIB]);
        assert_eq!(held.map(|p| p.size), Some(3 * MIB));

        let mut queue = vec![write("a", 1024)].into_iter();
        let (batch, held) = fill_batch(write("a", 17 * MIB), || queue.next());
        assert_eq!(sizes(&batch), [17 * MIB]);
        assert!(held.is_none());

        let mut queue = vec![
            write("a", 10),
            write("a", 20),
            write("b", 30),
            write("a", 40),
        ]
        .into_iter();
        let (batch, held) = fill_batch(write("a", 1), || queue.next());
        assert_eq!(sizes(&batch), [1, 10, 20]);
        assert_eq!(held.map(|p| p.leader), Some("b".to_owned()));
    }

    #[test]
    fn a_batch_holds_at_most_its_command_count() {
        let mut queue = (0..BATCH_COMMANDS_MAX + 5).map(|_| write("a", 1));
        let (batch, held) = fill_batch(write("a", 1), || queue.next());
        assert_eq!(batch.len(), BATCH_COMMANDS_MAX);
        assert!(held.is_none(), "the queue keeps the rest");
    }
}
