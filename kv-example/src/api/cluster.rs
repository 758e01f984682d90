//! `/health`, `/cluster/*` and `/metrics`.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rafter::{MembershipError, NodeId, Role, TransferError};
use serde::{Deserialize, Serialize};

use super::error::{code, ApiError};
use super::json::de_u64;
use super::{parse, store_failure};
use crate::cluster::MemberAddr;
use crate::server::{json, AppState, Attempt, Relay, Routed};

type Shared = State<Arc<AppState>>;

#[derive(Serialize)]
struct Health {
    health: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// `GET /health`: 200 when this node knows a leader and has applied up to
/// the commit index it last learned, else 503 with the reason.
pub async fn health(State(s): Shared) -> Response {
    let reason = {
        let m = s.raft.metrics();
        let m = m.borrow();
        if m.stopped {
            Some(match &m.fatal {
                Some(fatal) => format!("stopped: {fatal}"),
                None => "stopped".to_owned(),
            })
        } else if m.leader.is_none() {
            Some("no leader".to_owned())
        } else if m.applied_index < m.commit_index {
            Some(format!(
                "applied index {} is behind commit index {}",
                m.applied_index, m.commit_index
            ))
        } else {
            None
        }
    };
    let status = if reason.is_some() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let health = if reason.is_some() { "false" } else { "true" };
    (status, json(&Health { health, reason })).into_response()
}

/// One member in `/cluster/status`.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberJson {
    /// Its id.
    pub id: NodeId,
    /// Its Raft address.
    pub raft_addr: String,
    /// Its HTTP address.
    pub http_addr: String,
    /// Whether it votes.
    pub voter: bool,
}

/// `GET /cluster/status`.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatusJson {
    /// This node.
    pub id: NodeId,
    /// `leader`, `follower`, `candidate`, `pre-candidate` or `learner`.
    pub role: String,
    /// Its term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Highest index known committed.
    pub commit_index: u64,
    /// Highest index applied.
    pub applied_index: u64,
    /// Last index of its log.
    pub last_log_index: u64,
    /// Last index its snapshot covers.
    pub snapshot_index: u64,
    /// The configuration in force.
    pub members: Vec<MemberJson>,
    /// Why the node stopped, if it did.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fatal: Option<String>,
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Leader => "leader",
        Role::Follower => "follower",
        Role::Candidate => "candidate",
        Role::PreCandidate => "pre-candidate",
        Role::Learner => "learner",
    }
}

fn status_json(s: &AppState) -> StatusJson {
    let m = s.raft.status();
    let members = m
        .membership
        .nodes
        .iter()
        .filter(|(id, _)| m.membership.is_member(**id))
        .map(|(id, addr)| {
            let parsed = MemberAddr::parse(addr).unwrap_or(MemberAddr {
                raft: addr.clone(),
                http: String::new(),
            });
            MemberJson {
                id: *id,
                raft_addr: parsed.raft,
                http_addr: parsed.http,
                voter: m.membership.is_voter(*id),
            }
        })
        .collect();
    StatusJson {
        id: m.id,
        role: role_name(m.role).to_owned(),
        term: m.term,
        leader: m.leader,
        commit_index: m.commit_index,
        applied_index: m.applied_index,
        last_log_index: m.last_log_index,
        snapshot_index: m.snapshot_index,
        members,
        fatal: m.fatal.map(|f| f.to_string()),
    }
}

/// `GET /cluster/status`.
pub async fn status(State(s): Shared) -> Response {
    json(&status_json(&s))
}

/// `POST /cluster/learners`.
#[derive(Debug, Deserialize)]
struct AddLearner {
    #[serde(deserialize_with = "de_u64")]
    id: NodeId,
    raft_addr: String,
    http_addr: String,
}

#[derive(Debug, Deserialize)]
struct NodeRef {
    #[serde(deserialize_with = "de_u64")]
    id: NodeId,
}

#[derive(Debug, Deserialize)]
struct TransferTo {
    #[serde(deserialize_with = "de_u64")]
    to: NodeId,
}

fn membership_attempt(result: Result<(), MembershipError>) -> Attempt<()> {
    match result {
        Ok(()) => Attempt::Done(()),
        Err(MembershipError::NotLeader { .. }) => Attempt::NotLeader,
        Err(MembershipError::ProposalDropped { .. }) => Attempt::Retry,
        Err(MembershipError::Timeout(_)) => Attempt::Failed(ApiError::timeout()),
        Err(MembershipError::Stopped) => Attempt::Failed(ApiError::stopped("the node stopped")),
        Err(error @ (MembershipError::UnknownNode(_) | MembershipError::Invalid(_))) => {
            Attempt::Failed(ApiError::invalid(error.to_string()))
        }
        Err(error) => Attempt::Failed(ApiError::new(code::FAILED_PRECONDITION, error.to_string())),
    }
}

async fn membership_route<F, Fut>(
    s: &AppState,
    relay: &Relay,
    change: F,
) -> Result<Response, ApiError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), MembershipError>>,
{
    match s
        .on_leader(relay, || async { membership_attempt(change().await) })
        .await?
    {
        Routed::Relayed(response) => Ok(response),
        Routed::Local(()) => Ok(json(&status_json(s))),
    }
}

/// `POST /cluster/learners` `{id, raft_addr, http_addr}`.
pub async fn add_learner(State(s): Shared, request: Request) -> Response {
    let result = async {
        let relay = Relay::read(request, s.request_bytes_max).await?;
        let learner: AddLearner = parse(&relay.body)?;
        let addr = MemberAddr::parse(&format!("{}/{}", learner.raft_addr, learner.http_addr))
            .map_err(ApiError::invalid)?;
        if learner.id == 0 {
            return Err(ApiError::invalid("node id 0 is reserved"));
        }
        membership_route(&s, &relay, || s.raft.add_learner(learner.id, addr.encode())).await
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /cluster/promote` `{id}`: the learner becomes a voter.
pub async fn promote(State(s): Shared, request: Request) -> Response {
    let result = async {
        let relay = Relay::read(request, s.request_bytes_max).await?;
        let node: NodeRef = parse(&relay.body)?;
        membership_route(&s, &relay, || {
            let mut voters: BTreeSet<NodeId> = s.raft.status().membership.voters;
            voters.insert(node.id);
            s.raft.change_membership(voters)
        })
        .await
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// `DELETE /cluster/members/{id}`.
pub async fn remove(State(s): Shared, Path(id): Path<String>, request: Request) -> Response {
    let result = async {
        let relay = Relay::read(request, s.request_bytes_max).await?;
        let id: NodeId = id
            .parse()
            .map_err(|_| ApiError::invalid(format!("{id:?} is not a node id")))?;
        membership_route(&s, &relay, || s.raft.remove_node(id)).await
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /cluster/transfer-leader` `{to}`.
pub async fn transfer_leader(State(s): Shared, request: Request) -> Response {
    let result = async {
        let relay = Relay::read(request, s.request_bytes_max).await?;
        let target: TransferTo = parse(&relay.body)?;
        let routed = s
            .on_leader(&relay, || async {
                match s.raft.transfer_leader(target.to).await {
                    Ok(()) => Attempt::Done(()),
                    Err(TransferError::NotLeader { .. }) => Attempt::NotLeader,
                    Err(TransferError::Stopped) => {
                        Attempt::Failed(ApiError::stopped("the node stopped"))
                    }
                    Err(error @ TransferError::NotVoter(_)) => {
                        Attempt::Failed(ApiError::invalid(error.to_string()))
                    }
                    Err(error) => {
                        Attempt::Failed(ApiError::new(code::UNAVAILABLE, error.to_string()))
                    }
                }
            })
            .await?;
        match routed {
            Routed::Relayed(response) => Ok::<_, ApiError>(response),
            Routed::Local(()) => Ok(json(&status_json(&s))),
        }
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Serialize)]
struct Digest {
    applied_index: u64,
    revision: i64,
    digest: String,
}

/// `GET /cluster/digest`: a hash of the applied state, read from one view
/// whose applied index is known (two reads of the applied index around the
/// view agree).
pub async fn digest(State(s): Shared) -> Response {
    let result = (|| {
        for _ in 0..100 {
            let before = s
                .reads
                .applied()
                .map_err(|e| ApiError::new(code::INTERNAL, e.to_string()))?;
            let view = s.view()?;
            let after = s
                .reads
                .applied()
                .map_err(|e| ApiError::new(code::INTERNAL, e.to_string()))?;
            if before == after {
                return Ok(json(&Digest {
                    applied_index: after.index,
                    revision: view.revision(),
                    digest: view.digest().map_err(store_failure)?,
                }));
            }
        }
        Err(ApiError::new(
            code::UNAVAILABLE,
            "applies too busy to take a digest",
        ))
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(s): Shared) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}
