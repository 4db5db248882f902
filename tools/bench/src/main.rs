//! `kes-bench`: a load generator for KES-compatible servers.
//!
//! Closed loop (N connections, each sending its next request when the previous answer
//! arrived) or open loop (a fixed total rate; latency is measured from each request's
//! *intended* send time, so a stalled server cannot hide behind a stalled client —
//! coordinated omission). Keep-alive or a new TLS connection per request (with or without
//! session resumption), or MinIO's kms-go client (`--client-model kms-go`: Go's
//! `http.Transport` with 2 idle connections per host, chunked bodies), or HTTP/2 (`--http2`:
//! `-c` streams multiplexed over `--h2-connections` TLS connections). HDR-histogram
//! percentiles, a progress line every second, `--json` and `--hgrm` output.

mod engine;
mod h2;
mod kms;
mod load;
mod session;

use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Op {
    Generate,
    Decrypt,
    Encrypt,
    Hmac,
    Describe,
    CreateDelete,
    Status,
    /// 45 % generate, 50 % decrypt, 5 % describe, with per-object contexts (MinIO-like).
    Mix,
    /// OpenBao / Vault transit: POST /v1/transit/datakey/plaintext/<key> (plain HTTP).
    TransitDatakey,
    /// MinKMS API KEY:GENERATE (32 bytes, latest version) to POST /v1/kms/<enclave>.
    KmsGenerate,
    /// MinKMS API KEY:DECRYPT of a ciphertext from one KEY:GENERATE at the start.
    KmsDecrypt,
}

/// How the load generator uses its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClientModel {
    /// `-c` keep-alive connections (or a new one per request with --new-connection), each
    /// request in one write with a Content-Length body.
    Bench,
    /// MinIO's kms-go v0.3.1 client over HTTP/1.1 (Go's http.Transport): `-c` requests in
    /// flight share at most --idle-max idle connections; a request that finds none dials a new
    /// TLS connection (sessions resumed from a 100-entry cache); a connection that finds the
    /// idle pool full is closed. Bodies are chunked, the head and the body in separate writes.
    KmsGo,
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "kes-bench",
    version,
    about = "Load generator for KES-compatible servers"
)]
pub struct Args {
    /// Server endpoint (https://host:port; http:// for --op transit-datakey).
    #[arg(
        short = 's',
        long,
        env = "KES_SERVER",
        default_value = "https://127.0.0.1:7373"
    )]
    pub server: String,
    /// API key (kes:v1:…).
    #[arg(short = 'a', long, env = "KES_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Client certificate and key files instead of an API key.
    #[arg(long, requires = "key_file")]
    pub cert_file: Option<std::path::PathBuf>,
    #[arg(long, requires = "cert_file")]
    pub key_file: Option<std::path::PathBuf>,
    /// Skip verification of the server certificate.
    #[arg(short = 'k', long)]
    pub insecure: bool,
    /// Operation.
    #[arg(long, value_enum, default_value = "generate")]
    pub op: Op,
    /// Key name to use.
    #[arg(long, default_value = "bench-key")]
    pub key: String,
    /// MinKMS enclave for --op kms-generate and kms-decrypt (POST /v1/kms/<enclave>).
    #[arg(long, default_value = "default")]
    pub enclave: String,
    /// Create the key first if it does not exist.
    #[arg(long)]
    pub create_key: bool,
    /// Concurrent connections (with --client-model kms-go: concurrent requests; with --http2:
    /// concurrent streams).
    #[arg(short = 'c', long, default_value_t = 32)]
    pub connections: usize,
    /// Client behaviour to reproduce.
    #[arg(long, value_enum, default_value = "bench")]
    pub client_model: ClientModel,
    /// With --client-model kms-go: idle connections kept (Go's MaxIdleConnsPerHost).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub idle_max: usize,
    /// HTTP/2 (ALPN h2): the `-c` requests in flight are streams multiplexed over
    /// --h2-connections TLS connections, within the server's SETTINGS_MAX_CONCURRENT_STREAMS.
    #[arg(long)]
    pub http2: bool,
    /// With --http2: TLS connections the streams are spread over.
    #[arg(long, value_name = "M", default_value_t = 1, requires = "http2")]
    pub h2_connections: usize,
    /// Load threads; the connections are spread over them (each runs an event loop).
    #[arg(short = 't', long, default_value_t = 1)]
    pub threads: usize,
    /// Busy-poll the sockets while waiting for answers instead of sleeping in poll(2):
    /// the load thread never sleeps, so the server never has to wake it.
    #[arg(long)]
    pub spin: bool,
    /// Run time (Go duration: 10s, 1m).
    #[arg(short = 'd', long, default_value = "10s")]
    pub duration: String,
    /// Keep running past the run time until at least N requests were answered (tests on a
    /// busy machine), for at most `load::MIN_REQUESTS_WAIT_MAX` (120 s) more.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub min_requests: u64,
    /// Open loop: total requests per second (0 = closed loop).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// A new TLS connection for every request (measures handshakes).
    #[arg(long)]
    pub new_connection: bool,
    /// With --new-connection or --client-model kms-go: no TLS session resumption (full
    /// handshakes).
    #[arg(long)]
    pub no_resume: bool,
    /// Vault/OpenBao token for --op transit-datakey.
    #[arg(long, env = "VAULT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write the latency percentile distribution (HdrHistogram text format) to this file.
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<std::path::PathBuf>,
    /// No progress line.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

fn main() {
    let args = Args::parse();
    let duration = match kes::config::parse_go_duration(&args.duration) {
        Ok(d) if d > Duration::ZERO => d,
        _ => {
            eprintln!(
                "Error: --duration: '{}' is not a positive duration (e.g. 10s)",
                args.duration
            );
            std::process::exit(2);
        }
    };
    match load::run(&args, duration) {
        Ok(summary) => {
            if args.json {
                println!("{}", summary.to_json());
            } else {
                print!("{}", summary.to_text());
            }
            if let Some(path) = &args.hgrm {
                if let Err(e) = std::fs::write(path, summary.hgrm()) {
                    eprintln!("Error: cannot write {}: {e}", path.display());
                    std::process::exit(1);
                }
            }
        }
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::exit(1);
        }
    }
}
