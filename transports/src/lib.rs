//! # twistor-transports
//!
//! The transports of twistor, each built only on the reactor's extension
//! API ([`Handler`](twistor_reactor::Handler) and
//! [`open_stream`](twistor_reactor::open_stream)):
//!
//! - [`addr`]: the Internet addresses TCP and UDP take, and the name
//!   [`Resolver`](addr::Resolver) TCP clients use.
//! - [`tcp`]: `listen_tcp`, `connect_tcp`.
//! - [`reconnect`]: [`ReconnectingClientFactory`], for any stream client.
//! - [`udp`]: datagram sockets (`listen_udp`, `connect_udp`), multicast,
//!   broadcast.
//! - [`unix`]: Unix-domain stream sockets (`listen_unix`, `connect_unix`),
//!   the same Protocol/Transport API as TCP.
//! - [`process`]: child processes (`spawn_process`) with a
//!   `ProcessProtocol` over non-blocking pipes.
//! - [`tls`]: TLS as a layer over any stream transport (`listen_tls`,
//!   `connect_tls`, `start_tls`).
//! - [`proxy`]: the PROXY protocol (versions 1 and 2) for any stream
//!   listener, so a server behind HAProxy or nginx sees its real clients.
//! - [`terminal`]: a question on the terminal, without echo when asked
//!   (passphrases, Gemini's sensitive input).
//! - [`utc`]: dates in UTC without a time-zone database (the known-hosts
//!   file, CGI's certificate dates, the daytime service).
//!
//! Stream listeners share one accept loop (budgeted accepts, a connection
//! limit, back-off when descriptors run out), and stream clients share one
//! connection lifecycle: a named phase per attempt (queued, resolving,
//! connecting, opening, connected, failed, stopped) changed in one place,
//! so every attempt ends in exactly one of `connection_made` or
//! `client_connection_failed`; a host's addresses race each other as RFC
//! 8305 (Happy Eyeballs) says. Every per-connection limit of the reactor's
//! streams (water marks, close deadline, write-buffer cap) is a field of
//! the listen and connect options, with the reactor's defaults.
//!
//! Behind a load balancer, a listener option
//! ([`ListenOptions::proxy_protocol`], also in [`UnixListenOptions`])
//! reads a PROXY protocol header (version 1 or 2) before anything else on
//! each connection, and only then calls the factory: the factory, `peer()`
//! and `host()` see the real client and the address it reached, under TLS
//! too (the header precedes the ClientHello). The header is peeked at and
//! exactly its bytes are taken, so the application's first bytes are
//! untouched; reading it is bounded in time and size, and a connection
//! whose header is malformed, missing or late is closed before it has a
//! protocol. Whoever can send a header can claim any address: list the
//! proxies in [`ProxyOptions::trusted`](proxy::ProxyOptions::trusted), or
//! let nobody else reach the port.
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

pub mod addr;
mod connector;
mod listener;
pub mod process;
pub mod proxy;
pub mod reconnect;
mod sock;
pub mod tcp;
pub mod terminal;
pub mod tls;
pub mod udp;
pub mod unix;
pub mod utc;

pub use listener::ACCEPT_BACKOFF;
pub use process::{spawn_process, Process, ProcessProtocol, ProcessTransport};
pub use reconnect::ReconnectingClientFactory;
pub use tcp::{
    connect_tcp, connect_tcp_with, listen_tcp, listen_tcp_with, ConnectOptions, ListenAddr, ListenOptions,
    ListeningPort,
};
pub use tls::{connect_tls, listen_tls, start_tls};
pub use udp::{connect_udp, listen_udp, UdpEcho, UdpPort};
pub use unix::{
    connect_unix, connect_unix_with, listen_unix, listen_unix_with, UnixAddr, UnixConnectOptions,
    UnixListenOptions, UnixPort,
};
