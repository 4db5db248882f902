//! HTTP/2 hot path: HPACK-decoding a kms-go request head and encoding + framing a response
//! head, both without allocation.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use kes::http2::frame::{begin_headers, finish_headers, FrameHeader};
use kes::http2::{Decoder, Encoder, DEFAULT_HEADER_TABLE_BYTES};

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The first request on a connection as Go's HPACK encoder writes it (literals with
/// incremental indexing naming static entries, Huffman-coded values; `:method POST` and
/// `:scheme https` indexed): `:authority kes:7373`, `:method POST`,
/// `:path /v1/key/generate/my-key`, `:scheme https`, `content-type application/json`,
/// `user-agent Go-http-client/2.0`, `accept-encoding gzip` (encoded by Python's hpack,
/// which makes the same choices).
const KMS_GO_FIRST: &str = "4186ea545c75975983449163b858ea5f4c4c5a8b60d25629f4b752fa875f8b1d75d0620d263d4c7441ea7a8dc475a74a6b589418b525812e0f50839bd9ab";
/// The next request on that connection (`:path /v1/key/decrypt/my-key`): the repeated fields
/// are one-octet references to the dynamic table.
const KMS_GO_NEXT: &str = "c283449163b858ea5f4c485259eab4b14fa5ba97d787c1c0bf";

fn bench(c: &mut Criterion) {
    let first = unhex(KMS_GO_FIRST);
    let next = unhex(KMS_GO_NEXT);
    let count_fields = |d: &mut Decoder, block: &[u8]| {
        let mut fields = 0u32;
        d.decode(block, |name, value| {
            fields += (name.len() + value.len()) as u32;
            Ok::<(), ()>(())
        })
        .unwrap();
        fields
    };
    // A new connection's decoder (its allocation happens in setup, not timed).
    let fresh = || Decoder::new(DEFAULT_HEADER_TABLE_BYTES, 16 * 1024);
    c.bench_function("h2/hpack_decode_kms_go_first_request", |b| {
        b.iter_batched_ref(
            fresh,
            |d| count_fields(d, black_box(&first)),
            BatchSize::SmallInput,
        )
    });
    let mut warmed = Decoder::new(DEFAULT_HEADER_TABLE_BYTES, 16 * 1024);
    count_fields(&mut warmed, &first);
    c.bench_function("h2/hpack_decode_kms_go_next_request", |b| {
        b.iter_batched_ref(
            || warmed.clone(),
            |d| count_fields(d, black_box(&next)),
            BatchSize::SmallInput,
        )
    });

    let encoder = Encoder::new();
    let mut out = Vec::with_capacity(256);
    c.bench_function("h2/encode_response_head_200_json", |b| {
        b.iter(|| {
            out.clear();
            let mark = begin_headers(&mut out);
            encoder.encode_status(&mut out, black_box(200));
            encoder.encode_field(&mut out, b"content-type", black_box(b"application/json"));
            encoder.encode_field(&mut out, b"content-length", black_box(b"78"));
            finish_headers(&mut out, mark, 1, false, 16_384);
            out.len()
        })
    });

    let frame = [0, 0, 0x4e, 0, 1, 0, 0, 0, 1];
    c.bench_function("h2/frame_header_parse", |b| {
        b.iter(|| FrameHeader::parse(black_box(&frame)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
