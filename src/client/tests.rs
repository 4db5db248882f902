//! The client against a tiny in-test rustls server on 127.0.0.1.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, ServerConfig, ServerConnection, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, UnixTime};

use super::*;
use crate::auth::apikey::ApiKey;
use crate::auth::cert::{identity_cert_pem, self_signed_server_cert};
use crate::auth::identity::{identity_from_chain, Identity};

/// Accepts any client certificate, but verifies the handshake signatures.
#[derive(Debug)]
struct AcceptAnyClientCert(Arc<CryptoProvider>);

impl ClientCertVerifier for AcceptAnyClientCert {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[derive(Debug)]
struct Req {
    conn: usize,
    method: String,
    path: String,
    body: Vec<u8>,
    identity: Option<Identity>,
}

#[derive(Clone, Copy, PartialEq)]
enum After {
    Keep,
    /// Send close_notify, then close.
    Close,
    /// Close the socket without close_notify.
    Abort,
}

type Handler = Arc<dyn Fn(&Req) -> (Vec<u8>, After) + Send + Sync>;

struct TestServer {
    addr: SocketAddr,
    cert_pem: String,
    requests: mpsc::Receiver<Req>,
    conns: Arc<AtomicUsize>,
}

impl TestServer {
    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn next_request(&self) -> Req {
        self.requests
            .recv_timeout(Duration::from_secs(5))
            .expect("no request")
    }
}

fn spawn_server(handler: Handler) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (der, key, cert_pem) = self_signed_server_cert(&[addr.ip()], &[]).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(Arc::new(AcceptAnyClientCert(provider)))
        .with_single_cert(vec![der], key)
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let cfg = Arc::new(cfg);
    let (tx, rx) = mpsc::channel();
    let conns = Arc::new(AtomicUsize::new(0));
    let counter = conns.clone();
    thread::spawn(move || {
        for (n, sock) in listener.incoming().enumerate() {
            let Ok(sock) = sock else { return };
            counter.fetch_add(1, Ordering::SeqCst);
            let (cfg, tx, handler) = (cfg.clone(), tx.clone(), handler.clone());
            thread::spawn(move || serve(n, sock, cfg, tx, handler));
        }
    });
    TestServer {
        addr,
        cert_pem,
        requests: rx,
        conns,
    }
}

fn serve(
    n: usize,
    sock: TcpStream,
    cfg: Arc<ServerConfig>,
    tx: mpsc::Sender<Req>,
    handler: Handler,
) {
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut s = StreamOwned::new(ServerConnection::new(cfg).unwrap(), sock);
    while s.conn.is_handshaking() {
        if s.conn.complete_io(&mut s.sock).is_err() {
            return;
        }
    }
    let identity = s.conn.peer_certificates().and_then(|chain| {
        let ders: Vec<&[u8]> = chain.iter().map(|c| c.as_ref()).collect();
        identity_from_chain(&ders).ok()
    });
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let parsed = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let cl = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                        .unwrap_or(0usize);
                    let method = req.method.unwrap_or_default().to_string();
                    let path = req.path.unwrap_or_default().to_string();
                    break Some((len, cl, method, path));
                }
                Ok(httparse::Status::Partial) => match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break None,
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                },
                Err(_) => break None,
            }
        };
        let Some((len, cl, method, path)) = parsed else {
            return;
        };
        while buf.len() < len + cl {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
            }
        }
        let body = buf[len..len + cl].to_vec();
        buf.drain(..len + cl);
        let req = Req {
            conn: n,
            method,
            path,
            body,
            identity,
        };
        let (resp, after) = handler(&req);
        let _ = tx.send(req);
        if s.write_all(&resp).and_then(|()| s.flush()).is_err() {
            return;
        }
        match after {
            After::Keep => {}
            After::Close => {
                s.conn.send_close_notify();
                let _ = s.conn.complete_io(&mut s.sock);
                return;
            }
            After::Abort => return,
        }
    }
}

fn length_response(status: u16, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn config(endpoints: Vec<String>, key: &ApiKey) -> ClientConfig {
    ClientConfig {
        endpoints,
        credentials: Some(Credentials::ApiKey(key.clone())),
        insecure: true,
        ca_file: None,
        timeout: Duration::from_secs(5),
    }
}

/// Echoes method, path and body; `/chunked` answers chunked; `/close` closes afterwards.
fn echo_handler() -> Handler {
    Arc::new(|req: &Req| {
        let mut text = format!("{} {} ", req.method, req.path).into_bytes();
        text.extend_from_slice(&req.body);
        match req.path.as_str() {
            "/chunked" => (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\n\r\n"
                    .to_vec(),
                After::Keep,
            ),
            "/close" => (length_response(200, &text), After::Close),
            "/abort" => (length_response(200, &text), After::Abort),
            "/eof-body" => (b"HTTP/1.1 200 OK\r\n\r\nuntil the end".to_vec(), After::Close),
            "/slow" => {
                thread::sleep(Duration::from_millis(1500));
                (length_response(200, b""), After::Keep)
            }
            _ => (length_response(200, &text), After::Keep),
        }
    })
}

#[test]
fn normalize() {
    let cases: &[(&str, &[&str])] = &[
        ("127.0.0.1:7373", &["https://127.0.0.1:7373"]),
        ("http://a:1, https://b:2", &["https://a:1", "https://b:2"]),
        ("https://x:7373", &["https://x:7373"]),
        (" a:1 ,, ,b:2,", &["https://a:1", "https://b:2"]),
        ("", &[]),
        ("http://", &[]),
        ("[::1]:7373", &["https://[::1]:7373"]),
    ];
    for (input, want) in cases {
        assert_eq!(normalize_endpoints(input), *want, "input {input:?}");
    }
}

#[test]
fn endpoint_parsing() {
    let ep = Endpoint::parse("https://127.0.0.1:7373").unwrap();
    assert_eq!(
        (ep.host.as_str(), ep.port, ep.authority.as_str()),
        ("127.0.0.1", 7373, "127.0.0.1:7373")
    );
    assert!(matches!(ep.server_name, ServerName::IpAddress(_)));
    let ep = Endpoint::parse("https://[::1]:1/x").unwrap();
    assert_eq!(
        (ep.host.as_str(), ep.port, ep.authority.as_str()),
        ("::1", 1, "[::1]:1")
    );
    let ep = Endpoint::parse("https://kes.example").unwrap();
    assert_eq!((ep.port, ep.url.as_str()), (443, "https://kes.example"));
    assert!(matches!(ep.server_name, ServerName::DnsName(_)));
    assert!(Endpoint::parse("https://h:99999").is_err());
    assert!(Endpoint::parse("https://").is_err());
    assert!(Endpoint::parse("https://[::1").is_err());
}

#[test]
fn credentials_rules() {
    let key = "kes:v1:AAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f";
    assert!(matches!(
        Credentials::resolve(Some(key), None, Some("")),
        Ok(Credentials::ApiKey(_))
    ));
    assert!(matches!(
        Credentials::resolve(None, Some("k"), Some("c")),
        Ok(Credentials::Files { .. })
    ));
    assert!(Credentials::resolve(Some(key), Some("k"), Some("c")).is_err());
    assert!(Credentials::resolve(None, Some("k"), None).is_err());
    let err = Credentials::resolve(Some(""), None, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no API key specified. Consider setting KES_API_KEY (or MINIO_KES_API_KEY)"
    );
    let err = Credentials::resolve(Some("kes:v1:AAAA"), None, None).unwrap_err();
    assert!(!err.to_string().contains("AAAA"));
}

#[test]
fn keep_alive_chunked_and_length() {
    let server = spawn_server(echo_handler());
    let key = ApiKey::generate().unwrap();
    let mut client = Client::new(config(vec![server.url()], &key)).unwrap();

    let resp = client
        .request(
            "POST",
            "/v1/key/create/k",
            Some(b"{\"a\":1}"),
            &[("X-Test", "1")],
        )
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"POST /v1/key/create/k {\"a\":1}");
    assert_eq!(resp.header("CONTENT-LENGTH"), Some("29"));
    let req = server.next_request();
    assert_eq!(req.identity, Some(key.identity()));
    assert_eq!(req.body, b"{\"a\":1}");

    let resp = client.request("GET", "/chunked", None, &[]).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"abcdefg");
    let resp = client.request("GET", "/v1/status", None, &[]).unwrap();
    assert_eq!(resp.body, b"GET /v1/status ");

    let req2 = server.next_request();
    let req3 = server.next_request();
    assert_eq!((req.conn, req2.conn, req3.conn), (0, 0, 0));
    assert_eq!(server.conns.load(Ordering::SeqCst), 1);
}

#[test]
fn reconnects_after_server_closed_kept_alive_connection() {
    let server = spawn_server(echo_handler());
    let key = ApiKey::generate().unwrap();
    let mut client = Client::new(config(vec![server.url()], &key)).unwrap();
    for path in ["/close", "/abort", "/close", "/x"] {
        let resp = client.request("POST", path, Some(b"b"), &[]).unwrap();
        assert_eq!(resp.body, format!("POST {path} b").as_bytes());
        // Give the server time to really close before the next request reuses the socket.
        thread::sleep(Duration::from_millis(50));
    }
    let conns: Vec<usize> = (0..4).map(|_| server.next_request().conn).collect();
    assert_eq!(conns, vec![0, 1, 2, 3]);
    // No request was sent twice.
    assert!(server
        .requests
        .recv_timeout(Duration::from_millis(200))
        .is_err());
    assert_eq!(server.conns.load(Ordering::SeqCst), 4);
}

#[test]
fn close_delimited_body() {
    let server = spawn_server(echo_handler());
    let key = ApiKey::generate().unwrap();
    let mut client = Client::new(config(vec![server.url()], &key)).unwrap();
    let resp = client.request("GET", "/eof-body", None, &[]).unwrap();
    assert_eq!(resp.body, b"until the end");
    let resp = client.request("GET", "/y", None, &[]).unwrap();
    assert_eq!(resp.body, b"GET /y ");
    assert_eq!(server.conns.load(Ordering::SeqCst), 2);
}

#[test]
fn verifies_server_with_ca_file() {
    let server = spawn_server(echo_handler());
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &server.cert_pem).unwrap();
    let key = ApiKey::generate().unwrap();
    let mut cfg = config(vec![server.url()], &key);
    cfg.insecure = false;
    cfg.ca_file = Some(ca);
    let mut client = Client::new(cfg.clone()).unwrap();
    assert_eq!(client.request("GET", "/ok", None, &[]).unwrap().status, 200);

    // Another certificate as CA: verification fails.
    let (_, _, other_pem) = self_signed_server_cert(&[server.addr.ip()], &[]).unwrap();
    let other = dir.path().join("other.pem");
    std::fs::write(&other, other_pem).unwrap();
    cfg.ca_file = Some(other);
    let mut client = Client::new(cfg.clone()).unwrap();
    let err = client.request("GET", "/ok", None, &[]).unwrap_err();
    assert!(matches!(err, ClientError::Tls(_)), "{err:?}");

    // A CA file without certificates is a configuration error.
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "nothing").unwrap();
    cfg.ca_file = Some(empty);
    assert!(matches!(Client::new(cfg), Err(ClientError::Config(_))));
}

#[test]
fn certificate_files_as_credentials() {
    let server = spawn_server(echo_handler());
    let dir = tempfile::tempdir().unwrap();
    let key = ApiKey::generate().unwrap();
    let (cert_pem, key_pem) =
        identity_cert_pem(&key, "client", &[], &[], Duration::from_secs(3600)).unwrap();
    let (cert_path, key_path) = (dir.path().join("c.crt"), dir.path().join("c.key"));
    std::fs::write(&cert_path, cert_pem).unwrap();
    std::fs::write(&key_path, key_pem.expose()).unwrap();
    let mut cfg = config(vec![server.url()], &key);
    cfg.credentials = Some(Credentials::Files {
        cert: cert_path,
        key: key_path.clone(),
    });
    let mut client = Client::new(cfg.clone()).unwrap();
    assert_eq!(client.request("GET", "/", None, &[]).unwrap().status, 200);
    assert_eq!(server.next_request().identity, Some(key.identity()));

    cfg.credentials = Some(Credentials::Files {
        cert: dir.path().join("missing.crt"),
        key: key_path,
    });
    assert!(matches!(Client::new(cfg), Err(ClientError::Config(_))));
}

#[test]
fn no_client_certificate_is_rejected() {
    let server = spawn_server(echo_handler());
    let key = ApiKey::generate().unwrap();
    let mut cfg = config(vec![server.url()], &key);
    cfg.credentials = None;
    let mut client = Client::new(cfg).unwrap();
    let err = client.request("GET", "/", None, &[]).unwrap_err();
    assert!(matches!(err, ClientError::Tls(_)), "{err:?}");
}

fn closed_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}", l.local_addr().unwrap());
    drop(l);
    url
}

#[test]
fn failover_between_endpoints() {
    let key = ApiKey::generate().unwrap();
    let good = spawn_server(echo_handler());

    // Connect error → next endpoint.
    let mut client = Client::new(config(vec![closed_port(), good.url()], &key)).unwrap();
    assert_eq!(client.request("GET", "/a", None, &[]).unwrap().status, 200);
    // The working endpoint is tried first from now on.
    assert_eq!(client.request("GET", "/b", None, &[]).unwrap().status, 200);

    // A single unreachable endpoint → Connect error.
    let mut client = Client::new(config(vec![closed_port()], &key)).unwrap();
    let err = client.request("GET", "/", None, &[]).unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    assert!(err
        .to_string()
        .starts_with("failed to connect to https://127.0.0.1:"));

    // 503 → next endpoint; 501 → returned as is.
    let unavailable = spawn_server(Arc::new(|_: &Req| {
        (length_response(503, b"busy"), After::Keep)
    }));
    let not_impl = spawn_server(Arc::new(|_: &Req| {
        (length_response(501, b"no"), After::Keep)
    }));
    let mut client = Client::new(config(vec![unavailable.url(), good.url()], &key)).unwrap();
    let resp = client.request("GET", "/c", None, &[]).unwrap();
    assert_eq!((resp.status, &resp.body[..]), (200, &b"GET /c "[..]));
    let mut client = Client::new(config(vec![not_impl.url(), good.url()], &key)).unwrap();
    assert_eq!(client.request("GET", "/d", None, &[]).unwrap().status, 501);
    // All endpoints 503 → the last 503 is returned.
    let mut client = Client::new(config(vec![unavailable.url()], &key)).unwrap();
    assert_eq!(client.request("GET", "/e", None, &[]).unwrap().status, 503);
}

#[test]
fn read_timeout() {
    let server = spawn_server(echo_handler());
    let key = ApiKey::generate().unwrap();
    let mut cfg = config(vec![server.url()], &key);
    cfg.timeout = Duration::from_millis(300);
    let mut client = Client::new(cfg).unwrap();
    let err = client.request("GET", "/slow", None, &[]).unwrap_err();
    assert!(matches!(err, ClientError::Timeout), "{err:?}");
}

#[test]
fn send_raw_pipelined() {
    let server = spawn_server(echo_handler());
    let key = ApiKey::generate().unwrap();
    let mut client = Client::new(config(vec![server.url()], &key)).unwrap();
    let raw = b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /close HTTP/1.1\r\nHost: x\r\n\r\n";
    let out = client.send_raw(raw).unwrap();
    let mut expected = length_response(200, b"GET /one ");
    expected.extend_from_slice(&length_response(200, b"GET /close "));
    assert_eq!(out, expected);
}

#[test]
fn request_validation() {
    let key = ApiKey::generate().unwrap();
    let mut client = Client::new(config(vec![closed_port()], &key)).unwrap();
    let err = client
        .request("GET", "/a", None, &[("X", "a\r\nInjected: 1")])
        .unwrap_err();
    assert!(matches!(err, ClientError::Config(_)));
    assert!(matches!(
        Client::new(config(vec![], &key)),
        Err(ClientError::Config(_))
    ));
}
