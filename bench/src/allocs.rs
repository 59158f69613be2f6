//! `twistor-bench allocs`: allocations per request in twistor's TCP echo
//! steady state (and a test `cargo test` runs). The twistor echo server
//! runs on a thread of this process pinned to the server core, and only
//! that thread's allocations are counted (see `alloc_count.rs`), read on
//! that thread; the load generator runs on this thread, pinned to the
//! client core. The count is the delta over the measured window.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use twistor_reactor::{Address, Reactor, Remote};
use twistor_transports::listen_tcp;

use crate::alloc_count;
use crate::cpu::pin_to;
use crate::load::{self, Mode, Spec};
use crate::servers::twistor_echo::Echo;

/// Run the counted server, apply request/response, bulk and
/// connection-churn load, and return the report (markdown).
pub fn count(server_core: usize, client_core: usize, requests: u64) -> io::Result<String> {
    pin_to(client_core)?;
    with_server(Some(server_core), |addr, remote| measure(addr, remote, requests))
}

/// Run the counted echo server on its own thread (pinned to `core` if
/// given) while `f` drives it.
fn with_server<T>(
    core: Option<usize>,
    f: impl FnOnce(SocketAddr, &Remote) -> io::Result<T>,
) -> io::Result<T> {
    let (tx, rx) = mpsc::channel();
    let server = std::thread::spawn(move || -> io::Result<()> {
        if let Some(core) = core {
            if let Err(e) = pin_to(core) {
                eprintln!("cannot pin the server thread: {e}");
            }
        }
        alloc_count::count_this_thread();
        let mut r = Reactor::new()?;
        r.set_install_signal_handlers(false);
        let port = listen_tcp(&mut r, "127.0.0.1:0", |_: &Address| Echo)?;
        let _ = tx.send((port.local_addr(), r.remote()));
        r.run()
    });
    let (addr, remote) = rx
        .recv()
        .map_err(|_| io::Error::other("the counted server did not start"))?;
    let res = f(addr, &remote);
    let _ = remote.stop();
    server
        .join()
        .map_err(|_| io::Error::other("the counted server panicked"))??;
    res
}

fn measure(addr: SocketAddr, remote: &Remote, requests: u64) -> io::Result<String> {
    let count = || alloc_count::server_count(remote);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| load | window | allocations | per request | bytes allocated |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|");
    let rr = Spec {
        addr,
        mode: Mode::RequestResponse,
        conns: 50,
        size: 64,
        warmup: Duration::from_millis(300),
        window: Duration::from_secs(10),
        max_requests: requests,
    };
    let (out, a, b) = load::run(&rr, count)?;
    let (a, b) = (a?, b?);
    let _ = writeln!(
        s,
        "| request/response, 50 conns, 64 B | {} requests | {} | {:.4} | {} |",
        out.requests,
        b.0 - a.0,
        (b.0 - a.0) as f64 / out.requests.max(1) as f64,
        b.1 - a.1
    );
    let bulk = Spec {
        mode: Mode::Bulk { window: 256 * 1024 },
        conns: 1,
        size: 64 * 1024,
        max_requests: requests / 10,
        ..rr.clone()
    };
    let (out, a, b) = load::run(&bulk, count)?;
    let (a, b) = (a?, b?);
    let _ = writeln!(
        s,
        "| bulk, 1 conn, 64 KiB chunks | {} MB | {} | {:.4} per 64 KiB | {} |",
        out.bytes / 1_000_000,
        b.0 - a.0,
        (b.0 - a.0) as f64 / out.requests.max(1) as f64,
        b.1 - a.1
    );
    let (n, allocs, bytes) = churn(addr, remote, 1000)?;
    let _ = writeln!(
        s,
        "| connection churn (connect, 64 B echo, close) | {n} connections | {allocs} | {:.1} per connection | {bytes} |",
        allocs as f64 / n as f64
    );
    Ok(s)
}

/// Open, use and close `n` connections one after another; count the
/// server's allocations over them.
fn churn(addr: SocketAddr, remote: &Remote, n: u64) -> io::Result<(u64, u64, u64)> {
    use std::io::{Read, Write};
    let mut buf = [0u8; 64];
    let one = |buf: &mut [u8; 64]| -> io::Result<()> {
        let mut c = std::net::TcpStream::connect(addr)?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        c.write_all(&[b'y'; 64])?;
        c.read_exact(buf)
    };
    // Warm up: the slab and the listener's bookkeeping reach their size.
    for _ in 0..10 {
        one(&mut buf)?;
    }
    let a = alloc_count::server_count(remote)?;
    for _ in 0..n {
        one(&mut buf)?;
    }
    // The last connection's close may still be in flight; one more full
    // round trip on a fresh connection lets the server reach it.
    one(&mut buf)?;
    let b = alloc_count::server_count(remote)?;
    Ok((n, b.0 - a.0, b.1 - a.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Invariant: zero allocations per event on the TCP echo path in
    /// steady state, request/response and bulk.
    #[test]
    fn tcp_echo_allocates_nothing_per_request_in_steady_state() {
        with_server(None, |addr, remote| {
            let count = || alloc_count::server_count(remote);
            let rr = Spec {
                addr,
                mode: Mode::RequestResponse,
                conns: 20,
                size: 64,
                warmup: Duration::from_millis(500),
                window: Duration::from_secs(30),
                max_requests: 50_000,
            };
            let (out, a, b) = load::run(&rr, count)?;
            let (a, b) = (a?, b?);
            assert!(out.requests >= 50_000, "{} requests", out.requests);
            assert_eq!((b.0 - a.0, b.1 - a.1), (0, 0), "over {} requests", out.requests);
            let bulk = Spec {
                mode: Mode::Bulk { window: 256 * 1024 },
                conns: 1,
                size: 64 * 1024,
                max_requests: 2_000,
                ..rr
            };
            let (out, a, b) = load::run(&bulk, count)?;
            let (a, b) = (a?, b?);
            assert!(out.requests >= 2_000, "{} chunks", out.requests);
            assert_eq!((b.0 - a.0, b.1 - a.1), (0, 0), "over {} chunks", out.requests);
            Ok(())
        })
        .unwrap();
    }
}
