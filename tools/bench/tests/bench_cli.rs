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
    let mut all = vec!["-c", "4", "-d", duration];
    all.extend_from_slice(args);
    bench_args(s, &all)
}

/// `kes-bench -k -q --json` and `args`, nothing else defaulted.
fn bench_args(s: &Server, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kes-bench"))
        .args(["-k", "-q", "--json"])
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
    handshakes_of(s, &[result])
}

/// The sum of `kes_tls_handshakes_total` for `results`, from one metrics request (whose own
/// connection is counted too).
fn handshakes_of(s: &Server, results: &[&str]) -> u64 {
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
    results
        .iter()
        .map(|result| {
            let prefix = format!("kes_tls_handshakes_total{{result=\"{result}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no {prefix} in metrics"))
        })
        .sum()
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

/// MinIO's client (kms-go over Go's http.Transport, 2 idle connections per host): with more
/// requests in flight than idle connections, most requests dial (and resume) a new TLS
/// connection; one request at a time reuses one connection. The server's handshake counter
/// confirms the dials are real. Counts, not speed: each run goes on until it has answered
/// enough requests (`--min-requests`), however busy the machine is.
#[test]
fn kms_go_model_dials_when_requests_outnumber_idle_connections() {
    let s = server();
    let (code, out, err) = bench(
        &s,
        &["--op", "generate", "--create-key", "--min-requests", "1"],
    );
    assert_eq!(code, 0, "{err}");
    assert_clean(&out);

    let full0 = handshakes(&s, "full");
    let handshakes0 = full0 + handshakes(&s, "resumed");
    let (code, out, err) = bench_args(
        &s,
        &[
            "--client-model",
            "kms-go",
            "--op",
            "generate",
            "-c",
            "64",
            "-d",
            "1s",
            "--min-requests",
            "300",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_clean(&out);
    assert!(out.contains("\"client_model\":\"kms-go\""), "{out}");
    let full1 = handshakes(&s, "full");
    let handshakes1 = full1 + handshakes(&s, "resumed");
    let new = number(&out, "new_connections");
    assert!(
        number(&out, "new_per_1000") > 100.0,
        "64 requests in flight over 2 idle connections: {out}"
    );
    // Resumption is on: a dial does a full handshake only while no ticket is left, and every
    // connection leaves one before its request can dial again, so there are at most as many
    // full handshakes as requests in flight (64), however the dials and tickets interleave
    // on a busy machine (the metrics requests' own connections add one each).
    let full = full1 - full0;
    eprintln!("kms-go model: {new} dials, {full} full handshakes on the server: {out}");
    assert!(
        full <= 64 + 2,
        "{full} full handshakes for {new} dials by 64 requests in flight: {out}"
    );
    // Every dial reached the server (those still in their handshake at the end aside; the
    // setup connection and the metrics requests add a few).
    let served = (handshakes1 - handshakes0) as f64;
    assert!(
        served + 64.0 >= new && served <= new + 4.0,
        "{served} handshakes on the server, {new} dials reported: {out}"
    );

    let (code, out, err) = bench_args(
        &s,
        &[
            "--client-model",
            "kms-go",
            "--op",
            "mix",
            "-c",
            "1",
            "-d",
            "1s",
            "--min-requests",
            "101",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let requests = assert_clean(&out);
    assert!(requests > 100.0, "{out}");
    assert!(number(&out, "new_connections") <= 1.0, "{out}");
    assert!(number(&out, "new_per_1000") < 10.0, "{out}");

    // Every operation goes through (chunked bodies, empty POSTs, GETs), with more idle room.
    for op in [
        "decrypt",
        "encrypt",
        "hmac",
        "describe",
        "status",
        "create-delete",
    ] {
        let (code, out, err) = bench_args(
            &s,
            &[
                "--client-model",
                "kms-go",
                "--idle-max",
                "4",
                "--op",
                op,
                "-c",
                "8",
                "-d",
                "300ms",
                "--min-requests",
                "1",
            ],
        );
        assert_eq!(code, 0, "{op}: {err}");
        assert_clean(&out);
    }
    let (code, _, err) = bench(&s, &["--client-model", "kms-go", "--new-connection"]);
    assert_eq!(code, 1);
    assert!(err.contains("exclude each other"), "{err}");
}

/// `--http2`: 64 streams multiplexed over one TLS connection (ALPN h2), every request
/// answered, one connection on the server too.
#[test]
fn http2_multiplexes_64_streams_over_one_connection() {
    let s = server();
    let (code, out, err) = bench(&s, &["--op", "generate", "--create-key"]);
    assert_eq!(code, 0, "{err}");
    assert_clean(&out);

    let handshakes0 = handshakes_of(&s, &["full", "resumed"]);
    let (code, out, err) = bench_args(&s, &["--http2", "-c", "64", "-d", "1s"]);
    assert_eq!(code, 0, "{err}");
    let requests = assert_clean(&out);
    assert!(requests > 64.0, "{out}");
    assert!(out.contains("\"protocol\":\"h2\""), "{out}");
    assert!(out.contains("\"h2_connections\":1,"), "{out}");
    assert_eq!(number(&out, "new_connections"), 1.0, "{out}");
    assert_eq!(number(&out, "max_concurrent_streams"), 250.0, "{out}");
    // On the server: the h2 connection, the bench's HTTP/1.1 setup connection (key check and
    // decrypt material) and this metrics request's own connection.
    let handshakes1 = handshakes_of(&s, &["full", "resumed"]);
    assert_eq!(handshakes1 - handshakes0, 3, "{out}");

    // Every operation, and streams over several connections and threads.
    for op in [
        "decrypt",
        "encrypt",
        "hmac",
        "describe",
        "status",
        "mix",
        "create-delete",
    ] {
        let (code, out, err) = bench_args(&s, &["--http2", "--op", op, "-c", "8", "-d", "300ms"]);
        assert_eq!(code, 0, "{op}: {err}");
        assert_clean(&out);
    }
    let (code, out, err) = bench_args(
        &s,
        &[
            "--http2",
            "--op",
            "status",
            "-c",
            "300",
            "--h2-connections",
            "2",
            "-t",
            "2",
            "-d",
            "500ms",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_clean(&out);
    assert_eq!(number(&out, "new_connections"), 2.0, "{out}");

    let (code, _, err) = bench(&s, &["--http2", "--new-connection"]);
    assert_eq!(code, 1);
    assert!(err.contains("--http2 does not go with"), "{err}");
}

/// The MinKMS ops (`POST /v1/kms/default`, protobuf frames) over HTTP/1.1 keep-alive and
/// `--http2`: a key made by `--create-key`, every answer one frame of the right command and
/// length (anything else would be an error), requests > 0 however busy the machine is.
#[test]
fn minkms_generate_and_decrypt_over_http1_and_http2() {
    let s = server();
    for protocol in [&[][..], &["--http2"][..]] {
        for op in ["kms-generate", "kms-decrypt"] {
            let mut args = vec![
                "--op",
                op,
                "--key",
                "bench-kms-key",
                "--create-key",
                "--min-requests",
                "20",
                "-d",
                "300ms",
                "-c",
                "4",
            ];
            args.extend_from_slice(protocol);
            let (code, out, err) = bench_args(&s, &args);
            assert_eq!(code, 0, "{op} {protocol:?}: {err}");
            let requests = assert_clean(&out);
            assert!(requests >= 20.0, "{op} {protocol:?}: {out}");
            let want = if protocol.is_empty() {
                "http/1.1"
            } else {
                "h2"
            };
            assert!(out.contains(&format!("\"protocol\":\"{want}\"")), "{out}");
        }
    }
    // An enclave the server does not have: the first KEY:GENERATE says so.
    let (code, _, err) = bench_args(
        &s,
        &[
            "--op",
            "kms-generate",
            "--key",
            "bench-kms-key",
            "--enclave",
            "nope",
            "-d",
            "1s",
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("KEY:GENERATE of key 'bench-kms-key' at /v1/kms/nope"),
        "{err}"
    );
}
