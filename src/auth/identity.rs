//! Client identities (auth-and-policy.md §1): the SHA-256 of a certificate's DER
//! SubjectPublicKeyInfo, shown as 64 lowercase hex characters.

use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The identity of a client: SHA-256 of the DER `subjectPublicKeyInfo` of its certificate.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Identity([u8; 32]);

impl Identity {
    /// Hashes the DER SubjectPublicKeyInfo bytes (tag and length included).
    pub fn from_spki_der(spki: &[u8]) -> Identity {
        Identity(Sha256::digest(spki).into())
    }

    /// Wraps an already computed digest.
    pub fn from_bytes(bytes: [u8; 32]) -> Identity {
        Identity(bytes)
    }

    /// Parses 64 **lowercase** hex characters. Uppercase is rejected on purpose: identities
    /// are compared as case-sensitive strings, so an uppercase value can never match.
    pub fn from_hex(s: &str) -> Option<Identity> {
        let s = s.as_bytes();
        if s.len() != 64 {
            return None;
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        let mut out = [0u8; 32];
        for (i, pair) in s.chunks_exact(2).enumerate() {
            out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(Identity(out))
    }

    /// Lowercase hex, always 64 characters.
    pub fn to_hex(&self) -> String {
        let mut out = [0u8; 64];
        self.write_hex(&mut out);
        out.iter().map(|&b| b as char).collect()
    }

    /// Writes the lowercase hex form into `out` without allocating.
    pub fn write_hex(&self, out: &mut [u8; 64]) {
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = HEX[(b >> 4) as usize];
            out[2 * i + 1] = HEX[(b & 0x0f) as usize];
        }
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The MinKMS (kms-go, `aead.dev/mtls`) form of the same hash: `h1:` + unpadded
    /// base64url of the 32 bytes.
    pub fn to_h1(&self) -> String {
        use base64::Engine;
        let mut s = String::with_capacity(H1_PREFIX.len() + 43);
        s.push_str(H1_PREFIX);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(self.0, &mut s);
        s
    }

    /// Parses the `h1:` form (exactly 43 unpadded base64url characters after the prefix).
    pub fn from_h1(s: &str) -> Option<Identity> {
        use base64::Engine;
        let text = s.strip_prefix(H1_PREFIX)?;
        if text.len() != 43 {
            return None;
        }
        let mut out = [0u8; 32];
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode_slice(text, &mut out)
            .ok()?;
        (n == 32).then_some(Identity(out))
    }
}

/// The prefix of an identity in the MinKMS form.
pub const H1_PREFIX: &str = "h1:";

/// An identity as the config may write it, in the form the policies compare: an `h1:`
/// identity becomes its 64 hex characters; anything else is kept as written (the config's
/// checks judge it).
pub fn normalize(identity: String) -> String {
    match Identity::from_h1(identity.trim()) {
        Some(id) => id.to_hex(),
        None => identity,
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; 64];
        self.write_hex(&mut out);
        // The buffer holds only ASCII hex digits.
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why no identity could be derived from a certificate chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityError {
    /// No certificate was presented.
    NoCertificate,
    /// More than one certificate was forwarded by a TLS proxy.
    MoreThanOne,
    /// The end-entity certificate (the one whose key signed the handshake) is a CA
    /// certificate (`BasicConstraints cA = TRUE`).
    CaAsEndEntity,
    /// A certificate could not be parsed.
    BadCertificate,
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdentityError::NoCertificate => "tls: client certificate is required",
            IdentityError::MoreThanOne => "tls: received more than one client certificate",
            IdentityError::CaAsEndEntity => "tls: client certificate is a CA certificate",
            IdentityError::BadCertificate => "tls: failed to parse client certificate",
        })
    }
}

impl std::error::Error for IdentityError {}

/// The identity of an end-entity certificate: its SPKI hash, or an error for a CA
/// certificate (`BasicConstraints cA = TRUE`) or one that does not parse.
pub fn end_entity_identity(der: &[u8]) -> Result<Identity, IdentityError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|_| IdentityError::BadCertificate)?;
    let is_ca = match cert.basic_constraints() {
        Ok(Some(bc)) => bc.value.ca,
        Ok(None) => false,
        Err(_) => return Err(IdentityError::BadCertificate),
    };
    if is_ca {
        return Err(IdentityError::CaAsEndEntity);
    }
    Ok(Identity::from_spki_der(
        cert.tbs_certificate.subject_pki.raw,
    ))
}

/// The identity of a client's TLS certificate chain: only the end entity counts, which TLS
/// puts first and whose key signed the handshake. A chain whose first certificate is a CA is
/// refused, and later certificates never contribute an identity.
///
/// Upstream KES skips CA certificates and hashes whichever non-CA certificate remains. That
/// lets a client sign the handshake with its own CA-marked certificate and add a forged,
/// unsigned certificate carrying someone else's public key, and so take that identity. We
/// are stricter on purpose (README, compatibility notes).
pub fn identity_from_chain(chain_der: &[&[u8]]) -> Result<Identity, IdentityError> {
    let first = chain_der.first().ok_or(IdentityError::NoCertificate)?;
    end_entity_identity(first)
}

/// The identity of a single DER certificate (CA or not, as `kes identity of` does).
pub fn identity_of_cert_der(der: &[u8]) -> Result<Identity, IdentityError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|_| IdentityError::BadCertificate)?;
    Ok(Identity::from_spki_der(
        cert.tbs_certificate.subject_pki.raw,
    ))
}

/// Why `identity_of_pem_file` failed.
#[derive(Debug)]
pub enum IdentityFileError {
    /// The file could not be read.
    Io(std::io::Error),
    /// The file holds no `CERTIFICATE` PEM block.
    NoCertificate,
    /// The PEM text is malformed.
    BadPem(String),
    /// The certificate could not be parsed.
    BadCertificate,
}

impl fmt::Display for IdentityFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityFileError::Io(e) => write!(f, "failed to read certificate file: {e}"),
            IdentityFileError::NoCertificate => f.write_str("no certificate found"),
            IdentityFileError::BadPem(e) => write!(f, "invalid PEM: {e}"),
            IdentityFileError::BadCertificate => f.write_str("failed to parse certificate"),
        }
    }
}

impl std::error::Error for IdentityFileError {}

/// The identity of the first `CERTIFICATE` PEM block in `path` (`kes identity of <file>`).
pub fn identity_of_pem_file(path: &Path) -> Result<Identity, IdentityFileError> {
    use rustls_pki_types::pem::{self, PemObject};
    use rustls_pki_types::CertificateDer;

    let cert = CertificateDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::Io(e) => IdentityFileError::Io(e),
        pem::Error::NoItemsFound => IdentityFileError::NoCertificate,
        other => IdentityFileError::BadPem(other.to_string()),
    })?;
    identity_of_cert_der(&cert).map_err(|_| IdentityFileError::BadCertificate)
}

/// The DER of the first `CERTIFICATE` block in PEM text (forwarded proxy certificates).
pub fn first_pem_certificate(pem: &[u8]) -> Option<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    CertificateDer::from_pem_slice(pem).ok().map(|c| c.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

    fn cert(is_ca: IsCa) -> (Vec<u8>, Identity) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["example.com".to_string()]).unwrap();
        params.is_ca = is_ca;
        let cert = params.self_signed(&key).unwrap();
        (
            cert.der().to_vec(),
            Identity::from_spki_der(&key.public_key_der()),
        )
    }

    #[test]
    fn hex_round_trip() {
        let id = Identity::from_spki_der(b"abc");
        let hex = id.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(format!("{id}"), hex);
        assert_eq!(format!("{id:?}"), hex);
        assert_eq!(Identity::from_hex(&hex), Some(id));
        assert_eq!(Identity::from_hex(&hex.to_uppercase()), None);
        assert_eq!(Identity::from_hex("abc"), None);
        assert_eq!(id.as_bytes(), &Identity::from_bytes(*id.as_bytes()).0);
    }

    #[test]
    fn h1_form() {
        let id = Identity::from_spki_der(b"abc");
        let h1 = id.to_h1();
        assert_eq!(h1, "h1:ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0");
        assert_eq!(Identity::from_h1(&h1), Some(id));
        assert_eq!(normalize(h1.clone()), id.to_hex());
        assert_eq!(normalize("disabled".into()), "disabled");
        assert_eq!(Identity::from_h1(&h1[..h1.len() - 1]), None);
        assert_eq!(Identity::from_h1(&id.to_hex()), None);
        assert_eq!(
            Identity::from_h1("h1:ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0"),
            None
        );
    }

    #[test]
    fn chain_rules() {
        let (ca, _) = cert(IsCa::Ca(BasicConstraints::Unconstrained));
        let (leaf, leaf_id) = cert(IsCa::NoCa);
        let (leaf2, leaf2_id) = cert(IsCa::ExplicitNoCa);

        // Only the end entity (first) counts; later certificates never do.
        assert_eq!(identity_from_chain(&[&leaf, &ca]), Ok(leaf_id));
        assert_eq!(identity_from_chain(&[&leaf2]), Ok(leaf2_id));
        assert_eq!(identity_from_chain(&[&leaf, &leaf2]), Ok(leaf_id));
        assert_eq!(identity_from_chain(&[&leaf, b"garbage"]), Ok(leaf_id));
        // A CA first is refused, whatever follows (the spoofing chain of issue 12).
        assert_eq!(
            identity_from_chain(&[&ca, &leaf]),
            Err(IdentityError::CaAsEndEntity)
        );
        assert_eq!(
            identity_from_chain(&[&ca]),
            Err(IdentityError::CaAsEndEntity)
        );
        assert_eq!(identity_from_chain(&[]), Err(IdentityError::NoCertificate));
        assert_eq!(
            identity_from_chain(&[b"garbage", &leaf]),
            Err(IdentityError::BadCertificate)
        );
        assert_eq!(
            identity_of_cert_der(b"garbage"),
            Err(IdentityError::BadCertificate)
        );
        assert_eq!(identity_of_cert_der(&leaf), Ok(leaf_id));
    }

    #[test]
    fn pem_file() {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["example.com".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.pem");
        // A key block first: the first CERTIFICATE block still decides.
        std::fs::write(&path, format!("{}{}", key.serialize_pem(), cert.pem())).unwrap();
        assert_eq!(
            identity_of_pem_file(&path).unwrap(),
            Identity::from_spki_der(&key.public_key_der())
        );
        std::fs::write(&path, key.serialize_pem()).unwrap();
        assert!(matches!(
            identity_of_pem_file(&path),
            Err(IdentityFileError::NoCertificate)
        ));
        assert!(matches!(
            identity_of_pem_file(&dir.path().join("missing")),
            Err(IdentityFileError::Io(_))
        ));
    }
}
