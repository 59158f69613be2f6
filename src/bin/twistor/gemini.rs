//! `twistor gemini`: a Gemini server with jetforce's flags and defaults.
//!
//! With no flags it serves a small built-in capsule on port 1965 of every
//! interface, for `localhost`, with a certificate generated once and kept
//! in the state directory. `--dir` serves a directory (with CGI), and
//! `--config` reads virtual hosts from a TOML file. A bad flag or an
//! unreadable file is one line on stderr and exit status 2.
//!
//! SIGHUP reloads: the config file (when one is given) and every
//! certificate are read again and the server rebuilt; new connections get
//! the new certificates and sites, connections in flight finish on the old
//! ones, and a reload that fails keeps everything as it was and logs why.
//! The listener's own settings (address, port, connection limit, PROXY
//! protocol, handshake timeout) change only at a restart.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use twistor::protocols::gemini::{
    default_state_dir, CgiOptions, RateLimit, Server, ServerOptions, StaticFiles, VirtualHost,
    DEFAULT_CGI_DIR, DEFAULT_INDEX_FILE, DEFAULT_MAX_CONNECTIONS_PER_ADDRESS, DEFAULT_PORT,
};
use twistor::reactor::{Address, Factory, Protocol, Reactor, ReactorGroup, SIGHUP};
use twistor::transports::proxy::ProxyOptions;
use twistor::transports::tls::{listen_tls_with, load_ca, ReloadableServerConfig, TlsOptions};
use twistor::transports::{ListenAddr, ListenOptions};

use crate::common::{self, Asking, ProxyArgs};
use crate::gemini_capsule as capsule;
use crate::gemini_config as config;

/// `twistor gemini`'s flags.
#[derive(clap::Args, Debug, Clone)]
pub struct GeminiArgs {
    /// Address to listen on [default: every interface, IPv6 and IPv4]
    #[arg(long)]
    host: Option<IpAddr>,
    /// Port to listen on (0 picks a free one, logged at start) [default: 1965]
    #[arg(long)]
    port: Option<u16>,
    /// The server's host name: requests for other hosts are refused (53).
    /// `localhost` also answers for 127.0.0.1 and ::1
    #[arg(long, default_value = "localhost")]
    hostname: String,
    /// Certificate chain, PEM [default: one generated for --hostname and kept
    /// in the state directory]
    #[arg(long, value_name = "FILE", requires = "tls_keyfile")]
    tls_certfile: Option<PathBuf>,
    /// Private key, PEM (an encrypted key's passphrase comes from the file named by
    /// TWISTOR_PASSPHRASE_FILE, or is asked on the terminal)
    #[arg(long, value_name = "FILE", requires = "tls_certfile")]
    tls_keyfile: Option<PathBuf>,
    /// CA file: client certificates it issued are authorised (TLS_CLIENT_AUTHORISED=1)
    #[arg(long, value_name = "FILE")]
    tls_cafile: Option<PathBuf>,
    /// Directory of CA files, as --tls-cafile
    #[arg(long, value_name = "DIR")]
    tls_capath: Option<PathBuf>,
    /// Directory to serve [default: the built-in capsule]
    #[arg(long)]
    dir: Option<PathBuf>,
    /// CGI directory, relative to --dir
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CGI_DIR)]
    cgi_dir: String,
    /// File served for a directory; without one, a listing is generated
    #[arg(long, value_name = "FILE", default_value = DEFAULT_INDEX_FILE)]
    index_file: String,
    /// `lang` parameter of text/gemini responses, e.g. en or en,fr [default: none]
    #[arg(long, value_name = "LANG")]
    default_lang: Option<String>,
    /// Requests per client address, e.g. 60/5m (60 per 5 minutes); over it: 44 [default: no limit]
    #[arg(long, value_name = "N/PERIOD")]
    rate_limit: Option<RateLimit>,
    /// Virtual hosts from a TOML file (see the README); --host and --port override its own
    #[arg(long, value_name = "FILE", conflicts_with_all = ["dir", "tls_certfile", "hostname"])]
    config: Option<PathBuf>,
    /// Where generated certificates are kept [default: $XDG_DATA_HOME/twistor/gemini
    /// or ~/.local/share/twistor/gemini]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Seconds a client has to send its request
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    request_timeout: u64,
    /// Seconds a CGI script may run before it is killed
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    cgi_timeout: u64,
    /// CGI scripts running at once; over it: 41
    #[arg(long, value_name = "N", default_value_t = 16)]
    max_cgi: usize,
    /// Connections at once; over it, new ones are closed
    #[arg(long, value_name = "N", default_value_t = 1024)]
    max_connections: usize,
    /// Connections at once from one client address (an IPv6 client by its /64);
    /// over it, new ones are closed. 0 = no cap. Behind a load balancer, use
    /// --proxy-protocol so that addresses are the clients'
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_ADDRESS)]
    max_connections_per_address: usize,
    /// Leave client addresses out of the access log
    #[arg(long)]
    no_log_addresses: bool,
    /// Reactors to run, each on its own thread with its own SO_REUSEPORT
    /// listener; 0 = one per core. Each has its own server, so
    /// --rate-limit, --max-cgi and --max-connections apply per reactor
    #[arg(long, value_name = "N", default_value_t = 1)]
    threads: usize,
    #[command(flatten)]
    proxy: ProxyArgs,
}

/// What the listener is made with: set at start, kept across reloads.
#[derive(Debug, Clone, PartialEq)]
struct Listener {
    addr: ListenAddr,
    max_connections: usize,
    proxy: ProxyOptions,
    tls: TlsOptions,
}

/// The listener's factory: the server built last (a reload replaces it).
#[derive(Clone)]
struct Current(Rc<RefCell<Server>>);

impl Factory for Current {
    fn build_protocol(&mut self, addr: &Address) -> Option<Box<dyn Protocol>> {
        self.0.borrow_mut().build_protocol(addr)
    }
}

/// Run the server until Ctrl-C or SIGTERM. Configuration errors end the
/// process with one line and status 2.
pub fn run(args: GeminiArgs) -> std::io::Result<()> {
    // Built once here whatever the number of reactors: a bad flag or file is
    // reported before anything listens, and a key's passphrase is asked
    // (once) on the terminal.
    let (server, listener) = match build(&args, Asking::Allowed) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("twistor gemini: {e}");
            std::process::exit(2);
        }
    };
    for (host, fingerprint) in server.fingerprints() {
        log::info!("{host}: certificate SHA-256 fingerprint {fingerprint}");
    }
    common::log_proxy(&listener.proxy);
    let what = match &args.config {
        Some(file) => format!("{} and the certificates", file.display()),
        None => "the certificates".to_string(),
    };
    if args.threads == 1 {
        let mut reactor = Reactor::new()?;
        serve(&mut reactor, &args, server, listener.clone(), &listener, false)?;
        log::info!("SIGHUP reloads {what}");
        reactor.run()?;
    } else {
        // Each reactor builds its own server on its own thread (a server's
        // state is single-threaded); the one built above only checked the
        // configuration. The first reactor's port (with --port 0) is the
        // others' too.
        let group = ReactorGroup::new(args.threads);
        log::info!("running {} reactors", group.len());
        let port = std::sync::OnceLock::new();
        group.run(|r, index| {
            let (server, mut mine) = build(&args, Asking::Never).map_err(std::io::Error::other)?;
            if let Some(&p) = port.get() {
                mine.addr = with_port(&mine.addr, p);
            }
            let got = serve(r, &args, server, mine, &listener, index > 0)?;
            let _ = port.set(got);
            Ok(())
        })?;
    }
    log::info!("stopped");
    Ok(())
}

/// Listen on `reactor` with `server`, and reload it on SIGHUP. Returns the
/// port. `quiet`: one of several reactors other than the first, which says
/// nothing at start.
fn serve(
    reactor: &mut Reactor,
    args: &GeminiArgs,
    server: Server,
    listener: Listener,
    at_start: &Listener,
    quiet: bool,
) -> std::io::Result<u16> {
    let certs = ReloadableServerConfig::new(server.tls_config());
    let current = Current(Rc::new(RefCell::new(server)));
    let opts = ListenOptions {
        max_connections: Some(listener.max_connections),
        proxy_protocol: listener.proxy.clone(),
        reuse_port: args.threads != 1,
        ..ListenOptions::default()
    };
    let listening = match listen_tls_with(
        reactor,
        listener.addr.clone(),
        current.clone(),
        certs.clone(),
        listener.tls,
        opts,
    ) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("twistor gemini: cannot listen: {e}");
            std::process::exit(2);
        }
    };
    if !quiet {
        log::info!("Gemini on {}", listening.local_addr());
    }
    reactor.add_signal_handler(SIGHUP, reloader(args.clone(), at_start.clone(), certs, current))?;
    Ok(listening.port())
}

/// `addr` with another port.
fn with_port(addr: &ListenAddr, port: u16) -> ListenAddr {
    match addr {
        ListenAddr::Port(_) => ListenAddr::Port(port),
        ListenAddr::Addr(a) => ListenAddr::Addr(SocketAddr::new(a.ip(), port)),
        other => other.clone(),
    }
}

/// What SIGHUP does: build the server again from the flags and the config
/// file, and put it and its certificates in place; on failure keep both.
fn reloader(
    args: GeminiArgs,
    listener: Listener,
    certs: ReloadableServerConfig,
    current: Current,
) -> impl FnMut(&mut Reactor) {
    let mut n = 0u64;
    move |_| {
        n += 1;
        match build(&args, Asking::Never) {
            Ok((server, new_listener)) => {
                if new_listener != listener {
                    log::warn!(
                        "reload {n}: the listener's settings (address, port, max_connections, \
                         PROXY protocol, handshake timeout) change only at a restart"
                    );
                }
                certs.replace(server.tls_config());
                for (host, fingerprint) in server.fingerprints() {
                    log::info!("{host}: certificate SHA-256 fingerprint {fingerprint}");
                }
                *current.0.borrow_mut() = server;
                log::info!("configuration reloaded (reload {n})");
            }
            Err(e) => log::error!("reload {n} failed, keeping the previous configuration: {e}"),
        }
    }
}

/// The server and its listener's settings, from the flags and the config
/// file (read again each time). Keys' passphrases are asked on the
/// terminal only when `asking` allows (at start).
fn build(args: &GeminiArgs, asking: Asking) -> Result<(Server, Listener), String> {
    let file = match &args.config {
        Some(path) => Some(config::load(path)?),
        None => None,
    };
    let file_ref = file.as_ref();
    let secs = |flag: u64, key: Option<u64>| Duration::from_secs(key.unwrap_or(flag));
    let rate_limit = match file_ref.and_then(|f| f.rate_limit.as_deref()) {
        Some(text) => Some(text.parse::<RateLimit>()?),
        None => args.rate_limit,
    };
    let proxy = match (args.proxy.options(), file_ref) {
        (Some(flags), _) => flags,
        (None, Some(f)) => match &f.proxy_protocol {
            Some(mode) => common::proxy_options(mode, &f.proxy_trusted, f.proxy_timeout)?,
            None => ProxyOptions::default(),
        },
        (None, None) => ProxyOptions::default(),
    };
    let mut options = ServerOptions {
        request_timeout: secs(args.request_timeout, file_ref.and_then(|f| f.request_timeout)),
        max_connections: file_ref
            .and_then(|f| f.max_connections)
            .unwrap_or(args.max_connections),
        max_connections_per_address: Some(
            file_ref
                .and_then(|f| f.max_connections_per_address)
                .unwrap_or(args.max_connections_per_address),
        )
        .filter(|&n| n > 0),
        rate_limit,
        log_client_addresses: !args.no_log_addresses
            && file_ref.and_then(|f| f.log_client_addresses).unwrap_or(true),
        ..ServerOptions::default()
    };
    if let Some(f) = file_ref {
        f.apply(&mut options);
    }
    let cgi = CgiOptions {
        dir: args.cgi_dir.clone(),
        timeout: secs(args.cgi_timeout, file_ref.and_then(|f| f.cgi_timeout)),
        max_running: file_ref.and_then(|f| f.max_cgi).unwrap_or(args.max_cgi),
    };
    let state_dir = file_ref
        .and_then(|f| f.state_dir.clone())
        .or(args.state_dir.clone())
        .unwrap_or_else(default_state_dir);
    let host = args.host.or(file_ref.and_then(|f| f.host));
    let port = args
        .port
        .or(file_ref.and_then(|f| f.port))
        .unwrap_or(DEFAULT_PORT);
    let max_connections = options.max_connections;
    let mut builder = Server::builder().options(options).state_dir(state_dir);
    let cafile = file_ref
        .and_then(|f| f.tls_cafile.clone())
        .or(args.tls_cafile.clone());
    let capath = file_ref
        .and_then(|f| f.tls_capath.clone())
        .or(args.tls_capath.clone());
    for ca in [cafile, capath].into_iter().flatten() {
        builder = builder.client_ca(load_ca(&ca).map_err(|e| format!("{}: {e}", ca.display()))?);
    }
    match file {
        Some(file) => {
            for v in file.vhost {
                builder = builder.host(config::virtual_host(v, &cgi, asking)?);
            }
        }
        None => {
            let mut host = match &args.dir {
                Some(dir) => {
                    let files = static_files(dir, Some(&args.index_file), args.default_lang.as_deref())?;
                    VirtualHost::new(&args.hostname, files.with_cgi(cgi))
                }
                None => VirtualHost::new(&args.hostname, capsule::capsule()),
            };
            if args.hostname.eq_ignore_ascii_case("localhost") {
                host = host.alias("127.0.0.1").alias("::1");
            }
            if let (Some(c), Some(k)) = (&args.tls_certfile, &args.tls_keyfile) {
                host = host.cert_files_with(c, k, key_passphrase(k, asking)?);
            }
            builder = builder.host(host);
        }
    }
    let server = builder.build().map_err(|e| e.to_string())?;
    let addr = match host {
        Some(ip) => ListenAddr::Addr(SocketAddr::new(ip, port)),
        None => ListenAddr::Port(port),
    };
    let listener = Listener {
        addr,
        max_connections,
        proxy,
        tls: server.tls_options(),
    };
    Ok((server, listener))
}

fn key_passphrase(
    key: &std::path::Path,
    asking: Asking,
) -> Result<twistor::transports::tls::Passphrase, String> {
    common::key_passphrase(key, None, asking).map_err(|e| format!("{}: {e}", key.display()))
}

fn static_files(
    dir: &std::path::Path,
    index: Option<&str>,
    lang: Option<&str>,
) -> Result<StaticFiles, String> {
    if !dir.is_dir() {
        return Err(format!("{}: not a readable directory", dir.display()));
    }
    std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files = StaticFiles::new(dir).with_index_file(index.unwrap_or(DEFAULT_INDEX_FILE));
    if let Some(lang) = lang {
        files = files.with_default_lang(lang)?;
    }
    Ok(files)
}
