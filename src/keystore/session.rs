//! Helpers the login-based keystores share (Thales CipherTrust/KeySecure, Fortanix DSM,
//! Entrust KeyControl, and the OAuth2 tokens of GCP and Azure): a cached access token that is
//! renewed before it expires (and at once when the service rejects it), the path part of an
//! endpoint URL, percent-encoding of names in paths, OAuth2 token answers, bounded reads of
//! credential files, and short error texts from a service's answer with credentials scrubbed.
//! The cache under the token ([`Renewing`]) also holds AWS's temporary credentials.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::http::{other, retryable_status, retrying, Endpoint, Reply, Retry, TlsFiles};
use super::StoreError;
use crate::secret::SecretVec;

/// What every login-based keystore holds besides its config: the endpoint (trusting the
/// block's CA), the path prefix of its URL, the session token and the retry policy.
pub struct Service {
    pub endpoint: Endpoint,
    pub base: String,
    pub session: Session,
    pub retry: Retry,
}

impl Service {
    /// Parses `url` (the config field `field` of `service`) with the block's CA file; no
    /// network I/O.
    pub fn open(
        service: &'static str,
        field: &str,
        url: &str,
        ca: Option<std::path::PathBuf>,
        timeout: Duration,
    ) -> Result<Service, String> {
        let endpoint = Endpoint::parse(
            service,
            field,
            url,
            &TlsFiles {
                ca,
                ..TlsFiles::default()
            },
            timeout,
        )?;
        Ok(Service {
            endpoint,
            base: base_path(url),
            session: Session::default(),
            retry: Retry::DEFAULT,
        })
    }
}

/// One call carrying the session's token in header `auth_header` (after `headers`' others),
/// repeated on 5xx/429 as `retry` says; a 401 drops the token and the call is made once more
/// with a fresh one (`login` is called when the session has no usable token, or one due for
/// renewal, which it gets: see [`Session::token_renewing`]). Shared by every keystore that
/// logs in (Fortanix, CipherTrust, KeyControl, GCP, Azure).
#[allow(clippy::too_many_arguments)]
pub fn call_with_token(
    service: &str,
    endpoint: &Endpoint,
    session: &Session,
    retry: &Retry,
    login: impl Fn(Option<&SecretVec>) -> Result<(SecretVec, Duration), StoreError>,
    auth_header: &'static str,
    headers: &[(&str, &str)],
    (method, path, body): (&str, &str, &[u8]),
) -> Result<Reply, StoreError> {
    for fresh in [false, true] {
        let token = session.token_renewing(&login)?;
        let auth = std::str::from_utf8(token.expose())
            .map_err(|_| other(format!("{service}: the access token is not text")))?;
        let mut all = Vec::with_capacity(headers.len() + 1);
        all.push((auth_header, auth));
        all.extend_from_slice(headers);
        let reply = retrying(retry, retryable_status, || {
            endpoint.send(method, path, &all, body)
        })?;
        if reply.status == 401 && !fresh {
            session.invalidate(&token);
            continue;
        }
        return Ok(reply);
    }
    unreachable!("the second attempt returns")
}

/// The `Content-Type` header of a JSON body, when there is one.
pub const JSON_BODY: (&str, &str) = ("Content-Type", "application/json");

/// The headers of a call to an OAuth2-protected JSON API (GCP, Azure): `Accept`, and the
/// body's `Content-Type` when the body is not empty.
pub fn json_headers(body: &[u8]) -> &'static [(&'static str, &'static str)] {
    const ACCEPT: (&str, &str) = ("Accept", "application/json");
    if body.is_empty() {
        &[ACCEPT]
    } else {
        &[ACCEPT, JSON_BODY]
    }
}

impl Service {
    /// Upstream's reachability probe: a plain `GET` of the endpoint's path; any HTTP answer
    /// means reachable. Returns the round trip.
    pub fn probe(&self) -> Result<Duration, StoreError> {
        let start = Instant::now();
        let path = if self.base.is_empty() {
            "/"
        } else {
            &self.base
        };
        self.endpoint.send("GET", path, &[], b"")?;
        Ok(start.elapsed())
    }

    /// [`call_with_token`] on this service's endpoint, session and retry policy, at `path`
    /// under the endpoint's base path, with `Authorization: <token>` (or `auth_header`) and
    /// `Content-Type: application/json` when a body is given.
    pub fn call(
        &self,
        service: &str,
        login: impl Fn(Option<&SecretVec>) -> Result<(SecretVec, Duration), StoreError>,
        auth_header: &'static str,
        (method, path, body): (&str, &str, Option<&[u8]>),
    ) -> Result<Reply, StoreError> {
        let path = format!("{}{path}", self.base);
        let headers: &[(&str, &str)] = if body.is_some() { &[JSON_BODY] } else { &[] };
        call_with_token(
            service,
            &self.endpoint,
            &self.session,
            &self.retry,
            login,
            auth_header,
            headers,
            (method, &path, body.unwrap_or_default()),
        )
    }
}

/// A value with a lifetime (an access token, temporary credentials) as its source handed it
/// out: when to fetch the next one, and until when this one may still be used.
pub struct Fresh<T> {
    pub value: T,
    /// From here on the value is renewed before use.
    pub renew_at: Instant,
    /// Until here the value is used when its renewal fails (`renew_at` or later).
    pub valid_until: Instant,
}

/// A cached value that is renewed before it expires, shared by all blocking-pool threads.
///
/// * Before `renew_at` the cached value is returned without any I/O.
/// * From `renew_at` one caller renews it. Callers that find the old value still valid
///   (before `valid_until`) do not wait for a renewal in progress: they use the old value.
///   A renewal that fails while the old value is still valid keeps the old value.
/// * With no valid value, callers wait for the renewal in progress and take its outcome; a
///   failed renewal is not repeated for `failure_hold` (the callers get its error), so a
///   source that is down costs one timeout per hold, not one per queued request.
pub struct Renewing<T> {
    current: Mutex<Option<Fresh<T>>>,
    /// Held while renewing; the last failed renewal (when, and its error).
    renewal: Mutex<Option<Failure>>,
}

struct Failure {
    at: Instant,
    unreachable: bool,
    message: String,
}

impl Failure {
    fn error(&self) -> StoreError {
        if self.unreachable {
            StoreError::Unreachable(self.message.clone())
        } else {
            super::http::other(self.message.clone())
        }
    }
}

impl<T> Default for Renewing<T> {
    fn default() -> Self {
        Renewing {
            current: Mutex::new(None),
            renewal: Mutex::new(None),
        }
    }
}

impl<T: Clone> Renewing<T> {
    /// The value at time `now` (`Instant::now()` but in tests), renewing it with `renew` when
    /// due (see the type's description).
    pub fn get(
        &self,
        now: Instant,
        failure_hold: Duration,
        renew: impl FnOnce() -> Result<Fresh<T>, StoreError>,
    ) -> Result<T, StoreError> {
        self.get_renewing(now, failure_hold, |_| renew())
    }

    /// [`get`](Self::get), where `renew` is handed the value being replaced while that is
    /// still valid (a service may renew a token it still accepts instead of a new login).
    pub fn get_renewing(
        &self,
        now: Instant,
        failure_hold: Duration,
        renew: impl FnOnce(Option<&T>) -> Result<Fresh<T>, StoreError>,
    ) -> Result<T, StoreError> {
        let valid = {
            let cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
            match cur.as_ref() {
                Some(f) if now < f.renew_at => return Ok(f.value.clone()),
                Some(f) if now < f.valid_until => Some(f.value.clone()),
                _ => None,
            }
        };
        let mut renewal = match &valid {
            Some(v) => match self.renewal.try_lock() {
                Ok(g) => g,
                Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return Ok(v.clone()),
            },
            None => self.renewal.lock().unwrap_or_else(|e| e.into_inner()),
        };
        // Another caller may have renewed (or failed to) while this one waited.
        {
            let cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(f) = cur.as_ref().filter(|f| now < f.renew_at) {
                return Ok(f.value.clone());
            }
        }
        if let Some(failed) = renewal.as_ref().filter(|f| now < f.at + failure_hold) {
            return match valid {
                Some(v) => Ok(v),
                None => Err(failed.error()),
            };
        }
        match renew(valid.as_ref()) {
            Ok(fresh) => {
                let value = fresh.value.clone();
                *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(fresh);
                *renewal = None;
                Ok(value)
            }
            Err(e) => {
                *renewal = Some(Failure {
                    // Callers that waited for this renewal started before it ended.
                    at: now.max(Instant::now()),
                    unreachable: matches!(e, StoreError::Unreachable(_)),
                    message: match &e {
                        StoreError::Unreachable(m) => m.clone(),
                        StoreError::Io(io) => io.to_string(),
                        other => other.to_string(),
                    },
                });
                match valid {
                    Some(v) => Ok(v),
                    None => Err(e),
                }
            }
        }
    }

    /// Forgets the cached value if `is_stale` says it is one the service rejected (unless
    /// another caller has already replaced it).
    pub fn invalidate(&self, is_stale: impl FnOnce(&T) -> bool) {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if cur.as_ref().is_some_and(|f| is_stale(&f.value)) {
            *cur = None;
        }
    }
}

/// A short-lived access token (the whole `Authorization` header value), renewed on demand.
///
/// The token is renewed when half its lifetime has passed (as upstream's renewal loop does).
/// If that login fails, the old token keeps being used until shortly before it expires
/// ([`TOKEN_EXPIRY_MARGIN_MIN`], or a tenth of its lifetime if longer), and the failure is
/// shared for [`LOGIN_FAILURE_HOLD`] instead of retried by every request — so a login service
/// that is down for a moment costs no request. [`Session::invalidate`] drops a token the
/// service rejected. Logins are serialized: callers without a usable token wait for one login.
#[derive(Default)]
pub struct Session {
    current: Renewing<SecretVec>,
}

/// A token is not used closer than this to its expiry.
pub const TOKEN_EXPIRY_MARGIN_MIN: Duration = Duration::from_secs(1);
/// A failed login is answered to every caller for this long before the next attempt.
pub const LOGIN_FAILURE_HOLD: Duration = Duration::from_secs(2);

impl Session {
    /// The current token, logging in first when there is none or it is due for renewal.
    /// `login` returns the header value and the token's lifetime.
    pub fn token(
        &self,
        login: impl FnOnce() -> Result<(SecretVec, Duration), StoreError>,
    ) -> Result<SecretVec, StoreError> {
        self.token_renewing(|_| login())
    }

    /// [`token`](Self::token), where `login` is handed the token being replaced while that
    /// is still valid (renewal at half its lifetime), `None` when there is none.
    pub fn token_renewing(
        &self,
        login: impl FnOnce(Option<&SecretVec>) -> Result<(SecretVec, Duration), StoreError>,
    ) -> Result<SecretVec, StoreError> {
        self.current
            .get_renewing(Instant::now(), LOGIN_FAILURE_HOLD, |previous| {
                let (token, lifetime) = login(previous)?;
                let now = Instant::now();
                let margin = (lifetime / 10)
                    .max(TOKEN_EXPIRY_MARGIN_MIN)
                    .min(lifetime / 2);
                Ok(Fresh {
                    value: token,
                    renew_at: now + lifetime / 2,
                    valid_until: now + lifetime - margin,
                })
            })
    }

    /// Forgets `stale` (a token the service answered 401 to), unless another caller has
    /// already replaced it.
    pub fn invalidate(&self, stale: &SecretVec) {
        self.current.invalidate(|t| t.expose() == stale.expose());
    }

    /// Forgets the token, whatever it is (it was for something the service no longer asks).
    pub fn clear(&self) {
        self.current.invalidate(|_| true);
    }
}

/// A JSON object of string members (and `base64_value`, a member holding bytes in base64,
/// last) in a zeroizing buffer: the request bodies that carry credentials or key records.
pub fn secret_json(pairs: &[(&str, &str)], base64_value: Option<(&str, &[u8])>) -> SecretVec {
    let mut out = SecretVec::with_capacity(
        64 + pairs
            .iter()
            // Sized for the worst escaping (`\u00XX`): growing would leave a copy behind.
            .map(|(k, v)| k.len() + 6 * v.len() + 8)
            .sum::<usize>()
            + base64_value.map_or(0, |(k, v)| k.len() + v.len() * 4 / 3 + 16),
    );
    {
        let mut w = crate::api::json::JsonWriter::object(out.as_mut_vec());
        for (k, v) in pairs {
            w.string(k, v);
        }
        if let Some((k, v)) = base64_value {
            w.base64(k, v);
        }
        w.finish();
    }
    out
}

/// The path of an endpoint URL without a trailing `/` (`https://h:1/x/` → `/x`; none → "").
pub fn base_path(url: &str) -> String {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    match rest.find('/') {
        Some(i) => rest[i..].trim_end_matches('/').to_string(),
        None => String::new(),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for a name in a path or
/// a query). Valid key names pass unchanged.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `application/x-www-form-urlencoded` encoding of `value` appended to `out`, whose capacity
/// must hold three bytes per byte of `value` (no reallocation: `out` holds secrets).
pub fn encode_into(out: &mut SecretVec, value: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let out = out.as_mut_vec();
    debug_assert!(out.capacity() - out.len() >= 3 * value.len());
    for &b in value {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

/// A short description of a failed answer for logs: the JSON members named in `fields`
/// (the first present), else the body text; at most 200 characters, with every secret in
/// `secrets` replaced by `<redacted>`.
pub fn describe(reply: &Reply, fields: &[&str], secrets: &[&str]) -> String {
    let mut body = reply.body.clone();
    let mut text = String::new();
    if let Ok(v) = simd_json::to_owned_value(&mut body) {
        use simd_json::prelude::*;
        for f in fields {
            match v.get(*f) {
                Some(m) if m.as_str().is_some() => {
                    text = m.as_str().unwrap_or_default().to_string();
                    break;
                }
                Some(m) if !m.is_null() => {
                    text = m.to_string();
                    break;
                }
                _ => {}
            }
        }
    }
    if text.is_empty() {
        text = String::from_utf8_lossy(&reply.body).trim().to_string();
    }
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        text = text.replace(s, "<redacted>");
    }
    let text: String = text.chars().take(200).collect();
    text.replace(['\r', '\n'], " ")
}

/// The answer of an OAuth2 token endpoint or a cloud metadata server:
/// `{"access_token": …, "token_type": "Bearer", "expires_in": …}` (Google, Entra ID), or with
/// `expires_on` (absolute Unix seconds; Azure managed identity). Numbers may come as numeric
/// strings (Azure's managed-identity endpoints send them so). Returns the whole
/// `Authorization` value (`Bearer <token>`) and the token's lifetime (300 s when the answer
/// gives none). `source` names the sender in errors; the token never appears in one.
pub fn bearer_token(body: &[u8], source: &str) -> Result<(SecretVec, Duration), StoreError> {
    // Read in place, not with simd-json (which copies the answer into buffers it frees
    // unwiped): the token's only copy is the header built here.
    let [token, kind, expires_in, expires_on] = super::json_secret::members(
        body,
        ["access_token", "token_type", "expires_in", "expires_on"],
    )
    .map_err(|_| super::http::other(format!("{source}: the token answer is not JSON")))?;
    let token = token
        .as_ref()
        .and_then(|t| t.text())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| super::http::other(format!("{source}: the answer has no access_token")))?;
    // It goes into a header: visible ASCII only (a hostile answer must not add header lines).
    if !token.iter().all(u8::is_ascii_graphic) {
        return Err(super::http::other(format!(
            "{source}: the access_token has characters a header cannot carry"
        )));
    }
    if let Some(kind) = kind.as_ref().and_then(|t| t.text()) {
        if !kind.eq_ignore_ascii_case(b"bearer") {
            return Err(super::http::other(format!(
                "{source}: token_type '{}' is not Bearer",
                String::from_utf8_lossy(kind)
                    .chars()
                    .take(32)
                    .collect::<String>()
            )));
        }
    }
    let number = |member: Option<super::json_secret::Member<'_>>| {
        member.and_then(|e| {
            e.uint().or_else(|| {
                let text = std::str::from_utf8(e.text()?).ok()?;
                text.trim().parse().ok()
            })
        })
    };
    let lifetime_secs = match (number(expires_in), number(expires_on)) {
        (Some(secs), _) => secs,
        (None, Some(at)) => at.saturating_sub(unix_now_secs()),
        (None, None) => 300,
    };
    let mut header = SecretVec::with_capacity(token.len() + 7);
    header.as_mut_vec().extend_from_slice(b"Bearer ");
    header.as_mut_vec().extend_from_slice(token);
    Ok((header, Duration::from_secs(lifetime_secs)))
}

fn unix_now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An OAuth2 / Google / Azure error answer in one line: `status <n>: <error> <description>`
/// from `{"error": "…", "error_description": "…"}` or `{"error": {"status"|"code": "…",
/// "message": "…"}}`, else the body text; at most 200 characters of text, every secret in
/// `secrets` replaced by `<redacted>`.
pub fn oauth_error(reply: &Reply, secrets: &[&[u8]]) -> String {
    use simd_json::prelude::*;
    let mut body = reply.body.clone();
    let mut text = String::new();
    if let Ok(v) = simd_json::to_owned_value(&mut body) {
        let s = |n: Option<&simd_json::OwnedValue>| {
            n.and_then(|n| n.as_str()).unwrap_or_default().to_string()
        };
        match v.get("error") {
            Some(e) if e.is_str() => {
                text = format!("{} {}", s(Some(e)), s(v.get("error_description")));
            }
            Some(e) => {
                let code = match s(e.get("status")) {
                    c if c.is_empty() => s(e.get("code")),
                    c => c,
                };
                text = format!("{code} {}", s(e.get("message")));
            }
            None => {}
        }
    }
    if text.trim().is_empty() {
        text = String::from_utf8_lossy(&reply.body).into_owned();
    }
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        if let Ok(secret) = std::str::from_utf8(secret) {
            text = text.replace(secret, "<redacted>");
        }
    }
    let text: String = text.trim().chars().take(200).collect();
    format!(
        "status {}: {}",
        reply.status,
        text.replace(['\r', '\n'], " ")
    )
}

/// Reads a credential file of at most `bytes_max` bytes into a zeroizing buffer; `what`
/// names it in errors (`GOOGLE_APPLICATION_CREDENTIALS '/path'`).
pub fn read_credential_file(
    path: &std::path::Path,
    bytes_max: usize,
    what: &str,
) -> Result<SecretVec, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("{what}: cannot open: {e}"))?;
    // Sized once (one byte more, so that `read_to_end` sees the end without growing it): a
    // grown buffer would leave an unwiped copy of the secrets read so far.
    let size = file
        .metadata()
        .map_or(4096, |m| m.len())
        .min(bytes_max as u64) as usize;
    let mut out = SecretVec::with_capacity(size + 1);
    file.take(bytes_max as u64 + 1)
        .read_to_end(out.as_mut_vec())
        .map_err(|e| format!("{what}: cannot read: {e}"))?;
    if out.expose().len() > bytes_max {
        return Err(format!("{what}: larger than {bytes_max} bytes"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn tokens_are_cached_renewed_and_invalidated() {
        let s = Session::default();
        let logins = Cell::new(0);
        let login = |life: u64| {
            logins.set(logins.get() + 1);
            Ok((
                SecretVec::new(format!("Bearer t{}", logins.get()).into_bytes()),
                Duration::from_millis(life),
            ))
        };
        assert_eq!(s.token(|| login(60_000)).unwrap().expose(), b"Bearer t1");
        assert_eq!(s.token(|| login(60_000)).unwrap().expose(), b"Bearer t1");
        s.invalidate(&SecretVec::new(b"Bearer other".to_vec()));
        assert_eq!(s.token(|| login(60_000)).unwrap().expose(), b"Bearer t1");
        s.invalidate(&SecretVec::new(b"Bearer t1".to_vec()));
        assert_eq!(s.token(|| login(20)).unwrap().expose(), b"Bearer t2");
        std::thread::sleep(Duration::from_millis(15)); // past half of 20 ms
        assert_eq!(s.token(|| login(60_000)).unwrap().expose(), b"Bearer t3");
        let e = s.token(|| Err(StoreError::NotFound));
        assert_eq!(s.token(|| login(1)).unwrap().expose(), b"Bearer t3");
        assert!(e.is_ok(), "a valid token needs no login");
    }

    /// `Renewing` on a fake clock: `t(s)` is `s` seconds after `base`.
    #[test]
    fn renewing_values_are_kept_while_valid_and_refetched_when_due() {
        let base = Instant::now();
        let t = |s: u64| base + Duration::from_secs(s);
        let c: Renewing<u32> = Renewing::default();
        let fetches = Cell::new(0u32);
        // Renew at 10 s, valid until 20 s.
        let ok = |v: u32| {
            fetches.set(fetches.get() + 1);
            Ok(Fresh {
                value: v,
                renew_at: t(10),
                valid_until: t(20),
            })
        };
        let down = || -> Result<Fresh<u32>, StoreError> {
            fetches.set(fetches.get() + 1);
            Err(StoreError::Unreachable("metadata service down".into()))
        };
        let hold = Duration::from_secs(2);
        assert_eq!(c.get(t(0), hold, || ok(1)).unwrap(), 1);
        assert_eq!(c.get(t(9), hold, || ok(2)).unwrap(), 1, "not due yet");
        assert_eq!(fetches.get(), 1);
        // Due, the renewal fails, the old value is still valid: it is used.
        assert_eq!(c.get(t(11), hold, down).unwrap(), 1);
        assert_eq!(fetches.get(), 2);
        // Within the hold after a failure no new attempt is made.
        assert_eq!(c.get(t(12), hold, || ok(3)).unwrap(), 1);
        assert_eq!(fetches.get(), 2);
        // After the hold the next caller renews.
        assert_eq!(c.get(t(14), hold, || ok(4)).unwrap(), 4);
        assert_eq!(fetches.get(), 3);
        // Expired (past valid_until = 20 s) and the renewal fails: an error, never the old value.
        let e = c.get(t(21), hold, down).unwrap_err();
        assert!(matches!(e, StoreError::Unreachable(_)), "{e}");
        // The same error for callers within the hold, without a new attempt.
        let e = c.get(t(22), hold, || ok(5)).unwrap_err();
        assert!(e.to_string().contains("metadata service down"), "{e}");
        assert_eq!(fetches.get(), 4);
        assert_eq!(c.get(t(24), hold, || ok(6)).unwrap(), 6);
        // A value the service rejected is dropped; another value is not.
        c.invalidate(|v| *v == 5);
        assert_eq!(c.get(t(1), hold, || ok(7)).unwrap(), 6);
        c.invalidate(|v| *v == 6);
        assert_eq!(c.get(t(1), hold, || ok(7)).unwrap(), 7);
    }

    #[test]
    fn callers_with_a_valid_value_do_not_wait_for_a_renewal() {
        use std::sync::{mpsc, Arc};
        let c: Arc<Renewing<u32>> = Arc::default();
        let now = Instant::now();
        c.get(now, Duration::ZERO, || {
            Ok(Fresh {
                value: 1,
                renew_at: now,
                valid_until: now + Duration::from_secs(60),
            })
        })
        .unwrap();
        let (started, wait_started) = mpsc::channel();
        let (finish, wait_finish) = mpsc::channel::<()>();
        let renewer = {
            let c = c.clone();
            std::thread::spawn(move || {
                c.get(Instant::now(), Duration::ZERO, move || {
                    started.send(()).unwrap();
                    wait_finish.recv().unwrap();
                    let now = Instant::now();
                    Ok(Fresh {
                        value: 2,
                        renew_at: now + Duration::from_secs(60),
                        valid_until: now + Duration::from_secs(60),
                    })
                })
            })
        };
        wait_started.recv().unwrap();
        // The renewal is blocked; another caller gets the still-valid value at once.
        let v = c
            .get(Instant::now(), Duration::ZERO, || {
                panic!("a second renewal")
            })
            .unwrap();
        assert_eq!(v, 1);
        finish.send(()).unwrap();
        assert_eq!(renewer.join().unwrap().unwrap(), 2);
        let v = c
            .get(Instant::now(), Duration::ZERO, || panic!("renewed already"))
            .unwrap();
        assert_eq!(v, 2);
    }

    #[test]
    fn a_session_keeps_its_token_while_a_renewal_fails_and_not_past_its_expiry() {
        use std::cell::Cell;
        let session = Session::default();
        let logins = Cell::new(0u32);
        let token = |name: &str| SecretVec::new(name.as_bytes().to_vec());
        let ok = |name: &'static str| {
            logins.set(logins.get() + 1);
            // 4 s: renewed after 2 s, used until 3 s (the 1 s margin).
            Ok((token(name), Duration::from_secs(4)))
        };
        let down = || -> Result<(SecretVec, Duration), StoreError> {
            logins.set(logins.get() + 1);
            Err(StoreError::Unreachable("login service down".into()))
        };
        assert_eq!(session.token(|| ok("t1")).unwrap().expose(), b"t1");
        assert_eq!(
            session.token(|| ok("t2")).unwrap().expose(),
            b"t1",
            "not due"
        );
        std::thread::sleep(Duration::from_millis(2100));
        // Due, the login fails, the token is still valid: it is used, and the failure is
        // not retried by the next caller.
        assert_eq!(session.token(down).unwrap().expose(), b"t1");
        assert_eq!(session.token(down).unwrap().expose(), b"t1");
        assert_eq!(logins.get(), 2);
        std::thread::sleep(Duration::from_millis(1000));
        // Past its margin: never used again (the held failure, or a new one, is the answer).
        let e = session.token(down).unwrap_err();
        assert!(e.to_string().contains("login service down"), "{e}");
        // After the hold the next caller logs in.
        std::thread::sleep(LOGIN_FAILURE_HOLD + Duration::from_millis(100));
        assert_eq!(session.token(|| ok("t3")).unwrap().expose(), b"t3");
    }

    #[test]
    fn token_answers() {
        let (h, life) = bearer_token(
            br#"{"access_token":"ya29.a","expires_in":3599,"token_type":"Bearer"}"#,
            "T",
        )
        .unwrap();
        assert_eq!((h.expose(), life.as_secs()), (&b"Bearer ya29.a"[..], 3599));
        // Azure managed identity: numeric strings, absolute expiry.
        let at = unix_now_secs() + 600;
        let body = format!(
            r#"{{"access_token":"eyJ0","expires_on":"{at}","resource":"https://vault.azure.net","token_type":"Bearer"}}"#
        );
        let (_, life) = bearer_token(body.as_bytes(), "T").unwrap();
        assert!((598..=600).contains(&life.as_secs()), "{life:?}");
        let (_, life) = bearer_token(br#"{"access_token":"x","expires_in":"86399"}"#, "T").unwrap();
        assert_eq!(life.as_secs(), 86399);
        let (_, life) = bearer_token(br#"{"access_token":"x"}"#, "T").unwrap();
        assert_eq!(life.as_secs(), 300);
        // Refused, without the token in the message.
        for (body, why) in [
            (&br#"{"expires_in":1}"#[..], "no access_token"),
            (br#"{"access_token":""}"#, "no access_token"),
            (
                br#"{"access_token":"TOK\r\nX-Evil: 1"}"#,
                "a header cannot carry",
            ),
            (
                br#"{"access_token":"TOK","token_type":"mac"}"#,
                "'mac' is not Bearer",
            ),
            (b"<html>", "not JSON"),
        ] {
            let e = bearer_token(body, "Src").err().unwrap().to_string();
            assert!(e.contains("Src: ") && e.contains(why), "{e}");
            assert!(!e.contains("TOK"), "{e}");
        }
    }

    #[test]
    fn oauth_errors() {
        let reply = |status, body: &[u8]| Reply {
            status,
            headers: Vec::new(),
            body: body.to_vec(),
        };
        let r = reply(
            400,
            br#"{"error":"invalid_grant","error_description":"Bad refresh RT-SECRET\nx"}"#,
        );
        assert_eq!(
            oauth_error(&r, &[b"RT-SECRET"]),
            "status 400: invalid_grant Bad refresh <redacted> x"
        );
        let r = reply(
            403,
            br#"{"error":{"code":403,"message":"denied","status":"PERMISSION_DENIED"}}"#,
        );
        assert_eq!(oauth_error(&r, &[]), "status 403: PERMISSION_DENIED denied");
        let r = reply(404, b"Not Found\n");
        assert_eq!(oauth_error(&r, &[]), "status 404: Not Found");
    }

    #[test]
    fn paths_names_and_descriptions() {
        assert_eq!(base_path("https://h:1/x/"), "/x");
        assert_eq!(base_path("http://h"), "");
        assert_eq!(base_path("h/a/b"), "/a/b");
        assert_eq!(encode("my-key_1.x"), "my-key_1.x");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
        let r = Reply {
            status: 401,
            headers: Vec::new(),
            body: br#"{"code":10,"codeDesc":"bad token SECRET-TOKEN"}"#.to_vec(),
        };
        assert_eq!(
            describe(&r, &["codeDesc"], &["SECRET-TOKEN"]),
            "bad token <redacted>"
        );
        let r = Reply {
            status: 401,
            headers: Vec::new(),
            body: b"Unauthorized\n".to_vec(),
        };
        assert_eq!(describe(&r, &["codeDesc"], &[]), "Unauthorized");
    }
}
