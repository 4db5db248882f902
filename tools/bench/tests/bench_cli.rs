//! The `kes-bench` binary as a user runs it, against a real kes server on loopback (in this
//! test process, one core, real TLS with an API-key certificate).

use std::process::Command;
use std::time::Duration;

use kes::auth::apikey::ApiKey;
use kes::client::{Client, ClientConfig, Credentials};

struct Server {
    endpoint: String,
    api_key: String,
}

fn server() -> Server {
    let prepared = kes::cli::server::prepare_dev(Some("127.0.0.1:0"), Some(1)).expect("dev");
    let api_key = prepared.api_key.clone().expect("dev API key");
    let running = kes::server::run(prepared.options).expect("server starts");
    let endpoint = format!("https://{}", running.local_addr);
    std::mem::forget(running); // serves until the test process exits
    Server { endpoint, api_key }
}

fn bench(s: &Server, args: &[&str]) -> (i32, String, String) {
    bench_for(s, "1s", args)
}

fn bench_for(s: &Server, duration: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kes-bench"))
        .args(["-k", "-q", "--json", "-c", "4", "-d", duration])
        .args(args)
        .env("KES_SERVER", &s.endpoint)
        .env("KES_API_KEY", &s.api_key)
        .output()
        .expect("kes-bench runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The number after `"name":` in the bench tool's JSON summary.
fn number(json: &str, name: &str) -> f64 {
    let at = json
        .find(&format!("\"{name}\":"))
        .unwrap_or_else(|| panic!("no {name} in {json}"))
        + name.len()
        + 3;
    let end = json[at..]
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or(json.len(), |e| at + e);
    json[at..end].parse().expect("a number")
}

/// A successful run: requests were answered, none failed.
fn assert_clean(json: &str) -> f64 {
    let requests = number(json, "requests");
    assert!(requests > 0.0, "no requests answered: {json}");
    assert!(json.contains("\"errors\":{}"), "errors: {json}");
    assert!(number(json, "p50") > 0.0 && number(json, "p99") >= number(json, "p50"));
    requests
}

fn handshakes(s: &Server, result: &str) -> u64 {
    let mut client = Client::new(ClientConfig {
        endpoints: vec![s.endpoint.clone()],
        credentials: Some(Credentials::ApiKey(ApiKey::parse(&s.api_key).unwrap())),
        insecure: true,
        ca_file: None,
        timeout: Duration::from_secs(10),
    })
    .unwrap();
    let r = client
        .request("GET", "/v1/metrics/detail", None, &[])
        .unwrap();
    let text = String::from_utf8(r.body).unwrap();
    let prefix = format!("kes_tls_handshakes_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in metrics"))
}

#[test]
fn every_operation_runs_clean_in_both_idle_modes() {
    let s = server();
    let (code, out, err) = bench(&s, &["--op", "generate", "--create-key"]);
    assert_eq!(code, 0, "{err}");
    assert_clean(&out);
    for op in [
        "decrypt",
        "encrypt",
        "hmac",
        "describe",
        "status",
        "mix",
        "create-delete",
    ] {
        let (code, out, err) = bench(&s, &["--op", op]);
        assert_eq!(code, 0, "{op}: {err}");
        assert_clean(&out);
    }
    let (code, out, err) = bench(&s, &["--op", "decrypt", "--spin", "-t", "2"]);
    assert_eq!(code, 0, "{err}");
    assert_clean(&out);
}

#[test]
fn open_loop_holds_the_rate() {
    let s = server();
    let (code, out, err) = bench_for(&s, "2s", &["--op", "status", "--rate", "400"]);
    assert_eq!(code, 0, "{err}");
    let requests = assert_clean(&out);
    // 400/s for 2 s: the schedule, not the server, sets the count.
    assert!(
        (640.0..=880.0).contains(&requests),
        "{requests} requests: {out}"
    );
}

#[test]
fn new_connections_with_and_without_resumption() {
    let s = server();
    let (full0, resumed0) = (handshakes(&s, "full"), handshakes(&s, "resumed"));
    let (code, out, err) = bench(&s, &["--op", "status", "--new-connection", "--no-resume"]);
    assert_eq!(code, 0, "{err}");
    let n = assert_clean(&out) as u64;
    let (full1, resumed1) = (handshakes(&s, "full"), handshakes(&s, "resumed"));
    assert!(
        full1 - full0 >= n,
        "{n} requests, {} full handshakes",
        full1 - full0
    );
    assert_eq!(resumed1, resumed0, "--no-resume resumed sessions");

    let (code, out, err) = bench(&s, &["--op", "status", "--new-connection"]);
    assert_eq!(code, 0, "{err}");
    let n = assert_clean(&out) as u64;
    let resumed2 = handshakes(&s, "resumed");
    // Every connection after each connection's first resumes.
    assert!(
        resumed2 - resumed1 + 8 >= n,
        "{n} requests, {} resumed",
        resumed2 - resumed1
    );
}

#[test]
fn clear_errors_for_a_missing_key_and_a_wrong_endpoint() {
    let s = server();
    let (code, _, err) = bench(&s, &["--op", "decrypt", "--key", "no-such-key"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("does not exist") && err.contains("--create-key"),
        "{err}"
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let wrong = Server {
        endpoint: format!("https://{addr}"),
        api_key: s.api_key.clone(),
    };
    let (code, _, err) = bench(&wrong, &["--op", "status"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot connect"), "{err}");
}
