//! Pure HTTP/2 protocol layer, no I/O and no async: frame headers and payloads
//! ([`frame`], RFC 9113 §4 and §6), header compression ([`hpack`], RFC 7541) with its
//! tables ([`static_table`], [`dynamic_table`]) and Huffman code ([`huffman`]).
//!
//! Everything here works on byte slices and appends to a caller's `Vec<u8>`, so the
//! connection loop, fuzz targets and benches call the same code. No function panics on
//! peer input; every size a peer controls is bounded by a limit the caller chooses; after
//! warm-up the hot path (one request's frames and header block) does not allocate.
//!
//! What this module does not own: connection and stream state machines, flow-control
//! accounting, and HTTP semantics of decoded fields (RFC 9113 §8: pseudo-header order,
//! lowercase names, forbidden connection-specific fields). Those belong to the layer that
//! drives it.

pub mod dynamic_table;
pub mod frame;
pub mod hpack;
pub mod huffman;
pub mod static_table;

pub use frame::{FrameError, FrameHeader};
pub use hpack::{Decoder, Encoder, HpackError};

/// The client connection preface (RFC 9113 §3.4), sent before the client's first SETTINGS.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// SETTINGS_HEADER_TABLE_SIZE (0x1): the HPACK dynamic table size the sender's decoder allows.
pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
/// SETTINGS_ENABLE_PUSH (0x2): 0 or 1; servers never push here.
pub const SETTINGS_ENABLE_PUSH: u16 = 0x2;
/// SETTINGS_MAX_CONCURRENT_STREAMS (0x3).
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
/// SETTINGS_INITIAL_WINDOW_SIZE (0x4): at most [`MAX_WINDOW_BYTES`].
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
/// SETTINGS_MAX_FRAME_SIZE (0x5): within [`DEFAULT_MAX_FRAME_BYTES`]..=[`MAX_FRAME_BYTES_LIMIT`].
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
/// SETTINGS_MAX_HEADER_LIST_SIZE (0x6): advisory cap on a decoded field list (name + value +
/// 32 octets per field).
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// Initial SETTINGS_HEADER_TABLE_SIZE (RFC 9113 §6.5.2).
pub const DEFAULT_HEADER_TABLE_BYTES: usize = 4096;
/// Initial SETTINGS_INITIAL_WINDOW_SIZE and the initial connection window.
pub const DEFAULT_WINDOW_BYTES: u32 = 65_535;
/// Largest flow-control window, 2^31-1.
pub const MAX_WINDOW_BYTES: u32 = (1 << 31) - 1;
/// Initial SETTINGS_MAX_FRAME_SIZE, and the smallest value it may take.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 16_384;
/// Largest SETTINGS_MAX_FRAME_SIZE, 2^24-1 (the frame length field is 24 bits).
pub const MAX_FRAME_BYTES_LIMIT: u32 = (1 << 24) - 1;

/// Error codes of RST_STREAM and GOAWAY (RFC 9113 §7). Codes a peer sends that are not listed
/// here are legal and carry no special meaning, so frames return them as raw `u32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ErrorCode {
    /// 0x0: graceful shutdown, or no error.
    NoError = 0x0,
    /// 0x1: unspecific protocol violation.
    ProtocolError = 0x1,
    /// 0x2: the endpoint failed internally.
    InternalError = 0x2,
    /// 0x3: the flow-control protocol was violated.
    FlowControlError = 0x3,
    /// 0x4: SETTINGS was not acknowledged in time.
    SettingsTimeout = 0x4,
    /// 0x5: a frame arrived after the stream was half-closed.
    StreamClosed = 0x5,
    /// 0x6: a frame had an invalid size.
    FrameSizeError = 0x6,
    /// 0x7: the stream was refused before any application processing.
    RefusedStream = 0x7,
    /// 0x8: the stream is no longer needed.
    Cancel = 0x8,
    /// 0x9: the HPACK state cannot be maintained.
    CompressionError = 0x9,
    /// 0xa: a CONNECT tunnel was reset or closed abnormally.
    ConnectError = 0xa,
    /// 0xb: the peer is generating excessive load.
    EnhanceYourCalm = 0xb,
    /// 0xc: the transport does not meet minimum security requirements.
    InadequateSecurity = 0xc,
    /// 0xd: HTTP/1.1 must be used instead.
    Http11Required = 0xd,
}

impl ErrorCode {
    /// The 32-bit value on the wire.
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// The code for a wire value, `None` for codes RFC 9113 does not define.
    pub const fn from_code(code: u32) -> Option<ErrorCode> {
        Some(match code {
            0x0 => ErrorCode::NoError,
            0x1 => ErrorCode::ProtocolError,
            0x2 => ErrorCode::InternalError,
            0x3 => ErrorCode::FlowControlError,
            0x4 => ErrorCode::SettingsTimeout,
            0x5 => ErrorCode::StreamClosed,
            0x6 => ErrorCode::FrameSizeError,
            0x7 => ErrorCode::RefusedStream,
            0x8 => ErrorCode::Cancel,
            0x9 => ErrorCode::CompressionError,
            0xa => ErrorCode::ConnectError,
            0xb => ErrorCode::EnhanceYourCalm,
            0xc => ErrorCode::InadequateSecurity,
            0xd => ErrorCode::Http11Required,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip_and_match_rfc_values() {
        assert_eq!(ErrorCode::NoError.code(), 0x0);
        assert_eq!(ErrorCode::CompressionError.code(), 0x9);
        assert_eq!(ErrorCode::Http11Required.code(), 0xd);
        for code in 0..=0xd {
            assert_eq!(ErrorCode::from_code(code).map(ErrorCode::code), Some(code));
        }
        assert_eq!(ErrorCode::from_code(0xe), None);
        assert_eq!(ErrorCode::from_code(u32::MAX), None);
    }

    #[test]
    fn preface_is_the_rfc_octets() {
        assert_eq!(PREFACE.len(), 24);
        assert_eq!(&PREFACE[..], b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    }
}
