//! TLS: the rustls server configuration shared by all cores, the client-certificate verifier
//! that implements KES's authentication modes, and loading certificates and keys from PEM.
//!
//! The default mode *requires* a client certificate but does not verify its chain (that is how
//! self-signed API-key certificates work), while the handshake signature is still verified, so
//! nobody can present a certificate without holding its private key.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

/// Why the TLS configuration could not be built.
#[derive(Debug)]
pub enum TlsError {
    ReadCert(String),
    NoCertificate(String),
    ReadKey(String),
    BadKey(String),
    NoSan,
    Ca(String),
    Rustls(rustls::Error),
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsError::ReadCert(e) => write!(f, "failed to read TLS certificate: {e}"),
            TlsError::NoCertificate(p) => write!(f, "no certificate found in '{p}'"),
            TlsError::ReadKey(e) => write!(f, "failed to read TLS private key: {e}"),
            TlsError::BadKey(e) => write!(f, "invalid TLS private key: {e}"),
            TlsError::NoSan => {
                f.write_str("the server certificate has no DNS or IP subject alternative name")
            }
            TlsError::Ca(e) => write!(f, "failed to load the CA certificates (tls.ca): {e}"),
            TlsError::Rustls(e) => write!(f, "TLS configuration error: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// How client certificates are treated in the handshake (auth-and-policy.md §2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// `tls.auth` off/empty: require a certificate, do not verify its chain.
    RequireAny,
    /// `tls.auth` off with some `skip_auth` route: ask for one, accept none.
    RequestAny,
}

/// The cryptography provider for the server and client: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's provider: ring with Go's server-side suite preference. On a CPU with AES
/// instructions Go's `crypto/tls` server (upstream KES) picks AES-128-GCM first, so that is
/// what MinIO and the kes CLI negotiate with upstream; without them ChaCha20-Poly1305. The
/// SHA-256 suites also keep the TLS 1.3 key schedule on SHA-256, which has CPU instructions
/// (SHA-NI) where SHA-384 has none: a resumed handshake spent 13 % of its CPU in software
/// SHA-512 before this order.
pub fn server_provider() -> Arc<CryptoProvider> {
    let aes = crate::crypto::KeyType::platform_default() == crate::crypto::KeyType::Aes256;
    let cipher_suites = suite_order(aes);
    Arc::new(CryptoProvider {
        cipher_suites,
        ..rustls::crypto::ring::default_provider()
    })
}

/// TLS 1.3 before TLS 1.2; AES-128-GCM, AES-256-GCM, ChaCha20 within each, or ChaCha20
/// first without AES hardware.
fn suite_order(aes_hardware: bool) -> Vec<rustls::SupportedCipherSuite> {
    use rustls::crypto::ring::cipher_suite as cs;
    let mut cipher_suites = vec![
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    if !aes_hardware {
        // No AES instructions: ChaCha20 first within each protocol version (stable sort).
        cipher_suites.sort_by_key(|s| {
            let chacha = matches!(
                s.suite(),
                rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
                    | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                    | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
            );
            (s.version() != &rustls::version::TLS13, !chacha)
        });
    }
    cipher_suites
}

/// Accepts any client certificate chain without verifying it against a CA, but verifies
/// the handshake signatures made with the certificate's key.
#[derive(Debug)]
pub struct AnyClientCert {
    provider: Arc<CryptoProvider>,
    mandatory: bool,
}

impl AnyClientCert {
    pub fn new(provider: Arc<CryptoProvider>, mandatory: bool) -> Self {
        AnyClientCert {
            provider,
            mandatory,
        }
    }
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    /// The chain is not verified, but the end entity (the certificate whose key signs the
    /// handshake, and the only one an identity is taken from) must parse and must not be a
    /// CA certificate.
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        use crate::auth::identity::{end_entity_identity, IdentityError};
        match end_entity_identity(end_entity) {
            Ok(_) => Ok(ClientCertVerified::assertion()),
            Err(IdentityError::CaAsEndEntity) => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(
                    crate::auth::identity::IdentityError::CaAsEndEntity,
                ))),
            )),
            Err(_) => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadEncoding,
            )),
        }
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

/// The server's TLS configuration and the client-certificate verifier inside it. The
/// verifier is kept apart so that certificates a trusted TLS proxy forwards are checked
/// exactly as a direct client's certificate is (CA roots, validity, key usage).
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    pub client_verifier: Arc<dyn ClientCertVerifier>,
}

/// Builds the server config: TLS 1.2 + 1.3, ALPN `h2` and `http/1.1`, session tickets from one
/// ticketer shared by every core (so a ticket from core 0 resumes on core 1).
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_auth: ClientAuth,
    verify_with: Option<RootCertStore>,
) -> Result<ServerTls, TlsError> {
    let provider = server_provider();
    let verifier: Arc<dyn ClientCertVerifier> = match verify_with {
        Some(roots) => {
            let builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let builder = if client_auth == ClientAuth::RequestAny {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            builder.build().map_err(|e| TlsError::Ca(e.to_string()))?
        }
        None => Arc::new(AnyClientCert::new(
            provider.clone(),
            client_auth == ClientAuth::RequireAny,
        )),
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Rustls)?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(chain, key)
        .map_err(TlsError::Rustls)?;
    // h2 first: a client offering both gets HTTP/2, as from Go's server; one offering only
    // one of them (or no ALPN at all) gets that one (HTTP/1.1 without ALPN).
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(TlsError::Rustls)?;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(16 * 1024);
    config.send_tls13_tickets = 1;
    // The server's order decides (see `server_provider`), as Go's server does.
    config.ignore_client_order = true;
    Ok(ServerTls {
        config: Arc::new(config),
        client_verifier: verifier,
    })
}

/// Reads a PEM certificate chain; the leaf must carry a DNS or IP SAN.
pub fn load_cert_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem =
        std::fs::read(path).map_err(|e| TlsError::ReadCert(format!("{}: {e}", path.display())))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::ReadCert(format!("{}: {e:?}", path.display())))?;
    let leaf = chain
        .first()
        .ok_or_else(|| TlsError::NoCertificate(path.display().to_string()))?;
    if !has_dns_or_ip_san(leaf) {
        return Err(TlsError::NoSan);
    }
    Ok(chain)
}

fn has_dns_or_ip_san(cert: &CertificateDer<'_>) -> bool {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert) else {
        return false;
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return false;
    };
    san.value
        .general_names
        .iter()
        .any(|n| matches!(n, GeneralName::DNSName(_) | GeneralName::IPAddress(_)))
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1; other PEM blocks are skipped). A legacy
/// RFC 1423 encrypted key is decrypted with `password` (`tls.password`).
pub fn load_private_key(path: &Path, password: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem =
        std::fs::read(path).map_err(|e| TlsError::ReadKey(format!("{}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&pem);
    if super::legacy_pem::is_encrypted(&text) {
        let (label, der) = super::legacy_pem::decrypt(&text, password)
            .map_err(|e| TlsError::BadKey(format!("{}: {e}", path.display())))?;
        let der = der.expose().to_vec();
        return match label.as_str() {
            "RSA PRIVATE KEY" => Ok(PrivateKeyDer::Pkcs1(der.into())),
            "EC PRIVATE KEY" => Ok(PrivateKeyDer::Sec1(der.into())),
            "PRIVATE KEY" => Ok(PrivateKeyDer::Pkcs8(der.into())),
            other => Err(TlsError::BadKey(format!(
                "{}: unexpected PEM block '{other}'",
                path.display()
            ))),
        };
    }
    if text.contains("BEGIN ENCRYPTED PRIVATE KEY") {
        return Err(TlsError::BadKey(format!(
            "{}: PKCS#8 encrypted keys are not supported (neither by upstream KES); use an unencrypted key or a legacy PEM-encrypted one",
            path.display()
        )));
    }
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| TlsError::BadKey(format!("{}: {e:?}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::suite_order;
    use rustls::CipherSuite as S;

    #[test]
    fn suite_order_with_and_without_aes_hardware() {
        let names = |aes| {
            suite_order(aes)
                .iter()
                .map(|s| s.suite())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(true),
            [
                S::TLS13_AES_128_GCM_SHA256,
                S::TLS13_AES_256_GCM_SHA384,
                S::TLS13_CHACHA20_POLY1305_SHA256,
                S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            ]
        );
        assert_eq!(
            names(false),
            [
                S::TLS13_CHACHA20_POLY1305_SHA256,
                S::TLS13_AES_128_GCM_SHA256,
                S::TLS13_AES_256_GCM_SHA384,
                S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
                S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            ]
        );
    }
}
