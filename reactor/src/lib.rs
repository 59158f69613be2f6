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
//! ## Decisions, and why
//!
//! - **A running handler is out of its slot.** While a handler (a
//!   connection, a listener) runs it is taken out of the slab, so it gets the
//!   whole `&mut Reactor` with no aliasing and no `RefCell`. Work addressed
//!   to it meanwhile ([`Reactor::call_on`], readiness) is queued and
//!   delivered after it returns: that is how callbacks are never re-entered.
//! - **Two levels of extension API.** [`Handler`] is the raw one (Twisted's
//!   `FileDescriptor`, libuv's `uv_poll_t`); [`open_stream`] is the stream
//!   machinery every byte stream shares, so TCP, Unix sockets, pipes and the
//!   in-memory test pair behave identically: that is why it lives here and
//!   not in the transports crate.
//! - **Layers.** [`Transport::upgrade`] swaps a live connection's protocol
//!   once the current callback returns (`start_tls` is built on it; what the
//!   old protocol writes or closes after asking is carried out by the new
//!   one). [`Protocol::route_call`] lets a wrapping protocol (TLS, a policy)
//!   pass `call_on` closures to the protocol it wraps.
//!   [`Transport::lose_connection_with`] lets a protocol say why it closed
//!   (a limit, a timeout) instead of reporting a clean close.
//! - **When `connection_made` runs.** For an accepted connection, inside the
//!   accept loop (as Twisted does), so a protocol that stops its listener
//!   there stops it before the next accept; for an outgoing connection or a
//!   pipe, on the next loop turn.
//! - **Fairness.** A connection reads until `WouldBlock` or 256 KiB
//!   ([`DEFAULT_READ_BUDGET`]) per event, then is requeued behind the others.
//! - **Timers** are a binary heap with lazy deletion: postponing a timer
//!   (an idle timeout reset on every read) touches no heap entry, and a turn
//!   with nothing due examines one or two entries however many are pending.
//!   Deadlines too far away for the clock saturate (a century) rather than
//!   overflow.
//! - **Stopping** is Twisted's: stop accepting, shutdown triggers,
//!   `lose_connection` everywhere, wait up to [`DEFAULT_SHUTDOWN_TIMEOUT`],
//!   abort the rest. `run()` installs SIGINT/SIGTERM handlers that do the
//!   same (a second signal aborts at once), and after `run()` returns the
//!   default action (terminate) is back.
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
mod input;
mod multi;
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
pub use input::InputBuf;
pub use mio;
pub use multi::{GroupHandle, ReactorGroup};
pub use protocol::{
    swap_protocol, CertFacts, ClientFactory, Connector, Factory, Protocol, ProtocolCall, TlsInfo, Transport,
    Upgrade,
};
pub use reactor::{Handler, Reactor, Ready, DEFAULT_SHUTDOWN_TIMEOUT, READ_BUFFER_SIZE};
pub use reason::{catch_panic, panic_message, Reason};
pub use stream::{
    open_stream, LostHook, StreamIo, StreamOptions, DEFAULT_CLOSE_TIMEOUT, DEFAULT_HIGH_WATER,
    DEFAULT_LOW_WATER, DEFAULT_MAX_WRITE_BUFFER, DEFAULT_READ_BUDGET,
};
pub use threads::{Remote, POOL_THREADS};
pub use timer::{DelayedCall, LoopingCall};
