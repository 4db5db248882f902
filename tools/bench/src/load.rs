//! The load engine: connections, request construction per operation, the closed/open loops,
//! and the summary.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hdrhistogram::Histogram;
use kes::auth::apikey::ApiKey;
use kes::client::{ClientConfig, Credentials};

use crate::{engine, h2, kms, Args, ClientModel, Op};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where to connect, and how.
#[derive(Clone)]
struct Target {
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Target {
    fn addr(&self) -> Result<std::net::SocketAddr, BoxError> {
        Ok((self.host.as_str(), self.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| format!("cannot resolve {}", self.host))?)
    }

    fn server_name(&self) -> Result<rustls_pki_types::ServerName<'static>, BoxError> {
        Ok(match self.host.parse::<std::net::IpAddr>() {
            Ok(ip) => rustls_pki_types::ServerName::IpAddress(ip.into()),
            Err(_) => rustls_pki_types::ServerName::try_from(self.host.clone())
                .map_err(|_| format!("bad host name {}", self.host))?,
        })
    }
}

fn parse_target(args: &Args) -> Result<Target, BoxError> {
    let (plain, rest) = if let Some(r) = args.server.strip_prefix("http://") {
        (true, r)
    } else {
        (
            false,
            args.server.strip_prefix("https://").unwrap_or(&args.server),
        )
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("--server: '{}' has no port", args.server))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("--server: bad port in '{}'", args.server))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let tls = if plain {
        None
    } else {
        let credentials = match (&args.api_key, &args.cert_file, &args.key_file) {
            (_, Some(cert), Some(key)) => Some(Credentials::Files {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (Some(k), _, _) => Some(Credentials::ApiKey(
                ApiKey::parse(k).map_err(|e| format!("invalid API key: {e}"))?,
            )),
            _ => {
                return Err(
                    "no API key: set KES_API_KEY or pass --api-key (or --cert-file/--key-file)"
                        .into(),
                )
            }
        };
        let mut config = (*kes::client::rustls_config(&ClientConfig {
            endpoints: Vec::new(),
            credentials,
            insecure: args.insecure,
            ca_file: None,
            timeout: Duration::from_secs(10),
        })?)
        .clone();
        if args.no_resume {
            config.resumption = rustls::client::Resumption::disabled();
        } else if args.client_model == ClientModel::KmsGo {
            // MinIO: tls.NewLRUClientSessionCache(100), one per KES client, whose session
            // every concurrent dial resumes (see session.rs).
            config.resumption = rustls::client::Resumption::store(Arc::new(
                crate::session::GoLikeSessionCache::new(100),
            ));
        }
        Some(Arc::new(config))
    };
    Ok(Target { host, port, tls })
}

enum Stream {
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    Plain(TcpStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tls(s) => s.read(buf),
            Stream::Plain(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tls(s) => s.write(buf),
            Stream::Plain(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tls(s) => s.flush(),
            Stream::Plain(s) => s.flush(),
        }
    }
}

/// One HTTP/1.1 connection with a reusable read buffer.
struct Conn {
    stream: Stream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(t: &Target) -> Result<Conn, BoxError> {
        let addr = (t.host.as_str(), t.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| format!("cannot resolve {}", t.host))?;
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("cannot connect to {addr}: {e} (is the server running?)"))?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
        let stream = match &t.tls {
            None => Stream::Plain(tcp),
            Some(config) => {
                let name = match t.host.parse::<std::net::IpAddr>() {
                    Ok(ip) => rustls_pki_types::ServerName::IpAddress(ip.into()),
                    Err(_) => rustls_pki_types::ServerName::try_from(t.host.clone())
                        .map_err(|_| format!("bad host name {}", t.host))?,
                };
                let conn = rustls::ClientConnection::new(config.clone(), name)?;
                let mut s = rustls::StreamOwned::new(conn, tcp);
                while s.conn.is_handshaking() {
                    s.conn
                        .complete_io(&mut s.sock)
                        .map_err(|e| format!("TLS handshake with {addr} failed: {e}"))?;
                }
                Stream::Tls(Box::new(s))
            }
        };
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends `req` and reads one response; returns the status and the body range in `buf`.
    fn roundtrip(&mut self, req: &[u8]) -> Result<(u16, std::ops::Range<usize>), BoxError> {
        self.stream.write_all(req)?;
        self.stream.flush()?;
        self.buf.clear();
        let mut tmp = [0u8; 16384];
        loop {
            if let Some((status, head, total)) = engine::parse_response(&self.buf)? {
                return Ok((status, head..total));
            }
            let n = self.stream.read(&mut tmp)?;
            if n == 0 {
                return Err(if self.buf.is_empty() {
                    "connection closed by the server".into()
                } else {
                    "connection closed mid-response".into()
                });
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }
}

fn request(method: &str, path: &str, body: &[u8], extra: &str) -> Vec<u8> {
    request_typed(method, path, body, extra, "application/json")
}

/// [`request`] with this `Content-Type`.
fn request_typed(
    method: &str,
    path: &str,
    body: &[u8],
    extra: &str,
    content_type: &str,
) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: kes\r\n{extra}");
    if !body.is_empty() || method != "GET" {
        r.push_str(&format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

/// A request as Go's `http.Transport` writes it for kms-go: a body goes chunked (one chunk
/// and the terminating one) after the head; an empty POST/PUT has `Content-Length: 0`.
fn go_request(method: &str, path: &str, body: &[u8], extra: &str) -> Vec<u8> {
    go_request_typed(method, path, body, extra, "application/json")
}

/// [`go_request`] with this `Content-Type`.
fn go_request_typed(
    method: &str,
    path: &str,
    body: &[u8],
    extra: &str,
    content_type: &str,
) -> Vec<u8> {
    let mut r =
        format!("{method} {path} HTTP/1.1\r\nHost: kes\r\nUser-Agent: Go-http-client/1.1\r\n");
    if !body.is_empty() {
        r.push_str("Transfer-Encoding: chunked\r\n");
    } else if method != "GET" {
        r.push_str("Content-Length: 0\r\n");
    }
    r.push_str(extra);
    if !body.is_empty() {
        r.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    r.push_str("Accept-Encoding: gzip\r\n\r\n");
    let mut r = r.into_bytes();
    if !body.is_empty() {
        r.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
        r.extend_from_slice(body);
        r.extend_from_slice(b"\r\n0\r\n\r\n");
    }
    r
}

fn json_member(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find(&format!("\"{name}\":\""))? + name.len() + 4;
    let end = start + text[start..].find('"')?;
    Some(text[start..end].to_string())
}

/// A tiny xorshift PRNG for the mix and object names (not for anything secret).
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The operation a request performs, chosen per request for `--op mix`.
pub fn pick(op: Op, roll: u64) -> Op {
    match op {
        Op::Mix => match roll % 100 {
            0..=44 => Op::Generate,
            45..=94 => Op::Decrypt,
            _ => Op::Describe,
        },
        other => other,
    }
}

fn context_for(object: u64) -> String {
    BASE64.encode(format!("{{\"bucket\":\"bucket/object-{object}\"}}"))
}

/// Per-connection request source. Requests that do not change per call (generate with one
/// of 256 contexts, decrypt of one of 64 ciphertexts, the fixed ones) are built once and
/// shared, so the load generator does not allocate per request.
struct Requests {
    op: Op,
    key: String,
    prebuilt: Arc<Prebuilt>,
    rng: Xorshift,
    serial: u64,
    connection: usize,
    /// `--op kms-generate` / `kms-decrypt`: this connection's request, built once, and
    /// the answer frame it must get.
    kms: Option<(Arc<[u8]>, engine::Expect)>,
}

type Build = fn(&str, &str, &[u8], &str) -> Vec<u8>;
/// A [`Build`] with a content type (the MinKMS requests are `application/octet-stream`).
type BuildTyped = fn(&str, &str, &[u8], &str, &str) -> Vec<u8>;

/// Requests built once per run, shared by every connection.
struct Prebuilt {
    /// How requests are written: [`request`] or [`go_request`].
    build: Build,
    generate: Vec<Arc<[u8]>>,
    decrypt: Vec<Arc<[u8]>>,
    encrypt: Arc<[u8]>,
    hmac: Arc<[u8]>,
    describe: Arc<[u8]>,
    status: Arc<[u8]>,
    transit_datakey: Arc<[u8]>,
}

impl Prebuilt {
    fn new(build: Build, key: &str, token: &str, pairs: &[(String, String)]) -> Prebuilt {
        let request = build;
        let mut rng = Xorshift(0x2545_f491_4f6c_dd1d);
        let generate = (0..256)
            .map(|_| {
                let ctx = context_for(rng.next() % 1_000_000);
                request(
                    "POST",
                    &format!("/v1/key/generate/{key}"),
                    format!("{{\"context\":\"{ctx}\"}}").as_bytes(),
                    "",
                )
                .into()
            })
            .collect();
        let decrypt = pairs
            .iter()
            .map(|(ct, ctx)| {
                request(
                    "POST",
                    &format!("/v1/key/decrypt/{key}"),
                    format!("{{\"ciphertext\":\"{ct}\",\"context\":\"{ctx}\"}}").as_bytes(),
                    "",
                )
                .into()
            })
            .collect();
        Prebuilt {
            build,
            generate,
            decrypt,
            encrypt: request(
                "POST",
                &format!("/v1/key/encrypt/{key}"),
                br#"{"plaintext":"ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="}"#,
                "",
            )
            .into(),
            hmac: request(
                "PUT",
                &format!("/v1/key/hmac/{key}"),
                br#"{"message":"cm9vdCBhY2Nlc3Mga2V5"}"#,
                "",
            )
            .into(),
            describe: request("GET", &format!("/v1/key/describe/{key}"), b"", "").into(),
            status: request("GET", "/v1/status", b"", "").into(),
            transit_datakey: request(
                "POST",
                &format!("/v1/transit/datakey/plaintext/{key}"),
                b"{}",
                &format!("X-Vault-Token: {token}\r\n"),
            )
            .into(),
        }
    }
}

impl engine::Source for Requests {
    fn expect(&self) -> Option<engine::Expect> {
        self.kms.as_ref().map(|(_, expect)| *expect)
    }

    fn next_batch(&mut self, out: &mut Vec<Arc<[u8]>>) {
        let roll = self.rng.next();
        let p = &self.prebuilt;
        let any_of = |pool: &[Arc<[u8]>], r: u64| pool[(r as usize) % pool.len()].clone();
        match pick(self.op, roll) {
            Op::Generate | Op::Mix => out.push(any_of(&p.generate, self.rng.next())),
            Op::Decrypt => out.push(any_of(&p.decrypt, self.rng.next())),
            Op::Encrypt => out.push(p.encrypt.clone()),
            Op::Hmac => out.push(p.hmac.clone()),
            Op::Describe => out.push(p.describe.clone()),
            Op::Status => out.push(p.status.clone()),
            Op::TransitDatakey => out.push(p.transit_datakey.clone()),
            Op::KmsGenerate | Op::KmsDecrypt => {
                if let Some((req, _)) = &self.kms {
                    out.push(req.clone());
                }
            }
            Op::CreateDelete => {
                self.serial += 1;
                let name = format!("{}-{}-{}", self.key, self.connection, self.serial);
                let request = p.build;
                out.push(request("POST", &format!("/v1/key/create/{name}"), b"", "").into());
                out.push(request("DELETE", &format!("/v1/key/delete/{name}"), b"", "").into());
            }
        }
    }
}

/// The result of a run.
pub struct Summary {
    pub op: Op,
    pub model: ClientModel,
    pub connections: usize,
    /// Connections opened during the run, and how many of them resumed a TLS session.
    pub new_connections: u64,
    pub resumed: u64,
    pub elapsed: Duration,
    pub requests: u64,
    pub errors: BTreeMap<String, u64>,
    pub histogram: Histogram<u64>,
    /// HTTP/2: the TLS connections the streams were multiplexed over, and the smallest
    /// SETTINGS_MAX_CONCURRENT_STREAMS the server sent (None: HTTP/1.1, or none sent).
    pub h2: Option<H2Summary>,
}

/// What an HTTP/2 run adds to the summary.
pub struct H2Summary {
    pub connections: usize,
    pub streams_max: Option<u64>,
}

impl Summary {
    pub fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// New connections per 1000 answered requests.
    pub fn new_per_1000(&self) -> f64 {
        self.new_connections as f64 * 1000.0 / (self.requests.max(1)) as f64
    }

    fn model_name(&self) -> &'static str {
        match self.model {
            ClientModel::Bench => "bench",
            ClientModel::KmsGo => "kms-go",
        }
    }

    fn protocol(&self) -> &'static str {
        match self.h2 {
            Some(_) => "h2",
            None => "http/1.1",
        }
    }

    fn us(&self, q: f64) -> f64 {
        self.histogram.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn to_text(&self) -> String {
        let mut s = format!(
            "op {:?}, {} {}, {:.1}s: {} requests, {:.0} req/s\nlatency µs: p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}\nnew TLS connections: {} ({:.1} per 1000 requests), {} resumed\n",
            self.op,
            self.connections,
            match (&self.h2, self.model) {
                (Some(h2), _) => format!(
                    "h2 streams over {} connection{}",
                    h2.connections,
                    if h2.connections == 1 { "" } else { "s" }
                ),
                (None, ClientModel::Bench) => "connections".into(),
                (None, ClientModel::KmsGo) => "requests in flight (kms-go)".into(),
            },
            self.elapsed.as_secs_f64(),
            self.requests,
            self.throughput(),
            self.us(0.5),
            self.us(0.9),
            self.us(0.99),
            self.us(0.999),
            self.histogram.max() as f64 / 1000.0,
            self.new_connections,
            self.new_per_1000(),
            self.resumed
        );
        if let Some(h2) = &self.h2 {
            let per_conn = self.connections.div_ceil(h2.connections.max(1)) as u64;
            match h2.streams_max {
                Some(max) if max < per_conn => s.push_str(&format!(
                    "h2: the server allows {max} concurrent streams per connection: {} of the {per_conn} streams per connection wait for one\n",
                    per_conn - max
                )),
                Some(max) => s.push_str(&format!(
                    "h2: the server allows {max} concurrent streams per connection\n"
                )),
                None => {}
            }
        }
        if !self.errors.is_empty() {
            s.push_str("errors:");
            for (k, v) in &self.errors {
                s.push_str(&format!(" {k}={v}"));
            }
            s.push('\n');
        }
        s
    }

    pub fn to_json(&self) -> String {
        let errors: Vec<String> = self
            .errors
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        format!(
            "{{\"op\":\"{:?}\",\"connections\":{},\"seconds\":{:.3},\"requests\":{},\"throughput\":{:.1},\"latency_us\":{{\"p50\":{:.1},\"p90\":{:.1},\"p99\":{:.1},\"p99_9\":{:.1},\"max\":{:.1}}},\"client_model\":\"{}\",\"new_connections\":{},\"new_per_1000\":{:.1},\"resumed\":{},\"errors\":{{{}}},\"protocol\":\"{}\"{}}}",
            self.op,
            self.connections,
            self.elapsed.as_secs_f64(),
            self.requests,
            self.throughput(),
            self.us(0.5),
            self.us(0.9),
            self.us(0.99),
            self.us(0.999),
            self.histogram.max() as f64 / 1000.0,
            self.model_name(),
            self.new_connections,
            self.new_per_1000(),
            self.resumed,
            errors.join(","),
            self.protocol(),
            match &self.h2 {
                Some(h2) => format!(
                    ",\"h2_connections\":{},\"max_concurrent_streams\":{}",
                    h2.connections,
                    h2.streams_max.map_or("null".into(), |m| m.to_string())
                ),
                None => String::new(),
            }
        )
    }

    /// HdrHistogram's percentile-distribution text format (values in ms).
    pub fn hgrm(&self) -> String {
        let mut s = format!(
            "{:>12} {:>14} {:>10} {:>14}\n\n",
            "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
        );
        for v in self.histogram.iter_quantiles(1) {
            let q = v.quantile_iterated_to();
            let inv = if q < 1.0 {
                format!("{:.2}", 1.0 / (1.0 - q))
            } else {
                "inf".into()
            };
            s.push_str(&format!(
                "{:>12.3} {:>14.12} {:>10} {:>14}\n",
                v.value_iterated_to() as f64 / 1e6,
                q,
                v.count_since_last_iteration(),
                inv
            ));
        }
        s.push_str(&format!(
            "#[Mean    = {:>12.3}, StdDeviation   = {:>12.3}]\n#[Max     = {:>12.3}, Total count    = {:>12}]\n",
            self.histogram.mean() / 1e6,
            self.histogram.stdev() / 1e6,
            self.histogram.max() as f64 / 1e6,
            self.histogram.len()
        ));
        s
    }
}

/// The associated data of object `object`'s MinKMS requests: what the KES API's context
/// for it ([`context_for`]) decodes to.
fn kms_associated_data(object: u64) -> String {
    format!("{{\"bucket\":\"bucket/object-{object}\"}}")
}

/// What the MinKMS ops learn at the start.
struct KmsSetup {
    /// The KEY:DECRYPT frame of the ciphertext one KEY:GENERATE returned.
    decrypt: Vec<u8>,
    generate_expect: engine::Expect,
    decrypt_expect: engine::Expect,
}

/// For `--op kms-generate` / `kms-decrypt`: one KEY:GENERATE and one KEY:DECRYPT of its
/// ciphertext (which must give the key back), for the decrypt request and the answer
/// lengths every later answer must have.
fn kms_setup(args: &Args, setup: &mut Conn) -> Result<Option<KmsSetup>, BoxError> {
    if !matches!(args.op, Op::KmsGenerate | Op::KmsDecrypt) {
        return Ok(None);
    }
    let path = format!("/v1/kms/{}", args.enclave);
    let ad = kms_associated_data(0);
    let mut call = |what: &str, command: u16, frame: &[u8]| -> Result<Vec<u8>, BoxError> {
        let (status, range) =
            setup.roundtrip(&request_typed("POST", &path, frame, "", kms::OCTET_STREAM))?;
        let body = &setup.buf[range];
        if status != 200 {
            return Err(format!(
                "{what} of key '{}' at {path}: {status} {}",
                args.key,
                String::from_utf8_lossy(body)
            )
            .into());
        }
        Ok(kms::one_frame(body, command)
            .ok_or_else(|| format!("{what}: the answer is not one {what} frame"))?
            .to_vec())
    };
    let generated = call(
        "KEY:GENERATE",
        kms::KEY_GENERATE,
        &kms::generate(&args.key, ad.as_bytes()),
    )?;
    let version = match kms::field(&generated, 1) {
        Some(Err(v)) => v as u32,
        _ => 0,
    };
    let (Some(Ok(plaintext)), Some(Ok(ciphertext))) =
        (kms::field(&generated, 2), kms::field(&generated, 3))
    else {
        return Err("KEY:GENERATE: no plaintext or ciphertext in the answer".into());
    };
    let decrypt = kms::decrypt(&args.key, version, ciphertext, ad.as_bytes());
    let decrypted = call("KEY:DECRYPT", kms::KEY_DECRYPT, &decrypt)?;
    if kms::field(&decrypted, 1) != Some(Ok(plaintext)) {
        return Err("KEY:DECRYPT did not give back the key KEY:GENERATE made".into());
    }
    Ok(Some(KmsSetup {
        decrypt,
        generate_expect: engine::Expect {
            command: kms::KEY_GENERATE,
            length: generated.len() as u32,
        },
        decrypt_expect: engine::Expect {
            command: kms::KEY_DECRYPT,
            length: decrypted.len() as u32,
        },
    }))
}

/// Prepares the key (and decrypt material), then runs the load.
/// How long a run may go on past its run time for `--min-requests`.
pub const MIN_REQUESTS_WAIT_MAX: Duration = Duration::from_secs(120);
/// How often a run past its run time checks the answered requests.
const MIN_REQUESTS_POLL: Duration = Duration::from_millis(20);

pub fn run(args: &Args, duration: Duration) -> Result<Summary, BoxError> {
    let kms_go = args.client_model == ClientModel::KmsGo;
    if kms_go && args.new_connection {
        return Err("--new-connection and --client-model kms-go exclude each other".into());
    }
    if kms_go && args.idle_max == 0 {
        // Go's http.Transport treats MaxIdleConnsPerHost 0 as its default, 2.
        return Err("--idle-max must be at least 1".into());
    }
    if args.http2 {
        let why = if kms_go {
            Some("--client-model kms-go (an HTTP/1.1 client)")
        } else if args.new_connection {
            Some("--new-connection")
        } else if args.rate > 0 {
            Some("--rate (HTTP/2 runs closed loop)")
        } else if args.op == Op::TransitDatakey || args.server.starts_with("http://") {
            Some("plain http:// (h2 needs TLS with ALPN here)")
        } else if args.h2_connections == 0 {
            Some("--h2-connections 0")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(format!("--http2 does not go with {why}").into());
        }
    }
    let target = parse_target(args)?;
    let mut setup = Conn::open(&target)?;
    let key_ops = !matches!(args.op, Op::Status | Op::TransitDatakey | Op::CreateDelete);
    let token = args.token.clone().unwrap_or_default();
    if args.op == Op::TransitDatakey && token.is_empty() {
        return Err("--op transit-datakey needs --token (or VAULT_TOKEN)".into());
    }
    if args.create_key && args.op != Op::TransitDatakey {
        let (status, range) = setup.roundtrip(&request(
            "POST",
            &format!("/v1/key/create/{}", args.key),
            b"",
            "",
        ))?;
        if status != 200 && status != 400 {
            return Err(format!(
                "cannot create key '{}': {} {}",
                args.key,
                status,
                String::from_utf8_lossy(&setup.buf[range])
            )
            .into());
        }
    }
    let mut pairs = Vec::new();
    if key_ops {
        for i in 0..64 {
            let ctx = context_for(i);
            let (status, range) = setup.roundtrip(&request(
                "POST",
                &format!("/v1/key/generate/{}", args.key),
                format!("{{\"context\":\"{ctx}\"}}").as_bytes(),
                "",
            ))?;
            match status {
                200 => {}
                404 => {
                    return Err(format!(
                        "key '{}' does not exist on the server; rerun with --create-key",
                        args.key
                    )
                    .into())
                }
                403 => return Err(
                    "the server refused the request (403): the API key has no access to this key"
                        .into(),
                ),
                other => {
                    return Err(format!(
                        "unexpected answer {other}: {}",
                        String::from_utf8_lossy(&setup.buf[range])
                    )
                    .into())
                }
            }
            let ct = json_member(&setup.buf[range], "ciphertext")
                .ok_or("no ciphertext in the generate answer")?;
            pairs.push((ct, ctx));
        }
    }
    let kms = kms_setup(args, &mut setup)?;
    drop(setup);

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let dialed = Arc::new(AtomicU64::new(0));
    let resumed = Arc::new(AtomicU64::new(0));
    let shared_hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1,
        60_000_000_000,
        3,
    )?));
    let errors = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let prebuilt = Arc::new(Prebuilt::new(
        if args.http2 {
            h2::request
        } else if kms_go {
            go_request
        } else {
            request
        },
        &args.key,
        &token,
        &pairs,
    ));
    let endpoint = engine::Endpoint {
        addr: target.addr()?,
        tls: match &target.tls {
            None => None,
            Some(config) => Some((config.clone(), target.server_name()?)),
        },
    };
    let streams_max = Arc::new(AtomicU64::new(u64::MAX));
    let threads_n = if args.http2 {
        args.threads.clamp(1, args.h2_connections)
    } else {
        args.threads.clamp(1, args.connections.max(1))
    };
    let started = Instant::now();
    let plan = Arc::new(engine::Plan {
        endpoint,
        new_connection: args.new_connection,
        pool: kms_go.then(|| engine::Pool::new(args.idle_max)),
        idle: if args.spin {
            engine::Idle::Spin
        } else {
            engine::Idle::Poll
        },
        // Open loop: each connection sends at its own fixed interval, staggered.
        interval: (args.rate > 0)
            .then(|| Duration::from_secs_f64(args.connections as f64 / args.rate as f64)),
        started,
    });

    let h2_plan = args.http2.then(|| {
        let mut endpoint = plan.endpoint.clone();
        if let Some((config, name)) = endpoint.tls.take() {
            let mut config = (*config).clone();
            config.alpn_protocols = vec![b"h2".to_vec()];
            endpoint.tls = Some((Arc::new(config), name));
        }
        Arc::new(h2::Plan {
            endpoint,
            idle: plan.idle,
        })
    });
    let build_typed: BuildTyped = if args.http2 {
        h2::request_typed
    } else if kms_go {
        go_request_typed
    } else {
        request_typed
    };
    let kms_path = format!("/v1/kms/{}", args.enclave);
    let source = |c: usize| Requests {
        op: args.op,
        key: args.key.clone(),
        prebuilt: prebuilt.clone(),
        rng: Xorshift(0x9e37_79b9_7f4a_7c15 ^ (c as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d)),
        serial: 0,
        connection: c,
        kms: kms.as_ref().map(|k| {
            let (body, expect) = match args.op {
                Op::KmsDecrypt => (k.decrypt.clone(), k.decrypt_expect),
                _ => (
                    kms::generate(&args.key, kms_associated_data(c as u64).as_bytes()),
                    k.generate_expect,
                ),
            };
            (
                build_typed("POST", &kms_path, &body, "", kms::OCTET_STREAM).into(),
                expect,
            )
        }),
    };

    let mut threads = Vec::new();
    for t in 0..threads_n {
        let sink = engine::Sink {
            stop: stop.clone(),
            done: done.clone(),
            failed: failed.clone(),
            dialed: dialed.clone(),
            resumed: resumed.clone(),
            hist: shared_hist.clone(),
            errors: errors.clone(),
            streams_max: streams_max.clone(),
        };
        if let Some(h2_plan) = &h2_plan {
            // Slot c streams over connection c % M; connection m runs on thread m % threads.
            let m_all = args.h2_connections;
            let conns: Vec<Vec<Requests>> = (0..m_all)
                .filter(|m| m % threads_n == t)
                .map(|m| {
                    (0..args.connections)
                        .filter(|c| c % m_all == m)
                        .map(source)
                        .collect()
                })
                .collect();
            let plan = h2_plan.clone();
            threads.push(std::thread::spawn(move || h2::drive(&plan, conns, &sink)));
            continue;
        }
        let sources: Vec<Requests> = (0..args.connections)
            .filter(|c| c % threads_n == t)
            .map(source)
            .collect();
        let plan = plan.clone();
        threads.push(std::thread::spawn(move || {
            engine::drive(&plan, sources, &sink)
        }));
    }

    let mut last = (Instant::now(), 0u64);
    let wanted = |done: &AtomicU64| {
        let elapsed = started.elapsed();
        elapsed < duration
            || (done.load(Ordering::Relaxed) < args.min_requests
                && elapsed < duration + MIN_REQUESTS_WAIT_MAX)
    };
    while wanted(&done) {
        if threads.iter().any(|t| t.is_finished()) {
            // A load thread gave up (e.g. the server does not speak h2): report it now.
            break;
        }
        let left = duration.saturating_sub(started.elapsed());
        let pause = if left.is_zero() {
            MIN_REQUESTS_POLL // past the run time: waiting for --min-requests
        } else {
            left
        };
        std::thread::sleep(
            Duration::from_secs(1)
                .min(pause)
                .max(Duration::from_millis(1)),
        );
        if !args.quiet {
            let n = done.load(Ordering::Relaxed);
            let now = Instant::now();
            let rate = (n - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-9);
            let p99 = shared_hist
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .value_at_quantile(0.99) as f64
                / 1000.0;
            eprintln!(
                "[{:>4.0}s] {:>9.0} req/s  errors {:>6}  p99 so far {:>8.0} µs",
                started.elapsed().as_secs_f64(),
                rate,
                failed.load(Ordering::Relaxed),
                p99
            );
            last = (now, n);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().map_err(|_| "a load thread panicked")??;
    }
    let elapsed = started.elapsed();
    let histogram = shared_hist
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let errors = errors.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(Summary {
        op: args.op,
        model: args.client_model,
        connections: args.connections,
        new_connections: dialed.load(Ordering::Relaxed),
        resumed: resumed.load(Ordering::Relaxed),
        elapsed,
        requests: done.load(Ordering::Relaxed),
        errors,
        histogram,
        h2: args.http2.then(|| H2Summary {
            connections: args.h2_connections,
            streams_max: Some(streams_max.load(Ordering::Relaxed)).filter(|&m| m != u64::MAX),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_is_45_50_5() {
        let counts = (0..100).fold([0; 3], |mut c, roll| {
            match pick(Op::Mix, roll) {
                Op::Generate => c[0] += 1,
                Op::Decrypt => c[1] += 1,
                Op::Describe => c[2] += 1,
                _ => unreachable!(),
            }
            c
        });
        assert_eq!(counts, [45, 50, 5]);
        assert_eq!(pick(Op::Status, 7), Op::Status);
    }

    #[test]
    fn summary_formats() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for v in [100_000u64, 200_000, 300_000, 1_000_000] {
            h.record(v).unwrap();
        }
        let s = Summary {
            op: Op::Generate,
            model: ClientModel::Bench,
            connections: 2,
            new_connections: 2,
            resumed: 1,
            elapsed: Duration::from_secs(2),
            requests: 4,
            errors: BTreeMap::from([("404".to_string(), 1)]),
            histogram: h,
            h2: None,
        };
        assert_eq!(s.throughput(), 2.0);
        assert!(
            s.to_text().contains("4 requests, 2 req/s"),
            "{}",
            s.to_text()
        );
        assert!(s.to_text().contains("errors: 404=1"));
        let json = s.to_json();
        assert!(
            json.starts_with("{\"op\":\"Generate\",\"connections\":2,"),
            "{json}"
        );
        assert!(json.contains("\"errors\":{\"404\":1}"));
        assert!(
            json.contains("\"client_model\":\"bench\",\"new_connections\":2,\"new_per_1000\":500.0,\"resumed\":1,"),
            "{json}"
        );
        assert!(s
            .to_text()
            .contains("new TLS connections: 2 (500.0 per 1000 requests), 1 resumed"));
        assert!(json.ends_with(",\"protocol\":\"http/1.1\"}"), "{json}");
        let h2 = Summary {
            h2: Some(H2Summary {
                connections: 1,
                streams_max: Some(250),
            }),
            connections: 256,
            ..s
        };
        let json = h2.to_json();
        assert!(
            json.ends_with(
                ",\"protocol\":\"h2\",\"h2_connections\":1,\"max_concurrent_streams\":250}"
            ),
            "{json}"
        );
        let text = h2.to_text();
        assert!(
            text.contains("256 h2 streams over 1 connection,")
                && text.contains("allows 250 concurrent streams per connection: 6 of the 256"),
            "{text}"
        );
        let hgrm = h2.hgrm();
        assert!(hgrm.contains("Total count    =            4"), "{hgrm}");
    }

    #[test]
    fn go_requests_are_chunked() {
        let r = go_request("POST", "/v1/key/generate/k", b"{\"context\":\"\"}", "");
        let r = String::from_utf8(r).unwrap();
        assert!(
            r.starts_with("POST /v1/key/generate/k HTTP/1.1\r\nHost: kes\r\n"),
            "{r}"
        );
        assert!(r.contains("\r\nTransfer-Encoding: chunked\r\n"), "{r}");
        assert!(!r.contains("Content-Length"), "{r}");
        assert!(
            r.ends_with("\r\n\r\ne\r\n{\"context\":\"\"}\r\n0\r\n\r\n"),
            "{r:?}"
        );
        let empty = String::from_utf8(go_request("POST", "/v1/key/create/k", b"", "")).unwrap();
        assert!(empty.contains("Content-Length: 0\r\n") && empty.ends_with("\r\n\r\n"));
        let get = String::from_utf8(go_request("GET", "/v1/status", b"", "")).unwrap();
        assert!(
            !get.contains("Content-Length") && !get.contains("chunked"),
            "{get}"
        );
    }

    #[test]
    fn json_member_extracts_strings() {
        assert_eq!(
            json_member(br#"{"plaintext":"a","ciphertext":"b=="}"#, "ciphertext").as_deref(),
            Some("b==")
        );
        assert_eq!(json_member(b"{}", "ciphertext"), None);
    }
}
