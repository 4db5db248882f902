//! The connection's byte stream: TLS (rustls driven by hand) over the core's socket
//! ([`crate::rt::TcpStream`]), seen from
//! above as three operations — read plaintext ([`TlsStream::read_more`], [`TlsStream::unread`],
//! [`TlsStream::consume`]), queue plaintext ([`TlsStream::queue`]) and flush
//! ([`TlsStream::flush`]). HTTP/1.1 and log streaming sit on top of these and nothing else, so
//! the socket layer beneath can change without touching them.
//!
//! Buffers carry DEKs and plaintexts: they are wiped (zeroized) after use and on drop. They
//! grow for a large request and shrink back afterwards, and to almost nothing while the
//! connection is idle, so that what a client sent earlier never stays pinned in memory.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::rt::TcpStream;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use rustls::ServerConnection;

use super::error::ConnError;

/// Socket read size: one maximal TLS record plus header and tag.
pub const NET_READ_BYTES: usize = 16 * 1024 + 512;
/// Socket read size of an idle connection: enough for a typical request; the buffer grows back
/// to [`NET_READ_BYTES`] after that read, so an idle connection does not hold 16.5 KiB.
pub const IDLE_READ_BYTES: usize = 2 * 1024;
/// Plaintext input buffer at rest; a larger one is given back after the request that grew it.
pub const PLAIN_IN_BYTES_DEFAULT: usize = 8 * 1024;
/// Plaintext output buffer at rest.
pub const PLAIN_OUT_BYTES_DEFAULT: usize = 4 * 1024;
/// A buffer larger than this after a request is replaced by one of its default size.
pub const BUFFER_KEEP_BYTES_MAX: usize = 32 * 1024;
/// How long one write of queued TLS records may take (clients that stop reading), by default
/// (`Timeouts::write`).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(15);
/// After the last answer of a connection closed by the server with unread request bytes
/// on the way (a body over its limit), incoming bytes are read and dropped for at most this
/// long, so the client reads the answer instead of a reset (Go lingers 500 ms).
pub const LINGER: Duration = Duration::from_millis(1000);
/// ... and for at most this many bytes.
pub const LINGER_BYTES_MAX: usize = 4 * 1024 * 1024;

/// Reads from the socket, giving up at `deadline`. A read that finds bytes waiting arms no
/// timer (see [`crate::rt::timeout_at`]).
async fn read_until(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<usize, ConnError> {
    if deadline <= crate::rt::now() {
        return Err(ConnError::Timeout);
    }
    match crate::rt::timeout_at(deadline, stream.read(buf)).await {
        Ok(result) => Ok(result?),
        Err(_elapsed) => Err(ConnError::Timeout),
    }
}

/// Overwrites a buffer's contents with zeros and empties it.
pub fn wipe(buf: &mut Vec<u8>) {
    // SAFETY: zeroing the initialised part of our own buffer.
    unsafe { memsec::memzero(buf.as_mut_ptr(), buf.len()) };
    buf.clear();
}

/// Wipes `buf` and, if it grew past [`BUFFER_KEEP_BYTES_MAX`], replaces it with an empty one
/// of `default_bytes` capacity.
pub fn wipe_and_shrink(buf: &mut Vec<u8>, default_bytes: usize) {
    wipe(buf);
    if buf.capacity() > BUFFER_KEEP_BYTES_MAX {
        *buf = Vec::with_capacity(default_bytes);
    }
}

/// Wipes `buf` and gives its memory back.
pub fn wipe_and_release(buf: &mut Vec<u8>) {
    wipe(buf);
    *buf = Vec::new();
}

/// A reader with nothing to give yet (`WouldBlock`), for [`shrink_tls_input`].
struct NothingYet;

impl std::io::Read for NothingYet {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::WouldBlock.into())
    }
}

/// Gives back what rustls's record buffer grew to while a body streamed in (up to a whole
/// 16 KiB record plus its header): rustls shrinks that buffer to one 4 KiB read when it holds
/// no partial record, but only when it is next asked to read. A read from [`NothingYet`]
/// asks without reading anything (no byte consumed, no end of stream seen).
fn shrink_tls_input(tls: &mut ServerConnection) {
    let _ = tls.read_tls(&mut NothingYet);
}

/// Socket + rustls state + the plaintext buffers.
pub struct TlsStream {
    pub stream: TcpStream,
    pub tls: ServerConnection,
    net_in: Vec<u8>,
    net_out: Vec<u8>,
    /// Decrypted bytes; `plain_pos..` is not yet consumed.
    plain_in: Vec<u8>,
    plain_pos: usize,
    /// Queued plaintext responses, encrypted and sent by `flush`.
    plain_out: Vec<u8>,
    /// The peer sent close_notify or closed the socket.
    pub eof: bool,
    pub peer_addr: Option<SocketAddr>,
    /// How long one write may wait (a client that does not read).
    pub write_timeout: Duration,
}

impl TlsStream {
    pub fn new(stream: TcpStream, tls: ServerConnection, write_timeout: Duration) -> TlsStream {
        let peer_addr = stream.peer_addr().ok();
        TlsStream {
            stream,
            tls,
            // A connection that has sent nothing yet holds a small buffer (a flood of silent
            // connections costs little); it is full-sized after the first read.
            net_in: Vec::with_capacity(IDLE_READ_BYTES),
            net_out: Vec::new(),
            plain_in: Vec::with_capacity(PLAIN_IN_BYTES_DEFAULT),
            plain_pos: 0,
            plain_out: Vec::with_capacity(PLAIN_OUT_BYTES_DEFAULT),
            eof: false,
            peer_addr,
            write_timeout,
        }
    }

    /// Plaintext received and not yet consumed.
    pub fn unread(&self) -> &[u8] {
        &self.plain_in[self.plain_pos..]
    }

    /// Marks `n` bytes of [`unread`](Self::unread) as consumed.
    pub fn consume(&mut self, n: usize) {
        assert!(self.plain_pos + n <= self.plain_in.len());
        self.plain_pos += n;
    }

    /// Queues plaintext to be encrypted and sent by the next [`flush`](Self::flush).
    pub fn queue(&mut self) -> &mut Vec<u8> {
        &mut self.plain_out
    }

    /// The unread input and the output queue at once (a frame read from the one is answered
    /// into the other).
    pub fn input_and_queue(&mut self) -> (&[u8], &mut Vec<u8>) {
        (&self.plain_in[self.plain_pos..], &mut self.plain_out)
    }

    /// Bytes queued and not yet flushed.
    pub fn queued_bytes(&self) -> usize {
        self.plain_out.len()
    }

    /// Moves unconsumed plaintext to the front, wiping what was consumed.
    fn compact(&mut self) {
        if self.plain_pos == 0 {
            return;
        }
        let len = self.plain_in.len();
        self.plain_in.copy_within(self.plain_pos..len, 0);
        let keep = len - self.plain_pos;
        // SAFETY: zero the now-unused tail of our own buffer.
        unsafe { memsec::memzero(self.plain_in.as_mut_ptr().add(keep), len - keep) };
        self.plain_in.truncate(keep);
        self.plain_pos = 0;
    }

    /// After a request: gives back buffers a large request grew (wiping them).
    /// Consumed input is not moved here (the next `read_more` compacts it before it waits,
    /// so a pipeline is not shifted once per request).
    pub fn shrink_after_request(&mut self) {
        if self.plain_in.capacity() > BUFFER_KEEP_BYTES_MAX
            && self.plain_in.len() - self.plain_pos <= PLAIN_IN_BYTES_DEFAULT
        {
            self.compact();
            let mut small = Vec::with_capacity(PLAIN_IN_BYTES_DEFAULT);
            small.extend_from_slice(&self.plain_in);
            wipe_and_release(&mut self.plain_in);
            self.plain_in = small;
        }
        if self.plain_out.is_empty() && self.plain_out.capacity() > BUFFER_KEEP_BYTES_MAX {
            self.plain_out = Vec::with_capacity(PLAIN_OUT_BYTES_DEFAULT);
        }
        if self.net_out.capacity() > NET_READ_BYTES {
            self.net_out = Vec::new();
        }
    }

    /// While idle (nothing buffered in either direction): keeps only a small socket read buffer.
    pub fn shrink_idle(&mut self) {
        self.compact();
        if self.plain_in.is_empty() {
            self.plain_in = Vec::new();
        }
        if self.plain_out.is_empty() {
            self.plain_out = Vec::new();
        }
        self.net_out = Vec::new();
        self.net_in = Vec::with_capacity(IDLE_READ_BYTES);
        shrink_tls_input(&mut self.tls);
    }

    /// Drops every plaintext byte received so far (peers that must not send anything).
    pub fn discard_input(&mut self) {
        wipe(&mut self.plain_in);
        self.plain_pos = 0;
    }

    /// Reads from the socket until at least one new plaintext byte is available, the peer
    /// closes (`eof`), or `deadline` passes. Handshake and alert output is flushed as needed.
    pub async fn read_more(&mut self, deadline: Instant) -> Result<(), ConnError> {
        self.compact();
        let before = self.plain_in.len();
        loop {
            self.read_once(deadline).await?;
            if self.eof || self.plain_in.len() > before {
                return Ok(());
            }
        }
    }

    /// One socket read fed through rustls (handshake messages, alerts or application data).
    pub async fn read_once(&mut self, deadline: Instant) -> Result<(), ConnError> {
        if self.tls.wants_write() {
            self.flush_tls().await?;
        }
        // After `shrink_idle` the buffer is small: the first read after idling uses it as it
        // is, then it is full-sized again.
        let idle = self.net_in.capacity() < NET_READ_BYTES;
        let size = if idle {
            IDLE_READ_BYTES
        } else {
            NET_READ_BYTES
        };
        self.net_in.resize(size, 0);
        let n = read_until(&mut self.stream, &mut self.net_in, deadline).await?;
        if n == 0 {
            self.eof = true;
            return Ok(());
        }
        let fed = self.feed(n).await;
        if idle {
            self.net_in = Vec::with_capacity(NET_READ_BYTES);
        }
        fed
    }

    /// The first bytes of a connection, before rustls sees them (plain-HTTP detection): at
    /// most [`IDLE_READ_BYTES`] (a ClientHello usually fits; the rest comes with the next read).
    pub async fn read_first(&mut self, deadline: Instant) -> Result<&[u8], ConnError> {
        self.net_in.resize(IDLE_READ_BYTES, 0);
        let n = read_until(&mut self.stream, &mut self.net_in, deadline).await?;
        Ok(&self.net_in[..n])
    }

    /// Hands the first `n` bytes of `net_in` to rustls and collects any plaintext; on a TLS
    /// error the queued alert is sent before giving up.
    pub async fn feed(&mut self, n: usize) -> Result<(), ConnError> {
        let mut pos = 0;
        while pos < n {
            let k = self.tls.read_tls(&mut &self.net_in[pos..n])?;
            pos += k;
            if let Err(e) = self.tls.process_new_packets() {
                let _ = self.flush_tls().await;
                return Err(ConnError::Tls(e));
            }
            self.drain_plaintext()?;
            if k == 0 {
                break;
            }
        }
        Ok(())
    }

    fn drain_plaintext(&mut self) -> Result<(), ConnError> {
        use std::io::BufRead;
        loop {
            let mut reader = self.tls.reader();
            match reader.fill_buf() {
                Ok([]) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(bytes) => {
                    let n = bytes.len();
                    self.plain_in.extend_from_slice(bytes);
                    reader.consume(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(ConnError::Io(e)),
            }
        }
    }

    /// Writes all TLS records rustls has queued to the socket.
    pub async fn flush_tls(&mut self) -> Result<(), ConnError> {
        while self.tls.wants_write() {
            self.net_out.clear();
            self.tls.write_tls(&mut self.net_out)?;
            // Almost every write fits the socket buffer and completes on its first poll,
            // which arms no timer: only a write that has to wait (a client that stopped
            // reading) gets one.
            match crate::rt::timeout(self.write_timeout, self.stream.write_all(&self.net_out)).await
            {
                Ok(result) => result?,
                Err(_elapsed) => return Err(ConnError::Timeout),
            }
        }
        Ok(())
    }

    /// Encrypts and sends every queued response, then wipes the plaintext copy. rustls
    /// buffers a bounded amount of plaintext, so large responses go out in several rounds.
    pub async fn flush(&mut self) -> Result<(), ConnError> {
        let mut pos = 0;
        let mut result = Ok(());
        while pos < self.plain_out.len() {
            match self.tls.writer().write(&self.plain_out[pos..]) {
                Ok(n) => pos += n,
                Err(e) => {
                    result = Err(ConnError::Io(e));
                    break;
                }
            }
            if let Err(e) = self.flush_tls().await {
                result = Err(e);
                break;
            }
            if pos < self.plain_out.len() {
                // A long answer (a big key list) is encrypted in rounds: let the core's
                // other connections run in between.
                crate::rt::yield_if_needed().await;
            }
        }
        wipe(&mut self.plain_out);
        result?;
        self.flush_tls().await
    }

    /// Ends a connection the server closes while the client may still be sending (a body
    /// over its limit, an unauthorised request with a large body): flushes the answer, sends
    /// close_notify and a FIN, then reads and drops what still arrives — bounded by
    /// [`LINGER`] and [`LINGER_BYTES_MAX`] — so that closing with unread bytes does not make
    /// the kernel reset the connection before the client has read the answer.
    pub async fn close_and_linger(&mut self) -> Result<(), ConnError> {
        self.flush().await?;
        self.tls.send_close_notify();
        self.flush_tls().await?;
        let _ = self.stream.shutdown(std::net::Shutdown::Write).await;
        self.discard_input();
        let deadline = crate::rt::now() + LINGER;
        let mut dropped = 0usize;
        while dropped < LINGER_BYTES_MAX {
            self.net_in.resize(NET_READ_BYTES, 0);
            match read_until(&mut self.stream, &mut self.net_in, deadline).await {
                Ok(0) | Err(_) => break,
                Ok(n) => dropped += n,
            }
        }
        Ok(())
    }
}

impl Drop for TlsStream {
    fn drop(&mut self) {
        wipe(&mut self.plain_in);
        wipe(&mut self.plain_out);
    }
}
