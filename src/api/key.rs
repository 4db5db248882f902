//! Key handlers: create, import, describe, list, delete, and the crypto routes generate,
//! encrypt, decrypt and hmac (http-api.md §5.6–§5.14).

use super::json::{decode_base64_into, decode_base64_secret, secret_members, JsonWriter};
use super::router::{is_valid_name, is_valid_pattern, pattern_prefix};
use super::{store, ApiError, Core, Peer, Reply, Request};
use crate::crypto::{record, KeyType, KeyVersion};
use crate::secret::Secret;
use crate::time::{Timestamp, GO_ZERO_TIME};

/// Size of a data encryption key in bytes.
pub const DEK_BYTES: usize = 32;

fn valid_name(name: &str) -> Result<&str, ApiError> {
    if is_valid_name(name) {
        Ok(name)
    } else {
        Err(ApiError::invalid_key_name(name))
    }
}

/// The caller's identity in hex, as recorded in `created_by`.
fn creator(req: &Request<'_>) -> String {
    match req.peer {
        Peer::Identified(identity) => identity.to_hex(),
        Peer::Unidentified(_) => String::new(),
    }
}

pub async fn create(core: &Core, req: &mut Request<'_>) -> Result<Reply, ApiError> {
    let name = valid_name(req.argument)?;
    create_key(core, name, core.shared.key_type, &creator(req)).await?;
    Ok(Reply::Empty)
}

pub async fn import(core: &Core, req: &mut Request<'_>) -> Result<Reply, ApiError> {
    let name = valid_name(req.argument)?;
    // `bytes`/`algorithm` are the pre-2023-10 names of `key`/`cipher`: accepted as a superset
    // so legacy SDKs keep working.
    let [key, cipher, bytes, algorithm] =
        secret_members(req.body, ["key", "cipher", "bytes", "algorithm"])
            .map_err(|_| ApiError::INVALID_IMPORT_BODY)?;
    let legacy = cipher.is_none() && key.is_none();
    let cipher = match (legacy, cipher, algorithm) {
        (true, _, Some(a)) => String::from_utf8_lossy(a.expose()).into_owned(),
        (true, _, None) => "AES256".to_string(),
        (false, Some(c), _) => String::from_utf8_lossy(c.expose()).into_owned(),
        (false, None, _) => String::new(),
    };
    let text = key.or(bytes).unwrap_or_default();
    let material =
        decode_base64_secret(text.expose()).map_err(|_| ApiError::INVALID_IMPORT_BODY)?;
    let kind =
        KeyType::from_name(&cipher).ok_or_else(|| ApiError::unsupported_algorithm(&cipher))?;
    import_key(core, name, kind, material.expose(), &creator(req)).await?;
    Ok(Reply::Empty)
}

pub async fn describe(
    core: &Core,
    req: &mut Request<'_>,
    out: &mut Vec<u8>,
) -> Result<Reply, ApiError> {
    let name = valid_name(req.argument)?;
    let key = store::key(core, name, req.timeout()).await?;
    let mut created_at = String::with_capacity(32);
    match key.created_at {
        Some(t) => t.write_rfc3339(&mut created_at),
        None => created_at.push_str(GO_ZERO_TIME),
    }
    let mut w = JsonWriter::object(out);
    w.string("name", name)
        .string("algorithm", key.key.kind().as_str())
        .string("created_at", &created_at);
    if let Some(by) = key.created_by.as_deref().filter(|s| !s.is_empty()) {
        w.string("created_by", by);
    }
    w.finish();
    Ok(Reply::Json)
}

pub async fn list(
    core: &Core,
    req: &mut Request<'_>,
    out: &mut Vec<u8>,
) -> Result<Reply, ApiError> {
    let pattern = req.argument;
    if !is_valid_pattern(pattern) {
        return Err(ApiError::invalid_pattern(pattern));
    }
    let names = store::list(core, pattern_prefix(pattern)).await?;
    let mut w = JsonWriter::object(out);
    // Only KES names: never the MinKMS enclaves' records and keys (`-e-…`, see
    // `minkms::enclave`), which no KES route can reach.
    let names = names
        .iter()
        .map(String::as_str)
        .filter(|n| is_valid_name(n));
    w.string_array_sliced("names", names).await;
    w.finish();
    Ok(Reply::Json)
}

pub async fn delete(core: &Core, req: &mut Request<'_>) -> Result<Reply, ApiError> {
    let name = valid_name(req.argument)?;
    store::delete(core, name).await?;
    Ok(Reply::Empty)
}

pub async fn generate(
    core: &Core,
    req: &mut Request<'_>,
    out: &mut Vec<u8>,
) -> Result<Reply, ApiError> {
    let name = valid_name(req.argument)?;
    if !req.body.is_empty() {
        let mut parser = core.json.borrow_mut();
        let [ctx] = parser
            .string_members(req.body, ["context"])
            .map_err(|_| ApiError::INVALID_BODY)?;
        decode_base64_into(ctx.unwrap_or(""), &mut req.scratch.context)
            .map_err(|_| ApiError::INVALID_BODY)?;
    }
    let key = store::key(core, name, req.timeout()).await?;
    let ciphertext = &mut req.scratch.output;
    let dek = new_dek(core, &key, &req.scratch.context, ciphertext)?;
    let mut w = JsonWriter::object(out);
    w.base64("plaintext", dek.plaintext())
        .base64("ciphertext", ciphertext);
    w.finish();
    Ok(Reply::Json)
}

fn fill_random<const N: usize>(core: &Core, buf: &mut Secret<N>) -> Result<(), ApiError> {
    let mut bytes = [0u8; N];
    let result = core.fast_rng.borrow_mut().fill(&mut bytes);
    *buf = Secret::new(bytes);
    // SAFETY: wiping our own stack copy of the random bytes.
    unsafe { memsec::memzero(bytes.as_mut_ptr(), N) };
    result.map_err(|_| ApiError::GENERATE_FAILED)
}

pub async fn encrypt(
    core: &Core,
    req: &mut Request<'_>,
    out: &mut Vec<u8>,
) -> Result<Reply, ApiError> {
    let name = valid_name(req.argument)?;
    let [plaintext, ctx] =
        secret_members(req.body, ["plaintext", "context"]).map_err(|_| ApiError::INVALID_BODY)?;
    let plaintext = decode_base64_secret(plaintext.as_ref().map_or(&b""[..], |p| p.expose()))
        .map_err(|_| ApiError::INVALID_BODY)?;
    let ctx = ctx.unwrap_or_default();
    let ctx = std::str::from_utf8(ctx.expose()).map_err(|_| ApiError::INVALID_BODY)?;
    decode_base64_into(ctx, &mut req.scratch.context).map_err(|_| ApiError::INVALID_BODY)?;
    let key = store::key(core, name, req.timeout()).await?;
    let ciphertext = &mut req.scratch.output;
    encrypt_with(
        core,
        &key,
        plaintext.expose(),
        &req.scratch.context,
        ciphertext,
    )?;
    let mut w = JsonWriter::object(out);
    w.base64("ciphertext", ciphertext);
    w.finish();
    Ok(Reply::Json)
}

pub async fn decrypt(
    core: &Core,
    req: &mut Request<'_>,
    out: &mut Vec<u8>,
) -> Result<Reply, ApiError> {
    let name = valid_name(req.argument)?;
    {
        let mut parser = core.json.borrow_mut();
        let [ct, ctx] = parser
            .string_members(req.body, ["ciphertext", "context"])
            .map_err(|_| ApiError::INVALID_BODY)?;
        decode_base64_into(ctx.unwrap_or(""), &mut req.scratch.context)
            .map_err(|_| ApiError::INVALID_BODY)?;
        decode_base64_into(ct.unwrap_or(""), &mut req.scratch.data)
            .map_err(|_| ApiError::INVALID_BODY)?;
    }
    let key = store::key(core, name, req.timeout()).await?;
    let scratch = &mut *req.scratch;
    decrypt_with(&key, &scratch.data, &scratch.context, &mut scratch.output)?;
    let mut w = JsonWriter::object(out);
    w.base64("plaintext", &scratch.output);
    w.finish();
    Ok(Reply::Json)
}

pub async fn hmac(
    core: &Core,
    req: &mut Request<'_>,
    out: &mut Vec<u8>,
) -> Result<Reply, ApiError> {
    let name = valid_name(req.argument)?;
    {
        let mut parser = core.json.borrow_mut();
        let [msg] = parser
            .string_members(req.body, ["message"])
            .map_err(|_| ApiError::INVALID_BODY)?;
        decode_base64_into(msg.unwrap_or(""), &mut req.scratch.data)
            .map_err(|_| ApiError::INVALID_BODY)?;
    }
    let key = store::key(core, name, req.timeout()).await?;
    let tag = mac_with(&key, &req.scratch.data)?;
    let mut w = JsonWriter::object(out);
    w.base64("hmac", &tag);
    w.finish();
    Ok(Reply::Json)
}

// The key service: what both APIs (the KES JSON routes above and the MinKMS commands in
// `super::minkms`) call, so that key creation, DEKs and the ciphers live in one place.

/// Creates key `name`: a new random key of type `kind`.
pub async fn create_key(
    core: &Core,
    name: &str,
    kind: KeyType,
    creator: &str,
) -> Result<(), ApiError> {
    let key = KeyVersion::generate(kind, creator, Timestamp::now(), &core.rng)
        .map_err(|_| ApiError::GENERATE_FAILED)?;
    store::create(core, name, record::encode_record(&key)).await
}

/// Creates key `name` of type `kind` from the 32 bytes of `material`.
pub async fn import_key(
    core: &Core,
    name: &str,
    kind: KeyType,
    material: &[u8],
    creator: &str,
) -> Result<(), ApiError> {
    let secret = Secret::<32>::from_slice(material)
        .ok_or_else(|| ApiError::invalid_key_size(kind.as_str()))?;
    let key = KeyVersion::import(kind, secret, creator, Timestamp::now(), &core.rng)
        .map_err(|_| ApiError::CREATE_INTERNAL)?;
    store::create(core, name, record::encode_record(&key)).await
}

/// A new data encryption key: its plaintext (wiped on drop) — its ciphertext went to the
/// caller's buffer.
pub struct Dek(Secret<{ DEK_BYTES + 28 }>);

impl Dek {
    pub fn plaintext(&self) -> &[u8] {
        &self.0.expose()[..DEK_BYTES]
    }
}

/// Makes a DEK and seals it under `key` with `context` as associated data into
/// `ciphertext` (cleared first).
pub fn new_dek(
    core: &Core,
    key: &KeyVersion,
    context: &[u8],
    ciphertext: &mut Vec<u8>,
) -> Result<Dek, ApiError> {
    // One RNG draw per request: the DEK and the ciphertext's IV and nonce.
    let mut random = Secret::new([0u8; DEK_BYTES + 28]);
    fill_random(core, &mut random)?;
    let (dek, iv_nonce) = random.expose().split_at(DEK_BYTES);
    let iv_nonce: &[u8; 28] = iv_nonce.try_into().map_err(|_| ApiError::GENERATE_FAILED)?;
    ciphertext.clear();
    key.key
        .seal_into(dek, context, iv_nonce, ciphertext)
        .map_err(|_| ApiError::GENERATE_FAILED)?;
    Ok(Dek(random))
}

/// Seals `plaintext` under `key` into `ciphertext` (cleared first).
pub fn encrypt_with(
    core: &Core,
    key: &KeyVersion,
    plaintext: &[u8],
    context: &[u8],
    ciphertext: &mut Vec<u8>,
) -> Result<(), ApiError> {
    let mut random = Secret::new([0u8; 28]);
    fill_random(core, &mut random)?;
    ciphertext.clear();
    key.key
        .seal_into(plaintext, context, random.expose(), ciphertext)
        .map_err(|_| ApiError::ENCRYPT_FAILED)
}

/// Opens any ciphertext format the KES API has produced into `plaintext`.
pub fn decrypt_with(
    key: &KeyVersion,
    ciphertext: &[u8],
    context: &[u8],
    plaintext: &mut Vec<u8>,
) -> Result<(), ApiError> {
    key.decrypt_into(ciphertext, context, plaintext)
        .map_err(|e| match e {
            crate::crypto::CryptoError::NotAuthentic => ApiError::NOT_AUTHENTIC,
            _ => ApiError::DECRYPT_FAILED,
        })
}

/// HMAC-SHA-256 of `message` under the key's HMAC key.
pub fn mac_with(key: &KeyVersion, message: &[u8]) -> Result<[u8; 32], ApiError> {
    let hmac_key = key.hmac.as_ref().ok_or(ApiError::NO_HMAC)?;
    Ok(hmac_key.sign(message))
}
