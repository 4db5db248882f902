//! Cross-checks HPACK against an independent implementation, Python's `hpack` package
//! (`pip install hpack`): blocks Python encodes (Huffman or not, indexed, never-indexed,
//! after a table size change) decode with ours to the same fields; blocks our encoder writes
//! decode with Python; and our Huffman table equals Python's code for all 257 symbols.
//! Fails, rather than skips, when python3 or the package is missing.

use kes::http2::{huffman, Decoder, Encoder};
use std::process::Command;

fn python(script: &str, stdin: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 is required for this test (install it, then `pip install hpack`)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python3 failed (is the `hpack` package installed? `pip install hpack`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Python encodes header lists on one connection; each output line is the block, then the
/// fields as name:value hex pairs.
const ENCODE: &str = r#"
import hpack
from hpack import HeaderTuple, NeverIndexedHeaderTuple
e = hpack.Encoder()
lists = [
    ([(':method', 'POST'), (':scheme', 'https'), (':path', '/v1/key/generate/my-key'),
      (':authority', 'kes:7373'), ('content-type', 'application/json'),
      ('user-agent', 'Go-http-client/2.0'), ('accept-encoding', 'gzip')], True),
    ([(':method', 'POST'), (':scheme', 'https'), (':path', '/v1/key/decrypt/my-key'),
      (':authority', 'kes:7373'), ('content-type', 'application/json'),
      ('user-agent', 'Go-http-client/2.0'), ('accept-encoding', 'gzip')], True),
    ([(':method', 'GET'), (':path', '/v1/status'), ('x-long', 'v' * 3000),
      NeverIndexedHeaderTuple('authorization', 'secret')], False),
    ([(':method', 'GET'), (':path', '/v1/status'), ('x-long', 'v' * 3000)], True),
]
for i, (fields, huffman) in enumerate(lists):
    if i == 3:
        e.header_table_size = 1024
    block = e.encode(fields, huffman=huffman)
    pairs = ' '.join(bytes(n, 'ascii').hex() + ':' + bytes(v, 'ascii').hex() for n, v in fields)
    print(block.hex(), pairs)
"#;

/// Python decodes our blocks (one hex block per stdin line), printing name:value hex pairs.
const DECODE: &str = r#"
import sys, hpack
d = hpack.Decoder()
for line in sys.stdin:
    fields = d.decode(bytes.fromhex(line.strip()), raw=True)
    print(' '.join(n.hex() + ':' + v.hex() for n, v in fields))
"#;

const HUFFMAN_TABLE: &str = r#"
from hpack import huffman_constants as h
for code, bits in zip(h.REQUEST_CODES, h.REQUEST_CODES_LENGTH):
    print(code, bits)
"#;

fn pairs(line: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    line.split_whitespace()
        .map(|p| {
            let (n, v) = p.split_once(':').unwrap();
            (unhex(n), unhex(v))
        })
        .collect()
}

#[test]
fn hpack_interoperates_with_python_hpack() {
    // Python encodes, we decode (one connection, so the dynamic table carries over).
    let mut decoder = Decoder::new(4096, 64 * 1024);
    let encoded = python(ENCODE, "");
    let mut blocks = 0;
    for line in encoded.lines() {
        let (block, fields) = line.split_once(' ').unwrap();
        let mut got = Vec::new();
        decoder
            .decode(&unhex(block), |n, v| {
                got.push((n.to_vec(), v.to_vec()));
                Ok::<(), ()>(())
            })
            .unwrap_or_else(|e| panic!("block {blocks}: {e}"));
        assert_eq!(got, pairs(fields), "block {blocks}");
        blocks += 1;
    }
    assert_eq!(blocks, 4);

    // We encode, Python decodes.
    let cases: [&[(&str, &str)]; 3] = [
        &[
            ("content-type", "application/json"),
            ("content-length", "78"),
        ],
        &[
            ("location", "/v1/key/list/*"),
            ("x-custom", "Mixed Case Value!"),
        ],
        &[("allow", "GET, POST, DELETE"), ("x-bytes", "\u{1}\u{7f}~")],
    ];
    let statuses = [200, 403, 500];
    let mut enc = Encoder::new();
    let mut stdin = String::new();
    let mut want = Vec::new();
    for (status, fields) in statuses.into_iter().zip(cases) {
        let mut block = Vec::new();
        enc.begin_block(&mut block);
        enc.encode_status(&mut block, status);
        let mut expect = vec![(b":status".to_vec(), status.to_string().into_bytes())];
        for (n, v) in fields {
            enc.encode_field(&mut block, n.as_bytes(), v.as_bytes());
            expect.push((n.as_bytes().to_vec(), v.as_bytes().to_vec()));
        }
        stdin.push_str(&hex(&block));
        stdin.push('\n');
        want.push(expect);
    }
    let decoded = python(DECODE, &stdin);
    let got: Vec<_> = decoded.lines().map(pairs).collect();
    assert_eq!(got, want);

    // The Huffman code, symbol by symbol.
    let table = python(HUFFMAN_TABLE, "");
    let mut symbols = 0;
    for (symbol, line) in table.lines().enumerate() {
        let (code, bits) = line.split_once(' ').unwrap();
        let want = (code.parse::<u32>().unwrap(), bits.parse::<u8>().unwrap());
        assert_eq!(huffman::symbol_code(symbol), Some(want), "symbol {symbol}");
        symbols += 1;
    }
    assert_eq!(symbols, 257);
}
