//! Output of the commands. A reader that goes away (`kes metric --raw | head`, a pager that
//! quits) ends a client command quietly with exit code 0 instead of a panic with a backtrace;
//! any other write failure (a full disk) is an error. The server keeps serving instead
//! ([`server_mode`]): its banner and warnings are lost, as its log lines are.

use std::fmt::Arguments;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by `kes server`: write failures are ignored.
static SERVER: AtomicBool = AtomicBool::new(false);

/// From now on, output that cannot be written is dropped instead of ending the process.
pub fn server_mode() {
    SERVER.store(true, Ordering::Relaxed);
}

/// Writes `args` to stdout (see the module doc for a closed pipe).
pub fn stdout(args: Arguments<'_>) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(args) {
        failed(e, "stdout");
    }
}

/// Writes `args` to stderr (see the module doc for a closed pipe).
pub fn stderr(args: Arguments<'_>) {
    let mut err = io::stderr().lock();
    if let Err(e) = err.write_fmt(args) {
        failed(e, "stderr");
    }
}

/// Flushes stdout (before a pause, so that a live view shows its lines at once).
pub fn flush() {
    if let Err(e) = io::stdout().lock().flush() {
        failed(e, "stdout");
    }
}

fn failed(e: io::Error, stream: &str) {
    if SERVER.load(Ordering::Relaxed) {
        return;
    }
    if e.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    // Say why on stderr if stderr still works.
    let _ = writeln!(io::stderr(), "Error: cannot write to {stream}: {e}");
    std::process::exit(1);
}

/// `println!` that ends the process quietly when stdout's reader has gone.
macro_rules! outln {
    () => { $crate::cli::out::stdout(format_args!("\n")) };
    ($($arg:tt)*) => {
        $crate::cli::out::stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` that ends the process quietly when stdout's reader has gone.
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::out::stdout(format_args!($($arg)*)) };
}

/// `eprintln!` that ends the process quietly when stderr's reader has gone.
macro_rules! errln {
    () => { $crate::cli::out::stderr(format_args!("\n")) };
    ($($arg:tt)*) => {
        $crate::cli::out::stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprint!` that ends the process quietly when stderr's reader has gone.
macro_rules! errout {
    ($($arg:tt)*) => { $crate::cli::out::stderr(format_args!($($arg)*)) };
}
