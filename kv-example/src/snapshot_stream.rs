//! `SnapshotStream`: the bytes of one snapshot view, produced as a follower
//! reads them. A thread of its own writes the snapshot of a held redb read
//! transaction (the header, then `store::write_snapshot`) into a bounded
//! channel a few chunks ahead of the reads, so a read on the apply task
//! takes bytes already made instead of walking the store itself, and
//! nothing is written to disk on the sending side.
//!
//! The leader reads a snapshot in order, one chunk at a time, and asks
//! for the last chunk again when its answer was lost: a stream serves its
//! next offset, any offset past it (skipping the bytes between), and the
//! offset of the chunk it handed out last. An earlier offset needs a new
//! stream (`snapshots.rs` starts one).

use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rafter::{LogId, StateMachineError};

use crate::state_machine::store_error;
use crate::store::write_snapshot;

/// The first bytes of a snapshot: magic, index and term.
pub const MAGIC: &[u8; 8] = b"RKVSNAP1";
/// Magic, index and term.
pub const HEADER_BYTES: u64 = 24;

/// How many bytes the producing thread sends at a time.
const PIPE_CHUNK_BYTES: usize = 256 << 10;
/// How many such chunks it may make ahead of the reads: the memory one
/// stream holds, besides the chunk a read returns.
const PIPE_CHUNKS_AHEAD: usize = 8;

/// What the producing thread sends: bytes, or why it stopped.
type Piece = Result<Vec<u8>, String>;

/// One pass over the bytes of snapshot `id`.
///
/// Invariant: `offset` bytes were handed out; `buffer` holds the bytes
/// that follow them, received from the thread and not yet handed out.
#[derive(Debug)]
pub struct SnapshotStream {
    id: LogId,
    offset: u64,
    buffer: BytesMut,
    /// `None` only while dropping.
    pieces: Option<Receiver<Piece>>,
    /// The thread sent its last piece (or stopped).
    ended: bool,
    /// The chunk handed out last, and its offset.
    last: Option<(u64, Bytes)>,
    /// The producing thread, joined on drop: it holds the view, and so the
    /// store's file, open until it ends.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SnapshotStream {
    /// Starts producing snapshot `id` of `view`, which must be the store's
    /// state at `id`.
    pub fn start(id: LogId, view: Arc<redb::ReadTransaction>) -> Result<Self, StateMachineError> {
        let (sender, pieces) = sync_channel(PIPE_CHUNKS_AHEAD);
        let thread = std::thread::Builder::new()
            .name("rafter-kv-snapshot".into())
            .spawn(move || produce(id, &view, sender))
            .map_err(|e| StateMachineError::Io(format!("start a snapshot stream: {e}")))?;
        Ok(Self {
            id,
            offset: 0,
            buffer: BytesMut::new(),
            pieces: Some(pieces),
            ended: false,
            last: None,
            thread: Some(thread),
        })
    }

    /// The snapshot this stream produces.
    pub fn id(&self) -> LogId {
        self.id
    }

    /// The offset of the next bytes it hands out.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether a read at `offset` can be served without starting over.
    pub fn serves(&self, offset: u64) -> bool {
        offset >= self.offset || self.last.as_ref().is_some_and(|(at, _)| *at == offset)
    }

    /// Up to `bytes_max` bytes from `offset` (which `serves` accepts);
    /// `None` past the end. Waits for the producing thread when it is
    /// behind.
    pub fn read(
        &mut self,
        offset: u64,
        bytes_max: usize,
    ) -> Result<Option<Bytes>, StateMachineError> {
        if let Some((at, chunk)) = &self.last {
            if *at == offset {
                return Ok(Some(chunk.slice(..chunk.len().min(bytes_max))));
            }
        }
        if offset < self.offset {
            // `serves` said no: the caller starts another stream. Never
            // bytes from the wrong place.
            debug_assert!(false, "{offset} is behind the stream at {}", self.offset);
            return Err(StateMachineError::SnapshotUnavailable(self.id));
        }
        // Skip to `offset`.
        while self.offset < offset {
            if self.buffer.is_empty() && !self.receive()? {
                return Ok(None);
            }
            let skip = (offset - self.offset).min(self.buffer.len() as u64) as usize;
            let _ = self.buffer.split_to(skip);
            self.offset += skip as u64;
        }
        while self.buffer.len() < bytes_max && self.receive()? {}
        let take = self.buffer.len().min(bytes_max);
        if take == 0 {
            return Ok(None);
        }
        let chunk = self.buffer.split_to(take).freeze();
        self.last = Some((offset, chunk.clone()));
        self.offset += take as u64;
        Ok(Some(chunk))
    }

    /// Takes the thread's next piece into `buffer`; `false` at the end.
    fn receive(&mut self) -> Result<bool, StateMachineError> {
        let Some(pieces) = self.pieces.as_ref().filter(|_| !self.ended) else {
            return Ok(false);
        };
        match pieces.recv() {
            Ok(Ok(piece)) => {
                self.buffer.extend_from_slice(&piece);
                Ok(true)
            }
            Ok(Err(message)) => {
                self.ended = true;
                Err(StateMachineError::Io(format!(
                    "snapshot {:?}: {message}",
                    self.id
                )))
            }
            // The thread sends nothing more once it has written everything.
            Err(_) => {
                self.ended = true;
                Ok(false)
            }
        }
    }
}

impl Drop for SnapshotStream {
    /// Stops the thread (its next send fails) and waits for it, so that
    /// the view it holds is closed when the stream is gone.
    fn drop(&mut self) {
        drop(self.pieces.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread: header, snapshot, then the channel closes. It stops early,
/// quietly, when the stream is dropped (a send fails).
fn produce(id: LogId, view: &redb::ReadTransaction, sender: SyncSender<Piece>) {
    let mut out = Pipe {
        sender,
        piece: Vec::with_capacity(PIPE_CHUNK_BYTES),
    };
    let written = write_header(&mut out, id)
        .map_err(|e| e.to_string())
        .and_then(|_| {
            write_snapshot(view, &mut out)
                .map_err(store_error)
                .map_err(|e| e.to_string())
        })
        .and_then(|_| out.flush().map_err(|e| e.to_string()));
    if let Err(message) = written {
        let _ = out.sender.send(Err(message));
    }
}

/// Writes the header of snapshot `id`.
fn write_header(out: &mut impl Write, id: LogId) -> std::io::Result<()> {
    out.write_all(MAGIC)?;
    out.write_all(&id.index.to_be_bytes())?;
    out.write_all(&id.term.to_be_bytes())
}

/// A `Write` that sends what it is given in pieces of `PIPE_CHUNK_BYTES`.
struct Pipe {
    sender: SyncSender<Piece>,
    piece: Vec<u8>,
}

impl Pipe {
    fn send_piece(&mut self) -> std::io::Result<()> {
        if self.piece.is_empty() {
            return Ok(());
        }
        let piece = std::mem::replace(&mut self.piece, Vec::with_capacity(PIPE_CHUNK_BYTES));
        self.sender
            .send(Ok(piece))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "stream dropped"))
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = PIPE_CHUNK_BYTES - self.piece.len();
        let take = buf.len().min(room);
        self.piece.extend_from_slice(&buf[..take]);
        if self.piece.len() >= PIPE_CHUNK_BYTES {
            self.send_piece()?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_piece()
    }
}
