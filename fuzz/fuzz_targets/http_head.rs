#![no_main]
//! The request-head parser must never panic, and must agree with httparse on what a complete
//! head is (where both accept the input).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let opts = kes::http::ParseOptions { limits: kes::http::Limits::default(), cert_header: Some("X-Tls-Client-Cert") };
    let mut head = kes::http::RequestHead::default();
    if let Ok(Some(n)) = kes::http::parse_head(data, &opts, &mut head) {
        assert!(n <= data.len());
        let mut headers = [httparse_shadow::EMPTY_HEADER; 64];
        let mut req = httparse_shadow::Request::new(&mut headers);
        if let Ok(httparse_shadow::Status::Complete(m)) = req.parse(data) {
            assert_eq!(m, n, "head length differs from httparse");
        }
    }
});

use httparse as httparse_shadow;
