//! The data directory's lock: one open store per directory, across
//! processes and within one.
//!
//! An advisory exclusive lock (`flock` on Unix, via `std::fs::File::try_lock`)
//! on `<dir>/LOCK`, held by an open file for as long as the store lives. The
//! kernel drops it when the process dies, so a crash never leaves a stale
//! lock behind. redb locks its own file too; this lock covers the whole
//! directory and gives the caller a clear `StorageError::Locked` before redb
//! is even asked.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use rafter::StorageError;

use crate::error::io;
use crate::format::LOCK_FILE;

/// Holds the lock until dropped.
#[derive(Debug)]
pub(crate) struct DirectoryLock {
    /// Kept open: closing the file releases the lock.
    _file: File,
}

impl DirectoryLock {
    /// Takes the lock of `dir` (which must exist) or fails at once with
    /// `Locked`; never waits.
    pub(crate) fn acquire(dir: &Path) -> Result<Self, StorageError> {
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io("open lock file", e))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(TryLockError::WouldBlock) => Err(StorageError::Locked(format!(
                "{} is held by another open store",
                path.display()
            ))),
            Err(TryLockError::Error(e)) => Err(io("lock data directory", e)),
        }
    }
}
