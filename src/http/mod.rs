//! Pure HTTP/1.1 framing, no I/O: the request-head parser ([`request`]), chunked bodies
//! ([`body`]), response serialisation ([`response`]) and Go-style path cleaning ([`path`]).
//! Every function works on byte slices, so the connection loop, fuzz targets and benches all
//! call the same code.

pub mod body;
pub mod path;
pub mod request;
pub mod response;

pub use body::ChunkedDecoder;
pub use path::clean_path;
pub use request::{
    parse_head, Framing, Limits, Method, ParseOptions, RequestHead, HEADERS_COUNT_MAX,
    HEAD_BYTES_MAX,
};
pub use response::{header_value_ok, reason_phrase, write_continue, write_response};

/// Why a request cannot be served. Each variant has the status it is answered with; the
/// connection is closed afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// 400: syntax the parser cannot accept.
    Malformed(&'static str),
    /// 431: the request head exceeds `head_bytes_max`.
    HeadTooLarge,
    /// 431: more than `headers_count_max` header fields.
    TooManyHeaders,
    /// 413: the body exceeds the route's limit.
    BodyTooLarge,
    /// 501: a transfer coding other than `chunked`.
    UnsupportedTransferEncoding,
    /// 505: not HTTP/1.0 or HTTP/1.1.
    VersionNotSupported,
    /// 400: broken chunked framing.
    BadChunk(&'static str),
}

impl HttpError {
    pub fn status(&self) -> u16 {
        match self {
            HttpError::Malformed(_) | HttpError::BadChunk(_) => 400,
            HttpError::HeadTooLarge | HttpError::TooManyHeaders => 431,
            HttpError::BodyTooLarge => 413,
            HttpError::UnsupportedTransferEncoding => 501,
            HttpError::VersionNotSupported => 505,
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            HttpError::Malformed(why) | HttpError::BadChunk(why) => why,
            HttpError::HeadTooLarge => "request header fields too large",
            HttpError::TooManyHeaders => "too many header fields",
            HttpError::BodyTooLarge => "request body too large",
            HttpError::UnsupportedTransferEncoding => "unsupported transfer encoding",
            HttpError::VersionNotSupported => "HTTP version not supported",
        }
    }
}
