//! `UdpEcho`: the lab's UDP echo as a reusable protocol.

use std::net::SocketAddr;

use twistor_reactor::{DatagramProtocol, DatagramTransport};

/// Sends every datagram back to where it came from, logging each one at
/// `debug` level by sender and size (`ADDR: N bytes`), never its bytes.
/// The protocol behind `twistor echo --udp`.
///
/// ```
/// use twistor_reactor::Reactor;
/// use twistor_transports::udp::{listen_udp, UdpEcho};
/// let mut r = Reactor::new().unwrap();
/// let port = listen_udp(&mut r, "127.0.0.1:0", UdpEcho::new()).unwrap();
/// assert!(port.is_listening());
/// ```
#[derive(Debug, Default)]
pub struct UdpEcho {
    echoed: u64,
}

impl UdpEcho {
    /// A new echo protocol.
    pub fn new() -> UdpEcho {
        UdpEcho::default()
    }

    /// How many datagrams were echoed.
    pub fn echoed(&self) -> u64 {
        self.echoed
    }
}

impl DatagramProtocol for UdpEcho {
    fn datagram_received(&mut self, t: &mut dyn DatagramTransport, data: &[u8], from: SocketAddr) {
        if log::log_enabled!(log::Level::Debug) {
            log_received(data, from);
        }
        match t.send_to(data, from) {
            Ok(()) => self.echoed += 1,
            Err(e) => log_failed(from, &e),
        }
    }

    fn error_received(&mut self, _: &mut dyn DatagramTransport, err: &std::io::Error) {
        log::warn!("UDP echo: {err}");
    }
}

// Kept out of line: the echo path itself stays small.
#[cold]
fn log_received(data: &[u8], from: SocketAddr) {
    // Sizes and addresses, never payloads (as TCP logs them).
    log::debug!("{from}: {} bytes", data.len());
}

#[cold]
fn log_failed(to: SocketAddr, e: &std::io::Error) {
    log::warn!("echo to {to} failed: {e}");
}
