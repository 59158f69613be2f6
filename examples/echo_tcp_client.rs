//! The lab's TCP echo client: says hello, prints the answer, and stops the
//! reactor whether the connection failed or ended.
//!
//! ```text
//! cargo run --example echo_tcp_client   # connects to localhost:1234
//! ```
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

struct EchoFactory;

impl Factory for EchoFactory {
    fn build_protocol(&mut self, _addr: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(EchoClient))
    }
}

impl ClientFactory for EchoFactory {
    fn client_connection_failed(&mut self, reactor: &mut Reactor, _: &Connector, _: &Reason) {
        println!("Connection failed.");
        reactor.stop();
    }

    fn client_connection_lost(&mut self, reactor: &mut Reactor, _: &Connector, _: &Reason) {
        println!("Connection lost.");
        reactor.stop();
    }
}

fn main() -> std::io::Result<()> {
    env_logger::init();
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(1234);
    let mut reactor = Reactor::new()?;
    connect_tcp(&mut reactor, "localhost", port, EchoFactory);
    reactor.run()
}
