//! A Gemini server built in code: virtual hosts (each with its names, its
//! handler and its certificate, chosen by SNI), the server's knobs and
//! their defaults, the client CA whose verdict is `TLS_CLIENT_AUTHORISED`,
//! and listening.
//!
//! | knob | default | field |
//! |---|---|---|
//! | request line must arrive within | 10 s | [`ServerOptions::request_timeout`] |
//! | TLS handshake must finish within | 10 s | [`ServerOptions::handshake_timeout`] |
//! | a reader that takes nothing is cut off after | 60 s | [`ServerOptions::stall_timeout`] |
//! | a Titan upload whose bytes stop coming is cut off after | 30 s | [`ServerOptions::upload_timeout`] |
//! | the URL's host must be the SNI name | no | [`ServerOptions::strict_sni`] |
//! | connections per listener | 1,024 | [`ServerOptions::max_connections`] |
//! | connections per client address | 64 | [`ServerOptions::max_connections_per_address`] |
//! | requests per client address | unlimited | [`ServerOptions::rate_limit`] |
//! | client addresses in the access log | yes | [`ServerOptions::log_client_addresses`] |

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use twistor_reactor::{Address, Factory, Protocol, Reactor};
use twistor_transports::tls::rustls::crypto::ring::default_provider;
use twistor_transports::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use twistor_transports::tls::rustls::server::danger::ClientCertVerifier;
use twistor_transports::tls::rustls::server::WebPkiClientVerifier;
use twistor_transports::tls::rustls::{RootCertStore, ServerConfig};
use twistor_transports::tls::{
    listen_tls_with, load_certs, load_key, sha256_fingerprint, ClientAuth, Passphrase, ServerConfigBuilder,
    TlsOptions,
};
use twistor_transports::{ListenAddr, ListenOptions, ListeningPort};

use super::certs::load_or_generate_cert;
use super::request::normalize_host;
use super::router::Handler;
use super::server::GeminiConnection;
use crate::peer_slots::PeerSlots;
use crate::RateLimiter;

/// Gemini's port.
pub const DEFAULT_PORT: u16 = 1965;
/// Default [`ServerOptions::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`ServerOptions::handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`ServerOptions::stall_timeout`].
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Default [`ServerOptions::upload_timeout`].
pub const DEFAULT_UPLOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`ServerOptions::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default [`ServerOptions::max_connections_per_address`].
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 64;

/// A request rate per client address, written as jetforce writes it:
/// `60/5m` is 60 requests per 5 minutes (units `s`, `m`, `h`, `d`; a bare
/// unit means one of it). Enforced as a token bucket: a burst of up to the
/// whole allowance, refilled evenly over the period; a client over it is
/// answered `44` with the seconds until its next request is allowed.
///
/// ```
/// use std::time::Duration;
/// use twistor_protocols::gemini::RateLimit;
/// let r: RateLimit = "60/5m".parse().unwrap();
/// assert_eq!((r.requests, r.period), (60, Duration::from_secs(300)));
/// assert_eq!("10/h".parse::<RateLimit>().unwrap().period, Duration::from_secs(3600));
/// assert!("60".parse::<RateLimit>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per period (and at once).
    pub requests: u32,
    /// The period.
    pub period: Duration,
}

impl FromStr for RateLimit {
    type Err = String;
    fn from_str(s: &str) -> Result<RateLimit, String> {
        let err = || format!("invalid rate limit {s:?}: expected e.g. 60/5m (60 requests per 5 minutes)");
        let (n, per) = s.split_once('/').ok_or_else(err)?;
        let requests: u32 = n.trim().parse().map_err(|_| err())?;
        let per = per.trim();
        let unit_at = per.len().checked_sub(1).ok_or_else(err)?;
        let (count, unit) = per.split_at(unit_at);
        let count: u64 = if count.is_empty() {
            1
        } else {
            count.parse().map_err(|_| err())?
        };
        let secs = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86400,
            _ => return Err(err()),
        };
        if requests == 0 || count == 0 {
            return Err(err());
        }
        Ok(RateLimit {
            requests,
            period: Duration::from_secs(count.saturating_mul(secs)),
        })
    }
}

impl RateLimit {
    /// The per-address limiter that enforces this rate.
    pub fn limiter(&self) -> RateLimiter {
        let rate = f64::from(self.requests) / self.period.as_secs_f64();
        RateLimiter::new(rate, f64::from(self.requests))
    }
}

/// The server's knobs.
///
/// | knob | default |
/// |---|---|
/// | [`request_timeout`](Self::request_timeout) | 10 s ([`DEFAULT_REQUEST_TIMEOUT`]) |
/// | [`handshake_timeout`](Self::handshake_timeout) | 10 s ([`DEFAULT_HANDSHAKE_TIMEOUT`]) |
/// | [`stall_timeout`](Self::stall_timeout) | 60 s ([`DEFAULT_STALL_TIMEOUT`]) |
/// | [`upload_timeout`](Self::upload_timeout) | 30 s ([`DEFAULT_UPLOAD_TIMEOUT`]) |
/// | [`strict_sni`](Self::strict_sni) | no |
/// | [`max_connections`](Self::max_connections) | 1,024 ([`DEFAULT_MAX_CONNECTIONS`]) |
/// | [`max_connections_per_address`](Self::max_connections_per_address) | 64 ([`DEFAULT_MAX_CONNECTIONS_PER_ADDRESS`]) |
/// | [`rate_limit`](Self::rate_limit) | unlimited |
/// | [`log_client_addresses`](Self::log_client_addresses) | yes |
///
/// ```
/// use std::time::Duration;
/// use twistor_protocols::gemini::ServerOptions;
/// let opts = ServerOptions {
///     request_timeout: Duration::from_secs(5),
///     rate_limit: Some("60/5m".parse().unwrap()),
///     log_client_addresses: false,
///     ..ServerOptions::default()
/// };
/// assert_eq!(opts.max_connections, 1024);
/// ```
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// A client must send its whole request line within this time after
    /// the handshake; otherwise it is cut off (no response).
    pub request_timeout: Duration,
    /// The TLS handshake must finish within this time.
    pub handshake_timeout: Duration,
    /// While a response is being sent, a client whose reading stays paused
    /// this long is cut off (so it cannot hold a connection forever).
    pub stall_timeout: Duration,
    /// While a Titan upload's body is read, a client that sends nothing
    /// for this long is answered `59` and closed (and what was received is
    /// thrown away). It also bounds how long the server reads and drops
    /// the rest of a body it answered early.
    pub upload_timeout: Duration,
    /// Refuse (`53`) a request whose URL host is a name other than the
    /// one the client sent in SNI. Off by default: the Gemini
    /// specification (v0.24) makes clients send SNI but lets the URL pick
    /// among the hosts a server serves (it is how proxy requests work);
    /// turn it on so that a client can never reach one virtual host over a
    /// connection made for another.
    pub strict_sni: bool,
    /// Connections per listener; those over it are closed at once.
    pub max_connections: usize,
    /// Connections at once from one client address (an IPv6 client by
    /// its /64), across the server's listeners; those over it are closed
    /// at once, before any TLS work, so that one host cannot hold every
    /// slot of `max_connections` (`None`: no cap). Behind a load
    /// balancer, give the listener the PROXY protocol so that the
    /// addresses are the clients', or every client shares one count.
    pub max_connections_per_address: Option<usize>,
    /// Requests per client address (`None`: unlimited).
    pub rate_limit: Option<RateLimit>,
    /// Whether access-log lines name the client's address (`-` if not).
    pub log_client_addresses: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            upload_timeout: DEFAULT_UPLOAD_TIMEOUT,
            strict_sni: false,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: Some(DEFAULT_MAX_CONNECTIONS_PER_ADDRESS),
            rate_limit: None,
            log_client_addresses: true,
        }
    }
}

/// Where a virtual host's certificate comes from.
#[derive(Debug)]
pub enum CertSource {
    /// PEM files (an encrypted key's passphrase from `passphrase`).
    Files {
        /// The chain, leaf first.
        cert: PathBuf,
        /// The private key.
        key: PathBuf,
        /// For an encrypted key.
        passphrase: Passphrase,
    },
    /// A chain and key in memory.
    Der(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
}

/// One virtual host: its names, its handler and its certificate.
///
/// ```
/// use twistor_protocols::gemini::{Router, StaticFiles, VirtualHost};
/// let site = VirtualHost::new("example.org", StaticFiles::new("/srv/gemini/example.org"))
///     .alias("www.example.org")
///     .cert_files("example.org.crt", "example.org.key");
/// # let _ = site;
/// let app = VirtualHost::new("app.example.org", Router::new());
/// # let _ = app;
/// ```
pub struct VirtualHost {
    names: Vec<String>,
    handler: Rc<dyn Handler>,
    cert: Option<CertSource>,
}

impl VirtualHost {
    /// Serve `name` with `handler`.
    pub fn new(name: &str, handler: impl Handler) -> VirtualHost {
        VirtualHost {
            names: vec![name.to_string()],
            handler: Rc::new(handler),
            cert: None,
        }
    }

    /// Serve `name` too (same handler, same certificate).
    pub fn alias(mut self, name: &str) -> VirtualHost {
        self.names.push(name.to_string());
        self
    }

    /// The certificate from PEM files (the key unencrypted, or encrypted
    /// with its passphrase given by [`cert_files_with`](Self::cert_files_with)).
    pub fn cert_files(self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> VirtualHost {
        self.cert_files_with(cert, key, Passphrase::None)
    }

    /// The certificate from PEM files, an encrypted key's passphrase from
    /// `passphrase` (e.g. [`Passphrase::Prompt`]).
    pub fn cert_files_with(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        passphrase: Passphrase,
    ) -> VirtualHost {
        self.cert = Some(CertSource::Files {
            cert: cert.into(),
            key: key.into(),
            passphrase,
        });
        self
    }

    /// The certificate from memory.
    pub fn cert(mut self, chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> VirtualHost {
        self.cert = Some(CertSource::Der(chain, key));
        self
    }

    /// The host's names, as given.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// What every connection of a server shares.
pub(crate) struct Shared {
    pub(crate) sites: HashMap<String, Rc<dyn Handler>>,
    pub(crate) options: ServerOptions,
    pub(crate) limiter: Option<RefCell<RateLimiter>>,
    pub(crate) slots: Option<PeerSlots>,
    pub(crate) ca_verifier: Option<Arc<dyn ClientCertVerifier>>,
    tls_config: Arc<ServerConfig>,
    fingerprints: Vec<(String, String)>,
}

/// Builds a [`Server`].
#[derive(Default)]
pub struct ServerBuilder {
    hosts: Vec<VirtualHost>,
    options: ServerOptions,
    client_ca: Vec<CertificateDer<'static>>,
    state_dir: Option<PathBuf>,
}

impl ServerBuilder {
    /// Serve this virtual host; the first one's certificate is also the
    /// default, for clients that ask for no name or an unknown one.
    pub fn host(mut self, host: VirtualHost) -> ServerBuilder {
        self.hosts.push(host);
        self
    }

    /// The knobs.
    pub fn options(mut self, options: ServerOptions) -> ServerBuilder {
        self.options = options;
        self
    }

    /// CA certificates for client certificates: one that chains to them is
    /// authorised (`TLS_CLIENT_AUTHORISED=1`, [`ClientCert::authorised`](super::ClientCert));
    /// any other, self-signed included, is still accepted.
    pub fn client_ca(mut self, cas: Vec<CertificateDer<'static>>) -> ServerBuilder {
        self.client_ca.extend(cas);
        self
    }

    /// Keep generated certificates in `dir` (so they survive restarts)
    /// instead of making temporary ones.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> ServerBuilder {
        self.state_dir = Some(dir.into());
        self
    }

    /// Load or generate the certificates and build the server.
    pub fn build(self) -> io::Result<Server> {
        if self.hosts.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a Gemini server needs a host",
            ));
        }
        let mut tls = ServerConfigBuilder::new().client_auth(ClientAuth::Any);
        let mut sites = HashMap::new();
        let mut fingerprints = Vec::new();
        for (i, host) in self.hosts.into_iter().enumerate() {
            let names = host
                .names
                .iter()
                .map(|n| normalize_host(n).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e)))
                .collect::<io::Result<Vec<String>>>()?;
            let (chain, key) = host_cert(host.cert, &names, self.state_dir.as_deref())?;
            fingerprints.push((names[0].clone(), sha256_fingerprint(&chain[0])));
            if i == 0 {
                tls = tls.cert(chain.clone(), key.clone_key())?;
            }
            for name in &names {
                if sites.insert(name.clone(), host.handler.clone()).is_some() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("host {name} is configured twice"),
                    ));
                }
                tls = tls.sni_cert(name, chain.clone(), key.clone_key())?;
            }
        }
        let ca_verifier = if self.client_ca.is_empty() {
            None
        } else {
            let mut roots = RootCertStore::empty();
            for ca in self.client_ca {
                roots
                    .add(ca)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("client CA: {e}")))?;
            }
            let v =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::new(default_provider()))
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("client CA: {e}")))?;
            Some(v)
        };
        let limiter = self.options.rate_limit.map(|l| RefCell::new(l.limiter()));
        Ok(Server {
            shared: Rc::new(Shared {
                sites,
                slots: self
                    .options
                    .max_connections_per_address
                    .map(|n| PeerSlots::new(n, "max_connections_per_address")),
                options: self.options,
                limiter,
                ca_verifier,
                tls_config: tls.build()?,
                fingerprints,
            }),
        })
    }
}

/// A host's certificate: given, kept in the state directory, or temporary.
fn host_cert(
    source: Option<CertSource>,
    names: &[String],
    state_dir: Option<&Path>,
) -> io::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    match source {
        Some(CertSource::Files {
            cert,
            key,
            passphrase,
        }) => Ok((load_certs(&cert)?, load_key(&key, &passphrase)?)),
        Some(CertSource::Der(chain, key)) => Ok((chain, key)),
        None => {
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            match state_dir {
                Some(dir) => {
                    let kept = load_or_generate_cert(dir, &refs)?;
                    let verb = if kept.created { "generated" } else { "loaded" };
                    log::info!(
                        "{}: {verb} the certificate {} (SHA-256 {})",
                        names[0],
                        kept.cert_path.display(),
                        kept.fingerprint
                    );
                    Ok((kept.chain, kept.key))
                }
                None => {
                    let (chain, key) = twistor_transports::tls::generate_self_signed_cert(&refs)?;
                    log::info!(
                        "{}: generated a temporary certificate (SHA-256 {})",
                        names[0],
                        sha256_fingerprint(&chain[0])
                    );
                    Ok((chain, key))
                }
            }
        }
    }
}

/// A Gemini server: its virtual hosts, knobs and TLS configuration. It is
/// the [`Factory`] of its connections' protocols; [`listen`](Self::listen)
/// puts TLS under them. Cheap to clone (shared).
///
/// ```no_run
/// use twistor_protocols::gemini::{Server, StaticFiles, VirtualHost};
/// use twistor_reactor::Reactor;
/// let server = Server::builder()
///     .host(VirtualHost::new("localhost", StaticFiles::new("/var/gemini")))
///     .state_dir("/var/lib/twistor")
///     .build()?;
/// let mut reactor = Reactor::new()?;
/// server.listen(&mut reactor, 1965)?;
/// reactor.run()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Server {
    shared: Rc<Shared>,
}

impl Server {
    /// Start building a server.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Listen on `addr` (a port: every interface, IPv6 and IPv4) with TLS.
    pub fn listen(&self, r: &mut Reactor, addr: impl Into<ListenAddr>) -> io::Result<ListeningPort> {
        let opts = ListenOptions {
            max_connections: Some(self.shared.options.max_connections),
            ..ListenOptions::default()
        };
        listen_tls_with(r, addr, self.clone(), self.tls_config(), self.tls_options(), opts)
    }

    /// The TLS configuration (certificates by SNI, any client certificate).
    pub fn tls_config(&self) -> Arc<ServerConfig> {
        self.shared.tls_config.clone()
    }

    /// The TLS layer's knobs (the handshake timeout).
    pub fn tls_options(&self) -> TlsOptions {
        TlsOptions {
            handshake_timeout: Some(self.shared.options.handshake_timeout),
            ..TlsOptions::default()
        }
    }

    /// Each virtual host's first name and its certificate's SHA-256
    /// fingerprint.
    pub fn fingerprints(&self) -> &[(String, String)] {
        &self.shared.fingerprints
    }

    /// A connection's protocol (what the listener's factory builds; TLS
    /// goes under it).
    pub fn connection(&self) -> GeminiConnection {
        GeminiConnection::new(self.shared.clone())
    }
}

impl Factory for Server {
    fn build_protocol(&mut self, addr: &Address) -> Option<Box<dyn Protocol>> {
        let mut conn = self.connection();
        if let (Some(slots), Some(ip)) = (&self.shared.slots, addr.ip()) {
            conn.hold(slots.take(ip)?);
        }
        Some(Box::new(conn))
    }
}
