//! The key-at-rest encoding: the value stored in the keystore (crypto-formats.md §10).
//!
//! * Current (§10.1): ASCII standard base64 of the protobuf `miniohq.kms.KeyVersion`.
//! * Legacy (§10.2): a JSON object `{"bytes":…,"algorithm":…,"created_at":…,"created_by":…}`.
//!
//! [`decode_record`] picks the legacy reader when the value is syntactically valid JSON (Go's
//! `json.Valid`), else base64 + protobuf. Every intermediate buffer holding key bytes is a
//! wiped [`SecretVec`]. Decoding never panics, whatever the input.

use std::fmt;

use super::cipher::{HmacKey, KeyType, KeyVersion, SecretKey};
use crate::json::{self, decode_base64_into, GO_STD};
use crate::secret::{Secret, SecretVec};
use crate::time::Timestamp;

/// How a stored value that holds a key ring (a key rotated at least once) begins; the rest
/// is standard base64. Never valid JSON or base64, so no upstream reader mistakes a ring for
/// a single key. Keystores whose entries have versions of their own (GCP, Azure) use it to
/// tell a ring this server wrote as a newer version from a version another tool added.
pub const KEYRING_PREFIX: &str = "kes:keyring:v1:";

/// Why a stored value could not be loaded ("failed to read key"). Never contains key bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    /// Neither valid JSON nor valid base64.
    NotBase64,
    /// The base64 payload is not a valid `KeyVersion` protobuf.
    Protobuf(&'static str),
    /// The secret key is missing or not 32 bytes.
    BadKeyLength,
    /// The HMAC key is not 32 bytes.
    BadHmacKeyLength,
    /// `SecretKey.Type` is neither 1 (AES256) nor 2 (ChaCha20).
    UnknownKeyType(u64),
    /// `HMACKey.Hash` is not 1 (SHA256).
    UnknownHash(u64),
    /// The legacy JSON record is malformed (wrong member type, bad base64, bad time, …).
    LegacyJson(&'static str),
    /// The legacy JSON record names an unknown `algorithm`.
    UnknownAlgorithm,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::NotBase64 => f.write_str("key record is neither JSON nor base64"),
            RecordError::Protobuf(what) => write!(f, "invalid key record protobuf: {what}"),
            RecordError::BadKeyLength => f.write_str("invalid secret key length in key record"),
            RecordError::BadHmacKeyLength => f.write_str("invalid HMAC key length in key record"),
            RecordError::UnknownKeyType(t) => {
                write!(f, "unknown secret key type {t} in key record")
            }
            RecordError::UnknownHash(h) => write!(f, "unknown HMAC hash {h} in key record"),
            RecordError::LegacyJson(what) => write!(f, "invalid legacy key record: {what}"),
            RecordError::UnknownAlgorithm => f.write_str("unknown algorithm in legacy key record"),
        }
    }
}

impl std::error::Error for RecordError {}

/// Loads a stored key value (§10).
pub fn decode_record(stored: &[u8]) -> Result<KeyVersion, RecordError> {
    if json::is_valid(stored) {
        return decode_legacy_json(stored);
    }
    let mut proto = SecretVec::default();
    if !decode_base64_into(stored, proto.as_mut_vec()) {
        return Err(RecordError::NotBase64);
    }
    decode_protobuf(proto.expose())
}

/// Encodes `key` as §10.1 (fields in ascending order, proto3 zero values omitted, embedded
/// messages always present). A missing `created_at` is written as Go's zero time, a missing
/// HMAC key is omitted.
pub fn encode_record(key: &KeyVersion) -> SecretVec {
    let proto = encode_protobuf(key);
    encode_base64(proto.expose(), 0)
}

/// `prefix_len` zero bytes (for the caller to fill) and then the standard base64 of `bytes`,
/// in a wiped buffer.
pub(super) fn encode_base64(bytes: &[u8], prefix_len: usize) -> SecretVec {
    let encoded_len = prefix_len + bytes.len().div_ceil(3) * 4;
    let mut out = SecretVec::with_capacity(encoded_len);
    let o = out.as_mut_vec();
    o.resize(encoded_len, 0);
    use base64::Engine as _;
    match GO_STD.encode_slice(bytes, &mut o[prefix_len..]) {
        Ok(n) => o.truncate(prefix_len + n),
        // Unreachable: the buffer has exactly the encoded length.
        Err(_) => o.clear(),
    }
    out
}

/// The §10.1 protobuf of `key` (not yet base64), in a wiped buffer.
pub(super) fn encode_protobuf(key: &KeyVersion) -> SecretVec {
    let created_at = key.created_at.unwrap_or(Timestamp::GO_ZERO);
    let created_by = key.created_by.as_deref().unwrap_or("");

    let mut ts = [0u8; 22];
    let mut ts_len = 0;
    if created_at.seconds != 0 {
        ts[ts_len] = 0x08;
        ts_len += 1;
        ts_len += put_varint(&mut ts[ts_len..], created_at.seconds as u64);
    }
    if created_at.nanos != 0 {
        ts[ts_len] = 0x10;
        ts_len += 1;
        ts_len += put_varint(&mut ts[ts_len..], u64::from(created_at.nanos));
    }

    let mut by_len = [0u8; 10];
    let by_len_len = put_varint(&mut by_len, created_by.len() as u64);

    let total = 38
        + if key.hmac.is_some() { 38 } else { 0 }
        + 2
        + ts_len
        + if created_by.is_empty() {
            0
        } else {
            1 + by_len_len + created_by.len()
        };
    let mut proto = SecretVec::with_capacity(total);
    let p = proto.as_mut_vec();
    p.extend_from_slice(&[0x0a, 0x24, 0x0a, 0x20]);
    p.extend_from_slice(key.key.expose());
    p.extend_from_slice(&[0x10, key.key.kind().protobuf_code() as u8]);
    if let Some(hmac) = &key.hmac {
        p.extend_from_slice(&[0x12, 0x24, 0x0a, 0x20]);
        p.extend_from_slice(hmac.expose());
        p.extend_from_slice(&[0x10, 0x01]);
    }
    p.extend_from_slice(&[0x1a, ts_len as u8]);
    p.extend_from_slice(&ts[..ts_len]);
    if !created_by.is_empty() {
        p.push(0x22);
        p.extend_from_slice(&by_len[..by_len_len]);
        p.extend_from_slice(created_by.as_bytes());
    }
    proto
}

pub(super) fn put_varint(out: &mut [u8], mut v: u64) -> usize {
    let mut i = 0;
    while v >= 0x80 {
        out[i] = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
    out[i] = v as u8;
    i + 1
}

// ---------------------------------------------------------------------------------------------
// Legacy JSON (§10.2).

fn decode_legacy_json(stored: &[u8]) -> Result<KeyVersion, RecordError> {
    let mut bytes = SecretVec::default();
    let mut algorithm: Option<json::JsonStr<'_>> = None;
    let mut created_by: Option<json::JsonStr<'_>> = None;
    let mut created_at: Option<Timestamp> = None;
    let mut error = None;
    let result = json::decode_object(stored, |name, value| {
        let n = name.bytes();
        let (r, what) = if json::name_eq(n, "bytes") {
            (
                json::set_bytes(bytes.as_mut_vec(), value),
                "bytes must be a base64 string",
            )
        } else if json::name_eq(n, "algorithm") {
            (
                json::set_string(&mut algorithm, value),
                "algorithm must be a string",
            )
        } else if json::name_eq(n, "created_by") {
            (
                json::set_string(&mut created_by, value),
                "created_by must be a string",
            )
        } else if json::name_eq(n, "created_at") {
            // Go's time.Time.UnmarshalJSON parses the raw bytes between the quotes.
            let r = match value {
                json::Value::Str(s) => Timestamp::parse_rfc3339_bytes(s.raw)
                    .map(|t| created_at = Some(t))
                    .ok_or(()),
                json::Value::Null => Ok(()),
                json::Value::Other => Err(()),
            };
            (r, "created_at must be an RFC 3339 string")
        } else {
            (Ok(()), "")
        };
        if r.is_err() {
            error = Some(what);
        }
        r
    });
    match result {
        Ok(_) => {}
        Err(()) => {
            return Err(RecordError::LegacyJson(
                error.unwrap_or("not a JSON object"),
            ))
        }
    }

    let (kind, legacy_untyped) = match algorithm.as_ref().map(|s| s.bytes()) {
        None | Some(b"") => (KeyType::Aes256, true),
        Some(name) => (
            KeyType::from_name_bytes(name).ok_or(RecordError::UnknownAlgorithm)?,
            false,
        ),
    };
    let key = Secret::<32>::from_slice(bytes.expose()).ok_or(RecordError::BadKeyLength)?;
    let created_by = match created_by {
        Some(s) if !s.bytes().is_empty() => Some(String::from_utf8_lossy(s.bytes()).into_owned()),
        _ => None,
    };
    Ok(KeyVersion {
        key: SecretKey::new(kind, key),
        hmac: None,
        created_at,
        created_by,
        legacy_untyped,
    })
}

// ---------------------------------------------------------------------------------------------
// Protobuf (§10.1), with protobuf-go semantics: any field order, unknown fields (of any wire
// type, groups included) skipped, a known field with an unexpected wire type treated as unknown,
// last scalar wins, repeated embedded messages merged.

pub(super) const WIRE_VARINT: u8 = 0;
const WIRE_I64: u8 = 1;
pub(super) const WIRE_LEN: u8 = 2;
const WIRE_SGROUP: u8 = 3;
const WIRE_EGROUP: u8 = 4;
const WIRE_I32: u8 = 5;

pub(super) struct Pb<'a> {
    b: &'a [u8],
    pos: usize,
}

type PbResult<T> = Result<T, RecordError>;

impl<'a> Pb<'a> {
    pub(super) fn new(b: &'a [u8]) -> Self {
        Pb { b, pos: 0 }
    }

    pub(super) fn done(&self) -> bool {
        self.pos >= self.b.len()
    }

    pub(super) fn varint(&mut self) -> PbResult<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let Some(&byte) = self.b.get(self.pos) else {
                return Err(RecordError::Protobuf("truncated varint"));
            };
            self.pos += 1;
            if i == 9 && byte > 1 {
                return Err(RecordError::Protobuf("varint overflow"));
            }
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(v);
            }
        }
        Err(RecordError::Protobuf("varint overflow"))
    }

    pub(super) fn tag(&mut self) -> PbResult<(u32, u8)> {
        let t = self.varint()?;
        let field = t >> 3;
        if field == 0 || field > (1 << 29) - 1 {
            return Err(RecordError::Protobuf("invalid field number"));
        }
        Ok((field as u32, (t & 7) as u8))
    }

    fn take(&mut self, n: u64) -> PbResult<&'a [u8]> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .filter(|&end| end <= self.b.len())
            .ok_or(RecordError::Protobuf("truncated field"))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub(super) fn bytes(&mut self) -> PbResult<&'a [u8]> {
        let n = self.varint()?;
        self.take(n)
    }

    /// Skips the value of a field whose tag was just read; groups are skipped iteratively.
    pub(super) fn skip(&mut self, field: u32, wire: u8) -> PbResult<()> {
        let mut open_groups: Vec<u32> = Vec::new();
        let (mut field, mut wire) = (field, wire);
        loop {
            match wire {
                WIRE_VARINT => {
                    self.varint()?;
                }
                WIRE_I64 => {
                    self.take(8)?;
                }
                WIRE_LEN => {
                    self.bytes()?;
                }
                WIRE_I32 => {
                    self.take(4)?;
                }
                WIRE_SGROUP => open_groups.push(field),
                WIRE_EGROUP => match open_groups.pop() {
                    Some(f) if f == field => {}
                    _ => return Err(RecordError::Protobuf("mismatched end group")),
                },
                _ => return Err(RecordError::Protobuf("invalid wire type")),
            }
            if open_groups.is_empty() {
                return Ok(());
            }
            (field, wire) = self.tag()?;
        }
    }
}

#[derive(Default)]
struct KeyFields<'a> {
    key: Option<&'a [u8]>,
    code: u32,
}

impl<'a> KeyFields<'a> {
    /// Merges one `SecretKey` / `HMACKey` message (same layout: bytes #1, uint32 #2).
    fn merge(&mut self, msg: &'a [u8]) -> PbResult<()> {
        let mut pb = Pb::new(msg);
        while !pb.done() {
            match pb.tag()? {
                (1, WIRE_LEN) => self.key = Some(pb.bytes()?),
                (2, WIRE_VARINT) => self.code = pb.varint()? as u32,
                (field, wire) => pb.skip(field, wire)?,
            }
        }
        Ok(())
    }
}

fn merge_timestamp(msg: &[u8], seconds: &mut i64, nanos: &mut i32) -> PbResult<()> {
    let mut pb = Pb::new(msg);
    while !pb.done() {
        match pb.tag()? {
            (1, WIRE_VARINT) => *seconds = pb.varint()? as i64,
            (2, WIRE_VARINT) => *nanos = pb.varint()? as i32,
            (field, wire) => pb.skip(field, wire)?,
        }
    }
    Ok(())
}

pub(super) fn decode_protobuf(proto: &[u8]) -> Result<KeyVersion, RecordError> {
    let mut secret = KeyFields::default();
    let mut hmac: Option<KeyFields<'_>> = None;
    let (mut seconds, mut nanos) = (0i64, 0i32);
    let mut created_by: &[u8] = b"";

    let mut pb = Pb::new(proto);
    while !pb.done() {
        match pb.tag()? {
            (1, WIRE_LEN) => secret.merge(pb.bytes()?)?,
            (2, WIRE_LEN) => hmac
                .get_or_insert_with(KeyFields::default)
                .merge(pb.bytes()?)?,
            (3, WIRE_LEN) => merge_timestamp(pb.bytes()?, &mut seconds, &mut nanos)?,
            (4, WIRE_LEN) => {
                created_by = pb.bytes()?;
                // proto3 strings must be valid UTF-8 (protobuf-go rejects them otherwise).
                if std::str::from_utf8(created_by).is_err() {
                    return Err(RecordError::Protobuf("created_by is not valid UTF-8"));
                }
            }
            (field, wire) => pb.skip(field, wire)?,
        }
    }

    let key = secret
        .key
        .and_then(Secret::<32>::from_slice)
        .ok_or(RecordError::BadKeyLength)?;
    let kind = KeyType::from_protobuf_code(secret.code)
        .ok_or(RecordError::UnknownKeyType(u64::from(secret.code)))?;
    let hmac = match hmac {
        None => None,
        Some(h) => {
            let key = h
                .key
                .and_then(Secret::<32>::from_slice)
                .ok_or(RecordError::BadHmacKeyLength)?;
            if h.code != 1 {
                return Err(RecordError::UnknownHash(u64::from(h.code)));
            }
            Some(HmacKey::new(key))
        }
    };
    let created_by = match std::str::from_utf8(created_by) {
        Ok(s) if !s.is_empty() => Some(s.to_owned()),
        _ => None,
    };
    Ok(KeyVersion {
        key: SecretKey::new(kind, key),
        hmac,
        // A missing Timestamp message reads as the Unix epoch, like protobuf-go's AsTime.
        created_at: Some(Timestamp::from_unix(seconds, i64::from(nanos))),
        created_by,
        legacy_untyped: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine as _;
    use ring::rand::SystemRandom;

    fn seq(start: u8) -> [u8; 32] {
        std::array::from_fn(|i| start + i as u8)
    }

    const IDENTITY_11_6: &str = "a050837d85070582ccf7394b0988847cc312cb88259b894899f6f239cf1791a5";
    const RECORD_AES_11_6: &str = "CiQKIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4fEAESJAogYGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6e3x9fn8QARoLCKWE2LsGEJWa7zoiQGEwNTA4MzdkODUwNzA1ODJjY2Y3Mzk0YjA5ODg4NDdjYzMxMmNiODgyNTliODk0ODk5ZjZmMjM5Y2YxNzkxYTU=";
    const RECORD_CHACHA_11_6: &str = "CiQKIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4fEAISJAogYGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6e3x9fn8QARoLCKWE2LsGEJWa7zoiQGEwNTA4MzdkODUwNzA1ODJjY2Y3Mzk0YjA5ODg4NDdjYzMxMmNiODgyNTliODk0ODk5ZjZmMjM5Y2YxNzkxYTU=";
    const RECORD_11_8: &str = "CiQKIMiHG7XrN94FuwblJJor4f7f6rbqAl7DwsLaiIoyz0D2EAESJAognLXl4yqa4cjZTcSbsU6sNnN8kP9ARWkXwa20YQZa9HgQARoMCNithK0GEID67qYDIkAzZWNmY2RmMzhmY2JlMTQxYWUyNmExMDMwZjgxZTk2Yjc1MzM2NWE0Njc2MGFlNmI1Nzg2OThhOTdjNTlmZDIy";

    fn spec_11_6(kind: KeyType) -> KeyVersion {
        KeyVersion {
            key: SecretKey::new(kind, Secret::new(seq(0))),
            hmac: Some(HmacKey::new(Secret::new(seq(0x60)))),
            created_at: Some(Timestamp {
                seconds: 1_735_787_045,
                nanos: 123_456_789,
            }),
            created_by: Some(IDENTITY_11_6.to_owned()),
            legacy_untyped: false,
        }
    }

    /// §11.6: exact protobuf bytes and base64 text, both types; and back.
    #[test]
    fn spec_11_6_encode_decode() {
        let v = spec_11_6(KeyType::Aes256);
        let encoded = encode_record(&v);
        assert_eq!(
            std::str::from_utf8(encoded.expose()).unwrap(),
            RECORD_AES_11_6
        );
        assert_eq!(
            hex::encode(B64.decode(RECORD_AES_11_6).unwrap()),
            "0a240a20000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f1001\
             12240a20606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f1001\
             1a0b08a584d8bb0610959aef3a\
             2240613035303833376438353037303538326363663733393462303938383834376363333132636238383235396238393438393966366632333963663137393161\
             35"
        );
        let encoded = encode_record(&spec_11_6(KeyType::ChaCha20));
        assert_eq!(
            std::str::from_utf8(encoded.expose()).unwrap(),
            RECORD_CHACHA_11_6
        );

        for (text, kind) in [
            (RECORD_AES_11_6, KeyType::Aes256),
            (RECORD_CHACHA_11_6, KeyType::ChaCha20),
        ] {
            let d = decode_record(text.as_bytes()).unwrap();
            assert_eq!(d.key.kind(), kind);
            assert_eq!(d.key.expose(), &seq(0));
            assert_eq!(d.hmac.as_ref().unwrap().expose(), &seq(0x60));
            assert_eq!(
                d.created_at.unwrap().to_rfc3339(),
                "2025-01-02T03:04:05.123456789Z"
            );
            assert_eq!(d.created_by.as_deref(), Some(IDENTITY_11_6));
            assert!(!d.legacy_untyped);
            assert_eq!(encode_record(&d).expose(), text.as_bytes());
        }
    }

    /// §11.8 stored-record vector: decode and re-encode identically.
    #[test]
    fn spec_11_8_stored_record() {
        let d = decode_record(RECORD_11_8.as_bytes()).unwrap();
        assert_eq!(d.key.kind(), KeyType::Aes256);
        assert_eq!(
            B64.encode(d.key.expose()),
            "yIcbtes33gW7BuUkmivh/t/qtuoCXsPCwtqIijLPQPY="
        );
        assert_eq!(
            B64.encode(d.hmac.as_ref().unwrap().expose()),
            "nLXl4yqa4cjZTcSbsU6sNnN8kP9ARWkXwa20YQZa9Hg="
        );
        assert_eq!(
            d.created_at,
            Some(Timestamp {
                seconds: 1_705_055_960,
                nanos: 886_816_000
            })
        );
        assert_eq!(
            d.created_at.unwrap().to_rfc3339(),
            "2024-01-12T10:39:20.886816Z"
        );
        assert_eq!(
            d.created_by.as_deref(),
            Some("3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22")
        );
        assert_eq!(encode_record(&d).expose(), RECORD_11_8.as_bytes());
        // Go's decoder ignores newlines in base64: a trailing newline still loads.
        let with_nl = format!("{RECORD_11_8}\n");
        assert!(decode_record(with_nl.as_bytes()).is_ok());
    }

    /// §11.8 legacy JSON records.
    #[test]
    fn spec_11_8_legacy_json_records() {
        let d =
            decode_record(br#"{"bytes":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}"#).unwrap();
        assert_eq!(d.key.kind(), KeyType::Aes256);
        assert_eq!(d.key.expose(), &[0u8; 32]);
        assert!(d.hmac.is_none());
        assert_eq!(d.created_at, None);
        assert_eq!(d.created_by, None);
        assert!(d.legacy_untyped);

        let d = decode_record(br#"{"bytes":"9ew6BCae3+13sniOUwttEJ62amg98YXc0OW0WBhNiCY=","algorithm":"XCHACHA20-POLY1305","created_at":"2009-11-10T23:00:00Z","created_by":"189d9de5331e3ee8abe9e4bd40d474ad621d79ccf83a711f6ac68050eb15a52a"}"#).unwrap();
        assert_eq!(d.key.kind(), KeyType::ChaCha20);
        assert_eq!(
            B64.encode(d.key.expose()),
            "9ew6BCae3+13sniOUwttEJ62amg98YXc0OW0WBhNiCY="
        );
        assert!(d.hmac.is_none());
        assert!(!d.legacy_untyped);
        assert_eq!(d.created_at.unwrap().to_rfc3339(), "2009-11-10T23:00:00Z");
        assert_eq!(
            d.created_by.as_deref(),
            Some("189d9de5331e3ee8abe9e4bd40d474ad621d79ccf83a711f6ac68050eb15a52a")
        );
    }

    #[test]
    fn legacy_json_variants() {
        let z = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let load = |s: String| decode_record(s.as_bytes());
        for (alg, kind, untyped) in [
            ("\"AES256-GCM_SHA256\"", KeyType::Aes256, false),
            ("\"AES256\"", KeyType::Aes256, false),
            ("\"\"", KeyType::Aes256, true),
            ("null", KeyType::Aes256, true),
            ("\"ChaCha20\"", KeyType::ChaCha20, false),
            ("\"XCHACHA20-POLY1305\"", KeyType::ChaCha20, false),
        ] {
            let d = load(format!(
                r#" {{"version":"v1","BYTES":"{z}","Algorithm":{alg},"created_at":null,"x":{{"y":[1]}}}} "#
            ))
            .unwrap();
            assert_eq!((d.key.kind(), d.legacy_untyped), (kind, untyped), "{alg}");
        }
        // Offsets are converted to UTC.
        let d = load(format!(
            r#"{{"bytes":"{z}","created_at":"2024-01-12T12:39:20.886816+02:00"}}"#
        ))
        .unwrap();
        assert_eq!(
            d.created_at.unwrap().to_rfc3339(),
            "2024-01-12T10:39:20.886816Z"
        );

        let cases = [
            (
                format!(r#"{{"bytes":"{z}","algorithm":"aes256"}}"#),
                RecordError::UnknownAlgorithm,
            ),
            (
                format!(r#"{{"bytes":"{z}","algorithm":"AES-256-GCM-HMAC-SHA-256"}}"#),
                RecordError::UnknownAlgorithm,
            ),
            (r#"{"bytes":"AAAA"}"#.to_string(), RecordError::BadKeyLength),
            (r#"{}"#.to_string(), RecordError::BadKeyLength),
            ("null".to_string(), RecordError::BadKeyLength),
            (r#"{"bytes":null}"#.to_string(), RecordError::BadKeyLength),
            (
                r#"{"bytes":"AAA"}"#.to_string(),
                RecordError::LegacyJson("bytes must be a base64 string"),
            ),
            (
                r#"{"bytes":1}"#.to_string(),
                RecordError::LegacyJson("bytes must be a base64 string"),
            ),
            (
                format!(r#"{{"bytes":"{z}","algorithm":1}}"#),
                RecordError::LegacyJson("algorithm must be a string"),
            ),
            (
                format!(r#"{{"bytes":"{z}","created_by":[]}}"#),
                RecordError::LegacyJson("created_by must be a string"),
            ),
            (
                format!(r#"{{"bytes":"{z}","created_at":"yesterday"}}"#),
                RecordError::LegacyJson("created_at must be an RFC 3339 string"),
            ),
            (
                format!(r#"{{"bytes":"{z}","created_at":"2009-11-10T23:00:00\u005a"}}"#),
                RecordError::LegacyJson("created_at must be an RFC 3339 string"),
            ),
            (
                "[1]".to_string(),
                RecordError::LegacyJson("not a JSON object"),
            ),
            (
                "\"x\"".to_string(),
                RecordError::LegacyJson("not a JSON object"),
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(load(input.clone()).err(), Some(expected), "{input}");
        }
        // Invalid JSON is read as base64 → not base64.
        assert_eq!(
            decode_record(format!(r#"{{"bytes":"{z}""#).as_bytes()).err(),
            Some(RecordError::NotBase64)
        );
        assert_eq!(decode_record(b"").err(), Some(RecordError::BadKeyLength));
    }

    fn pb_record(parts: &[&[u8]]) -> String {
        B64.encode(parts.concat())
    }

    #[test]
    fn protobuf_variants() {
        let key = [&[0x0a, 0x20][..], &seq(0)[..]].concat();
        let hkey = [&[0x0a, 0x20][..], &seq(0x60)[..]].concat();
        let sk = |t: u8| [&[0x0a, 0x24][..], &key, &[0x10, t]].concat();
        let hk = |h: u8| [&[0x12, 0x24][..], &hkey, &[0x10, h]].concat();

        // Reordered fields, unknown fields of every wire type, a group, merged sub-messages.
        let input = pb_record(&[
            &[0x22, 0x02, b'h', b'i'],
            &[0x28, 0x96, 0x01],                   // field 5 varint
            &[0x31, 1, 2, 3, 4, 5, 6, 7, 8],       // field 6 i64
            &[0x3d, 1, 2, 3, 4],                   // field 7 i32
            &[0x43, 0x08, 0x01, 0x4b, 0x4c, 0x44], // group 8 { varint; group 9 {} }
            &hk(1),
            &[0x0a, 0x02, 0x10, 0x01], // SecretKey{type=1}
            &[0x0a, 0x22],
            &key,                      // SecretKey{key} merged
            &[0x0a, 0x02, 0x10, 0x02], // SecretKey{type=2} merged: last wins
            &[0x1a, 0x02, 0x08, 0x05],
            &[0x1a, 0x02, 0x10, 0x07], // merged timestamp: seconds 5, nanos 7
            &[0x0a, 0x03, 0x12, 0x01, 0x00], // SecretKey type with LEN wire type: unknown
        ]);
        let d = decode_record(input.as_bytes()).unwrap();
        assert_eq!(d.key.kind(), KeyType::ChaCha20);
        assert_eq!(d.key.expose(), &seq(0));
        assert_eq!(d.hmac.as_ref().unwrap().expose(), &seq(0x60));
        assert_eq!(
            d.created_at,
            Some(Timestamp {
                seconds: 5,
                nanos: 7
            })
        );
        assert_eq!(d.created_by.as_deref(), Some("hi"));

        // Missing timestamp → Unix epoch; missing HMAC message → None; negative nanos normalised.
        let d = decode_record(pb_record(&[&sk(1)]).as_bytes()).unwrap();
        assert_eq!(
            d.created_at,
            Some(Timestamp {
                seconds: 0,
                nanos: 0
            })
        );
        assert!(d.hmac.is_none());
        assert_eq!(d.created_by, None);
        let neg = [&[0x1a, 0x0d, 0x08, 0x0a, 0x10][..], &[0xff; 9][..], &[0x01]].concat();
        let d = decode_record(pb_record(&[&sk(1), &neg]).as_bytes()).unwrap();
        assert_eq!(
            d.created_at,
            Some(Timestamp {
                seconds: 9,
                nanos: 999_999_999
            })
        );
        // Re-encoding a record without HMAC key / creator / time.
        let v = KeyVersion {
            created_at: None,
            ..d
        };
        let re = decode_record(encode_record(&v).expose()).unwrap();
        assert_eq!(re.created_at, Some(Timestamp::GO_ZERO));
        assert!(re.hmac.is_none());

        let short = [&[0x0a, 0x21, 0x0a, 0x1f][..], &[0u8; 31]].concat();
        let cases: Vec<(String, RecordError)> = vec![
            (pb_record(&[&hk(1)]), RecordError::BadKeyLength),
            (pb_record(&[&short]), RecordError::BadKeyLength),
            (pb_record(&[&sk(0), &hk(1)]), RecordError::UnknownKeyType(0)),
            (pb_record(&[&sk(3), &hk(1)]), RecordError::UnknownKeyType(3)),
            (pb_record(&[&sk(1), &hk(2)]), RecordError::UnknownHash(2)),
            (pb_record(&[&sk(1), &hk(0)]), RecordError::UnknownHash(0)),
            (
                pb_record(&[&sk(1), &[0x12, 0x00]]),
                RecordError::BadHmacKeyLength,
            ),
            (
                pb_record(&[&sk(1), &[0x22, 0x01, 0xff]]),
                RecordError::Protobuf("created_by is not valid UTF-8"),
            ),
            (
                pb_record(&[&sk(1), &[0x22, 0x05, b'x']]),
                RecordError::Protobuf("truncated field"),
            ),
            (
                pb_record(&[&sk(1), &[0x28]]),
                RecordError::Protobuf("truncated varint"),
            ),
            (
                pb_record(&[
                    &sk(1),
                    &[
                        0x28, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
                    ],
                ]),
                RecordError::Protobuf("varint overflow"),
            ),
            (
                pb_record(&[&sk(1), &[0x00, 0x00]]),
                RecordError::Protobuf("invalid field number"),
            ),
            (
                pb_record(&[&sk(1), &[0x2e]]),
                RecordError::Protobuf("invalid wire type"),
            ),
            (
                pb_record(&[&sk(1), &[0x2c]]),
                RecordError::Protobuf("mismatched end group"),
            ),
            (
                pb_record(&[&sk(1), &[0x2b, 0x34]]),
                RecordError::Protobuf("mismatched end group"),
            ),
            (
                pb_record(&[&sk(1), &[0x2b]]),
                RecordError::Protobuf("truncated varint"),
            ),
            ("not base64!".to_string(), RecordError::NotBase64),
            ("CiQK".to_string() + "=", RecordError::NotBase64),
        ];
        for (input, expected) in cases {
            assert_eq!(
                decode_record(input.as_bytes()).err(),
                Some(expected),
                "{input}"
            );
        }
    }

    #[test]
    fn generated_round_trip() {
        let rng = SystemRandom::new();
        for kind in [KeyType::Aes256, KeyType::ChaCha20] {
            let now = Timestamp::now();
            let v = KeyVersion::generate(kind, IDENTITY_11_6, now, &rng).unwrap();
            let text = encode_record(&v);
            assert!(text.expose().starts_with(b"CiQKI"));
            let d = decode_record(text.expose()).unwrap();
            assert_eq!(d.key.kind(), kind);
            assert_eq!(d.key.expose(), v.key.expose());
            assert_eq!(d.hmac.unwrap().expose(), v.hmac.unwrap().expose());
            assert_eq!(d.created_at, Some(now));
            assert_eq!(d.created_by, v.created_by);
        }
    }

    #[test]
    fn never_panics_on_mutations() {
        // Deterministic pseudo-random mutations of valid records (a poor man's fuzzer).
        let seeds: [&[u8]; 3] = [
            RECORD_11_8.as_bytes(),
            br#"{"bytes":"9ew6BCae3+13sniOUwttEJ62amg98YXc0OW0WBhNiCY=","algorithm":"XCHACHA20-POLY1305","created_at":"2009-11-10T23:00:00Z"}"#,
            &B64.decode(RECORD_11_8).unwrap(),
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for seed in seeds {
            for _ in 0..3000 {
                let mut m = seed.to_vec();
                for _ in 0..(rnd() % 4 + 1) {
                    let i = (rnd() as usize) % m.len();
                    match rnd() % 3 {
                        0 => m[i] = rnd() as u8,
                        1 => m.truncate(i),
                        _ => m.insert(i, rnd() as u8),
                    }
                    if m.is_empty() {
                        break;
                    }
                }
                let _ = decode_record(&m);
                if let Some(raw) = B64.decode(&m).ok().filter(|_| seed[0] == b'C') {
                    let _ = decode_protobuf(&raw);
                }
                let _ = decode_protobuf(&m);
                let _ = super::super::envelope::parse_envelope(&m);
            }
        }
    }

    #[test]
    fn errors_do_not_leak_key_bytes() {
        let e = decode_record(br#"{"bytes":"AAAA","algorithm":"nope"}"#).unwrap_err();
        assert_eq!(e, RecordError::UnknownAlgorithm);
        assert!(!e.to_string().contains("AAAA"));
        assert_eq!(
            RecordError::UnknownKeyType(7).to_string(),
            "unknown secret key type 7 in key record"
        );
    }
}
