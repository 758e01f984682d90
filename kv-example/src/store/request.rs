//! The requests and responses of the key space: what the log carries and what
//! an applied write answers. Plain data, no behaviour; the rules live in
//! `writer.rs`, `range.rs` and `txn.rs`.
//!
//! Every field mirrors a field of etcd's v3 protobuf messages of the same
//! name, with the same zero-value meaning. Byte fields are `serde_bytes`, so
//! the project's codec stores them as one length-prefixed string.

use serde::{Deserialize, Serialize};

/// One key's state at some revision, as etcd's `mvccpb.KeyValue` (no lease).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The revision of the put that created the key (since its last delete).
    pub create_revision: i64,
    /// The revision of the last put of the key.
    pub mod_revision: i64,
    /// Puts since creation: 1 on creation, +1 per put.
    pub version: i64,
    /// The value (empty when the read asked for keys only).
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

/// Order of a range's results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortOrder {
    /// Key order (unless `sort_target` is not `Key`: then ascending).
    #[default]
    None,
    /// Ascending by the sort target.
    Ascend,
    /// Descending by the sort target.
    Descend,
}

/// What a range sorts by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortTarget {
    /// The key bytes.
    #[default]
    Key,
    /// The version.
    Version,
    /// The create revision.
    Create,
    /// The mod revision.
    Mod,
    /// The value bytes.
    Value,
}

/// A read of one key or a key range (etcd's `RangeRequest`, no
/// `serializable`: consistency is the caller's business).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRequest {
    /// First key; must not be empty.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Empty: the one key `key`. `[0]`: every key >= `key`. Otherwise the
    /// keys in `[key, range_end)` (none if `key >= range_end`).
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
    /// At most this many kvs (0 or less: no limit).
    pub limit: i64,
    /// Read at this revision (0 or less: the current one).
    pub revision: i64,
    /// Result order.
    pub sort_order: SortOrder,
    /// Sort key.
    pub sort_target: SortTarget,
    /// Leave values out.
    pub keys_only: bool,
    /// Only count; no kvs.
    pub count_only: bool,
    /// Keep kvs with mod_revision >= this (0: no filter).
    pub min_mod_revision: i64,
    /// Keep kvs with mod_revision <= this (0: no filter).
    pub max_mod_revision: i64,
    /// Keep kvs with create_revision >= this (0: no filter).
    pub min_create_revision: i64,
    /// Keep kvs with create_revision <= this (0: no filter).
    pub max_create_revision: i64,
}

/// The answer to a [`RangeRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResponse {
    /// The store revision the read saw (etcd's `header.revision`): the
    /// current revision, also for a historical read; inside a txn, the txn's
    /// new revision once it has written something.
    pub revision: i64,
    /// The kvs, sorted and cut to the limit.
    pub kvs: Vec<KeyValue>,
    /// True when a limit cut kvs off.
    pub more: bool,
    /// Keys in the range at the read revision, before the limit and before
    /// the min/max revision filters (as etcd counts).
    pub count: i64,
}

/// A put (etcd's `PutRequest`, no lease).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutRequest {
    /// The key; must not be empty.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The value; must be empty with `ignore_value`.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Return the key's previous kv, if any.
    pub prev_kv: bool,
    /// Keep the current value; the key must exist.
    pub ignore_value: bool,
}

/// The answer to a [`PutRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    /// The revision the put wrote at (etcd's `header.revision`).
    pub revision: i64,
    /// The previous kv, when asked for and the key existed.
    pub prev_kv: Option<KeyValue>,
}

/// A delete of one key or a key range (etcd's `DeleteRangeRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeRequest {
    /// First key; must not be empty.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Same rules as [`RangeRequest::range_end`].
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
    /// Return the deleted kvs.
    pub prev_kv: bool,
}

/// The answer to a [`DeleteRangeRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRangeResponse {
    /// The store revision after the delete (unchanged if nothing was
    /// deleted; etcd's `header.revision`).
    pub revision: i64,
    /// How many keys were deleted.
    pub deleted: i64,
    /// The deleted kvs, in key order, when asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// What a [`Compare`] looks at, with the value it is compared against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    /// The key's version (0 when absent).
    Version(i64),
    /// The key's create revision (0 when absent).
    Create(i64),
    /// The key's mod revision (0 when absent).
    Mod(i64),
    /// The key's value (an absent key fails every value compare).
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// How the key's field must relate to the compared value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareResult {
    /// field == value
    #[default]
    Equal,
    /// field > value
    Greater,
    /// field < value
    Less,
    /// field != value
    NotEqual,
}

/// One condition of a txn (etcd's `Compare`, no lease target).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    /// The key; must not be empty.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Same rules as [`RangeRequest::range_end`]; every key in the range
    /// must satisfy the condition.
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
    /// The field and the value compared.
    pub target: CompareTarget,
    /// The relation required.
    pub result: CompareResult,
}

/// One operation of a txn branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestOp {
    /// A read (sees the txn's earlier writes).
    Range(RangeRequest),
    /// A put.
    Put(PutRequest),
    /// A delete.
    DeleteRange(DeleteRangeRequest),
    /// A nested txn (its compares see the state before the outer txn).
    Txn(TxnRequest),
}

/// The answer to one [`RequestOp`], same variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseOp {
    /// Answer to [`RequestOp::Range`].
    Range(RangeResponse),
    /// Answer to [`RequestOp::Put`].
    Put(PutResponse),
    /// Answer to [`RequestOp::DeleteRange`].
    DeleteRange(DeleteRangeResponse),
    /// Answer to [`RequestOp::Txn`].
    Txn(TxnResponse),
}

/// A transaction (etcd's `TxnRequest`): if every compare holds, run
/// `success`, else `failure`, atomically, at one new revision if anything
/// changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRequest {
    /// Conditions, all evaluated against the state before the txn.
    pub compare: Vec<Compare>,
    /// Run when every compare holds (at most 128 ops).
    pub success: Vec<RequestOp>,
    /// Run otherwise (at most 128 ops).
    pub failure: Vec<RequestOp>,
}

/// The answer to a [`TxnRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResponse {
    /// True when the compares held and `success` ran.
    pub succeeded: bool,
    /// One response per op of the branch that ran, in order.
    pub responses: Vec<ResponseOp>,
}

/// Drop history below a revision (etcd's `CompactionRequest`, no
/// `physical`: a compaction is done when its write transaction commits).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionRequest {
    /// The new compact revision: reads below it fail afterwards.
    pub revision: i64,
}

/// The answer to a [`CompactionRequest`] (nothing beyond the revision the
/// outcome carries).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionResponse {}

/// A request that goes through the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteRequest {
    /// A put.
    Put(PutRequest),
    /// A delete.
    DeleteRange(DeleteRangeRequest),
    /// A txn (may also be read-only).
    Txn(TxnRequest),
    /// A compaction.
    Compaction(CompactionRequest),
}

/// The answer to a [`WriteRequest`], same variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteResponse {
    /// Answer to [`WriteRequest::Put`].
    Put(PutResponse),
    /// Answer to [`WriteRequest::DeleteRange`].
    DeleteRange(DeleteRangeResponse),
    /// Answer to [`WriteRequest::Txn`].
    Txn(TxnResponse),
    /// Answer to [`WriteRequest::Compaction`].
    Compaction(CompactionResponse),
}
