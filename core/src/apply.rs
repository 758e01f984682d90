//! The apply task: feeds committed entries to the state machine in order
//! and resolves each waiting `propose` with its response.
//!
//! Waiters are keyed by log index and carry the term the entry was proposed
//! in; what becomes of each (applied, overwritten, or indeterminate under an
//! installed snapshot) is decided by [`crate::waiters`], the code the
//! simulator runs too.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::codec;
use crate::error::{Fatal, ProposeError};
use crate::metrics::{self, Metrics};
use crate::proposal_queue::ProposalQueue;
use crate::state_machine::{Committed, CommittedPayload, StateMachine, StateMachineError};
use bytes::Bytes;

use crate::engine::{SnapshotRead, SnapshotReceive};
use crate::types::{Entry, EntryPayload, LogId, NodeId, SnapshotMeta};
use crate::waiters::{self, Waiters};

/// Where a proposer waits for its response.
pub(crate) enum Responder<R> {
    /// `propose`: one command, one response.
    One(oneshot::Sender<Result<R, ProposeError>>),
    /// `propose_many`: consecutive commands, answered together once the
    /// last one applies. `responses` holds those applied so far.
    Many {
        sender: oneshot::Sender<Result<Vec<R>, ProposeError>>,
        responses: Vec<R>,
        count: usize,
    },
}

impl<R> Responder<R> {
    /// How many consecutive entries this responder waits for.
    pub(crate) fn entries(&self) -> u64 {
        match self {
            Responder::One(_) => 1,
            Responder::Many { count, .. } => *count as u64,
        }
    }

    /// Whether the caller gave up (timed out or dropped its future).
    pub(crate) fn is_closed(&self) -> bool {
        match self {
            Responder::One(sender) => sender.is_closed(),
            Responder::Many { sender, .. } => sender.is_closed(),
        }
    }

    /// Answers with `error`.
    pub(crate) fn fail(self, error: ProposeError) {
        // The caller may have timed out and gone: nothing to do then.
        match self {
            Responder::One(sender) => {
                let _ = sender.send(Err(error));
            }
            Responder::Many { sender, .. } => {
                let _ = sender.send(Err(error));
            }
        }
    }
}

/// A proposer waiting for the entry at `index` of `term` (for
/// `propose_many`, the first of its consecutive entries), as the driver
/// registers it.
pub(crate) struct Waiter<R> {
    pub(crate) index: u64,
    pub(crate) term: u64,
    /// The leader a forwarded proposal was appended by
    /// (`Config::forward_proposals`); `None` for this node's own.
    pub(crate) forwarded_to: Option<NodeId>,
    /// When the caller gets `Timeout` if its entry has not applied.
    pub(crate) deadline: Instant,
    pub(crate) responder: Responder<R>,
}

/// Work for the apply task, in the order the driver produced it.
pub(crate) enum ApplyJob<R> {
    /// Proposers of entries just appended (indexes increase across jobs).
    Wait(Vec<Waiter<R>>),
    /// Committed entries, consecutive across jobs.
    Apply(Vec<Entry>),
    /// Build a snapshot of the applied state.
    BuildSnapshot,
    /// Read a chunk of a snapshot to send.
    ReadSnapshot {
        read: SnapshotRead,
        bytes_max: usize,
    },
    /// Store a received chunk.
    ReceiveSnapshot(SnapshotReceive),
    /// Install the fully received snapshot (its metadata is saved).
    InstallSnapshot(SnapshotMeta),
}

/// What the apply task reports to the driver.
pub(crate) enum ApplyEvent {
    SnapshotBuilt(Result<LogId, StateMachineError>),
    SnapshotChunk {
        read: SnapshotRead,
        chunk: Result<Option<Bytes>, StateMachineError>,
    },
    SnapshotChunkStored {
        from: NodeId,
        meta: SnapshotMeta,
        next_offset: u64,
        done: bool,
    },
    SnapshotInstalled(SnapshotMeta),
    /// The state machine failed: the node must stop.
    Fatal(Fatal),
}

/// A read of the state machine from `Raft::with_state_machine`: runs on the
/// apply task between batches, and answers its caller itself (the closure
/// holds the caller's channel and catches its own panic).
pub(crate) type Query<SM> = Box<dyn FnOnce(&SM) + Send>;

/// What woke the apply task.
enum Wake<SM: StateMachine> {
    /// The tick: time to enforce deadlines.
    Tick,
    /// A job from the driver.
    Job(ApplyJob<SM::Response>),
    /// A read from a handle.
    Query(Query<SM>),
}

/// What the apply task keeps of a waiter.
struct Pending<R> {
    deadline: Instant,
    responder: Responder<R>,
}

type ApplyWaiters<R> = Waiters<Pending<R>>;

/// Waiters above this count trigger a sweep of the ones whose caller gave up
/// (timed out): the bound on memory held for abandoned proposals.
const WAITERS_SWEEP_THRESHOLD: usize = 1 << 16;

pub(crate) struct ApplyTask<SM: StateMachine> {
    pub(crate) state_machine: SM,
    pub(crate) jobs: mpsc::UnboundedReceiver<ApplyJob<SM::Response>>,
    /// Reads of the state machine from the handles (bounded by the
    /// handle's channel; each runs once the jobs queued before it apply).
    pub(crate) queries: mpsc::Receiver<Query<SM>>,
    /// Published after every batch; the handle reads it for the commit/apply
    /// gap check and `linearizable_read` waits on it.
    pub(crate) applied: Arc<AtomicU64>,
    pub(crate) applied_watch: watch::Sender<u64>,
    /// Callers waiting for their entry, published after every run of jobs
    /// (`Metrics::proposals_waiting`).
    pub(crate) waiting: Arc<AtomicUsize>,
    /// `Config::propose_timeout`, reported in `Timeout` errors.
    pub(crate) propose_timeout: Duration,
    /// How often proposals' deadlines are enforced (`Config::tick_interval`).
    pub(crate) tick_interval: Duration,
    /// Proposals the driver has not taken yet: their deadlines are enforced
    /// here too, so they hold while the driver is stuck.
    pub(crate) proposals: Arc<ProposalQueue<SM::Response>>,
    /// Where results and failures are reported to the driver.
    pub(crate) events: mpsc::UnboundedSender<ApplyEvent>,
    /// The node's metrics: a failure is published here before any waiter
    /// is answered `Stopped`.
    pub(crate) metrics: Arc<watch::Sender<Metrics>>,
    /// Scratch for `apply`: the log id of each entry of a batch, and whether
    /// it is a command.
    pub(crate) ids: Vec<(LogId, bool)>,
}

impl<SM: StateMachine> ApplyTask<SM> {
    /// Runs jobs until the driver closes the channel or the state machine
    /// fails or panics. A panic stops the node like an error: the metrics
    /// say why, the driver is told, and only then are the waiters (held by
    /// the unwound future) dropped, which answers them `Stopped`.
    pub(crate) async fn run(self) {
        let events = self.events.clone();
        let metrics = self.metrics.clone();
        let run = AssertUnwindSafe(self.run_jobs()).catch_unwind();
        tokio::pin!(run);
        if let Err(payload) = run.as_mut().await {
            let fatal = metrics::panicked("apply", payload);
            tracing::error!(error = %fatal, "apply task panicked; stopping the node");
            metrics::publish_fatal(&metrics, fatal.clone());
            let _ = events.send(ApplyEvent::Fatal(fatal));
        }
    }

    async fn run_jobs(mut self) {
        let mut waiters: ApplyWaiters<SM::Response> = Waiters::default();
        let mut applied = self.applied.load(Ordering::Acquire);
        let mut batch = Vec::new();
        // Deadlines are this task's own business, on its own clock: they
        // hold while the driver is stuck (one timer for all proposals
        // instead of one each).
        // TODO: a state machine stuck inside `apply` holds its callers with
        // it; their deadlines are enforced once it returns. Answering them
        // from elsewhere would move the responders out of this task, behind
        // a lock every answer would pay for.
        let mut ticker = tokio::time::interval(self.tick_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            // The tick first: it is ready once a period, so it cannot
            // starve the jobs, and a busy job channel cannot starve it.
            // A closed query channel (every handle dropped) disables its
            // branch; the driver's jobs decide when this task ends.
            let wake = tokio::select! {
                biased;
                _ = ticker.tick() => Wake::Tick,
                job = self.jobs.recv() => match job {
                    Some(job) => Wake::Job(job),
                    None => return,
                },
                Some(query) = self.queries.recv() => Wake::Query(query),
            };
            let (first, expire_at, query) = match wake {
                Wake::Tick => (None, Some(Instant::now()), None),
                Wake::Job(job) => (Some(job), None, None),
                Wake::Query(query) => (None, None, Some(query)),
            };
            // Take everything queued: one state machine call per run of
            // entries; other jobs run in their place in the order.
            let mut next = first;
            while let Some(job) = next.take().or_else(|| self.jobs.try_recv().ok()) {
                let result = match job {
                    ApplyJob::Wait(new) => {
                        for waiter in new {
                            // Only a forwarded proposal can be registered at
                            // or below the applied index: the leader's answer
                            // came after its entry applied here, and the
                            // response is gone. (An own proposal is registered
                            // before its entry can commit.)
                            if let (true, Some(leader)) =
                                (waiter.index <= applied, waiter.forwarded_to)
                            {
                                waiter
                                    .responder
                                    .fail(ProposeError::ForwardUnanswered { leader });
                                continue;
                            }
                            waiters.push(waiters::Waiter {
                                index: waiter.index,
                                last: waiter.index + waiter.responder.entries() - 1,
                                term: waiter.term,
                                token: Pending {
                                    deadline: waiter.deadline,
                                    responder: waiter.responder,
                                },
                            });
                        }
                        Ok(())
                    }
                    ApplyJob::Apply(entries) => {
                        batch.extend(entries);
                        Ok(())
                    }
                    other => match self.flush(&mut applied, &mut batch, &mut waiters).await {
                        Ok(()) => self.snapshot_job(other, &mut applied, &mut waiters).await,
                        Err(error) => Err(error),
                    },
                };
                if let Err(error) = result {
                    return self.fail(error);
                }
            }
            if waiters.len() > WAITERS_SWEEP_THRESHOLD {
                waiters.remove_if(|p| p.responder.is_closed(), drop);
            }
            if let Err(error) = self.flush(&mut applied, &mut batch, &mut waiters).await {
                return self.fail(error);
            }
            if let Some(query) = query {
                // After applying everything queued before it: the read sees
                // at least what was applied when it was asked.
                query(&self.state_machine);
            }
            if let Some(now) = expire_at {
                // After applying what was queued: an entry committed in
                // time is answered, not timed out.
                self.expire(&mut waiters, now);
                self.proposals.expire(now, self.propose_timeout);
            }
            self.waiting.store(waiters.len(), Ordering::Release);
        }
    }

    /// Answers `Timeout` to every waiter past its deadline. The caller's
    /// entry may still apply later: its outcome is unknown.
    fn expire(&self, waiters: &mut ApplyWaiters<SM::Response>, now: Instant) {
        let timeout = self.propose_timeout;
        waiters.remove_if(
            |p| p.deadline <= now,
            |p| p.responder.fail(ProposeError::Timeout(timeout)),
        );
    }

    fn fail(&self, error: StateMachineError) {
        tracing::error!(%error, "state machine failed; stopping the node");
        let fatal = Fatal::StateMachine(error);
        metrics::publish_fatal(&self.metrics, fatal.clone());
        let _ = self.events.send(ApplyEvent::Fatal(fatal));
    }

    fn publish(&self, applied: u64) {
        self.applied.store(applied, Ordering::Release);
        self.applied_watch.send_replace(applied);
    }

    /// Applies the entries gathered so far.
    async fn flush(
        &mut self,
        applied: &mut u64,
        batch: &mut Vec<Entry>,
        waiters: &mut ApplyWaiters<SM::Response>,
    ) -> Result<(), StateMachineError> {
        if batch.is_empty() {
            return Ok(());
        }
        let entries = std::mem::take(batch);
        #[cfg(feature = "planted-bugs")]
        if crate::testing::node_bug_planted(crate::testing::NodeBug::PublishBeforeApply) {
            self.publish(entries[entries.len() - 1].index);
            tokio::task::yield_now().await;
        }
        *applied = self.apply(*applied, entries, waiters).await?;
        self.publish(*applied);
        Ok(())
    }

    async fn snapshot_job(
        &mut self,
        job: ApplyJob<SM::Response>,
        applied: &mut u64,
        waiters: &mut ApplyWaiters<SM::Response>,
    ) -> Result<(), StateMachineError> {
        let sm = &mut self.state_machine;
        let event = match job {
            ApplyJob::Wait(_) | ApplyJob::Apply(_) => {
                unreachable!("handled by run")
            }
            ApplyJob::BuildSnapshot => match sm.build_snapshot().await {
                Err(e) if !matches!(e, StateMachineError::SnapshotUnsupported) => return Err(e),
                result => ApplyEvent::SnapshotBuilt(result),
            },
            ApplyJob::ReadSnapshot { read, bytes_max } => {
                let chunk = match sm
                    .read_snapshot(read.snapshot, read.offset, bytes_max)
                    .await
                {
                    Err(e) if !matches!(e, StateMachineError::SnapshotUnavailable(_)) => {
                        return Err(e)
                    }
                    result => result,
                };
                ApplyEvent::SnapshotChunk { read, chunk }
            }
            ApplyJob::ReceiveSnapshot(receive) => {
                let snapshot = receive.meta.last_log_id;
                let next_offset = receive.offset + receive.data.len() as u64;
                sm.receive_snapshot(snapshot, receive.offset, receive.data)
                    .await?;
                ApplyEvent::SnapshotChunkStored {
                    from: receive.from,
                    meta: receive.meta,
                    next_offset,
                    done: receive.done,
                }
            }
            ApplyJob::InstallSnapshot(meta) => {
                sm.install_snapshot(meta.last_log_id).await?;
                *applied = (*applied).max(meta.last_log_id.index);
                self.publish(*applied);
                // The entries the snapshot covers are never applied one by
                // one: their proposers learn what can be known.
                waiters.take_covered(meta.last_log_id, |p, error| p.responder.fail(error));
                ApplyEvent::SnapshotInstalled(meta)
            }
        };
        let _ = self.events.send(event);
        Ok(())
    }

    /// Applies consecutive `entries` after `applied`; returns the new
    /// applied index.
    async fn apply(
        &mut self,
        applied: u64,
        entries: Vec<Entry>,
        waiters: &mut ApplyWaiters<SM::Response>,
    ) -> Result<u64, StateMachineError> {
        let first = entries[0].index;
        assert_eq!(
            first,
            applied + 1,
            "apply must be consecutive: applied {applied}, next {first}"
        );
        let last = entries[entries.len() - 1].index;
        // Each entry's log id and whether it is a command (it then has a
        // response), kept across calls for the buffer.
        let mut ids = std::mem::take(&mut self.ids);
        ids.clear();
        let mut committed = Vec::with_capacity(entries.len());
        for entry in entries {
            let log_id = entry.log_id();
            let payload = match entry.payload {
                EntryPayload::Blank => CommittedPayload::Blank,
                EntryPayload::Membership(m) => CommittedPayload::Membership(m),
                // No size limit but the entry's own: it is in memory
                // already, and a command committed under a larger
                // `request_bytes_max` (before the operator lowered it, or
                // on a node that runs with another value) must still apply.
                EntryPayload::Command(bytes) => match codec::decode(&bytes, bytes.len()) {
                    Ok(command) => CommittedPayload::Command(command),
                    Err(e) => {
                        return Err(StateMachineError::Corrupt {
                            index: entry.index,
                            message: e.to_string(),
                        })
                    }
                },
            };
            ids.push((log_id, matches!(payload, CommittedPayload::Command(_))));
            committed.push(Committed { log_id, payload });
        }
        let commands = ids.iter().filter(|(_, is_command)| *is_command).count();
        let responses = self.state_machine.apply(committed).await?;
        if responses.len() != commands {
            return Err(StateMachineError::Corrupt {
                index: first,
                message: format!("{} responses for {commands} commands", responses.len()),
            });
        }
        let mut responses = responses.into_iter();
        for &(log_id, is_command) in &ids {
            let response = if is_command { responses.next() } else { None };
            let Some(mut waiter) = waiters.take_applied(log_id, is_command, |p, error| {
                p.responder.fail(error);
            }) else {
                continue;
            };
            let response = response.expect("a command has a response (counted above)");
            match &mut waiter.token.responder {
                Responder::Many { responses, .. } if waiter.index < waiter.last => {
                    responses.push(response);
                    waiter.index += 1;
                    waiters.put_back(waiter);
                }
                _ => {
                    // The caller may have timed out and gone: nothing to do.
                    match waiter.token.responder {
                        Responder::One(sender) => {
                            let _ = sender.send(Ok(response));
                        }
                        Responder::Many {
                            sender,
                            mut responses,
                            ..
                        } => {
                            responses.push(response);
                            let _ = sender.send(Ok(responses));
                        }
                    }
                }
            }
        }
        self.ids = ids;
        Ok(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::command_bytes::CommandBytes;
    use crate::types::Membership;

    /// Sums its commands; installs any snapshot it is given.
    struct Sum {
        total: u64,
    }

    impl StateMachine for Sum {
        type Command = u64;
        type Response = u64;

        async fn applied(&mut self) -> Result<LogId, StateMachineError> {
            Ok(LogId::default())
        }

        async fn apply(
            &mut self,
            entries: Vec<Committed<u64>>,
        ) -> Result<Vec<u64>, StateMachineError> {
            let mut responses = Vec::new();
            for entry in entries {
                if let CommittedPayload::Command(n) = entry.payload {
                    self.total += n;
                    responses.push(self.total);
                }
            }
            Ok(responses)
        }

        async fn install_snapshot(&mut self, _snapshot: LogId) -> Result<(), StateMachineError> {
            Ok(())
        }
    }

    struct Harness {
        jobs: mpsc::UnboundedSender<ApplyJob<u64>>,
        queries: mpsc::Sender<Query<Sum>>,
        events: mpsc::UnboundedReceiver<ApplyEvent>,
        task: tokio::task::JoinHandle<()>,
    }

    fn start() -> Harness {
        let (jobs, jobs_rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (applied_watch, _) = watch::channel(0);
        let (queries_tx, queries) = mpsc::channel(16);
        let task = ApplyTask {
            state_machine: Sum { total: 0 },
            jobs: jobs_rx,
            queries,
            applied: Arc::new(AtomicU64::new(0)),
            applied_watch,
            waiting: Arc::new(AtomicUsize::new(0)),
            propose_timeout: Duration::from_secs(1),
            tick_interval: Duration::from_millis(10),
            proposals: Arc::new(ProposalQueue::new(16)),
            events: events_tx,
            metrics: Arc::new(watch::channel(Metrics::default()).0),
            ids: Vec::new(),
        };
        Harness {
            jobs,
            queries: queries_tx,
            events,
            task: tokio::spawn(task.run()),
        }
    }

    fn command(term: u64, index: u64, n: u64) -> Entry {
        Entry {
            term,
            index,
            payload: EntryPayload::Command(CommandBytes::from(codec::encode(&n))),
        }
    }

    fn one(index: u64, term: u64) -> (Waiter<u64>, oneshot::Receiver<Result<u64, ProposeError>>) {
        let (sender, receiver) = oneshot::channel();
        let waiter = Waiter {
            index,
            term,
            forwarded_to: None,
            deadline: Instant::now() + Duration::from_secs(3600),
            responder: Responder::One(sender),
        };
        (waiter, receiver)
    }

    /// Issue 13, item 1: a proposal whose index a received snapshot covers
    /// may be inside it. It was answered `Overwritten` ("retrying is
    /// safe"), and debug builds hit a `debug_assert!(false)`.
    #[tokio::test]
    async fn a_waiter_covered_by_an_installed_snapshot_is_told_its_outcome_is_indeterminate() {
        let mut harness = start();
        let (same_term, same_term_answer) = one(3, 2);
        let (newer_term, newer_term_answer) = one(4, 3);
        let (after, after_answer) = one(6, 3);
        harness
            .jobs
            .send(ApplyJob::Wait(vec![same_term, newer_term, after]))
            .unwrap();
        let meta = SnapshotMeta {
            last_log_id: LogId::new(2, 5),
            membership: Membership::default(),
        };
        harness.jobs.send(ApplyJob::InstallSnapshot(meta)).unwrap();
        harness
            .jobs
            .send(ApplyJob::Apply(vec![command(3, 6, 7)]))
            .unwrap();
        assert_eq!(
            same_term_answer.await,
            Ok(Err(ProposeError::Indeterminate { index: 3 })),
            "term 2 at index 3 may be in a snapshot ending at term 2"
        );
        assert_eq!(
            newer_term_answer.await,
            Ok(Err(ProposeError::Overwritten { index: 4 })),
            "term 3 at index 4 cannot be in a snapshot ending at term 2"
        );
        assert_eq!(after_answer.await, Ok(Ok(7)));
        assert!(matches!(
            harness.events.recv().await,
            Some(ApplyEvent::SnapshotInstalled(_))
        ));
        drop(harness.jobs);
        harness.task.await.expect("the apply task does not panic");
    }

    /// A forwarded proposal whose leader's answer arrives after its entry
    /// applied here (the answer and the commit travel apart) is told its
    /// outcome is unknown: its response is gone. Registered as an own
    /// proposal would be, it was left behind the applied index, which the
    /// waiters' invariant forbids (and `take_applied` asserts).
    #[tokio::test]
    async fn a_forwarded_waiter_registered_after_its_entry_applied_ends_unknown() {
        let harness = start();
        harness
            .jobs
            .send(ApplyJob::Apply(vec![command(1, 1, 5), command(1, 2, 6)]))
            .unwrap();
        let (mut late, late_answer) = one(1, 1);
        late.forwarded_to = Some(3);
        let (mut next, next_answer) = one(3, 1);
        next.forwarded_to = Some(3);
        // A query runs after the entries are applied: the registration
        // comes strictly later.
        let (done, applied) = oneshot::channel();
        harness
            .queries
            .send(Box::new(move |_sm: &Sum| {
                let _ = done.send(());
            }))
            .await
            .unwrap();
        applied.await.unwrap();
        harness.jobs.send(ApplyJob::Wait(vec![late, next])).unwrap();
        harness
            .jobs
            .send(ApplyJob::Apply(vec![command(1, 3, 7)]))
            .unwrap();
        assert_eq!(
            late_answer.await,
            Ok(Err(ProposeError::ForwardUnanswered { leader: 3 }))
        );
        assert_eq!(next_answer.await, Ok(Ok(18)), "one above still waits");
        drop(harness.jobs);
        harness.task.await.expect("the apply task does not panic");
    }

    /// A read of the state machine runs after every job queued before it:
    /// it sees the entries the driver handed over before the read was asked,
    /// though they were still queued.
    #[tokio::test]
    async fn a_query_sees_every_entry_queued_before_it() {
        let harness = start();
        let entries = (1..=3).map(|index| command(1, index, 10 * index)).collect();
        harness.jobs.send(ApplyJob::Apply(entries)).unwrap();
        let (sender, total) = oneshot::channel();
        let query: Query<Sum> = Box::new(move |sum: &Sum| {
            let _ = sender.send(sum.total);
        });
        harness.queries.send(query).await.unwrap();
        assert_eq!(total.await, Ok(60));
        drop(harness.jobs);
        harness.task.await.expect("the apply task does not panic");
    }
}
