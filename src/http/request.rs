//! The request head: request line and header fields, tokenized by httparse, interpreted here
//! (framing, keep-alive, limits, percent-decoding of the path).

use super::HttpError;

/// Request line plus header fields, in bytes.
pub const HEAD_BYTES_MAX: usize = 16 * 1024;
/// Header fields per request.
pub const HEADERS_COUNT_MAX: usize = 64;

/// Limits on the request head.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub head_bytes_max: usize,
    pub headers_count_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            head_bytes_max: HEAD_BYTES_MAX,
            headers_count_max: HEADERS_COUNT_MAX,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Method {
    #[default]
    Get,
    Head,
    Post,
    Put,
    Delete,
    Other,
}

impl Method {
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Other => "OTHER",
        }
    }

    /// The method of a request-line token (`Other` for any we do not route).
    pub fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            _ => Method::Other,
        }
    }
}

/// How the request body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Framing {
    #[default]
    Empty,
    Length(u64),
    Chunked,
}

/// A parsed request head; reused across the requests of a connection (its strings keep
/// their capacity).
#[derive(Debug, Default)]
pub struct RequestHead {
    pub method: Method,
    /// The method token as sent, for 405 messages.
    pub method_raw: String,
    /// Percent-decoded path without the query.
    pub path: String,
    /// The request target as sent.
    pub raw_target: String,
    /// The raw query without `?`.
    pub query: String,
    pub framing: Framing,
    pub keep_alive: bool,
    pub expect_continue: bool,
    pub http10: bool,
    /// Value of the configured client-certificate header (TLS proxies), if present.
    pub forwarded_cert: Option<String>,
    pub cert_header_count: usize,
    /// First element of `X-Forwarded-For`.
    pub forwarded_for: Option<String>,
    /// `Content-Type` or `Accept` is exactly `application/octet-stream` (the MinKMS API's
    /// protobuf).
    pub binary: bool,
    /// The `Host` header as sent (empty if absent).
    pub host: String,
}

/// The media type of the MinKMS API's protobuf bodies.
pub const BINARY_MEDIA_TYPE: &[u8] = b"application/octet-stream";

/// Parser options.
#[derive(Clone, Copy, Debug, Default)]
pub struct ParseOptions<'a> {
    pub limits: Limits,
    /// Header carrying a forwarded client certificate (matched case-insensitively).
    pub cert_header: Option<&'a str>,
}

/// Parses a request head at the start of `buf`. `Ok(Some(n))`: a complete head of `n` bytes
/// is in `head`; `Ok(None)`: more bytes are needed.
pub fn parse_head(
    buf: &[u8],
    opts: &ParseOptions<'_>,
    head: &mut RequestHead,
) -> Result<Option<usize>, HttpError> {
    // Tolerate empty lines before a request line (RFC 9112 §2.2).
    let skip = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    if skip > 64 {
        return Err(HttpError::Malformed(
            "too many empty lines before the request",
        ));
    }
    let input = &buf[skip..];
    let limit = opts.limits.head_bytes_max;
    // Left uninitialised: httparse writes the ones it fills (64 headers would be 2 KiB of
    // stores per request otherwise).
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; HEADERS_COUNT_MAX];
    let count_max = opts.limits.headers_count_max.min(HEADERS_COUNT_MAX);
    let mut req = httparse::Request::new(&mut []);
    let status = match req.parse_with_uninit_headers(input, &mut headers[..count_max]) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(httparse::Error::Version) => {
            return Err(if input.starts_with(b"PRI * HTTP/2") {
                HttpError::VersionNotSupported
            } else {
                HttpError::Malformed("malformed request line")
            })
        }
        Err(_) => return Err(HttpError::Malformed("malformed request")),
    };
    let len = match status {
        httparse::Status::Partial => {
            if input.len() > limit {
                return Err(HttpError::HeadTooLarge);
            }
            return Ok(None);
        }
        httparse::Status::Complete(len) => len,
    };
    if len > limit {
        return Err(HttpError::HeadTooLarge);
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HttpError::Malformed("malformed request line"));
    };
    if version > 1 {
        return Err(HttpError::VersionNotSupported);
    }

    head.method = Method::from_token(method);
    head.method_raw.clear();
    head.method_raw.push_str(method);
    head.raw_target.clear();
    head.raw_target.push_str(target);
    head.http10 = version == 0;
    head.framing = Framing::Empty;
    head.expect_continue = false;
    head.forwarded_cert = None;
    head.cert_header_count = 0;
    head.forwarded_for = None;
    head.binary = false;
    head.host.clear();

    // Origin form; absolute form is reduced to its path.
    let origin = if target.starts_with('/') {
        target
    } else if let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        match rest.find('/') {
            Some(i) => &rest[i..],
            None => "/",
        }
    } else {
        return Err(HttpError::Malformed("request target must be a path"));
    };
    let (path, query) = match origin.split_once('?') {
        Some((p, q)) => (p, q),
        None => (origin, ""),
    };
    head.query.clear();
    head.query.push_str(query);
    percent_decode(path, &mut head.path)?;

    let mut connection_close = false;
    let mut connection_keep_alive = false;
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    for h in req.headers.iter() {
        let name = h.name;
        let value = trim(h.value);
        if name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(value)?;
            match content_length {
                Some(prev) if prev != n => {
                    return Err(HttpError::Malformed("conflicting Content-Length headers"))
                }
                _ => content_length = Some(n),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if transfer_encoding {
                return Err(HttpError::UnsupportedTransferEncoding);
            }
            transfer_encoding = true;
            if value.eq_ignore_ascii_case(b"chunked") {
                chunked = true;
            } else {
                return Err(HttpError::UnsupportedTransferEncoding);
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',') {
                let token = trim(token);
                if token.eq_ignore_ascii_case(b"close") {
                    connection_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    connection_keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            if value.eq_ignore_ascii_case(b"100-continue") {
                head.expect_continue = true;
            }
        } else if name.eq_ignore_ascii_case("content-type") || name.eq_ignore_ascii_case("accept") {
            head.binary |= value == BINARY_MEDIA_TYPE;
        } else if name.eq_ignore_ascii_case("host") {
            if head.host.is_empty() {
                head.host.push_str(&String::from_utf8_lossy(value));
            }
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            if head.forwarded_for.is_none() {
                let first = value.split(|&b| b == b',').next().unwrap_or(b"");
                head.forwarded_for = Some(String::from_utf8_lossy(trim(first)).into_owned());
            }
        } else if opts
            .cert_header
            .is_some_and(|c| name.eq_ignore_ascii_case(c))
        {
            head.cert_header_count += 1;
            head.forwarded_cert = Some(String::from_utf8_lossy(value).into_owned());
        }
    }
    if chunked && content_length.is_some() {
        return Err(HttpError::Malformed(
            "both Transfer-Encoding and Content-Length are set",
        ));
    }
    if chunked && head.http10 {
        return Err(HttpError::Malformed("chunked encoding requires HTTP/1.1"));
    }
    head.framing = match (chunked, content_length) {
        (true, _) => Framing::Chunked,
        (false, Some(0)) | (false, None) => Framing::Empty,
        (false, Some(n)) => Framing::Length(n),
    };
    head.keep_alive = if head.http10 {
        connection_keep_alive && !connection_close
    } else {
        !connection_close
    };
    Ok(Some(skip + len))
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = v {
        if *first == b' ' || *first == b'\t' {
            v = rest;
        } else {
            break;
        }
    }
    while let [rest @ .., last] = v {
        if *last == b' ' || *last == b'\t' {
            v = rest;
        } else {
            break;
        }
    }
    v
}

fn parse_content_length(v: &[u8]) -> Result<u64, HttpError> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::Malformed("invalid Content-Length"));
    }
    let mut n: u64 = 0;
    for &d in v {
        // Anything that does not fit in u64 exceeds every body limit.
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or(HttpError::BodyTooLarge)?;
    }
    Ok(n)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes of a path into `out`; rejects bad escapes, NUL and invalid UTF-8.
pub fn percent_decode(path: &str, out: &mut String) -> Result<(), HttpError> {
    out.clear();
    let bytes = path.as_bytes();
    if !bytes.contains(&b'%') {
        out.push_str(path);
        return Ok(());
    }
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex_value),
                bytes.get(i + 2).copied().and_then(hex_value),
            ) else {
                return Err(HttpError::Malformed("invalid percent-encoding in path"));
            };
            let b = hi << 4 | lo;
            if b == 0 {
                return Err(HttpError::Malformed("NUL byte in path"));
            }
            decoded.push(b);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    let text = std::str::from_utf8(&decoded)
        .map_err(|_| HttpError::Malformed("path is not valid UTF-8"))?;
    out.push_str(text);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &[u8]) -> Result<Option<(usize, RequestHead)>, HttpError> {
        let mut head = RequestHead::default();
        let opts = ParseOptions {
            limits: Limits::default(),
            cert_header: Some("X-Tls-Client-Cert"),
        };
        parse_head(input, &opts, &mut head).map(|o| o.map(|n| (n, head)))
    }

    const KMS_GO: &[u8] = b"POST /v1/key/generate/minio-default-key HTTP/1.1\r\nHost: 127.0.0.1:7373\r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: 18\r\nContent-Type: application/json\r\nAccept-Encoding: gzip\r\n\r\n{\"context\":\"e30=\"}";

    #[test]
    fn a_kms_go_request() {
        let (n, head) = parse(KMS_GO).unwrap().unwrap();
        assert_eq!(&KMS_GO[n..], b"{\"context\":\"e30=\"}");
        assert_eq!(head.method, Method::Post);
        assert_eq!(head.path, "/v1/key/generate/minio-default-key");
        assert_eq!(head.framing, Framing::Length(18));
        assert!(head.keep_alive);
        assert!(!head.http10);
    }

    #[test]
    fn every_prefix_is_partial() {
        let head_len = KMS_GO.len() - 18;
        for cut in 0..head_len {
            assert_eq!(
                parse(&KMS_GO[..cut]).unwrap().map(|x| x.0),
                None,
                "cut at {cut}"
            );
        }
        assert_eq!(
            parse(&KMS_GO[..head_len]).unwrap().map(|x| x.0),
            Some(head_len)
        );
    }

    #[test]
    fn pipelined_heads_parse_one_by_one() {
        let buf = b"GET /version HTTP/1.1\r\n\r\nGET /v1/status HTTP/1.1\r\n\r\nDELETE /v1/key/delete/a%2Db?x=1 HTTP/1.1\r\n\r\n";
        let mut pos = 0;
        let mut paths = Vec::new();
        while pos < buf.len() {
            let (n, head) = parse(&buf[pos..]).unwrap().unwrap();
            paths.push((head.method, head.path.clone(), head.query.clone()));
            pos += n;
        }
        assert_eq!(
            paths,
            [
                (Method::Get, "/version".into(), "".into()),
                (Method::Get, "/v1/status".into(), "".into()),
                (Method::Delete, "/v1/key/delete/a-b".into(), "x=1".into()),
            ]
        );
    }

    #[test]
    fn head_size_limit() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', HEAD_BYTES_MAX));
        assert_eq!(parse(&big).unwrap_err(), HttpError::HeadTooLarge);
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse(&big).unwrap_err(), HttpError::HeadTooLarge);
        // Exactly at the limit is fine.
        let mut fit = b"GET / HTTP/1.1\r\nX: ".to_vec();
        fit.extend(std::iter::repeat_n(b'a', HEAD_BYTES_MAX - fit.len() - 4));
        fit.extend_from_slice(b"\r\n\r\n");
        assert_eq!(fit.len(), HEAD_BYTES_MAX);
        assert!(parse(&fit).unwrap().is_some());
    }

    #[test]
    fn too_many_headers() {
        let mut req = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=HEADERS_COUNT_MAX {
            req.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        assert_eq!(parse(&req).unwrap_err(), HttpError::TooManyHeaders);
    }

    #[test]
    fn content_length_rules() {
        let with =
            |v: &str| parse(format!("PUT / HTTP/1.1\r\nContent-Length: {v}\r\n\r\n").as_bytes());
        assert_eq!(
            with("18446744073709551616").unwrap_err(),
            HttpError::BodyTooLarge
        );
        assert_eq!(
            with("18446744073709551615").unwrap().unwrap().1.framing,
            Framing::Length(u64::MAX)
        );
        for bad in ["-1", "+5", "1 2", "0x10", ""] {
            assert!(matches!(with(bad), Err(HttpError::Malformed(_))), "{bad:?}");
        }
        assert_eq!(with("0").unwrap().unwrap().1.framing, Framing::Empty);
        let dup = parse(b"PUT / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(dup.1.framing, Framing::Length(5));
        assert!(matches!(
            parse(b"PUT / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
    }

    #[test]
    fn transfer_encoding_rules() {
        let te =
            |v: &str| parse(format!("PUT / HTTP/1.1\r\nTransfer-Encoding: {v}\r\n\r\n").as_bytes());
        assert_eq!(te("chunked").unwrap().unwrap().1.framing, Framing::Chunked);
        assert_eq!(
            te(" Chunked ").unwrap().unwrap().1.framing,
            Framing::Chunked
        );
        assert_eq!(
            te("gzip").unwrap_err(),
            HttpError::UnsupportedTransferEncoding
        );
        assert_eq!(
            te("gzip, chunked").unwrap_err(),
            HttpError::UnsupportedTransferEncoding
        );
        assert!(matches!(
            parse(b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
    }

    #[test]
    fn keep_alive_rules() {
        let ka = |req: &[u8]| parse(req).unwrap().unwrap().1.keep_alive;
        assert!(ka(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(ka(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn targets_and_paths() {
        assert_eq!(
            parse(b"GET http://h/v1/status?x HTTP/1.1\r\n\r\n")
                .unwrap()
                .unwrap()
                .1
                .path,
            "/v1/status"
        );
        assert!(matches!(
            parse(b"OPTIONS * HTTP/1.1\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
        assert!(matches!(
            parse(b"GET /a%zz HTTP/1.1\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
        assert!(matches!(
            parse(b"GET /a%00 HTTP/1.1\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
        assert!(matches!(
            parse(b"GET /a%ff HTTP/1.1\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
        assert_eq!(
            parse(b"GET /a%C3%A9 HTTP/1.1\r\n\r\n")
                .unwrap()
                .unwrap()
                .1
                .path,
            "/aé"
        );
        assert!(matches!(
            parse(b"GET / HTTP/2.0\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
        assert_eq!(
            parse(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap_err(),
            HttpError::VersionNotSupported
        );
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nX: a\r\n folded\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
    }

    #[test]
    fn proxy_headers() {
        let (_, head) = parse(b"GET / HTTP/1.1\r\nx-tls-client-cert: abc\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.forwarded_cert.as_deref(), Some("abc"));
        assert_eq!(head.cert_header_count, 1);
        assert_eq!(head.forwarded_for.as_deref(), Some("10.0.0.1"));
    }

    #[test]
    fn random_input_never_panics() {
        let mut state: u64 = 0x9e3779b97f4a7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet =
            b"GET /v1%:\r\n HTTP/1.1Content-Length:Transfer-Encoding chunked0123456789\0\xff";
        let mut head = RequestHead::default();
        let opts = ParseOptions::default();
        for _ in 0..20_000 {
            let len = (next() % 200) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let _ = parse_head(&input, &opts, &mut head);
            let mut prefixed = KMS_GO[..(next() % KMS_GO.len() as u64) as usize].to_vec();
            prefixed.extend_from_slice(&input);
            let _ = parse_head(&prefixed, &opts, &mut head);
        }
    }
}
