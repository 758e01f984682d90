//! The replicated state machine of the simulation, and the model the
//! linearizability checker runs: a map from a handful of small keys to
//! `u64` values with put, get and compare-and-swap.
//!
//! Commands travel in log entries encoded as fixed 27-byte records; the
//! encoding carries the client operation's id so that every command in the
//! log is distinct (a put of the same value twice would otherwise be two
//! identical entries).

use std::collections::BTreeMap;

use bytes::Bytes;
use rafter::LogId;

/// A key: the workload uses a handful.
pub type Key = u8;

/// What a client asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvInput {
    /// Set `key` to `value`.
    Put { key: Key, value: u64 },
    /// Read `key`.
    Get { key: Key },
    /// Set `key` to `new` if it holds `expected` (`None`: absent).
    Cas {
        key: Key,
        expected: Option<u64>,
        new: u64,
    },
}

impl KvInput {
    /// The key the operation touches.
    pub fn key(&self) -> Key {
        match *self {
            KvInput::Put { key, .. } | KvInput::Get { key } | KvInput::Cas { key, .. } => key,
        }
    }

    /// Whether the operation can change the state (and so goes through the
    /// log); a get goes through ReadIndex instead.
    pub fn is_write(&self) -> bool {
        !matches!(self, KvInput::Get { .. })
    }
}

/// What the state machine answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvOutput {
    /// A put is done.
    Put,
    /// The value read.
    Get(Option<u64>),
    /// Whether the swap happened.
    Cas(bool),
}

/// One key's value, as the sequential model sees it.
pub type KeyState = Option<u64>;

/// The sequential specification of one key: the new state and the output
/// `input` gives in `state`.
pub fn step(state: KeyState, input: &KvInput) -> (KeyState, KvOutput) {
    match *input {
        KvInput::Put { value, .. } => (Some(value), KvOutput::Put),
        KvInput::Get { .. } => (state, KvOutput::Get(state)),
        KvInput::Cas { expected, new, .. } => {
            if state == expected {
                (Some(new), KvOutput::Cas(true))
            } else {
                (state, KvOutput::Cas(false))
            }
        }
    }
}

const COMMAND_BYTES: usize = 27;

/// Encodes a write for the log: `[tag, key, a (8), b (8), op id (8), has expected]`.
pub fn encode(op_id: u64, input: &KvInput) -> Bytes {
    let (tag, key, a, b, flag) = match *input {
        KvInput::Put { key, value } => (1u8, key, value, 0, 0u8),
        KvInput::Cas { key, expected, new } => (
            2u8,
            key,
            expected.unwrap_or(0),
            new,
            expected.is_some() as u8,
        ),
        KvInput::Get { .. } => panic!("a get is not a log command"),
    };
    let mut out = Vec::with_capacity(COMMAND_BYTES);
    out.push(tag);
    out.push(key);
    out.extend_from_slice(&a.to_le_bytes());
    out.extend_from_slice(&b.to_le_bytes());
    out.extend_from_slice(&op_id.to_le_bytes());
    out.push(flag);
    debug_assert_eq!(out.len(), COMMAND_BYTES);
    Bytes::from(out)
}

/// Decodes a command written by [`encode`]: (op id, input). The log only
/// ever holds commands the simulator encoded, so anything else is a bug.
pub fn decode(data: &[u8]) -> (u64, KvInput) {
    assert_eq!(
        data.len(),
        COMMAND_BYTES,
        "not a simulator command: {data:?}"
    );
    let word = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"));
    let (key, a, b, op_id) = (data[1], word(2), word(10), word(18));
    let input = match data[0] {
        1 => KvInput::Put { key, value: a },
        2 => KvInput::Cas {
            key,
            expected: (data[26] == 1).then_some(a),
            new: b,
        },
        tag => panic!("unknown command tag {tag}"),
    };
    (op_id, input)
}

/// The state machine a simulated node applies committed commands to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvStore {
    map: BTreeMap<Key, u64>,
}

impl KvStore {
    /// Applies one command and returns its output.
    pub fn apply(&mut self, input: &KvInput) -> KvOutput {
        let key = input.key();
        let (next, output) = step(self.map.get(&key).copied(), input);
        match next {
            Some(value) => self.map.insert(key, value),
            None => self.map.remove(&key),
        };
        output
    }

    /// The value of `key`.
    pub fn get(&self, key: Key) -> Option<u64> {
        self.map.get(&key).copied()
    }

    /// A snapshot of the map after applying up to `applied`:
    /// `[applied term (8), applied index (8), then (key, value (8)) per key]`.
    /// (The membership travels in the snapshot metadata.)
    pub fn snapshot(&self, applied: LogId) -> Bytes {
        let mut out = Vec::with_capacity(16 + 9 * self.map.len());
        out.extend_from_slice(&applied.term.to_le_bytes());
        out.extend_from_slice(&applied.index.to_le_bytes());
        for (&key, &value) in &self.map {
            out.push(key);
            out.extend_from_slice(&value.to_le_bytes());
        }
        Bytes::from(out)
    }

    /// The map and applied log id of a [`KvStore::snapshot`]. The
    /// simulator only installs snapshots it made, so bad bytes are a bug.
    pub fn from_snapshot(data: &[u8]) -> (Self, LogId) {
        assert!(
            data.len() >= 16 && (data.len() - 16) % 9 == 0,
            "not a snapshot: {} bytes",
            data.len()
        );
        let word = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"));
        let applied = LogId {
            term: word(0),
            index: word(8),
        };
        let map = data[16..]
            .chunks(9)
            .map(|pair| {
                (
                    pair[0],
                    u64::from_le_bytes(pair[1..].try_into().expect("8")),
                )
            })
            .collect();
        (Self { map }, applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        let inputs = [
            KvInput::Put { key: 3, value: 77 },
            KvInput::Cas {
                key: 1,
                expected: None,
                new: 5,
            },
            KvInput::Cas {
                key: 0,
                expected: Some(0),
                new: u64::MAX,
            },
        ];
        for (id, input) in inputs.iter().enumerate() {
            assert_eq!(decode(&encode(id as u64, input)), (id as u64, *input));
        }
    }

    #[test]
    fn snapshots_round_trip() {
        let mut kv = KvStore::default();
        kv.apply(&KvInput::Put { key: 3, value: 7 });
        kv.apply(&KvInput::Put {
            key: 0,
            value: u64::MAX,
        });
        let applied = LogId { term: 4, index: 9 };
        let (back, at) = KvStore::from_snapshot(&kv.snapshot(applied));
        assert_eq!((back, at), (kv, applied));
    }

    #[test]
    fn cas_swaps_only_on_the_expected_value() {
        let mut kv = KvStore::default();
        let cas = |expected, new| KvInput::Cas {
            key: 0,
            expected,
            new,
        };
        assert_eq!(kv.apply(&cas(Some(1), 2)), KvOutput::Cas(false));
        assert_eq!(kv.apply(&cas(None, 2)), KvOutput::Cas(true));
        assert_eq!(kv.apply(&cas(None, 3)), KvOutput::Cas(false));
        assert_eq!(kv.apply(&cas(Some(2), 3)), KvOutput::Cas(true));
        assert_eq!(kv.get(0), Some(3));
    }
}
