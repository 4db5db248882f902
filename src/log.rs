//! Audit and error logs: lines to stdout/stderr (through a writer thread, so a slow terminal
//! or pipe never stalls a core) and ND-JSON streams to `/v1/log/audit` and `/v1/log/error`
//! subscribers (http-api.md §7). A subscriber that falls behind by more than
//! [`SUBSCRIBER_QUEUE_LINES_MAX`] lines is dropped; it never slows the request path.
//! Never put a secret in a log line: callers pass paths, identities, IPs and status codes.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use crate::api::json::write_string;
use crate::time::Timestamp;

/// Lines a subscriber may have queued before it is dropped.
pub const SUBSCRIBER_QUEUE_LINES_MAX: usize = 4096;
/// Lines waiting for the stdout/stderr writer; beyond this, lines are dropped and counted.
const WRITER_QUEUE_LINES_MAX: usize = 16 * 1024;

/// Log levels in slog numbering (DEBUG -4, INFO 0, WARN 4, ERROR 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Level(pub i32);

impl Level {
    pub const DEBUG: Level = Level(-4);
    pub const INFO: Level = Level(0);
    pub const WARN: Level = Level(4);
    pub const ERROR: Level = Level(8);
    /// Above every level: the log is off.
    pub const OFF: Level = Level(i32::MAX);

    /// storage-and-config.md §5.3: empty/`on` → INFO, `off`, names, `NAME+n`, integers.
    pub fn parse(s: &str) -> Option<Level> {
        let s = s.trim();
        let upper = s.to_ascii_uppercase();
        let (name, offset) = match upper.split_once(['+', '-']) {
            Some((n, o)) if !n.is_empty() => {
                let sign = if upper[n.len()..].starts_with('-') {
                    -1
                } else {
                    1
                };
                (n.to_string(), sign * o.parse::<i32>().ok()?)
            }
            _ => (upper.clone(), 0),
        };
        let base = match name.as_str() {
            "" | "ON" => Level::INFO,
            "OFF" => return Some(Level::OFF),
            "DEBUG" => Level::DEBUG,
            "INFO" => Level::INFO,
            "WARN" => Level::WARN,
            "ERROR" => Level::ERROR,
            _ => return s.parse::<i32>().ok().map(Level),
        };
        Some(Level(base.0 + offset))
    }

    fn name(self) -> &'static str {
        match self.0 {
            i32::MIN..=-1 => "DEBUG",
            0..=3 => "INFO",
            4..=7 => "WARN",
            _ => "ERROR",
        }
    }
}

struct Subscriber {
    queue: Mutex<VecDeque<String>>,
    dropped: AtomicBool,
}

/// A `/v1/log/*` subscription; dropping it unsubscribes.
pub struct Subscription {
    inner: Arc<Subscriber>,
}

impl Subscription {
    /// Takes the queued lines; `None` once the subscriber was dropped for falling behind.
    pub fn drain(&self, out: &mut Vec<String>) -> Option<()> {
        if self.inner.dropped.load(Ordering::Relaxed) {
            return None;
        }
        let mut q = self.inner.queue.lock().unwrap_or_else(|e| e.into_inner());
        out.extend(q.drain(..));
        Some(())
    }
}

#[derive(Default)]
struct Stream {
    subscribers: Mutex<Vec<Arc<Subscriber>>>,
    count: AtomicUsize,
}

impl Stream {
    fn subscribe(&self) -> Subscription {
        let sub = Arc::new(Subscriber {
            queue: Mutex::new(VecDeque::new()),
            dropped: AtomicBool::new(false),
        });
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|s| Arc::strong_count(s) > 1 && !s.dropped.load(Ordering::Relaxed));
        subs.push(sub.clone());
        self.count.store(subs.len(), Ordering::Relaxed);
        Subscription { inner: sub }
    }

    /// Queues `line` for every live subscriber; returns how many received it.
    fn publish(&self, line: &str) -> u64 {
        if self.count.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        let mut subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subs.retain(|s| Arc::strong_count(s) > 1 && !s.dropped.load(Ordering::Relaxed));
        self.count.store(subs.len(), Ordering::Relaxed);
        let mut delivered = 0;
        for s in subs.iter() {
            let mut q = s.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() >= SUBSCRIBER_QUEUE_LINES_MAX {
                s.dropped.store(true, Ordering::Relaxed);
                q.clear();
                continue;
            }
            q.push_back(line.to_string());
            delivered += 1;
        }
        delivered
    }
}

enum Output {
    Stdout(String),
    Stderr(String),
}

/// One audit event.
pub struct AuditEvent<'a> {
    pub message: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub ip: Option<std::net::IpAddr>,
    pub identity: Option<&'a str>,
    pub status: u16,
    pub elapsed: std::time::Duration,
}

/// The node's logs.
pub struct Logs {
    audit: Stream,
    error: Stream,
    audit_level: std::sync::atomic::AtomicI32,
    error_level: std::sync::atomic::AtomicI32,
    writer: SyncSender<Output>,
    pub audit_delivered: std::sync::atomic::AtomicU64,
    pub error_delivered: std::sync::atomic::AtomicU64,
    pub lines_dropped: std::sync::atomic::AtomicU64,
}

impl Logs {
    /// Starts the writer thread.
    pub fn new(audit_level: Level, error_level: Level) -> Logs {
        let (tx, rx) = sync_channel::<Output>(WRITER_QUEUE_LINES_MAX);
        std::thread::Builder::new()
            .name("kes-log".into())
            .spawn(move || {
                for line in rx {
                    let _ = match line {
                        Output::Stdout(l) => std::io::stdout().lock().write_all(l.as_bytes()),
                        Output::Stderr(l) => std::io::stderr().lock().write_all(l.as_bytes()),
                    };
                }
            })
            .ok();
        Logs {
            audit: Stream::default(),
            error: Stream::default(),
            audit_level: std::sync::atomic::AtomicI32::new(audit_level.0),
            error_level: std::sync::atomic::AtomicI32::new(error_level.0),
            writer: tx,
            audit_delivered: Default::default(),
            error_delivered: Default::default(),
            lines_dropped: Default::default(),
        }
    }

    /// Changes the levels (config reload).
    pub fn set_levels(&self, audit: Level, error: Level) {
        self.audit_level.store(audit.0, Ordering::Relaxed);
        self.error_level.store(error.0, Ordering::Relaxed);
    }

    pub fn error_level(&self) -> Level {
        Level(self.error_level.load(Ordering::Relaxed))
    }

    fn write(&self, out: Output) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.writer.try_send(out)
        {
            self.lines_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn subscribe_audit(&self) -> Subscription {
        self.audit.subscribe()
    }

    pub fn subscribe_error(&self) -> Subscription {
        self.error.subscribe()
    }

    /// Records an audit event (INFO): a text record on stdout and a JSON line to subscribers.
    pub fn audit(&self, e: &AuditEvent<'_>) {
        let now = Timestamp::now();
        let ms = e.elapsed.as_millis() as u64;
        if self.audit.count.load(Ordering::Relaxed) > 0 {
            let mut json = Vec::with_capacity(256);
            json.extend_from_slice(b"{\"time\":\"");
            let mut t = String::new();
            now.write_rfc3339(&mut t);
            json.extend_from_slice(t.as_bytes());
            json.extend_from_slice(b"\",\"request\":{");
            if let Some(ip) = e.ip {
                json.extend_from_slice(b"\"ip\":");
                write_string(&mut json, &ip.to_string());
                json.push(b',');
            }
            json.extend_from_slice(b"\"path\":");
            write_string(&mut json, e.path);
            if let Some(id) = e.identity {
                json.extend_from_slice(b",\"identity\":");
                write_string(&mut json, id);
            }
            json.extend_from_slice(
                format!(
                    "}},\"response\":{{\"code\":{},\"time\":{ms}}}}}\n",
                    e.status
                )
                .as_bytes(),
            );
            let n = self.audit.publish(&String::from_utf8_lossy(&json));
            self.audit_delivered.fetch_add(n, Ordering::Relaxed);
        }
        if Level(self.audit_level.load(Ordering::Relaxed)) <= Level::INFO {
            let mut line = format!("time={} level=INFO msg=", now.to_rfc3339());
            push_quoted(&mut line, e.message);
            line.push_str(&format!(" req.method={} req.path=", e.method));
            push_quoted(&mut line, e.path);
            if let Some(ip) = e.ip {
                line.push_str(&format!(" req.ip={ip}"));
            }
            if let Some(id) = e.identity {
                line.push_str(&format!(" req.identity={id}"));
            }
            line.push_str(&format!(" res.code={} res.time={}ms\n", e.status, ms));
            self.write(Output::Stdout(line));
        }
    }

    /// Records an error-log record at `level` (with request attributes if any).
    pub fn error(
        &self,
        level: Level,
        message: &str,
        request: Option<(&str, &str, Option<std::net::IpAddr>, Option<&str>)>,
    ) {
        let threshold = self.error_level();
        let to_stderr = level >= threshold;
        let to_subs = self.error.count.load(Ordering::Relaxed) > 0 && level >= threshold;
        if !to_stderr && !to_subs {
            return;
        }
        let mut line = format!(
            "time={} level={} msg=",
            Timestamp::now().to_rfc3339(),
            level.name()
        );
        push_quoted(&mut line, message);
        if let Some((method, path, ip, identity)) = request {
            line.push_str(&format!(" req.method={method} req.path="));
            push_quoted(&mut line, path);
            if let Some(ip) = ip {
                line.push_str(&format!(" req.ip={ip}"));
            }
            if let Some(id) = identity {
                line.push_str(&format!(" req.identity={id}"));
            }
        }
        if to_subs {
            let mut json = Vec::with_capacity(line.len() + 16);
            json.extend_from_slice(b"{\"message\":");
            write_string(&mut json, &line);
            json.extend_from_slice(b"}\n");
            let n = self.error.publish(&String::from_utf8_lossy(&json));
            self.error_delivered.fetch_add(n, Ordering::Relaxed);
        }
        if to_stderr {
            line.push('\n');
            self.write(Output::Stderr(line));
        }
    }
}

/// slog text quoting: bare if simple, else a quoted Go string.
fn push_quoted(out: &mut String, s: &str) {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'=' && b != b'\\')
    {
        out.push_str(s);
    } else {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(Level::parse(""), Some(Level::INFO));
        assert_eq!(Level::parse("on"), Some(Level::INFO));
        assert_eq!(Level::parse("off"), Some(Level::OFF));
        assert_eq!(Level::parse("error"), Some(Level::ERROR));
        assert_eq!(Level::parse("ERROR+2"), Some(Level(10)));
        assert_eq!(Level::parse("debug"), Some(Level::DEBUG));
        assert_eq!(Level::parse("-4"), Some(Level::DEBUG));
        assert_eq!(Level::parse("loud"), None);
    }

    #[test]
    fn subscribers_get_lines_and_slow_ones_are_dropped() {
        let logs = Logs::new(Level::OFF, Level::INFO);
        let sub = logs.subscribe_audit();
        let event = AuditEvent {
            message: "secret key 'k' created",
            method: "PUT",
            path: "/v1/key/create/k",
            ip: Some("127.0.0.1".parse().unwrap()),
            identity: Some("ab"),
            status: 200,
            elapsed: std::time::Duration::from_millis(3),
        };
        logs.audit(&event);
        let mut lines = Vec::new();
        sub.drain(&mut lines).unwrap();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].ends_with(",\"request\":{\"ip\":\"127.0.0.1\",\"path\":\"/v1/key/create/k\",\"identity\":\"ab\"},\"response\":{\"code\":200,\"time\":3}}\n"), "{}", lines[0]);
        for _ in 0..=SUBSCRIBER_QUEUE_LINES_MAX {
            logs.audit(&event);
        }
        assert!(
            sub.drain(&mut lines).is_none(),
            "a subscriber that never reads is dropped"
        );
        drop(sub);
        logs.audit(&event);
        assert_eq!(logs.audit.count.load(Ordering::Relaxed), 0);
    }
}
