#![no_main]
//! Request bodies of the crypto routes: the lenient JSON reader and base64 decoding.
//! Small bodies are read by the crate's scalar reader (Go's rules), large ones by simd-json:
//! wherever both accept a body they must give the same members. (simd-json accepts a few
//! bodies Go refuses, e.g. a NUL byte right after `null`; the scalar reader refuses them.)
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parser = kes::api::json::JsonParser::default();
    let mut body = data.to_vec();
    let mut simd_body = data.to_vec();
    let names = ["ciphertext", "context"];
    let used = parser
        .string_members(&mut body, names)
        .map(|v| v.map(|s| s.map(str::to_owned)));
    let simd = parser
        .simd_string_members(&mut simd_body, names)
        .map(|v| v.map(|s| s.map(str::to_owned)));
    if let (Ok(a), Ok(b)) = (&used, &simd) {
        assert_eq!(a, b, "the readers disagree on {:?}", String::from_utf8_lossy(data));
    }
    if let Ok([a, b]) = used {
        let mut out = Vec::new();
        for v in [a, b].into_iter().flatten() {
            let _ = kes::api::json::decode_base64_into(&v, &mut out);
        }
    }
});
