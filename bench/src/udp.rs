//! `twistor-bench udp`: UDP echo, twistor against a naive hand-written mio
//! loop and tokio's `current_thread` runtime, with 32 and 256 datagrams in
//! flight. Each server runs as its own process pinned to one core, the
//! load generator (`udp_load.rs`) here pinned to another; rounds are
//! interleaved, figures are medians, ratios are medians of per-round
//! ratios (as for TCP, see `run.rs`).

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::cpu::{core_busy, pin_to};
use crate::peers::python::{Python, Script};
use crate::proc::Proc;
use crate::servers::{self, mio_udp, tokio_udp, twistor_udp};
use crate::table::{Columns, Grid, Sample};
use crate::udp_load::{self, UdpSpec};

/// Receive buffer every UDP server gets (room for 256 in flight and more).
pub const RCVBUF: usize = 4 << 20;

/// Which UDP echo server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpKind {
    /// twistor: `listen_udp` with `UdpEcho`, batches of the default size.
    Twistor,
    /// twistor with batches of one (`recvmsg` / `sendmsg` per datagram):
    /// what batching is measured against.
    TwistorOne,
    /// The naive hand-written mio loop.
    Mio,
    /// tokio's `current_thread` runtime.
    Tokio,
}

impl UdpKind {
    /// Every UDP server there is.
    pub const ALL: [UdpKind; 4] = [
        UdpKind::Twistor,
        UdpKind::TwistorOne,
        UdpKind::Mio,
        UdpKind::Tokio,
    ];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            UdpKind::Twistor => "twistor",
            UdpKind::TwistorOne => "twistor-batch1",
            UdpKind::Mio => "mio",
            UdpKind::Tokio => "tokio",
        }
    }

    /// Parse a command-line name.
    pub fn parse(s: &str) -> Option<UdpKind> {
        UdpKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// Run UDP echo server `kind` on 127.0.0.1 until the process ends.
pub fn serve(kind: UdpKind, port: u16, bound: impl FnOnce(SocketAddr)) -> io::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    match kind {
        UdpKind::Twistor => twistor_udp::serve(addr, RCVBUF, None, bound),
        UdpKind::TwistorOne => twistor_udp::serve(addr, RCVBUF, Some(1), bound),
        UdpKind::Mio => mio_udp::serve(addr, RCVBUF, bound),
        UdpKind::Tokio => tokio_udp::serve(addr, RCVBUF, bound),
    }
}

/// Settings for the UDP comparison.
#[derive(Debug, Clone)]
pub struct UdpConfig {
    /// Interleaved rounds.
    pub rounds: usize,
    /// Datagrams in flight, one table each.
    pub inflight: Vec<usize>,
    /// Datagram size.
    pub size: usize,
    /// Warm-up before each window.
    pub warmup: Duration,
    /// Measured window.
    pub window: Duration,
    /// Core the servers are pinned to.
    pub server_core: usize,
    /// Core the load generator is pinned to.
    pub client_core: usize,
    /// The servers; the first is the one the ratios are about.
    pub servers: Vec<UdpKind>,
}

impl Default for UdpConfig {
    fn default() -> Self {
        UdpConfig {
            rounds: 3,
            inflight: vec![32, 256],
            size: 64,
            warmup: Duration::from_millis(300),
            window: Duration::from_millis(1000),
            server_core: 0,
            client_core: 1,
            servers: vec![
                UdpKind::Twistor,
                UdpKind::Mio,
                UdpKind::Tokio,
                UdpKind::TwistorOne,
            ],
        }
    }
}

/// Run the comparison and return the report (markdown). With `py`, the
/// Twisted and asyncio+uvloop UDP echo scripts run too.
pub fn compare(cfg: &UdpConfig, py: Option<&Python>) -> io::Result<String> {
    pin_to(cfg.client_core)?;
    let mut servers: Vec<Proc> = cfg
        .servers
        .iter()
        .map(|k| {
            let args = ["udp-server", k.name(), "--cpu", &cfg.server_core.to_string()].map(String::from);
            Proc::start_self(k.name(), &args)
        })
        .collect::<io::Result<_>>()?;
    if let Some(py) = py {
        for (script, name) in [(Script::Twisted, "Twisted"), (Script::Asyncio, "asyncio+uvloop")] {
            servers.push(py.echo(script, name, &["udp".into()], cfg.server_core)?);
        }
    }
    let n = servers.len();
    let names: Vec<String> = servers.iter().map(|p| p.name.clone()).collect();
    let cases: Vec<String> = cfg.inflight.iter().map(|w| format!("{w} in flight")).collect();
    let mut grid = Grid::new(cases, names, cfg.rounds);
    let mut lost = vec![0u64; n];
    for (ci, &w) in cfg.inflight.iter().enumerate() {
        for round in 0..cfg.rounds {
            for k in 0..n {
                let i = (k + round) % n;
                let spec = UdpSpec {
                    addr: servers[i].addr,
                    inflight: w,
                    size: cfg.size,
                    warmup: cfg.warmup,
                    window: cfg.window,
                    max_datagrams: u64::MAX,
                    loss_timeout: Duration::from_millis(50),
                };
                let probe = || (servers[i].cpu(), core_busy(cfg.server_core).unwrap_or_default());
                let (o, a, b) = udp_load::run(&spec, probe)?;
                let cpu = b.0.since(&a.0);
                let t = cpu.clock.unwrap_or(cpu.stat).as_secs_f64();
                let secs = o.elapsed.as_secs_f64().max(1e-9);
                let sample = Sample {
                    rate: o.rate(),
                    cpu_us: t * 1e6 / o.datagrams.max(1) as f64,
                    share: t / secs * 100.0,
                    foreign: b.1.saturating_sub(a.1).saturating_sub(cpu.stat).as_secs_f64() / secs * 100.0,
                    extra: o.lost as f64,
                    ..Sample::default()
                };
                lost[i] += o.lost;
                eprintln!(
                    "udp {w} in flight, round {}/{} {:15}: {:>8.0} datagrams/s, {:.2} us CPU/datagram, {} lost",
                    round + 1,
                    cfg.rounds,
                    servers[i].name,
                    sample.rate,
                    sample.cpu_us,
                    o.lost
                );
                grid.put(ci, i, round, sample);
            }
        }
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Medians over {} interleaved rounds; servers pinned to core {}, load generator to core {}; \
         {} B datagrams, one client socket, every echo answered by a new datagram; \
         {} KiB receive buffer on every server; {:.1} s windows. Datagrams lost (counted after 50 ms \
         of silence, then sent again) per window, median, in the last column.\n",
        cfg.rounds,
        cfg.server_core,
        cfg.client_core,
        cfg.size,
        RCVBUF / 1024,
        cfg.window.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "{}\n{}",
        grid.markdown(&Columns {
            rate: "datagrams/s",
            cpu: "us/datagram",
            latency: false,
            extra: Some("lost"),
        }),
        grid.quiet_line()
    );
    let mio = servers.iter().position(|p| p.name == "mio");
    if let Some(m) = mio {
        for (ci, w) in cfg.inflight.iter().enumerate() {
            let r = grid.ratio(ci, m, |x| x.rate);
            let c = grid.ratio(ci, m, |x| x.cpu_us);
            let _ = writeln!(
                s,
                "- {w} in flight: twistor / mio {r:.2} datagrams/s (target at least 1.1: {}), {c:.2} CPU per datagram (target at most 0.9: {})",
                if r >= 1.1 { "met" } else { "**missed**" },
                if c <= 0.9 { "met" } else { "**missed**" },
            );
        }
    }
    Ok(s)
}

/// `twistor-bench udp-server KIND [--port P] [--cpu N]`.
pub fn cmd_server(kind: Option<&String>, f: &crate::Flags) -> Result<(), String> {
    let kind = kind
        .and_then(|k| UdpKind::parse(k))
        .ok_or("udp-server needs a kind: twistor, twistor-batch1, mio or tokio")?;
    if let Some(core) = f.get::<usize>("--cpu")? {
        pin_to(core).map_err(|e| e.to_string())?;
    }
    serve(kind, f.or("--port", 0)?, servers::announce).map_err(|e| e.to_string())
}

/// `twistor-bench udp-load --port P [--inflight W] [--count N] [--size B] [--secs S] [--cpu N]`:
/// drive a running UDP echo server (for profiling one by hand).
pub fn cmd_load(f: &crate::Flags) -> Result<(), String> {
    let port: u16 = f.get("--port")?.ok_or("udp-load needs --port")?;
    if let Some(core) = f.get::<usize>("--cpu")? {
        pin_to(core).map_err(|e| e.to_string())?;
    }
    let spec = UdpSpec {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        inflight: f.or("--inflight", 32)?,
        size: f.or("--size", 64)?,
        warmup: Duration::ZERO,
        window: Duration::from_secs_f64(f.or("--secs", 10.0f64)?.clamp(0.1, 600.0)),
        max_datagrams: f.or("--count", u64::MAX)?,
        loss_timeout: Duration::from_secs(1),
    };
    let (o, (), ()) = udp_load::run(&spec, || ()).map_err(|e| e.to_string())?;
    println!("{} echoes ({:.0}/s), {} lost", o.datagrams, o.rate(), o.lost);
    Ok(())
}

/// `twistor-bench udp [--rounds N] [--quick] ...`.
pub fn cmd_compare(f: &crate::Flags) -> Result<(), String> {
    let cfg = config(f)?;
    println!("## UDP echo: twistor vs mio vs tokio\n");
    let py = crate::peers::python::Python::ensure().ok();
    println!("{}", compare(&cfg, py.as_ref()).map_err(|e| e.to_string())?);
    Ok(())
}

/// The UDP settings from the command line (shared with `all`).
pub fn config(f: &crate::Flags) -> Result<UdpConfig, String> {
    let mut cfg = UdpConfig::default();
    if f.has("--quick") {
        cfg.rounds = 1;
        cfg.warmup = Duration::from_millis(100);
        cfg.window = Duration::from_millis(500);
    }
    cfg.rounds = f.or("--rounds", cfg.rounds)?.max(1);
    cfg.size = f.or("--size", cfg.size)?.clamp(1, 65_000);
    cfg.server_core = f.or("--server-cpu", cfg.server_core)?;
    cfg.client_core = f.or("--client-cpu", cfg.client_core)?;
    if let Some(secs) = f.get::<f64>("--secs")? {
        cfg.window = Duration::from_secs_f64(secs.clamp(0.1, 60.0));
    }
    Ok(cfg)
}
