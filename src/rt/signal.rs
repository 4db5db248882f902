//! [`Signal`]: a flag that any thread sets once (the server's shutdown) and that wakes every
//! task waiting for it, on any executor, and every thread sleeping on it — so that nothing
//! has to wake up now and then to look at it, and an idle server uses no CPU.
//!
//! A waiting task is recorded in its executor's list (a slot, freed when the wait ends); the
//! executor itself is recorded once in the signal's list with its reactor's cross-thread
//! waker and a "something was set" flag. [`Signal::set`] raises that flag and wakes the
//! reactor; the executor then wakes the tasks whose signal is set (one atomic load per loop
//! turn when nothing was set).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use super::executor;

/// An executor as a signal knows it.
#[derive(Clone)]
pub(crate) struct Remote {
    pub(crate) notifier: Arc<mio::Waker>,
    /// Raised by [`Signal::set`]; the executor lowers it and looks at its waiters.
    pub(crate) pending: Arc<AtomicBool>,
}

struct Inner {
    set: AtomicBool,
    executors: Mutex<Vec<Remote>>,
    /// For threads that sleep on the signal ([`Signal::sleep`]).
    sleepers: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A flag set once, from any thread, that wakes its waiters.
#[derive(Clone)]
pub struct Signal(Arc<Inner>);

impl Default for Signal {
    fn default() -> Self {
        Signal::new()
    }
}

impl std::fmt::Debug for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signal")
            .field("set", &self.is_set())
            .finish()
    }
}

impl Signal {
    pub fn new() -> Signal {
        Signal(Arc::new(Inner {
            set: AtomicBool::new(false),
            executors: Mutex::new(Vec::new()),
            sleepers: Condvar::new(),
        }))
    }

    pub fn is_set(&self) -> bool {
        self.0.set.load(Ordering::SeqCst)
    }

    /// Sets the flag and wakes every waiter (once; later calls do nothing).
    pub fn set(&self) {
        if self.0.set.swap(true, Ordering::SeqCst) {
            return;
        }
        let executors = lock(&self.0.executors).clone();
        for e in executors {
            e.pending.store(true, Ordering::SeqCst);
            let _ = e.notifier.wake();
        }
        let _guard = lock(&self.0.executors);
        self.0.sleepers.notify_all();
    }

    /// Completes once the flag is set. On an executor only.
    pub fn wait(&self) -> Wait<'_> {
        Wait {
            signal: self,
            slot: None,
        }
    }

    /// Blocks this (non-executor) thread for `duration` or until the flag is set; true if it
    /// is set.
    pub fn sleep(&self, duration: Duration) -> bool {
        let guard = lock(&self.0.executors);
        if self.is_set() {
            return true;
        }
        let _ = self
            .0
            .sleepers
            .wait_timeout_while(guard, duration, |_| !self.is_set());
        self.is_set()
    }

    /// Records the current executor in this signal's list (once).
    fn register_executor(&self, remote: &Remote) {
        let mut executors = lock(&self.0.executors);
        if !executors
            .iter()
            .any(|e| Arc::ptr_eq(&e.pending, &remote.pending))
        {
            executors.push(remote.clone());
        }
    }
}

/// The waiting tasks of one executor.
#[derive(Default)]
pub(crate) struct Waiters {
    /// The signal of each waiting task, by address: a slot lives only as long as its
    /// [`Wait`], which borrows the signal, so the address stays valid (and no reference
    /// count shared by every core is touched per wait).
    slots: Vec<Option<(*const Inner, Waker)>>,
    free: Vec<usize>,
    /// Signals this executor is recorded in (checked here, without the signal's lock: a
    /// wait on the request path must not touch a lock shared by every core).
    registered: Vec<Signal>,
}

impl Waiters {
    fn insert(&mut self, signal: *const Inner, waker: Waker) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some((signal, waker));
                i
            }
            None => {
                self.slots.push(Some((signal, waker)));
                self.slots.len() - 1
            }
        }
    }

    fn remove(&mut self, index: usize) {
        if let Some(slot) = self.slots.get_mut(index) {
            if slot.take().is_some() {
                self.free.push(index);
            }
        }
    }

    /// Wakes the waiters whose signal is set (they free their slots when polled).
    pub(crate) fn wake_set(&self) {
        for (signal, waker) in self.slots.iter().flatten() {
            // SAFETY: see `slots`: the signal outlives its slot.
            if unsafe { &**signal }.set.load(Ordering::SeqCst) {
                waker.wake_by_ref();
            }
        }
    }
}

/// The future of [`Signal::wait`].
pub struct Wait<'a> {
    signal: &'a Signal,
    slot: Option<usize>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.is_set() {
            return Poll::Ready(());
        }
        let signal = self.signal;
        let slot = self.slot;
        let index = executor::with(|rt| {
            let mut waiters = rt.signal_waiters.borrow_mut();
            match slot {
                Some(i) => {
                    if let Some(Some((_, w))) = waiters.slots.get_mut(i) {
                        if !w.will_wake(cx.waker()) {
                            *w = cx.waker().clone();
                        }
                    }
                    i
                }
                None => {
                    if !waiters
                        .registered
                        .iter()
                        .any(|r| Arc::ptr_eq(&r.0, &signal.0))
                    {
                        signal.register_executor(&rt.signal_remote);
                        waiters.registered.push(signal.clone());
                    }
                    waiters.insert(Arc::as_ptr(&signal.0), cx.waker().clone())
                }
            }
        })
        .unwrap_or_else(|| panic!("rt::Signal::wait polled outside an executor"));
        self.slot = Some(index);
        // Set between the first check and the registration: seen here.
        if self.signal.is_set() {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot.take() {
            executor::with(|rt| rt.signal_waiters.borrow_mut().remove(i));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::{block_on, spawn_local, timeout, Builder};
    use std::time::Instant;

    #[test]
    fn a_signal_set_on_another_thread_wakes_tasks_on_every_executor() {
        let signal = Signal::new();
        let mut cores = Vec::new();
        for i in 0..2 {
            let s = signal.clone();
            cores.push(
                Builder::new()
                    .name(&format!("sig-{i}"))
                    .spawn(move || async move {
                        // Two waiters on this executor, one dropped before the signal.
                        let a = spawn_local({
                            let s = s.clone();
                            async move { s.wait().await }
                        });
                        let gone = timeout(Duration::from_millis(10), s.wait()).await;
                        assert!(gone.is_err());
                        let started = Instant::now();
                        s.wait().await;
                        a.await;
                        started.elapsed()
                    })
                    .unwrap(),
            );
        }
        std::thread::sleep(Duration::from_millis(100));
        signal.set();
        for core in cores {
            let waited = core.join().expect("the executor ran");
            assert!(waited >= Duration::from_millis(50), "{waited:?}");
        }
    }

    #[test]
    fn a_set_signal_is_ready_at_once_and_sleepers_wake() {
        let signal = Signal::new();
        let s = signal.clone();
        let sleeper = std::thread::spawn(move || {
            let started = Instant::now();
            let set = s.sleep(Duration::from_secs(30));
            (set, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(50));
        signal.set();
        let (set, slept) = sleeper.join().unwrap();
        assert!(set);
        assert!(slept < Duration::from_secs(5), "{slept:?}");
        assert!(!Signal::new().sleep(Duration::from_millis(10)));
        block_on(async {
            signal.wait().await;
            assert!(signal.is_set());
        });
    }
}
