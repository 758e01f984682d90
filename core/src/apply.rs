//! The apply task: feeds committed entries to the state machine in order
//! and resolves each waiting `propose` with its response.
//!
//! Waiters are keyed by log index and carry the term the entry was proposed
//! in. When the entry at that index is applied, a matching term means it is
//! the proposal (Log Matching: same index and term, same entry) and the
//! caller gets the state machine's response; another term means a new leader
//! overwrote it, and the caller learns it will never apply.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::codec;
use crate::error::{Fatal, ProposeError};
use crate::state_machine::{Committed, CommittedPayload, StateMachine, StateMachineError};
use bytes::Bytes;

use crate::engine::{SnapshotRead, SnapshotReceive};
use crate::types::{Entry, EntryPayload, LogId, NodeId, SnapshotMeta};

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
/// `propose_many`, `index` is the next of its entries to apply).
pub(crate) struct Waiter<R> {
    pub(crate) index: u64,
    pub(crate) term: u64,
    /// When the caller gets `Timeout` if its entry has not applied.
    pub(crate) deadline: Instant,
    pub(crate) responder: Responder<R>,
}

/// Work for the apply task, in the order the driver produced it.
pub(crate) enum ApplyJob<R> {
    /// Proposers of entries just appended (indexes increase across jobs).
    Wait(Vec<Waiter<R>>),
    /// Answer `Timeout` to the waiters whose deadline is at or before this
    /// instant (sent by the driver on its ticks: one timer for all
    /// proposals instead of one each).
    Expire(Instant),
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

/// Waiters above this count trigger a sweep of the ones whose caller gave up
/// (timed out): the bound on memory held for abandoned proposals.
const WAITERS_SWEEP_THRESHOLD: usize = 1 << 16;

pub(crate) struct ApplyTask<SM: StateMachine> {
    pub(crate) state_machine: SM,
    pub(crate) jobs: mpsc::UnboundedReceiver<ApplyJob<SM::Response>>,
    /// Published after every batch; the handle reads it for the commit/apply
    /// gap check and `linearizable_read` waits on it.
    pub(crate) applied: Arc<AtomicU64>,
    pub(crate) applied_watch: watch::Sender<u64>,
    /// Callers waiting for their entry, published after every run of jobs
    /// (`Metrics::proposals_waiting`).
    pub(crate) waiting: Arc<AtomicUsize>,
    pub(crate) command_bytes_max: usize,
    /// `Config::propose_timeout`, reported in `Timeout` errors.
    pub(crate) propose_timeout: Duration,
    /// Where results and failures are reported to the driver.
    pub(crate) events: mpsc::UnboundedSender<ApplyEvent>,
    /// Scratch for `apply`: the log id of each entry of a batch, and whether
    /// it is a command.
    pub(crate) ids: Vec<(LogId, bool)>,
}

impl<SM: StateMachine> ApplyTask<SM> {
    pub(crate) async fn run(mut self) {
        let mut waiters: VecDeque<Waiter<SM::Response>> = VecDeque::new();
        let mut applied = self.applied.load(Ordering::Acquire);
        let mut batch = Vec::new();
        while let Some(job) = self.jobs.recv().await {
            // Take everything queued: one state machine call per run of
            // entries; other jobs run in their place in the order.
            let mut next = Some(job);
            while let Some(job) = next.take().or_else(|| self.jobs.try_recv().ok()) {
                let result = match job {
                    ApplyJob::Wait(new) => {
                        waiters.extend(new);
                        Ok(())
                    }
                    ApplyJob::Apply(entries) => {
                        batch.extend(entries);
                        Ok(())
                    }
                    ApplyJob::Expire(now) => {
                        // Apply what came before first: an entry committed
                        // in time is answered, not timed out.
                        let result = self.flush(&mut applied, &mut batch, &mut waiters).await;
                        self.expire(&mut waiters, now);
                        result
                    }
                    other => match self.flush(&mut applied, &mut batch, &mut waiters).await {
                        Ok(()) => self.snapshot_job(other, &mut applied).await,
                        Err(error) => Err(error),
                    },
                };
                if let Err(error) = result {
                    return self.fail(error);
                }
            }
            if waiters.len() > WAITERS_SWEEP_THRESHOLD {
                waiters.retain(|w| !w.responder.is_closed());
            }
            if let Err(error) = self.flush(&mut applied, &mut batch, &mut waiters).await {
                return self.fail(error);
            }
            self.waiting.store(waiters.len(), Ordering::Release);
        }
    }

    /// Answers `Timeout` to every waiter past its deadline. The caller's
    /// entry may still apply later: its outcome is unknown.
    fn expire(&self, waiters: &mut VecDeque<Waiter<SM::Response>>, now: Instant) {
        if !waiters.iter().any(|w| w.deadline <= now) {
            return;
        }
        let mut kept = VecDeque::with_capacity(waiters.len());
        for waiter in waiters.drain(..) {
            if waiter.deadline <= now {
                waiter
                    .responder
                    .fail(ProposeError::Timeout(self.propose_timeout));
            } else {
                kept.push_back(waiter);
            }
        }
        *waiters = kept;
    }

    fn fail(&self, error: StateMachineError) {
        tracing::error!(%error, "state machine failed; stopping the node");
        let _ = self
            .events
            .send(ApplyEvent::Fatal(Fatal::StateMachine(error)));
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
        waiters: &mut VecDeque<Waiter<SM::Response>>,
    ) -> Result<(), StateMachineError> {
        if batch.is_empty() {
            return Ok(());
        }
        let entries = std::mem::take(batch);
        *applied = self.apply(*applied, entries, waiters).await?;
        self.publish(*applied);
        Ok(())
    }

    async fn snapshot_job(
        &mut self,
        job: ApplyJob<SM::Response>,
        applied: &mut u64,
    ) -> Result<(), StateMachineError> {
        let sm = &mut self.state_machine;
        let event = match job {
            ApplyJob::Wait(_) | ApplyJob::Apply(_) | ApplyJob::Expire(_) => {
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
        waiters: &mut VecDeque<Waiter<SM::Response>>,
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
                EntryPayload::Command(bytes) => match codec::decode(&bytes, self.command_bytes_max)
                {
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
        for &(LogId { term, index }, is_command) in &ids {
            while waiters.front().is_some_and(|w| w.index < index) {
                // Registered for an index already applied: cannot happen, as
                // waiters are registered before their entry commits; answer
                // rather than leak.
                let waiter = waiters.pop_front().expect("front exists");
                debug_assert!(false, "waiter for {} left behind at {index}", waiter.index);
                waiter.responder.fail(ProposeError::Overwritten {
                    index: waiter.index,
                });
            }
            let response = if is_command { responses.next() } else { None };
            let Some(waiter) = waiters.front_mut().filter(|w| w.index == index) else {
                continue;
            };
            let response = match response {
                Some(response) if waiter.term == term => response,
                _ => {
                    let waiter = waiters.pop_front().expect("front exists");
                    waiter.responder.fail(ProposeError::Overwritten { index });
                    continue;
                }
            };
            match &mut waiter.responder {
                Responder::Many {
                    responses, count, ..
                } if responses.len() + 1 < *count => {
                    responses.push(response);
                    waiter.index += 1;
                }
                _ => {
                    let waiter = waiters.pop_front().expect("front exists");
                    // The caller may have timed out and gone: nothing to do.
                    match waiter.responder {
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
