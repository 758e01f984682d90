//! A durable `RaftStorage` on redb (see issue: rafter-redb).
