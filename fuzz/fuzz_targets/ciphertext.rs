#![no_main]
//! Decryption of arbitrary ciphertexts (raw / MessagePack / JSON envelopes) never panics and
//! never authenticates garbage.
use libfuzzer_sys::fuzz_target;
use kes::crypto::{KeyType, SecretKey};
use kes::secret::Secret;

fuzz_target!(|data: &[u8]| {
    for kind in [KeyType::Aes256, KeyType::ChaCha20] {
        let key = SecretKey::new(kind, Secret::new([7u8; 32]));
        let _ = key.decrypt(data, b"");
    }
    let _ = kes::crypto::envelope::parse_envelope(data);
});
