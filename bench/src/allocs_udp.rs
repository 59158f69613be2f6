//! Allocations per datagram in twistor's UDP echo steady state (the UDP
//! part of `twistor-bench allocs`, and a test `cargo test` runs).
//!
//! The server (`listen_udp` with `UdpEcho`, default options) runs on a
//! thread of this process that counts its own allocations; the UDP load
//! generator runs on the calling thread. The server reads its count at the
//! start and the end of the measured window itself, on its loop thread, so
//! the figure is that thread's alone.

use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use twistor_reactor::{Reactor, Remote};
use twistor_transports::udp::{listen_udp, UdpEcho};

use crate::alloc_count;
use crate::cpu::pin_to;
use crate::udp_load::{self, UdpSpec};

/// One measured window: datagrams echoed, allocations, bytes.
pub struct Window {
    /// Echoes received in the window.
    pub datagrams: u64,
    /// Allocations the server made in the window.
    pub allocs: u64,
    /// Bytes those allocations asked for.
    pub bytes: u64,
}

/// Run the counted UDP echo server on its own thread (pinned to
/// `server_core` if given) and drive `datagrams` echoes per in-flight
/// count in `inflight` after a warm-up.
pub fn measure(
    server_core: Option<usize>,
    inflight: &[usize],
    datagrams: u64,
) -> io::Result<Vec<(usize, Window)>> {
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
        let port = listen_udp(&mut r, "127.0.0.1:0", UdpEcho::new())?;
        let _ = tx.send((port.local_addr(), r.remote()));
        r.run()
    });
    let (addr, remote): (SocketAddr, Remote) = rx
        .recv()
        .map_err(|_| io::Error::other("the counted server did not start"))?;
    let res = (|| {
        let mut out = Vec::new();
        for &w in inflight {
            let spec = UdpSpec {
                addr,
                inflight: w,
                size: 64,
                // A fixed count rather than time: a slow (debug, loaded)
                // run measures the same steady state, just longer.
                warmup: Duration::ZERO,
                window: Duration::from_secs(300),
                max_datagrams: 5_000,
                loss_timeout: Duration::from_millis(500),
            };
            // Warm up: the socket's batch areas, the reactor's lists.
            udp_load::run(&spec, || ())?;
            let spec = UdpSpec {
                max_datagrams: datagrams,
                ..spec
            };
            let (o, a, b) = udp_load::run(&spec, || alloc_count::server_count(&remote))?;
            let (a, b) = (a?, b?);
            out.push((
                w,
                Window {
                    datagrams: o.datagrams,
                    allocs: b.0 - a.0,
                    bytes: b.1 - a.1,
                },
            ));
        }
        Ok(out)
    })();
    let _ = remote.stop();
    server
        .join()
        .map_err(|_| io::Error::other("the counted server panicked"))??;
    res
}

/// The report rows (markdown) for `twistor-bench allocs`.
pub fn rows(server_core: usize, client_core: usize, datagrams: u64) -> io::Result<String> {
    pin_to(client_core)?;
    let mut s = String::new();
    for (w, win) in measure(Some(server_core), &[32, 256], datagrams)? {
        s.push_str(&format!(
            "| UDP echo, {w} datagrams in flight, 64 B | {} datagrams | {} | {:.4} per datagram | {} |\n",
            win.datagrams,
            win.allocs,
            win.allocs as f64 / win.datagrams.max(1) as f64,
            win.bytes
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Invariant: zero allocations per event on the echo path in steady
    /// state, for UDP echo too (100,000 datagrams at each flight size).
    #[test]
    fn udp_echo_allocates_nothing_per_datagram_in_steady_state() {
        for (w, win) in measure(None, &[32, 256], 100_000).unwrap() {
            assert!(win.datagrams >= 99_000, "{w} in flight: {} echoes", win.datagrams);
            assert_eq!(
                (win.allocs, win.bytes),
                (0, 0),
                "{w} in flight: {} allocations over {} datagrams",
                win.allocs,
                win.datagrams
            );
        }
    }
}
