//! The frame layer: a length prefix around the codec's bytes.
//!
//! ```text
//! +----------------------+--------------------------------------------+
//! | length: u32, BE      | payload: `length` bytes                    |
//! |                      | = rafter::codec::encode_message(&message)  |
//! |                      |   (first byte: codec FORMAT_VERSION)       |
//! +----------------------+--------------------------------------------+
//! ```
//!
//! Frames follow each other back to back on a stream. The version byte is
//! the codec's; this layer adds only the length. A gateway: decoding yields
//! a validated [`Message`] or a [`FrameError`], never a panic, and the
//! length is checked against the limit before any buffer is reserved for it.

use bytes::{Buf, Bytes, BytesMut};
use rafter::codec::{decode_message, encode_message, DecodeError};
use rafter::Message;

/// Bytes of the length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

/// Why a frame could not be built or read. Reading any of these closes the
/// connection it came on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix (or an outgoing message) is over the limit.
    #[error("frame of {len} bytes is over the limit of {limit}")]
    TooLarge {
        /// The declared or encoded length.
        len: u64,
        /// `TransportConfig::frame_bytes_max`.
        limit: usize,
    },
    /// A frame declared a zero length: there is no empty message.
    #[error("empty frame")]
    Empty,
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes of the incomplete frame received.
        buffered: usize,
    },
    /// The payload is not a valid message (wrong version, malformed,
    /// invalid, trailing bytes).
    #[error("bad frame payload: {0}")]
    Decode(#[from] DecodeError),
}

/// Encodes `message` as one frame. Fails (and nothing is sent) when the
/// encoding is over `limit`.
pub fn encode_frame(message: &Message, limit: usize) -> Result<Bytes, FrameError> {
    let payload = encode_message(message);
    if payload.len() > limit || payload.len() > u32::MAX as usize {
        return Err(FrameError::TooLarge {
            len: payload.len() as u64,
            limit,
        });
    }
    let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    // Cannot truncate: checked against u32::MAX just above.
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    debug_assert_eq!(frame.len(), FRAME_HEADER_BYTES + payload.len());
    Ok(Bytes::from(frame))
}

/// Reads frames out of a byte stream that arrives in arbitrary pieces.
///
/// Invariant: `buffer` never holds more than one frame header plus one
/// payload of at most `limit` bytes beyond what [`FrameDecoder::next_message`]
/// has not yet been asked for; the caller feeds at most one read at a time.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: BytesMut,
    limit: usize,
}

impl FrameDecoder {
    /// A decoder accepting payloads of at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        assert!(limit > 0, "frame limit must be positive");
        Self {
            buffer: BytesMut::new(),
            limit,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes received and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Decodes the next complete frame, if one is buffered. `Ok(None)` means
    /// more bytes are needed. After an error the stream must be abandoned.
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        let Some(header) = self.buffer.get(..FRAME_HEADER_BYTES) else {
            return Ok(None);
        };
        // The slice is exactly FRAME_HEADER_BYTES long (just taken above).
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        // The cheap check, before any allocation for the payload.
        if len > self.limit {
            return Err(FrameError::TooLarge {
                len: len as u64,
                limit: self.limit,
            });
        }
        if len == 0 {
            return Err(FrameError::Empty);
        }
        let frame_len = FRAME_HEADER_BYTES + len;
        if self.buffer.len() < frame_len {
            // Nothing is reserved from the length alone: the buffer grows as
            // the bytes arrive, so a header announcing a frame at the limit
            // costs memory only once the peer really sends that much.
            return Ok(None);
        }
        self.buffer.advance(FRAME_HEADER_BYTES);
        let payload = self.buffer.split_to(len);
        let message = decode_message(&payload, self.limit)?;
        Ok(Some(message))
    }

    /// Call when the stream ended: an error if a frame was cut short.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buffer.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated {
                buffered: self.buffer.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use rafter::codec::FORMAT_VERSION;
    use rafter::testing::strategies::valid_message;
    use rafter::MessageBody;

    fn heartbeat() -> Message {
        Message::new(
            1,
            2,
            7,
            MessageBody::Heartbeat {
                commit: 3,
                read_seq: 9,
            },
        )
    }

    #[test]
    fn round_trip_in_one_piece_and_byte_by_byte() {
        let frame = encode_frame(&heartbeat(), 1024).unwrap();
        let mut decoder = FrameDecoder::new(1024);
        decoder.push(&frame);
        assert_eq!(decoder.next_message(), Ok(Some(heartbeat())));
        assert_eq!(decoder.next_message(), Ok(None));
        assert_eq!(decoder.finish(), Ok(()));

        let mut decoder = FrameDecoder::new(1024);
        for (i, byte) in frame.iter().enumerate() {
            assert_eq!(decoder.next_message(), Ok(None), "complete after {i} bytes");
            decoder.push(&[*byte]);
        }
        assert_eq!(decoder.next_message(), Ok(Some(heartbeat())));
    }

    #[test]
    fn oversized_length_is_refused_before_allocation() {
        let mut decoder = FrameDecoder::new(100);
        decoder.push(&u32::MAX.to_be_bytes());
        assert_eq!(
            decoder.next_message(),
            Err(FrameError::TooLarge {
                len: u32::MAX as u64,
                limit: 100
            })
        );
        assert!(
            decoder.buffer.capacity() < 100,
            "reserved for an oversized frame"
        );
        assert!(matches!(
            encode_frame(&heartbeat(), 3),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_declared_length_reserves_nothing_until_its_bytes_arrive() {
        let limit = 16 << 20;
        let mut decoder = FrameDecoder::new(limit);
        decoder.push(&(limit as u32).to_be_bytes());
        decoder.push(&[FORMAT_VERSION; 10]);
        assert_eq!(decoder.next_message(), Ok(None));
        assert!(
            decoder.buffer.capacity() < 1 << 20,
            "reserved {} bytes for a frame that has sent 14",
            decoder.buffer.capacity()
        );
    }

    #[test]
    fn empty_truncated_and_wrong_version_frames_are_errors() {
        let mut decoder = FrameDecoder::new(100);
        decoder.push(&[0, 0, 0, 0]);
        assert_eq!(decoder.next_message(), Err(FrameError::Empty));

        let frame = encode_frame(&heartbeat(), 100).unwrap();
        let mut decoder = FrameDecoder::new(100);
        decoder.push(&frame[..frame.len() - 1]);
        assert_eq!(decoder.next_message(), Ok(None));
        assert_eq!(
            decoder.finish(),
            Err(FrameError::Truncated {
                buffered: frame.len() - 1
            })
        );

        let mut wrong = frame.to_vec();
        wrong[FRAME_HEADER_BYTES] = 99;
        let mut decoder = FrameDecoder::new(100);
        decoder.push(&wrong);
        assert_eq!(
            decoder.next_message(),
            Err(FrameError::Decode(DecodeError::Version { found: 99 }))
        );
    }

    /// A frame whose append would run past index u64::MAX is a decode error
    /// (it used to overflow in the codec: a panic in debug builds).
    #[test]
    fn append_past_the_last_index_is_a_frame_error() {
        let message = rafter::testing::strategies::append_past_the_last_index();
        let mut decoder = FrameDecoder::new(1024);
        decoder.push(&encode_frame(&message, 1024).unwrap());
        assert!(matches!(
            decoder.next_message(),
            Err(FrameError::Decode(DecodeError::Invalid(_)))
        ));
    }

    // The messages come from `rafter::testing::strategies::valid_message`:
    // every `MessageBody` variant and entry payload kind, with numbers that
    // weight in the edges. Rafter's codec tests check that it reaches every
    // variant and the top of the index range, and also feed invalid
    // messages against a model; these check the frame layer around every
    // valid one.
    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
            limit in 1usize..512,
        ) {
            let mut decoder = FrameDecoder::new(limit);
            for chunk in chunks {
                decoder.push(&chunk);
                while let Ok(Some(_)) = decoder.next_message() {}
            }
            let _ = decoder.finish();
        }

        #[test]
        fn valid_length_with_arbitrary_payload_never_panics(
            payload in proptest::collection::vec(any::<u8>(), 1..256),
        ) {
            let mut decoder = FrameDecoder::new(1024);
            decoder.push(&(payload.len() as u32).to_be_bytes());
            decoder.push(&payload);
            let _ = decoder.next_message();
        }

        /// Valid frames with bytes overwritten never panic the decoder: this
        /// reaches deeper into the codec than random bytes do. Runs in a
        /// debug build, where an arithmetic overflow panics.
        #[test]
        fn damaged_frames_never_panic(
            messages in vec(valid_message(), 1..4),
            edits in vec((any::<proptest::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut stream = Vec::new();
            for message in &messages {
                stream.extend_from_slice(&encode_frame(message, 1 << 20).unwrap());
            }
            for (at, byte) in edits {
                let at = at.index(stream.len());
                stream[at] = byte;
            }
            let mut decoder = FrameDecoder::new(1 << 20);
            decoder.push(&stream);
            while let Ok(Some(_)) = decoder.next_message() {}
            let _ = decoder.finish();
        }

        #[test]
        fn every_encoded_message_round_trips(
            messages in vec(valid_message(), 1..6),
            split in any::<proptest::sample::Index>(),
        ) {
            let mut stream = Vec::new();
            for message in &messages {
                stream.extend_from_slice(&encode_frame(message, 1 << 20).unwrap());
            }
            // Deliver the back-to-back frames in two arbitrary pieces.
            let at = split.index(stream.len() + 1);
            let mut decoder = FrameDecoder::new(1 << 20);
            let mut decoded = Vec::new();
            for piece in [&stream[..at], &stream[at..]] {
                decoder.push(piece);
                while let Some(message) = decoder.next_message().unwrap() {
                    decoded.push(message);
                }
            }
            prop_assert_eq!(decoder.finish(), Ok(()));
            prop_assert_eq!(decoded, messages);
        }
    }
}
