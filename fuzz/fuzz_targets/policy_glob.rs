#![no_main]
//! Policy pattern matching (current prefix and legacy glob) never panics.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cut = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (pattern, path) = data.split_at(cut);
    let _ = kes::auth::policy::glob_match(pattern, path);
    if let (Ok(p), Ok(q)) = (std::str::from_utf8(pattern), std::str::from_utf8(path)) {
        let _ = kes::auth::policy::prefix_match(p, q);
    }
});
