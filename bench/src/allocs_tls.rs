//! Allocations per request in twistor's TLS echo steady state (the TLS part
//! of `twistor-bench allocs`, and a test `cargo test` runs).
//!
//! The server (`listen_tls` with `Echo`, default options) runs on a thread
//! of this process that counts its own allocations; the TLS load generator
//! (rustls) runs on the calling thread over persistent connections. The
//! server reads its count at the start and the end of the window itself,
//! on its loop thread, so the figure is that thread's alone: the TLS
//! layer's and rustls's allocations included.

use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use twistor_reactor::{Address, Reactor, Remote};
use twistor_transports::tls::{listen_tls, ClientConfigBuilder};

use crate::alloc_count;
use crate::cpu::pin_to;
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

/// Run the counted TLS echo server (pinned to `server_core` if given) and
/// drive `conns` connections of `size`-byte request/response for `window`
/// after `warmup`.
pub fn measure(
    server_core: Option<usize>,
    config: Arc<ServerConfig>,
    fingerprint: &str,
    (conns, size): (usize, usize),
    (warmup, window): (Duration, Duration),
) -> io::Result<Window> {
    let (tx, rx) = mpsc::channel();
    let server = std::thread::spawn(move || -> io::Result<()> {
        if let Some(core) = server_core {
            if let Err(e) = pin_to(core) {
                eprintln!("cannot pin the server thread: {e}");
            }
        }
        alloc_count::count_this_thread();
        let mut r = Reactor::new()?;
        r.set_install_signal_handlers(false);
        let port = listen_tls(&mut r, "127.0.0.1:0", |_: &Address| Echo, config)?;
        let _ = tx.send((port.local_addr(), r.remote()));
        r.run()
    });
    let (addr, remote): (SocketAddr, Remote) = rx
        .recv()
        .map_err(|_| io::Error::other("the counted server did not start"))?;
    let res = (|| {
        let spec = TlsSpec {
            addr,
            server_name: "localhost",
            config: ClientConfigBuilder::new().pinned(fingerprint).build()?,
            mode: TlsMode::Echo,
            conns,
            request: vec![b'a'; size],
            until: Until::Bytes(size),
            expect_prefix: Vec::new(),
            warmup,
            window,
        };
        let (o, a, b) = tls_load::run(&spec, || alloc_count::server_count(&remote))?;
        let (a, b) = (a?, b?);
        Ok(Window {
            requests: o.requests,
            allocs: b.0 - a.0,
            bytes: b.1 - a.1,
        })
    })();
    let _ = remote.stop();
    server
        .join()
        .map_err(|_| io::Error::other("the counted server panicked"))??;
    res
}

/// The report rows (markdown) for `twistor-bench allocs`: about `requests`
/// requests' worth of time at each size.
pub fn rows(server_core: usize, client_core: usize, requests: u64) -> io::Result<String> {
    pin_to(client_core)?;
    let certs = crate::peers::certs::CertFiles::make()?;
    let mut s = String::new();
    // About 40k TLS echoes a second on this kind of machine.
    let window = Duration::from_secs_f64((requests as f64 / 40_000.0).clamp(0.5, 10.0));
    for (conns, size) in [(50, 64), (10, 16 * 1024)] {
        let w = measure(
            Some(server_core),
            certs.server_config()?,
            &certs.fingerprint,
            (conns, size),
            (Duration::from_millis(500), window),
        )?;
        s.push_str(&format!(
            "| TLS echo, {conns} conns, {size} B | {} requests | {} | {:.4} | {} |\n",
            w.requests,
            w.allocs,
            w.allocs as f64 / w.requests.max(1) as f64,
            w.bytes
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Invariant: zero allocations per event on the echo path in steady
    /// state, for TLS echo too (the TLS layer and rustls included), small
    /// and large messages.
    #[test]
    fn tls_echo_allocates_nothing_per_request_in_steady_state() {
        let (chain, key) = twistor_transports::tls::generate_self_signed_cert(&["localhost"]).unwrap();
        let fingerprint = twistor_transports::tls::sha256_fingerprint(&chain[0]);
        let config = twistor_transports::tls::ServerConfigBuilder::new()
            .cert(chain, key)
            .unwrap()
            .build()
            .unwrap();
        for (conns, size) in [(10, 64), (4, 16 * 1024)] {
            let w = measure(
                None,
                config.clone(),
                &fingerprint,
                (conns, size),
                (Duration::from_secs(1), Duration::from_secs(2)),
            )
            .unwrap();
            assert!(w.requests >= 100, "{size} B: only {} requests", w.requests);
            assert_eq!(
                (w.allocs, w.bytes),
                (0, 0),
                "{size} B: {} allocations over {} requests",
                w.allocs,
                w.requests
            );
        }
    }
}
