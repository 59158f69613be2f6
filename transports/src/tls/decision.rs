//! The one decision trust on first use makes about the certificate a
//! server offers, given the pin it has (or none): known, first use,
//! replaced (on request, or because the pin expired), or refused with a
//! message that names the server and both fingerprints.

use std::fmt;
use std::time::SystemTime;

use super::tofu::Pin;
use crate::utc::format_time;

/// Why a pinned certificate was replaced by the one offered (see
/// [`TrustDecision`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replacement {
    /// The client was told to trust a new certificate ([`Tofu::trust_new`](super::Tofu::trust_new)).
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
    /// Not checked ([`Tofu::insecure`](super::Tofu::insecure)).
    Unchecked,
}

impl TrustDecision {
    /// Whether the certificate is to be remembered once its key is proven.
    pub(crate) fn remembers(&self) -> bool {
        matches!(self, TrustDecision::FirstUse | TrustDecision::Replaced { .. })
    }
}

/// The certificate a server showed, and what was decided about it (see
/// [`Tofu::on_decision`](super::Tofu::on_decision)).
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
    pub(crate) fn with(&self, decision: TrustDecision) -> ServerCert {
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
    use std::time::{Duration, UNIX_EPOCH};

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
