//! Chunked request bodies (RFC 9112 §7.1), decoded incrementally: bytes can arrive split at
//! any point, and the decoder never consumes past the end of the body, so a pipelined next
//! request stays in the buffer.

use super::HttpError;

/// A chunk-size line (size + extensions) longer than this is refused.
pub const CHUNK_LINE_BYTES_MAX: usize = 1024;
/// The trailer section after the last chunk, in bytes.
pub const TRAILER_BYTES_MAX: usize = 8 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum State {
    /// Reading the chunk-size line; `line_bytes` so far.
    #[default]
    Size,
    /// Reading chunk data; bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataCr,
    DataLf,
    /// Reading trailer lines after the last chunk.
    Trailer,
    Done,
}

/// Incremental decoder; `reset` before each body.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    size_digits: usize,
    in_extension: bool,
    saw_cr: bool,
    line_bytes: usize,
    trailer_bytes: usize,
    trailer_line_empty: bool,
}

impl ChunkedDecoder {
    pub fn reset(&mut self) {
        *self = ChunkedDecoder::default();
    }

    /// Decodes from `input`, appending payload to `out`. Returns the bytes consumed and
    /// whether the body (last chunk and trailers) is complete.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        body_bytes_max: usize,
    ) -> Result<(usize, bool), HttpError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done => return Ok((i, true)),
                State::Size => {
                    let b = input[i];
                    i += 1;
                    self.line_bytes += 1;
                    if self.line_bytes > CHUNK_LINE_BYTES_MAX {
                        return Err(HttpError::BadChunk("chunk size line too long"));
                    }
                    if self.saw_cr {
                        if b != b'\n' {
                            return Err(HttpError::BadChunk("expected LF after CR"));
                        }
                        if self.size_digits == 0 {
                            return Err(HttpError::BadChunk("missing chunk size"));
                        }
                        self.saw_cr = false;
                        self.line_bytes = 0;
                        self.in_extension = false;
                        self.size_digits = 0;
                        if self.size == 0 {
                            self.state = State::Trailer;
                            self.trailer_line_empty = true;
                        } else {
                            // Subtract instead of add: a chunk size near u64::MAX must not overflow.
                            if self.size > body_bytes_max.saturating_sub(out.len()) as u64 {
                                return Err(HttpError::BodyTooLarge);
                            }
                            self.state = State::Data(self.size);
                        }
                        continue;
                    }
                    if b == b'\r' {
                        self.saw_cr = true;
                    } else if self.in_extension {
                        if b == b'\n' || b == 0 {
                            return Err(HttpError::BadChunk("bad chunk extension"));
                        }
                    } else if b == b';' {
                        self.in_extension = true;
                    } else if b == b' ' || b == b'\t' {
                        // Whitespace before an extension (BWS).
                        self.in_extension = self.size_digits > 0;
                        if !self.in_extension {
                            return Err(HttpError::BadChunk("bad chunk size"));
                        }
                    } else {
                        let digit = (b as char)
                            .to_digit(16)
                            .ok_or(HttpError::BadChunk("bad chunk size"))?;
                        self.size = self
                            .size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(u64::from(digit)))
                            .ok_or(HttpError::BadChunk("chunk size overflows"))?;
                        self.size_digits += 1;
                    }
                }
                State::Data(left) => {
                    let n = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    out.extend_from_slice(&input[i..i + n]);
                    i += n;
                    let left = left - n as u64;
                    if left == 0 {
                        self.size = 0;
                        self.state = State::DataCr;
                    } else {
                        self.state = State::Data(left);
                    }
                }
                State::DataCr => {
                    if input[i] != b'\r' {
                        return Err(HttpError::BadChunk("missing CRLF after chunk data"));
                    }
                    i += 1;
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if input[i] != b'\n' {
                        return Err(HttpError::BadChunk("missing CRLF after chunk data"));
                    }
                    i += 1;
                    self.state = State::Size;
                }
                State::Trailer => {
                    let b = input[i];
                    i += 1;
                    self.trailer_bytes += 1;
                    if self.trailer_bytes > TRAILER_BYTES_MAX {
                        return Err(HttpError::BadChunk("trailer section too large"));
                    }
                    if self.saw_cr {
                        if b != b'\n' {
                            return Err(HttpError::BadChunk("expected LF after CR"));
                        }
                        self.saw_cr = false;
                        if self.trailer_line_empty {
                            self.state = State::Done;
                            return Ok((i, true));
                        }
                        self.trailer_line_empty = true;
                    } else if b == b'\r' {
                        self.saw_cr = true;
                    } else if b == b'\n' {
                        return Err(HttpError::BadChunk("bare LF in trailer"));
                    } else {
                        self.trailer_line_empty = false;
                    }
                }
            }
        }
        Ok((i, self.state == State::Done))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] =
        b"5\r\nhello\r\n7;name=value\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\nGET /next";

    #[test]
    fn decodes_and_stops_at_the_end() {
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        let (used, done) = d.decode(BODY, &mut out, 1000).unwrap();
        assert!(done);
        assert_eq!(out, b"hello, world");
        assert_eq!(&BODY[used..], b"GET /next");
    }

    #[test]
    fn every_split_gives_the_same_body() {
        let end = BODY.len() - b"GET /next".len();
        for cut in 0..=end {
            let mut d = ChunkedDecoder::default();
            let mut out = Vec::new();
            let (a, done_a) = d.decode(&BODY[..cut], &mut out, 1000).unwrap();
            assert_eq!(a, cut);
            assert!(!done_a || cut == end);
            let (b, done) = d.decode(&BODY[cut..], &mut out, 1000).unwrap();
            assert!(done, "cut {cut}");
            assert_eq!(a + b, end);
            assert_eq!(out, b"hello, world");
        }
    }

    #[test]
    fn errors() {
        let cases: [(&[u8], HttpError); 6] = [
            (b"zz\r\n", HttpError::BadChunk("bad chunk size")),
            (b"\r\n", HttpError::BadChunk("missing chunk size")),
            (
                b"3\r\nabcX",
                HttpError::BadChunk("missing CRLF after chunk data"),
            ),
            (
                b"fffffffffffffffff\r\n",
                HttpError::BadChunk("chunk size overflows"),
            ),
            (b"5\nhello", HttpError::BadChunk("bad chunk size")),
            (b"0\r\nX: y\n", HttpError::BadChunk("bare LF in trailer")),
        ];
        for (input, want) in cases {
            let mut d = ChunkedDecoder::default();
            assert_eq!(
                d.decode(input, &mut Vec::new(), 1000).unwrap_err(),
                want,
                "{input:?}"
            );
        }
        let mut long = vec![b'1'; 2];
        long.extend(std::iter::repeat_n(b';', CHUNK_LINE_BYTES_MAX));
        let mut d = ChunkedDecoder::default();
        assert_eq!(
            d.decode(&long, &mut Vec::new(), 1000).unwrap_err(),
            HttpError::BadChunk("chunk size line too long")
        );
    }

    #[test]
    fn limit_is_enforced_before_copying() {
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        assert_eq!(
            d.decode(b"a\r\n0123456789\r\n0\r\n\r\n", &mut out, 10)
                .unwrap(),
            (20, true)
        );
        d.reset();
        out.clear();
        assert_eq!(
            d.decode(b"b\r\n", &mut out, 10).unwrap_err(),
            HttpError::BodyTooLarge
        );
        d.reset();
        out.clear();
        assert_eq!(
            d.decode(b"6\r\n012345\r\n6\r\n", &mut out, 10).unwrap_err(),
            HttpError::BodyTooLarge
        );
        // A size near u64::MAX after some data: too large, not an overflow.
        d.reset();
        out.clear();
        assert_eq!(
            d.decode(b"1\r\na\r\nffffffffffffffff\r\n", &mut out, 10)
                .unwrap_err(),
            HttpError::BodyTooLarge
        );
    }

    #[test]
    fn random_input_never_panics() {
        let mut state: u64 = 0x2545f4914f6cdd1d;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"0123456789abcdefABCDEF;=\r\n xyz\t";
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let mut d = ChunkedDecoder::default();
            let mut out = Vec::new();
            if let Ok((used, _)) = d.decode(&input, &mut out, 16) {
                assert!(used <= input.len());
                assert!(out.len() <= 16);
            }
        }
    }
}
