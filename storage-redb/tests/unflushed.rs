//! The journal as the write-ahead log: writes live in the journal and in
//! memory until a checkpoint puts them into redb, and every read, restart
//! and crash must see the same log whichever side an entry is on. A seeded
//! random walk of appends, truncations (into the unflushed part and into
//! what redb holds), purges, reads with byte budgets, reopens and crash
//! images, against a plain model of the log. A small journal makes
//! checkpoints come often, at different points of the walk. A purge rides
//! on the next checkpoint, so a crash image may hold an earlier purge
//! point, with the entries purged since still whole.
//!
//! `RAFTER_REDB_UNFLUSHED_SEED=<seed>` replays one walk.

use std::path::Path;
use std::time::Duration;

use rafter::CommandBytes;
use rafter::{Entry, EntryPayload, HardState, LogId, RaftStorage, WriteBatch};
use rafter_redb::{RedbOptions, RedbStorage};

/// splitmix64: no dependency, no global state.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn options(journal_bytes: u64) -> RedbOptions {
    let mut options = RedbOptions::default();
    options.journal_bytes = journal_bytes;
    options.journal_checkpoint_interval = Duration::from_secs(3600);
    options.open_check_file = false;
    options
}

/// The log as a reader must see it.
#[derive(Debug, Default, Clone)]
struct Model {
    purged: LogId,
    /// Entries `purged.index + 1 ..`.
    entries: Vec<Entry>,
    hard_state: HardState,
    /// Every purge point before `purged`, and the entries purges removed
    /// (never rewritten: a cut below the purge point is refused).
    earlier_purges: Vec<LogId>,
    removed: std::collections::BTreeMap<u64, Entry>,
}

impl Model {
    fn last(&self) -> LogId {
        self.entries.last().map_or(self.purged, Entry::log_id)
    }

    /// The log as a crash that lost the purges after `point` leaves it.
    fn before_purges_after(&self, point: LogId) -> Model {
        let mut entries: Vec<Entry> = self
            .removed
            .range(point.index + 1..=self.purged.index)
            .map(|(_, e)| e.clone())
            .collect();
        entries.extend(self.entries.iter().cloned());
        Model {
            purged: point,
            entries,
            ..self.clone()
        }
    }
}

fn entry(term: u64, index: u64, rng: &mut Rng) -> Entry {
    let len = rng.below(200) as usize;
    let byte = rng.next() as u8;
    Entry {
        term,
        index,
        payload: EntryPayload::Command(CommandBytes::from(vec![byte; len])),
    }
}

/// Checks the whole log, the bounds and the hard state.
async fn check(store: &mut RedbStorage, model: &Model, rng: &mut Rng, when: &str) {
    let state = store.initial_state().await.expect("initial state");
    assert_eq!(state.purged, model.purged, "{when}: purge point");
    assert_eq!(state.last_log_id, model.last(), "{when}: last log id");
    assert_eq!(state.hard_state, model.hard_state, "{when}: hard state");
    let first = model.purged.index + 1;
    let end = model.last().index + 1;
    if first < end {
        let all = store.entries(first..end, u64::MAX).await.expect("read all");
        assert_eq!(all, model.entries, "{when}: the whole log");
        // A random range with a random budget: a prefix of it, at least
        // one entry, within the budget unless one entry is over it.
        let start = first + rng.below(end - first);
        let stop = start + 1 + rng.below(end - start);
        let budget = rng.below(3000);
        let read = store.entries(start..stop, budget).await.expect("read");
        let expected = &model.entries[(start - first) as usize..(stop - first) as usize];
        assert!(!read.is_empty() && read.len() <= expected.len(), "{when}");
        assert_eq!(read, expected[..read.len()], "{when}: {start}..{stop}");
        let bytes: u64 = read.iter().map(Entry::size_bytes).sum();
        assert!(read.len() == 1 || bytes <= budget, "{when}: over budget");
        if read.len() < expected.len() {
            assert!(
                bytes + expected[read.len()].size_bytes() > budget,
                "{when}: stopped under budget"
            );
        }
    }
}

fn crash_image(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for name in ["log.redb", "log.journal"] {
        if from.join(name).exists() {
            std::fs::copy(from.join(name), to.join(name)).expect("copy");
        }
    }
}

async fn walk(seed: u64, journal_bytes: u64) {
    let mut rng = Rng(seed);
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("store");
    let mut store = RedbStorage::open_with(&dir, options(journal_bytes)).expect("open");
    let mut model = Model::default();
    let mut term = 1;
    let mut images = 0;
    for step in 0..300 {
        let when = format!("seed {seed}, step {step}");
        match rng.below(20) {
            // Append, sometimes cutting the log first.
            0..=11 => {
                let last = model.last().index;
                let cuts = last > model.purged.index && rng.below(4) == 0;
                let next = if cuts {
                    model.purged.index + 1 + rng.below(last - model.purged.index)
                } else {
                    last + 1
                };
                if cuts || rng.below(10) == 0 {
                    term += 1;
                }
                let count = rng.below(12);
                let entries: Vec<Entry> = (0..count)
                    .map(|i| entry(term, next + i, &mut rng))
                    .collect();
                let hard_state = (rng.below(2) == 0).then(|| HardState {
                    term,
                    vote: Some(rng.below(3) + 1),
                    commit: model.purged.index,
                });
                let batch = WriteBatch {
                    truncate_from: cuts.then_some(next),
                    entries: entries.clone(),
                    hard_state,
                    must_sync: true,
                };
                if batch.is_empty() {
                    continue;
                }
                store.write(batch).await.expect(&when);
                model
                    .entries
                    .truncate((next - model.purged.index - 1) as usize);
                model.entries.extend(entries);
                if let Some(hard_state) = hard_state {
                    model.hard_state = hard_state;
                }
            }
            // Purge, sometimes past the end of the log.
            12..=13 => {
                let last = model.last().index;
                if last == model.purged.index {
                    continue;
                }
                let index = model.purged.index + 1 + rng.below(last - model.purged.index + 2);
                let up_to = if index <= last {
                    model.entries[(index - model.purged.index - 1) as usize].log_id()
                } else {
                    LogId::new(term, index)
                };
                store.purge(up_to).await.expect(&when);
                let removed =
                    ((up_to.index - model.purged.index) as usize).min(model.entries.len());
                for entry in model.entries.drain(..removed) {
                    model.removed.insert(entry.index, entry);
                }
                model.earlier_purges.push(model.purged);
                model.purged = up_to;
            }
            14..=16 => check(&mut store, &model, &mut rng, &when).await,
            // A restart: replay, then a checkpoint.
            17 => {
                drop(store);
                store = RedbStorage::open_with(&dir, options(journal_bytes)).expect(&when);
                check(&mut store, &model, &mut rng, &format!("{when}, reopened")).await;
            }
            // A crash now: every write was synced, so all of it is there;
            // the purges since the last checkpoint may not be.
            _ => {
                images += 1;
                let crashed = root.path().join(format!("crashed-{images}"));
                crash_image(&dir, &crashed);
                let mut reopened =
                    RedbStorage::open_with(&crashed, options(journal_bytes)).expect(&when);
                let found = reopened.initial_state().await.expect(&when).purged;
                let expected = if found == model.purged {
                    model.clone()
                } else {
                    // Past the end of the log a purge is made durable at
                    // once, so one lost is always inside the log.
                    assert!(
                        model.earlier_purges.contains(&found) && found.index < model.purged.index,
                        "{when}, crashed: purge point {found:?}, never one of this walk's \
                         before {:?}",
                        model.purged
                    );
                    model.before_purges_after(found)
                };
                check(
                    &mut reopened,
                    &expected,
                    &mut rng,
                    &format!("{when}, crashed"),
                )
                .await;
            }
        }
    }
    check(&mut store, &model, &mut rng, "end").await;
    drop(store);
    let mut store = RedbStorage::open_with(&dir, options(journal_bytes)).expect("reopen");
    check(&mut store, &model, &mut rng, "end, reopened").await;
}

fn seeds() -> Vec<u64> {
    match std::env::var("RAFTER_REDB_UNFLUSHED_SEED") {
        Ok(seed) => vec![seed.parse().expect("a u64 seed")],
        Err(_) => (1..=6).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_restart_and_crash_sees_the_written_log() {
    for seed in seeds() {
        // 8 KiB: a checkpoint every few writes; 1 MiB: rarely.
        walk(seed, 8 << 10).await;
        walk(seed, 1 << 20).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_journal_the_same_walk_holds() {
    for seed in seeds().into_iter().take(3) {
        walk(seed, 0).await;
    }
}
