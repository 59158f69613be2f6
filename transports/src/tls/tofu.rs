//! Trust on first use, once for every TLS client of twistor's (a
//! [`ClientConfigBuilder::tofu`](super::ClientConfigBuilder::tofu) client,
//! the Gemini client, `twistor fetch`): what is remembered of a server (a
//! [`Pin`]), where it is kept (a [`PinStore`]), how a client is told to
//! use it ([`Tofu`]), and the one decision about the certificate a server
//! offers ([`TrustDecision`], or a refusal, [`CertificateChanged`]).
//!
//! The rules are on [`Tofu`].

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::utc::format_time;

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
    /// the pin's place ([`Replacement::TrustNew`]): for when the user says
    /// the server has a new certificate.
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

/// Why a pinned certificate was replaced by the one offered (see
/// [`TrustDecision`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replacement {
    /// The client was told to trust a new certificate ([`Tofu::trust_new`]).
    TrustNew,
    /// The pinned certificate expired at this time, and the new one is
    /// within its validity dates.
    Expired(SystemTime),
}

/// What trust on first use decided about a server's certificate.
///
/// ```
/// use twistor_transports::tls::{ServerCert, TrustDecision};
/// /// A line worth telling the user, if any.
/// fn note(cert: &ServerCert) -> Option<String> {
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
    /// It is the certificate pinned for this server.
    Known,
    /// The first one seen for this server: trusted, and remembered once
    /// its key is proven.
    FirstUse,
    /// It replaces the one pinned (whose fingerprint is `old`).
    Replaced {
        /// The fingerprint pinned before.
        old: String,
        /// Why it was replaced.
        why: Replacement,
    },
    /// Not checked ([`Tofu::insecure`]).
    Unchecked,
}

impl TrustDecision {
    /// Whether the certificate is to be remembered once its key is proven.
    pub(crate) fn remembers(&self) -> bool {
        matches!(self, TrustDecision::FirstUse | TrustDecision::Replaced { .. })
    }
}

/// The certificate a server showed, and what was decided about it (see
/// [`Tofu::on_decision`]).
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

/// A server showed another certificate than the one pinned for it, and it
/// was refused. Its message names the server and both fingerprints.
///
/// ```
/// use twistor_transports::tls::{ClientConfigBuilder, Tofu, TofuStore};
/// // Keep the refusal to show it to the user.
/// let last = std::sync::Arc::new(std::sync::Mutex::new(None));
/// let keep = last.clone();
/// let tofu = Tofu::new(TofuStore::in_memory()).on_decision(move |outcome| {
///     if let Err(changed) = outcome {
///         *keep.lock().unwrap() = Some((changed.trusted.fingerprint.clone(), changed.offered.clone()));
///     }
/// });
/// let config = ClientConfigBuilder::new().tofu(tofu).build().unwrap();
/// # let _ = config;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateChanged {
    /// The pin for the server.
    pub trusted: Pin,
    /// The fingerprint of the certificate offered now.
    pub offered: String,
    /// The end of the validity of the certificate offered now.
    pub offered_not_after: SystemTime,
}

impl fmt::Display for CertificateChanged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&changed_message(
            &self.trusted,
            &self.offered,
            Some(self.offered_not_after),
        ))
    }
}

impl std::error::Error for CertificateChanged {}

/// The words of a refusal: the server, the pinned fingerprint (and its
/// dates, when known), the offered one.
pub(crate) fn changed_message(trusted: &Pin, offered: &str, offered_not_after: Option<SystemTime>) -> String {
    let dates: Vec<String> = [
        trusted
            .first_seen
            .map(|t| format!("first seen {}", format_time(t))),
        trusted.expires.map(|t| format!("expires {}", format_time(t))),
    ]
    .into_iter()
    .flatten()
    .collect();
    let trusted_dates = if dates.is_empty() {
        String::new()
    } else {
        format!(" ({})", dates.join(", "))
    };
    let offered_dates = offered_not_after
        .map(|t| format!(" (expires {})", format_time(t)))
        .unwrap_or_default();
    format!(
        "the certificate of {} changed: trusted SHA-256 {}{trusted_dates}, offered SHA-256 \
         {offered}{offered_dates}; refused: this may be a new certificate, or another server in \
         the way",
        trusted.server(),
        trusted.fingerprint,
    )
}

/// The facts of an offered certificate the decision needs.
#[derive(Debug, Clone)]
pub(crate) struct Offered {
    pub fingerprint: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub subject_cn: Option<String>,
}

impl Offered {
    fn with(&self, decision: TrustDecision) -> ServerCert {
        ServerCert {
            fingerprint: self.fingerprint.clone(),
            not_before: self.not_before,
            not_after: self.not_after,
            subject_cn: self.subject_cn.clone(),
            decision,
        }
    }
}

/// Decide about `offered`, shown by a server that has the pin `known` (or
/// none), at `now`; `trust_new` takes a changed certificate.
pub(crate) fn decide(
    known: Option<&Pin>,
    offered: &Offered,
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
    match known.expires {
        Some(expired) if known.is_expired(now) && offered_valid => Ok(TrustDecision::Replaced {
            old,
            why: Replacement::Expired(expired),
        }),
        _ => Err(Box::new(CertificateChanged {
            trusted: known.clone(),
            offered: offered.fingerprint.clone(),
            offered_not_after: offered.not_after,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn known(fp: &str, expires: Option<u64>) -> Pin {
        Pin {
            host: "example.org".into(),
            port: Some(1965),
            fingerprint: fp.repeat(32),
            first_seen: Some(at(0)),
            expires: expires.map(at),
        }
    }

    fn offered(fp: &str, from: u64, until: u64) -> Offered {
        Offered {
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
        let k = known("aa", Some(2000));
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
        assert!(
            text.starts_with("the certificate of example.org:1965 changed: "),
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
        let old = known("aa", Some(500));
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
        // A pin without dates never expires.
        let dateless = known("aa", None);
        assert!(decide(Some(&dateless), &offered("bb", 900, 3000), now, false).is_err());
    }

    #[test]
    fn a_refusal_names_what_is_known() {
        let mut pin = known("aa", None);
        pin.first_seen = None;
        pin.port = None;
        let text = changed_message(&pin, &"bb".repeat(32), None);
        assert_eq!(
            text,
            format!(
                "the certificate of example.org changed: trusted SHA-256 {}, offered SHA-256 {}; \
                 refused: this may be a new certificate, or another server in the way",
                "aa".repeat(32),
                "bb".repeat(32)
            )
        );
        pin.host = "::1".into();
        pin.port = Some(1965);
        pin.expires = Some(at(86_400));
        let text = changed_message(&pin, &"bb".repeat(32), Some(at(0)));
        assert!(
            text.starts_with(&format!(
                "the certificate of [::1]:1965 changed: trusted SHA-256 {} (expires \
                 1970-01-02T00:00:00Z), offered SHA-256 {} (expires 1970-01-01T00:00:00Z); ",
                "aa".repeat(32),
                "bb".repeat(32)
            )),
            "{text}"
        );
    }
}
