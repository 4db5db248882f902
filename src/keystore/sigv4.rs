//! AWS Signature Version 4 (header form), written here on ring's HMAC-SHA256 and sha2: a
//! small, fully vector-tested function is less to trust than an SDK with its own runtime.
//!
//! The canonical request is `METHOD \n URI \n QUERY \n HEADERS \n SIGNED \n sha256(payload)`,
//! signed with a key derived `AWS4<secret>` → date → region → service → `aws4_request`
//! (docs.aws.amazon.com, "Create a signed AWS API request"). Checked against AWS's published
//! signature test suite (aws-sig-v4-test-suite) in the tests below.

use sha2::{Digest, Sha256};

use crate::crypto::hmac_sha256::HmacSha256Key;
use crate::secret::{Secret, SecretVec};

/// AWS credentials. The secret key and the session token are zeroized on drop; `Debug` never
/// prints them.
#[derive(Clone)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: SecretVec,
    /// Empty for long-term credentials.
    pub session_token: SecretVec,
}

impl Credentials {
    /// The session token as the `X-Amz-Security-Token` value: `None` without one (or when it
    /// is not UTF-8, which no source hands out).
    pub fn session_token(&self) -> Option<&str> {
        std::str::from_utf8(self.session_token.expose())
            .ok()
            .filter(|t| !t.is_empty())
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ access_key: {}, secret_key: <redacted>, session_token: {} }}",
            self.access_key,
            if self.session_token.is_empty() {
                "none"
            } else {
                "<redacted>"
            }
        )
    }
}

/// A `String` whose whole allocation is wiped on drop (the canonical request, which carries
/// the session token). Built at its final capacity, so it never reallocates.
pub struct WipedString(String);

impl WipedString {
    fn with_capacity(capacity: usize) -> WipedString {
        WipedString(String::with_capacity(capacity))
    }

    /// Appends `s`; the capacity must have been reserved (a reallocation would leave a copy).
    fn push_str(&mut self, s: &str) {
        debug_assert!(
            self.0.len() + s.len() <= self.0.capacity(),
            "WipedString grew"
        );
        self.0.push_str(s);
    }
}

impl std::ops::Deref for WipedString {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Drop for WipedString {
    fn drop(&mut self) {
        let capacity = self.0.capacity();
        // SAFETY: we zero the string's whole allocation, which we own exclusively; zero bytes
        // are valid UTF-8.
        unsafe { memsec::memzero(self.0.as_mut_vec().as_mut_ptr(), capacity) };
    }
}

/// Lower-case hex of SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// HMAC-SHA-256 on the crate's own implementation, whose intermediates are wiped.
fn hmac(key: &[u8], data: &[u8]) -> Secret<32> {
    let mut out = [0u8; 32];
    HmacSha256Key::from_key(key).sign(data, &mut out);
    let tag = Secret::new(out);
    // SAFETY: the pointer and length describe exactly our own array (`Secret` holds a copy).
    unsafe { memsec::memzero(out.as_mut_ptr(), 32) };
    tag
}

/// The signing key for `date` (`YYYYMMDD`), region and service. `AWS4<secret>` and every
/// derived key are wiped.
pub fn signing_key(secret: &[u8], date: &str, region: &str, service: &str) -> Secret<32> {
    let mut k = SecretVec::with_capacity(4 + secret.len());
    k.extend_from_slice(b"AWS4");
    k.extend_from_slice(secret);
    let k_date = hmac(k.expose(), date.as_bytes());
    drop(k);
    let k_region = hmac(k_date.expose(), region.as_bytes());
    let k_service = hmac(k_region.expose(), service.as_bytes());
    hmac(k_service.expose(), b"aws4_request")
}

/// RFC 3986 percent-encoding of everything but the unreserved characters (and `/` when
/// `keep_slash`), upper-case hex, as SigV4 wants.
fn uri_encode(s: &str, keep_slash: bool, out: &mut String) {
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
}

/// The canonical query string: parameters encoded, sorted by name, then value.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let (mut ek, mut ev) = (String::new(), String::new());
            uri_encode(k, false, &mut ek);
            uri_encode(v, false, &mut ev);
            (ek, ev)
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The canonical request for `headers` (all of them are signed; `host` must be among them).
/// `path` is the raw path (encoded here), `query` the raw query string without `?`. The header
/// values (a session token among them) are copied only into buffers wiped on drop.
pub fn canonical_request(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    payload_sha256_hex: &str,
) -> (WipedString, String) {
    let mut hs: Vec<(String, WipedString)> = headers
        .iter()
        .map(|(n, v)| {
            // Whitespace runs collapsed: never longer than `v`.
            let mut value = WipedString::with_capacity(v.len());
            for (i, word) in v.split_whitespace().enumerate() {
                if i > 0 {
                    value.push_str(" ");
                }
                value.push_str(word);
            }
            (n.to_ascii_lowercase(), value)
        })
        .collect();
    hs.sort_by(|a, b| a.0.cmp(&b.0));
    // Repeated names: one line, values joined with commas in the order given.
    let mut merged: Vec<(String, WipedString)> = Vec::with_capacity(hs.len());
    for (n, v) in hs {
        match merged.last_mut() {
            Some((last, lv)) if *last == n => {
                let mut joined = WipedString::with_capacity(lv.len() + 1 + v.len());
                joined.push_str(lv);
                joined.push_str(",");
                joined.push_str(&v);
                *lv = joined;
            }
            _ => merged.push((n, v)),
        }
    }
    let signed = merged
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let mut uri = String::new();
    uri_encode(if path.is_empty() { "/" } else { path }, true, &mut uri);
    let query = canonical_query(query);
    let lines: usize = merged.iter().map(|(n, v)| n.len() + v.len() + 2).sum();
    let mut creq = WipedString::with_capacity(
        method.len()
            + uri.len()
            + query.len()
            + lines
            + signed.len()
            + payload_sha256_hex.len()
            + 5,
    );
    for part in [method, "\n", &uri, "\n", &query, "\n"] {
        creq.push_str(part);
    }
    for (n, v) in &merged {
        creq.push_str(n);
        creq.push_str(":");
        creq.push_str(v);
        creq.push_str("\n");
    }
    creq.push_str("\n");
    creq.push_str(&signed);
    creq.push_str("\n");
    creq.push_str(payload_sha256_hex);
    (creq, signed)
}

/// The `Authorization` header value for a request whose headers (including `host`,
/// `x-amz-date` = `amz_date` and, with a session token, `x-amz-security-token`) are all
/// signed.
#[allow(clippy::too_many_arguments)]
pub fn authorization(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    payload_sha256_hex: &str,
    credentials: &Credentials,
    region: &str,
    service: &str,
    amz_date: &str,
) -> String {
    let (creq, signed) = canonical_request(method, path, query, headers, payload_sha256_hex);
    let date = &amz_date[..amz_date.len().min(8)];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let sts = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(creq.as_bytes())
    );
    let key = signing_key(credentials.secret_key.expose(), date, region, service);
    let signature = hex::encode(hmac(key.expose(), sts.as_bytes()).expose());
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
        credentials.access_key
    )
}

/// `YYYYMMDDTHHMMSSZ` for now (UTC).
pub fn amz_date_now() -> String {
    let t = crate::time::Timestamp::now().to_rfc3339();
    let mut s: String = t[..19].chars().filter(|c| *c != '-' && *c != ':').collect();
    s.push('Z');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    // aws-sig-v4-test-suite (docs.aws.amazon.com/general/latest/gr/signature-v4-test-suite.html):
    // every case signs for us-east-1/service at 20150830T123600Z with these credentials.
    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const DATE: &str = "20150830T123600Z";
    const HOST: (&str, &str) = ("Host", "example.amazonaws.com");
    const XDATE: (&str, &str) = ("X-Amz-Date", DATE);
    const STS_TOKEN: &str = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";

    struct Vector {
        name: &'static str,
        method: &'static str,
        path: &'static str,
        query: &'static str,
        headers: &'static [(&'static str, &'static str)],
        body: &'static [u8],
        /// The suite's `.creq` file, where we carry it.
        creq: Option<&'static str>,
        /// The suite's `.authz` file.
        authz: &'static str,
    }

    const VECTORS: &[Vector] = &[
        Vector {
            name: "get-vanilla",
            method: "GET",
            path: "/",
            query: "",
            headers: &[HOST, XDATE],
            body: b"",
            creq: Some("GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        },
        Vector {
            name: "post-vanilla",
            method: "POST",
            path: "/",
            query: "",
            headers: &[HOST, XDATE],
            body: b"",
            creq: None,
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
        },
        Vector {
            name: "get-vanilla-query-order-key-case",
            method: "GET",
            path: "/",
            query: "Param2=value2&Param1=value1",
            headers: &[HOST, XDATE],
            body: b"",
            creq: None,
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        },
        Vector {
            name: "post-x-www-form-urlencoded",
            method: "POST",
            path: "/",
            query: "",
            headers: &[("Content-Type", "application/x-www-form-urlencoded"), HOST, XDATE],
            body: b"Param1=value1",
            creq: Some("POST\n/\n\ncontent-type:application/x-www-form-urlencoded\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"),
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
        },
        Vector {
            name: "post-x-www-form-urlencoded-parameters",
            method: "POST",
            path: "/",
            query: "",
            headers: &[("Content-Type", "application/x-www-form-urlencoded; charset=utf8"), HOST, XDATE],
            body: b"Param1=value1",
            creq: None,
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=1a72ec8f64bd914b0e42e42607c7fbce7fb2c7465f63e3092b3b0d39fa77a6fe",
        },
        Vector {
            name: "post-sts-header-before",
            method: "POST",
            path: "/",
            query: "",
            headers: &[HOST, XDATE, ("X-Amz-Security-Token", STS_TOKEN)],
            body: b"",
            creq: None,
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token, Signature=85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead",
        },
        Vector {
            name: "get-space (normalize-path)",
            method: "GET",
            path: "/example space/",
            query: "",
            headers: &[HOST, XDATE],
            body: b"",
            creq: Some("GET\n/example%20space/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741",
        },
        Vector {
            name: "get-special-character (normalize-path)",
            method: "GET",
            path: "/example/$delete",
            query: "",
            headers: &[HOST, XDATE],
            body: b"",
            creq: None,
            authz: "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=a853c9b21b528b19643d00910d35b83a10c366a10833ceefb45edd6c80e40f27",
        },
    ];

    #[test]
    fn the_published_test_suite() {
        let creds = Credentials {
            access_key: AKID.into(),
            secret_key: SecretVec::new(SECRET.into()),
            session_token: SecretVec::default(),
        };
        for v in VECTORS {
            let hash = sha256_hex(v.body);
            if let Some(creq) = v.creq {
                let (got, _) = canonical_request(v.method, v.path, v.query, v.headers, &hash);
                assert_eq!(&*got, creq, "{}: canonical request", v.name);
            }
            let got = authorization(
                v.method,
                v.path,
                v.query,
                v.headers,
                &hash,
                &creds,
                "us-east-1",
                "service",
                DATE,
            );
            assert_eq!(got, v.authz, "{}", v.name);
        }
    }

    #[test]
    fn the_documented_signing_key() {
        // "Signing AWS API requests" derives this key for IAM with the same credentials.
        let k = signing_key(SECRET.as_bytes(), "20150830", "us-east-1", "iam");
        assert_eq!(
            hex::encode(k.expose()),
            "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
        );
    }

    #[test]
    fn header_values_are_trimmed_and_debug_hides_secrets() {
        let (creq, signed) = canonical_request(
            "GET",
            "/",
            "",
            &[("My-Header1", "  value1  a   b "), ("Host", "h")],
            "x",
        );
        assert!(creq.contains("my-header1:value1 a b\n"), "{}", &*creq);
        assert_eq!(signed, "host;my-header1");
        let c = Credentials {
            access_key: "AKIAVISIBLE".into(),
            secret_key: SecretVec::new(b"very-secret".to_vec()),
            session_token: SecretVec::new(b"tok-secret".to_vec()),
        };
        let d = format!("{c:?}");
        assert!(
            d.contains("AKIAVISIBLE") && !d.contains("very-secret") && !d.contains("tok-secret")
        );
        assert_eq!(c.session_token(), Some("tok-secret"));
        // Several values of one header: joined with commas.
        let (creq, _) = canonical_request(
            "GET",
            "/",
            "",
            &[("A", "1"), ("a", " 2 "), ("Host", "h")],
            "x",
        );
        assert!(creq.contains("a:1,2\nhost:h\n"), "{}", &*creq);
    }

    #[test]
    fn amz_date_shape() {
        let d = amz_date_now();
        assert_eq!(d.len(), 16, "{d}");
        assert_eq!(&d[8..9], "T");
        assert!(d.ends_with('Z'));
    }
}
