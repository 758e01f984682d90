//! The cluster subcommands, over `/cluster/*` and `/health`.

use hyper::Method;
use serde_json::{json, Value};

use super::client::{error_message, Endpoints, Failure, EXIT_UNREACHABLE};
use super::{ClientOptions, Output};

/// `members`.
#[derive(Debug, clap::Args)]
pub struct MembersArgs {
    #[command(flatten)]
    pub options: ClientOptions,
}

/// `status` and `health`: every endpoint is asked.
#[derive(Debug, clap::Args)]
pub struct EachArgs {
    #[command(flatten)]
    pub options: ClientOptions,
}

/// `add-learner`.
#[derive(Debug, clap::Args)]
pub struct AddLearnerArgs {
    /// The new node's id.
    pub id: u64,
    /// Where its Raft endpoint is reached (host:port).
    pub raft_addr: String,
    /// Where its HTTP API is reached (host:port).
    pub http_addr: String,
    #[command(flatten)]
    pub options: ClientOptions,
}

/// `promote`, `remove`, `transfer-leader`: one node id.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// The node's id.
    pub id: u64,
    #[command(flatten)]
    pub options: ClientOptions,
}

/// The members table of a `/cluster/status` answer.
fn members_table(status: &Value) -> String {
    let leader = status["leader"].as_u64();
    let mut lines = vec![format!(
        "{:<6} {:<8} {:<24} {}",
        "ID", "ROLE", "RAFT ADDRESS", "HTTP ADDRESS"
    )];
    for member in status["members"].as_array().into_iter().flatten() {
        let id = member["id"].as_u64().unwrap_or(0);
        let role = match (member["voter"].as_bool(), Some(id) == leader) {
            (_, true) => "leader",
            (Some(true), false) => "voter",
            _ => "learner",
        };
        lines.push(format!(
            "{:<6} {:<8} {:<24} {}",
            id,
            role,
            member["raft_addr"].as_str().unwrap_or_default(),
            member["http_addr"].as_str().unwrap_or_default()
        ));
    }
    lines.join("\n")
}

/// `members`: the configuration as the best-informed endpoint knows it:
/// the leader, else a node that knows a leader, else any node that has a
/// configuration (a node that has not joined yet has none).
pub async fn members(endpoints: &Endpoints, out: &Output) -> Result<u8, Failure> {
    let mut best: Option<(u8, Value)> = None;
    let mut reasons = Vec::new();
    for (endpoint, result) in endpoints.each("/cluster/status").await {
        let status = match result {
            Ok(answer) if answer.status.is_success() => match answer.json() {
                Ok(status) => status,
                Err(failure) => {
                    reasons.push(failure.message().to_owned());
                    continue;
                }
            },
            Ok(answer) => {
                reasons.push(format!(
                    "{endpoint}: answered {}: {}",
                    answer.status,
                    error_message(&answer)
                ));
                continue;
            }
            Err(reason) => {
                reasons.push(format!("{endpoint}: {reason}"));
                continue;
            }
        };
        let has_members = status["members"].as_array().is_some_and(|m| !m.is_empty());
        let rank = match (
            status["role"].as_str(),
            status["leader"].is_u64(),
            has_members,
        ) {
            (_, _, false) => {
                reasons.push(format!("{endpoint}: in no configuration yet"));
                continue;
            }
            (Some("leader"), _, true) => 3,
            (_, true, true) => 2,
            (_, false, true) => 1,
        };
        if best.as_ref().is_none_or(|(r, _)| rank > *r) {
            best = Some((rank, status));
        }
    }
    let Some((_, status)) = best else {
        return Err(Failure::Unreachable(format!(
            "no endpoint knows the configuration ({})",
            reasons.join("; ")
        )));
    };
    out.print(
        || members_table(&status),
        &json!({"leader": status["leader"], "members": status["members"]}),
    );
    Ok(0)
}

/// A membership change: `method path body`, then the new configuration.
/// A change carries no client session, so when an earlier try may have
/// made it without an answer and a later one is refused, the
/// configuration says whether `done_already` holds (then it succeeded).
async fn change(
    endpoints: &Endpoints,
    out: &Output,
    request: (Method, &str, Option<&Value>),
    done: String,
    done_already: impl Fn(&Value) -> bool,
) -> Result<u8, Failure> {
    let (method, path, body) = request;
    let status = match endpoints.request(method, path, body).await {
        Ok(answer) => answer.json()?,
        Err(Failure::Refused(refusal)) if endpoints.uncertain() => {
            let status = endpoints
                .request(Method::GET, "/cluster/status", None)
                .await?
                .json()?;
            if !done_already(&status) {
                return Err(Failure::Refused(refusal));
            }
            status
        }
        Err(failure) => return Err(failure),
    };
    out.print(|| format!("{done}\n{}", members_table(&status)), &status);
    Ok(0)
}

fn member(status: &Value, id: u64) -> Option<&Value> {
    status["members"]
        .as_array()?
        .iter()
        .find(|m| m["id"].as_u64() == Some(id))
}

/// `add-learner ID RAFT_ADDR HTTP_ADDR`.
pub async fn add_learner(
    endpoints: &Endpoints,
    out: &Output,
    args: AddLearnerArgs,
) -> Result<u8, Failure> {
    let body = json!({"id": args.id, "raft_addr": args.raft_addr, "http_addr": args.http_addr});
    let done = format!("node {} added as a learner", args.id);
    let id = args.id;
    let request = (Method::POST, "/cluster/learners", Some(&body));
    change(endpoints, out, request, done, |s| member(s, id).is_some()).await
}

/// `promote ID`.
pub async fn promote(endpoints: &Endpoints, out: &Output, args: NodeArgs) -> Result<u8, Failure> {
    let body = json!({"id": args.id});
    let done = format!("node {} is a voter", args.id);
    let id = args.id;
    let request = (Method::POST, "/cluster/promote", Some(&body));
    change(endpoints, out, request, done, |s| {
        member(s, id).is_some_and(|m| m["voter"] == true)
    })
    .await
}

/// `remove ID`.
pub async fn remove(endpoints: &Endpoints, out: &Output, args: NodeArgs) -> Result<u8, Failure> {
    let path = format!("/cluster/members/{}", args.id);
    let done = format!("node {} removed", args.id);
    let id = args.id;
    let request = (Method::DELETE, path.as_str(), None);
    change(endpoints, out, request, done, |s| member(s, id).is_none()).await
}

/// `transfer-leader ID`.
pub async fn transfer_leader(
    endpoints: &Endpoints,
    out: &Output,
    args: NodeArgs,
) -> Result<u8, Failure> {
    let body = json!({"to": args.id});
    let done = format!("node {} leads", args.id);
    let id = args.id;
    let request = (Method::POST, "/cluster/transfer-leader", Some(&body));
    change(endpoints, out, request, done, |s| {
        s["leader"].as_u64() == Some(id)
    })
    .await
}

/// `status`: every endpoint's view; exit 5 if none answers.
pub async fn status(endpoints: &Endpoints, out: &Output) -> Result<u8, Failure> {
    let mut rows = Vec::new();
    let mut answered = 0;
    for (endpoint, result) in endpoints.each("/cluster/status").await {
        let row = match result.and_then(|a| {
            if a.status.is_success() {
                a.json().map_err(|f| f.message().to_owned())
            } else {
                Err(format!("answered {}: {}", a.status, error_message(&a)))
            }
        }) {
            Ok(status) => {
                answered += 1;
                json!({"endpoint": endpoint, "status": status})
            }
            Err(error) => json!({"endpoint": endpoint, "error": error}),
        };
        rows.push(row);
    }
    out.print(
        || {
            let mut lines = vec![format!(
                "{:<26} {:<4} {:<13} {:<6} {:<6} {:<8} {:<8} {:<8} {}",
                "ENDPOINT", "ID", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAST", "SNAPSHOT"
            )];
            for row in &rows {
                let endpoint = row["endpoint"].as_str().unwrap_or_default();
                match row.get("status") {
                    Some(s) => {
                        let field = |name: &str| match &s[name] {
                            Value::Null => "-".to_owned(),
                            Value::String(text) => text.clone(),
                            other => other.to_string(),
                        };
                        lines.push(format!(
                            "{:<26} {:<4} {:<13} {:<6} {:<6} {:<8} {:<8} {:<8} {}",
                            endpoint,
                            field("id"),
                            field("role"),
                            field("term"),
                            field("leader"),
                            field("commit_index"),
                            field("applied_index"),
                            field("last_log_index"),
                            field("snapshot_index")
                        ))
                    }
                    None => lines.push(format!(
                        "{endpoint:<26} {}",
                        row["error"].as_str().unwrap_or_default()
                    )),
                }
            }
            lines.join("\n")
        },
        &Value::Array(rows.clone()),
    );
    Ok(if answered == 0 { EXIT_UNREACHABLE } else { 0 })
}

/// `health`: every endpoint's `/health`; exit 5 unless all are healthy.
pub async fn health(endpoints: &Endpoints, out: &Output) -> Result<u8, Failure> {
    let mut rows = Vec::new();
    for (endpoint, result) in endpoints.each("/health").await {
        let row = match result {
            Ok(answer) if answer.status.is_success() => {
                json!({"endpoint": endpoint, "healthy": true})
            }
            Ok(answer) => {
                json!({"endpoint": endpoint, "healthy": false, "reason": error_message(&answer)})
            }
            Err(error) => json!({"endpoint": endpoint, "healthy": false, "reason": error}),
        };
        rows.push(row);
    }
    let all = rows.iter().all(|r| r["healthy"] == json!(true));
    out.print(
        || {
            rows.iter()
                .map(|r| match r["reason"].as_str() {
                    None => format!("{} is healthy", r["endpoint"].as_str().unwrap_or_default()),
                    Some(reason) => format!(
                        "{} is unhealthy: {reason}",
                        r["endpoint"].as_str().unwrap_or_default()
                    ),
                })
                .collect::<Vec<_>>()
                .join("\n")
        },
        &Value::Array(rows.clone()),
    );
    Ok(if all { 0 } else { EXIT_UNREACHABLE })
}
