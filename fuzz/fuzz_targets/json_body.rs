#![no_main]
//! Request bodies of the crypto routes: the lenient JSON reader and base64 decoding.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parser = kes::api::json::JsonParser::default();
    let mut body = data.to_vec();
    if let Ok([a, b]) = parser.string_members(&mut body, ["ciphertext", "context"]) {
        let mut out = Vec::new();
        for v in [a, b].into_iter().flatten() {
            let _ = kes::api::json::decode_base64_into(v, &mut out);
        }
    }
});
