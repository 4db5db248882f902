//! What every client command shares: server/credential flags resolved like upstream's CLI
//! (flags, then `MINIO_KES_*`/`KES_*` environment variables), output mode (terminal vs pipe,
//! `--json`, `--color`), and turning server errors into `Error: …` messages.

use std::io::IsTerminal;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::client::{
    first_env, normalize_endpoints, Client, ClientConfig, Credentials, Response, DEFAULT_SERVER,
    SERVER_ENV,
};

pub type CliResult = Result<(), Box<dyn std::error::Error>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Color {
    Auto,
    Never,
    Always,
}

/// Flags of the commands that talk to a server.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Server endpoint(s), comma-separated (default: $MINIO_KES_SERVER, $KES_SERVER,
    /// $MINIO_KMS_KES_ENDPOINT, else 127.0.0.1:7373).
    #[arg(short = 's', long = "server", value_name = "HOST:PORT")]
    pub server: Option<String>,
    /// API key (default: $MINIO_KES_API_KEY, $KES_API_KEY, $MINIO_KMS_KES_API_KEY).
    #[arg(short = 'a', long = "api-key", value_name = "KEY")]
    pub api_key: Option<String>,
    /// Skip verification of the server's certificate.
    #[arg(short = 'k', long = "insecure")]
    pub insecure: bool,
    /// Ignored; accepted for compatibility with enclave-aware CLIs.
    #[arg(short = 'e', long = "enclave", value_name = "NAME", hide = true)]
    pub enclave: Option<String>,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
    /// When to color the output.
    #[arg(long, value_enum, default_value = "auto")]
    pub color: Color,
}

impl ClientArgs {
    /// Builds a client from flags and environment.
    pub fn client(&self) -> Result<Client, Box<dyn std::error::Error>> {
        let server = self
            .server
            .clone()
            .or_else(|| first_env(SERVER_ENV))
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_SERVER.to_string());
        let endpoints = normalize_endpoints(&server);
        if endpoints.is_empty() {
            return Err("no server endpoint specified".into());
        }
        let credentials = match &self.api_key {
            Some(key) => Credentials::resolve(Some(key), None, None)?,
            None => Credentials::from_env()?,
        };
        Ok(Client::new(ClientConfig {
            endpoints,
            credentials: Some(credentials),
            insecure: self.insecure,
            ca_file: None,
            timeout: Duration::from_secs(30),
        })?)
    }

    /// Human output (terminal) or machine output (pipe / --json).
    pub fn machine(&self) -> bool {
        self.json || !std::io::stdout().is_terminal()
    }
}

/// Sends a request; non-2xx answers become an error carrying the server's message.
pub fn call(
    client: &mut Client,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<Response, Box<dyn std::error::Error>> {
    let resp = client.request(method, path, body, &[])?;
    if (200..300).contains(&resp.status) {
        return Ok(resp);
    }
    Err(server_error(&resp).into())
}

/// The error text of a non-2xx answer: the JSON `message` (or `error`), else the body.
pub fn server_error(resp: &Response) -> String {
    let is_json = resp
        .header("content-type")
        .is_some_and(|ct| ct.starts_with("application/json"));
    if is_json {
        if let Some(v) = json_field(&resp.body, "error")
            .filter(|s| !s.is_empty())
            .or_else(|| json_field(&resp.body, "message"))
        {
            return v;
        }
    }
    let text = String::from_utf8_lossy(&resp.body).trim().to_string();
    if text.is_empty() {
        format!("server answered {}", resp.status)
    } else {
        text
    }
}

/// The string member `name` of a JSON object.
pub fn json_field(body: &[u8], name: &str) -> Option<String> {
    let mut copy = body.to_vec();
    let value = simd_json::to_owned_value(&mut copy).ok()?;
    use simd_json::prelude::*;
    value.get(name)?.as_str().map(str::to_string)
}

/// A JSON value parsed from a response body.
pub fn json_value(body: &[u8]) -> Result<simd_json::OwnedValue, Box<dyn std::error::Error>> {
    let mut copy = body.to_vec();
    simd_json::to_owned_value(&mut copy)
        .map_err(|e| format!("invalid JSON from the server: {e}").into())
}

/// Percent-encodes a path segment (names never need it, but patterns with `*` and user
/// input might).
pub fn escape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'*' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Lists names through a `/v1/<kind>/list/<pattern>` route, following `continue_at` and
/// accepting the legacy ND-JSON form.
pub fn list(
    client: &mut Client,
    route: &str,
    member: &str,
    pattern: &str,
) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let resp = call(client, "GET", &format!("{route}{}", escape(pattern)), None)?;
    let mut names = Vec::new();
    if resp.header("content-type") == Some("application/x-ndjson") {
        let key = if member == "identities" {
            "identity"
        } else {
            "name"
        };
        for line in resp.body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            if let Some(e) = json_field(line, "error") {
                return Err(e.into());
            }
            if let Some(n) = json_field(line, key) {
                names.push(n);
            }
        }
    } else {
        use simd_json::prelude::*;
        let value = json_value(&resp.body)?;
        if let Some(items) = value.get(member).and_then(|v| v.as_array()) {
            names.extend(items.iter().filter_map(|v| v.as_str().map(str::to_string)));
        }
    }
    names.sort();
    Ok(names)
}

/// Prints names one per line under a header (terminal) or as a JSON array (pipe / --json).
pub fn print_names(header: &str, names: &[String], machine: bool) {
    if machine {
        let mut out = Vec::new();
        crate::api::json::write_string_array(&mut out, names.iter().map(String::as_str));
        outln!("{}", String::from_utf8_lossy(&out));
    } else {
        outln!("{header}");
        for n in names {
            outln!("{n}");
        }
    }
}
