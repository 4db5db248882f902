//! `kes key …`: create, import, info, ls, rm, rotate, encrypt, decrypt, dek.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use clap::{Args, Subcommand};

use super::common::{
    call, escape, json_field, json_value, list, print_names, CliResult, ClientArgs,
};

#[derive(Args, Debug)]
pub struct KeyArgs {
    #[command(subcommand)]
    pub command: KeyCommand,
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Create one or more keys.
    ///
    /// Example: kes key create my-key-1 my-key-2
    Create {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Import a key from its base64-encoded 32 bytes.
    ///
    /// Example: kes key import my-key "$(head -c 32 /dev/urandom | base64)"
    Import {
        name: String,
        /// The key material, base64.
        key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Describe a key.
    ///
    /// Example: kes key info my-key
    Info {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List keys (default pattern `*`).
    ///
    /// Example: kes key ls 'minio-*'
    Ls {
        #[arg(default_value = "*")]
        pattern: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete one or more keys.
    ///
    /// Example: kes key rm my-key
    Rm {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Add a version to a key: data keys and ciphertexts are made with it from then on, and
    /// ciphertexts of every earlier version still decrypt.
    ///
    /// Example: kes key rotate my-key
    Rotate {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Encrypt a message with a key.
    ///
    /// Example: kes key encrypt my-key "Hello World"
    Encrypt {
        name: String,
        message: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Decrypt a base64 ciphertext, with an optional base64 context.
    ///
    /// Example: kes key decrypt my-key <ciphertext> [<context>]
    Decrypt {
        name: String,
        ciphertext: String,
        context: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Generate a data encryption key (plaintext + ciphertext), with an optional base64 context.
    ///
    /// Example: kes key dek my-key
    Dek {
        name: String,
        context: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn json_body(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = crate::api::json::JsonWriter::object(&mut out);
    for (k, v) in pairs {
        w.string(k, v);
    }
    w.finish();
    out
}

fn check_base64(what: &str, value: &str) -> CliResult {
    BASE64
        .decode(value)
        .map(|_| ())
        .map_err(|_| format!("{what} is not valid base64").into())
}

/// A key name the server would refuse, refused here with the rule.
fn check_name(name: &str) -> CliResult {
    if crate::routes::is_valid_name(name) {
        return Ok(());
    }
    Err(format!("invalid key name '{name}': {}", crate::routes::NAME_RULE).into())
}

pub fn run(args: KeyArgs) -> CliResult {
    match args.command {
        KeyCommand::Create { names, client } => {
            for name in &names {
                check_name(name)?;
            }
            let mut c = client.client()?;
            for name in names {
                call(
                    &mut c,
                    "POST",
                    &format!("/v1/key/create/{}", escape(&name)),
                    None,
                )
                .map_err(|e| format!("failed to create key '{name}': {e}"))?;
                if !client.machine() {
                    outln!("Created key '{name}'");
                }
            }
        }
        KeyCommand::Import { name, key, client } => {
            check_name(&name)?;
            check_base64("the key", &key)?;
            let mut c = client.client()?;
            let body = json_body(&[("key", &key), ("cipher", "AES256")]);
            call(
                &mut c,
                "POST",
                &format!("/v1/key/import/{}", escape(&name)),
                Some(&body),
            )
            .map_err(|e| format!("failed to import key '{name}': {e}"))?;
            if !client.machine() {
                outln!("Imported key '{name}'");
            }
        }
        KeyCommand::Info { name, client } => {
            let mut c = client.client()?;
            let resp = call(
                &mut c,
                "GET",
                &format!("/v1/key/describe/{}", escape(&name)),
                None,
            )?;
            if client.machine() {
                out!("{}", String::from_utf8_lossy(&resp.body));
            } else {
                use simd_json::prelude::*;
                let v = json_value(&resp.body)?;
                let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
                let date = crate::time::Timestamp::parse_rfc3339(&s("created_at"))
                    .map(|t| t.format_date_time())
                    .unwrap_or_default();
                outln!("Name      {}", s("name"));
                outln!("Algorithm {}", s("algorithm"));
                outln!("Date      {date}");
                outln!("Owner     {}", s("created_by"));
                // A key that was never rotated is version 1 (the server then says nothing
                // of versions, as upstream's does not).
                let version = v.get("version").and_then(|x| x.as_u64()).unwrap_or(1);
                outln!("Version   {version}");
                if let Some(versions) = v.get("versions").and_then(|x| x.as_array()) {
                    let list: Vec<String> = versions
                        .iter()
                        .filter_map(|e| {
                            let n = e.get("version")?.as_u64()?;
                            let at = e.get("created_at")?.as_str()?;
                            let at = crate::time::Timestamp::parse_rfc3339(at)
                                .map(|t| t.format_date_time())
                                .unwrap_or_default();
                            Some(format!("{n} ({at})"))
                        })
                        .collect();
                    outln!("Versions  {}", list.join(", "));
                }
            }
        }
        KeyCommand::Rotate { names, client } => {
            for name in &names {
                check_name(name)?;
            }
            let mut c = client.client()?;
            for name in names {
                let resp = call(
                    &mut c,
                    "POST",
                    &format!("/v1/key/rotate/{}", escape(&name)),
                    None,
                )
                .map_err(|e| format!("failed to rotate key '{name}': {e}"))?;
                if client.machine() {
                    out!("{}", String::from_utf8_lossy(&resp.body));
                } else {
                    use simd_json::prelude::*;
                    let v = json_value(&resp.body)?;
                    let version = v.get("version").and_then(|x| x.as_u64()).unwrap_or(0);
                    outln!("Rotated key '{name}': version {version} is now the latest");
                }
            }
        }
        KeyCommand::Ls { pattern, client } => {
            let mut c = client.client()?;
            let names = list(&mut c, "/v1/key/list/", "names", &pattern)?;
            print_names("Key", &names, client.machine());
        }
        KeyCommand::Rm { names, client } => {
            let mut c = client.client()?;
            for name in names {
                call(
                    &mut c,
                    "DELETE",
                    &format!("/v1/key/delete/{}", escape(&name)),
                    None,
                )
                .map_err(|e| format!("failed to delete key '{name}': {e}"))?;
            }
        }
        KeyCommand::Encrypt {
            name,
            message,
            client,
        } => {
            let mut c = client.client()?;
            let body = json_body(&[("plaintext", &BASE64.encode(message.as_bytes()))]);
            let resp = call(
                &mut c,
                "POST",
                &format!("/v1/key/encrypt/{}", escape(&name)),
                Some(&body),
            )?;
            let ct = json_field(&resp.body, "ciphertext")
                .ok_or("no ciphertext in the server's answer")?;
            if client.machine() {
                outln!(
                    "{}",
                    String::from_utf8_lossy(&json_body(&[("ciphertext", &ct)])).trim_end()
                );
            } else {
                outln!("ciphertext: {ct}");
            }
        }
        KeyCommand::Decrypt {
            name,
            ciphertext,
            context,
            client,
        } => {
            check_base64("the ciphertext", &ciphertext)?;
            let mut pairs = vec![("ciphertext", ciphertext.as_str())];
            if let Some(ctx) = context.as_deref() {
                check_base64("the context", ctx)?;
                pairs.push(("context", ctx));
            }
            let mut c = client.client()?;
            let resp = call(
                &mut c,
                "POST",
                &format!("/v1/key/decrypt/{}", escape(&name)),
                Some(&json_body(&pairs)),
            )?;
            let pt =
                json_field(&resp.body, "plaintext").ok_or("no plaintext in the server's answer")?;
            if client.machine() {
                outln!(
                    "{}",
                    String::from_utf8_lossy(&json_body(&[("plaintext", &pt)])).trim_end()
                );
            } else {
                outln!("plaintext: {pt}");
            }
        }
        KeyCommand::Dek {
            name,
            context,
            client,
        } => {
            let body = match context.as_deref() {
                Some(ctx) => {
                    check_base64("the context", ctx)?;
                    json_body(&[("context", ctx)])
                }
                None => b"{}".to_vec(),
            };
            let mut c = client.client()?;
            let resp = call(
                &mut c,
                "POST",
                &format!("/v1/key/generate/{}", escape(&name)),
                Some(&body),
            )?;
            let pt =
                json_field(&resp.body, "plaintext").ok_or("no plaintext in the server's answer")?;
            let ct = json_field(&resp.body, "ciphertext")
                .ok_or("no ciphertext in the server's answer")?;
            if client.machine() {
                outln!(
                    "{}",
                    String::from_utf8_lossy(&json_body(&[("plaintext", &pt), ("ciphertext", &ct)]))
                        .trim_end()
                );
            } else {
                outln!("plaintext : {pt}");
                outln!("ciphertext: {ct}");
            }
        }
    }
    Ok(())
}
