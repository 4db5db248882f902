#![no_main]
//! The config loader never panics on any text.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = kes::config::parse(text, &|name| (name == "SET").then(|| "value".to_string()));
});
