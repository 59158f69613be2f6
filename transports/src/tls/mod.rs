//! TLS as a helper Protocol/Transport pair, on rustls (ring provider).
//!
//! TLS is not a socket type here. A [`TlsProtocol`] is the protocol of a
//! byte transport (TCP, a Unix socket, the in-memory test pair); it owns the
//! rustls connection and the application's protocol, which sees a
//! [`TlsTransport`]: plaintext in, ciphertext out to the transport below.
//!
//! ```text
//! App <-> Protocol [ TlsTransport ] <-> [ TlsProtocol ] Transport <-> socket
//! ```
//!
//! - The application's `connection_made` runs after the handshake;
//!   `lose_connection` flushes, sends close_notify, then closes; the peer's
//!   close_notify arrives as `eof_received`; a peer that closes the
//!   connection without close_notify ends it with
//!   `Reason::Tls("truncated: ...")`, never as a clean close.
//! - Failures carry their cause in [`Reason::Tls`](twistor_reactor::Reason::Tls):
//!   an alert received or sent, a certificate that did not verify. The
//!   handshake ([`DEFAULT_HANDSHAKE_TIMEOUT`]) and the close
//!   ([`DEFAULT_TLS_SHUTDOWN_TIMEOUT`]) are bounded ([`TlsOptions`]) and end
//!   in `Reason::TimedOut`.
//! - Flow control crosses the layer: ciphertext piling up below raises
//!   `pause_writing` on the application, and so does plaintext written
//!   while a handshake is in progress (held until it completes, counted
//!   in `write_buffer_size`); the application's `pause_reading` stops
//!   reading below. A hard cap ([`TlsOptions::max_write_buffer`], 16 MiB by
//!   default) binds what is written and not sent: past it the connection
//!   ends with `Reason::Limit`.
//! - Writes made during one callback are encrypted together when it
//!   returns, so many small writes make few records.
//! - An idle connection keeps no buffer of its own beyond a small bound:
//!   the layer adds about half a KiB to what rustls itself holds (about
//!   7.5 KB for a server connection, once the layer has let rustls shrink
//!   its input buffer back to 4 KiB after a large message; left alone,
//!   rustls would keep about 36 KB).
//! - The layer's life is one named phase, changed in one place that
//!   refuses an illegal transition:
//!
//! ```text
//! Unwrapped ─start─▶ Handshaking ─done─▶ Wrapped ─write_eof─▶ WriteClosed ─┐
//!                        │                  ├─peer's close_notify, stay─▶ ReadClosed ─┤
//!                        │ (reactor stops)  └─lose_connection / peer's close_notify──▶ ShuttingDown
//!                        └──────────────────────────────────────────────────────────▶ ShuttingDown
//! any ─bad input, alert, timeout, truncation, abort, limit─▶ Failed;  any ─lost─▶ Closed
//! ```
//! - [`Transport::tls_info`](twistor_reactor::Transport::tls_info) gives the
//!   version, cipher suite, ALPN, SNI, whether the session was resumed, and
//!   the peer's certificate facts.
//! - Sessions resume. A server gives tickets (keys rotated every 6 hours,
//!   in memory only) and keeps a bounded cache of sessions
//!   ([`DEFAULT_SESSION_CACHE`], 1,024), both on by default
//!   ([`ServerConfigBuilder::tickets`] says what tickets mean for forward
//!   secrecy); a client keeps the sessions servers give it, shared by every
//!   connection made with the same `Arc<ClientConfig>`
//!   ([`ClientConfigBuilder::session_cache`]), so its next connection to
//!   the same server skips the certificate and its signature.
//!
//! Configurations: [`ServerConfigBuilder`] (PEM files with encrypted keys,
//! SNI, client-certificate modes, ALPN; built once per listener and shared)
//! and [`ClientConfigBuilder`] (system roots by default, CA files, or an
//! explicit pinned fingerprint / trust on first use).
//!
//! Trust on first use ([`Tofu`]) is one verifier for every client
//! (`ClientConfigBuilder::tofu`, the Gemini client): pins kept in a
//! [`PinStore`], either [`KnownHosts`] (by host and port, with first-seen
//! and expiry dates, in the file `twistor fetch` keeps) or [`TofuStore`]
//! (one per host name), or a store of your own; a changed certificate is
//! refused naming both fingerprints ([`CertificateChanged`]) unless the
//! client was told to take it or the pin has expired; and a certificate
//! is remembered only once the server's handshake signature has proved it
//! holds the key. Every verifier here, whatever it trusts, checks that
//! signature.
//!
//! A listener's configuration can be replaced while it serves
//! ([`ReloadableServerConfig`], e.g. on SIGHUP): new connections get the
//! new certificates, those in flight finish on the old ones.
//!
//! Entry points: [`listen_tls`] / [`connect_tls`] (TCP with TLS inserted),
//! [`start_tls`] (STARTTLS on a live connection),
//! [`TlsServerFactory`] / [`TlsClientFactory`] (put TLS under any factory's
//! protocols), and [`TlsProtocol`] itself.
//!
//! ```
//! use twistor_reactor::{testing::{MemoryPair, Recorder}, Protocol, Transport};
//! use twistor_transports::tls::{ClientConfigBuilder, ServerConfigBuilder, TlsProtocol};
//!
//! struct Echo;
//! impl Protocol for Echo {
//!     fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) { t.write(d) }
//! }
//! // A TLS echo over the in-memory pair: no sockets at all.
//! let (server_config, fingerprint) = ServerConfigBuilder::self_signed(&["localhost"]).unwrap();
//! let client_config = ClientConfigBuilder::new().pinned(&fingerprint).build().unwrap();
//! let (client, log) = Recorder::new();
//! let mut pair = MemoryPair::new(
//!     Box::new(TlsProtocol::client(Box::new(client), client_config, "localhost").unwrap()),
//!     Box::new(TlsProtocol::server(Box::new(Echo), server_config).unwrap()),
//! )
//! .unwrap();
//! pair.pump();
//! pair.with_client(|_, t| {
//!     assert_eq!(t.tls_info().unwrap().version, "TLSv1.3");
//!     t.write(b"hello");
//! });
//! assert_eq!(log.borrow().data, b"hello");
//! pair.with_client(|_, t| t.lose_connection());
//! assert!(pair.is_closed());
//! assert!(log.borrow().lost[0].is_clean());
//! ```

mod client_config;
mod decision;
mod explain;
mod factory;
mod info;
mod keys;
mod known_hosts;
mod layer;
mod loader;
mod options;
mod prompt;
mod reload;
mod resume;
mod selfsigned;
mod server_config;
mod signatures;
mod start;
mod state;
mod tcp;
mod tofu;
mod tofu_store;
mod verify;
mod view;

pub use crate::utc::format_time;
pub use client_config::ClientConfigBuilder;
pub use decision::{CertificateChanged, Replacement, ServerCert, TrustDecision};
pub use factory::{TlsClientFactory, TlsServerFactory};
pub use info::{cert_facts, sha256_fingerprint};
pub use keys::{
    certs_from_pem, is_encrypted_key, key_from_pem, load_ca, load_certs, load_key, system_roots, Passphrase,
    PASSPHRASE_FILE_VAR,
};
pub use known_hosts::{default_data_dir, default_known_hosts_path, KnownHost, KnownHosts};
pub use layer::TlsProtocol;
pub use loader::default_server_config;
pub use options::{TlsOptions, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_TLS_SHUTDOWN_TIMEOUT};
pub use reload::ReloadableServerConfig;
pub use resume::{DEFAULT_CLIENT_SESSION_CACHE, DEFAULT_SESSION_CACHE};
pub use selfsigned::{generate_self_signed_cert, generate_self_signed_pem, LOCAL_NAMES};
pub use server_config::{load_server_config, ClientAuth, ServerConfigBuilder};
pub use start::{start_tls, TlsRole};
pub use tcp::{connect_tls, connect_tls_with, listen_tls, listen_tls_with};
pub use tofu::{Pin, PinStore, Tofu};
pub use tofu_store::TofuStore;
pub use verify::openssl_fingerprint;
pub use view::TlsTransport;

/// The rustls crate this module is built on (configurations are rustls's).
pub use rustls;

/// A server configuration with a new self-signed certificate for `names`,
/// and its SHA-256 fingerprint (lowercase hex): the quickest way to a TLS
/// server in a test or an example. (`twistor echo --tls` with no
/// certificate also writes its certificate to a file, so a client can
/// trust it: see [`generate_self_signed_pem`].)
///
/// ```
/// let (config, fingerprint) = twistor_transports::tls::generate_self_signed(&["localhost"]).unwrap();
/// assert_eq!(fingerprint.len(), 64);
/// # let _ = config;
/// ```
pub fn generate_self_signed(
    names: &[&str],
) -> std::io::Result<(std::sync::Arc<rustls::ServerConfig>, String)> {
    ServerConfigBuilder::self_signed(names)
}
