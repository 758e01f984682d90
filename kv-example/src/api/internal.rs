//! `POST /internal/propose`: the leader's side of batched forwarding
//! (`forward_proposals`). Body: `rafter::codec` of `Vec<KvCommand>`;
//! answer: 200 with the encoded `Vec<KvResponse>` once all applied, or a
//! status saying why nothing (421 not leader, 409 retry, 429, 413/400)
//! or an unknown outcome (503) came of it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rafter::{codec, ProposeError};

use crate::command::KvCommand;
use crate::forward_proposals::{BATCH_BYTES_MAX, BATCH_COMMANDS_MAX};
use crate::server::AppState;

/// The handler.
pub async fn propose(State(s): State<Arc<AppState>>, request: Request) -> Response {
    let body = match axum::body::to_bytes(request.into_body(), BATCH_BYTES_MAX).await {
        Ok(body) => body,
        Err(error) => return (StatusCode::PAYLOAD_TOO_LARGE, error.to_string()).into_response(),
    };
    let commands: Vec<KvCommand> = match codec::decode(&body, BATCH_BYTES_MAX) {
        Ok(commands) => commands,
        Err(error) => {
            return (StatusCode::BAD_REQUEST, format!("bad batch: {error}")).into_response()
        }
    };
    if commands.len() > BATCH_COMMANDS_MAX {
        return (StatusCode::BAD_REQUEST, "batch too large").into_response();
    }
    s.metrics.proposals.inc_by(commands.len() as u64);
    let proposed = std::time::Instant::now();
    match s.raft.propose_many(commands).await {
        Ok(responses) => {
            s.metrics
                .propose_seconds
                .observe(proposed.elapsed().as_secs_f64());
            codec::encode(&responses).into_response()
        }
        Err(error) => {
            let status = match &error {
                ProposeError::NotLeader { .. } => StatusCode::MISDIRECTED_REQUEST,
                // Nothing was appended.
                ProposeError::ProposalDropped { .. } => StatusCode::CONFLICT,
                ProposeError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
                ProposeError::RequestTooLarge { .. } | ProposeError::TooManyCommands { .. } => {
                    StatusCode::PAYLOAD_TOO_LARGE
                }
                // Part of the batch may have applied: the outcome is unknown.
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            (status, error.to_string()).into_response()
        }
    }
}
