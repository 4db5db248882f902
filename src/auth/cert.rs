//! Certificate generation (rcgen): the client certificate built from an API key
//! (auth-and-policy §3.3), the dev-mode server certificate (§3.5) and the certificate of
//! `kes identity new --key --cert` (storage-and-config §6.5).

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, RemoteKeyPair, SanType, SerialNumber, SignatureAlgorithm,
};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::apikey::{ApiKey, Curve, KeyKind};
use crate::secret::SecretVec;

/// Validity of the API-key client certificate and of the dev server certificate.
pub const NINETY_DAYS: Duration = Duration::from_secs(90 * 24 * 3600);

/// Certificate generation failed.
#[derive(Debug)]
pub struct CertError(pub String);

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "certificate generation failed: {}", self.0)
    }
}

impl std::error::Error for CertError {}

impl From<rcgen::Error> for CertError {
    fn from(e: rcgen::Error) -> Self {
        CertError(e.to_string())
    }
}

/// Lets rcgen sign with a ring Ed25519 key without handing it the seed (rcgen would keep an
/// unzeroized copy of the PKCS#8 bytes otherwise).
struct Ed25519Signer(Ed25519KeyPair);

impl RemoteKeyPair for Ed25519Signer {
    fn public_key(&self) -> &[u8] {
        self.0.public_key().as_ref()
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Ok(self.0.sign(msg).as_ref().to_vec())
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

/// The same for a ring ECDSA key (a `k2:` API key): DER signatures, as X.509 wants them.
struct EcdsaSigner {
    pair: EcdsaKeyPair,
    algorithm: &'static SignatureAlgorithm,
    rng: SystemRandom,
}

impl RemoteKeyPair for EcdsaSigner {
    fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.pair
            .sign(&self.rng, msg)
            .map(|sig| sig.as_ref().to_vec())
            .map_err(|_| rcgen::Error::RingUnspecified)
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.algorithm
    }
}

/// An rcgen signer for the API key's own key pair (Ed25519, or ECDSA P-256/P-384).
fn api_key_pair(key: &ApiKey) -> Result<KeyPair, CertError> {
    let signer: Box<dyn RemoteKeyPair + Send + Sync> = match key.kind() {
        KeyKind::Ed25519 => Box::new(Ed25519Signer(
            key.key_pair()
                .map_err(|e| CertError(format!("invalid Ed25519 key: {e}")))?,
        )),
        KeyKind::Ecdsa(_) => {
            let (pair, curve) = key
                .ecdsa_key_pair()
                .map_err(|e| CertError(format!("invalid ECDSA key: {e}")))?;
            let algorithm = match curve {
                Curve::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
                Curve::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            };
            Box::new(EcdsaSigner {
                pair,
                algorithm,
                rng: SystemRandom::new(),
            })
        }
    };
    Ok(KeyPair::from_remote(signer)?)
}

/// Seconds since the epoch of 9999-12-31T23:59:59Z, the last instant X.509 can express.
const MAX_CERT_TIME: u64 = 253_402_300_799;

/// Sets `not_before` = now and `not_after` = now + `valid_for`, in whole seconds.
fn set_validity(params: &mut CertificateParams, valid_for: Duration) -> Result<(), CertError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| CertError("system clock is before 1970".into()))?
        .as_secs();
    match now.checked_add(valid_for.as_secs()) {
        Some(end) if end <= MAX_CERT_TIME => {}
        _ => return Err(CertError("validity period too long".into())),
    }
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    // Both sums stay below MAX_CERT_TIME (checked above), so they cannot overflow.
    params.not_before = epoch + Duration::from_secs(now);
    params.not_after = epoch + Duration::from_secs(now + valid_for.as_secs());
    Ok(())
}

/// A random positive serial number < 2^128.
fn random_serial() -> Result<SerialNumber, CertError> {
    let mut serial = [0u8; 16];
    SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| CertError("random source failed".into()))?;
    if serial.iter().all(|&b| b == 0) {
        serial[15] = 1; // a serial number must be positive
    }
    Ok(SerialNumber::from_slice(&serial))
}

fn base_params(
    common_name: &str,
    valid_for: Duration,
    eku: Vec<ExtendedKeyUsagePurpose>,
    ips: &[IpAddr],
    dns: &[String],
) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.serial_number = Some(random_serial()?);
    set_validity(&mut params, valid_for)?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = eku;
    params.is_ca = IsCa::ExplicitNoCa;
    let mut sans: Vec<SanType> = ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
    for name in dns {
        let name = name
            .clone()
            .try_into()
            .map_err(|_| CertError(format!("invalid DNS name {name:?}")))?;
        sans.push(SanType::DnsName(name));
    }
    params.subject_alt_names = sans;
    Ok(params)
}

/// The self-signed client certificate that upstream clients build from an API key
/// (auth §3.3): the key's own key pair (Ed25519; ECDSA for `k2:`), CN=<identity hex>, issuer = subject, random serial < 2^128,
/// validity now..now+90d, KeyUsage digitalSignature, EKU clientAuth, BasicConstraints
/// present and not CA.
pub fn client_cert_from_api_key(
    key: &ApiKey,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), CertError> {
    let key_pair = api_key_pair(key)?;
    let params = base_params(
        &key.identity().to_hex(),
        NINETY_DAYS,
        vec![ExtendedKeyUsagePurpose::ClientAuth],
        &[],
        &[],
    )?;
    let cert = params.self_signed(&key_pair)?;
    let pkcs8 = key.pkcs8_der();
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.expose().to_vec()));
    Ok((cert.der().clone(), private))
}

/// Dev-mode server certificate (auth §3.5): ECDSA P-256, CN=localhost, EKU serverAuth,
/// 90 days, the given IP SANs (+ optional DNS SANs). Returns (cert DER, key DER, cert PEM).
pub fn self_signed_server_cert(
    ips: &[IpAddr],
    dns: &[String],
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>, String), CertError> {
    let key_pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let params = base_params(
        "localhost",
        NINETY_DAYS,
        vec![ExtendedKeyUsagePurpose::ServerAuth],
        ips,
        dns,
    )?;
    let cert = params.self_signed(&key_pair)?;
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
    Ok((cert.der().clone(), private, cert.pem()))
}

/// For `kes identity new --key F --cert F` (storage-and-config §6.5): the API key's Ed25519
/// key, a self-signed certificate with CN=`subject`, SANs from `ips`/`dns`, EKU clientAuth +
/// serverAuth, validity now..now+`expiry`. Returns (cert PEM, key PEM (PKCS#8)).
pub fn identity_cert_pem(
    key: &ApiKey,
    subject: &str,
    ips: &[IpAddr],
    dns: &[String],
    expiry: Duration,
) -> Result<(String, SecretVec), CertError> {
    let key_pair = api_key_pair(key)?;
    let params = base_params(
        subject,
        expiry,
        vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ],
        ips,
        dns,
    )?;
    let cert = params.self_signed(&key_pair)?;
    Ok((
        cert.pem(),
        pem_encode_secret("PRIVATE KEY", key.pkcs8_der().expose()),
    ))
}

/// PEM-encodes `der` into a zeroizing buffer (64-character lines, LF endings).
pub fn pem_encode_secret(label: &str, der: &[u8]) -> SecretVec {
    let b64_len = der.len().div_ceil(3) * 4;
    let lines = b64_len.div_ceil(64);
    let cap = 2 * (label.len() + 17) + b64_len + lines;
    let mut out = SecretVec::with_capacity(cap);
    let mut b64 = SecretVec::new(vec![0u8; b64_len]);
    let written = STANDARD
        .encode_slice(der, b64.as_mut_vec())
        .unwrap_or_default();
    let v = out.as_mut_vec();
    v.extend_from_slice(b"-----BEGIN ");
    v.extend_from_slice(label.as_bytes());
    v.extend_from_slice(b"-----\n");
    for line in b64.expose()[..written].chunks(64) {
        v.extend_from_slice(line);
        v.push(b'\n');
    }
    v.extend_from_slice(b"-----END ");
    v.extend_from_slice(label.as_bytes());
    v.extend_from_slice(b"-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::identity::{identity_from_chain, identity_of_cert_der};
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::*;

    const V2: &str = "kes:v1:AAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f";

    fn now_unix() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    #[test]
    fn client_cert() {
        let key = ApiKey::parse(V2).unwrap();
        let (der, private) = client_cert_from_api_key(&key).unwrap();
        assert_eq!(identity_of_cert_der(&der), Ok(key.identity()));
        assert_eq!(identity_from_chain(&[&der]), Ok(key.identity()));
        match &private {
            PrivateKeyDer::Pkcs8(p) => assert_eq!(p.secret_pkcs8_der(), key.pkcs8_der().expose()),
            _ => panic!("not PKCS#8"),
        }

        let (_, cert) = parse_x509_certificate(&der).unwrap();
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), key.identity().to_hex());
        assert_eq!(cert.subject().as_raw(), cert.issuer().as_raw());
        let bc = cert.basic_constraints().unwrap().unwrap();
        assert!(!bc.value.ca);
        let eku = cert.extended_key_usage().unwrap().unwrap();
        assert!(eku.value.client_auth);
        assert!(!eku.value.server_auth);
        let ku = cert.key_usage().unwrap().unwrap();
        assert!(ku.value.digital_signature());
        let nb = cert.validity().not_before.timestamp();
        let na = cert.validity().not_after.timestamp();
        assert!((nb - now_unix()).abs() < 60);
        assert_eq!(na - nb, 90 * 24 * 3600);
        assert!(cert.raw_serial().len() <= 17);
        // Self-signature verifies.
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key.public_key())
            .verify(cert.tbs_certificate.as_ref(), &cert.signature_value.data)
            .unwrap();
        // Two certificates have different serials.
        let (der2, _) = client_cert_from_api_key(&key).unwrap();
        let (_, cert2) = parse_x509_certificate(&der2).unwrap();
        assert_ne!(cert.raw_serial(), cert2.raw_serial());
    }

    #[test]
    fn client_cert_of_a_k2_key_is_ecdsa_with_the_keys_identity() {
        for (text, verify) in [
            (
                "k2:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA",
                &ring::signature::ECDSA_P256_SHA256_ASN1,
            ),
            (
                "k2:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8w",
                &ring::signature::ECDSA_P384_SHA384_ASN1,
            ),
        ] {
            let key = ApiKey::parse(text).unwrap();
            let (der, private) = client_cert_from_api_key(&key).unwrap();
            assert_eq!(identity_of_cert_der(&der), Ok(key.identity()));
            match &private {
                PrivateKeyDer::Pkcs8(p) => {
                    assert_eq!(p.secret_pkcs8_der(), key.pkcs8_der().expose())
                }
                _ => panic!("not PKCS#8"),
            }
            let (_, cert) = parse_x509_certificate(&der).unwrap();
            assert_eq!(
                cert.public_key().algorithm.algorithm,
                x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
            );
            let cn = cert.subject().iter_common_name().next().unwrap();
            assert_eq!(cn.as_str().unwrap(), key.identity().to_hex());
            let eku = cert.extended_key_usage().unwrap().unwrap();
            assert!(eku.value.client_auth);
            ring::signature::UnparsedPublicKey::new(verify, key.public_key())
                .verify(cert.tbs_certificate.as_ref(), &cert.signature_value.data)
                .unwrap();
            // rustls (the client's TLS) accepts the private key for signing.
            rustls::crypto::ring::default_provider()
                .key_provider
                .load_private_key(private)
                .unwrap();
        }
    }

    #[test]
    fn server_cert() {
        let ips: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        let (der, _key, pem) = self_signed_server_cert(&ips, &["localhost".to_string()]).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let (_, cert) = parse_x509_certificate(&der).unwrap();
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "localhost");
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let got: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::IPAddress(b) if b.len() == 4 => {
                    IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()).to_string()
                }
                GeneralName::IPAddress(b) => {
                    IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()).to_string()
                }
                GeneralName::DNSName(d) => format!("dns:{d}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(got, vec!["127.0.0.1", "::1", "dns:localhost"]);
        let eku = cert.extended_key_usage().unwrap().unwrap();
        assert!(eku.value.server_auth);
        let na = cert.validity().not_after.timestamp();
        let nb = cert.validity().not_before.timestamp();
        assert_eq!(na - nb, 90 * 24 * 3600);
        assert_eq!(
            cert.public_key().algorithm.algorithm,
            x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
        );
        assert!(self_signed_server_cert(&ips, &["bad name\u{e9}".to_string()]).is_err());
    }

    #[test]
    fn identity_cert() {
        let key = ApiKey::generate().unwrap();
        let ips: Vec<IpAddr> = vec!["10.1.2.3".parse().unwrap()];
        let (cert_pem, key_pem) = identity_cert_pem(
            &key,
            "my-app",
            &ips,
            &["app.example".to_string()],
            Duration::from_secs(720 * 3600),
        )
        .unwrap();
        let key_text = std::str::from_utf8(key_pem.expose()).unwrap();
        assert!(key_text.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(key_text.ends_with("-----END PRIVATE KEY-----\n"));
        use rustls_pki_types::pem::PemObject;
        let parsed = PrivateKeyDer::from_pem_slice(key_pem.expose()).unwrap();
        match parsed {
            PrivateKeyDer::Pkcs8(p) => assert_eq!(p.secret_pkcs8_der(), key.pkcs8_der().expose()),
            _ => panic!("not PKCS#8"),
        }
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        assert_eq!(identity_of_cert_der(&der), Ok(key.identity()));
        let (_, cert) = parse_x509_certificate(&der).unwrap();
        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "my-app");
        let eku = cert.extended_key_usage().unwrap().unwrap();
        assert!(eku.value.server_auth && eku.value.client_auth);
        let na = cert.validity().not_after.timestamp();
        let nb = cert.validity().not_before.timestamp();
        assert_eq!(na - nb, 720 * 3600);
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(san.value.general_names.len(), 2);
    }

    #[test]
    fn pem_lines() {
        let der = vec![7u8; 100];
        let pem = pem_encode_secret("X", &der);
        let text = std::str::from_utf8(pem.expose()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "-----BEGIN X-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[2].len(), 64);
        assert_eq!(lines[3].len(), 136 - 128);
        assert_eq!(lines[4], "-----END X-----");
        assert_eq!(lines.len(), 5);
        assert_eq!(STANDARD.decode(lines[1..4].concat()).unwrap(), der);
    }
}
