//! Helpers the login-based keystores share (Thales CipherTrust/KeySecure, Fortanix DSM,
//! Entrust KeyControl): a cached access token that is renewed before it expires (and at
//! once when the service rejects it), the path part of an endpoint URL, percent-encoding of
//! names in paths, and short error texts from a service's answer with credentials scrubbed.

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
    fn paths_names_and_descriptions() {
        assert_eq!(base_path("https://h:1/x/"), "/x");
        assert_eq!(base_path("http://h"), "");
        assert_eq!(base_path("h/a/b"), "/a/b");
        assert_eq!(encode("my-key_1.x"), "my-key_1.x");
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
        let r = Reply {
            status: 401,
            body: br#"{"code":10,"codeDesc":"bad token SECRET-TOKEN"}"#.to_vec(),
        };
        assert_eq!(
            describe(&r, &["codeDesc"], &["SECRET-TOKEN"]),
            "bad token <redacted>"
        );
        let r = Reply {
            status: 401,
            body: b"Unauthorized\n".to_vec(),
        };
        assert_eq!(describe(&r, &["codeDesc"], &[]), "Unauthorized");
    }
}
