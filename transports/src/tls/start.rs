//! `start_tls`: insert the TLS layer into a live connection (STARTTLS), on
//! either side, through `Transport::upgrade`.

use std::io;
use std::sync::Arc;

use rustls::{ClientConfig, ServerConfig};
use twistor_reactor::{Protocol, Transport};

use super::layer::{client_connection, server_connection, TlsProtocol};
use super::options::TlsOptions;

/// Which side of the handshake a connection plays.
///
/// ```
/// use twistor_transports::tls::{ClientConfigBuilder, TlsRole, TofuStore};
/// let config = ClientConfigBuilder::new().tofu(TofuStore::in_memory()).build().unwrap();
/// let role = TlsRole::Client { config, server_name: "mail.example.org".into() };
/// # let _ = role;
/// ```
#[derive(Debug, Clone)]
pub enum TlsRole {
    /// Answer a ClientHello with this configuration.
    Server(Arc<ServerConfig>),
    /// Send a ClientHello for `server_name`.
    Client {
        /// The client configuration.
        config: Arc<ClientConfig>,
        /// The name to ask for (SNI) and to verify.
        server_name: String,
    },
}

/// Switch the connection behind `t` to TLS once the current callback
/// returns (Twisted's `startTLS`, asyncio's `start_tls`).
///
/// The protocol stays the same object: it already had `connection_made`,
/// and it does not get it again. What it wrote before calling `start_tls`
/// is sent in the clear; what it writes after, even in the same callback,
/// is encrypted (held until the handshake completes, and counted for
/// `pause_writing` and the write cap meanwhile), and from the next event
/// on what it receives was decrypted. A `lose_connection` made
/// through the TLS transport before the handshake completes waits for it
/// (within the timeouts), then sends what was written and close_notify. `on_handshake` runs
/// against it when the handshake completes; a failed handshake ends the
/// connection with a [`Reason::Tls`](twistor_reactor::Reason::Tls) or
/// [`Reason::TimedOut`](twistor_reactor::Reason::TimedOut).
///
/// **Discard what you still hold.** Bytes that arrived before `start_tls`
/// and were already delivered stay with the protocol: it must drop anything
/// it buffered after the STARTTLS command and never interpret it, or an
/// attacker can inject plaintext commands that look as if they came over
/// TLS (the CVE-2011-0411 bug class). Anything the peer sends after this
/// point goes to the TLS layer, so plaintext sent there fails the handshake.
///
/// ```
/// use twistor_reactor::{Protocol, Transport};
/// use twistor_transports::tls::{start_tls, ServerConfigBuilder, TlsOptions, TlsRole};
///
/// struct Smtpish { buf: Vec<u8>, config: std::sync::Arc<rustls::ServerConfig> }
/// impl Protocol for Smtpish {
///     fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
///         self.buf.extend_from_slice(data);
///         if self.buf.starts_with(b"STARTTLS\r\n") {
///             self.buf.clear(); // never interpret what followed the command
///             t.write(b"220 go ahead\r\n");
///             start_tls(t, TlsRole::Server(self.config.clone()), TlsOptions::default(), |_, _| {})
///                 .unwrap();
///         }
///     }
/// }
/// let (config, _) = ServerConfigBuilder::self_signed(&["localhost"]).unwrap();
/// let mut t = twistor_reactor::testing::StringTransport::new();
/// let mut p = Smtpish { buf: Vec::new(), config };
/// p.data_received(&mut t, b"STARTTLS\r\nRCPT TO:<evil>\r\n");
/// assert_eq!(t.upgrade_count(), 1);
/// assert!(p.buf.is_empty());
/// ```
pub fn start_tls(
    t: &mut dyn Transport,
    role: TlsRole,
    opts: TlsOptions,
    on_handshake: impl FnOnce(&mut dyn Protocol, &mut dyn Transport) + 'static,
) -> io::Result<()> {
    let (conn, sni) = match role {
        TlsRole::Server(config) => (server_connection(config)?, None),
        TlsRole::Client { config, server_name } => {
            (client_connection(config, &server_name)?, Some(server_name))
        }
    };
    t.upgrade(Box::new(move |old, lower| {
        let mut layer = TlsProtocol::with_conn(conn, old, sni)
            .with_options(opts)
            .app_already_made()
            .on_handshake(Box::new(on_handshake));
        layer.start(lower);
        Box::new(layer) as Box<dyn Protocol>
    }));
    Ok(())
}
