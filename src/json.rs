//! A minimal validating JSON reader with Go `encoding/json` struct-decoding semantics, and
//! base64 as Go's `encoding/base64.StdEncoding` decodes `[]byte` members. One reader for the
//! legacy ciphertext envelopes and key records (`crate::crypto`), request bodies
//! (`crate::api::json`, up to 4 KiB) and keystore answers that carry secrets
//! (`crate::keystore::json_secret`).
//!
//! It is a small hand-written reader rather than simd-json: it needs no mutable copy of the
//! input, leaves no unwiped copies of key material behind (strings that need unescaping go to
//! a buffer wiped on drop) and reproduces Go's `encoding/json` exactly where it matters here:
//! member names matched case-insensitively with Go's folding, unknown members skipped, the
//! last duplicate wins, `null` is "absent", invalid UTF-8 and lone surrogates become U+FFFD,
//! nesting deeper than 10 000 levels is an error.

// ---------------------------------------------------------------------------------------------
// Base64 as Go's `encoding/base64.StdEncoding` decodes it.

mod b64 {
    use base64::alphabet;
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    use base64::engine::DecodePaddingMode;

    /// Standard alphabet, padding required, non-zero trailing bits accepted (Go's
    /// `StdEncoding` is not `Strict`).
    pub(crate) const GO_STD: GeneralPurpose = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_encode_padding(true)
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
    );
}

pub(crate) use b64::GO_STD;

/// Decodes standard padded base64 into `out` (replacing its contents, which are wiped first),
/// ignoring `\r` and `\n` anywhere like Go. `out` is sized once before decoding, so callers
/// that pass the vector of a `SecretVec` get no unwiped copies. Returns `false` (and leaves
/// `out` empty) on invalid input.
pub(crate) fn decode_base64_into(input: &[u8], out: &mut Vec<u8>) -> bool {
    use base64::Engine as _;
    let stripped;
    let clean: &[u8] = if input.iter().any(|&c| c == b'\r' || c == b'\n') {
        let mut s = crate::secret::SecretVec::with_capacity(input.len());
        s.as_mut_vec()
            .extend(input.iter().copied().filter(|&c| c != b'\r' && c != b'\n'));
        stripped = s;
        stripped.expose()
    } else {
        input
    };
    wipe_vec(out);
    let estimate = clean.len() / 4 * 3 + 3;
    out.reserve_exact(estimate);
    out.resize(estimate, 0);
    match GO_STD.decode_slice(clean, &mut out[..]) {
        Ok(n) => {
            out.truncate(n);
            true
        }
        Err(_) => {
            wipe_vec(out);
            false
        }
    }
}

/// Zeroes a vector's whole allocation (not just its length) and empties it, so that a later
/// reallocation cannot leave old contents behind.
pub(crate) fn wipe_vec(v: &mut Vec<u8>) {
    // SAFETY: the pointer and capacity describe exactly the vector's own allocation.
    unsafe { memsec::memzero(v.as_mut_ptr(), v.capacity()) };
    v.clear();
}

// ---------------------------------------------------------------------------------------------
// The reader.

use crate::secret::SecretVec;

/// Go's `maxNestingDepth`.
const MAX_DEPTH: usize = 10_000;

/// The decoded content of a JSON string: borrowed when no unescaping was needed, else an
/// owned buffer that is wiped on drop.
pub(crate) enum StrBuf<'a> {
    Borrowed(&'a [u8]),
    Owned(SecretVec),
}

pub(crate) struct JsonStr<'a> {
    /// The bytes between the quotes, as written.
    pub(crate) raw: &'a [u8],
    value: StrBuf<'a>,
}

impl JsonStr<'_> {
    /// Whether the string is its raw bytes as written (no escapes, valid UTF-8).
    pub(crate) fn is_as_written(&self) -> bool {
        matches!(self.value, StrBuf::Borrowed(_))
    }

    /// The unescaped string (UTF-8; invalid input replaced by U+FFFD like Go).
    pub(crate) fn bytes(&self) -> &[u8] {
        match &self.value {
            StrBuf::Borrowed(b) => b,
            StrBuf::Owned(v) => v.expose(),
        }
    }
}

/// A member value as a struct decoder sees it.
pub(crate) enum Value<'a> {
    Null,
    Str(JsonStr<'a>),
    /// Number, boolean, array or object (already validated and skipped).
    Other,
}

/// Go's case-insensitive member matching (`appendFoldedName`: ASCII case folding plus
/// `ToUpper(ToLower(r))` for other runes) against an ASCII field name.
pub(crate) fn name_eq(name: &[u8], field: &str) -> bool {
    let mut chars = match std::str::from_utf8(name) {
        Ok(s) => s.chars(),
        Err(_) => return false,
    };
    for f in field.bytes() {
        let folded = match chars.next() {
            Some(c) if c.is_ascii() => c.to_ascii_uppercase(),
            // The only non-ASCII runes whose ToUpper(ToLower(r)) is ASCII.
            Some('\u{017F}') => 'S',
            Some('\u{212A}') => 'K',
            Some('\u{0130}' | '\u{0131}') => 'I',
            _ => return false,
        };
        if folded != char::from(f.to_ascii_uppercase()) {
            return false;
        }
    }
    chars.next().is_none()
}

/// Applies a member value to a Go `string` field: `null` keeps the old value, any other
/// non-string is a type error.
pub(crate) fn set_string<'a>(slot: &mut Option<JsonStr<'a>>, value: Value<'a>) -> Result<(), ()> {
    match value {
        Value::Str(s) => {
            *slot = Some(s);
            Ok(())
        }
        Value::Null => Ok(()),
        Value::Other => Err(()),
    }
}

/// Applies a member value to a Go `[]byte` field: base64 string, `null` resets it.
pub(crate) fn set_bytes(slot: &mut Vec<u8>, value: Value<'_>) -> Result<(), ()> {
    match value {
        Value::Str(s) => {
            if decode_base64_into(s.bytes(), slot) {
                Ok(())
            } else {
                Err(())
            }
        }
        Value::Null => {
            wipe_vec(slot);
            Ok(())
        }
        Value::Other => Err(()),
    }
}

/// Whether `input` is exactly one valid JSON value (Go's `json.Valid`).
pub(crate) fn is_valid(input: &[u8]) -> bool {
    let mut p = Parser { b: input, pos: 0 };
    p.ws();
    p.skip_value().is_ok() && {
        p.ws();
        p.pos == input.len()
    }
}

/// Decodes `input` as one JSON object, calling `member` for each member in document
/// order. Returns `Ok(false)` for a top-level `null` (a no-op in Go), `Err` for any syntax
/// error, any other top-level type, trailing data, or an error from `member`.
pub(crate) fn decode_object<'a>(
    input: &'a [u8],
    member: impl FnMut(JsonStr<'a>, Value<'a>) -> Result<(), ()>,
) -> Result<bool, ()> {
    decode_object_impl(input, Trailing::Refuse, member)
}

/// Like [`decode_object`], but like Go's `json.Decoder.Decode` it reads the first value
/// only: whatever follows it is never looked at.
pub(crate) fn decode_first_object<'a>(
    input: &'a [u8],
    member: impl FnMut(JsonStr<'a>, Value<'a>) -> Result<(), ()>,
) -> Result<bool, ()> {
    decode_object_impl(input, Trailing::Ignore, member)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Trailing {
    Refuse,
    Ignore,
}

fn decode_object_impl<'a>(
    input: &'a [u8],
    trailing: Trailing,
    mut member: impl FnMut(JsonStr<'a>, Value<'a>) -> Result<(), ()>,
) -> Result<bool, ()> {
    let mut p = Parser { b: input, pos: 0 };
    p.ws();
    match p.peek() {
        Some(b'{') => p.pos += 1,
        Some(b'n') => {
            p.literal(b"null")?;
            p.ws();
            return if trailing == Trailing::Ignore || p.pos == input.len() {
                Ok(false)
            } else {
                Err(())
            };
        }
        _ => return Err(()),
    }
    p.ws();
    if !p.eat(b'}') {
        loop {
            p.ws();
            if p.peek() != Some(b'"') {
                return Err(());
            }
            let name = p.string()?;
            p.ws();
            p.expect(b':')?;
            p.ws();
            let value = match p.peek() {
                Some(b'"') => Value::Str(p.string()?),
                Some(b'n') => {
                    p.literal(b"null")?;
                    Value::Null
                }
                _ => {
                    p.skip_value()?;
                    Value::Other
                }
            };
            member(name, value)?;
            p.ws();
            match p.next() {
                Some(b',') => continue,
                Some(b'}') => break,
                _ => return Err(()),
            }
        }
    }
    if trailing == Trailing::Ignore {
        return Ok(true);
    }
    p.ws();
    if p.pos == input.len() {
        Ok(true)
    } else {
        Err(())
    }
}

struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
}

fn hex_val(c: u8) -> Option<u32> {
    char::from(c).to_digit(16)
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), ()> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(())
        }
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn literal(&mut self, lit: &[u8]) -> Result<(), ()> {
        if self
            .b
            .get(self.pos..)
            .is_some_and(|rest| rest.starts_with(lit))
        {
            self.pos += lit.len();
            Ok(())
        } else {
            Err(())
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<(), ()> {
        self.eat(b'-');
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(()),
        }
        if self.eat(b'.') && self.digits() == 0 {
            return Err(());
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(());
            }
        }
        Ok(())
    }

    /// Scans and decodes a string; `self.pos` is at the opening quote.
    fn string(&mut self) -> Result<JsonStr<'a>, ()> {
        self.expect(b'"')?;
        let start = self.pos;
        // The common string (base64, a name): printable ASCII up to the closing quote,
        // found with one vectorised search.
        let rest = &self.b[start..];
        if let Some(end) = memchr::memchr2(b'"', b'\\', rest) {
            let raw = &rest[..end];
            if rest[end] == b'"' && raw.iter().all(|&b| (0x20..0x80).contains(&b)) {
                self.pos = start + end + 1;
                return Ok(JsonStr {
                    raw,
                    value: StrBuf::Borrowed(raw),
                });
            }
        }
        let mut escaped = false;
        let mut non_ascii = false;
        loop {
            match self.next().ok_or(())? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    match self.next().ok_or(())? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            for _ in 0..4 {
                                hex_val(self.next().ok_or(())?).ok_or(())?;
                            }
                        }
                        _ => return Err(()),
                    }
                }
                0..=0x1f => return Err(()),
                0x80..=0xff => non_ascii = true,
                _ => {}
            }
        }
        let raw = &self.b[start..self.pos - 1];
        let value = if !escaped && (!non_ascii || std::str::from_utf8(raw).is_ok()) {
            StrBuf::Borrowed(raw)
        } else {
            StrBuf::Owned(unquote(raw))
        };
        Ok(JsonStr { raw, value })
    }

    /// Validates and skips one value of any type, without recursion.
    fn skip_value(&mut self) -> Result<(), ()> {
        // true = object, false = array.
        let mut stack: Vec<bool> = Vec::new();
        loop {
            self.ws();
            match self.peek().ok_or(())? {
                b'{' => {
                    // Go counts every container, empty ones included.
                    if stack.len() >= MAX_DEPTH {
                        return Err(());
                    }
                    self.pos += 1;
                    self.ws();
                    if !self.eat(b'}') {
                        stack.push(true);
                        self.member_name()?;
                        continue;
                    }
                }
                b'[' => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(());
                    }
                    self.pos += 1;
                    self.ws();
                    if !self.eat(b']') {
                        stack.push(false);
                        continue;
                    }
                }
                b'"' => {
                    self.string()?;
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return Err(()),
            }
            // A value is complete: close containers or go on with the next element.
            loop {
                let Some(&is_object) = stack.last() else {
                    return Ok(());
                };
                self.ws();
                match (self.next().ok_or(())?, is_object) {
                    (b',', true) => {
                        self.ws();
                        self.member_name()?;
                        break;
                    }
                    (b',', false) => break,
                    (b'}', true) | (b']', false) => {
                        stack.pop();
                    }
                    _ => return Err(()),
                }
            }
        }
    }

    /// `"name" :` inside an object being skipped.
    fn member_name(&mut self) -> Result<(), ()> {
        if self.peek() != Some(b'"') {
            return Err(());
        }
        self.string()?;
        self.ws();
        self.expect(b':')
    }
}

/// Unescapes a validated string body like Go's `unquote`: escapes decoded, surrogate
/// pairs combined, lone surrogates and each invalid UTF-8 byte replaced by U+FFFD.
fn unquote(raw: &[u8]) -> SecretVec {
    // Each input byte yields at most 3 output bytes; reserving up front avoids
    // reallocation (and thereby unwiped copies).
    let mut out = SecretVec::with_capacity(raw.len().saturating_mul(3));
    let v = out.as_mut_vec();
    let mut buf = [0u8; 4];
    let u4 = |s: &[u8]| -> Option<u32> {
        if s.len() < 6 || s[0] != b'\\' || s[1] != b'u' {
            return None;
        }
        s[2..6]
            .iter()
            .try_fold(0u32, |acc, &c| Some(acc * 16 + hex_val(c)?))
    };
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        if c == b'\\' {
            let e = raw.get(i + 1).copied().unwrap_or(b'\\');
            let simple = match e {
                b'"' => Some(b'"'),
                b'\\' => Some(b'\\'),
                b'/' => Some(b'/'),
                b'b' => Some(0x08),
                b'f' => Some(0x0c),
                b'n' => Some(b'\n'),
                b'r' => Some(b'\r'),
                b't' => Some(b'\t'),
                _ => None,
            };
            if let Some(s) = simple {
                v.push(s);
                i += 2;
                continue;
            }
            let Some(r) = u4(&raw[i..]) else {
                // Unreachable for validated input; be defensive.
                v.extend_from_slice("\u{FFFD}".as_bytes());
                i += 1;
                continue;
            };
            i += 6;
            let ch = if (0xD800..0xE000).contains(&r) {
                match u4(&raw[i..]) {
                    Some(r2) if r < 0xDC00 && (0xDC00..0xE000).contains(&r2) => {
                        i += 6;
                        char::from_u32(0x10000 + ((r - 0xD800) << 10) + (r2 - 0xDC00))
                    }
                    _ => None,
                }
            } else {
                char::from_u32(r)
            };
            v.extend_from_slice(ch.unwrap_or('\u{FFFD}').encode_utf8(&mut buf).as_bytes());
        } else if c < 0x80 {
            v.push(c);
            i += 1;
        } else {
            let width = match c {
                0xC2..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF4 => 4,
                _ => 0,
            };
            match raw.get(i..i + width).filter(|_| width > 0) {
                Some(seq) if std::str::from_utf8(seq).is_ok() => {
                    v.extend_from_slice(seq);
                    i += width;
                }
                _ => {
                    v.extend_from_slice("\u{FFFD}".as_bytes());
                    i += 1;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    type Member = (Vec<u8>, Option<Vec<u8>>);

    fn members(input: &[u8]) -> Result<Vec<Member>, ()> {
        let mut out = Vec::new();
        decode_object(input, |name, value| {
            let v = match value {
                Value::Str(s) => Some(s.bytes().to_vec()),
                Value::Null => None,
                Value::Other => Some(b"<other>".to_vec()),
            };
            out.push((name.bytes().to_vec(), v));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn validity() {
        for ok in [
            "{}",
            " { } ",
            "null",
            "[]",
            "[1,2,[3,{\"a\":[]}]]",
            "\"x\"",
            "-0.5e+10",
            "0",
            "true",
            "{\"a\":{\"b\":{\"c\":null}},\"d\":[true,false]}",
            "\"\\u00e9\\ud83d\\ude00\\/\"",
            "1E400",
        ] {
            assert!(is_valid(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "{",
            "}",
            "{,}",
            "{\"a\":1,}",
            "[1,]",
            "[1 2]",
            "{\"a\" 1}",
            "{a:1}",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "+1",
            "tru",
            "nul",
            "\"\\x\"",
            "\"\\u12g4\"",
            "\"a\nb\"",
            "{} {}",
            "'a'",
            "[1]]",
            "{\"a\":1}}",
            "{\"a\":[1}",
        ] {
            assert!(!is_valid(bad.as_bytes()), "{bad}");
        }
        let deep_ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(is_valid(deep_ok.as_bytes()));
        let too_deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(!is_valid(too_deep.as_bytes()));
        assert!(!is_valid("[".repeat(1_000_000).as_bytes()));
    }

    #[test]
    fn object_members_in_order() {
        let m = members(br#"{"a":"x","B":null,"c":[1,{"d":2}],"a":"y\n\u0041"}"#).unwrap();
        assert_eq!(
            m,
            vec![
                (b"a".to_vec(), Some(b"x".to_vec())),
                (b"B".to_vec(), None),
                (b"c".to_vec(), Some(b"<other>".to_vec())),
                (b"a".to_vec(), Some(b"y\nA".to_vec())),
            ]
        );
        assert_eq!(decode_object(b" null ", |_, _| Err(())), Ok(false));
        assert_eq!(decode_object(b"[]", |_, _| Ok(())), Err(()));
        assert_eq!(decode_object(b"\"s\"", |_, _| Ok(())), Err(()));
        assert_eq!(decode_object(b"{} x", |_, _| Ok(())), Err(()));
        assert_eq!(decode_object(b"{\"a\":1", |_, _| Ok(())), Err(()));
    }

    #[test]
    fn unquote_like_go() {
        let m = members(b"{\"k\":\"\\ud800x\\udc00\\ud83d\\ude00\xff\xe2\x82A\xc3\xa9\"}").unwrap();
        let expected = "\u{FFFD}x\u{FFFD}\u{1F600}\u{FFFD}\u{FFFD}\u{FFFD}A\u{e9}";
        assert_eq!(m[0].1.as_deref(), Some(expected.as_bytes()));
        // High surrogate followed by a non-low escape: both decoded separately.
        let m = members(br#"{"k":"\ud800\u0041"}"#).unwrap();
        assert_eq!(m[0].1.as_deref(), Some("\u{FFFD}A".as_bytes()));
    }

    #[test]
    fn go_name_folding() {
        assert!(name_eq(b"bytes", "bytes"));
        assert!(name_eq(b"BYTES", "bytes"));
        assert!(name_eq(b"ByTeS", "bytes"));
        assert!(name_eq("byte\u{017F}".as_bytes(), "bytes"));
        assert!(name_eq("\u{0131}v".as_bytes(), "iv"));
        assert!(name_eq("\u{0130}D".as_bytes(), "id"));
        assert!(name_eq("created_AT".as_bytes(), "created_at"));
        assert!(!name_eq(b"byte", "bytes"));
        assert!(!name_eq(b"bytess", "bytes"));
        assert!(!name_eq(b"b\xffytes", "bytes"));
        assert!(!name_eq("créated_at".as_bytes(), "created_at"));
        assert!(!name_eq(b"created-at", "created_at"));
    }

    #[test]
    fn base64_like_go() {
        let mut out = Vec::new();
        assert!(decode_base64_into(b"", &mut out) && out.is_empty());
        assert!(decode_base64_into(b"AAEC", &mut out) && out == [0, 1, 2]);
        assert!(decode_base64_into(b"AA\r\nE=\n", &mut out) && out == [0, 1]);
        assert!(decode_base64_into(b"Zh==", &mut out) && out == b"f"); // non-zero trailing bits
        assert!(decode_base64_into(b"+/+/", &mut out) && out == [0xfb, 0xff, 0xbf]);
        for bad in [
            &b"A"[..],
            b"AA",
            b"AAA",
            b"AA=",
            b"AA==AA==",
            b"-_-_",
            b"AA A",
            b"AAA=\x00",
            b"====",
        ] {
            assert!(
                !decode_base64_into(bad, &mut out),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
            assert!(out.is_empty());
        }
    }
}
