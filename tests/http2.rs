//! HTTP/2 against real clients (curl, h2load) and hand-built frames over a real TLS
//! connection: every route, many streams on one connection, and what RFC 9113 says hostile
//! or malformed input must get.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use kes::auth::apikey::ApiKey;
use kes::http2::frame::{self, FrameHeader};
use kes::http2::{hpack, ErrorCode, PREFACE};

/// Requests are encoded as literals, as our response encoder does (no dynamic table).
static ENC: hpack::Encoder = hpack::Encoder::NEW;

/// PEM files of the client certificate an API key stands for (what curl needs).
fn client_pem_files(dir: &Path, api_key: &str) -> (PathBuf, PathBuf) {
    let key = ApiKey::parse(api_key).unwrap();
    let (cert, private) = kes::auth::cert::client_cert_from_api_key(&key).unwrap();
    let cert_path = dir.join("client.crt");
    let key_path = dir.join("client.key");
    std::fs::write(&cert_path, pem("CERTIFICATE", &cert)).unwrap();
    std::fs::write(&key_path, pem("PRIVATE KEY", private.secret_der())).unwrap();
    (cert_path, key_path)
}

fn need(tool: &str, package: &str) {
    let found = Command::new(tool).arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "this test needs `{tool}` ({package}); tools/test-all.sh installs it"
    );
}

/// One request with `curl --http2`: (HTTP version, status, body).
fn curl(
    server: &TestServer,
    files: &(PathBuf, PathBuf),
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (String, u16, String) {
    let url = format!("https://{}{}", server.addr, path);
    let mut cmd = Command::new("curl");
    cmd.args(["-sSk", "--http2", "-X", method, "--max-time", "10"])
        .arg("--cert")
        .arg(&files.0)
        .arg("--key")
        .arg(&files.1)
        .args(["-w", "\n%{http_version} %{http_code}"]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = cmd.arg(&url).output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut parts = tail.split_whitespace();
    let version = parts.next().unwrap_or("").to_string();
    let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    if status == 0 {
        let again = cmd.arg("-v").output().unwrap();
        let err = String::from_utf8_lossy(&again.stderr);
        let tail: Vec<&str> = err.lines().rev().take(30).collect();
        eprintln!("curl failed: {tail:#?}");
    }
    (version, status, body.to_string())
}

#[test]
fn curl_speaks_http2_to_every_route() {
    need("curl", "curl");
    let server = dev_server();
    let dir = tempfile::tempdir().unwrap();
    let files = client_pem_files(dir.path(), &server.api_key);

    let (v, status, body) = curl(&server, &files, "GET", "/version", None);
    assert_eq!((v.as_str(), status), ("2", 200), "{body}");
    assert!(body.contains("\"version\""), "{body}");
    assert_eq!(
        curl(&server, &files, "POST", "/v1/key/create/h2-key", None).1,
        200
    );
    assert_eq!(
        curl(
            &server,
            &files,
            "POST",
            "/v1/key/import/h2-imported",
            Some(r#"{"key":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","cipher":"AES256"}"#)
        )
        .1,
        200
    );
    let (_, status, dek) = curl(
        &server,
        &files,
        "POST",
        "/v1/key/generate/h2-key",
        Some(r#"{"context":"YWJj"}"#),
    );
    assert_eq!(status, 200, "{dek}");
    let ciphertext = dek
        .split("\"ciphertext\":\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("ciphertext in the DEK")
        .to_string();
    let plaintext = dek
        .split("\"plaintext\":\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    let (_, status, decrypted) = curl(
        &server,
        &files,
        "POST",
        "/v1/key/decrypt/h2-key",
        Some(&format!(
            r#"{{"ciphertext":"{ciphertext}","context":"YWJj"}}"#
        )),
    );
    assert_eq!(status, 200, "{decrypted}");
    assert!(decrypted.contains(&plaintext), "{decrypted}");
    let (_, status, enc) = curl(
        &server,
        &files,
        "POST",
        "/v1/key/encrypt/h2-key",
        Some(r#"{"plaintext":"aGVsbG8="}"#),
    );
    assert_eq!(status, 200, "{enc}");
    assert_eq!(
        curl(
            &server,
            &files,
            "PUT",
            "/v1/key/hmac/h2-key",
            Some(r#"{"message":"aGVsbG8="}"#)
        )
        .1,
        200
    );
    let (_, status, described) = curl(&server, &files, "GET", "/v1/key/describe/h2-key", None);
    assert_eq!(status, 200);
    assert!(described.contains("h2-key"), "{described}");
    let (_, status, listed) = curl(&server, &files, "GET", "/v1/key/list/h2-*", None);
    assert_eq!(status, 200);
    assert!(
        listed.contains("h2-key") && listed.contains("h2-imported"),
        "{listed}"
    );
    for path in [
        "/v1/status",
        "/v1/ready",
        "/v1/metrics",
        "/v1/api",
        "/v1/identity/self/describe",
        "/v1/identity/list/",
        "/v1/policy/list/",
    ] {
        let (v, status, body) = curl(&server, &files, "GET", path, None);
        assert_eq!((v.as_str(), status), ("2", 200), "{path}: {body}");
    }
    assert_eq!(
        curl(
            &server,
            &files,
            "DELETE",
            "/v1/key/delete/h2-imported",
            None
        )
        .1,
        200
    );
    // Errors: same statuses and JSON as HTTP/1.1.
    let (_, status, body) = curl(&server, &files, "GET", "/v1/key/describe/missing", None);
    assert_eq!(status, 404);
    let h1 = server
        .client()
        .request("GET", "/v1/key/describe/missing", None, &[])
        .unwrap();
    assert_eq!(
        body.as_bytes(),
        &h1.body[..],
        "the same error body as HTTP/1.1"
    );
    assert!(
        body.starts_with(r#"{"message":"key does not exist""#),
        "{body}"
    );
    assert_eq!(curl(&server, &files, "GET", "/v1/nothing", None).1, 404);
    assert_eq!(
        curl(&server, &files, "GET", "/v1/key/create/x", None).1,
        405
    );
    assert_eq!(curl(&server, &files, "GET", "/v1//status", None).1, 301);
    let big = format!(r#"{{"plaintext":"{}"}}"#, "A".repeat(1_100_000));
    let body_file = dir.path().join("big.json");
    std::fs::write(&body_file, big).unwrap();
    let (_, status, _) = curl(
        &server,
        &files,
        "POST",
        "/v1/key/encrypt/h2-key",
        Some(&format!("@{}", body_file.display())),
    );
    assert_eq!(status, 413);
    // A stranger: 403, body or not.
    let (stranger, _) = new_api_key();
    let other = client_pem_files(&dir.path().join(".."), &stranger);
    let (_, status, body) = curl(
        &server,
        &other,
        "POST",
        "/v1/key/generate/h2-key",
        Some("{}"),
    );
    assert_eq!(status, 403, "{body}");
}

#[test]
fn h2load_multiplexes_many_streams_on_one_connection() {
    need("h2load", "Debian's nghttp2-client");
    // h2load sends no client certificate: a route with skip_auth lets it in.
    let tls = tls_files();
    let keys = tempfile::tempdir().unwrap();
    let (_, admin) = new_api_key();
    let server = config_server(
        &tls,
        &admin,
        keys.path(),
        "api:\n  /v1/status:\n    skip_auth: true\n",
    );
    let out = Command::new("h2load")
        .args(["-n", "4000", "-c", "1", "-m", "128", "-t", "1"])
        .arg(format!("https://{}/v1/status", server.addr))
        .output()
        .expect("run h2load");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Application protocol: h2"), "{text}");
    assert!(
        text.contains("4000 succeeded, 0 failed, 0 errored"),
        "{text}"
    );
    assert!(text.contains("status codes: 4000 2xx"), "{text}");
}

/// A raw HTTP/2 connection over TLS: frames are written and read by hand.
struct H2Conn {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    input: Vec<u8>,
    encoder_scratch: Vec<u8>,
    decoder: hpack::Decoder,
    /// Connection-level credit (WINDOW_UPDATE on stream 0) received so far.
    credit: i64,
}

/// A frame the server sent.
#[derive(Debug)]
struct Frame {
    header: FrameHeader,
    payload: Vec<u8>,
}

fn h2_connect(addr: SocketAddr, api_key: &str) -> H2Conn {
    h2_try_connect(addr, api_key).expect("HTTP/2 connection")
}

/// Like [`h2_connect`]; an error if the server refuses or drops the connection.
fn h2_try_connect(addr: SocketAddr, api_key: &str) -> std::io::Result<H2Conn> {
    let mut config = (*kes::client::rustls_config(&kes::client::ClientConfig {
        endpoints: Vec::new(),
        credentials: Some(kes::client::Credentials::ApiKey(
            ApiKey::parse(api_key).unwrap(),
        )),
        insecure: true,
        ca_file: None,
        timeout: Duration::from_secs(10),
    })
    .unwrap())
    .clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"h2"[..]));
    let mut c = H2Conn {
        tls,
        input: Vec::new(),
        encoder_scratch: Vec::new(),
        decoder: hpack::Decoder::new(4096, 1 << 20),
        credit: 0,
    };
    let mut out = PREFACE.to_vec();
    frame::write_settings(&mut out, &[]);
    c.try_send(&out)?;
    // The server's SETTINGS first; ACK it.
    let f = c.next_frame().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "no SETTINGS from the server",
        )
    })?;
    assert_eq!(f.header.kind, frame::kind::SETTINGS);
    let mut ack = Vec::new();
    frame::write_settings_ack(&mut ack);
    c.try_send(&ack)?;
    Ok(c)
}

/// What waiting a while for a frame gave.
#[derive(Debug)]
enum Polled {
    Frame(Frame),
    Nothing,
    Closed,
}

impl H2Conn {
    fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes).unwrap();
    }

    fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tls.write_all(bytes)?;
        self.tls.flush()
    }

    /// The next frame if one comes within `wait`; tells a quiet connection from a closed one.
    /// A zero `wait` only takes what already arrived.
    fn poll_frame(&mut self, wait: Duration) -> Polled {
        if wait.is_zero() {
            self.tls.sock.set_nonblocking(true).unwrap();
        } else {
            self.tls.sock.set_read_timeout(Some(wait)).unwrap();
        }
        let polled = loop {
            if self.input.len() >= 9 {
                let header = FrameHeader::parse(&self.input[..9]).unwrap();
                let total = 9 + header.length as usize;
                if self.input.len() >= total {
                    let payload = self.input[9..total].to_vec();
                    self.input.drain(..total);
                    if header.kind == frame::kind::WINDOW_UPDATE && header.stream_id == 0 {
                        let increment = u32::from_be_bytes(payload[..4].try_into().unwrap());
                        self.credit += i64::from(increment);
                    }
                    break Polled::Frame(Frame { header, payload });
                }
            }
            let mut buf = [0u8; 16384];
            match self.tls.read(&mut buf) {
                Ok(0) => break Polled::Closed,
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break Polled::Nothing
                }
                Err(_) => break Polled::Closed,
            }
        };
        self.tls.sock.set_nonblocking(false).unwrap();
        self.tls
            .sock
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        polled
    }

    /// The next frame, or `None` if the connection closed or nothing came within 5 s.
    fn next_frame(&mut self) -> Option<Frame> {
        match self.poll_frame(Duration::from_secs(5)) {
            Polled::Frame(f) => Some(f),
            Polled::Nothing | Polled::Closed => None,
        }
    }

    /// A request's HEADERS (and DATA) frames.
    fn request_bytes(
        &mut self,
        out: &mut Vec<u8>,
        stream_id: u32,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) {
        let block = &mut self.encoder_scratch;
        block.clear();
        ENC.encode_field(block, b":method", method.as_bytes());
        ENC.encode_field(block, b":scheme", b"https");
        ENC.encode_field(block, b":path", path.as_bytes());
        ENC.encode_field(block, b":authority", b"kes");
        if body.is_some() {
            ENC.encode_field(block, b"content-type", b"application/json");
        }
        frame::write_headers(out, stream_id, block, body.is_none(), 16384);
        if let Some(b) = body {
            frame::write_data(out, stream_id, b, true);
        }
    }

    /// Reads frames until every stream in `ids` is answered; returns (status, body) by id.
    fn responses(&mut self, ids: &[u32]) -> std::collections::HashMap<u32, (u16, Vec<u8>)> {
        let mut open: std::collections::HashMap<u32, (u16, Vec<u8>)> = Default::default();
        let mut finished = std::collections::HashMap::new();
        while finished.len() < ids.len() {
            let f = self.next_frame().unwrap_or_else(|| {
                panic!(
                    "connection ended with {} of {} answered",
                    finished.len(),
                    ids.len()
                )
            });
            let id = f.header.stream_id;
            let end = matches!(f.header.kind, frame::kind::DATA | frame::kind::HEADERS)
                && f.header.flags & frame::flag::END_STREAM != 0;
            match f.header.kind {
                frame::kind::HEADERS => {
                    let mut status = 0;
                    self.decoder
                        .decode(&f.payload, |name, value| {
                            if name == b":status" {
                                status = std::str::from_utf8(value).unwrap().parse().unwrap();
                            }
                            Ok::<(), ()>(())
                        })
                        .unwrap();
                    open.entry(id).or_default().0 = status;
                }
                frame::kind::DATA => open.entry(id).or_default().1.extend_from_slice(&f.payload),
                frame::kind::RST_STREAM
                | frame::kind::WINDOW_UPDATE
                | frame::kind::PING
                | frame::kind::SETTINGS => {}
                frame::kind::GOAWAY => panic!("GOAWAY: {:?}", f.payload),
                _ => {}
            }
            if end {
                finished.insert(id, open.remove(&id).unwrap_or_default());
            }
        }
        finished
    }

    /// The next frame that is not connection housekeeping (WINDOW_UPDATE and SETTINGS on
    /// stream 0).
    fn next_stream_frame(&mut self) -> Option<Frame> {
        loop {
            let f = self.next_frame()?;
            if f.header.stream_id == 0
                && matches!(
                    f.header.kind,
                    frame::kind::WINDOW_UPDATE | frame::kind::SETTINGS
                )
            {
                continue;
            }
            return Some(f);
        }
    }

    /// Reads until a GOAWAY arrives; returns its error code.
    fn goaway_code(&mut self) -> Option<u32> {
        while let Some(f) = self.next_frame() {
            if f.header.kind == frame::kind::GOAWAY {
                return Some(u32::from_be_bytes(f.payload[4..8].try_into().unwrap()));
            }
        }
        None
    }
}

#[test]
fn two_hundred_fifty_streams_on_one_connection_are_all_answered() {
    let server = dev_server();
    server
        .client()
        .request("POST", "/v1/key/create/multi", None, &[])
        .unwrap();
    let mut c = h2_connect(server.addr, &server.api_key);
    let mut out = Vec::new();
    let ids: Vec<u32> = (0..250).map(|i| 1 + 2 * i).collect();
    for &id in &ids {
        c.request_bytes(&mut out, id, "POST", "/v1/key/generate/multi", Some(b"{}"));
    }
    c.send(&out);
    let answers = c.responses(&ids);
    for id in ids {
        let (status, body) = &answers[&id];
        assert_eq!(
            *status,
            200,
            "stream {id}: {}",
            String::from_utf8_lossy(body)
        );
        assert!(body.starts_with(b"{\"plaintext\":"));
    }
}

#[test]
fn rapid_reset_is_answered_with_enhance_your_calm() {
    let server = dev_server();
    let mut c = h2_connect(server.addr, &server.api_key);
    let mut out = Vec::new();
    let mut block = Vec::new();
    ENC.encode_field(&mut block, b":method", b"POST");
    ENC.encode_field(&mut block, b":scheme", b"https");
    ENC.encode_field(&mut block, b":path", b"/v1/key/generate/x");
    for i in 0..1000u32 {
        // A request whose body is still to come, reset at once.
        let id = 1 + 2 * i;
        frame::write_headers(&mut out, id, &block, false, 16384);
        frame::write_rst_stream(&mut out, id, ErrorCode::Cancel);
    }
    c.send(&out);
    assert_eq!(c.goaway_code(), Some(ErrorCode::EnhanceYourCalm.code()));
}

#[test]
fn continuation_floods_are_cut_before_decoding() {
    let server = dev_server();
    let mut c = h2_connect(server.addr, &server.api_key);
    let mut out = Vec::new();
    // HEADERS without END_HEADERS, then endless CONTINUATION frames.
    FrameHeader {
        length: 0,
        kind: frame::kind::HEADERS,
        flags: 0,
        stream_id: 1,
    }
    .write(&mut out);
    let junk = vec![0x40u8; 16000];
    for _ in 0..8 {
        FrameHeader {
            length: junk.len() as u32,
            kind: frame::kind::CONTINUATION,
            flags: 0,
            stream_id: 1,
        }
        .write(&mut out);
        out.extend_from_slice(&junk);
    }
    c.send(&out);
    assert_eq!(c.goaway_code(), Some(ErrorCode::EnhanceYourCalm.code()));
}

#[test]
fn malformed_frames_get_what_the_rfc_says() {
    let server = dev_server();
    // DATA on stream 0: connection error PROTOCOL_ERROR.
    let mut c = h2_connect(server.addr, &server.api_key);
    let mut out = Vec::new();
    frame::write_data(&mut out, 0, b"x", false);
    c.send(&out);
    assert_eq!(c.goaway_code(), Some(ErrorCode::ProtocolError.code()));

    // An uppercase header name: stream error PROTOCOL_ERROR; the connection lives on.
    let mut c = h2_connect(server.addr, &server.api_key);
    let mut block = Vec::new();
    ENC.encode_field(&mut block, b":method", b"GET");
    ENC.encode_field(&mut block, b":scheme", b"https");
    ENC.encode_field(&mut block, b":path", b"/version");
    ENC.encode_field(&mut block, b"X-Upper", b"1");
    let mut out = Vec::new();
    frame::write_headers(&mut out, 1, &block, true, 16384);
    c.send(&out);
    let f = c.next_stream_frame().unwrap();
    assert_eq!(f.header.kind, frame::kind::RST_STREAM, "{f:?}");
    assert_eq!(
        u32::from_be_bytes(f.payload[..4].try_into().unwrap()),
        ErrorCode::ProtocolError.code()
    );
    let mut out = Vec::new();
    c.request_bytes(&mut out, 3, "GET", "/version", None);
    c.send(&out);
    assert_eq!(c.responses(&[3])[&3].0, 200);

    // A frame over the maximum size: FRAME_SIZE_ERROR.
    let mut c = h2_connect(server.addr, &server.api_key);
    let mut out = Vec::new();
    FrameHeader {
        length: 20_000,
        kind: frame::kind::DATA,
        flags: 0,
        stream_id: 1,
    }
    .write(&mut out);
    out.extend_from_slice(&vec![0u8; 20_000]);
    c.send(&out);
    assert_eq!(c.goaway_code(), Some(ErrorCode::FrameSizeError.code()));

    // A PING is answered; garbage after the preface is a connection error.
    let mut c = h2_connect(server.addr, &server.api_key);
    let mut out = Vec::new();
    FrameHeader {
        length: 8,
        kind: frame::kind::PING,
        flags: 0,
        stream_id: 0,
    }
    .write(&mut out);
    out.extend_from_slice(b"12345678");
    c.send(&out);
    let f = c.next_stream_frame().unwrap();
    assert_eq!(
        (f.header.kind, f.header.flags),
        (frame::kind::PING, frame::flag::ACK)
    );
    assert_eq!(f.payload, b"12345678");
}

#[test]
fn unauthorised_bodies_are_refused_from_the_head_and_limits_hold() {
    let server = dev_server();
    let (stranger, _) = new_api_key();
    let mut c = h2_connect(server.addr, &stranger);
    let mut out = Vec::new();
    c.request_bytes(&mut out, 1, "POST", "/v1/key/generate/x", Some(b"{}"));
    c.send(&out);
    assert_eq!(c.responses(&[1])[&1].0, 403);

    // Over the limit: 413 for the admin too.
    let mut c = h2_connect(server.addr, &server.api_key);
    let mut out = Vec::new();
    let block = {
        let mut b = Vec::new();
        ENC.encode_field(&mut b, b":method", b"PUT");
        ENC.encode_field(&mut b, b":scheme", b"https");
        ENC.encode_field(&mut b, b":path", b"/v1/key/hmac/x");
        b
    };
    frame::write_headers(&mut out, 1, &block, false, 16384);
    let chunk = vec![b'a'; 16384];
    for _ in 0..70 {
        frame::write_data(&mut out, 1, &chunk, false);
    }
    c.send(&out);
    assert_eq!(c.responses(&[1])[&1].0, 413);
}

/// Issue 20 #4: the 301 "add a slash" redirect builds its `location` in one place for both
/// protocols. Over h2 a `:path` can carry any byte: its query's control bytes (CR, LF, NUL,
/// tab, DEL, space) come back percent-encoded (or the request is refused as malformed), never
/// raw, so an h2-to-HTTP/1.1 proxy in front cannot be made to split the answer. A printable
/// query comes back as sent (as Go does), the same over HTTP/1.1 and h2.
#[test]
fn redirect_locations_carry_no_control_bytes_over_either_protocol() {
    let server = dev_server();
    let mut c = h2_connect(server.addr, &server.api_key);
    let mut out = Vec::new();
    c.request_bytes(
        &mut out,
        1,
        "GET",
        "/v1/key/create?a=1\r\nset-cookie: x=1\0\t\x7f\nb",
        None,
    );
    c.send(&out);
    let f = c
        .next_stream_frame()
        .expect("an answer to the hostile redirect");
    if f.header.kind == frame::kind::RST_STREAM {
        // Refused as malformed (RFC 9113 §8.2.1): nothing was reflected either.
        let code = u32::from_be_bytes(f.payload[..4].try_into().unwrap());
        assert_eq!(code, ErrorCode::ProtocolError as u32);
    } else {
        assert_eq!(f.header.kind, frame::kind::HEADERS, "{:?}", f.header);
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        c.decoder
            .decode(&f.payload, |name, value| {
                fields.push((name.to_vec(), value.to_vec()));
                Ok::<(), ()>(())
            })
            .unwrap();
        for (name, value) in &fields {
            assert!(
                !value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)),
                "{} carries a raw control byte: {:?}",
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(value)
            );
        }
        let field = |n: &[u8]| {
            fields
                .iter()
                .find(|(name, _)| name == n)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(field(b":status").as_deref(), Some("301"));
        assert_eq!(
            field(b"location").as_deref(),
            Some("/v1/key/create/?a=1%0D%0Aset-cookie:%20x=1%00%09%7F%0Ab")
        );
    }

    // A printable query is kept as sent, and both protocols answer the same location.
    let target = "/v1/key/create?a=1&b=%0D%0A&c=~'*";
    let want = "/v1/key/create/?a=1&b=%0D%0A&c=~'*";
    let mut c = h2_connect(server.addr, &server.api_key);
    let mut out = Vec::new();
    c.request_bytes(&mut out, 1, "GET", target, None);
    c.send(&out);
    let f = c.next_stream_frame().expect("an answer over h2");
    assert_eq!(f.header.kind, frame::kind::HEADERS, "{:?}", f.header);
    let mut location = None;
    c.decoder
        .decode(&f.payload, |name, value| {
            if name == b"location" {
                location = Some(String::from_utf8_lossy(value).into_owned());
            }
            Ok::<(), ()>(())
        })
        .unwrap();
    assert_eq!(location.as_deref(), Some(want));
    let mut raw = raw_tls(server.addr, Some(&server.api_key)).unwrap();
    raw.send(format!("GET {target} HTTP/1.1\r\nHost: kes\r\nConnection: close\r\n\r\n").as_bytes());
    let text = String::from_utf8_lossy(&raw.read_all(Duration::from_secs(5))).into_owned();
    assert!(text.starts_with("HTTP/1.1 301 "), "{text}");
    assert!(
        text.lines().any(|l| l == format!("Location: {want}")),
        "{text}"
    );
}

#[test]
fn a_small_client_window_gets_the_answer_in_pieces() {
    let server = dev_server();
    let mut client = server.client();
    for i in 0..50 {
        client
            .request(
                "POST",
                &format!("/v1/key/create/window-{i:03}-{}", "k".repeat(40)),
                None,
                &[],
            )
            .unwrap();
    }
    let mut c = h2_connect(server.addr, &server.api_key);
    // The stream window is 100 bytes: the list (several KiB) needs WINDOW_UPDATEs.
    let mut out = Vec::new();
    frame::write_settings(&mut out, &[(kes::http2::SETTINGS_INITIAL_WINDOW_SIZE, 100)]);
    c.request_bytes(&mut out, 1, "GET", "/v1/key/list/window-*", None);
    c.send(&out);
    let mut body = Vec::new();
    let started = Instant::now();
    loop {
        let f = c.next_frame().expect("frames");
        if f.header.kind == frame::kind::DATA {
            assert!(f.payload.len() <= 100, "a DATA frame beyond the window");
            body.extend_from_slice(&f.payload);
            if f.header.flags & frame::flag::END_STREAM != 0 {
                break;
            }
            let mut wu = Vec::new();
            frame::write_window_update(&mut wu, 1, f.payload.len() as u32);
            c.send(&wu);
        }
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    let text = String::from_utf8(body).unwrap();
    assert_eq!(text.matches("window-").count(), 50, "{text}");
}

#[test]
fn a_connection_that_sends_nothing_is_closed_at_the_header_timeout() {
    let server = dev_server_with(|o| o.timeouts.header = Duration::from_millis(500));
    let mut c = h2_connect(server.addr, &server.api_key);
    let started = Instant::now();
    assert_eq!(c.goaway_code(), Some(ErrorCode::NoError.code()));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn ping_floods_and_hpack_bombs_get_enhance_your_calm() {
    let server = dev_server();
    // 25 000 PINGs in one go: more control frames than a connection may send per second.
    let mut c = h2_connect(server.addr, &server.api_key);
    let mut out = Vec::new();
    for _ in 0..25_000 {
        FrameHeader {
            length: 8,
            kind: frame::kind::PING,
            flags: 0,
            stream_id: 0,
        }
        .write(&mut out);
        out.extend_from_slice(b"flooding");
    }
    c.send(&out);
    assert_eq!(c.goaway_code(), Some(ErrorCode::EnhanceYourCalm.code()));

    // One 4000-byte header indexed once, then referenced 100 times: the decoded list would
    // be 400 KB from a 4 KB block. Cut off at the advertised list size.
    let mut c = h2_connect(server.addr, &server.api_key);
    let mut block = Vec::new();
    ENC.encode_field(&mut block, b":method", b"GET");
    ENC.encode_field(&mut block, b":scheme", b"https");
    ENC.encode_field(&mut block, b":path", b"/version");
    block.extend_from_slice(&[0x40, 0x01, b'x', 0x7f, 0xa1, 0x1e]); // literal, indexed
    block.extend_from_slice(&[b'v'; 4000]);
    block.extend(std::iter::repeat_n(0x80 | 62, 100)); // the new entry, 100 times
    let mut out = Vec::new();
    frame::write_headers(&mut out, 1, &block, true, 16384);
    c.send(&out);
    assert_eq!(c.goaway_code(), Some(ErrorCode::EnhanceYourCalm.code()));
}

#[test]
fn a_stream_past_its_route_timeout_gets_503_and_the_connection_lives_on() {
    let tls = tls_files();
    let keys = tempfile::tempdir().unwrap();
    let (admin_key, admin) = new_api_key();
    let server = config_server(
        &tls,
        &admin,
        keys.path(),
        "api:\n  /v1/key/generate/:\n    timeout: 1s\n",
    );
    let mut c = h2_connect(server.addr, &admin_key);
    // A body that never comes.
    let mut block = Vec::new();
    ENC.encode_field(&mut block, b":method", b"POST");
    ENC.encode_field(&mut block, b":scheme", b"https");
    ENC.encode_field(&mut block, b":path", b"/v1/key/generate/slow");
    let mut out = Vec::new();
    frame::write_headers(&mut out, 1, &block, false, 16384);
    c.send(&out);
    let started = Instant::now();
    let answers = c.responses(&[1]);
    let waited = started.elapsed();
    assert_eq!(
        answers[&1].0,
        503,
        "{}",
        String::from_utf8_lossy(&answers[&1].1)
    );
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    // The same connection still serves.
    let mut out = Vec::new();
    c.request_bytes(&mut out, 3, "GET", "/version", None);
    c.send(&out);
    assert_eq!(c.responses(&[3])[&3].0, 200);
}

#[test]
fn log_streams_work_over_http2_and_sigterm_sends_goaway() {
    let mut server = bin_server(&["--dev"]);
    let api_key = server.dev_api_key();
    let mut c = h2_connect(server.addr, &api_key);
    let mut out = Vec::new();
    c.request_bytes(&mut out, 1, "GET", "/v1/log/audit", None);
    c.send(&out);
    // The answer's HEADERS (200), then an audited event as a DATA frame.
    let f = c.next_stream_frame().unwrap();
    assert_eq!(
        (f.header.kind, f.header.stream_id),
        (frame::kind::HEADERS, 1)
    );
    let mut admin = client_for(&format!("https://{}", server.addr), &api_key);
    assert_eq!(
        admin
            .request("POST", "/v1/key/create/over-h2", None, &[])
            .unwrap()
            .status,
        200
    );
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("/v1/key/create/over-h2") {
        let f = c.next_stream_frame().expect("an audit line");
        if f.header.kind == frame::kind::DATA {
            seen.extend_from_slice(&f.payload);
        }
    }
    // SIGTERM: GOAWAY(NO_ERROR) naming stream 1, the log stream ends, the server exits 0.
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    let mut goaway = None;
    let mut ended = false;
    while let Some(f) = c.next_frame() {
        match f.header.kind {
            frame::kind::GOAWAY => {
                goaway = Some((
                    u32::from_be_bytes(f.payload[..4].try_into().unwrap()),
                    u32::from_be_bytes(f.payload[4..8].try_into().unwrap()),
                ))
            }
            frame::kind::DATA if f.header.flags & frame::flag::END_STREAM != 0 => ended = true,
            _ => {}
        }
    }
    assert_eq!(goaway, Some((1, ErrorCode::NoError.code())));
    assert!(ended, "the log stream was not ended");
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("the server exits");
    assert!(status.success(), "{status:?}");
}

#[test]
fn an_answer_stalled_on_a_closed_window_is_reset_and_the_connection_lives() {
    let server = dev_server_with(|o| o.timeouts.write = Duration::from_millis(800));
    server
        .client()
        .request("POST", "/v1/key/create/stalled", None, &[])
        .unwrap();
    let mut c = h2_connect(server.addr, &server.api_key);
    // A stream window of 0: the answer's HEADERS go out, no DATA can.
    let mut out = Vec::new();
    frame::write_settings(&mut out, &[(kes::http2::SETTINGS_INITIAL_WINDOW_SIZE, 0)]);
    c.request_bytes(&mut out, 1, "GET", "/v1/key/describe/stalled", None);
    c.send(&out);
    let started = Instant::now();
    let mut reset = None;
    while let Some(f) = c.next_stream_frame() {
        assert_ne!(
            f.header.kind,
            frame::kind::DATA,
            "DATA beyond a zero window"
        );
        if f.header.kind == frame::kind::RST_STREAM {
            reset = Some(u32::from_be_bytes(f.payload[..4].try_into().unwrap()));
            break;
        }
    }
    assert_eq!(reset, Some(ErrorCode::Cancel.code()));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    // Other streams on the connection still work (a window of 0 only blocks bodies, so ask
    // for an answer without one).
    still_serves_with_the_window_open(&mut c);
}

/// After a stream was reset on a window of 0: with the window open again, stream 3 on the
/// same connection gets its answer.
fn still_serves_with_the_window_open(c: &mut H2Conn) {
    let mut out = Vec::new();
    frame::write_settings(
        &mut out,
        &[(kes::http2::SETTINGS_INITIAL_WINDOW_SIZE, 65_535)],
    );
    c.request_bytes(&mut out, 3, "GET", "/version", None);
    c.send(&out);
    assert_eq!(c.responses(&[3])[&3].0, 200);
}

/// A request whose answer waits on a stream window of 0: returns once its HEADERS arrived
/// (the answer is then stalled in the server).
fn stalled_request(c: &mut H2Conn, path: &str) {
    let mut out = Vec::new();
    frame::write_settings(&mut out, &[(kes::http2::SETTINGS_INITIAL_WINDOW_SIZE, 0)]);
    c.request_bytes(&mut out, 1, "GET", path, None);
    c.send(&out);
    loop {
        let f = c.next_stream_frame().expect("the answer's HEADERS");
        if f.header.kind == frame::kind::HEADERS && f.header.stream_id == 1 {
            return;
        }
    }
}

#[test]
fn an_answer_trickled_out_a_byte_at_a_time_is_reset_for_too_little_progress() {
    // A client that keeps its window at 0 and hands out one byte of credit now and then:
    // every byte is progress, but far too little; the stream is judged by the bytes it got
    // out per write timeout, not by whether any byte moved.
    let server = dev_server_with(|o| o.timeouts.write = Duration::from_millis(1500));
    let mut c = h2_connect(server.addr, &server.api_key);
    stalled_request(&mut c, "/v1/status");
    let started = Instant::now();
    let mut got = 0usize;
    let mut last_credit = started;
    let reset = loop {
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "no reset after {:?}: {got} bytes trickled out",
            started.elapsed()
        );
        // One byte of credit every 250 ms.
        if last_credit.elapsed() >= Duration::from_millis(250) {
            let mut wu = Vec::new();
            frame::write_window_update(&mut wu, 1, 1);
            c.send(&wu);
            last_credit = Instant::now();
        }
        match c.poll_frame(Duration::from_millis(50)) {
            Polled::Frame(f) if f.header.kind == frame::kind::DATA => {
                got += f.payload.len();
                assert_eq!(
                    f.header.flags & frame::flag::END_STREAM,
                    0,
                    "the whole answer went out ({got} bytes) without a reset"
                );
            }
            Polled::Frame(f) if f.header.kind == frame::kind::RST_STREAM => {
                break u32::from_be_bytes(f.payload[..4].try_into().unwrap());
            }
            Polled::Frame(_) | Polled::Nothing => {}
            Polled::Closed => panic!("the connection closed"),
        }
    };
    assert_eq!(reset, ErrorCode::Cancel.code());
    assert!(got > 0, "the trickle moved nothing");
    // The connection lives on.
    still_serves_with_the_window_open(&mut c);
}

#[test]
fn stalled_answers_cannot_lock_the_admin_out_at_the_connection_cap() {
    // Every connection the core may hold has an answer stalled on a window of 0, kept alive
    // with 1-byte WINDOW_UPDATEs: they wait only on their clients, so a new connection
    // evicts the one stalled longest instead of being dropped.
    const CAP: usize = 16;
    let server = dev_server_with(|o| o.connections_per_core_max = CAP);
    let (stranger, _) = new_api_key();
    let mut attackers: Vec<H2Conn> = (0..CAP)
        .map(|_| {
            let mut c = h2_connect(server.addr, &stranger);
            stalled_request(&mut c, "/nothing-here");
            c
        })
        .collect();
    for c in &mut attackers {
        let mut wu = Vec::new();
        frame::write_window_update(&mut wu, 1, 1);
        c.send(&wu);
    }
    let started = Instant::now();
    let mut admin = h2_try_connect(server.addr, &server.api_key)
        .unwrap_or_else(|e| panic!("the admin was locked out at the cap: {e}"));
    let mut out = Vec::new();
    admin.request_bytes(&mut out, 1, "GET", "/v1/status", None);
    admin
        .try_send(&out)
        .unwrap_or_else(|e| panic!("the admin's connection was dropped: {e}"));
    let answers = admin.responses(&[1]);
    assert_eq!(answers[&1].0, 200);
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "answered after {waited:?}");
    // The attacker stalled longest made room: its connection is closed.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match attackers[0].poll_frame(Duration::from_millis(200)) {
            Polled::Closed => break,
            Polled::Frame(f) if f.header.kind == frame::kind::GOAWAY => break,
            Polled::Frame(_) | Polled::Nothing => {}
        }
        assert!(
            Instant::now() < deadline,
            "the oldest stalled connection was not evicted"
        );
    }
}

#[test]
fn an_open_header_block_ends_at_the_header_timeout_and_empty_continuations_count() {
    let server = dev_server_with(|o| o.timeouts.header = Duration::from_millis(1000));
    let mut c = h2_connect(server.addr, &server.api_key);
    let mut out = Vec::new();
    c.request_bytes(&mut out, 1, "GET", "/version", None);
    c.send(&out);
    assert_eq!(c.responses(&[1])[&1].0, 200);
    // HEADERS without END_HEADERS, then an empty CONTINUATION every 300 ms: the header
    // timeout runs from the HEADERS frame, whatever follows it.
    let header = |kind, flags| FrameHeader {
        length: 0,
        kind,
        flags,
        stream_id: 3,
    };
    let mut out = Vec::new();
    header(frame::kind::HEADERS, 0).write(&mut out);
    c.send(&out);
    let started = Instant::now();
    loop {
        let mut out = Vec::new();
        header(frame::kind::CONTINUATION, 0).write(&mut out);
        if c.try_send(&out).is_err() {
            break;
        }
        match c.poll_frame(Duration::from_millis(300)) {
            Polled::Closed => break,
            Polled::Frame(f) if f.header.kind == frame::kind::GOAWAY => break,
            Polled::Frame(_) | Polled::Nothing => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "the header block is still open after {:?}",
            started.elapsed()
        );
    }

    // Empty CONTINUATION frames are control frames: a flood of them is cut.
    let mut c = h2_connect(server.addr, &server.api_key);
    let mut out = Vec::new();
    header(frame::kind::HEADERS, 0).write(&mut out);
    for _ in 0..=kes::server::http2::CONTROL_FRAMES_PER_WINDOW_MAX {
        header(frame::kind::CONTINUATION, 0).write(&mut out);
    }
    let _ = c.try_send(&out);
    assert_eq!(c.goaway_code(), Some(ErrorCode::EnhanceYourCalm.code()));
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// `kes server <args>` of this build, or of `binary` (another build, for before/after
/// figures: the wrapper runs it with the arguments meant for this build's kes).
fn kes_server(binary: Option<&str>, args: &[&str]) -> BinServer {
    match binary {
        Some(b) => bin_server_under(&["sh", "-c", "shift; exec \"$0\" \"$@\"", b], args),
        None => bin_server(args),
    }
}

/// Server memory per idle HTTP/2 connection (KiB), after one request on each of `count`
/// connections and a pause past the idle shrink, on the I/O backend `io`.
/// `binary`: another build of kes to measure instead of this one (before/after figures).
fn idle_http2_kib_per_connection(binary: Option<&str>, io: &str, count: usize) -> f64 {
    let server = kes_server(binary, &["--dev", "--cores", "1", "--io", io]);
    let api_key = server.dev_api_key();
    let request = |c: &mut H2Conn| {
        let mut out = Vec::new();
        c.request_bytes(&mut out, 1, "GET", "/v1/status", None);
        c.send(&out);
        assert_eq!(c.responses(&[1])[&1].0, 200);
    };
    // Warm up: the core's first connection sets up what every later one shares.
    let mut warm = h2_connect(server.addr, &api_key);
    request(&mut warm);
    std::thread::sleep(Duration::from_millis(1500));
    let pid = server.child.id();
    let before = rss_kib(pid);
    let held: Vec<H2Conn> = (0..count)
        .map(|_| {
            let mut c = h2_connect(server.addr, &api_key);
            request(&mut c);
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(2000));
    let after = rss_kib(pid);
    drop(held);
    after.saturating_sub(before) as f64 / count as f64
}

#[test]
fn idle_http2_connections_cost_at_most_32_kib_each() {
    // Measured as the issue did: `count` connections (1000 by default), one request each,
    // then idle. KES_IDLE_H2_CONNECTIONS changes the count; KES_BEFORE_BIN=<path to another
    // kes build> measures that one too, in the same run, for before/after figures.
    let before_bin = std::env::var("KES_BEFORE_BIN").ok();
    let count = std::env::var("KES_IDLE_H2_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let limit = raise_fd_limit();
    assert!(
        limit as usize > count + 200,
        "this test needs an open-file limit above {} (ulimit -n is {limit})",
        count + 200
    );
    let mut measured = Vec::new();
    for io in ["epoll", "io_uring"] {
        if let Some(b) = &before_bin {
            let kib = idle_http2_kib_per_connection(Some(b), io, count);
            eprintln!("{io}, {b}: {kib:.1} KiB per idle HTTP/2 connection ({count})");
        }
        let kib = idle_http2_kib_per_connection(None, io, count);
        eprintln!("{io}: {kib:.1} KiB per idle HTTP/2 connection ({count} connections)");
        measured.push((io, kib));
    }
    for (io, kib) in measured {
        assert!(kib <= 32.0, "{io}: {kib:.1} KiB per idle HTTP/2 connection");
    }
}

/// What the attacker saw in [`stall_attack_figures`].
#[derive(Default)]
struct AttackTally {
    resets: usize,
    closed: usize,
}

/// One attacker connection: its stalled stream, the answer's bytes it got, and when it next
/// gives 1 byte of credit.
struct Attacker {
    conn: Option<H2Conn>,
    stream: u32,
    got: usize,
    due: Instant,
}

/// Gives 1 byte of credit to every attacker connection that is due (every 8 s each) and
/// reads what came back to each without waiting. An answer is never let finish: when all but
/// its last 2 bytes arrived (or it was reset), the next request (on a window of 0) goes out
/// and takes the credit from then on, so the connection always has an answer stalled.
fn credit_due(attackers: &mut [Attacker], tally: &mut AttackTally) {
    const BODY_BYTES: usize = "404 page not found\n".len();
    let now = Instant::now();
    for a in attackers.iter_mut() {
        let Some(c) = &mut a.conn else { continue };
        let mut out = Vec::new();
        if a.due <= now {
            a.due = now + Duration::from_secs(8);
            frame::write_window_update(&mut out, a.stream, 1);
            let _ = c.try_send(&out);
        }
        loop {
            let next = match c.poll_frame(Duration::ZERO) {
                Polled::Frame(f) if f.header.stream_id != a.stream => {
                    tally.resets += usize::from(f.header.kind == frame::kind::RST_STREAM);
                    false
                }
                Polled::Frame(f) if f.header.kind == frame::kind::RST_STREAM => {
                    tally.resets += 1;
                    true
                }
                Polled::Frame(f) if f.header.kind == frame::kind::DATA => {
                    a.got += f.payload.len();
                    a.got + 2 >= BODY_BYTES
                }
                Polled::Frame(_) => false,
                Polled::Nothing => break,
                Polled::Closed => {
                    tally.closed += 1;
                    a.conn = None;
                    break;
                }
            };
            if next {
                a.stream += 2;
                a.got = 0;
                out.clear();
                c.request_bytes(&mut out, a.stream, "GET", "/nothing-here", None);
                let _ = c.try_send(&out);
            }
        }
    }
}

/// Finding 1's attack against one build of kes (`binary`, else this one), `--cores 1` at the
/// default cap: `count` connections, each with an answer stalled on a window of 0 and a
/// 1-byte WINDOW_UPDATE every 8 s (from its first second on), asking again before an answer
/// could end (see [`credit_due`]); once all are open, the admin
/// asks for `/v1/status` on a new connection every 2 s for `secs`. Prints the admin's
/// answers, the server's peak RSS growth, the attacker streams reset and connections closed.
fn stall_attack_figures(binary: Option<&str>, count: usize, secs: u64) {
    let server = kes_server(binary, &["--dev", "--cores", "1"]);
    let api_key = server.dev_api_key();
    let (stranger, _) = new_api_key();
    let pid = server.child.id();
    let before = rss_kib(pid);
    let mut tally = AttackTally::default();
    let mut attackers: Vec<Attacker> = Vec::with_capacity(count);
    for i in 0..count {
        let conn = h2_try_connect(server.addr, &stranger).ok().map(|mut c| {
            stalled_request(&mut c, "/nothing-here");
            c
        });
        attackers.push(Attacker {
            conn,
            stream: 1,
            got: 0,
            due: Instant::now() + Duration::from_secs(1),
        });
        if i % 64 == 0 {
            credit_due(&mut attackers, &mut tally);
        }
    }
    let opened = attackers.iter().filter(|a| a.conn.is_some()).count();
    let started = Instant::now();
    let mut peak = rss_kib(pid);
    let (mut asked, mut answered, mut slowest) = (0, 0, Duration::ZERO);
    let mut next_admin = started;
    while started.elapsed() < Duration::from_secs(secs) {
        credit_due(&mut attackers, &mut tally);
        if Instant::now() >= next_admin {
            asked += 1;
            let t = Instant::now();
            let ok = h2_try_connect(server.addr, &api_key).is_ok_and(|mut admin| {
                let mut out = Vec::new();
                admin.request_bytes(&mut out, 1, "GET", "/v1/status", None);
                admin.try_send(&out).is_ok()
                    && matches!(admin.poll_frame(Duration::from_secs(5)), Polled::Frame(_))
            });
            if ok {
                answered += 1;
                slowest = slowest.max(t.elapsed());
            }
            next_admin += Duration::from_secs(2);
        }
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "{}: {opened} attacker connections, then {secs} s: admin answered {answered}/{asked} \
         (slowest {slowest:?}); peak RSS +{} MiB; attacker streams reset {}, \
         connections closed {}",
        binary.unwrap_or("this build"),
        peak.saturating_sub(before) / 1024,
        tally.resets,
        tally.closed,
    );
}

#[test]
#[ignore = "figures, not a check: minutes of 8192 connections"]
fn stall_attack_at_the_default_cap_figures() {
    // KES_ATTACK_CONNECTIONS (8192: one core's cap), KES_ATTACK_SECS (40),
    // KES_BEFORE_BIN=<path to another kes build> runs the same attack against it first.
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let count = env("KES_ATTACK_CONNECTIONS", 8192) as usize;
    let secs = env("KES_ATTACK_SECS", 40);
    assert!(
        raise_fd_limit() as usize > count + 200,
        "this needs an open-file limit above {}",
        count + 200
    );
    if let Ok(b) = std::env::var("KES_BEFORE_BIN") {
        stall_attack_figures(Some(&b), count, secs);
    }
    stall_attack_figures(None, count, secs);
}

/// Context switches of the server's core threads (`kes-core-*`) so far.
fn core_thread_switches(pid: u32) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("kes-core-") {
            continue;
        }
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        for line in status.lines() {
            if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += v.trim().parse::<u64>().unwrap();
            }
        }
    }
    total
}

#[test]
fn idle_cores_sleep_until_work_or_shutdown_arrives() {
    // Idle keep-alive connections over both protocols, then a quiet spell: the core threads
    // must not wake up to poll anything (the shutdown, idle connections). A SIGTERM then
    // still ends every idle connection at once, over HTTP/2 with a GOAWAY.
    let mut server = bin_server(&["--dev", "--cores", "2"]);
    let api_key = server.dev_api_key();
    let mut h1: Vec<RawTls> = (0..8)
        .map(|_| {
            let mut raw = raw_tls(server.addr, Some(&api_key)).unwrap();
            raw.send(b"GET /v1/status HTTP/1.1\r\nHost: kes\r\n\r\n");
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                raw.stream.read_exact(&mut byte).unwrap();
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .expect("a content-length")
                .trim()
                .parse()
                .unwrap();
            let mut body = vec![0u8; length];
            raw.stream.read_exact(&mut body).unwrap();
            raw
        })
        .collect();
    let mut h2: Vec<H2Conn> = (0..4)
        .map(|_| {
            let mut c = h2_connect(server.addr, &api_key);
            let mut out = Vec::new();
            c.request_bytes(&mut out, 1, "GET", "/v1/status", None);
            c.send(&out);
            assert_eq!(c.responses(&[1])[&1].0, 200);
            c
        })
        .collect();
    // Past the one-time shrink of idle buffers (500 ms after the last request).
    std::thread::sleep(Duration::from_millis(1500));
    let pid = server.child.id();
    let before = core_thread_switches(pid);
    std::thread::sleep(Duration::from_secs(3));
    let woke = core_thread_switches(pid) - before;
    // Polling every 50 ms (the shutdown) and every 500 ms per idle connection would be
    // 2 × 60 + 12 × 6 = 192 wake-ups here (the connections spread over both cores).
    assert!(woke <= 6, "idle core threads woke up {woke} times in 3 s");

    let stopped = Instant::now();
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    for c in &mut h2 {
        assert_eq!(c.goaway_code(), Some(ErrorCode::NoError.code()));
    }
    for raw in &mut h1 {
        let mut buf = [0u8; 64];
        // The server closes the idle connection (close_notify or EOF), no answer.
        match raw.stream.read(&mut buf) {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("unexpected bytes on an idle connection: {:?}", &buf[..n]),
        }
    }
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("the server exits");
    assert!(status.success(), "{status:?}");
    assert!(
        stopped.elapsed() < Duration::from_secs(2),
        "idle connections held the shutdown for {:?}",
        stopped.elapsed()
    );
}

/// A header block: the request's pseudo-headers, then `extra` fields, as literals.
fn request_block(method: &str, path: &str, extra: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut block = Vec::new();
    ENC.encode_field(&mut block, b":method", method.as_bytes());
    ENC.encode_field(&mut block, b":scheme", b"https");
    ENC.encode_field(&mut block, b":path", path.as_bytes());
    for (name, value) in extra {
        ENC.encode_field(&mut block, name, value);
    }
    block
}

impl H2Conn {
    /// Reads until the server resets stream `id`; its error code, or `None` if nothing came
    /// within the read timeout. Answer frames before the reset are skipped; a GOAWAY fails.
    fn reset_code(&mut self, id: u32) -> Option<u32> {
        while let Some(f) = self.next_frame() {
            match f.header.kind {
                frame::kind::RST_STREAM if f.header.stream_id == id => {
                    return Some(u32::from_be_bytes(f.payload[..4].try_into().unwrap()))
                }
                frame::kind::GOAWAY => panic!(
                    "GOAWAY (code {}) instead of a reset of stream {id}",
                    u32::from_be_bytes(f.payload[4..8].try_into().unwrap())
                ),
                _ => {}
            }
        }
        None
    }

    /// Sends a request without a body on stream `id` and returns the answer's status.
    fn status_of(&mut self, id: u32, method: &str, path: &str) -> u16 {
        let mut out = Vec::new();
        self.request_bytes(&mut out, id, method, path, None);
        self.send(&out);
        self.responses(&[id])[&id].0
    }

    /// Reads every frame that comes within `wait` (counting connection credit); a GOAWAY
    /// fails.
    fn read_for(&mut self, wait: Duration) {
        while let Polled::Frame(f) = self.poll_frame(wait) {
            assert_ne!(f.header.kind, frame::kind::GOAWAY, "{:?}", f.payload);
        }
    }
}

#[test]
fn header_values_with_cr_lf_or_nul_are_malformed() {
    // RFC 9113 §8.2.1: a field value with CR, LF or NUL (or a name with characters no token
    // has) makes the request malformed: RST_STREAM(PROTOCOL_ERROR), the connection lives on.
    let server = dev_server();
    let mut c = h2_connect(server.addr, &server.api_key);
    let bad: [(&[u8], &[u8]); 6] = [
        (b"x-test", b"a\rb"),
        (b"x-test", b"a\nb"),
        (b"x-test", b"a\0b"),
        (b"x-test", b"a\r\nset-cookie: x=1"),
        (b":authority", b"kes\0"),
        (b"x te", b"v"),
    ];
    for (i, field) in bad.iter().enumerate() {
        let id = 1 + 2 * i as u32;
        let mut out = Vec::new();
        frame::write_headers(
            &mut out,
            id,
            &request_block("GET", "/version", &[*field]),
            true,
            16384,
        );
        c.send(&out);
        assert_eq!(
            c.reset_code(id),
            Some(ErrorCode::ProtocolError.code()),
            "field {:?}: {:?} was not refused",
            String::from_utf8_lossy(field.0),
            String::from_utf8_lossy(field.1)
        );
    }
    assert_eq!(c.status_of(13, "GET", "/version"), 200);
}

#[test]
fn frames_on_closed_streams_get_stream_closed() {
    // h2spec 5.1 #8, #11 and 6.1 #2: DATA on a stream that is closed, or half-closed by the
    // client, is a stream error STREAM_CLOSED, whether or not the route reads a body.
    let server = dev_server();
    let mut c = h2_connect(server.addr, &server.api_key);
    // Closed: answered, both sides ended; half-closed by the client (END_STREAM on its
    // HEADERS); reset by the client. Then DATA on each.
    assert_eq!(c.status_of(1, "GET", "/version"), 200);
    let mut half_closed = Vec::new();
    c.request_bytes(&mut half_closed, 3, "GET", "/version", None);
    let mut reset = Vec::new();
    let block = request_block("GET", "/version", &[]);
    frame::write_headers(&mut reset, 5, &block, false, 16384);
    frame::write_rst_stream(&mut reset, 5, ErrorCode::Cancel);
    let cases = [
        (1, Vec::new(), "DATA on closed stream 1"),
        (3, half_closed, "DATA after END_STREAM on stream 3"),
        (5, reset, "DATA after the client's RST_STREAM on stream 5"),
    ];
    for (id, mut out, what) in cases {
        frame::write_data(&mut out, id, b"x", true);
        c.send(&out);
        assert_eq!(
            c.reset_code(id),
            Some(ErrorCode::StreamClosed.code()),
            "{what}"
        );
    }
    assert_eq!(c.status_of(7, "GET", "/version"), 200);
}

#[test]
fn a_content_length_that_does_not_match_the_data_is_a_stream_error() {
    // h2spec 8.1.2.6 #1, #2: content-length against one DATA frame, and against several; on
    // a route that does not read a body (answered before the DATA comes) as on one that does.
    let server = dev_server();
    let mut c = h2_connect(server.addr, &server.api_key);
    let cases: [(&str, &str, &[&[u8]]); 6] = [
        ("GET", "/version", &[b"test"]),
        ("GET", "/version", &[b"test", b"test"]),
        // As h2spec sends them: a 405, answered as the HEADERS arrive.
        ("POST", "/version", &[b"test"]),
        ("POST", "/version", &[b"test", b"test"]),
        ("POST", "/v1/key/generate/cl", &[b"test"]),
        ("POST", "/v1/key/generate/cl", &[b"{}", b"{}"]),
    ];
    for (i, (method, path, frames)) in cases.iter().enumerate() {
        let id = 1 + 2 * i as u32;
        let mut out = Vec::new();
        let block = request_block(method, path, &[(b"content-length", b"1")]);
        frame::write_headers(&mut out, id, &block, false, 16384);
        if *method == "GET" {
            c.send(&out);
            out.clear();
            assert_eq!(c.responses(&[id])[&id].0, 200);
        }
        for (j, data) in frames.iter().enumerate() {
            frame::write_data(&mut out, id, data, j + 1 == frames.len());
        }
        c.send(&out);
        assert_eq!(
            c.reset_code(id),
            Some(ErrorCode::ProtocolError.code()),
            "{method} {path}: content-length 1 with DATA of {} bytes",
            frames.iter().map(|d| d.len()).sum::<usize>()
        );
    }
    assert_eq!(c.status_of(13, "GET", "/version"), 200);
}

/// A keystore whose reads wait until the test opens its gate, so that handlers reading a key
/// stay parked (each waits at most 30 s).
#[derive(Default)]
struct Gate {
    open: std::sync::Mutex<bool>,
    changed: std::sync::Condvar,
}

impl Gate {
    fn set(&self, open: bool) {
        *self.open.lock().unwrap() = open;
        self.changed.notify_all();
    }
}

struct GatedStore {
    gate: Arc<Gate>,
    inner: kes::keystore::mem::MemStore,
}

impl kes::keystore::KeyStore for GatedStore {
    fn display_name(&self) -> String {
        "Gated".into()
    }
    fn status(&self) -> Result<Duration, kes::keystore::StoreError> {
        self.inner.status()
    }
    fn create(&self, name: &str, value: &[u8]) -> Result<(), kes::keystore::StoreError> {
        self.inner.create(name, value)
    }
    fn get(&self, name: &str) -> Result<kes::secret::SecretVec, kes::keystore::StoreError> {
        let open = self.gate.open.lock().unwrap();
        let _open = self
            .gate
            .changed
            .wait_timeout_while(open, Duration::from_secs(30), |open| !*open)
            .unwrap();
        self.inner.get(name)
    }
    fn delete(&self, name: &str) -> Result<(), kes::keystore::StoreError> {
        self.inner.delete(name)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, kes::keystore::StoreError> {
        self.inner.list(prefix)
    }
}

/// A dev server whose keystore reads wait for `gate`.
fn gated_server(gate: &Arc<Gate>) -> TestServer {
    let gate = gate.clone();
    dev_server_with(move |o| {
        Arc::get_mut(&mut o.shared)
            .expect("the shared state is not shared yet")
            .keystore = Arc::new(GatedStore {
            gate,
            inner: kes::keystore::mem::MemStore::new(),
        });
    })
}

#[test]
fn a_second_reset_of_a_parked_stream_keeps_it_counted() {
    // A stream whose handler waits on the keystore, reset twice by the client, still counts
    // against the 250 concurrent streams until its handler finishes.
    let gate = Arc::new(Gate::default());
    let server = gated_server(&gate);
    let mut c = h2_connect(server.addr, &server.api_key);
    let mut out = Vec::new();
    c.request_bytes(&mut out, 1, "GET", "/v1/key/describe/parked", None);
    // 249 more streams whose bodies never come: 250 open.
    let block = request_block("POST", "/v1/key/generate/waiting", &[]);
    for i in 1..250u32 {
        frame::write_headers(&mut out, 1 + 2 * i, &block, false, 16384);
    }
    frame::write_rst_stream(&mut out, 1, ErrorCode::Cancel);
    frame::write_rst_stream(&mut out, 1, ErrorCode::Cancel);
    c.request_bytes(&mut out, 501, "GET", "/version", None);
    c.send(&out);
    let mut seen = None;
    while let Some(f) = c.next_stream_frame() {
        if f.header.stream_id == 501
            && matches!(
                f.header.kind,
                frame::kind::RST_STREAM | frame::kind::HEADERS
            )
        {
            seen = Some(f);
            break;
        }
    }
    gate.set(true);
    let f = seen.expect("no answer to stream 501");
    assert_eq!(
        f.header.kind,
        frame::kind::RST_STREAM,
        "stream 501 was served beside 249 open streams and a parked handler"
    );
    assert_eq!(
        u32::from_be_bytes(f.payload[..4].try_into().unwrap()),
        ErrorCode::RefusedStream.code()
    );
}

/// Bodies the server lets one connection hold at once (`CONNECTION_BODY_BYTES_MAX`).
const CONNECTION_BODY_BUDGET: i64 = 4 << 20;

#[test]
fn bodies_held_by_a_connection_stay_within_its_budget() {
    let gate = Arc::new(Gate::default());
    let server = gated_server(&gate);
    // ~900 KB bodies (under the 1 MB route limit); their handlers wait on the keystore.
    let body = format!(r#"{{"plaintext":"{}"}}"#, "A".repeat(899_996));
    let body = body.as_bytes();
    let send_body = |c: &mut H2Conn, id: u32| {
        let mut out = Vec::new();
        let block = request_block("POST", "/v1/key/encrypt/held", &[]);
        frame::write_headers(&mut out, id, &block, false, 16384);
        let chunks: Vec<&[u8]> = body.chunks(16384).collect();
        for (j, chunk) in chunks.iter().enumerate() {
            frame::write_data(&mut out, id, chunk, j + 1 == chunks.len());
        }
        let _ = c.tls.write_all(&out).and_then(|_| c.tls.flush());
    };

    // A client that keeps to its connection window: it may send what the server credits.
    let mut c = h2_connect(server.addr, &server.api_key);
    c.read_for(Duration::from_millis(500));
    let mut sent = Vec::new();
    for i in 0..6u32 {
        let window = 65_535 + c.credit - (sent.len() * body.len()) as i64;
        if window < body.len() as i64 {
            break;
        }
        send_body(&mut c, 1 + 2 * i);
        sent.push(1 + 2 * i);
    }
    // While the handlers wait, the bodies are held: no credit for them comes back.
    c.read_for(Duration::from_secs(1));
    let held = (sent.len() * body.len()) as i64;
    let window = 65_535 + c.credit - held;
    assert!(
        held + window <= CONNECTION_BODY_BUDGET,
        "the connection holds {held} bytes of bodies and was offered {window} more"
    );
    assert!(sent.len() >= 2, "only {} bodies fit", sent.len());

    // Once the handlers are done with them, the credit comes back: the rest goes through.
    gate.set(true);
    let answers = c.responses(&sent);
    assert!(answers.values().all(|(status, _)| *status == 404));
    let started = Instant::now();
    while 65_535 + c.credit - held < 2 * body.len() as i64 {
        c.read_for(Duration::from_millis(200));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no credit came back for consumed bodies (window {})",
            65_535 + c.credit - held
        );
    }
    let more = [101, 103];
    for id in more {
        send_body(&mut c, id);
    }
    assert!(c
        .responses(&more)
        .values()
        .all(|(status, _)| *status == 404));

    // A client that ignores the window is stopped at the budget.
    gate.set(false);
    let mut c = h2_connect(server.addr, &server.api_key);
    for i in 0..6u32 {
        send_body(&mut c, 1 + 2 * i);
    }
    let code = c.goaway_code();
    gate.set(true);
    assert_eq!(code, Some(ErrorCode::FlowControlError.code()));
}

/// The server process's anonymous resident memory (`RssAnon`), in bytes.
fn rss_anon(pid: u32) -> i64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: i64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon in /proc/<pid>/status");
    kb * 1024
}

/// Live heap allocations of the server (`kes_system_mem_heap_objects`).
fn heap_objects(server: &BinServer, api_key: &str) -> i64 {
    heap_metric(server, api_key, "kes_system_mem_heap_objects")
}

/// Live heap bytes of a `kes` binary (its counting allocator; Go's `HeapAlloc`).
fn heap_bytes(server: &BinServer, api_key: &str) -> i64 {
    heap_metric(server, api_key, "kes_system_mem_heap_used")
}

fn heap_metric(server: &BinServer, api_key: &str, name: &str) -> i64 {
    let mut client = client_for(&format!("https://{}", server.addr), api_key);
    let metrics = client.request("GET", "/v1/metrics", None, &[]).unwrap();
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{name} in /v1/metrics")) as i64
}

/// Opens an unauthenticated connection that holds 250 streams on a zero window, each with
/// the same 4000-byte `:path` (indexed once by HPACK, then one byte per stream); returns
/// once all 250 (404) answers' HEADERS arrived.
fn hold_streams_on_a_closed_window(addr: SocketAddr, api_key: &str) -> H2Conn {
    let mut c = h2_connect(addr, api_key);
    let mut out = Vec::new();
    frame::write_settings(&mut out, &[(kes::http2::SETTINGS_INITIAL_WINDOW_SIZE, 0)]);
    let mut first = vec![0x82, 0x87, 0x44, 0x7f, 0xa1, 0x1e]; // GET, https, :path indexed
    first.push(b'/');
    first.extend_from_slice(&[b'p'; 3999]);
    frame::write_headers(&mut out, 1, &first, true, 16384);
    for i in 1..250u32 {
        frame::write_headers(&mut out, 1 + 2 * i, &[0x82, 0x87, 0x80 | 62], true, 16384);
    }
    c.send(&out);
    let mut answered = 0;
    while answered < 250 {
        let f = c.next_stream_frame().expect("the answers' HEADERS");
        assert_ne!(f.header.kind, frame::kind::RST_STREAM, "{f:?}");
        if f.header.kind == frame::kind::HEADERS {
            answered += 1;
        }
    }
    c
}

#[test]
fn streams_held_on_a_closed_window_pin_little_memory() {
    // A separate process, so that its memory is the server's alone. Measured per connection
    // over CONNECTIONS: while 250 streams wait on a zero window, and once they finished and
    // the connection idles (then it holds no more heap objects than a connection that made
    // one request). Prints the figures (`--nocapture`).
    const CONNECTIONS: usize = 24;
    let server = bin_server(&["--dev", "--cores", "1"]);
    let admin = server.dev_api_key();
    let (stranger, _) = new_api_key();
    // Warm-up: one attacking connection, to its end, so that the allocator's arena is grown.
    drop(hold_streams_on_a_closed_window(server.addr, &stranger));
    std::thread::sleep(Duration::from_millis(500));
    let objects_before = heap_objects(&server, &admin);
    // Live heap bytes, not resident memory (which moves with the allocator's history).
    let heap_before = heap_bytes(&server, &admin);
    let mut held: Vec<H2Conn> = (0..CONNECTIONS)
        .map(|_| hold_streams_on_a_closed_window(server.addr, &stranger))
        .collect();
    let held_bytes = (heap_bytes(&server, &admin) - heap_before) / CONNECTIONS as i64;
    // The client opens its window: every answer goes out, the streams end.
    for c in &mut held {
        let mut out = Vec::new();
        frame::write_settings(
            &mut out,
            &[(kes::http2::SETTINGS_INITIAL_WINDOW_SIZE, 65_535)],
        );
        c.send(&out);
        let mut ended = 0;
        while ended < 250 {
            let f = c.next_stream_frame().expect("the answers' bodies");
            if f.header.kind == frame::kind::DATA && f.header.flags & frame::flag::END_STREAM != 0 {
                ended += 1;
            }
        }
    }
    std::thread::sleep(Duration::from_millis(1500));
    let objects_after = heap_objects(&server, &admin);
    let idle_objects = (objects_after - objects_before) / CONNECTIONS as i64;
    // The same number of connections that made one request each, idle as long.
    let plain: Vec<H2Conn> = (0..CONNECTIONS)
        .map(|_| {
            let mut c = h2_connect(server.addr, &stranger);
            assert_eq!(c.status_of(1, "GET", "/nothing-here"), 404);
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let plain_objects = (heap_objects(&server, &admin) - objects_after) / CONNECTIONS as i64;
    eprintln!(
        "per connection: {} KiB while 250 streams are held; {idle_objects} heap objects once \
         idle (a connection after one request: {plain_objects})",
        held_bytes / 1024
    );
    assert!(
        held_bytes < 256 * 1024,
        "{} KiB per connection while its streams are held",
        held_bytes / 1024
    );
    assert!(
        idle_objects <= plain_objects + 8,
        "an idle connection keeps {idle_objects} heap objects after holding 250 streams, \
         {plain_objects} after one request"
    );
    drop((held, plain));
}

#[test]
fn request_bodies_pin_at_most_the_connection_budget() {
    // One authorised connection sends 40 bodies of ~1 MB that never end (held until the
    // route timeout), keeping to the flow-control windows: the server's memory grows by the
    // connection's body budget at most, not by what was sent. A separate process, so that
    // its memory is the server's alone; prints the figure (`--nocapture`).
    const STREAMS: u32 = 40;
    let server = bin_server(&["--dev", "--cores", "1"]);
    let admin = server.dev_api_key();
    let pid = server.child.id();
    let mut c = h2_connect(server.addr, &admin);
    c.read_for(Duration::from_millis(300));
    let rss_before = rss_anon(pid);
    let chunk = vec![b'A'; 16384];
    let block = request_block("POST", "/v1/key/encrypt/held", &[]);
    let mut sent: i64 = 0;
    'streams: for i in 0..STREAMS {
        let id = 1 + 2 * i;
        let mut out = Vec::new();
        frame::write_headers(&mut out, id, &block, false, 16384);
        c.send(&out);
        for _ in 0..60 {
            // 60 × 16 KiB: just under the 1 MB route limit.
            let mut waited = 0;
            while 65_535 + c.credit - sent < chunk.len() as i64 {
                if waited == 3 {
                    break 'streams; // no credit for 3 × 300 ms: the window stays shut
                }
                c.read_for(Duration::from_millis(300));
                waited += 1;
            }
            let mut out = Vec::new();
            frame::write_data(&mut out, id, &chunk, false);
            c.send(&out);
            sent += chunk.len() as i64;
        }
    }
    c.read_for(Duration::from_millis(300));
    let grown = rss_anon(pid) - rss_before;
    eprintln!(
        "one connection sent {} KiB of unfinished bodies; server memory grew by {} KiB",
        sent / 1024,
        grown / 1024
    );
    assert!(
        grown < 2 * CONNECTION_BODY_BUDGET,
        "{} KiB held for one connection ({} KiB of bodies sent)",
        grown / 1024,
        sent / 1024
    );
}
