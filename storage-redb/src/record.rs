//! The checksummed record every stored value is wrapped in.
//!
//! Layout: `crc32 (4 bytes, little endian) || body`, where the CRC-32 (IEEE,
//! as computed by `crc32fast`) covers the record's key followed by the body.
//! Covering the key means a record copied or misdirected to another key (a
//! torn page, a bug in a range deletion) fails its check just like flipped
//! bits do. The body is whatever the caller stores, in practice the output of
//! `rafter::codec`, which starts with its own version byte.

/// Bytes of the checksum that starts every record.
pub(crate) const CHECKSUM_BYTES: usize = 4;

/// Why a record failed its check. Becomes `StorageError::Corrupt` at the
/// caller, which knows the table and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecordError {
    /// Shorter than the checksum itself.
    Truncated {
        /// The record's length.
        len: usize,
    },
    /// Longer than the caller's limit; nothing was checked.
    TooLarge {
        /// The record's length.
        len: usize,
        /// The limit it broke.
        limit: usize,
    },
    /// The stored checksum does not match the key and body.
    Checksum {
        /// The checksum in the record.
        stored: u32,
        /// The checksum of what is there.
        computed: u32,
    },
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Truncated { len } => {
                write!(f, "record of {len} bytes has no room for its checksum")
            }
            Self::TooLarge { len, limit } => {
                write!(f, "record of {len} bytes is over the limit of {limit}")
            }
            Self::Checksum { stored, computed } => write!(
                f,
                "checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
        }
    }
}

/// Wraps `body` in a record for `key`.
pub(crate) fn seal(key: &[u8], body: &[u8]) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(key.len() + body.len());
    seal_into(key, &mut buffer, |out| out.extend_from_slice(body)).to_vec()
}

/// Builds in `buffer` (cleared first) the record for `key` whose body
/// `write_body` appends, and returns the record, a slice of `buffer`.
///
/// The body is written once, straight into place, and hashed in one pass:
/// `buffer` holds `key || body`, the CRC-32 is computed over all of it, and
/// the last [`CHECKSUM_BYTES`] of the key are then overwritten with it, so
/// the record `crc32 || body` ends the buffer. `buffer` keeps its capacity:
/// reused across records it allocates only for a record longer than any
/// before it.
///
/// Panics if `key` is shorter than [`CHECKSUM_BYTES`] (every key of the
/// store's format is longer: a broken invariant, not bad input).
pub(crate) fn seal_into<'a>(
    key: &[u8],
    buffer: &'a mut Vec<u8>,
    write_body: impl FnOnce(&mut Vec<u8>),
) -> &'a [u8] {
    assert!(
        key.len() >= CHECKSUM_BYTES,
        "a record key of {} bytes has no room for the checksum",
        key.len()
    );
    buffer.clear();
    buffer.extend_from_slice(key);
    write_body(buffer);
    let computed = crc32fast::hash(buffer);
    let record_start = key.len() - CHECKSUM_BYTES;
    let record = &mut buffer[record_start..];
    record[..CHECKSUM_BYTES].copy_from_slice(&computed.to_le_bytes());
    debug_assert_eq!(checksum(key, &record[CHECKSUM_BYTES..]), computed);
    debug_assert!(open(key, record, usize::MAX).is_ok());
    record
}

/// Checks a record stored under `key` and returns its body.
pub(crate) fn open<'a>(
    key: &[u8],
    record: &'a [u8],
    limit: usize,
) -> Result<&'a [u8], RecordError> {
    if record.len() > limit {
        return Err(RecordError::TooLarge {
            len: record.len(),
            limit,
        });
    }
    if record.len() < CHECKSUM_BYTES {
        return Err(RecordError::Truncated { len: record.len() });
    }
    let (stored, body) = record.split_at(CHECKSUM_BYTES);
    // The split above leaves exactly CHECKSUM_BYTES in `stored`.
    let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    let computed = checksum(key, body);
    if stored != computed {
        return Err(RecordError::Checksum { stored, computed });
    }
    Ok(body)
}

/// The key bytes a log record's checksum covers: the index, big endian.
pub(crate) fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn checksum(key: &[u8], body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(key);
    hasher.update(body);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_record_opens_only_under_its_own_key() {
        let record = seal(&log_key(5), b"entry five");
        assert_eq!(open(&log_key(5), &record, 1024), Ok(&b"entry five"[..]));
        assert!(matches!(
            open(&log_key(6), &record, 1024),
            Err(RecordError::Checksum { .. })
        ));
    }

    #[test]
    fn a_reused_buffer_seals_the_same_record_as_a_fresh_one() {
        let mut buffer = Vec::new();
        for (index, body) in [(7u64, &b"a longer body first"[..]), (8, b"short"), (9, b"")] {
            let record = seal_into(&log_key(index), &mut buffer, |out| {
                out.extend_from_slice(body)
            });
            assert_eq!(record, seal(&log_key(index), body));
            assert_eq!(open(&log_key(index), record, 1024), Ok(body));
        }
    }

    #[test]
    fn short_and_oversized_records_are_rejected_before_hashing() {
        assert_eq!(
            open(b"k", &[1, 2, 3], 1024),
            Err(RecordError::Truncated { len: 3 })
        );
        let record = seal(b"meta", &[0; 100]);
        assert_eq!(
            open(b"meta", &record, 50),
            Err(RecordError::TooLarge {
                len: 104,
                limit: 50
            })
        );
    }

    proptest! {
        #[test]
        fn any_single_bit_flip_is_detected(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            bit in any::<prop::sample::Index>(),
        ) {
            let mut record = seal(&log_key(42), &body);
            let bit = bit.index(record.len() * 8);
            record[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(open(&log_key(42), &record, usize::MAX).is_err());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = open(b"meta", &bytes, 32);
        }
    }
}
