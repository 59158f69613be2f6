//! The twistor echo server: exactly what a user writes (`listen_tcp` plus a
//! three-line protocol), release build, default options.

use std::io;
use std::net::SocketAddr;

use twistor_reactor::{Address, Protocol, Reactor, Transport};
use twistor_transports::listen_tcp;

/// Echo every byte back (Twisted's `Echo`).
pub struct Echo;

impl Protocol for Echo {
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        t.write(data);
    }
}

/// Listen on `addr` and run the reactor until it is stopped.
pub fn serve(addr: SocketAddr, bound: impl FnOnce(SocketAddr)) -> io::Result<()> {
    let mut r = Reactor::new()?;
    let port = listen_tcp(&mut r, addr, |_: &Address| Echo)?;
    bound(port.local_addr());
    r.run()
}
