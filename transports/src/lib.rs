//! # twistor-transports
//!
//! The transports of twistor, each built only on the reactor's extension
//! API ([`Handler`](twistor_reactor::Handler) and
//! [`open_stream`](twistor_reactor::open_stream)): TCP (`listen_tcp`,
//! `connect_tcp`), TLS as a layer over any stream ([`tls`]: `listen_tls`,
//! `connect_tls`, `start_tls`), plus the client factory helpers that work
//! with any of them.
//!
//! ```no_run
//! use twistor_reactor::{Protocol, Reactor, Transport};
//!
//! struct Echo;
//! impl Protocol for Echo {
//!     fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
//!         t.write(data);
//!     }
//! }
//!
//! let mut reactor = Reactor::new().unwrap();
//! twistor_transports::listen_tcp(&mut reactor, 1234, |_: &_| Echo).unwrap();
//! reactor.run().unwrap();
//! ```
#![warn(missing_docs)]

mod listener;
pub mod reconnect;
pub mod tcp;
pub mod tls;

pub use listener::ACCEPT_BACKOFF;
pub use reconnect::ReconnectingClientFactory;
pub use tcp::{
    connect_tcp, connect_tcp_with, listen_tcp, listen_tcp_with, ConnectOptions, ListenAddr, ListenOptions,
    ListeningPort,
};
pub use tls::{connect_tls, listen_tls, start_tls};
