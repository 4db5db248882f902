//! Response serialisation into the connection's output buffer: status line, headers,
//! always a `Content-Length`, and the body. No allocation beyond growing `out`.

/// The reason phrase Go uses for `status`.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        301 => "Moved Permanently",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Request Entity Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

fn push_decimal(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// True if `value` may appear in a header field: no CR, LF or NUL (which would end the
/// field early and let request bytes forge headers or a second response). Both the
/// HTTP/1.1 writer ([`write_response`]) and the h2 one (`server::http2`) check with it.
pub fn header_value_ok(value: &str) -> bool {
    !value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

/// Appends a complete response. A header value with CR, LF or NUL is never written: the
/// whole response becomes a bare `500` that closes the connection (in every build, not only
/// with debug assertions), since a caller let request bytes reach a header.
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: Option<&str>,
    extra_headers: &[(&str, &str)],
    body: &[u8],
    close: bool,
) {
    let safe = content_type.is_none_or(header_value_ok)
        && extra_headers
            .iter()
            .all(|(name, value)| header_value_ok(name) && header_value_ok(value));
    if !safe {
        write_checked(out, 500, None, &[], b"", true);
        return;
    }
    write_checked(out, status, content_type, extra_headers, body, close);
}

fn write_checked(
    out: &mut Vec<u8>,
    status: u16,
    content_type: Option<&str>,
    extra_headers: &[(&str, &str)],
    body: &[u8],
    close: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(ct) = content_type {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(ct.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in extra_headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Content-Length: ");
    push_decimal(out, body.len() as u64);
    out.extend_from_slice(b"\r\n");
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// `100 Continue` for clients that sent `Expect: 100-continue`.
pub fn write_continue(out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_bytes() {
        let mut out = Vec::new();
        write_response(&mut out, 200, None, &[], b"", false);
        assert_eq!(out, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        out.clear();
        write_response(
            &mut out,
            405,
            Some("application/json"),
            &[("Accept", "PUT")],
            b"{}",
            true,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 405 Method Not Allowed\r\nContent-Type: application/json\r\nAccept: PUT\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
        );
        out.clear();
        write_continue(&mut out);
        assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn header_values_with_line_breaks_are_refused() {
        for bad in ["/a\r\nSet-Cookie: x=1", "/a\nb", "/a\rb", "/a\0b"] {
            let mut out = b"earlier".to_vec();
            write_response(&mut out, 301, None, &[("Location", bad)], b"", false);
            assert_eq!(
                out,
                b"earlierHTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
        let mut out = Vec::new();
        write_response(&mut out, 200, Some("text/plain\r\nX: y"), &[], b"", false);
        assert!(out.starts_with(b"HTTP/1.1 500 "));
        let mut out = Vec::new();
        write_continue(&mut out);
        assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");
    }
}
