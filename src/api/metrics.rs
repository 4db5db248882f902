//! Prometheus metrics: per-core counters written only by their own core (plain relaxed
//! load + store, no locked instructions, no shared cache line on the hot path) and summed by
//! whichever core serves `/v1/metrics` (http-api.md §6).
//!
//! `GET /v1/metrics` serves upstream's fourteen families only, with their exact names, types
//! and labels, because kms-go's `Client.Metrics` (and so upstream's `kes metric`) refuses a
//! scrape in which any family other than `kes_http_request_{success,error,failure}` has more
//! than one series. `GET /v1/metrics/detail` ([`DETAIL_PATH`]) adds ours under new names: a
//! microsecond-range latency histogram per route, per-route counters, TLS handshakes, open
//! connections, cache hits and misses, keystore latency.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use super::ROUTES;

/// The path of the detailed exposition (authorised as `/v1/metrics`).
pub const DETAIL_PATH: &str = crate::routes::METRICS_DETAIL_PATH;

/// Status codes with their own counter; anything else is counted as `other`.
pub const CODES: [u16; 18] = [
    200, 301, 400, 403, 404, 405, 406, 408, 409, 413, 431, 500, 501, 502, 503, 504, 505, 0,
];
use crate::routes::ROUTE_COUNT;
/// Upstream's latency buckets, in seconds.
pub const UPSTREAM_BUCKETS_S: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 3.0, 5.0, 10.0];
/// Our latency buckets, in microseconds: where a server that answers in microseconds lives.
pub const MICRO_BUCKETS_US: [u64; 14] = [
    25, 50, 100, 200, 300, 500, 750, 1_000, 2_000, 5_000, 10_000, 50_000, 250_000, 1_000_000,
];

fn code_index(status: u16) -> usize {
    CODES
        .iter()
        .position(|&c| c == status)
        .unwrap_or(CODES.len() - 1)
}

/// Adds one; only the owning core writes, so no atomic read-modify-write is needed.
#[inline]
fn bump(counter: &AtomicU64, by: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(by), Relaxed);
}

/// One core's counters.
pub struct CoreMetrics {
    /// Per route and status: every answered request of that route (ours).
    route_codes: [[AtomicU64; CODES.len()]; ROUTE_COUNT],
    /// Upstream's counters: routes 6–20, after authentication, by status.
    upstream_codes: [AtomicU64; CODES.len()],
    upstream_buckets: [AtomicU64; UPSTREAM_BUCKETS_S.len() + 1],
    upstream_sum_ns: AtomicU64,
    upstream_count: AtomicU64,
    active: AtomicU64,
    /// Per route latency (ours), non-cumulative bucket counts + sum.
    route_buckets: [[AtomicU64; MICRO_BUCKETS_US.len() + 1]; ROUTE_COUNT],
    route_sum_ns: [AtomicU64; ROUTE_COUNT],
    pub handshakes_full: AtomicU64,
    pub handshakes_resumed: AtomicU64,
    pub handshakes_failed: AtomicU64,
    pub connections_open: AtomicU64,
    /// Connections that negotiated HTTP/1.1 and HTTP/2 (after the handshake).
    pub connections_http1: AtomicU64,
    pub connections_http2: AtomicU64,
    /// HTTP/2 streams opened, and HTTP/2 connections ended by a connection error (GOAWAY
    /// with a code other than NO_ERROR).
    pub http2_streams: AtomicU64,
    pub http2_connection_errors: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    keystore_buckets: [AtomicU64; MICRO_BUCKETS_US.len() + 1],
    keystore_sum_ns: AtomicU64,
}

impl Default for CoreMetrics {
    fn default() -> Self {
        CoreMetrics {
            route_codes: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            upstream_codes: std::array::from_fn(|_| AtomicU64::new(0)),
            upstream_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            upstream_sum_ns: AtomicU64::new(0),
            upstream_count: AtomicU64::new(0),
            active: AtomicU64::new(0),
            route_buckets: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            route_sum_ns: std::array::from_fn(|_| AtomicU64::new(0)),
            handshakes_full: AtomicU64::new(0),
            handshakes_resumed: AtomicU64::new(0),
            handshakes_failed: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            connections_http1: AtomicU64::new(0),
            connections_http2: AtomicU64::new(0),
            http2_streams: AtomicU64::new(0),
            http2_connection_errors: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            keystore_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            keystore_sum_ns: AtomicU64::new(0),
        }
    }
}

/// Whether upstream's request metrics count this route (routes 6–20 of the spec).
fn upstream_counts(route_index: usize) -> bool {
    (5..=19).contains(&route_index)
}

impl CoreMetrics {
    pub fn inc(&self, counter: &AtomicU64) {
        bump(counter, 1);
    }

    pub fn dec(&self, counter: &AtomicU64) {
        counter.store(counter.load(Relaxed).saturating_sub(1), Relaxed);
    }

    /// A request that passed authentication started.
    pub fn request_started(&self, route_index: usize) {
        if upstream_counts(route_index) {
            bump(&self.active, 1);
        }
    }

    /// A request finished. `authenticated` is false for 400/403 authentication failures,
    /// which upstream's metrics do not count.
    pub fn request_finished(
        &self,
        route_index: usize,
        status: u16,
        elapsed_ns: u64,
        authenticated: bool,
    ) {
        let code = code_index(status);
        bump(&self.route_codes[route_index][code], 1);
        let us = elapsed_ns / 1_000;
        let bucket = MICRO_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(MICRO_BUCKETS_US.len());
        bump(&self.route_buckets[route_index][bucket], 1);
        bump(&self.route_sum_ns[route_index], elapsed_ns);
        if authenticated && upstream_counts(route_index) {
            self.active
                .store(self.active.load(Relaxed).saturating_sub(1), Relaxed);
            bump(&self.upstream_codes[code], 1);
            let s = elapsed_ns as f64 / 1e9;
            let b = UPSTREAM_BUCKETS_S
                .iter()
                .position(|&b| s <= b)
                .unwrap_or(UPSTREAM_BUCKETS_S.len());
            bump(&self.upstream_buckets[b], 1);
            bump(&self.upstream_sum_ns, elapsed_ns);
            bump(&self.upstream_count, 1);
        }
    }

    pub fn keystore_call(&self, elapsed_ns: u64) {
        let us = elapsed_ns / 1_000;
        let bucket = MICRO_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(MICRO_BUCKETS_US.len());
        bump(&self.keystore_buckets[bucket], 1);
        bump(&self.keystore_sum_ns, elapsed_ns);
    }
}

/// All cores' counters plus node-wide ones.
#[derive(Default)]
pub struct Registry {
    cores: Mutex<Vec<Arc<CoreMetrics>>>,
    pub log_audit_events: AtomicU64,
    pub log_error_events: AtomicU64,
}

impl Registry {
    /// Registers a core's counters (once, at core start).
    pub fn register(&self) -> Arc<CoreMetrics> {
        let m = Arc::new(CoreMetrics::default());
        self.cores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(m.clone());
        m
    }

    fn cores(&self) -> Vec<Arc<CoreMetrics>> {
        self.cores.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Process gauges for the system families.
pub struct SystemGauges {
    pub up_time_s: f64,
    pub num_cpu: u64,
    pub num_cpu_used: u64,
    pub num_threads: u64,
    pub heap_used_bytes: u64,
    /// Live heap allocations (see [`crate::heap`]); 0 where the counting allocator is not
    /// installed.
    pub heap_objects: u64,
    pub stack_used_bytes: u64,
}

fn sum(cores: &[Arc<CoreMetrics>], f: impl Fn(&CoreMetrics) -> &AtomicU64) -> u64 {
    cores.iter().map(|c| f(c).load(Relaxed)).sum()
}

/// Writes the text exposition format 0.0.4, families sorted by name, labelled families only
/// when they have samples: upstream's families, and with `detail` ours as well.
pub fn render(registry: &Registry, system: &SystemGauges, detail: bool, out: &mut String) {
    let cores = registry.cores();
    let mut families: BTreeMap<&str, String> = BTreeMap::new();
    let mut family = |name: &'static str, kind: &str, help: &str, body: String| {
        if !body.is_empty() {
            families.insert(
                name,
                format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{body}"),
            );
        }
    };

    // Upstream families.
    let mut by_class = [String::new(), String::new(), String::new()];
    for (i, &code) in CODES.iter().enumerate() {
        let n = sum(&cores, |c| &c.upstream_codes[i]);
        if n == 0 || code == 0 {
            continue;
        }
        let (class, name) = match code {
            200..=299 => (0, "kes_http_request_success"),
            400..=499 => (1, "kes_http_request_error"),
            500..=599 => (2, "kes_http_request_failure"),
            _ => continue,
        };
        let _ = writeln!(by_class[class], "{name}{{code=\"{code}\"}} {n}");
    }
    let [success, error, failure] = by_class;
    family(
        "kes_http_request_success",
        "counter",
        "Requests answered with a 2xx status.",
        success,
    );
    family(
        "kes_http_request_error",
        "counter",
        "Requests answered with a 4xx status.",
        error,
    );
    family(
        "kes_http_request_failure",
        "counter",
        "Requests answered with a 5xx status.",
        failure,
    );
    family(
        "kes_http_request_active",
        "gauge",
        "Requests currently being handled.",
        format!("kes_http_request_active {}\n", sum(&cores, |c| &c.active)),
    );
    let mut hist = String::new();
    let mut cumulative = 0;
    for (i, le) in UPSTREAM_BUCKETS_S.iter().enumerate() {
        cumulative += sum(&cores, |c| &c.upstream_buckets[i]);
        let _ = writeln!(
            hist,
            "kes_http_response_time_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    cumulative += sum(&cores, |c| &c.upstream_buckets[UPSTREAM_BUCKETS_S.len()]);
    let _ = writeln!(
        hist,
        "kes_http_response_time_bucket{{le=\"+Inf\"}} {cumulative}"
    );
    let _ = writeln!(
        hist,
        "kes_http_response_time_sum {}",
        sum(&cores, |c| &c.upstream_sum_ns) as f64 / 1e9
    );
    let _ = writeln!(
        hist,
        "kes_http_response_time_count {}",
        sum(&cores, |c| &c.upstream_count)
    );
    family(
        "kes_http_response_time",
        "histogram",
        "Handler latency in seconds.",
        hist,
    );
    family(
        "kes_log_audit_events",
        "counter",
        "Audit events delivered to /v1/log/audit subscribers.",
        format!(
            "kes_log_audit_events {}\n",
            registry.log_audit_events.load(Relaxed)
        ),
    );
    family(
        "kes_log_error_events",
        "counter",
        "Error log records delivered to /v1/log/error subscribers.",
        format!(
            "kes_log_error_events {}\n",
            registry.log_error_events.load(Relaxed)
        ),
    );
    let gauge = |name: &str, v: String| format!("{name} {v}\n");
    family(
        "kes_system_up_time",
        "gauge",
        "Seconds since the server started.",
        gauge("kes_system_up_time", format!("{:.2}", system.up_time_s)),
    );
    family(
        "kes_system_num_cpu",
        "gauge",
        "CPUs the process may run on (its affinity mask).",
        gauge("kes_system_num_cpu", system.num_cpu.to_string()),
    );
    family(
        "kes_system_num_cpu_used",
        "gauge",
        "CPUs serving requests.",
        gauge("kes_system_num_cpu_used", system.num_cpu_used.to_string()),
    );
    family(
        "kes_system_num_threads",
        "gauge",
        "Threads of the process.",
        gauge("kes_system_num_threads", system.num_threads.to_string()),
    );
    family(
        "kes_system_mem_heap_used",
        "gauge",
        "Anonymous resident memory in bytes.",
        gauge(
            "kes_system_mem_heap_used",
            system.heap_used_bytes.to_string(),
        ),
    );
    family(
        "kes_system_mem_heap_objects",
        "gauge",
        "Live heap allocations (counted by the server's allocator).",
        gauge(
            "kes_system_mem_heap_objects",
            system.heap_objects.to_string(),
        ),
    );
    family(
        "kes_system_mem_stack_used",
        "gauge",
        "Stack memory in bytes.",
        gauge(
            "kes_system_mem_stack_used",
            system.stack_used_bytes.to_string(),
        ),
    );

    if !detail {
        for text in families.values() {
            out.push_str(text);
        }
        return;
    }

    // Ours.
    let mut requests = String::new();
    let mut latency = String::new();
    for (r, route) in ROUTES.iter().enumerate() {
        let mut count = 0;
        for (i, &code) in CODES.iter().enumerate() {
            let n = sum(&cores, |c| &c.route_codes[r][i]);
            if n > 0 {
                let code = if code == 0 {
                    "other".to_string()
                } else {
                    code.to_string()
                };
                let _ = writeln!(
                    requests,
                    "kes_requests_total{{route=\"{}\",code=\"{code}\"}} {n}",
                    route.path
                );
                count += n;
            }
        }
        if count == 0 {
            continue;
        }
        let mut cumulative = 0;
        for (i, le) in MICRO_BUCKETS_US.iter().enumerate() {
            cumulative += sum(&cores, |c| &c.route_buckets[r][i]);
            let _ = writeln!(
                latency,
                "kes_request_duration_seconds_bucket{{route=\"{}\",le=\"{}\"}} {cumulative}",
                route.path,
                *le as f64 / 1e6
            );
        }
        let _ = writeln!(
            latency,
            "kes_request_duration_seconds_bucket{{route=\"{}\",le=\"+Inf\"}} {count}",
            route.path
        );
        let _ = writeln!(
            latency,
            "kes_request_duration_seconds_sum{{route=\"{}\"}} {}",
            route.path,
            sum(&cores, |c| &c.route_sum_ns[r]) as f64 / 1e9
        );
        let _ = writeln!(
            latency,
            "kes_request_duration_seconds_count{{route=\"{}\"}} {count}",
            route.path
        );
    }
    family(
        "kes_requests_total",
        "counter",
        "Answered requests by route and status (all routes, incl. auth failures).",
        requests,
    );
    family(
        "kes_request_duration_seconds",
        "histogram",
        "Request latency by route, microsecond-range buckets.",
        latency,
    );
    let handshakes = format!(
        "kes_tls_handshakes_total{{result=\"full\"}} {}\nkes_tls_handshakes_total{{result=\"resumed\"}} {}\nkes_tls_handshakes_total{{result=\"failed\"}} {}\n",
        sum(&cores, |c| &c.handshakes_full),
        sum(&cores, |c| &c.handshakes_resumed),
        sum(&cores, |c| &c.handshakes_failed)
    );
    family(
        "kes_tls_handshakes_total",
        "counter",
        "TLS handshakes by result.",
        handshakes,
    );
    family(
        "kes_connections_open",
        "gauge",
        "Open client connections.",
        gauge(
            "kes_connections_open",
            sum(&cores, |c| &c.connections_open).to_string(),
        ),
    );
    let protocols = format!(
        "kes_connections_total{{protocol=\"http/1.1\"}} {}\nkes_connections_total{{protocol=\"h2\"}} {}\n",
        sum(&cores, |c| &c.connections_http1),
        sum(&cores, |c| &c.connections_http2)
    );
    family(
        "kes_connections_total",
        "counter",
        "Client connections by the protocol they negotiated (ALPN).",
        protocols,
    );
    family(
        "kes_http2_streams_total",
        "counter",
        "HTTP/2 streams (requests) opened.",
        gauge(
            "kes_http2_streams_total",
            sum(&cores, |c| &c.http2_streams).to_string(),
        ),
    );
    family(
        "kes_http2_connection_errors_total",
        "counter",
        "HTTP/2 connections closed with a GOAWAY error (protocol errors, floods).",
        gauge(
            "kes_http2_connection_errors_total",
            sum(&cores, |c| &c.http2_connection_errors).to_string(),
        ),
    );
    family(
        "kes_cache_hits_total",
        "counter",
        "Key lookups answered from a core's cache.",
        gauge(
            "kes_cache_hits_total",
            sum(&cores, |c| &c.cache_hits).to_string(),
        ),
    );
    family(
        "kes_cache_misses_total",
        "counter",
        "Key lookups that went to the keystore.",
        gauge(
            "kes_cache_misses_total",
            sum(&cores, |c| &c.cache_misses).to_string(),
        ),
    );
    let mut ks = String::new();
    let mut cumulative = 0;
    for (i, le) in MICRO_BUCKETS_US.iter().enumerate() {
        cumulative += sum(&cores, |c| &c.keystore_buckets[i]);
        let _ = writeln!(
            ks,
            "kes_keystore_duration_seconds_bucket{{le=\"{}\"}} {cumulative}",
            *le as f64 / 1e6
        );
    }
    cumulative += sum(&cores, |c| &c.keystore_buckets[MICRO_BUCKETS_US.len()]);
    let _ = writeln!(
        ks,
        "kes_keystore_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
    );
    let _ = writeln!(
        ks,
        "kes_keystore_duration_seconds_sum {}",
        sum(&cores, |c| &c.keystore_sum_ns) as f64 / 1e9
    );
    let _ = writeln!(ks, "kes_keystore_duration_seconds_count {cumulative}");
    family(
        "kes_keystore_duration_seconds",
        "histogram",
        "Keystore call latency.",
        ks,
    );

    for text in families.values() {
        out.push_str(text);
    }
}
