//! A node's own standing in the cluster: joining it (`serve --join`),
//! asking to vote once caught up (`--auto-promote`), and noticing it was
//! removed, so it refuses requests with a reason instead of waiting for a
//! leader that will never talk to it again.
//!
//! A removed node may never receive the configuration that leaves it out:
//! the leader stops replicating to it once that configuration is appended
//! (Raft dissertation §4.2.2). So while it knows no leader it asks the
//! members it knows for their status; a leader whose configuration leaves
//! it out, in a term at least its own, settles it.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hyper::Method;
use rafter::{MembershipError, NodeId, Raft, Role};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::api::error::{code, ApiError};
use crate::cli::client::{Endpoints, Failure};
use crate::cluster::MemberAddr;
use crate::state_machine::KvStateMachine;

/// How long a node started with `--join` keeps asking the cluster to take
/// it (the members may still be starting): then it gives up and stops.
pub const JOIN_PATIENCE: Duration = Duration::from_secs(60);
/// How often the standing is looked at.
const STANDING_INTERVAL: Duration = Duration::from_millis(500);
/// How long a look at other members' status may take.
const PEER_STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// The pause between two promotion requests that were refused.
const PROMOTE_RETRY: Duration = Duration::from_secs(1);

/// Where this node stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// In the configuration (or it cannot tell otherwise).
    Member,
    /// In no configuration yet: started to join and not yet added.
    Joining,
    /// Out of the configuration: the reason.
    Removed(String),
}

/// What a node learns from the member it joins through.
#[derive(Debug)]
pub struct Cluster {
    /// The cluster's id (from a response header).
    pub cluster_id: u64,
    /// The members and their addresses.
    pub members: BTreeMap<NodeId, MemberAddr>,
}

/// Asks `urls` who the members are and the cluster's id (retried until
/// `JOIN_PATIENCE` runs out: the members may be starting too).
pub async fn discover(urls: &[String]) -> Result<Cluster, String> {
    let endpoints = Endpoints::new(urls, JOIN_PATIENCE).map_err(failure_text)?;
    let status = endpoints
        .request(Method::GET, "/cluster/status", None)
        .await
        .and_then(|a| a.json())
        .map_err(|f| format!("--join: cannot learn the members: {}", f.message()))?;
    let mut members = BTreeMap::new();
    for member in status["members"].as_array().into_iter().flatten() {
        let (Some(id), Some(raft), Some(http)) = (
            member["id"].as_u64(),
            member["raft_addr"].as_str(),
            member["http_addr"].as_str(),
        ) else {
            return Err(format!(
                "--join: a member without id or addresses: {member}"
            ));
        };
        members.insert(
            id,
            MemberAddr {
                raft: raft.to_owned(),
                http: http.to_owned(),
            },
        );
    }
    if members.is_empty() {
        return Err(format!("--join: {} knows no members", urls.join(",")));
    }
    // Any answer's header carries the cluster id; a serializable range is
    // the cheapest (it reads the node it reaches, no leader needed).
    let range = endpoints
        .request(
            Method::POST,
            "/v3/kv/range",
            Some(&json!({"key": "AA==", "serializable": true, "count_only": true})),
        )
        .await
        .and_then(|a| a.json())
        .map_err(|f| format!("--join: cannot learn the cluster id: {}", f.message()))?;
    let cluster_id = match &range["header"]["cluster_id"] {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
    .ok_or_else(|| format!("--join: no cluster id in {range}"))?;
    Ok(Cluster {
        cluster_id,
        members,
    })
}

/// Asks `urls` to add node `id`, reached at `advertise`, as a learner;
/// returns once the configuration holding it is committed. A node that is
/// already in it (a join retried after an unknown outcome) counts as added.
/// A refusal because another membership change is in progress (a removal
/// leaving its joint configuration, another node's promotion) is asked
/// again every [`PROMOTE_RETRY`] within [`JOIN_PATIENCE`]: that change
/// completes on its own (found by the chaos harness, which replaces nodes
/// one after another).
pub async fn request_learner(
    urls: &[String],
    id: NodeId,
    advertise: &MemberAddr,
) -> Result<(), String> {
    let deadline = Instant::now() + JOIN_PATIENCE;
    let endpoints = Endpoints::new(urls, JOIN_PATIENCE).map_err(failure_text)?;
    let body = json!({"id": id, "raft_addr": advertise.raft, "http_addr": advertise.http});
    let in_progress = MembershipError::ChangeInProgress.to_string();
    let result = loop {
        let result = endpoints
            .request(Method::POST, "/cluster/learners", Some(&body))
            .await
            .and_then(|a| a.json());
        match &result {
            Err(Failure::Refused(message))
                if message.contains(&in_progress) && Instant::now() + PROMOTE_RETRY < deadline =>
            {
                tracing::info!(id, "another membership change is in progress; asking again");
                tokio::time::sleep(PROMOTE_RETRY).await;
            }
            _ => break result,
        }
    };
    match result {
        Ok(_) => Ok(()),
        Err(failure) => {
            // The change may have been made by an attempt whose answer was
            // lost: the configuration says.
            let status = endpoints
                .request(Method::GET, "/cluster/status", None)
                .await
                .and_then(|a| a.json());
            let added = status.is_ok_and(|s| {
                s["members"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|m| m["id"] == id))
            });
            if added {
                Ok(())
            } else {
                Err(format!(
                    "--join: the cluster did not add node {id}: {}",
                    failure.message()
                ))
            }
        }
    }
}

fn failure_text(failure: Failure) -> String {
    failure.message().to_owned()
}

/// `--auto-promote`: once this learner has applied what it knows is
/// committed, asks `urls` to make it a voter, again after each refusal
/// (the leader refuses a learner that lags), until it votes or the node
/// stops.
pub fn spawn_auto_promote(
    raft: Raft<KvStateMachine>,
    urls: Vec<String>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let id = raft.id();
        let mut metrics = raft.metrics();
        loop {
            let ready = metrics
                .wait_for(|m| {
                    m.stopped
                        || m.membership.is_voter(id)
                        || (m.membership.learners.contains(&id)
                            && m.leader.is_some()
                            && m.applied_index >= m.commit_index)
                })
                .await
                .map(|m| (m.stopped, m.membership.is_voter(id)));
            match ready {
                Err(_) | Ok((true, _)) => return,
                Ok((false, true)) => {
                    tracing::info!(id, "a voter now");
                    return;
                }
                Ok((false, false)) => {}
            }
            let result = match Endpoints::new(&urls, Duration::from_secs(10)) {
                Ok(endpoints) => endpoints
                    .request(Method::POST, "/cluster/promote", Some(&json!({"id": id})))
                    .await
                    .map(|_| ()),
                Err(failure) => Err(failure),
            };
            match result {
                Ok(()) => tracing::info!(id, "promoted to voter"),
                Err(failure) => {
                    tracing::info!(
                        id,
                        reason = failure.message(),
                        "promotion refused; retrying"
                    );
                    tokio::time::sleep(PROMOTE_RETRY).await;
                }
            }
        }
    })
}

/// Watches this node's standing until it stops; `standing` tells the
/// request guard.
pub fn spawn_standing_watch(
    raft: Raft<KvStateMachine>,
    standing: watch::Sender<Standing>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let id = raft.id();
        let mut next = Instant::now();
        loop {
            next += STANDING_INTERVAL;
            tokio::time::sleep_until(next.max(Instant::now())).await;
            let m = raft.status();
            if m.stopped {
                return;
            }
            let current = standing.borrow().clone();
            let seen = if m.membership.nodes.is_empty() {
                Standing::Joining
            } else if !m.membership.is_member(id) {
                Standing::Removed(format!(
                    "the configuration at index {} leaves node {id} out",
                    m.membership_index
                ))
            } else if m.leader.is_none()
                || m.role == Role::PreCandidate
                || m.role == Role::Candidate
            {
                let urls: Vec<String> = m
                    .membership
                    .nodes
                    .iter()
                    .filter(|(peer, _)| **peer != id)
                    .filter_map(|(_, addr)| MemberAddr::parse(addr).ok())
                    .map(|a| a.http)
                    .collect();
                match leader_without(&urls, id, m.term).await {
                    Some(reason) => Standing::Removed(reason),
                    // No evidence either way: keep what was known.
                    None => match &current {
                        Standing::Joining => Standing::Member,
                        other => other.clone(),
                    },
                }
            } else {
                Standing::Member
            };
            if seen != current {
                match &seen {
                    Standing::Removed(reason) => {
                        tracing::warn!(id, %reason, "removed from the cluster: refusing requests")
                    }
                    Standing::Member => tracing::info!(id, "in the configuration"),
                    Standing::Joining => {}
                }
                let _ = standing.send(seen);
            }
        }
    })
}

/// The reason this node is out, if a leader among `urls` (in a term at
/// least `term`) has a configuration without node `id`.
async fn leader_without(urls: &[String], id: NodeId, term: u64) -> Option<String> {
    let endpoints = Endpoints::new(urls, PEER_STATUS_TIMEOUT).ok()?;
    for (_, answer) in endpoints.each("/cluster/status").await {
        let Ok(status) = answer
            .map_err(|_| ())
            .and_then(|a| a.json().map_err(|_| ()))
        else {
            continue;
        };
        let leads =
            status["role"] == "leader" && status["term"].as_u64().is_some_and(|t| t >= term);
        let has_me = status["members"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["id"] == id));
        if leads && !has_me {
            return Some(format!(
                "node {} leads term {} with a configuration that leaves node {id} out",
                status["id"], status["term"]
            ));
        }
    }
    None
}

/// What a node that was removed, or has not joined yet, answers a request
/// for `path` (`http_layers::StandingGuard` asks): every request but
/// status, digest and metrics is refused at once (503, with the reason), so
/// clients move on to another member; `/health` says why. `None`: serve it.
pub fn refusal(standing: &Standing, path: &str) -> Option<Response> {
    let reason = match standing {
        Standing::Member => return None,
        Standing::Joining => "this node is not in the cluster yet (joining)".to_owned(),
        Standing::Removed(reason) => format!("this node was removed from the cluster ({reason})"),
    };
    match path {
        "/cluster/status" | "/cluster/digest" | "/metrics" => None,
        "/health" => Some(
            (
                StatusCode::SERVICE_UNAVAILABLE,
                crate::server::json(&json!({"health": "false", "reason": reason})),
            )
                .into_response(),
        ),
        _ => Some(
            ApiError::new(
                code::UNAVAILABLE,
                format!("rafter-kv: {reason}; use another member"),
            )
            .into_response(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// A member on loopback whose `/cluster/learners` refuses the first
    /// `refusals` requests with `refusal`, then adds; returns its URL and
    /// the count of requests it got.
    async fn member(refusals: usize, refusal: MembershipError) -> (String, Arc<AtomicUsize>) {
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = asked.clone();
        let learners = move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let refusal = refusal.clone();
            async move {
                if n < refusals {
                    ApiError::new(code::FAILED_PRECONDITION, refusal.to_string()).into_response()
                } else {
                    axum::Json(json!({"members": []})).into_response()
                }
            }
        };
        let app = axum::Router::new().route("/cluster/learners", axum::routing::post(learners));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, asked)
    }

    fn advertise() -> MemberAddr {
        MemberAddr::parse("127.0.0.1:7004/127.0.0.1:8004").unwrap()
    }

    #[tokio::test]
    async fn a_join_refused_while_another_change_is_in_progress_asks_again() {
        let (url, asked) = member(2, MembershipError::ChangeInProgress).await;
        request_learner(&[url], 4, &advertise()).await.unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_join_refused_for_good_gives_up_at_once() {
        let (url, asked) = member(usize::MAX, MembershipError::NoVoters).await;
        let error = request_learner(&[url], 4, &advertise()).await.unwrap_err();
        assert!(error.contains("did not add node 4"), "{error}");
        assert_eq!(asked.load(Ordering::SeqCst), 1);
    }
}
