#![no_main]
//! Stored key records (base64 protobuf, legacy JSON, or a key ring) never panic the loader,
//! and what decodes re-encodes to a record that decodes to the same key. An input starting
//! with `R` is the text of a key ring record after its `kes:keyring:v1:` prefix.
use kes::crypto::record::KEYRING_PREFIX;
use kes::crypto::KeyRing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(ring_text) = data.strip_prefix(b"R") {
        let mut stored = KEYRING_PREFIX.as_bytes().to_vec();
        stored.extend_from_slice(ring_text);
        if let Ok(ring) = KeyRing::decode(&stored) {
            let encoded = ring.encode();
            let again = KeyRing::decode(encoded.expose()).expect("re-encoded ring decodes");
            assert_eq!(again.next_number(), ring.next_number());
            assert_eq!(again.versions().len(), ring.versions().len());
            for ((n, k), (m, l)) in ring.versions().zip(again.versions()) {
                assert_eq!(n, m);
                assert_eq!(k.key.expose(), l.key.expose());
                assert_eq!(k.key.kind(), l.key.kind());
            }
        }
        return;
    }
    if let Ok(key) = kes::crypto::record::decode_record(data) {
        let encoded = kes::crypto::record::encode_record(&key);
        let again = kes::crypto::record::decode_record(encoded.expose()).expect("re-encoded record decodes");
        assert_eq!(again.key.expose(), key.key.expose());
        assert_eq!(again.key.kind(), key.key.kind());
        // A single record is version 1 of a ring, and encodes as itself.
        let ring = KeyRing::decode(data).expect("a record is a ring of one");
        assert!(ring.is_single());
        assert_eq!(ring.encode().expose(), encoded.expose());
    }
});
