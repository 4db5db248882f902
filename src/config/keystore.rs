//! The `keystore:` section: exactly one backend, each with its own fields
//! (storage-and-config.md §2–§4).

use std::path::PathBuf;

use serde_yaml::Value;

use super::shape::Node;
use super::shape::Shape::{self, Any, Leaf, List, Map};
use super::{err, ConfigError, Parser};
use crate::secret::SecretString;

// The keys of each keystore block: one list per block, next to its parser, which reads the
// block only through it ([`Node`]), and which the lint checks configs against (an unknown
// key is reported with a "did you mean"). A new field is registered in its block's list
// here; a parser that reads an unregistered field panics in debug builds (every test that
// parses the block).

/// `keystore:`: the known blocks.
pub(crate) const KEYSTORE: Shape = Map(&[
    ("fs", Map(&[("path", Leaf)])),
    ("vault", VAULT),
    ("aws", AWS),
    ("gcp", GCP),
    ("azure", AZURE),
    ("fortanix", FORTANIX),
    ("gemalto", GEMALTO),
    ("entrust", ENTRUST),
    // Parsed by upstream but not supported (neither upstream's current releases nor here).
    ("kes", Any),
]);

/// A TLS block with only a CA.
const TLS_CA: Shape = Map(&[("ca", Leaf)]);

/// Which keystore to use, with its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeystoreConfig {
    Fs {
        path: PathBuf,
    },
    Vault(Box<VaultConfig>),
    Aws(Box<AwsConfig>),
    Gcp(Box<GcpConfig>),
    Azure(Box<AzureConfig>),
    KeySecure(Box<KeySecureConfig>),
    Fortanix(Box<FortanixConfig>),
    KeyControl(Box<KeyControlConfig>),
    /// A block name that is no keystore (named for the error message).
    Unsupported(String),
}

/// `keystore.aws.secretsmanager` (AWS Secrets Manager).
#[derive(Clone, PartialEq, Eq)]
pub struct AwsConfig {
    /// `https://secretsmanager.<region>.amazonaws.com` when not configured.
    pub endpoint: String,
    pub region: String,
    /// AWS-KMS key that encrypts the secrets (empty = the account's default key).
    pub kms_key: String,
    /// Static credentials; `None` = the environment (`AWS_ACCESS_KEY_ID`, …).
    pub credentials: Option<AwsCredentials>,
}

/// `credentials.{accesskey, secretkey, token}`.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    pub access_key: String,
    pub secret_key: SecretString,
    pub session_token: SecretString,
}

impl std::fmt::Debug for AwsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsConfig")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("kms_key", &self.kms_key)
            .field(
                "credentials",
                &self
                    .credentials
                    .as_ref()
                    .map(|c| format!("access key {}, secret <redacted>", c.access_key)),
            )
            .finish()
    }
}

/// `keystore.aws`.
const AWS: Shape = Map(&[(
    "secretsmanager",
    Map(&[
        ("endpoint", Leaf),
        ("region", Leaf),
        ("kmskey", Leaf),
        (
            "credentials",
            Map(&[("accesskey", Leaf), ("secretkey", Leaf), ("token", Leaf)]),
        ),
    ]),
)]);

fn parse_aws(p: &Parser<'_>, v: Node<'_>) -> Result<AwsConfig, ConfigError> {
    let sm = v.child("secretsmanager");
    if !sm.is_set() {
        return err("keystore.aws: expected a secretsmanager block");
    }
    let s = |field: &str, node: Option<&Value>| -> Result<String, ConfigError> {
        match node {
            Some(n) if !n.is_null() => Ok(p
                .string(&format!("keystore.aws.secretsmanager.{field}"), n)?
                .trim()
                .to_string()),
            _ => Ok(String::new()),
        }
    };
    let region = s("region", sm.get("region"))?;
    if region.is_empty() {
        return err(
            "keystore.aws.secretsmanager.region: missing; expected an AWS region, e.g. us-east-1",
        );
    }
    let mut endpoint = s("endpoint", sm.get("endpoint"))?;
    if endpoint.is_empty() {
        endpoint = format!("https://secretsmanager.{region}.amazonaws.com");
    }
    let c = sm.child("credentials");
    let access_key = s("credentials.accesskey", c.get("accesskey"))?;
    let secret_key = s("credentials.secretkey", c.get("secretkey"))?;
    let session_token = s("credentials.token", c.get("token"))?;
    let credentials = if access_key.is_empty() && secret_key.is_empty() && session_token.is_empty()
    {
        None
    } else if access_key.is_empty() || secret_key.is_empty() {
        return err(
            "keystore.aws.secretsmanager.credentials: accesskey and secretkey must be given together",
        );
    } else {
        Some(AwsCredentials {
            access_key,
            secret_key: SecretString::new(secret_key),
            session_token: SecretString::new(session_token),
        })
    };
    Ok(AwsConfig {
        endpoint: endpoint.trim_end_matches('/').to_string(),
        region,
        kms_key: s("kmskey", sm.get("kmskey"))?,
        credentials,
    })
}

/// A string field of a keystore block (`${ENV}` substituted, trimmed); absent or null = "".
fn text(p: &Parser<'_>, path: &str, node: Option<&Value>) -> Result<String, ConfigError> {
    match node {
        Some(n) if !n.is_null() => Ok(p.string(path, n)?.trim().to_string()),
        _ => Ok(String::new()),
    }
}

/// `keystore.gemalto.keysecure` (Thales CipherTrust Manager / Gemalto KeySecure).
#[derive(Clone, PartialEq, Eq)]
pub struct KeySecureConfig {
    /// `https://host[:port]` of the CipherTrust Manager.
    pub endpoint: String,
    /// `credentials.token`: the refresh token that buys short-lived access tokens.
    pub token: SecretString,
    /// `credentials.domain`: the domain the token belongs to ("" = root domain).
    pub domain: String,
    /// `tls.ca`: CA certificate(s) of the server; `None` = the system CA bundle.
    pub tls_ca: Option<PathBuf>,
}

impl std::fmt::Debug for KeySecureConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySecureConfig")
            .field("endpoint", &self.endpoint)
            .field("token", &"<redacted>")
            .field("domain", &self.domain)
            .field("tls_ca", &self.tls_ca)
            .finish()
    }
}

/// `keystore.gemalto`.
const GEMALTO: Shape = Map(&[(
    "keysecure",
    Map(&[
        ("endpoint", Leaf),
        (
            "credentials",
            // `retry` is in upstream's sample config; accepted and ignored.
            Map(&[("token", Leaf), ("domain", Leaf), ("retry", Leaf)]),
        ),
        ("tls", TLS_CA),
    ]),
)]);

fn parse_keysecure(p: &Parser<'_>, v: Node<'_>) -> Result<KeySecureConfig, ConfigError> {
    let ks = v.child("keysecure");
    if !ks.is_set() {
        return err("keystore.gemalto: expected a keysecure block");
    }
    const B: &str = "keystore.gemalto.keysecure";
    let endpoint = text(p, &format!("{B}.endpoint"), ks.get("endpoint"))?;
    if endpoint.is_empty() {
        return err(format!(
            "{B}.endpoint: missing; expected the CipherTrust Manager URL, e.g. https://ciphertrust.example.com"
        ));
    }
    let c = ks.child("credentials");
    let token = text(p, &format!("{B}.credentials.token"), c.get("token"))?;
    if token.is_empty() {
        return err(format!(
            "{B}.credentials.token: missing; expected a refresh token"
        ));
    }
    let domain = text(p, &format!("{B}.credentials.domain"), c.get("domain"))?;
    // `credentials.retry` is accepted and ignored (token renewal is on demand here).
    let ca = text(p, &format!("{B}.tls.ca"), ks.child("tls").get("ca"))?;
    Ok(KeySecureConfig {
        endpoint: endpoint.trim_end_matches('/').to_string(),
        token: SecretString::new(token),
        domain,
        tls_ca: (!ca.is_empty()).then(|| PathBuf::from(ca)),
    })
}

/// `keystore.fortanix.sdkms` (Fortanix Data Security Manager, formerly SDKMS).
#[derive(Clone, PartialEq, Eq)]
pub struct FortanixConfig {
    pub endpoint: String,
    /// `group_id`: the group new security objects are created in ("" = the app's default).
    pub group_id: String,
    /// `credentials.key`: the application's API key.
    pub api_key: SecretString,
    /// `tls.ca`: CA certificate(s) of the server; `None` = the system CA bundle.
    pub tls_ca: Option<PathBuf>,
}

impl std::fmt::Debug for FortanixConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FortanixConfig")
            .field("endpoint", &self.endpoint)
            .field("group_id", &self.group_id)
            .field("api_key", &"<redacted>")
            .field("tls_ca", &self.tls_ca)
            .finish()
    }
}

/// `keystore.fortanix`.
const FORTANIX: Shape = Map(&[(
    "sdkms",
    Map(&[
        ("endpoint", Leaf),
        ("group_id", Leaf),
        ("credentials", Map(&[("key", Leaf)])),
        ("tls", TLS_CA),
    ]),
)]);

fn parse_fortanix(p: &Parser<'_>, v: Node<'_>) -> Result<FortanixConfig, ConfigError> {
    let b = v.child("sdkms");
    if !b.is_set() {
        return err("keystore.fortanix: expected an sdkms block");
    }
    const B: &str = "keystore.fortanix.sdkms";
    let endpoint = text(p, &format!("{B}.endpoint"), b.get("endpoint"))?;
    if endpoint.is_empty() {
        return err(format!(
            "{B}.endpoint: missing; expected the Fortanix DSM URL, e.g. https://sdkms.fortanix.com"
        ));
    }
    let api_key = text(
        p,
        &format!("{B}.credentials.key"),
        b.child("credentials").get("key"),
    )?;
    if api_key.is_empty() {
        return err(format!("{B}.credentials.key: missing; expected an API key"));
    }
    let ca = text(p, &format!("{B}.tls.ca"), b.child("tls").get("ca"))?;
    Ok(FortanixConfig {
        endpoint: endpoint.trim_end_matches('/').to_string(),
        group_id: text(p, &format!("{B}.group_id"), b.get("group_id"))?,
        api_key: SecretString::new(api_key),
        tls_ca: (!ca.is_empty()).then(|| PathBuf::from(ca)),
    })
}

/// `keystore.entrust.keycontrol` (Entrust KeyControl vault secrets).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyControlConfig {
    pub endpoint: String,
    /// `vault_id`: the UUID of the KeyControl vault.
    pub vault_id: String,
    /// `box_id`: the ID or name of the box inside the vault.
    pub box_id: String,
    pub username: String,
    pub password: SecretString,
    /// `tls.ca`: CA certificate(s) of the server; `None` = the system CA bundle.
    pub tls_ca: Option<PathBuf>,
}

impl std::fmt::Debug for KeyControlConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyControlConfig")
            .field("endpoint", &self.endpoint)
            .field("vault_id", &self.vault_id)
            .field("box_id", &self.box_id)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("tls_ca", &self.tls_ca)
            .finish()
    }
}

/// `keystore.entrust`.
const ENTRUST: Shape = Map(&[(
    "keycontrol",
    Map(&[
        ("endpoint", Leaf),
        ("vault_id", Leaf),
        ("box_id", Leaf),
        (
            "credentials",
            Map(&[("username", Leaf), ("password", Leaf)]),
        ),
        ("tls", TLS_CA),
    ]),
)]);

fn parse_keycontrol(p: &Parser<'_>, v: Node<'_>) -> Result<KeyControlConfig, ConfigError> {
    let b = v.child("keycontrol");
    if !b.is_set() {
        return err("keystore.entrust: expected a keycontrol block");
    }
    const B: &str = "keystore.entrust.keycontrol";
    let c = b.child("credentials");
    let required = |field: &str, node: Option<&Value>| -> Result<String, ConfigError> {
        let value = text(p, &format!("{B}.{field}"), node)?;
        if value.is_empty() {
            return err(format!("{B}.{field}: missing"));
        }
        Ok(value)
    };
    let endpoint = required("endpoint", b.get("endpoint"))?;
    let ca = text(p, &format!("{B}.tls.ca"), b.child("tls").get("ca"))?;
    Ok(KeyControlConfig {
        endpoint: endpoint.trim_end_matches('/').to_string(),
        vault_id: required("vault_id", b.get("vault_id"))?,
        box_id: required("box_id", b.get("box_id"))?,
        username: required("credentials.username", c.get("username"))?,
        password: SecretString::new(required("credentials.password", c.get("password"))?),
        tls_ca: (!ca.is_empty()).then(|| PathBuf::from(ca)),
    })
}

/// `keystore.gcp.secretmanager` (GCP Secret Manager).
#[derive(Clone, PartialEq, Eq)]
pub struct GcpConfig {
    /// `https://secretmanager.googleapis.com` when not configured.
    pub endpoint: String,
    pub project_id: String,
    /// OAuth2 scopes; `https://www.googleapis.com/auth/cloud-platform` when not configured.
    pub scopes: Vec<String>,
    /// The OAuth2 token endpoint (ours, not upstream's: upstream always uses Google's) for
    /// the block's service account and for a credentials file without its own `token_uri`;
    /// `https://oauth2.googleapis.com/token` when not configured.
    pub token_uri: String,
    /// The service account; `None` = application default credentials or the metadata
    /// server (`keystore::gcp_auth`).
    pub credentials: Option<GcpCredentials>,
}

/// `credentials.{client_email, client_id, private_key_id, private_key}`.
#[derive(Clone, PartialEq, Eq)]
pub struct GcpCredentials {
    pub client_email: String,
    pub client_id: String,
    pub private_key_id: String,
    /// PKCS#8 PEM (a `\n` written as two characters is read as a newline, as upstream does).
    pub private_key: SecretString,
}

impl std::fmt::Debug for GcpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcpConfig")
            .field("endpoint", &self.endpoint)
            .field("project_id", &self.project_id)
            .field("scopes", &self.scopes)
            .field("token_uri", &self.token_uri)
            .field(
                "credentials",
                &self
                    .credentials
                    .as_ref()
                    .map(|c| format!("{} (key {}, <redacted>)", c.client_email, c.private_key_id)),
            )
            .finish()
    }
}

/// `keystore.gcp`.
const GCP: Shape = Map(&[(
    "secretmanager",
    Map(&[
        ("project_id", Leaf),
        ("endpoint", Leaf),
        ("scopes", List(&Leaf)),
        ("token_uri", Leaf), // ours (see GcpConfig::token_uri)
        (
            "credentials",
            Map(&[
                ("client_email", Leaf),
                ("client_id", Leaf),
                ("private_key_id", Leaf),
                ("private_key", Leaf),
            ]),
        ),
    ]),
)]);

fn parse_gcp(p: &Parser<'_>, v: Node<'_>) -> Result<GcpConfig, ConfigError> {
    let sm = v.child("secretmanager");
    if !sm.is_set() {
        return err("keystore.gcp: expected a secretmanager block");
    }
    let s = |field: &str, node: Option<&Value>| -> Result<String, ConfigError> {
        match node {
            Some(n) if !n.is_null() => Ok(p
                .string(&format!("keystore.gcp.secretmanager.{field}"), n)?
                .trim()
                .to_string()),
            _ => Ok(String::new()),
        }
    };
    let project_id = s("project_id", sm.get("project_id"))?;
    if project_id.is_empty() {
        return err("keystore.gcp.secretmanager.project_id: missing; expected the GCP project ID");
    }
    let mut endpoint = s("endpoint", sm.get("endpoint"))?;
    if endpoint.is_empty() {
        endpoint = "https://secretmanager.googleapis.com".into();
    }
    let mut token_uri = s("token_uri", sm.get("token_uri"))?;
    if token_uri.is_empty() {
        token_uri = "https://oauth2.googleapis.com/token".into();
    }
    let mut scopes = Vec::new();
    match sm.get("scopes") {
        None | Some(Value::Null) => {}
        Some(Value::Sequence(list)) => {
            for (i, n) in list.iter().enumerate() {
                let scope = p
                    .string(&format!("keystore.gcp.secretmanager.scopes[{i}]"), n)?
                    .trim()
                    .to_string();
                if !scope.is_empty() {
                    scopes.push(scope);
                }
            }
        }
        Some(_) => return err("keystore.gcp.secretmanager.scopes: expected a list of scopes"),
    }
    if scopes.is_empty() {
        scopes.push("https://www.googleapis.com/auth/cloud-platform".into());
    }
    let c = sm.child("credentials");
    let field = |name: &str| s(&format!("credentials.{name}"), c.get(name));
    let creds = GcpCredentials {
        client_email: field("client_email")?,
        client_id: field("client_id")?,
        private_key_id: field("private_key_id")?,
        private_key: pem_lines(field("private_key")?),
    };
    let credentials = if creds.client_email.is_empty()
        && creds.client_id.is_empty()
        && creds.private_key_id.is_empty()
        && creds.private_key.is_empty()
    {
        None
    } else {
        for (name, value) in [
            ("client_email", creds.client_email.as_str()),
            ("client_id", &creds.client_id),
            ("private_key_id", &creds.private_key_id),
            ("private_key", creds.private_key.expose()),
        ] {
            if value.is_empty() {
                return err(format!(
                    "keystore.gcp.secretmanager.credentials.{name}: missing"
                ));
            }
        }
        Some(creds)
    };
    Ok(GcpConfig {
        endpoint: endpoint.trim_end_matches('/').to_string(),
        project_id,
        scopes,
        token_uri,
        credentials,
    })
}

/// A PEM whose line breaks are written `\n` (as in a service-account JSON file) with real
/// line breaks, built in a string sized once; both are zeroizing.
fn pem_lines(pem: String) -> SecretString {
    let pem = SecretString::new(pem);
    let mut out = String::with_capacity(pem.len());
    let mut rest = pem.expose();
    while let Some(i) = rest.find("\\n") {
        out.push_str(&rest[..i]);
        out.push('\n');
        rest = &rest[i + 2..];
    }
    out.push_str(rest);
    SecretString::new(out)
}

/// `keystore.azure.keyvault` (Azure Key Vault secrets).
#[derive(Clone, PartialEq, Eq)]
pub struct AzureConfig {
    /// The vault URL, e.g. `https://my-vault.vault.azure.net`.
    pub endpoint: String,
    /// Microsoft Entra ID login host (ours, not upstream's); `None` = `AZURE_AUTHORITY_HOST`
    /// (as the Azure SDKs read it), else `https://login.microsoftonline.com`.
    pub authority_host: Option<String>,
    pub auth: AzureAuth,
}

/// How kes authenticates to Key Vault.
#[derive(Clone, PartialEq, Eq)]
pub enum AzureAuth {
    /// `credentials.{tenant_id, client_id, client_secret}`.
    ClientCredentials {
        tenant_id: String,
        client_id: String,
        client_secret: SecretString,
    },
    /// `managed_identity.{client_id}`: a user-assigned managed identity (required, as
    /// upstream).
    ManagedIdentity { client_id: String },
    /// No auth block: the default chain (environment, workload identity, managed identity).
    Default,
}

impl std::fmt::Debug for AzureConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = match &self.auth {
            AzureAuth::ClientCredentials {
                tenant_id,
                client_id,
                ..
            } => format!("client credentials ({tenant_id}, {client_id}, secret <redacted>)"),
            AzureAuth::ManagedIdentity { client_id } => format!("managed identity ({client_id})"),
            AzureAuth::Default => "default".into(),
        };
        f.debug_struct("AzureConfig")
            .field("endpoint", &self.endpoint)
            .field("authority_host", &self.authority_host)
            .field("auth", &auth)
            .finish()
    }
}

/// `keystore.azure`.
const AZURE: Shape = Map(&[(
    "keyvault",
    Map(&[
        ("endpoint", Leaf),
        ("authority_host", Leaf), // ours (see AzureConfig::authority_host)
        (
            "credentials",
            Map(&[
                ("tenant_id", Leaf),
                ("client_id", Leaf),
                ("client_secret", Leaf),
            ]),
        ),
        ("managed_identity", Map(&[("client_id", Leaf)])),
    ]),
)]);

fn parse_azure(p: &Parser<'_>, v: Node<'_>) -> Result<AzureConfig, ConfigError> {
    let kv = v.child("keyvault");
    if !kv.is_set() {
        return err("keystore.azure: expected a keyvault block");
    }
    let s = |field: &str, node: Option<&Value>| -> Result<String, ConfigError> {
        match node {
            Some(n) if !n.is_null() => Ok(p
                .string(&format!("keystore.azure.keyvault.{field}"), n)?
                .trim()
                .to_string()),
            _ => Ok(String::new()),
        }
    };
    let endpoint = s("endpoint", kv.get("endpoint"))?;
    if endpoint.is_empty() {
        return err(
            "keystore.azure.keyvault.endpoint: missing; expected the vault URL, e.g. https://my-vault.vault.azure.net",
        );
    }
    let authority_host = s("authority_host", kv.get("authority_host"))?;
    let creds = kv.child("credentials");
    let msi = kv.child("managed_identity");
    let auth = match (creds.is_set(), msi.is_set()) {
        (true, true) => return err(
            "keystore.azure.keyvault: credentials and managed_identity are both set; choose one",
        ),
        (true, false) => {
            let c = creds;
            let f = |name: &str| s(&format!("credentials.{name}"), c.get(name));
            let (tenant_id, client_id, client_secret) =
                (f("tenant_id")?, f("client_id")?, f("client_secret")?);
            for (name, value) in [
                ("tenant_id", &tenant_id),
                ("client_id", &client_id),
                ("client_secret", &client_secret),
            ] {
                if value.is_empty() {
                    return err(format!(
                        "keystore.azure.keyvault.credentials.{name}: missing"
                    ));
                }
            }
            AzureAuth::ClientCredentials {
                tenant_id,
                client_id,
                client_secret: SecretString::new(client_secret),
            }
        }
        (false, true) => {
            let client_id = s("managed_identity.client_id", msi.get("client_id"))?;
            if client_id.is_empty() {
                return err(
                    "keystore.azure.keyvault.managed_identity.client_id: missing; the client ID \
                     of a user-assigned managed identity (leave out managed_identity for the \
                     default chain, which includes the system-assigned identity)",
                );
            }
            AzureAuth::ManagedIdentity { client_id }
        }
        (false, false) => AzureAuth::Default,
    };
    Ok(AzureConfig {
        endpoint: endpoint.trim_end_matches('/').to_string(),
        authority_host: (!authority_host.is_empty())
            .then(|| authority_host.trim_end_matches('/').to_string()),
        auth,
    })
}

/// `keystore.vault` (HashiCorp Vault or OpenBao K/V).
#[derive(Clone, PartialEq, Eq)]
pub struct VaultConfig {
    pub endpoint: String,
    /// K/V mount (default `kv`).
    pub engine: String,
    /// `v1` (default) or `v2`.
    pub kv_v2: bool,
    pub namespace: String,
    pub prefix: String,
    pub auth: VaultAuth,
    /// `transit.{engine, key}`: records are stored as transit ciphertexts of their base64.
    pub transit: Option<(String, String)>,
    pub tls_key: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    /// `status.ping`: how often the keystore is probed (default 15 s).
    pub ping: std::time::Duration,
}

/// How kes logs in to Vault.
#[derive(Clone, PartialEq, Eq)]
pub enum VaultAuth {
    AppRole {
        engine: String,
        namespace: String,
        id: String,
        secret: SecretString,
    },
    Kubernetes {
        engine: String,
        namespace: String,
        role: String,
        jwt: KubernetesJwt,
    },
}

/// `keystore.vault.kubernetes.jwt`: the service-account token itself, or (when it contains a
/// `/`, as upstream decides) the file that holds it, read again at every login because the
/// kubelet rotates projected tokens.
#[derive(Clone, PartialEq, Eq)]
pub enum KubernetesJwt {
    Token(SecretString),
    File(PathBuf),
}

impl std::fmt::Debug for VaultConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = match &self.auth {
            VaultAuth::AppRole { engine, .. } => format!("approle({engine}, secret <redacted>)"),
            VaultAuth::Kubernetes { engine, role, .. } => {
                format!("kubernetes({engine}, role {role}, jwt <redacted>)")
            }
        };
        f.debug_struct("VaultConfig")
            .field("endpoint", &self.endpoint)
            .field("engine", &self.engine)
            .field("kv_v2", &self.kv_v2)
            .field("namespace", &self.namespace)
            .field("prefix", &self.prefix)
            .field("auth", &auth)
            .finish()
    }
}

/// `keystore.vault`.
const VAULT: Shape = Map(&[
    ("endpoint", Leaf),
    ("engine", Leaf),
    ("version", Leaf),
    ("namespace", Leaf),
    ("prefix", Leaf),
    (
        "approle",
        Map(&[
            ("engine", Leaf),
            ("namespace", Leaf),
            ("id", Leaf),
            ("secret", Leaf),
            ("retry", Leaf), // in upstream's sample configs; ignored
        ]),
    ),
    (
        "kubernetes",
        Map(&[
            ("engine", Leaf),
            ("namespace", Leaf),
            ("role", Leaf),
            ("jwt", Leaf),
            ("retry", Leaf), // likewise
        ]),
    ),
    ("transit", Map(&[("engine", Leaf), ("key", Leaf)])),
    ("tls", Map(&[("key", Leaf), ("cert", Leaf), ("ca", Leaf)])),
    ("status", Map(&[("ping", Leaf)])),
]);

fn parse_vault(p: &Parser<'_>, v: Node<'_>) -> Result<VaultConfig, ConfigError> {
    let s = |path: &str, node: Option<&Value>| -> Result<String, ConfigError> {
        match node {
            Some(n) if !n.is_null() => Ok(p.string(path, n)?.trim().to_string()),
            _ => Ok(String::new()),
        }
    };
    let endpoint = s("keystore.vault.endpoint", v.get("endpoint"))?;
    if endpoint.is_empty() {
        return err("keystore.vault.endpoint: missing; expected the Vault/OpenBao URL, e.g. https://vault:8200");
    }
    let engine = Some(s("keystore.vault.engine", v.get("engine"))?)
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "kv".into());
    let kv_v2 = match s("keystore.vault.version", v.get("version"))?.as_str() {
        "" | "v1" => false,
        "v2" => true,
        other => {
            return err(format!(
                "keystore.vault.version: '{other}' is invalid; expected v1 or v2"
            ))
        }
    };
    let approle = v.child("approle");
    let kubernetes = v.child("kubernetes");
    let auth = match (approle.is_set(), kubernetes.is_set()) {
        (true, false) => {
            let a = approle;
            let id = s("keystore.vault.approle.id", a.get("id"))?;
            let secret = s("keystore.vault.approle.secret", a.get("secret"))?;
            if id.is_empty() || secret.is_empty() {
                return err("keystore.vault.approle: id and secret are required");
            }
            VaultAuth::AppRole {
                engine: Some(s("keystore.vault.approle.engine", a.get("engine"))?)
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| "approle".into()),
                namespace: s("keystore.vault.approle.namespace", a.get("namespace"))?,
                id,
                secret: SecretString::new(secret),
            }
        }
        (false, true) => {
            let k = kubernetes;
            let jwt = s("keystore.vault.kubernetes.jwt", k.get("jwt"))?;
            if jwt.is_empty() {
                return err("keystore.vault.kubernetes.jwt: missing");
            }
            let jwt = if jwt.contains('/') {
                // Read now only to fail early; every login reads it again.
                let path = PathBuf::from(jwt);
                crate::keystore::token_file::read_token_file(&path).map_err(|e| {
                    ConfigError(format!("keystore.vault.kubernetes.jwt: cannot read {e}"))
                })?;
                KubernetesJwt::File(path)
            } else {
                KubernetesJwt::Token(SecretString::new(jwt))
            };
            VaultAuth::Kubernetes {
                engine: Some(s("keystore.vault.kubernetes.engine", k.get("engine"))?)
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| "kubernetes".into()),
                namespace: s("keystore.vault.kubernetes.namespace", k.get("namespace"))?,
                role: s("keystore.vault.kubernetes.role", k.get("role"))?,
                jwt,
            }
        }
        (true, true) => {
            return err("keystore.vault: approle and kubernetes are both set; choose one")
        }
        (false, false) => {
            return err("keystore.vault: no authentication method; set approle or kubernetes")
        }
    };
    let t = v.child("transit");
    let transit = match t.is_set() {
        false => None,
        true => {
            let key = s("keystore.vault.transit.key", t.get("key"))?;
            if key.is_empty() {
                return err(
                    "keystore.vault.transit.key: missing; expected the name of a transit key",
                );
            }
            let engine = Some(s("keystore.vault.transit.engine", t.get("engine"))?)
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "transit".into());
            Some((engine, key))
        }
    };
    let tls = v.child("tls");
    let path = |field: &str| -> Result<Option<PathBuf>, ConfigError> {
        Ok(
            Some(s(&format!("keystore.vault.tls.{field}"), tls.get(field))?)
                .filter(|x| !x.is_empty())
                .map(PathBuf::from),
        )
    };
    let (tls_key, tls_cert, tls_ca) = (path("key")?, path("cert")?, path("ca")?);
    if tls_key.is_some() != tls_cert.is_some() {
        return err("keystore.vault.tls: key and cert must be given together");
    }
    let ping = match v.child("status").get("ping") {
        Some(n) if !n.is_null() => p.duration("keystore.vault.status.ping", n)?,
        _ => std::time::Duration::from_secs(15),
    };
    Ok(VaultConfig {
        endpoint: endpoint.trim_end_matches('/').to_string(),
        engine,
        kv_v2,
        namespace: s("keystore.vault.namespace", v.get("namespace"))?,
        prefix: s("keystore.vault.prefix", v.get("prefix"))?
            .trim_matches('/')
            .to_string(),
        auth,
        transit,
        tls_key,
        tls_cert,
        tls_ca,
        ping,
    })
}

pub(crate) fn parse_keystore(
    p: &Parser<'_>,
    node: Option<&Value>,
) -> Result<KeystoreConfig, ConfigError> {
    let Some(Value::Mapping(map)) = node else {
        return err("keystore: no keystore specified; expected e.g. keystore: {fs: {path: /var/lib/kes/keys}}");
    };
    let blocks = Node::new(node, &KEYSTORE);
    let present: Vec<&str> = map
        .iter()
        .filter(|(_, v)| !v.is_null())
        .filter_map(|(k, _)| k.as_str())
        .collect();
    match present.as_slice() {
        [] => err("keystore: no keystore specified"),
        ["fs"] => {
            let path = match blocks.child("fs").get("path") {
                Some(v) => p.string("keystore.fs.path", v)?,
                None => String::new(),
            };
            if path.is_empty() {
                return err("keystore.fs.path: no path specified");
            }
            Ok(KeystoreConfig::Fs { path: path.into() })
        }
        ["vault"] => Ok(KeystoreConfig::Vault(Box::new(parse_vault(
            p,
            blocks.child("vault"),
        )?))),
        ["aws"] => Ok(KeystoreConfig::Aws(Box::new(parse_aws(
            p,
            blocks.child("aws"),
        )?))),
        ["gcp"] => Ok(KeystoreConfig::Gcp(Box::new(parse_gcp(
            p,
            blocks.child("gcp"),
        )?))),
        ["azure"] => Ok(KeystoreConfig::Azure(Box::new(parse_azure(
            p,
            blocks.child("azure"),
        )?))),
        ["entrust"] => Ok(KeystoreConfig::KeyControl(Box::new(parse_keycontrol(
            p,
            blocks.child("entrust"),
        )?))),
        ["fortanix"] => Ok(KeystoreConfig::Fortanix(Box::new(parse_fortanix(
            p,
            blocks.child("fortanix"),
        )?))),
        ["gemalto"] => Ok(KeystoreConfig::KeySecure(Box::new(parse_keysecure(
            p,
            blocks.child("gemalto"),
        )?))),
        [one] => Ok(KeystoreConfig::Unsupported(one.to_string())),
        _ => err(format!(
            "keystore: more than once keystore specified ({})",
            present.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    /// The keystore credentials a config holds are zeroizing secrets that `Debug` (which the
    /// `--check` output and error paths may print) never shows.
    #[test]
    fn debug_never_prints_a_keystore_secret() {
        const S: &str = "S3CRET-in-the-config";
        for block in [
            format!("vault: {{endpoint: https://v, approle: {{id: r, secret: {S}}}}}"),
            format!("vault: {{endpoint: https://v, kubernetes: {{role: kes, jwt: {S}}}}}"),
            format!("fortanix: {{sdkms: {{endpoint: https://f, credentials: {{key: {S}}}}}}}"),
            format!(
                "gemalto: {{keysecure: {{endpoint: https://cm, credentials: {{token: {S}}}}}}}"
            ),
            format!(
                "entrust: {{keycontrol: {{endpoint: https://kc, vault_id: v, box_id: b, \
                 credentials: {{username: u, password: {S}}}}}}}"
            ),
            format!(
                "aws: {{secretsmanager: {{region: us-east-1, credentials: {{accesskey: AK, \
                 secretkey: {S}, token: {S}-token}}}}}}"
            ),
            format!(
                "gcp: {{secretmanager: {{project_id: p, credentials: {{client_email: e, \
                 client_id: i, private_key_id: k, private_key: {S}}}}}}}"
            ),
            format!(
                "azure: {{keyvault: {{endpoint: https://v, credentials: {{tenant_id: t, \
                 client_id: c, client_secret: {S}}}}}}}"
            ),
        ] {
            let config =
                super::super::parse_keystore_only(&format!("keystore: {{{block}}}"), &|_| None)
                    .unwrap_or_else(|e| panic!("{block}: {e}"));
            let debug = format!("{config:?}");
            assert!(!debug.contains(S), "{debug}");
            assert!(debug.contains("redacted"), "{debug}");
        }
    }

    #[test]
    fn a_pem_with_escaped_line_breaks_gets_real_ones() {
        let pem = super::pem_lines("-----BEGIN X-----\\nAAAA\\nBB\\n-----END X-----".into());
        assert_eq!(pem.expose(), "-----BEGIN X-----\nAAAA\nBB\n-----END X-----");
        assert_eq!(super::pem_lines("a\nb".into()).expose(), "a\nb");
    }
}
