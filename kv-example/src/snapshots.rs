//! The state machine's snapshots. Its own snapshot is a *view*: a redb
//! read transaction held open, which keeps the store's state at one applied
//! log id readable while the applies and flushes go on (redb keeps the
//! pages a reader sees). Taking one costs nothing but the transaction, and
//! its bytes are made only when a follower reads them (`snapshot_stream.rs`),
//! so a snapshot never rewrites the store on the node that takes it, as
//! etcd streams its backend file only to a member that needs it. A
//! snapshot received from a leader is a file, installed in one redb
//! transaction.
//!
//! A view is durable without a file: it is the state of a durable flush
//! (`Durability::Immediate`), so after a restart the store holds at least
//! that state, and `open` takes a new view of it. The view Rafter was told
//! of before a restart cannot be made again; its transfers then find it
//! unavailable and Rafter asks for a new one.
//!
//! Files in the directory:
//! - `snap-<index>-<term>.bin`: a complete snapshot received (or written
//!   by an earlier build): a header (magic, index, term) and the store's
//!   dump (`store::snapshot`, with its own checksum). Each is a correct
//!   snapshot of the replicated state at its log id, so one left by a
//!   crash anywhere is still valid. Removed once a newer view is taken.
//! - `build.tmp` and `recv-<index>-<term>.part`: unfinished; removed on open.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rafter::{LogId, StateMachineError};
use rafter_redb::RedbStateMachineStore;
use redb::ReadableDatabase;

use crate::snapshot_stream::{SnapshotStream, HEADER_BYTES, MAGIC};
use crate::state_machine::store_error;
use crate::store::load_snapshot;

/// Reads of snapshots under way at once (a leader streams to each follower
/// that needs one; two are all a 3-node cluster has). A further one
/// replaces the least recently started.
const STREAMS_MAX: usize = 3;

/// The snapshots of one node.
///
/// Invariant: `files` is sorted and every id in it has its file on disk;
/// `view`, if any, is newer than every file; every stream reads the
/// current view or the one it replaced (kept readable for a transfer under
/// way until the next view replaces it in turn).
#[derive(Debug)]
pub struct Snapshots {
    dir: PathBuf,
    files: Vec<LogId>,
    view: Option<View>,
    streams: Vec<SnapshotStream>,
    /// The snapshot being received and the bytes it holds so far.
    receiving: Option<(LogId, u64)>,
    built: u64,
}

/// The store's state at `id`, held open.
#[derive(Debug)]
struct View {
    id: LogId,
    txn: Arc<redb::ReadTransaction>,
}

impl Snapshots {
    /// Opens `dir`, dropping unfinished files, and takes a view of what
    /// `store` holds. Blocks.
    pub fn open(dir: &Path, store: &RedbStateMachineStore) -> Result<Self, StateMachineError> {
        fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let mut files = Vec::new();
        for item in fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let path = item.map_err(|e| io(dir, e))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".tmp") || name.ends_with(".part") {
                fs::remove_file(&path).map_err(|e| io(&path, e))?;
            } else if let Some(id) = parse_name(name) {
                files.push(id);
            }
        }
        files.sort();
        let mut snapshots = Self {
            dir: dir.to_owned(),
            files,
            view: None,
            streams: Vec::new(),
            receiving: None,
            built: 0,
        };
        snapshots.take_view(store)?;
        Ok(snapshots)
    }

    /// The newest snapshot: the view, or the newest file.
    pub fn latest(&self) -> Option<LogId> {
        match &self.view {
            Some(view) => Some(view.id),
            None => self.files.last().copied(),
        }
    }

    /// Views taken since open.
    pub fn built_count(&self) -> u64 {
        self.built
    }

    /// Takes a view of what `store` holds durably (its last flush) if that
    /// is newer than the latest snapshot, and returns the latest (the zero
    /// id if there is none: Rafter then ignores it). Cheap: one read
    /// transaction.
    pub fn build(&mut self, store: &RedbStateMachineStore) -> Result<LogId, StateMachineError> {
        self.take_view(store)?;
        Ok(self.latest().unwrap_or_default())
    }

    fn take_view(&mut self, store: &RedbStateMachineStore) -> Result<(), StateMachineError> {
        // The view and the applied id it records are read in one
        // transaction, so the snapshot holds exactly the state at `id`,
        // whatever a background flush commits meanwhile.
        let txn = store
            .database()
            .begin_read()
            .map_err(|e| StateMachineError::Io(e.to_string()))?;
        let id = RedbStateMachineStore::applied_in(&txn)?;
        if id.index <= self.latest().map_or(0, |l| l.index) {
            return Ok(());
        }
        // Transfers of the view replaced here may go on; older ones had a
        // whole interval to finish (a stream held open keeps its thread
        // and the pages of its view).
        let replaced = self.view.as_ref().map(|v| v.id);
        self.streams.retain(|s| Some(s.id()) == replaced);
        self.view = Some(View {
            id,
            txn: Arc::new(txn),
        });
        self.built += 1;
        // Files hold older states this node has left.
        self.prune_files(|file| file < id);
        Ok(())
    }

    /// Removes the files `drop` selects.
    fn prune_files(&mut self, drop: impl Fn(LogId) -> bool) {
        let dir = &self.dir;
        self.files.retain(|&old| {
            if !drop(old) {
                return true;
            }
            if let Err(error) = fs::remove_file(dir.join(file_name(old))) {
                tracing::warn!(?old, %error, "cannot remove an old snapshot");
            }
            false
        });
    }

    /// Up to `bytes_max` bytes of `snapshot` from `offset`; `None` past the
    /// end. A file is read from disk; a view is streamed (the first read
    /// of a transfer starts a stream).
    pub fn read(
        &mut self,
        snapshot: LogId,
        offset: u64,
        bytes_max: usize,
    ) -> Result<Option<bytes::Bytes>, StateMachineError> {
        if self.files.contains(&snapshot) {
            return self.read_file(snapshot, offset, bytes_max);
        }
        // The stream furthest along that can serve `offset`.
        let serving = self
            .streams
            .iter()
            .enumerate()
            .filter(|(_, s)| s.id() == snapshot && s.serves(offset))
            .max_by_key(|(_, s)| s.offset())
            .map(|(i, _)| i);
        let index = match serving {
            Some(index) => index,
            None => {
                let Some(view) = self.view.as_ref().filter(|v| v.id == snapshot) else {
                    return Err(StateMachineError::SnapshotUnavailable(snapshot));
                };
                if self.streams.len() >= STREAMS_MAX {
                    self.streams.remove(0);
                }
                self.streams
                    .push(SnapshotStream::start(view.id, Arc::clone(&view.txn))?);
                self.streams.len() - 1
            }
        };
        let chunk = self.streams[index].read(offset, bytes_max);
        if !matches!(chunk, Ok(Some(_))) {
            // Past the end, or broken: its transfer is over.
            self.streams.remove(index);
        }
        chunk
    }

    fn read_file(
        &self,
        snapshot: LogId,
        offset: u64,
        bytes_max: usize,
    ) -> Result<Option<bytes::Bytes>, StateMachineError> {
        let path = self.path(snapshot);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateMachineError::SnapshotUnavailable(snapshot))
            }
            Err(e) => return Err(io(&path, e)),
        };
        let len = file.metadata().map_err(|e| io(&path, e))?.len();
        if offset >= len {
            return Ok(None);
        }
        let size = (len - offset).min(bytes_max as u64) as usize;
        let mut chunk = vec![0; size];
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.read_exact(&mut chunk))
            .map_err(|e| io(&path, e))?;
        Ok(Some(chunk.into()))
    }

    /// Stores a received chunk at `offset`; 0 starts over.
    pub fn receive(
        &mut self,
        snapshot: LogId,
        offset: u64,
        data: &[u8],
    ) -> Result<(), StateMachineError> {
        if offset == 0 {
            if let Some((old, _)) = self.receiving.take() {
                let _ = fs::remove_file(self.part_path(old));
            }
            self.receiving = Some((snapshot, 0));
        }
        let Some((receiving, held)) = self.receiving else {
            return Err(StateMachineError::Io(format!(
                "chunk at {offset} of snapshot {snapshot:?} with no transfer started"
            )));
        };
        if receiving != snapshot || offset > held {
            return Err(StateMachineError::Io(format!(
                "chunk at {offset} of {snapshot:?}, but {receiving:?} holds {held} bytes"
            )));
        }
        let path = self.part_path(snapshot);
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        // A chunk sent again overwrites what it covered.
        file.set_len(offset)
            .and_then(|_| file.seek(SeekFrom::Start(offset)))
            .and_then(|_| file.write_all(data))
            .map_err(|e| io(&path, e))?;
        self.receiving = Some((snapshot, offset + data.len() as u64));
        Ok(())
    }

    /// Replaces the store's state with the received `snapshot`, atomically
    /// (one redb transaction that also sets the applied log id).
    pub fn install(
        &mut self,
        store: &RedbStateMachineStore,
        snapshot: LogId,
    ) -> Result<(), StateMachineError> {
        if self.receiving.map(|(id, _)| id) != Some(snapshot) {
            return Err(StateMachineError::Io(format!(
                "install of {snapshot:?}, which was not received"
            )));
        }
        let applied = store.applied()?;
        if snapshot.index <= applied.index {
            return Err(StateMachineError::Corrupt {
                index: snapshot.index,
                message: format!("snapshot {snapshot:?} is not newer than applied {applied:?}"),
            });
        }
        let part = self.part_path(snapshot);
        let path = self.path(snapshot);
        File::open(&part)
            .and_then(|f| f.sync_all())
            .map_err(|e| io(&part, e))?;
        // Renamed first: a complete file is a valid snapshot whether or not
        // the install below commits.
        fs::rename(&part, &path).map_err(|e| io(&path, e))?;
        sync_dir(&self.dir)?;
        self.receiving = None;
        let mut reader = open_checked(&path, snapshot)?;
        store.apply_batch(applied.index + 1, snapshot, |txn| {
            load_snapshot(txn, &mut reader).map_err(store_error)
        })?;
        if !self.files.contains(&snapshot) {
            self.files.push(snapshot);
            self.files.sort();
        }
        // Older ones, the view and its transfers included, describe a
        // state this node has left.
        self.prune_files(|file| file < snapshot);
        self.view = None;
        self.streams.clear();
        Ok(())
    }

    fn path(&self, id: LogId) -> PathBuf {
        self.dir.join(file_name(id))
    }

    fn part_path(&self, id: LogId) -> PathBuf {
        self.dir.join(format!("recv-{}-{}.part", id.index, id.term))
    }
}

/// The name of snapshot `id`'s file.
fn file_name(id: LogId) -> String {
    format!("snap-{}-{}.bin", id.index, id.term)
}

/// Opens a snapshot file and checks its header names `id`.
fn open_checked(path: &Path, id: LogId) -> Result<BufReader<File>, StateMachineError> {
    let file = File::open(path).map_err(|e| io(path, e))?;
    let len = file.metadata().map_err(|e| io(path, e))?.len();
    let mut reader = BufReader::new(file);
    let mut header = [0u8; HEADER_BYTES as usize];
    if len < HEADER_BYTES {
        return Err(corrupt(id, "shorter than its header"));
    }
    reader.read_exact(&mut header).map_err(|e| io(path, e))?;
    let index = u64::from_be_bytes(header[8..16].try_into().expect("8 bytes"));
    let term = u64::from_be_bytes(header[16..24].try_into().expect("8 bytes"));
    if &header[..8] != MAGIC || (LogId { term, index }) != id {
        return Err(corrupt(id, "header does not name this snapshot"));
    }
    Ok(reader)
}

fn parse_name(name: &str) -> Option<LogId> {
    let rest = name.strip_prefix("snap-")?.strip_suffix(".bin")?;
    let (index, term) = rest.split_once('-')?;
    Some(LogId {
        term: term.parse().ok()?,
        index: index.parse().ok()?,
    })
}

fn sync_dir(dir: &Path) -> Result<(), StateMachineError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

fn corrupt(id: LogId, message: &str) -> StateMachineError {
    StateMachineError::Corrupt {
        index: id.index,
        message: format!("snapshot file: {message}"),
    }
}

fn io(path: &Path, error: impl std::fmt::Display) -> StateMachineError {
    StateMachineError::Io(format!("{}: {error}", path.display()))
}
