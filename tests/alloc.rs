//! The hot path does not allocate: after warm-up, generate and decrypt of a cached key run
//! through routing, authorisation and the handlers with zero heap allocations (counted by a
//! global allocator on this thread). TLS record handling (rustls) is outside this check.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use kes::api::{self, Peer, Request, RouteId, Scratch, ROUTES};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn generate_and_decrypt_do_not_allocate() {
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

    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .unwrap();
    let allocations = ex.run(async move {
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
        ALLOCATIONS.store(0, Ordering::Relaxed);
        for _ in 0..1000 {
            round(&core, &mut bufs, admin, generate, decrypt, true).await;
        }
        ALLOCATIONS.load(Ordering::Relaxed)
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
