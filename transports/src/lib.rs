//! # twistor-transports
//!
//! The transports of twistor, each built on the reactor's extension API
//! ([`Handler`](twistor_reactor::Handler) and
//! [`open_stream`](twistor_reactor::open_stream)):
//!
//! - [`udp`]: datagram sockets (`listen_udp`, `connect_udp`), multicast,
//!   broadcast.
#![warn(missing_docs)]

pub mod udp;

pub use udp::{connect_udp, listen_udp, UdpEcho, UdpPort};
