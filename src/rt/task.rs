//! A spawned task: one `Rc` allocation that holds the future (then its output), the flags the
//! executor needs, and the join handle's waker. Its [`Waker`] is the task pointer itself:
//! cloning or waking it changes a reference count and pushes the task on its executor's run
//! queue — no allocation per wake. [`Task`] is the join handle: await it for the output,
//! [`Task::detach`] it to let the task run on its own, or drop it to cancel the task.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use super::executor;

/// What the executor's run queue and task registry hold.
pub(crate) trait Runnable {
    /// Polls the future once (if it is still running).
    fn run(self: Rc<Self>);
    /// Drops the future if it is still running (executor teardown, dropped join handle).
    fn cancel(&self);
}

/// The join handle's view of a task with output `T`.
trait Join<T> {
    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<T>;
    fn detach(&self);
    fn cancel(&self);
}

enum Stage<F: Future> {
    Running(F),
    Done(F::Output),
    /// Finished and its output taken or dropped, or cancelled.
    Closed,
}

/// Identifies the current thread cheaply (the address of a thread-local).
pub(crate) fn thread_marker() -> usize {
    thread_local! {
        static MARKER: u8 = const { 0 };
    }
    MARKER.with(|m| m as *const u8 as usize)
}

#[cold]
fn foreign_thread() -> ! {
    eprintln!("kes: a task's waker was used on another thread than its executor's; aborting");
    std::process::abort()
}

pub(crate) struct TaskCell<F: Future> {
    /// The thread whose executor owns the task.
    owner: usize,
    /// On the run queue (a wake while queued is free).
    queued: Cell<bool>,
    /// Index in the executor's registry of live tasks (`usize::MAX`: not registered).
    registry_index: Cell<usize>,
    /// The join handle was detached (or dropped): nobody reads the output.
    detached: Cell<bool>,
    stage: RefCell<Stage<F>>,
    join_waker: Cell<Option<Waker>>,
}

impl<F: Future + 'static> TaskCell<F> {
    const VTABLE: RawWakerVTable = RawWakerVTable::new(
        Self::waker_clone,
        Self::waker_wake,
        Self::waker_wake_by_ref,
        Self::waker_drop,
    );

    fn check_thread(&self) {
        if self.owner != thread_marker() {
            foreign_thread();
        }
    }

    unsafe fn waker_clone(ptr: *const ()) -> RawWaker {
        // SAFETY: `ptr` came from `Rc::as_ptr`/`into_raw` of a live `Rc<Self>`.
        let this = unsafe { &*(ptr as *const Self) };
        this.check_thread();
        unsafe { Rc::increment_strong_count(ptr as *const Self) };
        RawWaker::new(ptr, &Self::VTABLE)
    }

    unsafe fn waker_wake(ptr: *const ()) {
        // SAFETY: a waker owns one strong count, handed to `schedule`.
        let this = unsafe { Rc::from_raw(ptr as *const Self) };
        this.check_thread();
        Self::schedule(this);
    }

    unsafe fn waker_wake_by_ref(ptr: *const ()) {
        // SAFETY: the waker keeps the task alive for the duration of the call.
        let this = unsafe { &*(ptr as *const Self) };
        this.check_thread();
        if this.queued.get() {
            return;
        }
        unsafe { Rc::increment_strong_count(ptr as *const Self) };
        Self::schedule(unsafe { Rc::from_raw(ptr as *const Self) });
    }

    unsafe fn waker_drop(ptr: *const ()) {
        // SAFETY: a waker owns one strong count.
        let this = unsafe { Rc::from_raw(ptr as *const Self) };
        this.check_thread();
        drop(this);
    }

    fn schedule(this: Rc<Self>) {
        if this.queued.replace(true) {
            return;
        }
        // A finished or cancelled task is not queued (a running one is mutably borrowed).
        if let Ok(stage) = this.stage.try_borrow() {
            if !matches!(*stage, Stage::Running(_)) {
                this.queued.set(false);
                return;
            }
        }
        if !executor::enqueue(this.clone()) {
            this.queued.set(false);
        }
    }

    fn unregister(&self) {
        let index = self.registry_index.replace(usize::MAX);
        if index != usize::MAX {
            executor::unregister(index);
        }
    }
}

impl<F: Future + 'static> Runnable for TaskCell<F> {
    fn run(self: Rc<Self>) {
        self.queued.set(false);
        let raw = RawWaker::new(Rc::as_ptr(&self) as *const (), &Self::VTABLE);
        // SAFETY: the vtable's functions match the data pointer; ManuallyDrop: this waker
        // borrows `self`'s count instead of owning one.
        let waker = ManuallyDrop::new(unsafe { Waker::from_raw(raw) });
        let mut cx = Context::from_waker(&waker);
        let Ok(mut stage) = self.stage.try_borrow_mut() else {
            return;
        };
        let Stage::Running(future) = &mut *stage else {
            return;
        };
        // SAFETY: the future lives inside the `Rc` allocation and is never moved out of it
        // while running; it is dropped in place.
        let future = unsafe { Pin::new_unchecked(future) };
        if let Poll::Ready(output) = future.poll(&mut cx) {
            let output = if self.detached.get() {
                *stage = Stage::Closed;
                Some(output)
            } else {
                *stage = Stage::Done(output);
                None
            };
            drop(stage);
            drop(output);
            self.unregister();
            if let Some(w) = self.join_waker.take() {
                w.wake();
            }
        }
    }

    fn cancel(&self) {
        let Ok(mut stage) = self.stage.try_borrow_mut() else {
            return; // being polled: it is not cancelled from inside itself
        };
        let old = std::mem::replace(&mut *stage, Stage::Closed);
        drop(stage);
        drop(old);
        self.unregister();
        self.join_waker.take();
    }
}

impl<F: Future + 'static> Join<F::Output> for TaskCell<F> {
    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut stage = self.stage.borrow_mut();
        match std::mem::replace(&mut *stage, Stage::Closed) {
            Stage::Done(output) => Poll::Ready(output),
            Stage::Running(f) => {
                *stage = Stage::Running(f);
                drop(stage);
                let w = self.join_waker.take();
                self.join_waker.set(Some(match w {
                    Some(w) if w.will_wake(cx.waker()) => w,
                    _ => cx.waker().clone(),
                }));
                Poll::Pending
            }
            Stage::Closed => panic!("rt::Task awaited after its task was cancelled"),
        }
    }

    fn detach(&self) {
        self.detached.set(true);
        self.join_waker.take();
        if let Ok(mut stage) = self.stage.try_borrow_mut() {
            if matches!(*stage, Stage::Done(_)) {
                let old = std::mem::replace(&mut *stage, Stage::Closed);
                drop(stage);
                drop(old);
            }
        }
    }

    fn cancel(&self) {
        self.detached.set(true);
        Runnable::cancel(self);
    }
}

/// Spawns `future` on the current thread's executor; `None` outside an executor.
pub(crate) fn spawn<F>(future: F) -> Option<Task<F::Output>>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let cell = Rc::new(TaskCell {
        owner: thread_marker(),
        queued: Cell::new(false),
        registry_index: Cell::new(usize::MAX),
        detached: Cell::new(false),
        stage: RefCell::new(Stage::Running(future)),
        join_waker: Cell::new(None),
    });
    let index = executor::register(cell.clone())?;
    cell.registry_index.set(index);
    TaskCell::schedule(cell.clone());
    Some(Task {
        inner: Some(cell as Rc<dyn Join<F::Output>>),
    })
}

/// The join handle of a spawned task. Awaiting it yields the task's output; dropping it
/// cancels the task (its future is dropped), as glommio's `Task` did; [`Task::detach`] lets
/// the task run to completion on its own.
#[must_use = "dropping a Task cancels it; call .detach() to let it run"]
pub struct Task<T> {
    inner: Option<Rc<dyn Join<T>>>,
}

impl<T> Task<T> {
    /// Lets the task run on its own; its output is dropped when it finishes.
    pub fn detach(mut self) {
        if let Some(inner) = self.inner.take() {
            inner.detach();
        }
    }
}

impl<T> Future for Task<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match &self.inner {
            Some(inner) => inner.poll_join(cx),
            None => panic!("rt::Task polled after it was detached"),
        }
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            inner.cancel();
        }
    }
}
