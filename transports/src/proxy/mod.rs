//! The PROXY protocol (versions 1 and 2, as HAProxy specifies it), for
//! every stream listener: behind a load balancer (HAProxy's `send-proxy`,
//! nginx's `proxy_protocol on` in its stream module, a cloud load
//! balancer), the first bytes of each connection name the real client,
//! and with [`ProxyOptions`] in a listener's options that client is what
//! the factory, `peer()` and everything above them see.
//!
//! - **Before the protocol.** The header is read before the factory is
//!   called, so `build_protocol(addr)` gets the client's address: a rate
//!   limiter or a ban list in the factory keys on the client, not on the
//!   proxy, and refuses it before any TLS work. `peer()` is the client
//!   and `host()` the address the client connected to (the proxy's).
//! - **Under TLS.** The header comes before the ClientHello, so
//!   [`listen_tls_with`](crate::tls::listen_tls_with) with the option (or
//!   a [`TlsServerFactory`](crate::tls::TlsServerFactory) on a Unix
//!   listener) reads it first and runs TLS on what follows.
//! - **Nothing over-read.** The header is peeked at until it is whole and
//!   then exactly its bytes are taken from the socket: the application's
//!   first bytes are read by the protocol, as on any connection.
//! - **Bounded.** A whole header within [`DEFAULT_PROXY_TIMEOUT`] (10 s)
//!   and [`DEFAULT_MAX_PROXY_HEADER`] (4 KiB; version 1 is at most 107
//!   bytes); a connection waiting for its header counts against the
//!   listener's `max_connections`.
//! - **Closed, quietly.** A malformed header, a missing one (in
//!   [`ProxyMode::Required`]), a timeout, or a source not in
//!   [`trusted`](ProxyOptions::trusted) closes the connection before it
//!   has a protocol: no `connection_made`, no `connection_lost`. Each is
//!   logged at debug level, with a warning at 1, 2, 4, 8... of them.
//! - `LOCAL` (a proxy's health check) and `UNKNOWN` headers keep the
//!   connection's own addresses; TLVs are skipped (their framing is
//!   checked).
//!
//! **Trust.** Whoever can send a header can claim any address. Let only
//! the proxies send one: list them in [`ProxyOptions::trusted`] or keep
//! everyone else off the port (see [`ProxyOptions`]).
//!
//! ```no_run
//! use twistor_reactor::{Protocol, Reactor, Transport};
//! use twistor_transports::proxy::ProxyOptions;
//! use twistor_transports::{listen_tcp_with, ListenOptions};
//!
//! struct Hello;
//! impl Protocol for Hello {
//!     fn connection_made(&mut self, t: &mut dyn Transport) {
//!         let greeting = format!("hello, {}\r\n", t.peer()); // the client, not the proxy
//!         t.write(greeting.as_bytes());
//!         t.lose_connection();
//!     }
//!     fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
//! }
//!
//! let opts = ListenOptions {
//!     proxy_protocol: ProxyOptions {
//!         trusted: vec!["10.0.0.5".parse().unwrap()], // the load balancer
//!         ..ProxyOptions::required()
//!     },
//!     ..ListenOptions::default()
//! };
//! let mut reactor = Reactor::new().unwrap();
//! listen_tcp_with(&mut reactor, 8000, |_: &_| Hello, opts).unwrap();
//! reactor.run().unwrap();
//! ```

pub(crate) mod accept;
mod header;
mod net;
pub(crate) mod options;

pub use header::{parse_header, Origin, Parsed, ProxyError, ProxyHeader, V1_MAX_LEN, V2_SIGNATURE};
pub use net::{BadIpNet, IpNet};
pub use options::{ProxyMode, ProxyOptions, DEFAULT_MAX_PROXY_HEADER, DEFAULT_PROXY_TIMEOUT};

#[cfg(test)]
mod tests;
