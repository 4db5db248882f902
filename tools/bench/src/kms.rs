//! The MinKMS requests (`--op kms-generate`, `--op kms-decrypt`): `POST /v1/kms/{enclave}`
//! with `application/octet-stream` bodies of frames `[u16 BE command][u32 BE length]
//! [protobuf message]`, answered 200 with one frame per command. Written from the wire
//! facts (kms-go's `kms` package), not from the server's code.

/// KEY:DECRYPT and KEY:GENERATE command codes.
pub const KEY_DECRYPT: u16 = 206;
pub const KEY_GENERATE: u16 = 207;
/// Bytes of a frame's header: command and message length.
pub const FRAME_HEADER_BYTES: usize = 6;
/// The DEK length MinIO asks for.
pub const DEK_BYTES: u32 = 32;
/// The media type of MinKMS bodies.
pub const OCTET_STREAM: &str = "application/octet-stream";

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_uint(out: &mut Vec<u8>, field: u32, v: u64) {
    put_varint(out, u64::from(field) << 3);
    put_varint(out, v);
}

fn put_bytes(out: &mut Vec<u8>, field: u32, v: &[u8]) {
    put_varint(out, u64::from(field) << 3 | 2);
    put_varint(out, v.len() as u64);
    out.extend_from_slice(v);
}

/// One frame of `command` around `message`.
fn frame(command: u16, message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + message.len());
    out.extend_from_slice(&command.to_be_bytes());
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// A KEY:GENERATE frame: `GenerateKeyRequest` {1 name, 2 version (0: latest), 3 associated
/// data, 4 length}.
pub fn generate(name: &str, associated_data: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + name.len() + associated_data.len());
    put_bytes(&mut m, 1, name.as_bytes());
    put_uint(&mut m, 2, 0);
    put_bytes(&mut m, 3, associated_data);
    put_uint(&mut m, 4, u64::from(DEK_BYTES));
    frame(KEY_GENERATE, &m)
}

/// A KEY:DECRYPT frame: `DecryptRequest` {1 name, 2 version, 3 ciphertext, 4 associated
/// data}.
pub fn decrypt(name: &str, version: u32, ciphertext: &[u8], associated_data: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(16 + name.len() + ciphertext.len() + associated_data.len());
    put_bytes(&mut m, 1, name.as_bytes());
    put_uint(&mut m, 2, u64::from(version));
    put_bytes(&mut m, 3, ciphertext);
    put_bytes(&mut m, 4, associated_data);
    frame(KEY_DECRYPT, &m)
}

/// The message of an answer that is exactly one frame of `command`.
pub fn one_frame(body: &[u8], command: u16) -> Option<&[u8]> {
    let head = body.get(..FRAME_HEADER_BYTES)?;
    let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
    (u16::from_be_bytes([head[0], head[1]]) == command && body.len() == FRAME_HEADER_BYTES + len)
        .then(|| &body[FRAME_HEADER_BYTES..])
}

fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

/// Field `field` of `message`: a varint's value (`Err`) or a length-delimited field's bytes
/// (`Ok`); other wire types are skipped.
pub fn field(message: &[u8], field: u32) -> Option<Result<&[u8], u64>> {
    let mut at = 0;
    while at < message.len() {
        let key = varint(message, &mut at)?;
        let value = match key & 7 {
            0 => Err(varint(message, &mut at)?),
            2 => {
                let len = varint(message, &mut at)? as usize;
                let v = message.get(at..at.checked_add(len)?)?;
                at += len;
                Ok(v)
            }
            1 => {
                at += 8;
                continue;
            }
            5 => {
                at += 4;
                continue;
            }
            _ => return None,
        };
        if key >> 3 == u64::from(field) {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_frames_of_protobuf() {
        let g = generate("k", b"ad");
        assert_eq!(
            g,
            [0, 207, 0, 0, 0, 11, 0x0a, 1, b'k', 0x10, 0, 0x1a, 2, b'a', b'd', 0x20, 32]
        );
        let d = decrypt("k", 1, &[9; 200], b"");
        assert_eq!(&d[..2], &[0, 206]);
        let m = one_frame(&d, KEY_DECRYPT).unwrap();
        assert_eq!(field(m, 1), Some(Ok(&b"k"[..])));
        assert_eq!(field(m, 2), Some(Err(1)));
        assert_eq!(field(m, 3), Some(Ok(&[9u8; 200][..])));
        assert_eq!(field(m, 4), Some(Ok(&b""[..])));
        assert_eq!(field(m, 5), None);
        assert_eq!(one_frame(&d, KEY_GENERATE), None);
        assert_eq!(one_frame(&d[..d.len() - 1], KEY_DECRYPT), None);
        assert_eq!(one_frame(&d[..3], KEY_DECRYPT), None);
    }
}
