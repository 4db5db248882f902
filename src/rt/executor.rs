//! The executor: one per thread, single-threaded. It owns the run queue (tasks woken and not
//! yet polled), the registry of live tasks (so that stopping the executor drops every task's
//! future: sockets close, timers and I/O slots are released), the reactor, the timers, the
//! cached clock and the blocking pool, and runs the loop:
//!
//! 1. poll the `block_on` future if it was woken; run every task queued at the start of the
//!    turn (a task that wakes itself runs again next turn, after I/O was polled);
//! 2. wait for I/O — without blocking if tasks are queued, else until the next timer;
//! 3. read the clock once ([`super::now`]), fire due timers.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use std::time::{Duration, Instant};

use super::backend::Backend;
use super::blocking::BlockingPool;
use super::reactor::Reactor;
use super::signal::{Remote, Waiters};
use super::task::{self, thread_marker, Runnable, Task};
use super::time::Timers;
use super::uring::Uring;

/// How long a task may run before [`yield_if_needed`] yields.
pub const TIME_SLICE: Duration = Duration::from_millis(1);
/// Initial capacity of the run queue and the task registry (they grow if needed, and do not
/// shrink: no allocation per wake once warm).
const TASKS_INITIAL: usize = 1024;

/// How an executor is set up.
#[derive(Clone)]
pub(crate) struct Config {
    /// Threads of the blocking pool (started on first use).
    pub blocking_threads: usize,
    /// Jobs that may wait in the blocking pool's queue.
    pub blocking_queue_jobs_max: usize,
    /// Thread-name prefix of the blocking pool.
    pub name: String,
    /// The CPU mask blocking threads run on (the process's mask before the core pinned
    /// itself); `None`: the creating thread's mask.
    pub blocking_cpus: Option<libc::cpu_set_t>,
    /// The I/O backend of the executor's sockets.
    pub backend: Backend,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            blocking_threads: 4,
            blocking_queue_jobs_max: super::blocking::POOL_QUEUE_JOBS_MAX,
            name: "kes-rt".into(),
            blocking_cpus: None,
            backend: Backend::Epoll,
        }
    }
}

/// Live tasks, by index; a slot is freed when its task finishes or is cancelled.
struct Registry {
    slots: Vec<Option<Rc<dyn Runnable>>>,
    free: Vec<usize>,
}

pub(crate) struct Runtime {
    queue: RefCell<VecDeque<Rc<dyn Runnable>>>,
    registry: RefCell<Registry>,
    pub(crate) reactor: Reactor,
    /// The io_uring backend's ring (connected sockets), if the executor runs on it.
    pub(crate) uring: Option<Uring>,
    pub(crate) timers: RefCell<Timers>,
    /// The clock as read once per loop turn.
    pub(crate) now: Cell<Instant>,
    pub(crate) blocking: BlockingPool,
    /// Wakers of timers that fired this turn (kept: no allocation per turn).
    due: RefCell<Vec<Waker>>,
    /// Tasks waiting for a [`super::Signal`], and how signals reach this executor.
    pub(crate) signal_waiters: RefCell<Waiters>,
    pub(crate) signal_remote: Remote,
}

thread_local! {
    static CURRENT: Cell<*const Runtime> = const { Cell::new(std::ptr::null()) };
    static MAIN_WOKEN: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with the current thread's executor, if there is one.
pub(crate) fn with<R>(f: impl FnOnce(&Runtime) -> R) -> Option<R> {
    let p = CURRENT.with(Cell::get);
    if p.is_null() {
        None
    } else {
        // SAFETY: CURRENT points to the boxed runtime of the running `run_on`, and is reset
        // before that box is dropped.
        Some(f(unsafe { &*p }))
    }
}

/// Puts a woken task on the run queue; false outside an executor.
pub(crate) fn enqueue(task: Rc<dyn Runnable>) -> bool {
    with(|rt| rt.queue.borrow_mut().push_back(task)).is_some()
}

/// Records a live task; its index, or `None` outside an executor.
pub(crate) fn register(task: Rc<dyn Runnable>) -> Option<usize> {
    with(|rt| {
        let mut reg = rt.registry.borrow_mut();
        match reg.free.pop() {
            Some(i) => {
                reg.slots[i] = Some(task);
                i
            }
            None => {
                reg.slots.push(Some(task));
                reg.slots.len() - 1
            }
        }
    })
}

/// Forgets a finished or cancelled task.
pub(crate) fn unregister(index: usize) {
    let task = with(|rt| {
        let mut reg = rt.registry.borrow_mut();
        let task = reg.slots.get_mut(index).and_then(Option::take);
        if task.is_some() {
            reg.free.push(index);
        }
        task
    });
    drop(task); // outside the borrow
}

/// Spawns a task on the current thread's executor. Panics outside an executor.
pub fn spawn_local<F>(future: F) -> Task<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    task::spawn(future).unwrap_or_else(|| panic!("rt::spawn_local called outside an executor"))
}

/// Yields to the executor's other tasks if the current loop turn has run longer than
/// [`TIME_SLICE`] (one clock read per call). Outside an executor it never yields. For long
/// pieces of work such as listing 50 000 keys.
pub async fn yield_if_needed() {
    let over = with(|rt| rt.now.get().elapsed() >= TIME_SLICE).unwrap_or(false);
    if over {
        futures_lite::future::yield_now().await;
    }
}

/// Runs an executor on this thread until `future` completes; every task still alive then is
/// cancelled. Panics if the thread already runs an executor or epoll cannot be created.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let rt = Runtime::new(Config::default())
        .unwrap_or_else(|e| panic!("rt::block_on: cannot start an executor: {e}"));
    run_on(rt, future)
}

impl Runtime {
    pub(crate) fn new(config: Config) -> std::io::Result<Runtime> {
        let reactor = Reactor::new()?;
        let blocking = BlockingPool::new(&config, reactor.notifier());
        let uring = match config.backend {
            Backend::Epoll => None,
            Backend::IoUring => Some(Uring::new(&reactor)?),
        };
        let signal_remote = Remote {
            notifier: reactor.notifier(),
            pending: Arc::new(AtomicBool::new(false)),
        };
        Ok(Runtime {
            signal_waiters: RefCell::new(Waiters::default()),
            signal_remote,
            uring,
            queue: RefCell::new(VecDeque::with_capacity(TASKS_INITIAL)),
            registry: RefCell::new(Registry {
                slots: Vec::with_capacity(TASKS_INITIAL),
                free: Vec::new(),
            }),
            reactor,
            timers: RefCell::new(Timers::default()),
            now: Cell::new(Instant::now()),
            blocking,
            due: RefCell::new(Vec::new()),
        })
    }

    /// Runs the tasks queued now (not those they wake: those run after the next I/O poll).
    fn run_queued(&self) {
        let n = self.queue.borrow().len();
        for _ in 0..n {
            let Some(task) = self.queue.borrow_mut().pop_front() else {
                break;
            };
            task.run();
        }
    }

    /// Polls I/O (blocking only when nothing is runnable), reads the clock, fires timers.
    fn turn(&self, runnable: bool) {
        let timeout = if runnable {
            Some(Duration::ZERO)
        } else {
            self.timers
                .borrow_mut()
                .next_deadline()
                .map(|d| d.saturating_duration_since(self.now.get()))
        };
        match &self.uring {
            Some(uring) => uring.turn(timeout, &self.reactor, &self.blocking, self.now.get()),
            None => {
                self.reactor.poll(timeout, &self.blocking);
            }
        }
        if self.signal_remote.pending.swap(false, Ordering::SeqCst) {
            self.signal_waiters.borrow().wake_set();
        }
        let now = Instant::now();
        self.now.set(now);
        let mut due = std::mem::take(&mut *self.due.borrow_mut());
        self.timers.borrow_mut().fire(now, &mut due);
        for waker in due.drain(..) {
            waker.wake();
        }
        *self.due.borrow_mut() = due;
    }
}

/// Drops what is left when `run_on` returns or unwinds.
struct Teardown(Box<Runtime>);

impl Drop for Teardown {
    fn drop(&mut self) {
        // Cancel every live task while the runtime is still current: their futures' drops
        // release I/O slots and timers.
        loop {
            let tasks: Vec<Rc<dyn Runnable>> = {
                let mut reg = self.0.registry.borrow_mut();
                reg.free.clear();
                reg.slots.iter_mut().filter_map(Option::take).collect()
            };
            if tasks.is_empty() {
                break;
            }
            for t in tasks {
                t.cancel();
            }
        }
        let queued = std::mem::take(&mut *self.0.queue.borrow_mut());
        drop(queued);
        if let Some(uring) = &self.0.uring {
            uring.shutdown();
        }
        self.0.blocking.shutdown();
        CURRENT.with(|c| c.set(std::ptr::null()));
    }
}

/// Runs `rt` on this thread until `future` completes.
pub(crate) fn run_on<F: Future>(rt: Runtime, future: F) -> F::Output {
    assert!(
        CURRENT.with(Cell::get).is_null(),
        "rt::block_on called inside a running executor"
    );
    let teardown = Teardown(Box::new(rt));
    CURRENT.with(|c| c.set(&*teardown.0));
    let rt: &Runtime = &teardown.0;
    // Declared after `teardown`: dropped before it.
    let mut future = std::pin::pin!(future);
    // SAFETY: the main waker's functions ignore the data pointer except to compare it.
    let waker = unsafe { Waker::from_raw(main_raw_waker()) };
    let mut cx = Context::from_waker(&waker);
    MAIN_WOKEN.with(|w| w.set(true));
    loop {
        if MAIN_WOKEN.with(|w| w.replace(false)) {
            if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
                return v;
            }
        }
        rt.run_queued();
        let runnable = !rt.queue.borrow().is_empty() || MAIN_WOKEN.with(Cell::get);
        rt.turn(runnable);
    }
}

// The `block_on` future's waker: a flag in a thread-local (it outlives any executor).
const MAIN_VTABLE: RawWakerVTable =
    RawWakerVTable::new(main_clone, main_wake, main_wake, main_drop);

fn main_raw_waker() -> RawWaker {
    RawWaker::new(thread_marker() as *const (), &MAIN_VTABLE)
}

unsafe fn main_clone(_: *const ()) -> RawWaker {
    main_raw_waker()
}

unsafe fn main_wake(owner: *const ()) {
    if owner as usize == thread_marker() {
        MAIN_WOKEN.with(|w| w.set(true));
    } else {
        eprintln!("kes: an executor's main waker was used on another thread; aborting");
        std::process::abort();
    }
}

unsafe fn main_drop(_: *const ()) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn spawned_tasks_run_and_join() {
        let out = block_on(async {
            let a = spawn_local(async { 40 });
            let b = spawn_local(async { 2 });
            a.await + b.await
        });
        assert_eq!(out, 42);
    }

    #[test]
    fn detached_tasks_run_and_dropped_handles_cancel() {
        block_on(async {
            let ran = Rc::new(Cell::new(0));
            let r = ran.clone();
            spawn_local(async move { r.set(r.get() + 1) }).detach();
            // Dropped before it ran: cancelled.
            let r = ran.clone();
            drop(spawn_local(async move { r.set(r.get() + 10) }));
            futures_lite::future::yield_now().await;
            futures_lite::future::yield_now().await;
            assert_eq!(ran.get(), 1);
        });
    }

    #[test]
    fn tasks_left_at_the_end_are_dropped() {
        struct Flag(Rc<Cell<bool>>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.set(true);
            }
        }
        let dropped = Rc::new(Cell::new(false));
        let d = dropped.clone();
        block_on(async move {
            spawn_local(async move {
                let _flag = Flag(d);
                futures_lite::future::pending::<()>().await;
            })
            .detach();
            futures_lite::future::yield_now().await;
        });
        assert!(
            dropped.get(),
            "a pending task's future outlived its executor"
        );
    }

    #[test]
    fn yield_if_needed_lets_another_task_run() {
        block_on(async {
            let runs = Rc::new(Cell::new(0u64));
            let stop = Rc::new(Cell::new(false));
            let other = {
                let (runs, stop) = (runs.clone(), stop.clone());
                spawn_local(async move {
                    while !stop.get() {
                        runs.set(runs.get() + 1);
                        futures_lite::future::yield_now().await;
                    }
                })
            };
            futures_lite::future::yield_now().await;
            let before = runs.get();
            // Busy for 20 ms, offering to yield all along.
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(20) {
                yield_if_needed().await;
            }
            assert!(runs.get() > before, "the other task never ran");
            stop.set(true);
            other.await;
        });
    }
}
