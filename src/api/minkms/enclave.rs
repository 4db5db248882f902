//! Enclaves: named key namespaces of the MinKMS API, kept in the one keystore every node
//! shares (nodes hold no state of their own beyond caches).
//!
//! - `default` (and the empty name) is the server's own namespace, the keys the KES API
//!   serves, stored under their own names. It always exists and cannot be deleted.
//! - Any other enclave `E` is a record stored under `-e-<E>` (JSON
//!   `{"name","created_at","created_by"}`), and its key `K` is stored under `-e-<E>--<K>`.
//!   KES names never start with `-` (`routes::is_valid_name`), so the KES API can neither
//!   reach nor collide with them; enclave names never contain `--`, so a stored name has
//!   exactly one reading.
//!
//! Whether a requested enclave exists is answered from [`Known`], a node-wide cache with the
//! key cache's `cache.expiry.any`, so key commands in an enclave cost no extra keystore read.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::frame::{self, Command};
use super::message::{self, List};
use super::{ApiError, Core, DEFAULT_ENCLAVE, LIST_PAGE_KEYS_MAX};
use crate::api::router::{is_valid_name, is_valid_pattern};
use crate::api::store::{self, blocking, CallFailed};
use crate::keystore::{KeyStore, StoreError};
use crate::time::Timestamp;

/// The longest enclave name, in bytes: a stored key name `-e-<E>--<K>` is then at most
/// 3 + 40 + 2 + 80 = 125 bytes, within every keystore's name limit (Azure's 127 the
/// smallest).
pub const ENCLAVE_NAME_BYTES_MAX: usize = 40;

/// What an enclave name may be, for error texts.
pub const ENCLAVE_NAME_RULE: &str = "an enclave name is 1 to 40 bytes of A-Z, a-z, 0-9, '_' \
                                     and '-', does not start or end with '-', does not \
                                     contain '--' and is not '_' alone";

/// How an enclave's record name begins in the keystore.
pub const RECORD_PREFIX: &str = "-e-";

/// Between an enclave's name and a key's name in a stored key name.
const KEY_SEPARATOR: &str = "--";

/// The most enclaves [`Known`] remembers; past it, expired entries go, then all.
pub const KNOWN_ENCLAVES_MAX: usize = 1024;

/// Whether `name` may name an enclave other than `default` (which is valid too).
pub fn is_valid_enclave_name(name: &str) -> bool {
    name.len() <= ENCLAVE_NAME_BYTES_MAX && is_valid_name(name) && !name.contains(KEY_SEPARATOR)
}

/// The keystore name of enclave `name`'s record.
pub fn record_name(name: &str) -> String {
    format!("{RECORD_PREFIX}{name}")
}

/// The enclave a request names: the server's namespace or a created one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enclave<'a> {
    /// `default` or empty: the KES API's keys.
    Default,
    /// An enclave known to exist.
    Named(&'a str),
}

impl<'a> Enclave<'a> {
    /// The keystore name of key `key` in this enclave (`buf` holds it when it differs).
    pub fn stored_name<'s>(&self, key: &'s str, buf: &'s mut String) -> &'s str {
        match self {
            Enclave::Default => key,
            Enclave::Named(e) => {
                buf.clear();
                buf.push_str(RECORD_PREFIX);
                buf.push_str(e);
                buf.push_str(KEY_SEPARATOR);
                buf.push_str(key);
                buf
            }
        }
    }

    /// The key name a stored name has in this enclave; `None` when it is not one of its keys
    /// (in `default`: not a KES key name, such as enclave records and keys).
    pub fn key_of<'n>(&self, stored: &'n str) -> Option<&'n str> {
        match self {
            Enclave::Default => is_valid_name(stored).then_some(stored),
            Enclave::Named(e) => stored
                .strip_prefix(RECORD_PREFIX)?
                .strip_prefix(e)?
                .strip_prefix(KEY_SEPARATOR)
                .filter(|k| is_valid_name(k)),
        }
    }

    /// The path `command` on key `name` is authorised as (KEY:LIST: on the prefix `name`).
    /// In `default`: the KES route it stands for; in enclave `E`: `/v1/kms/E/key/<op>/name`.
    /// `None`: cluster-level or an admin view, the admin's alone.
    pub fn policy_path(self, command: Command, name: &str, path: &mut String) -> Option<()> {
        let Enclave::Named(e) = self else {
            return command.policy_path(name, path);
        };
        let op = command.enclave_op()?;
        path.clear();
        path.push_str("/v1/kms/");
        path.push_str(e);
        path.push_str("/key/");
        path.push_str(op);
        path.push('/');
        path.push_str(name);
        if command == Command::KeyList {
            path.push('*');
        }
        Some(())
    }

    /// The literal path before the key name of `command`'s policy path (`None` as for
    /// [`Enclave::policy_path`]).
    pub fn route_prefix(self, command: Command, path: &mut String) -> Option<()> {
        self.policy_path(command, "", path)?;
        if path.ends_with('*') {
            path.pop();
        }
        Some(())
    }

    pub fn name(&self) -> &'a str {
        match self {
            Enclave::Default => DEFAULT_ENCLAVE,
            Enclave::Named(e) => e,
        }
    }
}

impl Command {
    /// The `<op>` of this key command's path in a named enclave.
    pub(super) fn enclave_op(self) -> Option<&'static str> {
        Some(match self {
            Command::KeyCreate => "create",
            Command::KeyImport => "import",
            Command::KeyStatus => "status",
            Command::KeyDelete => "delete",
            Command::KeyEncrypt => "encrypt",
            Command::KeyDecrypt => "decrypt",
            Command::KeyGenerate => "generate",
            Command::KeyMac => "mac",
            Command::KeyList => "list",
            Command::KeyListVersions => "versions",
            _ => return None,
        })
    }
}

/// The enclaves this node has seen exist, and when it last read so.
#[derive(Default)]
pub struct Known {
    seen: Mutex<HashMap<String, Instant>>,
}

impl Known {
    /// Whether `name` was seen to exist less than `max_age` ago.
    pub fn contains(&self, name: &str, max_age: Duration) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(name).is_some_and(|at| at.elapsed() < max_age)
    }

    pub fn insert(&self, name: &str, max_age: Duration) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= KNOWN_ENCLAVES_MAX && !seen.contains_key(name) {
            seen.retain(|_, at| at.elapsed() < max_age);
            if seen.len() >= KNOWN_ENCLAVES_MAX {
                seen.clear();
            }
        }
        seen.insert(name.to_string(), Instant::now());
    }

    pub fn forget(&self, name: &str) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.remove(name);
    }
}

/// An enclave record's value: `{"name","created_at","created_by"}`. The name is checked
/// ([`is_valid_enclave_name`]) and `created_by` is an `h1:` identity or empty, so neither
/// needs escaping.
pub fn encode_record(name: &str, created_at: Timestamp, created_by: &str) -> Vec<u8> {
    format!(
        r#"{{"name":"{name}","created_at":"{}","created_by":"{created_by}"}}"#,
        created_at.to_rfc3339()
    )
    .into_bytes()
}

/// Creates the enclaves a config declares (`enclaves:`) that do not exist yet, recorded as
/// created by the admin. An existing enclave is left as it is.
pub fn create_declared(store: &dyn KeyStore, names: &[String], admin: &str) -> Result<(), String> {
    let by = crate::auth::Identity::from_hex(admin)
        .map(|id| id.to_h1())
        .unwrap_or_default();
    for name in names {
        let record = encode_record(name, Timestamp::now(), &by);
        match store.create(&record_name(name), &record) {
            Ok(()) | Err(StoreError::AlreadyExists) => {}
            Err(e) => return Err(format!("enclaves: cannot create enclave '{name}': {e}")),
        }
    }
    Ok(())
}

/// A keystore call on the blocking pool. `Ok(Err(_))` is only "not found" or "already
/// exists"; other failures are logged and answered `failed`.
async fn keystore<R: Send + 'static>(
    core: &Core,
    what: &'static str,
    failed: ApiError,
    f: impl FnOnce(&dyn KeyStore) -> Result<R, StoreError> + Send + 'static,
) -> Result<Result<R, StoreError>, ApiError> {
    let store = core.shared.keystore.clone();
    match blocking(move || f(store.as_ref())).await {
        Ok(Ok(r)) => Ok(Ok(r)),
        Ok(Err(e @ (StoreError::NotFound | StoreError::AlreadyExists))) => Ok(Err(e)),
        Ok(Err(e)) => {
            let shared = &core.shared;
            shared.store_errors.report(&shared.logs, what, &e);
            Err(failed)
        }
        Err(CallFailed::Busy) => Err(ApiError::STORE_BUSY),
        Err(CallFailed::Panicked) => Err(failed),
    }
}

/// The enclave a request's path names, by its name alone (whether it exists is
/// [`ensure_exists`]'s question, asked once a command was authorised, so that an identity
/// without rights there cannot learn which enclaves exist).
pub fn parse(name: &str) -> Result<Enclave<'_>, ApiError> {
    if name.is_empty() || name == DEFAULT_ENCLAVE {
        return Ok(Enclave::Default);
    }
    if !is_valid_enclave_name(name) {
        return Err(ApiError::invalid_enclave_name(name));
    }
    Ok(Enclave::Named(name))
}

/// `default` exists at once; another enclave must, which [`Known`] answers for
/// `cache.expiry.any` after one keystore read.
pub async fn ensure_exists(core: &Core, enclave: Enclave<'_>) -> Result<(), ApiError> {
    let Enclave::Named(name) = enclave else {
        return Ok(());
    };
    let max_age = core.shared.expiry.any;
    if core.shared.enclaves.contains(name, max_age) {
        return Ok(());
    }
    if read_record(core, name).await?.is_none() {
        return Err(ApiError::KMS_ENCLAVE_NOT_FOUND);
    }
    core.shared.enclaves.insert(name, max_age);
    Ok(())
}

/// When and by whom an enclave was created.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Status {
    pub created_at: Option<Timestamp>,
    pub created_by: String,
}

/// Enclave `name`'s record, `None` when there is none.
async fn read_record(core: &Core, name: &str) -> Result<Option<Status>, ApiError> {
    let record = record_name(name);
    let got = keystore(
        core,
        "read enclave",
        ApiError::STORE_ENCLAVE_READ,
        move |s| s.get(&record),
    )
    .await?;
    let value = match got {
        Ok(v) => v,
        Err(_) => return Ok(None),
    };
    let mut text = value.expose().to_vec();
    let mut parser = core.json.borrow_mut();
    let [at, by] = parser
        .string_members(&mut text, ["created_at", "created_by"])
        .map_err(|_| ApiError::STORE_ENCLAVE_READ)?;
    Ok(Some(Status {
        created_at: at.and_then(Timestamp::parse_rfc3339),
        created_by: by.unwrap_or_default().to_string(),
    }))
}

/// Deletes every stored key of enclave `name` (keys deleted meanwhile are no error).
async fn delete_keys(core: &Core, name: &str) -> Result<(), ApiError> {
    let mut prefix = String::new();
    let prefix = Enclave::Named(name).stored_name("", &mut prefix);
    for stored in store::list(core, prefix).await? {
        match store::delete(core, &stored).await {
            Ok(()) => {}
            Err(e) if e == ApiError::KEY_NOT_FOUND => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Serves ENCLAVE:CREATE, ENCLAVE:DELETE, ENCLAVE:STATUS and ENCLAVE:LIST (the caller is
/// authorised already: they are the admin's). `creator` is the caller's `h1:` identity.
pub async fn serve(
    core: &Core,
    command: Command,
    message: &[u8],
    creator: &str,
    out: &mut Vec<u8>,
) -> Result<(), ApiError> {
    let bad = |e| ApiError::kms_bad_message(command.name(), e);
    match command {
        Command::EnclaveCreate => {
            let name = message::decode_enclave_name(message).map_err(bad)?;
            create(core, name, creator).await?;
            frame::put_frame(out, command, |_| {});
        }
        Command::EnclaveDelete => {
            let name = message::decode_enclave_name(message).map_err(bad)?;
            delete(core, name).await?;
            frame::put_frame(out, command, |_| {});
        }
        Command::EnclaveStatus => {
            let name = message::decode_enclave_name(message).map_err(bad)?;
            let status = status(core, name).await?;
            frame::put_frame(out, command, |b| {
                message::put_enclave_status(b, name, status.created_at, &status.created_by)
            });
        }
        Command::EnclaveList => {
            let m = List::decode(message).map_err(bad)?;
            list(core, &m, out).await?;
        }
        _ => return Err(ApiError::kms_unknown_command(command.code())),
    }
    Ok(())
}

/// ENCLAVE:CREATE. Keys left under the name by an earlier enclave of that name (a delete
/// that failed half-way, a node that had not yet heard of the delete) are deleted first, so
/// a new enclave starts empty.
async fn create(core: &Core, name: &str, creator: &str) -> Result<(), ApiError> {
    if name == DEFAULT_ENCLAVE {
        return Err(ApiError::KMS_ENCLAVE_EXISTS);
    }
    if !is_valid_enclave_name(name) {
        return Err(ApiError::invalid_enclave_name(name));
    }
    if read_record(core, name).await?.is_some() {
        return Err(ApiError::KMS_ENCLAVE_EXISTS);
    }
    delete_keys(core, name).await?;
    let record = encode_record(name, Timestamp::now(), creator);
    let stored = record_name(name);
    let made = keystore(
        core,
        "create enclave",
        ApiError::STORE_ENCLAVE_CREATE,
        move |s| s.create(&stored, &record),
    )
    .await?;
    if made.is_err() {
        return Err(ApiError::KMS_ENCLAVE_EXISTS);
    }
    core.shared.enclaves.insert(name, core.shared.expiry.any);
    Ok(())
}

/// ENCLAVE:DELETE: its keys, then its record (so a failure leaves an enclave to delete
/// again), then keys created meanwhile.
async fn delete(core: &Core, name: &str) -> Result<(), ApiError> {
    if name == DEFAULT_ENCLAVE {
        return Err(ApiError::KMS_DEFAULT_ENCLAVE_KEPT);
    }
    if !is_valid_enclave_name(name) {
        return Err(ApiError::invalid_enclave_name(name));
    }
    if read_record(core, name).await?.is_none() {
        return Err(ApiError::KMS_ENCLAVE_NOT_FOUND);
    }
    delete_keys(core, name).await?;
    let stored = record_name(name);
    let gone = keystore(
        core,
        "delete enclave",
        ApiError::STORE_ENCLAVE_DELETE,
        move |s| s.delete(&stored),
    )
    .await?;
    core.shared.enclaves.forget(name);
    if gone.is_err() {
        return Err(ApiError::KMS_ENCLAVE_NOT_FOUND);
    }
    delete_keys(core, name).await
}

/// ENCLAVE:STATUS: `default` has no record (no creation time, no creator).
async fn status(core: &Core, name: &str) -> Result<Status, ApiError> {
    if name == DEFAULT_ENCLAVE {
        return Ok(Status::default());
    }
    if !is_valid_enclave_name(name) {
        return Err(ApiError::invalid_enclave_name(name));
    }
    read_record(core, name)
        .await?
        .ok_or(ApiError::KMS_ENCLAVE_NOT_FOUND)
}

/// ENCLAVE:LIST: `default` and every record, sorted, from `continue_at` on with the prefix,
/// at most [`LIST_PAGE_KEYS_MAX`] (enclaves deleted meanwhile are left out).
async fn list(core: &Core, m: &List<'_>, out: &mut Vec<u8>) -> Result<(), ApiError> {
    let limit = match m.limit as usize {
        0 => LIST_PAGE_KEYS_MAX,
        n => n.min(LIST_PAGE_KEYS_MAX),
    };
    if !(m.prefix.is_empty() || is_valid_pattern(&format!("{}*", m.prefix))) {
        return Err(ApiError::invalid_pattern(m.prefix));
    }
    let prefix = record_name(m.prefix);
    let stored = keystore(
        core,
        "list enclaves",
        ApiError::STORE_ENCLAVE_LIST,
        move |s| s.list(&prefix),
    )
    .await?
    .unwrap_or_default();
    let mut names: Vec<&str> = stored
        .iter()
        .filter_map(|s| s.strip_prefix(RECORD_PREFIX))
        .filter(|n| is_valid_enclave_name(n))
        .collect();
    if DEFAULT_ENCLAVE.starts_with(m.prefix) {
        names.push(DEFAULT_ENCLAVE);
    }
    names.sort_unstable();
    names.dedup();
    let mut entries = Vec::with_capacity(limit.min(16));
    let mut continue_at = "";
    for name in names.into_iter().filter(|n| *n >= m.continue_at) {
        if entries.len() == limit {
            continue_at = name;
            break;
        }
        if name == DEFAULT_ENCLAVE {
            entries.push((name, Status::default()));
        } else if let Some(s) = read_record(core, name).await? {
            entries.push((name, s));
        }
    }
    frame::put_frame(out, Command::EnclaveList, |b| {
        for (name, s) in &entries {
            message::put_enclave_entry(b, name, s.created_at, &s.created_by);
        }
        message::put_continue_at(b, continue_at);
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enclave_names_and_stored_key_names() {
        let max = "e".repeat(ENCLAVE_NAME_BYTES_MAX);
        assert!(is_valid_enclave_name(&max));
        assert!(!is_valid_enclave_name(&format!("{max}e")));
        for bad in ["", "a--b", "-a", "a-", "_", "a/b", "a.b"] {
            assert!(!is_valid_enclave_name(bad), "{bad}");
        }
        assert!(is_valid_enclave_name("tenant-1"));

        let mut buf = String::new();
        let t = Enclave::Named("tenant-1");
        assert_eq!(
            t.stored_name("minio-key", &mut buf),
            "-e-tenant-1--minio-key"
        );
        assert_eq!(t.key_of("-e-tenant-1--minio-key"), Some("minio-key"));
        // Another enclave's keys, the record itself, a longer enclave name.
        assert_eq!(t.key_of("-e-tenant-2--minio-key"), None);
        assert_eq!(t.key_of("-e-tenant-1"), None);
        assert_eq!(Enclave::Named("tenant").key_of("-e-tenant-1--k"), None);
        assert_eq!(Enclave::Default.stored_name("k", &mut buf), "k");
        assert_eq!(Enclave::Default.key_of("-e-tenant-1--k"), None);
        assert_eq!(Enclave::Default.key_of("-e-tenant-1"), None);
        assert_eq!(Enclave::Default.key_of("k"), Some("k"));
        // The longest stored name fits Azure Key Vault's 127-character secret names.
        let longest = Enclave::Named(&max)
            .stored_name(&"k".repeat(80), &mut buf)
            .len();
        assert_eq!(longest, 125);
    }

    #[test]
    fn policy_paths_per_enclave() {
        let mut p = String::new();
        let t = Enclave::Named("tenant-1");
        t.policy_path(Command::KeyGenerate, "minio-k", &mut p)
            .unwrap();
        assert_eq!(p, "/v1/kms/tenant-1/key/generate/minio-k");
        t.policy_path(Command::KeyList, "minio-", &mut p).unwrap();
        assert_eq!(p, "/v1/kms/tenant-1/key/list/minio-*");
        t.policy_path(Command::KeyMac, "k", &mut p).unwrap();
        assert_eq!(p, "/v1/kms/tenant-1/key/mac/k");
        Enclave::Default
            .policy_path(Command::KeyMac, "k", &mut p)
            .unwrap();
        assert_eq!(p, "/v1/key/hmac/k");
        for admin in [
            Command::EnclaveCreate,
            Command::PolicyGet,
            Command::IdentityList,
        ] {
            assert_eq!(t.policy_path(admin, "k", &mut p), None);
            assert_eq!(Enclave::Default.policy_path(admin, "k", &mut p), None);
        }
        t.route_prefix(Command::KeyList, &mut p).unwrap();
        assert_eq!(p, "/v1/kms/tenant-1/key/list/");
    }

    #[test]
    fn known_enclaves_expire_and_stay_bounded() {
        let known = Known::default();
        let age = Duration::from_secs(60);
        assert!(!known.contains("a", age));
        known.insert("a", age);
        assert!(known.contains("a", age));
        assert!(!known.contains("a", Duration::ZERO));
        known.forget("a");
        assert!(!known.contains("a", age));
        for i in 0..KNOWN_ENCLAVES_MAX + 10 {
            known.insert(&format!("e{i}"), age);
        }
        let len = known.seen.lock().unwrap().len();
        assert!(len <= KNOWN_ENCLAVES_MAX, "{len}");
    }

    #[test]
    fn records_are_the_documented_json() {
        let t = Timestamp {
            seconds: 0,
            nanos: 0,
        };
        assert_eq!(
            String::from_utf8(encode_record("tenant-1", t, "h1:abc")).unwrap(),
            r#"{"name":"tenant-1","created_at":"1970-01-01T00:00:00Z","created_by":"h1:abc"}"#
        );
    }
}
