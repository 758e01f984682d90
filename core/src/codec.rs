//! The one place where Rafter turns its types into bytes and back.
//!
//! Format: one version byte ([`FORMAT_VERSION`]) followed by the value in
//! postcard's format (stable and documented: <https://postcard.jamesmunns.com/wire-format>).
//! Byte payloads are byte strings (`Bytes`, `serde_bytes`), so they cost a
//! length prefix and no per-byte overhead.
//!
//! Every decode takes a size limit and checks it before reading anything, and
//! every decoded value is validated (a gateway: code past it trusts the
//! type's invariants). Arbitrary input gives a value or a [`DecodeError`],
//! never a panic.

use serde::{de::DeserializeOwned, Serialize};

use crate::message::{Message, MessageBody};
use crate::types::{Entry, EntryPayload, HardState, SnapshotMeta};

/// The version byte every encoding starts with. A later format bumps it and
/// keeps decoding this one.
pub const FORMAT_VERSION: u8 = 1;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is longer than the caller's limit; nothing was parsed.
    #[error("encoded value is {len} bytes, over the limit of {limit}")]
    TooLarge {
        /// Length of the input.
        len: usize,
        /// The limit it broke.
        limit: usize,
    },
    /// The input is empty.
    #[error("empty input")]
    Empty,
    /// The version byte is not one this build reads.
    #[error("unknown format version {found} (this build reads {FORMAT_VERSION})")]
    Version {
        /// The version byte found.
        found: u8,
    },
    /// The bytes do not parse as the expected type.
    #[error("malformed encoding: {0}")]
    Malformed(String),
    /// The bytes parse, but the value breaks an invariant.
    #[error("invalid value: {0}")]
    Invalid(String),
    /// Bytes were left after the value.
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
}

/// Encodes a message.
pub fn encode_message(message: &Message) -> Vec<u8> {
    encode(message)
}

/// Decodes and validates a message of at most `limit` bytes.
pub fn decode_message(bytes: &[u8], limit: usize) -> Result<Message, DecodeError> {
    let message: Message = decode(bytes, limit)?;
    validate_message(&message)?;
    Ok(message)
}

/// Encodes a log entry.
pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    encode(entry)
}

/// Appends the encoding of `entry` (the same bytes as [`encode_entry`]) to
/// `out`: for stores that build a record around it without a `Vec` of its
/// own per entry.
pub fn encode_entry_into(entry: &Entry, out: &mut Vec<u8>) {
    encode_into(entry, out)
}

/// Decodes and validates a log entry of at most `limit` bytes.
pub fn decode_entry(bytes: &[u8], limit: usize) -> Result<Entry, DecodeError> {
    let entry: Entry = decode(bytes, limit)?;
    validate_entry(&entry)?;
    Ok(entry)
}

/// Encodes a hard state.
pub fn encode_hard_state(state: &HardState) -> Vec<u8> {
    encode(state)
}

/// Decodes a hard state of at most `limit` bytes.
pub fn decode_hard_state(bytes: &[u8], limit: usize) -> Result<HardState, DecodeError> {
    decode(bytes, limit)
}

/// Encodes snapshot metadata.
pub fn encode_snapshot_meta(meta: &SnapshotMeta) -> Vec<u8> {
    encode(meta)
}

/// Decodes and validates snapshot metadata of at most `limit` bytes.
pub fn decode_snapshot_meta(bytes: &[u8], limit: usize) -> Result<SnapshotMeta, DecodeError> {
    let meta: SnapshotMeta = decode(bytes, limit)?;
    if meta.last_log_id.index > 0 {
        meta.membership.validate().map_err(DecodeError::Invalid)?;
    }
    Ok(meta)
}

/// Encodes any serde value in the project's format. Used for user commands
/// and responses too, so the whole project has one encoding.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    encode_into(value, &mut out);
    out
}

/// Appends the encoding of `value` (the same bytes as [`encode`]) to `out`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    out.push(FORMAT_VERSION);
    // Serializing into a Vec only fails if the value's Serialize impl fails,
    // which derive-generated impls of our types never do.
    postcard::to_io(value, &mut *out).expect("postcard encoding into a Vec cannot fail");
}

/// Decodes any serde value of at most `limit` bytes, rejecting trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::Version { found: version });
    }
    let (value, rest) =
        postcard::take_from_bytes(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len()));
    }
    Ok(value)
}

fn validate_entry(entry: &Entry) -> Result<(), DecodeError> {
    if entry.index == 0 {
        return Err(DecodeError::Invalid("entry index 0".into()));
    }
    if let EntryPayload::Membership(m) = &entry.payload {
        m.validate().map_err(DecodeError::Invalid)?;
    }
    Ok(())
}

/// The properties the core relies on for a message from the network.
fn validate_message(message: &Message) -> Result<(), DecodeError> {
    if message.from == 0 || message.to == 0 {
        return Err(DecodeError::Invalid("node id 0".into()));
    }
    if let MessageBody::Append {
        prev_log_id,
        entries,
        ..
    } = &message.body
    {
        let mut expected = prev_log_id.index;
        let mut term = prev_log_id.term;
        for entry in entries {
            validate_entry(entry)?;
            expected += 1;
            if entry.index != expected {
                return Err(DecodeError::Invalid(format!(
                    "append entries not consecutive: expected index {expected}, found {}",
                    entry.index
                )));
            }
            if entry.term < term || entry.term > message.term {
                return Err(DecodeError::Invalid(format!(
                    "append entry {} has term {} outside [{term}, {}]",
                    entry.index, entry.term, message.term
                )));
            }
            term = entry.term;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::AppendOutcome;
    use crate::types::{LogId, Membership};
    use bytes::Bytes;
    use proptest::prelude::*;

    fn append(entries: Vec<Entry>) -> Message {
        Message {
            from: 1,
            to: 2,
            term: 3,
            body: MessageBody::Append {
                prev_log_id: LogId::new(1, 4),
                entries,
                commit: 4,
            },
        }
    }

    #[test]
    fn message_round_trips() {
        let msg = append(vec![
            Entry {
                term: 2,
                index: 5,
                payload: EntryPayload::Command(Bytes::from_static(b"x")),
            },
            Entry {
                term: 3,
                index: 6,
                payload: EntryPayload::Blank,
            },
        ]);
        let bytes = encode_message(&msg);
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode_message(&bytes, 1024), Ok(msg));
    }

    #[test]
    fn decode_rejects_oversized_wrong_version_trailing_and_gaps() {
        let msg = append(vec![Entry {
            term: 3,
            index: 5,
            payload: EntryPayload::Blank,
        }]);
        let bytes = encode_message(&msg);
        assert!(matches!(
            decode_message(&bytes, 3),
            Err(DecodeError::TooLarge { .. })
        ));
        let mut wrong = bytes.clone();
        wrong[0] = 9;
        assert_eq!(
            decode_message(&wrong, 1024),
            Err(DecodeError::Version { found: 9 })
        );
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert_eq!(
            decode_message(&trailing, 1024),
            Err(DecodeError::Trailing(1))
        );
        let gap = append(vec![Entry {
            term: 3,
            index: 7,
            payload: EntryPayload::Blank,
        }]);
        assert!(matches!(
            decode_message(&encode_message(&gap), 1024),
            Err(DecodeError::Invalid(_))
        ));
        assert_eq!(decode_message(&[], 1024), Err(DecodeError::Empty));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_message(&bytes, 1 << 20);
            let _ = decode_entry(&bytes, 1 << 20);
            let mut versioned = bytes.clone();
            versioned.insert(0, FORMAT_VERSION);
            let _ = decode_message(&versioned, 1 << 20);
            let _ = decode_entry(&versioned, 1 << 20);
        }

        #[test]
        fn responses_round_trip(from in 1u64.., to in 1u64.., term: u64, idx: u64, t: u64) {
            let msg = Message { from, to, term, body: MessageBody::AppendResponse {
                outcome: AppendOutcome::Reject { rejected_index: idx, hint: LogId::new(t, idx) } } };
            prop_assert_eq!(decode_message(&encode_message(&msg), 1024).unwrap(), msg);
        }

        /// Encoding into a buffer makes the same bytes as `encode_entry`,
        /// after whatever the buffer held.
        #[test]
        fn encode_entry_into_appends_the_same_bytes(
            term: u64,
            index: u64,
            kind in 0u8..3,
            data in proptest::collection::vec(any::<u8>(), 0..600),
            prefix in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let payload = match kind {
                0 => EntryPayload::Blank,
                1 => EntryPayload::Command(Bytes::from(data)),
                _ => EntryPayload::Membership(Box::new(Membership::new_voters(
                    data.iter().map(|&b| (u64::from(b) + 1, format!("node-{b}"))),
                ))),
            };
            let entry = Entry { term, index, payload };
            let mut out = prefix.clone();
            encode_entry_into(&entry, &mut out);
            prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
            prop_assert_eq!(&out[prefix.len()..], &encode_entry(&entry)[..]);
        }
    }
}
