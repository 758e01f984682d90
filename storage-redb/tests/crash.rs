//! Crash safety with real processes: a child appends batches and prints each
//! acknowledged index; the parent kills it with SIGKILL at random moments,
//! reopens the store and checks that every acknowledged entry is there and
//! intact, and that the log is a clean prefix (no hole, no torn entry, the
//! hard state written with each batch matches its last entry). A purge need
//! not be durable when it returns (it rides on the next checkpoint), so the
//! purge point a reopen finds is only checked to be one the child could
//! have made, and never to go back. Another
//! child creates state machine stores one after the other, and a kill while
//! it creates one must leave a directory that opens.
//!
//! The child is this test binary itself, re-run with `CHILD_DIR_ENV` set so
//! that only `crash_child` (or `lock_child`, `state_store_child`) does
//! anything. A failure prints
//! the seed; `RAFTER_REDB_CRASH_SEED=<seed>` replays the same kill times (the
//! moments the child reaches still vary with the machine's speed).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rafter::CommandBytes;
use rafter::{Entry, EntryPayload, HardState, LogId, RaftStorage, StorageError, WriteBatch};
use rafter_redb::{RedbStateMachineStore, RedbStorage};

const CHILD_DIR_ENV: &str = "RAFTER_REDB_CHILD_DIR";
const KILLS: u32 = 80;
/// How long an odd kill waits for the child's first new acknowledgement.
const PROGRESS_PATIENCE: Duration = Duration::from_secs(60);
/// The child purges down to this many entries, bounding the file.
const LOG_ENTRIES_KEPT: u64 = 2000;

/// The term of entry `index`: it grows, as a real log's does.
fn term_of(index: u64) -> u64 {
    1 + index / 1000
}

/// The payload of entry `index`: its length and every byte depend on it.
fn payload_of(index: u64) -> CommandBytes {
    let len = 8 + (index % 300) as usize;
    let bytes = index.to_le_bytes();
    CommandBytes::from(
        (0..len)
            .map(|i| bytes[i % 8] ^ (i as u8))
            .collect::<Vec<_>>(),
    )
}

fn entry_of(index: u64) -> Entry {
    Entry {
        term: term_of(index),
        index,
        payload: EntryPayload::Command(payload_of(index)),
    }
}

/// A small deterministic generator (splitmix64): no dependency, no global state.
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

/// The child: appends forever (until killed), acknowledging each batch
/// only after `write` returned.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return; // Run as a normal test: nothing to do.
    };
    if std::env::var("RAFTER_REDB_CHILD_ROLE").as_deref() != Ok("crash") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut store = RedbStorage::open(&dir).expect("child opens the store");
        let state = store.initial_state().await.expect("initial state");
        let mut last = state.last_log_id.index;
        let mut purged = state.purged.index;
        let mut rng = Rng(std::process::id() as u64);
        let mut stdout = std::io::stdout();
        loop {
            let count = 1 + rng.below(64);
            let entries: Vec<Entry> = (last + 1..=last + count).map(entry_of).collect();
            let batch = WriteBatch {
                entries,
                hard_state: Some(HardState {
                    term: term_of(last + count),
                    vote: Some(1),
                    commit: last + count,
                }),
                must_sync: true,
                ..WriteBatch::default()
            };
            store.write(batch).await.expect("child write");
            last += count;
            writeln!(stdout, "ACK {last}").expect("stdout");
            stdout.flush().expect("stdout");
            if last - purged > 2 * LOG_ENTRIES_KEPT {
                let up_to = last - LOG_ENTRIES_KEPT;
                store
                    .purge(LogId::new(term_of(up_to), up_to))
                    .await
                    .expect("child purge");
                purged = up_to;
                writeln!(stdout, "PURGED {purged}").expect("stdout");
                stdout.flush().expect("stdout");
            }
        }
    });
}

/// The child of the lock test: tries to open a store the parent holds.
#[test]
fn lock_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    if std::env::var("RAFTER_REDB_CHILD_ROLE").as_deref() != Ok("lock") {
        return;
    }
    match RedbStorage::open(&dir) {
        Err(StorageError::Locked(_)) => println!("RESULT locked"),
        Err(e) => println!("RESULT error {e}"),
        Ok(_) => println!("RESULT opened"),
    }
}

/// The child of the state store test: creates a new store in `<dir>/<i>`
/// for i = 0, 1, 2, ... until killed, printing each one created.
#[test]
fn state_store_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    if std::env::var("RAFTER_REDB_CHILD_ROLE").as_deref() != Ok("state") {
        return;
    }
    let mut stdout = std::io::stdout();
    for i in 0.. {
        let store = RedbStateMachineStore::open(Path::new(&dir).join(i.to_string()))
            .expect("child creates a store");
        drop(store);
        writeln!(stdout, "CREATED {i}").expect("stdout");
        stdout.flush().expect("stdout");
    }
}

fn child(dir: &Path, role: &str, test: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("test binary path"));
    command
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir)
        .env("RAFTER_REDB_CHILD_ROLE", role)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Drains a child's stderr on a thread of its own (so a chatty child never
/// blocks on a full pipe) and returns it when the child is gone.
fn collect_stderr(process: &mut std::process::Child) -> std::thread::JoinHandle<String> {
    let mut stderr = process.stderr.take().expect("piped stderr");
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    })
}

/// Reopens the store and checks it against what the child acknowledged and
/// the purge point the last reopen found; returns the one this reopen finds.
async fn verify(dir: &Path, acked: u64, purged_before: u64, seed: u64, kill: u32) -> u64 {
    let context = format!("seed {seed}, after kill {kill}");
    let mut store =
        RedbStorage::open(dir).unwrap_or_else(|e| panic!("{context}: reopen failed: {e}"));
    let state = store.initial_state().await.expect("initial state");
    let last = state.last_log_id.index;
    assert!(
        last >= acked,
        "{context}: acknowledged {acked}, but the log ends at {last}"
    );
    assert!(
        state.purged.index >= purged_before,
        "{context}: the purge point went back from {purged_before} to {:?}",
        state.purged
    );
    // The child purges only to LOG_ENTRIES_KEPT behind a durable write.
    assert!(
        state.purged.index == 0 || state.purged.index + LOG_ENTRIES_KEPT <= last,
        "{context}: purge point {:?} with the log ending at {last}",
        state.purged
    );
    // Entries and hard state go in one transaction: all of a batch or none.
    assert_eq!(
        state.hard_state.commit, last,
        "{context}: a batch's hard state and entries were split"
    );
    if last > state.purged.index {
        assert_eq!(
            state.last_log_id,
            entry_of(last).log_id(),
            "{context}: last log id"
        );
    }
    let mut next = state.purged.index + 1;
    while next <= last {
        let page = store
            .entries(next..last + 1, 1 << 20)
            .await
            .unwrap_or_else(|e| panic!("{context}: reading from {next} failed: {e}"));
        for entry in page {
            assert_eq!(
                entry,
                entry_of(next),
                "{context}: entry {next} is not intact"
            );
            next += 1;
        }
    }
    state.purged.index
}

#[tokio::test]
async fn sigkill_at_random_moments_loses_no_acknowledged_entry() {
    let seed = std::env::var("RAFTER_REDB_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("crash test seed {seed} (RAFTER_REDB_CRASH_SEED={seed} to replay)");
    let mut rng = Rng(seed);
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("store");
    let started = Instant::now();
    let mut acked_max = 0;
    let mut purge_acked_max = 0;
    let mut purged_found = 0;
    let mut kills_after_progress = 0;
    for kill in 0..KILLS {
        let mut process = child(&dir, "crash", "crash_child")
            .spawn()
            .expect("spawn child");
        let stdout = process.stdout.take().expect("piped stdout");
        let stderr = collect_stderr(&mut process);
        let acked = Arc::new(AtomicU64::new(acked_max));
        let purge_acked = Arc::new(AtomicU64::new(purge_acked_max));
        let (acked_in, purge_in) = (Arc::clone(&acked), Arc::clone(&purge_acked));
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("ACK ") {
                    acked_in.fetch_max(n.parse().expect("ack index"), Ordering::SeqCst);
                } else if let Some(n) = line.strip_prefix("PURGED ") {
                    purge_in.fetch_max(n.parse().expect("purge index"), Ordering::SeqCst);
                }
            }
        });
        // Even kills land at a blind moment: some while the child starts or
        // opens the store, most in the middle of its appends. Odd kills
        // first wait for this child to acknowledge something new, so at
        // least half the kills interrupt a store that made progress however
        // slow the machine (or its fsync) is at the moment.
        if kill % 2 == 1 {
            let patience = Instant::now() + PROGRESS_PATIENCE;
            while acked.load(Ordering::SeqCst) <= acked_max {
                // A child that died (it failed to open the store, say)
                // will never make progress: say why instead of waiting.
                if let Some(status) = process.try_wait().expect("poll the child") {
                    let stderr = stderr.join().expect("stderr thread");
                    panic!("kill {kill}: the child exited by itself ({status}, seed {seed}):\n{stderr}");
                }
                assert!(
                    Instant::now() < patience,
                    "kill {kill}: the child acknowledged nothing in {PROGRESS_PATIENCE:?} (seed {seed})"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(rng.below(30)));
        } else {
            std::thread::sleep(Duration::from_millis(10 + rng.below(150)));
        }
        process.kill().expect("SIGKILL the child");
        let status = process.wait().expect("reap the child");
        reader.join().expect("reader thread");
        let stderr = stderr.join().expect("stderr thread");
        assert!(
            status.signal().is_some(),
            "kill {kill}: the child exited by itself ({status}, seed {seed}):\n{stderr}"
        );
        let acked_now = acked.load(Ordering::SeqCst);
        if acked_now > acked_max {
            kills_after_progress += 1;
        }
        acked_max = acked_now;
        purge_acked_max = purge_acked.load(Ordering::SeqCst);
        purged_found = verify(&dir, acked_max, purged_found, seed, kill).await;
    }
    println!(
        "{KILLS} kills ({kills_after_progress} after progress), {acked_max} entries acknowledged, \
         purged to {purge_acked_max} (found {purged_found} on the last reopen), in {:?}",
        started.elapsed()
    );
    assert!(
        kills_after_progress >= KILLS / 2,
        "the children made too little progress to test anything"
    );
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "the crash test got too slow"
    );
}

#[tokio::test]
async fn a_second_process_gets_locked_and_a_second_open_too() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("store");
    let held = RedbStorage::open(&dir).expect("open");
    assert!(
        matches!(RedbStorage::open(&dir), Err(StorageError::Locked(_))),
        "same process"
    );
    let output = child(&dir, "lock", "lock_child")
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("RESULT locked"), "child said: {stdout}");
    drop(held);
    let output = child(&dir, "lock", "lock_child")
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("RESULT opened"),
        "after release the child said: {stdout}"
    );
}

#[test]
fn sigkill_while_creating_a_state_store_leaves_a_directory_that_opens() {
    const STATE_KILLS: u32 = 30;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    println!("state store kill seed {seed}");
    let mut rng = Rng(seed);
    let root = tempfile::tempdir().expect("temp dir");
    let mut interrupted = 0;
    for kill in 0..STATE_KILLS {
        let dir = root.path().join(format!("run-{kill}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut process = child(&dir, "state", "state_store_child")
            .spawn()
            .expect("spawn child");
        let stdout = process.stdout.take().expect("piped stdout");
        let stderr = collect_stderr(&mut process);
        let reader = std::thread::spawn(move || {
            let mut created = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(i) = line.strip_prefix("CREATED ") {
                    created = Some(i.parse::<u64>().expect("store number"));
                }
            }
            created
        });
        std::thread::sleep(Duration::from_millis(20 + rng.below(100)));
        process.kill().expect("SIGKILL the child");
        let status = process.wait().expect("reap the child");
        let created = reader.join().expect("reader thread");
        let stderr = stderr.join().expect("stderr thread");
        assert!(
            status.signal().is_some(),
            "kill {kill}: the child exited by itself ({status}):\n{stderr}"
        );
        // The store being created when the kill landed, and the last one
        // created before it: both must open as a new, empty store.
        let next = created.map_or(0, |i| i + 1);
        for i in created.into_iter().chain([next]) {
            let store_dir = dir.join(i.to_string());
            if !store_dir.exists() {
                continue; // The kill landed before the child got this far.
            }
            if i == next {
                interrupted += 1;
            }
            let store = RedbStateMachineStore::open(&store_dir).unwrap_or_else(|e| {
                panic!("seed {seed}, kill {kill}: store {i} does not open: {e}")
            });
            assert_eq!(store.applied(), Ok(LogId::default()), "store {i}");
            assert!(
                !store_dir.join("state.redb.new").exists(),
                "store {i}: the unfinished file was left behind"
            );
        }
    }
    println!("{STATE_KILLS} kills, {interrupted} interrupted a creation");
    assert!(
        interrupted >= STATE_KILLS / 2,
        "too few kills interrupted a creation to test anything"
    );
}
