//! The twistor UDP echo server: `listen_udp_with` and `UdpEcho` (what
//! `twistor echo --udp` runs), default options except the receive buffer,
//! which every UDP server in the bench gets the same size of.

use std::io;
use std::net::SocketAddr;

use twistor_reactor::Reactor;
use twistor_transports::udp::{listen_udp_with, UdpEcho, UdpOptions, DEFAULT_BATCH};

/// Listen on `addr` with a `rcvbuf`-byte receive buffer and `batch`
/// datagrams per `recvmmsg` / `sendmmsg` (`None`: the default), and run
/// the reactor until it is stopped.
pub fn serve(
    addr: SocketAddr,
    rcvbuf: usize,
    batch: Option<usize>,
    bound: impl FnOnce(SocketAddr),
) -> io::Result<()> {
    let mut r = Reactor::new()?;
    let opts = UdpOptions {
        recv_buffer_size: Some(rcvbuf),
        batch: batch.unwrap_or(DEFAULT_BATCH),
        ..UdpOptions::default()
    };
    let port = listen_udp_with(&mut r, addr, UdpEcho::new(), opts)?;
    bound(port.local_addr());
    r.run()
}
