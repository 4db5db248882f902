//! Legacy RFC 1423 PEM encryption of private keys (`Proc-Type: 4,ENCRYPTED` + `DEK-Info`),
//! which upstream decrypts with `tls.password`: key = OpenSSL `EVP_BytesToKey(MD5, 1 round,
//! salt = first 8 bytes of the IV)`, then CBC with PKCS#7 padding. Only used at start-up
//! and reload; the decrypted key lives in a zeroizing buffer.

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use md5::{Digest, Md5};

use crate::secret::SecretVec;

/// Why an encrypted PEM key could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum PemError {
    NotEncrypted,
    PasswordRequired,
    Malformed(&'static str),
    UnsupportedCipher(String),
    /// Wrong password (or corrupt data): the padding does not check out.
    Decrypt,
}

impl std::fmt::Display for PemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PemError::NotEncrypted => f.write_str("private key is not encrypted"),
            PemError::PasswordRequired => {
                f.write_str("private key is encrypted: password required")
            }
            PemError::Malformed(why) => write!(f, "malformed encrypted private key: {why}"),
            PemError::UnsupportedCipher(c) => write!(f, "unsupported private key encryption '{c}'"),
            PemError::Decrypt => f.write_str("failed to decrypt private key: wrong password?"),
        }
    }
}

impl std::error::Error for PemError {}

/// Whether `pem` holds an RFC 1423 encrypted block.
pub fn is_encrypted(pem: &str) -> bool {
    pem.contains("Proc-Type: 4,ENCRYPTED")
}

/// Decrypts the first encrypted PEM block; returns its label (`RSA PRIVATE KEY`,
/// `EC PRIVATE KEY`, …) and the DER.
pub fn decrypt(pem: &str, password: &str) -> Result<(String, SecretVec), PemError> {
    let begin = pem
        .find("-----BEGIN ")
        .ok_or(PemError::Malformed("no PEM block"))?;
    let rest = &pem[begin + 11..];
    let label_end = rest
        .find("-----")
        .ok_or(PemError::Malformed("bad BEGIN line"))?;
    let label = rest[..label_end].to_string();
    let body = &rest[label_end + 5..];
    let end = body
        .find("-----END ")
        .ok_or(PemError::Malformed("no END line"))?;
    let body = body[..end].trim_start_matches(['\r', '\n']);
    let mut headers = true;
    let mut dek_info = None;
    let mut encrypted = false;
    let mut b64 = String::new();
    for line in body.lines().map(str::trim) {
        if headers {
            if line.is_empty() {
                headers = false;
                continue;
            }
            if let Some((k, v)) = line.split_once(':') {
                match k.trim() {
                    "Proc-Type" => encrypted = v.trim() == "4,ENCRYPTED",
                    "DEK-Info" => dek_info = Some(v.trim().to_string()),
                    _ => {}
                }
                continue;
            }
            headers = false;
        }
        b64.push_str(line);
    }
    if !encrypted {
        return Err(PemError::NotEncrypted);
    }
    if password.is_empty() {
        return Err(PemError::PasswordRequired);
    }
    let dek_info = dek_info.ok_or(PemError::Malformed("no DEK-Info header"))?;
    let (cipher, iv_hex) = dek_info
        .split_once(',')
        .ok_or(PemError::Malformed("bad DEK-Info"))?;
    let iv = hex::decode(iv_hex.trim()).map_err(|_| PemError::Malformed("bad IV"))?;
    let mut data = SecretVec::new(
        BASE64
            .decode(b64.as_bytes())
            .map_err(|_| PemError::Malformed("bad base64"))?,
    );
    let (key_len, block) = match cipher {
        "AES-128-CBC" => (16, 16),
        "AES-192-CBC" => (24, 16),
        "AES-256-CBC" => (32, 16),
        "DES-CBC" => (8, 8),
        "DES-EDE3-CBC" => (24, 8),
        other => return Err(PemError::UnsupportedCipher(other.to_string())),
    };
    if iv.len() != block || iv.len() < 8 {
        return Err(PemError::Malformed("IV length does not match the cipher"));
    }
    let key = bytes_to_key(password.as_bytes(), &iv[..8], key_len);
    let buf = data.as_mut_vec();
    let len = match cipher {
        "AES-128-CBC" => cbc::Decryptor::<aes::Aes128>::new_from_slices(key.expose(), &iv)
            .map_err(|_| PemError::Decrypt)?
            .decrypt_padded_mut::<Pkcs7>(buf)
            .map(|p| p.len()),
        "AES-192-CBC" => cbc::Decryptor::<aes::Aes192>::new_from_slices(key.expose(), &iv)
            .map_err(|_| PemError::Decrypt)?
            .decrypt_padded_mut::<Pkcs7>(buf)
            .map(|p| p.len()),
        "AES-256-CBC" => cbc::Decryptor::<aes::Aes256>::new_from_slices(key.expose(), &iv)
            .map_err(|_| PemError::Decrypt)?
            .decrypt_padded_mut::<Pkcs7>(buf)
            .map(|p| p.len()),
        "DES-CBC" => cbc::Decryptor::<des::Des>::new_from_slices(key.expose(), &iv)
            .map_err(|_| PemError::Decrypt)?
            .decrypt_padded_mut::<Pkcs7>(buf)
            .map(|p| p.len()),
        _ => cbc::Decryptor::<des::TdesEde3>::new_from_slices(key.expose(), &iv)
            .map_err(|_| PemError::Decrypt)?
            .decrypt_padded_mut::<Pkcs7>(buf)
            .map(|p| p.len()),
    }
    .map_err(|_| PemError::Decrypt)?;
    buf.truncate(len);
    Ok((label, data))
}

/// Encrypts a PKCS#8 private key as a legacy RFC 1423 PEM block (AES-256-CBC), the form
/// `kes identity new --encrypt` writes and `tls.password` reads.
pub fn encrypt_pkcs8(der: &[u8], password: &str) -> Result<SecretVec, PemError> {
    use aes::cipher::BlockEncryptMut;
    use ring::rand::SecureRandom;
    let mut iv = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut iv)
        .map_err(|_| PemError::Decrypt)?;
    let key = bytes_to_key(password.as_bytes(), &iv[..8], 32);
    let mut buf = SecretVec::with_capacity(der.len() + 16);
    buf.as_mut_vec().extend_from_slice(der);
    buf.as_mut_vec().resize(der.len() + 16, 0);
    let len = cbc::Encryptor::<aes::Aes256>::new_from_slices(key.expose(), &iv)
        .map_err(|_| PemError::Decrypt)?
        .encrypt_padded_mut::<Pkcs7>(buf.as_mut_vec(), der.len())
        .map_err(|_| PemError::Decrypt)?
        .len();
    buf.as_mut_vec().truncate(len);
    let mut out = format!(
        "-----BEGIN PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,{}\n\n",
        hex::encode_upper(iv)
    );
    let b64 = BASE64.encode(buf.expose());
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    Ok(SecretVec::new(out.into_bytes()))
}

/// OpenSSL's EVP_BytesToKey with MD5 and one iteration.
fn bytes_to_key(password: &[u8], salt: &[u8], len: usize) -> SecretVec {
    let mut out = SecretVec::with_capacity(len + 16);
    let mut prev: Option<[u8; 16]> = None;
    while out.len() < len {
        let mut h = Md5::new();
        if let Some(p) = prev {
            h.update(p);
        }
        h.update(password);
        h.update(salt);
        let d: [u8; 16] = h.finalize().into();
        out.as_mut_vec().extend_from_slice(&d);
        prev = Some(d);
    }
    out.as_mut_vec().truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypt_then_decrypt_round_trips() {
        let der = b"not really a key, but bytes of some length".to_vec();
        let pem = encrypt_pkcs8(&der, "pw").unwrap();
        let text = String::from_utf8(pem.expose().to_vec()).unwrap();
        assert!(is_encrypted(&text));
        let (label, back) = decrypt(&text, "pw").unwrap();
        assert_eq!(label, "PRIVATE KEY");
        assert_eq!(back.expose(), &der[..]);
        assert_eq!(decrypt(&text, "other").unwrap_err(), PemError::Decrypt);
    }

    #[test]
    fn errors() {
        assert_eq!(
            decrypt(
                "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
                "x"
            )
            .unwrap_err(),
            PemError::NotEncrypted
        );
        let enc = "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00112233445566778899AABBCCDDEEFF\n\nAAAAAAAAAAAAAAAAAAAAAA==\n-----END EC PRIVATE KEY-----\n";
        assert_eq!(decrypt(enc, "").unwrap_err(), PemError::PasswordRequired);
        assert_eq!(decrypt(enc, "pw").unwrap_err(), PemError::Decrypt);
        let bad = enc.replace("AES-256-CBC", "RC2-CBC");
        assert_eq!(
            decrypt(&bad, "pw").unwrap_err(),
            PemError::UnsupportedCipher("RC2-CBC".into())
        );
    }
}
