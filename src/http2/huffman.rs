//! The HPACK Huffman code (RFC 7541 §5.2, Appendix B): encoding, its length, and a decoder
//! that rejects what §5.2 forbids (the EOS symbol inside a string, padding longer than 7 bits,
//! padding that is not a prefix of EOS, i.e. not all ones).
//!
//! The table is kept as the code length of each symbol. The RFC's code is canonical (codes of
//! one length are consecutive in symbol order, shorter codes numerically first), so the codes
//! follow from the lengths; the tests check the result against the RFC's listed codes and
//! examples. Decoding is a state machine over 4-bit nibbles, built at compile time from the
//! same table: 256 states (the code tree's inner nodes) × 16 nibbles, at most one symbol per
//! step because no code is shorter than 5 bits.

/// The end-of-string symbol, which may only appear as (a prefix of) padding.
pub const EOS: usize = 256;

/// Code length in bits of each symbol 0..=256 (RFC 7541 Appendix B, "len").
#[rustfmt::skip]
const CODE_BITS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, // 0..=15
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, // 16..=31
     6, 10, 10, 12, 13,  6,  8, 11, 10, 10,  8, 11,  8,  6,  6,  6, // 32..=47
     5,  5,  5,  6,  6,  6,  6,  6,  6,  6,  7,  8, 15,  6, 12, 10, // 48..=63
    13,  6,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7,  7, // 64..=79
     7,  7,  7,  7,  7,  7,  7,  7,  8,  7,  8, 13, 19, 13, 14,  6, // 80..=95
    15,  5,  6,  5,  6,  5,  6,  6,  6,  5,  7,  7,  6,  6,  6,  5, // 96..=111
     6,  7,  6,  5,  5,  6,  7,  7,  7,  7,  7, 15, 11, 14, 13, 28, // 112..=127
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, // 128..=143
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, // 144..=159
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, // 160..=175
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, // 176..=191
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, // 192..=207
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, // 208..=223
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, // 224..=239
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, // 240..=255
    30, // 256..=256
];

/// Code of each symbol, right-aligned, assigned canonically from `CODE_BITS`.
const CODES: [u32; 257] = canonical_codes(&CODE_BITS);

const fn canonical_codes(bits: &[u8; 257]) -> [u32; 257] {
    let mut codes = [0u32; 257];
    let mut code: u32 = 0;
    let mut len = 1;
    while len <= 30 {
        let mut sym = 0;
        while sym < 257 {
            if bits[sym] == len {
                codes[sym] = code;
                code += 1;
            }
            sym += 1;
        }
        code <<= 1;
        len += 1;
    }
    codes
}

/// The code of `symbol` (0..=256) as (code right-aligned, length in bits).
pub fn symbol_code(symbol: usize) -> Option<(u32, u8)> {
    Some((*CODES.get(symbol)?, *CODE_BITS.get(symbol)?))
}

/// Inner nodes of the code tree: 257 leaves need 256.
const NODES: usize = 256;
/// A child reference at or above this is a leaf for symbol `child - LEAF`.
const LEAF: u16 = 256;

struct Tree {
    /// Children [bit 0, bit 1] of each inner node; 0 = not yet built (the root is no child).
    children: [[u16; 2]; NODES],
    depth_bits: [u8; NODES],
    /// Whether the path from the root to the node is all ones (a prefix of EOS).
    all_ones: [bool; NODES],
}

const fn build_tree() -> Tree {
    let mut t = Tree {
        children: [[0; 2]; NODES],
        depth_bits: [0; NODES],
        all_ones: [false; NODES],
    };
    t.all_ones[0] = true;
    let mut next = 1;
    let mut sym = 0;
    while sym < 257 {
        let (code, len) = (CODES[sym], CODE_BITS[sym] as u32);
        let mut node = 0;
        let mut i = len;
        while i > 0 {
            i -= 1;
            let bit = ((code >> i) & 1) as usize;
            if i == 0 {
                t.children[node][bit] = LEAF + sym as u16;
            } else {
                if t.children[node][bit] == 0 {
                    // An index past NODES here fails the build: the table is not a code.
                    t.children[node][bit] = next as u16;
                    t.depth_bits[next] = t.depth_bits[node] + 1;
                    t.all_ones[next] = t.all_ones[node] && bit == 1;
                    next += 1;
                }
                node = t.children[node][bit] as usize;
            }
        }
        sym += 1;
    }
    t
}

const TREE: Tree = build_tree();

/// One decoder step: the state after a nibble and the symbol it completed, if any.
#[derive(Clone, Copy)]
struct Step {
    next: u8,
    symbol: u8,
    flags: u8,
}

const EMIT: u8 = 1;
const FAIL_EOS: u8 = 2;

const fn build_steps() -> [[Step; 16]; NODES] {
    let mut steps = [[Step {
        next: 0,
        symbol: 0,
        flags: 0,
    }; 16]; NODES];
    let mut state = 0;
    while state < NODES {
        let mut nibble = 0;
        while nibble < 16 {
            let mut node = state;
            let mut step = Step {
                next: 0,
                symbol: 0,
                flags: 0,
            };
            let mut k = 0;
            while k < 4 {
                let bit = (nibble >> (3 - k)) & 1;
                let child = TREE.children[node][bit];
                if child >= LEAF {
                    let symbol = (child - LEAF) as usize;
                    if symbol == EOS {
                        step.flags = FAIL_EOS;
                        break;
                    }
                    step.flags = EMIT;
                    step.symbol = symbol as u8;
                    node = 0;
                } else {
                    node = child as usize;
                }
                k += 1;
            }
            step.next = node as u8;
            steps[state][nibble] = step;
            nibble += 1;
        }
        state += 1;
    }
    steps
}

static STEPS: [[Step; 16]; NODES] = build_steps();

/// How a string's end state is judged: 0 complete, else the error.
const END_OK: u8 = 0;
const END_PADDING_TOO_LONG: u8 = 1;
const END_PADDING_NOT_ONES: u8 = 2;

const fn build_end() -> [u8; NODES] {
    let mut end = [END_OK; NODES];
    let mut node = 0;
    while node < NODES {
        end[node] = if !TREE.all_ones[node] {
            END_PADDING_NOT_ONES
        } else if TREE.depth_bits[node] > 7 {
            END_PADDING_TOO_LONG
        } else {
            END_OK
        };
        node += 1;
    }
    end
}

static END: [u8; NODES] = build_end();

/// Why a Huffman string is invalid (all are COMPRESSION_ERROR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HuffmanError {
    /// The EOS symbol was decoded inside the string.
    EosInString,
    /// More than 7 bits of padding.
    PaddingTooLong,
    /// Trailing bits that are not all ones (a truncated code or bad padding).
    PaddingNotOnes,
}

/// Decodes `src`, appending the octets to `out` (which grows by at most `src.len() * 8 / 5`).
pub fn decode(src: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    out.reserve(src.len() * 8 / 5 + 1);
    let mut state = 0usize;
    for &byte in src {
        for nibble in [byte >> 4, byte & 0x0f] {
            let step = STEPS[state][usize::from(nibble)];
            if step.flags & FAIL_EOS != 0 {
                return Err(HuffmanError::EosInString);
            }
            if step.flags & EMIT != 0 {
                out.push(step.symbol);
            }
            state = usize::from(step.next);
        }
    }
    match END[state] {
        END_OK => Ok(()),
        END_PADDING_TOO_LONG => Err(HuffmanError::PaddingTooLong),
        _ => Err(HuffmanError::PaddingNotOnes),
    }
}

/// Octets the Huffman encoding of `src` takes.
pub fn encoded_len(src: &[u8]) -> usize {
    let bits: usize = src
        .iter()
        .map(|&b| usize::from(CODE_BITS[usize::from(b)]))
        .sum();
    bits.div_ceil(8)
}

/// Appends the Huffman encoding of `src` to `out`, padded with the high bits of EOS.
pub fn encode(src: &[u8], out: &mut Vec<u8>) {
    // Pending bits sit in the low `pending` bits of `acc`: at most 7 + 30 at a time.
    let mut acc: u64 = 0;
    let mut pending: u32 = 0;
    for &b in src {
        let sym = usize::from(b);
        let len = u32::from(CODE_BITS[sym]);
        acc = (acc << len) | u64::from(CODES[sym]);
        pending += len;
        while pending >= 8 {
            pending -= 8;
            out.push((acc >> pending) as u8);
        }
    }
    if pending > 0 {
        out.push(((acc << (8 - pending)) as u8) | (0xff >> pending));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn decoded(src: &[u8]) -> Result<Vec<u8>, HuffmanError> {
        let mut out = Vec::new();
        decode(src, &mut out).map(|()| out)
    }

    #[test]
    fn huffman_table_is_a_complete_prefix_code_with_rfc_lengths() {
        // Kraft sum exactly 1: the code is complete (every bit string decodes or is padding).
        let kraft: u64 = CODE_BITS.iter().map(|&l| 1u64 << (30 - l)).sum();
        assert_eq!(kraft, 1 << 30);
        assert!(CODE_BITS.iter().all(|&l| (5..=30).contains(&l)));
        assert_eq!(symbol_code(EOS), Some((0x3fff_ffff, 30)));
        assert_eq!(symbol_code(257), None);
        // Codes listed in RFC 7541 Appendix B.
        let listed = [
            (0, 0x1ff8, 13),
            (1, 0x7f_ffd8, 23),
            (2, 0xfff_ffe2, 28),
            (9, 0xff_ffea, 24),
            (10, 0x3fff_fffc, 30),
            (13, 0x3fff_fffd, 30),
            (22, 0x3fff_fffe, 30),
            (26, 0xfff_fff6, 28),
            (b' ' as usize, 0x14, 6),
            (b'0' as usize, 0x0, 5),
            (b'a' as usize, 0x3, 5),
            (b'e' as usize, 0x5, 5),
            (b'/' as usize, 0x18, 6),
        ];
        for (sym, code, len) in listed {
            assert_eq!(symbol_code(sym), Some((code, len)), "symbol {sym}");
        }
    }

    #[test]
    fn huffman_decodes_rfc_appendix_c_strings() {
        let cases: [(&str, &[u8]); 9] = [
            ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", b"www.example.com"),
            ("a8eb 1064 9cbf", b"no-cache"),
            ("25a8 49e9 5ba9 7d7f", b"custom-key"),
            ("25a8 49e9 5bb8 e8b4 bf", b"custom-value"),
            ("6402", b"302"),
            ("aec3 771a 4b", b"private"),
            (
                "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
                b"Mon, 21 Oct 2013 20:13:21 GMT",
            ),
            ("9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3", b"https://www.example.com"),
            (
                "94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
                b"foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1",
            ),
        ];
        for (encoded, plain) in cases {
            let encoded = hex(encoded);
            assert_eq!(decoded(&encoded).unwrap(), plain);
            let mut out = Vec::new();
            encode(plain, &mut out);
            assert_eq!(out, encoded);
            assert_eq!(encoded_len(plain), encoded.len());
        }
    }

    #[test]
    fn huffman_round_trips_every_byte() {
        let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        for n in 0..all.len() {
            let mut out = Vec::new();
            encode(&all[n..], &mut out);
            assert_eq!(out.len(), encoded_len(&all[n..]));
            assert_eq!(decoded(&out).unwrap(), &all[n..]);
        }
    }

    #[test]
    fn huffman_rejects_eos_and_bad_padding() {
        // EOS (30 ones) then padding.
        assert_eq!(
            decoded(&[0xff, 0xff, 0xff, 0xff]),
            Err(HuffmanError::EosInString)
        );
        // 'a' (00011) then 11 bits of ones: padding longer than 7 bits.
        assert_eq!(decoded(&[0x1f, 0xff]), Err(HuffmanError::PaddingTooLong));
        assert_eq!(decoded(&[0xff]), Err(HuffmanError::PaddingTooLong));
        // 'a' then 110: padding not all ones.
        assert_eq!(decoded(&[0x1e]), Err(HuffmanError::PaddingNotOnes));
        // '0' (00000) then 000.
        assert_eq!(decoded(&[0x00]), Err(HuffmanError::PaddingNotOnes));
        // 'a' then 111: fine. Empty: fine.
        assert_eq!(decoded(&[0x1f]).unwrap(), b"a");
        assert_eq!(decoded(&[]).unwrap(), b"");
    }
}
