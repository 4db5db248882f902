//! `kes migrate` between keystores, as a user runs it: keys created through a running
//! `kes server` on the source (so the records are real), copied to the target with the
//! default (refuses when keys exist, writing nothing), `--merge` (skips them) and `--force`
//! (overwrites them), then a `kes server` on the target decrypts ciphertexts made before the
//! migration. Pairs: the filesystem with a real OpenBao (`bao`), with moto (`moto_server`)
//! and with the Fortanix stand-in, both ways; and a target that is down.

mod common;
mod standin;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::bao::{start_bao, vault_yaml};
use common::moto::{start_moto, Moto};
use common::*;
use kes::keystore::{KeyStore, StoreError};

/// A keystore as `kes migrate` and `kes server` see it: its `keystore:` section, the
/// variables its `${VAR}`s need, and the credentials that must never be printed.
struct Store {
    keystore_yaml: String,
    env: Vec<(&'static str, String)>,
    secrets: Vec<String>,
}

impl Store {
    fn fs(dir: &Path) -> Store {
        Store {
            keystore_yaml: format!("keystore:\n  fs:\n    path: {}\n", dir.display()),
            env: Vec::new(),
            secrets: Vec::new(),
        }
    }

    /// K/V v2 of [`start_bao`]'s server, under `prefix`.
    fn vault(port: u16, prefix: &str) -> Store {
        Store {
            keystore_yaml: vault_yaml(port, true, prefix),
            env: Vec::new(),
            secrets: vec!["kes-secret".into()],
        }
    }

    /// moto's Secrets Manager.
    fn aws(m: &Moto) -> Store {
        Store::aws_at(m.port, &m.access_key, &m.secret_key, &m.kms_key)
    }

    /// Secrets Manager on loopback `port`, the secret key from the environment.
    fn aws_at(port: u16, access_key: &str, secret_key: &str, kms_key: &str) -> Store {
        Store {
            keystore_yaml: format!(
                "keystore:\n  aws:\n    secretsmanager:\n      endpoint: http://127.0.0.1:{port}\n      region: us-east-1\n      kmskey: {kms_key}\n      credentials:\n        accesskey: {access_key}\n        secretkey: ${{KES_TEST_AWS_SECRET}}\n"
            ),
            env: vec![("KES_TEST_AWS_SECRET", secret_key.into())],
            secrets: vec![secret_key.into()],
        }
    }

    /// The Fortanix stand-in at `url`, the API key from the environment.
    fn fortanix(url: &str) -> Store {
        Store {
            keystore_yaml: format!(
                "keystore:\n  fortanix:\n    sdkms:\n      endpoint: {url}\n      credentials:\n        key: ${{KES_TEST_DSM_KEY}}\n"
            ),
            env: vec![("KES_TEST_DSM_KEY", standin::fortanix::API_KEY.into())],
            secrets: vec![standin::fortanix::API_KEY.into()],
        }
    }

    /// The keystore opened directly (through the library), to look at stored values.
    fn open(&self) -> std::sync::Arc<dyn KeyStore> {
        let env = |name: &str| {
            self.env
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        };
        let config = kes::config::parse_keystore_only(&self.keystore_yaml, &env).unwrap();
        kes::keystore::open(&config).unwrap()
    }

    /// The stored value of each name (`None`: not there).
    fn values(&self, names: &[String]) -> BTreeMap<String, Option<Vec<u8>>> {
        let store = self.open();
        names
            .iter()
            .map(|n| {
                let value = match store.get(n) {
                    Ok(v) => Some(v.expose().to_vec()),
                    Err(StoreError::NotFound) => None,
                    Err(e) => panic!("{n}: {e}"),
                };
                (n.clone(), value)
            })
            .collect()
    }

    /// A keystore-only config file for `kes migrate`.
    fn migrate_config(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.keystore_yaml).unwrap();
        path
    }

    /// `kes server --config` on this keystore (a fresh process: an empty key cache).
    fn kes_server(&self, dir: &Path, tls: &TlsFiles, admin: &str) -> BinServer {
        let path = dir.join(format!("server-{}.yml", free_port()));
        std::fs::write(
            &path,
            format!(
                "admin:\n  identity: {admin}\ntls:\n  key: {}\n  cert: {}\n{}",
                tls.key.display(),
                tls.cert.display(),
                self.keystore_yaml
            ),
        )
        .unwrap();
        let env = self.env.clone();
        bin_server_with(&["--config", path.to_str().unwrap()], move |cmd| {
            cmd.envs(env);
        })
    }
}

/// A data key made by a kes server before the migration.
struct Sample {
    key: String,
    plaintext: String,
    ciphertext: String,
}

/// Creates `names` through `node` and a data key with each.
fn create_keys(node: &BinServer, api_key: &str, names: &[String]) -> Vec<Sample> {
    let mut c = client_for(&format!("https://{}", node.addr), api_key);
    names
        .iter()
        .map(|key| {
            let r = c
                .request("POST", &format!("/v1/key/create/{key}"), None, &[])
                .unwrap();
            assert_eq!(r.status, 200, "{key}: {}", body_str(&r));
            let r = c
                .request("POST", &format!("/v1/key/generate/{key}"), None, &[])
                .unwrap();
            assert_eq!(r.status, 200, "{key}: {}", body_str(&r));
            Sample {
                key: key.clone(),
                plaintext: json_str(&r, "plaintext"),
                ciphertext: json_str(&r, "ciphertext"),
            }
        })
        .collect()
}

/// `kes migrate --from from --to to [flags] pattern`, with both stores' variables set;
/// nothing of either store's credentials may be printed.
fn migrate(from: (&Store, &Path), to: (&Store, &Path), flags: &[&str], pattern: &str) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_kes"))
        .arg("migrate")
        .args(flags)
        .args(["--from", from.1.to_str().unwrap()])
        .args(["--to", to.1.to_str().unwrap(), pattern])
        .envs(from.0.env.iter().chain(&to.0.env).cloned())
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for secret in from.0.secrets.iter().chain(&to.0.secrets) {
        assert!(
            !printed.contains(secret.as_str()),
            "a credential leaked: {printed}"
        );
    }
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Keys `<prefix>-0..2` made on `source` through kes; `<prefix>-1` also made (another key)
/// on `target`. Then: the default migration refuses with the count and writes nothing;
/// `--merge` copies the other two and keeps the target's own; `--force` overwrites all
/// three (the target's own one with the source's); a kes server on the target decrypts
/// every data key made on the source; the source is as it was.
fn migrate_between(source: &Store, target: &Store, prefix: &str) {
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let names: Vec<String> = (0..3).map(|i| format!("{prefix}-{i}")).collect();
    let samples = {
        let node = source.kes_server(dir.path(), &tls, &admin);
        create_keys(&node, &api_key, &names)
    };
    {
        let node = target.kes_server(dir.path(), &tls, &admin);
        create_keys(&node, &api_key, &names[1..2]);
    }
    let before = source.values(&names);
    assert!(before.values().all(Option::is_some), "{before:?}");
    let target_own = target.values(&names[1..2])[&names[1]].clone().unwrap();
    assert_ne!(Some(&target_own), before[&names[1]].as_ref());

    let from = (source, &*source.migrate_config(dir.path(), "from.yml"));
    let to = (target, &*target.migrate_config(dir.path(), "to.yml"));
    let pattern = format!("{prefix}-*");

    let out = migrate(from, to, &[], &pattern);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "1 of the 3 keys to migrate already exist in the target keystore ('{prefix}-1'); nothing was migrated: use --merge to skip them or --force to overwrite them"
        )),
        "{}",
        stderr(&out)
    );
    let after = target.values(&names);
    assert_eq!(after[&names[0]], None, "a refused migration wrote a key");
    assert_eq!(after[&names[2]], None, "a refused migration wrote a key");

    let out = migrate(from, to, &["--merge"], &pattern);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Migrated 2 keys (1 already present, skipped)"),
        "{}",
        stderr(&out)
    );
    let after = target.values(&names);
    assert_eq!(after[&names[0]], before[&names[0]]);
    assert_eq!(
        after[&names[1]].as_ref(),
        Some(&target_own),
        "--merge overwrote"
    );
    assert_eq!(after[&names[2]], before[&names[2]]);

    let out = migrate(from, to, &["--force"], &pattern);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Migrated 3 keys (3 already present, overwritten)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(target.values(&names), before, "copied verbatim");
    assert_eq!(source.values(&names), before, "the source changed");

    let node = target.kes_server(dir.path(), &tls, &admin);
    let mut c = client_for(&format!("https://{}", node.addr), &api_key);
    for s in &samples {
        let body = format!(r#"{{"ciphertext":"{}"}}"#, s.ciphertext);
        let r = c
            .request(
                "POST",
                &format!("/v1/key/decrypt/{}", s.key),
                Some(body.as_bytes()),
                &[],
            )
            .unwrap();
        assert_eq!(r.status, 200, "{}: {}", s.key, body_str(&r));
        assert_eq!(json_str(&r, "plaintext"), s.plaintext, "{}", s.key);
    }
}

#[test]
fn filesystem_to_openbao_and_back() {
    let bao = start_bao(0);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    migrate_between(&Store::fs(a.path()), &Store::vault(bao.port, "to"), "fs");
    migrate_between(
        &Store::vault(bao.port, "from"),
        &Store::fs(b.path()),
        "vault",
    );
}

#[test]
fn filesystem_to_aws_secrets_manager_and_back() {
    let m = start_moto();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    migrate_between(&Store::fs(a.path()), &Store::aws(&m), "fs");
    migrate_between(&Store::aws(&m), &Store::fs(b.path()), "aws");
}

#[test]
fn filesystem_to_fortanix_and_back() {
    let (standin, state) = standin::fortanix::start(Duration::from_secs(3600));
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    migrate_between(&Store::fs(a.path()), &Store::fortanix(&standin.url()), "fs");
    migrate_between(
        &Store::fortanix(&standin.url()),
        &Store::fs(b.path()),
        "dsm",
    );
    let rejected = state.lock().unwrap().rejected.clone();
    assert!(rejected.is_empty(), "{rejected:?}");
}

/// A target nothing answers for (a Vault, an AWS or a Fortanix endpoint on a port nobody
/// listens on): the migration fails at once naming the target, and the source is as it was.
#[test]
fn a_target_that_is_down_fails_clearly_and_leaves_the_source_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let tls = tls_files();
    let (api_key, admin) = new_api_key();
    let source = Store::fs(keys.path());
    let names: Vec<String> = (0..2).map(|i| format!("down-{i}")).collect();
    create_keys(
        &source.kes_server(dir.path(), &tls, &admin),
        &api_key,
        &names,
    );
    let before = source.values(&names);
    let from = source.migrate_config(dir.path(), "from.yml");

    let port = free_port(); // nothing listens there
    let url = format!("http://127.0.0.1:{port}");
    let targets = [
        (Store::vault(port, "kes"), "Hashicorp Vault"),
        (
            Store::aws_at(port, "AKIDEXAMPLE", "secret-NOT-TO-BE-PRINTED", ""),
            "AWS SecretsManager",
        ),
        (Store::fortanix(&url), "Fortanix SDKMS"),
    ];
    for (target, display) in &targets {
        let to = target.migrate_config(dir.path(), "to.yml");
        let started = Instant::now();
        let out = migrate((&source, &from), (target, &to), &[], "*");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!(
                "Error: cannot reach the target keystore ({display}: {url})"
            )),
            "{err}"
        );
        assert!(err.contains("unreachable"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(source.values(&names), before, "the source changed");
    }
}
