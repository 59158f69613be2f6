//! The lab's UDP echo server.
//!
//! ```text
//! cargo run --example echo_udp [PORT]      # default port 1234
//! nc -u localhost 1234                     # type a line: it comes back
//! ```
//!
//! Every datagram is printed as `received "..." from ADDR` and sent back to
//! where it came from. The port listens on IPv6 and IPv4 alike.

use std::net::SocketAddr;

use twistor::prelude::*;
use twistor::transports::listen_udp;

/// Twisted: `class Echo(DatagramProtocol): def datagramReceived(self, data, addr)`.
struct Echo;

impl DatagramProtocol for Echo {
    fn datagram_received(&mut self, t: &mut dyn DatagramTransport, data: &[u8], from: SocketAddr) {
        println!("received {:?} from {from}", String::from_utf8_lossy(data));
        if let Err(e) = t.send_to(data, from) {
            eprintln!("could not echo to {from}: {e}");
        }
    }
}

fn main() -> std::io::Result<()> {
    env_logger::init();
    let port: u16 = match std::env::args().nth(1) {
        Some(p) => p.parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("not a port number: {p}"),
            )
        })?,
        None => 1234,
    };
    let mut reactor = Reactor::new()?;
    let listening = listen_udp(&mut reactor, port, Echo)?;
    println!("UDP echo listening on {} (Ctrl-C stops)", listening.local_addr());
    reactor.run()
}
