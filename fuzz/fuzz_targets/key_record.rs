#![no_main]
//! Stored key records (base64 protobuf or legacy JSON) never panic the loader, and what
//! decodes re-encodes to a record that decodes to the same key.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = kes::crypto::record::decode_record(data) {
        let encoded = kes::crypto::record::encode_record(&key);
        let again = kes::crypto::record::decode_record(encoded.expose()).expect("re-encoded record decodes");
        assert_eq!(again.key.expose(), key.key.expose());
        assert_eq!(again.key.kind(), key.key.kind());
    }
});
