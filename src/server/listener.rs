//! A core's accept loop: its own `SO_REUSEPORT` listener (the kernel spreads connections over
//! the cores), a per-core connection cap, one task per connection, and a graceful stop.

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::net::TcpListener;

use super::conn::{self, Timeouts};
use super::memory::Trimmer;
use super::slots::Slots;
use crate::api::Core;

/// Default cap on open connections per core; at the cap a new connection evicts a silent
/// or idle one (see [`Slots`]), or is closed at accept if every connection is busy.
pub const CONNECTIONS_PER_CORE_MAX: usize = 8192;
/// How often an idle core checks whether the server is shutting down.
const SHUTDOWN_POLL: Duration = Duration::from_millis(50);
/// How long a stopping core waits for in-flight requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

async fn shutdown_requested(core: &Core) {
    while !core.shared.shutting_down() {
        glommio::timer::sleep(SHUTDOWN_POLL).await;
    }
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
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            shutdown_requested(&core).await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                // EMFILE and friends: back off briefly instead of spinning.
                eprintln!("kes: accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(slot) = slots.admit(Instant::now()) else {
            drop(stream); // every connection is busy with a request
            continue;
        };
        trimmer.observe(slots.open());
        let slots = slots.clone();
        let trimmer = trimmer.clone();
        let core = core.clone();
        // Each connection uses the TLS config current at accept (certificate rotation).
        let config = core.settings.get(&core.shared.settings).tls.clone();
        glommio::spawn_local(async move {
            let _ = conn::serve(core, config, stream, timeouts, slot.clone()).await;
            slots.release(&slot);
            trimmer.observe(slots.open());
        })
        .detach();
    }
    drop(listener);
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while slots.open() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(SHUTDOWN_POLL).await;
    }
}
