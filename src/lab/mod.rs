//! What small programs built on twistor share (the examples, a lab's
//! scripts, the `twistor` command): reading a port and a mode word from
//! the command line the same way everywhere, logging with sensible
//! defaults, and errors printed as one clean line.
//!
//! ```no_run
//! use twistor::lab;
//! use twistor::prelude::*;
//!
//! struct Echo;
//! impl Protocol for Echo {
//!     fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
//!         t.write(data);
//!     }
//! }
//!
//! fn main() -> lab::Result {
//!     lab::init_logging();
//!     let port = lab::Args::new("[PORT]").port(); // a bad port: one line, exit status 2
//!     let mut reactor = Reactor::new()?;
//!     let listening = listen_tcp(&mut reactor, port, |_: &Address| Echo)?;
//!     println!("listening on TCP {}", listening.local_addr());
//!     Ok(reactor.run()?) // an error: "Error: Address already in use (os error 98)"
//! }
//! ```

mod args;
mod error;
mod logging;

pub use args::{parse_port, Args, DEFAULT_PORT};
pub use error::{Error, Result};
pub use logging::{init_logging, DEFAULT_LOG_FILTER};
