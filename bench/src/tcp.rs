//! The TCP echo area: every case on every server, in one run.
//!
//! Servers: twistor (`listen_tcp` + `Echo`), the hand-written mio loop,
//! tokio `current_thread`, optionally the mio loop stopping at a short
//! read, and, when the bench's Python environment is there, Twisted and
//! asyncio on uvloop. Each is its own process pinned to the server core;
//! the load generator (`load.rs`) runs here, pinned to the other core.
//!
//! Cases: request/response at 64 B, 1 KiB and 16 KiB with 1, 10 and 100
//! connections (req/s, latency, server CPU per request); paced load at a
//! fixed rate over 50 and 100 connections (CPU per request at the same
//! load; the Rust servers only, the Python ones cannot keep the rate);
//! bulk (one connection, 64 KiB chunks); churn (connect, one 64 B echo,
//! close, again, 10 at a time). Rounds are interleaved: each case runs on
//! every server back to back, the order rotating each round.

use std::fmt::Write as _;
use std::io;
use std::time::{Duration, Instant};

use crate::cpu::{core_busy, pin_to, CpuTime};
use crate::load::{self, Mode, Spec};
use crate::peers::python::{Python, Script};
use crate::proc::Proc;
use crate::servers::Kind;
use crate::table::{Columns, Grid, Sample};

/// Settings (each has a flag).
#[derive(Debug, Clone)]
pub struct Config {
    /// Interleaved rounds.
    pub rounds: usize,
    /// Core the servers are pinned to.
    pub server_core: usize,
    /// Core the load generator is pinned to.
    pub client_core: usize,
    /// Request sizes of the request/response matrix.
    pub sizes: Vec<usize>,
    /// Connection counts of the matrix.
    pub conns: Vec<usize>,
    /// Connection counts of the paced cases.
    pub paced_conns: Vec<usize>,
    /// Paced rate, requests per second in all.
    pub rate: u64,
    /// Connections opened at once in the churn case.
    pub churn_conns: usize,
    /// Warm-up before each window.
    pub warmup: Duration,
    /// Request/response, bulk and churn window.
    pub window: Duration,
    /// Paced window.
    pub paced_window: Duration,
    /// Before each round, wait up to this long for both cores to be quiet.
    pub quiet_wait: Duration,
    /// Add the mio loop that stops at a short read.
    pub with_mio_short: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rounds: 3,
            server_core: 0,
            client_core: 1,
            sizes: vec![64, 1024, 16 * 1024],
            conns: vec![1, 10, 100],
            paced_conns: vec![50, 100],
            rate: 50_000,
            churn_conns: 10,
            warmup: Duration::from_millis(200),
            window: Duration::from_millis(800),
            paced_window: Duration::from_millis(1500),
            quiet_wait: Duration::from_secs(3),
            with_mio_short: false,
        }
    }
}

impl Config {
    /// The smoke-run settings (`--quick`).
    pub fn quick() -> Config {
        Config {
            rounds: 1,
            warmup: Duration::from_millis(100),
            window: Duration::from_millis(250),
            paced_window: Duration::from_millis(400),
            quiet_wait: Duration::ZERO,
            ..Config::default()
        }
    }
}

/// A TCP echo server of the comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Server {
    Own(Kind),
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

    fn start(self, core: usize, py: Option<&Python>) -> io::Result<Proc> {
        match (self, py) {
            (Server::Own(k), _) => {
                let args = ["server", k.name(), "--cpu", &core.to_string()].map(String::from);
                Proc::start_self(k.name(), &args)
            }
            (Server::Python(s), Some(py)) => py.echo(s, self.name(), &["tcp".into()], core),
            (Server::Python(_), None) => Err(io::Error::other("no Python environment")),
        }
    }
}

/// One measured case.
#[derive(Debug, Clone, Copy)]
enum Case {
    Rr { size: usize, conns: usize },
    Paced { conns: usize },
    Bulk,
    Churn,
}

impl Case {
    fn name(self, cfg: &Config) -> String {
        match self {
            Case::Rr { size, conns } => format!("{} x {conns} conn", size_name(size)),
            Case::Paced { conns } => format!("64 B x {conns} conn, paced {} req/s", cfg.rate),
            Case::Bulk => "1 conn, 64 KiB chunks, 256 KiB in flight".into(),
            Case::Churn => format!("connect + 64 B echo + close, {} at once", cfg.churn_conns),
        }
    }

    /// Which table it goes in: 0 request/response, 1 bulk, 2 churn.
    fn table(self) -> usize {
        match self {
            Case::Rr { .. } | Case::Paced { .. } => 0,
            Case::Bulk => 1,
            Case::Churn => 2,
        }
    }

    fn spec(self, cfg: &Config, p: &Proc) -> Spec {
        let base = Spec {
            addr: p.addr,
            mode: Mode::RequestResponse,
            conns: 1,
            size: 64,
            warmup: cfg.warmup,
            window: cfg.window,
            max_requests: 50_000_000,
        };
        match self {
            Case::Rr { size, conns } => Spec { size, conns, ..base },
            Case::Paced { conns } => Spec {
                mode: Mode::Paced { rate: cfg.rate },
                conns,
                window: cfg.paced_window,
                ..base
            },
            Case::Bulk => Spec {
                mode: Mode::Bulk { window: 256 * 1024 },
                size: 64 * 1024,
                ..base
            },
            Case::Churn => Spec {
                mode: Mode::Churn,
                conns: cfg.churn_conns,
                ..base
            },
        }
    }
}

fn size_name(size: usize) -> String {
    if size >= 1024 && size % 1024 == 0 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

/// The server's CPU, and its core's busy time, at one moment.
#[derive(Clone, Copy)]
struct Probe {
    cpu: CpuTime,
    core: Duration,
    me: CpuTime,
}

/// Measure `case` on `p`.
fn measure(cfg: &Config, case: Case, p: &Proc) -> io::Result<Sample> {
    let spec = case.spec(cfg, p);
    let me = std::process::id();
    let probe = || Probe {
        cpu: p.cpu(),
        core: core_busy(cfg.server_core).unwrap_or_default(),
        me: CpuTime::of(me).unwrap_or_default(),
    };
    let (out, a, b) = load::run(&spec, probe)?;
    let cpu = b.cpu.since(&a.cpu);
    let client = b.me.since(&a.me);
    let t = cpu.clock.unwrap_or(cpu.stat).as_secs_f64();
    let secs = out.elapsed.as_secs_f64().max(1e-9);
    let foreign = b
        .core
        .saturating_sub(a.core)
        .saturating_sub(cpu.stat)
        .as_secs_f64()
        / secs
        * 100.0;
    let (p50, p99) = out.latency.map_or((f64::NAN, f64::NAN), |(a, b)| {
        (a.as_secs_f64() * 1e6, b.as_secs_f64() * 1e6)
    });
    Ok(Sample {
        rate: match case {
            Case::Bulk => out.mb_per_s(),
            _ => out.rate(),
        },
        cpu_us: t * 1e6 / out.requests.max(1) as f64,
        share: t / secs * 100.0,
        p50,
        p99,
        foreign,
        extra: out.missed as f64,
        client: client.clock.unwrap_or(client.stat).as_secs_f64() / secs * 100.0,
    })
}

/// Run the TCP echo comparison and return its section of the report.
pub fn compare(cfg: &Config, py: Option<&Python>) -> io::Result<String> {
    pin_to(cfg.client_core)?;
    let mut kinds = vec![
        Server::Own(Kind::Twistor),
        Server::Own(Kind::Mio),
        Server::Own(Kind::Tokio),
    ];
    if cfg.with_mio_short {
        kinds.push(Server::Own(Kind::MioShort));
    }
    if py.is_some() {
        kinds.extend([Server::Python(Script::Twisted), Server::Python(Script::Asyncio)]);
    }
    let servers: Vec<Proc> = kinds
        .iter()
        .map(|k| k.start(cfg.server_core, py))
        .collect::<io::Result<_>>()?;
    let mut cases = Vec::new();
    for &size in &cfg.sizes {
        for &conns in &cfg.conns {
            cases.push(Case::Rr { size, conns });
        }
    }
    cases.extend(cfg.paced_conns.iter().map(|&conns| Case::Paced { conns }));
    cases.extend([Case::Bulk, Case::Churn]);
    let names: Vec<String> = kinds.iter().map(|k| k.name().to_string()).collect();
    let mut grids: Vec<(Grid, Vec<usize>)> = (0..3)
        .map(|t| {
            let mine: Vec<usize> = (0..cases.len()).filter(|&i| cases[i].table() == t).collect();
            let case_names = mine.iter().map(|&i| cases[i].name(cfg)).collect();
            (Grid::new(case_names, names.clone(), cfg.rounds), mine)
        })
        .collect();
    let t0 = Instant::now();
    let mut quiet = 0;
    for round in 0..cfg.rounds {
        if crate::quiet::wait(cfg.quiet_wait, &[cfg.server_core, cfg.client_core]) {
            quiet += 1;
        }
        for (ci, &case) in cases.iter().enumerate() {
            for k in 0..servers.len() {
                let si = (k + round) % servers.len();
                if matches!(case, Case::Paced { .. }) && matches!(kinds[si], Server::Python(_)) {
                    continue;
                }
                let s = measure(cfg, case, &servers[si])?;
                eprintln!(
                    "tcp round {}/{} {:48} {:15} {:>10.0}/s {:>8.2} us CPU/op",
                    round + 1,
                    cfg.rounds,
                    case.name(cfg),
                    servers[si].name,
                    s.rate,
                    s.cpu_us
                );
                let (grid, mine) = &mut grids[case.table()];
                let row = mine.iter().position(|&i| i == ci).expect("case in its table");
                grid.put(row, si, round, s);
            }
        }
    }
    eprintln!("tcp: {:.0} s", t0.elapsed().as_secs_f64());
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Servers pinned to core {}, load generator to core {}; medians over {} interleaved rounds \
         ({} started on quiet cores); {:.1} s windows after {:.1} s of warm-up (paced: {:.1} s). \
         \"us/req\" is the server's CPU time per request (its whole process, from the kernel's \
         CPU clock; /proc/PID/stat gives the same to 10 ms).\n",
        cfg.server_core,
        cfg.client_core,
        cfg.rounds,
        quiet,
        cfg.window.as_secs_f64(),
        cfg.warmup.as_secs_f64(),
        cfg.paced_window.as_secs_f64()
    );
    let titles = [
        (
            "Request/response (each connection sends a message and waits for the whole echo)",
            Columns {
                rate: "req/s",
                cpu: "us/req",
                latency: true,
                extra: None,
            },
        ),
        (
            "Bulk (MB/s echoed; CPU per 64 KiB chunk)",
            Columns {
                rate: "MB/s",
                cpu: "us/chunk",
                latency: false,
                extra: None,
            },
        ),
        (
            "Connection churn (a new connection per request; latency from connect to the whole echo)",
            Columns {
                rate: "conn/s",
                cpu: "us/conn",
                latency: true,
                extra: None,
            },
        ),
    ];
    for ((title, cols), (grid, _)) in titles.iter().zip(&grids) {
        let _ = writeln!(
            s,
            "#### {title}\n\n{}\n{}",
            grid.markdown(cols),
            grid.quiet_line()
        );
    }
    Ok(s)
}
