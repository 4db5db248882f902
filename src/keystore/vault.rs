//! HashiCorp Vault / OpenBao K/V keystore (storage-and-config.md §4). Records live exactly
//! where upstream KES puts them and are read as upstream reads them, so upstream nodes and
//! ours can share one Vault while a deployment switches over:
//!
//! * K/V v1: `<engine>/<prefix>/<name>`, data `{"<name>": "<value>"}`;
//! * K/V v2: `<engine>/data/<prefix>/<name>`, `{"data":{"<name>":"<value>"},"options":{"cas":0}}`,
//!   delete via the metadata path. Upstream reads version 1 only; we read the latest version
//!   and serve it when it is version 1 or a key ring (a value starting with
//!   [`KEYRING_PREFIX`], which only a key rotation of ours writes), and otherwise read
//!   version 1 as upstream (a later version another writer adds is not used);
//! * `replace` (key rotation): K/V v2 is a compare-and-set, the new value written as the next
//!   version with `options.cas` = the latest version read, so two nodes rotating at once
//!   cannot both win; K/V v1 has no check-and-set, so there it is read, compare, write
//!   ([`ReplaceKind::ReadCompareWrite`]). Upstream nodes sharing the store keep reading
//!   version 1, the key as it was before its first rotation; a rotation needs the `update`
//!   capability on the data path (upstream's documented policy grants `create` and `read`);
//! * listing with `GET <engine>[/metadata]/<prefix>?list=true` (not the `LIST` method, which
//!   many proxies refuse);
//! * with `transit`, new records are stored as the transit ciphertext of their base64; on
//!   read, only values that are transit ciphertexts (`vault:v<N>:`) are decrypted, any other
//!   value is a plaintext record (so transit can be turned on over an existing store).
//!
//! Login with AppRole or Kubernetes in the login's own namespace, else in
//! `keystore.vault.namespace` (`/` = the root); the Kubernetes JWT file is read again at every
//! login (projected tokens rotate). The token is renewed by logging in again before it
//! expires, and once more after a 403. Every call has a timeout and runs on the caller's
//! (blocking-pool) thread, through the shared client in [`super::http`], one connection per call.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::http::{other, Endpoint, Reply, TlsFiles};
use super::json_secret;
use super::token_file::read_token_file;
use super::{KeyStore, ReplaceKind, StoreError};
use crate::config::{KubernetesJwt, VaultAuth, VaultConfig};
use crate::crypto::record::KEYRING_PREFIX;
use crate::secret::SecretVec;

/// Connect + read + write timeout of one Vault call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

struct Token {
    /// Wiped when dropped.
    value: SecretVec,
    /// Log in again after this instant.
    renew_at: Instant,
}

/// The Vault keystore.
pub struct VaultStore {
    config: VaultConfig,
    endpoint: Endpoint,
    token: Mutex<Option<Token>>,
}

impl VaultStore {
    pub fn new(config: VaultConfig) -> Result<VaultStore, String> {
        let tls = TlsFiles {
            ca: config.tls_ca.clone(),
            cert: config.tls_cert.clone(),
            key: config.tls_key.clone(),
        };
        let endpoint = Endpoint::parse(
            "Vault",
            "keystore.vault.endpoint",
            &config.endpoint,
            &tls,
            CALL_TIMEOUT,
        )?;
        Ok(VaultStore {
            config,
            endpoint,
            token: Mutex::new(None),
        })
    }

    fn path(&self, name: &str, metadata: bool) -> String {
        let c = &self.config;
        let mut p = format!("/v1/{}", c.engine);
        if c.kv_v2 {
            p.push_str(if metadata { "/metadata" } else { "/data" });
        }
        if !c.prefix.is_empty() {
            p.push('/');
            p.push_str(&c.prefix);
        }
        if !name.is_empty() {
            p.push('/');
            p.push_str(name);
        }
        p
    }

    /// One HTTP exchange with Vault (no retries, as before the client was shared).
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        namespace: &str,
        body: Option<&[u8]>,
    ) -> Result<Reply, StoreError> {
        let mut headers = Vec::with_capacity(3);
        if let Some(t) = token {
            headers.push(("X-Vault-Token", t));
        }
        if !namespace.is_empty() && namespace != "/" {
            headers.push(("X-Vault-Namespace", namespace));
        }
        headers.push(("Content-Type", "application/json"));
        self.endpoint
            .send(method, path, &headers, body.unwrap_or(b""))
    }

    fn login(&self) -> Result<Token, StoreError> {
        let (path, login_namespace, body) = match &self.config.auth {
            VaultAuth::AppRole {
                engine,
                namespace,
                id,
                secret,
            } => (
                format!("/v1/auth/{engine}/login"),
                namespace.as_str(),
                json_object(&[("role_id", id), ("secret_id", secret.expose())]),
            ),
            VaultAuth::Kubernetes {
                engine,
                namespace,
                role,
                jwt,
            } => {
                let jwt = match jwt {
                    KubernetesJwt::Token(t) => SecretVec::new(t.expose().as_bytes().to_vec()),
                    KubernetesJwt::File(path) => read_token_file(path).map_err(|e| {
                        other(format!("Vault login: kubernetes.jwt: cannot read {e}"))
                    })?,
                };
                let jwt = std::str::from_utf8(jwt.expose())
                    .map_err(|_| other("Vault login: kubernetes.jwt is not text".into()))?;
                (
                    format!("/v1/auth/{engine}/login"),
                    namespace.as_str(),
                    json_object(&[("role", role), ("jwt", jwt)]),
                )
            }
        };
        let namespace = login_namespace_or(login_namespace, &self.config.namespace);
        let reply = self.call("POST", &path, None, namespace, Some(body.expose()))?;
        if reply.status != 200 {
            return Err(other(format!(
                "Vault login failed with status {}",
                reply.status
            )));
        }
        // The answer holds the token: wiped when dropped, and read without simd-json (which
        // copies its input into buffers it frees unwiped).
        let body = SecretVec::new(reply.body);
        let (value, ttl) = login_answer(body.expose())?;
        // Log in again when 80 % of the lease has passed (0 = no expiry: once an hour).
        let renew = if ttl == 0 {
            Duration::from_secs(3600)
        } else {
            Duration::from_secs(ttl * 4 / 5)
        };
        Ok(Token {
            value,
            renew_at: Instant::now() + renew,
        })
    }

    /// The token (a copy that is wiped when dropped), logging in first when there is none,
    /// it is due for renewal, or `force_login`.
    fn token(&self, force_login: bool) -> Result<SecretVec, StoreError> {
        let mut guard = self.token.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(t) if !force_login && Instant::now() < t.renew_at => Ok(t.value.clone()),
            _ => {
                let t = self.login()?;
                let value = t.value.clone();
                *guard = Some(t);
                Ok(value)
            }
        }
    }

    /// An authenticated call; logs in again once on 403 (token revoked or expired early).
    fn authed(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Reply, StoreError> {
        let token = self.token(false)?;
        let reply = self.call(
            method,
            path,
            Some(token_text(&token)?),
            &self.config.namespace,
            body,
        )?;
        if reply.status == 403 {
            let token = self.token(true)?;
            return self.call(
                method,
                path,
                Some(token_text(&token)?),
                &self.config.namespace,
                body,
            );
        }
        Ok(reply)
    }
}

/// The token and its lease in seconds (0: none) from a login answer,
/// `{"auth":{"client_token":"…","lease_duration":…}}`. The answer is read in place; the token's
/// only copy is the one returned. It goes into a header: visible ASCII only (a hostile answer
/// must not add header lines). Errors never quote the token.
fn login_answer(body: &[u8]) -> Result<(SecretVec, u64), StoreError> {
    let [auth] = json_secret::members(body, ["auth"])
        .map_err(|_| other("Vault login: invalid JSON".into()))?;
    let [token, ttl] = auth
        .and_then(|a| a.members(["client_token", "lease_duration"]))
        .ok_or_else(|| other("Vault login: no auth in the answer".into()))?;
    let token = token
        .and_then(|t| t.secret())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| other("Vault login: no client_token".into()))?;
    if !token.expose().iter().all(u8::is_ascii_graphic) {
        return Err(other(
            "Vault login: the client_token has characters a header cannot carry".into(),
        ));
    }
    Ok((token, ttl.and_then(|t| t.uint()).unwrap_or(0)))
}

/// A token as header text (login_answer let only visible ASCII in).
fn token_text(token: &SecretVec) -> Result<&str, StoreError> {
    std::str::from_utf8(token.expose()).map_err(|_| other("Vault: the token is not text".into()))
}

/// The namespace a login goes to, as upstream: the login's own (`approle.namespace`,
/// `kubernetes.namespace`; `/` = the root namespace) or else `keystore.vault.namespace`.
fn login_namespace_or<'a>(login: &'a str, store: &'a str) -> &'a str {
    if login.is_empty() {
        store
    } else {
        login
    }
}

/// `{"k":"v",…}` in a zeroizing buffer (values may be secrets).
fn json_object(pairs: &[(&str, &str)]) -> SecretVec {
    let mut out = SecretVec::with_capacity(
        64 + pairs
            .iter()
            // Sized for the worst escaping (`\u00XX`): growing would leave a copy behind.
            .map(|(k, v)| k.len() + 6 * v.len() + 8)
            .sum::<usize>(),
    );
    let mut w = crate::api::json::JsonWriter::object(out.as_mut_vec());
    for (k, v) in pairs {
        w.string(k, v);
    }
    w.finish();
    out
}

/// Whether a K/V v2 "not found" answer carries the entry's metadata (the version asked for
/// was deleted or destroyed, but the entry exists).
fn has_metadata(body: &[u8]) -> bool {
    use simd_json::prelude::*;
    simd_json::to_owned_value(&mut body.to_vec()).is_ok_and(|v| {
        v.get("data")
            .and_then(|d| d.get("metadata"))
            .is_some_and(|m| m.is_object())
    })
}

/// Whether a stored value is a transit ciphertext, `vault:v<version>:…`. A record is base64
/// (or, from old releases, JSON) and never starts that way.
fn is_transit_ciphertext(stored: &str) -> bool {
    stored
        .strip_prefix("vault:v")
        .and_then(|rest| rest.split_once(':'))
        .is_some_and(|(version, _)| {
            !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit())
        })
}

/// Vault's error text for logs (never contains a stored value).
fn vault_error(reply: &Reply) -> String {
    format!(
        "Vault answered {}: {}",
        reply.status,
        String::from_utf8_lossy(&reply.body)
            .chars()
            .take(200)
            .collect::<String>()
    )
}

impl VaultStore {
    /// With `transit`: the stored string is the transit ciphertext (`vault:v1:…`) of the
    /// record's base64; without it, the record itself.
    fn wrap(&self, value: &str) -> Result<SecretVec, StoreError> {
        let Some((engine, key)) = &self.config.transit else {
            return Ok(SecretVec::new(value.as_bytes().to_vec()));
        };
        use base64::Engine;
        let b64 = SecretVec::new(
            base64::engine::general_purpose::STANDARD
                .encode(value.as_bytes())
                .into_bytes(),
        );
        let plaintext = std::str::from_utf8(b64.expose()).map_err(|_| other("base64".into()))?;
        let reply = self.authed(
            "POST",
            &format!("/v1/{engine}/encrypt/{key}"),
            Some(json_object(&[("plaintext", plaintext)]).expose()),
        )?;
        if reply.status != 200 {
            return Err(other(vault_error(&reply)));
        }
        let mut body = reply.body;
        let v = simd_json::to_owned_value(&mut body)
            .map_err(|_| other("Vault transit: invalid JSON".into()))?;
        use simd_json::prelude::*;
        let ct = v
            .get("data")
            .and_then(|d| d.get("ciphertext"))
            .and_then(|c| c.as_str())
            .ok_or_else(|| other("Vault transit: no ciphertext".into()))?;
        Ok(SecretVec::new(ct.as_bytes().to_vec()))
    }

    /// As upstream reads: a stored value that is a transit ciphertext (`vault:v<N>:`) is
    /// decrypted with the transit key, any other value is the record itself, with or without
    /// `transit` configured (so transit can be turned on over existing plaintext records).
    fn unwrap_record(&self, stored: &str) -> Result<SecretVec, StoreError> {
        if !is_transit_ciphertext(stored) {
            return Ok(SecretVec::new(stored.as_bytes().to_vec()));
        }
        let Some((engine, key)) = &self.config.transit else {
            return Err(other(
                "Vault: the stored key is encrypted with a transit key (vault:v…:) but \
                 keystore.vault.transit is not configured"
                    .into(),
            ));
        };
        let reply = self.authed(
            "POST",
            &format!("/v1/{engine}/decrypt/{key}"),
            Some(json_object(&[("ciphertext", stored)]).expose()),
        )?;
        if reply.status != 200 {
            return Err(other(vault_error(&reply)));
        }
        let mut body = SecretVec::new(reply.body);
        let v = simd_json::to_owned_value(body.as_mut_vec())
            .map_err(|_| other("Vault transit: invalid JSON".into()))?;
        use simd_json::prelude::*;
        let pt = v
            .get("data")
            .and_then(|d| d.get("plaintext"))
            .and_then(|c| c.as_str())
            .ok_or_else(|| other("Vault transit: no plaintext".into()))?;
        use base64::Engine;
        let mut out = SecretVec::with_capacity(pt.len());
        base64::engine::general_purpose::STANDARD
            .decode_vec(pt, out.as_mut_vec())
            .map_err(|_| other("Vault transit: plaintext is not base64".into()))?;
        Ok(out)
    }
}

/// One K/V read: the stored string (wrapped, if transit) and the entry's version it is.
enum Entry {
    /// The stored string (wiped when dropped) and its K/V v2 version (0 on K/V v1).
    Value(SecretVec, u64),
    /// K/V v2: the version read is deleted or destroyed, but the entry exists; the version.
    VersionGone(u64),
    /// No such entry (or no field named after the key in it).
    Missing,
}

impl VaultStore {
    /// Reads `name`'s entry: on K/V v2 `version` (`None`: the latest).
    fn read_entry(&self, name: &str, version: Option<u64>) -> Result<Entry, StoreError> {
        let mut path = self.path(name, false);
        if let Some(v) = version.filter(|_| self.config.kv_v2) {
            path.push_str(&format!("?version={v}"));
        }
        let reply = self.authed("GET", &path, None)?;
        match reply.status {
            200 => {}
            404 if self.config.kv_v2 && has_metadata(&reply.body) => {
                return Ok(Entry::VersionGone(metadata_version(&reply.body)));
            }
            404 => return Ok(Entry::Missing),
            _ => return Err(other(vault_error(&reply))),
        }
        let mut body = SecretVec::new(reply.body);
        let value = simd_json::to_owned_value(body.as_mut_vec())
            .map_err(|_| other("Vault: invalid JSON".into()))?;
        use simd_json::prelude::*;
        let Some(data) = value.get("data") else {
            return Ok(Entry::Missing);
        };
        let (fields, version) = if self.config.kv_v2 {
            let version = data
                .get("metadata")
                .and_then(|m| m.get("version"))
                .and_then(|v| v.as_u64())
                .ok_or_else(|| other("Vault: a K/V v2 answer without its version".into()))?;
            (data.get("data"), version)
        } else {
            (Some(data), 0)
        };
        Ok(
            match fields.and_then(|f| f.get(name)).and_then(|v| v.as_str()) {
                Some(stored) => Entry::Value(SecretVec::new(stored.as_bytes().to_vec()), version),
                None => Entry::Missing,
            },
        )
    }

    /// The key's value as `get` serves it (transit unwrapped) and, on K/V v2, the entry's
    /// latest version, the one a replace must follow.
    fn current(&self, name: &str) -> Result<(SecretVec, u64), StoreError> {
        if !self.config.kv_v2 {
            return match self.read_entry(name, None)? {
                Entry::Value(stored, _) => Ok((self.unwrap_stored(&stored)?, 0)),
                Entry::VersionGone(_) | Entry::Missing => Err(StoreError::NotFound),
            };
        }
        let latest = match self.read_entry(name, None)? {
            Entry::Value(stored, version) => {
                let value = self.unwrap_stored(&stored)?;
                if version <= 1 || value.expose().starts_with(KEYRING_PREFIX.as_bytes()) {
                    return Ok((value, version));
                }
                version
            }
            Entry::VersionGone(version) => version,
            Entry::Missing => return Err(StoreError::NotFound),
        };
        // A later version another writer added (or a deleted one): version 1, as upstream.
        match self.read_entry(name, Some(1))? {
            Entry::Value(stored, _) => Ok((self.unwrap_stored(&stored)?, latest)),
            // The entry exists but its version 1 is deleted or destroyed.
            Entry::VersionGone(_) => Err(other(format!(
                "Vault: version 1 of '{name}' is deleted or destroyed; \
                 it holds the key that upstream KES reads"
            ))),
            Entry::Missing => Err(StoreError::NotFound),
        }
    }

    fn unwrap_stored(&self, stored: &SecretVec) -> Result<SecretVec, StoreError> {
        let stored = std::str::from_utf8(stored.expose())
            .map_err(|_| other("Vault: stored value is not text".into()))?;
        self.unwrap_record(stored)
    }
}

/// `data.metadata.version` of a K/V v2 answer (0 when absent).
fn metadata_version(body: &[u8]) -> u64 {
    use simd_json::prelude::*;
    simd_json::to_owned_value(&mut body.to_vec())
        .ok()
        .and_then(|v| {
            v.get("data")
                .and_then(|d| d.get("metadata"))
                .and_then(|m| m.get("version"))
                .and_then(|v| v.as_u64())
        })
        .unwrap_or(0)
}

impl KeyStore for VaultStore {
    fn display_name(&self) -> String {
        format!("Hashicorp Vault: {}", self.config.endpoint)
    }

    fn status(&self) -> Result<Duration, StoreError> {
        let start = Instant::now();
        let reply = self.call("GET", "/v1/sys/health", None, "", None)?;
        // 200 active, 429 standby, 472/473 DR/perf standby: all answer reads.
        match reply.status {
            200 | 429 | 472 | 473 => Ok(start.elapsed()),
            _ => Err(other(vault_error(&reply))),
        }
    }

    fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let value =
            std::str::from_utf8(value).map_err(|_| other("key record is not text".into()))?;
        let wrapped = self.wrap(value)?;
        let value = std::str::from_utf8(wrapped.expose())
            .map_err(|_| other("wrapped record is not text".into()))?;
        if self.config.kv_v2 {
            let mut body = SecretVec::with_capacity(value.len() + name.len() + 48);
            let v = body.as_mut_vec();
            v.extend_from_slice(b"{\"data\":");
            v.extend_from_slice(json_object(&[(name, value)]).expose().trim_ascii_end());
            v.extend_from_slice(b",\"options\":{\"cas\":0}}");
            let reply = self.authed("POST", &self.path(name, false), Some(body.expose()))?;
            return match reply.status {
                200 | 204 => Ok(()),
                400 if String::from_utf8_lossy(&reply.body).contains("check-and-set") => {
                    Err(StoreError::AlreadyExists)
                }
                _ => Err(other(vault_error(&reply))),
            };
        }
        // K/V v1 has no create-if-absent: read first (racy across nodes, as upstream).
        let path = self.path(name, false);
        let existing = self.authed("GET", &path, None)?;
        if existing.status == 200 {
            return Err(StoreError::AlreadyExists);
        }
        let reply = self.authed("PUT", &path, Some(json_object(&[(name, value)]).expose()))?;
        match reply.status {
            200 | 204 => Ok(()),
            _ => Err(other(vault_error(&reply))),
        }
    }

    fn get(&self, name: &str) -> Result<SecretVec, StoreError> {
        self.current(name).map(|(value, _)| value)
    }

    /// K/V v2: the compare is against the value `get` serves, the write a check-and-set on
    /// the latest version read. K/V v1 has no check-and-set: read, compare and write are
    /// separate calls, and a node writing between them is overwritten.
    fn replace(&self, name: &str, old: &[u8], new: &[u8]) -> Result<(), StoreError> {
        let new = std::str::from_utf8(new).map_err(|_| other("key record is not text".into()))?;
        let (current, version) = self.current(name)?;
        if current.expose() != old {
            return Err(StoreError::Conflict);
        }
        drop(current);
        let wrapped = self.wrap(new)?;
        let value = std::str::from_utf8(wrapped.expose())
            .map_err(|_| other("wrapped record is not text".into()))?;
        let reply = if self.config.kv_v2 {
            let cas = format!(",\"options\":{{\"cas\":{version}}}}}");
            let mut body = SecretVec::with_capacity(6 * (value.len() + name.len()) + 64);
            let v = body.as_mut_vec();
            v.extend_from_slice(b"{\"data\":");
            v.extend_from_slice(json_object(&[(name, value)]).expose().trim_ascii_end());
            v.extend_from_slice(cas.as_bytes());
            self.authed("POST", &self.path(name, false), Some(body.expose()))?
        } else {
            let path = self.path(name, false);
            self.authed("PUT", &path, Some(json_object(&[(name, value)]).expose()))?
        };
        match reply.status {
            200 | 204 => Ok(()),
            400 if String::from_utf8_lossy(&reply.body).contains("check-and-set") => {
                Err(StoreError::Conflict)
            }
            _ => Err(other(vault_error(&reply))),
        }
    }

    fn replace_kind(&self) -> ReplaceKind {
        if self.config.kv_v2 {
            ReplaceKind::Atomic
        } else {
            ReplaceKind::ReadCompareWrite
        }
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        // Vault answers 204 whether or not the entry existed: check first for a 404. A K/V v2
        // entry whose latest version is deleted answers 404 with its metadata: it exists.
        let existing = self.authed("GET", &self.path(name, false), None)?;
        if existing.status == 404 && !(self.config.kv_v2 && has_metadata(&existing.body)) {
            return Err(StoreError::NotFound);
        }
        let reply = self.authed("DELETE", &self.path(name, self.config.kv_v2), None)?;
        match reply.status {
            200 | 204 => Ok(()),
            404 => Err(StoreError::NotFound),
            _ => Err(other(vault_error(&reply))),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        // `GET ?list=true`, as upstream sends it: proxies and load balancers pass it, where
        // many refuse Vault's own `LIST` method.
        let reply = self.authed("GET", &format!("{}?list=true", self.path("", true)), None)?;
        match reply.status {
            200 => {}
            404 => return Ok(Vec::new()),
            _ => return Err(other(vault_error(&reply))),
        }
        let mut body = reply.body;
        let value = simd_json::to_owned_value(&mut body)
            .map_err(|_| other("Vault: invalid JSON".into()))?;
        use simd_json::prelude::*;
        let mut names: Vec<String> = value
            .get("data")
            .and_then(|d| d.get("keys"))
            .and_then(|k| k.as_array())
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| k.as_str())
                    .filter(|k| !k.ends_with('/') && k.starts_with(prefix))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_answers() {
        let (token, ttl) = login_answer(
            br#"{"auth":{"client_token":"hvs.TOK","lease_duration":2764800},"data":null}"#,
        )
        .unwrap();
        assert_eq!((token.expose(), ttl), (&b"hvs.TOK"[..], 2764800));
        let (_, ttl) = login_answer(br#"{"auth":{"client_token":"hvs.TOK"}}"#).unwrap();
        assert_eq!(ttl, 0);
        // Refused, without the token in the message.
        for (body, why) in [
            (&b"<html>"[..], "invalid JSON"),
            (br#"{"auth":null}"#, "no auth"),
            (br#"{"auth":"TOK"}"#, "no auth"),
            (br#"{"auth":{"client_token":""}}"#, "no client_token"),
            (br#"{"auth":{"client_token":7}}"#, "no client_token"),
            (
                br#"{"auth":{"client_token":"TOK\r\nX-Evil: 1"}}"#,
                "a header cannot carry",
            ),
        ] {
            let e = login_answer(body).err().unwrap().to_string();
            assert!(e.contains("Vault login: ") && e.contains(why), "{e}");
            assert!(!e.contains("TOK"), "{e}");
        }
    }
}
