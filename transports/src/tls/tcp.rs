//! `listen_tls` and `connect_tls`: TCP with the TLS layer inserted under
//! each connection's protocol (by wrapping the factory; TCP itself knows
//! nothing of TLS).

use std::io;
use std::sync::Arc;

use rustls::ClientConfig;
use twistor_reactor::{ClientFactory, Connector, Factory, Reactor};

use super::factory::{TlsClientFactory, TlsServerFactory};
use super::options::TlsOptions;
use super::reload::ReloadableServerConfig;
use crate::tcp::{
    connect_tcp_with, listen_tcp_with, ConnectOptions, ListenAddr, ListenOptions, ListeningPort,
};

/// Listen for TLS connections (Twisted's `reactor.listenSSL(port, factory,
/// contextFactory)`). `config` is built once and shared by every connection
/// of this listener: an `Arc<ServerConfig>`, or a
/// [`ReloadableServerConfig`] to replace it while the listener serves
/// (renewed certificates).
///
/// ```no_run
/// use twistor_reactor::{Protocol, Reactor, Transport};
/// use twistor_transports::tls::{listen_tls, load_server_config, Passphrase};
/// struct Echo;
/// impl Protocol for Echo {
///     fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) { t.write(d) }
/// }
/// let config = load_server_config("domain.crt", "domain.key", &Passphrase::Prompt).unwrap();
/// let mut r = Reactor::new().unwrap();
/// listen_tls(&mut r, 1234, |_: &_| Echo, config).unwrap();
/// r.run().unwrap();
/// ```
pub fn listen_tls(
    r: &mut Reactor,
    addr: impl Into<ListenAddr>,
    factory: impl Factory,
    config: impl Into<ReloadableServerConfig>,
) -> io::Result<ListeningPort> {
    listen_tls_with(
        r,
        addr,
        factory,
        config,
        TlsOptions::default(),
        ListenOptions::default(),
    )
}

/// [`listen_tls`] with TLS and listener options.
///
/// ```no_run
/// use std::time::Duration;
/// use twistor_reactor::{testing::Recorder, Reactor};
/// use twistor_transports::tls::{generate_self_signed, listen_tls_with, TlsOptions};
/// use twistor_transports::ListenOptions;
/// let (config, _) = generate_self_signed(&["localhost"]).unwrap();
/// let tls = TlsOptions { handshake_timeout: Some(Duration::from_secs(5)), ..TlsOptions::default() };
/// let opts = ListenOptions { max_connections: Some(1000), ..ListenOptions::default() };
/// let mut r = Reactor::new().unwrap();
/// listen_tls_with(&mut r, 1965, |_: &_| Recorder::new().0, config, tls, opts).unwrap();
/// ```
pub fn listen_tls_with(
    r: &mut Reactor,
    addr: impl Into<ListenAddr>,
    factory: impl Factory,
    config: impl Into<ReloadableServerConfig>,
    tls: TlsOptions,
    opts: ListenOptions,
) -> io::Result<ListeningPort> {
    listen_tcp_with(r, addr, TlsServerFactory::new(factory, config, tls), opts)
}

/// Connect to `host:port` over TLS (Twisted's `reactor.connectSSL`). `host`
/// is also the name sent as SNI and checked against the certificate. The
/// attempt ends in exactly one of the protocol's `connection_made` (after
/// the handshake) or the factory's `client_connection_failed` (TCP or TLS
/// failure, with the reason).
///
/// ```no_run
/// use twistor_reactor::{Protocol, Reactor, Transport};
/// use twistor_transports::tls::{connect_tls, ClientConfigBuilder};
/// struct Hello;
/// impl Protocol for Hello {
///     fn connection_made(&mut self, t: &mut dyn Transport) { t.write(b"Hello, world!\n") }
///     fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
///         println!("Server said: {}", String::from_utf8_lossy(d));
///         t.lose_connection();
///     }
/// }
/// let config = ClientConfigBuilder::new().build().unwrap(); // the system's roots
/// let mut r = Reactor::new().unwrap();
/// connect_tls(&mut r, "localhost", 1234, |_: &_| Hello, config);
/// r.run().unwrap();
/// ```
pub fn connect_tls(
    r: &mut Reactor,
    host: &str,
    port: u16,
    factory: impl ClientFactory,
    config: Arc<ClientConfig>,
) -> Connector {
    connect_tls_with(
        r,
        host,
        port,
        factory,
        config,
        TlsOptions::default(),
        ConnectOptions::default(),
    )
}

/// [`connect_tls`] with TLS and connection options.
///
/// ```no_run
/// use std::time::Duration;
/// use twistor_reactor::{testing::Recorder, Reactor};
/// use twistor_transports::tls::{connect_tls_with, ClientConfigBuilder, TlsOptions, TofuStore};
/// use twistor_transports::ConnectOptions;
/// let config = ClientConfigBuilder::new().tofu(TofuStore::open("known_hosts").unwrap()).build().unwrap();
/// let opts = ConnectOptions { timeout: Duration::from_secs(10), ..ConnectOptions::default() };
/// let mut r = Reactor::new().unwrap();
/// connect_tls_with(&mut r, "localhost", 1965, |_: &_| Recorder::new().0, config, TlsOptions::default(), opts);
/// ```
pub fn connect_tls_with(
    r: &mut Reactor,
    host: &str,
    port: u16,
    factory: impl ClientFactory,
    config: Arc<ClientConfig>,
    tls: TlsOptions,
    opts: ConnectOptions,
) -> Connector {
    let name = host.trim_start_matches('[').trim_end_matches(']');
    connect_tcp_with(
        r,
        host,
        port,
        TlsClientFactory::new(factory, config, name, tls),
        opts,
    )
}
