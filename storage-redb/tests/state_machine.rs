//! `RedbKv` stores its applied log id in the same transaction as its data,
//! so a restarted node resumes right after it and never applies an entry
//! twice; a failed batch stores neither.

use rafter::{Committed, CommittedPayload, LogId, StateMachine, StateMachineError};
use rafter_redb::{RedbKv, RedbKvCommand, RedbStateMachineStore};

fn append(index: u64, suffix: &str) -> Committed<RedbKvCommand> {
    Committed {
        log_id: LogId::new(1, index),
        payload: CommittedPayload::Command(RedbKvCommand::Append {
            key: "k".into(),
            suffix: suffix.into(),
        }),
    }
}

/// What the log holds: entry i appends the digit i % 10.
fn log(range: std::ops::RangeInclusive<u64>) -> Vec<Committed<RedbKvCommand>> {
    range.map(|i| append(i, &(i % 10).to_string())).collect()
}

/// Restarts the way Rafter does: ask `applied`, apply the rest of the log.
async fn restart_and_catch_up(dir: &std::path::Path, log_last: u64) -> RedbKv {
    let mut kv = RedbKv::open(dir).expect("open");
    let applied = kv.applied().await.expect("applied");
    if applied.index < log_last {
        kv.apply(log(applied.index + 1..=log_last))
            .await
            .expect("apply");
    }
    kv
}

#[tokio::test]
async fn restart_does_not_reapply_entries() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("sm");
    let mut kv = RedbKv::open(&dir).expect("open");
    assert_eq!(kv.applied().await, Ok(LogId::default()));
    let responses = kv.apply(log(1..=3)).await.expect("apply");
    assert_eq!(
        responses,
        vec![Some("1".into()), Some("12".into()), Some("123".into())]
    );
    let blank = Committed {
        log_id: LogId::new(1, 4),
        payload: CommittedPayload::Blank,
    };
    let responses = kv.apply(vec![blank, append(5, "5")]).await.expect("apply");
    assert_eq!(
        responses,
        vec![Some("1235".into())],
        "no response for a blank entry"
    );
    drop(kv);

    // Entry 4 was blank; the log as the restart sees it is 1..=8 of appends.
    let kv = restart_and_catch_up(&dir, 8).await;
    assert_eq!(
        kv.get("k"),
        Ok(Some("1235678".into())),
        "6..=8 applied once, 1..=5 not again"
    );
    drop(kv);
    let mut kv = restart_and_catch_up(&dir, 8).await;
    assert_eq!(kv.applied().await, Ok(LogId::new(1, 8)));
    assert_eq!(
        kv.get("k"),
        Ok(Some("1235678".into())),
        "a second restart changes nothing"
    );

    // Handing it applied entries again is refused and changes nothing.
    let again = kv.apply(log(7..=9)).await;
    assert!(
        matches!(again, Err(StateMachineError::Corrupt { index: 7, .. })),
        "{again:?}"
    );
    assert_eq!(kv.get("k"), Ok(Some("1235678".into())));
    assert_eq!(kv.applied().await, Ok(LogId::new(1, 8)));
}

#[tokio::test]
async fn a_failed_batch_stores_neither_data_nor_applied_index() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("sm");
    let mut kv = RedbKv::open(&dir).expect("open");
    kv.apply(log(1..=2)).await.expect("apply");
    // Entry 4 where 3 belongs: the batch fails half-way through.
    let mut bad = log(3..=5);
    bad.remove(1);
    let result = kv.apply(bad).await;
    assert!(
        matches!(result, Err(StateMachineError::Corrupt { index: 5, .. })),
        "{result:?}"
    );
    drop(kv);
    let mut kv = RedbKv::open(&dir).expect("reopen");
    assert_eq!(kv.applied().await, Ok(LogId::new(1, 2)));
    assert_eq!(
        kv.get("k"),
        Ok(Some("12".into())),
        "entry 3 of the failed batch was rolled back"
    );
}

#[test]
fn a_read_transaction_sees_the_applied_id_of_its_own_state() {
    use redb::ReadableDatabase;
    let root = tempfile::tempdir().expect("temp dir");
    let store = RedbStateMachineStore::open(root.path()).expect("open");
    let fresh = store.database().begin_read().expect("read");
    store
        .apply_batch(1, LogId::new(1, 3), |_| Ok(()))
        .expect("first batch");
    let old = store.database().begin_read().expect("read");
    store
        .apply_batch(4, LogId::new(2, 5), |_| Ok(()))
        .expect("second batch");
    assert_eq!(
        RedbStateMachineStore::applied_in(&fresh),
        Ok(LogId::default())
    );
    assert_eq!(
        RedbStateMachineStore::applied_in(&old),
        Ok(LogId::new(1, 3)),
        "an older read transaction keeps its own applied id"
    );
    assert_eq!(store.applied(), Ok(LogId::new(2, 5)));
}

#[test]
fn a_second_open_of_the_directory_fails() {
    let root = tempfile::tempdir().expect("temp dir");
    let _kv = RedbKv::open(root.path()).expect("open");
    assert!(RedbKv::open(root.path()).is_err());
}

#[tokio::test]
async fn a_leftover_unfinished_file_is_replaced_by_a_clean_store() {
    // What a crash during creation leaves: `state.redb.new`, here a redb
    // file with a stray table, and no `state.redb`.
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("sm");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let unfinished = dir.join("state.redb.new");
    {
        let db = redb::Database::create(&unfinished).expect("raw create");
        let txn = db.begin_write().expect("raw write");
        let stray: redb::TableDefinition<&str, &str> = redb::TableDefinition::new("stray");
        txn.open_table(stray)
            .expect("table")
            .insert("k", "v")
            .expect("insert");
        txn.commit().expect("raw commit");
    }
    let mut kv = RedbKv::open(&dir).expect("open despite the leftover");
    assert!(!unfinished.exists(), "the leftover is gone");
    assert_eq!(kv.applied().await, Ok(LogId::default()));
    assert_eq!(kv.get("k"), Ok(None));
    kv.apply(log(1..=2)).await.expect("apply");
    drop(kv);
    let kv = RedbKv::open(&dir).expect("reopen");
    assert_eq!(kv.get("k"), Ok(Some("12".into())));

    // Garbage under the temporary name is replaced the same way.
    let fresh = root.path().join("fresh");
    std::fs::create_dir_all(&fresh).expect("mkdir");
    std::fs::write(fresh.join("state.redb.new"), b"half a header").expect("write");
    let mut kv = RedbKv::open(&fresh).expect("open despite garbage");
    assert_eq!(kv.applied().await, Ok(LogId::default()));
}

#[test]
fn a_half_created_state_file_is_a_clear_error_and_left_alone() {
    // What a crash of a build that created `state.redb` in place could
    // leave: an empty file, a file sized but without redb's magic number,
    // garbage. None may be replaced (it could be the only copy of the
    // state) and none may panic.
    let root = tempfile::tempdir().expect("temp dir");
    for (case, bytes) in [
        ("empty", Vec::new()),
        ("zeroed", vec![0u8; 1 << 20]),
        ("garbage", b"not a database at all".to_vec()),
    ] {
        let dir = root.path().join(case);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("state.redb");
        std::fs::write(&path, &bytes).expect("write");
        let result = std::panic::catch_unwind(|| RedbStateMachineStore::open(&dir).map(|_| ()));
        match result {
            Ok(Err(StateMachineError::Io(message))) => assert!(
                message.contains("state.redb"),
                "{case}: the error names the file: {message}"
            ),
            other => panic!("{case}: expected an IO error naming the file, got {other:?}"),
        }
        assert_eq!(
            std::fs::read(&path).expect("read"),
            bytes,
            "{case}: the file was changed"
        );
    }
}
