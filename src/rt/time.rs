//! Time: the cached clock and timers.
//!
//! [`now`] is the instant the executor read at the start of the current loop turn (one clock
//! read per turn); code on a core uses it instead of `Instant::now()`. It is behind the real
//! clock by at most the time the turn has run so far.
//!
//! Timers with a common duration (a connection's 500 ms idle check, its write timeout) go
//! to a FIFO lane per duration: deadlines made from the cached clock plus the same duration
//! arrive in order, so arming one is a push at the back and firing one a pop at the front —
//! O(1). Other timers live in a binary heap ordered by deadline. Both use lazy deletion: a
//! timer dropped before it fires (the usual case: a read timeout whose read completed) only
//! frees its slot, and its entry is skipped when it reaches the front; stale entries are
//! swept out once they outnumber the live timers. [`timeout`] polls its future first and arms
//! its timer only if the future has to wait, so an operation that completes at once costs no
//! timer at all.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::executor;

/// Stale entries tolerated beyond twice the live timers before they are swept out.
const STALE_ENTRIES_SLACK: usize = 1024;
/// Durations that get a FIFO lane of their own (the first ones seen); others use the heap.
const LANES_MAX: usize = 8;

/// Timers armed with one duration, in deadline order.
struct Lane {
    duration: Duration,
    entries: std::collections::VecDeque<(Instant, u32, u32)>,
}

/// The executor's clock for this loop turn; outside an executor, the real clock.
pub fn now() -> Instant {
    executor::with(|rt| rt.now.get()).unwrap_or_else(Instant::now)
}

struct TimerSlot {
    generation: u32,
    in_use: bool,
    fired: bool,
    waker: Option<Waker>,
}

/// The executor's timers.
#[derive(Default)]
pub(crate) struct Timers {
    lanes: Vec<Lane>,
    heap: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    slots: Vec<TimerSlot>,
    free: Vec<u32>,
    live: usize,
}

impl Timers {
    /// Entries in the lanes and the heap, live or stale.
    fn entries(&self) -> usize {
        self.heap.len() + self.lanes.iter().map(|l| l.entries.len()).sum::<usize>()
    }

    /// Queues an entry: in the lane of its duration if it keeps that lane in order.
    fn queue(&mut self, now: Instant, entry: (Instant, u32, u32)) {
        let duration = entry.0.saturating_duration_since(now);
        let lane = match self.lanes.iter().position(|l| l.duration == duration) {
            Some(i) => Some(i),
            None if self.lanes.len() < LANES_MAX && !duration.is_zero() => {
                self.lanes.push(Lane {
                    duration,
                    entries: Default::default(),
                });
                Some(self.lanes.len() - 1)
            }
            None => None,
        };
        if let Some(lane) = lane.map(|i| &mut self.lanes[i]) {
            if lane.entries.back().is_none_or(|back| back.0 <= entry.0) {
                lane.entries.push_back(entry);
                return;
            }
        }
        self.heap.push(Reverse(entry));
    }

    fn insert(&mut self, deadline: Instant, now: Instant, waker: Waker) -> (u32, u32) {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(TimerSlot {
                    generation: 0,
                    in_use: false,
                    fired: false,
                    waker: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.in_use = true;
        slot.fired = false;
        slot.waker = Some(waker);
        let generation = slot.generation;
        self.queue(now, (deadline, index, generation));
        self.live += 1;
        (index, generation)
    }

    /// Frees a timer's slot (fired or not); its heap entry, if any, goes stale.
    fn remove(&mut self, index: u32, generation: u32) -> Option<Waker> {
        let slot = self.slots.get_mut(index as usize)?;
        if !slot.in_use || slot.generation != generation {
            return None;
        }
        slot.in_use = false;
        slot.generation = slot.generation.wrapping_add(1);
        let waker = slot.waker.take();
        self.free.push(index);
        self.live -= 1;
        if self.entries() > 2 * self.live + STALE_ENTRIES_SLACK {
            let slots = &self.slots;
            let live = |i: u32, g: u32| slots[i as usize].generation == g;
            self.heap.retain(|Reverse((_, i, g))| live(*i, *g));
            for lane in &mut self.lanes {
                lane.entries.retain(|(_, i, g)| live(*i, *g));
            }
        }
        waker
    }

    /// Whether the timer fired; else records `waker` for when it does.
    fn poll(&mut self, index: u32, generation: u32, waker: &Waker) -> bool {
        let Some(slot) = self.slots.get_mut(index as usize) else {
            return true;
        };
        if slot.generation != generation || slot.fired {
            return true;
        }
        match &slot.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => slot.waker = Some(waker.clone()),
        }
        false
    }

    fn is_live(&self, i: u32, g: u32) -> bool {
        let slot = &self.slots[i as usize];
        slot.generation == g && slot.in_use && !slot.fired
    }

    /// The earliest deadline of a live timer.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        let mut earliest = None;
        for l in 0..self.lanes.len() {
            while let Some(&(deadline, i, g)) = self.lanes[l].entries.front() {
                if self.is_live(i, g) {
                    earliest = Some(earliest.map_or(deadline, |e: Instant| e.min(deadline)));
                    break;
                }
                self.lanes[l].entries.pop_front();
            }
        }
        while let Some(Reverse((deadline, i, g))) = self.heap.peek().copied() {
            if self.is_live(i, g) {
                earliest = Some(earliest.map_or(deadline, |e: Instant| e.min(deadline)));
                break;
            }
            self.heap.pop();
        }
        earliest
    }

    fn fire_one(&mut self, i: u32, g: u32, due: &mut Vec<Waker>) {
        if self.is_live(i, g) {
            let slot = &mut self.slots[i as usize];
            slot.fired = true;
            if let Some(w) = slot.waker.take() {
                due.push(w);
            }
        }
    }

    /// Marks every timer due at `now` fired; adds their wakers to `due`.
    pub(crate) fn fire(&mut self, now: Instant, due: &mut Vec<Waker>) {
        for l in 0..self.lanes.len() {
            while let Some(&(deadline, i, g)) = self.lanes[l].entries.front() {
                if deadline > now {
                    break;
                }
                self.lanes[l].entries.pop_front();
                self.fire_one(i, g, due);
            }
        }
        while let Some(Reverse((deadline, i, g))) = self.heap.peek().copied() {
            if deadline > now {
                break;
            }
            self.heap.pop();
            self.fire_one(i, g, due);
        }
    }
}

/// A future that completes at a deadline. Registered only when first polled before it.
pub struct Sleep {
    deadline: Instant,
    /// (slot index, generation) once registered.
    entry: Option<(u32, u32)>,
    done: bool,
}

impl Sleep {
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// Completes after `duration` (counted from [`now`]).
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(now() + duration)
}

/// Completes at `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        entry: None,
        done: false,
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.done {
            return Poll::Ready(());
        }
        let this = &mut *self;
        let ready = executor::with(|rt| {
            let mut timers = rt.timers.borrow_mut();
            match this.entry {
                Some((i, g)) => {
                    if timers.poll(i, g, cx.waker()) {
                        let w = timers.remove(i, g);
                        drop(timers);
                        drop(w);
                        this.entry = None;
                        true
                    } else {
                        false
                    }
                }
                None if this.deadline <= rt.now.get() => true,
                None => {
                    this.entry =
                        Some(timers.insert(this.deadline, rt.now.get(), cx.waker().clone()));
                    false
                }
            }
        });
        match ready {
            Some(true) => {
                self.done = true;
                Poll::Ready(())
            }
            Some(false) => Poll::Pending,
            None => panic!("rt::sleep polled outside an executor"),
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some((i, g)) = self.entry.take() {
            let w = executor::with(|rt| rt.timers.borrow_mut().remove(i, g));
            drop(w); // outside the borrow
        }
    }
}

/// The deadline of a [`timeout`] passed before its future completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed;

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for std::io::Error {
    fn from(_: Elapsed) -> Self {
        std::io::Error::new(std::io::ErrorKind::TimedOut, Elapsed)
    }
}

/// `future`, unless `duration` (counted from [`now`]) passes first.
pub fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    timeout_at(now() + duration, future)
}

/// `future`, unless `deadline` passes first.
pub fn timeout_at<F: Future>(deadline: Instant, future: F) -> Timeout<F> {
    Timeout {
        future,
        sleep: sleep_until(deadline),
    }
}

/// See [`timeout`]. The future is polled before the deadline is looked at: one that is ready
/// at once never arms a timer.
pub struct Timeout<F> {
    future: F,
    sleep: Sleep,
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: `future` is structurally pinned (never moved out of `self`); `sleep` is
        // Unpin.
        let this = unsafe { self.get_unchecked_mut() };
        let future = unsafe { Pin::new_unchecked(&mut this.future) };
        if let Poll::Ready(v) = future.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match Pin::new(&mut this.sleep).poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::{block_on, spawn_local};
    use std::cell::RefCell;
    use std::rc::Rc;

    #[test]
    fn timers_fire_in_order() {
        let order = block_on(async {
            let order = Rc::new(RefCell::new(Vec::new()));
            let mut tasks = Vec::new();
            for (name, ms) in [("c", 30u64), ("a", 10), ("b", 20), ("z", 0)] {
                let order = order.clone();
                tasks.push(spawn_local(async move {
                    sleep(Duration::from_millis(ms)).await;
                    order.borrow_mut().push(name);
                }));
            }
            for t in tasks {
                t.await;
            }
            let v = order.borrow().clone();
            v
        });
        assert_eq!(order, ["z", "a", "b", "c"]);
    }

    #[test]
    fn lanes_and_the_heap_fire_together_in_deadline_order() {
        // More durations than lanes (the rest go to the heap), several timers per duration
        // armed over several turns, some cancelled: the rest fire in deadline order.
        let order = block_on(async {
            let order = Rc::new(RefCell::new(Vec::new()));
            let mut tasks = Vec::new();
            for round in 0..3u64 {
                for ms in [40u64, 5, 25, 10, 35, 15, 30, 20, 45, 50, 12] {
                    let order = order.clone();
                    let cancelled = ms == 25 && round == 1;
                    tasks.push(spawn_local(async move {
                        let s = sleep(Duration::from_millis(ms));
                        // The deadline as armed: tasks of one round may start in different
                        // turns on a loaded machine, so nominal times can tie or swap.
                        let deadline = s.deadline();
                        if cancelled {
                            let _ = timeout(Duration::from_millis(1), s).await;
                            return;
                        }
                        s.await;
                        order.borrow_mut().push((deadline, ms, round));
                    }));
                }
                // The next round's timers are armed 60 ms later.
                sleep(Duration::from_millis(60)).await;
            }
            for t in tasks {
                t.await;
            }
            let lanes = crate::rt::executor::with(|rt| rt.timers.borrow().lanes.len()).unwrap();
            assert_eq!(lanes, LANES_MAX);
            let v = order.borrow().clone();
            v
        });
        assert_eq!(order.len(), 32);
        let deadlines: Vec<Instant> = order.iter().map(|o| o.0).collect();
        let mut sorted = deadlines.clone();
        sorted.sort_unstable();
        assert_eq!(deadlines, sorted, "{order:?}");
        assert!(!order.iter().any(|&(_, ms, round)| ms == 25 && round == 1));
    }

    #[test]
    fn stale_lane_entries_do_not_pile_up() {
        block_on(async {
            // The same duration over and over (a connection's read timeout that its read
            // beats): one lane, swept like the heap.
            for _ in 0..10_000 {
                let mut s = sleep(Duration::from_millis(500));
                assert!(futures_lite::future::poll_once(&mut s).await.is_none());
            }
            let (lanes, len) = crate::rt::executor::with(|rt| {
                let t = rt.timers.borrow();
                (t.lanes.len(), t.entries())
            })
            .unwrap();
            assert_eq!(lanes, 1);
            assert!(len <= STALE_ENTRIES_SLACK + 1, "{len} entries for 0 timers");
        });
    }

    #[test]
    fn sleep_waits_at_least_its_duration() {
        let started = Instant::now();
        block_on(sleep(Duration::from_millis(15)));
        assert!(started.elapsed() >= Duration::from_millis(15));
    }

    #[test]
    fn timeouts_fire_and_cancel() {
        block_on(async {
            // A future that never completes times out.
            let r = timeout(
                Duration::from_millis(5),
                futures_lite::future::pending::<()>(),
            )
            .await;
            assert_eq!(r, Err(Elapsed));
            // A ready future never arms a timer.
            assert_eq!(timeout(Duration::from_millis(5), async { 7 }).await, Ok(7));
            let armed = crate::rt::executor::with(|rt| rt.timers.borrow().live).unwrap();
            assert_eq!(armed, 0);
            // A future that completes first cancels its timer: the slot is freed at once.
            let r = timeout(Duration::from_secs(60), sleep(Duration::from_millis(2))).await;
            assert_eq!(r, Ok(()));
            let armed = crate::rt::executor::with(|rt| rt.timers.borrow().live).unwrap();
            assert_eq!(armed, 0);
        });
    }

    #[test]
    fn stale_timer_entries_do_not_pile_up() {
        block_on(async {
            for _ in 0..10_000 {
                let mut s = sleep(Duration::from_secs(90));
                // Arm it, then drop it before it fires.
                assert!(futures_lite::future::poll_once(&mut s).await.is_none());
            }
            let len = crate::rt::executor::with(|rt| rt.timers.borrow().entries()).unwrap();
            assert!(
                len <= STALE_ENTRIES_SLACK + 1,
                "{len} timer entries for 0 timers"
            );
        });
    }

    #[test]
    fn now_is_cached_per_turn() {
        block_on(async {
            let a = now();
            std::thread::sleep(Duration::from_millis(2));
            assert_eq!(now(), a, "the clock moved within one poll");
            futures_lite::future::yield_now().await;
            assert!(now() > a, "the clock did not move across turns");
        });
    }
}
