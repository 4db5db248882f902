//! Starting a core: a named OS thread, pinned to one CPU (`sched_setaffinity`), running one
//! executor until its future completes. The thread inherits the creating thread's signal
//! mask (the server blocks its signals before any thread exists). Start-up failures (pinning,
//! epoll) are returned by [`Builder::spawn`], not found later in a panic.

use std::future::Future;
use std::io;
use std::sync::mpsc;

use super::backend::Backend;
use super::executor::{run_on, Config, Runtime};

/// Sets up and starts one executor thread.
pub struct Builder {
    name: String,
    cpu: Option<usize>,
    blocking_threads: usize,
    blocking_queue_jobs_max: usize,
    backend: Backend,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

/// The calling thread's CPU mask.
fn current_cpus() -> io::Result<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(set)
    }
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cpu {cpu} is out of range"),
        ));
    }
    // SAFETY: as above; CPU_SET is given an index below CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

impl Builder {
    pub fn new() -> Builder {
        Builder {
            name: "kes-rt".into(),
            cpu: None,
            blocking_threads: 4,
            blocking_queue_jobs_max: super::blocking::POOL_QUEUE_JOBS_MAX,
            backend: Backend::Epoll,
        }
    }

    /// The thread's name (its blocking threads are named `<name>-blocking-<n>`).
    pub fn name(mut self, name: &str) -> Builder {
        self.name = name.to_string();
        self
    }

    /// Pins the executor thread to `cpu` (blocking threads keep the process's CPUs).
    pub fn pin_to_cpu(mut self, cpu: usize) -> Builder {
        self.cpu = Some(cpu);
        self
    }

    /// Threads of the blocking pool (at least 1; started on first use).
    pub fn blocking_threads(mut self, threads: usize) -> Builder {
        self.blocking_threads = threads.max(1);
        self
    }

    /// Jobs that may wait in the blocking pool's queue (at least 1); more are refused
    /// ([`super::blocking::PoolFull`]).
    pub fn blocking_queue_jobs_max(mut self, jobs: usize) -> Builder {
        self.blocking_queue_jobs_max = jobs.max(1);
        self
    }

    /// The I/O backend of the executor (`Backend::IoUring` must have been probed).
    pub fn backend(mut self, backend: Backend) -> Builder {
        self.backend = backend;
        self
    }

    /// Starts the thread, runs `make()`'s future on its executor and returns once the
    /// executor is up (or why it could not start).
    pub fn spawn<G, F, T>(self, make: G) -> io::Result<JoinHandle<T>>
    where
        G: FnOnce() -> F + Send + 'static,
        F: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let (ready_tx, ready_rx) = mpsc::sync_channel::<io::Result<()>>(1);
        let Builder {
            name,
            cpu,
            blocking_threads,
            blocking_queue_jobs_max,
            backend,
        } = self;
        let handle = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let started = (|| {
                    let blocking_cpus = current_cpus()?;
                    if let Some(cpu) = cpu {
                        pin_to(cpu)?;
                    }
                    Runtime::new(Config {
                        blocking_threads,
                        blocking_queue_jobs_max,
                        name,
                        blocking_cpus: Some(blocking_cpus),
                        backend,
                    })
                })();
                match started {
                    Ok(rt) => {
                        let _ = ready_tx.send(Ok(()));
                        Some(run_on(rt, make()))
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        None
                    }
                }
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(JoinHandle(handle)),
            Ok(Err(e)) => {
                let _ = handle.join();
                Err(e)
            }
            Err(_) => Err(io::Error::other("the executor thread died while starting")),
        }
    }
}

/// A started executor thread.
pub struct JoinHandle<T>(std::thread::JoinHandle<Option<T>>);

impl<T> JoinHandle<T> {
    /// Waits for the executor's future to complete; its output, or the thread's panic.
    pub fn join(self) -> std::thread::Result<T> {
        match self.0.join() {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(Box::new("the executor did not start")),
            Err(panic) => Err(panic),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_executor_runs_on_its_cpu() {
        let cpu = {
            let set = current_cpus().unwrap();
            (0..libc::CPU_SETSIZE as usize)
                .find(|&c| unsafe { libc::CPU_ISSET(c, &set) })
                .unwrap()
        };
        let handle = Builder::new()
            .name("rt-test-core")
            .pin_to_cpu(cpu)
            .spawn(move || async move {
                let set = current_cpus().unwrap();
                let pinned: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
                    .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
                    .collect();
                let name = std::thread::current().name().map(str::to_string);
                (pinned, name)
            })
            .unwrap();
        let (pinned, name) = handle.join().unwrap();
        assert_eq!(pinned, vec![cpu]);
        assert_eq!(name.as_deref(), Some("rt-test-core"));
    }

    #[test]
    fn a_bad_cpu_is_reported_at_start() {
        let r = Builder::new()
            .pin_to_cpu(libc::CPU_SETSIZE as usize + 1)
            .spawn(|| async {});
        assert!(r.is_err());
    }
}
