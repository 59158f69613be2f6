//! `twistor-bench`: twistor against hand-written mio loops (the limit for
//! its design), tokio, tokio-rustls, Twisted, asyncio on uvloop, agate and
//! jetforce, in one run, on loopback, one markdown table per area. See
//! `bench/README.md`.
//!
//! ```text
//! cargo run --release -p twistor-bench -- all           # every area (~11 min; --quick: under 2)
//! cargo run --release -p twistor-bench -- tcp|udp|tls|gemini|multi|allocs|idle   # one area
//! cargo run --release -p twistor-bench -- help          # every command and flag
//! ```

mod alloc_count;
mod allocs;
mod allocs_tls;
mod allocs_udp;
mod callgrind;
mod cpu;
mod gemini;
mod idle;
mod limits;
mod load;
mod multi;
mod peers;
mod proc;
mod quiet;
mod servers;
mod stats;
mod table;
mod tcp;
mod tls;
mod tls_load;
mod udp;
mod udp_load;

use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use servers::Kind;

#[global_allocator]
static ALLOC: alloc_count::Counting = alloc_count::Counting;

const USAGE: &str = "\
usage: twistor-bench COMMAND [FLAGS]

commands (each prints markdown; progress goes to stderr):
  all      every area below, one table per area (about 11 minutes; --quick: under 2)
           flags: --quick (1 round, short windows, 500 idle connections; agate only if
                  already built) --areas a,b (tcp,udp,tls,gemini,multi,allocs,idle)
                  --server-cpu N (0) --client-cpu N (1) --with-mio-short
  tcp      TCP echo: 64 B / 1 KiB / 16 KiB x 1 / 10 / 100 connections, paced 50k req/s at
           50 and 100 connections, bulk, connection churn; twistor, mio, tokio, Twisted,
           asyncio+uvloop
           flags: --rounds N (3) --secs S (0.8) --rate R (50000) --quiet-wait S (3)
                  --with-mio-short --quick --server-cpu N --client-cpu N
  udp      UDP echo, 32 and 256 datagrams in flight: twistor (batched and batch 1), mio,
           tokio, Twisted, asyncio+uvloop
           flags: --rounds N (3) --size B (64) --secs S (1) --quick
  tls      TLS echo, full and resumed handshakes: twistor, mio+rustls, tokio-rustls,
           Twisted, asyncio+uvloop   flags: --rounds N (3) --quick
  gemini   Gemini, 16 clients, a connection and handshake per request, small .gmi and
           1 MiB, full and resumed: twistor, agate, jetforce   flags: --rounds N (3) --quick
  multi    TCP echo on 1 vs 2 reactors (ReactorGroup), nothing pinned
           flags: --rounds N (3) --conns N (50) --rate R (50000) --quick
  allocs   allocations per request on twistor's TCP, UDP and TLS echo paths
           flags: --requests N (200000) --server-cpu N (0) --client-cpu N (1)
  idle     server memory per idle connection (TCP, line and TLS echo, every server)
           flags: --conns N (10000) --size B (60000: the large message)
                  --cases C,C... (see `idle --help`)
  peers    install the peers (Python environment, agate) and say where they are

  udp-counts  instructions (callgrind) and syscalls (perf) per datagram of each UDP server
           flags: --n1 N (10000) --n2 N (60000) --inflight W (32 and 256) --kinds a,b (all)
  multi-counts  instructions (callgrind) and syscalls (perf) per request, 1 vs 2 reactors
           flags: --n1 N (10000) --n2 N (40000) --conns N (50)

servers and loads, for profiling one by hand:
  server KIND         one TCP echo server (twistor, mio, tokio or mio-short) on 127.0.0.1
                      flags: --port P (0 = any; printed) --cpu N (no pinning)
  tls-server KIND     one TLS echo server (twistor, mio+rustls, tokio-rustls): --cert F --key F --cpu N
  gemini-server       twistor's Gemini server: --dir D --cert F --key F --cpu N
  udp-server KIND     one UDP echo server (twistor, twistor-batch1, mio or tokio); --port P --cpu N
  multi-server        TCP echo on --reactors N (2) with SO_REUSEPORT; --port P
  load MODE           drive a running TCP echo server (rr, bulk, paced or churn)
                      flags: --port P (required) --conns N (50; bulk 1) --size B (64; bulk 65536)
                      --rate R (paced, 50000) --secs S (2) --cpu N (no pinning)
  udp-load            drive a running UDP echo server: --port P (required) --inflight W (32)
                      --count N --size B (64) --secs S (10) --cpu N
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
    let rest = || Flags(args.get(1..).unwrap_or_default().to_vec());
    let after_kind = || Flags(args.get(2..).unwrap_or_default().to_vec());
    let res = match args.first().map(String::as_str) {
        Some("all") => cmd_all(&rest()),
        Some("tcp") => cmd_tcp(&rest()),
        Some("tls") => cmd_tls(&rest()),
        Some("gemini") => cmd_gemini(&rest()),
        Some("allocs") => cmd_allocs(&rest()),
        Some("idle") => cmd_idle(&rest()),
        Some("peers") => cmd_peers(),
        Some("idle-server") => cmd_idle_server(args.get(1), &after_kind()),
        Some("server") => cmd_server(args.get(1), &after_kind()),
        Some("tls-server") => tls::cmd_server(args.get(1), &after_kind()),
        Some("gemini-server") => gemini::cmd_server(&rest()),
        Some("load") => cmd_load(args.get(1), &after_kind()),
        Some("udp") => udp::cmd_compare(&rest()),
        Some("udp-counts") => callgrind::cmd_counts(&rest()),
        Some("udp-load") => udp::cmd_load(&rest()),
        Some("udp-server") => udp::cmd_server(args.get(1), &after_kind()),
        Some("multi") => multi::cmd_compare(&rest()),
        Some("multi-server") => multi::cmd_server(&rest()),
        Some("multi-counts") => multi::cmd_counts(&rest()),
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

/// The areas `all` runs, in order.
const AREAS: [&str; 7] = ["tcp", "udp", "tls", "gemini", "multi", "allocs", "idle"];

fn cmd_all(f: &Flags) -> Result<(), String> {
    let quick = f.has("--quick");
    let areas: Vec<String> = match f.get::<String>("--areas")? {
        Some(list) => list.split(',').map(str::to_string).collect(),
        None => AREAS.iter().map(|a| a.to_string()).collect(),
    };
    if let Some(a) = areas.iter().find(|a| !AREAS.contains(&a.as_str())) {
        return Err(format!("unknown area {a}"));
    }
    let t0 = Instant::now();
    let avail = peers::Available::find(quick);
    let certs = peers::certs::CertFiles::make().map_err(io_err)?;
    println!(
        "# twistor-bench{}\n",
        if quick {
            " --quick (a smoke run: one short round)"
        } else {
            ""
        }
    );
    println!("{}", machine());
    println!("{}", versions(&avail));
    print!("{}", avail.report());
    let py = avail.python.as_ref();
    let has = |a: &str| areas.iter().any(|x| x == a);
    if has("tcp") {
        let mut cfg = tcp_config(f)?;
        cfg.with_mio_short = f.has("--with-mio-short");
        println!("## TCP echo\n\n{}", tcp::compare(&cfg, py).map_err(io_err)?);
    }
    if has("udp") {
        println!(
            "## UDP echo\n\n{}",
            udp::compare(&udp::config(f)?, py).map_err(io_err)?
        );
    }
    if has("tls") {
        println!(
            "## TLS\n\n{}",
            tls::compare(&tls_config(f)?, &certs, py).map_err(io_err)?
        );
    }
    if has("gemini") {
        let cfg = gemini_config(f)?;
        println!(
            "## Gemini\n\n{}",
            gemini::compare(&cfg, &certs, &avail).map_err(io_err)?
        );
    }
    if has("multi") {
        println!(
            "## One reactor per core: 1 vs 2 reactors\n\n{}",
            multi::compare(&multi::config(f)?).map_err(io_err)?
        );
    }
    if has("allocs") {
        println!(
            "## Allocations on twistor's echo paths\n\n{}",
            allocs_report(f, quick)?
        );
    }
    if has("idle") {
        let mut cfg = idle::Config::default();
        if quick {
            cfg.conns = 500;
        }
        println!(
            "## Memory per idle connection\n\n{}",
            idle::run(&cfg, &certs, py).map_err(io_err)?
        );
    }
    eprintln!("all: {:.0} s", t0.elapsed().as_secs_f64());
    println!("The whole run took {:.0} s.", t0.elapsed().as_secs_f64());
    Ok(())
}

fn tcp_config(f: &Flags) -> Result<tcp::Config, String> {
    let mut cfg = if f.has("--quick") {
        tcp::Config::quick()
    } else {
        tcp::Config::default()
    };
    cfg.rounds = f.or("--rounds", cfg.rounds)?.max(1);
    cfg.rate = f.or("--rate", cfg.rate)?;
    if let Some(secs) = f.get::<f64>("--secs")? {
        cfg.window = Duration::from_secs_f64(secs.clamp(0.1, 60.0));
    }
    if let Some(secs) = f.get::<f64>("--quiet-wait")? {
        cfg.quiet_wait = Duration::from_secs_f64(secs.clamp(0.0, 600.0));
    }
    cfg.server_core = f.or("--server-cpu", cfg.server_core)?;
    cfg.client_core = f.or("--client-cpu", cfg.client_core)?;
    Ok(cfg)
}

fn tls_config(f: &Flags) -> Result<tls::TlsConfig, String> {
    let mut cfg = if f.has("--quick") {
        tls::TlsConfig::quick()
    } else {
        tls::TlsConfig::default()
    };
    cfg.rounds = f.or("--rounds", cfg.rounds)?.max(1);
    cfg.server_core = f.or("--server-cpu", cfg.server_core)?;
    cfg.client_core = f.or("--client-cpu", cfg.client_core)?;
    Ok(cfg)
}

fn gemini_config(f: &Flags) -> Result<gemini::GeminiConfig, String> {
    let mut cfg = if f.has("--quick") {
        gemini::GeminiConfig::quick()
    } else {
        gemini::GeminiConfig::default()
    };
    cfg.rounds = f.or("--rounds", cfg.rounds)?.max(1);
    cfg.clients = f.or("--clients", cfg.clients)?.max(1);
    cfg.server_core = f.or("--server-cpu", cfg.server_core)?;
    cfg.client_core = f.or("--client-cpu", cfg.client_core)?;
    Ok(cfg)
}

fn cmd_tcp(f: &Flags) -> Result<(), String> {
    let py = peers::python::Python::ensure().ok();
    let mut cfg = tcp_config(f)?;
    cfg.with_mio_short = f.has("--with-mio-short");
    println!("{}", machine());
    println!(
        "## TCP echo\n\n{}",
        tcp::compare(&cfg, py.as_ref()).map_err(io_err)?
    );
    Ok(())
}

fn cmd_tls(f: &Flags) -> Result<(), String> {
    let py = peers::python::Python::ensure().ok();
    let certs = peers::certs::CertFiles::make().map_err(io_err)?;
    println!("{}", machine());
    println!(
        "## TLS\n\n{}",
        tls::compare(&tls_config(f)?, &certs, py.as_ref()).map_err(io_err)?
    );
    Ok(())
}

fn cmd_gemini(f: &Flags) -> Result<(), String> {
    let avail = peers::Available::find(false);
    let certs = peers::certs::CertFiles::make().map_err(io_err)?;
    println!("{}", machine());
    print!("{}", avail.report());
    println!(
        "## Gemini\n\n{}",
        gemini::compare(&gemini_config(f)?, &certs, &avail).map_err(io_err)?
    );
    Ok(())
}

fn cmd_peers() -> Result<(), String> {
    let avail = peers::Available::find(false);
    println!("{}", versions(&avail));
    print!("{}", avail.report());
    Ok(())
}

/// The peers' versions, for the report.
fn versions(avail: &peers::Available) -> String {
    let mut v = vec![
        rustc_version(),
        "mio, tokio, tokio-rustls, rustls: as in Cargo.lock".to_string(),
    ];
    if let Some(py) = &avail.python {
        for p in ["twisted", "uvloop", "jetforce"] {
            v.push(format!("{p} {}", py.version(p)));
        }
    }
    if let Some(a) = &avail.agate {
        v.push(peers::agate::version(a));
    }
    format!("Peers: {}.\n", v.join(", "))
}

fn rustc_version() -> String {
    std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "?".into())
}

fn allocs_report(f: &Flags, quick: bool) -> Result<String, String> {
    let server = f.or("--server-cpu", 0)?;
    let client = f.or("--client-cpu", 1)?;
    let n = f.or("--requests", if quick { 20_000 } else { 200_000 })?;
    Ok(format!(
        "{}{}{}",
        allocs::count(server, client, n).map_err(io_err)?,
        allocs_udp::rows(server, client, n / 2).map_err(io_err)?,
        allocs_tls::rows(server, client, n / 4).map_err(io_err)?,
    ))
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
    let certs = peers::certs::CertFiles::make().map_err(io_err)?;
    let py = peers::python::Python::ensure().ok();
    println!("{}", idle::run(&cfg, &certs, py.as_ref()).map_err(io_err)?);
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
    println!("{}", allocs_report(f, false)?);
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
        Some("churn") => load::Mode::Churn,
        _ => return Err("load needs a mode: rr, bulk, paced or churn".into()),
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
