//! The lab's TCP echo server.
//!
//! ```text
//! cargo run --example echo_tcp [PORT]      # default port 1234
//! telnet localhost 1234                    # or: nc localhost 1234
//! ```
use twistor::prelude::*;

struct Echo;

impl Protocol for Echo {
    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        println!("received {:?}", String::from_utf8_lossy(data));
        transport.write(data);
    }
}

fn main() -> lab::Result {
    lab::init_logging();
    let port = lab::Args::new("[PORT]").port();
    let mut reactor = Reactor::new()?;
    let listening = listen_tcp(&mut reactor, port, |_: &Address| Echo)?; // a closure is a factory
    println!("listening on TCP {}", listening.local_addr());
    Ok(reactor.run()?)
}
