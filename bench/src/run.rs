//! `twistor-bench all`: the whole comparison in one run. The three servers
//! run as separate processes pinned to one core, the load generator runs
//! here pinned to another; rounds are interleaved (the server order rotates
//! each round) and every figure is the median over rounds.

use std::fmt::Write as _;
use std::io;
use std::time::{Duration, Instant};

use crate::cpu::{pin_to, CpuTime};
use crate::load::{self, Mode, Spec};
use crate::servers::Kind;
use crate::servers_proc::ServerProcess;
use crate::stats::{median, range, ratio};

/// Settings for the comparison (each has a command-line flag).
#[derive(Debug, Clone)]
pub struct Config {
    /// Interleaved rounds.
    pub rounds: usize,
    /// Core the servers are pinned to.
    pub server_core: usize,
    /// Core the load generator is pinned to.
    pub client_core: usize,
    /// Connections for request/response and paced load.
    pub conns: usize,
    /// Request size in bytes.
    pub size: usize,
    /// Paced load, requests per second.
    pub rate: u64,
    /// Bulk: connections, chunk size, bytes in flight per connection.
    pub bulk_conns: usize,
    /// Bulk chunk size.
    pub bulk_chunk: usize,
    /// Bulk window per connection.
    pub bulk_window: usize,
    /// Warm-up before each measured window.
    pub warmup: Duration,
    /// Request/response window.
    pub rr_window: Duration,
    /// Bulk window.
    pub bulk_window_time: Duration,
    /// Paced window.
    pub paced_window: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rounds: 5,
            server_core: 0,
            client_core: 1,
            conns: 50,
            size: 64,
            rate: 50_000,
            bulk_conns: 1,
            bulk_chunk: 64 * 1024,
            bulk_window: 256 * 1024,
            warmup: Duration::from_millis(300),
            rr_window: Duration::from_secs(2),
            bulk_window_time: Duration::from_millis(1500),
            paced_window: Duration::from_secs(3),
        }
    }
}

/// One server's figures for one round.
#[derive(Debug, Clone, Default)]
struct Round {
    rr_rate: f64,
    rr_server_cpu: f64,
    rr_client_cpu: f64,
    bulk_mb: f64,
    bulk_server_cpu: f64,
    paced_rate: f64,
    paced_missed: f64,
    paced_us_stat: f64,
    paced_us_clock: f64,
    p50_us: f64,
    p99_us: f64,
}

/// The CPU used by the server and by this process over a window.
#[derive(Clone, Copy)]
struct Cpus {
    server: CpuTime,
    client: CpuTime,
}

fn measure(server: &ServerProcess, spec: &Spec) -> io::Result<(load::Outcome, Cpus)> {
    let me = std::process::id();
    let (out, a, b) = load::run(spec, || Cpus {
        server: server.cpu(),
        client: CpuTime::of(me).unwrap_or_default(),
    })?;
    Ok((
        out,
        Cpus {
            server: b.server.since(&a.server),
            client: b.client.since(&a.client),
        },
    ))
}

/// Share of one core: the precise clock when available, else the tick count.
fn share(cpu: &CpuTime, elapsed: Duration) -> f64 {
    cpu.clock.unwrap_or(cpu.stat).as_secs_f64() / elapsed.as_secs_f64().max(1e-9) * 100.0
}

fn one_round(cfg: &Config, server: &ServerProcess) -> io::Result<Round> {
    let base = Spec {
        addr: server.addr,
        mode: Mode::RequestResponse,
        conns: cfg.conns,
        size: cfg.size,
        warmup: cfg.warmup,
        window: cfg.rr_window,
        max_requests: 50_000_000,
    };
    let (rr, rr_cpu) = measure(server, &base)?;
    let bulk_spec = Spec {
        mode: Mode::Bulk {
            window: cfg.bulk_window,
        },
        conns: cfg.bulk_conns,
        size: cfg.bulk_chunk,
        window: cfg.bulk_window_time,
        ..base.clone()
    };
    let (bulk, bulk_cpu) = measure(server, &bulk_spec)?;
    let paced_spec = Spec {
        mode: Mode::Paced { rate: cfg.rate },
        window: cfg.paced_window,
        ..base.clone()
    };
    let (paced, paced_cpu) = measure(server, &paced_spec)?;
    let per_req = |d: Duration| d.as_secs_f64() * 1e6 / paced.requests.max(1) as f64;
    let (p50, p99) = paced.latency.unwrap_or_default();
    Ok(Round {
        rr_rate: rr.rate(),
        rr_server_cpu: share(&rr_cpu.server, rr.elapsed),
        rr_client_cpu: share(&rr_cpu.client, rr.elapsed),
        bulk_mb: bulk.mb_per_s(),
        bulk_server_cpu: share(&bulk_cpu.server, bulk.elapsed),
        paced_rate: paced.rate(),
        paced_missed: paced.missed as f64,
        paced_us_stat: per_req(paced_cpu.server.stat),
        paced_us_clock: paced_cpu.server.clock.map_or(f64::NAN, per_req),
        p50_us: p50.as_secs_f64() * 1e6,
        p99_us: p99.as_secs_f64() * 1e6,
    })
}

/// Run the comparison and return the report (markdown).
pub fn compare(cfg: &Config) -> io::Result<String> {
    pin_to(cfg.client_core)?;
    let servers: Vec<ServerProcess> = Kind::ALL
        .iter()
        .map(|&k| ServerProcess::start(k, cfg.server_core))
        .collect::<io::Result<_>>()?;
    let mut rounds: Vec<Vec<Round>> = vec![Vec::new(); servers.len()];
    let t0 = Instant::now();
    for round in 0..cfg.rounds {
        for k in 0..servers.len() {
            let i = (k + round) % servers.len();
            let r = one_round(cfg, &servers[i])?;
            eprintln!(
                "round {}/{} {:8}: {:>8.0} req/s  {:>7.1} MB/s  paced {:>6.0} req/s at {:.2} us CPU/req (p99 {:.0} us)",
                round + 1,
                cfg.rounds,
                servers[i].kind.name(),
                r.rr_rate,
                r.bulk_mb,
                r.paced_rate,
                r.paced_us_clock,
                r.p99_us
            );
            rounds[i].push(r);
        }
    }
    eprintln!("comparison took {:.0} s", t0.elapsed().as_secs_f64());
    Ok(report(cfg, &servers, &rounds))
}

fn report(cfg: &Config, servers: &[ServerProcess], rounds: &[Vec<Round>]) -> String {
    let col = |i: usize, f: fn(&Round) -> f64| -> Vec<f64> { rounds[i].iter().map(f).collect() };
    let med = |i: usize, f: fn(&Round) -> f64| median(&col(i, f));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Medians over {} interleaved rounds; servers pinned to core {}, load generator to core {}.\n",
        cfg.rounds, cfg.server_core, cfg.client_core
    );
    let _ = writeln!(
        s,
        "| server | req/s ({} conns, {} B) | server CPU | client CPU | bulk MB/s ({} conn, {} KiB chunks) | server CPU | paced req/s (target {}) | CPU us/req (/proc stat) | CPU us/req (ns clock) | p50 us | p99 us |",
        cfg.conns,
        cfg.size,
        cfg.bulk_conns,
        cfg.bulk_chunk / 1024,
        cfg.rate
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, srv) in servers.iter().enumerate() {
        let (lo, hi) = range(&col(i, |r| r.rr_rate));
        let _ = writeln!(
            s,
            "| {} | {:.0} ({:.0}-{:.0}) | {:.0}% | {:.0}% | {:.0} | {:.0}% | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} |",
            srv.kind.name(),
            med(i, |r| r.rr_rate),
            lo,
            hi,
            med(i, |r| r.rr_server_cpu),
            med(i, |r| r.rr_client_cpu),
            med(i, |r| r.bulk_mb),
            med(i, |r| r.bulk_server_cpu),
            med(i, |r| r.paced_rate),
            med(i, |r| r.paced_us_stat),
            med(i, |r| r.paced_us_clock),
            med(i, |r| r.p50_us),
            med(i, |r| r.p99_us),
        );
    }
    let missed: f64 = rounds.iter().flatten().map(|r| r.paced_missed).sum();
    if missed > 0.0 {
        let _ = writeln!(
            s,
            "\nPaced load missed {missed:.0} request slots in total (all connections busy)."
        );
    }
    let _ = writeln!(s, "\nRatios (twistor / other; medians):\n");
    let _ = writeln!(
        s,
        "| vs | req/s | bulk MB/s | CPU per request at {} req/s (ns clock) | CPU per request (/proc stat) |",
        cfg.rate
    );
    let _ = writeln!(s, "|---|---|---|---|---|");
    for (i, srv) in servers.iter().enumerate().skip(1) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            srv.kind.name(),
            ratio(med(0, |r| r.rr_rate), med(i, |r| r.rr_rate)),
            ratio(med(0, |r| r.bulk_mb), med(i, |r| r.bulk_mb)),
            ratio(med(0, |r| r.paced_us_clock), med(i, |r| r.paced_us_clock)),
            ratio(med(0, |r| r.paced_us_stat), med(i, |r| r.paced_us_stat)),
        );
    }
    s
}
