//! Whom the Gemini client trusts and who it says it is: trust on first use
//! against a [`KnownHosts`] store, or no check at all on request (the
//! rules are in [`ServerTrust`]'s docs), and client certificates
//! ([`Identity`]: PEM files, or a named self-signed identity generated
//! once and kept in the user's data directory).

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

use twistor_transports::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use twistor_transports::tls::rustls::ClientConfig;
use twistor_transports::tls::{
    cert_facts, default_data_dir, load_certs, load_key, ClientConfigBuilder, KnownHosts, Passphrase, Tofu,
};
// The decision about a server's certificate and the refusal of a changed
// one are trust on first use's, shared with every TLS client of twistor's.
pub use twistor_transports::tls::{CertificateChanged, Replacement, ServerCert, TrustDecision};

use super::certs::load_or_generate_cert;

/// How a fetch decides whether to trust a server.
///
/// With [`KnownHosts`](ServerTrust::KnownHosts), a server is judged by the
/// SHA-256 fingerprint of its certificate, for the host and port the URL
/// names (names, issuers and dates are not checked: Gemini servers mostly
/// use self-signed certificates). These are the rules of twistor's trust
/// on first use ([`Tofu`], which the fetch uses with the URL's port):
///
/// - no entry for that host and port: trusted, and remembered once the
///   server has proved, by its handshake signature, that it holds the
///   certificate's key;
/// - the remembered fingerprint: trusted;
/// - another fingerprint: refused ([`CertificateChanged`] names both),
///   unless the fetch was told to trust a new certificate
///   ([`FetchOptions::trust_new`](super::FetchOptions::trust_new)), or the
///   remembered certificate has expired and the new one is within its
///   validity dates: a server must replace an expired certificate, so that
///   change is expected; it is taken, remembered, and reported as
///   [`Replacement::Expired`].
///
/// With [`Insecure`](ServerTrust::Insecure) nothing is checked or
/// remembered (the handshake signature is still verified, as always).
///
/// ```
/// use twistor_protocols::gemini::{KnownHosts, ServerTrust};
/// let tofu = ServerTrust::KnownHosts(KnownHosts::in_memory());
/// # let _ = tofu;
/// ```
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// Trust on first use, remembered in this store.
    KnownHosts(Arc<KnownHosts>),
    /// Check nothing and remember nothing (the handshake signature is
    /// still verified). For tests and emergencies.
    Insecure,
}

impl Default for ServerTrust {
    /// Trust on first use in a store kept in memory only.
    fn default() -> Self {
        ServerTrust::KnownHosts(KnownHosts::in_memory())
    }
}

/// What the verifier of one connection saw: the certificate and the
/// decision, or the refusal (read by the fetch once the handshake is over
/// or has failed).
pub(crate) type Seen = Arc<Mutex<Option<Result<ServerCert, Box<CertificateChanged>>>>>;

/// A client certificate and its key: who the client says it is.
///
/// ```
/// use twistor_protocols::gemini::Identity;
/// let dir = std::env::temp_dir().join(format!("identity-doc-{}", std::process::id()));
/// let (alice, created) = Identity::named_in(&dir, "alice").unwrap();
/// assert!(created);
/// let (again, created) = Identity::named_in(&dir, "alice").unwrap();
/// assert!(!created);
/// assert_eq!(alice.fingerprint(), again.fingerprint());
/// assert_eq!(alice.subject_cn().as_deref(), Some("alice"));
/// assert!(Identity::named_in(&dir, "../etc").is_err());
/// # std::fs::remove_dir_all(dir).unwrap();
/// ```
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// An identity from a chain (leaf first) and its key.
    pub fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Identity {
        Identity { chain, key }
    }

    /// An identity from PEM files; an encrypted key's passphrase comes from
    /// `passphrase` (e.g. [`Passphrase::from_env_or_prompt`]).
    pub fn from_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
        passphrase: &Passphrase,
    ) -> io::Result<Identity> {
        let chain = load_certs(cert)?;
        let key = load_key(key, passphrase)?;
        Ok(Identity { chain, key })
    }

    /// The identity called `name`, kept in `identities` under
    /// [`default_data_dir`]; generated (self-signed, subject CN `name`)
    /// the first time. Returns whether it was generated now.
    pub fn named(name: &str) -> io::Result<(Identity, bool)> {
        Identity::named_in(&default_data_dir().join("identities"), name)
    }

    /// [`named`](Self::named) with the identities kept in `dir`
    /// (`NAME.crt` and `NAME.key`, the key readable by its owner only).
    /// A name is 1 to 64 letters, digits, `.`, `_` or `-`, not starting
    /// with a dot.
    pub fn named_in(dir: &Path, name: &str) -> io::Result<(Identity, bool)> {
        let ok = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{name:?} is not an identity name: use 1 to 64 letters, digits, '.', '_' or '-', \
                     not starting with '.'"
                ),
            ));
        }
        let kept = load_or_generate_cert(dir, &[name])?;
        Ok((
            Identity {
                chain: kept.chain,
                key: kept.key,
            },
            kept.created,
        ))
    }

    /// SHA-256 fingerprint of the certificate, lowercase hex (what a
    /// server keys the identity on).
    pub fn fingerprint(&self) -> String {
        self.chain
            .first()
            .map(|c| twistor_transports::tls::sha256_fingerprint(c))
            .unwrap_or_default()
    }

    /// The certificate's subject common name (a server's `REMOTE_USER`).
    pub fn subject_cn(&self) -> Option<String> {
        self.chain.first().and_then(|c| cert_facts(c)?.subject_cn)
    }
}

/// The client configuration for one connection to port `port` of a
/// server, and where its verifier reports what it decided.
pub(crate) fn client_config(
    port: u16,
    trust: &ServerTrust,
    trust_new: bool,
    identity: Option<&Identity>,
) -> io::Result<(Arc<ClientConfig>, Seen)> {
    let seen: Seen = Arc::new(Mutex::new(None));
    let slot = seen.clone();
    let tofu = match trust {
        ServerTrust::KnownHosts(store) => Tofu::new(store.clone()).port(port).trust_new(trust_new),
        ServerTrust::Insecure => Tofu::insecure(),
    }
    .on_decision(move |outcome| {
        let outcome = outcome.cloned().map_err(|changed| Box::new(changed.clone()));
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
    });
    // A new configuration per connection, without resumption: a resumed
    // session would skip the certificate, and with it the decision.
    let mut builder = ClientConfigBuilder::new().tofu(tofu).session_cache(0);
    if let Some(id) = identity {
        builder = builder.client_cert(id.chain.clone(), id.key.clone_key());
    }
    Ok((builder.build()?, seen))
}
