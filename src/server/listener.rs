//! A core's accept loop: its own `SO_REUSEPORT` listener (the kernel spreads connections over
//! the cores), a per-core connection cap, and one task per connection.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use glommio::net::TcpListener;
use rustls::ServerConfig;

use super::conn::{self, Timeouts};
use crate::api::Core;

/// Default cap on open connections per core; further connections are closed at accept.
pub const CONNECTIONS_PER_CORE_MAX: usize = 8192;

/// Accepts connections until the listener fails; each connection runs as its own task.
pub async fn accept_loop(
    listener: TcpListener,
    core: Rc<Core>,
    config: Arc<ServerConfig>,
    timeouts: Timeouts,
    connections_max: usize,
) {
    let open = Rc::new(Cell::new(0usize));
    loop {
        let stream = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                eprintln!("kes: accept failed: {e}");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        if open.get() >= connections_max {
            drop(stream);
            continue;
        }
        open.set(open.get() + 1);
        let open = open.clone();
        let core = core.clone();
        let config = config.clone();
        glommio::spawn_local(async move {
            let _ = conn::serve(core, config, stream, timeouts).await;
            open.set(open.get() - 1);
        })
        .detach();
    }
}
