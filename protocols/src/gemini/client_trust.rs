//! Whom the Gemini client trusts and who it says it is: trust on first use
//! against a [`KnownHosts`] store, or no check at all on request (the
//! rules are in [`ServerTrust`]'s docs), and client certificates
//! ([`Identity`]: PEM files, or a named self-signed identity generated
//! once and kept in the user's data directory).

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use twistor_transports::tls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use twistor_transports::tls::rustls::crypto::{
    verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms,
};
use twistor_transports::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use twistor_transports::tls::rustls::{
    self, CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme,
};
use twistor_transports::tls::{
    cert_facts, default_data_dir, format_time, load_certs, load_key, KnownHost, KnownHosts, Passphrase,
};

use super::certs::load_or_generate_cert;

/// How a fetch decides whether to trust a server.
///
/// With [`KnownHosts`](ServerTrust::KnownHosts), a server is judged by the
/// SHA-256 fingerprint of its certificate, for the host and port the URL
/// names (names, issuers and dates are not checked: Gemini servers mostly
/// use self-signed certificates):
///
/// - no entry for that host and port: trusted, and remembered once the
///   handshake has completed (so the server has proved, by its handshake
///   signature, that it holds the certificate's key);
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

/// Why a remembered certificate was replaced by the one offered (see
/// [`TrustDecision`] for an example).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replacement {
    /// The fetch was told to trust a new certificate.
    TrustNew,
    /// The remembered certificate expired at this time, and the new one is
    /// within its validity dates.
    Expired(SystemTime),
}

/// What the client decided about a server's certificate.
///
/// ```
/// use twistor_protocols::gemini::{FetchResponse, TrustDecision};
/// /// A line worth telling the user, if any.
/// fn note(resp: &FetchResponse) -> Option<String> {
///     let cert = &resp.head.server_cert;
///     match &cert.decision {
///         TrustDecision::FirstUse => Some(format!("trusting {} on first use", cert.fingerprint)),
///         TrustDecision::Replaced { old, why } => Some(format!("replaced {old} ({why:?})")),
///         TrustDecision::Known | TrustDecision::Unchecked => None,
///     }
/// }
/// # let _ = note;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustDecision {
    /// It is the certificate remembered for this host and port.
    Known,
    /// The first one seen for this host and port: trusted and remembered.
    FirstUse,
    /// It replaced the one remembered (whose fingerprint is `old`).
    Replaced {
        /// The fingerprint remembered before.
        old: String,
        /// Why it was replaced.
        why: Replacement,
    },
    /// Not checked ([`ServerTrust::Insecure`]).
    Unchecked,
}

/// The certificate a server showed, and what was decided about it (see
/// [`TrustDecision`] for an example).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCert {
    /// SHA-256 fingerprint, lowercase hex.
    pub fingerprint: String,
    /// Start of its validity.
    pub not_before: SystemTime,
    /// End of its validity.
    pub not_after: SystemTime,
    /// Its subject's common name, if any.
    pub subject_cn: Option<String>,
    /// Whether and why it was trusted.
    pub decision: TrustDecision,
}

/// A server showed another certificate than the one remembered for it
/// (see [`FetchError::CertificateChanged`](super::FetchError::CertificateChanged)).
///
/// ```
/// use twistor_protocols::gemini::FetchError;
/// fn both(e: &FetchError) -> Option<(String, String)> {
///     match e {
///         FetchError::CertificateChanged(c) => Some((c.trusted.fingerprint.clone(), c.offered.clone())),
///         _ => None,
///     }
/// }
/// # let _ = both;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateChanged {
    /// What is remembered for the host and port.
    pub trusted: KnownHost,
    /// The fingerprint of the certificate offered now.
    pub offered: String,
    /// The validity of the certificate offered now.
    pub offered_not_after: SystemTime,
}

impl std::fmt::Display for CertificateChanged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = &self.trusted;
        let host = if t.host.contains(':') {
            format!("[{}]:{}", t.host, t.port)
        } else {
            format!("{}:{}", t.host, t.port)
        };
        write!(
            f,
            "the certificate of {host} changed: trusted SHA-256 {} (first seen {}, expires {}), \
             offered SHA-256 {} (expires {}); refused: this may be a new certificate, or \
             another server in the way",
            t.fingerprint,
            format_time(t.first_seen),
            format_time(t.expires),
            self.offered,
            format_time(self.offered_not_after)
        )
    }
}

/// Decide about a certificate offered for a host that has `known` (or no)
/// entry. `trust_new` accepts a changed certificate.
pub(crate) fn decide(
    known: Option<&KnownHost>,
    offered: &ServerCertFacts,
    now: SystemTime,
    trust_new: bool,
) -> Result<TrustDecision, Box<CertificateChanged>> {
    let Some(known) = known else {
        return Ok(TrustDecision::FirstUse);
    };
    if known.fingerprint == offered.fingerprint {
        return Ok(TrustDecision::Known);
    }
    let old = known.fingerprint.clone();
    if trust_new {
        return Ok(TrustDecision::Replaced {
            old,
            why: Replacement::TrustNew,
        });
    }
    let offered_valid = offered.not_before <= now && now <= offered.not_after;
    if known.is_expired(now) && offered_valid {
        return Ok(TrustDecision::Replaced {
            old,
            why: Replacement::Expired(known.expires),
        });
    }
    Err(Box::new(CertificateChanged {
        trusted: known.clone(),
        offered: offered.fingerprint.clone(),
        offered_not_after: offered.not_after,
    }))
}

/// The facts of an offered certificate the decision needs.
#[derive(Debug, Clone)]
pub(crate) struct ServerCertFacts {
    pub fingerprint: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub subject_cn: Option<String>,
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

/// The client configuration for one connection to `host`:`port`, and
/// where its verifier reports what it saw.
pub(crate) fn client_config(
    host: &str,
    port: u16,
    trust: &ServerTrust,
    trust_new: bool,
    identity: Option<&Identity>,
) -> io::Result<(Arc<ClientConfig>, Seen)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let seen: Seen = Arc::new(Mutex::new(None));
    let mode = match trust {
        ServerTrust::KnownHosts(store) => Mode::Tofu {
            known: store.get(host, port),
            trust_new,
        },
        ServerTrust::Insecure => Mode::Insecure,
    };
    let verifier = TofuVerifier {
        mode,
        algs: provider.signature_verification_algorithms,
        seen: seen.clone(),
    };
    let err = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidInput, e.to_string());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    // A new configuration per connection also means no resumed session:
    // a resumed TLS 1.3 session would skip the certificate check.
    let config = match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
            .map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("the client certificate: {e}"),
                )
            })?,
        None => builder.with_no_client_auth(),
    };
    Ok((Arc::new(config), seen))
}

#[derive(Debug)]
enum Mode {
    Tofu {
        known: Option<KnownHost>,
        trust_new: bool,
    },
    Insecure,
}

/// Judges one connection's server certificate (see the [module
/// docs](self)); the handshake signature is always verified.
#[derive(Debug)]
struct TofuVerifier {
    mode: Mode,
    algs: WebPkiSupportedAlgorithms,
    seen: Seen,
}

fn refusal(message: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        io::Error::other(message),
    ))))
}

impl ServerCertVerifier for TofuVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let facts =
            cert_facts(end_entity).ok_or(rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let offered = ServerCertFacts {
            fingerprint: facts.sha256_fingerprint,
            not_before: facts.not_before,
            not_after: facts.not_after,
            subject_cn: facts.subject_cn,
        };
        let decision = match &self.mode {
            Mode::Insecure => Ok(TrustDecision::Unchecked),
            Mode::Tofu { known, trust_new } => {
                decide(known.as_ref(), &offered, SystemTime::now(), *trust_new)
            }
        };
        let outcome = decision.map(|decision| ServerCert {
            fingerprint: offered.fingerprint,
            not_before: offered.not_before,
            not_after: offered.not_after,
            subject_cn: offered.subject_cn,
            decision,
        });
        let answer = match &outcome {
            Ok(_) => Ok(ServerCertVerified::assertion()),
            Err(changed) => Err(refusal(changed.to_string())),
        };
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
        answer
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn known(fp: &str, expires: u64) -> KnownHost {
        KnownHost {
            host: "example.org".into(),
            port: 1965,
            fingerprint: fp.repeat(32),
            first_seen: at(0),
            expires: at(expires),
        }
    }

    fn offered(fp: &str, from: u64, until: u64) -> ServerCertFacts {
        ServerCertFacts {
            fingerprint: fp.repeat(32),
            not_before: at(from),
            not_after: at(until),
            subject_cn: None,
        }
    }

    #[test]
    fn decisions() {
        let now = at(1000);
        assert_eq!(
            decide(None, &offered("aa", 0, 2000), now, false),
            Ok(TrustDecision::FirstUse)
        );
        let k = known("aa", 2000);
        assert_eq!(
            decide(Some(&k), &offered("aa", 0, 2000), now, false),
            Ok(TrustDecision::Known)
        );
        // Changed while the old one is valid: refused, both fingerprints named.
        let err = decide(Some(&k), &offered("bb", 0, 3000), now, false).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&"aa".repeat(32)) && text.contains(&"bb".repeat(32)),
            "{text}"
        );
        // ... unless told to trust the new one.
        assert_eq!(
            decide(Some(&k), &offered("bb", 0, 3000), now, true),
            Ok(TrustDecision::Replaced {
                old: "aa".repeat(32),
                why: Replacement::TrustNew
            })
        );
        // The old one expired and the new one is valid: replaced.
        let old = known("aa", 500);
        assert_eq!(
            decide(Some(&old), &offered("bb", 900, 3000), now, false),
            Ok(TrustDecision::Replaced {
                old: "aa".repeat(32),
                why: Replacement::Expired(at(500))
            })
        );
        // The old one expired but the new one is not valid yet, or expired too: refused.
        assert!(decide(Some(&old), &offered("bb", 1500, 3000), now, false).is_err());
        assert!(decide(Some(&old), &offered("bb", 0, 800), now, false).is_err());
    }
}
