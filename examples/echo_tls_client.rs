//! The lab's SSL echo client: says hello over TLS, prints the answer, and
//! stops the reactor whether the connection failed or ended.
//!
//! When the working directory has the lab's self-signed `domain.crt`, it
//! trusts exactly that certificate (pinned by its SHA-256 fingerprint, so
//! whatever name was typed into `openssl req` does not matter); otherwise
//! it verifies the server against the system's roots.
//!
//! ```text
//! cargo run --example echo_tls_client      # connects to localhost:1234
//! ```
use std::path::Path;

use twistor::prelude::*;
use twistor::transports::tls::{connect_tls, load_certs, sha256_fingerprint, ClientConfigBuilder};

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
    fn client_connection_failed(&mut self, reactor: &mut Reactor, _: &Connector, reason: &Reason) {
        println!("Connection failed: {reason}");
        reactor.stop();
    }

    fn client_connection_lost(&mut self, reactor: &mut Reactor, _: &Connector, reason: &Reason) {
        println!("Connection lost: {reason}");
        reactor.stop();
    }
}

fn main() -> std::io::Result<()> {
    env_logger::init();
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(1234);
    let config = if Path::new("domain.crt").exists() {
        let cert = load_certs("domain.crt")?;
        ClientConfigBuilder::new()
            .pinned(&sha256_fingerprint(&cert[0]))
            .build()?
    } else {
        ClientConfigBuilder::new().build()?
    };
    let mut reactor = Reactor::new()?;
    connect_tls(&mut reactor, "localhost", port, EchoFactory, config);
    reactor.run()
}
