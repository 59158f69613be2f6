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

fn main() -> lab::Result {
    lab::init_logging();
    let port = lab::Args::new("[PORT]").port();
    let mut reactor = Reactor::new()?;
    let listening = listen_udp(&mut reactor, port, Echo)?;
    println!("listening on UDP {}", listening.local_addr());
    Ok(reactor.run()?)
}
