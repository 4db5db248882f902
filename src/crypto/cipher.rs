//! Secret keys, HMAC keys and key versions (crypto-formats.md §1–§4, §8).
//!
//! Ciphertext format (§3): `C || T || IV || N` with a per-ciphertext key `K'` derived from the
//! stored key `K` and the 16-byte `IV`: `HMAC-SHA-256(K, IV)` for AES256 keys,
//! `HChaCha20(K, IV)` for ChaCha20 keys. The AEAD is AES-256-GCM or ChaCha20-Poly1305 (RFC 8439)
//! with the 12-byte nonce `N`.
//!
//! The AEADs come from `ring`; the AES derivation is HMAC-SHA-256 on `sha2`'s compression
//! function with the key's pad states computed once per key ([`super::hmac_sha256`]), wiped
//! like the key. `K'` is written into a scratch buffer that is wiped after use, and decrypted
//! plaintexts only ever live in [`SecretVec`]s. What `ring` keeps on the stack while it works
//! (the expanded AEAD key schedule) is `ring`'s own and cannot be wiped from outside.

use std::fmt;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::SecureRandom;
use sha2::Digest as _;

use super::envelope::{parse_envelope, Envelope};
use super::hchacha::hchacha20_into;
use super::hmac_sha256::HmacSha256Key;
pub use super::key_type::KeyType;
use crate::secret::{Secret, SecretVec};
use crate::time::Timestamp;

/// Length of the random suffix `IV || N` of every ciphertext.
const RANDOM_LEN: usize = 28;
const IV_LEN: usize = 16;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors of the cryptographic operations. Never carries secret bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CryptoError {
    /// Decryption failed: wrong key or context, tampered, truncated or garbled ciphertext.
    NotAuthentic,
    /// The random number generator failed.
    Rng,
    /// The AEAD implementation refused an operation (cannot happen for valid sizes).
    Internal,
}

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CryptoError::NotAuthentic => "decryption failed: ciphertext is not authentic",
            CryptoError::Rng => "failed to read random bytes",
            CryptoError::Internal => "internal cryptographic error",
        })
    }
}

impl std::error::Error for CryptoError {}

fn wipe_bytes(bytes: &mut [u8]) {
    // SAFETY: the pointer and length describe exactly the given slice.
    unsafe { memsec::memzero(bytes.as_mut_ptr(), bytes.len()) };
}

/// HMAC-SHA-256(`key`, `message`) into `out`.
fn hmac_sha256(key: &[u8; 32], message: &[u8], out: &mut [u8; 32]) {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message);
    out.copy_from_slice(tag.as_ref());
}

/// A 32-byte scratch buffer for derived keys, wiped on drop.
struct Scratch([u8; 32]);

impl Drop for Scratch {
    fn drop(&mut self) {
        wipe_bytes(&mut self.0);
    }
}

fn random_secret(rng: &dyn SecureRandom) -> Result<Secret<32>, CryptoError> {
    let mut bytes = Scratch([0u8; 32]);
    rng.fill(&mut bytes.0).map_err(|_| CryptoError::Rng)?;
    Ok(Secret::new(bytes.0))
}

// ---------------------------------------------------------------------------------------------

/// A typed 32-byte secret key that encrypts and decrypts (crypto-formats.md §3, §4).
#[derive(Clone)]
pub struct SecretKey {
    kind: KeyType,
    key: Secret<32>,
    /// `HMAC-SHA-256(key, ·)` ready to use: the AES key derivation of every ciphertext.
    derive: HmacSha256Key,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("kind", &self.kind)
            .field("key", &self.key)
            .finish()
    }
}

impl SecretKey {
    /// Bytes a ciphertext is longer than its plaintext: 16 (tag) + 16 (IV) + 12 (nonce).
    pub const CIPHERTEXT_OVERHEAD: usize = TAG_LEN + RANDOM_LEN;

    pub fn new(kind: KeyType, key: Secret<32>) -> SecretKey {
        let derive = HmacSha256Key::new(key.expose());
        SecretKey { kind, key, derive }
    }

    /// A new key of the given type from 32 bytes of `rng`.
    pub fn generate(kind: KeyType, rng: &dyn SecureRandom) -> Result<SecretKey, CryptoError> {
        Ok(SecretKey::new(kind, random_secret(rng)?))
    }

    pub fn kind(&self) -> KeyType {
        self.kind
    }

    pub fn expose(&self) -> &[u8; 32] {
        self.key.expose()
    }

    /// The legacy key id (§5.3): lowercase hex of the first 16 bytes of SHA-256(K).
    pub fn legacy_id(&self) -> String {
        let digest = sha2::Sha256::digest(self.key.expose());
        hex::encode(&digest[..16])
    }

    /// The AEAD key for `K'` derived from `iv` as for a key of type `kind`.
    fn aead_key(&self, kind: KeyType, iv: &[u8; IV_LEN]) -> Result<LessSafeKey, CryptoError> {
        let mut derived = Scratch([0u8; 32]);
        let algorithm = match kind {
            KeyType::Aes256 => {
                self.derive.sign_short(iv, &mut derived.0);
                &aead::AES_256_GCM
            }
            KeyType::ChaCha20 => {
                hchacha20_into(self.key.expose(), iv, &mut derived.0);
                &aead::CHACHA20_POLY1305
            }
        };
        let key = UnboundKey::new(algorithm, &derived.0).map_err(|_| CryptoError::Internal)?;
        Ok(LessSafeKey::new(key))
    }

    /// Appends `C || T || IV || N` (`plaintext.len() + 44` bytes) to `out`, with
    /// `random = IV || N`. Grows `out` once (before the plaintext is copied into it).
    pub fn seal_into(
        &self,
        plaintext: &[u8],
        aad: &[u8],
        random: &[u8; RANDOM_LEN],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let (iv, nonce) = split_random(random);
        let key = self.aead_key(self.kind, iv)?;
        out.reserve(plaintext.len() + Self::CIPHERTEXT_OVERHEAD);
        let start = out.len();
        out.extend_from_slice(plaintext);
        match key.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(aad),
            &mut out[start..],
        ) {
            Ok(tag) => {
                out.extend_from_slice(tag.as_ref());
                out.extend_from_slice(random);
                Ok(())
            }
            Err(_) => {
                wipe_bytes(&mut out[start..]);
                out.truncate(start);
                Err(CryptoError::Internal)
            }
        }
    }

    /// Encrypts `plaintext` with fresh randomness from `rng` (§3).
    pub fn encrypt(
        &self,
        plaintext: &[u8],
        aad: &[u8],
        rng: &dyn SecureRandom,
    ) -> Result<Vec<u8>, CryptoError> {
        let mut random = [0u8; RANDOM_LEN];
        rng.fill(&mut random).map_err(|_| CryptoError::Rng)?;
        let mut out = Vec::with_capacity(plaintext.len() + Self::CIPHERTEXT_OVERHEAD);
        self.seal_into(plaintext, aad, &random, &mut out)?;
        Ok(out)
    }

    /// Decrypts a raw, legacy MessagePack or legacy JSON ciphertext (§4). The plaintext is
    /// returned in a `SecretVec` whose length and capacity are exactly the plaintext length.
    pub fn decrypt(&self, ciphertext: &[u8], aad: &[u8]) -> Result<SecretVec, CryptoError> {
        self.decrypt_impl(ciphertext, aad, false)
    }

    fn decrypt_impl(
        &self,
        ciphertext: &[u8],
        aad: &[u8],
        legacy_untyped: bool,
    ) -> Result<SecretVec, CryptoError> {
        // Empty: `open` reserves exactly the plaintext length.
        let mut out = SecretVec::new(Vec::new());
        self.decrypt_into_impl(ciphertext, aad, legacy_untyped, out.as_mut_vec())?;
        Ok(out)
    }

    /// Like [`decrypt`](Self::decrypt), but into the caller's buffer (cleared first; wiped
    /// on failure), so a connection can reuse one buffer. The caller wipes it after use.
    fn decrypt_into_impl(
        &self,
        ciphertext: &[u8],
        aad: &[u8],
        legacy_untyped: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        match parse_envelope(ciphertext) {
            Envelope::Raw(x) => {
                if x.len() <= RANDOM_LEN {
                    return Err(CryptoError::NotAuthentic);
                }
                let (sealed, random) = x.split_at(x.len() - RANDOM_LEN);
                let (iv, nonce) =
                    split_random(random.try_into().map_err(|_| CryptoError::Internal)?);
                self.open(self.kind, sealed, iv, nonce, aad, out)
            }
            Envelope::Legacy(env) => {
                let kind = if legacy_untyped && env.algorithm == KeyType::ChaCha20 {
                    KeyType::ChaCha20
                } else {
                    self.kind
                };
                self.open(kind, &env.sealed, &env.iv, &env.nonce, aad, out)
            }
        }
    }

    fn open(
        &self,
        kind: KeyType,
        sealed: &[u8],
        iv: &[u8; IV_LEN],
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        if sealed.len() < TAG_LEN {
            return Err(CryptoError::NotAuthentic);
        }
        let (ct, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        let tag = aead::Tag::try_from(tag).map_err(|_| CryptoError::Internal)?;
        let key = self.aead_key(kind, iv)?;
        // The buffer is empty (or wiped) here, so growing it copies no secret bytes.
        out.clear();
        out.reserve_exact(ct.len());
        out.extend_from_slice(ct);
        let opened = key.open_in_place_separate_tag(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(aad),
            tag,
            out,
            0..,
        );
        if opened.is_err() {
            // SAFETY: wiping the initialised part of the caller's buffer.
            unsafe { memsec::memzero(out.as_mut_ptr(), out.len()) };
            out.clear();
            return Err(CryptoError::NotAuthentic);
        }
        Ok(())
    }
}

fn split_random(random: &[u8; RANDOM_LEN]) -> (&[u8; IV_LEN], &[u8; NONCE_LEN]) {
    let (iv, nonce) = random.split_at(IV_LEN);
    // Both conversions are infallible: the lengths are fixed by the array type.
    match (iv.try_into(), nonce.try_into()) {
        (Ok(iv), Ok(nonce)) => (iv, nonce),
        _ => unreachable!("28 = 16 + 12"),
    }
}

/// A 32-byte HMAC-SHA-256 key (§8).
#[derive(Clone)]
pub struct HmacKey {
    key: Secret<32>,
}

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HmacKey").field("key", &self.key).finish()
    }
}

impl HmacKey {
    pub fn new(key: Secret<32>) -> HmacKey {
        HmacKey { key }
    }

    pub fn generate(rng: &dyn SecureRandom) -> Result<HmacKey, CryptoError> {
        Ok(HmacKey::new(random_secret(rng)?))
    }

    pub fn expose(&self) -> &[u8; 32] {
        self.key.expose()
    }

    /// HMAC-SHA-256(key, message).
    pub fn sign(&self, message: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        hmac_sha256(self.key.expose(), message, &mut out);
        out
    }
}

/// The single version a named key holds (§1).
#[derive(Clone, Debug)]
pub struct KeyVersion {
    pub key: SecretKey,
    /// `None` for keys loaded from legacy (JSON) records.
    pub hmac: Option<HmacKey>,
    /// `None` when the record had no creation time (describe shows [`crate::time::GO_ZERO_TIME`]).
    pub created_at: Option<Timestamp>,
    /// `None` when unknown or empty.
    pub created_by: Option<String>,
    /// Loaded from a legacy JSON record without (or with an empty) `algorithm`: legacy
    /// envelopes naming ChaCha20 are then decrypted with ChaCha20 (§4 compatibility remark).
    pub legacy_untyped: bool,
}

impl KeyVersion {
    /// A new random key of type `kind` with a new random HMAC key.
    pub fn generate(
        kind: KeyType,
        created_by: &str,
        now: Timestamp,
        rng: &dyn SecureRandom,
    ) -> Result<KeyVersion, CryptoError> {
        let key = SecretKey::generate(kind, rng)?;
        Self::with_key(key, created_by, now, rng)
    }

    /// Imports `key` as type `kind`; the HMAC key is still random.
    pub fn import(
        kind: KeyType,
        key: Secret<32>,
        created_by: &str,
        now: Timestamp,
        rng: &dyn SecureRandom,
    ) -> Result<KeyVersion, CryptoError> {
        Self::with_key(SecretKey::new(kind, key), created_by, now, rng)
    }

    fn with_key(
        key: SecretKey,
        created_by: &str,
        now: Timestamp,
        rng: &dyn SecureRandom,
    ) -> Result<KeyVersion, CryptoError> {
        Ok(KeyVersion {
            key,
            hmac: Some(HmacKey::generate(rng)?),
            created_at: Some(now),
            created_by: (!created_by.is_empty()).then(|| created_by.to_owned()),
            legacy_untyped: false,
        })
    }

    /// Encrypts with the version's secret key (same as [`SecretKey::encrypt`]).
    pub fn encrypt(
        &self,
        plaintext: &[u8],
        aad: &[u8],
        rng: &dyn SecureRandom,
    ) -> Result<Vec<u8>, CryptoError> {
        self.key.encrypt(plaintext, aad, rng)
    }

    /// Decrypts like [`SecretKey::decrypt`], honouring [`KeyVersion::legacy_untyped`].
    pub fn decrypt(&self, ciphertext: &[u8], aad: &[u8]) -> Result<SecretVec, CryptoError> {
        self.key.decrypt_impl(ciphertext, aad, self.legacy_untyped)
    }

    /// Decrypts into `out` (cleared first, wiped on failure): no allocation once `out` has
    /// grown. The caller must wipe `out` when done with the plaintext.
    pub fn decrypt_into(
        &self,
        ciphertext: &[u8],
        aad: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        self.key
            .decrypt_into_impl(ciphertext, aad, self.legacy_untyped, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine as _;
    use ring::rand::SystemRandom;

    fn seq(start: u8) -> [u8; 32] {
        std::array::from_fn(|i| start + i as u8)
    }

    const CONTEXT: &[u8] = br#"{"my-bucket":"my-bucket/my-object"}"#;

    fn spec_random() -> [u8; 28] {
        hex::decode("404142434445464748494a4b4c4d4e4f505152535455565758595a5b")
            .unwrap()
            .try_into()
            .unwrap()
    }

    fn key(kind: KeyType) -> SecretKey {
        SecretKey::new(kind, Secret::new(seq(0)))
    }

    #[test]
    fn key_type_names() {
        assert_eq!(KeyType::Aes256.as_str(), "AES256");
        assert_eq!(KeyType::ChaCha20.as_str(), "ChaCha20");
        assert_eq!(KeyType::from_name("AES256"), Some(KeyType::Aes256));
        assert_eq!(
            KeyType::from_name("AES256-GCM_SHA256"),
            Some(KeyType::Aes256)
        );
        assert_eq!(KeyType::from_name("ChaCha20"), Some(KeyType::ChaCha20));
        assert_eq!(
            KeyType::from_name("XCHACHA20-POLY1305"),
            Some(KeyType::ChaCha20)
        );
        for bad in [
            "aes256",
            "CHACHA20",
            "",
            "AES-256-GCM-HMAC-SHA-256",
            "ChaCha20Poly1305",
        ] {
            assert_eq!(KeyType::from_name(bad), None, "{bad}");
        }
        assert_eq!(KeyType::from_protobuf_code(1), Some(KeyType::Aes256));
        assert_eq!(KeyType::from_protobuf_code(2), Some(KeyType::ChaCha20));
        assert_eq!(KeyType::from_protobuf_code(0), None);
        let _ = KeyType::platform_default();
    }

    #[test]
    fn spec_11_1_aes_subkey() {
        // §11.1 K' = HMAC-SHA-256(K, IV).
        let mut out = [0u8; 32];
        hmac_sha256(&seq(0), &spec_random()[..16], &mut out);
        assert_eq!(
            hex::encode(out),
            "5bc3729ecad9af04381b0e3db5d0b5acccf6a35a06437acd2d7e33622030b109"
        );
    }

    /// §11.1: AES256 data key.
    #[test]
    fn spec_11_1_aes256() {
        let k = key(KeyType::Aes256);
        let mut ct = Vec::new();
        k.seal_into(&seq(0x20), CONTEXT, &spec_random(), &mut ct)
            .unwrap();
        assert_eq!(
            hex::encode(&ct),
            "a9c0ec6d1a6af05dbb7a9e580f1fb9a6608a75d79c4f8ba45cddfcbc5a405228\
             e4dab28a4e3c55d941fc302609e161ac\
             404142434445464748494a4b4c4d4e4f505152535455565758595a5b"
        );
        assert_eq!(
            B64.encode(&ct),
            "qcDsbRpq8F27ep5YDx+5pmCKddecT4ukXN38vFpAUijk2rKKTjxV2UH8MCYJ4WGsQEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaWw=="
        );
        let pt = k.decrypt(&ct, CONTEXT).unwrap();
        assert_eq!(pt.expose(), &seq(0x20));
        assert!(matches!(
            k.decrypt(&ct, b""),
            Err(CryptoError::NotAuthentic)
        ));
        assert!(matches!(
            k.decrypt(&ct, b"{}"),
            Err(CryptoError::NotAuthentic)
        ));
        assert!(matches!(
            k.decrypt(&ct, br#"{"my-bucket":"my-bucket/my-objecT"}"#),
            Err(CryptoError::NotAuthentic)
        ));
        // The same ciphertext under the ChaCha20 type does not open.
        assert!(matches!(
            key(KeyType::ChaCha20).decrypt(&ct, CONTEXT),
            Err(CryptoError::NotAuthentic)
        ));
    }

    /// §11.2: ChaCha20 data key.
    #[test]
    fn spec_11_2_chacha20() {
        let k = key(KeyType::ChaCha20);
        let mut ct = Vec::new();
        k.seal_into(&seq(0x20), CONTEXT, &spec_random(), &mut ct)
            .unwrap();
        assert_eq!(
            hex::encode(&ct),
            "21f761710ca442ee7009d735c5d58a14a682db459db3c4db3f89fea6eb8ada4d8ba1508c595a566c3680815516b429b0404142434445464748494a4b4c4d4e4f505152535455565758595a5b"
        );
        assert_eq!(
            B64.encode(&ct),
            "IfdhcQykQu5wCdc1xdWKFKaC20Wds8TbP4n+puuK2k2LoVCMWVpWbDaAgVUWtCmwQEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaWw=="
        );
        assert_eq!(k.decrypt(&ct, CONTEXT).unwrap().expose(), &seq(0x20));
        assert!(matches!(
            k.decrypt(&ct, b""),
            Err(CryptoError::NotAuthentic)
        ));
        assert!(matches!(
            key(KeyType::Aes256).decrypt(&ct, CONTEXT),
            Err(CryptoError::NotAuthentic)
        ));
    }

    /// §11.3: AES256, no context, "Hello World".
    #[test]
    fn spec_11_3_hello_world() {
        let k = key(KeyType::Aes256);
        let mut ct = b"prefix".to_vec();
        k.seal_into(b"Hello World", b"", &spec_random(), &mut ct)
            .unwrap();
        assert_eq!(&ct[..6], b"prefix");
        let ct = &ct[6..];
        assert_eq!(
            hex::encode(ct),
            "c184a222516f8115e13fd01b30cc0a1fb92224204c078dba0a68a3404142434445464748494a4b4c4d4e4f505152535455565758595a5b"
        );
        assert_eq!(
            B64.encode(ct),
            "wYSiIlFvgRXhP9AbMMwKH7kiJCBMB426CmijQEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaWw=="
        );
        assert_eq!(k.decrypt(ct, b"").unwrap().expose(), b"Hello World");
    }

    /// §11.4: the §11.1 ciphertext in both legacy envelopes.
    #[test]
    fn spec_11_4_legacy_envelopes() {
        let k = key(KeyType::Aes256);
        assert_eq!(k.legacy_id(), "630dcd2966c4336691125448bbb25b4f");
        assert_eq!(
            SecretKey::new(KeyType::Aes256, Secret::new([0; 32])).legacy_id(),
            "66687aadf862bd776c8fc18b8e9f8e20"
        );
        let msgp = B64
            .decode("lbFBRVMyNTYtR0NNX1NIQTI1NtkgNjMwZGNkMjk2NmM0MzM2NjkxMTI1NDQ4YmJiMjViNGbEEEBBQkNERUZHSElKS0xNTk/EDFBRUlNUVVZXWFlaW8QwqcDsbRpq8F27ep5YDx+5pmCKddecT4ukXN38vFpAUijk2rKKTjxV2UH8MCYJ4WGs")
            .unwrap();
        assert_eq!(
            hex::encode(&msgp),
            "95b141455332353\
             62d47434d5f534841323536d920363330646364323936366334333336363931313235343438626262323562346\
             6c410404142434445464748494a4b4c4d4e4fc40c505152535455565758595a5bc430a9c0ec6d1a6af05dbb7a9e580f1fb9a6608a75d79c4f8ba45cddfcbc5a405228e4dab28a4e3c55d941fc302609e161ac"
        );
        let json = br#"{"aead":"AES-256-GCM-HMAC-SHA-256","id":"630dcd2966c4336691125448bbb25b4f","iv":"QEFCQ0RFRkdISUpLTE1OTw==","nonce":"UFFSU1RVVldYWVpb","bytes":"qcDsbRpq8F27ep5YDx+5pmCKddecT4ukXN38vFpAUijk2rKKTjxV2UH8MCYJ4WGs"}"#;
        for ct in [&msgp[..], &json[..]] {
            assert_eq!(k.decrypt(ct, CONTEXT).unwrap().expose(), &seq(0x20));
            assert!(matches!(k.decrypt(ct, b""), Err(CryptoError::NotAuthentic)));
        }
    }

    /// §11.5: HMAC.
    #[test]
    fn spec_11_5_hmac() {
        let h = HmacKey::new(Secret::new(seq(0x60)));
        let mac = h.sign(b"root access key");
        assert_eq!(
            hex::encode(mac),
            "b4dff60c946e9b3d74ee0114f1bf1644bbada0efd87839145c6fade7b8486fcb"
        );
        assert_eq!(
            B64.encode(mac),
            "tN/2DJRumz107gEU8b8WRLutoO/YeDkUXG+t57hIb8s="
        );
        assert_eq!(
            hex::encode(h.sign(b"root secret key")),
            "b03234bfcd9354ae99b7131db3aa6caf1d0f2b481a42882a457070ed33e00618"
        );
        assert_eq!(
            B64.encode(h.sign(b"root secret key")),
            "sDI0v82TVK6ZtxMds6psrx0PK0gaQogqRXBw7TPgBhg="
        );
    }

    fn z(kind: KeyType) -> SecretKey {
        SecretKey::new(kind, Secret::new([0; 32]))
    }

    fn k2(kind: KeyType) -> SecretKey {
        let bytes = B64
            .decode("dDHbTWgo+Yh3u804SYB5OyVMy6RiLeJYBQth1f6KlEU=")
            .unwrap();
        SecretKey::new(kind, Secret::from_slice(&bytes).unwrap())
    }

    /// §11.8: every row of the reference test-suite table.
    #[test]
    fn spec_11_8_table() {
        let p0 = [0u8; 16];
        let p2 = B64
            .decode("CLcJoykFCWZDkEIiUq9bJRqwCwW9ZDvdgu8EMA==")
            .unwrap();
        let a2 = [0u8; 16];
        type Row<'a> = (SecretKey, &'a [u8], Vec<u8>, &'a [u8]);
        let rows: Vec<Row<'_>> = vec![
            (
                z(KeyType::Aes256),
                b"",
                br#"{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#.to_vec(),
                &p0,
            ),
            (
                z(KeyType::ChaCha20),
                b"",
                br#"{"aead":"ChaCha20Poly1305","iv":"s3fSZ6vk5m+DfQA8yZWeUg==","nonce":"8/kHMnCMs3h9NZ2a","bytes":"cw22HjLq/4cx8507SW4hhSrYbDiMuRao4b5+GE+XfbE="}"#.to_vec(),
                &p0,
            ),
            (
                z(KeyType::Aes256),
                b"",
                B64.decode("lbFBRVMyNTYtR0NNX1NIQTI1NtkgNjY2ODdhYWRmODYyYmQ3NzZjOGZjMThiOGU5ZjhlMjDEEExv7LAd4oz0SaHZrX5LBufEDEKME1ow1CDfUFrqv8QgJuy7Sw+jVqz99TK1HV851LT3K4mwwDv46TB2ngWkAJQ=").unwrap(),
                &p0,
            ),
            (
                z(KeyType::ChaCha20),
                b"",
                B64.decode("lbJYQ0hBQ0hBMjAtUE9MWTEzMDXZIDY2Njg3YWFkZjg2MmJkNzc2YzhmYzE4YjhlOWY4ZTIwxBBAr+aptD4x2+qfOhiErbnkxAxYs8RmNC1JJXD1hiHEIJ2KqM0jjkME7ndx8nyVseesN83Np0rM5ejVUun+fNFu").unwrap(),
                &p0,
            ),
            (
                z(KeyType::Aes256),
                b"",
                B64.decode("zwdDgHeRlIFRnJ7+DIhs/ka7GFK2CFSfDELqg1VCyTQzZ58o7MAdupMLk3ZjlMo2ZUDwldL2o41nAWDc").unwrap(),
                &p0,
            ),
            (
                k2(KeyType::Aes256),
                &a2,
                B64.decode("s2gmfQHeGdlyL8x1yEWSACUV3GrSoz3t160hugMgzKWgyqesXDVUJ5Dw5Mt076rR1PNiU9X4YjLH14D8a81t2r2xsz4gVZac").unwrap(),
                &p2,
            ),
            (
                k2(KeyType::ChaCha20),
                &a2,
                B64.decode("gO4woRIswAJdjUjW7z2ApsSQxJlwB24yjLrmH4eI7sB0uh5nfEJfk9ybTPFft5FRFaZCVBmzhx7OJs9n0WWtxH3sySIxecIK").unwrap(),
                &p2,
            ),
        ];
        for (i, (key, aad, ct, pt)) in rows.iter().enumerate() {
            let mut got = key
                .decrypt(ct, aad)
                .unwrap_or_else(|e| panic!("row {i}: {e}"));
            assert_eq!(got.expose(), *pt, "row {i}");
            assert_eq!(got.as_mut_vec().capacity(), pt.len(), "row {i}: capacity");
            // Wrong type, wrong context: not authentic.
            let other = if key.kind() == KeyType::Aes256 {
                KeyType::ChaCha20
            } else {
                KeyType::Aes256
            };
            let swapped = SecretKey::new(other, Secret::new(*key.expose()));
            assert!(
                matches!(swapped.decrypt(ct, aad), Err(CryptoError::NotAuthentic)),
                "row {i}"
            );
            assert!(
                matches!(key.decrypt(ct, b"x"), Err(CryptoError::NotAuthentic)),
                "row {i}"
            );
        }
    }

    /// §11.8 "must fail" list.
    #[test]
    fn spec_11_8_must_fail() {
        let k = z(KeyType::Aes256);
        let good = br#"{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"xLxIN3tSCkg2xMafuvwUwg==","nonce":"gu0mGwUkwcvMEoi5","bytes":"WVgRjeIJm3w50C/l+y7y2i6mbNg5NCAqN1zvOYWZKmc="}"#;
        assert_eq!(k.decrypt(good, b"").unwrap().expose(), &[0u8; 16]);
        let variants = [
            // Unsupported algorithm name.
            String::from_utf8_lossy(good).replace("AES-256-GCM-HMAC-SHA-256", "AES-256-GCM"),
            // 20-byte IV.
            String::from_utf8_lossy(good)
                .replace("xLxIN3tSCkg2xMafuvwUwg==", "xLxIN3tSCkg2xMafuvwUwgAAAAA="),
            // 8-byte nonce.
            String::from_utf8_lossy(good).replace("gu0mGwUkwcvMEoi5", "gu0mGwUkwcs="),
            // Wrong bytes.
            String::from_utf8_lossy(good).replace("WVgRjeIJm3w50C", "WVgRjeIJm3w51C"),
            // Syntactically broken JSON.
            String::from_utf8_lossy(good).replace("\"nonce\":", "\"nonce\""),
            String::from_utf8_lossy(&good[..good.len() - 1]).into_owned(),
        ];
        for v in &variants {
            assert_ne!(v.as_bytes(), &good[..]);
            assert!(
                matches!(k.decrypt(v.as_bytes(), b""), Err(CryptoError::NotAuthentic)),
                "{v}"
            );
        }
    }

    #[test]
    fn round_trip_and_length() {
        let rng = SystemRandom::new();
        for kind in [KeyType::Aes256, KeyType::ChaCha20] {
            let k = SecretKey::generate(kind, &rng).unwrap();
            for len in [0usize, 1, 15, 16, 17, 32, 100, 4096] {
                let pt: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let ct = k.encrypt(&pt, CONTEXT, &rng).unwrap();
                assert_eq!(ct.len(), len + SecretKey::CIPHERTEXT_OVERHEAD);
                assert_eq!(ct.len(), len + 44);
                let got = k.decrypt(&ct, CONTEXT).unwrap();
                assert_eq!(got.expose(), &pt[..]);
                // Two encryptions of the same plaintext differ.
                assert_ne!(k.encrypt(&pt, CONTEXT, &rng).unwrap(), ct);
            }
            // A different key of the same type does not open it.
            let other = SecretKey::generate(kind, &rng).unwrap();
            let ct = k.encrypt(b"data", b"", &rng).unwrap();
            assert!(matches!(
                other.decrypt(&ct, b""),
                Err(CryptoError::NotAuthentic)
            ));
        }
    }

    #[test]
    fn truncated_is_not_authentic() {
        let rng = SystemRandom::new();
        for kind in [KeyType::Aes256, KeyType::ChaCha20] {
            let k = SecretKey::generate(kind, &rng).unwrap();
            let ct = k.encrypt(b"", b"", &rng).unwrap();
            assert_eq!(ct.len(), 44);
            assert!(k.decrypt(&ct, b"").unwrap().is_empty());
            for n in 0..ct.len() {
                assert!(
                    matches!(k.decrypt(&ct[..n], b""), Err(CryptoError::NotAuthentic)),
                    "{n}"
                );
            }
            for n in 0..=28 {
                let junk = vec![0x95u8; n];
                assert!(matches!(
                    k.decrypt(&junk, b""),
                    Err(CryptoError::NotAuthentic)
                ));
                let junk = vec![b'{'; n];
                assert!(matches!(
                    k.decrypt(&junk, b""),
                    Err(CryptoError::NotAuthentic)
                ));
            }
        }
    }

    #[test]
    fn every_bit_flip_is_not_authentic() {
        for kind in [KeyType::Aes256, KeyType::ChaCha20] {
            let k = key(kind);
            let mut ct = Vec::new();
            k.seal_into(&seq(0x20), CONTEXT, &spec_random(), &mut ct)
                .unwrap();
            assert!(k.decrypt(&ct, CONTEXT).is_ok());
            for bit in 0..ct.len() * 8 {
                let mut bad = ct.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    matches!(k.decrypt(&bad, CONTEXT), Err(CryptoError::NotAuthentic)),
                    "{kind:?} bit {bit}"
                );
            }
            // Bit flips in the AAD too.
            for bit in 0..CONTEXT.len() * 8 {
                let mut aad = CONTEXT.to_vec();
                aad[bit / 8] ^= 1 << (bit % 8);
                assert!(matches!(
                    k.decrypt(&ct, &aad),
                    Err(CryptoError::NotAuthentic)
                ));
            }
        }
    }

    #[test]
    fn key_version_generate_import_and_legacy_untyped() {
        let rng = SystemRandom::new();
        let now = Timestamp {
            seconds: 1_705_055_960,
            nanos: 886_816_000,
        };
        let v = KeyVersion::generate(KeyType::ChaCha20, "abc", now, &rng).unwrap();
        assert_eq!(v.key.kind(), KeyType::ChaCha20);
        assert_eq!(v.created_at, Some(now));
        assert_eq!(v.created_by.as_deref(), Some("abc"));
        assert!(!v.legacy_untyped);
        let hmac = v.hmac.as_ref().unwrap();
        assert_ne!(hmac.expose(), v.key.expose());
        let ct = v.encrypt(b"x", b"y", &rng).unwrap();
        assert_eq!(v.decrypt(&ct, b"y").unwrap().expose(), b"x");

        let v = KeyVersion::import(KeyType::Aes256, Secret::new(seq(0)), "", now, &rng).unwrap();
        assert_eq!(v.key.expose(), &seq(0));
        assert_eq!(v.created_by, None);
        assert!(v.hmac.is_some());

        // Untyped legacy key (loaded as AES256) + ChaCha20 legacy JSON envelope (§11.8 row 2).
        let ct = br#"{"aead":"ChaCha20Poly1305","iv":"s3fSZ6vk5m+DfQA8yZWeUg==","nonce":"8/kHMnCMs3h9NZ2a","bytes":"cw22HjLq/4cx8507SW4hhSrYbDiMuRao4b5+GE+XfbE="}"#;
        let mut v = KeyVersion {
            key: z(KeyType::Aes256),
            hmac: None,
            created_at: None,
            created_by: None,
            legacy_untyped: false,
        };
        assert!(matches!(v.decrypt(ct, b""), Err(CryptoError::NotAuthentic)));
        v.legacy_untyped = true;
        assert_eq!(v.decrypt(ct, b"").unwrap().expose(), &[0u8; 16]);
        // ... but never for raw ciphertexts: those use the stored type.
        let raw = z(KeyType::ChaCha20).encrypt(b"abc", b"", &rng).unwrap();
        assert!(matches!(
            v.decrypt(&raw, b""),
            Err(CryptoError::NotAuthentic)
        ));
        // AES envelopes still work for the untyped key.
        let aes = B64.decode("lbFBRVMyNTYtR0NNX1NIQTI1NtkgNjY2ODdhYWRmODYyYmQ3NzZjOGZjMThiOGU5ZjhlMjDEEExv7LAd4oz0SaHZrX5LBufEDEKME1ow1CDfUFrqv8QgJuy7Sw+jVqz99TK1HV851LT3K4mwwDv46TB2ngWkAJQ=").unwrap();
        assert_eq!(v.decrypt(&aes, b"").unwrap().expose(), &[0u8; 16]);
    }

    #[test]
    fn debug_and_errors_redact() {
        let k = key(KeyType::Aes256);
        let s = format!("{k:?}");
        assert!(s.contains("<redacted>") && s.contains("Aes256"), "{s}");
        assert!(!s.contains("0, 1, 2"));
        let h = HmacKey::new(Secret::new(seq(0x60)));
        assert_eq!(format!("{h:?}"), "HmacKey { key: <redacted> }");
        assert_eq!(
            CryptoError::NotAuthentic.to_string(),
            "decryption failed: ciphertext is not authentic"
        );
    }
}
