//! SIGHUP reload and SIGTERM shutdown of the `kes` binary.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn signal(server: &BinServer, sig: i32) {
    // SAFETY: sending a signal to our own child process.
    let rc = unsafe { libc::kill(server.child.id() as i32, sig) };
    assert_eq!(rc, 0);
}

fn policy(allow: &str, identity: &str) -> String {
    format!("policy:\n  app:\n    allow:\n    - {allow}\n    identities:\n    - {identity}\n")
}

#[test]
fn sighup_changes_policies_under_a_live_connection_and_bad_configs_are_rejected() {
    let tls = tls_files();
    let keys = tempfile::tempdir().unwrap();
    let (_, admin) = new_api_key();
    let (user_key, user) = new_api_key();
    let config_path = tls.dir.path().join("config.yml");
    std::fs::write(
        &config_path,
        config_yaml(&tls, &admin, keys.path(), &policy("/v1/status", &user)),
    )
    .unwrap();
    let server = bin_server(&["--config", config_path.to_str().unwrap()]);
    let mut c = client_for(&format!("https://{}", server.addr), &user_key);

    assert_eq!(
        c.request("GET", "/v1/status", None, &[]).unwrap().status,
        200
    );
    assert_eq!(
        c.request("GET", "/v1/key/list/", None, &[]).unwrap().status,
        403
    );

    // Allow listing instead of status; the same keep-alive connection sees it.
    std::fs::write(
        &config_path,
        config_yaml(&tls, &admin, keys.path(), &policy("/v1/key/list/*", &user)),
    )
    .unwrap();
    signal(&server, libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.request("GET", "/v1/key/list/", None, &[]).unwrap();
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reload not applied: {}",
            r.status
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        c.request("GET", "/v1/status", None, &[]).unwrap().status,
        403
    );

    // An invalid config is refused and the old one stays in force.
    std::fs::write(&config_path, "version: v2\n").unwrap();
    signal(&server, libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        c.request("GET", "/v1/key/list/", None, &[]).unwrap().status,
        200
    );
}

#[test]
fn sigterm_finishes_and_exits_zero() {
    let mut server = bin_server(&["--dev"]);
    let key_line = server
        .stdout_lines
        .iter()
        .find(|l| l.starts_with("API Key"))
        .unwrap();
    let api_key = key_line.split_whitespace().last().unwrap().to_string();
    let mut c = client_for(&format!("https://{}", server.addr), &api_key);
    assert_eq!(
        c.request("POST", "/v1/key/create/k", None, &[])
            .unwrap()
            .status,
        200
    );
    signal(&server, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "server did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

/// A config-file server (the reload path runs on SIGHUP) and the admin's API key.
fn config_bin_server(extra: &str) -> (BinServer, String, TlsFiles, tempfile::TempDir) {
    let tls = tls_files();
    let keys = tempfile::tempdir().unwrap();
    let (admin_key, admin) = new_api_key();
    let config_path = tls.dir.path().join("config.yml");
    std::fs::write(&config_path, config_yaml(&tls, &admin, keys.path(), extra)).unwrap();
    let server = bin_server(&["--config", config_path.to_str().unwrap()]);
    (server, admin_key, tls, keys)
}

fn status_code(server: &BinServer, api_key: &str) -> u16 {
    let mut c = client_for(&format!("https://{}", server.addr), api_key);
    c.request("GET", "/v1/status", None, &[])
        .map(|r| r.status)
        .unwrap_or(0)
}

#[test]
fn sighup_bursts_never_kill_the_server() {
    let (mut server, admin_key, _tls, _keys) = config_bin_server("");
    // The first burst starts right after the banner, while the server is still settling;
    // later ones land while earlier reloads are running.
    for round in 0..3 {
        for _ in 0..20 {
            signal(&server, libc::SIGHUP);
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            server.child.try_wait().unwrap().is_none(),
            "round {round}: the server died of a SIGHUP burst"
        );
        assert_eq!(status_code(&server, &admin_key), 200, "round {round}");
    }
    assert!(server.wait_stderr("configuration reloaded", Duration::from_secs(5)));
}

#[test]
fn sighup_then_sigterm_exits_gracefully_with_zero() {
    for _ in 0..3 {
        let (mut server, admin_key, _tls, _keys) = config_bin_server("");
        assert_eq!(status_code(&server, &admin_key), 200);
        signal(&server, libc::SIGHUP);
        signal(&server, libc::SIGTERM);
        let status = server
            .wait_exit(Duration::from_secs(10))
            .expect("server did not exit after SIGHUP + SIGTERM");
        assert!(status.success(), "{status:?}");
        assert!(
            server.wait_stderr("shutting down", Duration::from_secs(2)),
            "{}",
            server.stderr_text()
        );
    }
}
