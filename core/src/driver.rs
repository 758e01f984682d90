//! The driver: one task per node that does all of the engine's IO.
//!
//! Each turn it waits for any [`Input`], drains whatever else is ready
//! (bounded: at most `inbox_turn_max` messages and `proposal_batch_max`
//! proposals, so one busy source cannot starve the others), steps the
//! engine, and carries out the [`Actions`] it returns: the write goes to the
//! storage task, messages go to the network at once (or when the write they
//! wait for completes), committed entries go to the apply task.

use std::collections::{BTreeMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::apply::{ApplyEvent, ApplyJob, Responder, Waiter};
use crate::command_bytes::CommandBytes;
use crate::config::{Config, MESSAGE_OVERHEAD_BYTES};
use crate::engine::config_change::MembershipChange;
use crate::engine::{Actions, Engine, ProgressState};
use crate::error::{
    CompactionError, Fatal, MembershipError, ProposeError, ReadError, TransferError,
};
use crate::message::Message;
use crate::metrics::{self, Metrics, PeerMetrics, ReplicationState, Role};
use crate::network::RaftNetwork;
use crate::proposal_queue::{Payloads, Proposal, ProposalQueue};
use crate::storage_task::{StorageDone, StorageJob};
use crate::types::{EntryPayload, LogId, NodeId};

/// Messages taken from the inbox in one turn.
const INBOX_TURN_MAX: usize = 4096;

/// Requests from the handle other than proposals and messages.
pub(crate) enum Control {
    ReadIndex(oneshot::Sender<Result<u64, ReadError>>),
    TransferLeader {
        to: NodeId,
        responder: oneshot::Sender<Result<(), TransferError>>,
    },
    ChangeMembership {
        change: MembershipChange,
        responder: oneshot::Sender<Result<LogId, MembershipError>>,
    },
    /// `Raft::trigger_snapshot`.
    TriggerSnapshot(oneshot::Sender<Result<(), CompactionError>>),
    /// `Raft::purge_log`.
    PurgeLog {
        up_to: u64,
        responder: oneshot::Sender<Result<LogId, CompactionError>>,
    },
    Shutdown,
}

/// Everything that can wake the driver: this list is complete.
enum Input {
    /// The proposal queue turned non-empty.
    Proposals,
    Message(Message),
    Control(Control),
    Storage(StorageDone),
    Apply(ApplyEvent),
    Tick,
    /// The storage or apply task is gone without a report (a bug: both
    /// report their failures and panics before they end).
    TaskEnded(&'static str),
}

/// The channels and shared cells the driver works with.
pub(crate) struct DriverParts<N, R> {
    pub(crate) config: Config,
    pub(crate) engine: Engine,
    pub(crate) network: N,
    pub(crate) proposals: Arc<ProposalQueue<R>>,
    pub(crate) inbox: mpsc::Receiver<Message>,
    pub(crate) control: mpsc::Receiver<Control>,
    pub(crate) storage_jobs: mpsc::UnboundedSender<StorageJob>,
    pub(crate) storage_done: mpsc::UnboundedReceiver<StorageDone>,
    pub(crate) apply_jobs: mpsc::UnboundedSender<ApplyJob<R>>,
    pub(crate) apply_events: mpsc::UnboundedReceiver<ApplyEvent>,
    /// Shared with the storage and apply tasks, which publish their own
    /// failures.
    pub(crate) metrics: Arc<watch::Sender<Metrics>>,
    pub(crate) commit_index: Arc<AtomicU64>,
    pub(crate) applied: Arc<AtomicU64>,
    /// Whether the commit/apply gap is over `commit_apply_gap_max`; written
    /// only when it flips (every proposal reads it).
    pub(crate) over_gap: Arc<AtomicBool>,
    /// The apply task's count of waiting callers.
    pub(crate) proposals_waiting: Arc<AtomicUsize>,
    pub(crate) tasks: Vec<JoinHandle<()>>,
}

/// Callers of a batch of proposals, in order, with their own deadlines.
type Responders<R> = Vec<(Responder<R>, Option<Instant>)>;

/// The command bytes one forwarded batch may carry: a message's limit less
/// what its headers may take. `Config::validate` keeps it at least
/// `append_bytes_max + request_bytes_max`, so any batch the driver builds
/// of several callers fits.
fn forwarded_bytes_max(config: &Config) -> usize {
    let overhead = usize::try_from(MESSAGE_OVERHEAD_BYTES).unwrap_or(usize::MAX);
    config.message_bytes_max.saturating_sub(overhead)
}

pub(crate) struct Driver<N, R> {
    parts: DriverParts<N, R>,
    ticker: Interval,
    /// Proposals taken from the queue this turn (kept for its capacity).
    taken: Vec<Proposal<R>>,
    /// Whether the queue held more than one turn takes.
    proposals_left: bool,
    /// Counts takes, to rotate which shard of the queue goes first.
    take_turn: usize,
    /// Proposals of this turn, appended together.
    batch_payloads: Vec<EntryPayload>,
    batch_responders: Responders<R>,
    /// Messages waiting for the write with the given id to be durable.
    /// Invariant: write ids are non-decreasing front to back.
    gated: VecDeque<(u64, Message)>,
    /// The highest write id known durable.
    written: u64,
    outbox: BTreeMap<NodeId, Vec<Message>>,
    /// Read requests waiting for their index. A `BTreeMap`, not a hash
    /// map: when the driver stops they are dropped (answering `Stopped`)
    /// in id order, so the callers wake in the same order every run (the
    /// whole-node simulation replays a seed exactly).
    reads: BTreeMap<u64, oneshot::Sender<Result<u64, ReadError>>>,
    read_next_id: u64,
    /// Proposals forwarded to the leader (`Config::forward_proposals`),
    /// by the engine's batch id, until the leader says where it appended
    /// them. A `BTreeMap` for the same reason as `reads`.
    forwarded: BTreeMap<u64, Responders<R>>,
    /// Batches and commands forwarded since start, for the metrics.
    forwarded_batches: u64,
    forwarded_commands: u64,
    /// The engine's membership version the metrics were last checked at.
    published_membership: Option<u64>,
    /// Per peer, the engine's count of answers heard and when it last
    /// changed: the time of `PeerMetrics::last_ack` (the engine has no
    /// clock). Rebuilt with the leader's progress.
    peer_acks: BTreeMap<NodeId, (u64, std::time::Instant)>,
}

impl<N: RaftNetwork, R: Send + 'static> Driver<N, R> {
    pub(crate) fn new(parts: DriverParts<N, R>) -> Self {
        let mut ticker = tokio::time::interval(parts.config.tick_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            parts,
            ticker,
            taken: Vec::new(),
            proposals_left: false,
            take_turn: 0,
            batch_payloads: Vec::new(),
            batch_responders: Vec::new(),
            gated: VecDeque::new(),
            written: 0,
            outbox: BTreeMap::new(),
            reads: BTreeMap::new(),
            read_next_id: 1,
            forwarded: BTreeMap::new(),
            forwarded_batches: 0,
            forwarded_commands: 0,
            published_membership: None,
            peer_acks: BTreeMap::new(),
        }
    }

    /// Runs the node until shutdown or a fatal error (a panic of its own
    /// included), then stops the tasks it owns and publishes the final
    /// metrics. Fail-stop: on a fatal error the metrics say why before any
    /// caller is answered `Stopped`.
    pub(crate) async fn run(mut self) {
        let id = self.parts.engine.id();
        let result = AssertUnwindSafe(self.run_turns()).catch_unwind().await;
        let fatal = match result {
            Ok(result) => result.err(),
            Err(payload) => Some(metrics::panicked("driver", payload)),
        };
        if let Some(error) = &fatal {
            tracing::error!(id, %error, "raft node stopped on a fatal error");
            metrics::publish_fatal(&self.parts.metrics, error.clone());
        } else {
            tracing::info!(id, "raft node shut down");
        }
        // Closing the job channels lets the storage and apply tasks finish
        // what they hold and exit; wait for them so that storage is closed
        // when `shutdown` returns.
        let tasks = std::mem::take(&mut self.parts.tasks);
        let Self { parts, .. } = self;
        let DriverParts {
            storage_jobs,
            apply_jobs,
            metrics,
            engine,
            ..
        } = parts;
        // Callers still queued learn the node stopped; later ones are refused.
        parts.proposals.close();
        drop(storage_jobs);
        drop(apply_jobs);
        for task in tasks {
            let _ = task.await;
        }
        metrics.send_modify(|m| {
            m.stopped = true;
            if m.fatal.is_none() {
                m.fatal = fatal;
            }
            m.role = engine.role();
        });
    }

    async fn run_turns(&mut self) -> Result<(), Fatal> {
        let mut more = false;
        loop {
            let input = if more {
                // More committed entries or proposals than one turn takes:
                // go on without waiting, but let other tasks run first.
                tokio::task::yield_now().await;
                // Ticks are never starved: heartbeats, CheckQuorum, election
                // and transfer timeouts run on time however long the flood
                // (`next_input`, which also polls the ticker, is skipped).
                if self.ticker.tick().now_or_never().is_some() {
                    self.handle(Input::Tick)?;
                }
                self.try_next_input()
            } else {
                Some(self.next_input().await)
            };
            if let Some(input) = input {
                if matches!(input, Input::Proposals) {
                    // Woken by the first proposal into an empty queue: let
                    // the callers that are already runnable (answered by
                    // the apply task a moment ago) queue theirs first, so
                    // they join this batch instead of each paying a batch
                    // of its own: a storage write, and an append and its
                    // response per follower.
                    tokio::task::yield_now().await;
                }
                if !self.handle(input)? {
                    return Ok(());
                }
            }
            if !self.drain()? {
                return Ok(());
            }
            self.flush_proposals();
            let applied = self.parts.applied.load(Ordering::Acquire);
            self.parts.engine.on_applied(applied);
            let actions = self.parts.engine.take_actions();
            #[cfg(debug_assertions)]
            self.parts.engine.check_invariants();
            self.execute(actions).await;
            self.publish_metrics();
            more = self.parts.engine.has_ready_apply() || self.proposals_left;
        }
    }

    async fn next_input(&mut self) -> Input {
        let parts = &mut self.parts;
        tokio::select! {
            biased;
            // First: it is ready once a period, so it cannot starve the
            // others, and a busy inbox cannot starve it.
            _ = self.ticker.tick() => Input::Tick,
            event = parts.apply_events.recv() => match event {
                Some(event) => Input::Apply(event),
                None => Input::TaskEnded("apply"),
            },
            done = parts.storage_done.recv() => match done {
                Some(done) => Input::Storage(done),
                None => Input::TaskEnded("storage"),
            },
            Some(control) = parts.control.recv() => Input::Control(control),
            Some(message) = parts.inbox.recv() => Input::Message(message),
            _ = parts.proposals.ready() => Input::Proposals,
            // Every handle dropped: nobody can use this node any more.
            else => Input::Control(Control::Shutdown),
        }
    }

    fn try_next_input(&mut self) -> Option<Input> {
        let parts = &mut self.parts;
        if let Ok(event) = parts.apply_events.try_recv() {
            return Some(Input::Apply(event));
        }
        if let Ok(done) = parts.storage_done.try_recv() {
            return Some(Input::Storage(done));
        }
        None
    }

    /// Takes everything else that is ready, within the turn's bounds.
    fn drain(&mut self) -> Result<bool, Fatal> {
        while let Ok(done) = self.parts.storage_done.try_recv() {
            self.handle(Input::Storage(done))?;
        }
        while let Ok(control) = self.parts.control.try_recv() {
            if !self.handle(Input::Control(control))? {
                return Ok(false);
            }
        }
        for _ in 0..INBOX_TURN_MAX {
            let Ok(message) = self.parts.inbox.try_recv() else {
                break;
            };
            self.handle(Input::Message(message))?;
        }
        self.take_proposals();
        Ok(true)
    }

    /// Takes queued proposals, up to `proposal_batch_max` commands, into
    /// this turn's batch.
    fn take_proposals(&mut self) {
        let budget = self.parts.config.proposal_batch_max;
        self.take_turn = self.take_turn.wrapping_add(1);
        self.proposals_left = self
            .parts
            .proposals
            .take(&mut self.taken, budget, self.take_turn);
        let commands: usize = self.taken.iter().map(|p| p.payloads.len()).sum();
        self.batch_payloads.reserve(commands);
        self.batch_responders.reserve(self.taken.len());
        for proposal in self.taken.drain(..) {
            match proposal.payloads {
                Payloads::One(payload) => self.batch_payloads.push(EntryPayload::Command(payload)),
                Payloads::Many(payloads) => self
                    .batch_payloads
                    .extend(payloads.into_iter().map(EntryPayload::Command)),
            }
            self.batch_responders
                .push((proposal.responder, proposal.deadline));
        }
    }

    /// Feeds one input to the engine. Returns false to stop.
    fn handle(&mut self, input: Input) -> Result<bool, Fatal> {
        let engine = &mut self.parts.engine;
        match input {
            // Taken by `drain`, which every turn runs.
            Input::Proposals => {}
            Input::Message(message) => engine.step(message),
            Input::Tick => engine.tick(),
            Input::Storage(StorageDone::Written(id)) => {
                engine.on_write_done(id);
                self.written = id;
                while self.gated.front().is_some_and(|(after, _)| *after <= id) {
                    let (_, message) = self.gated.pop_front().expect("front exists");
                    self.outbox.entry(message.to).or_default().push(message);
                }
            }
            Input::Storage(StorageDone::Loaded(entries)) => engine.on_loaded(entries),
            Input::Storage(StorageDone::Failed(error)) => return Err(Fatal::Storage(error)),
            Input::Storage(StorageDone::Panicked(fatal)) => return Err(fatal),
            Input::TaskEnded(task) => {
                return Err(Fatal::Panicked {
                    task,
                    message: "ended without a report".to_owned(),
                })
            }
            Input::Storage(StorageDone::SnapshotMetaSaved(meta)) => {
                let _ = self.parts.apply_jobs.send(ApplyJob::InstallSnapshot(meta));
            }
            Input::Storage(StorageDone::Nothing) => {}
            Input::Apply(ApplyEvent::Fatal(fatal)) => return Err(fatal),
            Input::Apply(ApplyEvent::SnapshotBuilt(result)) => engine
                .on_snapshot_built(result)
                .map_err(Fatal::StateMachine)?,
            Input::Apply(ApplyEvent::SnapshotChunk { read, chunk }) => {
                engine.on_snapshot_chunk(read.to, read.snapshot, read.offset, chunk)
            }
            Input::Apply(ApplyEvent::SnapshotChunkStored {
                from,
                meta,
                next_offset,
                done,
            }) => engine.on_snapshot_chunk_stored(from, meta, next_offset, done),
            Input::Apply(ApplyEvent::SnapshotInstalled(meta)) => engine.on_snapshot_installed(meta),
            Input::Control(Control::ReadIndex(responder)) => {
                let id = self.read_next_id;
                self.read_next_id += 1;
                self.reads.insert(id, responder);
                engine.read_index(id);
            }
            Input::Control(Control::TransferLeader { to, responder }) => {
                let _ = responder.send(engine.transfer_leader(to));
            }
            Input::Control(Control::ChangeMembership { change, responder }) => {
                let _ = responder.send(engine.change_membership(change));
            }
            Input::Control(Control::TriggerSnapshot(responder)) => {
                let _ = responder.send(engine.trigger_snapshot());
            }
            Input::Control(Control::PurgeLog { up_to, responder }) => {
                let _ = responder.send(engine.purge_log(up_to));
            }
            Input::Control(Control::Shutdown) => return Ok(false),
        }
        Ok(true)
    }

    /// Appends this turn's proposals as one batch and registers their
    /// waiters with the apply task, before any of them can be applied; or,
    /// on a follower with `forward_proposals`, hands them to the leader.
    fn flush_proposals(&mut self) {
        if self.batch_payloads.is_empty() {
            return;
        }
        let payloads = std::mem::take(&mut self.batch_payloads);
        let responders = std::mem::take(&mut self.batch_responders);
        if self.parts.config.forward_proposals && self.parts.engine.role() != Role::Leader {
            self.forward_proposals(payloads, responders);
            return;
        }
        match self.parts.engine.propose(payloads) {
            Ok(first) => self.wait_for(first, None, responders),
            Err(error) => {
                for (responder, _) in responders {
                    responder.fail(error.clone());
                }
            }
        }
    }

    /// Registers with the apply task the callers of consecutive entries
    /// from `first`, in order.
    fn wait_for(&mut self, first: LogId, forwarded_to: Option<NodeId>, responders: Responders<R>) {
        let mut index = first.index;
        let deadline = Instant::now() + self.parts.config.propose_timeout;
        let waiters = responders
            .into_iter()
            .map(|(responder, own_deadline)| {
                let waiter = Waiter {
                    index,
                    term: first.term,
                    forwarded_to,
                    deadline: own_deadline.unwrap_or(deadline),
                    responder,
                };
                index += waiter.responder.entries();
                waiter
            })
            .collect();
        // The apply task only ends after the driver drops its sender.
        let _ = self.parts.apply_jobs.send(ApplyJob::Wait(waiters));
    }

    /// Sends a follower's proposals to the leader in batches of at most
    /// `append_bytes_max` command bytes (a batch fits a message as an
    /// append does), never splitting one caller's commands: the leader
    /// appends each batch as consecutive entries. A caller whose commands
    /// alone cannot travel in one message (`message_bytes_max` less its
    /// headers) is refused here with `RequestTooLarge`: the transport would
    /// drop the message, and the caller learn only later that the outcome
    /// is unknown.
    fn forward_proposals(&mut self, payloads: Vec<EntryPayload>, responders: Responders<R>) {
        let bytes_max = self.parts.config.append_bytes_max as usize;
        let message_room = forwarded_bytes_max(&self.parts.config);
        let mut commands = payloads.into_iter().map(|payload| match payload {
            EntryPayload::Command(command) => command,
            // The driver batches only commands.
            other => unreachable!("proposal batch holds {other:?}"),
        });
        let mut batch = Vec::new();
        let mut batch_responders = Vec::new();
        let mut bytes = 0;
        for (responder, deadline) in responders {
            let own: Vec<_> = commands
                .by_ref()
                .take(responder.entries() as usize)
                .collect();
            let own_bytes: usize = own.iter().map(|c| c.len()).sum();
            if own_bytes > message_room {
                responder.fail(ProposeError::RequestTooLarge {
                    size: own_bytes,
                    max: message_room,
                });
                continue;
            }
            if !batch.is_empty() && bytes + own_bytes > bytes_max {
                self.forward_batch(
                    std::mem::take(&mut batch),
                    std::mem::take(&mut batch_responders),
                );
                bytes = 0;
            }
            batch.extend(own);
            batch_responders.push((responder, deadline));
            bytes += own_bytes;
        }
        if !batch.is_empty() {
            self.forward_batch(batch, batch_responders);
        }
    }

    fn forward_batch(&mut self, commands: Vec<CommandBytes>, responders: Responders<R>) {
        debug_assert!(
            commands.iter().map(|c| c.len()).sum::<usize>()
                <= forwarded_bytes_max(&self.parts.config),
            "a forwarded batch too large for one message"
        );
        let count = commands.len() as u64;
        match self.parts.engine.forward(commands) {
            Ok(batch) => {
                self.forwarded_batches += 1;
                self.forwarded_commands += count;
                self.forwarded.insert(batch, responders);
            }
            Err(error) => {
                for (responder, _) in responders {
                    responder.fail(error.clone());
                }
            }
        }
    }

    async fn execute(&mut self, actions: Actions) {
        let Actions {
            write,
            messages,
            messages_after_write,
            apply,
            load,
            reads,
            forwarded,
            members,
            build_snapshot,
            snapshot_meta,
            purge,
            snapshot_reads,
            snapshot_receives,
            install,
        } = actions;
        // The leader's answers to forwarded batches: their waiters reach the
        // apply task before this turn's committed entries.
        for (batch, result) in forwarded {
            let Some(responders) = self.forwarded.remove(&batch) else {
                continue;
            };
            match result {
                Ok((first, leader)) => self.wait_for(first, Some(leader), responders),
                Err(error) => {
                    for (responder, _) in responders {
                        responder.fail(error.clone());
                    }
                }
            }
        }
        let storage = &self.parts.storage_jobs;
        let apply_jobs = &self.parts.apply_jobs;
        // The latest snapshot's metadata before the write: after an install,
        // that write may truncate the history the snapshot replaced, and the
        // installed snapshot is then already the latest (the crash points of
        // `testing::CrashPoint`, in order). It names a snapshot the state
        // machine holds durably, so no write needs to precede it.
        if let Some(meta) = snapshot_meta {
            let _ = storage.send(StorageJob::SaveSnapshotMeta {
                meta,
                install: false,
            });
        }
        if let Some(write) = write {
            let _ = storage.send(StorageJob::Write {
                id: write.id,
                batch: write.batch,
            });
        }
        if let Some(up_to) = purge {
            let _ = storage.send(StorageJob::Purge(up_to));
        }
        if let Some(meta) = install {
            #[cfg(feature = "planted-bugs")]
            if crate::testing::node_bug_planted(crate::testing::NodeBug::PurgeBeforeSavingSnapshot)
            {
                let _ = storage.send(StorageJob::Purge(meta.last_log_id));
            }
            // Its metadata first, apart from the latest snapshot's, so a
            // crash right after the install can still name the snapshot's
            // membership (see restore).
            let _ = storage.send(StorageJob::SaveSnapshotMeta {
                meta,
                install: true,
            });
        }
        if build_snapshot {
            let _ = apply_jobs.send(ApplyJob::BuildSnapshot);
        }
        let bytes_max = self.parts.config.append_bytes_max as usize;
        for read in snapshot_reads {
            let _ = apply_jobs.send(ApplyJob::ReadSnapshot { read, bytes_max });
        }
        for receive in snapshot_receives {
            let _ = apply_jobs.send(ApplyJob::ReceiveSnapshot(receive));
        }
        if let Some(nodes) = members {
            self.parts.network.set_members(&nodes).await;
        }
        for message in messages {
            self.outbox.entry(message.to).or_default().push(message);
        }
        for (after, message) in messages_after_write {
            #[cfg(feature = "planted-bugs")]
            if crate::testing::node_bug_planted(crate::testing::NodeBug::SendBeforeWrite) {
                self.outbox.entry(message.to).or_default().push(message);
                continue;
            }
            if after <= self.written {
                self.outbox.entry(message.to).or_default().push(message);
            } else {
                debug_assert!(self.gated.back().is_none_or(|(last, _)| *last <= after));
                self.gated.push_back((after, message));
            }
        }
        let outbox = std::mem::take(&mut self.outbox);
        for (to, messages) in outbox {
            self.parts.network.send(to, messages).await;
        }
        if !apply.is_empty() {
            let _ = self.parts.apply_jobs.send(ApplyJob::Apply(apply));
        }
        if let Some(range) = load {
            let bytes_max = self.parts.config.append_bytes_max;
            let _ = self
                .parts
                .storage_jobs
                .send(StorageJob::Load { range, bytes_max });
        }
        for (id, result) in reads {
            if let Some(responder) = self.reads.remove(&id) {
                let _ = responder.send(result);
            }
        }
    }

    /// Each peer's replication for the metrics, stamping the time of the
    /// answers heard since the last turn.
    fn peer_metrics(&mut self) -> BTreeMap<NodeId, PeerMetrics> {
        let now = Instant::now().into_std();
        let mut peers = BTreeMap::new();
        let mut acks = BTreeMap::new();
        for (id, state, match_index, next_index, heard) in self.parts.engine.peer_progress() {
            let stamp = match self.peer_acks.get(&id) {
                Some(&(seen, at)) if seen == heard => Some((seen, at)),
                _ if heard > 0 => Some((heard, now)),
                _ => None,
            };
            if let Some(stamp) = stamp {
                acks.insert(id, stamp);
            }
            let state = match state {
                ProgressState::Probe => ReplicationState::Probe,
                ProgressState::Replicate => ReplicationState::Replicate,
                ProgressState::Snapshot => ReplicationState::Snapshot,
            };
            let peer = PeerMetrics {
                state,
                match_index,
                next_index,
                last_ack: stamp.map(|(_, at)| at),
            };
            peers.insert(id, peer);
        }
        self.peer_acks = acks;
        peers
    }

    fn publish_metrics(&mut self) {
        let engine = &self.parts.engine;
        // Stored only on change: every proposal reads these cells, and a
        // store, even of the same value, takes the line from their cores.
        if self.parts.commit_index.load(Ordering::Relaxed) != engine.commit_index() {
            self.parts
                .commit_index
                .store(engine.commit_index(), Ordering::Release);
        }
        let applied = self.parts.applied.load(Ordering::Acquire);
        let over_gap =
            engine.commit_index().saturating_sub(applied) > self.parts.config.commit_apply_gap_max;
        if self.parts.over_gap.load(Ordering::Relaxed) != over_gap {
            self.parts.over_gap.store(over_gap, Ordering::Release);
        }
        let waiting = self.parts.proposals_waiting.load(Ordering::Acquire);
        let membership_version = Some(engine.membership_version());
        let membership_may_differ = self.published_membership != membership_version;
        self.published_membership = membership_version;
        let peers = self.peer_metrics();
        let forwarded = (self.forwarded_batches, self.forwarded_commands);
        let engine = &self.parts.engine;
        self.parts.metrics.send_if_modified(|m| {
            // Compare the cheap fields first; rebuild the maps only when the
            // membership or the replication picture changed.
            let mut changed = m.role != engine.role()
                || m.term != engine.term()
                || m.leader != engine.leader()
                || m.commit_index != engine.commit_index()
                || m.applied_index != applied
                || m.proposals_waiting != waiting
                || m.last_log_index != engine.last_log_id().index
                || m.persisted_index != engine.persisted_index()
                || m.snapshot_index != engine.snapshot_index()
                || m.purged_index != engine.purged_index()
                || m.membership_index != engine.membership_index()
                || m.lease_reads_served != engine.lease_reads_served()
                || (m.forwarded_batches, m.forwarded_commands) != forwarded;
            m.role = engine.role();
            m.term = engine.term();
            m.leader = engine.leader();
            m.commit_index = engine.commit_index();
            m.applied_index = applied;
            m.proposals_waiting = waiting;
            m.last_log_index = engine.last_log_id().index;
            m.persisted_index = engine.persisted_index();
            m.snapshot_index = engine.snapshot_index();
            m.purged_index = engine.purged_index();
            m.membership_index = engine.membership_index();
            m.lease_reads_served = engine.lease_reads_served();
            (m.forwarded_batches, m.forwarded_commands) = forwarded;
            if membership_may_differ && m.membership != *engine.membership() {
                m.membership = engine.membership().clone();
                changed = true;
            }
            if !engine.replication_equals(&m.replication) {
                m.replication = engine.replication();
                changed = true;
            }
            if m.peers != peers {
                m.peers = peers;
                changed = true;
            }
            changed
        });
    }
}
