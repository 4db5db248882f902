//! A new user's first steps (issue 22): the server refuses a port another process listens
//! on, commands end quietly on a closed pipe, an API key becomes a certificate for curl, and
//! the error messages a first run meets say what to do.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// What a bounded run of the `kes` binary left.
struct Run {
    /// `None`: still running at the deadline (then killed).
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

/// Runs `kes <args>` with the client environment of `server` (if any), stdout and stderr to
/// files, killed after `timeout`.
fn kes_bounded(server: Option<&TestServer>, args: &[&str], timeout: Duration) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut cmd = kes_cmd(server, args);
    cmd.stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"));
    let mut child = cmd.spawn().expect("run kes");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        status,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

fn kes_cmd(server: Option<&TestServer>, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kes"));
    cmd.args(args).stdin(Stdio::null());
    for var in [
        "MINIO_KES_SERVER",
        "KES_SERVER",
        "MINIO_KMS_KES_ENDPOINT",
        "MINIO_KES_API_KEY",
        "KES_API_KEY",
        "MINIO_KMS_KES_API_KEY",
        "RUST_BACKTRACE",
    ] {
        cmd.env_remove(var);
    }
    if let Some(s) = server {
        cmd.env("KES_SERVER", s.endpoint())
            .env("KES_API_KEY", &s.api_key);
    }
    cmd
}

/// Admin requests on fresh connections (a new TLS connection each, as `kes ls` makes them):
/// every one must reach the server that printed `api_key`.
fn assert_every_connection_reaches(addr: SocketAddr, api_key: &str) {
    for i in 0..12 {
        let mut c = client_for(&format!("https://{addr}"), api_key);
        let resp = c
            .request("GET", "/v1/key/list/*", None, &[])
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(resp.status, 200, "request {i}: {}", body_str(&resp));
    }
}

// ---- 1. One port, one process -------------------------------------------------------------

#[test]
fn a_second_server_on_a_port_in_use_refuses_to_start() {
    // The first server shares its port between two cores.
    let first = bin_server(&["--dev", "--cores", "2"]);
    let key = first.dev_api_key();
    let addr = first.addr.to_string();
    let second = kes_bounded(
        None,
        &["server", "--dev", "--addr", &addr, "--cores", "2"],
        Duration::from_secs(30),
    );
    assert!(
        second.status.is_some_and(|s| s.code() == Some(1)),
        "a second server on {addr} did not fail: {:?}\nstdout: {}\nstderr: {}",
        second.status,
        second.stdout,
        second.stderr
    );
    assert!(
        second
            .stderr
            .to_lowercase()
            .contains("address already in use"),
        "{}",
        second.stderr
    );
    assert!(
        !second.stdout.contains("Server is up and running"),
        "{}",
        second.stdout
    );
    assert_every_connection_reaches(first.addr, &key);
}

#[test]
fn a_foreign_listener_on_the_port_is_refused_with_or_without_port_sharing() {
    use socket2::{Domain, Socket, Type};
    for share in [false, true] {
        let foreign = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        foreign.set_reuse_address(true).expect("SO_REUSEADDR");
        foreign.set_reuse_port(share).expect("SO_REUSEPORT");
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        foreign.bind(&any.into()).expect("bind");
        foreign.listen(16).expect("listen");
        let addr = foreign
            .local_addr()
            .expect("local addr")
            .as_socket()
            .expect("inet");
        let run = kes_bounded(
            None,
            &[
                "server",
                "--dev",
                "--addr",
                &addr.to_string(),
                "--cores",
                "1",
            ],
            Duration::from_secs(30),
        );
        assert!(
            run.status.is_some_and(|s| s.code() == Some(1)),
            "kes started beside a foreign listener (SO_REUSEPORT {share}): {:?}\n{}\n{}",
            run.status,
            run.stdout,
            run.stderr
        );
        assert!(
            run.stderr.to_lowercase().contains("address already in use"),
            "SO_REUSEPORT {share}: {}",
            run.stderr
        );
    }
}

#[test]
fn several_cores_share_an_ephemeral_port() {
    let mut prepared =
        kes::cli::server::prepare_dev(Some("127.0.0.1:0"), Some(2)).expect("dev server");
    prepared.options.cores = Some(2);
    let api_key = prepared.api_key.clone().expect("dev API key");
    let running = kes::server::run(prepared.options).expect("two cores on one ephemeral port");
    assert_ne!(running.local_addr.port(), 0);
    let expected = kes::server::runtime::affinity_cpus()
        .expect("affinity")
        .len()
        .min(2);
    assert_eq!(running.cores, expected);
    assert_every_connection_reaches(running.local_addr, &api_key);
    std::mem::forget(running);
}

// ---- 8. Closed pipes ----------------------------------------------------------------------

#[test]
fn metric_raw_ends_by_itself_when_piped() {
    let s = dev_server();
    for args in [
        &["metric", "-k", "--raw", "--detail"][..],
        &["metric", "-k", "--raw"][..],
        &["metric", "-k"][..],
    ] {
        let run = kes_bounded(Some(&s), args, Duration::from_secs(30));
        assert!(
            run.status.is_some_and(|s| s.success()),
            "kes {args:?} piped did not end by itself: {:?}\n{}",
            run.status,
            run.stderr
        );
        assert!(run.stdout.contains("kes_") || run.stdout.contains("Requests"));
    }
}

#[test]
fn commands_end_quietly_when_the_reader_of_their_output_goes_away() {
    let s = dev_server();
    let cases: [&[&str]; 4] = [
        &["metric", "-k", "--raw", "--count", "0", "--rate", "100ms"],
        &[
            "metric", "-k", "--raw", "--detail", "--count", "3", "--rate", "100ms",
        ],
        &["completion", "bash"],
        &["identity", "new"],
    ];
    for args in cases {
        let mut cmd = kes_cmd(Some(&s), args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run kes");
        // The reader goes away before the command writes anything (`| head -0`).
        drop(child.stdout.take());
        let err = child.stderr.take().expect("stderr");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("kes {args:?} kept running after its reader went away");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut { err }, &mut text);
        assert!(
            status.success() && text.is_empty(),
            "kes {args:?} with a closed stdout: {status:?}, stderr: {text}"
        );
    }
}

// ---- 6. An API key as a certificate for curl ----------------------------------------------

fn require_curl() {
    let found = Command::new("curl").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "these tests need curl on PATH (apt-get install curl)"
    );
}

#[test]
fn identity_cert_lets_curl_act_as_the_api_key_over_http1_and_http2() {
    require_curl();
    let s = dev_server();
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = (dir.path().join("client.key"), dir.path().join("client.crt"));
    // The API key from the environment, as the dev banner exports it.
    let run = kes_bounded(
        Some(&s),
        &[
            "identity",
            "cert",
            "--key",
            key.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert!(run.status.is_some_and(|s| s.success()), "{}", run.stderr);
    let mode =
        |p: &Path| std::os::unix::fs::PermissionsExt::mode(&p.metadata().unwrap().permissions());
    assert_eq!(mode(&key) & 0o777, 0o600);
    let identity = kes::auth::apikey::ApiKey::parse(&s.api_key)
        .unwrap()
        .identity()
        .to_hex();
    assert!(run.stdout.contains(&identity), "{}", run.stdout);
    // The certificate's identity is the API key's.
    let of = kes_bounded(
        None,
        &["identity", "of", cert.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert_eq!(of.stdout.trim(), identity, "{}", of.stderr);

    for (version, flag) in [("1.1", "--http1.1"), ("2", "--http2")] {
        let url = format!(
            "{}/v1/key/create/curl-{}",
            s.endpoint(),
            version.replace('.', "")
        );
        let out = Command::new("curl")
            .args([
                "-sS",
                "-k",
                flag,
                "-X",
                "POST",
                "-w",
                "%{http_version} %{http_code}",
            ])
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .arg(&url)
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text.trim(),
            format!("{version} 200"),
            "curl {flag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Existing files are kept unless --force.
    let again = kes_bounded(
        Some(&s),
        &[
            "identity",
            "cert",
            "--key",
            key.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(again.status.and_then(|s| s.code()), Some(1));
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
}
