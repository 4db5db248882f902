//! The MinKMS request and response messages this server serves, written from the field
//! numbers and types of kms-go's `request.proto` / `response.proto`. Requests borrow from
//! the body (a key to import or a plaintext is never copied); responses are appended to the
//! answer buffer.

use crate::api::proto::{self, put_bytes, put_int, put_message, put_uint, ProtoError};
use crate::time::Timestamp;

/// Decodes a message whose fields `on_field` takes one at a time (unknown ones ignored).
pub(super) fn decode<'a>(
    message: &'a [u8],
    mut on_field: impl FnMut(u32, proto::Value<'a>) -> Result<(), ProtoError>,
) -> Result<(), ProtoError> {
    for field in proto::fields(message) {
        let (number, value) = field?;
        on_field(number, value)?;
    }
    Ok(())
}

/// Declares a request message by its fields: number, name, type and the `proto::Value`
/// reader that takes it (`str`, `bytes`, `bool`, `uint32`); unknown fields are skipped.
/// Attributes (docs, derives) go on the struct.
macro_rules! request_message {
    (
        $(#[$attr:meta])*
        $name:ident { $($number:literal => $field:ident: $ty:ty = $read:ident),* $(,)? }
    ) => {
        $(#[$attr])*
        #[derive(Default, PartialEq, Eq)]
        pub struct $name<'a> {
            $(pub $field: $ty,)*
        }

        impl<'a> $name<'a> {
            pub fn decode(message: &'a [u8]) -> Result<Self, ProtoError> {
                let mut m = Self::default();
                decode(message, |n, v| {
                    match n {
                        $($number => m.$field = v.$read(n)?,)*
                        _ => {}
                    }
                    Ok(())
                })?;
                Ok(m)
            }
        }
    };
}

request_message! {
    /// `CreateKeyRequest`.
    #[derive(Debug)]
    CreateKey {
        1 => name: &'a str = str,
        2 => kind: &'a str = str,
        3 => add_version: bool = bool,
    }
}

request_message! {
    /// `ImportKeyRequest`; `key` is the secret key material, borrowed from the request body.
    ImportKey {
        1 => name: &'a str = str,
        2 => kind: &'a str = str,
        3 => key: &'a [u8] = bytes,
    }
}

impl std::fmt::Debug for ImportKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportKey")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// The requests that name a key and a version: `KeyStatusRequest` (1, 2),
/// `DeleteKeyRequest` (1, 2, 3: all versions), `EncryptRequest` (1, 2, 3: plaintext,
/// 4: associated data), `DecryptRequest` (1, 2, 3: ciphertext, 4: associated data),
/// `GenerateKeyRequest` (1, 2, 3: associated data, 4: length), `MACRequest` (1, 2,
/// 3: message). One shape, read per command by [`KeyRequest::decode`].
#[derive(Default, PartialEq, Eq)]
pub struct KeyRequest<'a> {
    pub name: &'a str,
    pub version: u32,
    /// Plaintext (encrypt), ciphertext (decrypt), message (MAC).
    pub data: &'a [u8],
    /// Associated data (encrypt, decrypt, generate).
    pub associated_data: &'a [u8],
    /// DEK length in bytes (generate; 0 = default).
    pub length: u32,
    /// Delete every version (delete).
    pub all_versions: bool,
}

impl std::fmt::Debug for KeyRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRequest")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// Which of the key requests' layouts a message has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLayout {
    Status,
    Delete,
    Encrypt,
    Decrypt,
    Generate,
    Mac,
}

impl<'a> KeyRequest<'a> {
    pub fn decode(layout: KeyLayout, message: &'a [u8]) -> Result<Self, ProtoError> {
        use KeyLayout::*;
        let mut m = Self::default();
        decode(message, |n, v| {
            match (layout, n) {
                (_, 1) => m.name = v.str(n)?,
                (_, 2) => m.version = v.uint32(n)?,
                (Delete, 3) => m.all_versions = v.bool(n)?,
                (Encrypt | Decrypt | Mac, 3) => m.data = v.bytes(n)?,
                (Encrypt | Decrypt, 4) => m.associated_data = v.bytes(n)?,
                (Generate, 3) => m.associated_data = v.bytes(n)?,
                (Generate, 4) => m.length = v.uint32(n)?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(m)
    }
}

request_message! {
    /// `ListRequest`.
    #[derive(Debug)]
    List {
        1 => prefix: &'a str = str,
        2 => continue_at: &'a str = str,
        3 => limit: u32 = uint32,
    }
}

/// `EnclaveStatusRequest`, `CreateEnclaveRequest`, `DeleteEnclaveRequest`,
/// `PolicyRequest`, `IdentityRequest`: field 1 alone.
pub fn decode_enclave_name(message: &[u8]) -> Result<&str, ProtoError> {
    let mut name = "";
    decode(message, |n, v| {
        if n == 1 {
            name = v.str(n)?;
        }
        Ok(())
    })?;
    Ok(name)
}

/// `ErrResponse`.
pub fn put_error(out: &mut Vec<u8>, message: &str) {
    put_bytes(out, 1, message.as_bytes());
}

/// `VersionResponse`.
pub fn put_version(out: &mut Vec<u8>, version: &str, commit: &str, api_version: &str, host: &str) {
    put_bytes(out, 1, version.as_bytes());
    put_bytes(out, 2, commit.as_bytes());
    put_bytes(out, 3, api_version.as_bytes());
    put_bytes(out, 4, host.as_bytes());
}

/// A key as `KeyStatusResponse` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStatus<'a> {
    pub name: &'a str,
    pub version: u32,
    pub kind: &'a str,
    pub created_at: Option<Timestamp>,
    /// An `h1:` identity.
    pub created_by: &'a str,
}

/// `KeyStatusResponse`.
pub fn put_key_status(out: &mut Vec<u8>, s: &KeyStatus<'_>) {
    put_bytes(out, 1, s.name.as_bytes());
    put_uint(out, 2, u64::from(s.version));
    put_bytes(out, 3, s.kind.as_bytes());
    if let Some(t) = s.created_at {
        put_timestamp(out, 4, t);
    }
    put_bytes(out, 5, s.created_by.as_bytes());
}

/// A `google.protobuf.Timestamp` field.
pub(super) fn put_timestamp(out: &mut Vec<u8>, field: u32, t: Timestamp) {
    put_message(out, field, |b| {
        put_int(b, 1, t.seconds);
        put_uint(b, 2, u64::from(t.nanos));
    });
}

/// `ListKeysResponse`: `keys` (field 1) are written by the caller with
/// [`put_list_entry`], then this closes with `continue_at`.
pub fn put_list_entry(out: &mut Vec<u8>, s: &KeyStatus<'_>) {
    put_message(out, 1, |b| put_key_status(b, s));
}

/// The `continue_at` of `ListKeysResponse` / `ListEnclavesResponse` (field 2 of both).
pub fn put_continue_at(out: &mut Vec<u8>, continue_at: &str) {
    put_bytes(out, 2, continue_at.as_bytes());
}

/// `EncryptResponse`.
pub fn put_encrypt(out: &mut Vec<u8>, version: u32, ciphertext: &[u8]) {
    put_uint(out, 1, u64::from(version));
    put_bytes(out, 2, ciphertext);
}

/// `DecryptResponse`.
pub fn put_decrypt(out: &mut Vec<u8>, plaintext: &[u8]) {
    put_bytes(out, 1, plaintext);
}

/// `GenerateKeyResponse`.
pub fn put_generate(out: &mut Vec<u8>, version: u32, plaintext: &[u8], ciphertext: &[u8]) {
    put_uint(out, 1, u64::from(version));
    put_bytes(out, 2, plaintext);
    put_bytes(out, 3, ciphertext);
}

/// `MACResponse`.
pub fn put_mac(out: &mut Vec<u8>, version: u32, mac: &[u8]) {
    put_uint(out, 1, u64::from(version));
    put_bytes(out, 2, mac);
}

/// `EnclaveStatusResponse` (`default`, the server's namespace, has no creation time and no
/// creator; `created_by` is `h1:` or empty).
pub fn put_enclave_status(
    out: &mut Vec<u8>,
    name: &str,
    created_at: Option<Timestamp>,
    created_by: &str,
) {
    put_bytes(out, 1, name.as_bytes());
    if let Some(t) = created_at {
        put_timestamp(out, 2, t);
    }
    put_bytes(out, 3, created_by.as_bytes());
}

/// One entry of `ListEnclavesResponse.enclaves`.
pub fn put_enclave_entry(
    out: &mut Vec<u8>,
    name: &str,
    created_at: Option<Timestamp>,
    created_by: &str,
) {
    put_message(out, 1, |b| {
        put_enclave_status(b, name, created_at, created_by)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::proto::put_bool;

    #[test]
    fn requests_decode_by_layout() {
        let mut m = Vec::new();
        put_bytes(&mut m, 1, b"k");
        put_uint(&mut m, 2, 1);
        put_bytes(&mut m, 3, b"ct");
        put_bytes(&mut m, 4, b"ad");
        put_uint(&mut m, 99, 5);
        let d = KeyRequest::decode(KeyLayout::Decrypt, &m).unwrap();
        assert_eq!(
            (d.name, d.version, d.data, d.associated_data),
            ("k", 1, &b"ct"[..], &b"ad"[..])
        );
        // In a generate request field 3 is the associated data and 4 the length.
        let mut g = Vec::new();
        put_bytes(&mut g, 1, b"k");
        put_bytes(&mut g, 3, b"ad");
        put_uint(&mut g, 4, 32);
        let g = KeyRequest::decode(KeyLayout::Generate, &g).unwrap();
        assert_eq!(
            (g.associated_data, g.length, g.data),
            (&b"ad"[..], 32, &b""[..])
        );
        // A length where a string belongs, a string that is not UTF-8.
        assert!(KeyRequest::decode(KeyLayout::Status, &[8, 1]).is_err());
        assert!(CreateKey::decode(&[10, 1, 0xff]).is_err());
        let mut c = Vec::new();
        put_bytes(&mut c, 1, b"k");
        put_bool(&mut c, 3, true);
        assert_eq!(
            CreateKey::decode(&c).unwrap(),
            CreateKey {
                name: "k",
                kind: "",
                add_version: true
            }
        );
        let mut l = Vec::new();
        put_bytes(&mut l, 1, b"my-");
        put_uint(&mut l, 3, 10);
        assert_eq!(
            List::decode(&l).unwrap(),
            List {
                prefix: "my-",
                continue_at: "",
                limit: 10
            }
        );
    }
}
