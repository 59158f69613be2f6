//! The lab's UDP echo client: sends one datagram, prints the reply, stops.
//!
//! ```text
//! cargo run --example echo_udp_client [PORT] [MESSAGE]   # default 1234, "hello"
//! ```
//!
//! It stops on the reply, on an ICMP "port unreachable" (nobody listens:
//! the connected socket reports `ConnectionRefused`), or after 5 seconds
//! without an answer (UDP may lose datagrams silently), and says which.
//! Exit status 0 with a reply, 1 without.
use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use twistor::prelude::*;

const TIMEOUT: Duration = Duration::from_secs(5);

struct Client {
    message: Vec<u8>,
    ok: Rc<Cell<bool>>,
}

impl DatagramProtocol for Client {
    fn start_protocol(&mut self, t: &mut dyn DatagramTransport) {
        if let Err(e) = t.write(&self.message) {
            eprintln!("could not send: {e}");
            t.reactor().stop();
        }
    }

    fn datagram_received(&mut self, t: &mut dyn DatagramTransport, data: &[u8], from: SocketAddr) {
        println!("reply {:?} from {from}", String::from_utf8_lossy(data));
        self.ok.set(true);
        t.reactor().stop();
    }

    fn error_received(&mut self, t: &mut dyn DatagramTransport, err: &std::io::Error) {
        match err.kind() {
            std::io::ErrorKind::ConnectionRefused => {
                eprintln!("no UDP echo server at {} (port unreachable)", t.peer().unwrap())
            }
            _ => eprintln!("error: {err}"),
        }
        t.reactor().stop();
    }
}

fn main() -> lab::Result {
    lab::init_logging();
    let mut args = lab::Args::new("[PORT] [MESSAGE]");
    let port = args.port();
    let message = args.text_or("hello").into_bytes();
    let ok = Rc::new(Cell::new(false));
    let mut reactor = Reactor::new()?;
    let client = Client {
        message,
        ok: ok.clone(),
    };
    connect_udp(&mut reactor, format!("localhost:{port}"), client)?; // listenUDP(0) + connect
    reactor.call_later(TIMEOUT, |r| {
        eprintln!("no reply within {} s: giving up", TIMEOUT.as_secs());
        r.stop();
    });
    reactor.run()?;
    if !ok.get() {
        std::process::exit(1);
    }
    Ok(())
}
