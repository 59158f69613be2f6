//! `twistor-bench udp-counts`: per-datagram operation counts of the UDP
//! echo servers, figures that do not depend on how busy the machine is.
//!
//! - **Instructions per datagram** (user space): each server runs under
//!   `valgrind --tool=callgrind` for two fixed-count runs (n1 and n2
//!   echoes); the difference of the two totals over n2 - n1 cancels
//!   start-up and shutdown. Callgrind counts only user-space instructions:
//!   what a server's own code (and libc's syscall wrappers) costs, not the
//!   kernel's side of each syscall.
//! - **Syscalls per datagram**: the server runs at full speed under
//!   `perf stat -e raw_syscalls:sys_enter`, again for n1 and n2 echoes,
//!   and the difference is taken the same way. This is where batching
//!   shows; it depends on how many datagrams wait per wake-up, so it is a
//!   figure for this machine and flight size, not a constant.
//!
//! Under valgrind a server runs many times slower than its load
//! generator, so every read finds a full queue: its batches are full, more
//! than at full speed. Read the instruction counts as the cost of the code
//! paths, and the syscall counts for what batching saves in practice.

use std::fmt::Write as _;
use std::io;
use std::time::Duration;

use crate::proc::Proc;
use crate::udp::UdpKind;
use crate::udp_load::{self, UdpSpec};

/// Settings for the counts.
#[derive(Debug, Clone)]
pub struct CountConfig {
    /// Servers to count.
    pub kinds: Vec<UdpKind>,
    /// Datagrams in flight.
    pub inflight: Vec<usize>,
    /// Echoes of the short run.
    pub n1: u64,
    /// Echoes of the long run.
    pub n2: u64,
}

impl Default for CountConfig {
    fn default() -> Self {
        CountConfig {
            kinds: vec![
                UdpKind::Twistor,
                UdpKind::TwistorOne,
                UdpKind::Mio,
                UdpKind::Tokio,
            ],
            inflight: vec![32, 256],
            n1: 10_000,
            n2: 60_000,
        }
    }
}

fn fixed(addr: std::net::SocketAddr, inflight: usize, n: u64) -> UdpSpec {
    UdpSpec {
        addr,
        inflight,
        size: 64,
        warmup: Duration::ZERO,
        window: Duration::from_secs(600),
        max_datagrams: n,
        // Under valgrind an answer may take a while.
        loss_timeout: Duration::from_secs(10),
    }
}

/// Total instructions callgrind counted for server `kind` serving `n`
/// echoes at `inflight`.
fn callgrind_total(kind: UdpKind, inflight: usize, n: u64) -> io::Result<(u64, u64)> {
    let dir = std::env::temp_dir();
    let file = dir.join(format!(
        "twistor-callgrind-{}-{}.out",
        std::process::id(),
        kind.name()
    ));
    let exe = std::env::current_exe()?.to_string_lossy().into_owned();
    let args = [
        "--tool=callgrind".to_string(),
        format!("--callgrind-out-file={}", file.display()),
        exe,
        "udp-server".into(),
        kind.name().into(),
    ];
    let p = Proc::start(kind.name(), "valgrind", &args)?;
    let (o, (), ()) = udp_load::run(&fixed(p.addr, inflight, n), || ())?;
    p.finish()?;
    let text = std::fs::read_to_string(&file)?;
    let _ = std::fs::remove_file(&file);
    let total = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("totals:").or_else(|| l.strip_prefix("summary:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| io::Error::other("no totals in the callgrind output"))?;
    if o.lost > 0 {
        eprintln!("{}: {} datagrams lost under valgrind", kind.name(), o.lost);
    }
    Ok((total, o.datagrams))
}

/// Syscalls server `kind` made in all, serving `n` echoes at `inflight`,
/// counted by `perf stat` from its start to its end (None if perf cannot
/// count them here), and the echoes.
fn perf_total(kind: UdpKind, inflight: usize, n: u64, server_core: usize) -> io::Result<Option<(u64, u64)>> {
    let file = std::env::temp_dir().join(format!("twistor-perf-{}-{}.txt", std::process::id(), kind.name()));
    let exe = std::env::current_exe()?.to_string_lossy().into_owned();
    let args = [
        "stat".to_string(),
        "-x".into(),
        ",".into(),
        "-e".into(),
        "raw_syscalls:sys_enter".into(),
        "-o".into(),
        file.display().to_string(),
        "--".into(),
        exe,
        "udp-server".into(),
        kind.name().into(),
        "--cpu".into(),
        server_core.to_string(),
    ];
    let Ok(p) = Proc::start(kind.name(), "perf", &args) else {
        return Ok(None);
    };
    let (o, (), ()) = udp_load::run(&fixed(p.addr, inflight, n), || ())?;
    p.finish()?;
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let _ = std::fs::remove_file(&file);
    let count = text
        .lines()
        .find(|l| l.contains("raw_syscalls:sys_enter"))
        .and_then(|l| l.split(',').next()?.trim().parse::<u64>().ok());
    Ok(count.map(|c| (c, o.datagrams)))
}

/// Syscalls per echo: the difference of two counted runs (n1 and n2
/// echoes) cancels start-up and shutdown.
fn syscalls(
    kind: UdpKind,
    inflight: usize,
    cfg: &CountConfig,
    server_core: usize,
) -> io::Result<Option<f64>> {
    let a = perf_total(kind, inflight, cfg.n1, server_core)?;
    let b = perf_total(kind, inflight, cfg.n2, server_core)?;
    Ok(match (a, b) {
        (Some((c1, d1)), Some((c2, d2))) => Some((c2 as f64 - c1 as f64) / (d2 as f64 - d1 as f64).max(1.0)),
        _ => None,
    })
}

/// Run the counts and return the report (markdown).
pub fn counts(cfg: &CountConfig, server_core: usize, client_core: usize) -> io::Result<String> {
    crate::cpu::pin_to(client_core)?;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Per datagram: (total at {} echoes - total at {}) / {}. Instructions: user space, \
         callgrind. Syscalls: perf's raw_syscalls:sys_enter at full speed (server on core {}, \
         load generator on core {}).\n",
        cfg.n2,
        cfg.n1,
        cfg.n2 - cfg.n1,
        server_core,
        client_core
    );
    let _ = writeln!(
        s,
        "| server | in flight | instructions/datagram | vs mio | syscalls/datagram | vs mio |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for &w in &cfg.inflight {
        let mut rows = Vec::new();
        for &k in &cfg.kinds {
            let (t1, d1) = callgrind_total(k, w, cfg.n1)?;
            let (t2, d2) = callgrind_total(k, w, cfg.n2)?;
            let per = (t2 as f64 - t1 as f64) / (d2 as f64 - d1 as f64).max(1.0);
            let sys = syscalls(k, w, cfg, server_core)?;
            eprintln!(
                "{} at {w} in flight: {per:.0} instructions/datagram, {} syscalls/datagram",
                k.name(),
                sys.map_or("n/a".into(), |x| format!("{x:.3}"))
            );
            rows.push((k, per, sys));
        }
        let mio = rows.iter().find(|r| r.0 == UdpKind::Mio).map(|r| (r.1, r.2));
        for (k, per, sys) in rows {
            let vs = |a: f64, b: Option<f64>| b.map_or("n/a".into(), |b| format!("{:.2}", a / b));
            let _ = writeln!(
                s,
                "| {} | {w} | {per:.0} | {} | {} | {} |",
                k.name(),
                vs(per, mio.map(|m| m.0)),
                sys.map_or("n/a".into(), |x| format!("{x:.3}")),
                sys.map_or("n/a".into(), |x| vs(x, mio.and_then(|m| m.1))),
            );
        }
    }
    Ok(s)
}

/// `twistor-bench udp-counts [--n1 N] [--n2 N] [--inflight W] [--kinds a,b]`.
pub fn cmd_counts(f: &crate::Flags) -> Result<(), String> {
    let mut cfg = CountConfig::default();
    cfg.n1 = f.or("--n1", cfg.n1)?;
    cfg.n2 = f.or("--n2", cfg.n2)?.max(cfg.n1 + 1);
    if let Some(w) = f.get::<usize>("--inflight")? {
        cfg.inflight = vec![w.max(1)];
    }
    if let Some(list) = f.get::<String>("--kinds")? {
        cfg.kinds = list
            .split(',')
            .map(|k| UdpKind::parse(k).ok_or(format!("unknown UDP server {k}")))
            .collect::<Result<_, _>>()?;
    }
    let report =
        counts(&cfg, f.or("--server-cpu", 0)?, f.or("--client-cpu", 1)?).map_err(|e| e.to_string())?;
    println!("## UDP echo: operation counts per datagram\n");
    println!("{report}");
    Ok(())
}
