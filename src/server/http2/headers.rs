//! A complete header block ([`end_of_block`]): decoded, validated field by field (RFC 9113
//! §8.2, §8.3: pseudo-headers, connection-specific headers, `content-length`, forwarded
//! certificates and client IPs), then routed and authorised from the head alone, and a stream
//! opened — or, on an open stream, taken as trailers.

use std::time::Instant;

use super::handlers::{begin, StartHandler};
use super::streams::{reset_stream, Stream, StreamState, Target, Work};
use super::{ConnectionError, CONCURRENT_STREAMS_MAX, H2};
use crate::api::{self, Peer, Routed, ROUTES};
use crate::auth::identity::IdentityError;
use crate::http::{self, Method, RequestHead};
use crate::http2::{frame, ErrorCode};
use crate::server::proxy;

/// What the header block of a request said.
#[derive(Default)]
struct Pseudo {
    method: bool,
    scheme: bool,
    path: bool,
    regular_seen: bool,
    content_length: Option<u64>,
    bad: Option<&'static str>,
    cert_count: usize,
}

/// A complete header block: decode it (always, to keep the HPACK table in step), then open a
/// stream or take the trailers.
pub(super) fn end_of_block(
    h2: &mut H2,
    run: &mut impl StartHandler,
    out: &mut Vec<u8>,
    id: u32,
    end_stream: bool,
    now: Instant,
) -> Result<(), ConnectionError> {
    if let Some(index) = h2.stream_index(id) {
        // Trailers: checked, then ignored.
        let block = std::mem::take(&mut h2.block);
        let mut malformed = false;
        let r = h2.decoder.decode(&block, |name, value| {
            malformed |= name.starts_with(b":") || !valid_field(name, value);
            Ok::<(), ()>(())
        });
        h2.block = block;
        if let Err(e) = r {
            return Err(ConnectionError(
                e.code().unwrap_or(ErrorCode::CompressionError),
            ));
        }
        if malformed {
            reset_stream(h2, out, index, ErrorCode::ProtocolError);
            return Ok(());
        }
        h2.streams[index].remote_closed = true;
        if h2.streams[index].state == StreamState::Body {
            begin(h2, run, out, index);
        }
        return Ok(());
    }
    h2.last_stream_id = id;
    let mut work = h2.take_work();
    let mut pseudo = Pseudo::default();
    let settings = h2.core.settings.get(&h2.core.shared.settings);
    let from_proxy = matches!(h2.peer, Peer::Identified(id) if settings.proxies.contains(&id));
    let cert_header = if from_proxy {
        proxy::cert_header(&settings)
    } else {
        ""
    };
    h2.head.forwarded_cert = None;
    h2.head.forwarded_for = None;
    let block = std::mem::take(&mut h2.block);
    let decoded = h2.decoder.decode(&block, |name, value| {
        on_field(
            &mut pseudo,
            &mut work,
            &mut h2.head,
            cert_header,
            name,
            value,
        );
        Ok::<(), ()>(())
    });
    h2.block = block;
    if let Err(e) = decoded {
        h2.give_back(work);
        return Err(ConnectionError(
            e.code().unwrap_or(ErrorCode::CompressionError),
        ));
    }
    if h2.goaway_sent {
        h2.give_back(work);
        frame::write_rst_stream(out, id, ErrorCode::RefusedStream);
        return Ok(());
    }
    if h2.streams.len() >= CONCURRENT_STREAMS_MAX as usize {
        h2.give_back(work);
        frame::write_rst_stream(out, id, ErrorCode::RefusedStream);
        return h2.resets.count(now);
    }
    if let Some(why) = pseudo.bad.or_else(|| {
        (!pseudo.method || !pseudo.scheme || !pseudo.path).then_some("missing pseudo-header")
    }) {
        let _ = why;
        h2.give_back(work);
        frame::write_rst_stream(out, id, ErrorCode::ProtocolError);
        return h2.resets.count(now);
    }
    h2.requests += 1;
    h2.core.metrics.inc(&h2.core.metrics.http2_streams);

    // Route and authorise from the head alone (as HTTP/1.1 does).
    let method = Method::from_token(&work.method_raw);
    let peer = h2.peer;
    h2.head.cert_header_count = pseudo.cert_count;
    let (peer, proxy_error) = if from_proxy {
        match proxy::forwarded_identity(&h2.head, settings.client_verifier.as_ref()) {
            Ok(identity) => (Peer::Identified(identity), None),
            Err(e) => (Peer::Unidentified(IdentityError::NoCertificate), Some(e)),
        }
    } else {
        (peer, None)
    };
    let cleaned = http::clean_path(&work.path);
    let target = match &cleaned {
        Some(_) => Target::Redirect,
        None => match api::router::route_request(method, &work.path) {
            Routed::Route { index, .. } => Target::Route(index),
            Routed::RedirectAddSlash => Target::Redirect,
            Routed::WrongMethod { index } => Target::WrongMethod(index),
            Routed::NotFound => Target::NotFound,
        },
    };
    if let (Target::Redirect, None) = (target, &cleaned) {
        work.path.push('/');
    } else if let Some(clean) = cleaned {
        work.path.clear();
        work.path.push_str(&clean);
    }
    let authorized = match (target, proxy_error) {
        (Target::Route(_), Some(e)) => Err(e),
        (Target::Route(index), None) => api::authorize_head(&settings, index, peer, &work.path),
        _ => Ok(()),
    };
    let body_limit = match (target, &authorized) {
        (Target::Route(index), Ok(())) if ROUTES[index].body_bytes_max > 0 => {
            Some(ROUTES[index].body_bytes_max)
        }
        _ => None,
    };
    h2.streams.push(Stream {
        id,
        state: StreamState::Body,
        target,
        authorized,
        peer,
        ip: proxy::client_ip(&h2.head, from_proxy, h2.peer_addr),
        body_limit,
        content_length: pseudo.content_length,
        received: 0,
        remote_closed: end_stream,
        send_window: h2.peer_initial_window,
        sent: 0,
        started_at: now,
        stalled_since: None,
        progress_mark: 0,
        work,
        settings,
        log: None,
    });
    let index = h2.streams.len() - 1;
    // A request whose body nobody uses is answered now; the client is then told to stop.
    if end_stream || body_limit.is_none() {
        begin(h2, run, out, index);
    }
    Ok(())
}

/// One decoded header field of a request (RFC 9113 §8.2, §8.3).
fn on_field(
    pseudo: &mut Pseudo,
    work: &mut Work,
    head: &mut RequestHead,
    cert_header: &str,
    name: &[u8],
    value: &[u8],
) {
    if pseudo.bad.is_some() {
        return;
    }
    if !valid_field(name, value) {
        pseudo.bad = Some("invalid character in a header field");
        return;
    }
    if let Some(p) = name.strip_prefix(b":") {
        if pseudo.regular_seen {
            pseudo.bad = Some("pseudo-header after a regular header");
            return;
        }
        let Ok(value) = std::str::from_utf8(value) else {
            pseudo.bad = Some("pseudo-header is not UTF-8");
            return;
        };
        match p {
            b"method" if !pseudo.method => {
                pseudo.method = true;
                work.method_raw.push_str(value);
            }
            b"scheme" if !pseudo.scheme => pseudo.scheme = true,
            b"authority" => {
                work.host.clear();
                work.host.push_str(value);
            }
            b"path" if !pseudo.path => {
                pseudo.path = true;
                if !value.starts_with('/') {
                    pseudo.bad = Some("path must start with /");
                    return;
                }
                let (path, query) = value.split_once('?').unwrap_or((value, ""));
                work.query.push_str(query);
                if http::request::percent_decode(path, &mut work.path).is_err() {
                    pseudo.bad = Some("invalid path");
                }
            }
            _ => pseudo.bad = Some("unknown or repeated pseudo-header"),
        }
        return;
    }
    pseudo.regular_seen = true;
    match name {
        b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding" | b"upgrade" => {
            pseudo.bad = Some("connection-specific header")
        }
        b"te" if value != b"trailers" => pseudo.bad = Some("te other than trailers"),
        b"content-length" => {
            let parsed = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok());
            match (parsed, pseudo.content_length) {
                (Some(n), None) => pseudo.content_length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => pseudo.bad = Some("invalid content-length"),
            }
        }
        b"content-type" | b"accept" => {
            work.binary |= value == http::request::BINARY_MEDIA_TYPE;
        }
        b"host" if work.host.is_empty() => {
            work.host.push_str(&String::from_utf8_lossy(value));
        }
        b"x-forwarded-for" if head.forwarded_for.is_none() => {
            let first = value.split(|&b| b == b',').next().unwrap_or(b"");
            head.forwarded_for = Some(String::from_utf8_lossy(first).trim().to_string());
        }
        _ if !cert_header.is_empty() && name.eq_ignore_ascii_case(cert_header.as_bytes()) => {
            pseudo.cert_count += 1;
            head.forwarded_cert = Some(String::from_utf8_lossy(value).into_owned());
        }
        _ => {}
    }
}

/// RFC 9113 §8.2.1: a name of visible ASCII without uppercase (a colon only first), a value
/// without CR, LF or NUL; anything else makes the message malformed.
fn valid_field(name: &[u8], value: &[u8]) -> bool {
    let rest = name.strip_prefix(b":").unwrap_or(name);
    !rest.is_empty()
        && rest
            .iter()
            .all(|&b| (0x21..0x7f).contains(&b) && b != b':' && !b.is_ascii_uppercase())
        && memchr::memchr3(b'\r', b'\n', 0, value).is_none()
}
