//! Helpers the login-based keystores share (Thales CipherTrust/KeySecure, Fortanix DSM,
//! Entrust KeyControl, and the OAuth2 tokens of GCP and Azure): a cached access token that is
//! renewed before it expires (and at once when the service rejects it), the path part of an
//! endpoint URL, percent-encoding of names in paths, OAuth2 token answers, bounded reads of
//! credential files, and short error texts from a service's answer with credentials scrubbed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::http::{Endpoint, Reply, Retry, TlsFiles};
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

/// A short-lived access token (the whole `Authorization` header value), renewed on demand.
///
/// The token is renewed when half its lifetime has passed (as upstream's renewal loop does),
/// so a token is never used close to its expiry; [`Session::invalidate`] drops a token the
/// service rejected. Logins are serialized: concurrent callers wait for one login.
#[derive(Default)]
pub struct Session {
    current: Mutex<Option<(SecretVec, Instant)>>,
}

impl Session {
    /// The current token, logging in first when there is none or it is due for renewal.
    /// `login` returns the header value and the token's lifetime.
    pub fn token(
        &self,
        login: impl FnOnce() -> Result<(SecretVec, Duration), StoreError>,
    ) -> Result<SecretVec, StoreError> {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((token, renew_at)) = cur.as_ref() {
            if Instant::now() < *renew_at {
                return Ok(token.clone());
            }
        }
        let (token, lifetime) = login()?;
        *cur = Some((token.clone(), Instant::now() + lifetime / 2));
        Ok(token)
    }

    /// Forgets `stale` (a token the service answered 401 to), unless another caller has
    /// already replaced it.
    pub fn invalidate(&self, stale: &SecretVec) {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if cur
            .as_ref()
            .is_some_and(|(t, _)| t.expose() == stale.expose())
        {
            *cur = None;
        }
    }
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
    use simd_json::prelude::*;
    let mut body = SecretVec::new(body.to_vec());
    let v = simd_json::to_owned_value(body.as_mut_vec())
        .map_err(|_| super::http::other(format!("{source}: the token answer is not JSON")))?;
    let token = v
        .get("access_token")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| super::http::other(format!("{source}: the answer has no access_token")))?;
    // It goes into a header: visible ASCII only (a hostile answer must not add header lines).
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(super::http::other(format!(
            "{source}: the access_token has characters a header cannot carry"
        )));
    }
    if let Some(kind) = v.get("token_type").and_then(|t| t.as_str()) {
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err(super::http::other(format!(
                "{source}: token_type '{}' is not Bearer",
                kind.chars().take(32).collect::<String>()
            )));
        }
    }
    let number = |name: &str| {
        v.get(name).and_then(|e| {
            e.as_u64()
                .or_else(|| e.as_str().and_then(|s| s.trim().parse().ok()))
        })
    };
    let lifetime_secs = match (number("expires_in"), number("expires_on")) {
        (Some(secs), _) => secs,
        (None, Some(at)) => at.saturating_sub(unix_now_secs()),
        (None, None) => 300,
    };
    let mut header = SecretVec::with_capacity(token.len() + 7);
    header.as_mut_vec().extend_from_slice(b"Bearer ");
    header.as_mut_vec().extend_from_slice(token.as_bytes());
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
    let mut out = SecretVec::with_capacity(4096);
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
