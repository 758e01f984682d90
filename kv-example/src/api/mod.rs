//! The HTTP API of `shared/kv-api.md`: etcd's JSON messages and their
//! checks (`kv`, `json`, `error`), and thin handlers, one file per route
//! group (`etcd`, `plain`, `cluster`). The KV semantics live in the store;
//! handlers parse, route to the leader and render.

pub mod cluster;
pub mod error;
pub mod etcd;
pub mod json;
pub mod kv;
pub mod plain;

use serde::de::DeserializeOwned;

use self::error::ApiError;
use crate::store::StoreError;

/// Parses a JSON body; an empty body is the empty message, as proto3 has it.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(ApiError::bad_json)
}

/// A store failure while reading: the node's disk or data is broken.
pub fn store_failure(error: StoreError) -> ApiError {
    ApiError::new(error::code::INTERNAL, format!("store: {error}"))
}

/// The key after every key that starts with `prefix` (etcd's
/// `GetPrefixRangeEnd`): the prefix with its last byte below 0xff
/// incremented and the rest dropped; `[0]` (every key) when no byte can be.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_follows_etcd() {
        assert_eq!(prefix_end(b"a"), b"b");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), [0]);
        assert_eq!(prefix_end(b""), [0]);
    }
}
