//! rustls client configuration: client credentials, server verification, ALPN.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use super::{ClientConfig, ClientError, Credentials};
use crate::auth::cert::client_cert_from_api_key;

/// Accepts any server certificate (`--insecure`) but still checks that the server owns the
/// certificate's key, i.e. verifies the handshake signatures.
#[derive(Debug)]
pub struct AcceptAnyServerCert {
    provider: Arc<CryptoProvider>,
}

impl AcceptAnyServerCert {
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        AcceptAnyServerCert { provider }
    }
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Well-known locations of the system CA bundle, used when no CA file is configured.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
];

fn pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn root_store(ca: Option<&Path>) -> Result<RootCertStore, ClientError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            let files: Vec<std::path::PathBuf> = if path.is_dir() {
                let entries = std::fs::read_dir(path).map_err(|e| {
                    ClientError::Config(format!("cannot read CA directory {}: {e}", path.display()))
                })?;
                let mut files: Vec<_> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file())
                    .collect();
                files.sort();
                files
            } else {
                vec![path.to_path_buf()]
            };
            for file in &files {
                match pem_certs(file) {
                    Ok(certs) => {
                        roots.add_parsable_certificates(certs);
                    }
                    // A single explicit file must be readable; in a directory skip bad files.
                    Err(e) if files.len() == 1 && !path.is_dir() => {
                        return Err(ClientError::Config(format!("invalid CA file {e}")));
                    }
                    Err(_) => {}
                }
            }
            if roots.is_empty() {
                return Err(ClientError::Config(format!(
                    "no CA certificates found in {}",
                    path.display()
                )));
            }
        }
        None => {
            let env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
            let candidates = env
                .into_iter()
                .chain(SYSTEM_BUNDLES.iter().map(std::path::PathBuf::from));
            for file in candidates {
                if let Ok(certs) = pem_certs(&file) {
                    roots.add_parsable_certificates(certs);
                    if !roots.is_empty() {
                        break;
                    }
                }
            }
        }
    }
    Ok(roots)
}

fn client_credentials(
    creds: &Credentials,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ClientError> {
    match creds {
        Credentials::ApiKey(key) => {
            let (cert, key) = client_cert_from_api_key(key)
                .map_err(|e| ClientError::Config(format!("client certificate: {e}")))?;
            Ok((vec![cert], key))
        }
        Credentials::Files { cert, key } => {
            let certs = pem_certs(cert)
                .map_err(|e| ClientError::Config(format!("invalid client certificate {e}")))?;
            if certs.is_empty() {
                return Err(ClientError::Config(format!(
                    "no certificate found in {}",
                    cert.display()
                )));
            }
            // The error text names the file, never its content.
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                ClientError::Config(format!("invalid private key {}: {e}", key.display()))
            })?;
            Ok((certs, key))
        }
    }
}

/// Builds the shared rustls configuration from `cfg`.
pub fn build(cfg: &ClientConfig) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let builder = if cfg.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert::new(provider)))
    } else {
        builder.with_root_certificates(root_store(cfg.ca_file.as_deref())?)
    };
    let mut config = match &cfg.credentials {
        Some(creds) => {
            let (chain, key) = client_credentials(creds)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ClientError::Config(format!("client certificate: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
