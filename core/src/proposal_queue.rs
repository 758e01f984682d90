//! The proposal queue between the callers of `propose` and the driver.
//!
//! A channel costs every proposal a send and a receive, each a few atomic
//! operations on cache lines both cores write. Here the queue is split into
//! shards, one per worker thread or so: a caller pushes onto its thread's
//! shard under a lock no other core is taking (so the lock's cache line
//! stays put), and wakes the driver only when the shard was empty. The
//! driver takes each shard whole, in one lock, once a turn.
//!
//! Order: proposals pushed from one thread keep their order (a task's
//! proposals made in one poll, in particular). Proposals pushed concurrently
//! from different threads are unordered, as concurrent calls are anyway; a
//! caller that needs one proposal before another waits for the first.
//!
//! Bounded: the shards share `Config::proposal_queue_max` between them, and
//! a caller that finds its shard full waits for room, within its deadline;
//! the driver wakes such callers when it takes from a full shard.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{timeout_at, Instant};

use crate::apply::Responder;
use crate::command_bytes::CommandBytes;
use crate::error::ProposeError;

/// Commands waiting to be appended: one (`propose`) or several that are
/// appended together as consecutive entries (`propose_many`).
pub(crate) struct Proposal<R> {
    pub(crate) payloads: Payloads,
    pub(crate) responder: Responder<R>,
    /// Set when the caller waited for room in the queue; otherwise the
    /// deadline is `Config::propose_timeout` from the turn that takes it.
    pub(crate) deadline: Option<Instant>,
}

/// The encoded commands of a proposal.
pub(crate) enum Payloads {
    One(CommandBytes),
    Many(Vec<CommandBytes>),
}

impl Payloads {
    /// How many commands.
    pub(crate) fn len(&self) -> usize {
        match self {
            Payloads::One(_) => 1,
            Payloads::Many(payloads) => payloads.len(),
        }
    }
}

/// The most shards a queue is split into (one per available core, fewer if
/// the queue is smaller).
const SHARDS_MAX: usize = 16;

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

/// Invariant: each shard holds at most its capacity; the capacities add up
/// to the queue's; once closed, every shard stays empty.
pub(crate) struct ProposalQueue<R> {
    shards: Box<[Shard<R>]>,
    /// Wakes the driver when a shard turns non-empty.
    ready: Notify,
    /// Wakes callers waiting for room when the driver takes from a full shard.
    room: Notify,
}

/// Aligned to its own cache lines (two, for adjacent-line prefetch), so
/// pushes on one core do not disturb another core's shard.
#[repr(align(128))]
struct Shard<R> {
    state: Mutex<State<R>>,
    capacity: usize,
}

struct State<R> {
    proposals: Vec<Proposal<R>>,
    closed: bool,
}

impl<R> Shard<R> {
    fn lock(&self) -> MutexGuard<'_, State<R>> {
        // Nothing panics while holding the lock (a push, a move), so a
        // poisoned lock still holds a consistent shard.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// This thread's shard (of `count`): threads are numbered in the order
/// they first propose, so a runtime's workers spread over the shards.
fn shard_of_this_thread(count: usize) -> usize {
    static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static THREAD: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
    }
    THREAD.with(|thread| thread % count)
}

impl<R> ProposalQueue<R> {
    /// A queue of `capacity` proposals (at least 1), in a shard per core.
    pub(crate) fn new(capacity: usize) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_shards(capacity, cores.min(SHARDS_MAX))
    }

    /// A queue of `capacity` proposals in up to `shards` shards (at least
    /// one, at most one per proposal of capacity).
    pub(crate) fn with_shards(capacity: usize, shards: usize) -> Self {
        debug_assert!(capacity > 0, "Config::validate refuses an empty queue");
        let count = shards.clamp(1, capacity.max(1));
        let shards = (0..count)
            .map(|i| Shard {
                state: Mutex::new(State {
                    proposals: Vec::new(),
                    closed: false,
                }),
                capacity: capacity / count + usize::from(i < capacity % count),
            })
            .collect();
        Self {
            shards,
            ready: Notify::new(),
            room: Notify::new(),
        }
    }

    /// Queues `proposal` if its shard has room.
    pub(crate) fn try_push(&self, proposal: Proposal<R>) -> Result<(), PushError<R>> {
        let shard = &self.shards[shard_of_this_thread(self.shards.len())];
        let was_empty = {
            let mut state = shard.lock();
            if state.closed {
                return Err(PushError::Closed);
            }
            if state.proposals.len() >= shard.capacity {
                return Err(PushError::Full(proposal));
            }
            state.proposals.push(proposal);
            state.proposals.len() == 1
        };
        if was_empty {
            // The driver takes whole shards (unless its batch fills up, and
            // then it goes on without sleeping), so it only sleeps with
            // every shard empty: the push that ends a shard's emptiness
            // wakes it.
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

    /// Moves queued proposals into `into`, each shard's in order, up to
    /// `commands_max` commands (at least one proposal, however many commands
    /// it has). `turn` rotates which shard goes first, so that none waits
    /// behind the others turn after turn. Returns whether proposals are
    /// left behind.
    pub(crate) fn take(
        &self,
        into: &mut Vec<Proposal<R>>,
        commands_max: usize,
        turn: usize,
    ) -> bool {
        let count = self.shards.len();
        let mut commands = 0;
        let mut left = false;
        let mut made_room = false;
        for i in 0..count {
            let shard = &self.shards[(turn + i) % count];
            let mut state = shard.lock();
            if state.proposals.is_empty() {
                continue;
            }
            let was_full = state.proposals.len() >= shard.capacity;
            let taking = state
                .proposals
                .iter()
                .take_while(|p| {
                    let fits = commands == 0 || commands + p.payloads.len() <= commands_max;
                    if fits {
                        commands += p.payloads.len();
                    }
                    fits
                })
                .count();
            if taking == state.proposals.len() && into.is_empty() {
                // The common case: a whole shard, by swapping buffers (the
                // driver's empty one, with its capacity, becomes the shard's).
                std::mem::swap(&mut state.proposals, into);
            } else {
                into.extend(state.proposals.drain(..taking));
            }
            made_room |= was_full && taking > 0;
            left |= !state.proposals.is_empty();
        }
        if made_room {
            self.room.notify_waiters();
        }
        left
    }

    /// The deadline of proposals the driver has not taken: each gets one,
    /// `timeout` from the first sweep that finds it (so at most a sweep
    /// period later than the call), and one past it is answered `Timeout`.
    /// Run by the apply task on its ticks, so a proposal's deadline holds
    /// even while the driver is stuck or gone; the driver itself gives a
    /// proposal without one `timeout` from the turn that takes it.
    pub(crate) fn expire(&self, now: Instant, timeout: Duration) {
        let mut made_room = false;
        for shard in self.shards.iter() {
            let expired = {
                let mut state = shard.lock();
                if state.proposals.is_empty() {
                    continue;
                }
                let was_full = state.proposals.len() >= shard.capacity;
                let mut expired = Vec::new();
                if state
                    .proposals
                    .iter()
                    .any(|p| p.deadline.is_some_and(|d| d <= now))
                {
                    let (gone, kept) = std::mem::take(&mut state.proposals)
                        .into_iter()
                        .partition(|p| p.deadline.is_some_and(|d| d <= now));
                    state.proposals = kept;
                    expired = gone;
                }
                for proposal in &mut state.proposals {
                    proposal.deadline.get_or_insert(now + timeout);
                }
                made_room |= was_full && !expired.is_empty();
                expired
            };
            // Answered outside the lock: each answer wakes a caller.
            for proposal in expired {
                proposal.responder.fail(ProposeError::Timeout(timeout));
            }
        }
        if made_room {
            self.room.notify_waiters();
        }
    }

    /// Refuses every later push and drops what is queued, so that each
    /// waiting caller learns the node stopped.
    pub(crate) fn close(&self) {
        for shard in self.shards.iter() {
            let dropped = {
                let mut state = shard.lock();
                state.closed = true;
                std::mem::take(&mut state.proposals)
            };
            // Dropped outside the lock: each drop wakes a caller.
            drop(dropped);
        }
        self.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;
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
        let queue = ProposalQueue::with_shards(4, 1);
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
        assert!(queue.take(&mut taken, 4, 0));
        let counts: Vec<usize> = taken.iter().map(|p| p.payloads.len()).collect();
        assert_eq!(counts, [1, 3]);
        taken.clear();
        // A budget below the first proposal still takes that one.
        assert!(queue.take(&mut taken, 0, 0));
        assert_eq!(taken.len(), 1);
        taken.clear();
        assert!(!queue.take(&mut taken, 100, 0));
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].payloads.len(), 2);
    }

    /// Shards split the capacity exactly; a thread's pushes land in one
    /// shard, in order; one take gathers every shard.
    #[test]
    fn shards_split_the_capacity_and_one_take_gathers_them_all() {
        let queue = std::sync::Arc::new(ProposalQueue::<()>::with_shards(5, 2));
        let capacities: Vec<usize> = queue.shards.iter().map(|s| s.capacity).collect();
        assert_eq!(capacities, [3, 2]);
        assert_eq!(ProposalQueue::<()>::with_shards(1, 16).shards.len(), 1);
        // Threads push until their shard is full; threads land on shards
        // by the order they first push, so keep adding threads until both
        // shards are full. Each thread pushes proposals of its own size.
        let mut pushed = Vec::new();
        for thread in 0..64 {
            if pushed.iter().map(|(_, n)| n).sum::<usize>() == 5 {
                break;
            }
            let queue = queue.clone();
            let n = std::thread::spawn(move || {
                let mut n = 0;
                while queue.try_push(proposal(thread + 1).0).is_ok() {
                    n += 1;
                }
                n
            })
            .join()
            .unwrap();
            if n > 0 {
                pushed.push((thread + 1, n));
            }
        }
        assert_eq!(pushed.len(), 2, "{pushed:?}: one thread filled each shard");
        let mut taken = Vec::new();
        assert!(!queue.take(&mut taken, usize::MAX, 0));
        let sizes: Vec<usize> = taken.iter().map(|p| p.payloads.len()).collect();
        let mut expected: Vec<usize> = pushed
            .iter()
            .flat_map(|&(size, n)| std::iter::repeat_n(size, n))
            .collect();
        let mut sorted = sizes.clone();
        sorted.sort();
        expected.sort();
        assert_eq!(sorted, expected, "one take gathers both shards");
        // Each thread's proposals come out contiguous.
        let mut runs = sizes.clone();
        runs.dedup();
        assert_eq!(runs.len(), 2, "{sizes:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_makes_callers_wait_until_the_driver_takes_or_the_deadline() {
        let queue = std::sync::Arc::new(ProposalQueue::with_shards(1, 1));
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
        assert!(!queue.take(&mut taken, 10, 0));
        assert!(
            waiting.await.unwrap(),
            "room made by take lets the caller in"
        );
    }

    #[tokio::test]
    async fn close_answers_queued_and_waiting_callers_and_refuses_new_ones() {
        let queue = std::sync::Arc::new(ProposalQueue::with_shards(1, 1));
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
                queue.take(&mut taken, 100, 0);
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
