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
    let mut cmd = kes_command(server, args);
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
fn of_two_servers_started_at_once_on_one_port_never_both_run() {
    for round in 0..5 {
        let addr = format!("127.0.0.1:{}", free_port());
        let dir = tempfile::tempdir().unwrap();
        let mut servers: Vec<(KillOnDrop, std::path::PathBuf)> = (0..2)
            .map(|i| {
                let out = dir.path().join(format!("out{i}"));
                let mut cmd =
                    kes_command(None, &["server", "--dev", "--addr", &addr, "--cores", "2"]);
                cmd.stdout(std::fs::File::create(&out).unwrap())
                    .stderr(Stdio::null());
                (KillOnDrop(cmd.spawn().expect("start kes")), out)
            })
            .collect();
        // Each one either says it is up or ends.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut up = 0;
        for (child, out) in servers.iter_mut() {
            loop {
                let said_up = std::fs::read_to_string(&*out)
                    .unwrap_or_default()
                    .contains("Server is up and running");
                if said_up {
                    up += 1;
                    break;
                }
                if child.0.try_wait().expect("try_wait").is_some() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "round {round}: a server neither started nor ended"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        assert!(up <= 1, "round {round}: two servers run on {addr}");
    }
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
        let mut cmd = kes_command(Some(&s), args);
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

#[test]
fn a_server_whose_stdout_reader_went_away_keeps_serving() {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = kes_command(None, &["server", "--dev", "--addr", &addr, "--cores", "1"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = KillOnDrop(cmd.spawn().expect("start kes"));
    drop(child.0.stdout.take()); // `kes server --dev | head -0`
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&addr).is_err() {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            panic!("the server ended when its stdout reader went away: {status:?}");
        }
        assert!(
            Instant::now() < deadline,
            "the server did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (api_key, _) = new_api_key();
    let mut c = client_for(&format!("https://{addr}"), &api_key);
    let resp = c.request("GET", "/version", None, &[]).expect("an answer");
    assert_eq!(resp.status, 200, "{}", body_str(&resp));
    assert!(child.0.try_wait().expect("try_wait").is_none());
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
    let write_cert = || {
        kes_bounded(
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
        )
    };
    let run = write_cert();
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
    let again = write_cert();
    assert_eq!(again.status.and_then(|s| s.code()), Some(1));
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
}

// ---- 7. A config's first start ------------------------------------------------------------

fn repo_file(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `kes` in `dir` with none of the example's variables set.
fn kes_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = kes_command(None, args);
    cmd.current_dir(dir)
        .env_remove("KES_ADMIN_IDENTITY")
        .env_remove("MINIO_KES_IDENTITY")
        .envs(env.iter().copied());
    cmd.output().expect("run kes")
}

#[test]
fn the_example_config_names_everything_missing_at_once_then_starts_as_the_readme_says() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("server-config.yaml"),
        repo_file("server-config.yaml"),
    )
    .unwrap();
    let out = kes_in(
        dir.path(),
        &["server", "--config", "server-config.yaml", "--check"],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    for needed in [
        "invalid config file 'server-config.yaml'",
        "'KES_ADMIN_IDENTITY'",
        "'MINIO_KES_IDENTITY'",
        "'./server.key'",
        "'./server.cert'",
        "kes identity new --key server.key --cert server.cert --ip 127.0.0.1 localhost",
    ] {
        assert!(err.contains(needed), "{needed} is not named in: {err}");
    }

    // The README's commands.
    let made = kes_in(
        dir.path(),
        &[
            "identity",
            "new",
            "--key",
            "server.key",
            "--cert",
            "server.cert",
            "--ip",
            "127.0.0.1",
            "localhost",
        ],
        &[],
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let admin = kes_in(dir.path(), &["identity", "new"], &[]);
    let admin = String::from_utf8_lossy(&admin.stdout).into_owned();
    let field = |name: &str| -> String {
        let start = admin.find(&format!("\"{name}\":\"")).unwrap_or_else(|| {
            panic!("no {name} in the JSON of a piped `kes identity new`: {admin}")
        }) + name.len()
            + 4;
        admin[start..]
            .split('"')
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let (api_key, identity) = (field("api_key"), field("identity"));
    // MinIO's identity: another one (the admin cannot be given a policy).
    let minio = kes_in(dir.path(), &["identity", "new"], &[]);
    let minio = String::from_utf8_lossy(&minio.stdout).into_owned();
    let minio_identity = minio
        .split("\"identity\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no identity in {minio}"))
        .to_string();
    let port = free_port().to_string();
    let addr = format!("127.0.0.1:{port}");
    let mut server = kes_command(
        None,
        &[
            "server",
            "--config",
            "server-config.yaml",
            "--addr",
            &addr,
            "--cores",
            "1",
        ],
    );
    server
        .current_dir(dir.path())
        .env("KES_ADMIN_IDENTITY", &identity)
        .env("MINIO_KES_IDENTITY", &minio_identity)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = KillOnDrop(server.spawn().expect("start kes"));
    let stdout = child.0.stdout.take().expect("stdout");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the server ended before it was up"))
            .unwrap_or_default();
        if line.contains("Server is up and running") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let endpoint = format!("https://{addr}");
    let created = kes_command(None, &["key", "create", "readme-key", "-k"])
        .env("KES_SERVER", &endpoint)
        .env("KES_API_KEY", &api_key)
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
}

#[test]
fn a_log_level_typo_names_the_config_file() {
    let tls = tls_files();
    let keys = tempfile::tempdir().unwrap();
    let (_, admin) = new_api_key();
    let path = tls.dir.path().join("config.yml");
    std::fs::write(
        &path,
        format!(
            "{}log:\n  error: INFOO\n",
            config_yaml(&tls, &admin, keys.path(), "")
        ),
    )
    .unwrap();
    let run = kes_bounded(
        None,
        &["server", "--config", path.to_str().unwrap(), "--check"],
        Duration::from_secs(30),
    );
    assert_eq!(run.status.and_then(|s| s.code()), Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "invalid config file '{}': log.error: 'INFOO' is not a log level",
            path.display()
        )),
        "{}",
        run.stderr
    );
}

// ---- 9. Messages a first run meets --------------------------------------------------------

#[test]
fn first_run_messages_say_what_to_do() {
    let s = dev_server();
    let quick = Duration::from_secs(30);

    // One prefix, not two.
    let bad = kes_bounded(None, &["identity", "of", "kes:v1:AAAA"], quick);
    assert_eq!(bad.status.and_then(|s| s.code()), Some(1));
    assert_eq!(
        bad.stderr.matches("invalid API key").count(),
        1,
        "{}",
        bad.stderr
    );

    // A self-signed server without -k: what to do.
    let unverified = kes_bounded(Some(&s), &["ls"], quick);
    assert_eq!(unverified.status.and_then(|s| s.code()), Some(1));
    assert!(
        unverified.stderr.contains("UnknownIssuer")
            && unverified.stderr.contains("-k")
            && unverified.stderr.contains("SSL_CERT_FILE"),
        "{}",
        unverified.stderr
    );

    // No API key: the variable the dev banner exports.
    let mut no_key = kes_command(None, &["ls", "-k"]);
    no_key.env("KES_SERVER", s.endpoint());
    let no_key = no_key.output().unwrap();
    assert!(
        String::from_utf8_lossy(&no_key.stderr).contains("KES_API_KEY"),
        "{}",
        String::from_utf8_lossy(&no_key.stderr)
    );

    // Key names: the rule.
    let name = kes_bounded(Some(&s), &["key", "create", "no spaces", "-k"], quick);
    assert_eq!(name.status.and_then(|s| s.code()), Some(1));
    assert!(
        name.stderr
            .contains("1 to 80 characters of A-Z, a-z, 0-9, '_' and '-'"),
        "{}",
        name.stderr
    );

    // `kes identity new` takes --json, and prints JSON when piped.
    for args in [&["identity", "new", "--json"][..], &["identity", "new"][..]] {
        let new = kes_bounded(None, args, quick);
        assert!(
            new.stdout.starts_with("{\"api_key\":\"kes:v1:")
                && new.stdout.contains("\"identity\":\""),
            "kes {args:?}: {}{}",
            new.stdout,
            new.stderr
        );
    }

    // Examples on lines of their own.
    let help = kes_bounded(None, &["identity", "new", "--help"], quick);
    assert!(
        help.stdout.lines().any(|l| l.trim()
            == "kes identity new --key client.key --cert client.crt --ip 10.0.0.5 MinIO"),
        "{}",
        help.stdout
    );

    // `kes policy ls` (the README's command for a dev server) works there.
    let policies = kes_bounded(Some(&s), &["policy", "ls", "-k"], quick);
    assert!(
        policies.status.is_some_and(|s| s.success()),
        "{}",
        policies.stderr
    );
}

#[test]
fn key_create_on_a_terminal_says_what_it_did() {
    let found = Command::new("script").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "this test needs script(1) for a terminal (apt-get install bsdutils)"
    );
    let s = dev_server();
    let command = format!("{} key create on-a-tty -k", env!("CARGO_BIN_EXE_kes"));
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("KES_SERVER", s.endpoint())
        .env("KES_API_KEY", &s.api_key)
        .stdin(Stdio::null())
        .output()
        .expect("run script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Created key 'on-a-tty'"), "{text:?}");
}

#[test]
fn audit_events_on_stdout_are_text_lines_as_the_readme_says() {
    let readme = repo_file("README.md");
    assert!(
        readme.contains("go to stdout as text lines"),
        "README no longer describes the audit lines on stdout"
    );
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("stdout");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut server = kes_command(None, &["server", "--dev", "--addr", &addr, "--cores", "1"]);
    server
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::null());
    let _child = KillOnDrop(server.spawn().expect("start kes"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    while !text(&out_path).contains("Server is up and running") {
        assert!(Instant::now() < deadline, "no banner: {}", text(&out_path));
        std::thread::sleep(Duration::from_millis(50));
    }
    let banner = text(&out_path);
    let api_key = banner
        .lines()
        .find(|l| l.starts_with("API Key"))
        .and_then(|l| l.split_whitespace().last())
        .expect("API key in the banner")
        .to_string();
    let mut c = client_for(&format!("https://{addr}"), &api_key);
    assert_eq!(
        c.request("POST", "/v1/key/create/audited", None, &[])
            .unwrap()
            .status,
        200
    );
    let line = loop {
        if let Some(l) = text(&out_path)
            .lines()
            .find(|l| l.contains("audited"))
            .map(str::to_string)
        {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "no audit line: {}",
            text(&out_path)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        line.starts_with("time=") && line.contains("msg=\"secret key 'audited' created\""),
        "{line}"
    );
}

// ---- 5. The README's first lines ----------------------------------------------------------

#[test]
fn the_readmes_first_commands_put_kes_on_path_before_using_it() {
    let readme = repo_file("README.md");
    let mut blocks = readme
        .split("```sh\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap_or(""));
    let first = blocks.next().expect("README starts with a sh block");
    let trying = blocks.next().expect("the 'Trying it' block");
    for block in [first, trying] {
        let install = block.find("cargo install --path .");
        for line in block
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
        {
            for use_ in line
                .split("&&")
                .map(str::trim)
                .filter(|c| c.starts_with("kes "))
            {
                let at = block.find(use_).unwrap_or(0);
                assert!(
                    install.is_some_and(|i| i < at),
                    "`{use_}` runs before `cargo install --path .` puts kes on PATH:\n{block}"
                );
                // The subcommand exists.
                let sub: Vec<&str> = use_.split_whitespace().skip(1).take(1).collect();
                let help = kes_bounded(None, &[sub[0], "--help"], Duration::from_secs(30));
                assert!(
                    help.status.is_some_and(|s| s.success()),
                    "kes {} --help: {}",
                    sub[0],
                    help.stderr
                );
            }
        }
    }
}
