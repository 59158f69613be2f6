//! Factories that put the TLS layer under every protocol another factory
//! builds: how `listen_tls` and `connect_tls` are TCP with TLS inserted,
//! and how any other listener (Unix sockets) gets TLS.

use std::rc::Rc;
use std::sync::Arc;

use rustls::ClientConfig;
use twistor_reactor::{Address, ClientFactory, Connector, Factory, Protocol, Reactor, Reason};

use super::layer::{Outcome, TlsProtocol};
use super::options::TlsOptions;
use super::reload::ReloadableServerConfig;

/// Wraps a factory so each protocol it builds runs over the server side of
/// TLS. The configuration is the listener's, shared by its connections: an
/// `Arc<ServerConfig>`, or a [`ReloadableServerConfig`] whose current
/// configuration each new connection takes.
///
/// ```
/// use twistor_reactor::{Address, Factory, Protocol, Transport};
/// use twistor_transports::tls::{ServerConfigBuilder, TlsOptions, TlsServerFactory};
/// struct Echo;
/// impl Protocol for Echo {
///     fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) { t.write(d) }
/// }
/// let (config, _) = ServerConfigBuilder::self_signed(&["localhost"]).unwrap();
/// let mut f = TlsServerFactory::new(|_: &Address| Echo, config, TlsOptions::default());
/// assert!(f.build_protocol(&Address::Unknown).is_some());
/// ```
pub struct TlsServerFactory<F> {
    inner: F,
    config: ReloadableServerConfig,
    opts: TlsOptions,
}

impl<F: Factory> TlsServerFactory<F> {
    /// Wrap `inner`.
    pub fn new(inner: F, config: impl Into<ReloadableServerConfig>, opts: TlsOptions) -> Self {
        TlsServerFactory {
            inner,
            config: config.into(),
            opts,
        }
    }
}

impl<F: Factory> Factory for TlsServerFactory<F> {
    fn build_protocol(&mut self, addr: &Address) -> Option<Box<dyn Protocol>> {
        let app = self.inner.build_protocol(addr)?;
        match TlsProtocol::server(app, self.config.current()) {
            Ok(layer) => Some(Box::new(layer.with_options(self.opts))),
            Err(e) => {
                log::error!("cannot start TLS for {addr}: {e}");
                None
            }
        }
    }
}

/// Wraps a client factory so each protocol it builds runs over the client
/// side of TLS. A connection whose handshake fails is reported to the
/// wrapped factory as `client_connection_failed` (its protocol never saw
/// `connection_made`), with the TLS reason.
///
/// ```
/// use twistor_reactor::{Address, Factory, testing::Recorder};
/// use twistor_transports::tls::{ClientConfigBuilder, TlsClientFactory, TlsOptions, TofuStore};
/// let config = ClientConfigBuilder::new().tofu(TofuStore::in_memory()).build().unwrap();
/// let mut f = TlsClientFactory::new(|_: &Address| Recorder::new().0, config, "localhost", TlsOptions::default());
/// assert!(f.build_protocol(&Address::Unknown).is_some());
/// ```
pub struct TlsClientFactory<F> {
    inner: F,
    config: Arc<ClientConfig>,
    server_name: String,
    opts: TlsOptions,
    last: Option<Rc<Outcome>>,
}

impl<F: ClientFactory> TlsClientFactory<F> {
    /// Wrap `inner`, connecting to `server_name` (SNI and verification).
    pub fn new(inner: F, config: Arc<ClientConfig>, server_name: &str, opts: TlsOptions) -> Self {
        TlsClientFactory {
            inner,
            config,
            server_name: server_name.to_string(),
            opts,
            last: None,
        }
    }
}

impl<F: ClientFactory> Factory for TlsClientFactory<F> {
    fn build_protocol(&mut self, addr: &Address) -> Option<Box<dyn Protocol>> {
        let app = self.inner.build_protocol(addr)?;
        let outcome = Rc::new(Outcome::default());
        self.last = Some(outcome.clone());
        match TlsProtocol::client(app, self.config.clone(), &self.server_name) {
            Ok(layer) => Some(Box::new(layer.with_options(self.opts).with_outcome(outcome))),
            Err(e) => {
                log::error!("cannot start TLS to {}: {e}", self.server_name);
                None
            }
        }
    }
}

impl<F: ClientFactory> ClientFactory for TlsClientFactory<F> {
    fn started_connecting(&mut self, r: &mut Reactor, connector: &Connector) {
        self.last = None;
        self.inner.started_connecting(r, connector);
    }

    fn client_connection_failed(&mut self, r: &mut Reactor, connector: &Connector, reason: &Reason) {
        self.inner.client_connection_failed(r, connector, reason);
    }

    fn client_connection_lost(&mut self, r: &mut Reactor, connector: &Connector, reason: &Reason) {
        let (made, tls_reason) = match self.last.take() {
            Some(o) => (o.made.get(), o.reason.borrow_mut().take()),
            None => (false, None),
        };
        let reason = tls_reason.unwrap_or_else(|| reason.clone());
        if made {
            self.inner.client_connection_lost(r, connector, &reason);
        } else {
            self.inner.client_connection_failed(r, connector, &reason);
        }
    }
}
