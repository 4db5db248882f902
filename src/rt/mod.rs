//! `rt`: the per-core runtime the server runs on — one single-threaded executor per CPU, over
//! one I/O backend per executor.
//!
//! Why our own: glommio (the runtime this replaced) needs io_uring, which Docker's and
//! Kubernetes' default seccomp profiles forbid, and its socket path cost ~45 % over an epoll
//! loop doing the same wire work (docs/ARCHITECTURE.md, "The I/O layer").
//!
//! One job per file:
//! * [`backend`]: which I/O backend runs (`--io`, `KES_IO_BACKEND`): epoll or io_uring.
//! * [`task`]: a spawned task (one `Rc` allocation holding the future and its output), its
//!   waker (a reference count, no allocation per wake) and its [`Task`] join handle.
//! * [`executor`]: the per-thread run queue and loop ([`block_on`]), [`spawn_local`],
//!   [`yield_if_needed`].
//! * [`reactor`]: `mio::Poll` (epoll, edge-triggered): readiness of every registered socket,
//!   the task waiting on each direction.
//! * [`time`]: the cached clock ([`now`]: one clock read per loop turn), timers
//!   ([`sleep`], [`timeout`]) in FIFO lanes per common duration and a heap, with lazy
//!   deletion.
//! * [`uring`]: the io_uring backend: connected sockets' receives and sends through one ring
//!   per executor, one kernel entry per loop turn; it waits on the epoll reactor too.
//! * [`net`]: [`TcpListener`] (`SO_REUSEPORT`) and [`TcpStream`] (on the ring when the
//!   executor runs io_uring, else on epoll).
//! * [`blocking`]: the per-core blocking pool ([`spawn_blocking`]).
//! * [`signal`]: [`Signal`], a flag set once from any thread (shutdown) that wakes its
//!   waiters on every executor and sleeping threads: nothing polls it.
//! * [`thread`]: [`Builder`], a named thread pinned to one CPU running one executor.
//!
//! Rules: everything here is `!Send` and lives on its executor's thread. A waker must be
//! used (woken, cloned, dropped) only on the thread of its task; one used elsewhere aborts the
//! process with a message instead of corrupting a reference count. Blocking-pool threads
//! never touch a waker: they hand results back through a channel and a `mio::Waker`.

pub mod backend;
pub mod blocking;
pub mod executor;
pub mod net;
pub mod reactor;
pub mod signal;
pub mod task;
pub mod thread;
pub mod time;
pub mod uring;

pub use backend::{Backend, BackendChoice, Resolved, BACKEND_ENV};
pub use blocking::spawn_blocking;
pub use executor::{block_on, spawn_local, yield_if_needed, TIME_SLICE};
pub use net::{TcpListener, TcpStream};
pub use signal::Signal;
pub use task::Task;
pub use thread::{Builder, JoinHandle};
pub use time::{now, sleep, sleep_until, timeout, timeout_at, Elapsed, Sleep, Timeout};
