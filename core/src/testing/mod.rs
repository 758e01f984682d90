//! Building blocks for tests, benchmarks and downstream implementors
//! (feature `testing`): an in-memory storage, an in-process network, a small
//! key-value state machine, and the conformance suite every `RaftStorage`
//! should pass.

mod mem_storage;

pub use mem_storage::MemStorage;
