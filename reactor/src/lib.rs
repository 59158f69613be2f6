//! # twistor-reactor
//!
//! The core of twistor: one single-threaded reactor on mio that dispatches
//! I/O events to protocol objects through transports, in the style of
//! Twisted.
//!
//! - [`Reactor`]: the loop (`run`, `stop`), timers ([`Reactor::call_later`],
//!   [`DelayedCall`], [`LoopingCall`]), handles ([`ConnId`],
//!   [`Reactor::call_on`]), threads ([`Reactor::remote`],
//!   [`Reactor::defer_to_thread`]).
//! - The contracts: [`Protocol`] / [`Transport`], [`Factory`] /
//!   [`ClientFactory`], [`DatagramProtocol`] / [`DatagramTransport`], and
//!   [`Reason`] for why a connection ended.
//! - The extension API: [`Handler`] (register any mio source with a
//!   readiness handler) and [`open_stream`] (give any byte stream the full
//!   Protocol/Transport contract). The transports crate uses nothing else.
//! - [`testing`]: `StringTransport`, the manual clock, an in-memory pair.
//!
//! This crate knows nothing of TCP or TLS.
//!
//! ```
//! use std::time::Duration;
//! use twistor_reactor::Reactor;
//!
//! let mut reactor = Reactor::new().unwrap();
//! reactor.call_later(Duration::from_millis(10), |r| {
//!     println!("ten milliseconds later");
//!     r.stop();
//! });
//! reactor.run().unwrap();
//! ```
#![warn(missing_docs)]

// A ConnId's generation rides in the upper half of a mio token.
#[cfg(not(target_pointer_width = "64"))]
compile_error!("twistor-reactor needs a 64-bit target");

mod address;
mod datagram;
mod id;
mod protocol;
mod reactor;
mod reason;
mod stream;
pub mod testing;
mod threads;
mod timer;

pub use address::Address;
pub use datagram::{DatagramProtocol, DatagramTransport, Interface};
pub use id::{ConnId, Gone};
pub use mio;
pub use protocol::{
    CertFacts, ClientFactory, Connector, Factory, Protocol, ProtocolCall, TlsInfo, Transport, Upgrade,
};
pub use reactor::{Handler, Reactor, Ready, DEFAULT_SHUTDOWN_TIMEOUT, READ_BUFFER_SIZE};
pub use reason::{panic_message, Reason};
pub use stream::{
    open_stream, LostHook, StreamIo, StreamOptions, DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER,
    DEFAULT_READ_BUDGET,
};
pub use threads::{Remote, POOL_THREADS};
pub use timer::{DelayedCall, LoopingCall};
