//! Where the Azure keystore gets its Microsoft Entra ID access tokens for Key Vault (for the
//! scope and tenant the vault's challenge names, see [`super::azure_challenge`]), as upstream
//! configures its credential:
//!
//! * `credentials.{tenant_id, client_id, client_secret}`: the client-credentials grant at
//!   `<authority>/<tenant>/oauth2/v2.0/token`;
//! * `managed_identity.client_id`: that user-assigned managed identity, and nothing else;
//! * neither: the default chain, in the order of the Azure SDK's `DefaultAzureCredential`:
//!   1. environment: `AZURE_TENANT_ID` + `AZURE_CLIENT_ID` + `AZURE_CLIENT_SECRET` → the
//!      client-credentials grant (certificate or user-password variables are refused at start:
//!      not supported);
//!   2. workload identity (AKS): `AZURE_FEDERATED_TOKEN_FILE` + `AZURE_CLIENT_ID` +
//!      `AZURE_TENANT_ID` → the client-credentials grant with the file's token as
//!      `client_assertion` (`client_assertion_type=…:jwt-bearer`), the file re-read for each
//!      token, since Kubernetes rotates it;
//!   3. managed identity (system-assigned, or user-assigned when `AZURE_CLIENT_ID` is set).
//!
//! The authority is `authority_host` (ours), else `AZURE_AUTHORITY_HOST`, else
//! `https://login.microsoftonline.com`. A managed identity is asked at the App Service /
//! Functions endpoint when `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` are set
//! (`X-IDENTITY-HEADER`, api-version 2019-08-01), else at the instance metadata service
//! (IMDS, `http://169.254.169.254/metadata/identity/oauth2/token`, `Metadata: true`,
//! api-version 2018-02-01; `AZURE_POD_IDENTITY_AUTHORITY_HOST` names another host, as in the
//! Azure SDKs). IMDS connects give up after [`IMDS_CONNECT_TIMEOUT`], so kes off Azure fails
//! fast and says what it tried. Azure Arc, Service Fabric and Cloud Shell managed identities
//! are refused at start (not supported).
//!
//! The choice is made at start from the configuration and the environment; nothing is
//! fetched until the first keystore call.

use std::path::PathBuf;
use std::time::Duration;

use super::azure_challenge::Challenge;
use super::http::{other, retryable_status, retrying, Endpoint, Reply, Retry, TlsFiles};
use super::session::{
    base_path, bearer_token, encode, encode_into, oauth_error, read_credential_file,
};
use super::StoreError;
use crate::config::{AzureAuth, AzureConfig};
use crate::secret::SecretVec;

/// Connect + read + write timeout of a token request.
pub const TOKEN_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Connect timeout for IMDS: off Azure nothing answers at its address.
pub const IMDS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// IMDS when `AZURE_POD_IDENTITY_AUTHORITY_HOST` is not set.
pub const IMDS_URL: &str = "http://169.254.169.254";
/// The login host when neither `authority_host` nor `AZURE_AUTHORITY_HOST` names one.
pub const AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// Largest federated token file read (a service-account token is about 1 KB).
pub const TOKEN_FILE_BYTES_MAX: usize = 64 << 10;
const IMDS_PATH: &str = "/metadata/identity/oauth2/token";

/// The credential in use and how to get a token with it.
pub struct Credentials {
    source: Source,
    /// Where it came from, for messages.
    origin: String,
    /// What the default chain skipped before it, for messages ("" outside the chain).
    tried: String,
}

enum Source {
    ClientSecret {
        client_id: String,
        secret: SecretVec,
        login: Login,
    },
    WorkloadIdentity {
        client_id: String,
        token_file: PathBuf,
        login: Login,
    },
    ManagedIdentity {
        kind: Msi,
        /// A user-assigned identity's client ID; `None` = system-assigned.
        client_id: Option<String>,
    },
}

/// The Entra ID token endpoint of a tenant.
struct Login {
    endpoint: Endpoint,
    /// The configured tenant.
    tenant: String,
    path: String,
    /// `<authority>/<tenant>/oauth2/v2.0/token`, for messages.
    url: String,
}

enum Msi {
    Imds {
        endpoint: Endpoint,
        url: String,
    },
    AppService {
        endpoint: Endpoint,
        path: String,
        header: SecretVec,
        url: String,
    },
}

impl Login {
    fn new(authority: &str, tenant: &str, field: &str) -> Result<Login, String> {
        let endpoint = Endpoint::parse(
            "Microsoft Entra ID",
            field,
            authority,
            &TlsFiles::default(),
            TOKEN_CALL_TIMEOUT,
        )?;
        let path = format!(
            "{}/{}/oauth2/v2.0/token",
            base_path(authority),
            encode(tenant)
        );
        Ok(Login {
            endpoint,
            tenant: tenant.to_string(),
            url: format!("{}/{}/oauth2/v2.0/token", authority, encode(tenant)),
            path,
        })
    }
}

/// Azure's variables that name a credential kes cannot use.
const UNSUPPORTED_ENV: [(&str, &str); 5] = [
    ("AZURE_CLIENT_CERTIFICATE_PATH", "certificate credentials"),
    ("AZURE_USERNAME", "user name and password credentials"),
    (
        "IDENTITY_SERVER_THUMBPRINT",
        "the Service Fabric managed identity",
    ),
    ("IMDS_ENDPOINT", "the Azure Arc managed identity"),
    ("MSI_ENDPOINT", "the Cloud Shell managed identity"),
];

impl Credentials {
    /// Chooses the credential as described in the module docs. Contacts nothing. `env`
    /// reads environment variables (the process environment in production).
    pub fn resolve(
        config: &AzureConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Credentials, String> {
        const BLOCK: &str = "keystore.azure.keyvault";
        let var = |name: &str| {
            env(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let (authority, authority_field) =
            match (&config.authority_host, var("AZURE_AUTHORITY_HOST")) {
                (Some(a), _) => (a.clone(), format!("{BLOCK}.authority_host")),
                (None, Some(a)) => (
                    a.trim_end_matches('/').to_string(),
                    "AZURE_AUTHORITY_HOST".to_string(),
                ),
                (None, None) => (AUTHORITY_HOST.to_string(), "authority host".to_string()),
            };
        match &config.auth {
            AzureAuth::ClientCredentials {
                tenant_id,
                client_id,
                client_secret,
            } => Ok(Credentials {
                source: Source::ClientSecret {
                    client_id: client_id.clone(),
                    secret: SecretVec::new(client_secret.expose().as_bytes().to_vec()),
                    login: Login::new(&authority, tenant_id, &authority_field)?,
                },
                origin: format!("{BLOCK}.credentials"),
                tried: String::new(),
            }),
            AzureAuth::ManagedIdentity { client_id } => Ok(Credentials {
                source: Source::ManagedIdentity {
                    kind: managed_identity(&var)?,
                    client_id: Some(client_id.clone()),
                },
                origin: format!("{BLOCK}.managed_identity"),
                tried: String::new(),
            }),
            AzureAuth::Default => {
                let (tenant, client) = (var("AZURE_TENANT_ID"), var("AZURE_CLIENT_ID"));
                if let (Some(tenant), Some(client), Some(secret)) =
                    (&tenant, &client, var("AZURE_CLIENT_SECRET"))
                {
                    return Ok(Credentials {
                        source: Source::ClientSecret {
                            client_id: client.clone(),
                            secret: SecretVec::new(secret.into_bytes()),
                            login: Login::new(&authority, tenant, &authority_field)?,
                        },
                        origin: "the environment (AZURE_TENANT_ID, AZURE_CLIENT_ID, \
                                 AZURE_CLIENT_SECRET)"
                            .into(),
                        tried: String::new(),
                    });
                }
                for (name, what) in &UNSUPPORTED_ENV[..2] {
                    if tenant.is_some() && client.is_some() && var(name).is_some() {
                        return Err(format!(
                            "{BLOCK}: {name} is set, but {what} are not supported; set \
                             AZURE_CLIENT_SECRET, use workload or managed identity, or configure \
                             {BLOCK}.credentials"
                        ));
                    }
                }
                if let (Some(tenant), Some(client), Some(file)) =
                    (&tenant, &client, var("AZURE_FEDERATED_TOKEN_FILE"))
                {
                    return Ok(Credentials {
                        source: Source::WorkloadIdentity {
                            client_id: client.clone(),
                            token_file: PathBuf::from(&file),
                            login: Login::new(&authority, tenant, &authority_field)?,
                        },
                        origin: format!("workload identity (AZURE_FEDERATED_TOKEN_FILE '{file}')"),
                        tried: String::new(),
                    });
                }
                let missing = |names: &[&str]| -> String {
                    let unset: Vec<&str> =
                        names.iter().copied().filter(|n| var(n).is_none()).collect();
                    format!("{} not set", unset.join(", "))
                };
                let tried = format!(
                    "environment: {}; workload identity: {}",
                    missing(&["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"]),
                    missing(&[
                        "AZURE_TENANT_ID",
                        "AZURE_CLIENT_ID",
                        "AZURE_FEDERATED_TOKEN_FILE"
                    ]),
                );
                Ok(Credentials {
                    source: Source::ManagedIdentity {
                        kind: managed_identity(&var)?,
                        client_id: client,
                    },
                    origin: "the default chain".into(),
                    tried,
                })
            }
        }
    }

    /// What the credential is, for the log: `managed identity (IMDS at …)`, …
    pub fn describe(&self) -> String {
        match &self.source {
            Source::ClientSecret { client_id, .. } => {
                format!("client secret of {client_id} from {}", self.origin)
            }
            Source::WorkloadIdentity { client_id, .. } => {
                format!("client {client_id} by {}", self.origin)
            }
            Source::ManagedIdentity { kind, client_id } => {
                let who = match client_id {
                    Some(id) => format!("user-assigned managed identity {id}"),
                    None => "system-assigned managed identity".to_string(),
                };
                let at = match kind {
                    Msi::Imds { url, .. } => format!("IMDS at {url}"),
                    Msi::AppService { url, .. } => format!("IDENTITY_ENDPOINT {url}"),
                };
                format!("{who} ({at}) from {}", self.origin)
            }
        }
    }

    /// A fresh access token for what the vault's challenge asks: the `Authorization` value
    /// and its lifetime.
    pub fn fetch(
        &self,
        retry: &Retry,
        challenge: &Challenge,
    ) -> Result<(SecretVec, Duration), StoreError> {
        let scope_form = format!("scope={}", encode(&challenge.scope));
        match &self.source {
            Source::ClientSecret {
                client_id,
                secret,
                login,
            } => {
                // The secret is encoded straight into the wiped form, sized once (a plain
                // copy or a grown buffer would leave it behind).
                let head = format!(
                    "grant_type=client_credentials&client_id={}&{scope_form}&client_secret=",
                    encode(client_id)
                );
                let mut form = SecretVec::with_capacity(head.len() + 3 * secret.len());
                form.as_mut_vec().extend_from_slice(head.as_bytes());
                encode_into(&mut form, secret.expose());
                self.grant(login, challenge, &form, &[secret.expose()], retry)
            }
            Source::WorkloadIdentity {
                client_id,
                token_file,
                login,
            } => {
                let what = format!("AZURE_FEDERATED_TOKEN_FILE '{}'", token_file.display());
                let assertion = read_credential_file(token_file, TOKEN_FILE_BYTES_MAX, &what)
                    .map_err(|e| other(format!("Azure credentials ({}): {e}", self.origin)))?;
                let text = std::str::from_utf8(assertion.expose())
                    .map(str::trim)
                    .ok()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        other(format!(
                            "Azure credentials ({}): {what} is empty or not text",
                            self.origin
                        ))
                    })?;
                let mut form = SecretVec::with_capacity(text.len() + 320);
                form.as_mut_vec().extend_from_slice(
                    format!(
                        "grant_type=client_credentials&client_id={}&{scope_form}\
                         &client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer\
                         &client_assertion=",
                        encode(client_id)
                    )
                    .as_bytes(),
                );
                form.as_mut_vec().extend_from_slice(encode(text).as_bytes());
                self.grant(login, challenge, &form, &[text.as_bytes()], retry)
            }
            Source::ManagedIdentity { kind, client_id } => {
                let user = client_id
                    .as_ref()
                    .map(|id| format!("&client_id={}", encode(id)))
                    .unwrap_or_default();
                let resource = encode(&challenge.resource);
                let (reply, url, secrets): (Result<Reply, StoreError>, &str, Vec<&[u8]>) =
                    match kind {
                        Msi::Imds { endpoint, url } => {
                            let path = format!(
                                "{IMDS_PATH}?api-version=2018-02-01&resource={resource}{user}"
                            );
                            // IMDS asks for retries on 404 and 410 while it updates.
                            let again = |r: &Reply| {
                                retryable_status(r) || r.status == 404 || r.status == 410
                            };
                            let reply = retrying(retry, again, || {
                                endpoint.send("GET", &path, &[("Metadata", "true")], b"")
                            });
                            (reply, url, Vec::new())
                        }
                        Msi::AppService {
                            endpoint,
                            path,
                            header,
                            url,
                        } => {
                            let sep = if path.contains('?') { '&' } else { '?' };
                            let path = format!(
                                "{path}{sep}api-version=2019-08-01&resource={resource}{user}"
                            );
                            let value = String::from_utf8_lossy(header.expose());
                            let reply = retrying(retry, retryable_status, || {
                                endpoint.send("GET", &path, &[("X-IDENTITY-HEADER", &value)], b"")
                            });
                            (reply, url, vec![header.expose()])
                        }
                    };
                let tried = if self.tried.is_empty() {
                    String::new()
                } else {
                    format!("{}; ", self.tried)
                };
                let reply = reply.map_err(|e| match e {
                    StoreError::Unreachable(why) => StoreError::Unreachable(format!(
                        "Azure credentials: {tried}managed identity: {url} did not answer \
                         ({why}); outside Azure set {}",
                        "keystore.azure.keyvault.credentials or AZURE_TENANT_ID, \
                         AZURE_CLIENT_ID and AZURE_CLIENT_SECRET"
                    )),
                    e => e,
                })?;
                if reply.status != 200 {
                    return Err(other(format!(
                        "Azure credentials: {tried}managed identity: {url} refused the token \
                         request: {}",
                        oauth_error(&reply, &secrets)
                    )));
                }
                bearer_token(&reply.body, &format!("Azure managed identity at {url}"))
            }
        }
    }

    fn grant(
        &self,
        login: &Login,
        challenge: &Challenge,
        form: &SecretVec,
        secrets: &[&[u8]],
        retry: &Retry,
    ) -> Result<(SecretVec, Duration), StoreError> {
        // As the Azure SDK without additionally allowed tenants: a vault of another tenant
        // cannot be served with these credentials.
        if let Some(wanted) = challenge
            .tenant
            .as_ref()
            .filter(|t| !t.eq_ignore_ascii_case(&login.tenant))
        {
            return Err(other(format!(
                "Azure credentials ({}): the vault asks for a token of tenant '{wanted}', but \
                 the credentials are for tenant '{}'",
                self.origin, login.tenant
            )));
        }
        let reply = retrying(retry, retryable_status, || {
            login.endpoint.send(
                "POST",
                &login.path,
                &[
                    ("Content-Type", "application/x-www-form-urlencoded"),
                    ("Accept", "application/json"),
                ],
                form.expose(),
            )
        })
        .map_err(|e| match e {
            StoreError::Unreachable(why) => StoreError::Unreachable(format!(
                "Azure credentials ({}): token endpoint {}: {why}",
                self.origin, login.url
            )),
            e => e,
        })?;
        if reply.status != 200 {
            return Err(other(format!(
                "Azure credentials ({}): token request to {} failed with {}",
                self.origin,
                login.url,
                oauth_error(&reply, secrets)
            )));
        }
        bearer_token(&reply.body, &format!("Microsoft Entra ID at {}", login.url))
    }
}

/// Where a managed identity gets its tokens here.
fn managed_identity(var: &dyn Fn(&str) -> Option<String>) -> Result<Msi, String> {
    if let (Some(url), Some(header)) = (var("IDENTITY_ENDPOINT"), var("IDENTITY_HEADER")) {
        if var("IDENTITY_SERVER_THUMBPRINT").is_some() {
            return Err(unsupported(2));
        }
        let endpoint = Endpoint::parse(
            "Azure managed identity endpoint",
            "IDENTITY_ENDPOINT",
            &url,
            &TlsFiles::default(),
            TOKEN_CALL_TIMEOUT,
        )?;
        let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(&url);
        let path = match rest.find('/') {
            Some(i) => rest[i..].to_string(),
            None => "/".to_string(),
        };
        return Ok(Msi::AppService {
            endpoint,
            path,
            header: SecretVec::new(header.into_bytes()),
            url,
        });
    }
    if var("IDENTITY_ENDPOINT").is_some() && var("IMDS_ENDPOINT").is_some() {
        return Err(unsupported(3));
    }
    if var("MSI_ENDPOINT").is_some() {
        return Err(unsupported(4));
    }
    let base = var("AZURE_POD_IDENTITY_AUTHORITY_HOST")
        .map(|b| b.trim_end_matches('/').to_string())
        .unwrap_or_else(|| IMDS_URL.to_string());
    let endpoint = Endpoint::parse(
        "Azure IMDS",
        "AZURE_POD_IDENTITY_AUTHORITY_HOST",
        &base,
        &TlsFiles::default(),
        TOKEN_CALL_TIMEOUT,
    )?
    .with_connect_timeout(IMDS_CONNECT_TIMEOUT);
    Ok(Msi::Imds {
        endpoint,
        url: base,
    })
}

fn unsupported(i: usize) -> String {
    let (name, what) = UNSUPPORTED_ENV[i];
    format!(
        "keystore.azure.keyvault: {name} is set: {what} is not supported; configure \
         keystore.azure.keyvault.credentials or use IMDS / App Service managed identity"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public() -> Challenge {
        crate::keystore::azure_challenge::parse(r#"Bearer resource="https://vault.azure.net""#)
            .unwrap()
    }

    fn config(auth: AzureAuth) -> AzureConfig {
        AzureConfig {
            endpoint: "http://127.0.0.1:1".into(),
            authority_host: None,
            auth,
        }
    }

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    fn describe(auth: AzureAuth, vars: &[(&str, &str)]) -> Result<String, String> {
        Credentials::resolve(&config(auth), &env(vars)).map(|c| c.describe())
    }

    #[test]
    fn the_default_chain_follows_the_sdk_order() {
        let all = [
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_CLIENT_SECRET", "SECRET"),
            ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
        ];
        let d = describe(AzureAuth::Default, &all).unwrap();
        assert!(
            d.starts_with("client secret of c from the environment"),
            "{d}"
        );
        let d = describe(AzureAuth::Default, &all[..2]).unwrap();
        assert_eq!(
            d,
            "user-assigned managed identity c (IMDS at http://169.254.169.254) from the default chain"
        );
        let wi = [all[0], all[1], all[3]];
        let d = describe(AzureAuth::Default, &wi).unwrap();
        assert_eq!(
            d,
            "client c by workload identity (AZURE_FEDERATED_TOKEN_FILE '/var/run/token')"
        );
        let d = describe(AzureAuth::Default, &[]).unwrap();
        assert_eq!(
            d,
            "system-assigned managed identity (IMDS at http://169.254.169.254) from the default chain"
        );
        let d = describe(
            AzureAuth::Default,
            &[
                ("IDENTITY_ENDPOINT", "http://127.0.0.1:4141/msi/token"),
                ("IDENTITY_HEADER", "HEADER-SECRET"),
            ],
        )
        .unwrap();
        assert!(
            d.contains("(IDENTITY_ENDPOINT http://127.0.0.1:4141/msi/token)")
                && !d.contains("HEADER-SECRET"),
            "{d}"
        );
        // The block's managed identity ignores the environment's client credentials.
        let d = describe(
            AzureAuth::ManagedIdentity {
                client_id: "mi".into(),
            },
            &all,
        )
        .unwrap();
        assert!(
            d.starts_with("user-assigned managed identity mi (IMDS"),
            "{d}"
        );
        // What cannot be used is refused at start, by name.
        let e = describe(
            AzureAuth::Default,
            &[
                ("AZURE_TENANT_ID", "t"),
                ("AZURE_CLIENT_ID", "c"),
                ("AZURE_CLIENT_CERTIFICATE_PATH", "/c.pem"),
            ],
        )
        .err()
        .unwrap();
        assert!(e.contains("AZURE_CLIENT_CERTIFICATE_PATH is set"), "{e}");
        let e = describe(AzureAuth::Default, &[("MSI_ENDPOINT", "http://x")])
            .err()
            .unwrap();
        assert!(
            e.contains("Cloud Shell managed identity is not supported"),
            "{e}"
        );
    }

    #[test]
    fn the_federated_token_file_is_bounded_and_never_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        let path = file.display().to_string();
        let vars = [
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
            ("AZURE_FEDERATED_TOKEN_FILE", path.as_str()),
            ("AZURE_AUTHORITY_HOST", "http://127.0.0.1:1"),
        ];
        let c = Credentials::resolve(&config(AzureAuth::Default), &env(&vars)).unwrap();
        std::fs::write(&file, vec![b'a'; TOKEN_FILE_BYTES_MAX + 1]).unwrap();
        let e = c.fetch(&Retry::NONE, &public()).err().unwrap().to_string();
        assert!(
            e.contains(&format!("'{path}': larger than 65536 bytes")),
            "{e}"
        );
        std::fs::write(&file, " \n").unwrap();
        let e = c.fetch(&Retry::NONE, &public()).err().unwrap().to_string();
        assert!(e.contains("is empty or not text"), "{e}");
        // Nothing listens at the authority: the error names it, not the assertion.
        std::fs::write(&file, "ASSERTION-SECRET").unwrap();
        let e = c.fetch(&Retry::NONE, &public()).err().unwrap().to_string();
        assert!(
            e.contains("token endpoint http://127.0.0.1:1/t/oauth2/v2.0/token")
                && !e.contains("ASSERTION-SECRET"),
            "{e}"
        );
    }

    #[test]
    fn the_authority_is_the_block_then_the_environment_then_public_azure() {
        let cc = AzureAuth::ClientCredentials {
            tenant_id: "t/x".into(),
            client_id: "c".into(),
            client_secret: "s".into(),
        };
        let url = |c: &AzureConfig, vars: &[(&str, &str)]| {
            let Source::ClientSecret { login, .. } =
                Credentials::resolve(c, &env(vars)).unwrap().source
            else {
                panic!("not client credentials")
            };
            (login.url, login.path)
        };
        let mut c = config(cc);
        let gov = [("AZURE_AUTHORITY_HOST", "https://login.microsoftonline.us/")];
        assert_eq!(
            url(&c, &[]).0,
            "https://login.microsoftonline.com/t%2Fx/oauth2/v2.0/token"
        );
        assert_eq!(
            url(&c, &gov),
            (
                "https://login.microsoftonline.us/t%2Fx/oauth2/v2.0/token".to_string(),
                "/t%2Fx/oauth2/v2.0/token".to_string()
            )
        );
        c.authority_host = Some("http://127.0.0.1:9/login".into());
        assert_eq!(url(&c, &gov).1, "/login/t%2Fx/oauth2/v2.0/token");
    }
}
