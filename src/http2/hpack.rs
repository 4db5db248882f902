//! HPACK (RFC 7541): the request-side [`Decoder`] with its dynamic table and limits, the
//! response-side [`Encoder`], and the integer and string primitives (§5) both use.
//!
//! The decoder hands each field to a callback as raw bytes borrowed from the block, the
//! tables or a reusable scratch buffer, so decoding allocates nothing per field once the
//! scratch buffers have grown to the longest Huffman string seen. It enforces three bounds
//! while decoding: integers of at most [`INTEGER_CONTINUATION_MAX`] continuation octets,
//! dynamic table size updates no larger than the SETTINGS_HEADER_TABLE_SIZE we advertise
//! (only at the start of a block), and a cap on the decoded field list (name + value + 32
//! octets per field, like SETTINGS_MAX_HEADER_LIST_SIZE), checked before each field is
//! handed over, so a block of references to one large entry stops at the cap.
//!
//! Any error leaves the dynamic table out of step with the peer's encoder: the connection
//! must end (GOAWAY with [`HpackError::code`], COMPRESSION_ERROR for decoding faults).
//!
//! Field names are not validated here (RFC 9113 §8.2.1 lowercase, pseudo-headers): that is
//! the HTTP layer's job, on the raw bytes this decoder exposes.

use super::dynamic_table::DynamicTable;
use super::huffman::{self, HuffmanError};
use super::static_table::{self, STATIC_ENTRIES};
use super::ErrorCode;

/// Most continuation octets accepted after an integer's prefix: enough for values up to
/// 2^28 + 2^N - 2, far beyond any index, string length or table size a block can carry.
/// Longer encodings (even of small values, padded with 0x80 octets) are rejected.
pub const INTEGER_CONTINUATION_MAX: usize = 4;

/// Octets counted per field on top of name and value (RFC 9113 §6.5.2).
pub const FIELD_OVERHEAD_BYTES: usize = 32;

/// Why a header block cannot be decoded. `E` is the field callback's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HpackError<E> {
    /// The block ends inside an integer or string.
    Truncated,
    /// An integer with more than [`INTEGER_CONTINUATION_MAX`] continuation octets.
    IntegerOverflow,
    /// Index 0 in an indexed field (RFC 7541 §6.1).
    IndexZero,
    /// An index past the static and dynamic tables.
    IndexOutOfRange { index: usize },
    /// A dynamic table size update above the SETTINGS_HEADER_TABLE_SIZE we advertise.
    TableSizeUpdateTooLarge {
        requested_bytes: usize,
        max_bytes: usize,
    },
    /// A dynamic table size update after the first field of the block (RFC 7541 §4.2).
    TableSizeUpdateAfterField,
    /// An invalid Huffman string.
    Huffman(HuffmanError),
    /// The decoded field list exceeds `max_header_list_bytes`.
    HeaderListTooLarge { max_bytes: usize },
    /// The field callback refused a field.
    Field(E),
}

impl<E> HpackError<E> {
    /// The connection error to send: COMPRESSION_ERROR for malformed blocks; a list over the
    /// cap is well-formed but refused, answered with ENHANCE_YOUR_CALM. `None` for
    /// [`HpackError::Field`], which the caller's own error decides.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            HpackError::Field(_) => None,
            HpackError::HeaderListTooLarge { .. } => Some(ErrorCode::EnhanceYourCalm),
            _ => Some(ErrorCode::CompressionError),
        }
    }
}

impl<E: std::fmt::Debug> std::fmt::Display for HpackError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HPACK: {self:?}")
    }
}

impl<E: std::fmt::Debug> std::error::Error for HpackError<E> {}

/// Reads an integer with an `prefix_bits`-bit prefix (RFC 7541 §5.1) at `*pos`.
fn decode_int<E>(block: &[u8], pos: &mut usize, prefix_bits: u32) -> Result<usize, HpackError<E>> {
    let mask = (1usize << prefix_bits) - 1;
    let first = *block.get(*pos).ok_or(HpackError::Truncated)?;
    *pos += 1;
    let mut value = usize::from(first) & mask;
    if value < mask {
        return Ok(value);
    }
    for i in 0..INTEGER_CONTINUATION_MAX {
        let byte = *block.get(*pos).ok_or(HpackError::Truncated)?;
        *pos += 1;
        value += usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(HpackError::IntegerOverflow)
}

/// Appends an integer with a `prefix_bits`-bit prefix; `flags` fills the octet's high bits.
fn encode_int(out: &mut Vec<u8>, flags: u8, prefix_bits: u32, value: usize) {
    let mask = (1usize << prefix_bits) - 1;
    if value < mask {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | mask as u8);
    let mut rest = value - mask;
    while rest >= 0x80 {
        out.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Reads a string literal (RFC 7541 §5.2): a slice of the block, or for Huffman strings the
/// decoded octets in `scratch` (cleared first).
fn read_string<'a, E>(
    block: &'a [u8],
    pos: &mut usize,
    scratch: &'a mut Vec<u8>,
) -> Result<&'a [u8], HpackError<E>> {
    let huffman_coded = block.get(*pos).is_some_and(|b| b & 0x80 != 0);
    let len = decode_int(block, pos, 7)?;
    let end = pos.checked_add(len).ok_or(HpackError::Truncated)?;
    let raw = block.get(*pos..end).ok_or(HpackError::Truncated)?;
    *pos = end;
    if !huffman_coded {
        return Ok(raw);
    }
    scratch.clear();
    huffman::decode(raw, scratch).map_err(HpackError::Huffman)?;
    Ok(scratch.as_slice())
}

/// Decodes request header blocks on one connection.
#[derive(Debug, Clone)]
pub struct Decoder {
    table: DynamicTable,
    max_header_list_bytes: usize,
    name_scratch: Vec<u8>,
    value_scratch: Vec<u8>,
}

impl Decoder {
    /// A decoder for a connection where we advertise SETTINGS_HEADER_TABLE_SIZE =
    /// `max_table_bytes` (4096 unless we send otherwise; the table starts at that size and
    /// preallocates twice it) and accept decoded field lists up to `max_header_list_bytes`.
    pub fn new(max_table_bytes: usize, max_header_list_bytes: usize) -> Decoder {
        Decoder {
            table: DynamicTable::new(max_table_bytes),
            max_header_list_bytes,
            name_scratch: Vec::with_capacity(64),
            value_scratch: Vec::with_capacity(256),
        }
    }

    /// While the connection is idle: gives back the dynamic table's spare room (its entries
    /// stay: they are connection state).
    pub fn shrink_while_idle(&mut self) {
        self.table.shrink_to_fit();
    }

    /// The dynamic table, for inspection.
    pub fn table(&self) -> &DynamicTable {
        &self.table
    }

    /// The cap on a decoded field list.
    pub fn max_header_list_bytes(&self) -> usize {
        self.max_header_list_bytes
    }

    /// Decodes one complete header block (HEADERS + CONTINUATION fragments joined), calling
    /// `on_field(name, value)` for each field in order. Stops at the first error.
    pub fn decode<E>(
        &mut self,
        block: &[u8],
        mut on_field: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
    ) -> Result<(), HpackError<E>> {
        let Decoder {
            table,
            max_header_list_bytes,
            name_scratch,
            value_scratch,
        } = self;
        let max_list = *max_header_list_bytes;
        let mut list_bytes = 0usize;
        let mut account = |name: &[u8], value: &[u8]| {
            list_bytes = list_bytes.saturating_add(name.len() + value.len() + FIELD_OVERHEAD_BYTES);
            match list_bytes <= max_list {
                true => Ok(()),
                false => Err(HpackError::HeaderListTooLarge {
                    max_bytes: max_list,
                }),
            }
        };
        let mut pos = 0;
        let mut field_seen = false;
        while let Some(&first) = block.get(pos) {
            if first & 0x80 != 0 {
                // Indexed field (§6.1).
                let index = decode_int(block, &mut pos, 7)?;
                let (name, value) = lookup(table, index)?;
                account(name, value)?;
                on_field(name, value).map_err(HpackError::Field)?;
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update (§6.3).
                if field_seen {
                    return Err(HpackError::TableSizeUpdateAfterField);
                }
                let size = decode_int(block, &mut pos, 5)?;
                if !table.set_limit(size) {
                    return Err(HpackError::TableSizeUpdateTooLarge {
                        requested_bytes: size,
                        max_bytes: table.capacity_bytes(),
                    });
                }
                continue;
            } else {
                // Literal with incremental indexing (01), without indexing (0000) or never
                // indexed (0001) (§6.2).
                let indexing = first & 0xc0 == 0x40;
                let index = decode_int(block, &mut pos, if indexing { 6 } else { 4 })?;
                let name: &[u8] = match index {
                    0 => read_string(block, &mut pos, name_scratch)?,
                    1..=STATIC_ENTRIES => {
                        static_table::get(index)
                            .ok_or(HpackError::IndexOutOfRange { index })?
                            .0
                    }
                    _ => {
                        // Copied: inserting the new entry may evict the one it names.
                        let (name, _) = lookup(table, index)?;
                        name_scratch.clear();
                        name_scratch.extend_from_slice(name);
                        name_scratch.as_slice()
                    }
                };
                let value = read_string(block, &mut pos, value_scratch)?;
                account(name, value)?;
                on_field(name, value).map_err(HpackError::Field)?;
                if indexing {
                    table.insert(name, value);
                }
            }
            field_seen = true;
        }
        Ok(())
    }
}

/// The field at HPACK `index`: static 1..=61, then the dynamic table newest first.
fn lookup<E>(table: &DynamicTable, index: usize) -> Result<(&[u8], &[u8]), HpackError<E>> {
    match index {
        0 => Err(HpackError::IndexZero),
        1..=STATIC_ENTRIES => static_table::get(index).ok_or(HpackError::IndexOutOfRange { index }),
        _ => table
            .get(index - STATIC_ENTRIES - 1)
            .ok_or(HpackError::IndexOutOfRange { index }),
    }
}

/// Encodes response header blocks. It never inserts into the dynamic table, so its
/// compression state is nothing but a pending size update: a peer that lowers its
/// SETTINGS_HEADER_TABLE_SIZE may expect the next block to start with a dynamic table size
/// update (RFC 7541 §4.2; some decoders, nghttp2 among them, reject a block without one), so
/// after [`Encoder::peer_header_table_size`] the next [`Encoder::begin_block`] emits a
/// harmless update to 0 (our table is always empty).
#[derive(Debug, Clone, Default)]
pub struct Encoder {
    size_update_pending: bool,
}

impl Encoder {
    /// An encoder for a new connection, as a constant.
    pub const NEW: Encoder = Encoder {
        size_update_pending: false,
    };

    /// An encoder for a new connection (the peer's table size is then the default 4096).
    pub fn new() -> Encoder {
        Encoder::default()
    }

    /// Records a SETTINGS_HEADER_TABLE_SIZE from the peer.
    pub fn peer_header_table_size(&mut self, _bytes: u32) {
        self.size_update_pending = true;
    }

    /// Starts a header block: emits the pending table size update, if any.
    pub fn begin_block(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.size_update_pending) {
            encode_int(out, 0x20, 5, 0);
        }
    }

    /// Appends `:status`: an indexed field for 200, 204, 206, 304, 400, 404 and 500, a
    /// literal with the static `:status` name otherwise.
    pub fn encode_status(&self, out: &mut Vec<u8>, status: u16) {
        if let Some(index) = static_table::status_index(status) {
            encode_int(out, 0x80, 7, index);
            return;
        }
        let mut digits = [0u8; 5];
        let mut start = digits.len();
        let mut rest = status;
        loop {
            start -= 1;
            digits[start] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        encode_int(
            out,
            0x00,
            4,
            static_table::name_index(b":status").unwrap_or(8),
        );
        encode_string(out, &digits[start..]);
    }

    /// Appends a literal field without indexing (§6.2.2), naming the static table entry when
    /// `name` is there, with the value Huffman-coded when that is shorter. `name` must
    /// already be lowercase (RFC 9113 §8.2.1).
    pub fn encode_field(&self, out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
        match static_table::name_index(name) {
            Some(index) => encode_int(out, 0x00, 4, index),
            None => {
                out.push(0x00);
                encode_string(out, name);
            }
        }
        encode_string(out, value);
    }
}

/// Appends a string literal, Huffman-coded when that is shorter.
fn encode_string(out: &mut Vec<u8>, s: &[u8]) {
    let huffman_bytes = huffman::encoded_len(s);
    if huffman_bytes < s.len() {
        encode_int(out, 0x80, 7, huffman_bytes);
        huffman::encode(s, out);
    } else {
        encode_int(out, 0x00, 7, s.len());
        out.extend_from_slice(s);
    }
}

#[cfg(test)]
mod tests;
