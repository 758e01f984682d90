//! The etcd v3 KV messages in their JSON form (etcd's gateway), and their
//! conversion to and from the store's requests. Validation that etcd does
//! before proposing lives here: a request that fails it is answered with
//! etcd's error and never reaches the log.

use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::json::{
    de_bool, de_bytes, de_enum, de_i64, is_zero, ser_bytes, ser_i64, ser_u64, ProtoEnum,
};
use crate::store;
use crate::store::{CompareResult, SortOrder, SortTarget};

/// etcd's limit on operations in one branch of a transaction
/// (`--max-txn-ops`, default 128).
pub const TXN_OPS_MAX: usize = 128;

/// `header` of every response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ResponseHeader {
    /// The cluster's id.
    #[serde(skip_serializing_if = "is_zero", serialize_with = "ser_u64")]
    pub cluster_id: u64,
    /// The answering node's id.
    #[serde(skip_serializing_if = "is_zero", serialize_with = "ser_u64")]
    pub member_id: u64,
    /// The store revision when the response was made.
    #[serde(skip_serializing_if = "is_zero", serialize_with = "ser_i64")]
    pub revision: i64,
    /// The node's Raft term.
    #[serde(skip_serializing_if = "is_zero", serialize_with = "ser_u64")]
    pub raft_term: u64,
}

impl ResponseHeader {
    /// A header inside a transaction: the revision alone, as etcd writes it.
    fn inner(revision: i64) -> Self {
        Self {
            revision,
            ..Self::default()
        }
    }
}

/// A key-value pair as etcd writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KeyValueJson {
    /// The key.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "ser_bytes")]
    pub key: Vec<u8>,
    /// The revision of its last creation.
    #[serde(skip_serializing_if = "is_zero", serialize_with = "ser_i64")]
    pub create_revision: i64,
    /// The revision of its last modification.
    #[serde(skip_serializing_if = "is_zero", serialize_with = "ser_i64")]
    pub mod_revision: i64,
    /// Writes since its creation.
    #[serde(skip_serializing_if = "is_zero", serialize_with = "ser_i64")]
    pub version: i64,
    /// The value.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "ser_bytes")]
    pub value: Vec<u8>,
}

impl From<store::KeyValue> for KeyValueJson {
    fn from(kv: store::KeyValue) -> Self {
        Self {
            key: kv.key,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            value: kv.value,
        }
    }
}

macro_rules! proto_enum {
    ($name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        impl ProtoEnum for $name {
            const NAMES: &'static [&'static str] = &[$($text),+];
            fn from_number(n: usize) -> Option<Self> {
                [$($name::$variant),+].get(n).copied()
            }
            fn number(self) -> usize {
                [$($name::$variant),+].iter().position(|v| *v == self).unwrap_or(0)
            }
        }
    };
}

proto_enum!(SortOrder { None = "NONE", Ascend = "ASCEND", Descend = "DESCEND" });
proto_enum!(SortTarget { Key = "KEY", Version = "VERSION", Create = "CREATE", Mod = "MOD", Value = "VALUE" });
proto_enum!(CompareResult { Equal = "EQUAL", Greater = "GREATER", Less = "LESS", NotEqual = "NOT_EQUAL" });
proto_enum!(CompareTarget { Version = "VERSION", Create = "CREATE", Mod = "MOD", Value = "VALUE", Lease = "LEASE" });

/// etcd's `Compare.CompareTarget`.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CompareTarget {
    #[default]
    Version,
    Create,
    Mod,
    Value,
    Lease,
}

/// `POST /v3/kv/range`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RangeRequestJson {
    #[serde(deserialize_with = "de_bytes")]
    key: Vec<u8>,
    #[serde(alias = "rangeEnd", deserialize_with = "de_bytes")]
    range_end: Vec<u8>,
    #[serde(deserialize_with = "de_i64")]
    limit: i64,
    #[serde(deserialize_with = "de_i64")]
    revision: i64,
    #[serde(alias = "sortOrder", deserialize_with = "de_enum")]
    sort_order: SortOrder,
    #[serde(alias = "sortTarget", deserialize_with = "de_enum")]
    sort_target: SortTarget,
    /// A local read, possibly stale, instead of a linearizable one.
    #[serde(deserialize_with = "de_bool")]
    pub serializable: bool,
    #[serde(alias = "keysOnly", deserialize_with = "de_bool")]
    keys_only: bool,
    #[serde(alias = "countOnly", deserialize_with = "de_bool")]
    count_only: bool,
    #[serde(alias = "minModRevision", deserialize_with = "de_i64")]
    min_mod_revision: i64,
    #[serde(alias = "maxModRevision", deserialize_with = "de_i64")]
    max_mod_revision: i64,
    #[serde(alias = "minCreateRevision", deserialize_with = "de_i64")]
    min_create_revision: i64,
    #[serde(alias = "maxCreateRevision", deserialize_with = "de_i64")]
    max_create_revision: i64,
}

impl RangeRequestJson {
    /// The store's request, after etcd's checks.
    pub fn into_store(self) -> Result<store::RangeRequest, ApiError> {
        if self.key.is_empty() {
            return Err(ApiError::empty_key());
        }
        Ok(store::RangeRequest {
            key: self.key,
            range_end: self.range_end,
            limit: self.limit,
            revision: self.revision,
            sort_order: self.sort_order,
            sort_target: self.sort_target,
            keys_only: self.keys_only,
            count_only: self.count_only,
            min_mod_revision: self.min_mod_revision,
            max_mod_revision: self.max_mod_revision,
            min_create_revision: self.min_create_revision,
            max_create_revision: self.max_create_revision,
        })
    }
}

/// `POST /v3/kv/put`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PutRequestJson {
    #[serde(deserialize_with = "de_bytes")]
    key: Vec<u8>,
    #[serde(deserialize_with = "de_bytes")]
    value: Vec<u8>,
    #[serde(deserialize_with = "de_i64")]
    lease: i64,
    #[serde(alias = "prevKv", deserialize_with = "de_bool")]
    prev_kv: bool,
    #[serde(alias = "ignoreValue", deserialize_with = "de_bool")]
    ignore_value: bool,
    #[serde(alias = "ignoreLease", deserialize_with = "de_bool")]
    ignore_lease: bool,
}

impl PutRequestJson {
    /// The store's request, after etcd's checks.
    pub fn into_store(self) -> Result<store::PutRequest, ApiError> {
        if self.key.is_empty() {
            return Err(ApiError::empty_key());
        }
        if self.ignore_value && !self.value.is_empty() {
            return Err(ApiError::invalid("etcdserver: value is provided"));
        }
        if self.ignore_lease && self.lease != 0 {
            return Err(ApiError::invalid("etcdserver: lease is provided"));
        }
        // No lease API: every lease id names a lease that does not exist,
        // which is what etcd answers for an unknown one.
        if self.lease != 0 {
            return Err(ApiError::lease_not_found());
        }
        Ok(store::PutRequest {
            key: self.key,
            value: self.value,
            prev_kv: self.prev_kv,
            ignore_value: self.ignore_value,
        })
    }
}

/// `POST /v3/kv/deleterange`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DeleteRangeRequestJson {
    #[serde(deserialize_with = "de_bytes")]
    key: Vec<u8>,
    #[serde(alias = "rangeEnd", deserialize_with = "de_bytes")]
    range_end: Vec<u8>,
    #[serde(alias = "prevKv", deserialize_with = "de_bool")]
    prev_kv: bool,
}

impl DeleteRangeRequestJson {
    /// The store's request, after etcd's checks.
    pub fn into_store(self) -> Result<store::DeleteRangeRequest, ApiError> {
        if self.key.is_empty() {
            return Err(ApiError::empty_key());
        }
        Ok(store::DeleteRangeRequest {
            key: self.key,
            range_end: self.range_end,
            prev_kv: self.prev_kv,
        })
    }
}

/// One comparison of a transaction.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CompareJson {
    #[serde(deserialize_with = "de_enum")]
    result: CompareResult,
    #[serde(deserialize_with = "de_enum")]
    target: CompareTarget,
    #[serde(deserialize_with = "de_bytes")]
    key: Vec<u8>,
    #[serde(deserialize_with = "de_i64")]
    version: i64,
    #[serde(alias = "createRevision", deserialize_with = "de_i64")]
    create_revision: i64,
    #[serde(alias = "modRevision", deserialize_with = "de_i64")]
    mod_revision: i64,
    #[serde(deserialize_with = "de_bytes")]
    value: Vec<u8>,
    #[serde(deserialize_with = "de_i64")]
    lease: i64,
    #[serde(alias = "rangeEnd", deserialize_with = "de_bytes")]
    range_end: Vec<u8>,
}

impl CompareJson {
    fn into_store(self) -> Result<store::Compare, ApiError> {
        if self.key.is_empty() {
            return Err(ApiError::empty_key());
        }
        let target = match self.target {
            CompareTarget::Version => store::CompareTarget::Version(self.version),
            CompareTarget::Create => store::CompareTarget::Create(self.create_revision),
            CompareTarget::Mod => store::CompareTarget::Mod(self.mod_revision),
            CompareTarget::Value => store::CompareTarget::Value(self.value),
            // No lease API, so every key's lease is 0, and so is a missing
            // key's (etcd compares a missing key as a zero KeyValue): the
            // comparison is `0 <result> lease` whatever the range holds. It
            // becomes one that always holds (version >= 0... as `NotEqual`
            // to -1) or never does (`Equal` to -1).
            CompareTarget::Lease => {
                let holds = match self.result {
                    CompareResult::Equal => self.lease == 0,
                    CompareResult::NotEqual => self.lease != 0,
                    CompareResult::Greater => 0 > self.lease,
                    CompareResult::Less => 0 < self.lease,
                };
                return Ok(store::Compare {
                    key: self.key,
                    range_end: self.range_end,
                    target: store::CompareTarget::Version(-1),
                    result: if holds {
                        store::CompareResult::NotEqual
                    } else {
                        store::CompareResult::Equal
                    },
                });
            }
        };
        Ok(store::Compare {
            key: self.key,
            range_end: self.range_end,
            target,
            result: self.result,
        })
    }
}

/// One operation of a transaction branch (a proto `oneof`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RequestOpJson {
    #[serde(alias = "requestRange")]
    request_range: Option<RangeRequestJson>,
    #[serde(alias = "requestPut")]
    request_put: Option<PutRequestJson>,
    #[serde(alias = "requestDeleteRange")]
    request_delete_range: Option<DeleteRangeRequestJson>,
    #[serde(alias = "requestTxn")]
    request_txn: Option<TxnRequestJson>,
}

impl RequestOpJson {
    fn into_store(self) -> Result<store::RequestOp, ApiError> {
        let set = [
            self.request_range.is_some(),
            self.request_put.is_some(),
            self.request_delete_range.is_some(),
            self.request_txn.is_some(),
        ];
        if set.iter().filter(|s| **s).count() > 1 {
            return Err(ApiError::invalid("multiple fields of a oneof are set"));
        }
        if let Some(range) = self.request_range {
            return Ok(store::RequestOp::Range(range.into_store()?));
        }
        if let Some(put) = self.request_put {
            return Ok(store::RequestOp::Put(put.into_store()?));
        }
        if let Some(delete) = self.request_delete_range {
            return Ok(store::RequestOp::DeleteRange(delete.into_store()?));
        }
        if let Some(txn) = self.request_txn {
            return Ok(store::RequestOp::Txn(txn.into_store()?));
        }
        // What etcd 3.4 answers for an operation with no request set.
        Err(ApiError::invalid("etcdserver: key not found"))
    }
}

/// `POST /v3/kv/txn`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TxnRequestJson {
    compare: Vec<CompareJson>,
    success: Vec<RequestOpJson>,
    failure: Vec<RequestOpJson>,
}

impl TxnRequestJson {
    /// The store's request, after etcd's checks.
    pub fn into_store(self) -> Result<store::TxnRequest, ApiError> {
        if self.compare.len() > TXN_OPS_MAX
            || self.success.len() > TXN_OPS_MAX
            || self.failure.len() > TXN_OPS_MAX
        {
            return Err(ApiError::invalid(
                "etcdserver: too many operations in txn request",
            ));
        }
        Ok(store::TxnRequest {
            compare: self
                .compare
                .into_iter()
                .map(CompareJson::into_store)
                .collect::<Result<_, _>>()?,
            success: self
                .success
                .into_iter()
                .map(RequestOpJson::into_store)
                .collect::<Result<_, _>>()?,
            failure: self
                .failure
                .into_iter()
                .map(RequestOpJson::into_store)
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether the transaction only reads (then it is served as a read, not
    /// through the log, as etcd does).
    pub fn is_read_only(&self) -> bool {
        fn op_reads(op: &RequestOpJson) -> bool {
            op.request_put.is_none()
                && op.request_delete_range.is_none()
                && op.request_txn.as_ref().is_none_or(|t| t.is_read_only())
        }
        self.success.iter().all(op_reads) && self.failure.iter().all(op_reads)
    }
}

/// `POST /v3/kv/compaction`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CompactionRequestJson {
    #[serde(deserialize_with = "de_i64")]
    revision: i64,
    #[serde(deserialize_with = "de_bool")]
    physical: bool,
}

impl CompactionRequestJson {
    /// The store's request.
    pub fn into_store(self) -> store::CompactionRequest {
        // Compaction here is always physical: it happens in the apply.
        let _ = self.physical;
        store::CompactionRequest {
            revision: self.revision,
        }
    }
}

/// A range's answer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RangeResponseJson {
    /// The header.
    pub header: ResponseHeader,
    /// The pairs found.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kvs: Vec<KeyValueJson>,
    /// Whether more pairs matched than `limit` let through.
    #[serde(skip_serializing_if = "is_zero")]
    pub more: bool,
    /// Pairs in the range.
    #[serde(skip_serializing_if = "is_zero", serialize_with = "ser_i64")]
    pub count: i64,
}

impl RangeResponseJson {
    /// From the store's answer.
    pub fn new(header: ResponseHeader, response: store::RangeResponse) -> Self {
        Self {
            header,
            kvs: response.kvs.into_iter().map(KeyValueJson::from).collect(),
            more: response.more,
            count: response.count,
        }
    }
}

/// A put's answer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PutResponseJson {
    /// The header.
    pub header: ResponseHeader,
    /// The previous pair, when asked for and present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_kv: Option<KeyValueJson>,
}

/// A delete's answer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeleteRangeResponseJson {
    /// The header.
    pub header: ResponseHeader,
    /// Keys deleted.
    #[serde(skip_serializing_if = "is_zero", serialize_with = "ser_i64")]
    pub deleted: i64,
    /// The deleted pairs, when asked for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub prev_kvs: Vec<KeyValueJson>,
}

/// A transaction's answer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TxnResponseJson {
    /// The header.
    pub header: ResponseHeader,
    /// Whether every comparison held.
    #[serde(skip_serializing_if = "is_zero")]
    pub succeeded: bool,
    /// One answer per operation of the branch that ran.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub responses: Vec<ResponseOpJson>,
}

/// One operation's answer inside a transaction.
#[derive(Debug, Clone, Serialize)]
#[allow(clippy::large_enum_variant)]
pub enum ResponseOpJson {
    /// A range's answer.
    #[serde(rename = "response_range")]
    Range(RangeResponseJson),
    /// A put's answer.
    #[serde(rename = "response_put")]
    Put(PutResponseJson),
    /// A delete's answer.
    #[serde(rename = "response_delete_range")]
    DeleteRange(DeleteRangeResponseJson),
    /// A nested transaction's answer.
    #[serde(rename = "response_txn")]
    Txn(TxnResponseJson),
}

/// A compaction's answer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CompactionResponseJson {
    /// The header.
    pub header: ResponseHeader,
}

/// Builds a transaction's JSON answer. Inner headers carry the revision
/// each operation saw, by etcd's rules: writes of the transaction share
/// `begin + 1`; a read sees `begin + 1` once the transaction changed
/// something, `begin` before.
pub fn txn_response(header: ResponseHeader, response: store::TxnResponse) -> TxnResponseJson {
    let end = header.revision;
    let changed = txn_changes(&response);
    let begin = if changed { end - 1 } else { end };
    let mut changed_so_far = false;
    let responses = inner_responses(response.responses, begin, &mut changed_so_far);
    TxnResponseJson {
        header,
        succeeded: response.succeeded,
        responses,
    }
}

fn inner_responses(
    responses: Vec<store::ResponseOp>,
    begin: i64,
    changed_so_far: &mut bool,
) -> Vec<ResponseOpJson> {
    responses
        .into_iter()
        .map(|op| match op {
            store::ResponseOp::Range(range) => {
                let revision = if *changed_so_far { begin + 1 } else { begin };
                ResponseOpJson::Range(RangeResponseJson::new(
                    ResponseHeader::inner(revision),
                    range,
                ))
            }
            store::ResponseOp::Put(put) => {
                *changed_so_far = true;
                ResponseOpJson::Put(PutResponseJson {
                    header: ResponseHeader::inner(begin + 1),
                    prev_kv: put.prev_kv.map(KeyValueJson::from),
                })
            }
            store::ResponseOp::DeleteRange(delete) => {
                if delete.deleted > 0 {
                    *changed_so_far = true;
                }
                let revision = if *changed_so_far { begin + 1 } else { begin };
                ResponseOpJson::DeleteRange(DeleteRangeResponseJson {
                    header: ResponseHeader::inner(revision),
                    deleted: delete.deleted,
                    prev_kvs: delete
                        .prev_kvs
                        .into_iter()
                        .map(KeyValueJson::from)
                        .collect(),
                })
            }
            store::ResponseOp::Txn(txn) => {
                let succeeded = txn.succeeded;
                let responses = inner_responses(txn.responses, begin, changed_so_far);
                // etcd 3.4 never fills a nested transaction's header.
                ResponseOpJson::Txn(TxnResponseJson {
                    header: ResponseHeader::default(),
                    succeeded,
                    responses,
                })
            }
        })
        .collect()
}

/// Whether a transaction's executed branch changed the store.
fn txn_changes(response: &store::TxnResponse) -> bool {
    response.responses.iter().any(|op| match op {
        store::ResponseOp::Put(_) => true,
        store::ResponseOp::DeleteRange(delete) => delete.deleted > 0,
        store::ResponseOp::Txn(txn) => txn_changes(txn),
        store::ResponseOp::Range(_) => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_accept_both_field_spellings_and_ignore_unknown_fields() {
        let snake: RangeRequestJson = serde_json::from_str(
            r#"{"key":"YQ==","range_end":"Yg==","keys_only":true,"sort_order":"DESCEND","x":1}"#,
        )
        .unwrap();
        let camel: RangeRequestJson = serde_json::from_str(
            r#"{"key":"YQ==","rangeEnd":"Yg==","keysOnly":true,"sortOrder":2}"#,
        )
        .unwrap();
        for request in [snake, camel] {
            assert_eq!(request.range_end, b"b");
            assert!(request.keys_only);
            assert_eq!(request.sort_order, SortOrder::Descend);
        }
    }

    #[test]
    fn zero_fields_are_left_out_and_int64_are_strings() {
        let response = PutResponseJson {
            header: ResponseHeader {
                cluster_id: 7,
                member_id: 1,
                revision: 12,
                raft_term: 0,
            },
            prev_kv: Some(KeyValueJson {
                key: b"k".to_vec(),
                create_revision: 2,
                mod_revision: 3,
                version: 2,
                value: Vec::new(),
            }),
        };
        assert_eq!(
            serde_json::to_string(&response).unwrap(),
            r#"{"header":{"cluster_id":"7","member_id":"1","revision":"12"},"prev_kv":{"key":"aw==","create_revision":"2","mod_revision":"3","version":"2"}}"#
        );
    }

    #[test]
    fn empty_keys_and_leases_are_refused_before_the_log() {
        let put: PutRequestJson = serde_json::from_str(r#"{"value":"dg=="}"#).unwrap();
        assert_eq!(put.into_store().unwrap_err().code, 3);
        let put: PutRequestJson = serde_json::from_str(r#"{"key":"aw==","lease":"5"}"#).unwrap();
        assert_eq!(put.into_store().unwrap_err().code, 5);
    }
}
