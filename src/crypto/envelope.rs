//! Legacy ciphertext envelopes (crypto-formats.md §4 step 1, §5), read with the crate's
//! Go-compatible JSON and base64 reader ([`crate::json`]).
//!
//! [`parse_envelope`] makes exactly one attempt chosen by the first byte: `0x95` → the
//! MessagePack envelope (§5.1), `{` → the JSON envelope (§5.2), anything else → raw. Any parse
//! failure falls back to raw, which then almost certainly fails authentication.
//!

use std::borrow::Cow;

use super::key_type::KeyType;
use crate::json;

/// Which legacy producer wrote an envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegacyFormat {
    /// v0.19.2 … 2024-01-11 (§5.1).
    MessagePack,
    /// ≤ v0.19.1 (§5.2).
    Json,
}

/// A parsed legacy envelope. Decryption uses `sealed || iv || nonce` exactly like a raw
/// ciphertext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegacyEnvelope<'a> {
    pub format: LegacyFormat,
    /// The algorithm named inside the envelope (ignored by the reference, see §4).
    pub algorithm: KeyType,
    /// The legacy key id (§5.3); empty when absent. Not checked by current servers.
    pub key_id: Cow<'a, [u8]>,
    pub iv: [u8; 16],
    pub nonce: [u8; 12],
    /// The AEAD output `C || T`.
    pub sealed: Cow<'a, [u8]>,
}

impl LegacyEnvelope<'_> {
    /// The equivalent raw ciphertext `C || T || IV || N`.
    pub fn to_raw(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.sealed.len() + 28);
        out.extend_from_slice(&self.sealed);
        out.extend_from_slice(&self.iv);
        out.extend_from_slice(&self.nonce);
        out
    }
}

/// A ciphertext after format normalisation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Envelope<'a> {
    /// The current format `C || T || IV || N` (or anything unparseable).
    Raw(&'a [u8]),
    Legacy(LegacyEnvelope<'a>),
}

/// Normalises a ciphertext (§4 step 1). Never panics.
pub fn parse_envelope(ciphertext: &[u8]) -> Envelope<'_> {
    let parsed = match ciphertext.first() {
        Some(0x95) => parse_msgpack(ciphertext),
        Some(b'{') => parse_json(ciphertext),
        _ => None,
    };
    match parsed {
        Some(env) => Envelope::Legacy(env),
        None => Envelope::Raw(ciphertext),
    }
}

// ---------------------------------------------------------------------------------------------
// MessagePack (§5.1): fixarray(5) [str algorithm, str id, bin iv, bin nonce, bin bytes].

struct MsgReader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> MsgReader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn be_len(&mut self, n: usize) -> Option<usize> {
        let bytes = self.take(n)?;
        let v = bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        usize::try_from(v).ok()
    }

    /// A MessagePack str (fixstr, str8, str16, str32), no UTF-8 check (Go's msgp has none).
    fn str(&mut self) -> Option<&'a [u8]> {
        let len = match self.byte()? {
            lead @ 0xa0..=0xbf => usize::from(lead & 0x1f),
            0xd9 => self.be_len(1)?,
            0xda => self.be_len(2)?,
            0xdb => self.be_len(4)?,
            _ => return None,
        };
        self.take(len)
    }

    /// A MessagePack bin (bin8, bin16, bin32).
    fn bin(&mut self) -> Option<&'a [u8]> {
        let len = match self.byte()? {
            0xc4 => self.be_len(1)?,
            0xc5 => self.be_len(2)?,
            0xc6 => self.be_len(4)?,
            _ => return None,
        };
        self.take(len)
    }
}

fn parse_msgpack(b: &[u8]) -> Option<LegacyEnvelope<'_>> {
    if b.first() != Some(&0x95) {
        return None;
    }
    let mut r = MsgReader { b, pos: 1 };
    let algorithm = r.str()?;
    let key_id = r.str()?;
    let iv: [u8; 16] = r.bin()?.try_into().ok()?;
    let nonce: [u8; 12] = r.bin()?.try_into().ok()?;
    let sealed = r.bin()?;
    if r.pos != b.len() {
        return None;
    }
    Some(LegacyEnvelope {
        format: LegacyFormat::MessagePack,
        algorithm: KeyType::from_name_bytes(algorithm)?,
        key_id: Cow::Borrowed(key_id),
        iv,
        nonce,
        sealed: Cow::Borrowed(sealed),
    })
}

// ---------------------------------------------------------------------------------------------
// JSON (§5.2).

fn parse_json(b: &[u8]) -> Option<LegacyEnvelope<'static>> {
    let mut aead: Option<json::JsonStr<'_>> = None;
    let mut id: Option<json::JsonStr<'_>> = None;
    let (mut iv, mut nonce, mut sealed) = (Vec::new(), Vec::new(), Vec::new());
    let is_object = json::decode_object(b, |name, value| {
        let n = name.bytes();
        if json::name_eq(n, "aead") {
            json::set_string(&mut aead, value)
        } else if json::name_eq(n, "id") {
            json::set_string(&mut id, value)
        } else if json::name_eq(n, "iv") {
            json::set_bytes(&mut iv, value)
        } else if json::name_eq(n, "nonce") {
            json::set_bytes(&mut nonce, value)
        } else if json::name_eq(n, "bytes") {
            json::set_bytes(&mut sealed, value)
        } else {
            Ok(())
        }
    })
    .ok()?;
    if !is_object {
        return None;
    }
    let algorithm = match aead.as_ref().map(|s| s.bytes()) {
        Some(b"AES-256-GCM-HMAC-SHA-256") => KeyType::Aes256,
        Some(b"ChaCha20Poly1305") => KeyType::ChaCha20,
        _ => return None,
    };
    Some(LegacyEnvelope {
        format: LegacyFormat::Json,
        algorithm,
        key_id: Cow::Owned(id.map(|s| s.bytes().to_vec()).unwrap_or_default()),
        iv: iv.as_slice().try_into().ok()?,
        nonce: nonce.as_slice().try_into().ok()?,
        sealed: Cow::Owned(sealed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD as B64;
    use base64::Engine as _;

    const MSGP_11_4: &str = "lbFBRVMyNTYtR0NNX1NIQTI1NtkgNjMwZGNkMjk2NmM0MzM2NjkxMTI1NDQ4YmJiMjViNGbEEEBBQkNERUZHSElKS0xNTk/EDFBRUlNUVVZXWFlaW8QwqcDsbRpq8F27ep5YDx+5pmCKddecT4ukXN38vFpAUijk2rKKTjxV2UH8MCYJ4WGs";
    const JSON_11_4: &[u8] = br#"{"aead":"AES-256-GCM-HMAC-SHA-256","id":"630dcd2966c4336691125448bbb25b4f","iv":"QEFCQ0RFRkdISUpLTE1OTw==","nonce":"UFFSU1RVVldYWVpb","bytes":"qcDsbRpq8F27ep5YDx+5pmCKddecT4ukXN38vFpAUijk2rKKTjxV2UH8MCYJ4WGs"}"#;
    const RAW_11_1: &str = "qcDsbRpq8F27ep5YDx+5pmCKddecT4ukXN38vFpAUijk2rKKTjxV2UH8MCYJ4WGsQEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaWw==";

    fn legacy(input: &[u8]) -> LegacyEnvelope<'_> {
        match parse_envelope(input) {
            Envelope::Legacy(l) => l,
            Envelope::Raw(_) => {
                panic!("not parsed as legacy: {:?}", String::from_utf8_lossy(input))
            }
        }
    }

    fn is_raw(input: &[u8]) -> bool {
        parse_envelope(input) == Envelope::Raw(input)
    }

    #[test]
    fn spec_11_4_both_envelopes_normalise_to_raw() {
        let raw = B64.decode(RAW_11_1).unwrap();
        let msgp = B64.decode(MSGP_11_4).unwrap();
        let m = legacy(&msgp);
        assert_eq!(m.format, LegacyFormat::MessagePack);
        assert_eq!(m.algorithm, KeyType::Aes256);
        assert_eq!(&m.key_id[..], b"630dcd2966c4336691125448bbb25b4f");
        assert_eq!(m.to_raw(), raw);
        let j = legacy(JSON_11_4);
        assert_eq!(j.format, LegacyFormat::Json);
        assert_eq!(j.algorithm, KeyType::Aes256);
        assert_eq!(&j.key_id[..], b"630dcd2966c4336691125448bbb25b4f");
        assert_eq!(j.to_raw(), raw);
        assert!(is_raw(&raw));
        assert!(is_raw(b""));
    }

    fn msgpack(alg: &[u8], id: &[u8], iv: &[u8], nonce: &[u8], sealed: &[u8]) -> Vec<u8> {
        let mut v = vec![0x95];
        for s in [alg, id] {
            if s.len() < 32 {
                v.push(0xa0 | s.len() as u8);
            } else {
                v.extend_from_slice(&[0xd9, s.len() as u8]);
            }
            v.extend_from_slice(s);
        }
        for b in [iv, nonce, sealed] {
            v.extend_from_slice(&[0xc4, b.len() as u8]);
            v.extend_from_slice(b);
        }
        v
    }

    #[test]
    fn msgpack_variants() {
        let (iv, nonce, sealed) = ([1u8; 16], [2u8; 12], [3u8; 40]);
        for (alg, kind) in [
            (&b"AES256"[..], KeyType::Aes256),
            (b"AES256-GCM_SHA256", KeyType::Aes256),
            (b"ChaCha20", KeyType::ChaCha20),
            (b"XCHACHA20-POLY1305", KeyType::ChaCha20),
        ] {
            let m = msgpack(alg, b"", &iv, &nonce, &sealed);
            let l = legacy(&m);
            assert_eq!(l.algorithm, kind);
            assert_eq!((l.iv, l.nonce, &l.sealed[..]), (iv, nonce, &sealed[..]));
        }
        // Wider length encodings are accepted.
        let mut m = vec![0x95, 0xda, 0, 6];
        m.extend_from_slice(b"AES256");
        m.extend_from_slice(&[0xdb, 0, 0, 0, 1, b'x']);
        m.extend_from_slice(&[0xc5, 0, 16]);
        m.extend_from_slice(&iv);
        m.extend_from_slice(&[0xc6, 0, 0, 0, 12]);
        m.extend_from_slice(&nonce);
        m.extend_from_slice(&[0xc5, 0, 40]);
        m.extend_from_slice(&sealed);
        let l = legacy(&m);
        assert_eq!(&l.key_id[..], b"x");
        assert_eq!(&l.sealed[..], &sealed[..]);

        // Failures fall back to raw.
        let good = msgpack(b"AES256", b"id", &iv, &nonce, &sealed);
        assert!(!is_raw(&good));
        let mut trailing = good.clone();
        trailing.push(0);
        for bad in [
            msgpack(b"aes256", b"id", &iv, &nonce, &sealed),
            msgpack(b"AES-256-GCM-HMAC-SHA-256", b"id", &iv, &nonce, &sealed),
            msgpack(b"AES256", b"id", &iv[..15], &nonce, &sealed),
            msgpack(b"AES256", b"id", &[1; 17], &nonce, &sealed),
            msgpack(b"AES256", b"id", &iv, &nonce[..11], &sealed),
            trailing,
            good[..good.len() - 1].to_vec(),
            // bin where str is required.
            [&[0x95, 0xc4, 6][..], b"AES256", &good[8..]].concat(),
            // str where bin is required (IV).
            [&good[..11], &[0xb0][..], &good[13..]].concat(),
            // Array of 4.
            [&[0x94][..], &good[1..]].concat(),
        ] {
            assert!(is_raw(&bad), "{}", hex::encode(&bad));
        }
        // Every truncation and absurd length headers never panic.
        for n in 0..good.len() {
            assert!(is_raw(&good[..n]));
        }
        assert!(is_raw(&[0x95, 0xdb, 0xff, 0xff, 0xff, 0xff]));
        assert!(is_raw(&[
            0x95, 0xa1, b'x', 0xa0, 0xc6, 0xff, 0xff, 0xff, 0xff
        ]));
    }

    #[test]
    fn json_leniency() {
        let iv = "QEFCQ0RFRkdISUpLTE1OTw==";
        let n = "UFFSU1RVVldYWVpb";
        // Case-insensitive names, unknown members, whitespace, no id, null id. (Leading
        // whitespace is not allowed: the format is chosen by the first byte.)
        let s = format!(
            "{{ \"AEAD\" : \"ChaCha20Poly1305\", \"Iv\":\"{iv}\", \"x\":[1,{{}}], \"NONCE\":\"{n}\", \"Bytes\":\"AAAA\", \"id\": null }}\n"
        );
        let l = legacy(s.as_bytes());
        assert!(is_raw(format!(" {s}").as_bytes()));
        assert_eq!(l.algorithm, KeyType::ChaCha20);
        assert_eq!(l.key_id.len(), 0);
        assert_eq!(l.iv.to_vec(), B64.decode(iv).unwrap());
        assert_eq!(l.nonce.to_vec(), B64.decode(n).unwrap());
        assert_eq!(&l.sealed[..], &[0, 0, 0]);
        // Last duplicate wins; newlines inside base64 are ignored; escaped slash.
        let s = format!(
            r#"{{"aead":"x","aead":"AES-256-GCM-HMAC-SHA-256","iv":"AAAA","iv":"{iv}","nonce":"UFFS\r\nU1RVVldYWVpb","bytes":"qcDs\/w=="}}"#
        );
        let l = legacy(s.as_bytes());
        assert_eq!(l.algorithm, KeyType::Aes256);
        assert_eq!(l.iv.to_vec(), B64.decode(iv).unwrap());
        assert_eq!(l.nonce.to_vec(), B64.decode(n).unwrap());
        assert_eq!(&l.sealed[..], &[0xa9, 0xc0, 0xec, 0xff]);
        // null bytes = empty; null aead after a value keeps the value.
        let s = format!(
            r#"{{"aead":"ChaCha20Poly1305","aead":null,"iv":"{iv}","nonce":"{n}","bytes":"AAAA","bytes":null}}"#
        );
        let l = legacy(s.as_bytes());
        assert_eq!(l.algorithm, KeyType::ChaCha20);
        assert!(l.sealed.is_empty());

        // Failures → raw.
        for bad in [
            format!(r#"{{"aead":"AES-256-GCM","iv":"{iv}","nonce":"{n}","bytes":"AAAA"}}"#),
            format!(
                r#"{{"aead":"aes-256-gcm-hmac-sha-256","iv":"{iv}","nonce":"{n}","bytes":"AAAA"}}"#
            ),
            format!(r#"{{"iv":"{iv}","nonce":"{n}","bytes":"AAAA"}}"#),
            format!(r#"{{"aead":null,"iv":"{iv}","nonce":"{n}","bytes":"AAAA"}}"#),
            format!(r#"{{"aead":5,"iv":"{iv}","nonce":"{n}","bytes":"AAAA"}}"#),
            format!(
                r#"{{"aead":"ChaCha20Poly1305","id":7,"iv":"{iv}","nonce":"{n}","bytes":"AAAA"}}"#
            ),
            format!(r#"{{"aead":"ChaCha20Poly1305","iv":"{iv}","nonce":"{n}","bytes":"AAA"}}"#),
            format!(r#"{{"aead":"ChaCha20Poly1305","iv":"{iv}","nonce":"{n}","bytes":"AA=="}}"#)
                .replace("AA==", "AA="),
            format!(r#"{{"aead":"ChaCha20Poly1305","iv":"{iv}","nonce":"{n}","bytes":["AAAA"]}}"#),
            format!(r#"{{"aead":"ChaCha20Poly1305","iv":"{iv}","nonce":null,"bytes":"AAAA"}}"#),
            format!(
                r#"{{"aead":"ChaCha20Poly1305","iv":"QEFCQ0RFRkdISUpLTE1OT1A=","nonce":"{n}","bytes":"AAAA"}}"#
            ),
            format!(
                r#"{{"aead":"ChaCha20Poly1305","iv":"{iv}","nonce":"UFFSU1RVVlc=","bytes":"AAAA"}}"#
            ),
            format!(r#"{{"aead":"ChaCha20Poly1305","iv":"{iv}","nonce":"{n}","bytes":"AAAA"}} x"#),
            format!(r#"{{"aead":"ChaCha20Poly1305","iv":"{iv}","nonce":"{n}","bytes":"AAAA",}}"#),
            format!(r#"{{"aead":"ChaCha20Poly1305","iv":"{iv}","nonce":"{n}","bytes":"A-A_"}}"#),
            "{".to_string(),
            "{}".to_string(),
        ] {
            assert!(is_raw(bad.as_bytes()), "{bad}");
        }
        // Every truncation of a valid envelope is raw and never panics.
        for k in 0..JSON_11_4.len() {
            assert!(is_raw(&JSON_11_4[..k]));
        }
    }
}
