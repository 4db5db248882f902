//! Time: the cached clock and timers.
//!
//! [`now`] is the instant the executor read at the start of the current loop turn (one clock
//! read per turn); code on a core uses it instead of `Instant::now()`. It is behind the real
//! clock by at most the time the turn has run so far.
//!
//! Timers live in a binary heap ordered by deadline, with lazy deletion: a timer dropped
//! before it fires (the usual case: a read timeout whose read completed) only frees its slot,
//! and its heap entry is skipped when it reaches the top; the heap is rebuilt without stale
//! entries once they outnumber the live ones. [`timeout`] polls its future first and arms its
//! timer only if the future has to wait, so an operation that completes at once costs no
//! timer at all.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::executor;

/// Stale heap entries tolerated beyond twice the live timers before the heap is rebuilt.
const STALE_ENTRIES_SLACK: usize = 1024;

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
    heap: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    slots: Vec<TimerSlot>,
    free: Vec<u32>,
    live: usize,
}

impl Timers {
    fn insert(&mut self, deadline: Instant, waker: Waker) -> (u32, u32) {
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
        self.heap.push(Reverse((deadline, index, generation)));
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
        if self.heap.len() > 2 * self.live + STALE_ENTRIES_SLACK {
            let slots = &self.slots;
            self.heap
                .retain(|Reverse((_, i, g))| slots[*i as usize].generation == *g);
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

    /// The earliest deadline of a live timer.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((deadline, i, g))) = self.heap.peek().copied() {
            let slot = &self.slots[i as usize];
            if slot.generation == g && slot.in_use && !slot.fired {
                return Some(deadline);
            }
            self.heap.pop();
        }
        None
    }

    /// Marks every timer due at `now` fired; adds their wakers to `due`.
    pub(crate) fn fire(&mut self, now: Instant, due: &mut Vec<Waker>) {
        while let Some(Reverse((deadline, i, g))) = self.heap.peek().copied() {
            if deadline > now {
                break;
            }
            self.heap.pop();
            let slot = &mut self.slots[i as usize];
            if slot.generation == g && slot.in_use && !slot.fired {
                slot.fired = true;
                if let Some(w) = slot.waker.take() {
                    due.push(w);
                }
            }
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
                    this.entry = Some(timers.insert(this.deadline, cx.waker().clone()));
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
            let len = crate::rt::executor::with(|rt| rt.timers.borrow().heap.len()).unwrap();
            assert!(
                len <= STALE_ENTRIES_SLACK + 1,
                "{len} heap entries for 0 timers"
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
