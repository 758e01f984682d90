//! Building blocks for tests, benchmarks and downstream implementors
//! (feature `testing`): an in-memory storage, an in-process network, small
//! state machines, and the conformance suite every `RaftStorage` should pass.

mod kv;
mod mem_network;
mod mem_storage;
mod sim;
mod storage_suite;

pub use kv::{KvCommand, KvResponse, KvStateMachine, NoopStateMachine};
pub use mem_network::{MemNetwork, MemRouter};
pub use mem_storage::MemStorage;
pub use sim::{PlantedBug, SimActions, SimCore, SimDurable, SnapshotRead, SnapshotReceive};
pub use storage_suite::run_storage_suite;
