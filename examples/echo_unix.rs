//! The lab's echo over a Unix socket: the TCP echo, with a path instead of
//! a port. The protocols are the very same; only `listen_unix` /
//! `connect_unix` differ.
//!
//! ```text
//! cargo run --example echo_unix server [PATH]            # default /tmp/twistor-echo.sock
//! cargo run --example echo_unix client [PATH] [MESSAGE]
//! ```
//!
//! The server removes a stale socket file left by a crashed run, and its
//! own file when it stops (Ctrl-C). A path starting with `@` is a Linux
//! abstract name (no file at all), e.g. `@echo`.

use twistor::prelude::*;
use twistor::transports::{connect_unix, listen_unix};

const DEFAULT_PATH: &str = "/tmp/twistor-echo.sock";

struct Echo;

impl Protocol for Echo {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        println!("connection on {}", t.host());
    }

    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        t.write(data);
    }
}

struct EchoClient {
    message: Vec<u8>,
}

impl Protocol for EchoClient {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        t.write(&self.message);
    }

    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        println!("Server said: {}", String::from_utf8_lossy(data));
        t.lose_connection();
    }
}

struct EchoClientFactory {
    message: Vec<u8>,
}

impl Factory for EchoClientFactory {
    fn build_protocol(&mut self, _: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(EchoClient {
            message: self.message.clone(),
        }))
    }
}

impl ClientFactory for EchoClientFactory {
    fn client_connection_failed(&mut self, r: &mut Reactor, c: &Connector, reason: &Reason) {
        println!("Connection to {} failed: {reason}", c.destination());
        r.stop();
    }

    fn client_connection_lost(&mut self, r: &mut Reactor, _: &Connector, _: &Reason) {
        println!("Connection lost.");
        r.stop();
    }
}

fn main() -> lab::Result {
    lab::init_logging();
    let mut args = lab::Args::new("server|client [PATH] [MESSAGE]");
    let mode = args.mode(&["server", "client"]);
    let path = args.text_or(DEFAULT_PATH);
    let mut reactor = Reactor::new()?;
    if mode == "server" {
        let port = listen_unix(&mut reactor, &path, |_: &Address| Echo)?;
        println!("listening on {} (Ctrl-C stops)", port.local_addr());
    } else {
        let message = args.text_or("Hello, world!").into_bytes();
        connect_unix(&mut reactor, &path, EchoClientFactory { message });
    }
    Ok(reactor.run()?)
}
