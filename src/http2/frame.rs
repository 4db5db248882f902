//! HTTP/2 frames (RFC 9113 §4, §6): the 9-octet frame header, a parser per payload type that
//! checks the lengths, flags and stream ids the RFC fixes for that type, and writers that
//! append complete frames to a `Vec<u8>`.
//!
//! Parsers take the frame's header and its payload (the `header.length` octets after the
//! header; lengths are checked against `payload.len()`), never panic and return slices of the
//! payload. Checks that need connection state (stream states, the advertised
//! SETTINGS_MAX_FRAME_SIZE, CONTINUATION sequencing, flow-control windows) belong to the caller.
//!
//! Writers only grow the output vector; they never allocate anything else. Their lengths are
//! ours, not a peer's: a DATA payload or GOAWAY debug data must fit the peer's maximum frame
//! size (the caller splits DATA); header blocks are split into CONTINUATION frames here.

use super::{ErrorCode, DEFAULT_MAX_FRAME_BYTES, MAX_FRAME_BYTES_LIMIT, MAX_WINDOW_BYTES};
use super::{SETTINGS_ENABLE_PUSH, SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE};

/// Octets in a frame header.
pub const FRAME_HEADER_BYTES: usize = 9;

/// Frame type codes (RFC 9113 §6).
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags (RFC 9113 §6). Each is defined only for the frame types named.
pub mod flag {
    /// DATA, HEADERS: the last frame the sender sends on this stream.
    pub const END_STREAM: u8 = 0x1;
    /// SETTINGS, PING: this frame acknowledges the peer's.
    pub const ACK: u8 = 0x1;
    /// HEADERS, CONTINUATION: the header block ends in this frame.
    pub const END_HEADERS: u8 = 0x4;
    /// DATA, HEADERS: a pad length octet leads the payload and padding trails it.
    pub const PADDED: u8 = 0x8;
    /// HEADERS: 5 octets of priority information follow the pad length.
    pub const PRIORITY: u8 = 0x20;
}

/// Mask of the 31-bit stream id and window increment (the high "R" bit is reserved).
const STREAM_ID_MASK: u32 = 0x7fff_ffff;

/// A frame header (RFC 9113 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length in octets (24 bits).
    pub length: u32,
    /// Frame type, see [`kind`].
    pub kind: u8,
    /// Flags, see [`flag`].
    pub flags: u8,
    /// Stream id with the reserved bit cleared.
    pub stream_id: u32,
}

impl FrameHeader {
    /// Reads the header from the first 9 octets of `bytes`; `None` when fewer are there.
    pub fn parse(bytes: &[u8]) -> Option<FrameHeader> {
        let h: &[u8; FRAME_HEADER_BYTES] = bytes.get(..FRAME_HEADER_BYTES)?.try_into().ok()?;
        Some(FrameHeader {
            length: u32::from_be_bytes([0, h[0], h[1], h[2]]),
            kind: h[3],
            flags: h[4],
            stream_id: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & STREAM_ID_MASK,
        })
    }

    /// Appends the 9 header octets (length truncated to 24 bits, R bit cleared).
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }

    /// The 9 header octets.
    pub fn to_bytes(&self) -> [u8; FRAME_HEADER_BYTES] {
        let len = self.length.to_be_bytes();
        let id = (self.stream_id & STREAM_ID_MASK).to_be_bytes();
        [
            len[1], len[2], len[3], self.kind, self.flags, id[0], id[1], id[2], id[3],
        ]
    }

    /// Whether all of `flags` are set.
    pub fn has(&self, flags: u8) -> bool {
        self.flags & flags == flags
    }
}

/// Whether a frame error ends the whole connection (GOAWAY) or one stream (RST_STREAM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorScope {
    Connection,
    Stream,
}

/// Why a frame payload is invalid. [`FrameError::code`] and [`FrameError::scope`] say how to
/// answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// DATA, HEADERS, PRIORITY, RST_STREAM or CONTINUATION on stream 0.
    StreamIdZero { kind: u8 },
    /// SETTINGS, PING or GOAWAY on a stream other than 0.
    StreamIdNonZero { kind: u8 },
    /// PADDED flag on a payload too short to hold the pad length (and priority) octets.
    PaddedTooShort,
    /// The pad length is not smaller than what follows the pad length octet.
    PaddingTooLong { pad_bytes: u8 },
    /// PRIORITY flag on a HEADERS payload without the 5 priority octets.
    HeadersPriorityTooShort,
    /// A stream declares a dependency on itself (RFC 9113 §5.3.1).
    SelfDependency { stream_id: u32 },
    /// PRIORITY payload not exactly 5 octets.
    PriorityLength { length_bytes: usize },
    /// RST_STREAM payload not exactly 4 octets.
    RstStreamLength { length_bytes: usize },
    /// SETTINGS payload not a multiple of 6 octets.
    SettingsLength { length_bytes: usize },
    /// SETTINGS with ACK and a payload.
    SettingsAckWithPayload { length_bytes: usize },
    /// SETTINGS_ENABLE_PUSH other than 0 or 1.
    EnablePushInvalid { value: u32 },
    /// SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1.
    InitialWindowTooLarge { value_bytes: u32 },
    /// SETTINGS_MAX_FRAME_SIZE outside 16384..=16777215.
    MaxFrameSizeOutOfRange { value_bytes: u32 },
    /// PING payload not exactly 8 octets.
    PingLength { length_bytes: usize },
    /// GOAWAY payload shorter than 8 octets.
    GoawayTooShort { length_bytes: usize },
    /// WINDOW_UPDATE payload not exactly 4 octets.
    WindowUpdateLength { length_bytes: usize },
    /// WINDOW_UPDATE with an increment of 0.
    WindowUpdateZero { stream_id: u32 },
}

impl FrameError {
    /// The error code to send in GOAWAY or RST_STREAM.
    pub fn code(self) -> ErrorCode {
        use FrameError::*;
        match self {
            StreamIdZero { .. }
            | StreamIdNonZero { .. }
            | PaddingTooLong { .. }
            | SelfDependency { .. }
            | EnablePushInvalid { .. }
            | MaxFrameSizeOutOfRange { .. }
            | WindowUpdateZero { .. } => ErrorCode::ProtocolError,
            PaddedTooShort
            | HeadersPriorityTooShort
            | PriorityLength { .. }
            | RstStreamLength { .. }
            | SettingsLength { .. }
            | SettingsAckWithPayload { .. }
            | PingLength { .. }
            | GoawayTooShort { .. }
            | WindowUpdateLength { .. } => ErrorCode::FrameSizeError,
            InitialWindowTooLarge { .. } => ErrorCode::FlowControlError,
        }
    }

    /// Whether the error ends the connection or only the frame's stream.
    pub fn scope(self) -> ErrorScope {
        match self {
            // RFC 9113 §6.3: a PRIORITY frame of the wrong length is a stream error;
            // §5.3.1: so is a self-dependency; §6.9: so is a zero increment on a stream.
            FrameError::PriorityLength { .. } | FrameError::SelfDependency { .. } => {
                ErrorScope::Stream
            }
            FrameError::WindowUpdateZero { stream_id } if stream_id != 0 => ErrorScope::Stream,
            _ => ErrorScope::Connection,
        }
    }

    /// Whether the error ends the connection.
    pub fn is_connection_error(self) -> bool {
        self.scope() == ErrorScope::Connection
    }
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} ({:?})", self, self.code())
    }
}

impl std::error::Error for FrameError {}

fn require_stream(header: &FrameHeader) -> Result<(), FrameError> {
    match header.stream_id {
        0 => Err(FrameError::StreamIdZero { kind: header.kind }),
        _ => Ok(()),
    }
}

fn require_connection(header: &FrameHeader) -> Result<(), FrameError> {
    match header.stream_id {
        0 => Ok(()),
        _ => Err(FrameError::StreamIdNonZero { kind: header.kind }),
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    match bytes.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// Removes the pad length octet and the padding of a PADDED frame.
fn strip_padding<'a>(header: &FrameHeader, payload: &'a [u8]) -> Result<&'a [u8], FrameError> {
    if !header.has(flag::PADDED) {
        return Ok(payload);
    }
    let (&pad_bytes, rest) = payload.split_first().ok_or(FrameError::PaddedTooShort)?;
    // RFC 9113 §6.1: padding as long as the payload or longer is a PROTOCOL_ERROR.
    let keep = rest
        .len()
        .checked_sub(usize::from(pad_bytes))
        .ok_or(FrameError::PaddingTooLong { pad_bytes })?;
    Ok(&rest[..keep])
}

/// The data of a DATA frame, padding removed.
pub fn data_payload<'a>(header: &FrameHeader, payload: &'a [u8]) -> Result<&'a [u8], FrameError> {
    require_stream(header)?;
    strip_padding(header, payload)
}

/// Stream priority (RFC 9113 §5.3, deprecated but still parsed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    pub exclusive: bool,
    pub depends_on: u32,
    /// Weight minus one, as on the wire.
    pub weight: u8,
}

fn parse_priority(stream_id: u32, five: &[u8]) -> Result<Priority, FrameError> {
    let word = u32_at(five, 0);
    let priority = Priority {
        exclusive: word & !STREAM_ID_MASK != 0,
        depends_on: word & STREAM_ID_MASK,
        weight: five.get(4).copied().unwrap_or(0),
    };
    if priority.depends_on == stream_id {
        return Err(FrameError::SelfDependency { stream_id });
    }
    Ok(priority)
}

/// A HEADERS payload with padding and priority removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadersPayload<'a> {
    /// The header block fragment (complete when `end_headers`).
    pub fragment: &'a [u8],
    pub end_stream: bool,
    pub end_headers: bool,
    /// Present when the PRIORITY flag is set.
    pub priority: Option<Priority>,
}

/// Parses a HEADERS payload.
pub fn headers_payload<'a>(
    header: &FrameHeader,
    payload: &'a [u8],
) -> Result<HeadersPayload<'a>, FrameError> {
    require_stream(header)?;
    let mut fragment = strip_padding(header, payload)?;
    let mut priority = None;
    if header.has(flag::PRIORITY) {
        if fragment.len() < 5 {
            return Err(match header.has(flag::PADDED) {
                true if payload.len() < 6 => FrameError::PaddedTooShort,
                _ => FrameError::HeadersPriorityTooShort,
            });
        }
        let (five, rest) = fragment.split_at(5);
        priority = Some(parse_priority(header.stream_id, five)?);
        fragment = rest;
    }
    Ok(HeadersPayload {
        fragment,
        end_stream: header.has(flag::END_STREAM),
        end_headers: header.has(flag::END_HEADERS),
        priority,
    })
}

/// A CONTINUATION payload: the fragment and whether it ends the header block.
pub fn continuation_payload<'a>(
    header: &FrameHeader,
    payload: &'a [u8],
) -> Result<(&'a [u8], bool), FrameError> {
    require_stream(header)?;
    Ok((payload, header.has(flag::END_HEADERS)))
}

/// Parses a PRIORITY payload.
pub fn priority(header: &FrameHeader, payload: &[u8]) -> Result<Priority, FrameError> {
    require_stream(header)?;
    if payload.len() != 5 {
        return Err(FrameError::PriorityLength {
            length_bytes: payload.len(),
        });
    }
    parse_priority(header.stream_id, payload)
}

/// The raw error code of an RST_STREAM (unknown codes are legal, RFC 9113 §7).
pub fn rst_stream(header: &FrameHeader, payload: &[u8]) -> Result<u32, FrameError> {
    require_stream(header)?;
    if payload.len() != 4 {
        return Err(FrameError::RstStreamLength {
            length_bytes: payload.len(),
        });
    }
    Ok(u32_at(payload, 0))
}

/// The parameters of a validated SETTINGS frame, as (identifier, value) pairs in wire order.
/// Unknown identifiers are yielded too; RFC 9113 §6.5.2 says to ignore them.
#[derive(Debug, Clone)]
pub struct Settings<'a> {
    rest: &'a [u8],
}

impl Iterator for Settings<'_> {
    type Item = (u16, u32);

    fn next(&mut self) -> Option<(u16, u32)> {
        let (six, rest) = self.rest.split_first_chunk::<6>()?;
        self.rest = rest;
        Some((u16::from_be_bytes([six[0], six[1]]), u32_at(six, 2)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.rest.len() / 6;
        (n, Some(n))
    }
}

/// Validates a SETTINGS payload and returns its parameters (none for an ACK).
pub fn settings<'a>(header: &FrameHeader, payload: &'a [u8]) -> Result<Settings<'a>, FrameError> {
    require_connection(header)?;
    if header.has(flag::ACK) && !payload.is_empty() {
        return Err(FrameError::SettingsAckWithPayload {
            length_bytes: payload.len(),
        });
    }
    if payload.len() % 6 != 0 {
        return Err(FrameError::SettingsLength {
            length_bytes: payload.len(),
        });
    }
    let all = Settings { rest: payload };
    for (id, value) in all.clone() {
        match id {
            SETTINGS_ENABLE_PUSH if value > 1 => {
                return Err(FrameError::EnablePushInvalid { value })
            }
            SETTINGS_INITIAL_WINDOW_SIZE if value > MAX_WINDOW_BYTES => {
                return Err(FrameError::InitialWindowTooLarge { value_bytes: value })
            }
            SETTINGS_MAX_FRAME_SIZE
                if !(DEFAULT_MAX_FRAME_BYTES..=MAX_FRAME_BYTES_LIMIT).contains(&value) =>
            {
                return Err(FrameError::MaxFrameSizeOutOfRange { value_bytes: value })
            }
            _ => {}
        }
    }
    Ok(all)
}

/// The opaque data of a PING.
pub fn ping(header: &FrameHeader, payload: &[u8]) -> Result<[u8; 8], FrameError> {
    require_connection(header)?;
    payload.try_into().map_err(|_| FrameError::PingLength {
        length_bytes: payload.len(),
    })
}

/// A parsed GOAWAY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Goaway<'a> {
    pub last_stream_id: u32,
    /// Raw error code (unknown codes are legal).
    pub error_code: u32,
    pub debug_data: &'a [u8],
}

/// Parses a GOAWAY payload.
pub fn goaway<'a>(header: &FrameHeader, payload: &'a [u8]) -> Result<Goaway<'a>, FrameError> {
    require_connection(header)?;
    if payload.len() < 8 {
        return Err(FrameError::GoawayTooShort {
            length_bytes: payload.len(),
        });
    }
    Ok(Goaway {
        last_stream_id: u32_at(payload, 0) & STREAM_ID_MASK,
        error_code: u32_at(payload, 4),
        debug_data: &payload[8..],
    })
}

/// The increment of a WINDOW_UPDATE (1..=2^31-1; stream 0 is the connection window).
pub fn window_update(header: &FrameHeader, payload: &[u8]) -> Result<u32, FrameError> {
    if payload.len() != 4 {
        return Err(FrameError::WindowUpdateLength {
            length_bytes: payload.len(),
        });
    }
    match u32_at(payload, 0) & STREAM_ID_MASK {
        0 => Err(FrameError::WindowUpdateZero {
            stream_id: header.stream_id,
        }),
        increment => Ok(increment),
    }
}

fn write_header(out: &mut Vec<u8>, length: usize, kind: u8, flags: u8, stream_id: u32) {
    // Our own lengths: callers keep them within the peer's maximum frame size.
    debug_assert!(length <= MAX_FRAME_BYTES_LIMIT as usize);
    let length = length.min(MAX_FRAME_BYTES_LIMIT as usize) as u32;
    FrameHeader {
        length,
        kind,
        flags,
        stream_id,
    }
    .write(out);
}

/// Appends a SETTINGS frame with the given parameters.
pub fn write_settings(out: &mut Vec<u8>, params: &[(u16, u32)]) {
    out.reserve(FRAME_HEADER_BYTES + 6 * params.len());
    write_header(out, 6 * params.len(), kind::SETTINGS, 0, 0);
    for &(id, value) in params {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }
}

/// Appends a SETTINGS frame acknowledging the peer's.
pub fn write_settings_ack(out: &mut Vec<u8>) {
    write_header(out, 0, kind::SETTINGS, flag::ACK, 0);
}

/// Appends the PING acknowledging a peer's PING with this opaque data.
pub fn write_ping_ack(out: &mut Vec<u8>, opaque: [u8; 8]) {
    write_header(out, 8, kind::PING, flag::ACK, 0);
    out.extend_from_slice(&opaque);
}

/// Appends a WINDOW_UPDATE (increment must be 1..=2^31-1).
pub fn write_window_update(out: &mut Vec<u8>, stream_id: u32, increment: u32) {
    debug_assert!(increment != 0 && increment <= MAX_WINDOW_BYTES);
    write_header(out, 4, kind::WINDOW_UPDATE, 0, stream_id);
    out.extend_from_slice(&(increment & STREAM_ID_MASK).to_be_bytes());
}

/// Appends an RST_STREAM.
pub fn write_rst_stream(out: &mut Vec<u8>, stream_id: u32, code: ErrorCode) {
    write_header(out, 4, kind::RST_STREAM, 0, stream_id);
    out.extend_from_slice(&code.code().to_be_bytes());
}

/// Appends a GOAWAY; `debug` must fit the peer's maximum frame size less 8 octets.
pub fn write_goaway(out: &mut Vec<u8>, last_stream_id: u32, code: ErrorCode, debug: &[u8]) {
    write_header(out, 8 + debug.len(), kind::GOAWAY, 0, 0);
    out.extend_from_slice(&(last_stream_id & STREAM_ID_MASK).to_be_bytes());
    out.extend_from_slice(&code.code().to_be_bytes());
    out.extend_from_slice(debug);
}

/// Appends one DATA frame; `data` must fit the peer's maximum frame size.
pub fn write_data(out: &mut Vec<u8>, stream_id: u32, data: &[u8], end_stream: bool) {
    let flags = if end_stream { flag::END_STREAM } else { 0 };
    write_header(out, data.len(), kind::DATA, flags, stream_id);
    out.extend_from_slice(data);
}

/// The peer's maximum frame size as a usable chunk length.
fn frame_payload_bytes(max_frame_bytes: u32) -> usize {
    max_frame_bytes.clamp(DEFAULT_MAX_FRAME_BYTES, MAX_FRAME_BYTES_LIMIT) as usize
}

/// Appends a header block as one HEADERS frame followed by as many CONTINUATION frames as
/// `max_frame_bytes` (the peer's SETTINGS_MAX_FRAME_SIZE, clamped to the legal range) needs.
pub fn write_headers(
    out: &mut Vec<u8>,
    stream_id: u32,
    block: &[u8],
    end_stream: bool,
    max_frame_bytes: u32,
) {
    let chunk_bytes = frame_payload_bytes(max_frame_bytes);
    let frames = block.len().div_ceil(chunk_bytes).max(1);
    out.reserve(block.len() + frames * FRAME_HEADER_BYTES);
    let mut chunks = block.chunks(chunk_bytes);
    let first = chunks.next().unwrap_or(&[]);
    let mut flags = if end_stream { flag::END_STREAM } else { 0 };
    if frames == 1 {
        flags |= flag::END_HEADERS;
    }
    write_header(out, first.len(), kind::HEADERS, flags, stream_id);
    out.extend_from_slice(first);
    for (i, chunk) in chunks.enumerate() {
        let flags = if i + 2 == frames {
            flag::END_HEADERS
        } else {
            0
        };
        write_header(out, chunk.len(), kind::CONTINUATION, flags, stream_id);
        out.extend_from_slice(chunk);
    }
}

/// Where [`begin_headers`] reserved a frame header in the output buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "pass it to finish_headers"]
pub struct HeadersMark {
    at: usize,
}

/// Reserves room for a HEADERS frame header at the end of `out`; encode the header block
/// straight after it, then call [`finish_headers`].
pub fn begin_headers(out: &mut Vec<u8>) -> HeadersMark {
    let at = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    HeadersMark { at }
}

/// Frames the header block written into `out` since `mark`: fills in the HEADERS header and,
/// when the block exceeds `max_frame_bytes` (the peer's SETTINGS_MAX_FRAME_SIZE, clamped to
/// the legal range), moves the rest of the block into CONTINUATION frames in place.
/// A mark that does not belong to `out` (past its end) leaves `out` unchanged.
pub fn finish_headers(
    out: &mut Vec<u8>,
    mark: HeadersMark,
    stream_id: u32,
    end_stream: bool,
    max_frame_bytes: u32,
) {
    let start = mark.at;
    let Some(block_bytes) = out.len().checked_sub(start + FRAME_HEADER_BYTES) else {
        debug_assert!(false, "header mark past the end of the buffer");
        return;
    };
    let chunk_bytes = frame_payload_bytes(max_frame_bytes);
    let frames = block_bytes.div_ceil(chunk_bytes).max(1);
    // Frame i occupies start + i * (9 + chunk) ..; its chunk now sits at start + 9 + i * chunk.
    out.resize(out.len() + (frames - 1) * FRAME_HEADER_BYTES, 0);
    for i in (1..frames).rev() {
        let from = start + FRAME_HEADER_BYTES + i * chunk_bytes;
        let len = chunk_bytes.min(block_bytes - i * chunk_bytes);
        let to = start + i * (FRAME_HEADER_BYTES + chunk_bytes) + FRAME_HEADER_BYTES;
        out.copy_within(from..from + len, to);
        let flags = if i + 1 == frames {
            flag::END_HEADERS
        } else {
            0
        };
        let header = FrameHeader {
            length: len as u32,
            kind: kind::CONTINUATION,
            flags,
            stream_id,
        };
        out[to - FRAME_HEADER_BYTES..to].copy_from_slice(&header.to_bytes());
    }
    let mut flags = if end_stream { flag::END_STREAM } else { 0 };
    if frames == 1 {
        flags |= flag::END_HEADERS;
    }
    let header = FrameHeader {
        length: block_bytes.min(chunk_bytes) as u32,
        kind: kind::HEADERS,
        flags,
        stream_id,
    };
    out[start..start + FRAME_HEADER_BYTES].copy_from_slice(&header.to_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(kind: u8, flags: u8, stream_id: u32, length: usize) -> FrameHeader {
        FrameHeader {
            length: length as u32,
            kind,
            flags,
            stream_id,
        }
    }

    /// Splits a buffer of frames into (header, payload) pairs.
    fn frames(mut bytes: &[u8]) -> Vec<(FrameHeader, &[u8])> {
        let mut all = Vec::new();
        while let Some(h) = FrameHeader::parse(bytes) {
            let end = FRAME_HEADER_BYTES + h.length as usize;
            all.push((h, &bytes[FRAME_HEADER_BYTES..end]));
            bytes = &bytes[end..];
        }
        assert!(bytes.is_empty(), "trailing bytes");
        all
    }

    #[test]
    fn frame_header_parse_masks_r_bit_and_needs_nine_bytes() {
        let bytes = [
            0x01,
            0x02,
            0x03,
            kind::HEADERS,
            0x25,
            0xff,
            0xff,
            0xff,
            0xff,
            0xaa,
        ];
        let h = FrameHeader::parse(&bytes).unwrap();
        assert_eq!(h, hdr(kind::HEADERS, 0x25, 0x7fff_ffff, 0x010203));
        assert_eq!(FrameHeader::parse(&bytes[..8]), None);
        assert_eq!(FrameHeader::parse(&[]), None);
    }

    #[test]
    fn frame_header_round_trip() {
        let h = hdr(kind::DATA, flag::END_STREAM, 7, 0xff_ffff);
        let mut out = Vec::new();
        h.write(&mut out);
        assert_eq!(out.len(), 9);
        assert_eq!(FrameHeader::parse(&out), Some(h));
    }

    #[test]
    fn data_payload_strips_padding() {
        let h = hdr(kind::DATA, flag::PADDED, 1, 0);
        assert_eq!(data_payload(&h, &[2, b'a', b'b', 0, 0]), Ok(&b"ab"[..]));
        assert_eq!(data_payload(&h, &[0]), Ok(&b""[..]));
        let plain = hdr(kind::DATA, 0, 1, 0);
        assert_eq!(data_payload(&plain, b"xyz"), Ok(&b"xyz"[..]));
    }

    #[test]
    fn data_payload_errors() {
        let h = hdr(kind::DATA, flag::PADDED, 1, 0);
        let err = data_payload(&h, &[3, 0, 0]).unwrap_err();
        assert_eq!(err, FrameError::PaddingTooLong { pad_bytes: 3 });
        assert_eq!(err.code(), ErrorCode::ProtocolError);
        assert!(err.is_connection_error());
        assert_eq!(data_payload(&h, &[]), Err(FrameError::PaddedTooShort));
        let zero = hdr(kind::DATA, 0, 0, 0);
        let err = data_payload(&zero, b"x").unwrap_err();
        assert_eq!(err, FrameError::StreamIdZero { kind: kind::DATA });
        assert_eq!(err.code(), ErrorCode::ProtocolError);
    }

    #[test]
    fn headers_payload_strips_padding_and_priority() {
        let flags = flag::PADDED | flag::PRIORITY | flag::END_STREAM | flag::END_HEADERS;
        let h = hdr(kind::HEADERS, flags, 3, 0);
        let payload = [1, 0x80, 0, 0, 1, 15, b'h', b'i', 0];
        let p = headers_payload(&h, &payload).unwrap();
        assert_eq!(p.fragment, b"hi");
        assert!(p.end_stream && p.end_headers);
        let prio = Priority {
            exclusive: true,
            depends_on: 1,
            weight: 15,
        };
        assert_eq!(p.priority, Some(prio));

        let h = hdr(kind::HEADERS, flag::END_HEADERS, 3, 0);
        let p = headers_payload(&h, b"block").unwrap();
        assert_eq!(p.fragment, b"block");
        assert!(!p.end_stream && p.end_headers && p.priority.is_none());
    }

    #[test]
    fn headers_payload_errors() {
        let h = hdr(kind::HEADERS, flag::PRIORITY, 3, 0);
        let err = headers_payload(&h, &[0, 0, 0, 1]).unwrap_err();
        assert_eq!(err, FrameError::HeadersPriorityTooShort);
        assert_eq!(err.code(), ErrorCode::FrameSizeError);
        assert!(err.is_connection_error());
        let err = headers_payload(&h, &[0, 0, 0, 3, 16]).unwrap_err();
        assert_eq!(err, FrameError::SelfDependency { stream_id: 3 });
        assert_eq!(err.scope(), ErrorScope::Stream);
        let padded = hdr(kind::HEADERS, flag::PADDED, 3, 0);
        assert_eq!(
            headers_payload(&padded, &[5, 1, 2]),
            Err(FrameError::PaddingTooLong { pad_bytes: 5 })
        );
        assert_eq!(
            headers_payload(&padded, &[]),
            Err(FrameError::PaddedTooShort)
        );
        let both = hdr(kind::HEADERS, flag::PADDED | flag::PRIORITY, 3, 0);
        assert_eq!(
            headers_payload(&both, &[0, 0, 0]),
            Err(FrameError::PaddedTooShort)
        );
        let zero = hdr(kind::HEADERS, 0, 0, 0);
        assert!(matches!(
            headers_payload(&zero, b""),
            Err(FrameError::StreamIdZero { .. })
        ));
    }

    #[test]
    fn priority_frame() {
        let h = hdr(kind::PRIORITY, 0, 5, 0);
        let p = priority(&h, &[0, 0, 0, 3, 7]).unwrap();
        assert_eq!(
            p,
            Priority {
                exclusive: false,
                depends_on: 3,
                weight: 7
            }
        );
        let err = priority(&h, &[0, 0, 0, 3]).unwrap_err();
        assert_eq!(err, FrameError::PriorityLength { length_bytes: 4 });
        assert_eq!(
            (err.code(), err.scope()),
            (ErrorCode::FrameSizeError, ErrorScope::Stream)
        );
        assert_eq!(
            priority(&h, &[0, 0, 0, 5, 7]),
            Err(FrameError::SelfDependency { stream_id: 5 })
        );
        assert!(priority(&hdr(kind::PRIORITY, 0, 0, 0), &[0; 5]).is_err());
    }

    #[test]
    fn rst_stream_frame() {
        let h = hdr(kind::RST_STREAM, 0, 1, 0);
        assert_eq!(rst_stream(&h, &[0, 0, 0, 8]), Ok(8));
        assert_eq!(rst_stream(&h, &[0xde, 0xad, 0xbe, 0xef]), Ok(0xdead_beef));
        let err = rst_stream(&h, &[0, 0, 8]).unwrap_err();
        assert_eq!(err, FrameError::RstStreamLength { length_bytes: 3 });
        assert_eq!(err.code(), ErrorCode::FrameSizeError);
        assert!(rst_stream(&hdr(kind::RST_STREAM, 0, 0, 0), &[0; 4]).is_err());
    }

    fn settings_bytes(params: &[(u16, u32)]) -> Vec<u8> {
        let mut out = Vec::new();
        write_settings(&mut out, params);
        out.split_off(FRAME_HEADER_BYTES)
    }

    #[test]
    fn settings_iterates_in_wire_order() {
        let params = [
            (1, 0),
            (2, 0),
            (3, 100),
            (4, MAX_WINDOW_BYTES),
            (5, 16_777_215),
            (0x99, 7),
        ];
        let payload = settings_bytes(&params);
        let h = hdr(kind::SETTINGS, 0, 0, payload.len());
        let got: Vec<_> = settings(&h, &payload).unwrap().collect();
        assert_eq!(got, params);
        let ack = hdr(kind::SETTINGS, flag::ACK, 0, 0);
        assert_eq!(settings(&ack, &[]).unwrap().count(), 0);
    }

    #[test]
    fn settings_errors() {
        let h = hdr(kind::SETTINGS, 0, 0, 0);
        let check = |params: &[(u16, u32)], want: FrameError, code: ErrorCode| {
            let err = settings(&h, &settings_bytes(params)).unwrap_err();
            assert_eq!(err, want);
            assert_eq!(err.code(), code);
            assert!(err.is_connection_error());
        };
        check(
            &[(2, 2)],
            FrameError::EnablePushInvalid { value: 2 },
            ErrorCode::ProtocolError,
        );
        check(
            &[(4, 1 << 31)],
            FrameError::InitialWindowTooLarge {
                value_bytes: 1 << 31,
            },
            ErrorCode::FlowControlError,
        );
        check(
            &[(5, 16_383)],
            FrameError::MaxFrameSizeOutOfRange {
                value_bytes: 16_383,
            },
            ErrorCode::ProtocolError,
        );
        check(
            &[(5, 1 << 24)],
            FrameError::MaxFrameSizeOutOfRange {
                value_bytes: 1 << 24,
            },
            ErrorCode::ProtocolError,
        );
        let err = settings(&h, &[0; 7]).unwrap_err();
        assert_eq!(err, FrameError::SettingsLength { length_bytes: 7 });
        assert_eq!(err.code(), ErrorCode::FrameSizeError);
        let ack = hdr(kind::SETTINGS, flag::ACK, 0, 0);
        let err = settings(&ack, &[0; 6]).unwrap_err();
        assert_eq!(err, FrameError::SettingsAckWithPayload { length_bytes: 6 });
        assert_eq!(err.code(), ErrorCode::FrameSizeError);
        let on_stream = hdr(kind::SETTINGS, 0, 1, 0);
        assert_eq!(
            settings(&on_stream, &[]).unwrap_err(),
            FrameError::StreamIdNonZero {
                kind: kind::SETTINGS
            }
        );
    }

    #[test]
    fn window_update_frame() {
        let h = hdr(kind::WINDOW_UPDATE, 0, 0, 0);
        assert_eq!(window_update(&h, &[0x80, 0, 0x01, 0]), Ok(256));
        let err = window_update(&h, &[0x80, 0, 0, 0]).unwrap_err();
        assert_eq!(err, FrameError::WindowUpdateZero { stream_id: 0 });
        assert_eq!(err.code(), ErrorCode::ProtocolError);
        assert!(err.is_connection_error());
        let on_stream = hdr(kind::WINDOW_UPDATE, 0, 9, 0);
        let err = window_update(&on_stream, &[0; 4]).unwrap_err();
        assert_eq!(err.scope(), ErrorScope::Stream);
        let err = window_update(&h, &[0, 0, 0, 1, 0]).unwrap_err();
        assert_eq!(err, FrameError::WindowUpdateLength { length_bytes: 5 });
        assert_eq!(err.code(), ErrorCode::FrameSizeError);
    }

    #[test]
    fn ping_frame() {
        let h = hdr(kind::PING, 0, 0, 0);
        assert_eq!(ping(&h, b"12345678"), Ok(*b"12345678"));
        let err = ping(&h, b"1234567").unwrap_err();
        assert_eq!(err, FrameError::PingLength { length_bytes: 7 });
        assert_eq!(err.code(), ErrorCode::FrameSizeError);
        assert!(ping(&hdr(kind::PING, 0, 1, 0), b"12345678").is_err());
    }

    #[test]
    fn goaway_frame() {
        let mut out = Vec::new();
        write_goaway(&mut out, 0x8000_0007, ErrorCode::EnhanceYourCalm, b"calm");
        let all = frames(&out);
        let (h, payload) = all[0];
        assert_eq!((h.kind, h.stream_id, h.length), (kind::GOAWAY, 0, 12));
        let g = goaway(&h, payload).unwrap();
        assert_eq!(
            g,
            Goaway {
                last_stream_id: 7,
                error_code: 0xb,
                debug_data: b"calm"
            }
        );
        let err = goaway(&h, &payload[..7]).unwrap_err();
        assert_eq!(err, FrameError::GoawayTooShort { length_bytes: 7 });
        assert_eq!(err.code(), ErrorCode::FrameSizeError);
        assert!(goaway(&hdr(kind::GOAWAY, 0, 1, 0), payload).is_err());
    }

    #[test]
    fn continuation_frame() {
        let h = hdr(kind::CONTINUATION, flag::END_HEADERS, 1, 0);
        assert_eq!(continuation_payload(&h, b"x"), Ok((&b"x"[..], true)));
        assert!(continuation_payload(&hdr(kind::CONTINUATION, 0, 0, 0), b"").is_err());
    }

    #[test]
    fn writers_round_trip_through_parsers() {
        let mut out = Vec::new();
        write_settings(&mut out, &[(3, 100), (4, 1 << 20)]);
        write_settings_ack(&mut out);
        write_ping_ack(&mut out, *b"pingpong");
        write_window_update(&mut out, 3, 1000);
        write_rst_stream(&mut out, 5, ErrorCode::Cancel);
        write_data(&mut out, 7, b"body", true);
        let all = frames(&out);
        assert_eq!(all.len(), 6);
        let got: Vec<_> = settings(&all[0].0, all[0].1).unwrap().collect();
        assert_eq!(got, [(3, 100), (4, 1 << 20)]);
        assert!(all[1].0.has(flag::ACK) && all[1].1.is_empty());
        assert_eq!(ping(&all[2].0, all[2].1), Ok(*b"pingpong"));
        assert!(all[2].0.has(flag::ACK));
        assert_eq!(window_update(&all[3].0, all[3].1), Ok(1000));
        assert_eq!(all[3].0.stream_id, 3);
        assert_eq!(rst_stream(&all[4].0, all[4].1), Ok(8));
        assert_eq!(data_payload(&all[5].0, all[5].1), Ok(&b"body"[..]));
        assert!(all[5].0.has(flag::END_STREAM));
    }

    /// Reassembles a header block from HEADERS + CONTINUATION frames, checking the flags.
    fn reassemble(bytes: &[u8], stream_id: u32, end_stream: bool) -> (Vec<u8>, usize) {
        let all = frames(bytes);
        let mut block = Vec::new();
        for (i, (h, payload)) in all.iter().enumerate() {
            assert_eq!(h.stream_id, stream_id);
            let last = i + 1 == all.len();
            assert_eq!(h.has(flag::END_HEADERS), last);
            if i == 0 {
                assert_eq!(h.kind, kind::HEADERS);
                assert_eq!(h.has(flag::END_STREAM), end_stream);
                block.extend_from_slice(headers_payload(h, payload).unwrap().fragment);
            } else {
                assert_eq!(
                    (h.kind, h.flags & !flag::END_HEADERS),
                    (kind::CONTINUATION, 0)
                );
                block.extend_from_slice(continuation_payload(h, payload).unwrap().0);
            }
        }
        (block, all.len())
    }

    #[test]
    fn write_headers_splits_into_continuations() {
        let block: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        for (len, frames_want) in [(0, 1), (10, 1), (16_384, 1), (16_385, 2), (40_000, 3)] {
            let mut out = vec![0xee];
            write_headers(&mut out, 9, &block[..len], true, 0);
            let (got, n) = reassemble(&out[1..], 9, true);
            assert_eq!((got.as_slice(), n), (&block[..len], frames_want));
        }
    }

    #[test]
    fn finish_headers_matches_write_headers() {
        let block: Vec<u8> = (0..50_000u32).map(|i| (i * 7) as u8).collect();
        for len in [0, 1, 16_383, 16_384, 16_385, 32_768, 32_769, 50_000] {
            for max in [16_384, 20_000] {
                let mut direct = b"prefix".to_vec();
                write_headers(&mut direct, 11, &block[..len], false, max);
                let mut in_place = b"prefix".to_vec();
                let mark = begin_headers(&mut in_place);
                in_place.extend_from_slice(&block[..len]);
                finish_headers(&mut in_place, mark, 11, false, max);
                assert_eq!(direct, in_place, "len {len} max {max}");
            }
        }
    }

    #[test]
    fn finish_headers_ignores_a_foreign_mark() {
        let mut other = vec![0; 100];
        let mark = begin_headers(&mut other);
        let mut out = vec![1, 2, 3];
        let before = out.clone();
        let result = std::panic::catch_unwind(move || {
            finish_headers(&mut out, mark, 1, true, 16_384);
            out
        });
        // Debug builds assert on the misuse; release builds leave the buffer alone.
        if let Ok(out) = result {
            assert_eq!(out, before);
        }
    }
}
