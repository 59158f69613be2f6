//! Why a fetch failed: [`FetchError`], one clear sentence per cause.

use std::fmt;
use std::time::Duration;

use twistor_reactor::Reason;

use super::client_trust::CertificateChanged;

/// Why a fetch failed (every variant prints as one clear sentence).
///
/// ```
/// use twistor_protocols::gemini::FetchError;
/// let e = FetchError::Truncated { target: "example.org:1965".into(), received: 42 };
/// assert!(e.to_string().contains("without close_notify"));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum FetchError {
    /// The URL cannot be fetched (scheme, host, length...).
    BadUrl(String),
    /// The options cannot be used (an identity, a TLS configuration).
    Options(String),
    /// The connection could not be made (name lookup, refused, unreachable).
    Connect {
        /// `host:port`.
        target: String,
        /// Why.
        reason: Reason,
    },
    /// Name lookup and TCP connect took longer than the connect timeout.
    ConnectTimeout {
        /// `host:port`.
        target: String,
        /// The limit.
        after: Duration,
    },
    /// The TLS handshake took longer than the connect timeout.
    HandshakeTimeout {
        /// `host:port`.
        target: String,
        /// The limit.
        after: Duration,
    },
    /// The TLS handshake failed.
    Tls {
        /// `host:port`.
        target: String,
        /// Why (an alert, an unusable certificate...).
        message: String,
    },
    /// The server's certificate is not the one remembered (both are named).
    CertificateChanged(Box<CertificateChanged>),
    /// The whole fetch took longer than [`FetchOptions::timeout`](super::FetchOptions::timeout).
    Timeout {
        /// The limit.
        after: Duration,
    },
    /// The server's answer is not a valid Gemini response.
    BadResponse {
        /// `host:port`.
        target: String,
        /// What is wrong with it.
        message: String,
    },
    /// The body ended without TLS close_notify: it may be cut short.
    Truncated {
        /// `host:port`.
        target: String,
        /// Body bytes received.
        received: u64,
    },
    /// The connection failed during the exchange.
    Lost {
        /// `host:port`.
        target: String,
        /// Why.
        reason: Reason,
    },
    /// The body is larger than [`FetchOptions::max_body`](super::FetchOptions::max_body).
    BodyTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// Reading what is uploaded failed.
    Upload(String),
    /// A [`FetchHandler`](super::FetchHandler) refused the body or panicked.
    Handler(String),
    /// [`FetchHandle::cancel`](super::FetchHandle::cancel) was called.
    Cancelled,
    /// The reactor stopped (Ctrl-C, SIGTERM, `stop()`) before the fetch
    /// completed.
    Stopped,
}

fn secs(d: &Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::BadUrl(m) | FetchError::Options(m) => f.write_str(m),
            FetchError::Connect { target, reason } => match reason {
                Reason::ConnectionLost(e) => write!(f, "cannot connect to {target}: {e}"),
                Reason::Dns(m) => write!(f, "cannot connect to {target}: name lookup failed: {m}"),
                other => write!(f, "cannot connect to {target}: {other}"),
            },
            FetchError::ConnectTimeout { target, after } => {
                write!(
                    f,
                    "cannot connect to {target}: no connection within {}",
                    secs(after)
                )
            }
            FetchError::HandshakeTimeout { target, after } => write!(
                f,
                "{target}: the TLS handshake did not complete within {}",
                secs(after)
            ),
            FetchError::Tls { target, message } => write!(f, "{target}: TLS failed: {message}"),
            FetchError::CertificateChanged(c) => write!(f, "{c}"),
            FetchError::Timeout { after } => {
                write!(f, "the request did not complete within {}", secs(after))
            }
            FetchError::BadResponse { target, message } => {
                write!(f, "{target} sent an invalid response: {message}")
            }
            FetchError::Truncated { target, received } => write!(
                f,
                "{target} closed the connection without close_notify after {received} bytes of body: \
                 the body may be incomplete"
            ),
            FetchError::Lost { target, reason } => write!(f, "{target}: {reason}"),
            FetchError::BodyTooLarge { limit } => {
                write!(f, "the body is larger than the {limit}-byte limit")
            }
            FetchError::Upload(m) => write!(f, "the upload failed: {m}"),
            FetchError::Handler(m) => write!(f, "the response handler stopped the fetch: {m}"),
            FetchError::Cancelled => f.write_str("the fetch was cancelled"),
            FetchError::Stopped => f.write_str("the reactor stopped before the fetch completed"),
        }
    }
}

impl std::error::Error for FetchError {}
