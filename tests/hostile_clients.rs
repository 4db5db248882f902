//! Findings of the second hostile review (issue 12) against a real server: response
//! splitting (#2), memory pinned before authorisation (#3), log subscribers that send (#5),
//! silent connections at the cap (#6), memory after connection bursts (#11) and answers to
//! over-limit bodies that the client must be able to read (#14).

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;

/// Resident memory of a process, in KiB.
fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .map(|v| v.trim().trim_end_matches("kB").trim().parse().unwrap())
        .unwrap()
}

/// #2: a path that needs cleaning is redirected with a percent-encoded `Location`; a
/// decoded CR LF never reaches a header, and exactly one response comes back.
#[test]
fn redirects_never_split_the_response() {
    let server = dev_server();
    let mut raw = raw_tls(server.addr, Some(&server.api_key)).unwrap();
    raw.send(
        b"GET /v1//status%0d%0aSet-Cookie:%20evil=1%0d%0a%0d%0aHTTP/1.1%20200%20OK HTTP/1.1\r\nHost: kes\r\nConnection: close\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&raw.read_all(Duration::from_secs(5))).into_owned();
    assert!(text.starts_with("HTTP/1.1 301 "), "{text}");
    let head = text.split("\r\n\r\n").next().unwrap();
    assert!(
        head.lines().any(|l| l
            == "Location: /v1/status%0D%0ASet-Cookie:%20evil=1%0D%0A%0D%0AHTTP/1.1%20200%20OK"),
        "{head}"
    );
    assert!(!head.lines().any(|l| l.starts_with("Set-Cookie")), "{head}");
    assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");

    // A tab and a bare LF are escaped too, and the connection stays in sync (a NUL in a
    // path is refused with 400 before routing).
    let mut raw = raw_tls(server.addr, Some(&server.api_key)).unwrap();
    raw.send(b"GET /a/../b%09c%0ad HTTP/1.1\r\nHost: kes\r\n\r\nGET /version HTTP/1.1\r\nHost: kes\r\n\r\n");
    let answers = raw.read_responses(2);
    assert_eq!(answers[0].0, 301);
    assert_eq!(answers[1].0, 200);
}

/// Opens a TLS connection as `api_key`, sends `head` and then `body_bytes` of body, and
/// returns the connection with the status of the answer.
fn send_body(
    addr: std::net::SocketAddr,
    api_key: &str,
    head: &str,
    body_bytes: usize,
) -> (RawTls, u16) {
    let mut raw = raw_tls(addr, Some(api_key)).unwrap();
    raw.stream.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    let mut left = body_bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        if raw.stream.write_all(&chunk[..n]).is_err() {
            break;
        }
        left -= n;
    }
    let _ = raw.stream.flush();
    let mut buf = [0u8; 512];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match raw.stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let status = String::from_utf8_lossy(&got)
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (raw, status)
}

/// #3: bodies sent to a route the client may not use are not buffered, and idle
/// connections give back what earlier requests grew: 1000 connections that each sent a
/// 1 MB body (and 1000 that sent 60 KB and stay open) add less than 64 MiB.
#[test]
fn unauthorised_bodies_pin_no_memory() {
    raise_fd_limit();
    let server = bin_server(&["--dev"]);
    let pid = server.child.id();
    let (stranger, _) = new_api_key();
    // Warm up (first-use allocations of the server).
    let (_, status) = send_body(
        server.addr,
        &stranger,
        "POST /v1/key/generate/k HTTP/1.1\r\nHost: kes\r\nContent-Length: 10\r\n\r\n",
        10,
    );
    assert_eq!(status, 403);
    let before = rss_kb(pid);

    let mut held = Vec::new();
    for _ in 0..1000 {
        let (raw, status) = send_body(
            server.addr,
            &stranger,
            "POST /v1/key/generate/k HTTP/1.1\r\nHost: kes\r\nContent-Length: 1048576\r\n\r\n",
            1 << 20,
        );
        assert_eq!(status, 403);
        held.push(raw);
    }
    for _ in 0..1000 {
        let (raw, status) = send_body(
            server.addr,
            &stranger,
            "POST /v1/key/encrypt/k HTTP/1.1\r\nHost: kes\r\nContent-Length: 61440\r\n\r\n",
            60 * 1024,
        );
        assert_eq!(status, 403);
        held.push(raw);
    }
    // Idle connections shrink their buffers after a moment without requests.
    std::thread::sleep(Duration::from_millis(1500));
    let grown_kb = rss_kb(pid).saturating_sub(before);
    eprintln!("RSS before {before} KiB, with 2000 connections +{grown_kb} KiB");
    assert!(
        grown_kb < 64 * 1024,
        "2000 connections that sent unauthorised bodies pinned {grown_kb} KiB"
    );
    // The small-body connections are still usable (their bodies were drained, not kept).
    let last = held.last_mut().unwrap();
    last.send(b"GET /version HTTP/1.1\r\nHost: kes\r\n\r\n");
    assert_eq!(last.read_responses(1)[0].0, 200);
}

/// The server's live heap bytes (`kes_system_mem_heap_used`: the `kes` binary counts its
/// allocations, as Go's `HeapAlloc`), read as the dev admin over a connection of its own.
fn live_heap_bytes(server: &common::BinServer) -> u64 {
    let mut raw = raw_tls(server.addr, Some(&server.dev_api_key())).unwrap();
    raw.send(b"GET /v1/metrics HTTP/1.1\r\nHost: kes\r\n\r\n");
    let (status, body) = raw.read_responses(1).remove(0);
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix("kes_system_mem_heap_used "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("kes_system_mem_heap_used in /v1/metrics") as u64
}

/// Live heap per connection of `n` connections that `open` makes to a fresh
/// `kes server --dev --cores 1` and holds, measured once the server has let them go idle.
/// Heap bytes, not resident memory: what the allocator keeps of freed memory varies with
/// the machine's load and history (RSS moved by ±15 KiB per connection between runs of the
/// same binary), the live heap does not. Run
/// `cargo test --test hostile_clients refused_bodies -- --nocapture` for the figures.
fn kib_per_held_connection(
    n: usize,
    open: impl Fn(std::net::SocketAddr, &str) -> (RawTls, u16),
    want_status: u16,
) -> f64 {
    let server = bin_server(&["--dev", "--cores", "1"]);
    let (stranger, _) = new_api_key();
    // Warm up (first-use allocations of the server).
    for _ in 0..4 {
        let _ = open(server.addr, &stranger);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let before = live_heap_bytes(&server);
    let held: Vec<RawTls> = (0..n)
        .map(|_| {
            let (raw, status) = open(server.addr, &stranger);
            assert_eq!(status, want_status);
            raw
        })
        .collect();
    // Past the idle shrink (500 ms) and the lingering close (1 s), with room for a loaded
    // machine: wait until the heap stops shrinking, at most 10 s.
    let mut grown = u64::MAX;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(500));
        let now = live_heap_bytes(&server).saturating_sub(before);
        if now >= grown {
            break;
        }
        grown = now;
    }
    drop(held);
    grown as f64 / 1024.0 / n as f64
}

/// Issue 20 #9: connections of an unknown identity that had a body refused (403) and stay
/// open give back what draining it grew (rustls's record buffer included), as any idle
/// connection does: 200 connections each, live heap per connection at most 8 KiB above an
/// idle connection's and under 48 KiB. A 60 KB body is read and dropped (the connection stays
/// usable); a 1 MB one is answered and the server closes after lingering.
#[test]
fn refused_bodies_leave_idle_connections_small() {
    raise_fd_limit();
    const CONNECTIONS: usize = 200;
    const PER_CONNECTION_KIB_MAX: f64 = 48.0;
    const ABOVE_IDLE_KIB_MAX: f64 = 8.0;
    let idle = kib_per_held_connection(
        CONNECTIONS,
        |addr, key| send_body(addr, key, "GET /version HTTP/1.1\r\nHost: kes\r\n\r\n", 0),
        200,
    );
    let drained = kib_per_held_connection(
        CONNECTIONS,
        |addr, key| {
            send_body(
                addr,
                key,
                "POST /v1/key/generate/k HTTP/1.1\r\nHost: kes\r\nContent-Length: 61440\r\n\r\n",
                60 * 1024,
            )
        },
        403,
    );
    let refused = kib_per_held_connection(
        CONNECTIONS,
        |addr, key| {
            send_body(
                addr,
                key,
                "POST /v1/key/generate/k HTTP/1.1\r\nHost: kes\r\nContent-Length: 1048576\r\n\r\n",
                1 << 20,
            )
        },
        403,
    );
    eprintln!(
        "KiB per held connection ({CONNECTIONS}): idle after GET /version {idle:.1}, \
         after a drained 60 KB body {drained:.1}, after a refused 1 MB body {refused:.1}"
    );
    for (what, kib) in [
        ("a drained 60 KB body", drained),
        ("a refused 1 MB body", refused),
    ] {
        assert!(
            kib < PER_CONNECTION_KIB_MAX && kib <= idle + ABOVE_IDLE_KIB_MAX,
            "{kib:.1} KiB per connection after {what} (idle: {idle:.1} KiB)"
        );
    }
}

/// Encrypts and sends `data` without reading anything first, as an HTTP client that writes
/// its whole request before it looks at the answer (Go's, curl) does.
fn write_without_reading(raw: &mut RawTls, data: &[u8]) -> std::io::Result<()> {
    let mut pos = 0;
    while pos < data.len() {
        pos += raw.stream.conn.writer().write(&data[pos..])?;
        while raw.stream.conn.wants_write() {
            raw.stream.conn.write_tls(&mut raw.stream.sock)?;
        }
    }
    Ok(())
}

/// #14: a body over the route's limit gets a 413 the client can read, even while it is
/// still sending (no reset), and a declared over-limit length too.
#[test]
fn over_limit_bodies_get_a_readable_413() {
    let server = dev_server();
    for head in [
        // Declared too large: answered at once while the client sends on.
        "PUT /v1/key/hmac/k HTTP/1.1\r\nHost: kes\r\nContent-Length: 2097152\r\n\r\n",
        // Chunked past the limit.
        "PUT /v1/key/hmac/k HTTP/1.1\r\nHost: kes\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        let chunked = head.contains("chunked");
        let mut raw = raw_tls(server.addr, Some(&server.api_key)).unwrap();
        write_without_reading(&mut raw, head.as_bytes()).unwrap();
        let payload = vec![b'a'; 64 * 1024];
        let mut framed = Vec::new();
        if chunked {
            framed.extend_from_slice(format!("{:x}\r\n", payload.len()).as_bytes());
            framed.extend_from_slice(&payload);
            framed.extend_from_slice(b"\r\n");
        } else {
            framed = payload;
        }
        // 2 MiB (twice the limit) at the pace of a real network: the server has answered
        // and closed its side long before the client is done.
        let mut sent = 0;
        for _ in 0..(2 << 20) / (64 * 1024) {
            if write_without_reading(&mut raw, &framed).is_err() {
                break;
            }
            sent += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = raw.stream.flush();
        // The client could send its whole body (the server drained it instead of resetting
        // the connection), then read the answer.
        assert_eq!(
            sent,
            (2 << 20) / (64 * 1024),
            "chunked={chunked}: a write failed"
        );
        let text = String::from_utf8_lossy(&raw.read_all(Duration::from_secs(5))).into_owned();
        assert!(
            text.starts_with("HTTP/1.1 413 "),
            "chunked={chunked}: after {sent} writes the client read {text:?}"
        );
        assert!(text.contains("Connection: close"), "{text}");
    }
}

/// #5: a log subscriber that sends bytes it never should cannot grow server memory.
#[test]
fn log_subscribers_cannot_grow_memory_by_sending() {
    let server = bin_server(&["--dev"]);
    let pid = server.child.id();
    let api_key = server.dev_api_key();
    let mut raw = raw_tls(server.addr, Some(&api_key)).unwrap();
    raw.send(b"GET /v1/log/audit HTTP/1.1\r\nHost: kes\r\n\r\n");
    let mut buf = [0u8; 256];
    let n = raw.stream.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200 OK"));
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_kb(pid);
    let junk = vec![b'x'; 64 * 1024];
    for _ in 0..1024 {
        raw.stream.write_all(&junk).unwrap(); // 64 MiB in all
    }
    raw.stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let grown_kb = rss_kb(pid).saturating_sub(before);
    assert!(
        grown_kb < 16 * 1024,
        "64 MiB sent by a log subscriber grew the server by {grown_kb} KiB"
    );
    // The stream still works: an audited event arrives.
    let mut admin = client_for(&format!("https://{}", server.addr), &api_key);
    assert_eq!(
        admin
            .request("POST", "/v1/key/create/logged", None, &[])
            .unwrap()
            .status,
        200
    );
    raw.stream
        .sock
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&seen).contains("logged") && Instant::now() < deadline {
        match raw.stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.contains("/v1/key/create/logged"), "{seen}");
}

/// #6: 8200 connections that complete the TLS handshake and then say nothing, on one core
/// (more than its cap of 8192), do not lock the admin out: it is served within a second.
#[test]
fn silent_connections_cannot_lock_out_the_admin() {
    let limit = raise_fd_limit();
    assert!(
        limit >= 8200 + 200,
        "this test needs an open-file hard limit of at least 8400 (ulimit -Hn is {limit})"
    );
    let server = bin_server(&["--dev"]);
    let api_key = server.dev_api_key();
    let (stranger, _) = new_api_key();
    let config = kes::client::rustls_config(&kes::client::ClientConfig {
        endpoints: Vec::new(),
        credentials: Some(kes::client::Credentials::ApiKey(
            kes::auth::apikey::ApiKey::parse(&stranger).unwrap(),
        )),
        insecure: true,
        ca_file: None,
        timeout: Duration::from_secs(10),
    })
    .unwrap();
    let addr = server.addr;
    let started = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let config = config.clone();
            std::thread::spawn(move || {
                let mut held = Vec::new();
                for _ in 0..2050 {
                    let Ok(tcp) = std::net::TcpStream::connect(addr) else {
                        continue;
                    };
                    let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
                    let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
                    let mut tls = rustls::StreamOwned::new(conn, tcp);
                    let mut ok = true;
                    while tls.conn.is_handshaking() {
                        if tls.conn.complete_io(&mut tls.sock).is_err() {
                            ok = false;
                            break;
                        }
                    }
                    if ok {
                        held.push(tls);
                    }
                }
                held
            })
        })
        .collect();
    let silent: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    eprintln!(
        "{} silent TLS connections in {:?}",
        silent.len(),
        started.elapsed()
    );
    let started = Instant::now();
    let mut admin = client_for(&format!("https://{}", server.addr), &api_key);
    let status = admin
        .request("GET", "/v1/status", None, &[])
        .map(|r| r.status);
    let took = started.elapsed();
    assert_eq!(status.ok(), Some(200), "the admin was locked out");
    assert!(took < Duration::from_secs(1), "the admin waited {took:?}");
    drop(silent);
}

/// #11: after bursts of connections close, memory goes back to the OS.
#[test]
fn memory_returns_after_connection_bursts() {
    raise_fd_limit();
    let server = bin_server(&["--dev"]);
    let pid = server.child.id();
    let api_key = server.dev_api_key();
    let base = rss_kb(pid);
    let mut peak = 0;
    for _ in 0..3 {
        let mut burst = Vec::new();
        for _ in 0..1000 {
            let mut raw = raw_tls(server.addr, Some(&api_key)).unwrap();
            raw.send(b"GET /v1/status HTTP/1.1\r\nHost: kes\r\n\r\n");
            burst.push(raw);
        }
        for raw in &mut burst {
            assert_eq!(raw.read_responses(1)[0].0, 200);
        }
        peak = peak.max(rss_kb(pid));
        drop(burst);
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kb(pid);
    eprintln!("RSS: {base} KiB at start, {peak} KiB at the peak of a burst, {after} KiB after");
    assert!(
        after < base + 16 * 1024 && after < peak,
        "memory stayed up after the bursts: {base} → {peak} → {after} KiB"
    );
}
