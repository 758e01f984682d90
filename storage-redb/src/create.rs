//! How a database file comes to exist: atomically, so that a crash while it
//! is created never leaves a file the next open refuses.
//!
//! A SIGKILL while redb initialises a new file leaves a file it cannot open
//! ("magic number mismatch"; the crash test found it). So a new database is
//! built under a temporary name (`<name>.new`), initialised by the caller in
//! a committed transaction, synced, renamed to its final name, and the
//! directory synced. The final name only ever holds a complete database;
//! once it exists it is opened, never created, so a file that vanished is
//! an error, not a new empty database that forgets everything. A leftover
//! temporary file is garbage from a crash during creation and is replaced.
//!
//! Both `log.redb` (`RedbStorage`) and `state.redb`
//! (`RedbStateMachineStore`) go through here.

use std::path::{Path, PathBuf};

use rafter::StorageError;
use redb::Database;

use crate::error::{from_redb, io};

/// The suffix of a database file under construction.
const UNFINISHED_SUFFIX: &str = ".new";

/// Opens `dir/file_name` with `builder`, first creating it atomically (see
/// the module doc) if it does not exist. `initialise` runs once, on the new
/// database under its temporary name, and must commit what every open
/// expects to find (tables, a format version).
///
/// Errors: `Io` for the filesystem; what `from_redb` maps redb's errors to
/// (`Corrupt` for a file that is not a redb database); whatever
/// `initialise` returns.
pub(crate) fn open_or_create(
    dir: &Path,
    file_name: &str,
    builder: &redb::Builder,
    initialise: impl FnOnce(&Database) -> Result<(), StorageError>,
) -> Result<Database, StorageError> {
    let path = dir.join(file_name);
    if !path.try_exists().map_err(|e| io("stat database file", e))? {
        create(dir, &path, builder, initialise)?;
    }
    // `open`, never `create`: see the module doc.
    builder
        .open(&path)
        .map_err(|e| from_redb("open database", e))
}

/// The temporary name of `path` while it is created.
fn unfinished_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(UNFINISHED_SUFFIX);
    PathBuf::from(name)
}

fn create(
    dir: &Path,
    path: &Path,
    builder: &redb::Builder,
    initialise: impl FnOnce(&Database) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let temporary = unfinished_path(path);
    match std::fs::remove_file(&temporary) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("remove unfinished database file", e)),
    }
    let db = builder
        .create(&temporary)
        .map_err(|e| from_redb("create database", e))?;
    initialise(&db)?;
    drop(db);
    let sync = |p: &Path| std::fs::File::open(p).and_then(|f| f.sync_all());
    sync(&temporary).map_err(|e| io("sync new database file", e))?;
    std::fs::rename(&temporary, path).map_err(|e| io("rename new database file", e))?;
    sync(dir).map_err(|e| io("sync data directory", e))
}
