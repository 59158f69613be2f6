//! # twistor-transports
//!
//! The transports of twistor, each built on the reactor's extension API
//! ([`Handler`](twistor_reactor::Handler) and
//! [`open_stream`](twistor_reactor::open_stream)):
//!
//! - [`udp`]: datagram sockets (`listen_udp`, `connect_udp`), multicast,
//!   broadcast.
//! - [`process`]: child processes (`spawn_process`) with a
//!   `ProcessProtocol` over non-blocking pipes.
#![warn(missing_docs)]

pub mod process;
pub mod udp;

pub use process::{spawn_process, Process, ProcessProtocol, ProcessTransport};
pub use udp::{connect_udp, listen_udp, UdpEcho, UdpPort};
