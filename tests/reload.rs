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

/// Rewrites the config file and sends SIGHUP; returns once the server reported the outcome.
fn reload_with(server: &BinServer, path: &std::path::Path, yaml: &str, outcome: &str) {
    let before = server.stderr_text().matches(outcome).count();
    std::fs::write(path, yaml).unwrap();
    signal(server, libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.stderr_text().matches(outcome).count() == before {
        assert!(
            Instant::now() < deadline,
            "no '{outcome}' after SIGHUP: {}",
            server.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_refused_reload_creates_no_key_and_changes_nothing() {
    let tls = tls_files();
    let keys = tempfile::tempdir().unwrap();
    let (admin_key, admin) = new_api_key();
    let (user_key, user) = new_api_key();
    let path = tls.dir.path().join("config.yml");
    let yaml = |extra: &str| config_yaml(&tls, &admin, keys.path(), extra);
    std::fs::write(&path, yaml(&policy("/v1/status", &user))).unwrap();
    let server = bin_server(&["--config", path.to_str().unwrap()]);
    let endpoint = format!("https://{}", server.addr);
    let mut admin_client = client_for(&endpoint, &admin_key);
    let mut user_client = client_for(&endpoint, &user_key);
    let describe = |c: &mut kes::client::Client, name: &str| {
        c.request("GET", &format!("/v1/key/describe/{name}"), None, &[])
            .unwrap()
            .status
    };

    // Valid `keys:` and a new policy, then something invalid further down: an unknown log
    // level, an invalid policy name, an unreadable certificate.
    let new_policy = policy("/v1/key/list/*", &user);
    let refused = [
        yaml(&format!(
            "keys:\n- name: bad-level\nenclaves: [bad-level]\n{new_policy}log:\n  error: loudly\n"
        )),
        yaml(&format!(
            "keys:\n- name: bad-policy\n{new_policy}  -bad:\n    allow: []\n"
        )),
        yaml(&format!("keys:\n- name: bad-cert\n{new_policy}")).replace(
            &format!("cert: {}", tls.cert.display()),
            "cert: /nonexistent/server.cert",
        ),
    ];
    for (i, text) in refused.iter().enumerate() {
        reload_with(&server, &path, text, "reload failed");
        for name in ["bad-level", "bad-policy", "bad-cert"] {
            assert!(!keys.path().join(name).exists(), "case {i}: {name} created");
            let enclave = keys.path().join(format!("-e-{name}"));
            assert!(!enclave.exists(), "case {i}: enclave {name} created");
            assert_eq!(describe(&mut admin_client, name), 404, "case {i}: {name}");
        }
        // The old policy is still the one in force.
        let status =
            |c: &mut kes::client::Client, p: &str| c.request("GET", p, None, &[]).unwrap().status;
        assert_eq!(status(&mut user_client, "/v1/status"), 200, "case {i}");
        assert_eq!(status(&mut user_client, "/v1/key/list/"), 403, "case {i}");
    }
    assert!(!server.stderr_text().contains("configuration reloaded"));

    // The same keys and policy in a valid config are applied.
    reload_with(
        &server,
        &path,
        &yaml(&format!(
            "keys:\n- name: good\nenclaves: [reloaded]\n{}",
            policy("/v1/key/list/*", &user)
        )),
        "configuration reloaded",
    );
    assert!(keys.path().join("good").exists());
    assert_eq!(describe(&mut admin_client, "good"), 200);
    // `enclaves:` made its record (`-e-<name>`), which the KES key list does not show.
    let record = std::fs::read_to_string(keys.path().join("-e-reloaded")).unwrap();
    assert!(
        record.starts_with(r#"{"name":"reloaded","created_at":""#),
        "{record}"
    );
    let list = user_client
        .request("GET", "/v1/key/list/", None, &[])
        .unwrap();
    assert_eq!(list.status, 200);
    let body = String::from_utf8_lossy(&list.body);
    assert!(
        body.contains("good") && !body.contains("reloaded"),
        "{body}"
    );
}

#[test]
fn settings_that_need_a_restart_are_reported_and_the_old_ones_stay() {
    let tls = tls_files();
    let keys = tempfile::tempdir().unwrap();
    let other_keys = tempfile::tempdir().unwrap();
    let (admin_key, admin) = new_api_key();
    let (user_key, user) = new_api_key();
    let path = tls.dir.path().join("config.yml");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    std::fs::write(
        &path,
        format!(
            "address: {addr}\n{}",
            config_yaml(&tls, &admin, keys.path(), &policy("/v1/status", &user))
        ),
    )
    .unwrap();
    let server = bin_server_at_config_address(&["--config", path.to_str().unwrap()], addr);
    let mut admin_client = client_for(&format!("https://{addr}"), &admin_key);
    assert_eq!(
        admin_client
            .request("POST", "/v1/key/create/before", None, &[])
            .unwrap()
            .status,
        200
    );

    let new_addr = format!("127.0.0.1:{}", free_port());
    reload_with(
        &server,
        &path,
        &format!(
            "address: {new_addr}\n{}cache:\n  expiry:\n    any: 1m\n",
            config_yaml(
                &tls,
                &admin,
                other_keys.path(),
                &policy("/v1/key/list/*", &user)
            )
        ),
        "configuration reloaded",
    );
    let text = server.stderr_text();
    for setting in ["address", "keystore", "cache.expiry.any"] {
        let line = format!("kes: reload: '{setting}' changed; restart the server to apply it");
        assert_eq!(text.matches(&line).count(), 1, "{setting}: {text}");
    }
    assert!(!text.contains("'cache.expiry.unused' changed"), "{text}");
    assert!(!text.contains("'policy"), "{text}");

    // The old address and keystore still serve; the reloadable policy change is applied.
    assert_eq!(
        admin_client
            .request("GET", "/v1/key/describe/before", None, &[])
            .unwrap()
            .status,
        200
    );
    assert!(std::net::TcpStream::connect(&new_addr).is_err());
    let mut user_client = client_for(&format!("https://{addr}"), &user_key);
    assert_eq!(
        user_client
            .request("GET", "/v1/key/list/", None, &[])
            .unwrap()
            .status,
        200
    );
}
