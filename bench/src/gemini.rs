//! The Gemini area: twistor's Gemini server against agate (Rust, tokio +
//! rustls) and jetforce (Python, Twisted), serving the same capsule with
//! the same certificate, each pinned to the server core.
//!
//! The load generator is a Rust Gemini client (`tls_load.rs`, rustls): 16
//! clients, each request a new TCP connection and a TLS handshake (full,
//! or resumed with the session the client kept from its last visit, as
//! real clients do), one request line, the whole response read up to the
//! server's close, its status checked (`20`). Two files: a small `.gmi`
//! page and a 1 MiB file.
//!
//! twistor's server (`gemini-server`) is what `twistor gemini --dir DIR
//! --tls-certfile C --tls-keyfile K` runs: the protocols crate's `Server`
//! with `StaticFiles`, default options; no logger is installed, so its
//! access log costs a level check. agate runs with `RUST_LOG=off`,
//! jetforce's log goes to a null device.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use twistor_protocols::gemini::{Server, StaticFiles, VirtualHost};
use twistor_reactor::Reactor;

use crate::cpu::pin_to;
use crate::peers::certs::CertFiles;
use crate::peers::python::Python;
use crate::peers::{agate, Available};
use crate::proc::{free_port, Launch, PortFrom, Proc};
use crate::table::{Columns, Grid, Sample};
use crate::tls::client_config;
use crate::tls_load::{self, TlsMode, TlsSpec, Until};

/// Clients at once.
pub const CLIENTS: usize = 16;
/// The large file's size.
const LARGE: usize = 1 << 20;

/// Settings.
#[derive(Debug, Clone)]
pub struct GeminiConfig {
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
    /// Clients at once.
    pub clients: usize,
}

impl Default for GeminiConfig {
    fn default() -> Self {
        GeminiConfig {
            rounds: 3,
            server_core: 0,
            client_core: 1,
            warmup: Duration::from_millis(300),
            window: Duration::from_millis(1200),
            quiet_wait: Duration::from_secs(3),
            clients: CLIENTS,
        }
    }
}

impl GeminiConfig {
    /// The smoke-run settings.
    pub fn quick() -> GeminiConfig {
        GeminiConfig {
            rounds: 1,
            warmup: Duration::from_millis(150),
            window: Duration::from_millis(400),
            quiet_wait: Duration::ZERO,
            ..GeminiConfig::default()
        }
    }
}

/// The capsule every server serves: `small.gmi` (a short page) and
/// `large.txt` (1 MiB).
pub fn capsule() -> io::Result<PathBuf> {
    let dir = crate::peers::dir().join("capsule");
    std::fs::create_dir_all(&dir)?;
    let page = "# A small capsule\n\nThe page every Gemini server of the bench serves: a heading, \
                a paragraph, and a few links.\n\n=> large.txt One mebibyte of text\n\
                => gemini://localhost/ Home\n\n* one\n* two\n* three\n";
    std::fs::write(dir.join("index.gmi"), page)?;
    std::fs::write(dir.join("small.gmi"), page)?;
    let line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.!\n";
    let large: Vec<u8> = line.iter().copied().cycle().take(LARGE).collect();
    std::fs::write(dir.join("large.txt"), large)?;
    Ok(dir)
}

/// `twistor-bench gemini-server --dir D --cert C --key K [--cpu N]`:
/// `twistor gemini --dir D --tls-certfile C --tls-keyfile K` on a free port
/// of 127.0.0.1, announced on stdout.
pub fn cmd_server(f: &crate::Flags) -> Result<(), String> {
    let dir: String = f.get("--dir")?.ok_or("gemini-server needs --dir")?;
    let cert: String = f.get("--cert")?.ok_or("gemini-server needs --cert")?;
    let key: String = f.get("--key")?.ok_or("gemini-server needs --key")?;
    if let Some(core) = f.get::<usize>("--cpu")? {
        pin_to(core).map_err(|e| e.to_string())?;
    }
    let run = || -> io::Result<()> {
        let host = VirtualHost::new("localhost", StaticFiles::new(&dir))
            .alias("127.0.0.1")
            .alias("::1")
            .cert_files(&cert, &key);
        let server = Server::builder().host(host).build()?;
        let mut r = Reactor::new()?;
        let port = server.listen(&mut r, std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
        crate::servers::announce(port.local_addr());
        r.run()
    };
    run().map_err(|e| e.to_string())
}

/// A Gemini server of the comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Peer {
    Twistor,
    Agate,
    Jetforce,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Twistor => "twistor",
            Peer::Agate => "agate",
            Peer::Jetforce => "jetforce",
        }
    }

    fn start(self, core: usize, dir: &Path, certs: &CertFiles, avail: &Available) -> io::Result<Proc> {
        let path = |p: &Path| p.display().to_string();
        match self {
            Peer::Twistor => {
                let args = [
                    "gemini-server".into(),
                    "--dir".into(),
                    path(dir),
                    "--cert".into(),
                    path(&certs.cert_pem),
                    "--key".into(),
                    path(&certs.key_pem),
                    "--cpu".into(),
                    core.to_string(),
                ];
                Proc::start_self("twistor", &args)
            }
            Peer::Agate => {
                let bin = avail.agate.as_ref().ok_or_else(|| io::Error::other("no agate"))?;
                agate::serve(bin, dir, certs, core)
            }
            Peer::Jetforce => {
                let py = avail
                    .python
                    .as_ref()
                    .ok_or_else(|| io::Error::other("no Python"))?;
                jetforce(py, dir, certs, core)
            }
        }
    }
}

fn jetforce(py: &Python, dir: &Path, certs: &CertFiles, core: usize) -> io::Result<Proc> {
    let port = free_port()?;
    let path = |p: &Path| p.display().to_string();
    Proc::spawn(Launch {
        name: "jetforce",
        program: &py.bin.join("jetforce"),
        args: vec![
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--hostname".into(),
            "localhost".into(),
            "--tls-certfile".into(),
            path(&certs.cert_pem),
            "--tls-keyfile".into(),
            path(&certs.key_pem),
            "--dir".into(),
            path(dir),
        ],
        env: Vec::new(),
        core: Some(core),
        port: PortFrom::Told(port),
        stderr: false,
    })
}

/// The cases: a file, with full or resumed handshakes.
#[derive(Debug, Clone, Copy)]
struct Case {
    file: &'static str,
    resumed: bool,
}

impl Case {
    fn name(self) -> String {
        let what = if self.file == "small.gmi" {
            "small .gmi"
        } else {
            "1 MiB file"
        };
        let how = if self.resumed { "resumed" } else { "full handshake" };
        format!("{what}, {how}")
    }
}

fn measure(cfg: &GeminiConfig, case: Case, p: &Proc, certs: &CertFiles) -> io::Result<Sample> {
    let url = format!("gemini://localhost:{}/{}\r\n", p.addr.port(), case.file);
    let spec = TlsSpec {
        addr: p.addr,
        server_name: "localhost",
        config: client_config(certs, case.resumed)?,
        mode: TlsMode::Exchange,
        conns: cfg.clients,
        request: url.into_bytes(),
        until: Until::Close,
        expect_prefix: b"20 ".to_vec(),
        warmup: cfg.warmup,
        window: cfg.window,
    };
    Ok(tls_load::sample(&spec, p, cfg.server_core)?.0)
}

/// Run the Gemini comparison and return its section of the report.
pub fn compare(cfg: &GeminiConfig, certs: &CertFiles, avail: &Available) -> io::Result<String> {
    pin_to(cfg.client_core)?;
    let dir = capsule()?;
    let mut peers = vec![Peer::Twistor];
    if avail.agate.is_some() {
        peers.push(Peer::Agate);
    }
    if avail.python.is_some() {
        peers.push(Peer::Jetforce);
    }
    let servers: Vec<Proc> = peers
        .iter()
        .map(|p| p.start(cfg.server_core, &dir, certs, avail))
        .collect::<io::Result<_>>()?;
    let cases: Vec<Case> = ["small.gmi", "large.txt"]
        .into_iter()
        .flat_map(|file| [false, true].map(|resumed| Case { file, resumed }))
        .collect();
    let names: Vec<String> = peers.iter().map(|p| p.name().to_string()).collect();
    let mut grid = Grid::new(cases.iter().map(|c| c.name()).collect(), names, cfg.rounds);
    let t0 = Instant::now();
    let mut quiet = 0;
    for round in 0..cfg.rounds {
        if crate::quiet::wait(cfg.quiet_wait, &[cfg.server_core, cfg.client_core]) {
            quiet += 1;
        }
        for (ci, &case) in cases.iter().enumerate() {
            for k in 0..servers.len() {
                let si = (k + round) % servers.len();
                let s = measure(cfg, case, &servers[si], certs)?;
                eprintln!(
                    "gemini round {}/{} {:28} {:9} {:>8.0} req/s {:>9.1} us CPU/req, {:.0}% resumed, load generator {:.0}% CPU",
                    round + 1,
                    cfg.rounds,
                    case.name(),
                    servers[si].name,
                    s.rate,
                    s.cpu_us,
                    s.extra * 100.0,
                    s.client
                );
                grid.put(ci, si, round, s);
            }
        }
    }
    eprintln!("gemini: {:.0} s", t0.elapsed().as_secs_f64());
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} clients, each request a new TCP connection and TLS handshake, the whole response \
         read up to the server's close; servers pinned to core {}, the load generator to core {}; \
         medians over {} interleaved rounds ({quiet} started on quiet cores), {:.1} s windows.\n",
        cfg.clients,
        cfg.server_core,
        cfg.client_core,
        cfg.rounds,
        cfg.window.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "{}\n{}",
        grid.markdown(&Columns {
            rate: "req/s",
            cpu: "us/req",
            latency: true,
            extra: Some("share resumed"),
        }),
        grid.quiet_line()
    );
    let mut targets = String::new();
    for (si, peer) in peers.iter().enumerate().skip(1) {
        let (need, label) = match peer {
            Peer::Agate => (1.5, "agate"),
            _ => (20.0, "jetforce"),
        };
        for (ci, case) in cases.iter().enumerate() {
            let need = if *peer == Peer::Agate && case.file != "small.gmi" {
                1.0
            } else {
                need
            };
            let r = grid.ratio(ci, si, |x| x.rate);
            let verdict = if r >= need { "met" } else { "**missed**" };
            let _ = writeln!(
                targets,
                "- {}: twistor / {label} = {r:.2} (target {need}x): {verdict}",
                case.name()
            );
        }
    }
    let _ = writeln!(s, "Targets (req/s):\n\n{targets}");
    Ok(s)
}
