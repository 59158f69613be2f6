//! The twistor echo server: exactly what a user writes (`listen_tcp` with
//! the protocols crate's `Echo`, Twisted's `Echo`), release build, default
//! options.

use std::io;
use std::net::SocketAddr;

use twistor_reactor::{Address, Reactor};
use twistor_transports::listen_tcp;

pub use twistor_protocols::Echo;

/// Listen on `addr` and run the reactor until it is stopped.
pub fn serve(addr: SocketAddr, bound: impl FnOnce(SocketAddr)) -> io::Result<()> {
    let mut r = Reactor::new()?;
    let port = listen_tcp(&mut r, addr, |_: &Address| Echo)?;
    bound(port.local_addr());
    r.run()
}
