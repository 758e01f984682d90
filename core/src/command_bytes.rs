//! `CommandBytes`: the encoded command an entry carries.
//!
//! One entry's command is held by the leader's log, its storage, a message
//! to every follower and the apply task, and again on every follower: half a
//! dozen copies of the same bytes. As `bytes::Bytes`, each copy is a shared
//! reference count: every copy and every drop an atomic operation on a cache
//! line the other cores write too, and the first copy an allocation. Most
//! commands are small (a key and a short value), so `CommandBytes` keeps up
//! to [`CommandBytes::INLINE_MAX`] bytes inline, where a copy is a plain
//! 40-byte copy and a drop nothing at all, and shares larger ones as `Bytes`.
//!
//! Hand-written rather than a crate: `byteview` (fjall's small-slice type,
//! the best-kept such crate) was tried first. `rafter-bench core` ran at the
//! same speed with either, but `byteview` inlines only 20 bytes, copies
//! every large payload on the way in (this type shares a `Bytes`), caps
//! lengths at 4 GiB with a panic, and needs a newer compiler. An enum of an
//! inline array and `Bytes` needs no `unsafe` and none of that.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use bytes::Bytes;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// An immutable byte string: inline up to [`CommandBytes::INLINE_MAX`]
/// bytes, a shared `Bytes` above. Serializes as a byte string, the same as
/// `serde_bytes` and `Bytes` do, so the encoding of entries does not depend
/// on the representation. Equality, ordering and hashing are those of the
/// bytes.
#[derive(Clone)]
pub struct CommandBytes(Repr);

/// Invariant: `Shared` holds more than `INLINE_MAX` bytes, so equal byte
/// strings have equal representations (and `is_inline` is a property of the
/// length alone).
#[derive(Clone)]
enum Repr {
    Inline {
        len: u8,
        data: [u8; CommandBytes::INLINE_MAX],
    },
    Shared(Bytes),
}

const _: () = assert!(CommandBytes::INLINE_MAX <= u8::MAX as usize);

impl CommandBytes {
    /// Byte strings up to this long are stored inline: no allocation, and
    /// copies share nothing. 38 bytes fill the room a `Bytes` takes anyway.
    pub const INLINE_MAX: usize = 38;

    /// An empty byte string.
    pub const fn new() -> Self {
        Self(Repr::Inline {
            len: 0,
            data: [0; Self::INLINE_MAX],
        })
    }

    /// Copies `bytes`.
    pub fn copy_from_slice(bytes: &[u8]) -> Self {
        if bytes.len() <= Self::INLINE_MAX {
            let mut data = [0; Self::INLINE_MAX];
            data[..bytes.len()].copy_from_slice(bytes);
            Self(Repr::Inline {
                len: bytes.len() as u8,
                data,
            })
        } else {
            Self(Repr::Shared(Bytes::copy_from_slice(bytes)))
        }
    }

    /// A byte string of `len` bytes written in place by `fill`: inline when
    /// it fits, else one allocation of exactly `len` bytes.
    pub fn build(len: usize, fill: impl FnOnce(&mut [u8])) -> Self {
        if len <= Self::INLINE_MAX {
            let mut data = [0; Self::INLINE_MAX];
            fill(&mut data[..len]);
            Self(Repr::Inline {
                len: len as u8,
                data,
            })
        } else {
            let mut bytes = vec![0; len];
            fill(&mut bytes);
            Self(Repr::Shared(Bytes::from(bytes)))
        }
    }

    /// Whether the bytes are stored inline (no allocation behind them).
    pub fn is_inline(&self) -> bool {
        matches!(self.0, Repr::Inline { .. })
    }

    /// The bytes as `Bytes` (a copy only if they are inline).
    pub fn to_bytes(&self) -> Bytes {
        match &self.0 {
            Repr::Inline { .. } => Bytes::copy_from_slice(self),
            Repr::Shared(bytes) => bytes.clone(),
        }
    }
}

impl Default for CommandBytes {
    fn default() -> Self {
        Self::new()
    }
}

impl Deref for CommandBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, data } => &data[..*len as usize],
            Repr::Shared(bytes) => bytes,
        }
    }
}

impl AsRef<[u8]> for CommandBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl PartialEq for CommandBytes {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for CommandBytes {}

impl PartialOrd for CommandBytes {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for CommandBytes {
    fn cmp(&self, other: &Self) -> Ordering {
        (**self).cmp(&**other)
    }
}

impl Hash for CommandBytes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}

impl fmt::Debug for CommandBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Like `Bytes`: a byte string literal, readable for text.
        write!(f, "b\"{}\"", self.escape_ascii())
    }
}

impl From<&[u8]> for CommandBytes {
    fn from(bytes: &[u8]) -> Self {
        Self::copy_from_slice(bytes)
    }
}

impl<const N: usize> From<&[u8; N]> for CommandBytes {
    fn from(bytes: &[u8; N]) -> Self {
        Self::copy_from_slice(bytes)
    }
}

/// Takes the vector without copying when it is too long to inline.
impl From<Vec<u8>> for CommandBytes {
    fn from(bytes: Vec<u8>) -> Self {
        if bytes.len() <= Self::INLINE_MAX {
            Self::copy_from_slice(&bytes)
        } else {
            Self(Repr::Shared(Bytes::from(bytes)))
        }
    }
}

impl From<String> for CommandBytes {
    fn from(text: String) -> Self {
        Self::from(text.into_bytes())
    }
}

impl From<&str> for CommandBytes {
    fn from(text: &str) -> Self {
        Self::copy_from_slice(text.as_bytes())
    }
}

/// Shares `bytes` without copying when they are too long to inline.
impl From<Bytes> for CommandBytes {
    fn from(bytes: Bytes) -> Self {
        if bytes.len() <= Self::INLINE_MAX {
            Self::copy_from_slice(&bytes)
        } else {
            Self(Repr::Shared(bytes))
        }
    }
}

impl Serialize for CommandBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self)
    }
}

impl<'de> Deserialize<'de> for CommandBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;

        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = CommandBytes;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a byte string")
            }

            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<CommandBytes, E> {
                Ok(CommandBytes::copy_from_slice(bytes))
            }

            fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<CommandBytes, E> {
                Ok(CommandBytes::from(bytes))
            }

            /// Formats without byte strings (JSON) write a sequence.
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CommandBytes, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(byte) = seq.next_element::<u8>()? {
                    bytes.push(byte);
                }
                Ok(CommandBytes::from(bytes))
            }
        }

        deserializer.deserialize_bytes(BytesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Entry, EntryPayload};

    /// Lengths around the inline limit, and a shared one.
    const LENGTHS: [usize; 5] = [
        0,
        1,
        CommandBytes::INLINE_MAX,
        CommandBytes::INLINE_MAX + 1,
        300,
    ];

    fn counting(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7) as u8).collect()
    }

    fn hash_of<T: Hash + ?Sized>(value: &T) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        value.hash(&mut hasher);
        hasher.finish()
    }

    #[test]
    fn inline_up_to_the_limit_shared_above_and_equal_by_bytes() {
        for len in LENGTHS {
            let data = counting(len);
            let inline = len <= CommandBytes::INLINE_MAX;
            let all = [
                CommandBytes::copy_from_slice(&data),
                CommandBytes::from(data.clone()),
                CommandBytes::from(Bytes::from(data.clone())),
                CommandBytes::build(len, |out| out.copy_from_slice(&data)),
            ];
            for bytes in &all {
                assert_eq!(&bytes[..], &data[..], "len {len}");
                assert_eq!(bytes.is_inline(), inline, "len {len}");
                assert_eq!(bytes, &all[0]);
                assert_eq!(bytes.to_bytes(), Bytes::from(data.clone()));
            }
            let copy = all[1].clone();
            drop(all);
            assert_eq!(&copy[..], &data[..]);
        }
        assert!(CommandBytes::default().is_empty());
    }

    #[test]
    fn large_payloads_are_shared_not_copied() {
        let data = Bytes::from(counting(100));
        let command = CommandBytes::from(data.clone());
        assert_eq!(command.as_ptr(), data.as_ptr());
        assert_eq!(command.clone().as_ptr(), data.as_ptr());
    }

    #[test]
    fn order_and_hash_follow_the_bytes() {
        let short = CommandBytes::from(&b"abc"[..]);
        let long = CommandBytes::from(vec![b'a'; 100]);
        assert!(long < short, "\"aaa...\" sorts before \"abc\"");
        assert_eq!(hash_of(&short), hash_of(&b"abc"[..]));
        assert_eq!(hash_of(&long), hash_of(&vec![b'a'; 100][..]));
    }

    /// The representation does not show in the encoding: a `CommandBytes`
    /// encodes exactly as the `Bytes` it replaced, so stored logs and peers
    /// read it unchanged.
    #[test]
    fn encodes_like_bytes() {
        for len in LENGTHS {
            let data = counting(len);
            let ours = postcard::to_stdvec(&CommandBytes::from(&data[..])).unwrap();
            let theirs = postcard::to_stdvec(&Bytes::from(data.clone())).unwrap();
            assert_eq!(ours, theirs);
            let back: CommandBytes = postcard::from_bytes(&theirs).unwrap();
            assert_eq!(&back[..], &data[..]);
            let json = serde_json::to_string(&CommandBytes::from(&data[..])).unwrap();
            let back: CommandBytes = serde_json::from_str(&json).unwrap();
            assert_eq!(&back[..], &data[..]);
        }
    }

    #[test]
    fn debug_reads_like_a_byte_string() {
        assert_eq!(
            format!("{:?}", CommandBytes::from("a\"b\n")),
            "b\"a\\\"b\\n\""
        );
    }

    /// Inline bytes fill the room `Bytes` takes: an entry is no larger than
    /// with `Bytes` plus a tag (the log, messages and apply batches move
    /// entries by value, so their size is memory traffic).
    #[test]
    fn an_entry_stays_compact() {
        assert_eq!(std::mem::size_of::<CommandBytes>(), 40);
        assert_eq!(std::mem::size_of::<EntryPayload>(), 40);
        assert_eq!(std::mem::size_of::<Entry>(), 56);
    }
}
