//! Fortanix Data Security Manager (formerly SDKMS) keystore (`keystore.fortanix.sdkms`),
//! stored exactly as upstream KES stores it, so a DSM that upstream filled works unchanged
//! and back:
//!
//! * one security object per key: imported with `PUT /crypto/v1/keys`
//!   `{"obj_type":"OPAQUE","name":<key name>,"group_id":<group_id, when set>,
//!   "key_ops":["EXPORT","APPMANAGEABLE"],"value":<base64 of the record>,"enabled":true}`
//!   (201; 409 = exists);
//! * read with `POST /crypto/v1/keys/export` `{"name":…}` (→ `value`, base64; a disabled
//!   object is an error), deleted by its `kid` (from the export) with
//!   `DELETE /crypto/v1/keys/<kid>` (204), listed with
//!   `GET /crypto/v1/keys?sort=name:asc&limit=100[&start=<last name>]`;
//! * the status probe is a plain `GET` of the endpoint: any HTTP answer means reachable.
//!
//! Authentication: the API key buys a session (`POST /sys/v1/session/auth` with
//! `Authorization: Basic <api key>` → `{"access_token","expires_in"}`); calls carry
//! `Authorization: Bearer <access token>`, renewed after half its lifetime and at once when
//! the service answers 401. (Upstream sends the API key itself on every call; DSM accepts
//! both, and the stored objects are the same.) kes starts without calling the service.

use std::time::Duration;

use base64::Engine;

use super::http::{other, retryable_status, retrying, Reply};
use super::json_secret;
use super::session::{describe, encode, Service};
use super::{KeyStore, StoreError};
use crate::config::FortanixConfig;
use crate::secret::SecretVec;

/// Connect + read + write timeout of one call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Names per list page (upstream's page size).
const PAGE: usize = 100;
/// Safety bound on list pages.
const LIST_PAGES_MAX: usize = 100_000;
/// Session lifetime assumed when the service does not say.
const SESSION_DEFAULT: Duration = Duration::from_secs(300);
const SERVICE: &str = "Fortanix DSM";

/// The Fortanix DSM keystore.
pub struct FortanixStore {
    config: FortanixConfig,
    svc: Service,
}

impl FortanixStore {
    /// Reads the CA file; no network I/O (the first call logs in).
    pub fn new(config: FortanixConfig) -> Result<FortanixStore, String> {
        let svc = Service::open(
            SERVICE,
            "keystore.fortanix.sdkms.endpoint",
            &config.endpoint,
            config.tls_ca.clone(),
            CALL_TIMEOUT,
        )?;
        Ok(FortanixStore { config, svc })
    }

    fn fail(&self, what: &str, reply: &Reply) -> StoreError {
        other(format!(
            "{SERVICE} {what} failed with status {}: {}",
            reply.status,
            describe(reply, &["message"], &[self.config.api_key.expose()])
        ))
    }

    /// Trades the API key for a session bearer token.
    fn login(&self) -> Result<(SecretVec, Duration), StoreError> {
        let path = format!("{}/sys/v1/session/auth", self.svc.base);
        // Sized once (`format!` grows its string, leaving copies of the key behind).
        let basic = json_secret::header_value(b"Basic ", self.config.api_key.expose().as_bytes());
        let auth = std::str::from_utf8(basic.expose()).unwrap_or_default();
        let reply = retrying(&self.svc.retry, retryable_status, || {
            self.svc
                .endpoint
                .send("POST", &path, &[("Authorization", auth)], b"")
        })?;
        if reply.status != 200 {
            return Err(self.fail("login", &reply));
        }
        // Read in place (simd-json would leave copies of the token in freed buffers).
        let raw = SecretVec::new(reply.body);
        let [token, life] = json_secret::members(raw.expose(), ["access_token", "expires_in"])
            .map_err(|_| other(format!("{SERVICE} login: invalid JSON answer")))?;
        let token = token
            .as_ref()
            .and_then(|t| t.text())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| other(format!("{SERVICE} login: the answer has no token")))?;
        let life = life
            .and_then(|d| d.uint())
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .unwrap_or(SESSION_DEFAULT);
        Ok((json_secret::header_value(b"Bearer ", token), life))
    }

    /// An authorized call, repeated on 5xx/429; a 401 logs in again once.
    fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Reply, StoreError> {
        self.svc.call(
            SERVICE,
            |_| self.login(),
            "Authorization",
            (method, path, body),
        )
    }

    /// The exported security object named `name`: (kid, value, enabled).
    fn export(&self, name: &str) -> Result<(String, SecretVec, bool), StoreError> {
        let mut body = SecretVec::with_capacity(name.len() + 16);
        {
            let mut w = crate::api::json::JsonWriter::object(body.as_mut_vec());
            w.string("name", name);
            w.finish();
        }
        let reply = self.call("POST", "/crypto/v1/keys/export", Some(body.expose()))?;
        match reply.status {
            200 => {}
            404 => return Err(StoreError::NotFound),
            _ => return Err(self.fail("export", &reply)),
        }
        let mut raw = SecretVec::new(reply.body);
        let v = simd_json::to_owned_value(raw.as_mut_vec())
            .map_err(|_| other(format!("{SERVICE} export: invalid JSON answer")))?;
        use simd_json::prelude::*;
        let kid = v
            .get("kid")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_string();
        let enabled = v.get("enabled").and_then(|e| e.as_bool()).unwrap_or(false);
        let value = v.get("value").and_then(|m| m.as_str()).unwrap_or_default();
        let mut out = SecretVec::with_capacity(value.len());
        base64::engine::general_purpose::STANDARD
            .decode_vec(value, out.as_mut_vec())
            .map_err(|_| other(format!("{SERVICE} export: the value is not base64")))?;
        Ok((kid, out, enabled))
    }
}

/// Key rotation ([`KeyStore::replace`]) is not supported here yet (the trait's default:
/// `Unsupported`). DSM can give a name a new value without a moment where the name is
/// missing: `POST /crypto/v1/keys/rekey` `{"name":…,"value":<base64>}` imports a replacement
/// object that takes over the name (the SDKs' `rotate_sobject`). It has no precondition on
/// the old value, so it would be read-compare-write. Not done yet because the replaced
/// object stays behind under another name, linked to its replacement: a delete would have
/// to follow those links to remove every version, and a list would have to leave the
/// renamed objects out, and how DSM renames them is not in the public API reference we
/// could read. Delete and re-create is not an option: the key would not exist in between.
impl KeyStore for FortanixStore {
    fn display_name(&self) -> String {
        format!("Fortanix SDKMS: {}", self.config.endpoint)
    }

    fn status(&self) -> Result<Duration, StoreError> {
        self.svc.probe()
    }

    fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let mut body = SecretVec::with_capacity(160 + name.len() + value.len() * 4 / 3);
        {
            let mut w = crate::api::json::JsonWriter::object(body.as_mut_vec());
            w.string("obj_type", "OPAQUE").string("name", name);
            if !self.config.group_id.is_empty() {
                w.string("group_id", &self.config.group_id);
            }
            w.string_array("key_ops", ["EXPORT", "APPMANAGEABLE"])
                .base64("value", value)
                .bool("enabled", true);
            w.finish();
        }
        let reply = self.call("PUT", "/crypto/v1/keys", Some(body.expose()))?;
        match reply.status {
            201 => Ok(()),
            409 => Err(StoreError::AlreadyExists),
            _ => Err(self.fail("import", &reply)),
        }
    }

    fn get(&self, name: &str) -> Result<SecretVec, StoreError> {
        let (_, value, enabled) = self.export(name)?;
        if !enabled {
            return Err(other(format!(
                "{SERVICE}: the security object is disabled and cannot be used until enabled again"
            )));
        }
        Ok(value)
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        let (kid, _, _) = self.export(name)?;
        if kid.is_empty() {
            return Err(other(format!("{SERVICE} export: the answer has no kid")));
        }
        let reply = self.call("DELETE", &format!("/crypto/v1/keys/{}", encode(&kid)), None)?;
        match reply.status {
            200 | 204 => Ok(()),
            404 => Err(StoreError::NotFound),
            _ => Err(self.fail("delete", &reply)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut names: Vec<String> = Vec::new();
        let mut start: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..LIST_PAGES_MAX {
            let mut path = format!("/crypto/v1/keys?sort=name:asc&limit={PAGE}");
            if let Some(s) = &start {
                path.push_str("&start=");
                path.push_str(&encode(s));
            }
            let reply = self.call("GET", &path, None)?;
            if reply.status != 200 {
                return Err(self.fail("list", &reply));
            }
            let mut body = reply.body;
            let v = simd_json::to_owned_value(&mut body)
                .map_err(|_| other(format!("{SERVICE} list: invalid JSON answer")))?;
            use simd_json::prelude::*;
            let page: Vec<String> = v
                .as_array()
                .map(|a| a.as_slice())
                .unwrap_or_default()
                .iter()
                .filter_map(|o| o.get("name").and_then(|n| n.as_str()))
                .map(str::to_string)
                .collect();
            // `start` may or may not repeat the object it names: only unseen names count.
            let new: Vec<String> = page
                .into_iter()
                .filter(|n| seen.insert(n.clone()))
                .collect();
            start = new.last().cloned();
            names.extend(new.into_iter().filter(|n| n.starts_with(prefix)));
            // Servers may cap pages below `limit`: only a page with nothing new ends it.
            if start.is_none() {
                names.sort();
                names.dedup();
                return Ok(names);
            }
        }
        Err(other(format!("{SERVICE} list: too many pages")))
    }
}
