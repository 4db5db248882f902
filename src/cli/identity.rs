//! `kes identity`: create API keys and certificates, compute identities (no server needed);
//! `info` and `ls` ask a server.

use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::common::{CliResult, ClientArgs};
use crate::auth::apikey::{ApiKey, K1_PREFIX, K2_PREFIX, PREFIX};
use crate::auth::identity::identity_of_pem_file;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct IdentityArgs {
    #[command(subcommand)]
    pub command: Option<IdentityCommand>,
    /// An API key (kes:v1:…, k1:…, k2:…) or a PEM file: a certificate prints its identity, an
    /// Ed25519 private key prints its API key.
    pub key_or_file: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum IdentityCommand {
    /// Generate a new API key (and, with --key/--cert, a private key and certificate).
    ///
    /// Prints JSON ({"api_key", "identity"[, "key", "cert"]}) with --json or when piped.
    ///
    /// Examples:
    ///   kes identity new
    ///   kes identity new --key client.key --cert client.crt --ip 10.0.0.5 MinIO
    #[command(verbatim_doc_comment)]
    New(NewArgs),
    /// Write the client certificate and private key of an API key, for curl-like clients.
    ///
    /// The same certificate MinIO's client and `kes` build from the key in memory (the key's
    /// own Ed25519 or ECDSA pair, CN = the identity, 90 days), so its identity is the API
    /// key's. The API key comes from
    /// the argument, else $MINIO_KES_API_KEY / $KES_API_KEY.
    ///
    /// Example:
    ///   kes identity cert --key client.key --cert client.crt
    ///   curl -k --cert client.crt --key client.key https://127.0.0.1:7373/v1/key/list/*
    #[command(verbatim_doc_comment)]
    Cert(CertArgs),
    /// Print the identity of an API key or a certificate file.
    ///
    /// Example: kes identity of kes:v1:ACQpoGqx3rHHjT938Hfu5hVVQJHZWSqVI2Xp1KlYxFVw
    Of {
        /// An API key (kes:v1:…, k1:…, k2:…) or a PEM certificate file.
        key_or_file: String,
    },
    /// Describe an identity (default: your own).
    ///
    /// Example: kes identity info
    Info {
        identity: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List identities.
    ///
    /// Example: kes identity ls
    Ls {
        #[arg(default_value = "*")]
        pattern: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Args, Debug)]
pub struct NewArgs {
    /// Write the private key (PKCS#8 PEM, mode 0600) to this file.
    #[arg(long, requires = "cert", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Write a self-signed certificate (mode 0644) to this file.
    #[arg(long, requires = "key", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// IP subject alternative name (repeatable).
    #[arg(long, requires = "key", value_name = "IP")]
    pub ip: Vec<IpAddr>,
    /// DNS subject alternative name (repeatable).
    #[arg(long, requires = "key", value_name = "NAME")]
    pub dns: Vec<String>,
    /// Certificate validity (Go duration).
    #[arg(
        long,
        requires = "key",
        default_value = "720h",
        value_name = "DURATION"
    )]
    pub expiry: String,
    /// Encrypt the private key with a password (prompted).
    #[arg(long, requires = "key")]
    pub encrypt: bool,
    /// Overwrite existing files.
    #[arg(short = 'f', long, requires = "key")]
    pub force: bool,
    /// Certificate subject (common name); default: the identity.
    pub subject: Option<String>,
    /// Print machine-readable JSON (the default when the output is not a terminal).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct CertArgs {
    /// The API key (kes:v1:…, k1:…, k2:…); default: $MINIO_KES_API_KEY, $KES_API_KEY.
    pub api_key: Option<String>,
    /// Write the private key (PKCS#8 PEM, mode 0600) to this file.
    #[arg(long, value_name = "FILE", default_value = "client.key")]
    pub key: PathBuf,
    /// Write the certificate (PEM, mode 0644) to this file.
    #[arg(long, value_name = "FILE", default_value = "client.crt")]
    pub cert: PathBuf,
    /// Overwrite existing files.
    #[arg(short = 'f', long)]
    pub force: bool,
}

pub fn run(args: IdentityArgs) -> CliResult {
    match (args.command, args.key_or_file) {
        (Some(IdentityCommand::New(n)), _) => new(n),
        (Some(IdentityCommand::Cert(c)), _) => cert(c),
        (None, None) => new_api_key(),
        (Some(IdentityCommand::Of { key_or_file }), _) => of(&key_or_file),
        (None, Some(arg)) => key_or_file(&arg),
        (Some(IdentityCommand::Info { identity, client }), _) => {
            super::admin::identity_info(identity, client)
        }
        (Some(IdentityCommand::Ls { pattern, client }), _) => {
            super::admin::identity_ls(pattern, client)
        }
    }
}

fn tty() -> bool {
    std::io::stdout().is_terminal()
}

fn api_key_text(key: &ApiKey) -> String {
    String::from_utf8_lossy(key.to_string_secret().expose()).into_owned()
}

/// `kes identity`: a fresh API key. Pipe: the key only.
fn new_api_key() -> CliResult {
    let key = ApiKey::generate().map_err(|e| format!("cannot generate an API key: {e}"))?;
    let text = api_key_text(&key);
    if tty() {
        outln!("Your API key:\n\n   {text}\n");
        outln!("This is the only time it is shown. Keep it secret and store it in a safe place.\n");
        outln!("Your Identity:\n\n   {}\n", key.identity());
        outln!("The identity is not a secret. It can be shared. Any client using the API key\nauthenticates with this identity. Compute it again with:\n\n   $ kes identity of <api-key>");
    } else {
        out!("{text}");
    }
    Ok(())
}

fn print_identity(identity: &str) {
    if tty() {
        outln!("Identity:\n\n   {identity}");
    } else {
        out!("{identity}");
    }
}

/// Whether `arg` is meant as an API key rather than a file name: it has one of the API-key
/// prefixes (a malformed key then gets the key's parse error, which never repeats the key,
/// instead of a "cannot read file" error that would).
fn is_api_key(arg: &str) -> bool {
    [PREFIX, K1_PREFIX, K2_PREFIX]
        .iter()
        .any(|prefix| arg.starts_with(prefix))
}

/// `kes identity of <api-key|cert-file>`
fn of(arg: &str) -> CliResult {
    let identity = if is_api_key(arg) {
        ApiKey::parse(arg).map_err(|e| e.to_string())?.identity()
    } else {
        identity_of_pem_file(Path::new(arg))
            .map_err(|e| format!("cannot compute the identity of '{arg}': {e}"))?
    };
    print_identity(&identity.to_hex());
    Ok(())
}

/// `kes identity <api-key|file>`: the first certificate or private-key PEM block decides.
fn key_or_file(arg: &str) -> CliResult {
    if is_api_key(arg) {
        return of(arg);
    }
    let pem = std::fs::read_to_string(arg).map_err(|e| format!("cannot read '{arg}': {e}"))?;
    let first = pem
        .lines()
        .filter_map(|l| {
            l.strip_prefix("-----BEGIN ")
                .and_then(|l| l.strip_suffix("-----"))
        })
        .find(|label| *label == "CERTIFICATE" || label.ends_with("PRIVATE KEY"));
    match first {
        Some("CERTIFICATE") => of(arg),
        Some("PRIVATE KEY") => {
            use rustls_pki_types::pem::PemObject;
            let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
                .map_err(|e| format!("'{arg}': invalid private key: {e}"))?;
            let key = ApiKey::from_pkcs8_der(der.secret_pkcs8_der())
                .map_err(|_| format!("'{arg}': not an Ed25519 private key"))?;
            let text = api_key_text(&key);
            if tty() {
                outln!("API key:\n\n   {text}");
            } else {
                out!("{text}");
            }
            Ok(())
        }
        Some(other) => Err(format!("'{arg}': {other} is not an Ed25519 PKCS#8 private key").into()),
        None => Err(format!("'{arg}': no certificate or private key found").into()),
    }
}

/// `kes identity new`
fn new(args: NewArgs) -> CliResult {
    let key = ApiKey::generate().map_err(|e| format!("cannot generate an API key: {e}"))?;
    let identity = key.identity().to_hex();
    if let (Some(key_path), Some(cert_path)) = (&args.key, &args.cert) {
        for p in [key_path, cert_path] {
            if p.exists() && !args.force {
                return Err(format!(
                    "'{}' already exists; use --force to overwrite it",
                    p.display()
                )
                .into());
            }
        }
        let expiry = crate::config::parse_go_duration(&args.expiry)
            .map_err(|e| format!("--expiry: '{}' is not a duration: {e}", args.expiry))?;
        let subject = args.subject.clone().unwrap_or_else(|| identity.clone());
        let (cert_pem, key_pem) =
            crate::auth::cert::identity_cert_pem(&key, &subject, &args.ip, &args.dns, expiry)
                .map_err(|e| format!("cannot create the certificate: {e}"))?;
        let key_pem = if args.encrypt {
            let password = prompt_password()?;
            crate::server::legacy_pem::encrypt_pkcs8(key.pkcs8_der().expose(), &password)
                .map_err(|e| format!("cannot encrypt the private key: {e}"))?
        } else {
            key_pem
        };
        write_file(key_path, key_pem.expose(), 0o600, args.force)?;
        write_file(cert_path, cert_pem.as_bytes(), 0o644, args.force)?;
    }
    let text = api_key_text(&key);
    if args.json || !tty() {
        let mut line = format!(
            "{{\"api_key\":{},\"identity\":\"{identity}\"",
            json_string(&text)
        );
        if let (Some(k), Some(c)) = (&args.key, &args.cert) {
            line.push_str(&format!(
                ",\"key\":{},\"cert\":{}",
                json_string(&k.display().to_string()),
                json_string(&c.display().to_string())
            ));
        }
        outln!("{line}}}");
        return Ok(());
    }
    outln!("Your API key:\n\n   {text}\n");
    outln!("Your Identity:\n\n   {identity}\n");
    if let (Some(k), Some(c)) = (&args.key, &args.cert) {
        outln!(
            "Private key:  {}\nCertificate:  {}\n",
            k.display(),
            c.display()
        );
        outln!(
            "Compute the identity again with:\n\n   $ kes identity of {}",
            c.display()
        );
    } else {
        outln!("Compute the identity again with:\n\n   $ kes identity of <api-key>");
    }
    Ok(())
}

/// `kes identity cert`: the certificate an upstream client builds from an API key, on disk.
fn cert(args: CertArgs) -> CliResult {
    let text = match args.api_key {
        Some(k) => k,
        None => crate::client::first_env(crate::client::API_KEY_ENV).ok_or(
            "no API key: give one as the argument or set MINIO_KES_API_KEY or KES_API_KEY",
        )?,
    };
    let key = ApiKey::parse(text.trim()).map_err(|e| e.to_string())?;
    for p in [&args.key, &args.cert] {
        if p.exists() && !args.force {
            return Err(format!(
                "'{}' already exists; use --force to overwrite it",
                p.display()
            )
            .into());
        }
    }
    let (cert_der, _) = crate::auth::cert::client_cert_from_api_key(&key)
        .map_err(|e| format!("cannot create the certificate: {e}"))?;
    let cert_pem = crate::auth::cert::pem_encode_secret("CERTIFICATE", cert_der.as_ref());
    let key_pem = crate::auth::cert::pem_encode_secret("PRIVATE KEY", key.pkcs8_der().expose());
    write_file(&args.key, key_pem.expose(), 0o600, args.force)?;
    write_file(&args.cert, cert_pem.expose(), 0o644, args.force)?;
    let identity = key.identity().to_hex();
    if tty() {
        outln!("Private key:  {}", args.key.display());
        outln!("Certificate:  {}", args.cert.display());
        outln!("Identity:     {identity}\n");
        outln!(
            "For example:\n\n   $ curl -k --cert {} --key {} https://127.0.0.1:7373/v1/identity/self/describe",
            args.cert.display(),
            args.key.display()
        );
    } else {
        outln!(
            "{{\"identity\":\"{identity}\",\"key\":{},\"cert\":{}}}",
            json_string(&args.key.display().to_string()),
            json_string(&args.cert.display().to_string())
        );
    }
    Ok(())
}

fn json_string(s: &str) -> String {
    let mut out = Vec::new();
    crate::api::json::write_string(&mut out, s);
    String::from_utf8_lossy(&out).into_owned()
}

fn write_file(path: &Path, bytes: &[u8], mode: u32, force: bool) -> CliResult {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(mode);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut f = options
        .open(path)
        .map_err(|e| format!("cannot write '{}': {e}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write '{}': {e}", path.display()))?;
    Ok(())
}

/// Reads a password twice from the terminal without echo.
fn prompt_password() -> Result<String, Box<dyn std::error::Error>> {
    let first = read_hidden("Enter password for private key: ")?;
    let second = read_hidden("Confirm password for private key: ")?;
    if first != second {
        return Err("passwords don't match".into());
    }
    if first.is_empty() {
        return Err("the password is empty".into());
    }
    Ok(first)
}

fn read_hidden(prompt: &str) -> Result<String, Box<dyn std::error::Error>> {
    errout!("{prompt}");
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data; we restore the saved settings below.
    let saved = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut t) == 0 {
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            libc::tcsetattr(fd, libc::TCSANOW, &t);
            Some(saved)
        } else {
            None
        }
    };
    let mut line = String::new();
    let result = std::io::stdin().read_line(&mut line);
    if let Some(saved) = saved {
        // SAFETY: restoring the settings read above.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
        errln!();
    }
    result?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}
