//! The server side of `twistor-bench idle`: the process
//! `twistor-bench idle-server CASE` runs one echo server on a thread whose
//! allocations are counted (live heap bytes, see `alloc_count.rs`), prints
//! its port (and, for TLS, the certificate's fingerprint), then answers
//! each `measure` line on stdin with its resident set size and the server
//! thread's live heap bytes. It exits when stdin closes.

use std::io::{self, BufRead, Write};
use std::net::SocketAddr;
use std::sync::mpsc;

use twistor_protocols::{LineControl, LineReceiver};
use twistor_reactor::{Address, Reactor};
use twistor_transports::listen_tcp;
use twistor_transports::tls::{listen_tls, ServerConfigBuilder};

use super::Case;
use crate::alloc_count;
use crate::limits::raise_nofile;
use crate::servers::{mio_echo, mio_tls_echo, tokio_echo, tokio_tls_echo, twistor_echo};

/// The longest line the line servers accept: above the bench's large
/// message.
pub const MAX_LINE: usize = 64 * 1024;

/// Run the child process for `case`, sized for `conns` connections.
pub fn child(case: Case, conns: usize) -> io::Result<()> {
    let limit = raise_nofile(conns as u64 + 64)?;
    if limit < conns as u64 + 64 {
        eprintln!("idle-server: open-file limit {limit}, below {conns} connections");
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        alloc_count::count_this_thread();
        let res = serve(case, move |addr, fingerprint| {
            let _ = tx.send((addr, fingerprint));
        });
        if let Err(e) = res {
            eprintln!("idle-server {}: {e}", case.name());
            std::process::exit(1);
        }
    });
    let (addr, fingerprint) = rx
        .recv()
        .map_err(|_| io::Error::other("the server did not start"))?;
    let mut out = io::stdout().lock();
    writeln!(out, "{} {}", addr.port(), fingerprint.as_deref().unwrap_or("-"))?;
    out.flush()?;
    for line in io::stdin().lock().lines() {
        if line? == "measure" {
            writeln!(out, "{} {}", rss_bytes()?, alloc_count::live_bytes())?;
            out.flush()?;
        }
    }
    Ok(())
}

/// Run `case`'s server on this thread on 127.0.0.1, calling `bound` once
/// it listens.
fn serve(case: Case, bound: impl FnOnce(SocketAddr, Option<String>)) -> io::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    match case {
        Case::TcpTwistor => twistor_echo::serve(addr, |a| bound(a, None)),
        Case::TcpMio => mio_echo::serve(addr, false, |a| bound(a, None)),
        Case::TcpTokio => tokio_echo::serve(addr, |a| bound(a, None)),
        Case::LineTokio => tokio_echo::serve_lines(addr, |a| bound(a, None)),
        Case::LineTwistor => {
            let mut r = Reactor::new()?;
            let port = listen_tcp(&mut r, addr, |_: &Address| {
                LineReceiver::new(|c: &mut LineControl<'_>, line: &[u8]| c.send_line(line))
                    .with_max_length(MAX_LINE)
            })?;
            bound(port.local_addr(), None);
            r.run()
        }
        Case::TlsTwistor => {
            let (config, fingerprint) = ServerConfigBuilder::self_signed(&["localhost"])?;
            let mut r = Reactor::new()?;
            let port = listen_tls(&mut r, addr, |_: &Address| twistor_echo::Echo, config)?;
            bound(port.local_addr(), Some(fingerprint));
            r.run()
        }
        Case::TlsMio => {
            let (config, fingerprint) = ServerConfigBuilder::self_signed(&["localhost"])?;
            mio_tls_echo::serve(addr, config, |a| bound(a, Some(fingerprint)))
        }
        Case::TlsTokio => {
            let (config, fingerprint) = ServerConfigBuilder::self_signed(&["localhost"])?;
            tokio_tls_echo::serve(addr, config, |a| bound(a, Some(fingerprint)))
        }
        Case::TcpTwisted | Case::TcpAsyncio | Case::TlsTwisted | Case::TlsAsyncio => Err(io::Error::other(
            "a Python case runs its script, not an idle-server",
        )),
    }
}

/// This process's resident set size, from `/proc/self/statm`.
fn rss_bytes() -> io::Result<u64> {
    rss_at("/proc/self/statm")
}

/// Process `pid`'s resident set size, from `/proc/PID/statm`.
pub fn rss_of(pid: u32) -> io::Result<u64> {
    rss_at(&format!("/proc/{pid}/statm"))
}

fn rss_at(path: &str) -> io::Result<u64> {
    let text = std::fs::read_to_string(path)?;
    let pages: u64 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/self/statm"))?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    Ok(pages * page)
}
