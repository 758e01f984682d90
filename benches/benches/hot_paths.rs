//! Criterion micro-benchmarks of Rafter's hot paths:
//!
//! - `engine/follower_append/N`: a follower's engine steps one append of N
//!   entries, its write completes, and it answers (no IO: `SimCore`).
//! - `engine/replicate/N`: a leader proposes N commands and three engines
//!   exchange messages, each write completing at once, until the leader has
//!   committed them: the engine's whole share of a commit.
//! - `codec/{encode,decode}_append/N`: `rafter::codec` on an append of N
//!   entries.
//! - `log_read/{mem,redb}`: 64 consecutive entries from `MemStorage` and
//!   from `RedbStorage` (page cache warm).
//!
//! Run: `cargo bench -p rafter-bench --bench hot_paths` (a filter after
//! `--` picks benchmarks, e.g. `-- engine/`). Entries carry 256-byte
//! commands, like the `storage` mode.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use futures::executor::block_on;
use rafter::testing::{MemStorage, SimActions, SimCore, SimDurable};
use rafter::{
    codec, CommandBytes, Config, Entry, EntryPayload, LogId, Membership, Message, MessageBody,
    NodeId, RaftStorage, Role, WriteBatch,
};
use rafter_redb::RedbStorage;

/// Command bytes of every entry.
const PAYLOAD_BYTES: usize = 256;
/// Entries per append or proposal batch measured.
const BATCHES: [usize; 3] = [1, 64, 1024];
/// Entries read per `log_read` call (the default append window of 1 MiB
/// holds about 4,000 such entries; 64 is a typical catch-up read).
const READ_ENTRIES: u64 = 64;
/// Entries in the stores that `log_read` reads from.
const STORE_ENTRIES: u64 = 10_000;
/// Most rounds of message exchange one `replicate` may take before the
/// harness is considered broken.
const ROUNDS_MAX: usize = 1_000;

fn payload() -> CommandBytes {
    CommandBytes::from(vec![0x5a; PAYLOAD_BYTES])
}

fn entry(term: u64, index: u64, payload: &CommandBytes) -> Entry {
    Entry {
        term,
        index,
        payload: EntryPayload::Command(payload.clone()),
    }
}

/// A small cache so the engines' memory stays bounded over millions of
/// iterations (they drop applied entries from the front).
fn config() -> Config {
    Config::default().with_log_cache_bytes_max(8 << 20)
}

/// One node's durable log, as a simulated disk: what the writes left,
/// bounded to its most recent entries (the engine's cache is smaller, so
/// loads never reach behind it).
struct Disk {
    entries: VecDeque<Entry>,
    bytes: u64,
}

impl Disk {
    /// At least the engine's cache (8 MiB), twice over.
    const BYTES_MAX: u64 = 16 << 20;

    fn new(log: &[Entry]) -> Self {
        let mut disk = Disk {
            entries: VecDeque::new(),
            bytes: 0,
        };
        disk.append(log.iter().cloned());
        disk
    }

    fn append(&mut self, entries: impl IntoIterator<Item = Entry>) {
        for entry in entries {
            self.bytes += entry.size_bytes();
            self.entries.push_back(entry);
        }
        while self.bytes > Self::BYTES_MAX {
            let dropped = self
                .entries
                .pop_front()
                .expect("over budget means non-empty");
            self.bytes -= dropped.size_bytes();
        }
    }

    fn write(&mut self, batch: WriteBatch) {
        if let Some(from) = batch.truncate_from {
            while self.entries.back().is_some_and(|e| e.index >= from) {
                let dropped = self.entries.pop_back().expect("back exists");
                self.bytes -= dropped.size_bytes();
            }
        }
        self.append(batch.entries);
    }

    fn load(&self, range: std::ops::Range<u64>) -> Vec<Entry> {
        let first = self.entries.front().map_or(u64::MAX, |e| e.index);
        assert!(
            range.start >= first,
            "the harness dropped entry {} (kept from {first})",
            range.start
        );
        self.entries
            .iter()
            .filter(|e| range.contains(&e.index))
            .cloned()
            .collect()
    }
}

/// Three engines wired to each other: every write completes at once and
/// every message is delivered in the next round.
struct Trio {
    cores: Vec<SimCore>,
    disks: Vec<Disk>,
    in_flight: Vec<Message>,
}

impl Trio {
    /// Three fresh nodes, with node 1 elected and its first entry
    /// committed everywhere.
    fn elected() -> Trio {
        let members = Membership::new_voters((1..=3).map(|id| (id, format!("node-{id}"))));
        let config = config();
        let cores: Vec<SimCore> = (1..=3)
            .map(|id| {
                SimCore::new(id, &config, SimDurable::default(), &members, None)
                    .expect("a fresh node starts")
            })
            .collect();
        let bootstrap = Entry {
            term: 1,
            index: 1,
            payload: EntryPayload::Membership(Box::new(members.clone())),
        };
        let disks = (0..3)
            .map(|_| Disk::new(std::slice::from_ref(&bootstrap)))
            .collect();
        let mut trio = Trio {
            cores,
            disks,
            in_flight: Vec::new(),
        };
        // Only node 1's clock runs, so it is the one that campaigns.
        for _ in 0..10_000 {
            if trio.cores[0].role() == Role::Leader {
                break;
            }
            trio.cores[0].tick();
            trio.settle();
        }
        assert_eq!(trio.cores[0].role(), Role::Leader, "node 1 is elected");
        trio.settle();
        let last = trio.cores[0].last_log_id().index;
        assert_eq!(trio.cores[0].commit_index(), last, "its no-op is committed");
        trio
    }

    fn core(&mut self, id: NodeId) -> &mut SimCore {
        &mut self.cores[(id - 1) as usize]
    }

    /// Runs one node's actions: the write completes at once, messages go
    /// in flight, loads are served from its disk.
    fn run_actions(&mut self, id: NodeId) -> bool {
        let mut busy = false;
        loop {
            let actions: SimActions = self.core(id).take_actions();
            let mut more = false;
            if let Some((write_id, batch)) = actions.write {
                self.disks[(id - 1) as usize].write(batch);
                self.core(id).on_write_done(write_id);
                more = true;
            }
            if let Some(range) = actions.load {
                let entries = self.disks[(id - 1) as usize].load(range);
                self.core(id).on_loaded(entries);
                more = true;
            }
            // Applied entries are dropped: the state machine is not measured.
            more |= !actions.apply.is_empty() || !actions.reads.is_empty();
            more |= !actions.messages.is_empty() || !actions.messages_after_write.is_empty();
            self.in_flight.extend(actions.messages);
            // The write of this turn is already durable.
            self.in_flight
                .extend(actions.messages_after_write.into_iter().map(|(_, m)| m));
            if !more {
                return busy;
            }
            busy = true;
        }
    }

    /// Delivers messages and runs actions until nothing moves.
    fn settle(&mut self) {
        for _ in 0..ROUNDS_MAX {
            let mut busy = false;
            for id in 1..=3 {
                busy |= self.run_actions(id);
            }
            let messages = std::mem::take(&mut self.in_flight);
            busy |= !messages.is_empty();
            for message in messages {
                let to = message.to;
                self.core(to).step(message);
            }
            if !busy {
                return;
            }
        }
        panic!("the trio did not settle in {ROUNDS_MAX} rounds");
    }

    /// Node 1 proposes `commands`; returns once it has committed them.
    fn replicate(&mut self, commands: Vec<CommandBytes>) {
        let count = commands.len() as u64;
        let first = self.cores[0]
            .propose(commands)
            .expect("the leader accepts proposals");
        self.settle();
        let last = first.index + count - 1;
        assert!(
            self.cores[0].commit_index() >= last,
            "committed {} of ..={last}",
            self.cores[0].commit_index()
        );
    }
}

fn engine(c: &mut Criterion) {
    let payload = payload();
    let mut group = c.benchmark_group("engine");
    for &n in &BATCHES {
        group.throughput(Throughput::Elements(n as u64));

        // A follower of an elected trio; the bench plays the leader.
        let mut trio = Trio::elected();
        let leader_term = trio.cores[0].term();
        let mut follower = trio.cores.remove(1);
        let mut next = follower.last_log_id().index + 1;
        group.bench_with_input(BenchmarkId::new("follower_append", n), &n, |b, &n| {
            b.iter_batched(
                || {
                    let prev = LogId::new(leader_term, next - 1);
                    let entries: Vec<Entry> = (next..next + n as u64)
                        .map(|index| entry(leader_term, index, &payload))
                        .collect();
                    next += n as u64;
                    // Everything before this append is committed, so the
                    // follower applies it and its cache stays bounded.
                    let body = MessageBody::Append {
                        prev_log_id: prev,
                        entries,
                        commit: prev.index,
                    };
                    Message::new(1, 2, leader_term, body)
                },
                |append| {
                    follower.step(append);
                    let actions = follower.take_actions();
                    let (write_id, _batch) = actions.write.as_ref().expect("the append is written");
                    // The acknowledgement waits for the write (Raft §5.3).
                    assert_eq!(actions.messages_after_write.len(), 1, "one ack");
                    follower.on_write_done(*write_id);
                    black_box(follower.take_actions());
                    black_box(actions);
                },
                BatchSize::SmallInput,
            );
        });

        let mut trio = Trio::elected();
        group.bench_with_input(BenchmarkId::new("replicate", n), &n, |b, &n| {
            b.iter_batched(
                || vec![payload.clone(); n],
                |commands| trio.replicate(commands),
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn append_message(n: usize, payload: &CommandBytes) -> Message {
    Message::new(
        1,
        2,
        7,
        MessageBody::Append {
            prev_log_id: LogId::new(7, 1000),
            entries: (1001..1001 + n as u64)
                .map(|index| entry(7, index, payload))
                .collect(),
            commit: 1000,
        },
    )
}

fn codec_benches(c: &mut Criterion) {
    let payload = payload();
    let limit = Config::default().message_bytes_max;
    let mut group = c.benchmark_group("codec");
    for &n in &BATCHES {
        let message = append_message(n, &payload);
        let bytes = codec::encode_message(&message);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::new("encode_append", n), &message, |b, m| {
            b.iter(|| codec::encode_message(black_box(m)));
        });
        group.bench_with_input(BenchmarkId::new("decode_append", n), &bytes, |b, bytes| {
            b.iter(|| codec::decode_message(black_box(bytes), limit).expect("valid encoding"));
        });
        assert_eq!(
            codec::decode_message(&bytes, limit).expect("valid encoding"),
            message
        );
    }
    group.finish();
}

/// Fills `store` with `STORE_ENTRIES` entries, 1,000 per write.
fn fill<S: RaftStorage>(store: &mut S, payload: &CommandBytes) {
    for start in (1..=STORE_ENTRIES).step_by(1000) {
        let end = (start + 1000).min(STORE_ENTRIES + 1);
        let batch = WriteBatch {
            entries: (start..end).map(|i| entry(1, i, payload)).collect(),
            // The reads are what is measured, not the fsyncs.
            must_sync: false,
            ..WriteBatch::default()
        };
        block_on(store.write(batch)).expect("the store accepts the entries");
    }
}

/// Reads `READ_ENTRIES` entries at a rolling position.
fn read_rolling<S: RaftStorage>(store: &mut S, position: &mut u64) -> Vec<Entry> {
    let start = 1 + *position % (STORE_ENTRIES - READ_ENTRIES);
    *position += READ_ENTRIES;
    let entries =
        block_on(store.entries(start..start + READ_ENTRIES, u64::MAX)).expect("entries exist");
    assert_eq!(entries.len() as u64, READ_ENTRIES);
    entries
}

fn log_read(c: &mut Criterion) {
    let payload = payload();
    let mut group = c.benchmark_group("log_read");
    group.throughput(Throughput::Elements(READ_ENTRIES));

    let mut mem = MemStorage::new();
    fill(&mut mem, &payload);
    let mut position = 0;
    group.bench_function("mem", |b| {
        b.iter(|| read_rolling(&mut mem, &mut position));
    });

    let dir = tempfile::tempdir().expect("a temp dir");
    let mut redb = RedbStorage::open(dir.path().join("store")).expect("the store opens");
    fill(&mut redb, &payload);
    let mut position = 0;
    group.bench_function("redb", |b| {
        b.iter(|| read_rolling(&mut redb, &mut position));
    });
    group.finish();
}

fn criterion() -> Criterion {
    // Short runs: these are for comparing before and after a change on the
    // same machine, not for publishing.
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = hot_paths;
    config = criterion();
    targets = engine, codec_benches, log_read
}
criterion_main!(hot_paths);
