//! Hostile clients on loopback, each cut off by a limit while a well-behaved client keeps
//! being served; a SIGKILL storm during key creation; secrets never in output.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .map(|v| v.trim().trim_end_matches("kB").trim().parse().unwrap())
        .unwrap()
}

/// The well-behaved client still gets answers: 20 requests on one connection, each one
/// answered 200. No speed is asserted (the machine may be busy); the client's timeout only
/// bounds a hung test.
fn assert_served(server: &TestServer) {
    let mut c = server.client();
    for i in 0..20 {
        let resp = c
            .request("GET", "/v1/status", None, &[])
            .unwrap_or_else(|e| panic!("request {i} of the well-behaved client: {e}"));
        assert_eq!(resp.status, 200, "request {i}");
    }
}

#[test]
fn slowloris_stalled_handshakes_and_silent_clients_are_cut_off() {
    let server = dev_server_with(|o| {
        o.timeouts.header = Duration::from_millis(700);
        o.timeouts.idle = Duration::from_secs(2);
    });
    // Slowloris: one byte of a request head every 200 ms, far past the head deadline.
    let mut slow = raw_tls(server.addr, Some(&server.api_key)).unwrap();
    let head =
        b"GET /v1/status HTTP/1.1\r\nHost: kes\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let started = Instant::now();
    let mut cut = false;
    for b in head.iter() {
        if slow
            .stream
            .write_all(&[*b])
            .and_then(|_| slow.stream.flush())
            .is_err()
        {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let out = slow.read_all(Duration::from_secs(3));
    assert!(
        cut || String::from_utf8_lossy(&out).starts_with("HTTP/1.1 408"),
        "slowloris was not cut off"
    );

    // Stalled TLS handshakes: TCP connections that never send a ClientHello.
    let stalled: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    assert_served(&server);
    std::thread::sleep(Duration::from_millis(1200));
    for mut s in stalled {
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = [0u8; 16];
        assert!(
            matches!(s.read(&mut buf), Ok(0) | Err(_)),
            "a stalled handshake was not closed"
        );
    }

    // Garbage on the TLS port.
    let mut g = TcpStream::connect(server.addr).unwrap();
    g.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0, 1, 2, 3])
        .unwrap();
    g.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = Vec::new();
    let _ = g.read_to_end(&mut buf);
    assert_served(&server);
}

#[test]
fn header_floods_and_endless_bodies() {
    let server = dev_server_with(|o| o.timeouts.header = Duration::from_millis(700));
    // Many headers.
    let mut raw = raw_tls(server.addr, Some(&server.api_key)).unwrap();
    let mut flood = String::from("GET /v1/status HTTP/1.1\r\n");
    for i in 0..200 {
        flood.push_str(&format!("X-{i}: v\r\n"));
    }
    flood.push_str("\r\n");
    raw.send(flood.as_bytes());
    assert!(
        String::from_utf8_lossy(&raw.read_all(Duration::from_secs(3))).starts_with("HTTP/1.1 431")
    );

    // A chunked body that never ends: cut off by the body deadline (route timeout) or size.
    let mut raw = raw_tls(server.addr, Some(&server.api_key)).unwrap();
    raw.send(
        b"POST /v1/key/generate/x HTTP/1.1\r\nHost: kes\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    let chunk = format!("{:x}\r\n{}\r\n", 100_000, "a".repeat(100_000));
    let mut refused = false;
    for _ in 0..20 {
        if raw.stream.write_all(chunk.as_bytes()).is_err() {
            refused = true;
            break;
        }
    }
    let text = String::from_utf8_lossy(&raw.read_all(Duration::from_secs(5))).into_owned();
    assert!(refused || text.starts_with("HTTP/1.1 413"), "{text}");
    assert_served(&server);
}

#[test]
fn the_per_core_connection_cap_holds_and_memory_stays_bounded() {
    let server = dev_server_with(|o| o.connections_per_core_max = 64);
    let before = rss_kb();
    let mut held = Vec::new();
    for _ in 0..64 {
        held.push(raw_tls(server.addr, Some(&server.api_key)).unwrap());
    }
    // The 65th connection gets in by evicting the oldest silent one: the cap holds and
    // silent connections cannot lock anybody out.
    let mut extra = raw_tls(server.addr, Some(&server.api_key)).expect("admitted at the cap");
    extra.send(b"GET /v1/status HTTP/1.1\r\nHost: kes\r\n\r\n");
    assert_eq!(extra.read_responses(1)[0].0, 200);
    assert!(
        held[0].closed_by_server(Duration::from_secs(2)),
        "the oldest silent connection was not closed"
    );
    assert!(!held[63].closed_by_server(Duration::from_millis(100)));
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    assert_served(&server);

    // Many idle connections (as many as the fd limit allows here) cost bounded memory.
    // Raise the soft fd limit to the hard one: both ends of every connection live here.
    let limit = raise_fd_limit();
    let idle_count = ((limit as usize).saturating_sub(500) / 2).min(10_000);
    eprintln!("holding {idle_count} idle connections (fd limit {limit})");
    let server = dev_server();
    let idle: Vec<TcpStream> = (0..idle_count)
        .filter_map(|_| TcpStream::connect(server.addr).ok())
        .collect();
    assert!(
        idle.len() >= idle_count / 2,
        "only {} connections",
        idle.len()
    );
    assert_served(&server);
    let grown_mb = rss_kb().saturating_sub(before) / 1024;
    assert!(
        grown_mb < 512,
        "RSS grew by {grown_mb} MiB for {} idle connections",
        idle.len()
    );
}

#[test]
fn clients_that_never_read_do_not_block_others() {
    let server = dev_server();
    server
        .client()
        .request("POST", "/v1/key/create/big", None, &[])
        .unwrap();
    // Pipeline many large responses and never read them.
    let mut raw = raw_tls(server.addr, Some(&server.api_key)).unwrap();
    let body = format!(r#"{{"plaintext":"{}"}}"#, B64.encode(vec![7u8; 300_000]));
    let req = format!(
        "POST /v1/key/encrypt/big HTTP/1.1\r\nHost: kes\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw.stream
        .sock
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    for _ in 0..20 {
        if raw.stream.write_all(req.as_bytes()).is_err() {
            break;
        }
    }
    assert_served(&server);
}

use base64::Engine;

#[test]
fn sigkill_during_concurrent_creates_loses_no_acknowledged_key() {
    let tls = tls_files();
    let keys = tempfile::tempdir().unwrap();
    let (api_key, admin) = new_api_key();
    let config_path = tls.dir.path().join("config.yml");
    std::fs::write(&config_path, config_yaml(&tls, &admin, keys.path(), "")).unwrap();
    let mut acked: Vec<String> = Vec::new();
    for round in 0..4 {
        let mut server = bin_server(&["--config", config_path.to_str().unwrap()]);
        let endpoint = format!("https://{}", server.addr);
        let writers: Vec<_> = (0..8)
            .map(|t| {
                let (endpoint, api_key) = (endpoint.clone(), api_key.clone());
                std::thread::spawn(move || {
                    let mut ok = Vec::new();
                    let Ok(mut c) = std::panic::catch_unwind(|| client_for(&endpoint, &api_key))
                    else {
                        return ok;
                    };
                    for i in 0..100_000 {
                        let name = format!("r{round}-t{t}-{i}");
                        match c.request("POST", &format!("/v1/key/create/{name}"), None, &[]) {
                            Ok(r) if r.status == 200 => ok.push(name),
                            _ => break,
                        }
                    }
                    ok
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300 + 150 * round));
        server.child.kill().unwrap(); // SIGKILL
        let _ = server.child.wait();
        for w in writers {
            acked.extend(w.join().unwrap());
        }
    }
    assert!(
        acked.len() > 100,
        "too few creates to mean anything: {}",
        acked.len()
    );
    // Restart: every acknowledged key exists and works; nothing truncated or half-written lists.
    let server = bin_server(&["--config", config_path.to_str().unwrap()]);
    let mut c = client_for(&format!("https://{}", server.addr), &api_key);
    let listed = c.request("GET", "/v1/key/list/", None, &[]).unwrap();
    for entry in std::fs::read_dir(keys.path()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.starts_with('.') {
            assert!(
                !body_str(&listed).contains(&format!("\"{name}\"")),
                "temp file {name} listed as a key"
            );
            continue;
        }
        let stored = std::fs::read(keys.path().join(&name)).unwrap();
        kes::crypto::record::decode_record(&stored)
            .unwrap_or_else(|e| panic!("{name} is damaged: {e}"));
    }
    for name in acked.iter().step_by((acked.len() / 200).max(1)) {
        let r = c
            .request("POST", &format!("/v1/key/generate/{name}"), None, &[])
            .unwrap();
        assert_eq!(r.status, 200, "{name}: {}", body_str(&r));
        let body = format!(r#"{{"ciphertext":"{}"}}"#, json_str(&r, "ciphertext"));
        let d = c
            .request(
                "POST",
                &format!("/v1/key/decrypt/{name}"),
                Some(body.as_bytes()),
                &[],
            )
            .unwrap();
        assert_eq!(json_str(&d, "plaintext"), json_str(&r, "plaintext"));
    }
    for name in &acked {
        assert!(
            keys.path().join(name).exists(),
            "acknowledged key {name} was lost"
        );
    }
}

#[test]
fn no_secret_ever_appears_in_output() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let tls = tls_files();
    let keys = tempfile::tempdir().unwrap();
    let (api_key, admin) = new_api_key();
    let config_path = tls.dir.path().join("config.yml");
    std::fs::write(
        &config_path,
        config_yaml(
            &tls,
            &admin,
            keys.path(),
            "log:\n  error: DEBUG\n  audit_all: on\n",
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kes"))
        .args([
            "server",
            "--config",
            config_path.to_str().unwrap(),
            "--addr",
            &format!("127.0.0.1:{}", free_port()),
            "--cores",
            "1",
        ])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("server.err")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.starts_with("API ")) {
            break line
                .split_whitespace()
                .last()
                .unwrap()
                .trim_start_matches("https://")
                .to_string();
        }
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut c = client_for(&format!("https://{addr}"), &api_key);
    let key_material = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let mut secrets = vec![key_material.to_string(), api_key[7..].to_string()];
    c.request(
        "POST",
        "/v1/key/import/s",
        Some(format!(r#"{{"key":"{key_material}","cipher":"AES256"}}"#).as_bytes()),
        &[],
    )
    .unwrap();
    for _ in 0..20 {
        let r = c.request("POST", "/v1/key/generate/s", None, &[]).unwrap();
        secrets.push(json_str(&r, "plaintext"));
        let r = c
            .request(
                "POST",
                "/v1/key/encrypt/s",
                Some(br#"{"plaintext":"c2VjcmV0IHBsYWludGV4dA=="}"#),
                &[],
            )
            .unwrap();
        assert_eq!(r.status, 200);
    }
    secrets.push("c2VjcmV0IHBsYWludGV4dA==".into());
    // Errors too: bad bodies, unknown keys, a broken record.
    c.request(
        "POST",
        "/v1/key/decrypt/s",
        Some(b"{\"ciphertext\":\"AAAA\"}"),
        &[],
    )
    .unwrap();
    std::fs::write(keys.path().join("broken"), key_material).unwrap();
    c.request("GET", "/v1/key/describe/broken", None, &[])
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let _ = child.kill();
    let _ = child.wait();
    let mut output = std::fs::read_to_string(&log).unwrap();
    output.push_str(&std::fs::read_to_string(dir.path().join("server.err")).unwrap());
    assert!(
        output.contains("req.path=/v1/key/generate/s"),
        "audit_all records were written: {output}"
    );
    for s in &secrets {
        assert!(
            !output.contains(s.as_str()),
            "secret {s} appeared in the server's output"
        );
    }
    // Debug of secret types is redacted.
    let key = kes::crypto::KeyVersion::generate(
        kes::crypto::KeyType::Aes256,
        "",
        kes::time::Timestamp::now(),
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    let shown = format!(
        "{key:?} {:?}",
        kes::auth::apikey::ApiKey::parse(&api_key).unwrap()
    );
    assert!(
        !shown.contains(&format!("{:?}", key.key.expose())),
        "{shown}"
    );
    assert!(shown.contains("redacted"), "{shown}");
}
