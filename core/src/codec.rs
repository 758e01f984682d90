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

use crate::command_bytes::CommandBytes;
use crate::message::{ForwardOutcome, Message, MessageBody};
use crate::types::{Entry, EntryPayload, HardState, LogId, SnapshotMeta};

/// The version byte every encoding starts with. A later format bumps it and
/// keeps decoding this one.
pub const FORMAT_VERSION: u8 = 1;

/// Terms in messages must be below this: 2^63, which 2^63 elections would
/// take to reach, and which leaves a node that adopts a term room for the
/// `+ 1` of every election it may hold after.
pub const TERM_LIMIT: u64 = 1 << 63;

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

/// Why a value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoding is longer than the caller's limit; nothing was
    /// allocated.
    #[error("encoding of {size} bytes is over the limit of {max}")]
    TooLarge {
        /// The encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// postcard cannot encode the value: its `Serialize` impl asks for a
    /// map or sequence of unknown length (as `#[serde(flatten)]` makes),
    /// or fails.
    #[error("{0}")]
    Unsupported(String),
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
    validate_snapshot_meta(&meta)?;
    Ok(meta)
}

/// Encodes any serde value in the project's format. Used for user commands
/// and responses too, so the whole project has one encoding.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    encode_into(value, &mut out);
    out
}

/// Encodes a user command (the same bytes as [`encode`]) straight into the
/// entry payload, refusing one over `limit` bytes before allocating
/// anything. A command that fits inline costs no allocation at all; a
/// larger one costs exactly one, of its exact size.
///
/// User types are outside our control, so what postcard cannot encode is
/// an error here, not a panic: `#[serde(flatten)]`, a map or sequence
/// serialized without its length, or an impl that fails (or that writes
/// more the second time than it measured the first).
pub fn encode_command<T: Serialize + ?Sized>(
    value: &T,
    limit: usize,
) -> Result<CommandBytes, EncodeError> {
    let len = 1 + postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
        .map_err(|e| EncodeError::Unsupported(e.to_string()))?;
    if len > limit {
        return Err(EncodeError::TooLarge {
            size: len,
            max: limit,
        });
    }
    let mut failed = None;
    let bytes = CommandBytes::build(len, |out| {
        out[0] = FORMAT_VERSION;
        if let Err(e) = postcard::to_slice(value, &mut out[1..]) {
            failed = Some(e);
        }
    });
    match failed {
        None => Ok(bytes),
        Some(e) => Err(EncodeError::Unsupported(e.to_string())),
    }
}

/// Appends the encoding of `value` (the same bytes as [`encode`]) to `out`.
///
/// Panics if postcard cannot encode `value` (see [`encode_command`], which
/// returns an error instead: use it for types you do not control).
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    out.push(FORMAT_VERSION);
    // Serializing into a Vec only fails if the value's Serialize impl fails
    // or asks for a length postcard must know; the derived impls of our
    // types do neither (no flatten, no map without its length).
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

/// Metadata at index 0 is "no snapshot" (what a store holds before its
/// first one) and carries no membership; any other must name a valid one.
fn validate_snapshot_meta(meta: &SnapshotMeta) -> Result<(), DecodeError> {
    if meta.last_log_id.index > 0 {
        meta.membership.validate().map_err(DecodeError::Invalid)?;
    }
    Ok(())
}

/// The properties the core relies on for a message from the network: what
/// [`decode_message`] checks after decoding, for a transport that decodes
/// its own way. `Raft::receive` runs it on every message, so no input from
/// a peer reaches an assertion of the engine.
///
/// Every sum over decoded numbers is checked: the input may hold any `u64`,
/// and an overflow must be an error here, not a panic (debug) or a wrapped
/// index (release) further in.
pub fn validate_message(message: &Message) -> Result<(), DecodeError> {
    if message.from == 0 || message.to == 0 {
        return Err(DecodeError::Invalid("node id 0".into()));
    }
    // A node that adopts a term campaigns at the next ones: leave room.
    if message.term >= TERM_LIMIT {
        return Err(DecodeError::Invalid(format!(
            "term {} is not below {TERM_LIMIT}",
            message.term
        )));
    }
    match &message.body {
        MessageBody::Append {
            prev_log_id,
            entries,
            ..
        } => validate_append(message.term, *prev_log_id, entries),
        MessageBody::InstallSnapshot {
            meta, offset, data, ..
        } => {
            // A leader sends a snapshot only to replace purged entries, so it
            // covers at least entry 1 and names the membership at its end.
            if meta.last_log_id.index == 0 {
                return Err(DecodeError::Invalid("snapshot chunk at index 0".into()));
            }
            validate_snapshot_meta(meta)?;
            // The follower computes the next offset as `offset + data.len()`.
            let end = u64::try_from(data.len())
                .ok()
                .and_then(|len| offset.checked_add(len));
            if end.is_none() {
                return Err(DecodeError::Invalid(format!(
                    "snapshot chunk at offset {offset} of {} bytes ends past u64::MAX",
                    data.len()
                )));
            }
            Ok(())
        }
        MessageBody::VoteRequest { .. }
        | MessageBody::VoteResponse { .. }
        | MessageBody::AppendResponse { .. }
        | MessageBody::Heartbeat { .. }
        | MessageBody::HeartbeatResponse { .. }
        | MessageBody::TimeoutNow
        | MessageBody::InstallSnapshotResponse { .. }
        | MessageBody::ReadIndexRequest { .. }
        | MessageBody::ReadIndexResponse { .. } => Ok(()),
        MessageBody::ForwardProposals { commands, .. } => {
            if commands.is_empty() {
                return Err(DecodeError::Invalid(
                    "forwarded batch of no commands".into(),
                ));
            }
            Ok(())
        }
        MessageBody::ForwardResponse { outcome, .. } => match outcome {
            ForwardOutcome::Appended { first } if first.index == 0 => Err(DecodeError::Invalid(
                "forwarded batch appended at index 0".into(),
            )),
            _ => Ok(()),
        },
    }
}

/// Entries are valid, consecutive from `prev_log_id.index + 1`, and their
/// terms never decrease, from `prev_log_id.term` up to the message's term.
fn validate_append(
    message_term: u64,
    prev_log_id: LogId,
    entries: &[Entry],
) -> Result<(), DecodeError> {
    let mut expected = prev_log_id.index;
    let mut term = prev_log_id.term;
    for entry in entries {
        validate_entry(entry)?;
        expected = expected.checked_add(1).ok_or_else(|| {
            DecodeError::Invalid(format!(
                "append entries after index {} overflow the log index",
                prev_log_id.index
            ))
        })?;
        if entry.index != expected {
            return Err(DecodeError::Invalid(format!(
                "append entries not consecutive: expected index {expected}, found {}",
                entry.index
            )));
        }
        if entry.term < term || entry.term > message_term {
            return Err(DecodeError::Invalid(format!(
                "append entry {} has term {} outside [{term}, {message_term}]",
                entry.index, entry.term
            )));
        }
        term = entry.term;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Membership, NodeId};
    use bytes::Bytes;
    use proptest::collection::vec;
    use proptest::prelude::*;

    /// `encode_command` writes the bytes `encode` does, inline or not, and
    /// refuses a command over the limit by its exact size.
    #[test]
    fn encode_command_matches_encode_and_enforces_the_limit() {
        // A byte string of n bytes encodes to n + 2 (version, length), so
        // these straddle the inline limit.
        let edge = CommandBytes::INLINE_MAX - 2;
        for len in [0, 1, edge - 1, edge, edge + 1, 1000] {
            let value = serde_bytes::ByteBuf::from(vec![0xa5; len]);
            let expected = encode(&value);
            let payload = encode_command(&value, usize::MAX).unwrap();
            assert_eq!(&payload[..], &expected[..], "len {len}");
            assert_eq!(
                payload.is_inline(),
                expected.len() <= CommandBytes::INLINE_MAX
            );
            assert_eq!(
                encode_command(&value, expected.len()).map(|p| p.len()),
                Ok(expected.len())
            );
            assert_eq!(
                encode_command(&value, expected.len() - 1),
                Err(EncodeError::TooLarge {
                    size: expected.len(),
                    max: expected.len() - 1
                })
            );
            let back: serde_bytes::ByteBuf = decode(&payload, usize::MAX).unwrap();
            assert_eq!(back, value);
        }
    }

    #[test]
    fn a_value_postcard_cannot_encode_is_an_error() {
        #[derive(serde::Serialize)]
        struct Inner {
            n: u64,
        }
        #[derive(serde::Serialize)]
        struct Flat {
            #[serde(flatten)]
            inner: Inner,
        }
        let result = encode_command(
            &Flat {
                inner: Inner { n: 1 },
            },
            usize::MAX,
        );
        assert!(
            matches!(result, Err(EncodeError::Unsupported(_))),
            "{result:?}"
        );
    }

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

    fn install_snapshot(membership: Membership, offset: u64, data: &'static [u8]) -> Message {
        Message {
            from: 1,
            to: 2,
            term: 3,
            body: MessageBody::InstallSnapshot {
                meta: SnapshotMeta {
                    last_log_id: LogId::new(2, 10),
                    membership,
                },
                offset,
                data: Bytes::from_static(data),
                done: false,
            },
        }
    }

    fn voters(ids: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership::new_voters(ids.into_iter().map(|id| (id, format!("node-{id}"))))
    }

    fn invalid(result: Result<Message, DecodeError>) -> String {
        match result {
            Err(DecodeError::Invalid(reason)) => reason,
            other => panic!("expected DecodeError::Invalid, got {other:?}"),
        }
    }
    #[test]
    fn message_round_trips() {
        let msg = append(vec![
            Entry {
                term: 2,
                index: 5,
                payload: EntryPayload::Command(CommandBytes::from(b"x")),
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

    /// Regression: an append right after `u64::MAX` used to compute the
    /// next index with `+ 1`, a panic in debug builds on bytes from the
    /// network.
    #[test]
    #[cfg(feature = "testing")]
    fn append_after_index_u64_max_is_rejected_not_overflowed() {
        let msg = crate::testing::strategies::append_past_the_last_index();
        let reason = invalid(decode_message(&encode_message(&msg), 1024));
        assert!(reason.contains("overflow"), "{reason}");
        // The same prefix with no entries is a valid probe.
        let probe = Message {
            body: MessageBody::Append {
                prev_log_id: LogId::new(3, u64::MAX),
                entries: vec![],
                commit: 0,
            },
            ..msg
        };
        assert_eq!(decode_message(&encode_message(&probe), 1024), Ok(probe));
    }

    /// The membership a snapshot chunk carries is validated like the one in
    /// stored snapshot metadata and in membership entries.
    #[test]
    fn install_snapshot_with_invalid_membership_is_rejected() {
        let valid = install_snapshot(voters([1, 2, 3]), 0, b"chunk");
        assert_eq!(
            decode_message(&encode_message(&valid), 1024),
            Ok(valid.clone())
        );
        let no_voters = install_snapshot(Membership::default(), 0, b"chunk");
        let reason = invalid(decode_message(&encode_message(&no_voters), 1024));
        assert!(reason.contains("voter"), "{reason}");
        let mut both = voters([1, 2, 3]);
        both.learners.insert(2);
        invalid(decode_message(
            &encode_message(&install_snapshot(both, 0, b"chunk")),
            1024,
        ));
        let mut no_address = voters([1, 2]);
        no_address.voters.insert(7);
        invalid(decode_message(
            &encode_message(&install_snapshot(no_address, 0, b"")),
            1024,
        ));
        // Index 0 covers nothing: no leader sends it.
        let mut at_zero = valid.clone();
        if let MessageBody::InstallSnapshot { meta, .. } = &mut at_zero.body {
            meta.last_log_id = LogId::new(0, 0);
        }
        invalid(decode_message(&encode_message(&at_zero), 1024));
    }

    /// The follower computes `offset + data.len()`: it must not overflow.
    #[test]
    fn install_snapshot_chunk_ending_past_u64_max_is_rejected() {
        let last = install_snapshot(voters([1]), u64::MAX - 5, b"12345");
        assert_eq!(
            decode_message(&encode_message(&last), 1024),
            Ok(last.clone())
        );
        let past = install_snapshot(voters([1]), u64::MAX - 4, b"12345");
        let reason = invalid(decode_message(&encode_message(&past), 1024));
        assert!(reason.contains("u64::MAX"), "{reason}");
    }

    /// `decode_snapshot_meta` keeps accepting the "no snapshot" metadata.
    #[test]
    fn snapshot_meta_at_index_zero_needs_no_membership() {
        let none = SnapshotMeta::default();
        assert_eq!(
            decode_snapshot_meta(&encode_snapshot_meta(&none), 1024),
            Ok(none)
        );
        let empty_at_five = SnapshotMeta {
            last_log_id: LogId::new(1, 5),
            membership: Membership::default(),
        };
        assert!(matches!(
            decode_snapshot_meta(&encode_snapshot_meta(&empty_at_five), 1024),
            Err(DecodeError::Invalid(_))
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..256)) {
            let _ = decode_message(&bytes, 1 << 20);
            let _ = decode_entry(&bytes, 1 << 20);
            let _ = decode_snapshot_meta(&bytes, 1 << 20);
            let _ = decode_hard_state(&bytes, 1 << 20);
            let mut versioned = bytes.clone();
            versioned.insert(0, FORMAT_VERSION);
            let _ = decode_message(&versioned, 1 << 20);
            let _ = decode_entry(&versioned, 1 << 20);
            let _ = decode_snapshot_meta(&versioned, 1 << 20);
        }
    }

    /// The properties over generated messages. The generators are
    /// `rafter::testing::strategies`, so these need the `testing` feature
    /// (`cargo test -p rafter --features testing codec`).
    #[cfg(feature = "testing")]
    mod generated {
        use super::*;
        use crate::message::AppendOutcome;
        use crate::testing::strategies::{any_message, membership, number, payload, valid_message};

        /// The dumb model of `validate_message`: the same rules in `u128`, where
        /// nothing overflows.
        fn model_accepts(message: &Message) -> bool {
            let entry_ok = |entry: &Entry| {
                entry.index != 0
                    && match &entry.payload {
                        EntryPayload::Membership(m) => m.validate().is_ok(),
                        _ => true,
                    }
            };
            let body_ok = match &message.body {
                MessageBody::Append {
                    prev_log_id,
                    entries,
                    ..
                } => {
                    let mut term = prev_log_id.term;
                    entries.iter().enumerate().all(|(i, entry)| {
                        let ok = entry_ok(entry)
                            && u128::from(entry.index)
                                == u128::from(prev_log_id.index) + 1 + i as u128
                            && term <= entry.term
                            && entry.term <= message.term;
                        term = entry.term;
                        ok
                    })
                }
                MessageBody::InstallSnapshot {
                    meta, offset, data, ..
                } => {
                    meta.last_log_id.index > 0
                        && meta.membership.validate().is_ok()
                        && u128::from(*offset) + data.len() as u128 <= u128::from(u64::MAX)
                }
                _ => true,
            };
            message.from != 0 && message.to != 0 && message.term < TERM_LIMIT && body_ok
        }

        /// Which variant a body is. Exhaustive, so a new `MessageBody` variant
        /// fails to compile here until the generators are taught it.
        fn body_variant(body: &MessageBody) -> usize {
            match body {
                MessageBody::VoteRequest { .. } => 0,
                MessageBody::VoteResponse { .. } => 1,
                MessageBody::Append { .. } => 2,
                MessageBody::AppendResponse {
                    outcome: AppendOutcome::Success { .. },
                } => 3,
                MessageBody::AppendResponse {
                    outcome: AppendOutcome::Reject { .. },
                } => 4,
                MessageBody::Heartbeat { .. } => 5,
                MessageBody::HeartbeatResponse { .. } => 6,
                MessageBody::TimeoutNow => 7,
                MessageBody::InstallSnapshot { .. } => 8,
                MessageBody::InstallSnapshotResponse { .. } => 9,
                MessageBody::ReadIndexRequest { .. } => 10,
                MessageBody::ReadIndexResponse { .. } => 11,
                MessageBody::ForwardProposals { .. } => 12,
                MessageBody::ForwardResponse { .. } => 13,
            }
        }
        const BODY_VARIANTS: usize = 14;

        /// Likewise for entry payloads.
        fn payload_variant(payload: &EntryPayload) -> usize {
            match payload {
                EntryPayload::Blank => 0,
                EntryPayload::Command(_) => 1,
                EntryPayload::Membership(_) => 2,
            }
        }
        const PAYLOAD_VARIANTS: usize = 3;

        /// The valid generator reaches every body and payload variant and both
        /// ends of the index range, so the round-trip property covers them.
        #[test]
        fn valid_generator_covers_every_variant_and_the_index_edges() {
            use proptest::strategy::ValueTree;
            let mut runner = proptest::test_runner::TestRunner::deterministic();
            let strategy = valid_message();
            let mut bodies = [false; BODY_VARIANTS];
            let mut payloads = [false; PAYLOAD_VARIANTS];
            let mut last_index_max = false;
            for _ in 0..2000 {
                let message = strategy.new_tree(&mut runner).unwrap().current();
                bodies[body_variant(&message.body)] = true;
                if let MessageBody::Append { entries, .. } = &message.body {
                    for entry in entries {
                        payloads[payload_variant(&entry.payload)] = true;
                        last_index_max |= entry.index == u64::MAX;
                    }
                }
            }
            assert_eq!(bodies, [true; BODY_VARIANTS], "body variants generated");
            assert_eq!(
                payloads, [true; PAYLOAD_VARIANTS],
                "payload variants generated"
            );
            assert!(last_index_max, "no append ended at index u64::MAX");
        }

        proptest! {
            /// Every valid message round-trips.
            #[test]
            fn every_valid_message_round_trips(message in valid_message()) {
                let bytes = encode_message(&message);
                prop_assert_eq!(decode_message(&bytes, bytes.len()), Ok(message));
            }

            /// Any message, valid or not, decodes to itself or to `Invalid`
            /// exactly when the model says so, and never panics (these tests run
            /// in debug builds, where an overflow panics).
            #[test]
            fn any_message_is_accepted_exactly_when_the_model_says(message in any_message()) {
                match decode_message(&encode_message(&message), 1 << 20) {
                    Ok(decoded) => {
                        prop_assert!(model_accepts(&message), "accepted: {message:?}");
                        prop_assert_eq!(decoded, message);
                    }
                    Err(DecodeError::Invalid(_)) => {
                        prop_assert!(!model_accepts(&message), "rejected: {message:?}");
                    }
                    Err(other) => prop_assert!(false, "{other:?} for {message:?}"),
                }
            }

            /// Valid encodings with bytes overwritten or cut off never panic:
            /// these reach far deeper into the format than random bytes do.
            #[test]
            fn damaged_encodings_never_panic(
                message in valid_message(),
                edits in vec((any::<proptest::sample::Index>(), any::<u8>()), 1..4),
                cut in any::<proptest::sample::Index>(),
            ) {
                let mut bytes = encode_message(&message);
                for (at, byte) in edits {
                    let at = at.index(bytes.len());
                    bytes[at] = byte;
                }
                let _ = decode_message(&bytes, 1 << 20);
                let _ = decode_message(&bytes[..cut.index(bytes.len() + 1)], 1 << 20);
            }

            /// Encoding into a buffer makes the same bytes as `encode_entry`,
            /// after whatever the buffer held.
            #[test]
            fn encode_entry_into_appends_the_same_bytes(
                term in number(),
                index in number(),
                payload in payload(membership()),
                prefix in vec(any::<u8>(), 0..16),
            ) {
                let entry = Entry { term, index, payload };
                let mut out = prefix.clone();
                encode_entry_into(&entry, &mut out);
                prop_assert_eq!(&out[..prefix.len()], &prefix[..]);
                prop_assert_eq!(&out[prefix.len()..], &encode_entry(&entry)[..]);
            }
        }
    }
}
