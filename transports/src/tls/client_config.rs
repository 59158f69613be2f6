//! Building a client's rustls configuration: whom to trust (the system
//! roots by default, CA files, or an explicit opt-in to a pinned fingerprint,
//! a certificate file or trust on first use), a client certificate, ALPN,
//! the session store that lets its connections resume.
//! A refused certificate is explained in words (see `explain.rs`).

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::explain::ExplainingVerifier;
use super::info::sha256_fingerprint;
use super::keys::{load_ca, load_certs, load_key, system_roots, Passphrase};
use super::resume::{client_resumption, DEFAULT_CLIENT_SESSION_CACHE};
use super::server_config::provider;
use super::tofu::Tofu;
use super::verify::{normal_fingerprint, FingerprintVerifier, Trust};

#[derive(Debug)]
enum ServerTrust {
    System,
    Roots(Vec<CertificateDer<'static>>),
    Fingerprint(Trust),
}

/// Builds a client configuration. By default the server's certificate must
/// chain to the system's roots and match the host name.
///
/// ```
/// use twistor_transports::tls::{ClientConfigBuilder, TofuStore};
/// // Gemini style: trust on first use.
/// let config = ClientConfigBuilder::new()
///     .tofu(TofuStore::in_memory())
///     .alpn(&[b"gemini"])
///     .build()
///     .unwrap();
/// assert_eq!(config.alpn_protocols.len(), 1);
/// ```
#[derive(Debug)]
pub struct ClientConfigBuilder {
    provider: Arc<CryptoProvider>,
    trust: ServerTrust,
    client_cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    alpn: Vec<Vec<u8>>,
    session_cache: usize,
}

impl Default for ClientConfigBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientConfigBuilder {
    /// Trust the system roots (the default).
    pub fn new() -> ClientConfigBuilder {
        ClientConfigBuilder {
            provider: provider(),
            trust: ServerTrust::System,
            client_cert: None,
            alpn: Vec::new(),
            session_cache: DEFAULT_CLIENT_SESSION_CACHE,
        }
    }

    /// Trust these CA certificates instead of the system roots (adds to any
    /// given before).
    pub fn roots(mut self, cas: Vec<CertificateDer<'static>>) -> Self {
        match &mut self.trust {
            ServerTrust::Roots(v) => v.extend(cas),
            _ => self.trust = ServerTrust::Roots(cas),
        }
        self
    }

    /// Trust the CAs of a PEM bundle file or a directory of them.
    pub fn ca_file(self, path: impl AsRef<Path>) -> io::Result<Self> {
        Ok(self.roots(load_ca(path)?))
    }

    /// Trust only a server whose certificate has this SHA-256 fingerprint
    /// (hex, colons allowed); names and issuers are not checked. Call again
    /// to allow several.
    pub fn pinned(mut self, fingerprint: &str) -> Self {
        let fp = normal_fingerprint(fingerprint);
        match &mut self.trust {
            ServerTrust::Fingerprint(Trust::Pinned(v)) => v.push(fp),
            _ => self.trust = ServerTrust::Fingerprint(Trust::Pinned(vec![fp])),
        }
        self
    }

    /// Trust a server that shows one of the certificates in this PEM file
    /// (its SHA-256 fingerprint is pinned, as [`pinned`](Self::pinned)
    /// does): the way to trust a self-signed certificate such as the lab's
    /// `domain.crt` or the one `twistor echo --tls` writes, whatever names
    /// and `CA:TRUE` flag it carries. For a certificate authority's file,
    /// which signed the server's certificate, use [`ca_file`](Self::ca_file).
    ///
    /// ```
    /// use twistor_transports::tls::{generate_self_signed_pem, ClientConfigBuilder};
    /// let (cert, _key) = generate_self_signed_pem(&["localhost"]).unwrap();
    /// let file = std::env::temp_dir().join(format!("trust-doc-{}.crt", std::process::id()));
    /// std::fs::write(&file, cert).unwrap();
    /// let config = ClientConfigBuilder::new().trust_cert_file(&file).unwrap().build().unwrap();
    /// # let _ = config;
    /// std::fs::remove_file(file).unwrap();
    /// ```
    pub fn trust_cert_file(mut self, path: impl AsRef<Path>) -> io::Result<Self> {
        for cert in load_certs(path)? {
            self = self.pinned(&sha256_fingerprint(&cert));
        }
        Ok(self)
    }

    /// Trust on first use: remember each server's certificate the first
    /// time (once its key is proven) and refuse a different one later (the
    /// Gemini convention; the rules are on [`Tofu`]). Takes a
    /// store alone (`Arc<TofuStore>`, `Arc<KnownHosts>`, any
    /// [`PinStore`](super::PinStore)), or a [`Tofu`] that also says the
    /// port, whether to take a new certificate, and who hears of each
    /// decision.
    ///
    /// ```
    /// use twistor_transports::tls::{ClientConfigBuilder, KnownHosts, Tofu, TofuStore};
    /// // One pin per host name.
    /// let simple = ClientConfigBuilder::new().tofu(TofuStore::in_memory()).build().unwrap();
    /// // One pin per host and port 1965, with dates, in a file.
    /// let file = std::env::temp_dir().join(format!("tofu-doc-{}", std::process::id()));
    /// let store = KnownHosts::open(&file).unwrap();
    /// let gemini = ClientConfigBuilder::new().tofu(Tofu::new(store).port(1965)).build().unwrap();
    /// # let _ = (simple, gemini);
    /// ```
    pub fn tofu(mut self, tofu: impl Into<Tofu>) -> Self {
        self.trust = ServerTrust::Fingerprint(Trust::Tofu(tofu.into()));
        self
    }

    /// Present this client certificate when the server asks.
    pub fn client_cert(mut self, chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Self {
        self.client_cert = Some((chain, key));
        self
    }

    /// Present a client certificate from PEM files.
    pub fn client_cert_files(
        self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
        passphrase: &Passphrase,
    ) -> io::Result<Self> {
        let chain = load_certs(cert)?;
        let key = load_key(key, passphrase)?;
        Ok(self.client_cert(chain, key))
    }

    /// ALPN protocols, most preferred first.
    pub fn alpn(mut self, protocols: &[&[u8]]) -> Self {
        self.alpn = protocols.iter().map(|p| p.to_vec()).collect();
        self
    }

    /// How many servers (by name) to keep sessions for, so that the next
    /// connection to one resumes instead of doing a full handshake
    /// (default [`DEFAULT_CLIENT_SESSION_CACHE`](super::DEFAULT_CLIENT_SESSION_CACHE),
    /// 256; 0 never resumes). The store belongs to the built
    /// configuration: every connection made with the same
    /// `Arc<ClientConfig>` shares it, and a new `build()` starts empty.
    /// A resumed connection shows the certificate of the session it
    /// resumed (`tls_info().peer_cert`), which was verified when the
    /// session was made, and says so in `tls_info().resumed`.
    ///
    /// ```
    /// use twistor_transports::tls::{ClientConfigBuilder, TofuStore};
    /// // A client that never resumes: each connection is a full handshake.
    /// let config = ClientConfigBuilder::new().tofu(TofuStore::in_memory()).session_cache(0).build().unwrap();
    /// # let _ = config;
    /// ```
    pub fn session_cache(mut self, servers: usize) -> Self {
        self.session_cache = servers;
        self
    }

    /// Build the shared configuration.
    pub fn build(self) -> io::Result<Arc<ClientConfig>> {
        let err = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidInput, e.to_string());
        let builder = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(err)?;
        let builder = match self.trust {
            ServerTrust::System | ServerTrust::Roots(_) => {
                let cas = match self.trust {
                    ServerTrust::Roots(v) => v,
                    _ => system_roots()?,
                };
                let mut store = RootCertStore::empty();
                let (added, _ignored) = store.add_parsable_certificates(cas);
                if added == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "no usable CA certificate",
                    ));
                }
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(store), self.provider.clone())
                        .build()
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
                // Still the web PKI's decisions, with refusals explained.
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ExplainingVerifier::new(
                        webpki,
                        &self.provider,
                    )))
            }
            ServerTrust::Fingerprint(trust) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(FingerprintVerifier::new(trust, &self.provider))),
        };
        let mut config = match self.client_cert {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("the client certificate: {e}"),
                )
            })?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn;
        config.resumption = client_resumption(self.session_cache);
        Ok(Arc::new(config))
    }
}
