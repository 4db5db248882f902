//! What upstream KES itself wrote into its keystores (`../shared/fixtures/upstream-kes/*.json`,
//! described by that folder's README): the stored records, the store setup, and DEKs and
//! ciphertexts upstream made with each key. A keystore test loads a record into a fresh store
//! of its kind, runs our server over it and proves with [`assert_serves_vectors`] that it
//! decrypts upstream's ciphertexts.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine;
use serde::Deserialize;

use super::{body_str, client_for, json_str, B64};

/// One fixture file (`fs`, `vault-kv1`, `vault-kv2`, `vault-kv2-transit`, `aws-secretsmanager`).
#[derive(Deserialize)]
pub struct Fixture {
    /// Where it was read from (for messages).
    #[serde(skip)]
    pub path: PathBuf,
    /// E.g. `upstream-kes/vault-kv2`.
    pub fixture: String,
    /// The exact server config upstream ran with (ports and paths as `<...>` placeholders).
    pub kes_config_yaml: String,
    pub keys: BTreeMap<String, Key>,
    /// The transit key (`vault-kv2-transit` only).
    pub transit_key: Option<TransitKey>,
    /// How the store was set up (Vault and AWS only).
    pub store_setup: Option<StoreSetup>,
}

/// The store's setup as upstream's run had it.
#[derive(Deserialize)]
pub struct StoreSetup {
    /// Vault: the AppRole policy (HCL).
    pub policy_hcl: Option<String>,
    /// Vault: the mounts by path (`kv2/`, `transit/`).
    #[serde(default)]
    pub mount: BTreeMap<String, Mount>,
    /// AWS: the KMS key and its alias.
    pub kms_key: Option<KmsKeySetup>,
}

/// A Vault mount as `bao secrets list` showed it.
#[derive(Deserialize)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub options: Option<BTreeMap<String, String>>,
}

impl Mount {
    /// A K/V mount of version 2.
    pub fn is_kv_v2(&self) -> bool {
        self.kind == "kv"
            && self
                .options
                .as_ref()
                .and_then(|o| o.get("version"))
                .is_some_and(|v| v == "2")
    }
}

#[derive(Deserialize)]
pub struct KmsKeySetup {
    pub alias: String,
}

/// One key upstream created: what the store holds and what upstream made with it.
#[derive(Deserialize)]
pub struct Key {
    pub stored: Stored,
    pub vectors: Vec<Vector>,
    /// What `kes key info --json` printed on upstream.
    pub kes_key_info: KeyInfo,
}

/// `kes key info --json` on upstream.
#[derive(Deserialize)]
pub struct KeyInfo {
    pub created_at: String,
    pub created_by: String,
}

/// What the store holds for a key, as read back with the store's own tools. Which members
/// are present depends on the store; the accessors on [`Key`] name what is missing.
#[derive(Deserialize)]
pub struct Stored {
    // fs
    pub path: Option<String>,
    pub mode: Option<String>,
    pub content_b64: Option<String>,
    // Vault
    pub mount: Option<String>,
    pub kv_path: Option<String>,
    pub value: Option<String>,
    pub transit: Option<StoredTransit>,
    #[serde(default)]
    pub requests_openbao_received_from_kes: Vec<VaultRequest>,
    // AWS Secrets Manager
    #[serde(rename = "SecretString")]
    pub secret_string: Option<String>,
    #[serde(rename = "KmsKeyId")]
    pub kms_key_id: Option<String>,
}

/// One request upstream sent to OpenBao for a key (from OpenBao's raw audit log).
#[derive(Deserialize)]
pub struct VaultRequest {
    pub operation: String,
    pub path: String,
    pub request_data: Option<serde_json::Value>,
}

/// A transit-wrapped record: the `vault:v1:` ciphertext and the record it wraps.
#[derive(Deserialize)]
pub struct StoredTransit {
    pub ciphertext: String,
    pub record_text: String,
}

/// A DEK or ciphertext upstream made with a key.
#[derive(Deserialize)]
pub struct Vector {
    pub made_with: String,
    pub context_b64: Option<String>,
    pub plaintext_b64: String,
    pub ciphertext_b64: String,
}

#[derive(Deserialize)]
pub struct TransitKey {
    pub name: String,
    pub backup_as_read: TransitBackup,
}

#[derive(Deserialize)]
pub struct TransitBackup {
    pub data: TransitBackupData,
}

#[derive(Deserialize)]
pub struct TransitBackupData {
    pub backup: String,
}

/// The folder of the upstream fixtures, beside the repository.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/upstream-kes")
}

/// Loads `<name>.json` from [`fixtures_dir`]; panics with the path when it is missing or
/// not what the README describes.
pub fn load(name: &str) -> Fixture {
    let path = fixtures_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the upstream KES fixtures are needed: cannot read {} ({e}); they live in \
             ../shared/fixtures/upstream-kes beside the repository",
            path.display()
        )
    });
    let mut fixture: Fixture = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: not an upstream-kes fixture: {e}", path.display()));
    assert!(
        !fixture.keys.is_empty(),
        "{}: the fixture holds no keys",
        path.display()
    );
    fixture.path = path;
    fixture
}

impl Fixture {
    /// The keys with their names, in name order.
    pub fn keys(&self) -> impl Iterator<Item = (&str, &Key)> {
        self.keys.iter().map(|(n, k)| (n.as_str(), k))
    }

    /// The store setup; panics when absent.
    pub fn store_setup(&self) -> &StoreSetup {
        self.store_setup
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no store_setup", self.path.display()))
    }

    /// The transit key (name, `transit/backup` to restore it); panics when absent.
    pub fn transit_key(&self) -> &TransitKey {
        self.transit_key
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no transit_key", self.path.display()))
    }
}

fn need<'a>(what: &str, v: &'a Option<String>) -> &'a str {
    v.as_deref()
        .unwrap_or_else(|| panic!("fixture key has no stored.{what}"))
}

impl Key {
    /// Vault: the string stored under the data key named after the key.
    pub fn vault_value(&self) -> &str {
        need("value", &self.stored.value)
    }

    /// Vault: the mount upstream wrote to (`kv1`, `kv2`, `kv2-transit`).
    pub fn vault_mount(&self) -> &str {
        need("mount", &self.stored.mount)
    }

    /// Vault: the path of the entry inside the mount (`kes-fixtures/<name>`).
    pub fn vault_kv_path(&self) -> &str {
        need("kv_path", &self.stored.kv_path)
    }

    /// Vault, transit: the record text the stored `vault:v1:` value wraps.
    pub fn transit_record_text(&self) -> &str {
        &self
            .stored
            .transit
            .as_ref()
            .expect("fixture key has no stored.transit")
            .record_text
    }

    /// fs: the file's bytes.
    pub fn file_bytes(&self) -> Vec<u8> {
        B64.decode(need("content_b64", &self.stored.content_b64))
            .expect("stored.content_b64 is base64")
    }

    /// fs: the file's mode (e.g. `0o600`).
    pub fn file_mode(&self) -> u32 {
        u32::from_str_radix(need("mode", &self.stored.mode), 8).expect("stored.mode is octal")
    }

    /// AWS: the secret's `SecretString`.
    pub fn secret_string(&self) -> &str {
        need("SecretString", &self.stored.secret_string)
    }

    /// AWS: the `KmsKeyId` the secret was created with (an alias).
    pub fn kms_key_id(&self) -> &str {
        need("KmsKeyId", &self.stored.kms_key_id)
    }
}

/// The server at `endpoint` describes `name` with upstream's creation time and creator.
pub fn assert_describes_as_upstream(endpoint: &str, api_key: &str, name: &str, key: &Key) {
    let mut c = client_for(endpoint, api_key);
    let r = c
        .request("GET", &format!("/v1/key/describe/{name}"), None, &[])
        .unwrap();
    assert_eq!(r.status, 200, "{name}: {}", body_str(&r));
    assert_eq!(
        json_str(&r, "created_at"),
        key.kes_key_info.created_at,
        "{name}"
    );
    assert_eq!(
        json_str(&r, "created_by"),
        key.kes_key_info.created_by,
        "{name}"
    );
}

/// The server at `endpoint` lists every key of `fixture`.
pub fn assert_lists_keys(endpoint: &str, api_key: &str, fixture: &Fixture) {
    let r = client_for(endpoint, api_key)
        .request("GET", "/v1/key/list/*", None, &[])
        .unwrap();
    let list = body_str(&r);
    assert_eq!(r.status, 200, "{list}");
    for (name, _) in fixture.keys() {
        assert!(
            list.contains(&format!("\"{name}\"")),
            "{name} not listed: {list}"
        );
    }
}

/// The decrypt request for `v` with `context` (base64) or none.
fn decrypt_body(v: &Vector, context: Option<&str>) -> String {
    match context {
        Some(c) => format!(r#"{{"ciphertext":"{}","context":"{c}"}}"#, v.ciphertext_b64),
        None => format!(r#"{{"ciphertext":"{}"}}"#, v.ciphertext_b64),
    }
}

/// The server at `endpoint` decrypts every vector of `key` under the name `name` to
/// upstream's plaintext, and refuses each one with a different context.
pub fn assert_serves_vectors(endpoint: &str, api_key: &str, name: &str, key: &Key) {
    let mut c = client_for(endpoint, api_key);
    let path = format!("/v1/key/decrypt/{name}");
    for v in &key.vectors {
        let body = decrypt_body(v, v.context_b64.as_deref());
        let r = c
            .request("POST", &path, Some(body.as_bytes()), &[])
            .unwrap();
        assert_eq!(
            r.status,
            200,
            "{name}: upstream's vector ({}) not decrypted: {}",
            v.made_with,
            body_str(&r)
        );
        assert_eq!(
            json_str(&r, "plaintext"),
            v.plaintext_b64,
            "{name}: wrong plaintext for upstream's vector ({})",
            v.made_with
        );
        let wrong = B64.encode(br#"{"bucket":"another-bucket"}"#);
        let body = decrypt_body(v, Some(&wrong));
        let r = c
            .request("POST", &path, Some(body.as_bytes()), &[])
            .unwrap();
        assert_eq!(
            r.status,
            400,
            "{name}: a wrong context must fail ({}): {}",
            v.made_with,
            body_str(&r)
        );
    }
}
