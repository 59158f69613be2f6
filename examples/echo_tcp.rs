//! The lab's TCP echo server.
//!
//! ```text
//! cargo run --example echo_tcp          # port 1234
//! telnet localhost 1234                  # or: nc localhost 1234
//! ```
use twistor::prelude::*;

struct Echo;

impl Protocol for Echo {
    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        println!("received {:?}", String::from_utf8_lossy(data));
        transport.write(data);
    }
}

fn main() -> std::io::Result<()> {
    env_logger::init();
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(1234);
    let mut reactor = Reactor::new()?;
    listen_tcp(&mut reactor, port, |_: &Address| Echo)?;
    reactor.run()
}
