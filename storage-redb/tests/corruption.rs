//! Damaged stores give a clear error, at open or at read, and never a panic
//! or wrong data.
//!
//! Two kinds of damage: bytes flipped anywhere in the file (what redb's page
//! checksums and its integrity check on open catch), and records altered
//! through redb itself, with redb's checksums valid, which only this
//! crate's record checksums and continuity checks can catch.

use std::path::Path;

use rafter::CommandBytes;
use rafter::{Entry, EntryPayload, HardState, LogId, RaftStorage, StorageError, WriteBatch};
use rafter_redb::{RedbOptions, RedbStorage, STORE_FORMAT_VERSION};
use redb::{Database, ReadableTable, TableDefinition};

// The layout of FORMAT.md, spelled out again on purpose: these tests play
// the part of a disk that does not know the code.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

fn entry(index: u64) -> Entry {
    Entry {
        term: 1 + index / 50,
        index,
        payload: EntryPayload::Command(CommandBytes::from(format!("payload of entry {index:08}"))),
    }
}

/// A closed store holding entries 11..=200 (10 purged) and a hard state.
async fn build(dir: &Path) {
    let mut store = RedbStorage::open(dir).expect("open");
    let batch = WriteBatch {
        entries: (1..=200).map(entry).collect(),
        hard_state: Some(HardState {
            term: 5,
            vote: Some(2),
            commit: 150,
        }),
        must_sync: true,
        ..WriteBatch::default()
    };
    store.write(batch).await.expect("write");
    store.purge(LogId::new(1, 10)).await.expect("purge");
}

/// Opens and reads everything; any error is fine, any data must be right.
async fn open_and_read_all(dir: &Path, options: RedbOptions) -> Result<(), StorageError> {
    let mut store = RedbStorage::open_with(dir, options)?;
    let state = store.initial_state().await?;
    let entries = store.entries(11..201, u64::MAX).await?;
    assert_eq!(
        state.last_log_id,
        entry(200).log_id(),
        "served a wrong last log id"
    );
    assert_eq!(
        entries,
        (11..=200).map(entry).collect::<Vec<_>>(),
        "served wrong entries"
    );
    Ok(())
}

fn raw_edit(dir: &Path, edit: impl FnOnce(&redb::WriteTransaction)) {
    let db = Database::open(dir.join("log.redb")).expect("raw open");
    let txn = db.begin_write().expect("raw write");
    edit(&txn);
    txn.commit().expect("raw commit");
}

fn expect_corrupt(result: Result<(), StorageError>, location: &str) {
    match result {
        Err(StorageError::Corrupt {
            location: found,
            message,
        }) => assert!(
            found.contains(location),
            "corrupt at {found:?} ({message}), expected {location:?}"
        ),
        other => panic!("expected corruption at {location}, got {other:?}"),
    }
}

#[tokio::test]
async fn flipped_bytes_anywhere_give_an_error_or_the_right_data_never_a_panic() {
    let root = tempfile::tempdir().expect("temp dir");
    let pristine = root.path().join("pristine");
    build(&pristine).await;
    let original = std::fs::read(pristine.join("log.redb")).expect("read file");
    // Offsets that hold entries, found by their payload text, plus a sweep
    // over the whole file (headers, branch pages, free space).
    let marker = b"payload of entry";
    let mut offsets: Vec<usize> = original
        .windows(marker.len())
        .enumerate()
        .filter(|(_, w)| *w == marker)
        .map(|(i, _)| i + marker.len() + 3)
        .step_by(17)
        .collect();
    assert!(!offsets.is_empty(), "the entries are in the file");
    let entry_offsets = offsets.len();
    offsets.extend((0..original.len()).step_by(original.len() / 150 + 1));
    let mut errors = [0, 0];
    for (case, offset) in offsets.iter().enumerate() {
        let dir = root.path().join(format!("case-{case}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut bytes = original.clone();
        bytes[*offset] ^= 0x5A;
        std::fs::write(dir.join("log.redb"), &bytes).expect("write copy");
        if open_and_read_all(&dir, RedbOptions::default())
            .await
            .is_err()
        {
            errors[usize::from(case >= entry_offsets)] += 1;
        }
        // Without redb's whole-file check on open, redb may panic on a
        // damaged page (it says so); the store must still neither panic
        // nor serve wrong entries.
        let dir = root.path().join(format!("case-{case}-unchecked"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("log.redb"), &bytes).expect("write copy");
        let mut unchecked = RedbOptions::default();
        unchecked.open_check_file = false;
        let _ = open_and_read_all(&dir, unchecked).await;
    }
    println!(
        "noticed {} of {entry_offsets} flips in entries, {} of {} elsewhere",
        errors[0],
        errors[1],
        offsets.len() - entry_offsets
    );
    // A flip in a live entry must be noticed (only a stale copy of a page
    // may hide one); elsewhere it may land in free space.
    assert!(
        errors[0] * 10 >= entry_offsets * 9,
        "flips in entries went unnoticed: {errors:?}"
    );
}

#[tokio::test]
async fn a_truncated_file_is_an_error() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("store");
    build(&dir).await;
    let path = dir.join("log.redb");
    let len = std::fs::metadata(&path).expect("stat").len();
    for keep in [0, 100, len / 2, len - 1] {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        file.set_len(keep).expect("truncate");
        drop(file);
        assert!(
            open_and_read_all(&dir, RedbOptions::default())
                .await
                .is_err(),
            "a file cut to {keep} of {len} bytes opened"
        );
    }
}

#[tokio::test]
async fn a_damaged_entry_in_the_tail_fails_the_open() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("store");
    build(&dir).await;
    raw_edit(&dir, |txn| {
        let mut log = txn.open_table(LOG).expect("log");
        let mut record = log
            .get(190)
            .expect("get")
            .expect("entry 190")
            .value()
            .to_vec();
        let last = record.len() - 1;
        record[last] ^= 1;
        log.insert(190, record.as_slice()).expect("insert");
    });
    expect_corrupt(
        open_and_read_all(&dir, RedbOptions::default()).await,
        "log entry 190",
    );
}

#[tokio::test]
async fn a_damaged_entry_past_the_open_check_fails_its_read_and_stops_the_store() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("store");
    build(&dir).await;
    raw_edit(&dir, |txn| {
        let mut log = txn.open_table(LOG).expect("log");
        let mut record = log
            .get(50)
            .expect("get")
            .expect("entry 50")
            .value()
            .to_vec();
        record[6] ^= 0x80;
        log.insert(50, record.as_slice()).expect("insert");
    });
    let mut options = RedbOptions::default();
    options.open_check_entries_max = 10;
    let mut store = RedbStorage::open_with(&dir, options).expect("the tail is fine");
    assert_eq!(
        store.entries(11..50, u64::MAX).await.map(|e| e.len()),
        Ok(39)
    );
    let result = store.entries(40..60, u64::MAX).await.map(|_| ());
    expect_corrupt(result, "log entry 50");
    // Fail-stop: the store refuses everything after that.
    let later = store.entries(11..12, u64::MAX).await;
    assert!(
        matches!(later, Err(StorageError::Corrupt { .. })),
        "{later:?}"
    );
}

#[tokio::test]
async fn a_record_under_the_wrong_key_is_caught() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("store");
    build(&dir).await;
    raw_edit(&dir, |txn| {
        let mut log = txn.open_table(LOG).expect("log");
        let record = log
            .get(199)
            .expect("get")
            .expect("entry 199")
            .value()
            .to_vec();
        log.insert(200, record.as_slice()).expect("insert");
    });
    expect_corrupt(
        open_and_read_all(&dir, RedbOptions::default()).await,
        "log entry 200",
    );
}

#[tokio::test]
async fn a_hole_in_the_log_fails_the_open() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("store");
    build(&dir).await;
    raw_edit(&dir, |txn| {
        txn.open_table(LOG)
            .expect("log")
            .remove(100)
            .expect("remove");
    });
    expect_corrupt(
        open_and_read_all(&dir, RedbOptions::default()).await,
        "log table",
    );
}

#[tokio::test]
async fn a_log_that_does_not_start_after_the_purge_point_fails_the_open() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("store");
    build(&dir).await;
    raw_edit(&dir, |txn| {
        txn.open_table(LOG)
            .expect("log")
            .remove(11)
            .expect("remove");
    });
    expect_corrupt(
        open_and_read_all(&dir, RedbOptions::default()).await,
        "log table",
    );
}

/// Sets the format byte(s) of a closed store.
fn set_format_version(dir: &Path, version: &[u8]) {
    raw_edit(dir, |txn| {
        let mut meta = txn.open_table(META).expect("meta");
        meta.insert("format_version", version).expect("insert");
    });
}

#[tokio::test]
async fn a_later_format_version_is_unsupported_not_corrupt() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("store");
    build(&dir).await;
    set_format_version(&dir, &[9]);
    let result = open_and_read_all(&dir, RedbOptions::default()).await;
    assert_eq!(result, Err(StorageError::UnsupportedFormat { found: 9 }));
    // The refusal wrote nothing: back at this build's version, the store is
    // intact.
    set_format_version(&dir, &[STORE_FORMAT_VERSION]);
    open_and_read_all(&dir, RedbOptions::default())
        .await
        .expect("intact after the refused open");
}

fn format_version(dir: &Path) -> Vec<u8> {
    let db = Database::open(dir.join("log.redb")).expect("raw open");
    let txn = redb::ReadableDatabase::begin_read(&db).expect("raw read");
    let meta = txn.open_table(META).expect("meta");
    let version = meta.get("format_version").expect("get").expect("present");
    version.value().to_vec()
}

#[tokio::test]
async fn a_store_from_before_the_journal_opens_and_is_marked_with_this_version() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("store");
    build(&dir).await;
    // Version 1 had the same tables and no journal file.
    set_format_version(&dir, &[1]);
    std::fs::remove_file(dir.join("log.journal")).expect("remove the journal");
    open_and_read_all(&dir, RedbOptions::default())
        .await
        .expect("a version 1 store opens");
    // So that a build from before the journal refuses it from now on.
    assert_eq!(format_version(&dir), vec![STORE_FORMAT_VERSION]);
}

#[tokio::test]
async fn a_store_from_a_later_build_with_other_tables_is_unsupported() {
    // What a later build might write: the same `meta` table and version
    // key (FORMAT.md keeps them), a log table of another type.
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("store");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let db = Database::create(dir.join("log.redb")).expect("raw create");
    let txn = db.begin_write().expect("raw write");
    {
        let mut meta = txn.open_table(META).expect("meta");
        meta.insert("format_version", [STORE_FORMAT_VERSION + 1].as_slice())
            .expect("insert");
        let log_v2: TableDefinition<&str, u64> = TableDefinition::new("log");
        txn.open_table(log_v2)
            .expect("log")
            .insert("first", 1)
            .expect("insert");
    }
    txn.commit().expect("raw commit");
    drop(db);
    let result = RedbStorage::open(&dir).map(|_| ());
    assert_eq!(
        result,
        Err(StorageError::UnsupportedFormat {
            found: u64::from(STORE_FORMAT_VERSION + 1)
        })
    );
}

#[tokio::test]
async fn a_format_version_no_build_writes_is_corrupt() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("store");
    build(&dir).await;
    for version in [&[0u8][..], &[], &[1, 0], &[STORE_FORMAT_VERSION, 0]] {
        set_format_version(&dir, version);
        expect_corrupt(
            open_and_read_all(&dir, RedbOptions::default()).await,
            "format_version",
        );
    }
}

#[tokio::test]
async fn a_damaged_hard_state_fails_the_open() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("store");
    build(&dir).await;
    raw_edit(&dir, |txn| {
        let mut meta = txn.open_table(META).expect("meta");
        let mut record = meta
            .get("hard_state")
            .expect("get")
            .expect("hard state")
            .value()
            .to_vec();
        record[5] ^= 0x01;
        meta.insert("hard_state", record.as_slice())
            .expect("insert");
    });
    expect_corrupt(
        open_and_read_all(&dir, RedbOptions::default()).await,
        "meta/hard_state",
    );
}

#[tokio::test]
async fn a_missing_format_version_with_data_fails_the_open() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("store");
    build(&dir).await;
    raw_edit(&dir, |txn| {
        txn.open_table(META)
            .expect("meta")
            .remove("format_version")
            .expect("remove");
    });
    expect_corrupt(
        open_and_read_all(&dir, RedbOptions::default()).await,
        "format_version",
    );
}
