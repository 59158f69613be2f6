//! # twistor-protocols
//!
//! Reusable protocols for twistor, in the spirit of Twisted's
//! `twisted.protocols`: framings, the classic small services and connection
//! policies. Everything here is a plain [`Protocol`](twistor_reactor::Protocol)
//! or [`Factory`](twistor_reactor::Factory), so it runs over TCP, TLS, Unix
//! sockets, pipes or the in-memory test pair alike.
//!
//! - Framings: [`LineReceiver`] (lines, with a raw mode), [`NetstringReceiver`]
//!   and the length-prefixed [`Int8StringReceiver`], [`Int16StringReceiver`],
//!   [`Int32StringReceiver`] (one generic [`StringReceiver`]).
//! - Services: [`Echo`], [`Discard`], [`Chargen`], [`Daytime`], [`Qotd`].
//! - Policies: [`IdleTimeout`] and [`TimeoutMixin`], [`LimitConnections`],
//!   [`RateLimiter`] and [`LimitConnectionRate`].
//! - Streaming a body with backpressure, for any protocol: [`producer`]
//!   (Twisted's producers and `FileSender`).
//! - A Gemini server, with jetforce's application framework, static files,
//!   CGI and virtual hosts with a certificate each: [`gemini`].
//!
//! ## Writing a line protocol
//!
//! Twisted subclasses `LineReceiver`; here you implement [`LineHandler`] and
//! wrap it in a [`LineReceiver`], which is the protocol. Each callback gets
//! a [`LineControl`]: the transport (it *is* a
//! [`Transport`](twistor_reactor::Transport): `write`, `lose_connection`,
//! `peer`, `reactor`...) plus `send_line`, `set_raw_mode` and friends.
//!
//! ```
//! use twistor_protocols::{LineControl, LineHandler, LineReceiver};
//! use twistor_reactor::{testing::StringTransport, Address, Protocol, Transport};
//!
//! struct Answer;
//!
//! impl LineHandler for Answer {
//!     fn connection_made(&mut self, c: &mut LineControl<'_>) {
//!         c.send_line(b"Ask me anything.");
//!     }
//!     fn line_received(&mut self, c: &mut LineControl<'_>, line: &[u8]) {
//!         if line == b"bye" {
//!             c.send_line(b"Goodbye.");
//!             c.lose_connection();
//!         } else {
//!             c.send_line(b"42");
//!         }
//!     }
//! }
//!
//! // The factory you would give to listen_tcp(&mut reactor, 1234, factory):
//! let mut factory = |_: &Address| LineReceiver::new(Answer);
//!
//! // Driven here by hand, as Twisted's proto_helpers would:
//! let mut p = factory(&Address::Unknown);
//! let mut t = StringTransport::new();
//! p.connection_made(&mut t);
//! p.data_received(&mut t, b"what is the answer?\r\nbye\r\n");
//! assert_eq!(t.value(), b"Ask me anything.\r\n42\r\nGoodbye.\r\n");
//! assert!(t.disconnecting());
//! ```
//!
//! Code outside a callback (a timer, another connection) reaches a line
//! protocol with `reactor.call_on(id, |p, t| ...)`, a downcast to
//! `LineReceiver<YourHandler>` and [`LineReceiver::with_handler`], or just
//! writes to it by id. A chat server over TCP:
//!
//! ```no_run
//! use std::{cell::RefCell, rc::Rc};
//! use twistor_protocols::{LineControl, LineHandler, LineReceiver};
//! use twistor_reactor::{Address, ConnId, Reactor, Reason, Transport};
//! use twistor_transports::listen_tcp;
//!
//! type Users = Rc<RefCell<Vec<ConnId>>>;
//!
//! struct Chat {
//!     users: Users,
//! }
//!
//! impl LineHandler for Chat {
//!     fn connection_made(&mut self, c: &mut LineControl<'_>) {
//!         self.users.borrow_mut().push(c.id());
//!         c.send_line(b"welcome");
//!     }
//!     fn line_received(&mut self, c: &mut LineControl<'_>, line: &[u8]) {
//!         let msg = [format!("<{}> ", c.peer()).as_bytes(), line, b"\r\n"].concat();
//!         let me = c.id();
//!         for &id in self.users.borrow().iter().filter(|&&id| id != me) {
//!             let _ = c.reactor().write_to(id, msg.clone());
//!         }
//!     }
//!     fn connection_lost(&mut self, c: &mut LineControl<'_>, _: &Reason) {
//!         let me = c.id();
//!         self.users.borrow_mut().retain(|&id| id != me);
//!     }
//! }
//!
//! let mut reactor = Reactor::new()?;
//! let users = Users::default();
//! listen_tcp(&mut reactor, 1234, move |_: &Address| {
//!     LineReceiver::new(Chat { users: users.clone() })
//! })?;
//! reactor.run()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! ## Limits
//!
//! Every limit has a default and a knob, and hitting one logs a clear line
//! and closes the connection cleanly with
//! [`Reason::Limit`](twistor_reactor::Reason::Limit) (or
//! [`Reason::TimedOut`](twistor_reactor::Reason::TimedOut)):
//!
//! | limit | default | knob |
//! |---|---|---|
//! | line length | 16 KiB ([`DEFAULT_MAX_LINE_LENGTH`]) | [`LineReceiver::with_max_length`], [`LineControl::set_max_length`] |
//! | netstring / prefixed string length | 99,999 bytes (255 for `Int8`) | [`StringReceiver::with_max_length`] |
//! | idle time | none until you wrap | [`IdleTimeout::new`], [`TimeoutMixin::set_timeout`] |
//! | connections per factory | none until you wrap | [`LimitConnections::new`] |
//! | connections per client address (IPv4, or IPv6 /64) | none until set | [`LimitConnections::with_max_per_peer`] |
//! | overflow connections at once | 64 ([`DEFAULT_MAX_OVERFLOW`]) | [`LimitConnections::with_max_overflow`] |
//! | connection rate per address | none until you wrap | [`LimitConnectionRate::new`] |
//! | addresses a rate limiter tracks | 10,000 ([`DEFAULT_MAX_TRACKED`]) | [`RateLimiter::with_max_tracked`] |
//!
//! Framings never buffer more than their limit, and never panic on any
//! input. When a handler starts TLS (STARTTLS), whatever plaintext the
//! framing still holds is discarded, never interpreted (see [`Control`]).
//!
//! ## Policies and TLS
//!
//! [`LimitConnections`] and [`LimitConnectionRate`] decide in
//! `build_protocol`, when the listener accepts, so they refuse before TLS
//! wherever they are put: wrap the application's factory and give it to
//! `listen_tls` as usual, and a refused client costs an accept and a close,
//! never a handshake (the TLS listener asks for the application's protocol
//! before it starts the handshake, and closes the socket when it gets
//! none). Only a refusal that talks (an overflow protocol,
//! [`LimitConnectionRate::with_refusal`]) runs after a handshake, since
//! that is the only way to reach a TLS client. [`IdleTimeout`] goes inside,
//! next to the application, where it sees the plaintext traffic.
//!
//! ```no_run
//! use std::time::Duration;
//! use twistor_protocols::{IdleTimeout, LimitConnectionRate, LimitConnections, LineControl, LineReceiver, RateLimiter};
//! use twistor_reactor::{Address, Reactor};
//! use twistor_transports::tls::{generate_self_signed, listen_tls};
//!
//! let mut r = Reactor::new()?;
//! let (config, _) = generate_self_signed(&["localhost"])?;
//! let app = |_: &Address| {
//!     let echo = LineReceiver::new(|c: &mut LineControl<'_>, line: &[u8]| c.send_line(line));
//!     IdleTimeout::new(echo, Duration::from_secs(60))
//! };
//! let policies = LimitConnections::new(LimitConnectionRate::new(app, RateLimiter::new(2.0, 20.0)), 1000);
//! listen_tls(&mut r, 1234, policies, config)?;
//! r.run()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Twisted -> twistor
//!
//! | Twisted | twistor |
//! |---|---|
//! | `class P(basic.LineReceiver)` | `impl LineHandler for P`, protocol `LineReceiver::new(P)` |
//! | `lineReceived(line)` | [`LineHandler::line_received`]`(c, line)` |
//! | `rawDataReceived(data)` | [`LineHandler::raw_data_received`]`(c, data)` |
//! | `sendLine(line)` | [`LineControl::send_line`] |
//! | `setRawMode()` / `setLineMode(extra)` | [`LineControl::set_raw_mode`] / [`LineControl::set_line_mode`], [`LineControl::set_line_mode_with`] |
//! | `delimiter`, `MAX_LENGTH` | [`LineReceiver::with_delimiter`], [`LineReceiver::with_max_length`] |
//! | `lineLengthExceeded(line)` | [`LineHandler::line_length_exceeded`] |
//! | `clearLineBuffer()` | [`Control::clear_buffer`] |
//! | `pauseProducing()` / `resumeProducing()` | `c.pause_reading()` / [`LineReceiver::resume_reading`] |
//! | `self.transport.write(...)` | `c.write(...)` (a control is a transport) |
//! | `basic.NetstringReceiver` | [`NetstringReceiver`] + [`StringHandler`] |
//! | `basic.Int8StringReceiver`, `Int16...`, `Int32...` | [`Int8StringReceiver`], [`Int16StringReceiver`], [`Int32StringReceiver`] |
//! | `stringReceived(s)` / `sendString(s)` | [`StringHandler::string_received`] / [`StringControl::send_string`] |
//! | `lengthLimitExceeded(length)` | [`StringHandler::length_limit_exceeded`] |
//! | `wire.Echo`, `Discard`, `Chargen`, `Daytime`, `QOTD` | [`Echo`], [`Discard`], [`Chargen`], [`Daytime`], [`Qotd`] |
//! | `policies.TimeoutMixin`: `setTimeout`, `resetTimeout`, `timeoutConnection` | [`TimeoutMixin`]: `set_timeout`, `reset_timeout`, `timeout_connection`; writes through [`TimeoutMixin::timed`] reset it |
//! | `class P(LineReceiver, TimeoutMixin)` (any framing) | a [`Timeout`] field in the handler: [`Timeout::set_timeout`]`::<LineReceiver<Self>>(c, ..)`, [`Timeout::reset_timeout`], override [`LineHandler::timeout_connection`] |
//! | `policies.TimeoutFactory` / `TimeoutProtocol` (reset on reads and writes) | [`IdleTimeout`] (reset on reads, writes and a draining write buffer) |
//! | `policies.LimitTotalConnectionsFactory` (`connectionLimit`, `overflowProtocol`) | [`LimitConnections`] (`new(f, max)`, `with_overflow`) |
//! | `policies.LimitConnectionsByPeer` (`maxConnectionsPerPeer`) | [`LimitConnections::with_max_per_peer`] (keyed by IPv4 address or IPv6 /64, IPv4-mapped counted as IPv4) |
//! | (no Twisted equivalent: a token bucket per client address) | [`RateLimiter`], [`LimitConnectionRate`] |
#![warn(missing_docs)]

pub mod control;
pub mod gemini;
pub mod limit;
pub mod line;
pub mod netstring;
mod peer_slots;
pub mod prefixed;
pub mod producer;
pub mod ratelimit;
pub mod services;
pub mod string;
pub mod timeout;

pub use control::{Control, FramingState};
pub use limit::{ConnectionCounter, LimitConnections, DEFAULT_MAX_OVERFLOW};
pub use line::{LineControl, LineHandler, LineReceiver, LineState, DEFAULT_MAX_LINE_LENGTH};
pub use netstring::{Netstring, NetstringReceiver};
pub use prefixed::{Int16StringReceiver, Int32StringReceiver, Int8StringReceiver, Prefixed};
pub use ratelimit::{LimitConnectionRate, RateLimiter, DEFAULT_MAX_TRACKED};
pub use services::{Chargen, Daytime, Discard, Echo, Qotd};
pub use string::{Framing, Parse, StringControl, StringHandler, StringReceiver, StringState, StringTooLong};
pub use timeout::{IdleTimeout, TimedTransport, Timeout, TimeoutMixin, TimeoutTarget};
