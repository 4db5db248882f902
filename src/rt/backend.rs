//! Which I/O backend an executor runs on, as asked for (`--io`, `KES_IO_BACKEND`) and as
//! resolved: epoll (mio, [`super::reactor`]) or io_uring ([`super::uring`]), which is used
//! only where the kernel has what it needs and no seccomp profile forbids it.

use std::fmt;
use std::str::FromStr;

/// The environment variable that chooses the backend (`kes server --io` takes precedence).
pub const BACKEND_ENV: &str = "KES_IO_BACKEND";

/// The backend an executor actually runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `mio::Poll`: epoll, edge-triggered. Needs no system call a default seccomp profile
    /// forbids.
    Epoll,
    /// One io_uring per executor (COOP_TASKRUN, provided receive buffers, one enter per
    /// turn) for connected sockets; listeners stay on epoll.
    IoUring,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Epoll => "epoll",
            Backend::IoUring => "io_uring",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A resolved choice: the backend, and why `auto` did not get io_uring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub backend: Backend,
    pub fallback: Option<String>,
}

/// The backend asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// epoll.
    Epoll,
    /// io_uring where the host allows it, else epoll (the default).
    #[default]
    Auto,
    /// io_uring, or an error at start saying why it cannot run here.
    IoUring,
}

impl BackendChoice {
    /// The choice named by [`BACKEND_ENV`], or the default when it is unset or empty.
    pub fn from_env() -> Result<BackendChoice, String> {
        match std::env::var(BACKEND_ENV) {
            Ok(v) if !v.trim().is_empty() => v.parse(),
            _ => Ok(BackendChoice::default()),
        }
    }

    /// The backend this choice runs on, or why it cannot run; for `auto` on a host without
    /// io_uring, also why it fell back to epoll.
    pub fn resolve(self) -> Result<Resolved, String> {
        match self {
            BackendChoice::Epoll => Ok(Resolved {
                backend: Backend::Epoll,
                fallback: None,
            }),
            BackendChoice::Auto => Ok(match super::uring::probe() {
                Ok(()) => Resolved {
                    backend: Backend::IoUring,
                    fallback: None,
                },
                Err(why) => Resolved {
                    backend: Backend::Epoll,
                    fallback: Some(why),
                },
            }),
            BackendChoice::IoUring => match super::uring::probe() {
                Ok(()) => Ok(Resolved {
                    backend: Backend::IoUring,
                    fallback: None,
                }),
                Err(why) => Err(format!(
                    "the io_uring I/O backend cannot run here: {why}; use --io epoll or \
                     --io auto (KES_IO_BACKEND=epoll|auto)"
                )),
            },
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BackendChoice::Epoll => "epoll",
            BackendChoice::Auto => "auto",
            BackendChoice::IoUring => "io_uring",
        }
    }
}

impl FromStr for BackendChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "epoll" => Ok(BackendChoice::Epoll),
            "auto" => Ok(BackendChoice::Auto),
            "io_uring" | "io-uring" | "iouring" | "uring" => Ok(BackendChoice::IoUring),
            other => Err(format!(
                "unknown I/O backend {other:?}: expected epoll, auto or io_uring"
            )),
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_resolve() {
        assert_eq!("epoll".parse(), Ok(BackendChoice::Epoll));
        assert_eq!("AUTO".parse(), Ok(BackendChoice::Auto));
        assert_eq!("io_uring".parse(), Ok(BackendChoice::IoUring));
        assert!("kqueue".parse::<BackendChoice>().is_err());
        assert_eq!(
            BackendChoice::Epoll.resolve().map(|r| r.backend),
            Ok(Backend::Epoll)
        );
        // auto and io_uring agree with the probe of this host.
        let auto = BackendChoice::Auto.resolve().unwrap();
        match super::super::uring::probe() {
            Ok(()) => {
                assert_eq!(auto.backend, Backend::IoUring);
                assert_eq!(auto.fallback, None);
                assert_eq!(
                    BackendChoice::IoUring.resolve().map(|r| r.backend),
                    Ok(Backend::IoUring)
                );
            }
            Err(why) => {
                assert_eq!(auto.backend, Backend::Epoll);
                assert_eq!(auto.fallback.as_deref(), Some(why.as_str()));
                let err = BackendChoice::IoUring.resolve().unwrap_err();
                assert!(err.contains(&why), "{err}");
            }
        }
    }
}
