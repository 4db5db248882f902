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
            self.write(Output::Stdout(audit_text_line(&now, e)));
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

/// The stdout line of an audit event, as upstream's `slog.TextHandler` writes it.
fn audit_text_line(now: &Timestamp, e: &AuditEvent<'_>) -> String {
    let ms = e.elapsed.as_millis() as u64;
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
    line
}

/// A string attribute as Go's `slog.TextHandler` writes it (upstream's audit and error text
/// lines): bare when `needsQuoting` says so, else quoted by `strconv.Quote`. So U+2028 and
/// U+2029 (which some log viewers take for line breaks) come out as `\u2028` and `\u2029`,
/// C0 controls as `\x01`, other unprintable runes as `\uXXXX`, and a request path can never
/// start a forged log line.
fn push_quoted(out: &mut String, s: &str) {
    if !needs_quoting(s) {
        out.push_str(s);
        return;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if go_is_print(c) => out.push(c),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c => {
                let r = c as u32;
                let (prefix, digits) = match r {
                    0..=0x1f | 0x7f => ("\\x", 2),
                    0x80..=0xffff => ("\\u", 4),
                    _ => ("\\U", 8),
                };
                out.push_str(prefix);
                for i in (0..digits).rev() {
                    out.push(char::from(HEX[((r >> (4 * i)) & 0xf) as usize]));
                }
            }
        }
    }
    out.push('"');
}

/// Go's `slog` `needsQuoting`: empty, a space, `=`, `"`, an ASCII control (but not `\\` or
/// DEL, which Go's JSON-derived safe set lets through), or a non-ASCII rune that is a space
/// or not printable (U+FFFD included).
fn needs_quoting(s: &str) -> bool {
    s.is_empty()
        || s.chars().any(|c| match c {
            '\\' => false,
            ' ' | '=' | '"' | '\0'..='\u{1f}' => true,
            '!'..='\u{7f}' => false,
            c => c == '\u{fffd}' || c.is_whitespace() || !go_is_print(c),
        })
}

/// Go's `unicode.IsPrint`/`strconv.IsPrint` (letters, marks, numbers, punctuation, symbols and
/// the ASCII space): every rune but controls (Cc), spaces and separators other than U+0020
/// (Zs, Zl, Zp: U+2028, U+2029), format characters (Cf), private use (Co) and noncharacters.
/// Unassigned code points, which Go also treats as unprintable, are not tracked here.
fn go_is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let r = c as u32;
    let format = matches!(
        r,
        0xad | 0x600..=0x605
            | 0x61c
            | 0x6dd
            | 0x70f
            | 0x890..=0x891
            | 0x8e2
            | 0x180e
            | 0x200b..=0x200f
            | 0x202a..=0x202e
            | 0x2060..=0x2064
            | 0x2066..=0x206f
            | 0xfeff
            | 0xfff9..=0xfffb
            | 0x110bd
            | 0x110cd
            | 0x13430..=0x1343f
            | 0x1bca0..=0x1bca3
            | 0x1d173..=0x1d17a
            | 0xe0001
            | 0xe0020..=0xe007f
    );
    let private = matches!(r, 0xe000..=0xf8ff | 0xf0000..=0xffffd | 0x100000..=0x10fffd);
    let nonchar = matches!(r, 0xfdd0..=0xfdef) || r & 0xfffe == 0xfffe;
    !(format || private || nonchar)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values are what Go's `slog.TextHandler` writes for these strings.
    #[test]
    fn text_values_are_quoted_like_slog() {
        let quoted = |s: &str| {
            let mut out = String::new();
            push_quoted(&mut out, s);
            out
        };
        for (input, go) in [
            ("/v1/key/create/k", "/v1/key/create/k"),
            ("", "\"\""),
            ("a b", "\"a b\""),
            ("a=b", "\"a=b\""),
            ("say \"hi\"", "\"say \\\"hi\\\"\""),
            // A backslash alone does not make slog quote; inside quotes it is escaped.
            ("a\\b", "a\\b"),
            ("a\\b c", "\"a\\\\b c\""),
            ("é/ключ", "é/ключ"),
            ("a\u{2028}b", "\"a\\u2028b\""),
            ("a\u{2029}b", "\"a\\u2029b\""),
            ("\n\r\t\u{1}\u{7f}", "\"\\n\\r\\t\\x01\\x7f\""),
            (
                "\u{85}\u{a0}\u{200b}\u{feff}",
                "\"\\u0085\\u00a0\\u200b\\ufeff\"",
            ),
            ("\u{e0001}\u{10fffd}", "\"\\U000e0001\\U0010fffd\""),
            ("\u{fffd}", "\"\u{fffd}\""),
        ] {
            assert_eq!(quoted(input), go, "{input:?}");
        }
    }

    #[test]
    fn audit_text_line_escapes_line_separators_in_paths() {
        let event = AuditEvent {
            message: "secret key 'k' created",
            method: "PUT",
            path: "/v1/key/create/a\u{2028}time=x level=ERROR msg=forged\u{2029}",
            ip: None,
            identity: None,
            status: 400,
            elapsed: std::time::Duration::from_millis(3),
        };
        let line = audit_text_line(&Timestamp::now(), &event);
        assert!(
            line.ends_with(" req.method=PUT req.path=\"/v1/key/create/a\\u2028time=x level=ERROR msg=forged\\u2029\" res.code=400 res.time=3ms\n"),
            "{line}"
        );
        assert!(!line.contains('\u{2028}') && !line.contains('\u{2029}'));
    }

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
