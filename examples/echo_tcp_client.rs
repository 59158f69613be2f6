//! The lab's TCP echo client: says hello, prints the answer, and stops the
//! reactor whether the connection failed or ended. Exit status 1 when it
//! could not connect.
//!
//! ```text
//! cargo run --example echo_tcp_client [PORT]   # connects to localhost:1234
//! ```
use std::cell::Cell;
use std::rc::Rc;

use twistor::prelude::*;

struct EchoClient;

impl Protocol for EchoClient {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        transport.write(b"Hello, world!");
    }

    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        println!("Server said: {}", String::from_utf8_lossy(data));
        transport.lose_connection();
    }
}

struct EchoFactory {
    failed: Rc<Cell<bool>>,
}

impl Factory for EchoFactory {
    fn build_protocol(&mut self, _addr: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(EchoClient))
    }
}

impl ClientFactory for EchoFactory {
    fn client_connection_failed(&mut self, reactor: &mut Reactor, _: &Connector, reason: &Reason) {
        println!("Connection failed: {reason}");
        self.failed.set(true);
        reactor.stop();
    }

    fn client_connection_lost(&mut self, reactor: &mut Reactor, _: &Connector, reason: &Reason) {
        println!("Connection lost: {reason}");
        reactor.stop();
    }
}

fn main() -> lab::Result {
    lab::init_logging();
    let port = lab::Args::new("[PORT]").port();
    let failed = Rc::new(Cell::new(false));
    let mut reactor = Reactor::new()?;
    connect_tcp(
        &mut reactor,
        "localhost",
        port,
        EchoFactory {
            failed: failed.clone(),
        },
    );
    reactor.run()?;
    if failed.get() {
        std::process::exit(1);
    }
    Ok(())
}
