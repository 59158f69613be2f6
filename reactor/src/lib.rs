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
//!   readiness handler) and [`open_stream`] / [`open_stream_now`] (give any
//!   byte stream the full Protocol/Transport contract). The transports
//!   crate uses nothing else.
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
//! - **Ids are safe to keep.** A slot's generation is bumped each time it
//!   is freed and every lookup compares it (`slots.rs` states the rule
//!   once): a stale id reaches nothing. [`Reactor::call_on`] on an id that
//!   names a listener or a port says so ([`CallError::NotAConnection`])
//!   rather than doing nothing. [`Reactor::remove`] tells the handler
//!   before dropping it ([`Handler::removed`]), so a stream removed from
//!   outside still gets its one `connection_lost` and its lost hook.
//! - **A stream's lifecycle is one named state.** `stream/phase.rs` holds
//!   the phases (new, open, read-closed, write-closing, write-closed,
//!   closing, aborting, closed), the diagram, and the one function that
//!   changes them and refuses an illegal transition, as asyncio's
//!   `sslproto.py` does; the code after a callback (`settle`) only decides
//!   which transition comes next.
//! - **When `connection_made` runs.** For an accepted connection, inside the
//!   accept loop (as Twisted does; [`open_stream_now`]), so a protocol that
//!   stops its listener there stops it before the next accept; for an
//!   outgoing connection or a pipe, on the next loop turn ([`open_stream`]).
//!   Either way a new connection is dispatched once.
//! - **Limits that bind** (invariant 8). The water marks only advise; a
//!   stream's write buffer also has a hard cap
//!   ([`DEFAULT_MAX_WRITE_BUFFER`], 16 MiB; [`StreamOptions`] and
//!   [`Transport::set_max_write_buffer`]): bytes written past it abort the
//!   connection with [`Reason::Limit`] and a log line, even when the
//!   protocol ignores `pause_writing`. A graceful close (`lose_connection`,
//!   `write_eof` once the peer's EOF came, `stop()`) that cannot flush
//!   within the close deadline ([`DEFAULT_CLOSE_TIMEOUT`], 30 s) is aborted,
//!   reason [`Reason::TimedOut`], with a log line: a peer that stops
//!   reading never holds a slot for good.
//! - **Idle connections cost little.** The read buffer is the reactor's
//!   (one for all); output chunks and their queue are lent by a
//!   reactor-wide pool bounded in bytes ([`DEFAULT_WRITE_POOL`], 1 MiB,
//!   [`Reactor::set_write_pool_limit`]) and given back when a buffer
//!   drains, so the echo path allocates nothing in steady state while an
//!   idle connection holds no output capacity. A connection's knobs are
//!   shared with the others opened with the same options. An idle plain
//!   TCP connection costs about 220 bytes of server memory
//!   (`tests/reactor_idle_memory.rs` counts them).
//! - **Fairness.** A connection reads until `WouldBlock` or 256 KiB
//!   ([`DEFAULT_READ_BUDGET`]) per event, then is requeued behind the others.
//! - **Timers** are a binary heap with lazy deletion: postponing a timer
//!   (an idle timeout reset on every read) touches no heap entry, and a turn
//!   with nothing due examines one or two entries however many are pending.
//!   Deadlines too far away for the clock saturate (a century) rather than
//!   overflow.
//! - **Threads never panic the loop.** A `defer_to_thread` job whose pool
//!   cannot start (no thread allowed) ends in its callback with an error.
//! - **Stopping** is Twisted's: stop accepting, shutdown triggers,
//!   `lose_connection` everywhere, wait up to [`DEFAULT_SHUTDOWN_TIMEOUT`],
//!   abort the rest (`stop.rs`). `run()` installs SIGINT/SIGTERM handlers that do the
//!   same (a second signal aborts at once), and after `run()` returns the
//!   default action (terminate) is back.
//! - **Other signals are asked for.** [`Reactor::add_signal_handler`]
//!   runs a callback on the loop when a signal arrives (SIGHUP: reload);
//!   a signal nobody asked for keeps its default action (`signals.rs`).
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
mod handler;
mod id;
mod input;
mod multi;
mod protocol;
mod reactor;
mod ready;
mod reason;
mod signals;
mod slots;
mod stop;
mod stream;
pub mod testing;
mod threads;
mod timer;
mod wrap;
mod write_buf;

pub use address::Address;
pub use datagram::{DatagramProtocol, DatagramTransport, Interface};
pub use handler::Handler;
pub use id::{CallError, ConnId, Gone};
pub use input::InputBuf;
pub use mio;
pub use multi::{GroupHandle, ReactorGroup};
pub use protocol::{
    swap_protocol, CertFacts, ClientFactory, Connector, Factory, Protocol, ProtocolCall, TlsInfo, Transport,
    Upgrade,
};
pub use reactor::{Reactor, READ_BUFFER_SIZE};
pub use ready::Ready;
pub use reason::{catch_panic, panic_message, Reason};
pub use stop::DEFAULT_SHUTDOWN_TIMEOUT;

/// Signal numbers for [`Reactor::add_signal_handler`]: SIGHUP ("reload
/// your configuration"), SIGUSR1 and SIGUSR2 (the program's own meaning).
pub use libc::{SIGHUP, SIGUSR1, SIGUSR2};
pub use stream::{
    open_stream, open_stream_now, LostHook, StreamIo, StreamOptions, DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER, DEFAULT_MAX_WRITE_BUFFER, DEFAULT_READ_BUDGET,
};
pub use threads::{Remote, POOL_THREADS};
pub use timer::{DelayedCall, LoopingCall};
pub use wrap::{WrappingProtocol, WrappingTransport};
pub use write_buf::DEFAULT_WRITE_POOL;
