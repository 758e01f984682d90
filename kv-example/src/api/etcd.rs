//! `POST /v3/kv/*`: etcd's JSON gateway routes.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::kv::{
    txn_response, CompactionRequestJson, CompactionResponseJson, DeleteRangeRequestJson,
    DeleteRangeResponseJson, KeyValueJson, PutRequestJson, PutResponseJson, RangeRequestJson,
    RangeResponseJson, TxnRequestJson,
};
use super::{parse, store_failure};
use crate::command::WriteOutcome;
use crate::server::{json, AppState, Relay, Routed};
use crate::store::{RangeRequest, WriteRequest, WriteResponse};

type Shared = State<Arc<AppState>>;

fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

/// A write's answer was of another kind than its request: a bug.
fn mismatch(outcome: &WriteOutcome) -> ApiError {
    ApiError::new(
        super::error::code::INTERNAL,
        format!(
            "the store answered {:?} to another request",
            outcome.response
        ),
    )
}

/// `POST /v3/kv/put`.
pub async fn put(State(s): Shared, request: Request) -> Response {
    respond(
        async {
            let relay = Relay::read(request, s.request_bytes_max).await?;
            let put = parse::<PutRequestJson>(&relay.body)?.into_store()?;
            match s.write(&relay, WriteRequest::Put(put)).await? {
                Routed::Relayed(response) => Ok(response),
                Routed::Local(outcome) => {
                    let WriteResponse::Put(put) = &outcome.response else {
                        return Err(mismatch(&outcome));
                    };
                    Ok(json(&PutResponseJson {
                        header: s.header(outcome.revision),
                        prev_kv: put.prev_kv.clone().map(KeyValueJson::from),
                    }))
                }
            }
        }
        .await,
    )
}

/// Reads `range` from this node's applied state.
pub fn read_range(s: &AppState, range: &RangeRequest) -> Result<RangeResponseJson, ApiError> {
    let view = s.view()?;
    let revision = view.revision();
    let found = view.range(range).map_err(store_failure)??;
    Ok(RangeResponseJson::new(s.header(revision), found))
}

/// `POST /v3/kv/range`: linearizable unless `serializable`.
pub async fn range(State(s): Shared, request: Request) -> Response {
    respond(
        async {
            let relay = Relay::read(request, s.request_bytes_max).await?;
            let range = parse::<RangeRequestJson>(&relay.body)?;
            let serializable = range.serializable;
            let range = range.into_store()?;
            if serializable {
                return Ok(json(&read_range(&s, &range)?));
            }
            match s.linearizable(|| read_range(&s, &range)).await? {
                Routed::Relayed(response) => Ok(response),
                Routed::Local(found) => Ok(json(&found)),
            }
        }
        .await,
    )
}

/// `POST /v3/kv/deleterange`.
pub async fn delete_range(State(s): Shared, request: Request) -> Response {
    respond(
        async {
            let relay = Relay::read(request, s.request_bytes_max).await?;
            let delete = parse::<DeleteRangeRequestJson>(&relay.body)?.into_store()?;
            match s.write(&relay, WriteRequest::DeleteRange(delete)).await? {
                Routed::Relayed(response) => Ok(response),
                Routed::Local(outcome) => {
                    let WriteResponse::DeleteRange(deleted) = &outcome.response else {
                        return Err(mismatch(&outcome));
                    };
                    Ok(json(&DeleteRangeResponseJson {
                        header: s.header(outcome.revision),
                        deleted: deleted.deleted,
                        prev_kvs: deleted
                            .prev_kvs
                            .iter()
                            .cloned()
                            .map(KeyValueJson::from)
                            .collect(),
                    }))
                }
            }
        }
        .await,
    )
}

/// `POST /v3/kv/txn`: through the log, read-only or not, so that its
/// reads and compares are linearizable.
pub async fn txn(State(s): Shared, request: Request) -> Response {
    respond(
        async {
            let relay = Relay::read(request, s.request_bytes_max).await?;
            let txn = parse::<TxnRequestJson>(&relay.body)?.into_store()?;
            match s.write(&relay, WriteRequest::Txn(txn)).await? {
                Routed::Relayed(response) => Ok(response),
                Routed::Local(outcome) => {
                    let header = s.header(outcome.revision);
                    let WriteResponse::Txn(txn) = outcome.response else {
                        return Err(ApiError::new(
                            super::error::code::INTERNAL,
                            "the store answered a transaction with another kind",
                        ));
                    };
                    Ok(json(&txn_response(header, txn)))
                }
            }
        }
        .await,
    )
}

/// `POST /v3/kv/compaction`.
pub async fn compaction(State(s): Shared, request: Request) -> Response {
    respond(
        async {
            let relay = Relay::read(request, s.request_bytes_max).await?;
            let compaction = parse::<CompactionRequestJson>(&relay.body)?.into_store();
            match s
                .write(&relay, WriteRequest::Compaction(compaction))
                .await?
            {
                Routed::Relayed(response) => Ok(response),
                Routed::Local(outcome) => Ok(json(&CompactionResponseJson {
                    header: s.header(outcome.revision),
                })),
            }
        }
        .await,
    )
}
