//! Cluster, crash and simulation tests for Rafter.
