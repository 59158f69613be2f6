//! # twistor
//!
//! A Twisted-style networking toolkit: one single-threaded reactor on mio
//! dispatches I/O events to [`Protocol`] objects through swappable
//! [`Transport`]s.
//!
//! This crate is the facade: it re-exports the reactor
//! ([`twistor_reactor`]), the transports ([`twistor_transports`]) and the
//! reusable protocols ([`twistor_protocols`]), and `use twistor::prelude::*`
//! brings in what a lab needs. [`lab`] holds what small programs share:
//! arguments, logging defaults, clean errors.
//!
//! ```no_run
//! use twistor::prelude::*;
//!
//! /// The lab's echo server.
//! struct Echo;
//! impl Protocol for Echo {
//!     fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
//!         t.write(data);
//!     }
//! }
//!
//! let mut reactor = Reactor::new().unwrap();
//! listen_tcp(&mut reactor, 1234, |_: &Address| Echo).unwrap();
//! reactor.run().unwrap();
//! ```

pub mod lab;

pub use twistor_protocols as protocols;
pub use twistor_reactor as reactor;
pub use twistor_transports as transports;

pub use twistor_reactor::{
    testing, Address, ClientFactory, ConnId, Connector, DatagramProtocol, DatagramTransport, DelayedCall,
    Factory, Gone, LoopingCall, Protocol, Reactor, Reason, Transport,
};
pub use twistor_transports::{
    connect_tcp, connect_tcp_with, listen_tcp, listen_tcp_with, ConnectOptions, ListenOptions, ListeningPort,
    ReconnectingClientFactory,
};

/// Everything a lab needs, in one `use`.
pub mod prelude {
    pub use crate::lab;
    pub use twistor_reactor::{
        Address, ClientFactory, ConnId, Connector, DatagramProtocol, DatagramTransport, DelayedCall, Factory,
        Interface, LoopingCall, Protocol, Reactor, Reason, Transport,
    };
    pub use twistor_transports::{
        connect_tcp, connect_tls, connect_udp, connect_unix, listen_tcp, listen_tls, listen_udp, listen_unix,
        spawn_process, start_tls, ProcessProtocol, ProcessTransport, ReconnectingClientFactory,
    };
}
