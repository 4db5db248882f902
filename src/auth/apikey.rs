//! API keys (auth-and-policy.md §3): `"kes:v1:" || base64std(0x00 || ed25519_seed[32])`, and
//! the MinKMS forms kms-go (`aead.dev/mtls`) parses: `k1:` (the same Ed25519 seed) and `k2:`
//! (an ECDSA private key).

use std::fmt;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{
    EcdsaKeyPair, EcdsaSigningAlgorithm, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING,
    ECDSA_P384_SHA384_ASN1_SIGNING,
};

use super::identity::Identity;
use crate::secret::{Secret, SecretVec};

/// The optional prefix of an API key's text form.
pub const PREFIX: &str = "kes:v1:";

/// Length of the text form: prefix + 44 base64 characters.
pub const TEXT_LEN: usize = 51;

/// The prefix of the MinKMS form of an Ed25519 API key (kms-go, `aead.dev/mtls`).
pub const K1_PREFIX: &str = "k1:";

/// Length of the MinKMS form: prefix + 43 unpadded base64url characters of the seed.
pub const K1_TEXT_LEN: usize = 46;

/// The prefix of the MinKMS form of an ECDSA API key: `k2:` + unpadded base64url of the
/// private scalar, big-endian and zero-padded to the curve's size (32 bytes for P-256, 48
/// for P-384, 66 for P-521); the text's length alone names the curve.
pub const K2_PREFIX: &str = "k2:";

/// Characters after `k2:` of a P-521 key (66 bytes). kms-go accepts them; ring (our TLS
/// provider) cannot sign or verify P-521, so they are refused as an unsupported curve.
const K2_P521_CHARS: usize = 88;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); followed by the 32-byte key.
pub const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// DER prefix of a PKCS#8 v1 Ed25519 private key (RFC 8410); followed by the 32-byte seed.
pub const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// DER prefix of a P-256 SubjectPublicKeyInfo (RFC 5480: id-ecPublicKey, the named curve
/// prime256v1); followed by the 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// DER prefix of a P-384 SubjectPublicKeyInfo (RFC 5480: id-ecPublicKey, the named curve
/// secp384r1); followed by the 97-byte uncompressed point.
const P384_SPKI_PREFIX: [u8; 23] = [
    0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b,
    0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00,
];

/// The curve of a `k2:` (ECDSA) API key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

impl Curve {
    /// Bytes of the private scalar.
    fn scalar_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }

    /// ring's signing algorithm: ASN.1 (DER) signatures, as X.509 and TLS carry them.
    pub fn signing(self) -> &'static EcdsaSigningAlgorithm {
        match self {
            Curve::P256 => &ECDSA_P256_SHA256_ASN1_SIGNING,
            Curve::P384 => &ECDSA_P384_SHA384_ASN1_SIGNING,
        }
    }

    fn spki_prefix(self) -> &'static [u8] {
        match self {
            Curve::P256 => &P256_SPKI_PREFIX,
            Curve::P384 => &P384_SPKI_PREFIX,
        }
    }
}

/// The kind of key behind an API key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// `kes:v1:` and `k1:` keys.
    Ed25519,
    /// `k2:` keys.
    Ecdsa(Curve),
}

#[derive(Clone)]
enum Key {
    Ed25519 {
        seed: Secret<32>,
    },
    Ecdsa {
        curve: Curve,
        /// The private scalar, big-endian, `curve.scalar_len()` bytes.
        scalar: SecretVec,
        /// PKCS#8 v1 of the key pair (ring's encoding, the public key included).
        pkcs8: SecretVec,
        /// The uncompressed public point (0x04 || X || Y).
        public: Vec<u8>,
    },
}

/// A private key in API-key form: Ed25519 (`kes:v1:`, `k1:`) or ECDSA (`k2:`). The private
/// key is zeroized on drop.
#[derive(Clone)]
pub struct ApiKey {
    key: Key,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Why an API key could not be parsed or created. The messages never contain the key.
#[derive(Debug, PartialEq, Eq)]
pub enum ApiKeyError {
    /// The decoded key is not 33 bytes long (or a `k1:`/`k2:` text has the wrong length).
    InvalidLength,
    /// The key-type byte is not 0 (Ed25519), or a PKCS#8 key is not Ed25519.
    UnsupportedType,
    /// The text is not valid standard base64 (base64url for `k1:`/`k2:`).
    InvalidBase64,
    /// A `k2:` key's scalar is zero or not below the order of its curve.
    InvalidScalar,
    /// A `k2:` key of a curve we cannot use (P-521).
    UnsupportedCurve,
    /// The system random number generator failed.
    Random,
}

impl fmt::Display for ApiKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApiKeyError::InvalidLength => "kes: invalid API key: invalid length",
            ApiKeyError::UnsupportedType => "kes: invalid API key: unsupported type",
            ApiKeyError::InvalidBase64 => "kes: invalid API key: invalid base64 encoding",
            ApiKeyError::InvalidScalar => {
                "kes: invalid API key: not a valid private key for its curve"
            }
            ApiKeyError::UnsupportedCurve => {
                "kes: invalid API key: unsupported curve P-521 (k2: keys must be P-256 or P-384)"
            }
            ApiKeyError::Random => "kes: failed to generate API key: random source failed",
        })
    }
}

impl std::error::Error for ApiKeyError {}

/// The PKCS#8 document and public key of the ECDSA key with the given scalar. ring 0.17 has
/// no public "public key of this private scalar", but its key generation draws the scalar
/// from the random source and checks it (0 < d < n): handed a source that yields exactly
/// `scalar`, it builds this key (or refuses the scalar, as kms-go does). The document is
/// copied into a zeroizing buffer and ring's copy wiped.
#[allow(deprecated)] // `ring::test::rand::FixedSliceRandom`: the only fixed source ring offers.
fn ecdsa_from_scalar(curve: Curve, scalar: &[u8]) -> Result<(SecretVec, Vec<u8>), ApiKeyError> {
    if scalar.len() != curve.scalar_len() {
        return Err(ApiKeyError::InvalidLength);
    }
    let fixed = ring::test::rand::FixedSliceRandom { bytes: scalar };
    let mut doc = EcdsaKeyPair::generate_pkcs8(curve.signing(), &fixed)
        .map_err(|_| ApiKeyError::InvalidScalar)?;
    let pkcs8 = SecretVec::new(doc.as_ref().to_vec());
    // SAFETY: `pkcs8::Document` is a byte array and a length; all zeros is a valid value of
    // both, and `doc` is our own local.
    unsafe {
        memsec::memzero(
            (&mut doc as *mut ring::pkcs8::Document).cast::<u8>(),
            std::mem::size_of::<ring::pkcs8::Document>(),
        )
    };
    let pair = EcdsaKeyPair::from_pkcs8(curve.signing(), pkcs8.expose(), &SystemRandom::new())
        .map_err(|_| ApiKeyError::InvalidScalar)?;
    let public = pair.public_key().as_ref().to_vec();
    Ok((pkcs8, public))
}

impl ApiKey {
    /// Parses `[kes:v1:]<base64 of 0x00 || seed>`, the MinKMS form `k1:<unpadded base64url
    /// of seed>` of the same Ed25519 key (same identity), or an ECDSA key `k2:<unpadded
    /// base64url of the scalar>` (P-256: 43 characters, P-384: 64).
    pub fn parse(s: &str) -> Result<ApiKey, ApiKeyError> {
        if let Some(text) = s.strip_prefix(K1_PREFIX) {
            return Self::parse_k1(text);
        }
        if let Some(text) = s.strip_prefix(K2_PREFIX) {
            return Self::parse_k2(text);
        }
        let s = s.strip_prefix(PREFIX).unwrap_or(s);
        // Reserve the decoder's full estimate up front so the buffer never reallocates and
        // leaves an unzeroized copy behind.
        let mut buf = SecretVec::with_capacity(base64::decoded_len_estimate(s.len()));
        STANDARD
            .decode_vec(s, buf.as_mut_vec())
            .map_err(|_| ApiKeyError::InvalidBase64)?;
        let bytes = buf.expose();
        if bytes.len() != 33 {
            return Err(ApiKeyError::InvalidLength);
        }
        if bytes[0] != 0 {
            return Err(ApiKeyError::UnsupportedType);
        }
        let seed = Secret::from_slice(&bytes[1..]).ok_or(ApiKeyError::InvalidLength)?;
        Ok(ApiKey::from_seed(seed))
    }

    /// A new random Ed25519 key from the system CSPRNG.
    pub fn generate() -> Result<ApiKey, ApiKeyError> {
        let mut tmp = [0u8; 32];
        let key = SystemRandom::new()
            .fill(&mut tmp)
            .ok()
            .map(|()| ApiKey::from_seed(Secret::new(tmp)));
        // `Secret::new` took a copy; wipe the stack original.
        // SAFETY: `tmp` is our own stack array of exactly 32 bytes.
        unsafe { memsec::memzero(tmp.as_mut_ptr(), tmp.len()) };
        key.ok_or(ApiKeyError::Random)
    }

    /// The Ed25519 key with this seed.
    pub fn from_seed(seed: Secret<32>) -> ApiKey {
        ApiKey {
            key: Key::Ed25519 { seed },
        }
    }

    /// The ECDSA key with this big-endian private scalar (`k2:`); a scalar of the wrong
    /// length → `InvalidLength`, zero or not below the curve's order → `InvalidScalar`.
    pub fn from_ecdsa_scalar(curve: Curve, scalar: &[u8]) -> Result<ApiKey, ApiKeyError> {
        let (pkcs8, public) = ecdsa_from_scalar(curve, scalar)?;
        let mut kept = SecretVec::with_capacity(scalar.len());
        kept.extend_from_slice(scalar);
        Ok(ApiKey {
            key: Key::Ecdsa {
                curve,
                scalar: kept,
                pkcs8,
                public,
            },
        })
    }

    /// Recovers an API key from a PKCS#8 v1 Ed25519 private key (`kes identity <key-file>`).
    /// Any other key type or encoding → `UnsupportedType`.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<ApiKey, ApiKeyError> {
        if der.len() != ED25519_PKCS8_PREFIX.len() + 32 || der[..16] != ED25519_PKCS8_PREFIX {
            return Err(ApiKeyError::UnsupportedType);
        }
        let seed = Secret::from_slice(&der[16..]).ok_or(ApiKeyError::UnsupportedType)?;
        Ok(ApiKey::from_seed(seed))
    }

    /// Ed25519 or ECDSA (and its curve).
    pub fn kind(&self) -> KeyKind {
        match &self.key {
            Key::Ed25519 { .. } => KeyKind::Ed25519,
            Key::Ecdsa { curve, .. } => KeyKind::Ecdsa(*curve),
        }
    }

    /// The seed (the Ed25519 private key); `None` for an ECDSA key.
    pub fn seed(&self) -> Option<&Secret<32>> {
        match &self.key {
            Key::Ed25519 { seed } => Some(seed),
            Key::Ecdsa { .. } => None,
        }
    }

    /// The key's own text form in a zeroizing buffer (ASCII; view it with
    /// `std::str::from_utf8(v.expose())`): `kes:v1:` + 44 base64 characters for an Ed25519
    /// key, `k2:` + the scalar's unpadded base64url for an ECDSA key.
    pub fn to_string_secret(&self) -> SecretVec {
        let seed = match &self.key {
            Key::Ed25519 { seed } => seed,
            Key::Ecdsa { scalar, .. } => return encode_with_prefix(K2_PREFIX, scalar.expose()),
        };
        let mut raw = [0u8; 33];
        raw[1..].copy_from_slice(seed.expose());
        let mut out = SecretVec::with_capacity(TEXT_LEN);
        let v = out.as_mut_vec();
        v.extend_from_slice(PREFIX.as_bytes());
        v.resize(TEXT_LEN, 0);
        let written = STANDARD.encode_slice(raw, &mut v[PREFIX.len()..]);
        // SAFETY: `raw` is our own 33-byte stack array.
        unsafe { memsec::memzero(raw.as_mut_ptr(), raw.len()) };
        // 33 bytes always encode to exactly 44 characters, which fit.
        debug_assert_eq!(written.ok(), Some(44));
        out
    }

    fn parse_k1(text: &str) -> Result<ApiKey, ApiKeyError> {
        if text.len() != K1_TEXT_LEN - K1_PREFIX.len() {
            return Err(ApiKeyError::InvalidLength);
        }
        let mut tmp = [0u8; 32];
        let decoded = URL_SAFE_NO_PAD.decode_slice(text, &mut tmp);
        let key = match decoded {
            Ok(32) => Ok(ApiKey::from_seed(Secret::new(tmp))),
            Ok(_) => Err(ApiKeyError::InvalidLength),
            Err(_) => Err(ApiKeyError::InvalidBase64),
        };
        // `Secret::new` took a copy; wipe the stack original.
        // SAFETY: `tmp` is our own stack array of exactly 32 bytes.
        unsafe { memsec::memzero(tmp.as_mut_ptr(), tmp.len()) };
        key
    }

    /// `k2:` text after the prefix: its length names the curve, as in kms-go.
    fn parse_k2(text: &str) -> Result<ApiKey, ApiKeyError> {
        let curve = match text.len() {
            43 => Curve::P256,
            64 => Curve::P384,
            K2_P521_CHARS => return Err(ApiKeyError::UnsupportedCurve),
            _ => return Err(ApiKeyError::InvalidLength),
        };
        let mut scalar = SecretVec::new(vec![0u8; curve.scalar_len()]);
        match URL_SAFE_NO_PAD.decode_slice(text, scalar.as_mut_vec().as_mut_slice()) {
            Ok(n) if n == curve.scalar_len() => {}
            Ok(_) => return Err(ApiKeyError::InvalidLength),
            Err(_) => return Err(ApiKeyError::InvalidBase64),
        }
        ApiKey::from_ecdsa_scalar(curve, scalar.expose())
    }

    /// The MinKMS text form `k1:` + 43 unpadded base64url characters of the seed (what kms-go
    /// and `MINIO_KMS_API_KEY` take), in a zeroizing buffer; `None` for an ECDSA key (whose
    /// MinKMS form is its own `k2:` text, [`ApiKey::to_string_secret`]).
    pub fn to_k1_secret(&self) -> Option<SecretVec> {
        self.seed()
            .map(|seed| encode_with_prefix(K1_PREFIX, seed.expose()))
    }

    /// The Ed25519 key pair for signing; `UnsupportedType` for an ECDSA key.
    pub fn key_pair(&self) -> Result<Ed25519KeyPair, ApiKeyError> {
        let seed = self.seed().ok_or(ApiKeyError::UnsupportedType)?;
        Ed25519KeyPair::from_seed_unchecked(seed.expose()).map_err(|_| ApiKeyError::UnsupportedType)
    }

    /// The ECDSA key pair for signing (and its curve); `UnsupportedType` for an Ed25519 key.
    pub fn ecdsa_key_pair(&self) -> Result<(EcdsaKeyPair, Curve), ApiKeyError> {
        match &self.key {
            Key::Ecdsa { curve, pkcs8, .. } => {
                EcdsaKeyPair::from_pkcs8(curve.signing(), pkcs8.expose(), &SystemRandom::new())
                    .map(|pair| (pair, *curve))
                    .map_err(|_| ApiKeyError::InvalidScalar)
            }
            Key::Ed25519 { .. } => Err(ApiKeyError::UnsupportedType),
        }
    }

    /// The public key: 32 bytes for Ed25519, the uncompressed point for ECDSA.
    pub fn public_key(&self) -> Vec<u8> {
        match &self.key {
            Key::Ed25519 { .. } => {
                // `from_seed_unchecked` accepts every 32-byte seed.
                self.key_pair()
                    .map(|kp| kp.public_key().as_ref().to_vec())
                    .unwrap_or_default()
            }
            Key::Ecdsa { public, .. } => public.clone(),
        }
    }

    /// The DER SubjectPublicKeyInfo (44 bytes for Ed25519, 91 for P-256, 120 for P-384).
    pub fn spki_der(&self) -> Vec<u8> {
        let prefix: &[u8] = match &self.key {
            Key::Ed25519 { .. } => &ED25519_SPKI_PREFIX,
            Key::Ecdsa { curve, .. } => curve.spki_prefix(),
        };
        let public = self.public_key();
        let mut spki = Vec::with_capacity(prefix.len() + public.len());
        spki.extend_from_slice(prefix);
        spki.extend_from_slice(&public);
        spki
    }

    /// SHA-256 of the SPKI (auth-and-policy §3.2); the same hash kms-go shows as `h1:`.
    pub fn identity(&self) -> Identity {
        Identity::from_spki_der(&self.spki_der())
    }

    /// PKCS#8 v1 DER of the private key (48 bytes for Ed25519).
    pub fn pkcs8_der(&self) -> SecretVec {
        match &self.key {
            Key::Ed25519 { seed } => {
                let mut out = SecretVec::with_capacity(48);
                out.extend_from_slice(&ED25519_PKCS8_PREFIX);
                out.extend_from_slice(seed.expose());
                out
            }
            Key::Ecdsa { pkcs8, .. } => pkcs8.clone(),
        }
    }
}

/// `prefix` + unpadded base64url of `bytes`, in a zeroizing buffer sized up front.
fn encode_with_prefix(prefix: &str, bytes: &[u8]) -> SecretVec {
    let len = prefix.len() + base64::encoded_len(bytes.len(), false).unwrap_or(0);
    let mut out = SecretVec::with_capacity(len);
    let v = out.as_mut_vec();
    v.extend_from_slice(prefix.as_bytes());
    v.resize(len, 0);
    let written = URL_SAFE_NO_PAD.encode_slice(bytes, &mut v[prefix.len()..]);
    debug_assert_eq!(written.ok(), Some(len - prefix.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "kes:v1:AGaV6VXHasF0FnaB60WdCOeTZ8eTIDikL4zlN16c8NAs";
    const V1_ID: &str = "ea9826089311fe44d7590408ede9150f7c637b6cab0a91ee6fe1aa5d9fb366f6";
    const V2: &str = "kes:v1:AAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f";
    const V2_ID: &str = "a050837d85070582ccf7394b0988847cc312cb88259b894899f6f239cf1791a5";

    #[test]
    fn k1_form_is_the_same_key() {
        let k = ApiKey::parse(V2).unwrap();
        let k1 = k.to_k1_secret().unwrap();
        let text = std::str::from_utf8(k1.expose()).unwrap();
        assert_eq!(text, "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8");
        let back = ApiKey::parse(text).unwrap();
        assert_eq!(back.identity().to_hex(), V2_ID);
        assert_eq!(
            ApiKey::parse("k1:AAEC").map(|_| ()),
            Err(ApiKeyError::InvalidLength)
        );
        assert_eq!(
            ApiKey::parse("k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+").map(|_| ()),
            Err(ApiKeyError::InvalidBase64)
        );
    }

    #[test]
    fn vectors() {
        let k1 = ApiKey::parse(V1).unwrap();
        assert_eq!(k1.identity().to_hex(), V1_ID);
        let k2 = ApiKey::parse(V2).unwrap();
        assert_eq!(k2.identity().to_hex(), V2_ID);
        let seed: Vec<u8> = (0u8..32).collect();
        assert_eq!(&k2.seed().unwrap().expose()[..], &seed[..]);
        assert_eq!(
            hex::encode(k2.public_key()),
            "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
        );
        assert_eq!(
            hex::encode(k2.spki_der()),
            "302a300506032b657003210003a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
        );
        // Without the prefix.
        assert_eq!(
            ApiKey::parse(&V2[PREFIX.len()..]).unwrap().identity(),
            k2.identity()
        );
        // From the seed.
        let k3 = ApiKey::from_seed(Secret::from_slice(&seed).unwrap());
        assert_eq!(k3.identity().to_hex(), V2_ID);
    }

    #[test]
    fn parse_errors() {
        // 32 bytes.
        let short = STANDARD.encode([0u8; 32]);
        assert_eq!(
            ApiKey::parse(&short).unwrap_err(),
            ApiKeyError::InvalidLength
        );
        let long = STANDARD.encode([0u8; 34]);
        assert_eq!(
            ApiKey::parse(&long).unwrap_err(),
            ApiKeyError::InvalidLength
        );
        assert_eq!(ApiKey::parse("").unwrap_err(), ApiKeyError::InvalidLength);
        let mut typ = [0u8; 33];
        typ[0] = 1;
        assert_eq!(
            ApiKey::parse(&format!("kes:v1:{}", STANDARD.encode(typ))).unwrap_err(),
            ApiKeyError::UnsupportedType
        );
        assert_eq!(
            ApiKey::parse("kes:v1:!!!!AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e").unwrap_err(),
            ApiKeyError::InvalidBase64
        );
        // URL-safe alphabet is not accepted.
        assert_eq!(
            ApiKey::parse("kes:v1:AGaV6VXHasF0FnaB60WdCOeTZ8eTIDikL4zlN16c8NA_").unwrap_err(),
            ApiKeyError::InvalidBase64
        );
        // Only the exact prefix is stripped.
        assert_eq!(
            ApiKey::parse("kes:v2:AAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f").unwrap_err(),
            ApiKeyError::InvalidBase64
        );
    }

    #[test]
    fn text_round_trip_and_debug() {
        let k = ApiKey::parse(V1).unwrap();
        let text = k.to_string_secret();
        assert_eq!(std::str::from_utf8(text.expose()).unwrap(), V1);
        let g = ApiKey::generate().unwrap();
        let text = g.to_string_secret();
        let s = std::str::from_utf8(text.expose()).unwrap();
        assert_eq!(s.len(), TEXT_LEN);
        assert!(s.starts_with(PREFIX));
        assert_eq!(ApiKey::parse(s).unwrap().identity(), g.identity());
        assert_ne!(
            ApiKey::generate().unwrap().identity(),
            ApiKey::generate().unwrap().identity()
        );
        let dbg = format!("{k:?}");
        assert_eq!(dbg, "ApiKey(<redacted>)");
        assert!(!dbg.contains("AGaV"));
    }

    #[test]
    fn pkcs8() {
        let k = ApiKey::parse(V2).unwrap();
        let der = k.pkcs8_der();
        assert_eq!(der.len(), 48);
        // ring accepts it and derives the same public key.
        let kp = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.expose()).unwrap();
        assert_eq!(kp.public_key().as_ref(), &k.public_key()[..]);
        let back = ApiKey::from_pkcs8_der(der.expose()).unwrap();
        assert_eq!(back.identity(), k.identity());
        assert_eq!(
            ApiKey::from_pkcs8_der(&der.expose()[..47]).unwrap_err(),
            ApiKeyError::UnsupportedType
        );
    }

    // kms-go (`aead.dev/mtls`) vectors, computed with Go's crypto/elliptic and
    // x509.MarshalPKIXPublicKey (the SPKI kms-go hashes): scalar, public point, identity.
    const K2_P256: &str = "k2:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA"; // d = 01..20
    const K2_P256_PUB: &str = "04515c3d6eb9e396b904d3feca7f54fdcd0cc1e997bf375dca515ad0a6c3b4035f4536be3a50f318fbf9a5475902a221502bef0d57e08c53b2cc0a56f17d9f9354";
    const K2_P256_H1: &str = "h1:8dWUSbcnFl3nMr8oMzgSK5liimFZGP7cZ9h4__z0fac";
    const K2_P256_ID: &str = "f1d59449b727165de732bf283338122b99628a615918fedc67d878fffcf47da7";
    const K2_P384: &str = "k2:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8w"; // d = 01..30
    const K2_P384_H1: &str = "h1:bjBG4XEF9zpxLMgNNrPDOpM48hvmG__SzAV_MLGsjyw";
    const K2_P384_ID: &str = "6e3046e17105f73a712cc80d36b3c33a9338f21be61bffd2cc057f30b1ac8f2c";
    /// d = 1: the public key is the P-256 base point; the scalar's leading zeros are kept.
    const K2_P256_ONE: &str = "k2:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE";
    const K2_P256_ONE_ID: &str = "5cd252fb0ce8932436faf8ccd1040981b89ee4ad6b9fe9e2a2b7e71aacb27cd3";
    /// d = n - 1, the largest valid P-256 scalar.
    const K2_P256_MAX: &str = "k2:_____wAAAAD__________7zm-q2nF56E87nKwvxjJVA";
    const K2_P256_MAX_ID: &str = "3fda76216227ff687422fb555d659338c62577cbc3e503dddc34b7f6f1abbde5";

    #[test]
    fn k2_identities_are_kms_gos() {
        let k = ApiKey::parse(K2_P256).unwrap();
        assert_eq!(k.kind(), KeyKind::Ecdsa(Curve::P256));
        assert_eq!(hex::encode(k.public_key()), K2_P256_PUB);
        assert_eq!(
            hex::encode(k.spki_der()),
            format!("3059301306072a8648ce3d020106082a8648ce3d030107034200{K2_P256_PUB}")
        );
        assert_eq!(k.identity().to_hex(), K2_P256_ID);
        assert_eq!(k.identity().to_h1(), K2_P256_H1);

        let k = ApiKey::parse(K2_P384).unwrap();
        assert_eq!(k.kind(), KeyKind::Ecdsa(Curve::P384));
        assert_eq!(k.spki_der().len(), 120);
        assert_eq!(k.identity().to_hex(), K2_P384_ID);
        assert_eq!(k.identity().to_h1(), K2_P384_H1);

        let one = ApiKey::parse(K2_P256_ONE).unwrap();
        assert_eq!(
            hex::encode(&one.public_key()[..33]),
            "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296"
        );
        assert_eq!(one.identity().to_hex(), K2_P256_ONE_ID);
        assert_eq!(
            ApiKey::parse(K2_P256_MAX).unwrap().identity().to_hex(),
            K2_P256_MAX_ID
        );
    }

    #[test]
    fn k2_text_pkcs8_and_signing() {
        for text in [K2_P256, K2_P384, K2_P256_ONE] {
            let k = ApiKey::parse(text).unwrap();
            // Its own text form is the k2 text; there is no k1 form of an ECDSA key.
            assert_eq!(k.to_string_secret().expose(), text.as_bytes());
            assert!(k.to_k1_secret().is_none());
            assert!(k.seed().is_none());
            assert_eq!(k.key_pair().unwrap_err(), ApiKeyError::UnsupportedType);
            // The PKCS#8 holds the same key pair: ring loads it and its signatures verify
            // under the public key the identity is computed from.
            let (pair, curve) = k.ecdsa_key_pair().unwrap();
            assert_eq!(pair.public_key().as_ref(), &k.public_key()[..]);
            let sig = pair.sign(&SystemRandom::new(), b"message").unwrap();
            let verify = match curve {
                Curve::P256 => &ring::signature::ECDSA_P256_SHA256_ASN1,
                Curve::P384 => &ring::signature::ECDSA_P384_SHA384_ASN1,
            };
            ring::signature::UnparsedPublicKey::new(verify, k.public_key())
                .verify(b"message", sig.as_ref())
                .unwrap();
            let again = EcdsaKeyPair::from_pkcs8(
                curve.signing(),
                k.pkcs8_der().expose(),
                &SystemRandom::new(),
            )
            .unwrap();
            assert_eq!(again.public_key().as_ref(), &k.public_key()[..]);
            assert_eq!(format!("{k:?}"), "ApiKey(<redacted>)");
        }
    }

    #[test]
    fn k2_parse_errors_are_precise_and_never_echo_the_key() {
        let cases: &[(&str, ApiKeyError)] = &[
            ("k2:", ApiKeyError::InvalidLength),
            // One character short of P-256, one over; between P-256 and P-384.
            (&K2_P256[..K2_P256.len() - 1], ApiKeyError::InvalidLength),
            ("k2:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAA", ApiKeyError::InvalidLength),
            ("k2:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMk", ApiKeyError::InvalidLength),
            // Standard-alphabet characters and padding are not base64url.
            ("k2:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eH+A", ApiKeyError::InvalidBase64),
            ("k2:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eH=A", ApiKeyError::InvalidBase64),
            // Zero, the order n, and all ones are not P-256 private keys (kms-go refuses them).
            ("k2:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ApiKeyError::InvalidScalar),
            ("k2:_____wAAAAD__________7zm-q2nF56E87nKwvxjJVE", ApiKeyError::InvalidScalar),
            ("k2:__________________________________________8", ApiKeyError::InvalidScalar),
            (
                "k2:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4_QEFC",
                ApiKeyError::UnsupportedCurve,
            ),
            // The prefix is case-sensitive, as in kms-go.
            ("K2:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA", ApiKeyError::InvalidBase64),
        ];
        for (text, want) in cases {
            let err = ApiKey::parse(text).map(|_| ()).unwrap_err();
            assert_eq!(&err, want, "{text}");
            let body = &text[3..];
            let msg = err.to_string();
            assert!(body.len() < 8 || !msg.contains(&body[..8]), "{msg}");
        }
        assert_eq!(
            ApiKey::from_ecdsa_scalar(Curve::P384, &[1u8; 32]).map(|_| ()),
            Err(ApiKeyError::InvalidLength)
        );
    }
}
