//! The journal in front of redb (`src/journal.rs`): after a crash, the
//! writes redb lost come back from it; a torn last frame is dropped (that
//! write never returned); a damaged frame with intact ones after it is
//! corruption.
//!
//! A crash is imitated by copying the data directory while the store is
//! open and between calls: redb's commits without an fsync live only in
//! the process (redb's `Durability::None`), so the copied `log.redb` holds
//! what the disk would hold after a crash at that moment (its last durable
//! commit), and the copied `log.journal` what was appended. The real thing,
//! SIGKILL at random moments, is `crash.rs`.

use std::path::Path;
use std::time::Duration;

use rafter::CommandBytes;
use rafter::{Entry, EntryPayload, HardState, LogId, RaftStorage, StorageError, WriteBatch};
use rafter_redb::{RedbOptions, RedbStorage};

fn entry(index: u64) -> Entry {
    Entry {
        term: 1 + index / 50,
        index,
        payload: EntryPayload::Command(CommandBytes::from(format!("payload of entry {index:08}"))),
    }
}

/// No checkpoint unless the journal fills: every write after the last
/// durable commit is in the journal only.
fn options() -> RedbOptions {
    let mut options = RedbOptions::default();
    options.journal_bytes = 1 << 20;
    options.journal_checkpoint_interval = Duration::from_secs(3600);
    options
}

fn hard_state(commit: u64) -> HardState {
    HardState {
        term: 9,
        vote: Some(2),
        commit,
    }
}

/// Writes entries `from..=to` in batches of 10, each synced, the last
/// batch with a hard state committing `to`.
async fn write_batches(store: &mut RedbStorage, from: u64, to: u64) {
    let mut next = from;
    while next <= to {
        let last = (next + 9).min(to);
        let batch = WriteBatch {
            entries: (next..=last).map(entry).collect(),
            hard_state: (last == to).then(|| hard_state(to)),
            must_sync: true,
            ..WriteBatch::default()
        };
        store.write(batch).await.expect("write");
        next = last + 1;
    }
}

/// Copies the store's files as a crash at this moment leaves them.
fn crash_image(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for name in ["log.redb", "log.journal"] {
        std::fs::copy(from.join(name), to.join(name)).expect("copy");
    }
}

/// The offsets of the frames of the journal's active half (the one whose
/// first frame has the higher number), from their headers.
fn frame_offsets(dir: &Path) -> Vec<u64> {
    let bytes = std::fs::read(dir.join("log.journal")).expect("read journal");
    let frames_from = |start: usize, end: usize| {
        let mut frames = Vec::new();
        let mut offset = start;
        while offset + 16 <= end {
            let length = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
            if length == 0 {
                break;
            }
            let seq = u64::from_le_bytes(bytes[offset + 8..offset + 16].try_into().unwrap());
            frames.push((offset as u64, seq));
            offset += 16 + length;
        }
        frames
    };
    let half = bytes.len() / 2;
    let first = frames_from(0, half);
    let second = frames_from(half, bytes.len());
    let first_seq = |frames: &[(u64, u64)]| frames.first().map_or(0, |f| f.1);
    let active = if first_seq(&second) > first_seq(&first) {
        second
    } else {
        first
    };
    active.into_iter().map(|(offset, _)| offset).collect()
}

fn flip_byte(dir: &Path, offset: u64) {
    let path = dir.join("log.journal");
    let mut bytes = std::fs::read(&path).expect("read journal");
    bytes[offset as usize] ^= 0x5a;
    std::fs::write(&path, bytes).expect("write journal");
}

async fn check_holds(dir: &Path, last: u64, commit: u64) {
    let mut store = RedbStorage::open_with(dir, options()).expect("reopen");
    let state = store.initial_state().await.expect("initial state");
    assert_eq!(state.last_log_id, entry(last).log_id());
    assert_eq!(state.hard_state, hard_state(commit));
    let entries = store.entries(1..last + 1, u64::MAX).await.expect("read");
    assert_eq!(entries, (1..=last).map(entry).collect::<Vec<_>>());
}

#[tokio::test]
async fn writes_only_in_the_journal_come_back_after_a_crash() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("store");
    let mut store = RedbStorage::open_with(&dir, options()).expect("open");
    write_batches(&mut store, 1, 100).await;
    // A durable commit (with the purge point), then more writes after it.
    store.purge(LogId::new(1, 5)).await.expect("purge");
    store.checkpoint().await.expect("checkpoint");
    write_batches(&mut store, 101, 250).await;
    let crashed = root.path().join("crashed");
    crash_image(&dir, &crashed);
    assert_eq!(
        frame_offsets(&crashed).len(),
        15,
        "the writes after the purge"
    );
    let mut reopened = RedbStorage::open_with(&crashed, options()).expect("reopen");
    let state = reopened.initial_state().await.expect("state");
    assert_eq!(state.purged, LogId::new(1, 5));
    assert_eq!(state.last_log_id, entry(250).log_id());
    assert_eq!(state.hard_state, hard_state(250));
    let entries = reopened.entries(6..251, u64::MAX).await.expect("read");
    assert_eq!(entries, (6..=250).map(entry).collect::<Vec<_>>());
    // The replay was made durable: a second crash right after the open
    // loses nothing, and the journal restarted (its old frames are
    // skipped).
    reopened
        .write(WriteBatch {
            entries: vec![entry(251)],
            must_sync: true,
            ..WriteBatch::default()
        })
        .await
        .expect("write after replay");
    let again = root.path().join("again");
    crash_image(&crashed, &again);
    let mut store = RedbStorage::open_with(&again, options()).expect("reopen again");
    let entries = store.entries(6..252, u64::MAX).await.expect("read");
    assert_eq!(entries, (6..=251).map(entry).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_torn_last_frame_loses_that_write_only() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("store");
    let mut store = RedbStorage::open_with(&dir, options()).expect("open");
    write_batches(&mut store, 1, 60).await;
    store
        .write(WriteBatch {
            entries: (61..=70).map(entry).collect(),
            hard_state: Some(hard_state(70)),
            must_sync: true,
            ..WriteBatch::default()
        })
        .await
        .expect("write");
    let crashed = root.path().join("crashed");
    crash_image(&dir, &crashed);
    let offsets = frame_offsets(&crashed);
    assert_eq!(offsets.len(), 7);
    // The last frame's payload half written.
    flip_byte(&crashed, offsets[6] + 40);
    check_holds(&crashed, 60, 60).await;
}

#[tokio::test]
async fn a_damaged_frame_before_intact_ones_is_corruption() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("store");
    let mut store = RedbStorage::open_with(&dir, options()).expect("open");
    write_batches(&mut store, 1, 60).await;
    let crashed = root.path().join("crashed");
    crash_image(&dir, &crashed);
    let offsets = frame_offsets(&crashed);
    flip_byte(&crashed, offsets[2] + 30);
    match RedbStorage::open_with(&crashed, options()) {
        Err(StorageError::Corrupt { location, .. }) => {
            assert!(location.contains("journal"), "{location}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test]
async fn a_full_journal_checkpoints_and_starts_again() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("store");
    let mut small = options();
    small.journal_bytes = 64 << 10;
    let mut store = RedbStorage::open_with(&dir, small.clone()).expect("open");
    // About 450 bytes a frame of 10 entries: several laps of 32 KiB.
    write_batches(&mut store, 1, 3000).await;
    let crashed = root.path().join("crashed");
    crash_image(&dir, &crashed);
    let journal_len = std::fs::metadata(crashed.join("log.journal"))
        .unwrap()
        .len();
    assert_eq!(journal_len, 64 << 10, "the journal never grows");
    let mut reopened = RedbStorage::open_with(&crashed, small).expect("reopen");
    let state = reopened.initial_state().await.expect("state");
    assert_eq!(state.last_log_id, entry(3000).log_id());
    let entries = reopened.entries(1..3001, u64::MAX).await.expect("read");
    assert_eq!(entries, (1..=3000).map(entry).collect::<Vec<_>>());
}

#[tokio::test]
async fn without_the_journal_every_synced_write_is_durable_in_redb() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("store");
    let mut off = options();
    off.journal_bytes = 0;
    let mut store = RedbStorage::open_with(&dir, off.clone()).expect("open");
    write_batches(&mut store, 1, 40).await;
    assert!(!dir.join("log.journal").exists());
    let crashed = root.path().join("crashed");
    std::fs::create_dir_all(&crashed).unwrap();
    std::fs::copy(dir.join("log.redb"), crashed.join("log.redb")).unwrap();
    let mut reopened = RedbStorage::open_with(&crashed, off).expect("reopen");
    let entries = reopened.entries(1..41, u64::MAX).await.expect("read");
    assert_eq!(entries, (1..=40).map(entry).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_store_only_opened_and_read_has_no_journal_file() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("store");
    let mut store = RedbStorage::open_with(&dir, options()).expect("open");
    store.initial_state().await.expect("state");
    drop(store);
    assert!(!dir.join("log.journal").exists());
    let mut store = RedbStorage::open_with(&dir, options()).expect("reopen");
    write_batches(&mut store, 1, 10).await;
    assert_eq!(
        std::fs::metadata(dir.join("log.journal"))
            .expect("created")
            .len(),
        options().journal_bytes
    );
}

/// The frames of the lap that starts at `start`, as (offset, seq), read
/// from the headers up to `end` (no checksum checked: the tests read
/// journals they just wrote).
fn lap(bytes: &[u8], start: usize, end: usize) -> Vec<(usize, u64)> {
    let mut frames = Vec::new();
    let mut offset = start;
    while offset + 16 <= end {
        let length = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
        let seq = u64::from_le_bytes(bytes[offset + 8..offset + 16].try_into().unwrap());
        let follows = frames.last().is_none_or(|&(_, last)| seq == last + 1);
        if length == 0 || offset + 16 + length > end || !follows {
            break;
        }
        frames.push((offset, seq));
        offset += 16 + length;
    }
    frames
}

#[tokio::test]
async fn a_crash_during_a_background_checkpoint_replays_both_halves() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("store");
    let mut small = options();
    small.journal_bytes = 64 << 10;
    let mut store = RedbStorage::open_with(&dir, small.clone()).expect("open");
    // redb as a crash leaves it while the first checkpoint has not ended:
    // the store as opened, nothing written.
    let before = root.path().join("before");
    std::fs::create_dir_all(&before).unwrap();
    std::fs::copy(dir.join("log.redb"), before.join("log.redb")).unwrap();
    // About 320 bytes a frame: a checkpoint begins at 16 KiB (half the
    // first half), and the next writes go to the second half.
    write_batches(&mut store, 1, 800).await;
    let bytes = std::fs::read(dir.join("log.journal")).expect("read journal");
    let first = lap(&bytes, 0, 32 << 10);
    let second = lap(&bytes, 32 << 10, 64 << 10);
    assert!(!first.is_empty() && !second.is_empty(), "both halves used");
    assert_eq!(first[0].1, 1, "the first lap");
    assert_eq!(
        second[0].1,
        first.last().unwrap().1 + 1,
        "the second lap follows"
    );
    assert_eq!(second.last().unwrap().1, 80, "one switch only");
    std::fs::write(before.join("log.journal"), &bytes).unwrap();
    check_holds(&before, 800, 800).await;
}

#[tokio::test]
async fn a_version_2_store_replays_its_journal_in_one_lap_and_becomes_version_3() {
    const META: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("store");
    let mut store = RedbStorage::open_with(&dir, options()).expect("open");
    let image = root.path().join("v2");
    std::fs::create_dir_all(&image).unwrap();
    std::fs::copy(dir.join("log.redb"), image.join("log.redb")).unwrap();
    // 1 MiB: every frame in the first lap of the first half.
    write_batches(&mut store, 1, 1200).await;
    drop(store);
    let bytes = std::fs::read(dir.join("log.journal")).expect("read journal");
    let frames = lap(&bytes, 0, 512 << 10);
    assert_eq!(frames.len(), 120);
    // Version 2 wrote one lap over the whole file: the same frames in a
    // 64 KiB journal cross its middle, where version 3 starts its second
    // half.
    let (last_offset, _) = *frames.last().unwrap();
    let used = last_offset
        + 16
        + u32::from_le_bytes(bytes[last_offset..][..4].try_into().unwrap()) as usize;
    assert!(used > 32 << 10 && used < 64 << 10, "{used} bytes of frames");
    let mut journal = vec![0u8; 64 << 10];
    journal[..used].copy_from_slice(&bytes[..used]);
    std::fs::write(image.join("log.journal"), &journal).unwrap();
    {
        let db = redb::Database::open(image.join("log.redb")).expect("raw open");
        let txn = db.begin_write().expect("raw write");
        {
            let mut meta = txn.open_table(META).expect("meta");
            meta.insert("format_version", [2u8].as_slice())
                .expect("insert");
        }
        txn.commit().expect("raw commit");
    }
    let mut small = options();
    small.journal_bytes = 64 << 10;
    let mut store = RedbStorage::open_with(&image, small).expect("open version 2");
    let state = store.initial_state().await.expect("state");
    assert_eq!(state.last_log_id, entry(1200).log_id());
    let entries = store.entries(1..1201, u64::MAX).await.expect("read");
    assert_eq!(entries, (1..=1200).map(entry).collect::<Vec<_>>());
    drop(store);
    let db = redb::Database::open(image.join("log.redb")).expect("raw open");
    let txn = redb::ReadableDatabase::begin_read(&db).expect("raw read");
    let meta = txn.open_table(META).expect("meta");
    let version = meta.get("format_version").expect("get").expect("present");
    assert_eq!(version.value(), [rafter_redb::STORE_FORMAT_VERSION]);
    assert_eq!(rafter_redb::STORE_FORMAT_VERSION, 3);
}
