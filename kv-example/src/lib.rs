//! `rafter-kv`: a replicated key-value service on Rafter that speaks etcd's
//! v3 JSON API (`shared/kv-api.md`).

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod store;
