#![no_main]
//! The HPACK decoder must never panic on arbitrary blocks and must respect its caps; several
//! blocks per input share one decoder to exercise the dynamic table. Fields our encoder
//! writes must decode back unchanged.
use kes::http2::hpack::FIELD_OVERHEAD_BYTES;
use kes::http2::{Decoder, Encoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&caps, rest)) = data.split_first() else {
        return;
    };
    // Small caps so eviction, size updates and the list cap are all reachable.
    let max_table_bytes = usize::from(caps & 0x0f) * 64;
    let max_list_bytes = 64 + usize::from(caps >> 4) * 256;
    let mut decoder = Decoder::new(max_table_bytes, max_list_bytes);
    // Blocks are separated by the octet sequence 0xff 0x00 0xff (rare inside real blocks).
    for block in split_blocks(rest) {
        let mut list_bytes = 0;
        let result = decoder.decode(block, |name, value| {
            list_bytes += name.len() + value.len() + FIELD_OVERHEAD_BYTES;
            assert!(list_bytes <= max_list_bytes);
            Ok::<(), ()>(())
        });
        assert!(decoder.table().size_bytes() <= decoder.table().limit_bytes());
        assert!(decoder.table().limit_bytes() <= max_table_bytes);
        if result.is_err() {
            break;
        }
    }

    // Round trip: fields cut from the input (name and value halves of each 0x00-separated
    // piece), a status from the first octets.
    let status = u16::from_le_bytes([caps, rest.first().copied().unwrap_or(0)]);
    let mut fields = Vec::new();
    for piece in rest.split(|&b| b == 0) {
        let (name, value) = piece.split_at(piece.len() / 2);
        fields.push((name, value));
    }
    let mut encoder = Encoder::new();
    if caps & 1 == 1 {
        encoder.peer_header_table_size(u32::from(caps));
    }
    let mut block = Vec::new();
    encoder.begin_block(&mut block);
    encoder.encode_status(&mut block, status);
    for (name, value) in &fields {
        encoder.encode_field(&mut block, name, value);
    }
    let mut decoded = Vec::new();
    let mut fresh = Decoder::new(4096, usize::MAX);
    fresh
        .decode(&block, |n, v| {
            decoded.push((n.to_vec(), v.to_vec()));
            Ok::<(), ()>(())
        })
        .expect("our own block decodes");
    assert_eq!(decoded.len(), fields.len() + 1);
    assert_eq!(
        decoded[0],
        (b":status".to_vec(), status.to_string().into_bytes())
    );
    for ((n, v), (dn, dv)) in fields.iter().zip(&decoded[1..]) {
        assert_eq!((*n, *v), (dn.as_slice(), dv.as_slice()));
    }
    assert!(fresh.table().is_empty());
});

fn split_blocks(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        match data.windows(3).position(|w| w == [0xff, 0x00, 0xff]) {
            Some(i) => {
                let block = &data[..i];
                data = &data[i + 3..];
                Some(block)
            }
            None => Some(std::mem::take(&mut data)),
        }
    })
}
