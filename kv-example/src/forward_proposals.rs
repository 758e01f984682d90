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
/// Most bytes of one batch's body; also the leader's decode limit.
pub const BATCH_BYTES_MAX: usize = 16 << 20;
/// Batches in flight to the leader at once: while they are out, new writes
/// gather into the next batch.
const BATCHES_IN_FLIGHT_MAX: usize = 4;
/// Writes waiting to join a batch; a full queue makes the write's handler
/// wait (backpressure), within its deadline.
const QUEUE_MAX: usize = 65_536;
/// The leader's answer carries one response per command: far under this.
const ANSWER_BYTES_MAX: usize = 64 << 20;

/// Why a forwarded write got no response.
#[derive(Debug)]
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
    // A write taken while the batch for another leader filled up.
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
        let mut batch = vec![first];
        while batch.len() < BATCH_COMMANDS_MAX {
            match pending.try_recv() {
                Ok(next) if next.leader == leader => batch.push(next),
                Ok(next) => {
                    held = Some(next);
                    break;
                }
                Err(_) => break,
            }
        }
        metrics.forwarded_batches.inc();
        metrics.forwarded.inc_by(batch.len() as u64);
        let client = client.clone();
        tokio::spawn(async move {
            send_batch(&client, &leader, batch).await;
            drop(permit);
        });
    }
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
                let _ = answer.send(Err(failure.copy()));
            }
        }
    }
}

impl Forwarded {
    /// A copy (`ApiError` is cloned).
    pub fn copy(&self) -> Self {
        match self {
            Forwarded::NotLeader => Forwarded::NotLeader,
            Forwarded::Retry => Forwarded::Retry,
            Forwarded::Refused(e) => Forwarded::Refused(e.clone()),
            Forwarded::Unknown(s) => Forwarded::Unknown(s.clone()),
        }
    }
}

async fn exchange(
    client: &HttpClient,
    leader: &str,
    commands: &[KvCommand],
) -> Result<Vec<KvResponse>, Forwarded> {
    let body = codec::encode(commands);
    if body.len() > BATCH_BYTES_MAX {
        // Each command is under the request limit; a batch of big ones may
        // not be: refuse them all rather than split (rare, and retryable).
        return Err(Forwarded::Retry);
    }
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
