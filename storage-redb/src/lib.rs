//! `rafter-redb`: a durable [`rafter::RaftStorage`] on the redb embedded
//! database, and a pattern for durable state machines on redb.
//!
//! - [`RedbStorage`]: the log, hard state, purge point and snapshot metadata
//!   of one node in one redb file, one transaction per driver batch, every
//!   record checksummed (format: `FORMAT.md`).
//! - [`RedbStateMachineStore`]: writes a state machine's data and its applied
//!   log id in one transaction, so a restart never applies an entry twice;
//!   [`RedbKv`] is a small key-value state machine built on it.
//! - [`mod@bench`]: the append throughput measurement, against raw redb.
//!
//! Run the conformance suite of `rafter::testing` on any store with one
//! call; this crate's `tests/storage_suite.rs` does it for `RedbStorage`.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod bench;
mod compaction;
mod create;
mod deferred;
mod error;
mod format;
mod journal;
mod kv;
mod lock;
mod log_store;
mod options;
mod record;
mod state_machine;
mod storage;
mod unflushed;

/// The README's snippets, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use format::{ENTRY_RECORD_BYTES_MAX, STORE_FORMAT_VERSION};
pub use kv::{RedbKv, RedbKvCommand};
pub use options::RedbOptions;
pub use state_machine::RedbStateMachineStore;
pub use storage::RedbStorage;
