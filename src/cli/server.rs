//! `kes server`: builds the server from `--dev` or `--config`, prints the banner, serves.

use crate::rt::BackendChoice;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;

use crate::api::settings::{Reloadable, Settings};
use crate::api::Shared;
use crate::auth::apikey::ApiKey;
use crate::auth::policy::PolicySet;
use crate::cache::{Expiry, Invalidations};
use crate::config::{self, Config, TlsAuth};
use crate::crypto::{record, KeyType, KeyVersion};
use crate::keystore::{KeyStore, MemStore, StoreError};
use crate::server::tls::{self, ClientAuth};
use crate::server::{self, ServerOptions};
use crate::time::Timestamp;

const DEFAULT_ADDR: &str = "0.0.0.0:7373";

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Listen address <ip>:<port> (default 0.0.0.0:7373).
    #[arg(long, value_name = "IP:PORT")]
    pub addr: Option<String>,
    /// Server config file.
    #[arg(long, value_name = "FILE", conflicts_with = "dev")]
    pub config: Option<PathBuf>,
    /// Development mode: in-memory keys, a self-signed certificate and a fresh admin API key.
    #[arg(long)]
    pub dev: bool,
    /// Lock all memory (mlockall) so keys never reach swap, and disable core dumps.
    #[arg(long)]
    pub mlock: bool,
    /// Serve on at most this many cores (default: every CPU in the affinity mask).
    #[arg(long, value_name = "N")]
    pub cores: Option<usize>,
    /// I/O backend: auto (the default: io_uring where the host allows it, else epoll, saying
    /// why at start), epoll, or io_uring (an error at start where the host does not allow it).
    #[arg(long = "io", value_name = "BACKEND", env = "KES_IO_BACKEND", value_parser = parse_backend)]
    pub io: Option<BackendChoice>,
    /// Validate the config file (TLS files, keystore block, warnings) and exit: 0 if it is
    /// valid, 1 with the error otherwise. Binds nothing and starts nothing.
    #[arg(long)]
    pub check: bool,
    /// Deprecated upstream flags, accepted and ignored.
    #[arg(long, hide = true)]
    pub key: Option<String>,
    #[arg(long, hide = true)]
    pub cert: Option<String>,
    #[arg(long, hide = true)]
    pub auth: Option<String>,
}

/// A fully prepared server, before it starts listening.
pub struct Prepared {
    pub options: ServerOptions,
    pub banner_keystore: String,
    pub banner_admin: String,
    pub api_key: Option<String>,
}

pub fn run(args: ServerArgs) -> Result<(), Box<dyn std::error::Error>> {
    if !args.check {
        super::out::server_mode();
    }
    // Before anything else, and above all before any thread exists (the log writer, keystore
    // helpers, the cores and their blocking pools, the health check): block the signals this
    // thread waits for. Threads inherit the mask, so none of them can take a SIGHUP's default
    // action (terminate) while this thread is busy reloading.
    let signals = signals::block()?;
    if args.check {
        return check(&args);
    }
    raise_nofile_limit();
    if args.key.is_some() || args.cert.is_some() || args.auth.is_some() {
        errln!("warning: --key, --cert and --auth are deprecated and ignored; use the config file");
    }
    let mut started_config = None;
    let prepared = if args.dev {
        prepare_dev(args.addr.as_deref(), args.cores)?
    } else {
        let Some(path) = args.config.as_ref() else {
            return Err("no config file specified: use --config <file> or --dev".into());
        };
        let config = load_config(path)?;
        print_warnings(&config);
        let prepared = prepare_config(&config, args.addr.as_deref(), args.cores)?;
        started_config = Some(config);
        prepared
    };
    if args.mlock {
        lock_memory()?;
    }
    let shared = prepared.options.shared.clone();
    let mut options = prepared.options;
    options.io = args.io;
    let running = server::run(options)?;
    if let Some(why) = &running.backend_fallback {
        errln!("kes: --io auto: using epoll because {why}");
    }
    print_banner(
        &prepared.banner_keystore,
        &prepared.banner_admin,
        prepared.api_key.as_deref(),
        running.local_addr,
        running.cores,
        running.backend,
        args.mlock,
    );
    loop {
        match signals.wait(TLS_REFRESH) {
            signals::Event::Reload => match (args.config.as_ref(), started_config.as_ref()) {
                (Some(path), Some(started)) => {
                    let baseline = Running {
                        config: started,
                        addr_flag: args.addr.is_some(),
                    };
                    match reload(path, &shared, Some(&baseline)) {
                        Ok(()) => {
                            errln!("kes: configuration reloaded from {}", path.display())
                        }
                        Err(e) => {
                            errln!("kes: reload failed, keeping the current configuration: {e}")
                        }
                    }
                }
                _ => errln!("kes: SIGHUP ignored: --dev has no config file to reload"),
            },
            signals::Event::Timeout => {
                if let Some(path) = args.config.as_ref() {
                    if let Err(e) = reload(path, &shared, None) {
                        errln!("kes: TLS refresh failed, keeping the current certificate: {e}");
                    }
                }
            }
            signals::Event::Stop => break,
        }
    }
    errln!("kes: shutting down");
    shared.shutdown.set();
    running.join();
    Ok(())
}

/// `kes server --config FILE --check`: everything start-up validates (the config, its TLS
/// files and CA, log levels, the keystore block and the credentials it would use, see
/// [`crate::keystore::check`]), without contacting the keystore, creating keys, binding or
/// starting anything.
fn check(args: &ServerArgs) -> Result<(), Box<dyn std::error::Error>> {
    let Some(path) = args.config.as_ref() else {
        return Err("--check needs --config <file>".into());
    };
    let config = load_config(path)?;
    print_warnings(&config);
    listen_addr(args.addr.as_deref(), config.address)?;
    settings_from(&config)?;
    log_levels(&config)?;
    crate::keystore::check(&config.keystore)?;
    outln!("{}: configuration is valid", path.display());
    Ok(())
}

/// Raises the soft limit on open files to the hard limit, as Go programs do at start: each
/// connection needs a descriptor, and the common soft default (1024) is far below what a
/// server is allowed. Failure is reported and otherwise harmless.
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the local struct only.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 || lim.rlim_cur >= lim.rlim_max {
            return;
        }
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            let err = std::io::Error::last_os_error();
            errln!(
                "warning: cannot raise the open-file limit from {} to {}: {err}",
                lim.rlim_cur,
                lim.rlim_max
            );
        }
    }
}

fn log_levels(
    config: &Config,
) -> Result<(crate::log::Level, crate::log::Level), Box<dyn std::error::Error>> {
    let parse = |field: &str, v: &str| {
        crate::log::Level::parse(v).ok_or_else(|| {
            format!(
                "{field}: '{v}' is not a log level; expected on, off, DEBUG, INFO, WARN or ERROR"
            )
        })
    };
    Ok((
        parse("log.audit", &config.log_audit)?,
        parse("log.error", &config.log_error)?,
    ))
}

/// `--mlock`: lock current and future memory and make the process non-dumpable.
fn lock_memory() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: mlockall and prctl take no pointers; failure is reported through errno.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(format!(
            "--mlock: cannot lock memory ({err}). Allow it with one of: \
             `setcap cap_ipc_lock=+ep $(which kes)`; systemd `LimitMEMLOCK=infinity` and \
             `AmbientCapabilities=CAP_IPC_LOCK`; containers `--cap-add IPC_LOCK --ulimit memlock=-1`"
        )
        .into());
    }
    // SAFETY: as above.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    Ok(())
}

/// TLS files are re-read this often (certificate rotation without SIGHUP).
const TLS_REFRESH: std::time::Duration = std::time::Duration::from_secs(15 * 60);

fn load_config(path: &std::path::Path) -> Result<Config, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file '{}': {e}", path.display()))?;
    let env = |name: &str| std::env::var(name).ok();
    // Every missing variable and TLS file at once, not one per attempt.
    let missing = config::inputs::missing(&text, &env);
    if !missing.is_empty() {
        return Err(format!(
            "invalid config file '{}': {}",
            path.display(),
            config::inputs::describe(&missing)
        )
        .into());
    }
    let config = config::parse(&text, &env).map_err(|e| {
        // A typo often causes the error (a misspelled required field reads as missing).
        for w in config::unknown_key_warnings(&text) {
            errln!("warning: {w}");
        }
        format!("invalid config file '{}': {e}", path.display())
    })?;
    Ok(config)
}

fn print_warnings(config: &Config) {
    for w in &config.warnings {
        errln!("warning: {w}");
    }
}

/// What a reload compares against: the config the server started with (its non-reloadable
/// settings are the ones in force) and whether `--addr` overrides `address`.
pub struct Running<'a> {
    pub config: &'a Config,
    pub addr_flag: bool,
}

/// Re-reads the config and swaps the reloadable settings on every core at once. With
/// `running` (SIGHUP), everything reloadable is replaced and each changed setting that needs
/// a restart is reported; without it (the periodic TLS refresh), only the TLS certificate and
/// key are. Everything is validated before anything changes: on error, nothing changed.
pub fn reload(
    path: &std::path::Path,
    shared: &Shared,
    running: Option<&Running<'_>>,
) -> Result<(), Box<dyn std::error::Error>> {
    let config = load_config(path)?;
    let fresh = settings_from(&config)?;
    let Some(running) = running else {
        let (_, current) = shared.settings.load();
        shared.settings.store(Settings {
            policies: current.policies.clone(),
            routes: current.routes.clone(),
            tls: fresh.tls,
            client_verifier: fresh.client_verifier,
            proxies: current.proxies.clone(),
            proxy_cert_header: current.proxy_cert_header.clone(),
            audit_all: current.audit_all,
        });
        return Ok(());
    };
    print_warnings(&config);
    let (audit, error) = log_levels(&config)?;
    // The last fallible step, after every check: only a keystore failure can stop it, and
    // keys it created before failing stay (deleting them could lose data already sealed).
    create_declared_keys(shared.keystore.as_ref(), &config.keys, &config.admin)?;
    create_declared_enclaves(shared.keystore.as_ref(), &config.enclaves, &config.admin)?;
    shared.logs.set_levels(audit, error);
    shared.settings.store(fresh);
    for setting in restart_needed(running, &config) {
        errln!("kes: reload: '{setting}' changed; restart the server to apply it");
    }
    Ok(())
}

/// The settings that differ from those in force but are only read at start.
fn restart_needed(running: &Running<'_>, new: &Config) -> Vec<&'static str> {
    let old = running.config;
    let mut changed = Vec::new();
    if !running.addr_flag && old.address != new.address {
        changed.push("address");
    }
    if old.keystore != new.keystore {
        changed.push("keystore");
    }
    if old.expiry.any != new.expiry.any {
        changed.push("cache.expiry.any");
    }
    if old.expiry.unused != new.expiry.unused {
        changed.push("cache.expiry.unused");
    }
    if old.expiry_offline != new.expiry_offline {
        changed.push("cache.expiry.offline");
    }
    changed
}

mod signals {
    //! SIGHUP / SIGINT / SIGTERM, received synchronously with sigtimedwait.

    use std::time::Duration;

    pub enum Event {
        Reload,
        Stop,
        Timeout,
    }

    pub struct Signals {
        set: libc::sigset_t,
    }

    /// Blocks the signals in the calling thread (and the threads it starts later).
    pub fn block() -> Result<Signals, std::io::Error> {
        // SAFETY: plain libc signal-set manipulation on a local sigset_t.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGHUP, libc::SIGINT, libc::SIGTERM] {
                libc::sigaddset(&mut set, sig);
            }
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(std::io::Error::from_raw_os_error(rc));
            }
            Ok(Signals { set })
        }
    }

    impl Signals {
        pub fn wait(&self, timeout: Duration) -> Event {
            let ts = libc::timespec {
                tv_sec: timeout.as_secs() as libc::time_t,
                tv_nsec: timeout.subsec_nanos() as libc::c_long,
            };
            loop {
                // SAFETY: `self.set` is a valid signal set; info may be null.
                let sig = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
                match sig {
                    libc::SIGHUP => return Event::Reload,
                    libc::SIGINT | libc::SIGTERM => return Event::Stop,
                    _ => {
                        let err = std::io::Error::last_os_error();
                        if err.raw_os_error() == Some(libc::EAGAIN) {
                            return Event::Timeout;
                        }
                        // EINTR: wait again.
                    }
                }
            }
        }
    }
}

fn listen_addr(
    flag: Option<&str>,
    config: Option<SocketAddr>,
) -> Result<SocketAddr, Box<dyn std::error::Error>> {
    match flag {
        Some(a) => Ok(config::parse_address(a)?),
        None => Ok(config.unwrap_or_else(|| DEFAULT_ADDR.parse().expect("valid default address"))),
    }
}

/// `--dev`: in-memory keystore, ephemeral certificate, fresh admin API key.
pub fn prepare_dev(
    addr: Option<&str>,
    cores: Option<usize>,
) -> Result<Prepared, Box<dyn std::error::Error>> {
    let addr = listen_addr(addr, None)?;
    let api_key = ApiKey::generate().map_err(|e| format!("cannot generate an API key: {e:?}"))?;
    let admin = api_key.identity().to_hex();
    let ips = certificate_ips(addr.ip());
    let (cert, key, _pem) =
        crate::auth::cert::self_signed_server_cert(&ips, &["localhost".to_string()])
            .map_err(|e| format!("cannot create the dev certificate: {e:?}"))?;
    let tls = tls::server_config(vec![cert], key, ClientAuth::RequireAny, None)?;
    let settings = Settings {
        policies: PolicySet::new(&admin, Vec::new(), Default::default()),
        routes: Default::default(),
        tls: tls.config,
        client_verifier: tls.client_verifier,
        proxies: Vec::new(),
        proxy_cert_header: String::new(),
        audit_all: false,
    };
    let logs = crate::log::Logs::new(crate::log::Level::INFO, crate::log::Level::INFO);
    let shared = shared_state(
        settings,
        logs,
        Arc::new(MemStore::new()),
        Expiry::default(),
        std::time::Duration::ZERO,
        cores,
    );
    let mut options = ServerOptions::new(addr, shared);
    options.cores = cores;
    let text = api_key.to_string_secret();
    Ok(Prepared {
        options,
        banner_keystore: "In Memory".into(),
        banner_admin: admin,
        api_key: Some(String::from_utf8_lossy(text.expose()).into_owned()),
    })
}

/// `--config`: everything from a validated config file.
pub fn prepare_config(
    config: &Config,
    addr: Option<&str>,
    cores: Option<usize>,
) -> Result<Prepared, Box<dyn std::error::Error>> {
    let addr = listen_addr(addr, config.address)?;
    let settings = settings_from(config)?;
    let (audit, error) = log_levels(config)?;
    let store = crate::keystore::open(&config.keystore)?;
    if let Some(credentials) = store.credentials() {
        errln!("kes: keystore credentials: {credentials}");
    }
    create_declared_keys(store.as_ref(), &config.keys, &config.admin)?;
    create_declared_enclaves(store.as_ref(), &config.enclaves, &config.admin)?;
    let display = store.display_name();
    let logs = crate::log::Logs::new(audit, error);
    let shared = shared_state(
        settings,
        logs,
        store,
        config.expiry,
        config.expiry_offline,
        cores,
    );
    let mut options = ServerOptions::new(addr, shared);
    options.cores = cores;
    let admin = if crate::auth::Identity::from_hex(&config.admin).is_some() {
        config.admin.clone()
    } else {
        "<disabled>".into()
    };
    Ok(Prepared {
        options,
        banner_keystore: display,
        banner_admin: admin,
        api_key: None,
    })
}

/// The reloadable settings of a config: policies, routes, TLS (files are read here).
pub fn settings_from(config: &Config) -> Result<Settings, Box<dyn std::error::Error>> {
    let chain = tls::load_cert_chain(&config.tls.cert)?;
    let key = tls::load_private_key(&config.tls.key, &config.tls.password)?;
    let client_auth = if config.routes.any_skip_auth() {
        ClientAuth::RequestAny
    } else {
        ClientAuth::RequireAny
    };
    let roots = match config.tls.auth {
        TlsAuth::Off => None,
        TlsAuth::On => Some(load_roots(config.tls.ca.as_deref())?),
    };
    let tls = tls::server_config(chain, key, client_auth, roots)?;
    Ok(Settings {
        policies: PolicySet::new(
            &config.admin,
            config.policies.clone(),
            config.pattern_syntax,
        ),
        routes: config.routes.clone(),
        tls: tls.config,
        client_verifier: tls.client_verifier,
        proxies: config
            .tls
            .proxy_identities
            .iter()
            .filter_map(|id| crate::auth::Identity::from_hex(id))
            .collect(),
        proxy_cert_header: config.tls.proxy_cert_header.clone(),
        audit_all: config.audit_all,
    })
}

fn load_roots(
    ca: Option<&std::path::Path>,
) -> Result<rustls::RootCertStore, Box<dyn std::error::Error>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    // The system roots first (unreadable ones are skipped), then `tls.ca` on top.
    let system = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(system.certs);
    let Some(ca) = ca else {
        if roots.is_empty() {
            return Err("tls.auth is 'on' but there is no CA: set tls.ca to the CA certificate(s) that sign client certificates".into());
        }
        return Ok(roots);
    };
    let files: Vec<PathBuf> = if ca.is_dir() {
        std::fs::read_dir(ca)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect()
    } else {
        vec![ca.to_path_buf()]
    };
    for file in files {
        for cert in CertificateDer::pem_file_iter(&file)
            .map_err(|e| format!("tls.ca '{}': {e:?}", file.display()))?
        {
            let cert = cert.map_err(|e| format!("tls.ca '{}': {e:?}", file.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("tls.ca '{}': {e}", file.display()))?;
        }
    }
    Ok(roots)
}

/// `keys:` in the config: created at start-up when absent.
fn create_declared_keys(
    store: &dyn KeyStore,
    names: &[String],
    admin: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let rng = ring::rand::SystemRandom::new();
    for name in names {
        let key = KeyVersion::generate(KeyType::platform_default(), admin, Timestamp::now(), &rng)
            .map_err(|e| format!("keys: cannot generate key '{name}': {e}"))?;
        match store.create(name, record::encode_record(&key).expose()) {
            Ok(()) | Err(StoreError::AlreadyExists) => {}
            Err(e) => return Err(format!("keys: cannot create key '{name}': {e}").into()),
        }
    }
    Ok(())
}

/// `enclaves:`: each MinKMS enclave not in the keystore yet is created (see
/// [`crate::api::minkms::enclave`]).
fn create_declared_enclaves(
    store: &dyn KeyStore,
    names: &[String],
    admin: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    crate::api::minkms::enclave::create_declared(store, names, admin).map_err(Into::into)
}

fn shared_state(
    settings: Settings,
    logs: crate::log::Logs,
    store: Arc<dyn KeyStore>,
    expiry: Expiry,
    expiry_offline: std::time::Duration,
    cores: Option<usize>,
) -> Arc<Shared> {
    let available = server::runtime::affinity_cpus()
        .map(|c| c.len())
        .unwrap_or(1);
    Arc::new(Shared {
        settings: Reloadable::new(settings),
        keystore: store,
        invalidations: Invalidations::default(),
        key_type: KeyType::platform_default(),
        expiry,
        started: Instant::now(),
        started_at: Timestamp::now(),
        cores: cores.map_or(available, |c| c.min(available).max(1)),
        shutdown: Default::default(),
        metrics: Default::default(),
        logs,
        flights: Default::default(),
        keystore_offline: Default::default(),
        store_errors: Default::default(),
        expiry_offline,
        enclaves: Default::default(),
    })
}

/// The IPs the dev certificate is valid for (auth-and-policy.md §3.5, plus loopback).
fn certificate_ips(listen: IpAddr) -> Vec<IpAddr> {
    let mut ips = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    if listen.is_unspecified() {
        ips.extend(interface_ips());
    } else if !ips.contains(&listen) {
        ips.push(listen);
    }
    ips
}

/// IPv4 addresses of interfaces that are up, except link-local ones.
pub fn interface_ips() -> Vec<IpAddr> {
    let mut out = Vec::new();
    // SAFETY: getifaddrs allocates a list we walk read-only and free with freeifaddrs.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) != 0 {
            return out;
        }
        let mut cur = list;
        while !cur.is_null() {
            let ifa = &*cur;
            if !ifa.ifa_addr.is_null()
                && (ifa.ifa_flags & libc::IFF_UP as u32) != 0
                && i32::from((*ifa.ifa_addr).sa_family) == libc::AF_INET
            {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                if !ip.is_link_local() && !out.contains(&IpAddr::V4(ip)) {
                    out.push(IpAddr::V4(ip));
                }
            }
            cur = ifa.ifa_next;
        }
        libc::freeifaddrs(list);
    }
    out
}

fn parse_backend(s: &str) -> Result<BackendChoice, String> {
    s.parse()
}

fn print_banner(
    keystore: &str,
    admin: &str,
    api_key: Option<&str>,
    addr: SocketAddr,
    cores: usize,
    backend: crate::rt::Backend,
    mlock: bool,
) {
    let mut urls = Vec::new();
    if addr.ip().is_unspecified() {
        for ip in interface_ips() {
            urls.push(format!("https://{}", SocketAddr::new(ip, addr.port())));
        }
    }
    if urls.is_empty() {
        urls.push(format!("https://{addr}"));
    }
    outln!(
        "Version     {}    commit={}",
        crate::api::VERSION,
        crate::api::COMMIT
    );
    outln!(
        "Runtime     {} cores (thread-per-core, I/O: {})   {}/{}",
        cores,
        backend,
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    outln!("License     AGPLv3    https://www.gnu.org/licenses/agpl-3.0.html");
    outln!();
    outln!("KMS         {keystore}");
    outln!("API         {}", urls.join(", "));
    outln!();
    outln!("Admin       {admin}");
    if let Some(key) = api_key {
        outln!("API Key     {key}");
        // The same Ed25519 key in the MinKMS form (`MINIO_KMS_API_KEY`).
        if let Some(k1) = crate::auth::apikey::ApiKey::parse(key)
            .ok()
            .and_then(|parsed| parsed.to_k1_secret())
        {
            outln!("MinKMS Key  {}", String::from_utf8_lossy(k1.expose()));
        }
        outln!();
        outln!(
            "            export KES_SERVER=https://{}",
            if addr.ip().is_unspecified() {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
            } else {
                addr
            }
        );
        outln!("            export KES_API_KEY={key}");
    }
    if mlock {
        outln!("MLock       enabled (all memory locked, core dumps disabled)");
    }
    outln!();
    outln!("=> Server is up and running");
}
