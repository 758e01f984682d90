//! The MVCC key space (to come).
