//! Linearizable reads served by a follower (Raft dissertation §6.4, as
//! etcd's followers serve them): the follower asks the leader for a read
//! index (`POST /internal/read-index`, answered by `Raft::read_index`),
//! waits until it has applied up to it, then reads its own state. One
//! request serves every read that arrived before it was sent: reads that
//! arrive while one is out wait for the next, so each read's index is taken
//! after the read began, which is what makes it linearizable.

use axum::http::{Method, Request, StatusCode, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

use crate::forward_proposals::Forwarded;
use crate::metrics::ServiceMetrics;

/// The internal route.
pub const READ_INDEX_PATH: &str = "/internal/read-index";
/// Reads waiting for the next read index; a full queue makes the read's
/// handler wait (backpressure), within its deadline.
const QUEUE_MAX: usize = 65_536;

struct Waiting {
    leader: String,
    answer: oneshot::Sender<Result<u64, Forwarded>>,
}

/// The follower's side: cheap to clone.
#[derive(Debug, Clone)]
pub struct ReadIndexClient {
    queue: mpsc::Sender<Waiting>,
}

impl ReadIndexClient {
    /// Starts the task that asks the leader.
    pub fn start(metrics: Arc<ServiceMetrics>) -> Self {
        let (queue, waiting) = mpsc::channel(QUEUE_MAX);
        let client = crate::forward::peer_client();
        tokio::spawn(ask_loop(waiting, client, metrics));
        Self { queue }
    }

    /// A read index from the leader at `leader`, taken after this call.
    pub async fn read_index(&self, leader: String) -> Result<u64, Forwarded> {
        let (answer, answered) = oneshot::channel();
        if self.queue.send(Waiting { leader, answer }).await.is_err() {
            return Err(Forwarded::Unknown("the node is stopping".into()));
        }
        answered
            .await
            .unwrap_or_else(|_| Err(Forwarded::Unknown("the read-index task stopped".into())))
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn ask_loop(
    mut waiting: mpsc::Receiver<Waiting>,
    client: HttpClient,
    metrics: Arc<ServiceMetrics>,
) {
    let mut held: Option<Waiting> = None;
    loop {
        let first = match held.take() {
            Some(first) => first,
            None => match waiting.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let leader = first.leader.clone();
        let mut answers = vec![first.answer];
        loop {
            match waiting.try_recv() {
                Ok(next) if next.leader == leader => answers.push(next.answer),
                Ok(next) => {
                    held = Some(next);
                    break;
                }
                Err(_) => break,
            }
        }
        metrics.read_index.inc();
        let result = ask(&client, &leader).await;
        for answer in answers {
            let _ = answer.send(match &result {
                Ok(index) => Ok(*index),
                Err(error) => Err(error.clone()),
            });
        }
    }
}

async fn ask(client: &HttpClient, leader: &str) -> Result<u64, Forwarded> {
    let uri: Uri = format!("http://{leader}{READ_INDEX_PATH}")
        .parse()
        .map_err(|e| Forwarded::Unknown(format!("leader address {leader:?}: {e}")))?;
    let request = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .body(Full::new(Bytes::new()))
        .map_err(|e| Forwarded::Unknown(e.to_string()))?;
    let response = match client.request(request).await {
        Ok(response) => response,
        Err(error) if error.is_connect() => return Err(Forwarded::Retry),
        Err(error) => {
            return Err(Forwarded::Retry).inspect_err(|_| {
                tracing::debug!(%error, leader, "read index request failed");
            })
        }
    };
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|_| Forwarded::Retry)?
        .to_bytes();
    match status {
        StatusCode::OK => std::str::from_utf8(&body)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .ok_or_else(|| Forwarded::Unknown("the leader's read index does not parse".into())),
        StatusCode::MISDIRECTED_REQUEST => Err(Forwarded::NotLeader),
        // A read changes nothing: any other failure may simply be retried.
        _ => Err(Forwarded::Retry),
    }
}
