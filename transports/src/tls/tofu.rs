//! Trust on first use, once for every TLS client of twistor's (a
//! [`ClientConfigBuilder::tofu`](super::ClientConfigBuilder::tofu) client,
//! the Gemini client, `twistor fetch`): what is remembered of a server (a
//! [`Pin`]), where it is kept (a [`PinStore`]), how a client is told to
//! use it ([`Tofu`]). The decision about the certificate a server offers
//! ([`TrustDecision`], or a refusal, [`CertificateChanged`]) is in
//! `decision.rs`; the rules are on [`Tofu`].

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::decision::{decide, CertificateChanged, Offered, ServerCert, TrustDecision};

/// What trust on first use remembers of one server: its certificate's
/// fingerprint, for its host and port, and when known, when it was first
/// trusted and when that certificate expires.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use twistor_transports::tls::Pin;
/// let now = SystemTime::now();
/// let pin = Pin {
///     host: "example.org".into(),
///     port: Some(1965),
///     fingerprint: "ab".repeat(32),
///     first_seen: Some(now),
///     expires: Some(now + Duration::from_secs(86_400)),
/// };
/// assert_eq!(pin.server(), "example.org:1965");
/// assert!(!pin.is_expired(now));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// The host: a lowercase name, or an IP address without brackets.
    pub host: String,
    /// The port, or `None` for a client that did not say which port it
    /// connects to (its pins serve every port of the host).
    pub port: Option<u16>,
    /// SHA-256 of the server's certificate, lowercase hex.
    pub fingerprint: String,
    /// When it was first trusted, if the store keeps it.
    pub first_seen: Option<SystemTime>,
    /// When the certificate expires (its notAfter), if the store keeps it.
    /// A pin without it never expires.
    pub expires: Option<SystemTime>,
}

impl Pin {
    /// Whether the certificate this pin remembers has expired at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires.is_some_and(|e| e < now)
    }

    /// The server as messages name it: `host:port` (`[address]:port` for
    /// IPv6), or the host alone when the port is not known.
    pub fn server(&self) -> String {
        match self.port {
            Some(port) if self.host.contains(':') => format!("[{}]:{port}", self.host),
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.clone(),
        }
    }
}

/// Where trust on first use keeps its pins. A store decides what it keys
/// them on: [`KnownHosts`](super::KnownHosts) keeps one per host and port,
/// [`TofuStore`](super::TofuStore) one per host name whatever the port.
/// Host names are given in lowercase.
///
/// A store of your own, in memory, by host and port:
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::{Arc, Mutex};
/// use twistor_transports::tls::{ClientConfigBuilder, Pin, PinStore, Tofu};
///
/// #[derive(Debug, Default)]
/// struct Pins(Mutex<HashMap<(String, Option<u16>), Pin>>);
///
/// impl PinStore for Pins {
///     fn pin(&self, host: &str, port: Option<u16>) -> Option<Pin> {
///         self.0.lock().unwrap().get(&(host.to_string(), port)).cloned()
///     }
///     fn remember(&self, pin: Pin) -> std::io::Result<()> {
///         self.0.lock().unwrap().insert((pin.host.clone(), pin.port), pin);
///         Ok(())
///     }
/// }
///
/// let store = Arc::new(Pins::default());
/// let config = ClientConfigBuilder::new().tofu(Tofu::new(store).port(1965)).build().unwrap();
/// # let _ = config;
/// ```
pub trait PinStore: fmt::Debug + Send + Sync {
    /// The pin for `host` and `port` (`None`: the client did not say its
    /// port), if any.
    fn pin(&self, host: &str, port: Option<u16>) -> Option<Pin>;

    /// Remember `pin` in place of any for its host and port. An error is
    /// logged, and the certificate is trusted for that connection only.
    fn remember(&self, pin: Pin) -> io::Result<()>;
}

/// Told what was decided about each server's certificate (see
/// [`Tofu::on_decision`]).
type Report = dyn Fn(Result<&ServerCert, &CertificateChanged>) + Send + Sync;

/// How a client trusts on first use: the store, the port its connections
/// go to, whether a changed certificate is taken, and who hears of each
/// decision. Given to [`ClientConfigBuilder::tofu`](super::ClientConfigBuilder::tofu),
/// which also takes a store alone (`Arc<TofuStore>`, `Arc<KnownHosts>`).
///
/// A server is judged by the SHA-256 fingerprint of its certificate, for
/// its host name (compared without regard to case) and, when the client
/// says it, its port; names, issuers and dates are not checked (such
/// servers mostly use self-signed certificates):
///
/// - no pin for it: trusted, and remembered once the handshake signature
///   has proved that the server holds the certificate's key (a peer that
///   shows someone else's certificate is never remembered);
/// - the pinned fingerprint: trusted;
/// - another fingerprint: refused, naming both, unless the client was told
///   to trust a new certificate ([`Tofu::trust_new`]), or the pin has
///   expired and the new certificate is within its validity dates: a
///   server must replace an expired certificate, so that change is
///   expected. Either way the new certificate replaces the pin
///   ([`TrustDecision::Replaced`]).
///
/// The stores: [`KnownHosts`](super::KnownHosts) (by host and port, with
/// first-seen and expiry dates: the Gemini client's file),
/// [`TofuStore`](super::TofuStore) (one fingerprint per host name, a
/// `host fingerprint` file), or one of your own.
///
/// ```
/// use twistor_transports::tls::{ClientConfigBuilder, KnownHosts, Tofu, TrustDecision};
/// // A client for port 1965 of its servers, which says what it decided.
/// let tofu = Tofu::new(KnownHosts::in_memory())
///     .port(1965)
///     .on_decision(|outcome| match outcome {
///         Ok(cert) if cert.decision == TrustDecision::FirstUse => {
///             eprintln!("trusting {} on first use", cert.fingerprint)
///         }
///         Ok(_) => {}
///         Err(changed) => eprintln!("{changed}"),
///     });
/// let config = ClientConfigBuilder::new().tofu(tofu).build().unwrap();
/// # let _ = config;
/// ```
#[derive(Clone)]
pub struct Tofu {
    /// `None`: check nothing, remember nothing ([`Tofu::insecure`]).
    store: Option<Arc<dyn PinStore>>,
    port: Option<u16>,
    trust_new: bool,
    report: Option<Arc<Report>>,
}

impl fmt::Debug for Tofu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tofu")
            .field("store", &self.store)
            .field("port", &self.port)
            .field("trust_new", &self.trust_new)
            .field("report", &self.report.is_some())
            .finish()
    }
}

impl<S: PinStore + 'static> From<Arc<S>> for Tofu {
    fn from(store: Arc<S>) -> Tofu {
        Tofu::new(store)
    }
}

impl Tofu {
    /// Trust on first use, with pins kept in `store`; the port is not
    /// known (see [`port`](Self::port)) and a changed certificate is
    /// refused.
    pub fn new(store: Arc<dyn PinStore>) -> Tofu {
        Tofu {
            store: Some(store),
            port: None,
            trust_new: false,
            report: None,
        }
    }

    /// Check nothing and remember nothing: every certificate is taken,
    /// reported as [`TrustDecision::Unchecked`]. The handshake signature
    /// is still verified. For tests and emergencies (`twistor fetch
    /// --insecure`): anyone on the way can read and change the exchange.
    ///
    /// ```
    /// use twistor_transports::tls::{ClientConfigBuilder, Tofu};
    /// let config = ClientConfigBuilder::new().tofu(Tofu::insecure()).build().unwrap();
    /// # let _ = config;
    /// ```
    pub fn insecure() -> Tofu {
        Tofu {
            store: None,
            port: None,
            trust_new: false,
            report: None,
        }
    }

    /// The port the configuration's connections go to, so that a store
    /// that keys on ports ([`KnownHosts`](super::KnownHosts)) keeps each
    /// port of a host apart, as Gemini clients do. A configuration is
    /// then for that port only (rustls tells a verifier the server's name,
    /// not its port). Without it, pins are kept for the host whatever the
    /// port (under port 0 in a known-hosts file).
    pub fn port(mut self, port: u16) -> Tofu {
        self.port = Some(port);
        self
    }

    /// Take a certificate that differs from the pin, and remember it in
    /// the pin's place
    /// ([`Replacement::TrustNew`](super::Replacement::TrustNew)): for when
    /// the user says the server has a new certificate (`twistor fetch
    /// --trust-new`).
    ///
    /// ```
    /// use twistor_transports::tls::{ClientConfigBuilder, KnownHosts, Tofu};
    /// let store = KnownHosts::in_memory();
    /// let renewed = Tofu::new(store).port(1965).trust_new(true);
    /// let config = ClientConfigBuilder::new().tofu(renewed).build().unwrap();
    /// # let _ = config;
    /// ```
    pub fn trust_new(mut self, yes: bool) -> Tofu {
        self.trust_new = yes;
        self
    }

    /// Call `report` with each decision, as the certificate is judged
    /// (before its key is proven): the certificate and why it is trusted,
    /// or the refusal. Called from inside the handshake: keep it short.
    pub fn on_decision(
        mut self,
        report: impl Fn(Result<&ServerCert, &CertificateChanged>) + Send + Sync + 'static,
    ) -> Tofu {
        self.report = Some(Arc::new(report));
        self
    }

    /// Judge `offered`, shown by `host` (lowercase) at `now`.
    pub(crate) fn judge(
        &self,
        host: &str,
        offered: &Offered,
        now: SystemTime,
    ) -> Result<TrustDecision, Box<CertificateChanged>> {
        match &self.store {
            None => Ok(TrustDecision::Unchecked),
            Some(store) => {
                let known = store.pin(host, self.port);
                decide(known.as_ref(), offered, now, self.trust_new)
            }
        }
    }

    /// Tell the one who asked (if anyone) what was decided.
    pub(crate) fn report(&self, offered: &Offered, outcome: &Result<TrustDecision, Box<CertificateChanged>>) {
        let Some(report) = &self.report else {
            return;
        };
        match outcome {
            Ok(decision) => report(Ok(&offered.with(decision.clone()))),
            Err(changed) => report(Err(changed)),
        }
    }

    /// Remember `offered` for `host`, now that its key is proven (first
    /// seen `now`); a store that fails is logged, and the certificate is
    /// trusted for this connection only.
    pub(crate) fn remember(&self, host: &str, offered: &Offered, now: SystemTime) {
        let Some(store) = &self.store else {
            return;
        };
        let secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let pin = Pin {
            host: host.to_string(),
            port: self.port,
            fingerprint: offered.fingerprint.clone(),
            first_seen: Some(UNIX_EPOCH + Duration::from_secs(secs)),
            expires: Some(offered.not_after),
        };
        let server = pin.server();
        if let Err(e) = store.remember(pin) {
            log::warn!("{e}; the certificate of {server} is trusted for this connection only");
        }
    }
}
