//! Allocations per request in twistor's TLS echo steady state (the TLS part
//! of `twistor-bench allocs`, and a test `cargo test` runs), beside the
//! hand-written mio + rustls loop's: rustls's buffered API allocates a
//! buffer per record each way, so that loop's count is the floor for any
//! server on it.
//!
//! The server (`listen_tls` with `Echo`, default options) runs on a thread
//! of this process that counts its own allocations; the TLS load generator
//! (rustls) runs on the calling thread over persistent connections. The
//! server reads its count at the start and the end of the window itself,
//! on its loop thread, so the figure is that thread's alone: the TLS
//! layer's and rustls's allocations included.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use twistor_reactor::{Address, Reactor, Remote};
use twistor_transports::tls::{listen_tls, ClientConfigBuilder};

use crate::alloc_count;
use crate::cpu::pin_to;
use crate::servers::mio_tls_echo;
use crate::servers::twistor_echo::Echo;
use crate::tls_load::{self, TlsMode, TlsSpec, Until};

/// One measured window.
pub struct Window {
    /// Requests echoed in the window.
    pub requests: u64,
    /// Allocations the server made in the window.
    pub allocs: u64,
    /// Bytes those allocations asked for.
    pub bytes: u64,
}

/// Which counted TLS echo server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Counted {
    /// twistor's TLS layer.
    Twistor,
    /// The hand-written mio + rustls loop: rustls's own allocations.
    MioRustls,
}

/// The load of one window: connections, request size, warm-up, window.
pub struct Load {
    /// Connections.
    pub conns: usize,
    /// Request size.
    pub size: usize,
    /// Warm-up.
    pub warmup: Duration,
    /// Window.
    pub window: Duration,
}

/// A counted server's count, readable from the load generator's thread.
type Probe = Box<dyn Fn() -> io::Result<(u64, u64)>>;

/// Run counted server `which` (pinned to `server_core` if given) on its
/// own thread and drive `load` at it.
pub fn measure(
    which: Counted,
    server_core: Option<usize>,
    config: Arc<ServerConfig>,
    fingerprint: &str,
    load: &Load,
) -> io::Result<Window> {
    let (tx, rx) = mpsc::channel::<(SocketAddr, Option<Remote>)>();
    // The mio loop's count, stored after each of its turns, and its stop.
    let shared = Arc::new((AtomicU64::new(0), AtomicU64::new(0), AtomicBool::new(false)));
    let mine = shared.clone();
    let server = std::thread::spawn(move || -> io::Result<()> {
        if let Some(core) = server_core {
            if let Err(e) = pin_to(core) {
                eprintln!("cannot pin the server thread: {e}");
            }
        }
        alloc_count::count_this_thread();
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        match which {
            Counted::Twistor => {
                let mut r = Reactor::new()?;
                r.set_install_signal_handlers(false);
                let port = listen_tls(&mut r, addr, |_: &Address| Echo, config)?;
                let _ = tx.send((port.local_addr(), Some(r.remote())));
                r.run()
            }
            Counted::MioRustls => {
                let after_turn = move || {
                    let (n, b) = alloc_count::this_thread();
                    mine.0.store(n, Ordering::Relaxed);
                    mine.1.store(b, Ordering::Relaxed);
                    !mine.2.load(Ordering::Relaxed)
                };
                let bound = |a| {
                    let _ = tx.send((a, None));
                };
                mio_tls_echo::serve_with(addr, config, bound, after_turn)
            }
        }
    });
    let (addr, remote) = rx
        .recv()
        .map_err(|_| io::Error::other("the counted server did not start"))?;
    let probe: Probe = match remote.clone() {
        Some(remote) => Box::new(move || alloc_count::server_count(&remote)),
        None => {
            let s = shared.clone();
            Box::new(move || Ok((s.0.load(Ordering::Relaxed), s.1.load(Ordering::Relaxed))))
        }
    };
    let res = (|| {
        let spec = TlsSpec {
            addr,
            server_name: "localhost",
            config: ClientConfigBuilder::new().pinned(fingerprint).build()?,
            mode: TlsMode::Echo,
            conns: load.conns,
            request: vec![b'a'; load.size],
            until: Until::Bytes(load.size),
            expect_prefix: Vec::new(),
            warmup: load.warmup,
            window: load.window,
        };
        let (o, a, b) = tls_load::run(&spec, &probe)?;
        let (a, b) = (a?, b?);
        Ok(Window {
            requests: o.requests,
            allocs: b.0 - a.0,
            bytes: b.1 - a.1,
        })
    })();
    match remote {
        Some(r) => drop(r.stop()),
        None => shared.2.store(true, Ordering::Relaxed),
    }
    server
        .join()
        .map_err(|_| io::Error::other("the counted server panicked"))??;
    res
}

/// The report rows (markdown) for `twistor-bench allocs`: about `requests`
/// requests' worth of time at each size.
pub fn rows(server_core: usize, client_core: usize, requests: u64) -> io::Result<String> {
    pin_to(client_core)?;
    // A certificate of its own, in memory: the run's certificate files
    // belong to the peers that read them.
    let (chain, key) = twistor_transports::tls::generate_self_signed_cert(&["localhost"])?;
    let fingerprint = twistor_transports::tls::sha256_fingerprint(&chain[0]);
    let config = twistor_transports::tls::ServerConfigBuilder::new()
        .cert(chain, key)?
        .build()?;
    let mut s = String::new();
    // About 40k TLS echoes a second on this kind of machine.
    let window = Duration::from_secs_f64((requests as f64 / 40_000.0).clamp(0.5, 10.0));
    for (conns, size) in [(50, 64), (10, 16 * 1024)] {
        for (which, name) in [
            (Counted::Twistor, "TLS echo"),
            (
                Counted::MioRustls,
                "TLS echo, hand-written mio + rustls (rustls's own)",
            ),
        ] {
            let load = Load {
                conns,
                size,
                warmup: Duration::from_millis(500),
                window,
            };
            let w = measure(which, Some(server_core), config.clone(), &fingerprint, &load)?;
            s.push_str(&format!(
                "| {name}, {conns} conns, {size} B | {} requests | {} | {:.4} | {} |\n",
                w.requests,
                w.allocs,
                w.allocs as f64 / w.requests.max(1) as f64,
                w.bytes
            ));
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TLS echo in steady state: rustls's buffered API allocates a buffer
    /// for every record it decrypts and every record it encrypts, so the
    /// floor is the hand-written mio + rustls loop's count, measured here
    /// beside twistor's. twistor's TLS layer adds no allocation of its own
    /// (its plaintext buffers come from the thread's spares), small and
    /// large messages.
    #[test]
    fn tls_echo_allocates_no_more_than_rustls_itself() {
        let (chain, key) = twistor_transports::tls::generate_self_signed_cert(&["localhost"]).unwrap();
        let fingerprint = twistor_transports::tls::sha256_fingerprint(&chain[0]);
        let config = twistor_transports::tls::ServerConfigBuilder::new()
            .cert(chain, key)
            .unwrap()
            .build()
            .unwrap();
        for (conns, size) in [(10, 64), (4, 16 * 1024)] {
            let load = Load {
                conns,
                size,
                warmup: Duration::from_secs(1),
                window: Duration::from_secs(2),
            };
            let per = |which| {
                let w = measure(which, None, config.clone(), &fingerprint, &load).unwrap();
                assert!(
                    w.requests >= 100,
                    "{which:?}, {size} B: only {} requests",
                    w.requests
                );
                w.allocs as f64 / w.requests as f64
            };
            let (ours, floor) = (per(Counted::Twistor), per(Counted::MioRustls));
            // Within 2 %: a window's edges cut a request or two.
            assert!(
                ours <= floor * 1.02,
                "{size} B: twistor {ours:.3} allocations per request, rustls alone {floor:.3}"
            );
        }
    }
}
