//! Building a server's rustls configuration: certificates (one per SNI name
//! plus a default), client-certificate modes, ALPN, protocol versions,
//! session resumption (tickets and a bounded cache, `resume.rs`). A
//! configuration is built once per listener and shared by all of its
//! connections (`Arc`).

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};

use super::keys::{load_certs, load_key, Passphrase};
use super::resume::{server_sessions, ticketer, DEFAULT_SESSION_CACHE};
use super::selfsigned::generate_self_signed_cert;
use super::verify::AnyClientCert;

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
}

/// What a server asks of its clients' certificates.
///
/// ```
/// use twistor_transports::tls::{generate_self_signed_cert, ClientAuth, ServerConfigBuilder};
/// let (ca, _) = generate_self_signed_cert(&["my ca"]).unwrap();
/// let (config, _) = ServerConfigBuilder::self_signed(&["localhost"]).unwrap();
/// # let _ = config;
/// // Members only: a client certificate issued by our CA is required.
/// let mode = ClientAuth::Required(ca);
/// # let _ = mode;
/// // Gemini: any certificate, self-signed included, identifies the client.
/// let mode = ClientAuth::Any;
/// # let _ = mode;
/// ```
#[derive(Debug, Clone, Default)]
pub enum ClientAuth {
    /// Do not ask for one (the default).
    #[default]
    None,
    /// Require one that chains to one of these CA certificates.
    Required(Vec<CertificateDer<'static>>),
    /// Ask for one; if given, it must chain to one of these CAs.
    Optional(Vec<CertificateDer<'static>>),
    /// Ask for one and accept any, self-signed included (the Gemini
    /// convention); the handshake signature is still verified, so the client
    /// proves it holds the key. The application reads the certificate's
    /// fingerprint from `tls_info()`.
    Any,
}

/// Picks the certificate for the name a client asks for (SNI), or the
/// default one.
#[derive(Debug)]
struct SniResolver {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        hello
            .server_name()
            .and_then(|n| self.by_name.get(&n.to_ascii_lowercase()))
            .or(self.default.as_ref())
            .cloned()
    }
}

/// Builds a shared server configuration.
///
/// | knob | default |
/// |---|---|
/// | [`client_auth`](Self::client_auth) | no client certificate asked for |
/// | [`alpn`](Self::alpn) | none |
/// | [`versions`](Self::versions) | TLS 1.3 and 1.2 |
/// | [`tickets`](Self::tickets) | on: rotating keys, a ticket lives at most 12 h |
/// | [`session_cache`](Self::session_cache) | 1,024 sessions ([`DEFAULT_SESSION_CACHE`](super::DEFAULT_SESSION_CACHE)) |
///
/// ```
/// use twistor_transports::tls::{generate_self_signed_cert, ClientAuth, ServerConfigBuilder};
/// let (chain, key) = generate_self_signed_cert(&["localhost"]).unwrap();
/// let config = ServerConfigBuilder::new()
///     .cert(chain, key)
///     .unwrap()
///     .client_auth(ClientAuth::Any)
///     .alpn(&[b"gemini"])
///     .build()
///     .unwrap();
/// assert_eq!(config.alpn_protocols, vec![b"gemini".to_vec()]);
/// ```
#[derive(Debug)]
pub struct ServerConfigBuilder {
    provider: Arc<CryptoProvider>,
    default: Option<Arc<CertifiedKey>>,
    by_name: HashMap<String, Arc<CertifiedKey>>,
    client_auth: ClientAuth,
    alpn: Vec<Vec<u8>>,
    versions: Vec<&'static SupportedProtocolVersion>,
    tickets: bool,
    session_cache: usize,
}

impl Default for ServerConfigBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerConfigBuilder {
    /// An empty builder (ring provider, TLS 1.2 and 1.3).
    pub fn new() -> ServerConfigBuilder {
        ServerConfigBuilder {
            provider: provider(),
            default: None,
            by_name: HashMap::new(),
            client_auth: ClientAuth::None,
            alpn: Vec::new(),
            versions: rustls::DEFAULT_VERSIONS.to_vec(),
            tickets: true,
            session_cache: DEFAULT_SESSION_CACHE,
        }
    }

    fn certified(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> io::Result<Arc<CertifiedKey>> {
        if chain.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "empty certificate chain",
            ));
        }
        CertifiedKey::from_der(chain, key, &self.provider)
            .map(Arc::new)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the private key does not match the certificate",
                ),
                other => tls_err(other),
            })
    }

    /// The default certificate chain (leaf first) and its key.
    pub fn cert(
        mut self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> io::Result<Self> {
        self.default = Some(self.certified(chain, key)?);
        Ok(self)
    }

    /// The default certificate from PEM files; an encrypted key's
    /// passphrase comes from `passphrase`.
    pub fn cert_files(
        self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
        passphrase: &Passphrase,
    ) -> io::Result<Self> {
        let chain = load_certs(cert)?;
        let key = load_key(key, passphrase)?;
        self.cert(chain, key)
    }

    /// The certificate for clients asking for `name` (SNI).
    pub fn sni_cert(
        mut self,
        name: &str,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> io::Result<Self> {
        let ck = self.certified(chain, key)?;
        self.by_name.insert(name.to_ascii_lowercase(), ck);
        Ok(self)
    }

    /// The certificate for `name` from PEM files.
    pub fn sni_cert_files(
        self,
        name: &str,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
        passphrase: &Passphrase,
    ) -> io::Result<Self> {
        let chain = load_certs(cert)?;
        let key = load_key(key, passphrase)?;
        self.sni_cert(name, chain, key)
    }

    /// What to ask of client certificates.
    pub fn client_auth(mut self, mode: ClientAuth) -> Self {
        self.client_auth = mode;
        self
    }

    /// ALPN protocols, most preferred first.
    pub fn alpn(mut self, protocols: &[&[u8]]) -> Self {
        self.alpn = protocols.iter().map(|p| p.to_vec()).collect();
        self
    }

    /// The protocol versions offered (default: TLS 1.3 and 1.2, rustls's
    /// [`DEFAULT_VERSIONS`](rustls::DEFAULT_VERSIONS)). An empty list is
    /// an error at [`build`](Self::build).
    ///
    /// ```
    /// use twistor_transports::tls::{rustls, ServerConfigBuilder};
    /// // TLS 1.3 only.
    /// let (chain, key) = twistor_transports::tls::generate_self_signed_cert(&["localhost"]).unwrap();
    /// let config = ServerConfigBuilder::new()
    ///     .cert(chain, key)
    ///     .unwrap()
    ///     .versions(&[&rustls::version::TLS13])
    ///     .build()
    ///     .unwrap();
    /// # let _ = config;
    /// ```
    pub fn versions(mut self, versions: &[&'static SupportedProtocolVersion]) -> Self {
        self.versions = versions.to_vec();
        self
    }

    /// Whether the server gives clients session tickets to resume with
    /// (default: yes). A resumed handshake skips the certificate, its
    /// signature (the server's most expensive step, with RSA especially)
    /// and, in TLS 1.2, a round trip: what a protocol that opens a
    /// connection per request, such as Gemini, gains most from.
    ///
    /// A ticket is the session's secrets sealed with a key that lives only
    /// in this process's memory: ChaCha20-Poly1305, a new key every 6
    /// hours and the previous one accepted for 6 more, so a ticket is good
    /// for at most 12 hours; a restart or a reload makes new keys.
    ///
    /// **Forward secrecy.** Whoever steals a ticket key while it lives can
    /// open the tickets it sealed that they recorded on the wire. In TLS
    /// 1.3 that lets them resume those sessions but not read recorded
    /// traffic: rustls resumes only with a fresh key exchange (psk_dhe_ke)
    /// and accepts no early data, so every connection keeps its forward
    /// secrecy. In TLS 1.2 a ticket holds the master secret itself, so the
    /// connections it came from and those resumed with it can be decrypted
    /// until the key is rotated out: forward secrecy for TLS 1.2 holds only
    /// after at most 12 hours. Hence the short rotation, the keys never
    /// written anywhere, and TLS 1.3 first; turn tickets off (the session
    /// cache still resumes, with secrets that never leave the server) or
    /// offer only TLS 1.3 ([`versions`](Self::versions)) where that window
    /// matters.
    ///
    /// With several reactors (threads), share one configuration (it is
    /// `Send + Sync`) so a ticket from one is good at all.
    ///
    /// ```
    /// use twistor_transports::tls::{generate_self_signed_cert, ServerConfigBuilder};
    /// let (chain, key) = generate_self_signed_cert(&["localhost"]).unwrap();
    /// let config = ServerConfigBuilder::new().cert(chain, key).unwrap().tickets(false).build().unwrap();
    /// assert!(!config.ticketer.enabled());
    /// ```
    pub fn tickets(mut self, on: bool) -> Self {
        self.tickets = on;
        self
    }

    /// How many sessions the server keeps in memory for clients that
    /// resume by session id rather than with a ticket: TLS 1.2 clients
    /// that do not take tickets, and every client when
    /// [`tickets`](Self::tickets) are off (default
    /// [`DEFAULT_SESSION_CACHE`](super::DEFAULT_SESSION_CACHE), 1,024;
    /// past it the oldest go; 0 keeps none). A cached session's secrets
    /// stay in memory until it is pushed out, and never cross the wire.
    ///
    /// ```
    /// use twistor_transports::tls::{generate_self_signed_cert, ServerConfigBuilder};
    /// let (chain, key) = generate_self_signed_cert(&["localhost"]).unwrap();
    /// // No resumption at all: no tickets, no cache.
    /// let config = ServerConfigBuilder::new()
    ///     .cert(chain, key)
    ///     .unwrap()
    ///     .tickets(false)
    ///     .session_cache(0)
    ///     .build()
    ///     .unwrap();
    /// # let _ = config;
    /// ```
    pub fn session_cache(mut self, sessions: usize) -> Self {
        self.session_cache = sessions;
        self
    }

    /// Build the shared configuration.
    pub fn build(self) -> io::Result<Arc<ServerConfig>> {
        if self.default.is_none() && self.by_name.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no server certificate given",
            ));
        }
        let builder = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&self.versions)
            .map_err(tls_err)?;
        let roots = |cas: &[CertificateDer<'static>]| -> io::Result<Arc<RootCertStore>> {
            let mut store = RootCertStore::empty();
            for c in cas {
                store.add(c.clone()).map_err(tls_err)?;
            }
            Ok(Arc::new(store))
        };
        let builder = match &self.client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Required(cas) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(roots(cas)?, self.provider.clone())
                    .build()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?,
            ),
            ClientAuth::Optional(cas) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(roots(cas)?, self.provider.clone())
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?,
            ),
            ClientAuth::Any => {
                builder.with_client_cert_verifier(Arc::new(AnyClientCert::new(&self.provider, false)))
            }
        };
        let mut config = builder.with_cert_resolver(Arc::new(SniResolver {
            by_name: self.by_name,
            default: self.default,
        }));
        config.alpn_protocols = self.alpn;
        config.session_storage = server_sessions(self.session_cache);
        if let Some(t) = ticketer(self.tickets)? {
            config.ticketer = t;
        }
        Ok(Arc::new(config))
    }

    /// A configuration with a freshly generated self-signed certificate for
    /// `names`, and that certificate's SHA-256 fingerprint (to log, or to pin
    /// in a client).
    ///
    /// ```
    /// use twistor_transports::tls::ServerConfigBuilder;
    /// let (config, fingerprint) = ServerConfigBuilder::self_signed(&["localhost"]).unwrap();
    /// assert_eq!(fingerprint.len(), 64);
    /// # let _ = config;
    /// ```
    pub fn self_signed(names: &[&str]) -> io::Result<(Arc<ServerConfig>, String)> {
        let (chain, key) = generate_self_signed_cert(names)?;
        let fp = super::info::sha256_fingerprint(&chain[0]);
        Ok((ServerConfigBuilder::new().cert(chain, key)?.build()?, fp))
    }
}

/// The server configuration for a certificate and key in PEM files (what
/// `twistor echo --tls --cert FILE --key FILE` uses).
///
/// ```no_run
/// use twistor_transports::tls::{load_server_config, Passphrase};
/// let config = load_server_config("domain.crt", "domain.key", &Passphrase::Prompt).unwrap();
/// # let _ = config;
/// ```
pub fn load_server_config(
    cert: impl AsRef<Path>,
    key: impl AsRef<Path>,
    passphrase: &Passphrase,
) -> io::Result<Arc<ServerConfig>> {
    ServerConfigBuilder::new()
        .cert_files(cert, key, passphrase)?
        .build()
}
