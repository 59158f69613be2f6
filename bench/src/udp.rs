//! `twistor-bench udp`: UDP echo, twistor against a naive hand-written mio
//! loop and tokio's `current_thread` runtime, with 32 and 256 datagrams in
//! flight. Each server runs as its own process pinned to one core, the
//! load generator (`udp_load.rs`) here pinned to another; rounds are
//! interleaved, figures are medians, ratios are medians of per-round
//! ratios (as for TCP, see `run.rs`).

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::cpu::{pin_to, CpuTime};
use crate::servers::{self, mio_udp, tokio_udp, twistor_udp};
use crate::stats::{median, paired_ratio, range};
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

/// A server child process that prints its port on its first stdout line
/// and ends when its stdin closes (see `servers::announce`).
pub struct Proc {
    /// What it is, for reports.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Proc {
    /// Start `program args...` and read its port.
    pub fn start(name: &str, program: &str, args: &[String]) -> io::Result<Proc> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        out.read_line(&mut line)?;
        let Ok(port) = line.trim().parse::<u16>() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!("{name} server did not start")));
        };
        Ok(Proc {
            name: name.to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            out,
        })
    }

    /// Start this binary with `args`.
    pub fn start_self(name: &str, args: &[String]) -> io::Result<Proc> {
        let exe = std::env::current_exe()?;
        Proc::start(name, &exe.to_string_lossy(), args)
    }

    /// The server's CPU time so far.
    pub fn cpu(&self) -> CpuTime {
        CpuTime::of(self.child.id()).unwrap_or_default()
    }

    /// Close its stdin, wait for it to exit, and return what else it printed.
    pub fn finish(mut self) -> io::Result<String> {
        drop(self.child.stdin.take());
        let mut rest = String::new();
        self.out.read_to_string(&mut rest)?;
        self.child.wait()?;
        Ok(rest)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        // Ended already after `finish`; otherwise make sure it ends.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
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
            rounds: 7,
            inflight: vec![32, 256],
            size: 64,
            warmup: Duration::from_millis(300),
            window: Duration::from_millis(1500),
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

/// One server's figures in one round.
#[derive(Debug, Clone, Copy, Default)]
struct Round {
    rate: f64,
    cpu_share: f64,
    us_per: f64,
    lost: f64,
}

/// Run the comparison and return the report (markdown).
pub fn compare(cfg: &UdpConfig) -> io::Result<String> {
    pin_to(cfg.client_core)?;
    let servers: Vec<Proc> = cfg
        .servers
        .iter()
        .map(|k| {
            let args = ["udp-server", k.name(), "--cpu", &cfg.server_core.to_string()].map(String::from);
            Proc::start_self(k.name(), &args)
        })
        .collect::<io::Result<_>>()?;
    let n = servers.len();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Medians over {} interleaved rounds; servers pinned to core {}, load generator to core {}; \
         {} B datagrams, one client socket, every echo answered by a new datagram; \
         {} KiB receive buffer on every server.\n",
        cfg.rounds,
        cfg.server_core,
        cfg.client_core,
        cfg.size,
        RCVBUF / 1024
    );
    for &w in &cfg.inflight {
        let mut rounds = vec![vec![Round::default(); cfg.rounds]; n];
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
                let (o, a, b) = udp_load::run(&spec, || servers[i].cpu())?;
                let cpu = b.since(&a);
                let t = cpu.clock.unwrap_or(cpu.stat);
                rounds[i][round] = Round {
                    rate: o.rate(),
                    cpu_share: t.as_secs_f64() / o.elapsed.as_secs_f64() * 100.0,
                    us_per: t.as_secs_f64() * 1e6 / o.datagrams.max(1) as f64,
                    lost: o.lost as f64,
                };
                eprintln!(
                    "udp {w} in flight, round {}/{} {:15}: {:>8.0} datagrams/s, {:.2} us CPU/datagram, {} lost",
                    round + 1,
                    cfg.rounds,
                    servers[i].name,
                    o.rate(),
                    rounds[i][round].us_per,
                    o.lost
                );
            }
        }
        report(&mut s, w, &servers, &rounds);
    }
    let _ = writeln!(
        s,
        "Targets: twistor at least 1.1x the mio loop's datagrams/s and at most 0.9x its CPU per datagram."
    );
    Ok(s)
}

fn report(s: &mut String, w: usize, servers: &[Proc], rounds: &[Vec<Round>]) {
    let col = |i: usize, f: fn(&Round) -> f64| -> Vec<f64> { rounds[i].iter().map(f).collect() };
    let _ = writeln!(s, "### {w} datagrams in flight\n");
    let _ = writeln!(
        s,
        "| server | datagrams/s (min-max) | server CPU | server us/datagram | lost |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|");
    for (i, p) in servers.iter().enumerate() {
        let (lo, hi) = range(&col(i, |r| r.rate));
        let _ = writeln!(
            s,
            "| {} | {:.0} ({:.0}-{:.0}) | {:.0}% | {:.3} | {:.0} |",
            p.name,
            median(&col(i, |r| r.rate)),
            lo,
            hi,
            median(&col(i, |r| r.cpu_share)),
            median(&col(i, |r| r.us_per)),
            col(i, |r| r.lost).iter().sum::<f64>(),
        );
    }
    let _ = writeln!(
        s,
        "\n| {} vs | datagrams/s | CPU per datagram |\n|---|---|---|",
        servers[0].name
    );
    for (i, p) in servers.iter().enumerate().skip(1) {
        let _ = writeln!(
            s,
            "| {} | {:.2} | {:.2} |",
            p.name,
            paired_ratio(&col(0, |r| r.rate), &col(i, |r| r.rate)),
            paired_ratio(&col(0, |r| r.us_per), &col(i, |r| r.us_per)),
        );
    }
    let _ = writeln!(s);
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
    println!("{}", compare(&cfg).map_err(|e| e.to_string())?);
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
