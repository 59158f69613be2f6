//! `twistor-bench idle`: server memory per idle connection.
//!
//! For each case (a protocol and a server), a fresh server process
//! (`server.rs`) is started and measured three times: listening with no
//! connection; with N connections open that have each echoed a 4-byte
//! message; and after each has also echoed one large message (60 KB by
//! default), then gone idle. The second figure is what an idle connection
//! costs; the third adds what a connection keeps from its peak (buffers
//! that grew for the large message and were not released). Two measures:
//! the server thread's live heap bytes (the bench's counting allocator,
//! exact) and the process's resident set size (`/proc/self/statm`; it
//! also shows memory the allocator freed but kept). Kernel socket buffers
//! are in neither.
//!
//! Both sides need N file descriptors: each raises its `RLIMIT_NOFILE` as
//! far as the hard limit allows, and N is scaled down (and the report says
//! so) when that is not enough.

mod client;
pub mod server;

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use twistor_transports::tls::ClientConfigBuilder;

use crate::limits::raise_nofile;
use crate::peers::certs::CertFiles;
use crate::peers::python::{Python, Script};
use crate::proc::Proc;
use client::Clients;

/// One measured configuration: a protocol and a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// twistor's `Echo` over TCP.
    TcpTwistor,
    /// The hand-written mio echo loop.
    TcpMio,
    /// tokio's `current_thread` echo, a 64 KiB buffer per task.
    TcpTokio,
    /// `LineReceiver` echoing lines.
    LineTwistor,
    /// tokio's `BufReader` + `read_until` line echo.
    LineTokio,
    /// twistor's `Echo` under the TLS layer.
    TlsTwistor,
    /// A hand-written mio + rustls echo.
    TlsMio,
    /// tokio-rustls echo.
    TlsTokio,
    /// Twisted's TCP echo (the bench's script).
    TcpTwisted,
    /// asyncio+uvloop TCP echo.
    TcpAsyncio,
    /// Twisted's TLS echo (`listenSSL`).
    TlsTwisted,
    /// asyncio+uvloop TLS echo.
    TlsAsyncio,
}

impl Case {
    /// Every case, in report order.
    pub const ALL: [Case; 12] = [
        Case::TcpTwistor,
        Case::TcpMio,
        Case::TcpTokio,
        Case::TcpTwisted,
        Case::TcpAsyncio,
        Case::LineTwistor,
        Case::LineTokio,
        Case::TlsTwistor,
        Case::TlsMio,
        Case::TlsTokio,
        Case::TlsTwisted,
        Case::TlsAsyncio,
    ];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Case::TcpTwistor => "tcp-twistor",
            Case::TcpMio => "tcp-mio",
            Case::TcpTokio => "tcp-tokio",
            Case::LineTwistor => "line-twistor",
            Case::LineTokio => "line-tokio",
            Case::TlsTwistor => "tls-twistor",
            Case::TlsMio => "tls-mio",
            Case::TlsTokio => "tls-tokio-rustls",
            Case::TcpTwisted => "tcp-twisted",
            Case::TcpAsyncio => "tcp-asyncio",
            Case::TlsTwisted => "tls-twisted",
            Case::TlsAsyncio => "tls-asyncio",
        }
    }

    /// Parse a command-line name.
    pub fn parse(s: &str) -> Option<Case> {
        Case::ALL.into_iter().find(|c| c.name() == s)
    }

    fn columns(self) -> (&'static str, &'static str) {
        match self {
            Case::TcpTwistor => ("TCP echo", "twistor"),
            Case::TcpMio => ("TCP echo", "mio (hand-written)"),
            Case::TcpTokio => ("TCP echo", "tokio"),
            Case::LineTwistor => ("line echo", "twistor `LineReceiver`"),
            Case::LineTokio => ("line echo", "tokio `BufReader::read_until`"),
            Case::TlsTwistor => ("TLS echo", "twistor"),
            Case::TlsMio => ("TLS echo", "mio + rustls (hand-written)"),
            Case::TlsTokio => ("TLS echo", "tokio-rustls"),
            Case::TcpTwisted => ("TCP echo", "Twisted"),
            Case::TcpAsyncio => ("TCP echo", "asyncio+uvloop"),
            Case::TlsTwisted => ("TLS echo", "Twisted (pyOpenSSL)"),
            Case::TlsAsyncio => ("TLS echo", "asyncio+uvloop (ssl)"),
        }
    }

    /// The Python script and its mode, for the cases that run one.
    fn script(self) -> Option<(Script, bool)> {
        match self {
            Case::TcpTwisted => Some((Script::Twisted, false)),
            Case::TcpAsyncio => Some((Script::Asyncio, false)),
            Case::TlsTwisted => Some((Script::Twisted, true)),
            Case::TlsAsyncio => Some((Script::Asyncio, true)),
            _ => None,
        }
    }
}

/// What `idle` measures.
#[derive(Debug, Clone)]
pub struct Config {
    /// Connections per case.
    pub conns: usize,
    /// Size of the large message, bytes (a line ends in `\r\n`).
    pub size: usize,
    /// Which cases.
    pub cases: Vec<Case>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            conns: 10_000,
            size: 60_000,
            cases: Case::ALL.to_vec(),
        }
    }
}

/// A server's memory at one moment.
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss: u64,
    /// Live heap bytes of the server thread (our own servers only).
    heap: Option<i64>,
}

/// A server being measured: one of ours (it reports its memory on
/// request), or a Python script (its resident set is read from
/// `/proc/PID/statm`).
enum Server {
    Own(ServerProcess),
    Script(Proc, String),
}

impl Server {
    fn start(case: Case, conns: usize, certs: &CertFiles, py: Option<&Python>) -> io::Result<Server> {
        match case.script() {
            None => ServerProcess::start(case, conns).map(Server::Own),
            Some((script, tls)) => {
                let py = py.ok_or_else(|| io::Error::other("no Python environment"))?;
                let mode = if tls {
                    certs.script_args()
                } else {
                    vec!["tcp".into()]
                };
                let p = py.echo(script, case.name(), &mode, 0)?;
                Ok(Server::Script(p, certs.fingerprint.clone()))
            }
        }
    }

    fn port(&self) -> u16 {
        match self {
            Server::Own(s) => s.port,
            Server::Script(p, _) => p.addr.port(),
        }
    }

    fn fingerprint(&self, case: Case) -> Option<String> {
        match self {
            Server::Own(s) => s.fingerprint.clone(),
            Server::Script(_, fp) => matches!(case.script(), Some((_, true))).then(|| fp.clone()),
        }
    }

    fn measure(&mut self) -> io::Result<Memory> {
        match self {
            Server::Own(s) => s.measure(),
            Server::Script(p, _) => Ok(Memory {
                rss: server::rss_of(p.pid())?,
                heap: None,
            }),
        }
    }
}

/// A running `idle-server` process.
struct ServerProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    port: u16,
    fingerprint: Option<String>,
}

impl ServerProcess {
    fn start(case: Case, conns: usize) -> io::Result<ServerProcess> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["idle-server", case.name(), "--conns", &conns.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let mut words = line.split_whitespace();
        let port = words.next().and_then(|p| p.parse().ok());
        let fingerprint = words.next().filter(|f| *f != "-").map(str::to_string);
        let Some(port) = port else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!(
                "the {} server did not start",
                case.name()
            )));
        };
        Ok(ServerProcess {
            child,
            stdin,
            stdout,
            port,
            fingerprint,
        })
    }

    fn measure(&mut self) -> io::Result<Memory> {
        writeln!(self.stdin, "measure")?;
        self.stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        let mut words = line.split_whitespace().map(|w| w.parse::<i64>());
        match (words.next(), words.next()) {
            (Some(Ok(rss)), Some(Ok(heap))) => Ok(Memory {
                rss: rss as u64,
                heap: Some(heap),
            }),
            _ => Err(io::Error::other(format!("bad measurement: {line:?}"))),
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Closing stdin ends the server; kill in case it is stuck.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One case's figures.
struct Row {
    case: Case,
    conns: usize,
    base: Memory,
    small: Memory,
    large: Memory,
}

fn per_conn(after: i64, before: i64, n: usize) -> f64 {
    (after - before) as f64 / n.max(1) as f64
}

fn heap_per_conn(after: Option<i64>, before: Option<i64>, n: usize) -> String {
    match (after, before) {
        (Some(a), Some(b)) => bytes(per_conn(a, b, n)),
        _ => "-".into(),
    }
}

/// Whole bytes with thousands separators (negative when memory went down).
fn bytes(b: f64) -> String {
    let n = b.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    if n < 0 {
        out.insert(0, '-');
    }
    out
}

/// Measure one case.
fn measure(case: Case, cfg: &Config, certs: &CertFiles, py: Option<&Python>) -> io::Result<Row> {
    let (conns, size) = (cfg.conns, cfg.size);
    let mut server = Server::start(case, conns, certs, py)?;
    let base = server.measure()?;
    let tls = match server.fingerprint(case) {
        Some(fp) => Some(ClientConfigBuilder::new().pinned(&fp).build()?),
        None => None,
    };
    let mut clients = Clients::open(server.port(), conns, b"hi\r\n", tls)?;
    let small = server.measure()?;
    let mut large = vec![b'x'; size.max(2)];
    let n = large.len();
    large[n - 2..].copy_from_slice(b"\r\n");
    clients.send_all(&large)?;
    let large = server.measure()?;
    // The server goes first, so its side of each connection is closed
    // before ours (the TIME_WAIT states land on its ports).
    drop(server);
    drop(clients);
    Ok(Row {
        case,
        conns,
        base,
        small,
        large,
    })
}

/// Run the cases and return the report (markdown).
pub fn run(cfg: &Config, certs: &CertFiles, py: Option<&Python>) -> io::Result<String> {
    // Our side needs one descriptor per connection too.
    let limit = raise_nofile(cfg.conns as u64 + 64)?;
    let conns = cfg.conns.min(limit.saturating_sub(64) as usize).max(1);
    let mut s = String::new();
    if conns < cfg.conns {
        let _ = writeln!(
            s,
            "The open-file limit ({limit}) allows {conns} connections, not {}: scaled down.\n",
            cfg.conns
        );
    }
    let _ = writeln!(
        s,
        "Server memory per connection, {conns} connections each: after a 4-byte echo, and after \
         one {} KB message each, all idle. Heap: the server thread's live heap bytes; RSS: the \
         server process's resident set. Bytes per connection.\n",
        cfg.size / 1000
    );
    let _ = writeln!(
        s,
        "| protocol | server | heap, idle | heap, after {} KB | RSS, idle | RSS, after {} KB |",
        cfg.size / 1000,
        cfg.size / 1000
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    let cfg = Config { conns, ..cfg.clone() };
    for &case in &cfg.cases {
        if case.script().is_some() && py.is_none() {
            continue;
        }
        eprintln!("idle: {} ({conns} connections)", case.name());
        let row = match measure(case, &cfg, certs, py) {
            Ok(row) => row,
            Err(e) => {
                // One server that cannot hold the connections does not
                // end the others' measurement: its row says why.
                let (proto, server) = case.columns();
                eprintln!("idle: {} failed: {e}", case.name());
                let _ = writeln!(s, "| {proto} | {server} | failed: {e} | | | |");
                continue;
            }
        };
        let (proto, server) = row.case.columns();
        let _ = writeln!(
            s,
            "| {proto} | {server} | {} | {} | {} | {} |",
            heap_per_conn(row.small.heap, row.base.heap, row.conns),
            heap_per_conn(row.large.heap, row.base.heap, row.conns),
            bytes(per_conn(row.small.rss as i64, row.base.rss as i64, row.conns)),
            bytes(per_conn(row.large.rss as i64, row.base.rss as i64, row.conns)),
        );
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_names_round_trip() {
        for c in Case::ALL {
            assert_eq!(Case::parse(c.name()), Some(c));
        }
        assert_eq!(Case::parse("udp-twistor"), None);
    }

    #[test]
    fn per_connection_bytes_are_printed_whole_with_separators() {
        assert_eq!(bytes(per_conn(10_600_000, 600_000, 10_000)), "1,000");
        assert_eq!(bytes(per_conn(1_234_567_890, 0, 1)), "1,234,567,890");
        assert_eq!(bytes(per_conn(0, 5_000, 10)), "-500");
        assert_eq!(bytes(0.4), "0");
    }
}
