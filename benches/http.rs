//! HTTP framing hot path: request-head parsing, chunked decoding, response writing, routing
//! and policy matching.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use kes::api::router::route_request;
use kes::auth::policy::{PatternSyntax, Policy, PolicySet};
use kes::auth::Identity;
use kes::http::{parse_head, write_response, ChunkedDecoder, Method, ParseOptions, RequestHead};

const KMS_GO_GENERATE: &[u8] = b"POST /v1/key/generate/minio-default-key HTTP/1.1\r\nHost: 127.0.0.1:7373\r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: 78\r\nContent-Type: application/json\r\nAccept-Encoding: gzip\r\n\r\n";

fn bench(c: &mut Criterion) {
    let opts = ParseOptions::default();
    let mut head = RequestHead::default();
    c.bench_function("http/parse_head_kms_go_generate", |b| {
        b.iter(|| parse_head(black_box(KMS_GO_GENERATE), &opts, &mut head).unwrap())
    });

    let mut pipelined = Vec::new();
    for _ in 0..3 {
        pipelined.extend_from_slice(KMS_GO_GENERATE);
    }
    c.bench_function("http/parse_3_pipelined_heads", |b| {
        b.iter(|| {
            let mut pos = 0;
            while pos < pipelined.len() {
                pos += parse_head(&pipelined[pos..], &opts, &mut head)
                    .unwrap()
                    .unwrap();
            }
        })
    });

    let mut chunked = Vec::new();
    for _ in 0..4 {
        chunked.extend_from_slice(b"100\r\n");
        chunked.extend(std::iter::repeat_n(b'a', 256));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let mut decoder = ChunkedDecoder::default();
    let mut out = Vec::with_capacity(2048);
    c.bench_function("http/chunked_decode_1KiB", |b| {
        b.iter(|| {
            decoder.reset();
            out.clear();
            decoder
                .decode(black_box(&chunked), &mut out, 1_000_000)
                .unwrap()
        })
    });

    let body = br#"{"plaintext":"ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=","ciphertext":"qcDsbRpq8F27ep5YDx+5pmCKddecT4ukXN38vFpAUijk2rKKTjxV2UH8MCYJ4WGsQEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaWw=="}"#;
    let mut response = Vec::with_capacity(512);
    c.bench_function("http/write_json_response", |b| {
        b.iter(|| {
            response.clear();
            write_response(
                &mut response,
                200,
                Some("application/json"),
                &[],
                black_box(body),
                false,
            );
        })
    });

    c.bench_function("api/route_generate", |b| {
        b.iter(|| {
            route_request(
                Method::Post,
                black_box("/v1/key/generate/minio-default-key"),
            )
        })
    });

    let user = Identity::from_hex(&"b".repeat(64)).unwrap();
    let policies = PolicySet::new(
        &"a".repeat(64),
        vec![Policy {
            name: "minio".into(),
            allow: [
                "/v1/key/create/minio-*",
                "/v1/key/generate/minio-*",
                "/v1/key/decrypt/minio-*",
                "/v1/key/list/*",
                "/v1/status",
            ]
            .map(String::from)
            .to_vec(),
            deny: vec!["/v1/key/delete/*".into()],
            identities: vec![user.to_hex()],
        }],
        PatternSyntax::Prefix,
    );
    c.bench_function("auth/policy_decide_allow", |b| {
        b.iter(|| {
            policies.decide(
                black_box(&user),
                black_box("/v1/key/decrypt/minio-default-key"),
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
