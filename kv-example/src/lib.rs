//! The replicated key-value service (to come: see the kv-example issue).
