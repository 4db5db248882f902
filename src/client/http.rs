//! HTTP/1.1 request building and response reading over any `Read`.

use std::io::{self, Read};

use super::Response;
use crate::secret::SecretVec;

/// Largest response body accepted.
pub const MAX_RESPONSE: usize = 16 << 20;
/// Largest response head (status line + headers) accepted.
const MAX_HEAD: usize = 64 << 10;
/// Largest chunk-size or trailer line accepted.
const MAX_LINE: usize = 8 << 10;
const MAX_HEADERS: usize = 100;
const READ_CHUNK: usize = 16 << 10;

/// Why reading a response failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The connection ended (EOF or reset) before a single response byte arrived: a kept-alive
    /// connection the server had closed. Safe to resend on a new connection.
    ClosedBeforeResponse,
    Timeout,
    Io(io::Error),
    Protocol(String),
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Reads more bytes into `buf`; `Ok(0)` at end of stream. An EOF without TLS close_notify
/// counts as end of stream, as does a reset (reported by the caller where it matters).
fn fill<R: Read>(r: &mut R, buf: &mut Vec<u8>) -> Result<usize, ReadError> {
    let mut chunk = [0u8; READ_CHUNK];
    let res = loop {
        match r.read(&mut chunk) {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                break Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_timeout(&e) => break Err(ReadError::Timeout),
            Err(e) if is_closed(&e) => break Ok(0),
            Err(e) => break Err(ReadError::Io(e)),
        }
    };
    // SAFETY: `chunk` is our own stack array; response bytes may be secret.
    unsafe { memsec::memzero(chunk.as_mut_ptr(), chunk.len()) };
    res
}

/// Removes the first `n` bytes of `buf`, wiping them first.
fn consume(buf: &mut Vec<u8>, n: usize) {
    let n = n.min(buf.len());
    // SAFETY: the first `n` bytes are initialised and owned by `buf`.
    unsafe { memsec::memzero(buf.as_mut_ptr(), n) };
    buf.drain(..n);
}

/// Wipes the whole allocation of `buf` (on connection drop).
pub(crate) fn wipe(buf: &mut Vec<u8>) {
    let cap = buf.capacity();
    // SAFETY: we zero the vector's whole allocation, which we own exclusively.
    unsafe { memsec::memzero(buf.as_mut_ptr(), cap) };
    buf.clear();
}

enum Head {
    Partial,
    Interim(usize),
    Final {
        len: usize,
        status: u16,
        version: u8,
        headers: Vec<(String, String)>,
    },
}

fn parse_head(buf: &[u8]) -> Result<Head, ReadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(Head::Partial),
        Ok(httparse::Status::Complete(len)) => {
            let status = resp.code.unwrap_or(0);
            if (100..200).contains(&status) && status != 101 {
                return Ok(Head::Interim(len));
            }
            let headers = resp
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            Ok(Head::Final {
                len,
                status,
                version: resp.version.unwrap_or(1),
                headers,
            })
        }
        Err(e) => Err(ReadError::Protocol(format!("malformed response: {e}"))),
    }
}

/// Does a comma-separated header value list contain `token` (case-insensitive)?
fn has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

enum BodyKind {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

fn body_kind(
    status: u16,
    head_request: bool,
    headers: &[(String, String)],
) -> Result<BodyKind, ReadError> {
    if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(BodyKind::None);
    }
    let te: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if let Some(last) = te.last() {
        return Ok(if last.eq_ignore_ascii_case("chunked") {
            BodyKind::Chunked
        } else {
            BodyKind::UntilClose
        });
    }
    let mut length: Option<usize> = None;
    for (_, v) in headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        for part in v.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ReadError::Protocol("invalid Content-Length".into()));
            }
            let n: usize = part
                .parse()
                .map_err(|_| ReadError::Protocol("response too large".into()))?;
            if length.is_some_and(|l| l != n) {
                return Err(ReadError::Protocol("conflicting Content-Length".into()));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(n) if n > MAX_RESPONSE => {
            return Err(ReadError::Protocol("response too large".into()));
        }
        Some(0) => BodyKind::None,
        Some(n) => BodyKind::Length(n),
        None => BodyKind::UntilClose,
    })
}

/// Ensures `buf` holds at least `n` bytes; an early EOF is a protocol error.
fn need<R: Read>(r: &mut R, buf: &mut Vec<u8>, n: usize) -> Result<(), ReadError> {
    while buf.len() < n {
        if fill(r, buf)? == 0 {
            return Err(ReadError::Protocol(
                "unexpected EOF in response body".into(),
            ));
        }
    }
    Ok(())
}

/// Length of the line at the start of `buf` and of its terminator (CRLF or LF).
fn take_line<R: Read>(r: &mut R, buf: &mut Vec<u8>) -> Result<(usize, usize), ReadError> {
    let mut searched = 0;
    loop {
        if let Some(i) = buf[searched..].iter().position(|&b| b == b'\n') {
            let end = searched + i;
            return Ok(if end > 0 && buf[end - 1] == b'\r' {
                (end - 1, 2)
            } else {
                (end, 1)
            });
        }
        searched = buf.len();
        if searched > MAX_LINE {
            return Err(ReadError::Protocol("chunk line too long".into()));
        }
        if fill(r, buf)? == 0 {
            return Err(ReadError::Protocol("unexpected EOF in chunked body".into()));
        }
    }
}

fn read_chunked<R: Read>(r: &mut R, buf: &mut Vec<u8>) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        let (len, term) = take_line(r, buf)?;
        let line = &buf[..len];
        let size_part = line
            .split(|&b| b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        if size_part.is_empty()
            || size_part.len() > 8
            || !size_part.iter().all(u8::is_ascii_hexdigit)
        {
            return Err(ReadError::Protocol("invalid chunk size".into()));
        }
        let size = size_part.iter().fold(0usize, |acc, &b| {
            (acc << 4) | (b as char).to_digit(16).unwrap_or(0) as usize
        });
        consume(buf, len + term);
        if size == 0 {
            // Trailer section: lines until an empty one.
            loop {
                let (len, term) = take_line(r, buf)?;
                consume(buf, len + term);
                if len == 0 {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_RESPONSE {
            return Err(ReadError::Protocol("response too large".into()));
        }
        need(r, buf, size)?;
        body.extend_from_slice(&buf[..size]);
        consume(buf, size);
        let (len, term) = take_line(r, buf)?;
        if len != 0 {
            return Err(ReadError::Protocol("missing CRLF after chunk".into()));
        }
        consume(buf, term);
    }
}

/// Reads one response from `r`. `buf` holds bytes already read from the connection and keeps
/// the bytes after this response. Returns the response and whether the connection may be
/// reused.
pub(crate) fn read_response<R: Read>(
    r: &mut R,
    buf: &mut Vec<u8>,
    head_request: bool,
) -> Result<(Response, bool), ReadError> {
    let mut any_byte = !buf.is_empty();
    let (head_len, status, version, headers) = loop {
        match parse_head(buf)? {
            Head::Partial => {
                if buf.len() > MAX_HEAD {
                    return Err(ReadError::Protocol("response header too large".into()));
                }
                match fill(r, buf) {
                    Ok(0) if !any_byte => return Err(ReadError::ClosedBeforeResponse),
                    Ok(0) => {
                        return Err(ReadError::Protocol(
                            "unexpected EOF in response header".into(),
                        ))
                    }
                    Ok(_) => any_byte = true,
                    Err(e) => return Err(e),
                }
            }
            Head::Interim(len) => consume(buf, len),
            Head::Final {
                len,
                status,
                version,
                headers,
            } => break (len, status, version, headers),
        }
    };
    consume(buf, head_len);

    let mut keep_alive = if version == 0 {
        has_token(&headers, "connection", "keep-alive")
    } else {
        !has_token(&headers, "connection", "close")
    };
    let body = match body_kind(status, head_request, &headers)? {
        BodyKind::None => Vec::new(),
        BodyKind::Length(n) => {
            need(r, buf, n)?;
            let mut body = Vec::with_capacity(n);
            body.extend_from_slice(&buf[..n]);
            consume(buf, n);
            body
        }
        BodyKind::Chunked => read_chunked(r, buf)?,
        BodyKind::UntilClose => {
            keep_alive = false;
            while fill(r, buf)? != 0 {
                if buf.len() > MAX_RESPONSE {
                    return Err(ReadError::Protocol("response too large".into()));
                }
            }
            let body = buf.clone();
            wipe(buf);
            body
        }
    };
    Ok((
        Response {
            status,
            headers,
            body,
        },
        keep_alive,
    ))
}

fn valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// Builds the request bytes in a zeroizing buffer (the body may hold key material).
pub(crate) fn build_request(
    method: &str,
    authority: &str,
    path: &str,
    body: Option<&[u8]>,
    extra_headers: &[(&str, &str)],
) -> Result<SecretVec, String> {
    if !valid_token(method) {
        return Err(format!("invalid HTTP method {method:?}"));
    }
    if path.is_empty() || !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("invalid request path".into());
    }
    for (name, value) in extra_headers {
        if !valid_token(name) {
            return Err(format!("invalid header name {name:?}"));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(format!("invalid value for header {name}"));
        }
    }
    let has = |n: &str| extra_headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    let send_length = body.is_some() || !(method == "GET" || method == "HEAD");
    let body = body.unwrap_or_default();

    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\n");
    if send_length && !has("content-length") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if !body.is_empty() && !has("content-type") {
        head.push_str("Content-Type: application/json\r\n");
    }
    let extra_len: usize = extra_headers
        .iter()
        .map(|(k, v)| k.len() + v.len() + 4)
        .sum();
    let mut out = SecretVec::with_capacity(head.len() + extra_len + 2 + body.len());
    let v = out.as_mut_vec();
    v.extend_from_slice(head.as_bytes());
    for (name, value) in extra_headers {
        v.extend_from_slice(name.as_bytes());
        v.extend_from_slice(b": ");
        v.extend_from_slice(value.as_bytes());
        v.extend_from_slice(b"\r\n");
    }
    v.extend_from_slice(b"\r\n");
    v.extend_from_slice(body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that returns its data in small pieces, then EOF.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(self.1).min(out.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn read_all(data: &[u8], head: bool) -> Result<(Response, bool, Vec<u8>), ReadError> {
        for step in [1usize, 3, 7, 1 << 20] {
            let mut r = Trickle(data, step);
            let mut buf = Vec::new();
            let (resp, ka) = read_response(&mut r, &mut buf, head)?;
            if step == 1 << 20 {
                return Ok((resp, ka, buf));
            }
        }
        unreachable!()
    }

    #[test]
    fn content_length() {
        let (r, ka, rest) = read_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA",
            false,
        )
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"hello");
        assert!(ka);
        assert_eq!(rest, b"EXTRA");
        assert_eq!(r.header("content-length"), Some("5"));
    }

    #[test]
    fn chunked_with_trailers_and_extensions() {
        let data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let (r, ka, rest) = read_all(data, false).unwrap();
        assert_eq!(r.body, b"hello 0123456789");
        assert!(ka);
        assert!(rest.is_empty());
    }

    #[test]
    fn close_delimited_and_connection_close() {
        let (r, ka, _) = read_all(b"HTTP/1.1 200 OK\r\n\r\nuntil close", false).unwrap();
        assert_eq!(r.body, b"until close");
        assert!(!ka);
        let (r, ka, _) = read_all(
            b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno",
            false,
        )
        .unwrap();
        assert_eq!((r.status, &r.body[..], ka), (404, &b"no"[..], false));
        let (_, ka, _) = read_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false).unwrap();
        assert!(!ka);
    }

    #[test]
    fn interim_head_and_no_body() {
        let (r, _, _) = read_all(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(r.status, 204);
        let (r, ka, rest) =
            read_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true).unwrap();
        assert!(r.body.is_empty() && ka && rest.is_empty());
    }

    #[test]
    fn errors() {
        assert!(matches!(
            read_all(b"", false),
            Err(ReadError::ClosedBeforeResponse)
        ));
        assert!(matches!(
            read_all(b"HTTP/1.1 200 OK\r\nContent-Le", false),
            Err(ReadError::Protocol(_))
        ));
        assert!(matches!(
            read_all(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", false),
            Err(ReadError::Protocol(_))
        ));
        assert!(matches!(
            read_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
                false
            ),
            Err(ReadError::Protocol(_))
        ));
        assert!(matches!(
            read_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
                false
            ),
            Err(ReadError::Protocol(_))
        ));
        assert!(matches!(
            read_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                false
            ),
            Err(ReadError::Protocol(_))
        ));
        assert!(matches!(
            read_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n0\r\n\r\n",
                false
            ),
            Err(ReadError::Protocol(_))
        ));
        assert!(matches!(
            read_all(b"garbage\r\n\r\n", false),
            Err(ReadError::Protocol(_))
        ));
        // A too-large chunked body.
        let mut big = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        big.extend_from_slice(b"1000001\r\n");
        assert!(matches!(read_all(&big, false), Err(ReadError::Protocol(_))));
    }

    #[test]
    fn request_bytes() {
        let r = build_request("POST", "h:1", "/v1/x", Some(b"{}"), &[("X-A", "b")]).unwrap();
        assert_eq!(
            r.expose(),
            b"POST /v1/x HTTP/1.1\r\nHost: h:1\r\nContent-Length: 2\r\nContent-Type: application/json\r\nX-A: b\r\n\r\n{}"
        );
        let r = build_request("GET", "h:1", "/v1/status", None, &[]).unwrap();
        assert_eq!(r.expose(), b"GET /v1/status HTTP/1.1\r\nHost: h:1\r\n\r\n");
        let r = build_request("DELETE", "h:1", "/v1/key/delete/k", None, &[]).unwrap();
        assert_eq!(
            r.expose(),
            b"DELETE /v1/key/delete/k HTTP/1.1\r\nHost: h:1\r\nContent-Length: 0\r\n\r\n"
        );
        assert!(build_request("GET", "h", "/a b", None, &[]).is_err());
        assert!(build_request("GET", "h", "/a", None, &[("X", "a\r\nY: b")]).is_err());
        assert!(build_request("G T", "h", "/a", None, &[]).is_err());
    }
}
