//! The state machine's snapshot files: built in the background from a redb
//! read transaction (a consistent view, so applies go on while the file is
//! written), read in chunks for followers, received in chunks and installed
//! in one redb transaction.
//!
//! Files in the directory:
//! - `snap-<index>-<term>.bin`: a complete snapshot: a header (magic,
//!   index, term) and the store's dump (`store::snapshot`, with its own
//!   checksum). Every such file is a correct snapshot of the replicated
//!   state at its log id, so one left by a crash anywhere is still valid.
//! - `build.tmp` and `recv-<index>-<term>.part`: unfinished; removed on open.
//!
//! Build policy: `build` returns the newest snapshot that is complete and
//! starts the next one in the background, so Rafter purges the log one
//! snapshot interval later than it could, and the apply task never waits
//! for a dump (only the very first snapshot, when none exists, is awaited).

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rafter::{LogId, StateMachineError};
use rafter_redb::RedbStateMachineStore;
use redb::ReadableDatabase;

use crate::state_machine::store_error;
use crate::store::{load_snapshot, write_snapshot};

/// The first bytes of a snapshot file.
const MAGIC: &[u8; 8] = b"RKVSNAP1";
/// Magic, index and term.
const HEADER_BYTES: u64 = 24;

/// The snapshot files of one node.
///
/// Invariant: `complete` is sorted, every id in it has its file on disk,
/// and at most two are kept (the one Rafter was told about and a newer one
/// built since).
#[derive(Debug)]
pub struct SnapshotFiles {
    dir: PathBuf,
    complete: Vec<LogId>,
    building: Option<tokio::task::JoinHandle<Result<LogId, StateMachineError>>>,
    /// The snapshot being received and the bytes it holds so far.
    receiving: Option<(LogId, u64)>,
    built: u64,
}

impl SnapshotFiles {
    /// Opens `dir`, dropping unfinished files. Blocks.
    pub fn open(dir: &Path) -> Result<Self, StateMachineError> {
        fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let mut complete = Vec::new();
        for item in fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let path = item.map_err(|e| io(dir, e))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".tmp") || name.ends_with(".part") {
                fs::remove_file(&path).map_err(|e| io(&path, e))?;
            } else if let Some(id) = parse_name(name) {
                complete.push(id);
            }
        }
        complete.sort();
        Ok(Self {
            dir: dir.to_owned(),
            complete,
            building: None,
            receiving: None,
            built: 0,
        })
    }

    /// The newest complete snapshot.
    pub fn latest(&self) -> Option<LogId> {
        self.complete.last().copied()
    }

    /// Snapshots built since open.
    pub fn built_count(&self) -> u64 {
        self.built
    }

    /// Size in bytes of the newest complete snapshot's file (0 if none, or
    /// unreadable: the caller only weighs it).
    pub fn latest_bytes(&self) -> u64 {
        self.latest()
            .and_then(|id| fs::metadata(self.path(id)).ok())
            .map_or(0, |m| m.len())
    }

    /// Collects a finished background build, starts the next one from the
    /// store's current state, and returns the newest complete snapshot (the
    /// zero id if there is none: Rafter then ignores it) and whether a build
    /// started.
    pub async fn build(
        &mut self,
        store: Arc<RedbStateMachineStore>,
    ) -> Result<(LogId, bool), StateMachineError> {
        let finished = self.building.as_ref().is_some_and(|b| b.is_finished());
        if finished || (self.building.is_some() && self.complete.is_empty()) {
            self.collect().await?;
        }
        let mut started = false;
        if self.building.is_none() {
            // The view and the applied id it records are read in one
            // transaction, so the snapshot holds exactly the state at
            // `applied`, whatever a background flush commits meanwhile.
            let view = store
                .database()
                .begin_read()
                .map_err(|e| StateMachineError::Io(e.to_string()))?;
            let applied = RedbStateMachineStore::applied_in(&view)?;
            if applied.index > self.latest().map_or(0, |l| l.index) {
                let dir = self.dir.clone();
                self.building = Some(tokio::task::spawn_blocking(move || {
                    write_file(&dir, applied, &view)
                }));
                started = true;
                if self.complete.is_empty() {
                    self.collect().await?;
                }
            }
        }
        Ok((self.latest().unwrap_or_default(), started))
    }

    async fn collect(&mut self) -> Result<(), StateMachineError> {
        let Some(handle) = self.building.take() else {
            return Ok(());
        };
        let id = handle
            .await
            .map_err(|e| StateMachineError::Io(format!("snapshot build task failed: {e}")))??;
        self.built += 1;
        if self.latest().is_some_and(|latest| latest >= id) {
            // A snapshot installed meanwhile is newer.
            let _ = fs::remove_file(self.path(id));
            return Ok(());
        }
        tracing::info!(?id, "built a snapshot");
        self.complete.push(id);
        self.prune(2);
        Ok(())
    }

    /// Keeps the newest `keep` complete snapshots.
    fn prune(&mut self, keep: usize) {
        while self.complete.len() > keep {
            let old = self.complete.remove(0);
            if let Err(error) = fs::remove_file(self.path(old)) {
                tracing::warn!(?old, %error, "cannot remove an old snapshot");
            }
        }
    }

    /// Up to `bytes_max` bytes of `snapshot` from `offset`; `None` past the
    /// end.
    pub fn read(
        &self,
        snapshot: LogId,
        offset: u64,
        bytes_max: usize,
    ) -> Result<Option<bytes::Bytes>, StateMachineError> {
        if !self.complete.contains(&snapshot) {
            return Err(StateMachineError::SnapshotUnavailable(snapshot));
        }
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
        if !self.complete.contains(&snapshot) {
            self.complete.push(snapshot);
            self.complete.sort();
        }
        // Older ones describe a state this node has left.
        let keep = self.complete.len()
            - self
                .complete
                .iter()
                .position(|id| *id == snapshot)
                .unwrap_or(0);
        self.prune(keep);
        Ok(())
    }

    fn path(&self, id: LogId) -> PathBuf {
        self.dir.join(format!("snap-{}-{}.bin", id.index, id.term))
    }

    fn part_path(&self, id: LogId) -> PathBuf {
        self.dir.join(format!("recv-{}-{}.part", id.index, id.term))
    }
}

/// Writes the snapshot of `view` (the state at `id`) to its file.
fn write_file(
    dir: &Path,
    id: LogId,
    view: &redb::ReadTransaction,
) -> Result<LogId, StateMachineError> {
    let tmp = dir.join("build.tmp");
    let file = File::create(&tmp).map_err(|e| io(&tmp, e))?;
    let mut out = BufWriter::new(SyncedEvery::new(file, SNAPSHOT_SYNC_BYTES));
    out.write_all(MAGIC)
        .and_then(|_| out.write_all(&id.index.to_be_bytes()))
        .and_then(|_| out.write_all(&id.term.to_be_bytes()))
        .map_err(|e| io(&tmp, e))?;
    write_snapshot(view, &mut out).map_err(store_error)?;
    let file = out.into_inner().map_err(|e| io(&tmp, e.into_error()))?.file;
    file.sync_all().map_err(|e| io(&tmp, e))?;
    let path = dir.join(format!("snap-{}-{}.bin", id.index, id.term));
    fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
    sync_dir(dir)?;
    Ok(id)
}

/// How much of a snapshot being built may wait in the page cache before
/// it is synced. Unsynced, a whole store's file (tens of MB and more) sits
/// dirty until the final sync writes it in one burst, and the logs'
/// `fdatasync`s queue behind it on the same disk; in steps the burst is
/// a few milliseconds of the disk's time each.
const SNAPSHOT_SYNC_BYTES: u64 = 4 << 20;

/// A file synced (`fdatasync`) after every `every` bytes written to it.
struct SyncedEvery {
    file: File,
    every: u64,
    unsynced: u64,
}

impl SyncedEvery {
    fn new(file: File, every: u64) -> Self {
        Self {
            file,
            every,
            unsynced: 0,
        }
    }
}

impl Write for SyncedEvery {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.file.write(buf)?;
        self.unsynced += written as u64;
        if self.unsynced >= self.every {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
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
