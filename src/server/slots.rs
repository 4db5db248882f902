//! A core's connection table: the per-core connection cap, what each connection is doing,
//! and eviction at the cap.
//!
//! At the cap a new connection does not simply get dropped: that would let anyone who opens
//! enough silent connections lock everybody out, the admin included. Instead the oldest
//! connection that waits only on its client — one that has not yet sent a complete request
//! (handshaking, or connected and silent), or one whose answers are all held back by its own
//! HTTP/2 flow-control windows — is closed to make room, and failing that the connection idle
//! the longest between requests. Connections with a request being read or handled, or a log
//! stream, are never evicted.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// What a connection is doing, for eviction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// TLS handshake, or waiting for the head of its first request: nothing served yet.
    Fresh,
    /// Between requests (keep-alive).
    Idle,
    /// Requests open, but every one waits only on the client: its answer is held back by the
    /// client's flow-control windows (HTTP/2), or the client is still sending after it.
    Stalled,
    /// A request is being read, handled or answered, or a log is being streamed.
    Busy,
}

/// One connection's entry.
#[derive(Debug)]
pub struct Slot {
    index: Cell<usize>,
    phase: Cell<Phase>,
    /// When the connection entered its current phase (for `Fresh`: when it was accepted).
    since: Cell<Instant>,
    evicted: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Slot {
    /// Records a phase change; `now` is a clock reading the caller already has.
    pub fn set_phase(&self, phase: Phase, now: Instant) {
        if self.phase.get() != phase {
            self.phase.set(phase);
            self.since.set(now);
        }
    }

    /// Marks a request as started; no clock read (busy connections are never evicted).
    pub fn set_busy(&self) {
        self.phase.set(Phase::Busy);
    }

    pub fn phase(&self) -> Phase {
        self.phase.get()
    }

    /// Resolves once the table evicts this connection.
    pub fn evicted(self: &Rc<Self>) -> Evicted {
        Evicted(self.clone())
    }
}

/// See [`Slot::evicted`].
pub struct Evicted(Rc<Slot>);

impl Future for Evicted {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.evicted.get() {
            return Poll::Ready(());
        }
        let mut waker = self.0.waker.borrow_mut();
        match waker.as_ref() {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// The table of one core.
#[derive(Debug)]
pub struct Slots {
    entries: RefCell<Vec<Option<Rc<Slot>>>>,
    free: RefCell<Vec<usize>>,
    open: Cell<usize>,
    capacity: usize,
}

/// Why [`Slots::admit`] refused a connection.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

impl Slots {
    pub fn new(capacity: usize) -> Slots {
        assert!(capacity > 0, "a core must accept at least one connection");
        Slots {
            entries: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            open: Cell::new(0),
            capacity,
        }
    }

    pub fn open(&self) -> usize {
        self.open.get()
    }

    /// Takes a slot for a new connection, evicting another one at the cap; `Err(Full)` if
    /// every open connection is busy.
    pub fn admit(&self, now: Instant) -> Result<Rc<Slot>, Full> {
        if self.open.get() >= self.capacity {
            let victim = self.victim().ok_or(Full)?;
            self.evict(&victim);
        }
        let slot = Rc::new(Slot {
            index: Cell::new(usize::MAX),
            phase: Cell::new(Phase::Fresh),
            since: Cell::new(now),
            evicted: Cell::new(false),
            waker: RefCell::new(None),
        });
        let mut entries = self.entries.borrow_mut();
        let index = match self.free.borrow_mut().pop() {
            Some(i) => i,
            None => {
                entries.push(None);
                entries.len() - 1
            }
        };
        slot.index.set(index);
        entries[index] = Some(slot.clone());
        self.open.set(self.open.get() + 1);
        debug_assert!(self.open.get() <= self.capacity);
        Ok(slot)
    }

    /// Gives a slot back when its connection ends (evicted or not).
    pub fn release(&self, slot: &Slot) {
        let index = slot.index.get();
        let mut entries = self.entries.borrow_mut();
        match entries.get(index) {
            Some(Some(current)) if std::ptr::eq(Rc::as_ptr(current), slot) => {
                entries[index] = None;
                self.free.borrow_mut().push(index);
                self.open.set(self.open.get() - 1);
            }
            _ => {} // already removed by `evict`
        }
    }

    /// The connection fresh or stalled the longest, else the one idle the longest.
    fn victim(&self) -> Option<Rc<Slot>> {
        let entries = self.entries.borrow();
        let mut best: Option<&Rc<Slot>> = None;
        let rank = |s: &Slot| match s.phase.get() {
            Phase::Fresh | Phase::Stalled => Some(0u8),
            Phase::Idle => Some(1u8),
            Phase::Busy => None,
        };
        for slot in entries.iter().flatten() {
            let Some(r) = rank(slot) else { continue };
            best = match best {
                None => Some(slot),
                Some(b) => {
                    let rb = rank(b).unwrap_or(u8::MAX);
                    if (r, slot.since.get()) < (rb, b.since.get()) {
                        Some(slot)
                    } else {
                        Some(b)
                    }
                }
            };
        }
        best.cloned()
    }

    /// Removes `slot` from the table and wakes its connection, which then closes.
    fn evict(&self, slot: &Rc<Slot>) {
        slot.evicted.set(true);
        self.release(slot);
        if let Some(w) = slot.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn evicts_fresh_before_idle_and_never_busy() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let slots = Slots::new(3);
        let busy = slots.admit(at(0)).unwrap();
        busy.set_busy();
        let idle = slots.admit(at(1)).unwrap();
        idle.set_phase(Phase::Idle, at(2));
        let fresh = slots.admit(at(3)).unwrap();
        assert_eq!(slots.open(), 3);

        // At the cap: the fresh (silent) connection goes first, though it is the newest.
        let a = slots.admit(at(4)).unwrap();
        assert!(fresh.evicted.get());
        assert!(!idle.evicted.get() && !busy.evicted.get());
        assert_eq!(slots.open(), 3);
        // Then the other fresh one (the oldest fresh), then the idle one.
        let b = slots.admit(at(5)).unwrap();
        assert!(a.evicted.get());
        b.set_busy();
        let c = slots.admit(at(6)).unwrap();
        assert!(idle.evicted.get());
        c.set_busy();
        // Everyone busy: refused.
        assert_eq!(slots.admit(at(7)).unwrap_err(), Full);
        // A busy connection whose answers wait on its client becomes evictable; the one
        // stalled longest goes first, before any idle one.
        b.set_phase(Phase::Stalled, at(9));
        c.set_phase(Phase::Stalled, at(8));
        let d = slots.admit(at(10)).unwrap();
        assert!(c.evicted.get() && !b.evicted.get());
        d.set_phase(Phase::Idle, at(11));
        let _e = slots.admit(at(12)).unwrap();
        assert!(b.evicted.get() && !d.evicted.get());
        // Releasing an evicted slot twice changes nothing; a real release frees a place.
        slots.release(&fresh);
        assert_eq!(slots.open(), 3);
        slots.release(&busy);
        assert_eq!(slots.open(), 2);
        assert!(slots.admit(at(8)).is_ok());
    }
}
