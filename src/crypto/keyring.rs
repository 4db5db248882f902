//! Key versions: a named key is a ring of versions (number, material, type, created at/by).
//! Generate and encrypt use the latest; decrypt finds the version a ciphertext was made with.
//!
//! Storage, one record per key:
//! * A key that was never rotated is version 1, stored exactly as upstream KES stores a key
//!   (§10 of crypto-formats.md: base64 protobuf `KeyVersion`, or legacy JSON). Upstream nodes
//!   and ours keep sharing such records.
//! * A rotated key is stored as [`KEYRING_PREFIX`] followed by the standard base64 of the
//!   protobuf `KeyRing { repeated Entry versions = 1; uint32 next = 2; }` with
//!   `Entry { uint32 version = 1; KeyVersion key = 2; }` (`KeyVersion` as in §10.1). `next` is
//!   the number the next version gets: numbers are never reused, even after a version was
//!   removed, so an old ciphertext never meets a different key of the same number.
//!
//! Ciphertexts: version 1 writes the upstream format (§3), byte-compatible. A version `v ≥ 2`
//! appends a trailer of [`VERSION_TRAILER_BYTES`]: `v` as u32 big-endian and
//! [`VERSION_MAGIC`]. Decrypt reads the trailer; should a version-1 ciphertext end in the
//! magic by chance (2⁻³² of them), it fails to open under the trailer's version and is then
//! opened as version 1, so every ciphertext still decrypts.

use std::fmt;

use super::cipher::{CryptoError, KeyType, KeyVersion};
use super::record::{
    self, decode_protobuf, encode_base64, encode_protobuf, put_varint, Pb, RecordError,
    KEYRING_PREFIX, WIRE_LEN, WIRE_VARINT,
};
use crate::json::decode_base64_into;
use crate::secret::SecretVec;

/// The most versions one key holds at a time. A ring record grows by about 230 bytes per
/// version; 100 versions stay well under the smallest secret a supported keystore holds
/// (Azure Key Vault: 25 KiB).
pub const KEY_VERSIONS_MAX: usize = 100;

/// The last 4 bytes of a ciphertext made with a version ≥ 2.
pub const VERSION_MAGIC: [u8; 4] = *b"kesV";

/// Bytes a version ≥ 2 adds to a ciphertext: the version (u32 BE) and [`VERSION_MAGIC`].
pub const VERSION_TRAILER_BYTES: usize = 8;

/// Why a ring cannot change as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingError {
    /// Adding a version would exceed [`KEY_VERSIONS_MAX`].
    TooManyVersions,
    /// The ring has no version with that number.
    NoSuchVersion(u32),
    /// Version numbers are exhausted (u32).
    NumbersExhausted,
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RingError::TooManyVersions => write!(
                f,
                "key has {KEY_VERSIONS_MAX} versions, the most a key holds: remove old \
                 versions first"
            ),
            RingError::NoSuchVersion(v) => write!(f, "key version {v} does not exist"),
            RingError::NumbersExhausted => f.write_str("key version numbers are exhausted"),
        }
    }
}

/// Why a ciphertext did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// The ciphertext names a version the ring does not hold (removed, or newer than the
    /// ring: a cached ring that is out of date).
    UnknownVersion(u32),
    /// No version the ciphertext may belong to opens it.
    NotAuthentic,
    /// Anything else the cipher reported.
    Failed,
}

/// The versions of one key, ascending by number; never empty.
#[derive(Clone, Debug)]
pub struct KeyRing {
    versions: Vec<(u32, KeyVersion)>,
    next: u32,
}

impl KeyRing {
    /// A key that was never rotated: `key` is version 1.
    pub fn single(key: KeyVersion) -> KeyRing {
        KeyRing {
            versions: vec![(1, key)],
            next: 2,
        }
    }

    /// True if this ring is stored in upstream's single-key format (only version 1 has ever
    /// existed).
    pub fn is_single(&self) -> bool {
        self.next == 2 && self.versions.len() == 1 && self.versions[0].0 == 1
    }

    /// The newest version and its number.
    pub fn latest(&self) -> (u32, &KeyVersion) {
        // Never empty: every constructor and `remove` keep one version.
        let (n, k) = &self.versions[self.versions.len() - 1];
        (*n, k)
    }

    /// Version `number`; 0 means the latest.
    pub fn version(&self, number: u32) -> Option<&KeyVersion> {
        if number == 0 {
            return Some(self.latest().1);
        }
        self.versions
            .binary_search_by_key(&number, |(n, _)| *n)
            .ok()
            .map(|i| &self.versions[i].1)
    }

    /// Every version, oldest first.
    pub fn versions(&self) -> impl ExactSizeIterator<Item = (u32, &KeyVersion)> {
        self.versions.iter().map(|(n, k)| (*n, k))
    }

    /// The number the next added version gets.
    pub fn next_number(&self) -> u32 {
        self.next
    }

    /// Adds `key` as the newest version; returns its number.
    pub fn add(&mut self, key: KeyVersion) -> Result<u32, RingError> {
        if self.versions.len() >= KEY_VERSIONS_MAX {
            return Err(RingError::TooManyVersions);
        }
        let number = self.next;
        self.next = number.checked_add(1).ok_or(RingError::NumbersExhausted)?;
        self.versions.push((number, key));
        Ok(number)
    }

    /// Removes version `number`. Returns `Ok(false)` without a change when it is the only
    /// version left: the caller deletes the whole key instead.
    pub fn remove(&mut self, number: u32) -> Result<bool, RingError> {
        let i = self
            .versions
            .binary_search_by_key(&number, |(n, _)| *n)
            .map_err(|_| RingError::NoSuchVersion(number))?;
        if self.versions.len() == 1 {
            return Ok(false);
        }
        self.versions.remove(i);
        Ok(true)
    }

    /// Loads a stored value: a ring record, or a single-key record (version 1).
    pub fn decode(stored: &[u8]) -> Result<KeyRing, RecordError> {
        match stored.strip_prefix(KEYRING_PREFIX.as_bytes()) {
            Some(text) => decode_ring(text),
            None => record::decode_record(stored).map(KeyRing::single),
        }
    }

    /// The stored value: upstream's single-key record while the key was never rotated,
    /// else a ring record.
    pub fn encode(&self) -> SecretVec {
        if self.is_single() {
            return record::encode_record(&self.versions[0].1);
        }
        let mut proto = SecretVec::with_capacity(self.versions.len() * 180 + 8);
        let mut len_buf = [0u8; 10];
        for (number, key) in &self.versions {
            let inner = encode_protobuf(key);
            let mut entry = SecretVec::with_capacity(inner.len() + 16);
            let e = entry.as_mut_vec();
            e.push(0x08);
            let n = put_varint(&mut len_buf, u64::from(*number));
            e.extend_from_slice(&len_buf[..n]);
            e.push(0x12);
            let n = put_varint(&mut len_buf, inner.len() as u64);
            e.extend_from_slice(&len_buf[..n]);
            e.extend_from_slice(inner.expose());
            let p = proto.as_mut_vec();
            p.push(0x0a);
            let n = put_varint(&mut len_buf, entry.len() as u64);
            p.extend_from_slice(&len_buf[..n]);
            p.extend_from_slice(entry.expose());
        }
        let p = proto.as_mut_vec();
        p.push(0x10);
        let n = put_varint(&mut len_buf, u64::from(self.next));
        p.extend_from_slice(&len_buf[..n]);
        let prefix = KEYRING_PREFIX.as_bytes();
        let mut out = encode_base64(proto.expose(), prefix.len());
        if !out.is_empty() {
            out.as_mut_vec()[..prefix.len()].copy_from_slice(prefix);
        }
        out
    }

    /// Seals `plaintext` with version `number` (its trailer added for `number ≥ 2`); see
    /// [`super::SecretKey::seal_into`].
    pub fn seal_into(
        &self,
        number: u32,
        plaintext: &[u8],
        aad: &[u8],
        random: &[u8; 28],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        let number = if number == 0 { self.latest().0 } else { number };
        let key = self.version(number).ok_or(CryptoError::Internal)?;
        key.key.seal_into(plaintext, aad, random, out)?;
        if number >= 2 {
            out.extend_from_slice(&number.to_be_bytes());
            out.extend_from_slice(&VERSION_MAGIC);
        }
        Ok(())
    }

    /// Opens a ciphertext of any version into `out` (cleared first, wiped on failure);
    /// returns the version that opened it.
    pub fn open_into(
        &self,
        ciphertext: &[u8],
        aad: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<u32, OpenError> {
        let claimed = claimed_version(ciphertext);
        if let Some(v) = claimed {
            match self.version(v) {
                Some(key) => {
                    let body = &ciphertext[..ciphertext.len() - VERSION_TRAILER_BYTES];
                    match key.decrypt_into(body, aad, out) {
                        Ok(()) => return Ok(v),
                        Err(CryptoError::NotAuthentic) => {}
                        Err(_) => return Err(OpenError::Failed),
                    }
                }
                None if self.version(1).is_none() => return Err(OpenError::UnknownVersion(v)),
                None => {}
            }
        }
        // Version 1: the upstream formats (raw and the legacy envelopes).
        let Some(key) = self
            .versions
            .first()
            .filter(|(n, _)| *n == 1)
            .map(|(_, k)| k)
        else {
            return Err(match claimed {
                Some(v) => OpenError::UnknownVersion(v),
                None => OpenError::UnknownVersion(1),
            });
        };
        match key.decrypt_into(ciphertext, aad, out) {
            Ok(()) => Ok(1),
            Err(CryptoError::NotAuthentic) => match claimed {
                Some(v) if self.version(v).is_none() => Err(OpenError::UnknownVersion(v)),
                _ => Err(OpenError::NotAuthentic),
            },
            Err(_) => Err(OpenError::Failed),
        }
    }

    /// The key type new versions get: the latest version's.
    pub fn kind(&self) -> KeyType {
        self.latest().1.key.kind()
    }
}

/// The version a ciphertext's trailer names, if it has one naming a version ≥ 2.
pub fn claimed_version(ciphertext: &[u8]) -> Option<u32> {
    // A trailer follows at least a tag and the IV and nonce (44 bytes).
    if ciphertext.len() < 44 + VERSION_TRAILER_BYTES {
        return None;
    }
    let (rest, magic) = ciphertext.split_at(ciphertext.len() - 4);
    if magic != VERSION_MAGIC {
        return None;
    }
    let v = u32::from_be_bytes(rest[rest.len() - 4..].try_into().ok()?);
    (v >= 2).then_some(v)
}

fn decode_ring(text: &[u8]) -> Result<KeyRing, RecordError> {
    let mut proto = SecretVec::default();
    if !decode_base64_into(text, proto.as_mut_vec()) {
        return Err(RecordError::NotBase64);
    }
    let mut versions: Vec<(u32, KeyVersion)> = Vec::new();
    let mut next = 0u32;
    let mut pb = Pb::new(proto.expose());
    while !pb.done() {
        match pb.tag()? {
            (1, WIRE_LEN) => {
                let entry = pb.bytes()?;
                let mut number = 0u32;
                let mut key = None;
                let mut e = Pb::new(entry);
                while !e.done() {
                    match e.tag()? {
                        (1, WIRE_VARINT) => {
                            number = u32::try_from(e.varint()?)
                                .map_err(|_| RecordError::Protobuf("key version out of range"))?
                        }
                        (2, WIRE_LEN) => key = Some(decode_protobuf(e.bytes()?)?),
                        (field, wire) => e.skip(field, wire)?,
                    }
                }
                let key = key.ok_or(RecordError::Protobuf("key ring entry without a key"))?;
                if number == 0 {
                    return Err(RecordError::Protobuf("key ring entry without a version"));
                }
                versions.push((number, key));
            }
            (2, WIRE_VARINT) => {
                next = u32::try_from(pb.varint()?)
                    .map_err(|_| RecordError::Protobuf("next key version out of range"))?
            }
            (field, wire) => pb.skip(field, wire)?,
        }
    }
    versions.sort_by_key(|(n, _)| *n);
    if versions.is_empty() {
        return Err(RecordError::Protobuf("key ring without versions"));
    }
    if versions.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(RecordError::Protobuf("key ring holds a version twice"));
    }
    let newest = versions[versions.len() - 1].0;
    if next <= newest {
        return Err(RecordError::Protobuf(
            "key ring's next version is not after its newest",
        ));
    }
    Ok(KeyRing { versions, next })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyVersion;
    use crate::time::Timestamp;
    use ring::rand::SystemRandom;

    fn version(kind: KeyType) -> KeyVersion {
        let now = Timestamp::from_unix(1_700_000_000, 5);
        KeyVersion::generate(kind, "ab".repeat(32).as_str(), now, &SystemRandom::new()).unwrap()
    }

    fn seal(ring: &KeyRing, v: u32, pt: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        ring.seal_into(v, pt, aad, &[7u8; 28], &mut out).unwrap();
        out
    }

    #[test]
    fn an_unrotated_key_keeps_upstreams_record_and_ciphertexts() {
        let key = version(KeyType::Aes256);
        let ring = KeyRing::single(key.clone());
        assert!(ring.is_single());
        assert_eq!(ring.encode().expose(), record::encode_record(&key).expose());
        let ct = seal(&ring, 0, b"hello", b"ctx");
        let mut upstream = Vec::new();
        key.key
            .seal_into(b"hello", b"ctx", &[7u8; 28], &mut upstream)
            .unwrap();
        assert_eq!(ct, upstream, "version 1 ciphertexts are upstream's format");
        let mut out = Vec::new();
        assert_eq!(ring.open_into(&ct, b"ctx", &mut out), Ok(1));
        assert_eq!(out, b"hello");
    }

    #[test]
    fn a_rotated_ring_round_trips_and_opens_every_version() {
        let mut ring = KeyRing::single(version(KeyType::Aes256));
        assert_eq!(ring.add(version(KeyType::ChaCha20)), Ok(2));
        assert_eq!(ring.add(version(KeyType::Aes256)), Ok(3));
        let stored = ring.encode();
        assert!(stored.expose().starts_with(KEYRING_PREFIX.as_bytes()));
        assert!(
            record::decode_record(stored.expose()).is_err(),
            "a single-key reader refuses a ring"
        );
        let back = KeyRing::decode(stored.expose()).unwrap();
        assert_eq!(back.latest().0, 3);
        assert_eq!(back.next_number(), 4);
        assert_eq!(back.version(2).unwrap().key.kind(), KeyType::ChaCha20);
        for v in 1..=3 {
            let ct = seal(&ring, v, b"secret", b"aad");
            assert_eq!(ct.len(), 6 + 44 + if v >= 2 { 8 } else { 0 });
            assert_eq!(claimed_version(&ct), (v >= 2).then_some(v));
            let mut out = Vec::new();
            assert_eq!(back.open_into(&ct, b"aad", &mut out), Ok(v), "version {v}");
            assert_eq!(out, b"secret");
            assert_eq!(
                back.open_into(&ct, b"other", &mut out),
                Err(OpenError::NotAuthentic)
            );
        }
        // Version 0 is the latest.
        let ct = seal(&ring, 0, b"x", b"");
        assert_eq!(
            claimed_version(&ct),
            Some(3),
            "version 0 seals with the latest"
        );
    }

    #[test]
    fn removed_versions_are_not_reused_and_their_ciphertexts_say_so() {
        let mut ring = KeyRing::single(version(KeyType::Aes256));
        ring.add(version(KeyType::Aes256)).unwrap();
        let ct2 = seal(&ring, 2, b"two", b"");
        assert_eq!(ring.remove(2), Ok(true));
        assert_eq!(ring.remove(2), Err(RingError::NoSuchVersion(2)));
        assert_eq!(ring.add(version(KeyType::Aes256)), Ok(3), "2 is not reused");
        let back = KeyRing::decode(ring.encode().expose()).unwrap();
        let mut out = Vec::new();
        assert_eq!(
            back.open_into(&ct2, b"", &mut out),
            Err(OpenError::UnknownVersion(2))
        );
        assert!(
            !back.is_single(),
            "a ring never goes back to the single format"
        );
        assert_eq!(ring.remove(1), Ok(true));
        assert_eq!(ring.remove(3), Ok(false), "the last version is not removed");
        assert_eq!(ring.latest().0, 3);
    }

    #[test]
    fn a_ring_holds_at_most_the_limit() {
        let mut ring = KeyRing::single(version(KeyType::Aes256));
        for _ in 1..KEY_VERSIONS_MAX {
            ring.add(version(KeyType::Aes256)).unwrap();
        }
        assert_eq!(
            ring.add(version(KeyType::Aes256)),
            Err(RingError::TooManyVersions)
        );
        let stored = ring.encode();
        assert!(
            stored.len() < 25 * 1024,
            "{} bytes do not fit an Azure secret",
            stored.len()
        );
        assert_eq!(
            KeyRing::decode(stored.expose()).unwrap().versions().len(),
            KEY_VERSIONS_MAX
        );
    }

    #[test]
    fn a_version_one_ciphertext_ending_in_the_magic_still_opens() {
        let mut ring = KeyRing::single(version(KeyType::Aes256));
        ring.add(version(KeyType::Aes256)).unwrap();
        // Find a version-1 ciphertext whose last bytes we force to look like a trailer by
        // choosing a plaintext: the trailer sits in the nonce, which we pick.
        let mut random = [0u8; 28];
        random[20..24].copy_from_slice(&2u32.to_be_bytes());
        random[24..28].copy_from_slice(&VERSION_MAGIC);
        let mut ct = Vec::new();
        ring.seal_into(1, b"an old secret", b"", &random, &mut ct)
            .unwrap();
        assert_eq!(claimed_version(&ct), Some(2));
        let mut out = Vec::new();
        assert_eq!(ring.open_into(&ct, b"", &mut out), Ok(1));
        assert_eq!(out, b"an old secret");
    }

    #[test]
    fn broken_rings_are_refused() {
        let bad = |proto: &[u8]| {
            let mut v = KEYRING_PREFIX.as_bytes().to_vec();
            v.extend_from_slice(base64::Engine::encode(&crate::json::GO_STD, proto).as_bytes());
            KeyRing::decode(&v).err()
        };
        assert!(bad(&[]).is_some(), "no versions");
        assert!(bad(&[0x10, 0x05]).is_some(), "no versions, only next");
        let field = |out: &mut Vec<u8>, tag: u8, bytes: &[u8]| {
            let mut len = [0u8; 10];
            let n = put_varint(&mut len, bytes.len() as u64);
            out.push(tag);
            out.extend_from_slice(&len[..n]);
            out.extend_from_slice(bytes);
        };
        let key = encode_protobuf(&version(KeyType::Aes256));
        let mut entry = vec![0x08, 0x03];
        field(&mut entry, 0x12, key.expose());
        let mut ring = Vec::new();
        field(&mut ring, 0x0a, &entry);
        let mut ok = ring.clone();
        ok.extend_from_slice(&[0x10, 0x04]);
        assert!(bad(&ok).is_none(), "a valid ring");
        let mut stale_next = ring.clone();
        stale_next.extend_from_slice(&[0x10, 0x03]);
        assert!(bad(&stale_next).is_some(), "next not after the newest");
        let mut twice = ring.clone();
        twice.extend_from_slice(&ring);
        twice.extend_from_slice(&[0x10, 0x09]);
        assert!(bad(&twice).is_some(), "a version twice");
        let mut v = KEYRING_PREFIX.as_bytes().to_vec();
        v.extend_from_slice(b"!!!");
        assert_eq!(KeyRing::decode(&v).err(), Some(RecordError::NotBase64));
    }
}
