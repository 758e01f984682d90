//! The conformance suite every [`RaftStorage`] should pass, in one call:
//! [`run_storage_suite`].
//!
//! Each check starts from a new, empty store made by the caller's `create`
//! closure, drives it through the trait only, and "restarts" it with the
//! caller's `reopen` closure, which takes the store by value (so it can drop
//! it and open the same files again) and returns the store that a restarted
//! node would see. A store that cannot be reopened passes `|store| store`;
//! the persistence checks then only check the live store.
//!
//! A failed check panics with the check's name and what differed, like an
//! `assert!` in the caller's test.

use std::ops::Range;

use crate::CommandBytes;

use crate::storage::{InitialState, RaftStorage, StorageError, WriteBatch};
use crate::types::{Entry, EntryPayload, HardState, LogId, Membership, SnapshotMeta};

/// Runs every check on stores from `create`, restarting them with `reopen`.
/// Returns the names of the checks that ran, all of which passed.
///
/// ```no_run
/// use rafter::testing::{run_storage_suite, MemStorage};
///
/// #[tokio::test]
/// async fn mem_storage_passes_the_suite() {
///     // `MemStorage` survives a "restart" as itself.
///     let names = run_storage_suite(MemStorage::new, |s| s).await;
///     assert!(!names.is_empty());
/// }
/// ```
pub async fn run_storage_suite<S, C, R>(mut create: C, mut reopen: R) -> Vec<&'static str>
where
    S: RaftStorage,
    C: FnMut() -> S,
    R: FnMut(S) -> S,
{
    let mut ran = Vec::new();
    macro_rules! check {
        ($name:ident) => {
            $name(create(), &mut reopen).await;
            ran.push(stringify!($name));
        };
    }
    check!(new_store_is_empty);
    check!(append_then_read_every_range);
    check!(reads_outside_the_log_are_unavailable);
    check!(bytes_max_returns_a_maximal_prefix_of_at_least_one_entry);
    check!(truncate_replaces_a_suffix_in_one_batch);
    check!(truncate_past_the_end_changes_nothing);
    check!(truncate_at_or_below_the_purge_point_is_refused);
    check!(append_with_a_gap_is_refused);
    check!(hard_state_round_trips);
    check!(purge_keeps_the_suffix_and_the_purge_point);
    check!(purge_past_the_end_empties_the_log);
    check!(purge_at_or_below_the_purge_point_does_nothing);
    check!(snapshot_meta_round_trips);
    check!(installing_snapshot_meta_is_kept_apart);
    check!(large_batch_reads_back_in_pages);
    ran
}

/// An entry of `term` at `index` whose payload depends on both, so a read
/// of the wrong entry shows.
fn entry(term: u64, index: u64) -> Entry {
    let payload = match index % 3 {
        0 => EntryPayload::Blank,
        1 => EntryPayload::Command(CommandBytes::from(format!("command {term}/{index}"))),
        _ => EntryPayload::Membership(Box::new(membership(index))),
    };
    Entry {
        term,
        index,
        payload,
    }
}

fn membership(seed: u64) -> Membership {
    Membership::new_voters((1..=3).map(|id| (id, format!("node-{id}-{seed}"))))
}

fn entries(term: u64, range: Range<u64>) -> Vec<Entry> {
    range.map(|index| entry(term, index)).collect()
}

fn append(entries: Vec<Entry>) -> WriteBatch {
    WriteBatch {
        entries,
        must_sync: true,
        ..WriteBatch::default()
    }
}

async fn write<S: RaftStorage>(check: &str, store: &mut S, batch: WriteBatch) {
    if let Err(e) = store.write(batch.clone()).await {
        panic!("{check}: write of {batch:?} failed: {e}");
    }
}

async fn read<S: RaftStorage>(check: &str, store: &mut S, range: Range<u64>) -> Vec<Entry> {
    match store.entries(range.clone(), u64::MAX).await {
        Ok(entries) => entries,
        Err(e) => panic!("{check}: entries({range:?}) failed: {e}"),
    }
}

async fn state<S: RaftStorage>(check: &str, store: &mut S) -> InitialState {
    match store.initial_state().await {
        Ok(state) => state,
        Err(e) => panic!("{check}: initial_state failed: {e}"),
    }
}

/// Checks the store's bounds, then restarts it and checks them again, with
/// the whole log read back equal to `log`.
async fn check_restart<S, R>(
    check: &str,
    store: S,
    reopen: &mut R,
    log: &[Entry],
    expected: InitialState,
) -> S
where
    S: RaftStorage,
    R: FnMut(S) -> S,
{
    let mut store = store;
    for phase in ["before restart", "after restart"] {
        let found = state(check, &mut store).await;
        assert_eq!(found, expected, "{check}: initial state {phase}");
        let first = expected.purged.index + 1;
        let last = expected.last_log_id.index;
        let read_back = read(check, &mut store, first..last + 1).await;
        assert_eq!(read_back, log, "{check}: the whole log {phase}");
        if phase == "before restart" {
            store = reopen(store);
        }
    }
    store
}

async fn new_store_is_empty<S: RaftStorage, R: FnMut(S) -> S>(store: S, reopen: &mut R) {
    const CHECK: &str = "new_store_is_empty";
    check_restart(CHECK, store, reopen, &[], InitialState::default()).await;
}

async fn append_then_read_every_range<S: RaftStorage, R: FnMut(S) -> S>(
    mut store: S,
    reopen: &mut R,
) {
    const CHECK: &str = "append_then_read_every_range";
    let log: Vec<Entry> = entries(1, 1..4)
        .into_iter()
        .chain(entries(2, 4..9))
        .collect();
    // Two batches: appends continue right after the last entry.
    write(CHECK, &mut store, append(log[..3].to_vec())).await;
    write(CHECK, &mut store, append(log[3..].to_vec())).await;
    let expected = InitialState {
        last_log_id: LogId::new(2, 8),
        ..InitialState::default()
    };
    let mut store = check_restart(CHECK, store, reopen, &log, expected).await;
    for start in 1..=8 {
        for end in start..=9 {
            let found = read(CHECK, &mut store, start..end).await;
            assert_eq!(
                found,
                log[(start - 1) as usize..(end - 1) as usize],
                "{CHECK}: entries({start}..{end})"
            );
        }
    }
}

async fn reads_outside_the_log_are_unavailable<S: RaftStorage, R: FnMut(S) -> S>(
    mut store: S,
    reopen: &mut R,
) {
    const CHECK: &str = "reads_outside_the_log_are_unavailable";
    let on_empty = store.entries(1..2, u64::MAX).await;
    assert_eq!(
        on_empty,
        Err(StorageError::Unavailable { index: 1 }),
        "{CHECK}: entries(1..2) of an empty log"
    );
    write(CHECK, &mut store, append(entries(1, 1..11))).await;
    store.purge(LogId::new(1, 4)).await.expect("purge");
    let mut store = reopen(store);
    for (range, index) in [
        (0..6, 0),
        (4..6, 4),
        (1..11, 1),
        (5..12, 11),
        (11..12, 11),
        (10..20, 11),
    ] {
        let found = store.entries(range.clone(), u64::MAX).await;
        assert_eq!(
            found,
            Err(StorageError::Unavailable { index }),
            "{CHECK}: entries({range:?}) of the log 5..=10"
        );
    }
    // The boundaries themselves are inside: the first and the last entry.
    assert_eq!(
        read(CHECK, &mut store, 5..6).await,
        vec![entry(1, 5)],
        "{CHECK}: first"
    );
    assert_eq!(
        read(CHECK, &mut store, 10..11).await,
        vec![entry(1, 10)],
        "{CHECK}: last"
    );
    assert_eq!(
        read(CHECK, &mut store, 7..7).await,
        Vec::<Entry>::new(),
        "{CHECK}: empty range"
    );
}

async fn bytes_max_returns_a_maximal_prefix_of_at_least_one_entry<
    S: RaftStorage,
    R: FnMut(S) -> S,
>(
    mut store: S,
    _reopen: &mut R,
) {
    const CHECK: &str = "bytes_max_returns_a_maximal_prefix_of_at_least_one_entry";
    let log = entries(3, 1..21);
    write(CHECK, &mut store, append(log.clone())).await;
    let sizes: Vec<u64> = log.iter().map(Entry::size_bytes).collect();
    let budgets = [
        0,
        1,
        sizes[0],
        sizes[0] + 1,
        sizes[0] + sizes[1],
        sizes[0] + sizes[1] - 1,
    ];
    let budgets = budgets
        .into_iter()
        .chain([sizes.iter().sum::<u64>(), u64::MAX]);
    for bytes_max in budgets {
        for start in [1u64, 2, 10, 20] {
            let range = start..21;
            let found = match store.entries(range.clone(), bytes_max).await {
                Ok(found) => found,
                Err(e) => panic!("{CHECK}: entries({range:?}, {bytes_max}) failed: {e}"),
            };
            assert!(
                !found.is_empty(),
                "{CHECK}: entries({range:?}, {bytes_max}) is empty"
            );
            let skip = (start - 1) as usize;
            assert_eq!(
                found,
                log[skip..skip + found.len()],
                "{CHECK}: a prefix of the range"
            );
            let total: u64 = found.iter().map(Entry::size_bytes).sum();
            if found.len() > 1 {
                assert!(
                    total <= bytes_max,
                    "{CHECK}: {total} bytes over bytes_max {bytes_max}"
                );
            }
            if let Some(next) = log.get(skip + found.len()) {
                assert!(
                    total.saturating_add(next.size_bytes()) > bytes_max,
                    "{CHECK}: entries({range:?}, {bytes_max}) stopped with room for entry {}",
                    next.index
                );
            }
        }
    }
}

async fn truncate_replaces_a_suffix_in_one_batch<S: RaftStorage, R: FnMut(S) -> S>(
    mut store: S,
    reopen: &mut R,
) {
    const CHECK: &str = "truncate_replaces_a_suffix_in_one_batch";
    write(CHECK, &mut store, append(entries(1, 1..11))).await;
    // A follower's conflicting suffix (Raft §5.3): replaced from 6 on by a
    // shorter run of a later term, with the new term's hard state.
    let hard_state = HardState {
        term: 3,
        vote: Some(2),
        commit: 5,
    };
    let batch = WriteBatch {
        truncate_from: Some(6),
        entries: entries(3, 6..8),
        hard_state: Some(hard_state),
        must_sync: true,
    };
    write(CHECK, &mut store, batch).await;
    let log: Vec<Entry> = entries(1, 1..6)
        .into_iter()
        .chain(entries(3, 6..8))
        .collect();
    let expected = InitialState {
        hard_state,
        last_log_id: LogId::new(3, 7),
        ..InitialState::default()
    };
    let mut store = check_restart(CHECK, store, reopen, &log, expected).await;
    // A truncation alone ends the log at the entry before it, with its term.
    let batch = WriteBatch {
        truncate_from: Some(7),
        ..append(Vec::new())
    };
    write(CHECK, &mut store, batch).await;
    let expected = InitialState {
        hard_state,
        last_log_id: LogId::new(3, 6),
        ..InitialState::default()
    };
    let mut store = check_restart(CHECK, store, reopen, &log[..6], expected).await;
    // Truncating the whole log leaves it empty, ending at the purge point.
    let batch = WriteBatch {
        truncate_from: Some(1),
        ..append(Vec::new())
    };
    write(CHECK, &mut store, batch).await;
    let expected = InitialState {
        hard_state,
        ..InitialState::default()
    };
    let mut store = check_restart(CHECK, store, reopen, &[], expected).await;
    write(CHECK, &mut store, append(entries(4, 1..3))).await;
    assert_eq!(
        read(CHECK, &mut store, 1..3).await,
        entries(4, 1..3),
        "{CHECK}: refilled"
    );
}

async fn truncate_past_the_end_changes_nothing<S: RaftStorage, R: FnMut(S) -> S>(
    mut store: S,
    reopen: &mut R,
) {
    const CHECK: &str = "truncate_past_the_end_changes_nothing";
    write(CHECK, &mut store, append(entries(1, 1..6))).await;
    for from in [6, 7, 100] {
        let batch = WriteBatch {
            truncate_from: Some(from),
            ..append(Vec::new())
        };
        write(CHECK, &mut store, batch).await;
    }
    // Truncating right after the last entry and appending there is an append.
    let batch = WriteBatch {
        truncate_from: Some(6),
        ..append(entries(2, 6..8))
    };
    write(CHECK, &mut store, batch).await;
    let log: Vec<Entry> = entries(1, 1..6)
        .into_iter()
        .chain(entries(2, 6..8))
        .collect();
    let expected = InitialState {
        last_log_id: LogId::new(2, 7),
        ..InitialState::default()
    };
    check_restart(CHECK, store, reopen, &log, expected).await;
}

async fn truncate_at_or_below_the_purge_point_is_refused<S: RaftStorage, R: FnMut(S) -> S>(
    mut store: S,
    _reopen: &mut R,
) {
    const CHECK: &str = "truncate_at_or_below_the_purge_point_is_refused";
    write(CHECK, &mut store, append(entries(1, 1..11))).await;
    store.purge(LogId::new(1, 5)).await.expect("purge");
    let batch = WriteBatch {
        truncate_from: Some(5),
        ..append(Vec::new())
    };
    let result = store.write(batch).await;
    assert!(
        result.is_err(),
        "{CHECK}: truncating purged entries must fail, not pass silently"
    );
}

async fn append_with_a_gap_is_refused<S: RaftStorage, R: FnMut(S) -> S>(
    mut store: S,
    _reopen: &mut R,
) {
    const CHECK: &str = "append_with_a_gap_is_refused";
    write(CHECK, &mut store, append(entries(1, 1..4))).await;
    let result = store.write(append(entries(1, 5..6))).await;
    assert!(
        result.is_err(),
        "{CHECK}: entry 5 after entry 3 must be refused"
    );
    let mut batch = append(entries(1, 4..7));
    batch.entries.remove(1);
    let result = store.write(batch).await;
    assert!(result.is_err(), "{CHECK}: entries 4, 6 must be refused");
}

async fn hard_state_round_trips<S: RaftStorage, R: FnMut(S) -> S>(mut store: S, reopen: &mut R) {
    const CHECK: &str = "hard_state_round_trips";
    let mut last = HardState::default();
    for (i, hard_state) in [
        HardState {
            term: 1,
            vote: None,
            commit: 0,
        },
        HardState {
            term: 2,
            vote: Some(3),
            commit: 0,
        },
        HardState {
            term: u64::MAX,
            vote: Some(u64::MAX),
            commit: u64::MAX,
        },
    ]
    .into_iter()
    .enumerate()
    {
        let batch = WriteBatch {
            hard_state: Some(hard_state),
            ..append(Vec::new())
        };
        write(CHECK, &mut store, batch).await;
        // A batch without a hard state leaves it as it is, and a commit-only
        // change may skip the fsync but must still be read back.
        write(
            CHECK,
            &mut store,
            append(entries(1, i as u64 + 1..i as u64 + 2)),
        )
        .await;
        last = hard_state;
    }
    let commit_only = HardState { commit: 2, ..last };
    let batch = WriteBatch {
        hard_state: Some(commit_only),
        must_sync: false,
        ..WriteBatch::default()
    };
    write(CHECK, &mut store, batch).await;
    // A clean restart (not a crash) keeps even the write that skipped fsync.
    let expected = InitialState {
        hard_state: commit_only,
        last_log_id: LogId::new(1, 3),
        ..InitialState::default()
    };
    check_restart(CHECK, store, reopen, &entries(1, 1..4), expected).await;
}

async fn purge_keeps_the_suffix_and_the_purge_point<S: RaftStorage, R: FnMut(S) -> S>(
    mut store: S,
    reopen: &mut R,
) {
    const CHECK: &str = "purge_keeps_the_suffix_and_the_purge_point";
    let log: Vec<Entry> = entries(1, 1..5)
        .into_iter()
        .chain(entries(2, 5..11))
        .collect();
    write(CHECK, &mut store, append(log.clone())).await;
    store.purge(LogId::new(1, 4)).await.expect("purge");
    let expected = InitialState {
        purged: LogId::new(1, 4),
        last_log_id: LogId::new(2, 10),
        ..InitialState::default()
    };
    let mut store = check_restart(CHECK, store, reopen, &log[4..], expected.clone()).await;
    // Appends go on after the last entry, whatever was purged.
    write(CHECK, &mut store, append(entries(2, 11..13))).await;
    // Purging up to the last entry leaves an empty log that still knows
    // where it ends (term and index).
    store.purge(LogId::new(2, 12)).await.expect("purge");
    let expected = InitialState {
        purged: LogId::new(2, 12),
        last_log_id: LogId::new(2, 12),
        ..expected
    };
    let mut store = check_restart(CHECK, store, reopen, &[], expected).await;
    write(CHECK, &mut store, append(entries(3, 13..14))).await;
    assert_eq!(
        read(CHECK, &mut store, 13..14).await,
        entries(3, 13..14),
        "{CHECK}: append after purge"
    );
}

async fn purge_past_the_end_empties_the_log<S: RaftStorage, R: FnMut(S) -> S>(
    mut store: S,
    reopen: &mut R,
) {
    const CHECK: &str = "purge_past_the_end_empties_the_log";
    // A snapshot from the leader covers more than this node's log.
    write(CHECK, &mut store, append(entries(1, 1..6))).await;
    store.purge(LogId::new(4, 20)).await.expect("purge");
    let expected = InitialState {
        purged: LogId::new(4, 20),
        last_log_id: LogId::new(4, 20),
        ..InitialState::default()
    };
    let mut store = check_restart(CHECK, store, reopen, &[], expected).await;
    write(CHECK, &mut store, append(entries(4, 21..23))).await;
    let expected = InitialState {
        purged: LogId::new(4, 20),
        last_log_id: LogId::new(4, 22),
        ..InitialState::default()
    };
    check_restart(CHECK, store, reopen, &entries(4, 21..23), expected).await;
}

async fn purge_at_or_below_the_purge_point_does_nothing<S: RaftStorage, R: FnMut(S) -> S>(
    mut store: S,
    reopen: &mut R,
) {
    const CHECK: &str = "purge_at_or_below_the_purge_point_does_nothing";
    write(CHECK, &mut store, append(entries(1, 1..11))).await;
    store.purge(LogId::new(1, 6)).await.expect("purge");
    for up_to in [LogId::new(1, 6), LogId::new(1, 3), LogId::default()] {
        store
            .purge(up_to)
            .await
            .expect("purge at or below the purge point");
    }
    let expected = InitialState {
        purged: LogId::new(1, 6),
        last_log_id: LogId::new(1, 10),
        ..InitialState::default()
    };
    check_restart(CHECK, store, reopen, &entries(1, 7..11), expected).await;
}

async fn snapshot_meta_round_trips<S: RaftStorage, R: FnMut(S) -> S>(mut store: S, reopen: &mut R) {
    const CHECK: &str = "snapshot_meta_round_trips";
    write(CHECK, &mut store, append(entries(1, 1..11))).await;
    let first = SnapshotMeta {
        last_log_id: LogId::new(1, 5),
        membership: membership(5),
    };
    store
        .save_snapshot_meta(first.clone())
        .await
        .expect("save snapshot meta");
    let expected = InitialState {
        last_log_id: LogId::new(1, 10),
        snapshot: Some(first),
        ..InitialState::default()
    };
    let mut store = check_restart(CHECK, store, reopen, &entries(1, 1..11), expected).await;
    // A newer snapshot replaces the older one, and the purge it allows
    // keeps both its metadata and the rest of the log.
    let second = SnapshotMeta {
        last_log_id: LogId::new(1, 8),
        membership: membership(8),
    };
    store
        .save_snapshot_meta(second.clone())
        .await
        .expect("save snapshot meta");
    store.purge(second.last_log_id).await.expect("purge");
    let expected = InitialState {
        purged: LogId::new(1, 8),
        last_log_id: LogId::new(1, 10),
        snapshot: Some(second),
        ..InitialState::default()
    };
    check_restart(CHECK, store, reopen, &entries(1, 9..11), expected).await;
}

/// The metadata of a snapshot being installed lives beside the latest
/// snapshot's, never in its place; a latest snapshot at or past it ends it,
/// an older one (the node's own compaction meanwhile) does not.
async fn installing_snapshot_meta_is_kept_apart<S: RaftStorage, R: FnMut(S) -> S>(
    mut store: S,
    reopen: &mut R,
) {
    const CHECK: &str = "installing_snapshot_meta_is_kept_apart";
    write(CHECK, &mut store, append(entries(1, 1..6))).await;
    let own = SnapshotMeta {
        last_log_id: LogId::new(1, 3),
        membership: membership(3),
    };
    store
        .save_snapshot_meta(own.clone())
        .await
        .expect("save snapshot meta");
    let received = SnapshotMeta {
        last_log_id: LogId::new(2, 20),
        membership: membership(20),
    };
    store
        .save_installing_snapshot_meta(Some(received.clone()))
        .await
        .expect("save installing snapshot meta");
    let expected = InitialState {
        last_log_id: LogId::new(1, 5),
        snapshot: Some(own.clone()),
        installing_snapshot: Some(received.clone()),
        ..InitialState::default()
    };
    let mut store = check_restart(CHECK, store, reopen, &entries(1, 1..6), expected).await;

    // An older latest snapshot leaves the install pending.
    let newer_own = SnapshotMeta {
        last_log_id: LogId::new(1, 4),
        membership: membership(4),
    };
    store
        .save_snapshot_meta(newer_own.clone())
        .await
        .expect("save snapshot meta");
    let expected = InitialState {
        last_log_id: LogId::new(1, 5),
        snapshot: Some(newer_own.clone()),
        installing_snapshot: Some(received.clone()),
        ..InitialState::default()
    };
    let mut store = check_restart(CHECK, store, reopen, &entries(1, 1..6), expected).await;

    // Forgotten on request: the install was abandoned.
    store
        .save_installing_snapshot_meta(None)
        .await
        .expect("forget installing snapshot meta");
    let expected = InitialState {
        last_log_id: LogId::new(1, 5),
        snapshot: Some(newer_own),
        ..InitialState::default()
    };
    let mut store = check_restart(CHECK, store, reopen, &entries(1, 1..6), expected).await;

    // Begun again, then finished: the received snapshot becomes the latest
    // and the installing record goes in the same write.
    store
        .save_installing_snapshot_meta(Some(received.clone()))
        .await
        .expect("save installing snapshot meta");
    store
        .save_snapshot_meta(received.clone())
        .await
        .expect("save snapshot meta");
    let expected = InitialState {
        last_log_id: LogId::new(1, 5),
        snapshot: Some(received),
        ..InitialState::default()
    };
    check_restart(CHECK, store, reopen, &entries(1, 1..6), expected).await;
}

async fn large_batch_reads_back_in_pages<S: RaftStorage, R: FnMut(S) -> S>(
    mut store: S,
    reopen: &mut R,
) {
    const CHECK: &str = "large_batch_reads_back_in_pages";
    // One batch of 2,000 entries of 1 KiB: one write, whatever its size.
    let log: Vec<Entry> = (1..=2000)
        .map(|index| Entry {
            term: 1 + index / 500,
            index,
            payload: EntryPayload::Command(CommandBytes::from(vec![(index % 251) as u8; 1024])),
        })
        .collect();
    write(CHECK, &mut store, append(log.clone())).await;
    let mut store = reopen(store);
    // Read it back the way a leader does: pages of at most 64 KiB.
    let mut read_back = Vec::new();
    while read_back.len() < log.len() {
        let next = read_back.len() as u64 + 1;
        let page = match store.entries(next..2001, 64 << 10).await {
            Ok(page) => page,
            Err(e) => panic!("{CHECK}: entries({next}..2001) failed: {e}"),
        };
        assert!(!page.is_empty(), "{CHECK}: an empty page at {next}");
        assert!(
            page.len() < 70,
            "{CHECK}: a page of {} entries is over 64 KiB",
            page.len()
        );
        read_back.extend(page);
    }
    assert_eq!(read_back, log, "{CHECK}: the paged read");
}
