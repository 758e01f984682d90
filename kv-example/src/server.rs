//! The HTTP server: the router, the shared state behind every handler, and
//! the one rule that lets any node answer any request: run it here if this
//! node leads, else relay it to the leader, else wait for one until the
//! request's deadline (then 503, never a hang).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use bytes::Bytes;
use rafter::{NodeId, ProposeError, Raft, ReadError, Role};
use tokio::time::{sleep_until, timeout_at, Instant};

use crate::api::error::ApiError;
use crate::api::kv::ResponseHeader;
use crate::api::{cluster, etcd, plain};
use crate::cluster::MemberAddr;
use crate::command::{CommandV1, KvCommand, SessionTag, WriteOutcome};
use crate::forward::{self, ForwardError, Forwarder, HOPS_MAX};
use crate::http_layers::RequestMetricsLayer;
use crate::metrics::{ReasonLabels, ServiceMetrics};
use crate::state_machine::{KvReads, KvStateMachine};
use crate::store::StoreReader;
use crate::store::WriteRequest;

/// The longest pause between two looks for a leader while none is known.
const LEADER_POLL: Duration = Duration::from_millis(50);

/// What every handler shares. The Raft handle and the read handle are
/// internally synchronised, so no lock is taken on the request path.
pub struct AppState {
    /// The node.
    pub raft: Raft<KvStateMachine>,
    /// Reads of the applied state.
    pub reads: KvReads,
    /// This node's id (etcd's `member_id`).
    pub id: NodeId,
    /// The cluster's id.
    pub cluster_id: u64,
    /// The client that relays requests to the leader.
    pub forwarder: Forwarder,
    /// The metrics.
    pub metrics: Arc<ServiceMetrics>,
    /// Largest request body accepted (`--max-request-bytes`).
    pub request_bytes_max: usize,
    /// How long a request may wait for a leader and an answer.
    pub request_timeout: Duration,
}

/// The router of every route of `shared/kv-api.md`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v3/kv/put", post(etcd::put))
        .route("/v3/kv/range", post(etcd::range))
        .route("/v3/kv/deleterange", post(etcd::delete_range))
        .route("/v3/kv/txn", post(etcd::txn))
        .route("/v3/kv/compaction", post(etcd::compaction))
        .route("/kv", get(plain::scan))
        .route(
            "/kv/{*key}",
            get(plain::get).put(plain::put).delete(plain::delete),
        )
        .route("/health", get(cluster::health))
        .route("/cluster/status", get(cluster::status))
        .route("/cluster/learners", post(cluster::add_learner))
        .route("/cluster/promote", post(cluster::promote))
        .route("/cluster/members/{id}", delete(cluster::remove))
        .route("/cluster/transfer-leader", post(cluster::transfer_leader))
        .route("/cluster/digest", get(cluster::digest))
        .route("/metrics", get(cluster::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(RequestMetricsLayer::new(state.metrics.clone()))
        .with_state(state)
}

/// etcd's gateway answers an unknown route in plain text.
async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "Not Found\n")
}

/// And a known route with the wrong method too.
async fn method_not_allowed() -> (StatusCode, &'static str) {
    (StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n")
}

/// A request as it arrived, kept to relay it to the leader unchanged.
#[derive(Debug)]
pub struct Relay {
    /// Its method.
    pub method: Method,
    /// Its path and query.
    pub path_and_query: String,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

impl Relay {
    /// Reads a request's body (at most `limit` bytes: more is 413).
    pub async fn read(request: Request, limit: usize) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        // The cheap check first: a declared length over the limit is
        // refused before anything is read or allocated.
        let declared = parts
            .headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if let Some(declared) = declared.filter(|d| *d > limit) {
            return Err(ApiError::too_large(declared, limit));
        }
        let body = axum::body::to_bytes(body, limit).await.map_err(|e| {
            let over = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if over {
                ApiError::too_large(limit + 1, limit)
            } else {
                ApiError::invalid(format!("cannot read the request body: {e}"))
            }
        })?;
        Ok(Self {
            method: parts.method,
            path_and_query: parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
            headers: parts.headers,
            body,
        })
    }

    /// The session headers, if any (both or neither).
    pub fn session(&self) -> Result<Option<SessionTag>, ApiError> {
        let number = |name: &str| -> Result<Option<u64>, ApiError> {
            self.headers
                .get(name)
                .map(|v| {
                    v.to_str()
                        .ok()
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .ok_or_else(|| ApiError::invalid(format!("{name} must be a uint64")))
                })
                .transpose()
        };
        match (number("x-rafter-client")?, number("x-rafter-seq")?) {
            (None, None) => Ok(None),
            (Some(client), Some(seq)) => Ok(Some(SessionTag { client, seq })),
            _ => Err(ApiError::invalid(
                "x-rafter-client and x-rafter-seq go together",
            )),
        }
    }
}

/// What a routed request became.
#[derive(Debug)]
pub enum Routed<T> {
    /// This node led and produced `T`.
    Local(T),
    /// The leader answered; relay its response.
    Relayed(Response<Body>),
}

/// One try on the leader.
#[derive(Debug)]
pub enum Attempt<T> {
    /// The answer.
    Done(T),
    /// A definite failure to report.
    Failed(ApiError),
    /// Not the leader after all (or no longer): route again.
    NotLeader,
    /// Refused with nothing done (transfer in progress, entry
    /// overwritten): try again shortly.
    Retry,
}

impl AppState {
    /// The header of a response made now at `revision`.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.id,
            revision,
            raft_term: self.raft.metrics().borrow().term,
        }
    }

    /// A consistent view of the applied state.
    pub fn view(&self) -> Result<StoreReader, ApiError> {
        self.reads
            .view()
            .map_err(|e| ApiError::new(crate::api::error::code::INTERNAL, format!("store: {e}")))
    }

    /// Runs `attempt` on the leader: here if this node leads, else relays
    /// `relay` to the leader, else waits for one; all within the request
    /// timeout.
    pub async fn on_leader<T, F, Fut>(
        &self,
        relay: &Relay,
        mut attempt: F,
    ) -> Result<Routed<T>, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Attempt<T>>,
    {
        let deadline = Instant::now() + self.request_timeout;
        let hops = forward::hops(&relay.headers);
        let mut watch = self.raft.metrics();
        loop {
            let LeaderView {
                role,
                leader,
                leader_http,
            } = LeaderView::of(&mut watch)?;
            match leader {
                Some(leader) if leader == self.id && role == Role::Leader => {
                    match timeout_at(deadline, attempt()).await {
                        Err(_) => return Err(ApiError::timeout()),
                        Ok(Attempt::Done(value)) => return Ok(Routed::Local(value)),
                        Ok(Attempt::Failed(error)) => return Err(error),
                        Ok(Attempt::NotLeader) => {}
                        Ok(Attempt::Retry) => {
                            sleep_until((Instant::now() + Duration::from_millis(10)).min(deadline))
                                .await
                        }
                    }
                }
                Some(leader) if leader != self.id && hops < HOPS_MAX => {
                    if let Some(http) = leader_http {
                        self.metrics.forwarded.inc();
                        let sent = self.forwarder.forward(
                            &http,
                            relay.method.clone(),
                            &relay.path_and_query,
                            &relay.headers,
                            relay.body.clone(),
                            hops,
                        );
                        match timeout_at(deadline, sent).await {
                            Err(_) => return Err(ApiError::timeout()),
                            Ok(Ok(response)) => return Ok(Routed::Relayed(response)),
                            Ok(Err(ForwardError::NotSent(error))) => {
                                tracing::debug!(leader, %error, "leader unreachable; waiting");
                            }
                            Ok(Err(ForwardError::Unknown(error))) => {
                                tracing::debug!(leader, %error, "relay failed");
                                return Err(ApiError::timeout());
                            }
                        }
                    }
                }
                _ => {}
            }
            wait_for_change(&mut watch, deadline, leader, LEADER_POLL).await?;
        }
    }

    /// Proposes `request` and waits until it is applied here: on the
    /// leader directly; on a follower the core forwards it to the leader
    /// over the peer transport, batched with the node's other writes
    /// (`Config::forward_proposals`), and the answer comes from this node's
    /// own apply; while there is no leader, after waiting for one; all
    /// within the request timeout.
    pub async fn write(
        &self,
        relay: &Relay,
        request: WriteRequest,
    ) -> Result<Routed<WriteOutcome>, ApiError> {
        let session = relay.session()?;
        let deadline = Instant::now() + self.request_timeout;
        let mut watch = self.raft.metrics();
        loop {
            let LeaderView { role, leader, .. } = LeaderView::of(&mut watch)?;
            let attempt = if leader.is_some() {
                let command = KvCommand::V1(CommandV1 {
                    session,
                    time_ms: now_ms(),
                    request: request.clone(),
                });
                let leads = role == Role::Leader;
                if leads {
                    self.metrics.proposals.inc();
                } else {
                    self.metrics.forwarded.inc();
                }
                let proposed = std::time::Instant::now();
                let answer = timeout_at(deadline, self.raft.propose(command)).await;
                if let (true, Ok(Ok(_))) = (leads, &answer) {
                    self.metrics
                        .propose_seconds
                        .observe(proposed.elapsed().as_secs_f64());
                }
                match answer {
                    Err(_) => return Err(ApiError::timeout()),
                    Ok(Ok(Ok(outcome))) => return Ok(Routed::Local(outcome)),
                    Ok(Ok(Err(refused))) => return Err(refused.into()),
                    // A write with a session applies at most once, so one
                    // whose forwarded outcome is unknown is sent again: a
                    // duplicate is answered from the session.
                    Ok(Err(ProposeError::ForwardUnanswered { .. })) if session.is_some() => {
                        Attempt::Retry
                    }
                    Ok(Err(error)) => {
                        self.metrics
                            .proposals_failed
                            .get_or_create(&ReasonLabels {
                                reason: propose_error_name(&error).into(),
                            })
                            .inc();
                        propose_attempt::<()>(error)
                    }
                }
            } else {
                Attempt::NotLeader
            };
            if let Attempt::Failed(error) = attempt {
                return Err(error);
            }
            if Instant::now() >= deadline {
                return Err(if leader.is_some() {
                    ApiError::timeout()
                } else {
                    ApiError::no_leader()
                });
            }
            if matches!(attempt, Attempt::Retry) {
                sleep_until((Instant::now() + Duration::from_millis(10)).min(deadline)).await;
                continue;
            }
            let pause = (Instant::now() + LEADER_POLL).min(deadline);
            tokio::select! {
                _ = watch.changed() => {}
                _ = sleep_until(pause) => {}
            }
        }
    }

    /// Runs `read` on this node's state once it reflects every write
    /// acknowledged before the call: `Raft::linearizable_read` on any
    /// member (the leader confirms a read index with a heartbeat round; a
    /// follower asks the leader for one over the peer transport, both
    /// batched, then waits for its own apply); while there is no leader,
    /// after waiting for one.
    pub async fn linearizable<T, F>(&self, read: F) -> Result<Routed<T>, ApiError>
    where
        F: Fn() -> Result<T, ApiError>,
    {
        let deadline = Instant::now() + self.request_timeout;
        let mut watch = self.raft.metrics();
        loop {
            let leader = LeaderView::of(&mut watch)?.leader;
            if leader.is_some() {
                match timeout_at(deadline, self.raft.linearizable_read()).await {
                    Err(_) => return Err(ApiError::timeout()),
                    Ok(Ok(_)) => {
                        self.metrics.read_index.inc();
                        return read().map(Routed::Local);
                    }
                    // The leader changed or is not known yet: route again
                    // once the view changes.
                    Ok(Err(ReadError::NotLeader { .. } | ReadError::LeadershipLost)) => {}
                    Ok(Err(ReadError::Timeout(_))) => return Err(ApiError::timeout()),
                    Ok(Err(ReadError::Stopped)) => {
                        return Err(ApiError::stopped("the node stopped"))
                    }
                    Ok(Err(other)) => return Err(ApiError::stopped(other)),
                }
            }
            wait_for_change(&mut watch, deadline, leader, Duration::from_millis(10)).await?;
        }
    }
}

/// What routing needs of the node's metrics, read under a short borrow.
struct LeaderView {
    role: Role,
    leader: Option<NodeId>,
    /// The leader's HTTP address, from the configuration.
    leader_http: Option<String>,
}

impl LeaderView {
    /// The current view, marked seen; `Stopped` if the node stopped.
    fn of(watch: &mut rafter::MetricsWatch) -> Result<Self, ApiError> {
        let m = watch.borrow_and_update();
        if m.stopped {
            return Err(ApiError::stopped("the node stopped"));
        }
        let leader_http = m
            .leader
            .and_then(|l| m.membership.nodes.get(&l))
            .and_then(|a| MemberAddr::parse(a).ok())
            .map(|a| a.http);
        Ok(Self {
            role: m.role,
            leader: m.leader,
            leader_http,
        })
    }
}

/// Waits for the node's view to change, or `pause`, before routing again;
/// past `deadline`, the request's error: 503 "no leader" when none was
/// known, a timeout otherwise.
async fn wait_for_change(
    watch: &mut rafter::MetricsWatch,
    deadline: Instant,
    leader: Option<NodeId>,
    pause: Duration,
) -> Result<(), ApiError> {
    if Instant::now() >= deadline {
        return Err(if leader.is_some() {
            ApiError::timeout()
        } else {
            ApiError::no_leader()
        });
    }
    let until = (Instant::now() + pause).min(deadline);
    tokio::select! {
        _ = watch.changed() => {}
        _ = sleep_until(until) => {}
    }
    Ok(())
}

fn propose_attempt<T>(error: ProposeError) -> Attempt<T> {
    match error {
        ProposeError::NotLeader { .. } => Attempt::NotLeader,
        // Nothing was appended, or what was is provably gone: safe again.
        ProposeError::ProposalDropped { .. } | ProposeError::Overwritten { .. } => Attempt::Retry,
        ProposeError::TooManyRequests { .. } | ProposeError::TooManyCommands { .. } => {
            Attempt::Failed(ApiError::too_many_requests())
        }
        ProposeError::RequestTooLarge { size, max } => {
            Attempt::Failed(ApiError::too_large(size, max))
        }
        ProposeError::Timeout(_) => Attempt::Failed(ApiError::timeout()),
        ProposeError::Stopped => Attempt::Failed(ApiError::stopped("the node stopped")),
        // Any outcome this code does not know leaves the write's fate
        // unknown: say so rather than retry.
        other => Attempt::Failed(ApiError::new(
            crate::api::error::code::UNAVAILABLE,
            format!("etcdserver: request outcome unknown ({other})"),
        )),
    }
}

fn propose_error_name(error: &ProposeError) -> &'static str {
    match error {
        ProposeError::NotLeader { .. } => "not_leader",
        ProposeError::TooManyRequests { .. } => "too_many_requests",
        ProposeError::RequestTooLarge { .. } => "request_too_large",
        ProposeError::TooManyCommands { .. } => "too_many_commands",
        ProposeError::Timeout(_) => "timeout",
        ProposeError::ProposalDropped { .. } => "dropped",
        ProposeError::Overwritten { .. } => "overwritten",
        ProposeError::Stopped => "stopped",
        ProposeError::ForwardUnanswered { .. } => "forward_unanswered",
        _ => "other",
    }
}

/// Wall-clock ms since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A JSON response.
pub fn json<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(error) => {
            ApiError::new(crate::api::error::code::INTERNAL, error.to_string()).into_response()
        }
    }
}
