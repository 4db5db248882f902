//! HPACK tests: every RFC 7541 Appendix C example (fields and dynamic table after each
//! block), encoder round trips, and hostile blocks.

use super::*;
use crate::http2::DEFAULT_HEADER_TABLE_BYTES;

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn decode_all(d: &mut Decoder, block: &[u8]) -> Result<Fields, HpackError<()>> {
    let mut fields = Vec::new();
    d.decode(block, |n, v| {
        fields.push((n.to_vec(), v.to_vec()));
        Ok::<(), ()>(())
    })?;
    Ok(fields)
}

fn owned(fields: &[(&str, &str)]) -> Fields {
    fields
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

fn table_of(d: &Decoder) -> Vec<(String, String)> {
    (0..d.table().len())
        .map(|i| {
            let (n, v) = d.table().get(i).unwrap();
            (
                String::from_utf8_lossy(n).into(),
                String::from_utf8_lossy(v).into(),
            )
        })
        .collect()
}

/// Decodes `block`, checking the fields, the table (newest first) and its size.
fn check(
    d: &mut Decoder,
    block: &str,
    fields: &[(&str, &str)],
    table: &[(&str, &str)],
    size: usize,
) {
    assert_eq!(decode_all(d, &hex(block)).unwrap(), owned(fields));
    let want: Vec<(String, String)> = table
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    assert_eq!(table_of(d), want);
    assert_eq!(d.table().size_bytes(), size);
}

fn decoder() -> Decoder {
    Decoder::new(DEFAULT_HEADER_TABLE_BYTES, 64 * 1024)
}

#[test]
fn rfc_c2_field_representations() {
    let mut d = decoder();
    check(
        &mut d,
        "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
        &[("custom-key", "custom-header")],
        &[("custom-key", "custom-header")],
        55,
    );
    let mut d = decoder();
    check(
        &mut d,
        "040c 2f73 616d 706c 652f 7061 7468",
        &[(":path", "/sample/path")],
        &[],
        0,
    );
    let mut d = decoder();
    check(
        &mut d,
        "1008 7061 7373 776f 7264 0673 6563 7265 74",
        &[("password", "secret")],
        &[],
        0,
    );
    let mut d = decoder();
    check(&mut d, "82", &[(":method", "GET")], &[], 0);
}

const REQ1: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":path", "/"),
    (":authority", "www.example.com"),
];
const REQ2: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":path", "/"),
    (":authority", "www.example.com"),
    ("cache-control", "no-cache"),
];
const REQ3: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "https"),
    (":path", "/index.html"),
    (":authority", "www.example.com"),
    ("custom-key", "custom-value"),
];
const REQ_TABLE3: &[(&str, &str)] = &[
    ("custom-key", "custom-value"),
    ("cache-control", "no-cache"),
    (":authority", "www.example.com"),
];

fn check_requests(blocks: [&str; 3]) {
    let mut d = decoder();
    check(&mut d, blocks[0], REQ1, &REQ_TABLE3[2..], 57);
    check(&mut d, blocks[1], REQ2, &REQ_TABLE3[1..], 110);
    check(&mut d, blocks[2], REQ3, REQ_TABLE3, 164);
}

#[test]
fn rfc_c3_requests_without_huffman() {
    check_requests([
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ]);
}

#[test]
fn rfc_c4_requests_with_huffman() {
    check_requests([
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ]);
}

const DATE1: &str = "Mon, 21 Oct 2013 20:13:21 GMT";
const DATE2: &str = "Mon, 21 Oct 2013 20:13:22 GMT";
const LOC: &str = "https://www.example.com";
const COOKIE: &str = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";

fn check_responses(blocks: [&str; 3]) {
    // Appendix C.5/C.6 run with SETTINGS_HEADER_TABLE_SIZE 256.
    let mut d = Decoder::new(256, 64 * 1024);
    let r1 = [
        (":status", "302"),
        ("cache-control", "private"),
        ("date", DATE1),
        ("location", LOC),
    ];
    let t1 = [
        ("location", LOC),
        ("date", DATE1),
        ("cache-control", "private"),
        (":status", "302"),
    ];
    check(&mut d, blocks[0], &r1, &t1, 222);
    let r2 = [
        (":status", "307"),
        ("cache-control", "private"),
        ("date", DATE1),
        ("location", LOC),
    ];
    let t2 = [
        (":status", "307"),
        ("location", LOC),
        ("date", DATE1),
        ("cache-control", "private"),
    ];
    check(&mut d, blocks[1], &r2, &t2, 222);
    let r3 = [
        (":status", "200"),
        ("cache-control", "private"),
        ("date", DATE2),
        ("location", LOC),
        ("content-encoding", "gzip"),
        ("set-cookie", COOKIE),
    ];
    let t3 = [
        ("set-cookie", COOKIE),
        ("content-encoding", "gzip"),
        ("date", DATE2),
    ];
    check(&mut d, blocks[2], &r3, &t3, 215);
}

#[test]
fn rfc_c5_responses_without_huffman() {
    check_responses([
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 \
         2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 \
         6c65 2e63 6f6d",
        "4803 3330 37c1 c0bf",
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d \
         54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 \
         5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e \
         3d31",
    ]);
}

#[test]
fn rfc_c6_responses_with_huffman() {
    check_responses([
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 \
         2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        "4883 640e ffc1 c0bf",
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab \
         77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f \
         9587 3160 65c0 03ed 4ee5 b106 3d50 07",
    ]);
}

#[test]
fn integers_round_trip_at_prefix_boundaries() {
    for prefix in 1..=8u32 {
        for value in [
            0,
            1,
            30,
            31,
            126,
            127,
            128,
            254,
            255,
            256,
            1337,
            1 << 20,
            (1 << 28) - 1,
        ] {
            let mut out = Vec::new();
            encode_int(&mut out, 0, prefix, value);
            let mut pos = 0;
            assert_eq!(decode_int::<()>(&out, &mut pos, prefix), Ok(value));
            assert_eq!(pos, out.len());
        }
    }
    // RFC 7541 C.1.2: 1337 with a 5-bit prefix.
    let mut out = Vec::new();
    encode_int(&mut out, 0, 5, 1337);
    assert_eq!(out, [0x1f, 0x9a, 0x0a]);
}

#[test]
fn integers_reject_truncation_and_overlong_encodings() {
    let mut pos = 0;
    assert_eq!(
        decode_int::<()>(&[0x1f, 0x9a], &mut pos, 5),
        Err(HpackError::Truncated)
    );
    let mut pos = 0;
    assert_eq!(
        decode_int::<()>(&[], &mut pos, 5),
        Err(HpackError::Truncated)
    );
    // Five continuation octets, even for a small value.
    let mut pos = 0;
    let overlong = [0x1f, 0x80, 0x80, 0x80, 0x80, 0x00];
    assert_eq!(
        decode_int::<()>(&overlong, &mut pos, 5),
        Err(HpackError::IntegerOverflow)
    );
    let mut pos = 0;
    let huge = [
        0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
    ];
    assert_eq!(
        decode_int::<()>(&huge, &mut pos, 7),
        Err(HpackError::IntegerOverflow)
    );
    // Four continuation octets is the most accepted.
    let mut pos = 0;
    let max = [0x1f, 0xff, 0xff, 0xff, 0x7f];
    assert_eq!(decode_int::<()>(&max, &mut pos, 5), Ok(31 + (1 << 28) - 1));
}

fn err(block: &[u8]) -> HpackError<()> {
    decode_all(&mut decoder(), block).unwrap_err()
}

#[test]
fn hostile_blocks_give_precise_errors() {
    assert_eq!(err(&[0x80]), HpackError::IndexZero);
    assert_eq!(err(&[0xbe]), HpackError::IndexOutOfRange { index: 62 });
    assert_eq!(
        err(&[0xff, 0x01]),
        HpackError::IndexOutOfRange { index: 128 }
    );
    // Literals with a dynamic name index into an empty table.
    assert_eq!(
        err(&[0x7f, 0x00]),
        HpackError::IndexOutOfRange { index: 63 }
    );
    assert_eq!(
        err(&[0x0f, 0x2f]),
        HpackError::IndexOutOfRange { index: 62 }
    );
    // Truncated: integer, name string, value string, Huffman string.
    assert_eq!(err(&[0xff]), HpackError::Truncated);
    assert_eq!(err(&[0x40, 0x05, b'a', b'b']), HpackError::Truncated);
    assert_eq!(err(&[0x04, 0x05, b'/', b'a']), HpackError::Truncated);
    assert_eq!(err(&[0x04]), HpackError::Truncated);
    assert_eq!(err(&[0x04, 0x83, 0x1f]), HpackError::Truncated);
    // Huge string length.
    let huge = [0x04, 0x7f, 0xff, 0xff, 0xff, 0xff, 0x0f];
    assert_eq!(err(&huge), HpackError::IntegerOverflow);
    let long_but_legal = [0x04, 0x7f, 0xff, 0xff, 0xff, 0x7f];
    assert_eq!(err(&long_but_legal), HpackError::Truncated);
    // Bad Huffman strings.
    assert_eq!(
        err(&[0x04, 0x84, 0xff, 0xff, 0xff, 0xff]),
        HpackError::Huffman(HuffmanError::EosInString)
    );
    assert_eq!(
        err(&[0x04, 0x81, 0x00]),
        HpackError::Huffman(HuffmanError::PaddingNotOnes)
    );
    assert_eq!(
        err(&[0x04, 0x82, 0x1f, 0xff]),
        HpackError::Huffman(HuffmanError::PaddingTooLong)
    );
}

#[test]
fn table_size_updates_are_bounded_and_only_at_block_start() {
    // 4097 > 4096: 0x3f then 4097 - 31 = 4066 = 0xe2 0x1f.
    assert_eq!(
        err(&[0x3f, 0xe2, 0x1f]),
        HpackError::TableSizeUpdateTooLarge {
            requested_bytes: 4097,
            max_bytes: 4096
        }
    );
    assert_eq!(err(&[0x82, 0x20]), HpackError::TableSizeUpdateAfterField);
    // Two updates then a field: fine, and the table follows the last one.
    let mut d = decoder();
    let block = [0x20, 0x3f, 0xe1, 0x1f, 0x82];
    assert_eq!(
        decode_all(&mut d, &block).unwrap(),
        owned(&[(":method", "GET")])
    );
    assert_eq!(d.table().limit_bytes(), 4096);
    // An update to 0 empties the table.
    let mut d = decoder();
    decode_all(
        &mut d,
        &hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"),
    )
    .unwrap();
    assert_eq!(d.table().len(), 1);
    decode_all(&mut d, &[0x20]).unwrap();
    assert!(d.table().is_empty());
    assert_eq!(
        err(&[0x20, 0xbe]),
        HpackError::IndexOutOfRange { index: 62 }
    );
}

#[test]
fn header_list_cap_stops_a_reference_bomb_early() {
    // One 3000-octet entry, then 1000 references to it: the cap cuts it off at the 2nd.
    let mut block = vec![0x40, 0x01, b'x', 0x7f];
    encode_int(&mut block, 0x00, 7, 3000);
    block.truncate(3);
    encode_int(&mut block, 0x00, 7, 3000);
    block.extend(std::iter::repeat_n(b'v', 3000));
    block.extend(std::iter::repeat_n(0xbe, 1000));
    let mut d = Decoder::new(4096, 8 * 1024);
    let mut calls = 0;
    let result = d.decode(&block, |_, _| {
        calls += 1;
        Ok::<(), ()>(())
    });
    assert_eq!(
        result,
        Err(HpackError::HeaderListTooLarge {
            max_bytes: 8 * 1024
        })
    );
    assert_eq!(calls, 2);
    assert_eq!(result.unwrap_err().code(), Some(ErrorCode::EnhanceYourCalm));
    // The cap counts name + value + 32 per field: exactly at the cap is fine.
    let mut d = Decoder::new(4096, 42 + 32);
    decode_all(&mut d, &[0x82]).unwrap();
    let mut d = Decoder::new(4096, 41 + 32);
    assert!(decode_all(&mut d, &[0x82, 0x82]).is_err());
}

#[test]
fn field_callback_errors_pass_through() {
    let mut d = decoder();
    let result = d.decode(&[0x82, 0x84], |name, _| match name {
        b":path" => Err("no paths"),
        _ => Ok(()),
    });
    assert_eq!(result, Err(HpackError::Field("no paths")));
    assert_eq!(result.unwrap_err().code(), None);
    assert_eq!(
        HpackError::<()>::IndexZero.code(),
        Some(ErrorCode::CompressionError)
    );
}

#[test]
fn literal_naming_an_entry_it_evicts() {
    // Table of 60: an entry "aaaa: bbbb" (40), then a literal with indexing naming it (index
    // 62) with a 16-octet value: the new entry (52) evicts the one it names.
    let mut d = Decoder::new(60, 4096);
    decode_all(
        &mut d,
        &[
            0x40, 0x04, b'a', b'a', b'a', b'a', 0x04, b'b', b'b', b'b', b'b',
        ],
    )
    .unwrap();
    let mut block = vec![0x7e, 0x10];
    block.extend_from_slice(b"cccccccccccccccc");
    let fields = decode_all(&mut d, &block).unwrap();
    assert_eq!(fields, owned(&[("aaaa", "cccccccccccccccc")]));
    assert_eq!(
        table_of(&d),
        [("aaaa".to_string(), "cccccccccccccccc".to_string())]
    );
}

#[test]
fn encoder_output_decodes_back() {
    let mut enc = Encoder::new();
    let mut out = Vec::new();
    enc.begin_block(&mut out);
    for status in [
        200, 201, 204, 206, 304, 400, 401, 403, 404, 405, 413, 500, 502, 0, 65535,
    ] {
        enc.encode_status(&mut out, status);
    }
    let fields: &[(&str, &str)] = &[
        ("content-type", "application/json"),
        ("content-length", "78"),
        ("allow", "GET, POST"),
        ("location", "/v1/status"),
        ("x-kes-custom", "Some Value With Spaces"),
        ("x-empty", ""),
        ("date", DATE1),
    ];
    for (n, v) in fields {
        enc.encode_field(&mut out, n.as_bytes(), v.as_bytes());
    }
    let got = decode_all(&mut decoder(), &out).unwrap();
    let statuses = [
        "200", "201", "204", "206", "304", "400", "401", "403", "404", "405", "413", "500", "502",
        "0", "65535",
    ];
    let mut want: Fields = statuses
        .iter()
        .map(|s| (b":status".to_vec(), s.as_bytes().to_vec()))
        .collect();
    want.extend(owned(fields));
    assert_eq!(got, want);
}

#[test]
fn encoder_uses_static_indices_and_shorter_strings() {
    let enc = Encoder::new();
    let mut out = Vec::new();
    enc.encode_status(&mut out, 200);
    assert_eq!(out, [0x88]);
    out.clear();
    enc.encode_status(&mut out, 404);
    assert_eq!(out, [0x8d]);
    out.clear();
    // Literal without indexing, name index 31, Huffman value (shorter).
    enc.encode_field(&mut out, b"content-type", b"application/json");
    assert_eq!(out[0], 0x0f);
    assert_eq!(out[1], 0x10); // 31 - 15 = 16
    assert!(out[2] & 0x80 != 0);
    assert!(out.len() < 2 + 1 + 16);
    out.clear();
    // Not in the static table: literal name; a value Huffman would lengthen stays raw.
    enc.encode_field(&mut out, b"x-a", b"\x00\x01");
    assert_eq!(&out[..1], [0x00]);
    assert_eq!(&out[out.len() - 3..], [0x02, 0x00, 0x01]);
}

#[test]
fn encoder_signals_size_update_after_peer_settings() {
    let mut enc = Encoder::new();
    let mut out = Vec::new();
    enc.begin_block(&mut out);
    assert!(out.is_empty());
    enc.peer_header_table_size(0);
    enc.begin_block(&mut out);
    assert_eq!(out, [0x20]);
    enc.begin_block(&mut out);
    assert_eq!(out, [0x20]);
    assert!(decode_all(&mut decoder(), &out).unwrap().is_empty());
}

#[test]
fn decoder_does_not_allocate_after_warm_up() {
    // Capacity of every buffer stays put over many blocks with Huffman strings and indexing.
    let block = hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf");
    let mut d = decoder();
    let _ = decode_all(&mut d, &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"));
    let warm = |d: &mut Decoder| {
        d.decode(&block[4..], |_, _| Ok::<(), ()>(())).unwrap();
    };
    for _ in 0..10 {
        warm(&mut d);
    }
    let caps = (d.name_scratch.capacity(), d.value_scratch.capacity());
    for _ in 0..10_000 {
        warm(&mut d);
    }
    assert_eq!(
        caps,
        (d.name_scratch.capacity(), d.value_scratch.capacity())
    );
}
