//! The reactor: one `mio::Poll` (epoll) per executor. Every socket is registered once,
//! edge-triggered, for reading and writing; an event sets the socket's readiness flags and
//! wakes the task waiting on that direction. Sockets are read and written until the kernel
//! says `WouldBlock` (or a read comes back short, which on a TCP stream means drained), so
//! there is no re-arming system call per operation; a socket that is not ready costs no
//! system call at all. Closing a socket removes it from epoll; its slot is freed without an
//! `epoll_ctl`, and a generation number in the token keeps a late event for a closed socket
//! from waking whatever reuses the slot.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};

use super::blocking::BlockingPool;

/// Events taken from epoll per wait.
const EVENTS_PER_WAIT_MAX: usize = 1024;
/// The token of the blocking pool's `mio::Waker`.
const NOTIFY_TOKEN: Token = Token(usize::MAX);

/// Readiness of one registered socket and the tasks waiting on it.
pub(crate) struct IoState {
    index: usize,
    readable: Cell<bool>,
    writable: Cell<bool>,
    /// The peer closed its side or the socket failed: final, never cleared, so a read
    /// after a short one still sees the end.
    read_closed: Cell<bool>,
    write_closed: Cell<bool>,
    read_waker: Cell<Option<Waker>>,
    write_waker: Cell<Option<Waker>>,
}

/// A direction of a socket.
#[derive(Clone, Copy)]
pub(crate) enum Direction {
    Read,
    Write,
}

impl IoState {
    /// Whether an operation in `dir` may make progress (else: wait for an event).
    pub(crate) fn is_ready(&self, dir: Direction) -> bool {
        match dir {
            Direction::Read => self.readable.get() || self.read_closed.get(),
            Direction::Write => self.writable.get() || self.write_closed.get(),
        }
    }

    /// The kernel said `WouldBlock` (or a read came back short): wait for the next edge,
    /// woken through `cx`.
    pub(crate) fn clear_and_wait(&self, dir: Direction, cx: &mut Context<'_>) {
        match dir {
            Direction::Read => self.readable.set(false),
            Direction::Write => self.writable.set(false),
        }
        self.wait(dir, cx);
    }

    /// A read came back short: the socket is drained, the next read waits for an edge.
    pub(crate) fn clear(&self, dir: Direction) {
        match dir {
            Direction::Read => self.readable.set(false),
            Direction::Write => self.writable.set(false),
        }
    }

    /// Records `cx`'s waker for `dir` (keeps the stored one if it wakes the same task).
    pub(crate) fn wait(&self, dir: Direction, cx: &mut Context<'_>) {
        let slot = match dir {
            Direction::Read => &self.read_waker,
            Direction::Write => &self.write_waker,
        };
        let w = slot.take();
        slot.set(Some(match w {
            Some(w) if w.will_wake(cx.waker()) => w,
            _ => cx.waker().clone(),
        }));
    }
}

/// A freed slot keeps its generation; a reused one gets the next.
struct Slot {
    generation: u32,
    io: Option<Rc<IoState>>,
}

pub(crate) struct Reactor {
    poll: RefCell<Poll>,
    events: RefCell<Events>,
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<usize>>,
    notifier: Arc<mio::Waker>,
}

fn token(index: usize, generation: u32) -> Token {
    Token(((generation as usize) << 32) | index)
}

impl Reactor {
    pub(crate) fn new() -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let notifier = Arc::new(mio::Waker::new(poll.registry(), NOTIFY_TOKEN)?);
        Ok(Reactor {
            poll: RefCell::new(poll),
            events: RefCell::new(Events::with_capacity(EVENTS_PER_WAIT_MAX)),
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            notifier,
        })
    }

    /// Wakes this reactor's wait from another thread (the blocking pool).
    pub(crate) fn notifier(&self) -> Arc<mio::Waker> {
        self.notifier.clone()
    }

    /// Registers `source` (edge-triggered, both directions); ready in both at first.
    pub(crate) fn register(&self, source: &mut impl mio::event::Source) -> io::Result<Rc<IoState>> {
        let index = match self.free.borrow_mut().pop() {
            Some(i) => i,
            None => {
                let mut slots = self.slots.borrow_mut();
                slots.push(Slot {
                    generation: 0,
                    io: None,
                });
                slots.len() - 1
            }
        };
        let generation = self.slots.borrow()[index].generation;
        let state = Rc::new(IoState {
            index,
            readable: Cell::new(true),
            writable: Cell::new(true),
            read_closed: Cell::new(false),
            write_closed: Cell::new(false),
            read_waker: Cell::new(None),
            write_waker: Cell::new(None),
        });
        let registered = self.poll.borrow().registry().register(
            source,
            token(index, generation),
            Interest::READABLE | Interest::WRITABLE,
        );
        if let Err(e) = registered {
            self.free.borrow_mut().push(index);
            return Err(e);
        }
        self.slots.borrow_mut()[index].io = Some(state.clone());
        Ok(state)
    }

    /// Frees the slot of a socket that is being closed (closing removes it from epoll).
    pub(crate) fn release(&self, state: &IoState) {
        let io = {
            let mut slots = self.slots.borrow_mut();
            let Some(slot) = slots.get_mut(state.index) else {
                return;
            };
            slot.generation = slot.generation.wrapping_add(1);
            slot.io.take()
        };
        if io.is_some() {
            self.free.borrow_mut().push(state.index);
        }
        state.read_waker.take();
        state.write_waker.take();
        drop(io); // outside the borrow
    }

    /// The epoll descriptor (the io_uring backend waits on it through its ring).
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.poll.borrow().as_raw_fd()
    }

    /// Waits for events (at most `timeout`; `None`: until one arrives) and wakes their tasks.
    /// True if the wait returned as many events as it takes (more may be waiting).
    pub(crate) fn poll(&self, timeout: Option<Duration>, blocking: &BlockingPool) -> bool {
        let mut events = self.events.borrow_mut();
        if let Err(e) = self.poll.borrow_mut().poll(&mut events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                eprintln!("kes: epoll_wait failed: {e}");
            }
            return false;
        }
        let full = events.iter().count() >= EVENTS_PER_WAIT_MAX;
        for event in events.iter() {
            if event.token() == NOTIFY_TOKEN {
                blocking.wake_finished();
                continue;
            }
            let index = event.token().0 & 0xffff_ffff;
            let generation = (event.token().0 >> 32) as u32;
            let state = {
                let slots = self.slots.borrow();
                match slots.get(index) {
                    Some(slot) if slot.generation == generation => slot.io.clone(),
                    _ => None,
                }
            };
            let Some(state) = state else {
                continue;
            };
            let failed = event.is_error();
            if event.is_read_closed() || failed {
                state.read_closed.set(true);
            }
            if event.is_write_closed() || failed {
                state.write_closed.set(true);
            }
            if event.is_readable() || event.is_read_closed() || failed {
                state.readable.set(true);
                if let Some(w) = state.read_waker.take() {
                    w.wake();
                }
            }
            if event.is_writable() || event.is_write_closed() || failed {
                state.writable.set(true);
                if let Some(w) = state.write_waker.take() {
                    w.wake();
                }
            }
        }
        full
    }
}
