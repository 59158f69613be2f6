//! `twistor-bench`: twistor's echo server against a hand-written mio echo
//! loop (the limit for twistor's design) and tokio's `current_thread`
//! runtime, in one run, on loopback. See `bench/README.md`.
//!
//! ```text
//! cargo run --release -p twistor-bench -- all       # the whole comparison (~2 min)
//! cargo run --release -p twistor-bench -- allocs    # allocations per request
//! cargo run --release -p twistor-bench -- idle      # memory per idle connection
//! cargo run --release -p twistor-bench -- server twistor|mio|tokio [--port P] [--cpu N]
//! cargo run --release -p twistor-bench -- load rr|bulk|paced --port P [--conns N] [--size B] [--rate R] [--secs S]
//! cargo run --release -p twistor-bench -- udp       # UDP echo: twistor vs mio vs tokio
//! cargo run --release -p twistor-bench -- udp-counts  # instructions and syscalls per datagram
//! cargo run --release -p twistor-bench -- multi     # one reactor vs two
//! ```

mod alloc_count;
mod allocs;
mod allocs_udp;
mod callgrind;
mod cpu;
mod idle;
mod limits;
mod load;
mod multi;
mod run;
mod servers;
mod servers_proc;
mod stats;
mod udp;
mod udp_load;

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use servers::Kind;

#[global_allocator]
static ALLOC: alloc_count::Counting = alloc_count::Counting;

const USAGE: &str = "\
usage: twistor-bench COMMAND [FLAGS]

commands:
  all      run the whole comparison (twistor, mio, tokio) and print the report
           flags: --rounds N (7) --rate R (50000) --conns N (50) --size B (64)
                  --secs S (request/response window, 1.5) --server-cpu N (0) --client-cpu N (1)
                  --quick (1 round, short windows: a smoke run)
                  --quiet-wait S (5: before each round, wait up to S seconds for idle cores)
                  --with-mio-short (add a mio loop that stops at a short read)
                  --nice N (0; e.g. -10 on a busy machine, needs privileges: servers and
                  load generator then win most of their cores from other processes)
  allocs   count the twistor echo server's allocations per request
           flags: --requests N (200000) --server-cpu N (0) --client-cpu N (1)
  idle     server memory per idle connection (TCP, line and TLS echo; twistor, mio, tokio)
           flags: --conns N (10000) --size B (60000: the large message)
                  --cases C,C... (all: tcp-twistor tcp-mio tcp-tokio line-twistor line-tokio
                  tls-twistor tls-mio)
  server   KIND: run one echo server (twistor, mio, tokio or mio-short) on 127.0.0.1
           flags: --port P (0 = any; the port is printed) --cpu N (no pinning)
  load     MODE: drive a running echo server (rr, bulk or paced)
           flags: --port P (required) --conns N (50; bulk 1) --size B (64; bulk 65536)
                  --rate R (paced, 50000) --secs S (2) --cpu N (no pinning)
  udp      UDP echo, twistor vs mio vs tokio, 32 and 256 datagrams in flight
           flags: --rounds N (7) --size B (64) --secs S (1.5) --server-cpu N (0) --client-cpu N (1) --quick
  udp-counts  instructions (callgrind) and syscalls (perf) per datagram of each UDP server
           flags: --n1 N (10000) --n2 N (60000) --inflight W (32 and 256) --kinds a,b (all)
  udp-server  KIND: one UDP echo server (twistor, twistor-batch1, mio or tokio); --port P --cpu N
  udp-load    drive a running UDP echo server: --port P (required) --inflight W (32) --count N
              --size B (64) --secs S (10) --cpu N
  multi    TCP echo on 1 vs 2 reactors (ReactorGroup), nothing pinned
           flags: --rounds N (7) --conns N (50) --rate R (50000) --quick
  multi-server  TCP echo on --reactors N (2) with SO_REUSEPORT; --port P
  multi-counts  instructions (callgrind) and syscalls (perf) per request, 1 vs 2 reactors
           flags: --n1 N (10000) --n2 N (40000) --conns N (50)
";

/// Command-line flags after the command: `--name value` pairs and `--quick`.
struct Flags(Vec<String>);

impl Flags {
    fn get<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, String> {
        match self.0.iter().position(|a| a == name) {
            None => Ok(None),
            Some(i) => {
                let v = self.0.get(i + 1).ok_or(format!("{name} needs a value"))?;
                v.parse()
                    .map(Some)
                    .map_err(|_| format!("bad value for {name}: {v}"))
            }
        }
    }
    fn or<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        Ok(self.get(name)?.unwrap_or(default))
    }
    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|a| a == name)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("all") => cmd_all(&Flags(args[1..].to_vec())),
        Some("allocs") => cmd_allocs(&Flags(args[1..].to_vec())),
        Some("idle") => cmd_idle(&Flags(args[1..].to_vec())),
        Some("idle-server") => {
            cmd_idle_server(args.get(1), &Flags(args.get(2..).unwrap_or_default().to_vec()))
        }
        Some("server") => cmd_server(args.get(1), &Flags(args.get(2..).unwrap_or_default().to_vec())),
        Some("load") => cmd_load(args.get(1), &Flags(args.get(2..).unwrap_or_default().to_vec())),
        Some("udp") => udp::cmd_compare(&Flags(args[1..].to_vec())),
        Some("udp-counts") => callgrind::cmd_counts(&Flags(args[1..].to_vec())),
        Some("udp-load") => udp::cmd_load(&Flags(args[1..].to_vec())),
        Some("udp-server") => {
            udp::cmd_server(args.get(1), &Flags(args.get(2..).unwrap_or_default().to_vec()))
        }
        Some("multi") => multi::cmd_compare(&Flags(args[1..].to_vec())),
        Some("multi-server") => multi::cmd_server(&Flags(args[1..].to_vec())),
        Some("multi-counts") => multi::cmd_counts(&Flags(args[1..].to_vec())),
        Some("-h") | Some("--help") | Some("help") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => Err(USAGE.to_string()),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn io_err(e: io::Error) -> String {
    e.to_string()
}

fn cmd_all(f: &Flags) -> Result<(), String> {
    let mut cfg = run::Config::default();
    if f.has("--quick") {
        cfg.rounds = 1;
        cfg.rr_window = Duration::from_millis(500);
        cfg.bulk_window_time = Duration::from_millis(500);
        cfg.paced_window = Duration::from_millis(500);
        cfg.warmup = Duration::from_millis(100);
        cfg.quiet_wait = Duration::ZERO;
    }
    cfg.rounds = f.or("--rounds", cfg.rounds)?.max(1);
    cfg.rate = f.or("--rate", cfg.rate)?;
    cfg.conns = f.or("--conns", cfg.conns)?.max(1);
    cfg.size = f.or("--size", cfg.size)?.max(1);
    if let Some(secs) = f.get::<f64>("--secs")? {
        cfg.rr_window = Duration::from_secs_f64(secs.clamp(0.1, 60.0));
    }
    if let Some(nice) = f.get::<i32>("--nice")? {
        cpu::set_nice(nice).map_err(|e| format!("--nice {nice}: {e}"))?;
        println!("Run at nice {nice}.\n");
    }
    if f.has("--with-mio-short") {
        cfg.servers.push(Kind::MioShort);
    }
    if let Some(secs) = f.get::<f64>("--quiet-wait")? {
        cfg.quiet_wait = Duration::from_secs_f64(secs.clamp(0.0, 600.0));
    }
    cfg.server_core = f.or("--server-cpu", cfg.server_core)?;
    cfg.client_core = f.or("--client-cpu", cfg.client_core)?;
    let allocs_n = if f.has("--quick") { 20_000 } else { 200_000 };
    println!("{}", machine());
    println!("## Echo: twistor vs mio vs tokio\n");
    println!("{}", run::compare(&cfg).map_err(io_err)?);
    println!("## UDP echo: twistor vs mio vs tokio\n");
    println!("{}", udp::compare(&udp::config(f)?).map_err(io_err)?);
    println!("## One reactor per core: 1 vs 2 reactors\n");
    println!("{}", multi::compare(&multi::config(f)?).map_err(io_err)?);
    println!("## Allocations on twistor's echo path\n");
    println!(
        "{}{}",
        allocs::count(cfg.server_core, cfg.client_core, allocs_n).map_err(io_err)?,
        allocs_udp::rows(cfg.server_core, cfg.client_core, allocs_n / 2).map_err(io_err)?
    );
    let mut idle_cfg = idle::Config::default();
    if f.has("--quick") {
        idle_cfg.conns = 500;
    }
    println!("## Memory per idle connection\n");
    println!("{}", idle::run(&idle_cfg).map_err(io_err)?);
    Ok(())
}

fn cmd_idle(f: &Flags) -> Result<(), String> {
    let mut cfg = idle::Config::default();
    cfg.conns = f.or("--conns", cfg.conns)?.max(1);
    cfg.size = f.or("--size", cfg.size)?.max(2);
    if let Some(list) = f.get::<String>("--cases")? {
        cfg.cases = list
            .split(',')
            .map(|c| idle::Case::parse(c).ok_or(format!("unknown case {c}")))
            .collect::<Result<_, _>>()?;
    }
    println!("{}", idle::run(&cfg).map_err(io_err)?);
    Ok(())
}

/// The server process `idle` starts for each case.
fn cmd_idle_server(case: Option<&String>, f: &Flags) -> Result<(), String> {
    let case = case
        .and_then(|c| idle::Case::parse(c))
        .ok_or("idle-server needs a case")?;
    idle::server::child(case, f.or("--conns", 10_000)?).map_err(io_err)
}

fn cmd_allocs(f: &Flags) -> Result<(), String> {
    let report = allocs::count(
        f.or("--server-cpu", 0)?,
        f.or("--client-cpu", 1)?,
        f.or("--requests", 200_000)?,
    )
    .map_err(io_err)?;
    let udp = allocs_udp::rows(
        f.or("--server-cpu", 0)?,
        f.or("--client-cpu", 1)?,
        f.or("--requests", 200_000)?,
    )
    .map_err(io_err)?;
    println!("{report}{udp}");
    Ok(())
}

fn cmd_server(kind: Option<&String>, f: &Flags) -> Result<(), String> {
    let kind = kind
        .and_then(|k| Kind::parse(k))
        .ok_or("server needs a kind: twistor, mio, tokio or mio-short")?;
    if let Some(core) = f.get::<usize>("--cpu")? {
        cpu::pin_to(core).map_err(io_err)?;
    }
    servers::serve(kind, f.or("--port", 0)?, servers::announce).map_err(io_err)
}

fn cmd_load(mode: Option<&String>, f: &Flags) -> Result<(), String> {
    let bulk = mode.map(String::as_str) == Some("bulk");
    let mode = match mode.map(String::as_str) {
        Some("rr") => load::Mode::RequestResponse,
        Some("bulk") => load::Mode::Bulk { window: 256 * 1024 },
        Some("paced") => load::Mode::Paced {
            rate: f.or("--rate", 50_000)?,
        },
        _ => return Err("load needs a mode: rr, bulk or paced".into()),
    };
    let port: u16 = f.get("--port")?.ok_or("load needs --port")?;
    if let Some(core) = f.get::<usize>("--cpu")? {
        cpu::pin_to(core).map_err(io_err)?;
    }
    let spec = load::Spec {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        mode,
        conns: f.or("--conns", if bulk { 1 } else { 50 })?.max(1),
        size: f.or("--size", if bulk { 64 * 1024 } else { 64 })?.max(1),
        warmup: Duration::from_millis(300),
        window: Duration::from_secs_f64(f.or("--secs", 2.0f64)?.clamp(0.1, 60.0)),
        max_requests: 50_000_000,
    };
    let (out, _, _) = load::run(&spec, || ()).map_err(io_err)?;
    print!("{:.0} req/s, {:.1} MB/s", out.rate(), out.mb_per_s());
    if let Some((p50, p99)) = out.latency {
        print!(", p50 {p50:?}, p99 {p99:?}, missed {}", out.missed);
    }
    println!();
    Ok(())
}

/// The machine facts printed with every report.
fn machine() -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "Machine: nproc {nproc}, kernel {}, CPU {cpu}, load average at start {}\n",
        kernel.trim(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    )
}
