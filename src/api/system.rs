//! Server-level routes: `/version`, `/v1/ready`, `/v1/status`, `/v1/api`, `/v1/metrics`
//! (http-api.md §5.1–§5.5, §6).

use super::json::JsonWriter;
use super::{store, ApiError, Core, Reply, Request, COMMIT, ROUTES, VERSION};

/// `GET /version` for both APIs: the KES API's JSON (`version`, `commit`) with the MinKMS
/// `VersionResponse` members beside them (`api_version`, `host`: MinIO keys its KMS status by
/// `host`), which KES clients ignore and kms-go's protojson reads; protobuf for a client that
/// sends or accepts exactly `application/octet-stream`.
pub fn version(req: &Request<'_>, out: &mut Vec<u8>) -> Result<Reply, ApiError> {
    if req.binary {
        super::minkms::message::put_version(
            out,
            VERSION,
            COMMIT,
            super::minkms::API_VERSION,
            req.host,
        );
        return Ok(Reply::Binary(200));
    }
    let mut w = JsonWriter::object(out);
    w.string("version", VERSION)
        .string("commit", COMMIT)
        .string("api_version", super::minkms::API_VERSION)
        .string("host", req.host);
    w.finish();
    Ok(Reply::Json)
}

pub async fn ready(core: &Core) -> Result<Reply, ApiError> {
    match store::status(core).await {
        Ok(_) => Ok(Reply::Empty),
        Err(true) => Err(ApiError::STORE_UNREACHABLE),
        Err(false) => Err(ApiError::STORE_UNAVAILABLE),
    }
}

/// Go's names for the target OS and architecture.
pub fn go_os_arch() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        other => other,
    };
    (std::env::consts::OS, arch)
}

/// The CPUs the process may run on, read once, as Go's `runtime.NumCPU` reports them: the
/// number of CPUs in the process's affinity mask (`sched_getaffinity`), so `taskset -c 0 kes`
/// reports 1. The mask is the main thread's (the thread-group leader, by pid), not that of
/// the calling thread: core threads are pinned to one CPU each. [`crate::server::run`] reads
/// it once before it pins anything.
pub fn num_cpu() -> u64 {
    static NUM_CPU: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *NUM_CPU.get_or_init(|| {
        // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for our own process.
        let counted = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            if libc::sched_getaffinity(
                libc::getpid(),
                std::mem::size_of::<libc::cpu_set_t>(),
                &mut set,
            ) == 0
            {
                libc::CPU_COUNT(&set) as i64
            } else {
                // Go falls back to 1 too when the mask cannot be read.
                1
            }
        };
        u64::try_from(counted).unwrap_or(1).max(1)
    })
}

/// Go's `HeapAlloc`: the bytes of live heap allocations where the `kes` binary's counting
/// allocator runs ([`crate::heap`]), else the process's anonymous resident memory.
pub fn heap_used_bytes() -> u64 {
    match crate::heap::live_bytes() {
        0 => proc_status_bytes("RssAnon"),
        live => live,
    }
}

/// Reads a `kB` field such as `VmRSS` from /proc/self/status, in bytes.
pub fn proc_status_bytes(field: &str) -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
            Some(kb * 1024)
        })
        .unwrap_or(0)
}

pub async fn status(core: &Core, out: &mut Vec<u8>) -> Result<Reply, ApiError> {
    let keystore = store::status(core).await;
    let shared = &core.shared;
    let (os, arch) = go_os_arch();
    let uptime_s = (shared.started.elapsed().as_millis() as u64 + 500) / 1000;
    let (heap, stack) = match core.proc_memory.get() {
        Some((at, heap, stack)) if at.elapsed() < std::time::Duration::from_secs(1) => {
            (heap, stack)
        }
        _ => {
            let fresh = (heap_used_bytes(), proc_status_bytes("VmStk"));
            core.proc_memory
                .set(Some((std::time::Instant::now(), fresh.0, fresh.1)));
            fresh
        }
    };
    let mut w = JsonWriter::object(out);
    w.string("version", VERSION)
        .string("os", os)
        .string("arch", arch)
        .uint("uptime", uptime_s)
        .uint("num_cpu", num_cpu())
        .uint("num_cpu_used", shared.cores as u64)
        .uint("mem_heap_used", heap)
        .uint("mem_stack_used", stack);
    match keystore {
        Ok(latency) => {
            let ms = ((latency.as_micros() as u64 + 500) / 1000).max(1);
            w.uint("keystore_latency", ms);
        }
        Err(_) => {
            w.bool("keystore_unreachable", true);
        }
    }
    w.finish();
    Ok(Reply::Json)
}

pub fn api(req: &Request<'_>, out: &mut Vec<u8>) -> Result<Reply, ApiError> {
    let routes = &req.settings.routes;
    out.push(b'[');
    // The KES API's routes only (what upstream lists); the MinKMS route is not one of them.
    for (i, route) in ROUTES.iter().enumerate() {
        if route.id == super::RouteId::Kms {
            continue;
        }
        if i > 0 {
            out.push(b',');
        }
        let mut w = JsonWriter::object(out);
        w.string("method", route.method.as_str())
            .string("path", route.path)
            .uint("max_body", route.body_bytes_max as u64)
            .uint("timeout", routes.timeout[i].as_secs());
        // Close the element without the newline `finish` adds to top-level values.
        out.push(b'}');
    }
    out.extend_from_slice(b"]\n");
    Ok(Reply::Json)
}

/// Prometheus text format 0.0.4 (http-api.md §6): upstream's families at `/v1/metrics`, ours
/// as well at [`DETAIL_PATH`](super::metrics::DETAIL_PATH).
pub fn metrics(core: &Core, req: &Request<'_>, out: &mut Vec<u8>) -> Result<Reply, ApiError> {
    let shared = &core.shared;
    shared.metrics.log_audit_events.store(
        shared
            .logs
            .audit_delivered
            .load(std::sync::atomic::Ordering::Relaxed),
        std::sync::atomic::Ordering::Relaxed,
    );
    shared.metrics.log_error_events.store(
        shared
            .logs
            .error_delivered
            .load(std::sync::atomic::Ordering::Relaxed),
        std::sync::atomic::Ordering::Relaxed,
    );
    let uptime_10ms = shared.started.elapsed().as_millis() / 10;
    let system = super::metrics::SystemGauges {
        up_time_s: uptime_10ms as f64 / 100.0,
        num_cpu: num_cpu(),
        num_cpu_used: shared.cores as u64,
        num_threads: proc_status_count("Threads"),
        heap_used_bytes: heap_used_bytes(),
        heap_objects: crate::heap::live_objects(),
        stack_used_bytes: proc_status_bytes("VmStk"),
    };
    let detail = req.path == super::metrics::DETAIL_PATH;
    let mut text = String::with_capacity(8 * 1024);
    super::metrics::render(&shared.metrics, &system, detail, &mut text);
    out.extend_from_slice(text.as_bytes());
    Ok(Reply::Content("text/plain; version=0.0.4; charset=utf-8"))
}

fn proc_status_count(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                line.strip_prefix(field)?
                    .strip_prefix(':')?
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}
