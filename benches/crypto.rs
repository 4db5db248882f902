//! Crypto hot paths: DEK generation (seal 32 bytes with a 35-byte context) and decryption for
//! both key types, envelope recognition for each format, key-record decoding.
//!
//! Run with `cargo bench --bench crypto`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kes::crypto::{decode_record, encode_record, parse_envelope, KeyType, KeyVersion, SecretKey};
use kes::secret::Secret;
use kes::time::Timestamp;
use ring::rand::{SecureRandom, SystemRandom};

const CONTEXT: &[u8] = br#"{"my-bucket":"my-bucket/my-object"}"#;

fn key(kind: KeyType) -> SecretKey {
    SecretKey::new(kind, Secret::new(std::array::from_fn(|i| i as u8)))
}

fn dek(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let mut group = c.benchmark_group("dek");
    group.throughput(Throughput::Elements(1));
    for kind in [KeyType::Aes256, KeyType::ChaCha20] {
        let k = key(kind);
        let name = kind.as_str();
        // Full generate path: 32 random plaintext bytes + 28 random bytes + seal.
        group.bench_function(format!("generate/{name}"), |b| {
            b.iter(|| {
                let mut plaintext = [0u8; 32];
                rng.fill(&mut plaintext).unwrap();
                black_box(k.encrypt(&plaintext, black_box(CONTEXT), &rng).unwrap())
            })
        });
        // Seal only, fixed randomness, reusing the output buffer.
        let random = [7u8; 28];
        let mut out = Vec::with_capacity(76);
        group.bench_function(format!("seal_into/{name}"), |b| {
            b.iter(|| {
                out.clear();
                k.seal_into(black_box(&[1u8; 32]), black_box(CONTEXT), &random, &mut out)
                    .unwrap();
                black_box(out.len())
            })
        });
        let ct = k.encrypt(&[1u8; 32], CONTEXT, &rng).unwrap();
        group.bench_function(format!("decrypt/{name}"), |b| {
            b.iter(|| black_box(k.decrypt(black_box(&ct), black_box(CONTEXT)).unwrap()))
        });
    }
    group.finish();
}

fn envelopes(c: &mut Criterion) {
    let k = key(KeyType::Aes256);
    let mut raw = Vec::new();
    let random: [u8; 28] = std::array::from_fn(|i| 0x40 + i as u8);
    k.seal_into(&[0x20; 32], CONTEXT, &random, &mut raw)
        .unwrap();

    let mut msgpack = vec![0x95, 0xb1];
    msgpack.extend_from_slice(b"AES256-GCM_SHA256");
    msgpack.extend_from_slice(&[0xd9, 0x20]);
    msgpack.extend_from_slice(k.legacy_id().as_bytes());
    msgpack.extend_from_slice(&[0xc4, 0x10]);
    msgpack.extend_from_slice(&random[..16]);
    msgpack.extend_from_slice(&[0xc4, 0x0c]);
    msgpack.extend_from_slice(&random[16..]);
    msgpack.extend_from_slice(&[0xc4, 0x30]);
    msgpack.extend_from_slice(&raw[..48]);

    let json = br#"{"aead":"AES-256-GCM-HMAC-SHA-256","id":"630dcd2966c4336691125448bbb25b4f","iv":"QEFCQ0RFRkdISUpLTE1OTw==","nonce":"UFFSU1RVVldYWVpb","bytes":"qcDsbRpq8F27ep5YDx+5pmCKddecT4ukXN38vFpAUijk2rKKTjxV2UH8MCYJ4WGs"}"#;

    let mut group = c.benchmark_group("envelope");
    for (name, input) in [
        ("raw", &raw[..]),
        ("msgpack", &msgpack[..]),
        ("json", &json[..]),
    ] {
        group.bench_function(format!("parse/{name}"), |b| {
            b.iter(|| black_box(parse_envelope(black_box(input))))
        });
        group.bench_function(format!("decrypt/{name}"), |b| {
            b.iter(|| black_box(k.decrypt(black_box(input), CONTEXT).unwrap()))
        });
    }
    group.finish();
}

fn records(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let identity = "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22";
    let v = KeyVersion::generate(KeyType::Aes256, identity, Timestamp::now(), &rng).unwrap();
    let protobuf = encode_record(&v);
    let legacy = br#"{"bytes":"9ew6BCae3+13sniOUwttEJ62amg98YXc0OW0WBhNiCY=","algorithm":"XCHACHA20-POLY1305","created_at":"2009-11-10T23:00:00Z","created_by":"189d9de5331e3ee8abe9e4bd40d474ad621d79ccf83a711f6ac68050eb15a52a"}"#;

    let mut group = c.benchmark_group("record");
    group.bench_function("decode/protobuf", |b| {
        b.iter(|| black_box(decode_record(black_box(protobuf.expose())).unwrap()))
    });
    group.bench_function("decode/legacy_json", |b| {
        b.iter(|| black_box(decode_record(black_box(legacy)).unwrap()))
    });
    group.bench_function("encode/protobuf", |b| {
        b.iter(|| black_box(encode_record(black_box(&v))))
    });
    group.finish();
}

criterion_group!(benches, dek, envelopes, records);
criterion_main!(benches);
