//! `CommandBytes`: the encoded command an entry carries.
//!
//! One entry's command is held by the leader's log, its storage, a message
//! to every follower and the apply task, and again on every follower: half a
//! dozen copies of the same bytes. `bytes::Bytes` makes each copy a shared
//! reference count, so every copy and every drop is an atomic operation on
//! a cache line the other cores also write, and the first copy allocates.
//! Most commands are small (a key and a short value), so `CommandBytes`
//! keeps up to [`CommandBytes::INLINE_MAX`] bytes inline, where a copy is a
//! plain 24-byte copy, and shares larger ones behind one reference count.
//! The representation is `byteview::ByteView` (fjall's small-slice type),
//! wrapped so that the public API names no third-party type.

use std::fmt;
use std::ops::Deref;

use byteview::ByteView;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// An immutable byte string: inline up to [`CommandBytes::INLINE_MAX`]
/// bytes, shared (cloned by a reference count) above. Serializes as a byte
/// string, the same as `serde_bytes` and `bytes::Bytes` do, so the encoding
/// of entries does not depend on the representation.
///
/// Invariant: at most [`CommandBytes::LEN_MAX`] bytes long. Every
/// constructor checks it; the node's own limits (`Config::request_bytes_max`,
/// `Config::message_bytes_max`) are far below it.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommandBytes(ByteView);

/// A byte string over [`CommandBytes::LEN_MAX`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "{len} bytes is over the {} bytes a command may hold",
    CommandBytes::LEN_MAX
)]
pub struct CommandTooLong {
    /// The length that was refused.
    pub len: usize,
}

impl CommandBytes {
    /// Byte strings up to this long are stored inline: no allocation, and
    /// copies share nothing.
    pub const INLINE_MAX: usize = 20;

    /// The longest byte string a `CommandBytes` holds (4 GiB − 1).
    pub const LEN_MAX: usize = u32::MAX as usize;

    /// Copies `bytes`, refusing more than [`CommandBytes::LEN_MAX`] bytes.
    pub fn try_copy_from(bytes: &[u8]) -> Result<Self, CommandTooLong> {
        if bytes.len() > Self::LEN_MAX {
            return Err(CommandTooLong { len: bytes.len() });
        }
        Ok(Self(ByteView::new(bytes)))
    }

    /// A byte string of `len` bytes filled in by `fill`, written in place
    /// (no intermediate buffer). Refuses more than [`CommandBytes::LEN_MAX`].
    pub fn try_build(len: usize, fill: impl FnOnce(&mut [u8])) -> Result<Self, CommandTooLong> {
        if len > Self::LEN_MAX {
            return Err(CommandTooLong { len });
        }
        let mut view = ByteView::with_size(len);
        {
            let mut bytes = view
                .get_mut()
                .expect("a byte string just built has no other reference");
            fill(&mut bytes);
        }
        Ok(Self(view))
    }

    /// Whether the bytes are stored inline (no allocation behind them).
    pub fn is_inline(&self) -> bool {
        self.len() <= Self::INLINE_MAX
    }
}

impl Deref for CommandBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for CommandBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for CommandBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Like `bytes::Bytes`: a byte string literal, readable for text.
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

/// Conversions from in-memory byte strings. They copy (into the inline
/// buffer, or one shared allocation) and panic over
/// [`CommandBytes::LEN_MAX`] bytes, which no `Vec` in a node's limits
/// reaches; use [`CommandBytes::try_copy_from`] for untrusted lengths.
impl From<&[u8]> for CommandBytes {
    fn from(bytes: &[u8]) -> Self {
        Self::try_copy_from(bytes).expect("a command of at most 4 GiB")
    }
}

impl<const N: usize> From<&[u8; N]> for CommandBytes {
    fn from(bytes: &[u8; N]) -> Self {
        Self::from(&bytes[..])
    }
}

impl From<Vec<u8>> for CommandBytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self::from(&bytes[..])
    }
}

impl From<String> for CommandBytes {
    fn from(text: String) -> Self {
        Self::from(text.as_bytes())
    }
}

impl From<&str> for CommandBytes {
    fn from(text: &str) -> Self {
        Self::from(text.as_bytes())
    }
}

impl From<bytes::Bytes> for CommandBytes {
    fn from(bytes: bytes::Bytes) -> Self {
        Self::from(&bytes[..])
    }
}

impl Serialize for CommandBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
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
                CommandBytes::try_copy_from(bytes).map_err(E::custom)
            }

            /// Formats without byte strings (JSON) write a sequence.
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CommandBytes, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(byte) = seq.next_element::<u8>()? {
                    bytes.push(byte);
                }
                CommandBytes::try_copy_from(&bytes).map_err(de::Error::custom)
            }
        }

        deserializer.deserialize_bytes(BytesVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_is_inline_large_is_shared_and_both_read_back() {
        let small = CommandBytes::from(&[7u8; CommandBytes::INLINE_MAX]);
        assert!(small.is_inline());
        assert_eq!(&small[..], &[7u8; CommandBytes::INLINE_MAX]);
        let large = CommandBytes::from(vec![9u8; CommandBytes::INLINE_MAX + 1]);
        assert!(!large.is_inline());
        let copy = large.clone();
        drop(large);
        assert_eq!(&copy[..], &[9u8; CommandBytes::INLINE_MAX + 1][..]);
        assert!(CommandBytes::default().is_empty());
    }

    #[test]
    fn build_writes_in_place() {
        for len in [0, 3, CommandBytes::INLINE_MAX, 1000] {
            let built = CommandBytes::try_build(len, |out| {
                for (i, b) in out.iter_mut().enumerate() {
                    *b = i as u8;
                }
            })
            .unwrap();
            let expected: Vec<u8> = (0..len).map(|i| i as u8).collect();
            assert_eq!(&built[..], &expected[..]);
        }
    }

    #[test]
    fn over_len_max_is_refused_not_allocated() {
        let err = CommandBytes::try_build(CommandBytes::LEN_MAX + 1, |_| unreachable!());
        assert_eq!(
            err,
            Err(CommandTooLong {
                len: CommandBytes::LEN_MAX + 1
            })
        );
    }

    /// The representation does not show in the encoding: a `CommandBytes`
    /// encodes exactly as the `Bytes` it replaced, so stored logs and peers
    /// on the previous representation read it unchanged.
    #[test]
    fn encodes_like_bytes() {
        for len in [0, 1, CommandBytes::INLINE_MAX, 300] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let ours = postcard::to_stdvec(&CommandBytes::from(&data[..])).unwrap();
            let theirs = postcard::to_stdvec(&bytes::Bytes::from(data.clone())).unwrap();
            assert_eq!(ours, theirs);
            let back: CommandBytes = postcard::from_bytes(&theirs).unwrap();
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
}
