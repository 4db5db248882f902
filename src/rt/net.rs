//! TCP sockets on the executor's reactor: [`TcpListener`] (bound with `SO_REUSEPORT`, so
//! every core listens on the same port and the kernel spreads connections over them) and
//! [`TcpStream`] (futures-lite `AsyncRead`/`AsyncWrite`, plus `shutdown`, `set_nodelay`,
//! `peer_addr`). On epoll a read or write makes its system call only while the socket is
//! ready; the first `WouldBlock` parks the task until epoll reports the next edge. When the
//! executor runs io_uring, accepted sockets go on its ring instead ([`super::uring`]: reads
//! from a receive queue the ring fills, writes queued and sent at the end of the turn);
//! listeners and connecting sockets stay on epoll.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite};

use super::executor;
use super::reactor::{Direction, IoState};
use super::uring::{Sock, Uring};

/// Pending connections the kernel queues per listener: asked for 65 535, which the kernel
/// caps at `net.core.somaxconn` (4096 by default) — what Go's listeners (upstream KES) ask
/// for. A short queue overflows under a burst of connections while the core works through
/// them, and the kernel then drops the SYNs of well-behaved clients (retried after 1, 3, 7 s).
pub const LISTEN_BACKLOG: i32 = 65_535;

fn register(source: &mut impl mio::event::Source) -> io::Result<Rc<IoState>> {
    executor::with(|rt| rt.reactor.register(source)).unwrap_or_else(|| {
        Err(io::Error::other(
            "rt: sockets can only be used inside an executor",
        ))
    })
}

fn release(state: &IoState) {
    executor::with(|rt| rt.reactor.release(state));
}

/// A listening socket of this core.
pub struct TcpListener {
    io: mio::net::TcpListener,
    state: Rc<IoState>,
}

impl TcpListener {
    /// Binds `addr` with `SO_REUSEADDR` and `SO_REUSEPORT` and listens.
    pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(
            Domain::for_address(addr),
            Type::STREAM.nonblocking().cloexec(),
            None,
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.bind(&addr.into())?;
        socket.listen(LISTEN_BACKLOG)?;
        let mut io = mio::net::TcpListener::from_std(socket.into());
        let state = register(&mut io)?;
        Ok(TcpListener { io, state })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    /// The next connection (non-blocking, close-on-exec).
    pub async fn accept(&self) -> io::Result<TcpStream> {
        futures_lite::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<TcpStream>> {
        if !self.state.is_ready(Direction::Read) {
            self.state.wait(Direction::Read, cx);
            return Poll::Pending;
        }
        loop {
            match self.io.accept() {
                Ok((stream, _)) => return Poll::Ready(TcpStream::from_mio(stream, true)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.state.clear_and_wait(Direction::Read, cx);
                    return Poll::Pending;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl std::os::fd::AsRawFd for TcpListener {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.io.as_raw_fd()
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        release(&self.state);
    }
}

/// A connected socket of this core.
pub struct TcpStream {
    inner: Inner,
}

enum Inner {
    /// On the epoll reactor: readiness, then the system call.
    Epoll {
        io: mio::net::TcpStream,
        state: Rc<IoState>,
    },
    /// On the executor's io_uring: receives and sends go through the ring.
    Uring(Rc<Sock>),
}

fn with_uring<R>(f: impl FnOnce(&Uring) -> R) -> R {
    executor::with(|rt| match &rt.uring {
        Some(uring) => f(uring),
        None => panic!("rt: an io_uring socket used on an executor without a ring"),
    })
    .unwrap_or_else(|| panic!("rt: sockets can only be used inside their executor"))
}

impl TcpStream {
    /// An accepted or connected socket: on the ring if this executor runs io_uring (accepted
    /// sockets only), else on epoll.
    fn from_mio(io: mio::net::TcpStream, ring: bool) -> io::Result<TcpStream> {
        if ring {
            use std::os::fd::{FromRawFd, IntoRawFd};
            let uring = executor::with(|rt| rt.uring.is_some()).unwrap_or(false);
            if uring {
                // SAFETY: the descriptor was just released by `io`; the std stream owns it.
                let stream = unsafe { std::net::TcpStream::from_raw_fd(io.into_raw_fd()) };
                let sock = with_uring(|u| u.register(stream));
                return Ok(TcpStream {
                    inner: Inner::Uring(sock),
                });
            }
        }
        let mut io = io;
        let state = register(&mut io)?;
        Ok(TcpStream {
            inner: Inner::Epoll { io, state },
        })
    }

    fn sock_ref(&self) -> socket2::SockRef<'_> {
        match &self.inner {
            Inner::Epoll { io, .. } => socket2::SockRef::from(io),
            Inner::Uring(sock) => socket2::SockRef::from(sock.stream()),
        }
    }

    /// The backend this socket's I/O goes through.
    pub fn backend(&self) -> super::Backend {
        match &self.inner {
            Inner::Epoll { .. } => super::Backend::Epoll,
            Inner::Uring(_) => super::Backend::IoUring,
        }
    }

    /// Connects to `addr` (for tests and tools; the server only accepts). Connected sockets
    /// stay on epoll.
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = TcpStream::from_mio(mio::net::TcpStream::connect(addr)?, false)?;
        let Inner::Epoll { io, state } = &stream.inner else {
            unreachable!("connected sockets are on epoll");
        };
        // Connected once writable; a failed connect reports its error through SO_ERROR.
        futures_lite::future::poll_fn(|cx| {
            if !state.is_ready(Direction::Write) {
                state.wait(Direction::Write, cx);
                return Poll::Pending;
            }
            if let Some(e) = io.take_error()? {
                return Poll::Ready(Err(e));
            }
            match io.peer_addr() {
                Ok(_) => Poll::Ready(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    state.clear_and_wait(Direction::Write, cx);
                    Poll::Pending
                }
                Err(e) => Poll::Ready(Err(e)),
            }
        })
        .await?;
        Ok(stream)
    }

    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.sock_ref().set_nodelay(on)
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.sock_ref()
            .peer_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not an IP socket"))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock_ref()
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not an IP socket"))
    }

    /// Shuts down one or both directions; on the ring, after what was queued is sent.
    pub async fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if let Inner::Uring(sock) = &self.inner {
            if how != Shutdown::Read {
                futures_lite::future::poll_fn(|cx| with_uring(|u| u.poll_flush(sock, cx))).await?;
            }
        }
        self.sock_ref().shutdown(how)
    }

    /// Reads into `buf`. A short read means the socket is drained (TCP): the next read waits
    /// for an edge without a system call.
    pub fn poll_read_buf(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let (io, state) = match &self.inner {
            Inner::Epoll { io, state } => (io, state),
            Inner::Uring(sock) => return with_uring(|u| u.poll_read(sock, cx, buf)),
        };
        if !state.is_ready(Direction::Read) {
            state.wait(Direction::Read, cx);
            return Poll::Pending;
        }
        loop {
            match (&*io).read(buf) {
                Ok(n) => {
                    if n > 0 && n < buf.len() {
                        state.clear(Direction::Read);
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    state.clear_and_wait(Direction::Read, cx);
                    return Poll::Pending;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Writes from `buf` (part of it if the socket buffer fills). On the ring the bytes are
    /// queued and sent at the end of the loop turn.
    pub fn poll_write_buf(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let (io, state) = match &self.inner {
            Inner::Epoll { io, state } => (io, state),
            Inner::Uring(sock) => return with_uring(|u| u.poll_write(sock, cx, buf)),
        };
        if !state.is_ready(Direction::Write) {
            state.wait(Direction::Write, cx);
            return Poll::Pending;
        }
        loop {
            match (&*io).write(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    state.clear_and_wait(Direction::Write, cx);
                    return Poll::Pending;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Ready when everything written was handed to the kernel (at once on epoll).
    pub fn poll_flush_buf(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &self.inner {
            Inner::Epoll { .. } => Poll::Ready(Ok(())),
            Inner::Uring(sock) => with_uring(|u| u.poll_flush(sock, cx)),
        }
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_read_buf(cx, buf)
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_buf(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush_buf(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_flush_buf(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(self.sock_ref().shutdown(Shutdown::Write)),
            other => other,
        }
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        match &self.inner {
            Inner::Epoll { state, .. } => release(state),
            Inner::Uring(sock) => {
                executor::with(|rt| {
                    if let Some(u) = &rt.uring {
                        u.release(sock)
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rt::{block_on, sleep, spawn_local, timeout};
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    use std::time::Duration;

    #[test]
    fn a_parked_read_wakes_on_data() {
        block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = listener.local_addr().unwrap();
            let server = spawn_local(async move {
                let mut s = listener.accept().await.unwrap();
                let mut buf = [0u8; 64];
                // Nothing there yet: the read parks until the client writes.
                let n = s.read(&mut buf).await.unwrap();
                s.write_all(&buf[..n]).await.unwrap();
                // End of stream after the client shuts down its side.
                assert_eq!(s.read(&mut buf).await.unwrap(), 0);
            });
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.set_nodelay(true).unwrap();
            sleep(Duration::from_millis(20)).await;
            c.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            c.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
            c.shutdown(Shutdown::Write).await.unwrap();
            server.await;
        });
    }

    #[test]
    fn a_read_with_a_timeout_times_out_and_the_socket_still_works() {
        block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = listener.local_addr().unwrap();
            let client = spawn_local(async move {
                let mut c = TcpStream::connect(addr).await.unwrap();
                sleep(Duration::from_millis(50)).await;
                c.write_all(b"late").await.unwrap();
                c
            });
            let mut s = listener.accept().await.unwrap();
            let mut buf = [0u8; 16];
            let r = timeout(Duration::from_millis(10), s.read(&mut buf)).await;
            assert!(r.is_err(), "read should time out");
            let n = timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&buf[..n], b"late");
            drop(client.await);
        });
    }

    #[test]
    fn large_writes_wait_for_the_reader() {
        block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = listener.local_addr().unwrap();
            const BYTES: usize = 8 * 1024 * 1024;
            let writer = spawn_local(async move {
                let mut s = listener.accept().await.unwrap();
                let data = vec![7u8; BYTES];
                s.write_all(&data).await.unwrap();
            });
            let mut c = TcpStream::connect(addr).await.unwrap();
            let mut got = 0usize;
            let mut buf = vec![0u8; 64 * 1024];
            sleep(Duration::from_millis(20)).await; // let the writer fill the buffers
            while got < BYTES {
                let n = c.read(&mut buf).await.unwrap();
                assert!(n > 0);
                got += n;
            }
            writer.await;
        });
    }

    #[test]
    fn reuse_port_lets_two_listeners_share_a_port() {
        block_on(async {
            let a = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let b = TcpListener::bind(a.local_addr().unwrap()).unwrap();
            assert_eq!(a.local_addr().unwrap(), b.local_addr().unwrap());
        });
    }
}
