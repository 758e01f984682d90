//! A `RaftNetwork` on QUIC with mutual TLS (see issue: rafter-quic).
