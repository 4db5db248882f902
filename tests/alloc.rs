//! The hot path does not allocate: after warm-up, generate and decrypt of a cached key run
//! through routing, authorisation and the handlers with zero heap allocations (counted by a
//! global allocator on this thread). TLS record handling (rustls) is outside this check.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use kes::api::{self, Peer, Request, RouteId, Scratch, ROUTES};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    // Per thread, so that tests running at once do not count each other's allocations.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    if COUNTING.with(|c| c.get()) {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
    }
}

fn allocations() -> u64 {
    ALLOCATIONS.with(|a| a.get())
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A dev server's shared state (not started) with the key `hot` in its keystore, and the
/// admin identity.
fn dev_state_with_hot_key() -> (std::sync::Arc<kes::api::Shared>, kes::auth::Identity) {
    let prepared = kes::cli::server::prepare_dev(Some("127.0.0.1:0"), Some(1)).unwrap();
    let shared = prepared.options.shared.clone();
    let admin = kes::auth::apikey::ApiKey::parse(prepared.api_key.as_deref().unwrap())
        .unwrap()
        .identity();
    let rng = ring::rand::SystemRandom::new();
    let key = kes::crypto::KeyVersion::generate(
        kes::crypto::KeyType::platform_default(),
        "",
        kes::time::Timestamp::now(),
        &rng,
    )
    .unwrap();
    shared
        .keystore
        .create("hot", kes::crypto::record::encode_record(&key).expose())
        .unwrap();
    (shared, admin)
}

#[test]
fn generate_and_decrypt_do_not_allocate() {
    let (shared, admin) = dev_state_with_hot_key();

    let allocations = kes::rt::block_on(async move {
        let core = api::Core::new(shared);
        let generate = ROUTES
            .iter()
            .position(|r| r.id == RouteId::KeyGenerate)
            .unwrap();
        let decrypt = ROUTES
            .iter()
            .position(|r| r.id == RouteId::KeyDecrypt)
            .unwrap();
        let mut body = Vec::with_capacity(4096);
        let mut out = Vec::with_capacity(4096);
        let mut ciphertext = String::with_capacity(256);
        let mut scratch = Scratch::default();
        let mut bufs = Bufs {
            body: &mut body,
            out: &mut out,
            ciphertext: &mut ciphertext,
            scratch: &mut scratch,
        };
        for _ in 0..100 {
            round(&core, &mut bufs, admin, generate, decrypt, false).await;
        }
        ALLOCATIONS.with(|a| a.set(0));
        for _ in 0..1000 {
            round(&core, &mut bufs, admin, generate, decrypt, true).await;
        }
        allocations()
    });
    assert_eq!(
        allocations, 0,
        "allocations in 1000 generate+decrypt rounds"
    );
}

struct Bufs<'a> {
    body: &'a mut Vec<u8>,
    out: &'a mut Vec<u8>,
    ciphertext: &'a mut String,
    scratch: &'a mut Scratch,
}

const CONTEXT: &str = "eyJteS1idWNrZXQiOiJteS1idWNrZXQvbXktb2JqZWN0In0=";

async fn round(
    core: &api::Core,
    b: &mut Bufs<'_>,
    admin: kes::auth::Identity,
    generate: usize,
    decrypt: usize,
    count: bool,
) {
    COUNTING.with(|c| c.set(count));
    let settings = core.settings.get(&core.shared.settings);
    b.body.clear();
    b.body.extend_from_slice(b"{\"context\":\"");
    b.body.extend_from_slice(CONTEXT.as_bytes());
    b.body.extend_from_slice(b"\"}");
    b.out.clear();
    let mut req = Request {
        settings: &settings,
        route: &ROUTES[generate],
        argument: "hot",
        path: "/v1/key/generate/hot",
        peer: Peer::Identified(admin),
        body: b.body,
        scratch: b.scratch,
        binary: false,
        host: "",
    };
    api::authorize(generate, &req).unwrap();
    let reply = api::dispatch(core, &mut req, b.out).await;
    assert_eq!(reply, api::Reply::Json);
    req.scratch.wipe();
    let text = std::str::from_utf8(b.out).unwrap();
    let start = text.find("\"ciphertext\":\"").unwrap() + 14;
    let end = start + text[start..].find('"').unwrap();
    b.ciphertext.clear();
    b.ciphertext.push_str(&text[start..end]);

    b.body.clear();
    b.body.extend_from_slice(b"{\"ciphertext\":\"");
    b.body.extend_from_slice(b.ciphertext.as_bytes());
    b.body.extend_from_slice(b"\",\"context\":\"");
    b.body.extend_from_slice(CONTEXT.as_bytes());
    b.body.extend_from_slice(b"\"}");
    b.out.clear();
    let mut req = Request {
        settings: &settings,
        route: &ROUTES[decrypt],
        argument: "hot",
        path: "/v1/key/decrypt/hot",
        peer: Peer::Identified(admin),
        body: b.body,
        scratch: b.scratch,
        binary: false,
        host: "",
    };
    api::authorize(decrypt, &req).unwrap();
    let reply = api::dispatch(core, &mut req, b.out).await;
    assert_eq!(
        reply,
        api::Reply::Json,
        "{}",
        String::from_utf8_lossy(b.out)
    );
    req.scratch.wipe();
    COUNTING.with(|c| c.set(false));
}

/// The same over HTTP/2: frames of 64 generate requests per batch (HEADERS + DATA each, as
/// kms-go sends them) go through frame parsing, HPACK decoding, routing, authorisation, the
/// handler and the response encoding and framing with zero heap allocations once the
/// connection is warm. (TLS and the socket are outside, as above.)
#[test]
fn http2_generate_batches_do_not_allocate() {
    use kes::http2::{frame, hpack, PREFACE};
    let (shared, admin) = dev_state_with_hot_key();

    const STREAMS_PER_BATCH: u32 = 64;
    const WARM_BATCHES: usize = 20;
    const COUNTED_BATCHES: usize = 50;
    let encoder = hpack::Encoder::new();
    let mut block = Vec::new();
    encoder.encode_field(&mut block, b":method", b"POST");
    encoder.encode_field(&mut block, b":scheme", b"https");
    encoder.encode_field(&mut block, b":path", b"/v1/key/generate/hot");
    encoder.encode_field(&mut block, b":authority", b"kes:7373");
    encoder.encode_field(&mut block, b"content-type", b"application/json");
    encoder.encode_field(&mut block, b"user-agent", b"Go-http-client/2.0");
    encoder.encode_field(&mut block, b"accept-encoding", b"gzip");
    let body = format!("{{\"context\":\"{CONTEXT}\"}}");
    let mut batches: Vec<Vec<u8>> = Vec::new();
    let mut next_id = 1u32;
    for i in 0..WARM_BATCHES + COUNTED_BATCHES {
        let mut b = Vec::new();
        if i == 0 {
            b.extend_from_slice(PREFACE);
            frame::write_settings(&mut b, &[]);
        }
        for _ in 0..STREAMS_PER_BATCH {
            frame::write_headers(&mut b, next_id, &block, false, 16_384);
            frame::write_data(&mut b, next_id, body.as_bytes(), true);
            next_id += 2;
        }
        // The client acknowledges what it received, as a real one does.
        frame::write_window_update(&mut b, 0, 1 << 20);
        batches.push(b);
    }
    let refs: Vec<&[u8]> = batches.iter().map(|b| b.as_slice()).collect();

    let (allocations, answered) = kes::rt::block_on(async move {
        let core = std::rc::Rc::new(api::Core::new(shared));
        let mut answered = 0usize;
        kes::server::http2::drive_in_memory(core, Peer::Identified(admin), &refs, |i, out| {
            // Count from the first batch after the warm-up on.
            COUNTING.with(|c| c.set(i + 1 >= WARM_BATCHES));
            let mut pos = 0;
            while let Some(h) = out.get(pos..pos + 9).and_then(frame::FrameHeader::parse) {
                if h.kind == frame::kind::DATA
                    && h.flags & frame::flag::END_STREAM != 0
                    && out[pos + 9..].starts_with(b"{\"plaintext\":")
                {
                    answered += 1;
                }
                pos += 9 + h.length as usize;
            }
        })
        .await;
        COUNTING.with(|c| c.set(false));
        (allocations(), answered)
    });
    assert_eq!(
        answered,
        (WARM_BATCHES + COUNTED_BATCHES) * STREAMS_PER_BATCH as usize,
        "every request answered with a DEK"
    );
    assert_eq!(
        allocations, 0,
        "allocations in {COUNTED_BATCHES} batches of {STREAMS_PER_BATCH} HTTP/2 requests"
    );
}

/// The MinKMS API's KEY:GENERATE and KEY:DECRYPT, as MinIO sends them (one frame each, the
/// enclave `default`), run through routing, authorisation and the command handlers with zero
/// heap allocations once warm, like the KES API's routes above.
#[test]
fn minkms_generate_and_decrypt_do_not_allocate() {
    let (shared, admin) = dev_state_with_hot_key();
    const AD: &[u8] = br#"{"bucket":"my-bucket/my-object"}"#;

    fn put_field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
        // Every field here is shorter than 128 bytes: one length byte.
        out.push(tag);
        out.push(bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    /// The bytes of field `tag` (length-delimited, short) in a protobuf message.
    fn field(message: &[u8], tag: u8) -> &[u8] {
        let mut at = 0;
        while at < message.len() {
            let (t, len) = (message[at], message[at + 1] as usize);
            if t & 7 == 0 {
                at += 2; // a one-byte varint
                continue;
            }
            if t == tag {
                return &message[at + 2..at + 2 + len];
            }
            at += 2 + len;
        }
        panic!("no field {tag:#x}");
    }

    let allocations = kes::rt::block_on(async move {
        let core = api::Core::new(shared);
        let mut conn = KmsConn {
            body: Vec::with_capacity(4096),
            scratch: Scratch::default(),
            out: Vec::with_capacity(4096),
        };
        let mut message = Vec::with_capacity(256);
        let mut ciphertext = Vec::with_capacity(256);
        let mut counted = 0;
        for round in 0..1100 {
            COUNTING.with(|c| c.set(round >= 100));
            let settings = core.settings.get(&core.shared.settings);
            // KEY:GENERATE {name, associated_data} (207).
            message.clear();
            put_field(&mut message, 0x0a, b"hot");
            put_field(&mut message, 0x1a, AD);
            let answer = conn.post(&core, &settings, admin, 207, &message).await;
            ciphertext.clear();
            ciphertext.extend_from_slice(field(answer, 0x1a));

            // KEY:DECRYPT {name, version 0, ciphertext, associated_data} (206).
            message.clear();
            put_field(&mut message, 0x0a, b"hot");
            put_field(&mut message, 0x1a, &ciphertext);
            put_field(&mut message, 0x22, AD);
            let answer = conn.post(&core, &settings, admin, 206, &message).await;
            assert_eq!(field(answer, 0x0a).len(), 32, "the DEK comes back");
            COUNTING.with(|c| c.set(false));
            counted += usize::from(round >= 100);
        }
        assert_eq!(counted, 1000);
        allocations()
    });
    assert_eq!(
        allocations, 0,
        "allocations in 1000 MinKMS generate+decrypt rounds"
    );
}

/// A MinKMS client's reused buffers (as a connection keeps them).
struct KmsConn {
    body: Vec<u8>,
    scratch: Scratch,
    out: Vec<u8>,
}

impl KmsConn {
    /// One frame of `command` to the enclave `default` as `admin`, answered 200; returns the
    /// answer's message. The scratch is wiped afterwards, as a connection does.
    async fn post(
        &mut self,
        core: &api::Core,
        settings: &kes::api::settings::Settings,
        admin: kes::auth::Identity,
        command: u16,
        message: &[u8],
    ) -> &[u8] {
        let kms = ROUTES.iter().position(|r| r.id == RouteId::Kms).unwrap();
        self.body.clear();
        self.body.extend_from_slice(&command.to_be_bytes());
        self.body
            .extend_from_slice(&(message.len() as u32).to_be_bytes());
        self.body.extend_from_slice(message);
        self.out.clear();
        let mut req = Request {
            settings,
            route: &ROUTES[kms],
            argument: "default",
            path: "/v1/kms/default",
            peer: Peer::Identified(admin),
            body: &mut self.body,
            scratch: &mut self.scratch,
            binary: true,
            host: "",
        };
        api::authorize(kms, &req).unwrap();
        let reply = api::dispatch(core, &mut req, &mut self.out).await;
        assert_eq!(reply, api::Reply::Binary(200), "{:?}", self.out);
        req.scratch.wipe();
        &self.out[6..]
    }
}
