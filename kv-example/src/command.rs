//! What the log carries for `rafter-kv`, and what applying it answers.
//!
//! `KvCommand` is the on-disk and wire format of every entry: an entry
//! written today must decode on every later version. It is therefore a
//! versioned enum: a change of shape adds a variant (`V2`) and the state
//! machine keeps applying `V1`; variants and fields are never reordered or
//! removed (postcard encodes by position).

use serde::{Deserialize, Serialize};

use crate::store::KvError;
use crate::store::{WriteRequest, WriteResponse};

/// One client write, as proposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    /// The first (and current) format.
    V1(CommandV1),
}

/// The first command format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandV1 {
    /// The client session this write belongs to, for exactly-once retries.
    pub session: Option<SessionTag>,
    /// The proposer's wall clock in ms since the Unix epoch: the log's
    /// clock, which expires idle sessions identically on every replica.
    pub time_ms: u64,
    /// The write.
    pub request: WriteRequest,
}

/// `x-rafter-client` and `x-rafter-seq` of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionTag {
    /// The client's id.
    pub client: u64,
    /// The write's sequence number within the client's session.
    pub seq: u64,
}

/// A write's effect: the store revision after it and the store's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOutcome {
    /// The store revision once the write applied.
    pub revision: i64,
    /// What the store answered.
    pub response: WriteResponse,
}

/// What applying one command answers: a business-rule refusal is an
/// answer, not a failure of the node.
pub type KvResponse = Result<WriteOutcome, KvError>;
