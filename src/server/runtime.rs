//! Cores: which CPUs to run on, which I/O backend, and one pinned executor ([`crate::rt`])
//! per CPU, each running its own listener and cache shard.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::listener::{accept_loop, CONNECTIONS_PER_CORE_MAX};
use super::timeouts::Timeouts;
use crate::api::{Core, Shared};
use crate::cache::sweep_period;
use crate::rt::{Backend, BackendChoice};

/// Threads per core for keystore calls (file I/O, network); they may block, cores may not.
pub const BLOCKING_THREADS_PER_CORE: usize = 4;
/// How long a core may take to start listening.
const CORE_START_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything a server needs to start.
pub struct ServerOptions {
    pub addr: SocketAddr,
    /// Upper bound on cores; `None` = every CPU in the affinity mask.
    pub cores: Option<usize>,
    pub shared: Arc<Shared>,
    pub timeouts: Timeouts,
    pub connections_per_core_max: usize,
    /// Keystore calls that may wait in one core's blocking-pool queue
    /// ([`crate::rt::blocking::POOL_QUEUE_JOBS_MAX`]); beyond it a request gets 503.
    pub blocking_queue_jobs_max: usize,
    /// The I/O backend asked for (`--io`); `None`: from `KES_IO_BACKEND`, else the default.
    pub io: Option<BackendChoice>,
}

impl ServerOptions {
    /// Options with the defaults.
    pub fn new(addr: SocketAddr, shared: Arc<Shared>) -> Self {
        ServerOptions {
            addr,
            cores: None,
            shared,
            timeouts: Timeouts::default(),
            connections_per_core_max: CONNECTIONS_PER_CORE_MAX,
            blocking_queue_jobs_max: crate::rt::blocking::POOL_QUEUE_JOBS_MAX,
            io: None,
        }
    }
}

/// Start-up failures, each with the fix in its message.
#[derive(Debug)]
pub enum ServerError {
    /// The I/O backend asked for cannot run.
    Backend(String),
    Bind(SocketAddr, String),
    Executor(String),
    Affinity(String),
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::Backend(why) => write!(f, "{why}"),
            ServerError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            ServerError::Executor(e) => write!(f, "cannot start a core: {e}"),
            ServerError::Affinity(e) => write!(f, "cannot read the CPU affinity mask: {e}"),
        }
    }
}

impl std::error::Error for ServerError {}

/// The CPUs this process may run on (honours `taskset` and cgroup cpusets).
pub fn affinity_cpus() -> Result<Vec<usize>, ServerError> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for our own process.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(ServerError::Affinity(
                std::io::Error::last_os_error().to_string(),
            ));
        }
        Ok((0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect())
    }
}

/// A started server: its address, its I/O backend and the cores to wait for.
pub struct RunningServer {
    pub local_addr: SocketAddr,
    pub cores: usize,
    /// The I/O backend the cores run on.
    pub backend: Backend,
    /// Why `--io auto` runs epoll instead of io_uring (reported at start).
    pub backend_fallback: Option<String>,
    handles: Vec<crate::rt::JoinHandle<()>>,
}

impl RunningServer {
    /// Blocks until every core has stopped.
    pub fn join(self) {
        for h in self.handles {
            let _ = h.join();
        }
    }
}

/// Starts one executor per core and returns once every core is listening.
pub fn run(options: ServerOptions) -> Result<RunningServer, ServerError> {
    let choice = match options.io {
        Some(choice) => choice,
        None => BackendChoice::from_env()
            .map_err(|e| ServerError::Backend(format!("{}: {e}", crate::rt::BACKEND_ENV)))?,
    };
    let resolved = choice.resolve().map_err(ServerError::Backend)?;
    let backend = resolved.backend;
    super::memory::configure();
    // Read the process's CPU count (for `/v1/status`) before any core thread is pinned.
    crate::api::system::num_cpu();
    let mut cpus = affinity_cpus()?;
    if let Some(n) = options.cores {
        cpus.truncate(n.max(1));
    }
    assert!(!cpus.is_empty(), "the affinity mask names no CPU");

    let mut addr = options.addr;
    // A server already listening there: refuse before joining its `SO_REUSEPORT` group.
    if addr.port() != 0 {
        refuse_foreign_listeners(addr, &[])?;
    }
    let mut inodes = Vec::with_capacity(cpus.len());
    let mut handles = Vec::with_capacity(cpus.len());
    for (index, &cpu) in cpus.iter().enumerate() {
        let (ready_tx, ready_rx) =
            std::sync::mpsc::channel::<Result<(SocketAddr, u64), ServerError>>();
        let shared = options.shared.clone();
        let timeouts = options.timeouts;
        let connections_max = options.connections_per_core_max;
        let queue_jobs_max = options.blocking_queue_jobs_max;
        let bind_addr = addr;
        let handle = crate::rt::Builder::new()
            .name(&format!("kes-core-{index}"))
            .pin_to_cpu(cpu)
            .blocking_threads(BLOCKING_THREADS_PER_CORE)
            .blocking_queue_jobs_max(queue_jobs_max)
            .backend(backend)
            .spawn(move || async move {
                let listener = match crate::rt::TcpListener::bind(bind_addr) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(ServerError::Bind(bind_addr, e.to_string())));
                        return;
                    }
                };
                let local = listener.local_addr().unwrap_or(bind_addr);
                let inode = match super::port::inode_of(&listener) {
                    Ok(inode) => inode,
                    Err(e) => {
                        let _ = ready_tx.send(Err(ServerError::Bind(bind_addr, e.to_string())));
                        return;
                    }
                };
                let core = Rc::new(Core::new(shared));
                spawn_cache_sweeper(core.clone());
                let _ = ready_tx.send(Ok((local, inode)));
                accept_loop(listener, core, timeouts, connections_max).await;
            })
            .map_err(|e| ServerError::Executor(format!("core {index} (cpu {cpu}): {e}")))?;
        // Wait for this core before starting the next, so that port 0 resolves once and all
        // cores share the port the first one got.
        match ready_rx.recv_timeout(CORE_START_TIMEOUT) {
            Ok(Ok((local, inode))) => {
                addr = local;
                inodes.push(inode);
                handles.push(handle);
            }
            Ok(Err(e)) => {
                handles.push(handle); // it has returned
                return Err(stop_cores(&options.shared, handles, e));
            }
            Err(_) => {
                // Not waited for: it may never get to its accept loop.
                let e = ServerError::Executor(format!(
                    "core {index} (cpu {cpu}) did not start within {} s",
                    CORE_START_TIMEOUT.as_secs()
                ));
                return Err(stop_cores(&options.shared, handles, e));
            }
        }
    }
    // Another server that started at the same time: see `port` for why checking after every
    // core listens is race-free. Our listeners close before the error is reported.
    if let Err(e) = refuse_foreign_listeners(addr, &inodes) {
        return Err(stop_cores(&options.shared, handles, e));
    }
    spawn_health_check(options.shared.clone());
    Ok(RunningServer {
        local_addr: addr,
        cores: handles.len(),
        backend,
        backend_fallback: resolved.fallback,
        handles,
    })
}

/// `Err(Bind)` if a socket other than `ours` listens on `addr`'s port. Where the kernel's
/// tables cannot be read (no `/proc`), says so on stderr and goes on.
fn refuse_foreign_listeners(addr: SocketAddr, ours: &[u64]) -> Result<(), ServerError> {
    match super::port::check(addr, ours) {
        Ok(foreign) if foreign.is_empty() => Ok(()),
        Ok(foreign) => Err(ServerError::Bind(addr, super::port::describe(&foreign))),
        Err(e) => {
            eprintln!(
                "kes: cannot check that no other process listens on port {}: {e}",
                addr.port()
            );
            Ok(())
        }
    }
}

/// Stops the cores started so far and waits for them (their listeners close), then gives
/// back `err`.
fn stop_cores(
    shared: &Shared,
    handles: Vec<crate::rt::JoinHandle<()>>,
    err: ServerError,
) -> ServerError {
    shared.shutdown.set();
    for h in handles {
        let _ = h.join();
    }
    err
}

/// How often the keystore's health is checked (behaviour-notes.md §1.2).
pub const HEALTH_CHECK_PERIOD: Duration = Duration::from_secs(10);

/// Marks the keystore offline/online from a periodic status probe, on its own thread (the
/// probe may block for a network timeout).
fn spawn_health_check(shared: Arc<Shared>) {
    let _ = std::thread::Builder::new()
        .name("kes-health".into())
        .spawn(move || {
            let mut next = Instant::now() + HEALTH_CHECK_PERIOD;
            loop {
                // Sleeps until the next check, waking at once on shutdown.
                if shared
                    .shutdown
                    .sleep(next.saturating_duration_since(Instant::now()))
                {
                    break;
                }
                if Instant::now() < next {
                    continue;
                }
                next = Instant::now() + HEALTH_CHECK_PERIOD;
                let offline = shared.keystore.status().is_err();
                let was = shared
                    .keystore_offline
                    .swap(offline, std::sync::atomic::Ordering::Relaxed);
                if offline != was {
                    let msg = if offline {
                        "keystore is not reachable: offline"
                    } else {
                        "keystore is reachable again: online"
                    };
                    shared.logs.error(crate::log::Level::WARN, msg, None);
                }
            }
        });
}

/// Evicts expired and unused keys from this core's shard on a timer. While the keystore is
/// offline and `cache.expiry.offline` is set, evictions pause (cached keys keep serving) until
/// the offline expiry flushes the shard.
fn spawn_cache_sweeper(core: Rc<Core>) {
    let expiry = core.shared.expiry;
    let offline_expiry = core.shared.expiry_offline;
    let Some(period) = sweep_period(expiry) else {
        return;
    };
    crate::rt::spawn_local(async move {
        let mut offline_since: Option<Instant> = None;
        loop {
            crate::rt::sleep(period).await;
            let offline = core
                .shared
                .keystore_offline
                .load(std::sync::atomic::Ordering::Relaxed);
            if offline && !offline_expiry.is_zero() {
                let since = *offline_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= offline_expiry {
                    core.cache.borrow_mut().clear();
                    offline_since = Some(Instant::now());
                }
                continue;
            }
            offline_since = None;
            core.cache.borrow_mut().sweep(expiry, Instant::now());
        }
    })
    .detach();
}
