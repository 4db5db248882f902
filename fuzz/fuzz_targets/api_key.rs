#![no_main]
//! API key parsing never panics; parsed keys round-trip.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(key) = kes::auth::apikey::ApiKey::parse(text) {
        let again = kes::auth::apikey::ApiKey::parse(std::str::from_utf8(key.to_string_secret().expose()).unwrap()).unwrap();
        assert_eq!(again.identity(), key.identity());
    }
});
