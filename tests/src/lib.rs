//! Cluster, crash, simulation and chaos tests for Rafter.
//!
//! [`cluster::Cluster`] runs real nodes — driver, storage task, apply task —
//! in one process on `MemStorage` and `MemRouter`, usually on a tokio
//! runtime with paused time, so elections and timeouts take no wall-clock
//! time and no test sleeps.

pub mod cluster;
