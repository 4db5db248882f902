//! JSON in and out of the API: a lenient request-body reader on simd-json and a small writer
//! that produces the exact bytes Go's `encoding/json` produces.
//!
//! Request bodies follow Go's `json.NewDecoder(body).Decode(&v)`: only the first JSON value is
//! read and whatever follows it (more JSON, garbage) is never looked at; a top-level `null`
//! leaves every member absent; member names match case-insensitively, unknown members are
//! ignored, the last duplicate wins and `null` means "absent". Binary members are standard
//! base64 with padding; `\r` and `\n` inside them are ignored as Go does.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use simd_json::prelude::*;

use crate::json::{decode_first_object, name_eq, JsonStr, Value};
use crate::secret::SecretVec;

/// Why a request body could not be read. The API layer maps every variant to the route's
/// "invalid request body" message; the variants exist for tests and debug logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON, or not a JSON object.
    Syntax,
    /// A member had the wrong JSON type (e.g. a number where a string belongs).
    Type,
    /// A binary member was not valid padded standard base64.
    Base64,
}

/// Reusable parser state, one per connection, so steady-state parsing does not allocate.
pub struct JsonParser {
    buffers: simd_json::Buffers,
    /// The tape is kept between calls (emptied, with its lifetime reset) so that parsing a
    /// body does not allocate once the buffers have grown.
    tape: Option<simd_json::Tape<'static>>,
}

impl Default for JsonParser {
    fn default() -> Self {
        JsonParser {
            buffers: simd_json::Buffers::new(1024),
            tape: None,
        }
    }
}

/// Bodies up to this size (the first value of them) are read by the crate's scalar reader
/// ([`crate::crypto::envelope`]'s, the one secret bodies use): for the small bodies of the
/// crypto routes (`{"context":"..."}`, a DEK's ciphertext: tens to hundreds of bytes) it costs
/// a fraction of simd-json's setup. Larger bodies, and bodies whose wanted strings must be
/// unescaped or that are not ASCII, go to simd-json.
pub const SCALAR_BODY_BYTES_MAX: usize = 4 * 1024;

impl JsonParser {
    /// Parses `body` (modified in place by simd-json) as a JSON object and returns, for each
    /// name in `names`, the string value of the last member whose name matches it
    /// case-insensitively. `null` and absent members give `None`.
    pub fn string_members<'a, const N: usize>(
        &mut self,
        body: &'a mut [u8],
        names: [&str; N],
    ) -> Result<[Option<&'a str>; N], BodyError> {
        if body.len() <= SCALAR_BODY_BYTES_MAX {
            if let Some(found) = scalar_string_members(body, names) {
                let body: &'a [u8] = body;
                return found.map(|ranges| {
                    ranges.map(|r| {
                        // The ranges cut ASCII input at quotes: always UTF-8.
                        r.and_then(|(start, end)| std::str::from_utf8(&body[start..end]).ok())
                    })
                });
            }
        }
        self.simd_string_members(body, names)
    }

    /// [`string_members`](Self::string_members) on simd-json, whatever the body's size.
    pub fn simd_string_members<'a, const N: usize>(
        &mut self,
        body: &'a mut [u8],
        names: [&str; N],
    ) -> Result<[Option<&'a str>; N], BodyError> {
        let mut tape: simd_json::Tape<'a> = self
            .tape
            .take()
            .unwrap_or_else(simd_json::Tape::null)
            .reset();
        let first = first_value_len(body);
        let body = &mut body[..first];
        let result = simd_json::fill_tape(body, &mut self.buffers, &mut tape)
            .map_err(|_| BodyError::Syntax)
            .and_then(|()| Self::members(&tape, names));
        self.tape = Some(tape.reset());
        result
    }

    fn members<'a, const N: usize>(
        tape: &simd_json::Tape<'a>,
        names: [&str; N],
    ) -> Result<[Option<&'a str>; N], BodyError> {
        let value = tape.as_value();
        let mut found: [Option<&'a str>; N] = [None; N];
        if value.is_null() {
            // Decoding `null` into a Go struct is a no-op.
            return Ok(found);
        }
        let object = value.as_object().ok_or(BodyError::Syntax)?;
        for (member, value) in object.iter() {
            let Some(slot) = names.iter().position(|n| n.eq_ignore_ascii_case(member)) else {
                continue;
            };
            if value.is_null() {
                found[slot] = None;
                continue;
            }
            found[slot] = Some(value.into_string().ok_or(BodyError::Type)?);
        }
        Ok(found)
    }
}

/// Reads the first value of `body` as a JSON object with Go's rules (what follows it is never
/// looked at) and hands `apply` every member whose name matches one of `names` (Go's case
/// folding): the name's index and the string, `None` for `null`, in document order, so the
/// last duplicate wins. A wanted member of another type is reported after the whole value is
/// read, so that a later syntax error wins as it does on simd-json.
fn wanted_members<'a, const N: usize>(
    body: &'a [u8],
    names: [&str; N],
    mut apply: impl FnMut(usize, Option<JsonStr<'a>>),
) -> Result<(), BodyError> {
    let mut type_error = false;
    let decoded = decode_first_object(body, |name, value| {
        let Some(slot) = names.iter().position(|n| name_eq(name.bytes(), n)) else {
            return Ok(());
        };
        match value {
            Value::Null => apply(slot, None),
            Value::Str(s) => apply(slot, Some(s)),
            Value::Other => type_error = true,
        }
        Ok(())
    });
    match decoded {
        Err(()) => Err(BodyError::Syntax),
        Ok(_) if type_error => Err(BodyError::Type),
        // `Ok(false)`: a top-level `null`, a no-op in Go.
        Ok(_) => Ok(()),
    }
}

/// Where a member's string value lies in the body: `start..end`.
type Range = (usize, usize);

/// The scalar reading of a small body: for each name, the byte range of the last matching
/// member's string in `body` (`None`: absent or `null`). `None` overall when simd-json must
/// decide instead: the body is not ASCII (simd-json refuses invalid UTF-8 where Go would not),
/// or a wanted string holds escapes (simd-json unescapes in place).
fn scalar_string_members<const N: usize>(
    body: &[u8],
    names: [&str; N],
) -> Option<Result<[Option<Range>; N], BodyError>> {
    if !body.is_ascii() {
        return None;
    }
    let base = body.as_ptr() as usize;
    let mut found: [Option<Range>; N] = [None; N];
    let mut escaped = false;
    let read = wanted_members(body, names, |slot, value| {
        found[slot] = value.map(|s| {
            escaped |= !s.is_as_written();
            let start = s.raw.as_ptr() as usize - base;
            (start, start + s.raw.len())
        });
    });
    if escaped {
        return None;
    }
    Some(read.map(|()| found))
}

/// Reads the named string members of a body that carries secrets (import's `key`, encrypt's
/// `plaintext`). simd-json copies its input into internal buffers that it frees without
/// wiping, so these bodies go through the crate's zero-copy Go-compatible decoder instead;
/// every copy made here is a [`SecretVec`]. Same rules as [`JsonParser::string_members`].
pub fn secret_members<const N: usize>(
    body: &[u8],
    names: [&str; N],
) -> Result<[Option<SecretVec>; N], BodyError> {
    let mut found: [Option<SecretVec>; N] = std::array::from_fn(|_| None);
    wanted_members(body, names, |slot, value| {
        found[slot] = value.map(|s| SecretVec::new(s.bytes().to_vec()));
    })?;
    Ok(found)
}

/// How many bytes of `body` Go's `json.Decoder.Decode` consumes: leading whitespace and the
/// first value. Its scanner stops at the `}` or `]` that closes the first object or array
/// (or right after a first `null`) without looking further, so trailing bytes of any kind are
/// ignored. Other first values are not objects and fail as request bodies anyway, and a first
/// value that never ends is an error: both give the whole body, for the parser to reject.
/// Does not allocate.
pub fn first_value_len(body: &[u8]) -> usize {
    let start = body
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .unwrap_or(body.len());
    let rest = &body[start..];
    if rest.starts_with(b"null") {
        return start + 4;
    }
    if !matches!(rest.first(), Some(b'{' | b'[')) {
        return body.len();
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in rest.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return start + i + 1;
                }
            }
            _ => {}
        }
    }
    body.len()
}

/// Decodes a base64 member into `out` (cleared first). Go ignores CR and LF inside base64.
pub fn decode_base64_into(text: &str, out: &mut Vec<u8>) -> Result<(), BodyError> {
    out.clear();
    if text.is_empty() {
        return Ok(()); // an empty context, the most common one
    }
    if text.bytes().any(|b| b == b'\r' || b == b'\n') {
        let cleaned: Vec<u8> = text.bytes().filter(|&b| b != b'\r' && b != b'\n').collect();
        return BASE64
            .decode_vec(&cleaned, out)
            .map_err(|_| BodyError::Base64);
    }
    BASE64.decode_vec(text, out).map_err(|_| BodyError::Base64)
}

/// Decodes a base64 member that holds secret bytes (key material, plaintext to encrypt).
pub fn decode_base64_secret(text: &[u8]) -> Result<SecretVec, BodyError> {
    let mut out = SecretVec::with_capacity(text.len() / 4 * 3 + 3);
    let text = std::str::from_utf8(text).map_err(|_| BodyError::Base64)?;
    decode_base64_into(text, out.as_mut_vec())?;
    Ok(out)
}

/// Builds a JSON value into a byte buffer the way Go's encoder writes it.
pub struct JsonWriter<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> JsonWriter<'a> {
    /// Starts an object in `out`.
    pub fn object(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        JsonWriter { out, first: true }
    }

    /// Writes `"name":`. Member names are our own identifiers (ASCII letters, digits, `_`,
    /// `.`, `-`), which need no escaping: copied as they are.
    fn key(&mut self, name: &str) {
        debug_assert!(
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')),
            "member name {name:?} would need escaping"
        );
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.reserve(name.len() + 3);
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    pub fn string(&mut self, name: &str, value: &str) -> &mut Self {
        self.key(name);
        write_string(self.out, value);
        self
    }

    pub fn base64(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.key(name);
        self.out.push(b'"');
        let start = self.out.len();
        let encoded_len = value.len().div_ceil(3) * 4;
        self.out.resize(start + encoded_len, 0);
        // The buffer was sized exactly for the encoding, so this cannot fail.
        let written = BASE64
            .encode_slice(value, &mut self.out[start..])
            .unwrap_or(0);
        debug_assert_eq!(written, encoded_len);
        self.out.truncate(start + written);
        self.out.push(b'"');
        self
    }

    pub fn uint(&mut self, name: &str, value: u64) -> &mut Self {
        self.key(name);
        let mut buf = itoa_buf();
        self.out.extend_from_slice(format_u64(value, &mut buf));
        self
    }

    pub fn bool(&mut self, name: &str, value: bool) -> &mut Self {
        self.key(name);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
        self
    }

    /// A member whose value the caller writes raw (nested objects, arrays).
    pub fn raw(&mut self, name: &str, json: &[u8]) -> &mut Self {
        self.key(name);
        self.out.extend_from_slice(json);
        self
    }

    pub fn string_array<'s>(
        &mut self,
        name: &str,
        values: impl IntoIterator<Item = &'s str>,
    ) -> &mut Self {
        self.key(name);
        write_string_array(self.out, values);
        self
    }

    /// Like [`string_array`](Self::string_array) for listings that may be long: see
    /// [`write_string_array_sliced`].
    pub async fn string_array_sliced<'s>(
        &mut self,
        name: &str,
        values: impl IntoIterator<Item = &'s str>,
    ) -> &mut Self {
        self.key(name);
        write_string_array_sliced(self.out, values).await;
        self
    }

    /// Closes the object and appends Go's trailing newline.
    pub fn finish(self) {
        self.out.extend_from_slice(b"}\n");
    }
}

/// Writes `["a","b"]`.
pub fn write_string_array<'s>(out: &mut Vec<u8>, values: impl IntoIterator<Item = &'s str>) {
    out.push(b'[');
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(out, v);
    }
    out.push(b']');
}

/// Entries written between two chances to yield in [`write_string_array_sliced`].
pub const LIST_SLICE_ENTRIES: usize = 256;

/// Writes `["a","b"]` like [`write_string_array`], offering the core to other tasks every
/// [`LIST_SLICE_ENTRIES`] entries (`rt::yield_if_needed`: a real yield only once this
/// task has used up its time slice), so that a listing of 50 000 keys does not stall every
/// other connection on the core. Outside an executor it never yields.
pub async fn write_string_array_sliced<'s>(
    out: &mut Vec<u8>,
    values: impl IntoIterator<Item = &'s str>,
) {
    out.push(b'[');
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
            if i % LIST_SLICE_ENTRIES == 0 {
                crate::rt::yield_if_needed().await;
            }
        }
        write_string(out, v);
    }
    out.push(b']');
}

/// Bytes that end a run copied as it is in [`write_string`]: those Go escapes, and 0xE2 (the
/// first byte of U+2028 and U+2029).
const ENDS_RUN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = true;
        b += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[b'<' as usize] = true;
    t[b'>' as usize] = true;
    t[b'&' as usize] = true;
    t[0xe2] = true;
    t
};

/// Writes a JSON string with Go's escaping: `"`, `\\`, control characters, and `<`, `>`, `&`
/// as `\u003c`, `\u003e`, `\u0026`; U+2028 and U+2029 as `\u2028`, `\u2029`. Runs of bytes
/// that need no escaping (all of a typical name or value) are copied in one piece: one table
/// look-up per byte instead of a chain of comparisons.
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !ENDS_RUN[b as usize] {
            i += 1;
            continue;
        }
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0xe2 => {
                if bytes.get(i + 1) == Some(&0x80)
                    && matches!(bytes.get(i + 2), Some(0xa8) | Some(0xa9))
                {
                    out.extend_from_slice(&bytes[start..i]);
                    out.extend_from_slice(if bytes[i + 2] == 0xa8 {
                        b"\\u2028"
                    } else {
                        b"\\u2029"
                    });
                    i += 3;
                    start = i;
                } else {
                    i += 1;
                }
                continue;
            }
            _ => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ],
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// The error body exactly as the reference writes it: `{"message":"…"` LF `}`.
pub fn write_error_body(out: &mut Vec<u8>, message: &str) {
    out.extend_from_slice(b"{\"message\":");
    write_string(out, message);
    out.extend_from_slice(b"\n}");
}

fn itoa_buf() -> [u8; 20] {
    [0u8; 20]
}

/// Formats `v` in decimal into `buf`, returning the digits.
pub fn format_u64(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_case_insensitive_last_wins_and_null_is_absent() {
        let mut p = JsonParser::default();
        let mut body =
            br#"{"Context":"YQ==","PLAINTEXT":"first","plaintext":"second","x":5}"#.to_vec();
        let [ctx, pt] = p
            .string_members(&mut body, ["context", "plaintext"])
            .unwrap();
        assert_eq!(ctx, Some("YQ=="));
        assert_eq!(pt, Some("second"));

        let mut body = br#"{"context":null}"#.to_vec();
        let [ctx] = p.string_members(&mut body, ["context"]).unwrap();
        assert_eq!(ctx, None);
    }

    #[test]
    fn wrong_shapes_are_errors() {
        let mut p = JsonParser::default();
        for (input, err) in [
            (&b"[1]"[..], BodyError::Syntax),
            (b"{", BodyError::Syntax),
            (b"", BodyError::Syntax),
            (br#"{"context":5}"#, BodyError::Type),
        ] {
            let mut body = input.to_vec();
            assert_eq!(
                p.string_members(&mut body, ["context"]).unwrap_err(),
                err,
                "{input:?}"
            );
        }
    }

    /// Small bodies are read by the scalar reader, large ones and the odd ones by simd-json:
    /// both give the same answer for the same body.
    #[test]
    fn the_scalar_and_simd_readers_agree() {
        fn owned(
            r: Result<[Option<&str>; 2], BodyError>,
        ) -> Result<[Option<String>; 2], BodyError> {
            r.map(|v| v.map(|s| s.map(str::to_owned)))
        }
        let mut p = JsonParser::default();
        let pad = " ".repeat(SCALAR_BODY_BYTES_MAX);
        for input in [
            r#"{"ciphertext":"YWJj","context":"ZGVm"}"#,
            r#"{"context":""}"#,
            r#"{}"#,
            r#"null"#,
            r#"{"CONTEXT":"a","Ciphertext":null,"context":"b"}"#,
            r#"{"context":"a\/b","ciphertext":"\u0041"}"#,
            r#"{"\u0063ontext":"x"}"#,
            r#"{"other":{"a":[1,2.5e3,true,false,null,"s"]},"context":"y"}"#,
            r#"{"context":5}"#,
            r#"{"context":[],"x":}"#,
            r#"{"context":"a" "#,
            "{\"context\":\"caf\u{e9}\"}",
            r#"{"context":"\t"}"#,
        ] {
            let mut small = input.as_bytes().to_vec();
            let mut simd = small.clone();
            let names = ["context", "ciphertext"];
            let a = owned(p.string_members(&mut small, names));
            let b = owned(p.simd_string_members(&mut simd, names));
            assert_eq!(a, b, "{input}");
            // The same body padded past the scalar limit goes to simd-json: same answer.
            let mut large = format!("{pad}{input}").into_bytes();
            assert_eq!(owned(p.string_members(&mut large, names)), a, "{input}");
        }
    }

    /// Go's `json.NewDecoder(r).Decode(&v)` reads the first value only: what follows it is
    /// ignored, even garbage or a second object; a first `null` sets nothing.
    #[test]
    fn only_the_first_value_is_read_like_gos_decoder() {
        let mut p = JsonParser::default();
        for input in [
            &br#"{"context":"YQ=="}garbage"#[..],
            br#"{"context":"YQ=="} {"context":"Yg=="}"#,
            b"{\"context\":\"YQ==\"}\n\x00\xff",
            br#"  {"context":"YQ==","x":{"y":["}",{}]},"z":"\"}"}]]]"#,
            br#"{"context":"YQ=="}}"#,
        ] {
            let mut body = input.to_vec();
            assert_eq!(
                p.string_members(&mut body, ["context"]),
                Ok([Some("YQ==")]),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            let [ctx] = secret_members(input, ["context"]).unwrap();
            assert_eq!(ctx.unwrap().expose(), b"YQ==");
        }
        for input in [&b"null"[..], b" null garbage", b"nullx"] {
            let mut body = input.to_vec();
            assert_eq!(p.string_members(&mut body, ["context"]), Ok([None]));
            let [ctx] = secret_members(input, ["context"]).unwrap();
            assert!(ctx.is_none());
        }
        // The first value itself must still be a complete, valid object.
        for input in [
            &b"garbage{}"[..],
            br#"{"context":"YQ==""#,
            br#"{"context":"YQ==",}x"#,
            br#"{"context" "YQ=="}x"#,
            b"nul",
            b"\"str\"{}",
            b"",
        ] {
            let mut body = input.to_vec();
            assert_eq!(
                p.string_members(&mut body, ["context"]),
                Err(BodyError::Syntax),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert!(secret_members(input, ["context"]).is_err());
        }
    }

    /// A long listing is written exactly as in one piece, but lets other tasks of the core
    /// run while it is being written.
    #[test]
    fn long_arrays_are_written_in_slices_that_yield() {
        use std::cell::Cell;
        use std::rc::Rc;
        crate::rt::block_on(async {
            let names: Vec<String> = (0..300_000).map(|i| format!("key-{i:06}")).collect();
            // Another task of the core, counting how often it gets to run.
            let runs = Rc::new(Cell::new(0u64));
            let stop = Rc::new(Cell::new(false));
            let other = {
                let (runs, stop) = (runs.clone(), stop.clone());
                crate::rt::spawn_local(async move {
                    while !stop.get() {
                        runs.set(runs.get() + 1);
                        futures_lite::future::yield_now().await;
                    }
                })
            };
            futures_lite::future::yield_now().await;
            let before = runs.get();
            let mut out = Vec::new();
            write_string_array_sliced(&mut out, names.iter().map(String::as_str)).await;
            assert!(
                runs.get() > before,
                "no other task of the core ran while the listing was written"
            );
            stop.set(true);
            other.await;
            let mut whole = Vec::new();
            write_string_array(&mut whole, names.iter().map(String::as_str));
            assert_eq!(out, whole);
        });
    }

    #[test]
    fn base64_rules() {
        let mut out = Vec::new();
        decode_base64_into("aGVs\r\nbG8=", &mut out).unwrap();
        assert_eq!(out, b"hello");
        assert_eq!(
            decode_base64_into("aGVsbG8", &mut out),
            Err(BodyError::Base64)
        );
        assert_eq!(
            decode_base64_into("aGV-bG8=", &mut out),
            Err(BodyError::Base64)
        );
        decode_base64_into("", &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn go_string_escaping() {
        let mut out = Vec::new();
        write_string(&mut out, "a<b>&\"\\\n\u{1}\u{2028}é");
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#""a\u003cb\u003e\u0026\"\\\n\u0001\u2028é""#
        );
        // Other characters starting with 0xE2 (€, U+2029 at the end, a lone …) stay as they are
        // or are escaped like Go's encoder does.
        out.clear();
        write_string(&mut out, "€ 5 … \u{2029}");
        assert_eq!(std::str::from_utf8(&out).unwrap(), r#""€ 5 … \u2029""#);
    }

    #[test]
    fn error_body_matches_reference_bytes() {
        let mut out = Vec::new();
        write_error_body(&mut out, "key already exists");
        assert_eq!(out, b"{\"message\":\"key already exists\"\n}");
        assert_eq!(out.len(), 33);
    }

    #[test]
    fn writer_builds_objects() {
        let mut out = Vec::new();
        let mut w = JsonWriter::object(&mut out);
        w.base64("plaintext", b"hi").uint("n", 1234).bool("b", true);
        w.string_array("names", ["a", "b"]);
        w.finish();
        assert_eq!(
            out,
            b"{\"plaintext\":\"aGk=\",\"n\":1234,\"b\":true,\"names\":[\"a\",\"b\"]}\n"
        );
    }
}
