//! The Protocol Buffers wire format, as much of it as the MinKMS API needs: varints,
//! length-delimited fields, and skipping the fixed-width fields nobody sends us. Decoding
//! borrows from the input (no allocation, no copy of secrets); every length is checked
//! against what is left before it is used.

use std::fmt;

/// Wire types (protobuf encoding §"Message Structure").
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// A varint is at most 10 bytes (64 bits, 7 per byte).
const VARINT_BYTES_MAX: usize = 10;

/// Why a message could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtoError {
    /// The message ends inside a field.
    Truncated,
    /// A varint runs past 10 bytes.
    VarintTooLong,
    /// Field number 0 or above 2^29 - 1.
    InvalidFieldNumber,
    /// Wire types 3 and 4 (groups), 6 and 7 (undefined).
    UnsupportedWireType(u8),
    /// A known field arrived with a wire type other than its own.
    WrongWireType(u32),
    /// A `string` field that is not UTF-8.
    InvalidUtf8(u32),
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::Truncated => f.write_str("message is truncated"),
            ProtoError::VarintTooLong => f.write_str("varint is longer than 10 bytes"),
            ProtoError::InvalidFieldNumber => f.write_str("invalid field number"),
            ProtoError::UnsupportedWireType(t) => write!(f, "unsupported wire type {t}"),
            ProtoError::WrongWireType(n) => write!(f, "field {n} has the wrong wire type"),
            ProtoError::InvalidUtf8(n) => write!(f, "field {n} is not valid UTF-8"),
        }
    }
}

impl std::error::Error for ProtoError {}

/// One field's value as it is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// A fixed64 or fixed32 field (no message of ours has one; skipped).
    Fixed,
}

impl<'a> Value<'a> {
    /// The value of a `uint32` field (proto3 truncates larger varints to 32 bits).
    pub fn uint32(self, field: u32) -> Result<u32, ProtoError> {
        match self {
            Value::Varint(v) => Ok(v as u32),
            _ => Err(ProtoError::WrongWireType(field)),
        }
    }

    /// The value of a `bool` field.
    pub fn bool(self, field: u32) -> Result<bool, ProtoError> {
        match self {
            Value::Varint(v) => Ok(v != 0),
            _ => Err(ProtoError::WrongWireType(field)),
        }
    }

    /// The value of a `bytes` field.
    pub fn bytes(self, field: u32) -> Result<&'a [u8], ProtoError> {
        match self {
            Value::Bytes(b) => Ok(b),
            _ => Err(ProtoError::WrongWireType(field)),
        }
    }

    /// The value of a `string` field: UTF-8 or an error, as proto3 requires.
    pub fn str(self, field: u32) -> Result<&'a str, ProtoError> {
        std::str::from_utf8(self.bytes(field)?).map_err(|_| ProtoError::InvalidUtf8(field))
    }
}

/// The fields of one message in wire order, as `(number, value)`; unknown numbers are the
/// caller's to ignore. Stops at the first error.
pub struct Fields<'a> {
    rest: &'a [u8],
}

/// Iterates over the fields of `message`.
pub fn fields(message: &[u8]) -> Fields<'_> {
    Fields { rest: message }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), ProtoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let item = self.field();
        if item.is_err() {
            self.rest = &[];
        }
        Some(item)
    }
}

impl<'a> Fields<'a> {
    fn field(&mut self) -> Result<(u32, Value<'a>), ProtoError> {
        let tag = read_varint(&mut self.rest)?;
        let number = u32::try_from(tag >> 3).map_err(|_| ProtoError::InvalidFieldNumber)?;
        if number == 0 || number > (1 << 29) - 1 {
            return Err(ProtoError::InvalidFieldNumber);
        }
        let value = match (tag & 7) as u8 {
            VARINT => Value::Varint(read_varint(&mut self.rest)?),
            LEN => {
                let len = read_varint(&mut self.rest)?;
                let len = usize::try_from(len).map_err(|_| ProtoError::Truncated)?;
                if len > self.rest.len() {
                    return Err(ProtoError::Truncated);
                }
                let (bytes, rest) = self.rest.split_at(len);
                self.rest = rest;
                Value::Bytes(bytes)
            }
            FIXED64 => {
                self.skip(8)?;
                Value::Fixed
            }
            FIXED32 => {
                self.skip(4)?;
                Value::Fixed
            }
            other => return Err(ProtoError::UnsupportedWireType(other)),
        };
        Ok((number, value))
    }

    fn skip(&mut self, n: usize) -> Result<(), ProtoError> {
        if n > self.rest.len() {
            return Err(ProtoError::Truncated);
        }
        self.rest = &self.rest[n..];
        Ok(())
    }
}

fn read_varint(buf: &mut &[u8]) -> Result<u64, ProtoError> {
    let mut value = 0u64;
    for (i, &b) in buf.iter().enumerate().take(VARINT_BYTES_MAX) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Ok(value);
        }
    }
    if buf.len() >= VARINT_BYTES_MAX {
        Err(ProtoError::VarintTooLong)
    } else {
        Err(ProtoError::Truncated)
    }
}

/// Appends `v` as a varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire));
}

/// Appends a varint field (`uint32`, `uint64`, `int64` ≥ 0); zero is the default and omitted.
pub fn put_uint(out: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        put_tag(out, field, VARINT);
        put_varint(out, v);
    }
}

/// Appends an `int64`/`int32` field (two's complement varint); zero is omitted.
pub fn put_int(out: &mut Vec<u8>, field: u32, v: i64) {
    put_uint(out, field, v as u64);
}

/// Appends a `bool` field; `false` is omitted.
pub fn put_bool(out: &mut Vec<u8>, field: u32, v: bool) {
    put_uint(out, field, u64::from(v));
}

/// Appends a `bytes` or `string` field; empty is omitted.
pub fn put_bytes(out: &mut Vec<u8>, field: u32, v: &[u8]) {
    if !v.is_empty() {
        put_tag(out, field, LEN);
        put_varint(out, v.len() as u64);
        out.extend_from_slice(v);
    }
}

/// Appends an embedded message field written by `body` (always present, even when empty:
/// repeated entries must be).
pub fn put_message(out: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    put_tag(out, field, LEN);
    let start = out.len();
    body(out);
    let len = out.len() - start;
    let mut prefix = Vec::with_capacity(VARINT_BYTES_MAX);
    put_varint(&mut prefix, len as u64);
    out.splice(start..start, prefix);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_unknown_fields_skipped() {
        let mut m = Vec::new();
        put_bytes(&mut m, 1, b"my-key");
        put_uint(&mut m, 2, 300);
        put_bool(&mut m, 3, true);
        // Unknown fields of every wire type we skip.
        put_uint(&mut m, 9, u64::MAX);
        m.extend_from_slice(&[(10 << 3) | 1, 1, 2, 3, 4, 5, 6, 7, 8]);
        m.extend_from_slice(&[(11 << 3) | 5, 1, 2, 3, 4]);
        put_message(&mut m, 12, |b| put_bytes(b, 1, &[7; 200]));
        let got: Vec<_> = fields(&m).collect::<Result<_, _>>().unwrap();
        assert_eq!(got[0], (1, Value::Bytes(b"my-key")));
        assert_eq!(got[1].1.uint32(2), Ok(300));
        assert_eq!(got[2].1.bool(3), Ok(true));
        assert_eq!(got[3], (9, Value::Varint(u64::MAX)));
        assert_eq!(got[4], (10, Value::Fixed));
        assert_eq!(got[5], (11, Value::Fixed));
        let inner = got[6].1.bytes(12).unwrap();
        assert_eq!(inner.len(), 203);
        assert_eq!(got.len(), 7);
    }

    #[test]
    fn every_length_is_checked() {
        // Length past the end.
        assert_eq!(
            fields(&[(1 << 3) | 2, 5, b'a']).next(),
            Some(Err(ProtoError::Truncated))
        );
        // Varint cut off, varint too long.
        assert_eq!(fields(&[8, 0x80]).next(), Some(Err(ProtoError::Truncated)));
        assert_eq!(
            fields(&[8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1]).next(),
            Some(Err(ProtoError::VarintTooLong))
        );
        // Fixed fields cut off.
        assert_eq!(fields(&[9, 1, 2]).next(), Some(Err(ProtoError::Truncated)));
        assert_eq!(fields(&[13, 1]).next(), Some(Err(ProtoError::Truncated)));
        // Field 0, groups, undefined wire types.
        assert_eq!(
            fields(&[2, 0]).next(),
            Some(Err(ProtoError::InvalidFieldNumber))
        );
        assert_eq!(
            fields(&[(1 << 3) | 3]).next(),
            Some(Err(ProtoError::UnsupportedWireType(3)))
        );
        // Wrong wire type and bad UTF-8 for a known field.
        assert_eq!(Value::Varint(1).str(1), Err(ProtoError::WrongWireType(1)));
        assert_eq!(
            Value::Bytes(&[0xff]).str(1),
            Err(ProtoError::InvalidUtf8(1))
        );
        // An error ends the iteration.
        let mut it = fields(&[2, 0, 8, 1]);
        assert!(matches!(it.next(), Some(Err(_))));
        assert_eq!(it.next(), None);
    }
}
