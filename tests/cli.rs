//! The `kes` binary as a user runs it, against a live server on loopback.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use simd_json::prelude::*;

fn kes(server: Option<&TestServer>, args: &[&str]) -> Output {
    kes_command(server, args).output().expect("run kes")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

fn json(text: &str) -> simd_json::OwnedValue {
    let mut bytes = text.trim().as_bytes().to_vec();
    simd_json::to_owned_value(&mut bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn field(v: &simd_json::OwnedValue, k: &str) -> String {
    use simd_json::prelude::*;
    v.get(k)
        .and_then(|x| x.as_str())
        .unwrap_or_else(|| panic!("no {k}"))
        .to_string()
}

#[test]
fn key_commands_round_trip() {
    let s = dev_server();
    let srv = Some(&s);
    ok(kes(srv, &["key", "create", "-k", "cli-a", "cli-b"]));
    assert_eq!(
        ok(kes(srv, &["key", "ls", "-k", "cli-*"])).trim(),
        r#"["cli-a","cli-b"]"#
    );
    assert_eq!(ok(kes(srv, &["ls", "-k"])).trim(), r#"["cli-a","cli-b"]"#);

    // dek prints JSON to a pipe; decrypt gives the plaintext back.
    let ctx = "eyJhIjoiYi9jIn0=";
    let dek = json(&ok(kes(srv, &["key", "dek", "-k", "cli-a", ctx])));
    let (pt, ct) = (field(&dek, "plaintext"), field(&dek, "ciphertext"));
    let back = json(&ok(kes(srv, &["key", "decrypt", "-k", "cli-a", &ct, ctx])));
    assert_eq!(field(&back, "plaintext"), pt);
    let out = kes(srv, &["key", "decrypt", "-k", "cli-a", &ct]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "Error: decryption failed: ciphertext is not authentic"
    );

    let enc = json(&ok(kes(
        srv,
        &["key", "encrypt", "-k", "cli-b", "Hello World"],
    )));
    let back = json(&ok(kes(
        srv,
        &["key", "decrypt", "-k", "cli-b", &field(&enc, "ciphertext")],
    )));
    assert_eq!(field(&back, "plaintext"), "SGVsbG8gV29ybGQ=");

    // `kes key rotate`: a new version; the old ciphertext still decrypts, info shows both.
    let rotated = json(&ok(kes(srv, &["key", "rotate", "-k", "cli-b"])));
    assert_eq!(field(&rotated, "name"), "cli-b");
    assert_eq!(rotated.get("version").and_then(|v| v.as_u64()), Some(2));
    let back = json(&ok(kes(
        srv,
        &["key", "decrypt", "-k", "cli-b", &field(&enc, "ciphertext")],
    )));
    assert_eq!(field(&back, "plaintext"), "SGVsbG8gV29ybGQ=");
    let info = json(&ok(kes(srv, &["key", "info", "-k", "cli-b"])));
    assert_eq!(info.get("version").and_then(|v| v.as_u64()), Some(2));
    let versions = info.get("versions").and_then(|v| v.as_array()).unwrap();
    assert_eq!(versions.len(), 2);
    let out = kes(srv, &["key", "rotate", "-k", "no-such-key"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "Error: failed to rotate key 'no-such-key': key does not exist"
    );

    let info = json(&ok(kes(srv, &["key", "info", "-k", "cli-a", "--json"])));
    assert_eq!(field(&info, "name"), "cli-a");
    ok(kes(
        srv,
        &[
            "key",
            "import",
            "-k",
            "cli-imported",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        ],
    ));
    let info = json(&ok(kes(srv, &["key", "info", "-k", "cli-imported"])));
    assert_eq!(field(&info, "algorithm"), "AES256");

    ok(kes(srv, &["key", "rm", "-k", "cli-a", "cli-imported"]));
    let out = kes(srv, &["key", "info", "-k", "cli-a"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).trim(), "Error: key does not exist");
    let out = kes(srv, &["key", "create", "-k", "cli-b"]);
    assert_eq!(
        stderr(&out).trim(),
        "Error: failed to create key 'cli-b': key already exists"
    );

    // Status, identity info, policies, identities.
    let status = json(&ok(kes(srv, &["status", "-k"])));
    assert_eq!(field(&status, "os"), "linux");
    let me = json(&ok(kes(srv, &["identity", "info", "-k"])));
    let admin = kes::auth::apikey::ApiKey::parse(&s.api_key)
        .unwrap()
        .identity()
        .to_hex();
    assert_eq!(field(&me, "identity"), admin);
    assert_eq!(
        ok(kes(srv, &["ls", "-i", "-k"])).trim().to_string(),
        format!(r#"["{admin}"]"#)
    );
    assert_eq!(
        ok(kes(srv, &["policy", "ls", "-k"])).trim().to_string(),
        "[]"
    );
}

#[test]
fn errors_and_exit_codes() {
    let s = dev_server();
    // Wrong credentials: a valid API key the server does not know.
    let (stranger, _) = new_api_key();
    let out = Command::new(env!("CARGO_BIN_EXE_kes"))
        .args(["key", "create", "-k", "x"])
        .env("KES_SERVER", s.endpoint())
        .env("KES_API_KEY", &stranger)
        .env_remove("MINIO_KES_API_KEY")
        .env_remove("MINIO_KES_SERVER")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not authorized: insufficient permissions"),
        "{}",
        stderr(&out)
    );

    // A malformed API key.
    let out = Command::new(env!("CARGO_BIN_EXE_kes"))
        .args(["key", "ls", "-k"])
        .env("KES_SERVER", s.endpoint())
        .env("KES_API_KEY", "kes:v1:nonsense")
        .env_remove("MINIO_KES_API_KEY")
        .env_remove("MINIO_KES_SERVER")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("Error: "), "{}", stderr(&out));

    // No credentials at all.
    let out = kes(None, &["key", "ls", "-k"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no API key specified"),
        "{}",
        stderr(&out)
    );

    // Server down.
    let down = format!("https://127.0.0.1:{}", free_port());
    let out = Command::new(env!("CARGO_BIN_EXE_kes"))
        .args(["key", "ls", "-k", "--server", &down])
        .env("KES_API_KEY", &s.api_key)
        .env_remove("MINIO_KES_API_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("Error: "), "{}", stderr(&out));

    // Usage errors exit 2; help exits 0 and shows examples.
    assert_eq!(kes(None, &["key", "frobnicate"]).status.code(), Some(2));
    let help = kes(None, &["key", "dek", "--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(stdout(&help).contains("Example: kes key dek my-key"));
    assert!(ok(kes(None, &["--version"])).starts_with("kes "));
    assert!(ok(kes(None, &["completion", "bash"])).contains("_kes"));
}

#[test]
fn identity_commands_without_a_server() {
    // auth-and-policy.md §3.4 vectors; piped output is the bare identity.
    assert_eq!(
        ok(kes(
            None,
            &[
                "identity",
                "of",
                "kes:v1:AGaV6VXHasF0FnaB60WdCOeTZ8eTIDikL4zlN16c8NAs"
            ]
        )),
        "ea9826089311fe44d7590408ede9150f7c637b6cab0a91ee6fe1aa5d9fb366f6"
    );
    assert_eq!(
        ok(kes(
            None,
            &[
                "identity",
                "kes:v1:AAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f"
            ]
        )),
        "a050837d85070582ccf7394b0988847cc312cb88259b894899f6f239cf1791a5"
    );
    // `kes identity` to a pipe prints a fresh API key only.
    let key = ok(kes(None, &["identity"]));
    assert!(key.starts_with("kes:v1:") && key.len() == 51, "{key}");

    let dir = tempfile::tempdir().unwrap();
    let (k, c) = (dir.path().join("client.key"), dir.path().join("client.crt"));
    let out = ok(kes(
        None,
        &[
            "identity",
            "new",
            "--key",
            k.to_str().unwrap(),
            "--cert",
            c.to_str().unwrap(),
            "--ip",
            "127.0.0.1",
            "--dns",
            "localhost",
            "MinIO",
        ],
    ));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&k).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(&c).unwrap().permissions().mode() & 0o777,
        0o644
    );
    let identity = ok(kes(None, &["identity", "of", c.to_str().unwrap()]));
    assert!(out.contains(&identity), "{out}");
    let api_key = ok(kes(None, &["identity", k.to_str().unwrap()]));
    assert!(out.contains(&api_key), "{out}");
    assert_eq!(ok(kes(None, &["identity", "of", &api_key])), identity);
    // Files are not overwritten without --force.
    let again = kes(
        None,
        &[
            "identity",
            "new",
            "--key",
            k.to_str().unwrap(),
            "--cert",
            c.to_str().unwrap(),
        ],
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("already exists"));
    ok(kes(
        None,
        &[
            "identity",
            "new",
            "--force",
            "--key",
            k.to_str().unwrap(),
            "--cert",
            c.to_str().unwrap(),
        ],
    ));
}

#[test]
fn k2_api_keys_name_their_identity_and_log_in() {
    // `kes identity of` and `kes identity <key>` print the identity kms-go computes.
    assert_eq!(ok(kes(None, &["identity", "of", K2_P256])), K2_P256_HEX);
    assert_eq!(ok(kes(None, &["identity", K2_P384])), K2_P384_HEX);
    // A k1 key is the same Ed25519 key as its kes:v1: form.
    assert_eq!(
        ok(kes(
            None,
            &[
                "identity",
                "of",
                "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
            ]
        )),
        "a050837d85070582ccf7394b0988847cc312cb88259b894899f6f239cf1791a5"
    );
    // Malformed keys: the reason, never the key.
    for (bad, why) in [
        ("k2:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRob", "invalid length"),
        (
            "k2:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eH+A",
            "invalid base64",
        ),
        (
            "k2:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "not a valid private key for its curve",
        ),
        (
            "k2:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4_QEFC",
            "unsupported curve P-521",
        ),
    ] {
        let out = kes(None, &["identity", "of", bad]);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let err = stderr(&out);
        assert!(err.contains(why), "{bad}: {err}");
        assert!(!err.contains(&bad[3..12]), "{err}");
    }

    // The CLI as a client with a k2 key, from KES_API_KEY and from --api-key: a server
    // whose admin is the key's identity knows it as that identity.
    let tls = tls_files();
    let keys = tempfile::tempdir().unwrap();
    let mut s = config_server(&tls, K2_P256_HEX, keys.path(), "");
    s.api_key = K2_P256.to_string();
    let me = json(&ok(kes(Some(&s), &["identity", "info", "-k", "--json"])));
    assert_eq!(field(&me, "identity"), K2_P256_HEX);
    ok(kes(Some(&s), &["key", "create", "-k", "k2-made"]));
    let endpoint = s.endpoint();
    let listed = ok(kes(
        None,
        &[
            "key",
            "ls",
            "-k",
            "-s",
            &endpoint,
            "--api-key",
            K2_P256,
            "k2-*",
        ],
    ));
    assert_eq!(listed.trim(), r#"["k2-made"]"#);
    // Another k2 key is another identity, not the admin.
    let out = kes(
        None,
        &["key", "ls", "-k", "-s", &endpoint, "--api-key", K2_P384],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not authorized"), "{}", stderr(&out));

    // `kes identity cert` writes the key's ECDSA certificate and PKCS#8 key: curl logs in
    // with them as the same identity.
    let dir = tempfile::tempdir().unwrap();
    let (k, c) = (dir.path().join("k2.key"), dir.path().join("k2.crt"));
    let out = json(&ok(kes(
        None,
        &[
            "identity",
            "cert",
            K2_P256,
            "--key",
            k.to_str().unwrap(),
            "--cert",
            c.to_str().unwrap(),
        ],
    )));
    assert_eq!(field(&out, "identity"), K2_P256_HEX);
    let curl = Command::new("curl")
        .args(["-sSk", "--max-time", "10", "--cert"])
        .arg(&c)
        .arg("--key")
        .arg(&k)
        .arg(format!("{endpoint}/v1/identity/self/describe"))
        .output()
        .expect("run curl");
    assert!(curl.status.success(), "{curl:?}");
    assert_eq!(field(&json(&stdout(&curl)), "identity"), K2_P256_HEX);
}

#[test]
fn log_streams_audit_events() {
    let s = dev_server();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kes"))
        .args(["log", "--audit", "--json", "-k"])
        .env("KES_SERVER", s.endpoint())
        .env("KES_API_KEY", &s.api_key)
        .env_remove("MINIO_KES_API_KEY")
        .env_remove("MINIO_KES_SERVER")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut c = s.client();
    let line = loop {
        c.request(
            "POST",
            &format!("/v1/key/create/logged-{}", rand_suffix()),
            None,
            &[],
        )
        .unwrap();
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
            break line;
        }
        assert!(Instant::now() < deadline, "no audit line");
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.contains("\"path\":\"/v1/key/create/logged-"), "{line}");
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        % 1_000_000_007
}

#[test]
fn migrate_two_thousand_keys_between_filesystem_keystores() {
    let from = tempfile::tempdir().unwrap();
    let to = tempfile::tempdir().unwrap();
    let rng = ring::rand::SystemRandom::new();
    for i in 0..2000 {
        let key = kes::crypto::KeyVersion::generate(
            kes::crypto::KeyType::Aes256,
            "",
            kes::time::Timestamp::now(),
            &rng,
        )
        .unwrap();
        std::fs::write(
            from.path().join(format!("key-{i:04}")),
            kes::crypto::record::encode_record(&key).expose(),
        )
        .unwrap();
    }
    // A legacy record stays legacy (copied verbatim).
    std::fs::write(
        from.path().join("legacy"),
        r#"{"bytes":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}"#,
    )
    .unwrap();
    let cfg = |dir: &std::path::Path, name: &str| {
        let p = from
            .path()
            .parent()
            .unwrap()
            .join(format!("{name}-{}.yml", rand_suffix()));
        std::fs::write(
            &p,
            format!("keystore:\n  fs:\n    path: {}\n", dir.display()),
        )
        .unwrap();
        p
    };
    let (a, b) = (cfg(from.path(), "from"), cfg(to.path(), "to"));
    let out = kes(
        None,
        &[
            "migrate",
            "--from",
            a.to_str().unwrap(),
            "--to",
            b.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Migrated 2001 keys"),
        "{}",
        stderr(&out)
    );
    for entry in std::fs::read_dir(from.path()).unwrap() {
        let entry = entry.unwrap();
        let copied = std::fs::read(to.path().join(entry.file_name())).unwrap();
        assert_eq!(
            copied,
            std::fs::read(entry.path()).unwrap(),
            "{:?}",
            entry.file_name()
        );
    }
    // Again: every key exists; --merge skips, plain fails.
    let again = kes(
        None,
        &[
            "migrate",
            "--from",
            a.to_str().unwrap(),
            "--to",
            b.to_str().unwrap(),
        ],
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains(
            "2001 of the 2001 keys to migrate already exist in the target keystore ('key-0000', 'key-0001', 'key-0002', 'key-0003', 'key-0004', …); nothing was migrated"
        ),
        "{}",
        stderr(&again)
    );
    let merged = kes(
        None,
        &[
            "migrate",
            "--merge",
            "--from",
            a.to_str().unwrap(),
            "--to",
            b.to_str().unwrap(),
            "key-000*",
        ],
    );
    assert!(
        stderr(&merged).contains("Migrated 0 keys (10 already present, skipped)"),
        "{}",
        stderr(&merged)
    );
}

/// A config for `kes server` whose keystore directory and key do not exist yet.
fn check_fixture(extra: &str) -> (TlsFiles, std::path::PathBuf, std::path::PathBuf, String) {
    let tls = tls_files();
    let keys = tls.dir.path().join("keys-not-created");
    let (_, admin) = new_api_key();
    let path = tls.dir.path().join("config.yml");
    std::fs::write(&path, config_yaml(&tls, &admin, &keys, extra)).unwrap();
    (tls, path, keys, admin)
}

#[test]
fn server_check_validates_the_config_and_starts_nothing() {
    let port = free_port();
    let (tls, path, keys, admin) = check_fixture(&format!(
        "address: 127.0.0.1:{port}\nkeys:\n- name: declared\npolcy:\n  app:\n    allow: [/v1/status]\n"
    ));
    // Typos and footguns: valid, with a warning each.
    let footguns = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&admin, &admin.to_ascii_uppercase())
        .replace("tls:\n", "tls:\n  pasword: x\n")
        + "api:\n  /v1/key/decrypt/:\n    skip_auth: true\n  /v1/stats:\n    timeout: 5s\n";
    std::fs::write(&path, footguns).unwrap();
    let started = Instant::now();
    let out = kes(
        None,
        &["server", "--config", path.to_str().unwrap(), "--check"],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        stdout(&out).contains("configuration is valid"),
        "{}",
        stdout(&out)
    );
    for want in [
        "warning: polcy: unknown key, ignored; did you mean 'policy'?",
        "warning: tls.pasword: unknown key, ignored; did you mean 'tls.password'?",
        "warning: admin.identity: '",
        "has uppercase letters",
        "warning: api./v1/key/decrypt/.skip_auth: any client, even one without a certificate",
        "warning: api./v1/stats: not a route, ignored",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    // Nothing was started: no keystore directory, no key, the port is free.
    assert!(!keys.exists(), "--check opened the keystore");
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("--check left the port bound");

    // Each kind of error: exit 1 with the error.
    let base = std::fs::read_to_string(&path).unwrap();
    let cases = [
        (
            base.replace(
                &format!("cert: {}", tls.cert.display()),
                "cert: /nonexistent/server.cert",
            ),
            "/nonexistent/server.cert",
        ),
        (
            base.replace(&format!("path: {}", keys.display()), "path: \"\""),
            "keystore.fs.path: no path specified",
        ),
        (
            base.replace(
                &format!("  fs:\n    path: {}\n", keys.display()),
                "  hsm:\n    endpoint: https://hsm.example\n",
            ),
            "keystore.hsm: this keystore is not supported",
        ),
        (
            base.replace("keys:\n", "log:\n  error: loudly\nkeys:\n"),
            "log.error: 'loudly' is not a log level",
        ),
        (base.replace("version: v1", "version: v2"), "version: 'v2'"),
        // MinKMS enclaves: named with their path and the rule (`--` would make stored names
        // ambiguous; 41 bytes is past ENCLAVE_NAME_BYTES_MAX).
        (
            base.replace("keys:\n", "enclaves:\n- tenant-1\n- a--b\nkeys:\n"),
            "enclaves[1]: 'a--b' is not a valid enclave name (an enclave name is 1 to 40 bytes",
        ),
        (
            base.replace(
                "keys:\n",
                &format!("enclaves: [{}]\nkeys:\n", "e".repeat(41)),
            ),
            "enclaves[0]: 'eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee' is not a valid enclave name",
        ),
        (
            base.replace("keys:\n", "enclaves: [default]\nkeys:\n"),
            "enclaves[0]: 'default' always exists",
        ),
    ];
    for (yaml, want) in cases {
        std::fs::write(&path, &yaml).unwrap();
        let out = kes(
            None,
            &["server", "--config", path.to_str().unwrap(), "--check"],
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{want}: {err}");
        assert!(
            err.contains("Error: ") && err.contains(want),
            "{want}: {err}"
        );
        assert!(!stdout(&out).contains("valid"), "{want}");
    }
    assert!(!keys.exists());

    // --check needs --config.
    let out = kes(None, &["server", "--dev", "--check"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--check needs --config"));
}

/// A misspelled key inside a keystore block is named with its full path and the key meant,
/// never with its value, both when the config stays valid (an optional field) and when the
/// typo makes it invalid (a required field then reads as missing); `kes migrate` says so too.
#[test]
fn check_names_misspelled_keystore_keys() {
    let (tls, path, keys, _admin) = check_fixture("");
    let base = std::fs::read_to_string(&path).unwrap();
    let fs_block = format!("  fs:\n    path: {}\n", keys.display());
    let check = |block: &str| {
        std::fs::write(&path, base.replace(&fs_block, block)).unwrap();
        kes(
            None,
            &["server", "--config", path.to_str().unwrap(), "--check"],
        )
    };

    let out =
        check("  aws:\n    secretsmanager:\n      region: us-east-1\n      kmsky: alias/kes\n");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(stdout(&out).contains("configuration is valid"));
    assert_eq!(
        err.trim_end(),
        "warning: keystore.aws.secretsmanager.kmsky: unknown key, ignored; did you mean 'keystore.aws.secretsmanager.kmskey'?"
    );

    let out = check(
        "  vault:\n    endpoint: http://127.0.0.1:8200\n    approle:\n      id: kes-role\n      secert: VAULT-SECRET-VALUE\n",
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let hint = "warning: keystore.vault.approle.secert: unknown key, ignored; did you mean 'keystore.vault.approle.secret'?";
    let error = "keystore.vault.approle: id and secret are required";
    let (at_hint, at_error) = (err.find(hint), err.find(error));
    assert!(
        at_hint.is_some() && at_error.is_some() && at_hint < at_error,
        "the hint, then the error: {err}"
    );
    assert!(!err.contains("VAULT-SECRET-VALUE"), "{err}");
    assert!(!stdout(&out).contains("valid"));

    // kes migrate: the file is named, the migration goes on.
    let (from, to) = (tls.dir.path().join("from"), tls.dir.path().join("to"));
    std::fs::create_dir(&from).unwrap();
    let from_yml = tls.dir.path().join("from.yml");
    let to_yml = tls.dir.path().join("to.yml");
    std::fs::write(
        &from_yml,
        format!(
            "keystore:\n  fs:\n    path: {}\n    pth: x\n",
            from.display()
        ),
    )
    .unwrap();
    std::fs::write(
        &to_yml,
        format!("keystore:\n  fs:\n    path: {}\n", to.display()),
    )
    .unwrap();
    let out = kes(
        None,
        &[
            "migrate",
            "--from",
            from_yml.to_str().unwrap(),
            "--to",
            to_yml.to_str().unwrap(),
        ],
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "warning: '{}': keystore.fs.pth: unknown key, ignored; did you mean 'keystore.fs.path'?",
            from_yml.display()
        )),
        "{err}"
    );
    assert!(err.contains("Migrated 0 keys"), "{err}");
}

/// Every keystore example the docs show (server-config.yaml's commented blocks, README's
/// table and yaml blocks) uses only keys kes knows. (Each server-config.yaml example also
/// passes `--check` without a warning in its keystore's tests.)
#[test]
fn every_documented_keystore_example_lints_clean() {
    let blocks = documented_keystore_blocks();
    for want in ["aws", "entrust", "fortanix", "gemalto", "gcp", "azure"] {
        assert!(blocks.iter().any(|b| b == want), "no {want} in {blocks:?}");
    }
    let mut examples: Vec<(String, String)> = blocks
        .iter()
        .map(|b| {
            (
                format!("server-config.yaml {b}"),
                documented_keystore_yaml(b),
            )
        })
        .collect();
    examples.push(("server-config.yaml".into(), server_config_example()));
    let readme = readme_keystore_examples();
    assert!(readme.len() >= 8, "{readme:?}");
    examples.extend(readme);
    for (place, yaml) in examples {
        let root: serde_yaml::Value =
            serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{place}: {e}\n{yaml}"));
        assert!(root["keystore"].is_mapping(), "{place}: {yaml}");
        let warnings = kes::config::unknown_key_warnings(&yaml);
        assert!(warnings.is_empty(), "{place}: {warnings:?}\n{yaml}");
    }
}

#[test]
fn server_start_warns_about_config_footguns() {
    let (_tls, path, _keys, admin) = check_fixture("polcy:\n  app:\n    allow: [/v1/status]\n");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&admin, &admin.to_ascii_uppercase());
    std::fs::write(&path, text).unwrap();
    let server = bin_server(&["--config", path.to_str().unwrap()]);
    assert!(
        server
            .stdout_lines
            .iter()
            .any(|l| l.starts_with("Admin") && l.contains("<disabled>")),
        "{:?}",
        server.stdout_lines
    );
    assert!(server.wait_stderr(
        "warning: polcy: unknown key, ignored; did you mean 'policy'?",
        Duration::from_secs(5)
    ));
    assert!(server.wait_stderr("has uppercase letters", Duration::from_secs(5)));
}

/// `kes metric` summarises `/v1/metrics`; `--raw --detail` prints the detailed exposition.
#[test]
fn metric_command_reads_the_plain_and_the_detailed_metrics() {
    let s = dev_server();
    ok(kes(Some(&s), &["key", "create", "-k", "m"]));
    let out = ok(kes(
        Some(&s),
        &["metric", "-k", "--count", "2", "--rate", "100ms"],
    ));
    assert!(out.contains("Requests  OK 1  4xx 0  5xx 0"), "{out}");
    assert!(out.contains("Rate "), "{out}");
    let raw = ok(kes(Some(&s), &["metric", "-k", "--raw", "--count", "1"]));
    assert!(raw.contains("kes_system_mem_heap_objects "), "{raw}");
    assert!(!raw.contains("kes_requests_total"), "{raw}");
    let detail = ok(kes(
        Some(&s),
        &["metric", "-k", "--raw", "--detail", "--count", "1"],
    ));
    assert!(detail.contains("kes_cache_hits_total "), "{detail}");
    assert!(
        detail.contains("kes_requests_total{route=\"/v1/key/create/\",code=\"200\"} 1"),
        "{detail}"
    );
}
