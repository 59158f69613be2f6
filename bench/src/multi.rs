//! `twistor-bench multi`: TCP echo on one reactor against two
//! (`ReactorGroup`, one `SO_REUSEPORT` listener each), on a 2-core machine
//! where the load generator shares the same two cores: nothing is pinned.
//! Reports how the kernel split the connections, req/s, and server CPU
//! per request (saturated and at a fixed paced rate).
//!
//! The server (`multi-server --reactors N`) prints its port, serves until
//! its stdin closes, then stops the group gracefully and prints how many
//! connections each reactor accepted and how many loop turns it ran.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use twistor_reactor::{Address, ReactorGroup};
use twistor_transports::{listen_tcp_with, ListenOptions};

use crate::cpu::CpuTime;
use crate::load::{self, Mode, Spec};
use crate::proc::Proc;
use crate::servers::twistor_echo::Echo;
use crate::stats::{median, paired_ratio, range};

/// Run the TCP echo on `reactors` reactors on 127.0.0.1:`port`, announce
/// the port on stdout, stop when stdin closes, then print the split.
pub fn serve(reactors: usize, port: u16) -> io::Result<()> {
    let group = ReactorGroup::new(reactors);
    let n = group.len();
    let handle = group.handle();
    let accepted: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    // Loop turns per reactor, noted when each stops.
    let turns: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let bound = Arc::new(OnceLock::new());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let b = bound.clone();
    // Announce once every reactor runs, then wait for stdin to close. (If
    // the group fails instead, this process ends with it.)
    std::thread::spawn(move || {
        if (0..n).all(|_| ready_rx.recv().is_ok()) {
            println!("{}", b.get().copied().unwrap_or(0));
        }
        let mut sink = String::new();
        let _ = io::stdin().read_line(&mut sink);
        handle.stop();
    });
    group.run(|r, index| {
        let at = SocketAddr::from(([127, 0, 0, 1], bound.get().copied().unwrap_or(port)));
        let counts = accepted.clone();
        let opts = ListenOptions {
            reuse_port: true,
            ..ListenOptions::default()
        };
        let l = listen_tcp_with(
            r,
            at,
            move |_: &Address| {
                counts[index].fetch_add(1, Ordering::Relaxed);
                Echo
            },
            opts,
        )?;
        let _ = bound.set(l.port());
        let t = turns.clone();
        r.add_shutdown_trigger(move |r| t[index].store(r.turns(), Ordering::Relaxed));
        let tx = ready_tx.clone();
        r.call_soon(move |_| {
            let _ = tx.send(());
        });
        Ok(())
    })?;
    let split: Vec<String> = accepted
        .iter()
        .map(|a| a.load(Ordering::Relaxed).to_string())
        .collect();
    println!("split {}", split.join(" "));
    let turns: Vec<String> = turns
        .iter()
        .map(|a| a.load(Ordering::Relaxed).to_string())
        .collect();
    println!("turns {}", turns.join(" "));
    Ok(())
}

/// Settings for the 1-vs-2 comparison.
#[derive(Debug, Clone)]
pub struct MultiConfig {
    /// Interleaved rounds.
    pub rounds: usize,
    /// Connections.
    pub conns: usize,
    /// Message size.
    pub size: usize,
    /// Paced rate (req/s).
    pub rate: u64,
    /// Warm-up before each window.
    pub warmup: Duration,
    /// Request/response window.
    pub window: Duration,
    /// Paced window.
    pub paced_window: Duration,
}

impl Default for MultiConfig {
    fn default() -> Self {
        MultiConfig {
            rounds: 3,
            conns: 50,
            size: 64,
            rate: 50_000,
            warmup: Duration::from_millis(300),
            window: Duration::from_millis(1000),
            paced_window: Duration::from_millis(1500),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Round {
    rate: f64,
    cpu_share: f64,
    us_per: f64,
    paced_us: f64,
}

/// The machine's cores (not only those this thread may use now).
fn cores() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as usize
    } else {
        1
    }
}

/// Let this thread (the load generator) and the servers it starts run on
/// every core, whatever an earlier part of the run pinned it to.
fn unpin() -> io::Result<()> {
    let cores = cores();
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in 0..cores {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn per_request(cpu: &CpuTime, requests: u64) -> f64 {
    cpu.clock.unwrap_or(cpu.stat).as_secs_f64() * 1e6 / requests.max(1) as f64
}

/// Run the comparison and return the report (markdown).
pub fn compare(cfg: &MultiConfig) -> io::Result<String> {
    unpin()?;
    let group_sizes = [1usize, 2];
    let servers: Vec<Proc> = group_sizes
        .iter()
        .map(|n| {
            let args = ["multi-server", "--reactors", &n.to_string()].map(String::from);
            Proc::start_self(&format!("{n} reactor(s)"), &args)
        })
        .collect::<io::Result<_>>()?;
    let mut rounds = vec![vec![Round::default(); cfg.rounds]; servers.len()];
    for round in 0..cfg.rounds {
        for k in 0..servers.len() {
            let i = (k + round) % servers.len();
            let p = &servers[i];
            let rr = Spec {
                addr: p.addr,
                mode: Mode::RequestResponse,
                conns: cfg.conns,
                size: cfg.size,
                warmup: cfg.warmup,
                window: cfg.window,
                max_requests: 50_000_000,
            };
            let (o, a, b) = load::run(&rr, || p.cpu())?;
            let cpu = b.since(&a);
            let paced = Spec {
                mode: Mode::Paced { rate: cfg.rate },
                window: cfg.paced_window,
                ..rr.clone()
            };
            let (po, pa, pb) = load::run(&paced, || p.cpu())?;
            rounds[i][round] = Round {
                rate: o.rate(),
                cpu_share: cpu.clock.unwrap_or(cpu.stat).as_secs_f64() / o.elapsed.as_secs_f64() * 100.0,
                us_per: per_request(&cpu, o.requests),
                paced_us: per_request(&pb.since(&pa), po.requests),
            };
            eprintln!(
                "multi round {}/{} {:12}: {:>7.0} req/s ({:.2} us CPU/req), paced {:.2} us CPU/req",
                round + 1,
                cfg.rounds,
                p.name,
                o.rate(),
                rounds[i][round].us_per,
                rounds[i][round].paced_us
            );
        }
    }
    let mut splits = Vec::new();
    let names: Vec<String> = servers.iter().map(|p| p.name.clone()).collect();
    for p in servers {
        let rest = p.finish()?;
        let split = rest
            .lines()
            .find_map(|l| l.strip_prefix("split "))
            .unwrap_or("?")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" / ");
        splits.push(split);
    }
    let col = |i: usize, f: fn(&Round) -> f64| -> Vec<f64> { rounds[i].iter().map(f).collect() };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Medians over {} interleaved rounds. Nothing pinned: the server's reactors and the load \
         generator (one thread) share the machine's {} cores. Request/response: {} connections, \
         {} B; paced: {} req/s. Connections per reactor: every connection the load generator \
         opened over the whole run, as the kernel's SO_REUSEPORT hash spread them.\n",
        cfg.rounds,
        cores(),
        cfg.conns,
        cfg.size,
        cfg.rate
    );
    let _ = writeln!(
        s,
        "| server | req/s (min-max) | server CPU | us/req, saturated | us/req at {} req/s | connections per reactor |",
        cfg.rate
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for (i, name) in names.iter().enumerate() {
        let (lo, hi) = range(&col(i, |r| r.rate));
        let _ = writeln!(
            s,
            "| {name} | {:.0} ({:.0}-{:.0}) | {:.0}% | {:.2} | {:.2} | {} |",
            median(&col(i, |r| r.rate)),
            lo,
            hi,
            median(&col(i, |r| r.cpu_share)),
            median(&col(i, |r| r.us_per)),
            median(&col(i, |r| r.paced_us)),
            splits[i]
        );
    }
    let _ = writeln!(
        s,
        "\n2 reactors / 1 reactor: req/s {:.2}, CPU per request saturated {:.2}, at {} req/s {:.2} \
         (target for CPU per request: at most 1.05).",
        paired_ratio(&col(1, |r| r.rate), &col(0, |r| r.rate)),
        paired_ratio(&col(1, |r| r.us_per), &col(0, |r| r.us_per)),
        cfg.rate,
        paired_ratio(&col(1, |r| r.paced_us), &col(0, |r| r.paced_us)),
    );
    Ok(s)
}

/// Run `multi-server --reactors N` under `wrapper` (its arguments up to
/// the program), serve `requests` request/response round trips over
/// `conns` connections, and return what `read` finds in the file `out`
/// afterwards, with the requests served.
fn wrapped_total(
    wrapper: &str,
    args: &[String],
    out: &std::path::Path,
    reactors: usize,
    conns: usize,
    requests: u64,
    read: impl Fn(&str) -> Option<u64>,
) -> io::Result<(u64, u64, u64)> {
    let exe = std::env::current_exe()?.to_string_lossy().into_owned();
    let mut all = args.to_vec();
    all.extend([
        exe,
        "multi-server".into(),
        "--reactors".into(),
        reactors.to_string(),
    ]);
    let p = Proc::start(&format!("{reactors} reactor(s)"), wrapper, &all)?;
    let spec = Spec {
        addr: p.addr,
        mode: Mode::RequestResponse,
        conns,
        size: 64,
        warmup: Duration::ZERO,
        window: Duration::from_secs(600),
        max_requests: requests,
    };
    let (o, (), ()) = load::run(&spec, || ())?;
    let rest = p.finish()?;
    let turns = rest
        .lines()
        .find_map(|l| l.strip_prefix("turns "))
        .map_or(0, |t| {
            t.split_whitespace().filter_map(|x| x.parse::<u64>().ok()).sum()
        });
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let _ = std::fs::remove_file(out);
    let total = read(&text).ok_or_else(|| io::Error::other(format!("no count from {wrapper}")))?;
    Ok((total, o.requests, turns))
}

/// Per request, from runs of `n1` and `n2` requests (start-up, connection
/// set-up and shutdown cancel in the difference).
fn per_request_count(
    wrapper: &str,
    args: &[String],
    out: &std::path::Path,
    reactors: usize,
    conns: usize,
    (n1, n2): (u64, u64),
    read: impl Fn(&str) -> Option<u64> + Copy,
) -> io::Result<(f64, f64)> {
    let (t1, r1, u1) = wrapped_total(wrapper, args, out, reactors, conns, n1, read)?;
    let (t2, r2, u2) = wrapped_total(wrapper, args, out, reactors, conns, n2, read)?;
    let requests = (r2 as f64 - r1 as f64).max(1.0);
    Ok((
        (t2 as f64 - t1 as f64) / requests,
        requests / (u2 as f64 - u1 as f64).max(1.0),
    ))
}

/// `twistor-bench multi-counts [--n1 N] [--n2 N] [--conns N]`: user-space
/// instructions (callgrind) and syscalls (perf) per request of the TCP
/// echo on one reactor and on two: figures the load on the machine does
/// not change (instruction counts) or changes little (syscalls, which
/// depend on how many events each wake-up finds).
pub fn cmd_counts(f: &crate::Flags) -> Result<(), String> {
    let n1: u64 = f.or("--n1", 10_000)?;
    let n2: u64 = f.or("--n2", 40_000)?.max(n1 + 1);
    let conns: usize = f.or("--conns", 50)?.max(1);
    let run = || -> io::Result<String> {
        unpin()?;
        let out = std::env::temp_dir().join(format!("twistor-multi-counts-{}", std::process::id()));
        let callgrind = [
            "--tool=callgrind".to_string(),
            format!("--callgrind-out-file={}", out.display()),
        ];
        let perf = ["stat", "-x", ",", "-e", "raw_syscalls:sys_enter", "-o"]
            .map(String::from)
            .into_iter()
            .chain([out.display().to_string(), "--".into()])
            .collect::<Vec<_>>();
        let instructions = |text: &str| {
            text.lines()
                .rev()
                .find_map(|l| l.strip_prefix("totals:").or_else(|| l.strip_prefix("summary:")))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        };
        let syscalls = |text: &str| {
            text.lines()
                .find(|l| l.contains("raw_syscalls:sys_enter"))
                .and_then(|l| l.split(',').next()?.trim().parse().ok())
        };
        let mut rows = Vec::new();
        for reactors in [1, 2] {
            let (i, _) = per_request_count(
                "valgrind",
                &callgrind,
                &out,
                reactors,
                conns,
                (n1, n2),
                instructions,
            )?;
            let (s, per_turn) = per_request_count("perf", &perf, &out, reactors, conns, (n1, n2), syscalls)?;
            eprintln!(
                "{reactors} reactor(s): {i:.0} instructions/request, {s:.3} syscalls/request, \
                 {per_turn:.1} requests per loop turn"
            );
            rows.push((reactors, i, s, per_turn));
        }
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Per request/response round trip, (total at {n2} - total at {n1}) / {}, {conns} connections, \
             64 B. Instructions: user space, callgrind. Syscalls: perf's raw_syscalls:sys_enter at full \
             speed, nothing pinned; requests per loop turn (all reactors' turns) in the same runs.\n",
            n2 - n1
        );
        let _ = writeln!(
            s,
            "| server | instructions/request | syscalls/request | requests per loop turn |\n|---|---|---|---|"
        );
        for (n, i, sys, per_turn) in &rows {
            let _ = writeln!(s, "| {n} reactor(s) | {i:.0} | {sys:.3} | {per_turn:.1} |");
        }
        let _ = writeln!(
            s,
            "\n2 reactors / 1 reactor: instructions {:.2}, syscalls {:.2}.",
            rows[1].1 / rows[0].1,
            rows[1].2 / rows[0].2
        );
        Ok(s)
    };
    let report = run().map_err(|e| e.to_string())?;
    println!("## One reactor per core: operation counts per request\n");
    println!("{report}");
    Ok(())
}

/// `twistor-bench multi-server --reactors N [--port P]`.
pub fn cmd_server(f: &crate::Flags) -> Result<(), String> {
    serve(f.or("--reactors", 2)?, f.or("--port", 0)?).map_err(|e| e.to_string())
}

/// The settings from the command line (shared with `all`).
pub fn config(f: &crate::Flags) -> Result<MultiConfig, String> {
    let mut cfg = MultiConfig::default();
    if f.has("--quick") {
        cfg.rounds = 1;
        cfg.warmup = Duration::from_millis(100);
        cfg.window = Duration::from_millis(500);
        cfg.paced_window = Duration::from_millis(500);
    }
    cfg.rounds = f.or("--rounds", cfg.rounds)?.max(1);
    cfg.conns = f.or("--conns", cfg.conns)?.max(1);
    cfg.rate = f.or("--rate", cfg.rate)?;
    Ok(cfg)
}

/// `twistor-bench multi [--rounds N] [--quick]`.
pub fn cmd_compare(f: &crate::Flags) -> Result<(), String> {
    let cfg = config(f)?;
    println!("## One reactor per core: 1 vs 2 reactors\n");
    println!("{}", compare(&cfg).map_err(|e| e.to_string())?);
    Ok(())
}
