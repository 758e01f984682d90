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
    use bytes::Bytes;
    use proptest::prelude::*;
    use rafter::codec::FORMAT_VERSION;
    use rafter::{AppendOutcome, Entry, EntryPayload, LogId, MessageBody};

    fn heartbeat() -> Message {
        Message {
            from: 1,
            to: 2,
            term: 7,
            body: MessageBody::Heartbeat {
                commit: 3,
                read_seq: 9,
            },
        }
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

    fn log_id() -> impl Strategy<Value = LogId> {
        (any::<u64>(), any::<u64>()).prop_map(|(term, index)| LogId::new(term, index))
    }

    /// Any valid message: appends get consecutive entries with terms between
    /// `prev_log_id.term` and the message term, as the codec requires.
    fn message() -> impl Strategy<Value = Message> {
        let append = (
            0u64..1000,
            0u64..1000,
            proptest::collection::vec(
                (
                    0u64..3,
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
                ),
                0..8,
            ),
            any::<u64>(),
        )
            .prop_map(|(prev_term, prev_index, steps, commit)| {
                let mut term = prev_term;
                let entries = steps
                    .into_iter()
                    .enumerate()
                    .map(|(i, (bump, data))| {
                        term += bump;
                        let payload = match data {
                            Some(data) => EntryPayload::Command(Bytes::from(data)),
                            None => EntryPayload::Blank,
                        };
                        Entry {
                            term,
                            index: prev_index + 1 + i as u64,
                            payload,
                        }
                    })
                    .collect::<Vec<_>>();
                let message_term = term + 1;
                let body = MessageBody::Append {
                    prev_log_id: LogId::new(prev_term, prev_index),
                    entries,
                    commit,
                };
                (message_term, body)
            });
        let other = prop_oneof![
            (any::<bool>(), log_id(), any::<bool>()).prop_map(
                |(pre_vote, last_log_id, leader_transfer)| MessageBody::VoteRequest {
                    pre_vote,
                    last_log_id,
                    leader_transfer
                }
            ),
            (any::<bool>(), any::<bool>())
                .prop_map(|(pre_vote, granted)| MessageBody::VoteResponse { pre_vote, granted }),
            any::<u64>().prop_map(|match_index| MessageBody::AppendResponse {
                outcome: AppendOutcome::Success { match_index }
            }),
            (any::<u64>(), log_id()).prop_map(|(rejected_index, hint)| {
                MessageBody::AppendResponse {
                    outcome: AppendOutcome::Reject {
                        rejected_index,
                        hint,
                    },
                }
            }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(commit, read_seq)| MessageBody::Heartbeat { commit, read_seq }),
            any::<u64>().prop_map(|read_seq| MessageBody::HeartbeatResponse { read_seq }),
            Just(MessageBody::TimeoutNow),
        ];
        let body = prop_oneof![append, (any::<u64>(), other)];
        (1u64.., 1u64.., body).prop_map(|(from, to, (term, body))| Message {
            from,
            to,
            term,
            body,
        })
    }

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

        #[test]
        fn every_encoded_message_round_trips(
            messages in proptest::collection::vec(message(), 1..6),
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
