//! The io_uring backend: connected sockets do their I/O through one ring per executor, with
//! one `io_uring_enter` per loop turn for every socket of the core.
//!
//! * The ring is created with `IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG`:
//!   completions are run when this thread next enters the kernel instead of by a reschedule
//!   IPI (without the flag the same ring measured −31 % in `../shared/floor`), and the
//!   `IORING_SQ_TASKRUN` flag tells the loop when it must enter to collect them.
//! * Receives are single-shot `IORING_OP_RECV` into a ring of provided buffers, armed when a
//!   task reads and finds nothing buffered: a socket nobody reads receives nothing (the
//!   kernel's socket buffer is the back-pressure, as with epoll), and an idle connection pins
//!   no buffer. A completion's bytes are copied into the socket's small receive queue and
//!   the buffer goes straight back to the ring.
//! * Writes are copied into the socket's send queue and go out as one `IORING_OP_SEND` per
//!   socket per turn (everything queued that turn gathered; at most one send in flight per
//!   socket, so bytes never reorder). A queue over [`TX_QUEUE_BYTES_MAX`] makes writers wait.
//! * Listening sockets, the blocking pool's waker and sockets that connect (tools, tests)
//!   stay on the epoll reactor; the ring watches the epoll descriptor with a multishot poll,
//!   so one wait covers both.
//! * A dropped socket whose send is still in flight stays here until its queued bytes are
//!   out (at most [`ORPHAN_LINGER`], then its operations are cancelled); its descriptor is
//!   closed when nothing of it is left in the kernel.
//!
//! Availability is probed at start ([`probe`]): a kernel without COOP_TASKRUN, buffer rings
//! or the needed opcodes, or a seccomp profile that forbids `io_uring_setup` (Docker's and
//! Kubernetes' defaults), makes `--io auto` run epoll and `--io io_uring` fail with the reason.

use std::cell::{Cell, RefCell};
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};

use super::blocking::BlockingPool;
use super::reactor::Reactor;

/// Submission queue entries (the completion queue gets [`CQ_ENTRIES`]).
const SQ_ENTRIES: u32 = 1024;
/// Completion queue entries: room for a turn of every socket of a busy core.
const CQ_ENTRIES: u32 = 8192;
/// Provided receive buffers per core (a power of two) and the size of each: 2 MiB per core.
/// Receives only take a buffer when they complete, and it comes back in the same turn.
const RX_BUFFERS: u16 = 256;
const RX_BUFFER_BYTES: usize = 8 * 1024;
/// The buffer group of the receive buffers.
const RX_GROUP: u16 = 1;
/// Bytes a socket may have queued for sending before its writers wait.
pub const TX_QUEUE_BYTES_MAX: usize = 256 * 1024;
/// A queue emptied with more capacity than this gives its memory back (idle connections).
const QUEUE_KEEP_BYTES_MAX: usize = 4 * 1024;
/// How long a dropped socket may keep sending what was queued before it is cut off.
pub const ORPHAN_LINGER: Duration = Duration::from_secs(5);
/// How long executor teardown waits for the kernel to give back cancelled operations.
const TEARDOWN_WAIT: Duration = Duration::from_secs(1);

const KIND_RECV: u64 = 1;
const KIND_SEND: u64 = 2;
const KIND_EPOLL: u64 = 3;
const KIND_CANCEL: u64 = 4;

/// `kind` in bits 0..8, the slot in 8..40, its generation (24 bits) in 40..64.
fn user_data(index: u32, generation: u32, kind: u64) -> u64 {
    ((generation as u64 & 0xff_ffff) << 40) | ((index as u64) << 8) | kind
}

fn split_user_data(data: u64) -> (u32, u32, u64) {
    (
        ((data >> 8) & 0xffff_ffff) as u32,
        (data >> 40) as u32,
        data & 0xff,
    )
}

/// Why io_uring cannot be used here, or `Ok` if it can (a throwaway ring set up exactly as
/// the executors' rings are).
pub fn probe() -> Result<(), String> {
    Ring::new().map(drop)
}

/// The ring, its provided buffers and its submission helper.
struct Ring {
    ring: IoUring,
    bufs: ManuallyDrop<BufRing>,
    /// A socket was given up on while the kernel still held an operation of it: the
    /// receive buffers are never freed.
    leak_bufs: bool,
}

impl Drop for Ring {
    fn drop(&mut self) {
        if !self.leak_bufs {
            // SAFETY: dropped once, here; nothing of ours is in the kernel any more.
            unsafe { ManuallyDrop::drop(&mut self.bufs) };
        }
    }
}

impl Ring {
    fn new() -> Result<Ring, String> {
        let mut builder = IoUring::builder();
        builder
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .setup_cqsize(CQ_ENTRIES);
        let ring = builder.build(SQ_ENTRIES).map_err(|e| match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => {
                format!("io_uring is not permitted here ({e}: a seccomp profile or sysctl forbids it)")
            }
            Some(libc::ENOSYS) => format!("io_uring is not available ({e})"),
            Some(libc::EINVAL) => format!(
                "the kernel does not support io_uring with COOP_TASKRUN (Linux >= 5.19 needed): {e}"
            ),
            _ => format!("io_uring_setup failed: {e}"),
        })?;
        let mut probe = Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|e| format!("io_uring probe failed: {e}"))?;
        for (code, name) in [
            (opcode::Recv::CODE, "RECV"),
            (opcode::Send::CODE, "SEND"),
            (opcode::PollAdd::CODE, "POLL_ADD"),
            (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
        ] {
            if !probe.is_supported(code) {
                return Err(format!("the kernel's io_uring lacks IORING_OP_{name}"));
            }
        }
        let bufs = BufRing::new(&ring)?;
        Ok(Ring {
            ring,
            bufs: ManuallyDrop::new(bufs),
            leak_bufs: false,
        })
    }

    /// Queues `entry`, submitting what is queued first if the submission queue is full.
    fn push(&mut self, entry: &squeue::Entry) {
        loop {
            // SAFETY: every buffer an entry points to lives in a socket that the reactor
            // keeps (or, at teardown, leaks) until the entry's completion arrives.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return;
            }
            if let Err(e) = self.ring.submit() {
                if !transient(&e) {
                    eprintln!("kes: io_uring submit failed: {e}");
                    return;
                }
            }
        }
    }
}

fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::ETIME) | Some(libc::EAGAIN)
    )
}

/// Provided receive buffers: a page-aligned ring of entries shared with the kernel, and the
/// buffers they point to.
struct BufRing {
    entries: *mut types::BufRingEntry,
    entries_bytes: usize,
    bufs: Box<[u8]>,
    tail: u16,
}

impl BufRing {
    fn new(ring: &IoUring) -> Result<BufRing, String> {
        let entries_bytes = RX_BUFFERS as usize * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: an anonymous private mapping (page aligned, as the kernel requires).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                entries_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!(
                "io_uring buffer ring: mmap failed: {}",
                io::Error::last_os_error()
            ));
        }
        let mut br = BufRing {
            entries: ptr.cast(),
            entries_bytes,
            bufs: vec![0u8; RX_BUFFERS as usize * RX_BUFFER_BYTES].into_boxed_slice(),
            tail: 0,
        };
        // SAFETY: the mapping outlives every receive that may use it (see `Ring`'s drop).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(ptr as u64, RX_BUFFERS, RX_GROUP, 0)
                .map_err(|e| {
                    format!(
                        "the kernel does not support io_uring buffer rings (Linux >= 5.19): {e}"
                    )
                })?;
        }
        for bid in 0..RX_BUFFERS {
            br.push(bid);
        }
        br.publish();
        Ok(br)
    }

    /// Hands buffer `bid` back to the kernel (visible after [`publish`](Self::publish)).
    fn push(&mut self, bid: u16) {
        let mask = RX_BUFFERS - 1;
        // SAFETY: the index is masked into the ring of RX_BUFFERS entries.
        let entry = unsafe { &mut *self.entries.add((self.tail & mask) as usize) };
        entry.set_addr(self.bufs.as_ptr() as u64 + bid as u64 * RX_BUFFER_BYTES as u64);
        entry.set_len(RX_BUFFER_BYTES as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the ring's tail overlays entry 0's last two bytes; the kernel reads it.
        unsafe {
            let tail = types::BufRingEntry::tail(self.entries as *const _) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    fn get(&self, bid: u16, len: usize) -> Option<&[u8]> {
        if bid >= RX_BUFFERS || len > RX_BUFFER_BYTES {
            return None;
        }
        let start = bid as usize * RX_BUFFER_BYTES;
        Some(&self.bufs[start..start + len])
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.entries.cast(), self.entries_bytes) };
    }
}

/// One connected socket on the ring, shared by its [`Socket`] handle and the reactor's slot.
pub(crate) struct Sock {
    index: u32,
    generation: u32,
    /// Owns the descriptor: it is closed when both the handle and the slot let go, which the
    /// slot does only when nothing of the socket is left in the kernel.
    stream: std::net::TcpStream,
    rx: RefCell<Vec<u8>>,
    rx_pos: Cell<usize>,
    rx_eof: Cell<bool>,
    rx_error: Cell<Option<i32>>,
    recv_in_flight: Cell<bool>,
    read_waker: Cell<Option<Waker>>,
    /// Written by tasks since the last send was started.
    tx_pending: RefCell<Vec<u8>>,
    /// The buffer of the send in flight (untouched until its completion).
    tx_in_flight: RefCell<Vec<u8>>,
    tx_sent: Cell<usize>,
    send_in_flight: Cell<bool>,
    tx_error: Cell<Option<i32>>,
    write_waker: Cell<Option<Waker>>,
    /// On the reactor's list of sockets with a send to start.
    dirty: Cell<bool>,
    /// The handle was dropped: finish sending, then let go.
    orphaned_at: Cell<Option<Instant>>,
    cancelled: Cell<bool>,
}

impl Sock {
    /// The socket (for its address and options).
    pub(crate) fn stream(&self) -> &std::net::TcpStream {
        &self.stream
    }

    fn queued_tx_bytes(&self) -> usize {
        self.tx_pending.borrow().len() + self.tx_in_flight.borrow().len() - self.tx_sent.get()
    }

    fn in_kernel(&self) -> bool {
        self.recv_in_flight.get() || self.send_in_flight.get()
    }

    fn store_waker(slot: &Cell<Option<Waker>>, cx: &Context<'_>) {
        let w = slot.take();
        slot.set(Some(match w {
            Some(w) if w.will_wake(cx.waker()) => w,
            _ => cx.waker().clone(),
        }));
    }

    fn wake(slot: &Cell<Option<Waker>>) {
        if let Some(w) = slot.take() {
            w.wake();
        }
    }
}

struct Slot {
    generation: u32,
    sock: Option<Rc<Sock>>,
}

/// The executor's ring and the sockets on it.
pub(crate) struct Uring {
    ring: RefCell<Ring>,
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<u32>>,
    /// Sockets with bytes to send and no send in flight.
    dirty: RefCell<Vec<Rc<Sock>>>,
    /// Dropped sockets with operations still in the kernel.
    orphans: RefCell<Vec<Rc<Sock>>>,
    /// The epoll descriptor has events (or its poll must be re-armed).
    epoll_fd: RawFd,
    epoll_armed: Cell<bool>,
    epoll_ready: Cell<bool>,
}

impl Uring {
    pub(crate) fn new(reactor: &Reactor) -> io::Result<Uring> {
        let ring = Ring::new().map_err(io::Error::other)?;
        Ok(Uring {
            ring: RefCell::new(ring),
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            dirty: RefCell::new(Vec::new()),
            orphans: RefCell::new(Vec::new()),
            epoll_fd: reactor.raw_fd(),
            epoll_armed: Cell::new(false),
            epoll_ready: Cell::new(true),
        })
    }

    /// Puts a connected socket on the ring. It is made blocking: the ring tries every
    /// operation without waiting first and polls inside the kernel when it must wait,
    /// whatever the flag, while some kernels answer `EAGAIN` to the ring for an
    /// `O_NONBLOCK` socket instead of waiting.
    pub(crate) fn register(&self, stream: std::net::TcpStream) -> Rc<Sock> {
        let _ = stream.set_nonblocking(false);
        let index = match self.free.borrow_mut().pop() {
            Some(i) => i,
            None => {
                let mut slots = self.slots.borrow_mut();
                slots.push(Slot {
                    generation: 0,
                    sock: None,
                });
                (slots.len() - 1) as u32
            }
        };
        let generation = self.slots.borrow()[index as usize].generation;
        let sock = Rc::new(Sock {
            index,
            generation,
            stream,
            rx: RefCell::new(Vec::new()),
            rx_pos: Cell::new(0),
            rx_eof: Cell::new(false),
            rx_error: Cell::new(None),
            recv_in_flight: Cell::new(false),
            read_waker: Cell::new(None),
            tx_pending: RefCell::new(Vec::new()),
            tx_in_flight: RefCell::new(Vec::new()),
            tx_sent: Cell::new(0),
            send_in_flight: Cell::new(false),
            tx_error: Cell::new(None),
            write_waker: Cell::new(None),
            dirty: Cell::new(false),
            orphaned_at: Cell::new(None),
            cancelled: Cell::new(false),
        });
        self.slots.borrow_mut()[index as usize].sock = Some(sock.clone());
        sock
    }

    /// Reads what was received; arms a receive when nothing is.
    pub(crate) fn poll_read(
        &self,
        sock: &Sock,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        {
            let mut rx = sock.rx.borrow_mut();
            let pos = sock.rx_pos.get();
            if pos < rx.len() {
                let n = buf.len().min(rx.len() - pos);
                buf[..n].copy_from_slice(&rx[pos..pos + n]);
                if pos + n == rx.len() {
                    rx.clear();
                    sock.rx_pos.set(0);
                    if rx.capacity() > QUEUE_KEEP_BYTES_MAX {
                        *rx = Vec::new();
                    }
                } else {
                    sock.rx_pos.set(pos + n);
                }
                return Poll::Ready(Ok(n));
            }
        }
        if let Some(errno) = sock.rx_error.get() {
            return Poll::Ready(Err(io::Error::from_raw_os_error(errno)));
        }
        if sock.rx_eof.get() || buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if !sock.recv_in_flight.get() {
            sock.recv_in_flight.set(true);
            let entry = opcode::Recv::new(
                types::Fd(sock.stream.as_raw_fd()),
                std::ptr::null_mut(),
                RX_BUFFER_BYTES as u32,
            )
            .buf_group(RX_GROUP)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT)
            .user_data(user_data(sock.index, sock.generation, KIND_RECV));
            self.ring.borrow_mut().push(&entry);
        }
        Sock::store_waker(&sock.read_waker, cx);
        Poll::Pending
    }

    /// Queues bytes for sending (all of `buf` that fits under [`TX_QUEUE_BYTES_MAX`]).
    pub(crate) fn poll_write(
        &self,
        sock: &Rc<Sock>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(errno) = sock.tx_error.get() {
            return Poll::Ready(Err(io::Error::from_raw_os_error(errno)));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let room = TX_QUEUE_BYTES_MAX.saturating_sub(sock.queued_tx_bytes());
        if room == 0 {
            Sock::store_waker(&sock.write_waker, cx);
            return Poll::Pending;
        }
        let n = room.min(buf.len());
        sock.tx_pending.borrow_mut().extend_from_slice(&buf[..n]);
        self.mark_dirty(sock);
        Poll::Ready(Ok(n))
    }

    /// Ready once everything queued has been handed to the kernel's socket buffer.
    pub(crate) fn poll_flush(&self, sock: &Sock, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(errno) = sock.tx_error.get() {
            return Poll::Ready(Err(io::Error::from_raw_os_error(errno)));
        }
        if sock.queued_tx_bytes() == 0 {
            return Poll::Ready(Ok(()));
        }
        Sock::store_waker(&sock.write_waker, cx);
        Poll::Pending
    }

    fn mark_dirty(&self, sock: &Rc<Sock>) {
        if !sock.dirty.get() && !sock.send_in_flight.get() {
            sock.dirty.set(true);
            self.dirty.borrow_mut().push(sock.clone());
        }
    }

    /// The handle let go: the socket stays until what it queued is sent.
    pub(crate) fn release(&self, sock: &Rc<Sock>) {
        sock.read_waker.take();
        sock.write_waker.take();
        sock.orphaned_at.set(Some(super::now()));
        if sock.recv_in_flight.get() {
            self.cancel(sock, KIND_RECV);
        }
        if !self.try_finish(sock) {
            self.orphans.borrow_mut().push(sock.clone());
        }
    }

    fn cancel(&self, sock: &Sock, kind: u64) {
        let entry = opcode::AsyncCancel::new(user_data(sock.index, sock.generation, kind))
            .build()
            .user_data(user_data(sock.index, sock.generation, KIND_CANCEL));
        self.ring.borrow_mut().push(&entry);
    }

    /// Frees an orphan's slot once nothing of it is in the kernel or waiting to be sent.
    fn try_finish(&self, sock: &Sock) -> bool {
        let unsent =
            sock.tx_error.get().is_none() && !sock.cancelled.get() && sock.queued_tx_bytes() > 0;
        if sock.orphaned_at.get().is_none() || sock.in_kernel() || unsent {
            return false;
        }
        let taken = {
            let mut slots = self.slots.borrow_mut();
            let slot = &mut slots[sock.index as usize];
            if slot.generation != sock.generation {
                return true;
            }
            slot.generation = slot.generation.wrapping_add(1) & 0xff_ffff;
            slot.sock.take()
        };
        if taken.is_some() {
            self.free.borrow_mut().push(sock.index);
        }
        drop(taken); // outside the borrow; closes the descriptor if the handle is gone
        true
    }

    /// Starts a send on every socket that queued bytes this turn; cuts off orphans that
    /// lingered too long.
    fn start_sends(&self, now: Instant) {
        let mut dirty = std::mem::take(&mut *self.dirty.borrow_mut());
        for sock in dirty.drain(..) {
            sock.dirty.set(false);
            self.start_send(&sock);
        }
        // Starting a send marks nothing dirty: give the list its capacity back.
        *self.dirty.borrow_mut() = dirty;
        if self.orphans.borrow().is_empty() {
            return;
        }
        // Finished orphans leave the list here (their last completion freed their slot);
        // ones past their linger are cut off.
        self.orphans.borrow_mut().retain(|sock| {
            if self.try_finish(sock) {
                return false;
            }
            let expired = sock
                .orphaned_at
                .get()
                .is_some_and(|at| now.saturating_duration_since(at) >= ORPHAN_LINGER);
            if expired && !sock.cancelled.get() {
                sock.cancelled.set(true);
                // SAFETY: shutting down our own socket; ends the send the peer never read.
                unsafe { libc::shutdown(sock.stream.as_raw_fd(), libc::SHUT_RDWR) };
                if sock.send_in_flight.get() {
                    self.cancel(sock, KIND_SEND);
                }
                if sock.recv_in_flight.get() {
                    self.cancel(sock, KIND_RECV);
                }
            }
            true
        });
    }

    fn start_send(&self, sock: &Sock) {
        if sock.send_in_flight.get() || sock.tx_error.get().is_some() || sock.cancelled.get() {
            return;
        }
        let mut pending = sock.tx_pending.borrow_mut();
        if pending.is_empty() {
            return;
        }
        let mut in_flight = sock.tx_in_flight.borrow_mut();
        std::mem::swap(&mut *pending, &mut *in_flight);
        sock.tx_sent.set(0);
        self.submit_send(sock, &in_flight);
    }

    fn submit_send(&self, sock: &Sock, in_flight: &[u8]) {
        let rest = &in_flight[sock.tx_sent.get()..];
        debug_assert!(!rest.is_empty());
        sock.send_in_flight.set(true);
        let entry = opcode::Send::new(
            types::Fd(sock.stream.as_raw_fd()),
            rest.as_ptr(),
            rest.len().min(u32::MAX as usize) as u32,
        )
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(user_data(sock.index, sock.generation, KIND_SEND));
        self.ring.borrow_mut().push(&entry);
    }

    /// One loop turn's I/O: starts queued sends, enters the kernel once (waiting at most
    /// `timeout` if `wait`), then handles every completion and the epoll events.
    pub(crate) fn turn(
        &self,
        timeout: Option<Duration>,
        reactor: &Reactor,
        blocking: &BlockingPool,
        now: Instant,
    ) {
        self.start_sends(now);
        if !self.epoll_armed.get() {
            self.epoll_armed.set(true);
            let entry = opcode::PollAdd::new(types::Fd(self.epoll_fd), libc::POLLIN as u32)
                .multi(true)
                .build()
                .user_data(user_data(0, 0, KIND_EPOLL));
            self.ring.borrow_mut().push(&entry);
        }
        // Orphans waiting to be cut off bound the wait.
        let timeout = if self.orphans.borrow().is_empty() {
            timeout
        } else {
            Some(timeout.map_or(ORPHAN_LINGER, |t| t.min(ORPHAN_LINGER)))
        };
        let wait = !matches!(timeout, Some(Duration::ZERO)) && !self.epoll_ready.get();
        {
            let mut ring = self.ring.borrow_mut();
            let ring = &mut ring.ring;
            let entered = if wait {
                match timeout {
                    None => ring.submit_and_wait(1),
                    Some(t) => {
                        let ts = types::Timespec::new()
                            .sec(t.as_secs())
                            .nsec(t.subsec_nanos());
                        let args = types::SubmitArgs::new().timespec(&ts);
                        ring.submitter().submit_with_args(1, &args)
                    }
                }
            } else {
                let mut sq = ring.submission();
                sq.sync();
                let must = !sq.is_empty() || sq.taskrun() || sq.cq_overflow();
                drop(sq);
                if must {
                    ring.submit()
                } else {
                    Ok(0)
                }
            };
            if let Err(e) = entered {
                if !transient(&e) {
                    eprintln!("kes: io_uring_enter failed: {e}");
                }
            }
        }
        self.complete();
        if self.epoll_ready.replace(false) {
            let full = reactor.poll(Some(Duration::ZERO), blocking);
            // More events than one wait takes: look again next turn.
            self.epoll_ready.set(full);
        }
    }

    /// Handles every completion in the queue.
    fn complete(&self) {
        let mut returned = false;
        loop {
            // Take one completion at a time: handling it may queue new entries.
            let cqe = {
                let mut ring = self.ring.borrow_mut();
                let mut cq = ring.ring.completion();
                cq.next()
            };
            let Some(cqe) = cqe else { break };
            let (index, generation, kind) = split_user_data(cqe.user_data());
            let (res, flags) = (cqe.result(), cqe.flags());
            match kind {
                KIND_EPOLL => {
                    self.epoll_ready.set(true);
                    if !cqueue::more(flags) {
                        self.epoll_armed.set(false);
                    }
                    continue;
                }
                KIND_CANCEL => continue,
                _ => {}
            }
            // A received buffer goes back to the ring whatever became of its socket.
            let bid = if kind == KIND_RECV && res > 0 {
                cqueue::buffer_select(flags)
            } else {
                None
            };
            let sock = {
                let slots = self.slots.borrow();
                match slots.get(index as usize) {
                    Some(slot) if slot.generation == generation => slot.sock.clone(),
                    _ => None,
                }
            };
            match (kind, sock) {
                (KIND_RECV, Some(sock)) => {
                    sock.recv_in_flight.set(false);
                    if res > 0 {
                        let ring = self.ring.borrow();
                        match bid.and_then(|b| ring.bufs.get(b, res as usize)) {
                            Some(bytes) if sock.orphaned_at.get().is_none() => {
                                sock.rx.borrow_mut().extend_from_slice(bytes)
                            }
                            Some(_) => {}
                            None => sock.rx_error.set(Some(libc::EIO)),
                        }
                    } else if res == 0 {
                        sock.rx_eof.set(true);
                    } else if res != -libc::ENOBUFS && res != -libc::ECANCELED {
                        // ENOBUFS: every buffer was taken this turn; the reader re-arms.
                        sock.rx_error.set(Some(-res));
                    }
                    Sock::wake(&sock.read_waker);
                    self.try_finish_orphan(&sock);
                }
                (KIND_SEND, Some(sock)) => {
                    sock.send_in_flight.set(false);
                    if res < 0 {
                        sock.tx_error.set(Some(-res));
                        sock.tx_pending.borrow_mut().clear();
                        sock.tx_in_flight.borrow_mut().clear();
                        sock.tx_sent.set(0);
                    } else {
                        let sent = sock.tx_sent.get() + res as usize;
                        sock.tx_sent.set(sent);
                        let in_flight = sock.tx_in_flight.borrow();
                        if res == 0 || sent < in_flight.len() {
                            if res == 0 {
                                sock.tx_error.set(Some(libc::EPIPE));
                            } else if !sock.cancelled.get() {
                                self.submit_send(&sock, &in_flight);
                            }
                        } else {
                            drop(in_flight);
                            let mut in_flight = sock.tx_in_flight.borrow_mut();
                            in_flight.clear();
                            if in_flight.capacity() > QUEUE_KEEP_BYTES_MAX {
                                *in_flight = Vec::new();
                            }
                            sock.tx_sent.set(0);
                            drop(in_flight);
                            if !sock.tx_pending.borrow().is_empty() {
                                self.mark_dirty(&sock);
                            }
                        }
                    }
                    Sock::wake(&sock.write_waker);
                    self.try_finish_orphan(&sock);
                }
                _ => {}
            }
            if let Some(bid) = bid {
                self.ring.borrow_mut().bufs.push(bid);
                returned = true;
            }
        }
        if returned {
            self.ring.borrow().bufs.publish();
        }
    }

    /// Frees an orphan's slot at its last completion (the orphan list is swept next turn).
    fn try_finish_orphan(&self, sock: &Sock) {
        if sock.orphaned_at.get().is_some() {
            self.try_finish(sock);
        }
    }

    /// Executor teardown: cuts every socket off and waits (bounded) for the kernel to give
    /// back their operations; whatever it still holds then is leaked rather than freed
    /// under it.
    pub(crate) fn shutdown(&self) {
        let socks: Vec<Rc<Sock>> = self
            .slots
            .borrow()
            .iter()
            .filter_map(|s| s.sock.clone())
            .collect();
        for sock in &socks {
            sock.cancelled.set(true);
            // SAFETY: our own socket.
            unsafe { libc::shutdown(sock.stream.as_raw_fd(), libc::SHUT_RDWR) };
            if sock.send_in_flight.get() {
                self.cancel(sock, KIND_SEND);
            }
            if sock.recv_in_flight.get() {
                self.cancel(sock, KIND_RECV);
            }
        }
        let deadline = Instant::now() + TEARDOWN_WAIT;
        while socks.iter().any(|s| s.in_kernel()) && Instant::now() < deadline {
            {
                let ring = &mut self.ring.borrow_mut().ring;
                let ts = types::Timespec::new().nsec(10_000_000);
                let args = types::SubmitArgs::new().timespec(&ts);
                let _ = ring.submitter().submit_with_args(1, &args);
            }
            self.complete();
        }
        for sock in socks {
            if sock.in_kernel() {
                // The kernel may still write into or read from this socket's buffers.
                self.ring.borrow_mut().leak_bufs = true;
                std::mem::forget(sock);
            }
        }
        self.slots.borrow_mut().clear();
        self.orphans.borrow_mut().clear();
        self.dirty.borrow_mut().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::executor::{run_on, Config, Runtime};
    use crate::rt::{sleep, spawn_local, timeout, Backend, TcpListener, TcpStream};
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    use std::future::Future;

    /// Runs `f` on an executor with an io_uring backend (these machines allow io_uring; a
    /// host that does not fails here with the probe's reason).
    fn on_ring<F: Future>(f: F) -> F::Output {
        if let Err(why) = probe() {
            panic!("io_uring backend tests need io_uring: {why}");
        }
        let rt = Runtime::new(Config {
            backend: Backend::IoUring,
            ..Config::default()
        })
        .expect("an io_uring executor");
        run_on(rt, f)
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let client = spawn_local(async move { TcpStream::connect(addr).await.unwrap() });
        let server = listener.accept().await.unwrap();
        (server, client.await)
    }

    #[test]
    fn accepted_sockets_run_on_the_ring_and_echo() {
        on_ring(async {
            let (mut s, mut c) = pair().await;
            assert_eq!(s.backend(), Backend::IoUring);
            assert_eq!(c.backend(), Backend::Epoll);
            let echo = spawn_local(async move {
                let mut buf = [0u8; 64];
                // Nothing there yet: the read parks until the client writes.
                let n = s.read(&mut buf).await.unwrap();
                s.write_all(&buf[..n]).await.unwrap();
                // End of stream after the client shuts down its side.
                assert_eq!(s.read(&mut buf).await.unwrap(), 0);
            });
            sleep(Duration::from_millis(20)).await;
            c.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            c.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
            c.shutdown(std::net::Shutdown::Write).await.unwrap();
            echo.await;
        });
    }

    #[test]
    fn writers_wait_for_a_slow_reader_and_every_byte_arrives_in_order() {
        on_ring(async {
            let (mut s, mut c) = pair().await;
            const BYTES: usize = 8 * 1024 * 1024;
            let writer = spawn_local(async move {
                let data: Vec<u8> = (0..BYTES).map(|i| (i % 251) as u8).collect();
                s.write_all(&data).await.unwrap();
                s.flush().await.unwrap();
            });
            sleep(Duration::from_millis(50)).await; // let the writer fill every buffer
            let mut got = Vec::with_capacity(BYTES);
            let mut buf = vec![0u8; 64 * 1024];
            while got.len() < BYTES {
                let n = c.read(&mut buf).await.unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
            writer.await;
        });
    }

    #[test]
    fn a_dropped_socket_still_delivers_what_it_queued_then_closes() {
        on_ring(async {
            let (mut s, mut c) = pair().await;
            const BYTES: usize = 200 * 1024;
            s.write_all(&vec![9u8; BYTES]).await.unwrap();
            drop(s); // the send may still be in flight
            let mut got = 0usize;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = timeout(Duration::from_secs(5), c.read(&mut buf))
                    .await
                    .expect("the orphan's bytes and FIN arrive")
                    .unwrap();
                if n == 0 {
                    break;
                }
                assert!(buf[..n].iter().all(|&b| b == 9));
                got += n;
            }
            assert_eq!(got, BYTES);
        });
    }

    #[test]
    fn more_receivers_than_buffers_are_all_served() {
        // 300 connections all receiving in the same turns: more completions than the 256
        // provided buffers, so some receives come back ENOBUFS and are re-armed.
        const CONNS: usize = 300;
        on_ring(async {
            let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = listener.local_addr().unwrap();
            let server = spawn_local(async move {
                let mut tasks = Vec::new();
                for _ in 0..CONNS {
                    let mut s = listener.accept().await.unwrap();
                    tasks.push(spawn_local(async move {
                        let mut buf = vec![0u8; 4096];
                        let mut total = 0;
                        while total < 3000 {
                            let n = s.read(&mut buf).await.unwrap();
                            assert!(n > 0);
                            total += n;
                        }
                        s.write_all(&total.to_be_bytes()).await.unwrap();
                    }));
                }
                for t in tasks {
                    t.await;
                }
            });
            let mut clients = Vec::new();
            for _ in 0..CONNS {
                clients.push(TcpStream::connect(addr).await.unwrap());
            }
            sleep(Duration::from_millis(50)).await;
            for c in &mut clients {
                c.write_all(&[1u8; 3000]).await.unwrap();
            }
            for c in &mut clients {
                let mut n = [0u8; 8];
                timeout(Duration::from_secs(10), c.read_exact(&mut n))
                    .await
                    .expect("every connection is answered")
                    .unwrap();
                assert_eq!(usize::from_be_bytes(n), 3000);
            }
            server.await;
            // Every answered socket was dropped and has left the ring (a few turns later:
            // the last send completions may arrive after the clients read).
            sleep(Duration::from_millis(50)).await;
            let left = crate::rt::executor::with(|rt| {
                rt.uring.as_ref().map(|u| {
                    let on_ring = u.slots.borrow().iter().filter(|s| s.sock.is_some()).count();
                    (on_ring, u.orphans.borrow().len())
                })
            })
            .flatten();
            assert_eq!(left, Some((0, 0)));
        });
    }

    #[test]
    fn an_executor_ends_cleanly_with_receives_in_flight() {
        on_ring(async {
            let (mut s, c) = pair().await;
            spawn_local(async move {
                let mut buf = [0u8; 16];
                let _ = s.read(&mut buf).await; // parked in the kernel when the executor ends
            })
            .detach();
            sleep(Duration::from_millis(20)).await;
            drop(c);
        });
        // And a new one starts on the same thread.
        on_ring(async {
            let (_s, _c) = pair().await;
        });
    }

    #[test]
    fn user_data_round_trips() {
        let d = user_data(123_456, 0xab_cdef, KIND_SEND);
        assert_eq!(split_user_data(d), (123_456, 0xab_cdef, KIND_SEND));
        let d = user_data(u32::MAX, 0xff_ffff, KIND_RECV);
        assert_eq!(split_user_data(d), (u32::MAX, 0xff_ffff, KIND_RECV));
    }
}
