//! `twistor-bench all`: the whole comparison in one run. The three servers
//! run as separate processes pinned to one core, the load generator runs
//! here pinned to another; rounds are interleaved (the server order rotates
//! each round) and every figure is the median over rounds.

use std::fmt::Write as _;
use std::io;
use std::time::{Duration, Instant};

use crate::cpu::{core_busy, pin_to, CpuTime};
use crate::load::{self, Mode, Spec};
use crate::servers::Kind;
use crate::servers_proc::ServerProcess;
use crate::stats::{median, paired_ratio, range};

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
    /// The servers compared; the first is the one the ratios are about.
    pub servers: Vec<Kind>,
    /// Before each round, wait up to this long for both cores to be quiet
    /// (other processes using under 15 % of each over a quarter second).
    pub quiet_wait: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rounds: 7,
            server_core: 0,
            client_core: 1,
            conns: 50,
            size: 64,
            rate: 50_000,
            bulk_conns: 1,
            bulk_chunk: 64 * 1024,
            bulk_window: 256 * 1024,
            warmup: Duration::from_millis(300),
            rr_window: Duration::from_millis(1500),
            bulk_window_time: Duration::from_secs(1),
            paced_window: Duration::from_secs(2),
            servers: Kind::DEFAULT.to_vec(),
            quiet_wait: Duration::from_secs(5),
        }
    }
}

/// One server's figures for one round.
#[derive(Debug, Clone, Default)]
struct Round {
    rr_rate: f64,
    rr_server_cpu: f64,
    rr_client_cpu: f64,
    rr_us: f64,
    bulk_mb: f64,
    bulk_server_cpu: f64,
    paced_rate: f64,
    paced_missed: f64,
    paced_us_stat: f64,
    paced_us_clock: f64,
    p50_us: f64,
    p99_us: f64,
    /// Per window: % of the server core used by other processes.
    foreign: Vec<f64>,
}

/// The CPU used by the server and by this process over a window, and the
/// busy time of the server's core (whoever used it).
#[derive(Clone, Copy)]
struct Cpus {
    server: CpuTime,
    client: CpuTime,
    server_core: Duration,
}

fn measure(cfg: &Config, server: &ServerProcess, spec: &Spec) -> io::Result<(load::Outcome, Cpus)> {
    let me = std::process::id();
    let (out, a, b) = load::run(spec, || Cpus {
        server: server.cpu(),
        client: CpuTime::of(me).unwrap_or_default(),
        server_core: core_busy(cfg.server_core).unwrap_or_default(),
    })?;
    Ok((
        out,
        Cpus {
            server: b.server.since(&a.server),
            client: b.client.since(&a.client),
            server_core: b.server_core.saturating_sub(a.server_core),
        },
    ))
}

/// Share of the server's core used by other processes over a window.
fn foreign(cpu: &Cpus, elapsed: Duration) -> f64 {
    let ours = cpu.server.stat;
    cpu.server_core.saturating_sub(ours).as_secs_f64() / elapsed.as_secs_f64().max(1e-9) * 100.0
}

/// Share of one core: the precise clock when available, else the tick count.
fn share(cpu: &CpuTime, elapsed: Duration) -> f64 {
    cpu.clock.unwrap_or(cpu.stat).as_secs_f64() / elapsed.as_secs_f64().max(1e-9) * 100.0
}

/// The three loads, measured one after another on every server in turn.
#[derive(Clone, Copy)]
enum Load {
    RequestResponse,
    Bulk,
    Paced,
}

fn measure_into(cfg: &Config, server: &ServerProcess, load: Load, r: &mut Round) -> io::Result<()> {
    let base = Spec {
        addr: server.addr,
        mode: Mode::RequestResponse,
        conns: cfg.conns,
        size: cfg.size,
        warmup: cfg.warmup,
        window: cfg.rr_window,
        max_requests: 50_000_000,
    };
    match load {
        Load::RequestResponse => {
            let (rr, cpu) = measure(cfg, server, &base)?;
            r.foreign.push(foreign(&cpu, rr.elapsed));
            r.rr_rate = rr.rate();
            r.rr_server_cpu = share(&cpu.server, rr.elapsed);
            r.rr_client_cpu = share(&cpu.client, rr.elapsed);
            r.rr_us = per_request(&cpu.server, rr.requests);
        }
        Load::Bulk => {
            let spec = Spec {
                mode: Mode::Bulk {
                    window: cfg.bulk_window,
                },
                conns: cfg.bulk_conns,
                size: cfg.bulk_chunk,
                window: cfg.bulk_window_time,
                ..base
            };
            let (bulk, cpu) = measure(cfg, server, &spec)?;
            r.foreign.push(foreign(&cpu, bulk.elapsed));
            r.bulk_mb = bulk.mb_per_s();
            r.bulk_server_cpu = share(&cpu.server, bulk.elapsed);
        }
        Load::Paced => {
            let spec = Spec {
                mode: Mode::Paced { rate: cfg.rate },
                window: cfg.paced_window,
                ..base
            };
            let (paced, cpu) = measure(cfg, server, &spec)?;
            r.foreign.push(foreign(&cpu, paced.elapsed));
            let (p50, p99) = paced.latency.unwrap_or_default();
            r.paced_rate = paced.rate();
            r.paced_missed = paced.missed as f64;
            r.paced_us_stat = per_request(
                &CpuTime {
                    clock: None,
                    ..cpu.server
                },
                paced.requests,
            );
            r.paced_us_clock = cpu
                .server
                .clock
                .map_or(f64::NAN, |_| per_request(&cpu.server, paced.requests));
            r.p50_us = p50.as_secs_f64() * 1e6;
            r.p99_us = p99.as_secs_f64() * 1e6;
        }
    }
    Ok(())
}

/// Microseconds of CPU per request (the precise clock when available).
fn per_request(cpu: &CpuTime, requests: u64) -> f64 {
    cpu.clock.unwrap_or(cpu.stat).as_secs_f64() * 1e6 / requests.max(1) as f64
}

/// Run the comparison and return the report (markdown).
pub fn compare(cfg: &Config) -> io::Result<String> {
    pin_to(cfg.client_core)?;
    let servers: Vec<ServerProcess> = cfg
        .servers
        .iter()
        .map(|&k| ServerProcess::start(k, cfg.server_core))
        .collect::<io::Result<_>>()?;
    let n = servers.len();
    let mut rounds: Vec<Vec<Round>> = vec![vec![Round::default(); cfg.rounds]; n];
    let t0 = Instant::now();
    let mut quiet_rounds = 0;
    for round in 0..cfg.rounds {
        if wait_quiet(cfg) {
            quiet_rounds += 1;
        }
        // Each load runs on the three servers back to back (the order
        // rotating every round), so any two figures that are compared were
        // measured seconds apart.
        for load in [Load::RequestResponse, Load::Bulk, Load::Paced] {
            for k in 0..n {
                let i = (k + round) % n;
                measure_into(cfg, &servers[i], load, &mut rounds[i][round])?;
            }
        }
        for (i, srv) in servers.iter().enumerate() {
            let r = &rounds[i][round];
            eprintln!(
                "round {}/{} {:8}: {:>7.0} req/s ({:.2} us CPU/req)  {:>6.0} MB/s  paced {:>6.0} req/s at {:.2} us CPU/req (p99 {:.0} us)",
                round + 1,
                cfg.rounds,
                srv.kind.name(),
                r.rr_rate,
                r.rr_us,
                r.bulk_mb,
                r.paced_rate,
                r.paced_us_clock,
                r.p99_us
            );
        }
    }
    eprintln!("comparison took {:.0} s", t0.elapsed().as_secs_f64());
    let mut text = report(cfg, &servers, &rounds);
    let _ = writeln!(
        text,
        "\n{quiet_rounds} of {} rounds started on quiet cores (waited up to {:.0} s each).",
        cfg.rounds,
        cfg.quiet_wait.as_secs_f64()
    );
    Ok(text)
}

/// Wait (up to `cfg.quiet_wait`) until both cores are nearly idle, so a
/// round starts in a gap in whatever else the machine runs. Returns whether
/// a quiet moment was found.
fn wait_quiet(cfg: &Config) -> bool {
    let deadline = Instant::now() + cfg.quiet_wait;
    let sample = Duration::from_millis(250);
    let cores = [cfg.server_core, cfg.client_core];
    loop {
        let before: Vec<Option<Duration>> = cores.iter().map(|&c| core_busy(c)).collect();
        std::thread::sleep(sample);
        let quiet = cores.iter().zip(&before).all(|(&c, b)| match (b, core_busy(c)) {
            (Some(b), Some(a)) => a.saturating_sub(*b) < sample * 15 / 100,
            _ => true,
        });
        if quiet {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}

fn report(cfg: &Config, servers: &[ServerProcess], rounds: &[Vec<Round>]) -> String {
    let col = |i: usize, f: fn(&Round) -> f64| -> Vec<f64> { rounds[i].iter().map(f).collect() };
    let med = |i: usize, f: fn(&Round) -> f64| median(&col(i, f));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Medians over {} interleaved rounds; servers pinned to core {}, load generator to core {}; \
         request/response: {} connections, {} B messages; bulk: {} connection, {} KiB chunks, \
         {} KiB in flight; paced: {} req/s over {} connections.\n",
        cfg.rounds,
        cfg.server_core,
        cfg.client_core,
        cfg.conns,
        cfg.size,
        cfg.bulk_conns,
        cfg.bulk_chunk / 1024,
        cfg.bulk_window / 1024,
        cfg.rate,
        cfg.conns,
    );
    let _ = writeln!(
        s,
        "| server | req/s (min-max) | server CPU | server us/req | client CPU | bulk MB/s (min-max) | server CPU | paced req/s | us/req (/proc stat) | us/req (ns clock) | p50 us | p99 us |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, srv) in servers.iter().enumerate() {
        let (lo, hi) = range(&col(i, |r| r.rr_rate));
        let (blo, bhi) = range(&col(i, |r| r.bulk_mb));
        let _ = writeln!(
            s,
            "| {} | {:.0} ({:.0}-{:.0}) | {:.0}% | {:.2} | {:.0}% | {:.0} ({:.0}-{:.0}) | {:.0}% | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} |",
            srv.kind.name(),
            med(i, |r| r.rr_rate),
            lo,
            hi,
            med(i, |r| r.rr_server_cpu),
            med(i, |r| r.rr_us),
            med(i, |r| r.rr_client_cpu),
            med(i, |r| r.bulk_mb),
            blo,
            bhi,
            med(i, |r| r.bulk_server_cpu),
            med(i, |r| r.paced_rate),
            med(i, |r| r.paced_us_stat),
            med(i, |r| r.paced_us_clock),
            med(i, |r| r.p50_us),
            med(i, |r| r.p99_us),
        );
    }
    let others: Vec<f64> = rounds
        .iter()
        .flatten()
        .flat_map(|r| r.foreign.iter().copied())
        .collect();
    let (_, worst) = range(&others);
    let _ = writeln!(
        s,
        "\nOther processes used a median {:.0}% (worst {:.0}%) of the server core during the measured windows.",
        median(&others),
        worst
    );
    let missed: f64 = rounds.iter().flatten().map(|r| r.paced_missed).sum();
    if missed > 0.0 {
        let _ = writeln!(
            s,
            "\nPaced load missed {missed:.0} request slots in total (every connection still waiting for its echo)."
        );
    }
    let _ = writeln!(
        s,
        "\nRatios, {} / other: the median over rounds of the ratio within each round (the servers \
         of one round ran seconds apart, so a busy moment of the machine cancels out). \
         Throughput: above 1 is faster. CPU per request: below 1 is cheaper.\n",
        servers[0].kind.name()
    );
    let _ = writeln!(
        s,
        "| vs | req/s | bulk MB/s | CPU/req, saturated | CPU/req at {} req/s (ns clock) | CPU/req at {} req/s (/proc stat) |",
        cfg.rate, cfg.rate
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    let paired = |i: usize, f: fn(&Round) -> f64| -> String {
        let r = paired_ratio(&col(0, f), &col(i, f));
        if r.is_nan() {
            "n/a".to_string()
        } else {
            format!("{r:.2}")
        }
    };
    for (i, srv) in servers.iter().enumerate().skip(1) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            srv.kind.name(),
            paired(i, |r| r.rr_rate),
            paired(i, |r| r.bulk_mb),
            paired(i, |r| r.rr_us),
            paired(i, |r| r.paced_us_clock),
            paired(i, |r| r.paced_us_stat),
        );
    }
    s
}
