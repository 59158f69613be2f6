//! Why a connection ended: never a bare string.

use std::fmt;
use std::io;
use std::sync::Arc;

/// Why a connection (or a connection attempt) ended.
///
/// Twisted passes a `Failure` wrapping `ConnectionDone`, `ConnectionLost`,
/// and so on; twistor passes one of these. [`Reason::is_clean`] is true only
/// for an orderly close.
///
/// ```
/// use twistor_reactor::Reason;
/// assert!(Reason::ConnectionDone.is_clean());
/// assert!(!Reason::TimedOut.is_clean());
/// assert_eq!(Reason::Aborted.to_string(), "connection aborted");
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Reason {
    /// An orderly close by either side (EOF, `lose_connection`, close_notify).
    ConnectionDone,
    /// The connection was lost with an I/O error (reset, broken pipe,
    /// refused, unreachable...).
    ConnectionLost(Arc<io::Error>),
    /// `abort_connection` was called, or the reactor aborted it at the end of
    /// its shutdown deadline.
    Aborted,
    /// A timeout fired: connect, idle, handshake or shutdown.
    TimedOut,
    /// A host name could not be resolved.
    Dns(String),
    /// The TLS layer failed: an alert was sent or received, a certificate did
    /// not verify, or the peer closed without close_notify (truncation).
    Tls(String),
    /// A user callback panicked; the message is the panic payload.
    Panic(String),
    /// A limit was hit (line too long, too many connections...).
    Limit(String),
}

impl Reason {
    /// True for an orderly close.
    pub fn is_clean(&self) -> bool {
        matches!(self, Reason::ConnectionDone)
    }

    /// Wrap an I/O error. A timeout error becomes [`Reason::TimedOut`].
    pub fn from_io(e: io::Error) -> Reason {
        if e.kind() == io::ErrorKind::TimedOut {
            Reason::TimedOut
        } else {
            Reason::ConnectionLost(Arc::new(e))
        }
    }

    /// The I/O error kind, when this reason wraps an I/O error.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Reason::ConnectionLost(e) => Some(e.kind()),
            _ => None,
        }
    }
}

impl From<io::Error> for Reason {
    fn from(e: io::Error) -> Reason {
        Reason::from_io(e)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::ConnectionDone => f.write_str("connection closed cleanly"),
            Reason::ConnectionLost(e) => write!(f, "connection lost: {e}"),
            Reason::Aborted => f.write_str("connection aborted"),
            Reason::TimedOut => f.write_str("timed out"),
            Reason::Dns(m) => write!(f, "DNS lookup failed: {m}"),
            Reason::Tls(m) => write!(f, "TLS error: {m}"),
            Reason::Panic(m) => write!(f, "a callback panicked: {m}"),
            Reason::Limit(m) => write!(f, "limit exceeded: {m}"),
        }
    }
}

/// The message of a panic payload caught with `catch_unwind`, for logs
/// and [`Reason::Panic`].
///
/// ```
/// let p = std::panic::catch_unwind(|| panic!("boom")).unwrap_err();
/// assert_eq!(twistor_reactor::panic_message(&*p), "boom");
/// ```
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Run user code, catching a panic: the one place twistor does so.
///
/// Every boundary where the toolkit calls code it did not write (a protocol
/// callback, a factory, a timer, a hook) goes through this. A panic is
/// logged at error level as "`what` panicked: message" and comes back as
/// its message, for [`Reason::Panic`]; nothing is formatted unless it
/// panics.
///
/// ```
/// use twistor_reactor::catch_panic;
/// assert_eq!(catch_panic(format_args!("adding"), || 1 + 1), Ok(2));
/// let id = 7;
/// let err = catch_panic(format_args!("connection {id}: data_received"), || -> u32 { panic!("boom") });
/// assert_eq!(err, Err("boom".to_string()));
/// ```
#[inline]
pub fn catch_panic<R>(what: fmt::Arguments<'_>, f: impl FnOnce() -> R) -> Result<R, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => Ok(r),
        Err(p) => {
            let msg = panic_message(&*p);
            log::error!("{what} panicked: {msg}");
            Err(msg)
        }
    }
}
