//! API keys (auth-and-policy.md §3): `"kes:v1:" || base64std(0x00 || ed25519_seed[32])`.

use std::fmt;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};

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

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); followed by the 32-byte key.
pub const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// DER prefix of a PKCS#8 v1 Ed25519 private key (RFC 8410); followed by the 32-byte seed.
pub const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// An Ed25519 private key in API-key form. The seed is zeroized on drop.
#[derive(Clone)]
pub struct ApiKey {
    seed: Secret<32>,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Why an API key could not be parsed or created.
#[derive(Debug, PartialEq, Eq)]
pub enum ApiKeyError {
    /// The decoded key is not 33 bytes long.
    InvalidLength,
    /// The key-type byte is not 0 (Ed25519), or a PKCS#8 key is not Ed25519.
    UnsupportedType,
    /// The text is not valid standard base64.
    InvalidBase64,
    /// The system random number generator failed.
    Random,
}

impl fmt::Display for ApiKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApiKeyError::InvalidLength => "kes: invalid API key: invalid length",
            ApiKeyError::UnsupportedType => "kes: invalid API key: unsupported type",
            ApiKeyError::InvalidBase64 => "kes: invalid API key: invalid base64 encoding",
            ApiKeyError::Random => "kes: failed to generate API key: random source failed",
        })
    }
}

impl std::error::Error for ApiKeyError {}

impl ApiKey {
    /// Parses `[kes:v1:]<base64 of 0x00 || seed>`, or the MinKMS form
    /// `k1:<unpadded base64url of seed>` of the same Ed25519 key (same identity).
    pub fn parse(s: &str) -> Result<ApiKey, ApiKeyError> {
        if let Some(text) = s.strip_prefix(K1_PREFIX) {
            return Self::parse_k1(text);
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
        Ok(ApiKey { seed })
    }

    /// A new random key from the system CSPRNG.
    pub fn generate() -> Result<ApiKey, ApiKeyError> {
        let mut tmp = [0u8; 32];
        let key = SystemRandom::new().fill(&mut tmp).ok().map(|()| ApiKey {
            seed: Secret::new(tmp),
        });
        // `Secret::new` took a copy; wipe the stack original.
        // SAFETY: `tmp` is our own stack array of exactly 32 bytes.
        unsafe { memsec::memzero(tmp.as_mut_ptr(), tmp.len()) };
        key.ok_or(ApiKeyError::Random)
    }

    pub fn from_seed(seed: Secret<32>) -> ApiKey {
        ApiKey { seed }
    }

    /// Recovers an API key from a PKCS#8 v1 Ed25519 private key (`kes identity <key-file>`).
    /// Any other key type or encoding → `UnsupportedType`.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<ApiKey, ApiKeyError> {
        if der.len() != ED25519_PKCS8_PREFIX.len() + 32 || der[..16] != ED25519_PKCS8_PREFIX {
            return Err(ApiKeyError::UnsupportedType);
        }
        let seed = Secret::from_slice(&der[16..]).ok_or(ApiKeyError::UnsupportedType)?;
        Ok(ApiKey { seed })
    }

    /// The seed (the Ed25519 private key).
    pub fn seed(&self) -> &Secret<32> {
        &self.seed
    }

    /// The text form `kes:v1:` + 44 base64 characters (ASCII) in a zeroizing buffer;
    /// use `std::str::from_utf8(v.expose())` to view it as text.
    pub fn to_string_secret(&self) -> SecretVec {
        let mut raw = [0u8; 33];
        raw[1..].copy_from_slice(self.seed.expose());
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
            Ok(32) => Ok(ApiKey {
                seed: Secret::new(tmp),
            }),
            Ok(_) => Err(ApiKeyError::InvalidLength),
            Err(_) => Err(ApiKeyError::InvalidBase64),
        };
        // `Secret::new` took a copy; wipe the stack original.
        // SAFETY: `tmp` is our own stack array of exactly 32 bytes.
        unsafe { memsec::memzero(tmp.as_mut_ptr(), tmp.len()) };
        key
    }

    /// The MinKMS text form `k1:` + 43 unpadded base64url characters of the seed (what kms-go
    /// and `MINIO_KMS_API_KEY` take), in a zeroizing buffer.
    pub fn to_k1_secret(&self) -> SecretVec {
        let mut out = SecretVec::with_capacity(K1_TEXT_LEN);
        let v = out.as_mut_vec();
        v.extend_from_slice(K1_PREFIX.as_bytes());
        v.resize(K1_TEXT_LEN, 0);
        let written = URL_SAFE_NO_PAD.encode_slice(self.seed.expose(), &mut v[K1_PREFIX.len()..]);
        // 32 bytes always encode to exactly 43 characters, which fit.
        debug_assert_eq!(written.ok(), Some(43));
        out
    }

    /// The Ed25519 key pair for signing.
    pub fn key_pair(&self) -> Result<Ed25519KeyPair, ApiKeyError> {
        Ed25519KeyPair::from_seed_unchecked(self.seed.expose())
            .map_err(|_| ApiKeyError::UnsupportedType)
    }

    /// The 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        let mut pk = [0u8; 32];
        // `from_seed_unchecked` accepts every 32-byte seed.
        if let Ok(kp) = self.key_pair() {
            pk.copy_from_slice(kp.public_key().as_ref());
        }
        pk
    }

    /// The DER SubjectPublicKeyInfo (44 bytes).
    pub fn spki_der(&self) -> [u8; 44] {
        let mut spki = [0u8; 44];
        spki[..12].copy_from_slice(&ED25519_SPKI_PREFIX);
        spki[12..].copy_from_slice(&self.public_key());
        spki
    }

    /// SHA-256 of the Ed25519 SPKI (auth-and-policy §3.2).
    pub fn identity(&self) -> Identity {
        Identity::from_spki_der(&self.spki_der())
    }

    /// PKCS#8 v1 DER of the Ed25519 private key (48 bytes).
    pub fn pkcs8_der(&self) -> SecretVec {
        let mut out = SecretVec::with_capacity(48);
        out.as_mut_vec().extend_from_slice(&ED25519_PKCS8_PREFIX);
        out.as_mut_vec().extend_from_slice(self.seed.expose());
        out
    }
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
        let k1 = k.to_k1_secret();
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
        assert_eq!(&k2.seed().expose()[..], &seed[..]);
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
        assert_eq!(kp.public_key().as_ref(), &k.public_key());
        let back = ApiKey::from_pkcs8_der(der.expose()).unwrap();
        assert_eq!(back.identity(), k.identity());
        assert_eq!(
            ApiKey::from_pkcs8_der(&der.expose()[..47]).unwrap_err(),
            ApiKeyError::UnsupportedType
        );
    }
}
