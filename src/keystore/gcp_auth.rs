//! Where the GCP keystore gets its OAuth2 access tokens, in the order Google's libraries
//! look (so an upstream config that leaves `credentials` out keeps working):
//!
//! 1. the block's `credentials` (a service account's key fields);
//! 2. application default credentials: the JSON file named by `GOOGLE_APPLICATION_CREDENTIALS`
//!    (it must exist when the variable is set), else gcloud's
//!    `$CLOUDSDK_CONFIG/application_default_credentials.json` (default directory
//!    `$HOME/.config/gcloud`) when present. A `service_account` file signs a JWT (RFC 7523),
//!    an `authorized_user` file (`gcloud auth application-default login`) makes a
//!    refresh-token grant; both at the file's `token_uri`, else the block's `token_uri`; an
//!    `external_account` file (workload identity federation) exchanges a subject token at
//!    Google's STS, see [`super::gcp_external`]. A file's `quota_project_id` is sent as
//!    `x-goog-user-project` on every Secret Manager call, as Google's libraries do;
//! 3. the metadata server (GCE, GKE workload identity, Cloud Run):
//!    `GET http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token`
//!    with `Metadata-Flavor: Google`; the answer must carry the same header (another cloud's
//!    metadata server at that address is refused). `GCE_METADATA_HOST` (`host[:port]`) names
//!    another server, as in Google's libraries, which also use the IP rather than
//!    `metadata.google.internal` (no DNS wait). Connects give up after
//!    [`METADATA_CONNECT_TIMEOUT`], so kes off GCP fails fast and names what it tried.
//!
//! Files are read at start (a missing or malformed file stops kes with its path); nothing is
//! fetched until the first keystore call. Other credential types
//! (`impersonated_service_account`, …) are refused at start with their type.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use ring::signature::RsaKeyPair;

use super::gcp_external::ExternalAccount;
use super::http::{other, retryable_status, retrying, Endpoint, Retry, TlsFiles};
use super::json_secret;
use super::session::{
    base_path, bearer_token, encode, encode_into, oauth_error, read_credential_file,
};
use super::StoreError;
use crate::config::GcpConfig;
use crate::secret::SecretVec;

/// Connect + read + write timeout of a token request.
pub const TOKEN_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Connect timeout for the metadata server: off GCP nothing answers at its address.
pub const METADATA_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The metadata server's address when `GCE_METADATA_HOST` is not set.
pub const METADATA_HOST: &str = "169.254.169.254";
/// Largest credentials file read (a service-account key file is about 2.4 KB).
pub const CREDENTIALS_FILE_BYTES_MAX: usize = 64 << 10;
/// Lifetime asked for in the JWT (Google's maximum).
const JWT_LIFETIME_SECS: u64 = 3600;
const METADATA_TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

/// The credentials in use and how to get a token with them.
pub struct Credentials {
    source: Source,
    /// Where they came from, for messages: `keystore.gcp.secretmanager.credentials`,
    /// `GOOGLE_APPLICATION_CREDENTIALS '/etc/kes/sa.json'`, …
    origin: String,
    /// The file's `quota_project_id`: the project billed for the calls.
    quota_project: Option<String>,
}

enum Source {
    ServiceAccount {
        email: String,
        key_id: String,
        key: Box<RsaKeyPair>,
        scopes: String,
        token: TokenEndpoint,
    },
    AuthorizedUser {
        client_id: String,
        client_secret: SecretVec,
        refresh_token: SecretVec,
        token: TokenEndpoint,
    },
    External(Box<ExternalAccount>),
    Metadata {
        endpoint: Endpoint,
        path: String,
        /// `http://host[:port]`, for messages.
        url: String,
        /// What was looked for before the metadata server, for messages.
        tried: String,
    },
}

/// An OAuth2 token endpoint (`token_uri`).
struct TokenEndpoint {
    uri: String,
    endpoint: Endpoint,
    path: String,
}

impl TokenEndpoint {
    fn parse(uri: &str, field: &str) -> Result<TokenEndpoint, String> {
        let endpoint = Endpoint::parse(
            "GCP OAuth2",
            field,
            uri,
            &TlsFiles::default(),
            TOKEN_CALL_TIMEOUT,
        )?;
        let path = match base_path(uri) {
            p if p.is_empty() => "/".to_string(),
            p => p,
        };
        Ok(TokenEndpoint {
            uri: uri.to_string(),
            endpoint,
            path,
        })
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An RSA key from a PKCS#8 PEM; `field` names it in errors (never the key). The base64 text
/// and the DER are decoded into buffers sized once and wiped (a PEM parser's growing buffers
/// would leave copies). What ring's `RsaKeyPair` keeps (the private key's CRT components, in
/// allocations of its own) lives as long as the store and is not wiped by ring on drop.
fn rsa_key(pem: &[u8], field: &str) -> Result<RsaKeyPair, String> {
    const BEGIN: &[u8] = b"-----BEGIN PRIVATE KEY-----";
    const END: &[u8] = b"-----END PRIVATE KEY-----";
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let not_pem = || format!("{field}: not a PKCS#8 PEM private key (-----BEGIN PRIVATE KEY-----)");
    let start = find(pem, BEGIN).ok_or_else(not_pem)? + BEGIN.len();
    let len = find(&pem[start..], END).ok_or_else(not_pem)?;
    let body = &pem[start..start + len];
    let mut text = SecretVec::with_capacity(body.len());
    for &b in body.iter().filter(|b| !b.is_ascii_whitespace()) {
        text.as_mut_vec().push(b); // within the capacity: no reallocation
    }
    let mut der = SecretVec::new(vec![0; text.len() / 4 * 3 + 3]);
    let n = base64::engine::general_purpose::STANDARD
        .decode_slice(text.expose(), der.as_mut_vec())
        .map_err(|_| not_pem())?;
    der.as_mut_vec().truncate(n);
    RsaKeyPair::from_pkcs8(der.expose()).map_err(|e| format!("{field}: not an RSA key: {e}"))
}

impl Credentials {
    /// Finds the credentials as described in the module docs. Reads files, contacts nothing.
    /// `env` reads environment variables (the process environment in production).
    pub fn resolve(
        config: &GcpConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Credentials, String> {
        const BLOCK: &str = "keystore.gcp.secretmanager";
        let scopes = config.scopes.join(" ");
        if let Some(c) = &config.credentials {
            return Ok(Credentials {
                source: Source::ServiceAccount {
                    email: c.client_email.clone(),
                    key_id: c.private_key_id.clone(),
                    key: Box::new(rsa_key(
                        c.private_key.expose().as_bytes(),
                        &format!("{BLOCK}.credentials.private_key"),
                    )?),
                    scopes,
                    token: TokenEndpoint::parse(&config.token_uri, &format!("{BLOCK}.token_uri"))?,
                },
                origin: format!("{BLOCK}.credentials"),
                quota_project: None,
            });
        }
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        if let Some(path) = var("GOOGLE_APPLICATION_CREDENTIALS") {
            let origin = format!("GOOGLE_APPLICATION_CREDENTIALS '{path}'");
            return from_file(Path::new(&path), origin, config);
        }
        let well_known = var("CLOUDSDK_CONFIG")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|h| Path::new(&h).join(".config/gcloud")))
            .map(|dir| dir.join("application_default_credentials.json"));
        if let Some(path) = well_known.as_ref().filter(|p| p.exists()) {
            let origin = format!(
                "gcloud's application default credentials '{}'",
                path.display()
            );
            return from_file(path, origin, config);
        }
        let host = var("GCE_METADATA_HOST").unwrap_or_else(|| METADATA_HOST.to_string());
        let host = host
            .trim()
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let url = format!("http://{host}");
        let endpoint = Endpoint::parse(
            "GCP metadata server",
            "GCE_METADATA_HOST",
            &url,
            &TlsFiles::default(),
            TOKEN_CALL_TIMEOUT,
        )?
        .with_connect_timeout(METADATA_CONNECT_TIMEOUT);
        let tried = format!(
            "{BLOCK}.credentials is not set, GOOGLE_APPLICATION_CREDENTIALS is not set, {}",
            match &well_known {
                Some(p) => format!("no file at '{}'", p.display()),
                None => "HOME is not set".to_string(),
            }
        );
        Ok(Credentials {
            source: Source::Metadata {
                endpoint,
                path: format!(
                    "{METADATA_TOKEN_PATH}?scopes={}",
                    encode(&config.scopes.join(","))
                ),
                url,
                tried,
            },
            origin: "the GCP metadata server".into(),
            quota_project: None,
        })
    }

    /// What the credentials are, for the log: `service account kes@… from GOOGLE_APPLICATION_CREDENTIALS '…'`.
    pub fn describe(&self) -> String {
        match &self.source {
            Source::ServiceAccount { email, .. } => {
                format!("service account {email} from {}", self.origin)
            }
            Source::AuthorizedUser { client_id, .. } => {
                format!("authorized user (client {client_id}) from {}", self.origin)
            }
            Source::External(e) => format!("{} from {}", e.describe(), self.origin),
            Source::Metadata { url, .. } => format!("the GCP metadata server at {url}"),
        }
    }

    /// The project to bill (`x-goog-user-project`), when the credentials file names one.
    pub fn quota_project(&self) -> Option<&str> {
        self.quota_project.as_deref()
    }

    /// A fresh access token: the `Authorization` value and its lifetime.
    pub fn fetch(&self, retry: &Retry) -> Result<(SecretVec, Duration), StoreError> {
        match &self.source {
            Source::ServiceAccount {
                email,
                key_id,
                key,
                scopes,
                token,
            } => {
                let assertion = jwt(email, key_id, key, scopes, &token.uri)?;
                let mut form = SecretVec::with_capacity(assertion.len() + 96);
                form.as_mut_vec().extend_from_slice(
                    b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=",
                );
                form.as_mut_vec().extend_from_slice(assertion.expose());
                self.token_grant(token, &form, &[], retry)
            }
            Source::AuthorizedUser {
                client_id,
                client_secret,
                refresh_token,
                token,
            } => {
                // Encoded straight into the wiped form, sized once.
                let client_id = encode(client_id);
                let mut form = SecretVec::with_capacity(
                    64 + client_id.len() + 3 * (client_secret.len() + refresh_token.len()),
                );
                form.as_mut_vec()
                    .extend_from_slice(b"grant_type=refresh_token&client_id=");
                form.as_mut_vec().extend_from_slice(client_id.as_bytes());
                form.as_mut_vec().extend_from_slice(b"&client_secret=");
                encode_into(&mut form, client_secret.expose());
                form.as_mut_vec().extend_from_slice(b"&refresh_token=");
                encode_into(&mut form, refresh_token.expose());
                self.token_grant(
                    token,
                    &form,
                    &[client_secret.expose(), refresh_token.expose()],
                    retry,
                )
            }
            Source::External(e) => e.fetch(retry, &self.origin),
            Source::Metadata {
                endpoint,
                path,
                url,
                tried,
            } => {
                let reply = retrying(retry, retryable_status, || {
                    endpoint.send("GET", path, &[("Metadata-Flavor", "Google")], b"")
                })
                .map_err(|e| match e {
                    StoreError::Unreachable(why) => StoreError::Unreachable(format!(
                        "GCP credentials: {tried}, and the metadata server at {url} did not \
                         answer ({why}); outside GCE/GKE/Cloud Run set \
                         keystore.gcp.secretmanager.credentials or GOOGLE_APPLICATION_CREDENTIALS"
                    )),
                    e => e,
                })?;
                if reply.header("Metadata-Flavor") != Some("Google") {
                    return Err(other(format!(
                        "GCP credentials: the server at {url} answered without \
                         'Metadata-Flavor: Google' (status {}): it is not a GCP metadata server \
                         ({tried})",
                        reply.status
                    )));
                }
                if reply.status != 200 {
                    return Err(other(format!(
                        "GCP credentials: the metadata server at {url} refused the token \
                         request: {}",
                        oauth_error(&reply, &[])
                    )));
                }
                bearer_token(&reply.body, &format!("GCP metadata server at {url}"))
            }
        }
    }

    fn token_grant(
        &self,
        token: &TokenEndpoint,
        form: &SecretVec,
        secrets: &[&[u8]],
        retry: &Retry,
    ) -> Result<(SecretVec, Duration), StoreError> {
        let reply = retrying(retry, retryable_status, || {
            token.endpoint.send(
                "POST",
                &token.path,
                &[
                    ("Content-Type", "application/x-www-form-urlencoded"),
                    ("Accept", "application/json"),
                ],
                form.expose(),
            )
        })
        .map_err(|e| match e {
            StoreError::Unreachable(why) => StoreError::Unreachable(format!(
                "GCP credentials ({}): token endpoint {}: {why}",
                self.origin, token.uri
            )),
            e => e,
        })?;
        if reply.status != 200 {
            return Err(other(format!(
                "GCP credentials ({}): token request to {} failed with {}",
                self.origin,
                token.uri,
                oauth_error(&reply, secrets)
            )));
        }
        bearer_token(&reply.body, &format!("GCP token endpoint {}", token.uri))
    }
}

/// Reads an application-default-credentials file. Read in place ([`json_secret`]): the
/// private key, the client secret and the refresh token are copied only into wiped buffers
/// (an `external_account` file, which holds none of them, is handed to simd-json).
fn from_file(path: &Path, origin: String, config: &GcpConfig) -> Result<Credentials, String> {
    let bytes = read_credential_file(path, CREDENTIALS_FILE_BYTES_MAX, &origin)?;
    let [kind, token_uri, client_email, private_key_id, private_key, client_id, client_secret, refresh_token, quota_project_id] =
        json_secret::members(
            bytes.expose(),
            [
                "type",
                "token_uri",
                "client_email",
                "private_key_id",
                "private_key",
                "client_id",
                "client_secret",
                "refresh_token",
                "quota_project_id",
            ],
        )
        .map_err(|_| format!("{origin}: not a JSON credentials file"))?;
    // A string member's text (non-strings count as absent, as simd-json's `as_str` read them).
    let text = |m: &Option<json_secret::Member<'_>>| {
        m.as_ref()
            .and_then(|m| m.text())
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .filter(|t| !t.is_empty())
    };
    let missing = |name: &str| format!("{origin}: '{name}' is missing");
    let secret = |m: Option<json_secret::Member<'_>>, name: &str| {
        m.and_then(|m| m.secret())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| missing(name))
    };
    let kind = text(&kind).ok_or_else(|| missing("type"))?;
    let token_uri = text(&token_uri).unwrap_or_else(|| config.token_uri.clone());
    let source = match kind.as_str() {
        "service_account" => Source::ServiceAccount {
            email: text(&client_email).ok_or_else(|| missing("client_email"))?,
            key_id: text(&private_key_id).unwrap_or_default(),
            key: Box::new(rsa_key(
                secret(private_key, "private_key")?.expose(),
                &format!("{origin}: private_key"),
            )?),
            scopes: config.scopes.join(" "),
            token: TokenEndpoint::parse(&token_uri, &format!("{origin}: token_uri"))?,
        },
        "authorized_user" => Source::AuthorizedUser {
            client_id: text(&client_id).ok_or_else(|| missing("client_id"))?,
            client_secret: secret(client_secret, "client_secret")?,
            refresh_token: secret(refresh_token, "refresh_token")?,
            token: TokenEndpoint::parse(&token_uri, &format!("{origin}: token_uri"))?,
        },
        "external_account" => {
            let mut copy = SecretVec::new(bytes.expose().to_vec());
            let v = simd_json::to_owned_value(copy.as_mut_vec())
                .map_err(|_| format!("{origin}: not a JSON credentials file"))?;
            Source::External(Box::new(ExternalAccount::from_json(
                &v,
                &origin,
                &config.scopes,
            )?))
        }
        other => {
            return Err(format!(
                "{origin}: credentials of type '{}' are not supported (supported: \
                 service_account, authorized_user, external_account; or leave GOOGLE_APPLICATION_CREDENTIALS unset \
                 to use the metadata server)",
                other.chars().take(64).collect::<String>()
            ))
        }
    };
    let quota_project = text(&quota_project_id)
        .map(|q| q.trim().to_string())
        .filter(|q| !q.is_empty());
    if let Some(q) = &quota_project {
        if !q.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("{origin}: quota_project_id is not a project id"));
        }
    }
    Ok(Credentials {
        source,
        origin,
        quota_project,
    })
}

/// The signed JWT bearer assertion (RFC 7523) for a token endpoint.
fn jwt(
    email: &str,
    key_id: &str,
    key: &RsaKeyPair,
    scopes: &str,
    aud: &str,
) -> Result<SecretVec, StoreError> {
    let mut header = Vec::new();
    let mut w = crate::api::json::JsonWriter::object(&mut header);
    w.string("alg", "RS256").string("typ", "JWT");
    if !key_id.is_empty() {
        w.string("kid", key_id);
    }
    w.finish();
    let now = unix_now();
    let mut claims = Vec::new();
    let mut w = crate::api::json::JsonWriter::object(&mut claims);
    w.string("iss", email)
        .string("scope", scopes)
        .string("aud", aud)
        .uint("iat", now)
        .uint("exp", now + JWT_LIFETIME_SECS);
    w.finish();
    let signing_input = format!("{}.{}", b64url(&header), b64url(&claims));
    let mut sig = vec![0u8; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing_input.as_bytes(),
        &mut sig,
    )
    .map_err(|_| other("GCP: cannot sign the token request".into()))?;
    let mut out = SecretVec::with_capacity(signing_input.len() + sig.len() * 2);
    out.as_mut_vec().extend_from_slice(signing_input.as_bytes());
    out.as_mut_vec().push(b'.');
    out.as_mut_vec().extend_from_slice(b64url(&sig).as_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GcpConfig {
        GcpConfig {
            endpoint: "http://127.0.0.1:1".into(),
            project_id: "p".into(),
            scopes: vec!["https://www.googleapis.com/auth/cloud-platform".into()],
            token_uri: "http://127.0.0.1:1/token".into(),
            credentials: None,
        }
    }

    fn env(vars: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn the_search_order_and_its_errors() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().to_str().unwrap().to_string();
        // Nothing configured: the metadata server, at GCE_METADATA_HOST or the fixed IP.
        let c = Credentials::resolve(&config(), &env(&[("HOME", home.clone())])).unwrap();
        assert_eq!(
            c.describe(),
            "the GCP metadata server at http://169.254.169.254"
        );
        let Source::Metadata { path, tried, .. } = &c.source else {
            panic!("not the metadata server");
        };
        assert_eq!(
            path,
            "/computeMetadata/v1/instance/service-accounts/default/token?scopes=https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fcloud-platform"
        );
        assert!(
            tried.contains(".config/gcloud/application_default_credentials.json"),
            "{tried}"
        );
        let c = Credentials::resolve(
            &config(),
            &env(&[("GCE_METADATA_HOST", "127.0.0.1:8080".into())]),
        )
        .unwrap();
        assert_eq!(
            c.describe(),
            "the GCP metadata server at http://127.0.0.1:8080"
        );

        // gcloud's file in HOME is found; GOOGLE_APPLICATION_CREDENTIALS wins over it.
        let gcloud = dir.path().join(".config/gcloud");
        std::fs::create_dir_all(&gcloud).unwrap();
        std::fs::write(
            gcloud.join("application_default_credentials.json"),
            r#"{"type":"authorized_user","client_id":"cid","client_secret":"cs-SECRET","refresh_token":"rt-SECRET"}"#,
        )
        .unwrap();
        let c = Credentials::resolve(&config(), &env(&[("HOME", home.clone())])).unwrap();
        assert!(c
            .describe()
            .starts_with("authorized user (client cid) from gcloud's"));
        let other = dir.path().join("other.json");
        std::fs::write(
            &other,
            r#"{"type":"impersonated_service_account","audience":"x"}"#,
        )
        .unwrap();
        let e = Credentials::resolve(
            &config(),
            &env(&[
                ("HOME", home.clone()),
                (
                    "GOOGLE_APPLICATION_CREDENTIALS",
                    other.display().to_string(),
                ),
            ]),
        )
        .err()
        .unwrap();
        assert!(
            e.contains("type 'impersonated_service_account' are not supported"),
            "{e}"
        );
        // A named file that is missing or malformed stops kes, with its path.
        let missing = dir.path().join("missing.json").display().to_string();
        let e = Credentials::resolve(
            &config(),
            &env(&[("GOOGLE_APPLICATION_CREDENTIALS", missing.clone())]),
        )
        .err()
        .unwrap();
        assert!(e.contains(&missing) && e.contains("cannot open"), "{e}");
        std::fs::write(
            &other,
            r#"{"type":"authorized_user","client_id":"c","client_secret":"SECRET-1"}"#,
        )
        .unwrap();
        let e = Credentials::resolve(
            &config(),
            &env(&[(
                "GOOGLE_APPLICATION_CREDENTIALS",
                other.display().to_string(),
            )]),
        )
        .err()
        .unwrap();
        assert!(
            e.contains("'refresh_token' is missing") && !e.contains("SECRET-1"),
            "{e}"
        );
        std::fs::write(&other, vec![b' '; CREDENTIALS_FILE_BYTES_MAX + 1]).unwrap();
        let e = Credentials::resolve(
            &config(),
            &env(&[(
                "GOOGLE_APPLICATION_CREDENTIALS",
                other.display().to_string(),
            )]),
        )
        .err()
        .unwrap();
        assert!(e.contains("larger than 65536 bytes"), "{e}");
    }
}
