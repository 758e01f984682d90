//! Cluster, crash, simulation and chaos tests for Rafter.
//!
//! [`cluster::Cluster`] runs real nodes — driver, storage task, apply task —
//! in one process on `MemStorage` and `MemRouter`, usually on a tokio
//! runtime with paused time, so elections and timeouts take no wall-clock
//! time and no test sleeps.
//!
//! [`sim`] runs whole clusters of the pure engine deterministically under
//! seeded faults, and checks them (see its module docs); [`node_sim`] does
//! the same with whole shipped nodes (`Raft::start`) on a paused
//! current-thread runtime.
//!
//! [`chaos`] runs real `rafter-kv` processes in network namespaces under a
//! seeded nemesis (kills, pauses, partitions, membership changes) and
//! checks the clients' history and the nodes' states (`tests/README.md`).

pub mod chaos;
pub mod cluster;
pub mod node_sim;
pub mod seeds;
pub mod sim;
pub mod trapped;
