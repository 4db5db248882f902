//! A core's accept loop: its own `SO_REUSEPORT` listener (the kernel spreads connections over
//! the cores), a per-core connection cap, one task per connection, and a graceful stop.

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;

use super::conn;
use super::memory::Trimmer;
use super::slots::Slots;
use super::timeouts::Timeouts;
use crate::api::Core;
use crate::rt::TcpListener;

/// Default cap on open connections per core; at the cap a new connection evicts a silent
/// or idle one (see [`Slots`]), or is closed at accept if every connection is busy.
pub const CONNECTIONS_PER_CORE_MAX: usize = 8192;
/// How often a stopping core checks whether its connections have finished.
const SHUTDOWN_POLL: Duration = Duration::from_millis(50);
/// How long a stopping core waits for in-flight requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// First and longest pause of accepting after the process ran out of descriptors or memory.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(100);
/// Other accept errors are logged at most this often.
const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(1);

/// Accept failures of one core: a resource shortage (`EMFILE`, `ENFILE`, `ENOBUFS`,
/// `ENOMEM`) pauses accepting, doubling the pause up to [`ACCEPT_BACKOFF_MAX`], and is logged
/// once when it starts and once when it ends; other errors are logged at most once a second.
#[derive(Default)]
struct AcceptErrors {
    /// The current pause while short of resources (`None`: not short).
    backoff: Option<Duration>,
    /// Failures in the current shortage.
    failures: u64,
    last_logged: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrors {
    /// Records a failed accept; returns how long to pause before accepting again.
    fn failed(&mut self, err: &std::io::Error) -> Duration {
        let shortage = matches!(
            err.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        );
        if shortage {
            self.failures += 1;
            let pause = match self.backoff {
                None => {
                    eprintln!(
                        "kes: accept failed: {err}; pausing new connections until descriptors \
                         are freed (raise the open-file limit: ulimit -n / LimitNOFILE)"
                    );
                    ACCEPT_BACKOFF_MIN
                }
                Some(d) => (d * 2).min(ACCEPT_BACKOFF_MAX),
            };
            self.backoff = Some(pause);
            return pause;
        }
        let now = Instant::now();
        match self.last_logged {
            Some(t) if now.duration_since(t) < ACCEPT_ERROR_LOG_EVERY => self.suppressed += 1,
            _ => {
                if self.suppressed > 0 {
                    eprintln!(
                        "kes: accept failed: {err} ({} more accept errors in the last second \
                         not shown)",
                        self.suppressed
                    );
                } else {
                    eprintln!("kes: accept failed: {err}");
                }
                self.last_logged = Some(now);
                self.suppressed = 0;
            }
        }
        Duration::ZERO
    }

    /// Records a successful accept (ends a shortage).
    fn accepted(&mut self) {
        if self.backoff.take().is_some() {
            eprintln!(
                "kes: accepting connections again after {} failed attempts",
                self.failures
            );
            self.failures = 0;
        }
    }
}

async fn shutdown_requested(core: &Core) {
    core.shared.shutdown.wait().await;
}

/// Accepts connections until shutdown; then waits (bounded) for open connections to finish.
pub async fn accept_loop(
    listener: TcpListener,
    core: Rc<Core>,
    timeouts: Timeouts,
    connections_max: usize,
) {
    let slots = Rc::new(Slots::new(connections_max));
    let trimmer = Rc::new(Trimmer::default());
    let mut errors = AcceptErrors::default();
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            shutdown_requested(&core).await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(s)) => {
                errors.accepted();
                s
            }
            Some(Err(e)) => {
                let pause = errors.failed(&e);
                if !pause.is_zero() {
                    crate::rt::sleep(pause).await;
                }
                continue;
            }
        };
        let Ok(slot) = slots.admit(crate::rt::now()) else {
            drop(stream); // every connection is busy with a request
            continue;
        };
        trimmer.observe(slots.open());
        let slots = slots.clone();
        let trimmer = trimmer.clone();
        let core = core.clone();
        // Each connection uses the TLS config current at accept (certificate rotation).
        let config = core.settings.get(&core.shared.settings).tls.clone();
        crate::rt::spawn_local(async move {
            let _ = conn::serve(core, config, stream, timeouts, slot.clone()).await;
            slots.release(&slot);
            trimmer.observe(slots.open());
        })
        .detach();
        // While connections keep queueing, the ones already accepted (their handshakes, their
        // requests) run between slices of accepting ([`crate::rt::TIME_SLICE`]).
        crate::rt::yield_if_needed().await;
    }
    drop(listener);
    let deadline = crate::rt::now() + SHUTDOWN_GRACE;
    while slots.open() > 0 && crate::rt::now() < deadline {
        crate::rt::sleep(SHUTDOWN_POLL).await;
    }
}
