//! `Journal`: the write-ahead log in front of the redb file
//! (`log.journal`, next to `log.redb`).
//!
//! Why: a durable redb commit writes its copy-on-write B-tree pages and its
//! header at scattered offsets, then syncs; on the development VM that took
//! 2-3x what etcd's WAL append takes on the same disk in the same minute
//! (`benches/README.md`, kv). Here a synced write is one frame appended to
//! a file whose blocks are all allocated and written before first use, then
//! one `fdatasync`, which needs no metadata update, and no redb
//! transaction: the batch waits in memory (`unflushed.rs`), where reads
//! find it, until a checkpoint (`log_store.rs`) writes everything before it
//! to redb in one durable commit, on a thread of its own.
//!
//! Frame: `len: u32 LE` (payload bytes), `crc: u32 LE` (CRC-32 of `seq`
//! and the payload), `seq: u64 LE`, then the payload,
//! `rafter::codec::encode(&(truncate_from, entries, hard_state))`.
//!
//! Layout (format 3): the file is two halves. Frames are laid end to end
//! from the start of the active half (a lap), their sequence numbers going
//! up by one. When a checkpoint begins, appends move to the start of the
//! other half, so that the checkpoint's writes stay in the first half
//! until it has ended; a half is reused only then. After a checkpoint run
//! inside a call (a purge, a metadata save, a write larger than a half),
//! which holds every write, the active half starts again from its start.
//! Format 2 had one lap over the whole file (`Layout::OneLap`), read only
//! to upgrade such a store.
//!
//! Recovery (`replay`): redb, reopened after a crash, holds exactly the
//! writes up to its last durable commit, and it records in each commit the
//! sequence number of the last write it holds (`journal_seq`). Each half's
//! lap is read from its start, the half whose first frame has the lower
//! number first (a checkpoint may not have ended: its writes are in that
//! half, the later ones in the other). Frames at or below the number redb
//! holds are skipped, the following ones are applied in order, and a lap's
//! scan stops at the first frame that is not the next number or fails its
//! checksum. That frame is
//! what a crash during an append leaves (a torn tail: the write never
//! returned, so dropping it keeps `write` atomic, all or nothing), or what
//! is left of an earlier lap of the file (a lower number). A frame that
//! fails its checksum while the frame after it is the next number is not a
//! tail but damage: `StorageError::Corrupt`.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use rafter::{codec, Entry, HardState, StorageError, WriteBatch};

use crate::error::{corrupt, io};
use crate::format::JOURNAL_FILE;

/// Bytes of a frame's header: length, checksum, sequence number.
const FRAME_HEADER_BYTES: u64 = 16;
/// Zeros written per call while the file is first filled.
const FILL_CHUNK_BYTES: usize = 1 << 20;

/// What a frame carries: a `WriteBatch` without its `must_sync`.
pub(crate) type JournalBatch = (Option<u64>, Vec<Entry>, Option<HardState>);

/// The journal file, open for appending.
///
/// Invariant: `end <= half_bytes`; the frames in `active + (0..end)` have
/// consecutive sequence numbers ending at the last one appended.
#[derive(Debug)]
pub(crate) struct Journal {
    file: File,
    /// Where the half being appended to starts: 0 or `half_bytes`.
    active: u64,
    /// Where the next frame goes, from `active`.
    end: u64,
    /// The file's length: all of it allocated and written (zeros at first).
    capacity: u64,
    /// The length of each half.
    half_bytes: u64,
    /// The frame being built; reused so appends do not allocate.
    frame: Vec<u8>,
}

impl Journal {
    /// Opens `dir/log.journal`, creating it `capacity` bytes long (zeros,
    /// synced, and the directory synced) if it is missing or empty. An
    /// existing file keeps its length, which places its halves, until
    /// [`Journal::grow`]. The next append goes to offset 0: call
    /// [`Journal::replay`] first.
    pub(crate) fn open(dir: &Path, capacity: u64) -> Result<Self, StorageError> {
        let path = dir.join(JOURNAL_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io("open journal", e))?;
        let length = file
            .metadata()
            .map_err(|e| io("read journal size", e))?
            .len();
        let mut journal = Self {
            file,
            active: 0,
            end: 0,
            capacity: length,
            half_bytes: length / 2,
            frame: Vec::new(),
        };
        if length == 0 {
            journal.grow(dir, capacity)?;
        }
        Ok(journal)
    }

    /// Makes the file `capacity` bytes long if it is shorter, and starts
    /// again at offset 0 with the new halves. Only once redb durably holds
    /// every write the journal holds: the halves move.
    pub(crate) fn grow(&mut self, dir: &Path, capacity: u64) -> Result<(), StorageError> {
        if self.capacity < capacity {
            // Written, not `fallocate`d: an allocated but unwritten block
            // costs a metadata update at the first `fdatasync` after it is
            // written, which is what the journal exists to avoid.
            let zeros = vec![0u8; FILL_CHUNK_BYTES];
            let mut offset = self.capacity;
            while offset < capacity {
                let chunk = (capacity - offset).min(FILL_CHUNK_BYTES as u64) as usize;
                self.file
                    .write_all_at(&zeros[..chunk], offset)
                    .map_err(|e| io("fill journal", e))?;
                offset += chunk as u64;
            }
            self.file.sync_all().map_err(|e| io("sync journal", e))?;
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("sync data directory", e))?;
            self.capacity = capacity;
            self.half_bytes = capacity / 2;
        }
        self.active = 0;
        self.end = 0;
        Ok(())
    }

    /// Reads the frames after `durable_seq` (the sequence number redb
    /// holds) in order into `apply`, and returns the last sequence number
    /// applied (`durable_seq` if none). `layout` says where the frames are
    /// (see the module doc for where a scan stops and when that is
    /// corruption).
    pub(crate) fn replay(
        &mut self,
        durable_seq: u64,
        layout: Layout,
        mut apply: impl FnMut(JournalBatch) -> Result<(), StorageError>,
    ) -> Result<u64, StorageError> {
        // Each region is (start, end).
        let mut regions = match layout {
            Layout::OneLap => vec![(0, self.capacity)],
            Layout::Halves => vec![(0, self.half_bytes), (self.half_bytes, 2 * self.half_bytes)],
        };
        // The older lap first: the one whose first frame has the lower
        // number (a half without a valid first frame last).
        let mut firsts = Vec::new();
        for &(start, end) in &regions {
            firsts.push(match self.read_frame(start, end)? {
                FrameRead::Valid { seq, .. } => seq,
                _ => u64::MAX,
            });
        }
        if firsts.len() == 2 && firsts[1] < firsts[0] {
            regions.swap(0, 1);
        }
        let mut expected = durable_seq + 1;
        for (start, end) in regions {
            expected = self.replay_region(start..end, expected, &mut apply)?;
        }
        Ok(expected - 1)
    }

    /// Replays the lap that starts at `region.start`: frames below
    /// `expected` are skipped, the one numbered `expected` is applied, and
    /// so on. Returns the next number expected.
    fn replay_region(
        &self,
        region: std::ops::Range<u64>,
        mut expected: u64,
        apply: &mut impl FnMut(JournalBatch) -> Result<(), StorageError>,
    ) -> Result<u64, StorageError> {
        // No frame is longer than its region.
        let payload_bytes_max = usize::try_from(region.end - region.start).unwrap_or(usize::MAX);
        let mut offset = region.start;
        // The frames of one lap go up; a lower one is an earlier lap.
        let mut previous: Option<u64> = None;
        loop {
            match self.read_frame(offset, region.end)? {
                FrameRead::End => break,
                FrameRead::Valid { seq, .. } if previous.is_some_and(|p| seq <= p) => break,
                FrameRead::Valid { seq, next, .. } if seq < expected => {
                    // Already in redb.
                    previous = Some(seq);
                    offset = next;
                }
                FrameRead::Valid { seq, payload, next } if seq == expected => {
                    let batch: JournalBatch =
                        codec::decode(&payload, payload_bytes_max).map_err(|e| {
                            corrupt(
                                format!("journal frame {seq} at offset {offset}"),
                                format!("undecodable: {e}"),
                            )
                        })?;
                    apply(batch)?;
                    expected += 1;
                    previous = Some(seq);
                    offset = next;
                }
                FrameRead::Valid { seq, .. } => {
                    return Err(corrupt(
                        format!("journal at offset {offset}"),
                        format!(
                            "write {seq} follows write {}: the ones between are lost",
                            expected - 1
                        ),
                    ));
                }
                FrameRead::Damaged { next } => {
                    // A torn tail, unless the frame after it carries on.
                    let carries_on = match next {
                        Some(next) => matches!(
                            self.read_frame(next, region.end)?,
                            FrameRead::Valid { seq, .. } if seq == expected + 1
                        ),
                        None => false,
                    };
                    if carries_on {
                        return Err(corrupt(
                            format!("journal at offset {offset}"),
                            format!(
                                "write {expected} fails its checksum but the write after it is \
                                 intact: damage, not a torn tail"
                            ),
                        ));
                    }
                    break;
                }
            }
        }
        Ok(expected)
    }

    /// Reads the frame at `offset`, which must end by `region_end`.
    fn read_frame(&self, offset: u64, region_end: u64) -> Result<FrameRead, StorageError> {
        if offset + FRAME_HEADER_BYTES > region_end {
            return Ok(FrameRead::End);
        }
        let mut header = [0u8; FRAME_HEADER_BYTES as usize];
        self.file
            .read_exact_at(&mut header, offset)
            .map_err(|e| io("read journal", e))?;
        let length = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let seq = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        if length == 0 && crc == 0 && seq == 0 {
            // Never written: the zeros the file was filled with.
            return Ok(FrameRead::End);
        }
        let next = offset + FRAME_HEADER_BYTES + u64::from(length);
        if next > region_end {
            return Ok(FrameRead::Damaged { next: None });
        }
        let mut payload = vec![0u8; length as usize];
        self.file
            .read_exact_at(&mut payload, offset + FRAME_HEADER_BYTES)
            .map_err(|e| io("read journal", e))?;
        if frame_crc(seq, &payload) != crc {
            return Ok(FrameRead::Damaged { next: Some(next) });
        }
        Ok(FrameRead::Valid { seq, payload, next })
    }

    /// Appends `batch` as write number `seq` to the active half, synced
    /// with `fdatasync` when `sync`. Returns `false`, writing nothing, when
    /// the frame does not fit in the rest of the half: the caller switches
    /// halves ([`Journal::switch`]) or checkpoints ([`Journal::restart`]).
    pub(crate) fn append(
        &mut self,
        seq: u64,
        batch: &WriteBatch,
        sync: bool,
    ) -> Result<bool, StorageError> {
        self.frame.clear();
        self.frame.resize(FRAME_HEADER_BYTES as usize, 0);
        codec::encode_into(
            &(&batch.truncate_from, &batch.entries, &batch.hard_state),
            &mut self.frame,
        );
        let length = self.frame.len() as u64 - FRAME_HEADER_BYTES;
        if self.end + FRAME_HEADER_BYTES + length > self.half_bytes {
            return Ok(false);
        }
        let length32 = u32::try_from(length).expect("a frame that fits is under 4 GiB");
        let crc = frame_crc(seq, &self.frame[FRAME_HEADER_BYTES as usize..]);
        self.frame[0..4].copy_from_slice(&length32.to_le_bytes());
        self.frame[4..8].copy_from_slice(&crc.to_le_bytes());
        self.frame[8..16].copy_from_slice(&seq.to_le_bytes());
        self.file
            .write_all_at(&self.frame, self.active + self.end)
            .map_err(|e| io("append to journal", e))?;
        if sync {
            self.file.sync_data().map_err(|e| io("sync journal", e))?;
        }
        self.end += self.frame.len() as u64;
        debug_assert!(self.end <= self.half_bytes);
        Ok(true)
    }

    /// Bytes appended to the active half since it was started.
    pub(crate) fn used_bytes(&self) -> u64 {
        self.end
    }

    /// The length of each half.
    pub(crate) fn half_bytes(&self) -> u64 {
        self.half_bytes
    }

    /// The next frame goes to the start of the other half. Only once redb
    /// durably holds every write in that half (a checkpoint of it ended):
    /// its frames are then at or below redb's number, and the new ones
    /// start above the active half's.
    pub(crate) fn switch(&mut self) {
        self.active = if self.active == 0 { self.half_bytes } else { 0 };
        self.end = 0;
    }

    /// The next frame goes to the start of the active half again. Only
    /// once redb durably holds every write the journal holds: the frames
    /// left behind in both halves are then at or below redb's number.
    pub(crate) fn restart(&mut self) {
        self.end = 0;
    }
}

/// Where a journal's frames are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Format version 2: one lap from offset 0 over the whole file.
    OneLap,
    /// Format version 3: two halves, each a lap from its start.
    Halves,
}

/// What is at an offset of the journal.
enum FrameRead {
    /// A frame whose checksum holds.
    Valid {
        seq: u64,
        payload: Vec<u8>,
        next: u64,
    },
    /// Bytes that are no valid frame; `next` is where the frame after it
    /// would start, if its length is believable.
    Damaged { next: Option<u64> },
    /// Never-written zeros, or the end of the file.
    End,
}

fn frame_crc(seq: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}
