//! Boundary: `Raft`, the cloneable handle through which applications and
//! transports talk to a running node.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch, Mutex};
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};

use crate::apply::Responder;
use crate::apply::{ApplyTask, Query};
use crate::codec;
use crate::command_bytes::CommandBytes;
use crate::config::Config;
use crate::driver::{Control, Driver, DriverParts};
use crate::engine::config_change::MembershipChange;
use crate::engine::{Engine, EngineConfig};
use crate::error::{
    CompactionError, MembershipError, ProposeError, ReadError, ReceiveError, StartError,
    TransferError,
};
use crate::message::Message;
use crate::metrics::{Metrics, Role};
use crate::metrics_watch::MetricsWatch;
use crate::network::RaftNetwork;
use crate::proposal_queue::{Payloads, Proposal, ProposalQueue, PushError, WaitError};
use crate::restore::restore;
use crate::state_machine::StateMachine;
use crate::storage::RaftStorage;
use crate::storage_task;
use crate::types::{LogId, Membership, NodeId};

/// Control requests (reads, transfers, shutdown) that may queue.
const CONTROL_QUEUE_MAX: usize = 4096;

/// Reads of the state machine (`Raft::with_state_machine`) that may queue
/// for the apply task; callers past it wait, under their deadline.
const QUERY_QUEUE_MAX: usize = 1024;

/// A proposer's wait for room in a full proposal queue (boxed: see
/// `Raft::queue`).
type WaitForRoom<'a> = Pin<Box<dyn Future<Output = Result<(), ProposeError>> + Send + 'a>>;

/// A handle to a running Raft node. Cheap to clone; every clone talks to
/// the same node. The node runs until [`Raft::shutdown`], a fatal error, or
/// the last handle is dropped.
pub struct Raft<SM: StateMachine> {
    shared: Arc<Shared<SM>>,
}

impl<SM: StateMachine> Clone for Raft<SM> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<SM: StateMachine> {
    id: NodeId,
    config: Config,
    proposals: Arc<ProposalQueue<SM::Response>>,
    inbox: mpsc::Sender<Message>,
    control: mpsc::Sender<Control>,
    queries: mpsc::Sender<Query<SM>>,
    metrics: watch::Receiver<Metrics>,
    commit_index: Arc<AtomicU64>,
    applied: Arc<AtomicU64>,
    /// Set by the driver while the commit/apply gap is over its limit: a
    /// flag written only when it flips, so the check every proposal makes
    /// reads a cache line no other core keeps writing.
    over_gap: Arc<AtomicBool>,
    applied_watch: watch::Receiver<u64>,
    driver: Mutex<Option<JoinHandle<()>>>,
}

impl<SM: StateMachine> Raft<SM> {
    /// Starts node `id`: reads its durable state, then spawns its driver,
    /// storage and apply tasks on the current tokio runtime.
    ///
    /// `initial_members` bootstraps a new cluster: every founding member is
    /// started with the same membership, and it is used only if the storage
    /// is empty. A node joining an existing cluster passes `None` and waits
    /// for the leader to add it.
    pub async fn start<S: RaftStorage, N: RaftNetwork>(
        id: NodeId,
        config: Config,
        initial_members: Option<Membership>,
        mut storage: S,
        network: N,
        mut state_machine: SM,
    ) -> Result<Self, StartError> {
        config.validate()?;
        if id == 0 {
            return Err(StartError::Membership("node id 0 is reserved".into()));
        }
        let restored = restore(id, initial_members, &mut storage, &mut state_machine).await?;
        let applied_index = restored.applied;
        let commit_index = restored.hard_state.commit;
        let engine = Engine::new(id, EngineConfig::from_config(&config), restored);

        let proposals = Arc::new(ProposalQueue::new(config.proposal_queue_max));
        let (inbox_tx, inbox_rx) = mpsc::channel(config.inbox_msgs_max);
        let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE_MAX);
        let (queries_tx, queries_rx) = mpsc::channel(QUERY_QUEUE_MAX);
        let (storage_jobs_tx, storage_jobs_rx) = mpsc::unbounded_channel();
        let (storage_done_tx, storage_done_rx) = mpsc::unbounded_channel();
        // Unbounded, but bounded in practice: waiters by the proposal queue
        // and the propose deadline, entries by the commit/apply gap.
        let (apply_tx, apply_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (metrics_tx, metrics_rx) = watch::channel(Metrics {
            id,
            ..Metrics::default()
        });
        let (applied_watch_tx, applied_watch_rx) = watch::channel(applied_index);
        let commit = Arc::new(AtomicU64::new(commit_index));
        let applied = Arc::new(AtomicU64::new(applied_index));
        let proposals_waiting = Arc::new(AtomicUsize::new(0));
        let over_gap = Arc::new(AtomicBool::new(false));

        let metrics_tx = Arc::new(metrics_tx);
        // All three tasks run in the node's span, so every line they log
        // names the node.
        let span = tracing::info_span!("raft", id);
        let storage_task = tokio::spawn(tracing::Instrument::instrument(
            storage_task::run(
                storage,
                storage_jobs_rx,
                storage_done_tx,
                metrics_tx.clone(),
            ),
            span.clone(),
        ));
        let apply_task = ApplyTask {
            state_machine,
            jobs: apply_rx,
            queries: queries_rx,
            applied: applied.clone(),
            applied_watch: applied_watch_tx,
            waiting: proposals_waiting.clone(),
            propose_timeout: config.propose_timeout,
            tick_interval: config.tick_interval,
            proposals: proposals.clone(),
            events: events_tx,
            metrics: metrics_tx.clone(),
            ids: Vec::new(),
        };
        let apply_task = tokio::spawn(tracing::Instrument::instrument(
            apply_task.run(),
            span.clone(),
        ));
        let parts = DriverParts {
            config: config.clone(),
            engine,
            network,
            proposals: proposals.clone(),
            inbox: inbox_rx,
            control: control_rx,
            storage_jobs: storage_jobs_tx,
            storage_done: storage_done_rx,
            apply_jobs: apply_tx,
            apply_events: events_rx,
            metrics: metrics_tx,
            commit_index: commit.clone(),
            applied: applied.clone(),
            over_gap: over_gap.clone(),
            proposals_waiting,
            tasks: vec![storage_task, apply_task],
        };
        let driver = tokio::spawn(tracing::Instrument::instrument(
            Driver::new(parts).run(),
            span,
        ));
        Ok(Self {
            shared: Arc::new(Shared {
                id,
                config,
                proposals,
                inbox: inbox_tx,
                control: control_tx,
                queries: queries_tx,
                metrics: metrics_rx,
                commit_index: commit,
                applied,
                over_gap,
                applied_watch: applied_watch_rx,
                driver: Mutex::new(Some(driver)),
            }),
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.shared.id
    }

    /// Proposes `command` and waits until it is committed and applied,
    /// returning the state machine's response.
    ///
    /// Fails fast, with nothing appended, on `RequestTooLarge`,
    /// `Unencodable`, `TooManyRequests`, `NotLeader` and `ProposalDropped`. `Timeout` (after
    /// `Config::propose_timeout`) and `Stopped` leave the outcome unknown;
    /// `Overwritten` means it will never apply.
    ///
    /// On a follower or learner with [`Config::forward_proposals`], the
    /// command goes to the leader over the peer transport (batched with the
    /// turn's other proposals) and the response comes from this node's own
    /// apply; the leader's refusals come back as the errors above, and
    /// `ForwardUnanswered` (the leader changed or did not answer within an
    /// election timeout) leaves the outcome unknown.
    ///
    /// Retry safety: an error that says nothing was appended, and
    /// `Overwritten` (another entry provably took its place), may be
    /// retried: the command cannot apply twice. `Timeout`, `Stopped`,
    /// `ForwardUnanswered` and `Indeterminate` (a snapshot from the leader replaced the log over the
    /// entry) leave it unknown whether the command was or will be applied,
    /// so a retry may apply it twice. A command that must apply at most once
    /// needs a client session (Raft dissertation §6.3): the command carries
    /// a client id and a sequence number, and the state machine remembers
    /// the last of each client with its response, answering a duplicate
    /// with that response instead of applying it again.
    ///
    /// Order: proposals made from one thread are appended in the order they
    /// were made (several futures polled in one poll of a task, say);
    /// concurrent proposals from different threads are unordered. To have
    /// one write land before another, wait for the first.
    pub async fn propose(&self, command: SM::Command) -> Result<SM::Response, ProposeError> {
        let payload = self.encode_command(&command)?;
        self.admit()?;
        let (sender, response) = oneshot::channel();
        let proposal = Proposal {
            payloads: Payloads::One(payload),
            responder: Responder::One(sender),
            deadline: None,
        };
        // Inline, not a shared async helper: a helper's parameters and
        // state would make every proposal's future a quarter larger.
        if let Some(wait_for_room) = self.queue(proposal)? {
            wait_for_room.await?;
        }
        response.await.map_err(|_| ProposeError::Stopped)?
    }

    /// Proposes `commands` as consecutive entries appended together, and
    /// waits until the last is applied; returns one response per command,
    /// in order. Cheaper than as many `propose` calls: one queue slot, one
    /// timer and one wake-up for the lot.
    ///
    /// Errors are those of [`Raft::propose`], for the whole call, plus
    /// `TooManyCommands` over `Config::proposal_batch_max`. The commands are
    /// not a transaction: on `Overwritten { index }` the commands before
    /// `index` were applied and the rest never will be; on
    /// `Indeterminate { index }` those before `index` were applied and any
    /// prefix of the rest may have been; on `Timeout` or `Stopped` any
    /// prefix of them may yet apply.
    pub async fn propose_many(
        &self,
        commands: Vec<SM::Command>,
    ) -> Result<Vec<SM::Response>, ProposeError> {
        let max = self.shared.config.proposal_batch_max;
        if commands.len() > max {
            return Err(ProposeError::TooManyCommands {
                count: commands.len(),
                max,
            });
        }
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        let payloads = commands
            .iter()
            .map(|command| self.encode_command(command))
            .collect::<Result<Vec<_>, _>>()?;
        self.admit()?;
        let (sender, response) = oneshot::channel();
        let proposal = Proposal {
            responder: Responder::Many {
                sender,
                responses: Vec::with_capacity(payloads.len()),
                count: payloads.len(),
            },
            payloads: Payloads::Many(payloads),
            deadline: None,
        };
        // Inline, not a shared async helper: a helper's parameters and
        // state would make every proposal's future a quarter larger.
        if let Some(wait_for_room) = self.queue(proposal)? {
            wait_for_room.await?;
        }
        response.await.map_err(|_| ProposeError::Stopped)?
    }

    /// Encodes a command, refusing one over the request size limit or one
    /// postcard cannot encode.
    fn encode_command(&self, command: &SM::Command) -> Result<CommandBytes, ProposeError> {
        let max = self.shared.config.request_bytes_max;
        codec::encode_command(command, max).map_err(|error| match error {
            codec::EncodeError::TooLarge { size, max } => {
                ProposeError::RequestTooLarge { size, max }
            }
            other => ProposeError::Unencodable {
                message: other.to_string(),
            },
        })
    }

    /// Backpressure on the commit/apply gap (etcd's
    /// maxGapBetweenApplyAndCommitIndex): a slow state machine makes new
    /// proposals fail fast instead of piling up behind it.
    fn admit(&self) -> Result<(), ProposeError> {
        if !self.shared.over_gap.load(Ordering::Relaxed) {
            // The driver raises the flag in the turn that commits past the
            // limit, so a clear flag means the gap is within it.
            return Ok(());
        }
        // The flag may lag behind the apply task catching up: check.
        let commit = self.shared.commit_index.load(Ordering::Acquire);
        let applied = self.shared.applied.load(Ordering::Acquire);
        let gap = commit.saturating_sub(applied);
        if gap > self.shared.config.commit_apply_gap_max {
            return Err(ProposeError::TooManyRequests { gap });
        }
        Ok(())
    }

    /// Waits for room in the full proposal queue (backpressure), within the
    /// propose deadline, which then also bounds the wait for the answer.
    async fn queue_when_room(
        &self,
        mut proposal: Proposal<SM::Response>,
    ) -> Result<(), ProposeError> {
        let timeout = self.shared.config.propose_timeout;
        let deadline = Instant::now() + timeout;
        proposal.deadline = Some(deadline);
        match self.shared.proposals.push_until(proposal, deadline).await {
            Err(WaitError::Timeout) => Err(ProposeError::Timeout(timeout)),
            Err(WaitError::Closed) => Err(ProposeError::Stopped),
            Ok(()) => Ok(()),
        }
    }

    /// Queues `proposal` if there is room; if the queue is full, returns
    /// the wait for room (backpressure), under its own deadline, which then
    /// also bounds the wait for the answer (the apply task enforces that one
    /// on the driver's ticks, so a proposal costs no timer of its own).
    ///
    /// Not `async`, and the slow path boxed: a proposal's future then holds
    /// only the answer's receiver across its awaits, not the proposal, the
    /// queue and timer futures of a path it rarely takes. Thousands of
    /// concurrent callers pay for every byte of that future in cache misses.
    fn queue(
        &self,
        proposal: Proposal<SM::Response>,
    ) -> Result<Option<WaitForRoom<'_>>, ProposeError> {
        match self.shared.proposals.try_push(proposal) {
            Ok(()) => Ok(None),
            Err(PushError::Closed) => Err(ProposeError::Stopped),
            Err(PushError::Full(proposal)) => Ok(Some(Box::pin(self.queue_when_room(proposal)))),
        }
    }

    /// Returns a read index (dissertation §6.4): once this node has applied
    /// up to it, its state reflects every write acknowledged before the call.
    /// On the leader, reads that arrive together share one heartbeat round.
    /// On a follower or learner, the node asks its leader, which runs the
    /// request through its own round and answers with its commit index
    /// (etcd-raft's `MsgReadIndex`), so linearizable reads spread over the
    /// cluster: `NotLeader` while no leader is known, `LeadershipLost` if
    /// the leader changes or does not answer within an election timeout.
    /// Fails with `Timeout` after `Config::propose_timeout`, whatever the
    /// driver is doing.
    pub async fn read_index(&self) -> Result<u64, ReadError> {
        let deadline = Instant::now() + self.shared.config.propose_timeout;
        self.read_index_until(deadline).await
    }

    async fn read_index_until(&self, deadline: Instant) -> Result<u64, ReadError> {
        let timeout = self.shared.config.propose_timeout;
        let (responder, answer) = oneshot::channel();
        let request = Control::ReadIndex(responder);
        ask(&self.shared.control, request, answer, deadline)
            .await
            .map_err(|u| u.or(ReadError::Timeout(timeout), ReadError::Stopped))?
    }

    /// Waits until a linearizable read of this node's state machine is
    /// possible: gets a read index and waits until it is applied. Read your
    /// state right after this returns (with [`Raft::with_state_machine`],
    /// or a read handle your state machine hands out); the value is the
    /// read index. One
    /// deadline, `Config::propose_timeout` from the call, covers both steps.
    pub async fn linearizable_read(&self) -> Result<u64, ReadError> {
        let timeout = self.shared.config.propose_timeout;
        let deadline = Instant::now() + timeout;
        let index = self.read_index_until(deadline).await?;
        let mut applied = self.shared.applied_watch.clone();
        let result = timeout_at(deadline, applied.wait_for(|&a| a >= index)).await;
        match result {
            Err(_) => Err(ReadError::Timeout(timeout)),
            Ok(Err(_)) => Err(ReadError::Stopped),
            Ok(Ok(_)) => Ok(index),
        }
    }

    /// Runs `read` on this node's state machine and returns what it
    /// returns: the documented way to read the replicated state.
    ///
    /// `read` runs on the apply task, between two batches of applied
    /// entries, after every batch that was queued when the call arrived: it
    /// sees a state at least as new as this node's applied index when it
    /// was called. So a linearizable read is the pair:
    ///
    /// ```no_run
    /// # async fn example(raft: rafter::Raft<rafter::testing::KvStateMachine>)
    /// # -> Result<(), rafter::ReadError> {
    /// raft.linearizable_read().await?; // applied ≥ the read index now
    /// let value = raft.with_state_machine(|sm| sm.get("greeting")).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// Alone, it is a local (serializable) read: whatever this node has
    /// applied, which on a follower may lag the leader.
    ///
    /// Contract: `read` blocks the apply task while it runs, and with it
    /// every apply on this node, so keep it short (copy out what you need).
    /// A panic in `read` is resumed in the caller, and the node goes on.
    /// Waits at most `Config::propose_timeout` (`Timeout`), longer only if
    /// `read` itself runs long; `Stopped` once the node has stopped.
    ///
    /// A state machine that keeps its state behind a shared handle (an
    /// `Arc`, a database it can open read transactions on) may also hand
    /// that out and be read from any task, without this queue, once
    /// `linearizable_read` returns; `testing::KvStateMachine` is one.
    pub async fn with_state_machine<R, F>(&self, read: F) -> Result<R, ReadError>
    where
        F: FnOnce(&SM) -> R + Send + 'static,
        R: Send + 'static,
    {
        let timeout = self.shared.config.propose_timeout;
        let deadline = Instant::now() + timeout;
        let (responder, answer) = oneshot::channel();
        let query: Query<SM> = Box::new(move |state_machine: &SM| {
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read(state_machine)));
            // The caller may have timed out and gone: nothing to do then.
            let _ = responder.send(result);
        });
        let result = ask(&self.shared.queries, query, answer, deadline)
            .await
            .map_err(|u| u.or(ReadError::Timeout(timeout), ReadError::Stopped))?;
        Ok(result.unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    }

    /// Hands leadership to voter `to` (dissertation §3.10) and waits until
    /// this node sees `to` lead. While the transfer runs the leader drops new
    /// proposals; it gives up after an election timeout. The driver must
    /// accept the request within `Config::propose_timeout` (else `Timeout`).
    pub async fn transfer_leader(&self, to: NodeId) -> Result<(), TransferError> {
        let (responder, answer) = oneshot::channel();
        let deadline = Instant::now() + self.shared.config.propose_timeout;
        let control = Control::TransferLeader { to, responder };
        ask(&self.shared.control, control, answer, deadline)
            .await
            .map_err(|u| u.or(TransferError::Timeout { to }, TransferError::Stopped))??;
        let config = &self.shared.config;
        let patience = config.tick_interval * (2 * config.election_ticks_max) as u32;
        let mut metrics = self.shared.metrics.clone();
        let result = tokio::time::timeout(
            patience,
            metrics.wait_for(|m| m.leader == Some(to) || m.stopped),
        )
        .await
        .map(|r| r.map(|m| m.stopped));
        match result {
            Ok(Ok(false)) => Ok(()),
            Ok(_) => Err(TransferError::Stopped),
            Err(_) => Err(TransferError::Timeout { to }),
        }
    }

    /// Adds node `id`, reachable at `addr`, as a learner: it receives the log
    /// and snapshots but never campaigns and counts in no quorum. Returns
    /// once the new configuration is committed.
    pub async fn add_learner(&self, id: NodeId, addr: String) -> Result<(), MembershipError> {
        let index = self
            .change(MembershipChange::AddLearner { id, addr })
            .await?;
        self.wait_membership(|m| m.commit_index >= index && m.membership.learners.contains(&id))
            .await
    }

    /// Makes `voters` the voting members, through joint consensus (Raft
    /// dissertation §4.3): C_old,new, then C_new. Each new voter must be a
    /// learner that is caught up within `Config::learner_catchup_lag_max`
    /// entries; this waits up to `Config::propose_timeout` for that, then
    /// fails with `NotCaughtUp`. Returns once C_new is committed. A leader
    /// not in `voters` steps down then.
    pub async fn change_membership(&self, voters: BTreeSet<NodeId>) -> Result<(), MembershipError> {
        self.wait_caught_up(&voters).await?;
        self.change(MembershipChange::SetVoters(voters.clone()))
            .await?;
        self.wait_membership(|m| {
            !m.membership.is_joint()
                && m.membership.voters == voters
                && m.commit_index >= m.membership_index
        })
        .await
    }

    /// Removes voter or learner `id` (a voter through joint consensus).
    /// Returns once the configuration without it is committed.
    pub async fn remove_node(&self, id: NodeId) -> Result<(), MembershipError> {
        self.change(MembershipChange::Remove(id)).await?;
        self.wait_membership(|m| {
            !m.membership.is_joint()
                && !m.membership.members().contains(&id)
                && m.commit_index >= m.membership_index
        })
        .await
    }

    /// Hands `change` to the driver and returns the index of its entry,
    /// within `Config::propose_timeout` whatever the driver is doing.
    async fn change(&self, change: MembershipChange) -> Result<u64, MembershipError> {
        let (responder, answer) = oneshot::channel();
        let control = Control::ChangeMembership { change, responder };
        let timeout = self.shared.config.propose_timeout;
        let deadline = Instant::now() + timeout;
        let result = ask(&self.shared.control, control, answer, deadline)
            .await
            .map_err(|u| u.or(MembershipError::Timeout(timeout), MembershipError::Stopped))?;
        Ok(result?.index)
    }

    async fn wait_caught_up(&self, voters: &BTreeSet<NodeId>) -> Result<(), MembershipError> {
        let lag_max = self.shared.config.learner_catchup_lag_max;
        let lag_of = |m: &Metrics, id: NodeId| {
            m.last_log_index
                .saturating_sub(m.replication.get(&id).copied().unwrap_or(0))
        };
        let new: Vec<NodeId> = {
            let m = self.shared.metrics.borrow();
            if m.role != Role::Leader {
                return Err(MembershipError::NotLeader {
                    leader_hint: m.leader,
                    leader_addr: m.leader_addr().map(str::to_owned),
                });
            }
            // Refusals that waiting cannot cure come first (the engine checks
            // again when the change is proposed).
            if voters.is_empty() {
                return Err(MembershipError::NoVoters);
            }
            let members = m.membership.members();
            if let Some(&unknown) = voters.iter().find(|id| !members.contains(id)) {
                return Err(MembershipError::UnknownNode(unknown));
            }
            voters
                .iter()
                .copied()
                .filter(|id| !m.membership.voters.contains(id) && *id != self.shared.id)
                .collect()
        };
        let caught_up = |m: &Metrics| new.iter().all(|&id| lag_of(m, id) <= lag_max) || m.stopped;
        if self
            .wait_for(self.shared.config.propose_timeout, caught_up)
            .await
            .is_some()
        {
            return Ok(());
        }
        let m = self.status();
        let (id, lag) = new
            .iter()
            .map(|&id| (id, lag_of(&m, id)))
            .max_by_key(|&(_, lag)| lag)
            .unwrap_or((0, 0));
        Err(MembershipError::NotCaughtUp { id, lag })
    }

    async fn wait_membership(
        &self,
        done: impl Fn(&Metrics) -> bool,
    ) -> Result<(), MembershipError> {
        let timeout = self.shared.config.propose_timeout;
        match self.wait_for(timeout, |m| done(m) || m.stopped).await {
            Some(m) if !m.stopped => Ok(()),
            Some(_) => Err(MembershipError::Stopped),
            None => Err(MembershipError::Timeout(timeout)),
        }
    }

    /// Asks the state machine for a snapshot now, as if
    /// `Config::snapshot_interval_entries` entries had been applied, and
    /// returns once the driver took the request (a build already under way
    /// answers for it). The snapshot is built on the apply task (see
    /// `StateMachine::build_snapshot` for what that blocks); once built, its
    /// metadata is saved and the log purged behind it, keeping
    /// `Config::snapshot_trailing_entries`: watch `Metrics::snapshot_index`
    /// and `Metrics::purged_index` for that.
    pub async fn trigger_snapshot(&self) -> Result<(), CompactionError> {
        let (responder, answer) = oneshot::channel();
        self.compaction(Control::TriggerSnapshot(responder), answer)
            .await
    }

    /// Purges the log up to `up_to` now, without keeping
    /// `Config::snapshot_trailing_entries`: only entries covered by the
    /// latest durable snapshot, and only durable, applied ones, so `up_to`
    /// is capped at `Metrics::snapshot_index` (call
    /// [`Raft::trigger_snapshot`] first, and wait for it, to purge what was
    /// applied since). Returns the log's purge point after the call. A
    /// follower that needs a purged entry then gets the snapshot instead.
    pub async fn purge_log(&self, up_to: u64) -> Result<LogId, CompactionError> {
        let (responder, answer) = oneshot::channel();
        self.compaction(Control::PurgeLog { up_to, responder }, answer)
            .await
    }

    /// Hands a compaction request to the driver and waits for its answer,
    /// within `Config::propose_timeout`.
    async fn compaction<T>(
        &self,
        control: Control,
        answer: oneshot::Receiver<Result<T, CompactionError>>,
    ) -> Result<T, CompactionError> {
        let timeout = self.shared.config.propose_timeout;
        let deadline = Instant::now() + timeout;
        ask(&self.shared.control, control, answer, deadline)
            .await
            .map_err(|u| u.or(CompactionError::Timeout(timeout), CompactionError::Stopped))?
    }

    /// Hands a message from the network to this node. Never waits: when the
    /// inbox is full the message is dropped (`InboxFull`) and Raft retries.
    ///
    /// A gateway: the message is validated as `codec::decode_message`
    /// validates (`Invalid` otherwise), so a transport that decodes its own
    /// way cannot feed the engine what it must not see.
    pub fn receive(&self, message: Message) -> Result<(), ReceiveError> {
        if message.to != self.shared.id {
            return Err(ReceiveError::WrongNode {
                to: message.to,
                me: self.shared.id,
            });
        }
        codec::validate_message(&message).map_err(ReceiveError::Invalid)?;
        self.shared.inbox.try_send(message).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ReceiveError::InboxFull,
            mpsc::error::TrySendError::Closed(_) => ReceiveError::Stopped,
        })
    }

    /// The leader this node knows of in its current term, with its address
    /// from the configuration this node has (`None` as the address when
    /// that configuration does not list the leader yet). `None` while no
    /// leader is known, during an election for one. A hint, as every
    /// `NotLeader` error's: by the time the caller uses it, leadership may
    /// have moved on.
    pub fn leader(&self) -> Option<(NodeId, Option<String>)> {
        let metrics = self.shared.metrics.borrow();
        let id = metrics.leader?;
        Some((id, metrics.leader_addr().map(str::to_owned)))
    }

    /// The node's current metrics.
    pub fn status(&self) -> Metrics {
        self.shared.metrics.borrow().clone()
    }

    /// A watch of the node's metrics, updated after every driver turn that
    /// changed them. `wait_for` on it is how to wait for a condition; its
    /// docs show how to export them.
    pub fn metrics(&self) -> MetricsWatch {
        MetricsWatch::new(self.shared.metrics.clone())
    }

    /// Waits until `condition` holds for this node's metrics, or `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        condition: impl FnMut(&Metrics) -> bool,
    ) -> Option<Metrics> {
        let mut metrics = self.shared.metrics.clone();
        let result = tokio::time::timeout(timeout, metrics.wait_for(condition)).await;
        match result {
            Ok(Ok(m)) => Some(m.clone()),
            _ => None,
        }
    }

    /// Stops the node: the driver finishes its turn, storage and the state
    /// machine are closed, and every waiting call returns `Stopped`.
    /// Returns once everything has stopped; later calls return at once.
    pub async fn shutdown(&self) {
        let _ = self.shared.control.send(Control::Shutdown).await;
        let driver = self.shared.driver.lock().await.take();
        if let Some(driver) = driver {
            if let Err(error) = driver.await {
                tracing::error!(id = self.shared.id, %error, "raft driver task failed");
            }
        }
    }
}

/// Why a request to one of the node's tasks got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unanswered {
    /// The deadline passed first.
    Timeout,
    /// The task is gone: the node stopped.
    Stopped,
}

impl Unanswered {
    /// The caller's own error for this outcome.
    fn or<E>(self, timeout: E, stopped: E) -> E {
        match self {
            Unanswered::Timeout => timeout,
            Unanswered::Stopped => stopped,
        }
    }
}

/// Queues `request` for a task of the node and waits for its `answer`,
/// both before `deadline`: every call into the driver or the apply task
/// has this shape, so every one of them resolves by its deadline even when
/// the task is gone or starved.
async fn ask<Q, T>(
    queue: &mpsc::Sender<Q>,
    request: Q,
    answer: oneshot::Receiver<T>,
    deadline: Instant,
) -> Result<T, Unanswered> {
    match timeout_at(deadline, queue.send(request)).await {
        Err(_) => return Err(Unanswered::Timeout),
        Ok(Err(_)) => return Err(Unanswered::Stopped),
        Ok(Ok(())) => {}
    }
    match timeout_at(deadline, answer).await {
        Err(_) => Err(Unanswered::Timeout),
        Ok(Err(_)) => Err(Unanswered::Stopped),
        Ok(Ok(value)) => Ok(value),
    }
}
