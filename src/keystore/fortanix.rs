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
use super::{KeyStore, ReplaceKind, StoreError};
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

    /// The exported security object named `name`.
    fn export(&self, name: &str) -> Result<Exported, StoreError> {
        let body = descriptor("name", name);
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
        let replaced = replaced_link(&v);
        let value = v.get("value").and_then(|m| m.as_str()).unwrap_or_default();
        let mut out = SecretVec::with_capacity(value.len());
        base64::engine::general_purpose::STANDARD
            .decode_vec(value, out.as_mut_vec())
            .map_err(|_| other(format!("{SERVICE} export: the value is not base64")))?;
        Ok(Exported {
            kid,
            value: out,
            enabled,
            replaced,
        })
    }

    /// The security object `member` (`kid` or `name`) names, without its value
    /// (`POST /crypto/v1/keys/info`): (kid, name, the kid it replaced); `None` when there is
    /// none.
    fn info(
        &self,
        member: &str,
        id: &str,
    ) -> Result<Option<(String, String, Option<String>)>, StoreError> {
        let body = descriptor(member, id);
        let reply = self.call("POST", "/crypto/v1/keys/info", Some(body.expose()))?;
        match reply.status {
            200 => {}
            404 => return Ok(None),
            _ => return Err(self.fail("lookup", &reply)),
        }
        let mut raw = reply.body;
        let v = simd_json::to_owned_value(&mut raw)
            .map_err(|_| other(format!("{SERVICE} lookup: invalid JSON answer")))?;
        use simd_json::prelude::*;
        let text = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_string()
        };
        Ok(Some((text("kid"), text("name"), replaced_link(&v))))
    }

    /// Imports `value` as a new OPAQUE object named `name` (upstream's import); its kid.
    fn import(&self, name: &str, value: &[u8]) -> Result<String, StoreError> {
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
            201 => {}
            409 => return Err(StoreError::AlreadyExists),
            _ => return Err(self.fail("import", &reply)),
        }
        let mut raw = reply.body;
        let kid = simd_json::to_owned_value(&mut raw).ok().and_then(|v| {
            use simd_json::prelude::*;
            v.get("kid").and_then(|k| k.as_str()).map(str::to_string)
        });
        Ok(kid.unwrap_or_default())
    }

    /// `DELETE /crypto/v1/keys/<kid>`.
    fn delete_kid(&self, kid: &str) -> Result<(), StoreError> {
        let reply = self.call("DELETE", &format!("/crypto/v1/keys/{}", encode(kid)), None)?;
        match reply.status {
            200 | 204 => Ok(()),
            404 => Err(StoreError::NotFound),
            _ => Err(self.fail("delete", &reply)),
        }
    }

    /// Removes the object a failed rotation imported, unless it holds another name than
    /// the one it was imported under (a replace that succeeded although its answer was
    /// lost: then it is the key). Best effort: what stays is left out of lists.
    fn discard_staged(&self, kid: &str, staged: &str) {
        if let Ok(Some((_, name, _))) = self.info("kid", kid) {
            if name == staged {
                let _ = self.delete_kid(kid);
            }
        }
    }
}

/// A disabled security object: DSM refuses to use it.
fn disabled() -> StoreError {
    other(format!(
        "{SERVICE}: the security object is disabled and cannot be used until enabled again"
    ))
}

/// What an export of a security object says.
struct Exported {
    kid: String,
    value: SecretVec,
    enabled: bool,
    /// `links.replaced`: the object this one replaced (a rotation), if any.
    replaced: Option<String>,
}

/// `{"<member>":<id>}`: a security object descriptor (by `kid` or by `name`).
fn descriptor(member: &str, id: &str) -> SecretVec {
    let mut body = SecretVec::with_capacity(id.len() * 6 + 16);
    {
        let mut w = crate::api::json::JsonWriter::object(body.as_mut_vec());
        w.string(member, id);
        w.finish();
    }
    body
}

/// `links.replaced` of a security object.
fn replaced_link(v: &simd_json::OwnedValue) -> Option<String> {
    use simd_json::prelude::*;
    v.get("links")
        .and_then(|l| l.get("replaced"))
        .and_then(|r| r.as_str())
        .filter(|r| !r.is_empty())
        .map(str::to_string)
}

/// Marks the names of the objects a rotation makes: the new value while it is imported
/// (`<name> (kes rotation <tag>)`) and the replaced object (`<name> (kes replaced <tag>)`).
/// Never part of a key name (key names have no spaces), and left out of lists.
const ROTATION_MARK: &str = " (kes ";
/// Most replaced objects `delete` follows back from a key.
const REPLACED_CHAIN_MAX: usize = 1000;

/// Whether `name` is an object a rotation made, not a key.
fn is_rotation_object(name: &str) -> bool {
    name.contains(ROTATION_MARK)
}

/// 16 random hex digits that keep one rotation's object names apart from another's.
fn rotation_tag() -> Result<String, StoreError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| other(format!("{SERVICE}: no randomness for a rotation")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Key rotation ([`KeyStore::replace`]) is read-compare-write, with DSM's documented
/// "rotate a security object to an existing security object" (`ReplaceSobject`,
/// `POST /crypto/v1/keys/replace` `{"replaced","replaced_new_name","replacement"}` → 204: the
/// replaced object is renamed, the two are linked (`links.replaced`/`links.replacement`),
/// and the replacement takes the replaced object's name; DSM REST API reference, and
/// fortanix/sdkms-client-go `sdkms/keys_generated.go`):
///
/// 1. the key is exported by name and its value compared with `old` (`Conflict`, nothing
///    written, when it differs; `NotFound` when there is none);
/// 2. `new` is imported as an OPAQUE object named `<name> (kes rotation <tag>)`;
/// 3. the replace names the key's object by name and the new one by kid, and renames the
///    old one `<name> (kes replaced <tag>)`: the name never goes missing;
/// 4. the replaced object is deleted (its record is part of the new key ring).
///
/// DSM has no precondition on the old value, so two nodes rotating the same key in the
/// same instant can lose one of the two new versions. A failed step 3 removes the object of
/// step 2. A failed step 4 leaves the old object behind, linked: `delete` follows
/// `links.replaced` from the key's object back and removes every object on the way before
/// the key's own. Names carrying the rotation mark (never a key's: key names have no
/// spaces) are left out of lists. `get` is unchanged: one export by name. DSM's own
/// `POST /crypto/v1/keys/rekey` is not used: its reference says it generates the new key
/// and does not list `value` among what a rekey may set. Delete and re-create is never
/// used: the key would not exist in between.
impl KeyStore for FortanixStore {
    fn display_name(&self) -> String {
        format!("Fortanix SDKMS: {}", self.config.endpoint)
    }

    fn status(&self) -> Result<Duration, StoreError> {
        self.svc.probe()
    }

    fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.import(name, value).map(drop)
    }

    fn get(&self, name: &str) -> Result<SecretVec, StoreError> {
        let found = self.export(name)?;
        if !found.enabled {
            return Err(disabled());
        }
        Ok(found.value)
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        let found = self.export(name)?;
        if found.kid.is_empty() {
            return Err(other(format!("{SERVICE} export: the answer has no kid")));
        }
        // The objects older rotations replaced (left behind when their removal failed)
        // go first: if removing one fails, the key is still there to delete again.
        let mut next = found.replaced;
        for _ in 0..REPLACED_CHAIN_MAX {
            let Some(kid) = next.take() else { break };
            let Some((_, _, replaced)) = self.info("kid", &kid)? else {
                break;
            };
            match self.delete_kid(&kid) {
                Ok(()) | Err(StoreError::NotFound) => {}
                Err(e) => return Err(e),
            }
            next = replaced;
        }
        self.delete_kid(&found.kid)
    }

    fn replace(&self, name: &str, old: &[u8], new: &[u8]) -> Result<(), StoreError> {
        let found = self.export(name)?;
        if !found.enabled {
            return Err(disabled());
        }
        if found.value.expose() != old {
            return Err(StoreError::Conflict);
        }
        let tag = rotation_tag()?;
        let staged = format!("{name}{ROTATION_MARK}rotation {tag})");
        let retired = format!("{name}{ROTATION_MARK}replaced {tag})");
        let kid = match self.import(&staged, new) {
            Ok(kid) if !kid.is_empty() => kid,
            Ok(_) => return Err(other(format!("{SERVICE} import: the answer has no kid"))),
            Err(StoreError::AlreadyExists) => {
                return Err(other(format!(
                    "{SERVICE} import: the rotation's object name is taken"
                )))
            }
            Err(e) => return Err(e),
        };
        let mut body = Vec::with_capacity(96 + 6 * (name.len() + retired.len()) + kid.len());
        {
            let mut w = crate::api::json::JsonWriter::object(&mut body);
            w.raw("replaced", descriptor("name", name).expose())
                .string("replaced_new_name", &retired)
                .raw("replacement", descriptor("kid", &kid).expose());
            w.finish();
        }
        let reply = match self.call("POST", "/crypto/v1/keys/replace", Some(&body)) {
            Ok(reply) => reply,
            Err(e) => {
                self.discard_staged(&kid, &staged);
                return Err(e);
            }
        };
        match reply.status {
            200 | 204 => {}
            404 => {
                self.discard_staged(&kid, &staged);
                return Err(StoreError::NotFound);
            }
            _ => {
                self.discard_staged(&kid, &staged);
                return Err(self.fail("replace", &reply));
            }
        }
        // The replaced object's record is part of the new ring: remove it. Best effort,
        // the rotation is done; `delete` removes what stays.
        if let Ok(Some((old_kid, _, _))) = self.info("name", &retired) {
            let _ = self.delete_kid(&old_kid);
        }
        Ok(())
    }

    fn replace_kind(&self) -> ReplaceKind {
        ReplaceKind::ReadCompareWrite
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
            names.extend(
                new.into_iter()
                    .filter(|n| n.starts_with(prefix) && !is_rotation_object(n)),
            );
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
