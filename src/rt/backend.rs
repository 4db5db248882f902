//! Which I/O backend an executor runs on, as asked for (`--io`, `KES_IO_BACKEND`) and as
//! resolved. Only the epoll backend (mio) is built in this version; the choice exists so that
//! a second backend (io_uring with COOP_TASKRUN, multishot receive and provided buffers) can
//! be added beside it without changing the server or its flags.

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
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Epoll => "epoll",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The backend asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// epoll (the default).
    #[default]
    Epoll,
    /// The fastest backend built in that the host allows: today always epoll.
    Auto,
    /// io_uring: not built in this version, so asking for it is an error at start.
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

    /// The backend this choice runs on, or why it cannot run.
    pub fn resolve(self) -> Result<Backend, String> {
        match self {
            BackendChoice::Epoll | BackendChoice::Auto => Ok(Backend::Epoll),
            BackendChoice::IoUring => Err(
                "the io_uring I/O backend is not built in this version: use --io epoll or \
                 --io auto (KES_IO_BACKEND=epoll|auto)"
                    .into(),
            ),
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
        assert_eq!(BackendChoice::Epoll.resolve(), Ok(Backend::Epoll));
        assert_eq!(BackendChoice::Auto.resolve(), Ok(Backend::Epoll));
        let err = BackendChoice::IoUring.resolve().unwrap_err();
        assert!(err.contains("not built in this version"), "{err}");
    }
}
