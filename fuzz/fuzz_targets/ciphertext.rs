#![no_main]
//! Decryption of arbitrary ciphertexts (raw / MessagePack / JSON envelopes, and the version
//! trailer of a rotated key's) never panics.
use libfuzzer_sys::fuzz_target;
use kes::crypto::{KeyRing, KeyType, KeyVersion, SecretKey};
use kes::secret::Secret;

fuzz_target!(|data: &[u8]| {
    for kind in [KeyType::Aes256, KeyType::ChaCha20] {
        let key = SecretKey::new(kind, Secret::new([7u8; 32]));
        let _ = key.decrypt(data, b"");
    }
    let _ = kes::crypto::envelope::parse_envelope(data);
    let version = |byte: u8| KeyVersion {
        key: SecretKey::new(KeyType::Aes256, Secret::new([byte; 32])),
        hmac: None,
        created_at: None,
        created_by: None,
        legacy_untyped: false,
    };
    let mut ring = KeyRing::single(version(1));
    let _ = ring.add(version(2));
    let mut out = Vec::new();
    let _ = ring.open_into(data, b"", &mut out);
    let _ = kes::crypto::keyring::claimed_version(data);
});
