//! Key handlers: create, import, describe, list, delete, rotate, and the crypto routes
//! generate, encrypt, decrypt and hmac (http-api.md §5.6–§5.14), then the key service both
//! APIs call.

use super::json::{decode_base64_into, decode_base64_secret, secret_members, JsonWriter};
use super::router::{is_valid_name, is_valid_pattern, pattern_prefix};
use super::{store, ApiError, Core, Peer, Reply, Request};
use crate::crypto::keyring::OpenError;
use crate::crypto::{record, KeyRing, KeyType, KeyVersion};
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
    let ring = store::key(core, name, req.timeout()).await?;
    let (latest, key) = ring.latest();
    let mut created_at = String::with_capacity(32);
    write_time(key, &mut created_at);
    let mut w = JsonWriter::object(out);
    w.string("name", name)
        .string("algorithm", key.key.kind().as_str())
        .string("created_at", &created_at);
    if let Some(by) = key.created_by.as_deref().filter(|s| !s.is_empty()) {
        w.string("created_by", by);
    }
    // A rotated key also shows its versions (upstream's describe has no such members, and a
    // key that was never rotated answers exactly as upstream does).
    if !ring.is_single() {
        w.uint("version", u64::from(latest));
        let mut versions = String::with_capacity(ring.versions().len() * 100);
        versions.push('[');
        for (i, (n, k)) in ring.versions().enumerate() {
            if i > 0 {
                versions.push(',');
            }
            created_at.clear();
            write_time(k, &mut created_at);
            versions.push_str(&format!(
                "{{\"version\":{n},\"algorithm\":\"{}\",\"created_at\":\"{created_at}\"}}",
                k.key.kind().as_str()
            ));
        }
        versions.push(']');
        w.raw("versions", versions.as_bytes());
    }
    w.finish();
    Ok(Reply::Json)
}

fn write_time(key: &KeyVersion, out: &mut String) {
    match key.created_at {
        Some(t) => t.write_rfc3339(out),
        None => out.push_str(GO_ZERO_TIME),
    }
}

/// `POST /v1/key/rotate/<name>`: adds a version to the key; generate and encrypt use it
/// from then on, and ciphertexts of every earlier version still decrypt. Answers the new
/// version's number.
pub async fn rotate(
    core: &Core,
    req: &mut Request<'_>,
    out: &mut Vec<u8>,
) -> Result<Reply, ApiError> {
    let name = valid_name(req.argument)?;
    let version = rotate_key(core, name, None, &creator(req)).await?;
    let mut w = JsonWriter::object(out);
    w.string("name", name).uint("version", u64::from(version));
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
    let ring = store::key(core, name, req.timeout()).await?;
    let ciphertext = &mut req.scratch.output;
    let (dek, _) = new_dek(core, &ring, 0, &req.scratch.context, ciphertext)?;
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
    let ring = store::key(core, name, req.timeout()).await?;
    let ciphertext = &mut req.scratch.output;
    encrypt_with(
        core,
        &ring,
        0,
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
    let ring = store::key(core, name, req.timeout()).await?;
    let timeout = req.timeout();
    let scratch = &mut *req.scratch;
    decrypt_with(
        core,
        name,
        ring,
        &scratch.data,
        &scratch.context,
        &mut scratch.output,
        timeout,
    )
    .await?;
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
    let ring = store::key(core, name, req.timeout()).await?;
    let (_, tag) = mac_with(&ring, 0, &req.scratch.data)?;
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

/// Adds a version to key `name` (of type `kind`, else the latest version's type) with the
/// keystore's compare-and-set; returns its number.
pub async fn rotate_key(
    core: &Core,
    name: &str,
    kind: Option<KeyType>,
    creator: &str,
) -> Result<u32, ApiError> {
    let creator = creator.to_string();
    store::update(core, name, move |ring| {
        let kind = kind.unwrap_or_else(|| ring.kind());
        let rng = ring::rand::SystemRandom::new();
        let key = KeyVersion::generate(kind, &creator, Timestamp::now(), &rng)
            .map_err(|_| ApiError::GENERATE_FAILED)?;
        let number = ring.add(key).map_err(ApiError::ring)?;
        Ok((store::Update::Replace, number))
    })
    .await
}

/// Removes version `version` (0: the latest) of key `name`; removing the only version left
/// deletes the key.
pub async fn remove_version(core: &Core, name: &str, version: u32) -> Result<(), ApiError> {
    store::update(core, name, move |ring| {
        let number = if version == 0 {
            ring.latest().0
        } else {
            version
        };
        match ring.remove(number).map_err(ApiError::ring)? {
            true => Ok((store::Update::Replace, ())),
            false => Ok((store::Update::DeleteKey, ())),
        }
    })
    .await
}

/// Version `version` of a ring (0: the latest) and its number.
pub fn version_of(ring: &KeyRing, version: u32) -> Result<(u32, &KeyVersion), ApiError> {
    if version == 0 {
        return Ok(ring.latest());
    }
    ring.version(version)
        .map(|k| (version, k))
        .ok_or(ApiError::KEY_VERSION_NOT_FOUND)
}

/// A new data encryption key: its plaintext (wiped on drop) — its ciphertext went to the
/// caller's buffer.
pub struct Dek(Secret<{ DEK_BYTES + 28 }>);

impl Dek {
    pub fn plaintext(&self) -> &[u8] {
        &self.0.expose()[..DEK_BYTES]
    }
}

/// Makes a DEK and seals it under version `version` of `ring` (0: the latest) with
/// `context` as associated data into `ciphertext` (cleared first); returns the DEK and the
/// version's number.
pub fn new_dek(
    core: &Core,
    ring: &KeyRing,
    version: u32,
    context: &[u8],
    ciphertext: &mut Vec<u8>,
) -> Result<(Dek, u32), ApiError> {
    let (number, _) = version_of(ring, version)?;
    // One RNG draw per request: the DEK and the ciphertext's IV and nonce.
    let mut random = Secret::new([0u8; DEK_BYTES + 28]);
    fill_random(core, &mut random)?;
    let (dek, iv_nonce) = random.expose().split_at(DEK_BYTES);
    let iv_nonce: &[u8; 28] = iv_nonce.try_into().map_err(|_| ApiError::GENERATE_FAILED)?;
    ciphertext.clear();
    ring.seal_into(number, dek, context, iv_nonce, ciphertext)
        .map_err(|_| ApiError::GENERATE_FAILED)?;
    Ok((Dek(random), number))
}

/// Seals `plaintext` under version `version` of `ring` (0: the latest) into `ciphertext`
/// (cleared first); returns the version's number.
pub fn encrypt_with(
    core: &Core,
    ring: &KeyRing,
    version: u32,
    plaintext: &[u8],
    context: &[u8],
    ciphertext: &mut Vec<u8>,
) -> Result<u32, ApiError> {
    let (number, _) = version_of(ring, version)?;
    let mut random = Secret::new([0u8; 28]);
    fill_random(core, &mut random)?;
    ciphertext.clear();
    ring.seal_into(number, plaintext, context, random.expose(), ciphertext)
        .map_err(|_| ApiError::ENCRYPT_FAILED)?;
    Ok(number)
}

/// Opens a ciphertext of any version and any format the KES API has produced into
/// `plaintext`; returns the version that opened it. A ciphertext of a version newer than
/// this core's copy of the key (another node rotated it) reloads the key once.
pub async fn decrypt_with(
    core: &Core,
    name: &str,
    ring: std::rc::Rc<KeyRing>,
    ciphertext: &[u8],
    context: &[u8],
    plaintext: &mut Vec<u8>,
    wait: std::time::Duration,
) -> Result<u32, ApiError> {
    let opened = ring.open_into(ciphertext, context, plaintext);
    let opened = match opened {
        Err(OpenError::UnknownVersion(v)) if v >= ring.next_number() => {
            match store::reload(core, name, wait).await {
                Some(fresh) => fresh?.open_into(ciphertext, context, plaintext),
                None => opened,
            }
        }
        other => other,
    };
    opened.map_err(|e| match e {
        OpenError::NotAuthentic => ApiError::NOT_AUTHENTIC,
        OpenError::UnknownVersion(v) => ApiError::unknown_version(v),
        OpenError::Failed => ApiError::DECRYPT_FAILED,
    })
}

/// HMAC-SHA-256 of `message` under the HMAC key of version `version` (0: the latest);
/// returns the version's number and the tag.
pub fn mac_with(ring: &KeyRing, version: u32, message: &[u8]) -> Result<(u32, [u8; 32]), ApiError> {
    let (number, key) = version_of(ring, version)?;
    let hmac_key = key.hmac.as_ref().ok_or(ApiError::NO_HMAC)?;
    Ok((number, hmac_key.sign(message)))
}
