//! The proposal queue between the callers of `propose` and the driver.
//!
//! A channel costs every proposal a send and a receive, each a few atomic
//! operations on cache lines both cores write. Here a caller pushes under a
//! short lock and wakes the driver only when the queue was empty; the driver
//! takes the whole queue in one swap per turn. So a burst of proposals costs
//! one lock each and one wake-up for all of them.
//!
//! Bounded (`Config::proposal_queue_max` proposals): a caller that finds it
//! full waits for room, within its deadline; the driver wakes such callers
//! when it takes from a full queue.

use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::time::{timeout_at, Instant};

use crate::driver::Proposal;

/// Why a proposal was not queued.
pub(crate) enum PushError<R> {
    /// The queue is at capacity; the proposal is handed back.
    Full(Proposal<R>),
    /// The node stopped.
    Closed,
}

/// Why a proposal waiting for room was not queued.
pub(crate) enum WaitError {
    /// The deadline passed while the queue stayed full.
    Timeout,
    /// The node stopped.
    Closed,
}

/// Invariant: `proposals.len() <= capacity`; once `closed`, `proposals`
/// stays empty.
pub(crate) struct ProposalQueue<R> {
    state: Mutex<State<R>>,
    /// Wakes the driver when the queue turns non-empty (or closes).
    ready: Notify,
    /// Wakes callers waiting for room when the driver takes from a full queue.
    room: Notify,
    capacity: usize,
}

struct State<R> {
    proposals: Vec<Proposal<R>>,
    closed: bool,
}

impl<R> ProposalQueue<R> {
    pub(crate) fn new(capacity: usize) -> Self {
        debug_assert!(capacity > 0, "Config::validate refuses an empty queue");
        Self {
            state: Mutex::new(State {
                proposals: Vec::new(),
                closed: false,
            }),
            ready: Notify::new(),
            room: Notify::new(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<R>> {
        // Nothing panics while holding the lock (a push and a swap), so a
        // poisoned lock still holds a consistent queue.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `proposal` if there is room.
    pub(crate) fn try_push(&self, proposal: Proposal<R>) -> Result<(), PushError<R>> {
        let was_empty = {
            let mut state = self.lock();
            if state.closed {
                return Err(PushError::Closed);
            }
            if state.proposals.len() >= self.capacity {
                return Err(PushError::Full(proposal));
            }
            state.proposals.push(proposal);
            state.proposals.len() == 1
        };
        if was_empty {
            // The driver takes everything each turn, so it only sleeps on an
            // empty queue: the push that ends the emptiness wakes it.
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Queues `proposal`, waiting for room until `deadline`.
    pub(crate) async fn push_until(
        &self,
        mut proposal: Proposal<R>,
        deadline: Instant,
    ) -> Result<(), WaitError> {
        loop {
            // Registered before the attempt, so room made between a failed
            // attempt and the wait is not missed.
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_push(proposal) {
                Ok(()) => return Ok(()),
                Err(PushError::Closed) => return Err(WaitError::Closed),
                Err(PushError::Full(back)) => proposal = back,
            }
            if timeout_at(deadline, room).await.is_err() {
                return Err(WaitError::Timeout);
            }
        }
    }

    /// Waits until the queue may hold proposals (spurious wake-ups are
    /// possible: `take` may then find nothing).
    pub(crate) async fn ready(&self) {
        self.ready.notified().await
    }

    /// Moves queued proposals into `into` (which must be empty) in order, up
    /// to `commands_max` commands (at least one proposal, however many
    /// commands it has). Returns whether proposals are left behind.
    pub(crate) fn take(&self, into: &mut Vec<Proposal<R>>, commands_max: usize) -> bool {
        debug_assert!(into.is_empty());
        let (was_full, left) = {
            let mut state = self.lock();
            let was_full = state.proposals.len() >= self.capacity;
            let mut commands = 0;
            let count = state
                .proposals
                .iter()
                .take_while(|p| {
                    let fits = commands == 0 || commands + p.payloads.len() <= commands_max;
                    commands += p.payloads.len();
                    fits
                })
                .count();
            if count == state.proposals.len() {
                // The common case: everything, by swapping buffers (the
                // driver's empty one, with its capacity, becomes the queue's).
                std::mem::swap(&mut state.proposals, into);
            } else {
                into.extend(state.proposals.drain(..count));
            }
            (was_full, !state.proposals.is_empty())
        };
        if was_full {
            self.room.notify_waiters();
        }
        left
    }

    /// Refuses every later push and drops what is queued, so that each
    /// waiting caller learns the node stopped.
    pub(crate) fn close(&self) {
        let dropped = {
            let mut state = self.lock();
            state.closed = true;
            std::mem::take(&mut state.proposals)
        };
        // Dropped outside the lock: each drop wakes a caller.
        drop(dropped);
        self.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;
    use crate::apply::Responder;
    use crate::command_bytes::CommandBytes;
    use crate::driver::Payloads;
    use crate::error::ProposeError;

    type Answer = oneshot::Receiver<Result<(), ProposeError>>;

    fn proposal(commands: usize) -> (Proposal<()>, Answer) {
        let (sender, answer) = oneshot::channel();
        let payloads = if commands == 1 {
            Payloads::One(CommandBytes::from(b"x"))
        } else {
            Payloads::Many(vec![CommandBytes::from(b"x"); commands])
        };
        let responder = Responder::One(sender);
        let proposal = Proposal {
            payloads,
            responder,
            deadline: None,
        };
        (proposal, answer)
    }

    #[test]
    fn takes_in_order_within_the_command_budget_and_refuses_when_full() {
        let queue = ProposalQueue::new(4);
        let sizes = [1, 3, 1, 2];
        for &n in &sizes {
            assert!(queue.try_push(proposal(n).0).is_ok());
        }
        assert!(matches!(
            queue.try_push(proposal(1).0),
            Err(PushError::Full(_))
        ));
        let mut taken = Vec::new();
        // Budget 4: the first two (1 + 3), not the third.
        assert!(queue.take(&mut taken, 4));
        let counts: Vec<usize> = taken.iter().map(|p| p.payloads.len()).collect();
        assert_eq!(counts, [1, 3]);
        taken.clear();
        // A budget below the first proposal still takes that one.
        assert!(queue.take(&mut taken, 0));
        assert_eq!(taken.len(), 1);
        taken.clear();
        assert!(!queue.take(&mut taken, 100));
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].payloads.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_makes_callers_wait_until_the_driver_takes_or_the_deadline() {
        let queue = std::sync::Arc::new(ProposalQueue::new(1));
        assert!(queue.try_push(proposal(1).0).is_ok());
        // Nobody takes: the wait times out.
        let deadline = Instant::now() + Duration::from_millis(100);
        let timed_out = queue.push_until(proposal(1).0, deadline).await;
        assert!(matches!(timed_out, Err(WaitError::Timeout)));
        // The driver takes while a caller waits: the caller gets in.
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move {
                let deadline = Instant::now() + Duration::from_secs(10);
                queue.push_until(proposal(1).0, deadline).await.is_ok()
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        let mut taken = Vec::new();
        assert!(!queue.take(&mut taken, 10));
        assert!(
            waiting.await.unwrap(),
            "room made by take lets the caller in"
        );
    }

    #[tokio::test]
    async fn close_answers_queued_and_waiting_callers_and_refuses_new_ones() {
        let queue = std::sync::Arc::new(ProposalQueue::new(1));
        let (queued, answer) = proposal(1);
        assert!(queue.try_push(queued).is_ok());
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                queue.push_until(proposal(1).0, deadline).await
            }
        });
        tokio::task::yield_now().await;
        queue.close();
        assert!(
            answer.await.is_err(),
            "the queued caller's answer is dropped"
        );
        assert!(matches!(waiting.await.unwrap(), Err(WaitError::Closed)));
        assert!(matches!(
            queue.try_push(proposal(1).0),
            Err(PushError::Closed)
        ));
    }

    #[tokio::test]
    async fn the_push_that_ends_emptiness_wakes_the_driver() {
        let queue = std::sync::Arc::new(ProposalQueue::<()>::new(8));
        let driver = tokio::spawn({
            let queue = queue.clone();
            async move {
                queue.ready().await;
                let mut taken = Vec::new();
                queue.take(&mut taken, 100);
                taken.len()
            }
        });
        tokio::task::yield_now().await;
        assert!(queue.try_push(proposal(1).0).is_ok());
        let taken = tokio::time::timeout(Duration::from_secs(10), driver)
            .await
            .expect("the driver woke")
            .unwrap();
        assert_eq!(taken, 1);
    }
}
