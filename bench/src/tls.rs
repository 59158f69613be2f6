//! The TLS area: TLS echo, full handshakes and resumed handshakes, on
//! every TLS server, in one run.
//!
//! Servers: twistor (`listen_tls` + `Echo`), the hand-written mio + rustls
//! loop (rustls's `tlsserver-mio` shape), tokio-rustls, and with the
//! bench's Python environment Twisted (`listenSSL`, pyOpenSSL) and
//! asyncio on uvloop (`ssl.SSLContext`). One certificate for all (ECDSA
//! P-256). The Rust servers share one rustls configuration built by
//! twistor's builder (TLS 1.3 and 1.2, rustls's suites on ring, tickets and
//! a 1,024-session cache); the Python ones run OpenSSL's defaults (which
//! also issue TLS 1.3 tickets). The client, rustls with ring, offers the
//! same suites to all; the report names what each negotiated.
//!
//! Cases: echo (persistent connections, request/response); full
//! handshakes (10 at a time: connect, full handshake, one 64 B echo,
//! close_notify, close: the client keeps no session); resumed handshakes
//! (the same with the client's session store: each connection resumes
//! with a ticket from the one before).

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use twistor_reactor::{Address, Reactor};
use twistor_transports::tls::{listen_tls, ClientConfigBuilder, ServerConfigBuilder};

use crate::cpu::pin_to;
use crate::peers::certs::CertFiles;
use crate::peers::python::{Python, Script};
use crate::proc::Proc;
use crate::servers::{mio_tls_echo, tokio_tls_echo, twistor_echo};
use crate::table::{Columns, Grid, Sample};
use crate::tls_load::{self, TlsMode, TlsSpec, Until};

/// Settings.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Interleaved rounds.
    pub rounds: usize,
    /// Core the servers are pinned to.
    pub server_core: usize,
    /// Core the load generator is pinned to.
    pub client_core: usize,
    /// Warm-up before each window.
    pub warmup: Duration,
    /// Window.
    pub window: Duration,
    /// Before each round, wait up to this long for quiet cores.
    pub quiet_wait: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            rounds: 3,
            server_core: 0,
            client_core: 1,
            warmup: Duration::from_millis(300),
            window: Duration::from_millis(1000),
            quiet_wait: Duration::from_secs(3),
        }
    }
}

impl TlsConfig {
    /// The smoke-run settings.
    pub fn quick() -> TlsConfig {
        TlsConfig {
            rounds: 1,
            warmup: Duration::from_millis(150),
            window: Duration::from_millis(300),
            quiet_wait: Duration::ZERO,
            ..TlsConfig::default()
        }
    }
}

/// A TLS echo server of the bench's own (`tls-server KIND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsKind {
    /// twistor's TLS layer over TCP.
    Twistor,
    /// The hand-written mio + rustls loop.
    Mio,
    /// tokio-rustls on tokio's `current_thread` runtime.
    TokioRustls,
}

impl TlsKind {
    const ALL: [TlsKind; 3] = [TlsKind::Twistor, TlsKind::Mio, TlsKind::TokioRustls];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            TlsKind::Twistor => "twistor",
            TlsKind::Mio => "mio+rustls",
            TlsKind::TokioRustls => "tokio-rustls",
        }
    }

    /// Parse a command-line name.
    pub fn parse(s: &str) -> Option<TlsKind> {
        TlsKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// `twistor-bench tls-server KIND --cert C --key K [--cpu N]`.
pub fn cmd_server(kind: Option<&String>, f: &crate::Flags) -> Result<(), String> {
    let kind = kind
        .and_then(|k| TlsKind::parse(k))
        .ok_or("tls-server needs a kind: twistor, mio+rustls or tokio-rustls")?;
    let cert: String = f.get("--cert")?.ok_or("tls-server needs --cert")?;
    let key: String = f.get("--key")?.ok_or("tls-server needs --key")?;
    if let Some(core) = f.get::<usize>("--cpu")? {
        pin_to(core).map_err(|e| e.to_string())?;
    }
    let config = ServerConfigBuilder::new()
        .cert_files(&cert, &key, &twistor_transports::tls::Passphrase::None)
        .and_then(|b| b.build())
        .map_err(|e| e.to_string())?;
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let announce = crate::servers::announce;
    let res = match kind {
        TlsKind::Twistor => (|| {
            let mut r = Reactor::new()?;
            let port = listen_tls(&mut r, addr, |_: &Address| twistor_echo::Echo, config)?;
            announce(port.local_addr());
            r.run()
        })(),
        TlsKind::Mio => mio_tls_echo::serve(addr, config, announce),
        TlsKind::TokioRustls => tokio_tls_echo::serve(addr, config, announce),
    };
    res.map_err(|e| e.to_string())
}

/// A server of the comparison.
#[derive(Debug, Clone, Copy)]
enum Server {
    Own(TlsKind),
    Python(Script),
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Own(k) => k.name(),
            Server::Python(Script::Twisted) => "Twisted",
            Server::Python(Script::Asyncio) => "asyncio+uvloop",
        }
    }

    fn start(self, core: usize, certs: &CertFiles, py: Option<&Python>) -> io::Result<Proc> {
        match (self, py) {
            (Server::Own(k), _) => {
                let args = [
                    "tls-server",
                    k.name(),
                    "--cert",
                    &certs.cert_pem.display().to_string(),
                    "--key",
                    &certs.key_pem.display().to_string(),
                    "--cpu",
                    &core.to_string(),
                ]
                .map(String::from);
                Proc::start_self(k.name(), &args)
            }
            (Server::Python(s), Some(py)) => py.echo(s, self.name(), &certs.script_args(), core),
            (Server::Python(_), None) => Err(io::Error::other("no Python environment")),
        }
    }
}

/// The cases.
#[derive(Debug, Clone, Copy)]
enum Case {
    Echo { size: usize, conns: usize },
    Handshakes { resumed: bool },
}

impl Case {
    fn name(self) -> String {
        match self {
            Case::Echo { size, conns } => format!("echo, {size} B x {conns} conn"),
            Case::Handshakes { resumed: false } => format!("full handshakes, {SLOTS} at once"),
            Case::Handshakes { resumed: true } => format!("resumed handshakes, {SLOTS} at once"),
        }
    }
}

/// Handshakes in progress at once.
const SLOTS: usize = 10;

/// The client's configuration: the server's certificate pinned, sessions
/// kept (resumption) or not.
pub fn client_config(certs: &CertFiles, resume: bool) -> io::Result<Arc<ClientConfig>> {
    ClientConfigBuilder::new()
        .pinned(&certs.fingerprint)
        .session_cache(if resume { 256 } else { 0 })
        .build()
}

fn measure(cfg: &TlsConfig, case: Case, p: &Proc, certs: &CertFiles) -> io::Result<(Sample, String)> {
    let (mode, conns, size, resume) = match case {
        Case::Echo { size, conns } => (TlsMode::Echo, conns, size, true),
        Case::Handshakes { resumed } => (TlsMode::Exchange, SLOTS, 64, resumed),
    };
    let spec = TlsSpec {
        addr: p.addr,
        server_name: "localhost",
        config: client_config(certs, resume)?,
        mode,
        conns,
        request: vec![b't'; size],
        until: Until::Bytes(size),
        expect_prefix: Vec::new(),
        warmup: cfg.warmup,
        window: cfg.window,
    };
    let (mut s, out) = tls_load::sample(&spec, p, cfg.server_core)?;
    if let Case::Echo { .. } = case {
        s.extra = f64::NAN;
    }
    Ok((s, out.negotiated))
}

/// Run the TLS comparison and return its section of the report.
pub fn compare(cfg: &TlsConfig, certs: &CertFiles, py: Option<&Python>) -> io::Result<String> {
    pin_to(cfg.client_core)?;
    let mut kinds: Vec<Server> = TlsKind::ALL.iter().map(|&k| Server::Own(k)).collect();
    if py.is_some() {
        kinds.extend([Server::Python(Script::Twisted), Server::Python(Script::Asyncio)]);
    }
    let servers: Vec<Proc> = kinds
        .iter()
        .map(|k| k.start(cfg.server_core, certs, py))
        .collect::<io::Result<_>>()?;
    let echo = [
        Case::Echo { size: 64, conns: 50 },
        Case::Echo {
            size: 16 * 1024,
            conns: 10,
        },
    ];
    let shakes = [
        Case::Handshakes { resumed: false },
        Case::Handshakes { resumed: true },
    ];
    let names: Vec<String> = kinds.iter().map(|k| k.name().to_string()).collect();
    let mut echo_grid = Grid::new(echo.iter().map(|c| c.name()).collect(), names.clone(), cfg.rounds);
    let mut shake_grid = Grid::new(
        shakes.iter().map(|c| c.name()).collect(),
        names.clone(),
        cfg.rounds,
    );
    let mut negotiated = vec![String::new(); servers.len()];
    let t0 = Instant::now();
    let mut quiet = 0;
    for round in 0..cfg.rounds {
        if crate::quiet::wait(cfg.quiet_wait, &[cfg.server_core, cfg.client_core]) {
            quiet += 1;
        }
        let all = echo.iter().map(|c| (0, c)).chain(shakes.iter().map(|c| (1, c)));
        for (ci, (table, &case)) in all.enumerate() {
            for k in 0..servers.len() {
                let si = (k + round) % servers.len();
                let (s, neg) = measure(cfg, case, &servers[si], certs)?;
                eprintln!(
                    "tls round {}/{} {:34} {:15} {:>9.0}/s {:>8.2} us CPU/op",
                    round + 1,
                    cfg.rounds,
                    case.name(),
                    servers[si].name,
                    s.rate,
                    s.cpu_us
                );
                negotiated[si] = neg;
                if table == 0 {
                    echo_grid.put(ci, si, round, s);
                } else {
                    shake_grid.put(ci - echo.len(), si, round, s);
                }
            }
        }
    }
    eprintln!("tls: {:.0} s", t0.elapsed().as_secs_f64());
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Servers pinned to core {}, load generator (rustls) to core {}; medians over {} interleaved \
         rounds ({quiet} started on quiet cores); {:.1} s windows. A handshake case's operation is a \
         whole connection: connect, handshake, one 64 B echo, close_notify, close.\n",
        cfg.server_core,
        cfg.client_core,
        cfg.rounds,
        cfg.window.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "#### TLS echo (request/response over persistent connections)\n\n{}\n",
        echo_grid.markdown(&Columns {
            rate: "req/s",
            cpu: "us/req",
            latency: true,
            extra: None,
        })
    );
    let _ = writeln!(
        s,
        "#### TLS handshakes (a new connection each; CPU per handshake; latency from connect to the echo)\n\n{}\n{}",
        shake_grid.markdown(&Columns {
            rate: "handshakes/s",
            cpu: "us/handshake",
            latency: true,
            extra: Some("share resumed"),
        }),
        shake_grid.quiet_line()
    );
    let _ = writeln!(s, "Negotiated (as the client saw it):\n");
    for (k, n) in names.iter().zip(&negotiated) {
        let _ = writeln!(s, "- {k}: {n}");
    }
    Ok(s)
}
