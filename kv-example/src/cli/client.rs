//! The client side of the HTTP API: one request tried on each endpoint in
//! turn until one answers, within one deadline for the whole command.
//!
//! A node that is down (no connection), slow (no answer before the
//! deadline) or not serving (503 Unavailable, 504) makes the client try the
//! next endpoint, and start over from the first after a short pause, until
//! the deadline. Any other answer is final. Writes carry a client session
//! (`x-rafter-client`, `x-rafter-seq`, `shared/kv-api.md` section 4), so a
//! write retried on another node after an unknown outcome is applied once.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::time::{timeout_at, Instant};

/// How long one connection attempt may take: a stopped host on a network
/// that drops packets costs this much before the next endpoint is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The pause before trying every endpoint again.
const ROUND_PAUSE: Duration = Duration::from_millis(200);
/// Largest answer read (a scan of many keys is the big one); more is an
/// error rather than unbounded memory.
const ANSWER_BYTES_MAX: usize = 64 << 20;

/// Why a command failed, as its exit code tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// What was asked for does not exist (exit 3).
    NotFound(String),
    /// The cluster answered and said no: a bad request, a rule of the
    /// store, a membership change it refuses (exit 4).
    Refused(String),
    /// No endpoint gave an answer before the deadline: all down, or none
    /// serving (no leader, removed, stopped) (exit 5).
    Unreachable(String),
    /// Something on this side: a bad argument, an answer that does not
    /// parse (exit 1).
    Local(String),
}

/// Exit code: an error on this side (bad argument, unexpected answer).
pub const EXIT_ERROR: u8 = 1;
/// Exit code: the key (or node) does not exist.
pub const EXIT_NOT_FOUND: u8 = 3;
/// Exit code: the cluster refused the request.
pub const EXIT_REFUSED: u8 = 4;
/// Exit code: no endpoint answered (down, or not serving) before the
/// deadline; for `health`, some endpoint is not healthy.
pub const EXIT_UNREACHABLE: u8 = 5;
/// Exit code: `txn-cas` found a value other than the expected one.
pub const EXIT_COMPARE_FAILED: u8 = 6;

impl Failure {
    /// The process exit code of this failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::NotFound(_) => EXIT_NOT_FOUND,
            Failure::Refused(_) => EXIT_REFUSED,
            Failure::Unreachable(_) => EXIT_UNREACHABLE,
            Failure::Local(_) => EXIT_ERROR,
        }
    }

    /// What to tell the user.
    pub fn message(&self) -> &str {
        match self {
            Failure::NotFound(m) | Failure::Refused(m) | Failure::Unreachable(m) => m,
            Failure::Local(m) => m,
        }
    }
}

/// An answer that ends the tries.
#[derive(Debug)]
pub struct Answer {
    /// The endpoint that gave it.
    pub endpoint: String,
    /// Its status.
    pub status: StatusCode,
    /// Its body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Result<Value, Failure> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Failure::Local(format!(
                "{} answered {} with a body that is not JSON ({e}): {}",
                self.endpoint,
                self.status,
                String::from_utf8_lossy(&self.body)
            ))
        })
    }
}

/// The endpoints of one command and its deadline.
pub struct Endpoints {
    urls: Vec<String>,
    client: Client<HttpConnector, Full<Bytes>>,
    deadline: Instant,
    /// The session id writes carry (random per command: one command, one
    /// write, sequence number 1).
    session_client: u64,
    /// Set when a try that was not answered finally may have reached a
    /// node (no answer, 503, 504): its effect is unknown. Membership
    /// changes carry no session, so they check the configuration then.
    uncertain: std::sync::atomic::AtomicBool,
}

impl Endpoints {
    /// `urls` (`http://host:port` or `host:port`), all tried before
    /// `timeout` from now.
    pub fn new(urls: &[String], timeout: Duration) -> Result<Self, Failure> {
        let urls: Vec<String> = urls
            .iter()
            .map(|u| u.trim().trim_end_matches('/'))
            .filter(|u| !u.is_empty())
            .map(|u| {
                if u.starts_with("http://") {
                    Ok(u.to_owned())
                } else if u.contains("://") {
                    Err(Failure::Local(format!(
                        "endpoint {u:?}: only http:// is served"
                    )))
                } else {
                    Ok(format!("http://{u}"))
                }
            })
            .collect::<Result<_, _>>()?;
        if urls.is_empty() {
            return Err(Failure::Local("--endpoints lists no endpoint".into()));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        Ok(Self {
            urls,
            client: Client::builder(TokioExecutor::new()).build(connector),
            deadline: Instant::now() + timeout,
            session_client: random_u64().max(1),
            uncertain: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// A read: `method path` with `body`, tried on each endpoint in turn.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, Failure> {
        self.call(method, path, body, false).await
    }

    /// A write: as [`Endpoints::request`], with the command's session, so a
    /// retry on another endpoint is applied at most once.
    pub async fn write(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, Failure> {
        self.call(method, path, body, true).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        session: bool,
    ) -> Result<Answer, Failure> {
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let mut reasons: Vec<String> = Vec::new();
        loop {
            for url in &self.urls {
                let reason = match self
                    .try_one(url, method.clone(), path, body.clone(), session)
                    .await
                {
                    Ok(answer) if !retriable(answer.status) => return classify(answer),
                    Ok(answer) => {
                        self.set_uncertain();
                        format!("answered {}: {}", answer.status, error_message(&answer))
                    }
                    Err(reason) => {
                        if !reason.starts_with(NOT_SENT) {
                            self.set_uncertain();
                        }
                        reason
                    }
                };
                // One reason per endpoint: its latest.
                reasons.retain(|r| !r.starts_with(&format!("{url}: ")));
                reasons.push(format!("{url}: {reason}"));
                if Instant::now() >= self.deadline {
                    return Err(Failure::Unreachable(format!(
                        "no endpoint answered in time ({})",
                        reasons.join("; ")
                    )));
                }
            }
            let pause = (Instant::now() + ROUND_PAUSE).min(self.deadline);
            tokio::time::sleep_until(pause).await;
        }
    }

    /// Whether an earlier try of this command may have taken effect
    /// without an answer.
    pub fn uncertain(&self) -> bool {
        self.uncertain.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn set_uncertain(&self) {
        self.uncertain
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// One request to each endpoint (no retries): for `status` and
    /// `health`, which describe every endpoint.
    pub async fn each(&self, path: &str) -> Vec<(String, Result<Answer, String>)> {
        let tries = self.urls.iter().map(|url| async move {
            let result = self
                .try_one(url, Method::GET, path, Bytes::new(), false)
                .await;
            (url.clone(), result)
        });
        futures::future::join_all(tries).await
    }

    /// One request to `url`: its answer, whatever the status, or why there
    /// is none.
    async fn try_one(
        &self,
        url: &str,
        method: Method,
        path: &str,
        body: Bytes,
        session: bool,
    ) -> Result<Answer, String> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{url}{path}"))
            .header("content-type", "application/json");
        if session {
            request = request
                .header("x-rafter-client", self.session_client)
                .header("x-rafter-seq", 1);
        }
        let request = match request.body(Full::new(body)) {
            Ok(request) => request,
            Err(error) => return Err(format!("bad request: {error}")),
        };
        let response = match timeout_at(self.deadline, self.client.request(request)).await {
            Err(_) => return Err("no answer before the deadline".into()),
            Ok(Err(error)) if error.is_connect() => {
                return Err(format!("{NOT_SENT} ({})", source_text(&error)))
            }
            Ok(Err(error)) => return Err(format!("no answer ({})", source_text(&error))),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        let collected = timeout_at(
            self.deadline,
            Limited::new(response.into_body(), ANSWER_BYTES_MAX).collect(),
        )
        .await;
        let body = match collected {
            Err(_) => return Err("answer cut by the deadline".into()),
            Ok(Err(error)) => return Err(format!("answer unreadable ({error})")),
            Ok(Ok(body)) => body.to_bytes(),
        };
        Ok(Answer {
            endpoint: url.to_owned(),
            status,
            body,
        })
    }
}

/// How the reason of a try that reached no node begins.
const NOT_SENT: &str = "cannot connect";

/// Statuses that mean "this node cannot answer now; another may":
/// 503 (no leader, removed, stopped), 504 (deadline), 429 (overloaded).
fn retriable(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
            | StatusCode::TOO_MANY_REQUESTS
    )
}

/// 2xx is an answer; 404 is "not found"; any other status is a refusal
/// with the cluster's message.
fn classify(answer: Answer) -> Result<Answer, Failure> {
    if answer.status.is_success() {
        Ok(answer)
    } else if answer.status == StatusCode::NOT_FOUND {
        Err(Failure::NotFound(error_message(&answer)))
    } else {
        Err(Failure::Refused(format!(
            "{} answered {}: {}",
            answer.endpoint,
            answer.status,
            error_message(&answer)
        )))
    }
}

/// The `message` of an error body (etcd's gateway shape, or `/health`'s
/// `reason`), else the body as text.
pub fn error_message(answer: &Answer) -> String {
    let parsed: Option<Value> = serde_json::from_slice(&answer.body).ok();
    parsed
        .as_ref()
        .and_then(|v| v.get("message").or_else(|| v.get("reason")))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(&answer.body).trim().to_owned())
}

fn source_text(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text = format!("{text}: {inner}");
        source = inner.source();
    }
    text
}

/// A random u64 from the standard library's per-process hash keys (no RNG
/// dependency for one session id).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}
