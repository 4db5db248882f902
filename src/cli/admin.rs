//! `kes ls`, `kes policy …`, `kes identity info|ls`, `kes status`, `kes log`, `kes metric`:
//! read-only views of a server.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use super::common::{call, escape, json_value, list, print_names, CliResult, ClientArgs};

/// `kes ls [-i|-p] [PREFIX]`
#[derive(Args, Debug)]
pub struct LsArgs {
    /// List identities instead of keys.
    #[arg(short = 'i', long = "identity", conflicts_with = "policy")]
    pub identity: bool,
    /// List policies instead of keys.
    #[arg(short = 'p', long = "policy")]
    pub policy: bool,
    /// Prefix (a trailing `*` is allowed).
    #[arg(default_value = "")]
    pub prefix: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub fn ls(args: LsArgs) -> CliResult {
    let mut c = args.client.client()?;
    let (route, member, header) = if args.identity {
        ("/v1/identity/list/", "identities", "Identity")
    } else if args.policy {
        ("/v1/policy/list/", "names", "Policy")
    } else {
        ("/v1/key/list/", "names", "Key")
    };
    let names = list(&mut c, route, member, &args.prefix)?;
    print_names(header, &names, args.client.machine());
    Ok(())
}

#[derive(Args, Debug)]
pub struct PolicyArgs {
    #[command(subcommand)]
    pub command: PolicyCommand,
}

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Describe a policy.
    ///
    /// Example: kes policy info minio
    Info {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List policies.
    ///
    /// Example: kes policy ls
    Ls {
        #[arg(default_value = "*")]
        pattern: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a policy's allow and deny rules.
    ///
    /// Example: kes policy show minio
    Show {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn object_keys(v: &simd_json::OwnedValue, field: &str) -> Vec<String> {
    use simd_json::prelude::*;
    match v.get(field) {
        Some(x) if x.is_object() => x
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default(),
        Some(x) => x
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        None => Vec::new(),
    }
}

fn str_field(v: &simd_json::OwnedValue, field: &str) -> String {
    use simd_json::prelude::*;
    v.get(field)
        .and_then(|x| x.as_str())
        .unwrap_or("")
        .to_string()
}

fn date(v: &simd_json::OwnedValue, field: &str) -> String {
    crate::time::Timestamp::parse_rfc3339(&str_field(v, field))
        .map(|t| t.format_date_time())
        .unwrap_or_default()
}

pub fn policy(args: PolicyArgs) -> CliResult {
    match args.command {
        PolicyCommand::Info { name, client } => {
            let mut c = client.client()?;
            let resp = call(
                &mut c,
                "GET",
                &format!("/v1/policy/describe/{}", escape(&name)),
                None,
            )?;
            if client.machine() {
                out!("{}", String::from_utf8_lossy(&resp.body));
            } else {
                let v = json_value(&resp.body)?;
                outln!("Name       {}", str_field(&v, "name"));
                outln!("Date       {}", date(&v, "created_at"));
                outln!("Created by {}", str_field(&v, "created_by"));
            }
        }
        PolicyCommand::Ls { pattern, client } => {
            let mut c = client.client()?;
            let names = list(&mut c, "/v1/policy/list/", "names", &pattern)?;
            print_names("Policy", &names, client.machine());
        }
        PolicyCommand::Show { name, client } => {
            let mut c = client.client()?;
            let resp = call(
                &mut c,
                "GET",
                &format!("/v1/policy/read/{}", escape(&name)),
                None,
            )?;
            if client.machine() {
                out!("{}", String::from_utf8_lossy(&resp.body));
            } else {
                let v = json_value(&resp.body)?;
                outln!("Allow:");
                for p in object_keys(&v, "allow") {
                    outln!("  · {p}");
                }
                outln!("Deny:");
                for p in object_keys(&v, "deny") {
                    outln!("  · {p}");
                }
            }
        }
    }
    Ok(())
}

/// `kes identity info [IDENTITY]`
pub fn identity_info(identity: Option<String>, client: ClientArgs) -> CliResult {
    let mut c = client.client()?;
    let path = match &identity {
        Some(id) => format!("/v1/identity/describe/{}", escape(id)),
        None => "/v1/identity/self/describe".to_string(),
    };
    let resp = call(&mut c, "GET", &path, None)?;
    if client.machine() {
        out!("{}", String::from_utf8_lossy(&resp.body));
        return Ok(());
    }
    use simd_json::prelude::*;
    let v = json_value(&resp.body)?;
    let admin = v.get("admin").and_then(|a| a.as_bool()).unwrap_or(false);
    let shown = identity.unwrap_or_else(|| str_field(&v, "identity"));
    outln!("Identity   {shown}");
    outln!("Created At {}", date(&v, "created_at"));
    outln!("Role       {}", if admin { "Admin" } else { "User" });
    if !admin {
        outln!("Created By {}", str_field(&v, "created_by"));
        let policy = match v.get("policy") {
            Some(p) if p.is_str() => p.as_str().unwrap_or("").to_string(),
            Some(p) => str_field(p, "name"),
            None => String::new(),
        };
        outln!("Policy     {policy}");
        for p in object_keys(&v, "allow") {
            outln!("  allow · {p}");
        }
        for p in object_keys(&v, "deny") {
            outln!("  deny  · {p}");
        }
    }
    Ok(())
}

/// `kes identity ls [PATTERN]`
pub fn identity_ls(pattern: String, client: ClientArgs) -> CliResult {
    let mut c = client.client()?;
    let names = list(&mut c, "/v1/identity/list/", "identities", &pattern)?;
    print_names("Identity", &names, client.machine());
    Ok(())
}

/// `kes status [-s] [--api]` (here `-s` is `--short`, as upstream).
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Print only the essentials.
    #[arg(short = 's', long)]
    pub short: bool,
    /// Also list the server's APIs.
    #[arg(long)]
    pub api: bool,
    /// Server endpoint(s).
    #[arg(long = "server", value_name = "HOST:PORT")]
    pub server: Option<String>,
    #[arg(short = 'k', long)]
    pub insecure: bool,
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_enum, default_value = "auto")]
    pub color: super::common::Color,
}

pub fn status(args: StatusArgs) -> CliResult {
    let client_args = ClientArgs {
        server: args.server.clone(),
        api_key: None,
        insecure: args.insecure,
        enclave: None,
        json: args.json,
        color: args.color,
    };
    let mut c = client_args.client()?;
    let started = Instant::now();
    let resp = call(&mut c, "GET", "/v1/status", None)?;
    let latency = started.elapsed();
    let apis = if args.api {
        Some(call(&mut c, "GET", "/v1/api", None)?)
    } else {
        None
    };
    if client_args.machine() {
        out!("{}", String::from_utf8_lossy(&resp.body));
        if let Some(a) = apis {
            out!("{}", String::from_utf8_lossy(&a.body));
        }
        return Ok(());
    }
    use simd_json::prelude::*;
    let v = json_value(&resp.body)?;
    let n = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    let endpoint = c.endpoints().first().cloned().unwrap_or_default();
    outln!("● {endpoint}   ({} ms)", latency.as_millis());
    if !args.short {
        outln!("  Version    {}", str_field(&v, "version"));
        outln!(
            "  OS/Arch    {}/{}",
            str_field(&v, "os"),
            str_field(&v, "arch")
        );
        outln!("  Uptime     {}s", n("uptime"));
        outln!(
            "  CPUs       {} used of {}",
            n("num_cpu_used"),
            n("num_cpu")
        );
        outln!("  Memory     {} MiB heap", n("mem_heap_used") / (1 << 20));
        if v.get("keystore_unreachable")
            .and_then(|x| x.as_bool())
            .unwrap_or(false)
        {
            outln!("  Keystore   unreachable");
        } else {
            outln!("  Keystore   {} ms", n("keystore_latency"));
        }
    }
    if let Some(a) = apis {
        let list = json_value(&a.body)?;
        outln!();
        outln!(
            "  {:<7} {:<30} {:>8} {:>8}",
            "Method",
            "API",
            "Timeout",
            "Max body"
        );
        for route in list.as_array().map(|x| x.as_slice()).unwrap_or(&[]) {
            let m = route.get("method").and_then(|x| x.as_str()).unwrap_or("");
            let p = route.get("path").and_then(|x| x.as_str()).unwrap_or("");
            let t = route.get("timeout").and_then(|x| x.as_u64()).unwrap_or(0);
            let b = route.get("max_body").and_then(|x| x.as_u64()).unwrap_or(0);
            outln!("  {m:<7} {p:<30} {:>7}s {b:>8}", t);
        }
    }
    Ok(())
}

/// `kes log [--audit|--error]`: streams a log until interrupted.
#[derive(Args, Debug)]
pub struct LogArgs {
    /// Stream the audit log (default).
    #[arg(long, conflicts_with = "error")]
    pub audit: bool,
    /// Stream the error log.
    #[arg(long)]
    pub error: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub fn log(args: LogArgs) -> CliResult {
    let mut c = args.client.client()?;
    let path = if args.error {
        "/v1/log/error"
    } else {
        "/v1/log/audit"
    };
    let machine = args.client.machine();
    c.stream(path, &mut |line: &[u8]| {
        let text = String::from_utf8_lossy(line);
        if machine || args.error {
            let shown = if args.error {
                super::common::json_field(line, "message").unwrap_or_else(|| text.to_string())
            } else {
                text.to_string()
            };
            outln!("{shown}");
        } else {
            use simd_json::prelude::*;
            if let Ok(v) = json_value(line) {
                let req = v.get("request");
                let res = v.get("response");
                let f = |o: Option<&simd_json::OwnedValue>, k: &str| {
                    o.and_then(|x| x.get(k))
                        .map(|x| x.to_string().trim_matches('"').to_string())
                        .unwrap_or_default()
                };
                outln!(
                    "{}  {}  {}  {}  {}  {}ms",
                    str_field(&v, "time"),
                    f(res, "code"),
                    f(req, "identity").chars().take(8).collect::<String>(),
                    f(req, "ip"),
                    f(req, "path"),
                    f(res, "time")
                );
            }
        }
        super::out::flush();
    })?;
    Ok(())
}

/// `kes metric [--rate 5s]`: a live view of the server's request metrics.
#[derive(Args, Debug)]
pub struct MetricArgs {
    /// Refresh interval (Go duration, e.g. 5s).
    #[arg(long, default_value = "5s")]
    pub rate: String,
    /// Stop after this many refreshes (0 = until interrupted). Default: 1 with --raw or when
    /// the output is not a terminal, else 0.
    #[arg(long)]
    pub count: Option<u64>,
    /// Print the raw Prometheus exposition instead of the summary.
    #[arg(long)]
    pub raw: bool,
    /// Read the detailed exposition (`/v1/metrics/detail`: per-route, cache, TLS and keystore
    /// families as well as upstream's).
    #[arg(long)]
    pub detail: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

pub fn metric(args: MetricArgs) -> CliResult {
    let rate = crate::config::parse_go_duration(&args.rate)
        .map_err(|e| format!("--rate: '{}' is not a duration: {e}", args.rate))?
        .max(Duration::from_millis(100));
    let mut c = args.client.client()?;
    let tty = std::io::stdout().is_terminal();
    let count = args.count.unwrap_or(if args.raw || !tty { 1 } else { 0 });
    let mut previous: Option<(Instant, f64, f64, f64)> = None;
    let mut shown = 0;
    let path = if args.detail {
        crate::api::metrics::DETAIL_PATH
    } else {
        "/v1/metrics"
    };
    loop {
        let resp = call(&mut c, "GET", path, None)?;
        let text = String::from_utf8_lossy(&resp.body).into_owned();
        if args.raw {
            out!("{text}");
            super::out::flush();
            shown += 1;
            if count > 0 && shown >= count {
                return Ok(());
            }
            std::thread::sleep(rate);
            continue;
        }
        let sum = |family: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(family) && !l.starts_with('#'))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                // Not `sum()`: an empty f64 sum is -0.0, printed as "-0".
                .fold(0.0, |a, b| a + b)
        };
        let (ok, err, fail) = (
            sum("kes_http_request_success"),
            sum("kes_http_request_error"),
            sum("kes_http_request_failure"),
        );
        let now = Instant::now();
        if tty {
            out!("\x1b[2J\x1b[H");
        }
        outln!("Requests  OK {ok:.0}  4xx {err:.0}  5xx {fail:.0}");
        if let Some((t, o, e, f)) = previous {
            let dt = now.duration_since(t).as_secs_f64().max(1e-9);
            outln!(
                "Rate      {:.1} req/s  ({:.1} errors/s)",
                (ok + err + fail - o - e - f) / dt,
                (err + fail - e - f) / dt
            );
        }
        outln!("Uptime    {:.0}s", sum("kes_system_up_time"));
        previous = Some((now, ok, err, fail));
        shown += 1;
        if count > 0 && shown >= count {
            return Ok(());
        }
        std::thread::sleep(rate);
    }
}
