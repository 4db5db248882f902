//! The blocking pool: a few std threads per executor for work that may block (keystore file
//! I/O, network round trips). [`spawn_blocking`] queues a closure; a pool thread runs it,
//! stores the result, records the job as finished and wakes the executor's epoll wait through
//! a `mio::Waker`; the executor then wakes the waiting task on its own thread. Pool threads
//! never touch a task's waker. Threads start on first use, up to the configured number, on
//! the CPUs the process had before the core pinned itself; they inherit the core's signal
//! mask (every signal the server waits for stays blocked).
//!
//! The queue holds at most [`POOL_QUEUE_JOBS_MAX`] jobs per core (configurable): a call
//! beyond it is refused with [`PoolFull`]. A job whose [`BlockingTask`] was dropped before
//! a thread took it (its request gave up at the route timeout) is skipped, never run, and
//! makes room in a full queue.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::executor::{self, Config};

/// Jobs that may wait in one core's blocking-pool queue (not counting those running); a
/// call beyond it is refused at once ([`PoolFull`], answered 503) instead of queueing
/// without limit behind a slow keystore.
pub const POOL_QUEUE_JOBS_MAX: usize = 1024;

/// The blocking pool's queue is full ([`POOL_QUEUE_JOBS_MAX`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolFull;

/// What a job's [`BlockingTask`] and the job share: the result, and whether anyone still
/// waits for it.
struct JobSlot<T> {
    result: Mutex<Option<std::thread::Result<T>>>,
    abandoned: AtomicBool,
}

/// The part of a [`JobSlot`] the queue looks at, whatever the job's result type.
trait Waited: Send + Sync {
    fn abandoned(&self) -> bool;
}

impl<T: Send> Waited for JobSlot<T> {
    fn abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Acquire)
    }
}

struct Job {
    run: Box<dyn FnOnce() + Send>,
    waited: Arc<dyn Waited>,
}

type Outcome<T> = Arc<JobSlot<T>>;

struct Queue {
    jobs: VecDeque<Job>,
    idle_threads: usize,
    threads: usize,
    shutdown: bool,
}

struct PoolShared {
    queue: Mutex<Queue>,
    work: Condvar,
    /// (slot index, generation) of finished jobs, for the executor to wake.
    finished: Mutex<Vec<(usize, u32)>>,
    notifier: Arc<mio::Waker>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The waker of each job's awaiting task, by slot (executor thread only).
struct Waiting {
    slots: Vec<(u32, Option<Waker>, bool)>, // (generation, waker, in use)
    free: Vec<usize>,
}

pub(crate) struct BlockingPool {
    shared: Arc<PoolShared>,
    threads_max: usize,
    queue_jobs_max: usize,
    name: String,
    cpus: Option<libc::cpu_set_t>,
    waiting: RefCell<Waiting>,
}

impl BlockingPool {
    pub(crate) fn new(config: &Config, notifier: Arc<mio::Waker>) -> BlockingPool {
        BlockingPool {
            shared: Arc::new(PoolShared {
                queue: Mutex::new(Queue {
                    jobs: VecDeque::new(),
                    idle_threads: 0,
                    threads: 0,
                    shutdown: false,
                }),
                work: Condvar::new(),
                finished: Mutex::new(Vec::new()),
                notifier,
            }),
            threads_max: config.blocking_threads.max(1),
            queue_jobs_max: config.blocking_queue_jobs_max.max(1),
            name: config.name.clone(),
            cpus: config.blocking_cpus,
            waiting: RefCell::new(Waiting {
                slots: Vec::new(),
                free: Vec::new(),
            }),
        }
    }

    /// Queues `job`, or refuses it when [`POOL_QUEUE_JOBS_MAX`] jobs that someone still
    /// waits for are queued already.
    fn submit(&self, job: Job) -> Result<(), PoolFull> {
        let mut q = lock(&self.shared.queue);
        if q.jobs.len() >= self.queue_jobs_max {
            // Jobs nobody waits for any more make room first.
            q.jobs.retain(|j| !j.waited.abandoned());
            if q.jobs.len() >= self.queue_jobs_max {
                return Err(PoolFull);
            }
        }
        q.jobs.push_back(job);
        if q.idle_threads == 0 && q.threads < self.threads_max {
            let n = q.threads;
            let shared = self.shared.clone();
            let cpus = self.cpus;
            let started = std::thread::Builder::new()
                .name(format!("{}-blocking-{n}", self.name))
                .spawn(move || worker(shared, cpus));
            match started {
                Ok(_) => q.threads += 1,
                Err(e) if q.threads == 0 => {
                    eprintln!(
                        "kes: cannot start a blocking-pool thread: {e}; retrying on next call"
                    )
                }
                Err(_) => {} // the running threads will take the job
            }
        } else {
            self.shared.work.notify_one();
        }
        Ok(())
    }

    fn add_waiter(&self) -> (usize, u32) {
        let mut w = self.waiting.borrow_mut();
        let index = match w.free.pop() {
            Some(i) => i,
            None => {
                w.slots.push((0, None, false));
                w.slots.len() - 1
            }
        };
        w.slots[index].2 = true;
        (index, w.slots[index].0)
    }

    fn set_waker(&self, (index, generation): (usize, u32), waker: &Waker) {
        let mut w = self.waiting.borrow_mut();
        if let Some(slot) = w.slots.get_mut(index) {
            if slot.0 == generation && slot.2 {
                match &slot.1 {
                    Some(old) if old.will_wake(waker) => {}
                    _ => slot.1 = Some(waker.clone()),
                }
            }
        }
    }

    fn remove_waiter(&self, (index, generation): (usize, u32)) {
        let old = {
            let mut w = self.waiting.borrow_mut();
            let Some(slot) = w.slots.get_mut(index) else {
                return;
            };
            if slot.0 != generation || !slot.2 {
                return;
            }
            slot.0 = slot.0.wrapping_add(1);
            slot.2 = false;
            let old = slot.1.take();
            w.free.push(index);
            old
        };
        drop(old);
    }

    /// Wakes the tasks whose jobs finished (the executor saw the notifier's event).
    pub(crate) fn wake_finished(&self) {
        let done = std::mem::take(&mut *lock(&self.shared.finished));
        for (index, generation) in done {
            let waker = {
                let mut w = self.waiting.borrow_mut();
                match w.slots.get_mut(index) {
                    Some(slot) if slot.0 == generation && slot.2 => slot.1.take(),
                    _ => None,
                }
            };
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// Lets the threads finish their current job and exit; queued jobs are dropped.
    pub(crate) fn shutdown(&self) {
        let jobs = {
            let mut q = lock(&self.shared.queue);
            q.shutdown = true;
            std::mem::take(&mut q.jobs)
        };
        self.shared.work.notify_all();
        drop(jobs);
    }
}

fn worker(shared: Arc<PoolShared>, cpus: Option<libc::cpu_set_t>) {
    if let Some(set) = cpus {
        // SAFETY: `set` is a valid cpu_set_t; 0 = this thread.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    }
    let mut q = lock(&shared.queue);
    loop {
        if q.shutdown {
            return;
        }
        if let Some(job) = q.jobs.pop_front() {
            drop(q);
            // Nobody waits for it (its request gave up): skip it.
            if !job.waited.abandoned() {
                (job.run)();
            }
            q = lock(&shared.queue);
            continue;
        }
        q.idle_threads += 1;
        q = shared.work.wait(q).unwrap_or_else(|e| e.into_inner());
        q.idle_threads -= 1;
    }
}

/// Runs `f` on the current executor's blocking pool; the future completes with its result
/// (a panic in `f` resumes in the awaiting task). `Err(PoolFull)` when the pool's queue is
/// full. Dropping the future before a thread took `f` means `f` never runs; once it runs,
/// dropping the future does not stop it (its result is then dropped). Panics outside an
/// executor.
pub fn spawn_blocking<F, T>(f: F) -> Result<BlockingTask<T>, PoolFull>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let outcome: Outcome<T> = Arc::new(JobSlot {
        result: Mutex::new(None),
        abandoned: AtomicBool::new(false),
    });
    let id = executor::with(|rt| {
        let id = rt.blocking.add_waiter();
        let out = outcome.clone();
        let shared = rt.blocking.shared.clone();
        let submitted = rt.blocking.submit(Job {
            run: Box::new(move || {
                let result = catch_unwind(AssertUnwindSafe(f));
                *lock(&out.result) = Some(result);
                lock(&shared.finished).push(id);
                if let Err(e) = shared.notifier.wake() {
                    eprintln!("kes: cannot wake a core after a blocking call: {e}");
                }
            }),
            waited: outcome.clone(),
        });
        if submitted.is_err() {
            rt.blocking.remove_waiter(id);
        }
        submitted.map(|()| id)
    })
    .unwrap_or_else(|| panic!("rt::spawn_blocking called outside an executor"))?;
    Ok(BlockingTask {
        outcome,
        id: Some(id),
    })
}

/// The result of a [`spawn_blocking`] call.
pub struct BlockingTask<T> {
    outcome: Outcome<T>,
    id: Option<(usize, u32)>,
}

impl<T> Future for BlockingTask<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let Some(id) = self.id else {
            panic!("rt::BlockingTask polled after it completed");
        };
        let taken = lock(&self.outcome.result).take();
        match taken {
            Some(result) => {
                executor::with(|rt| rt.blocking.remove_waiter(id));
                self.id = None;
                match result {
                    Ok(v) => Poll::Ready(v),
                    Err(panic) => resume_unwind(panic),
                }
            }
            None => {
                executor::with(|rt| rt.blocking.set_waker(id, cx.waker()));
                Poll::Pending
            }
        }
    }
}

impl<T> Drop for BlockingTask<T> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            // Not finished: a queued job is skipped from now on.
            self.outcome.abandoned.store(true, Ordering::Release);
            executor::with(|rt| rt.blocking.remove_waiter(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::{block_on, spawn_local};
    use std::time::Duration;

    #[test]
    fn results_arrive_and_the_core_keeps_running() {
        block_on(async {
            let ticks = std::rc::Rc::new(std::cell::Cell::new(0u32));
            let t = ticks.clone();
            let ticker = spawn_local(async move {
                loop {
                    crate::rt::sleep(Duration::from_millis(2)).await;
                    t.set(t.get() + 1);
                }
            });
            let slow = spawn_blocking(|| {
                std::thread::sleep(Duration::from_millis(50));
                std::thread::current().name().map(str::to_string)
            })
            .expect("queued");
            let many: Vec<_> = (0..16u64)
                .map(|i| spawn_blocking(move || i * i).expect("queued"))
                .collect();
            let mut sum = 0;
            for m in many {
                sum += m.await;
            }
            assert_eq!(sum, (0..16u64).map(|i| i * i).sum::<u64>());
            let name = slow.await.unwrap_or_default();
            assert!(name.contains("-blocking-"), "{name}");
            assert!(ticks.get() >= 5, "the core stalled while the pool worked");
            drop(ticker);
        });
    }

    #[test]
    fn a_panic_comes_back_to_the_awaiting_task() {
        let r = std::panic::catch_unwind(|| {
            block_on(async { spawn_blocking(|| -> u32 { panic!("boom") }).unwrap().await })
        });
        assert!(r.is_err());
    }

    /// One thread, two queue places: a third waiting job is refused; a queued job whose
    /// task was dropped never runs and makes room.
    #[test]
    fn the_queue_is_bounded_and_abandoned_jobs_never_run() {
        use std::sync::atomic::AtomicUsize;
        let rt = crate::rt::executor::Runtime::new(Config {
            blocking_threads: 1,
            blocking_queue_jobs_max: 2,
            ..Config::default()
        })
        .expect("an executor");
        crate::rt::executor::run_on(rt, async {
            let ran = Arc::new(AtomicUsize::new(0));
            let (release, wait) = std::sync::mpsc::channel::<()>();
            let (started_tx, started) = std::sync::mpsc::channel::<()>();
            let r = ran.clone();
            let busy = spawn_blocking(move || {
                let _ = started_tx.send(());
                let _ = wait.recv_timeout(Duration::from_secs(30));
                r.fetch_add(1, Ordering::SeqCst);
            })
            .expect("queued");
            started.recv_timeout(Duration::from_secs(30)).unwrap();
            let job = |tag: usize| {
                let r = ran.clone();
                move || {
                    r.fetch_add(tag, Ordering::SeqCst);
                }
            };
            let abandoned = spawn_blocking(job(100)).expect("queued");
            let kept = spawn_blocking(job(10)).expect("queued");
            assert!(matches!(spawn_blocking(job(1000)), Err(PoolFull)));
            drop(abandoned);
            let after = spawn_blocking(job(10)).expect("the abandoned job made room");
            release.send(()).unwrap();
            busy.await;
            kept.await;
            after.await;
            assert_eq!(
                ran.load(Ordering::SeqCst),
                21,
                "only the jobs someone waits for ran"
            );
        });
    }
}
