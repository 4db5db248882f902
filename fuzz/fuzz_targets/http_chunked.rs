#![no_main]
//! The chunked decoder must never panic, never exceed its limit, and give the same body
//! however the input is split.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else { return };
    let limit = 4096;
    let mut whole = kes::http::ChunkedDecoder::default();
    let mut body_a = Vec::new();
    let a = whole.decode(input, &mut body_a, limit);
    assert!(body_a.len() <= limit);

    let cut = (split as usize).min(input.len());
    let mut parts = kes::http::ChunkedDecoder::default();
    let mut body_b = Vec::new();
    let b = match parts.decode(&input[..cut], &mut body_b, limit) {
        Ok((used, false)) if used == cut => parts.decode(&input[cut..], &mut body_b, limit).map(|(u, d)| (u + used, d)),
        other => other,
    };
    if let (Ok((ua, true)), Ok((ub, true))) = (a, b) {
        assert_eq!(ua, ub);
        assert_eq!(body_a, body_b);
    }
});
