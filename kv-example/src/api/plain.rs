//! `/kv`: plain routes for curl. Keys are the URL path after `/kv/`
//! (percent-decoded, slashes allowed); values are the raw body.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::error::{code, ApiError};
use super::etcd::read_range;
use super::kv::RangeResponseJson;
use super::prefix_end;
use crate::server::{json, AppState, Relay, Routed};
use crate::store::{
    DeleteRangeRequest, PutRequest, RangeRequest, SortOrder, SortTarget, WriteRequest,
    WriteResponse,
};

type Shared = State<Arc<AppState>>;

/// The query of `GET /kv/{key}` and `GET /kv`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ReadQuery {
    /// `serializable` for a local, possibly stale read.
    consistency: Option<String>,
    /// `GET /kv`: the key prefix (empty: every key).
    prefix: Option<String>,
    /// `GET /kv`: most pairs returned (0: all).
    limit: Option<i64>,
}

impl ReadQuery {
    fn serializable(&self) -> Result<bool, ApiError> {
        match self.consistency.as_deref() {
            None | Some("linearizable") => Ok(false),
            Some("serializable") => Ok(true),
            Some(other) => Err(ApiError::invalid(format!(
                "consistency is linearizable or serializable, not {other:?}"
            ))),
        }
    }
}

fn range_of(key: Vec<u8>, range_end: Vec<u8>, limit: i64) -> RangeRequest {
    RangeRequest {
        key,
        range_end,
        limit,
        revision: 0,
        sort_order: SortOrder::None,
        sort_target: SortTarget::Key,
        keys_only: false,
        count_only: false,
        min_mod_revision: 0,
        max_mod_revision: 0,
        min_create_revision: 0,
        max_create_revision: 0,
    }
}

async fn read(
    s: &AppState,
    serializable: bool,
    range: &RangeRequest,
) -> Result<Routed<RangeResponseJson>, ApiError> {
    if serializable {
        return Ok(Routed::Local(read_range(s, range)?));
    }
    s.linearizable(|| read_range(s, range)).await
}

fn key_bytes(key: String) -> Result<Vec<u8>, ApiError> {
    if key.is_empty() {
        return Err(ApiError::empty_key());
    }
    Ok(key.into_bytes())
}

/// `GET /kv/{key}`: the value; `x-rafter-revision` is the key's
/// `mod_revision`.
pub async fn get(
    State(s): Shared,
    Path(key): Path<String>,
    Query(query): Query<ReadQuery>,
) -> Response {
    let result = async {
        let range = range_of(key_bytes(key)?, Vec::new(), 0);
        match read(&s, query.serializable()?, &range).await? {
            Routed::Relayed(response) => Ok(response),
            Routed::Local(found) => {
                let Some(kv) = found.kvs.into_iter().next() else {
                    return Err(ApiError::new(code::NOT_FOUND, "key not found"));
                };
                let mut response = kv.value.into_response();
                response
                    .headers_mut()
                    .insert("x-rafter-revision", HeaderValue::from(kv.mod_revision));
                response.headers_mut().insert(
                    axum::http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                Ok(response)
            }
        }
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Serialize)]
struct Revision {
    revision: i64,
}

#[derive(Serialize)]
struct Deleted {
    deleted: i64,
    revision: i64,
}

/// `PUT /kv/{key}`: the body is the value.
pub async fn put(State(s): Shared, Path(key): Path<String>, request: Request) -> Response {
    let result = async {
        let relay = Relay::read(request, s.request_bytes_max).await?;
        let put = PutRequest {
            key: key_bytes(key)?,
            value: relay.body.to_vec(),
            prev_kv: false,
            ignore_value: false,
        };
        match s.write(&relay, WriteRequest::Put(put)).await? {
            Routed::Relayed(response) => Ok::<_, ApiError>(response),
            Routed::Local(outcome) => Ok(json(&Revision {
                revision: outcome.revision,
            })),
        }
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// `DELETE /kv/{key}`.
pub async fn delete(State(s): Shared, Path(key): Path<String>, request: Request) -> Response {
    let result = async {
        let relay = Relay::read(request, s.request_bytes_max).await?;
        let delete = DeleteRangeRequest {
            key: key_bytes(key)?,
            range_end: Vec::new(),
            prev_kv: false,
        };
        match s.write(&relay, WriteRequest::DeleteRange(delete)).await? {
            Routed::Relayed(response) => Ok::<_, ApiError>(response),
            Routed::Local(outcome) => {
                let WriteResponse::DeleteRange(deleted) = &outcome.response else {
                    return Err(ApiError::new(
                        code::INTERNAL,
                        "the store answered another kind",
                    ));
                };
                Ok(json(&Deleted {
                    deleted: deleted.deleted,
                    revision: outcome.revision,
                }))
            }
        }
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Serialize)]
struct TextPair {
    key: String,
    value: String,
    mod_revision: i64,
}

#[derive(Serialize)]
struct TextPairs {
    kvs: Vec<TextPair>,
}

/// `GET /kv?prefix=P&limit=N`: pairs as UTF-8 text (bytes that are not
/// UTF-8 are replaced by U+FFFD; read those through `/v3/kv/range`).
pub async fn scan(State(s): Shared, Query(query): Query<ReadQuery>) -> Response {
    let result = async {
        let limit = query.limit.unwrap_or(0);
        if limit < 0 {
            return Err(ApiError::invalid("limit must not be negative"));
        }
        let prefix = query.prefix.clone().unwrap_or_default().into_bytes();
        let range = if prefix.is_empty() {
            range_of(vec![0], vec![0], limit)
        } else {
            let end = prefix_end(&prefix);
            range_of(prefix, end, limit)
        };
        match read(&s, query.serializable()?, &range).await? {
            Routed::Relayed(response) => Ok(response),
            Routed::Local(found) => Ok(json(&TextPairs {
                kvs: found
                    .kvs
                    .into_iter()
                    .map(|kv| TextPair {
                        key: String::from_utf8_lossy(&kv.key).into_owned(),
                        value: String::from_utf8_lossy(&kv.value).into_owned(),
                        mod_revision: kv.mod_revision,
                    })
                    .collect(),
            })),
        }
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}
