//! The knobs of a TLS layer and their defaults: how long a handshake and a
//! close may take, and how much written data may wait to be sent.

use std::time::Duration;

#[cfg(doc)]
use twistor_reactor::Reason;
use twistor_reactor::DEFAULT_MAX_WRITE_BUFFER;

/// How long a peer has to complete the handshake before the connection is
/// closed with [`Reason::TimedOut`]: 30 s, half of asyncio's 60 s. That is
/// plenty for a slow link, and cuts off a client that connects and sends
/// nothing or dribbles its ClientHello (slowloris) twice as fast.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a closing connection may take to flush its last bytes and its
/// close_notify before it is aborted with [`Reason::TimedOut`]: 30 s,
/// asyncio's value. It bounds what a peer that stops reading can hold.
pub const DEFAULT_TLS_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The knobs of one TLS layer.
///
/// ```
/// use std::time::Duration;
/// use twistor_transports::tls::TlsOptions;
/// let opts = TlsOptions {
///     handshake_timeout: Some(Duration::from_secs(5)),
///     ..TlsOptions::default()
/// };
/// assert_eq!(opts.shutdown_timeout, Some(twistor_transports::tls::DEFAULT_TLS_SHUTDOWN_TIMEOUT));
/// assert_eq!(opts.max_write_buffer, twistor_reactor::DEFAULT_MAX_WRITE_BUFFER);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsOptions {
    /// Limit on the handshake ([`DEFAULT_HANDSHAKE_TIMEOUT`]); `None` for none.
    pub handshake_timeout: Option<Duration>,
    /// Limit on closing ([`DEFAULT_TLS_SHUTDOWN_TIMEOUT`]); `None` for none.
    pub shutdown_timeout: Option<Duration>,
    /// Hard cap on what the application has written and the connection has
    /// not sent yet: plaintext held while the handshake is in progress plus
    /// what waits in the transport below. A write that would go past it
    /// ends the connection with [`Reason::Limit`] (and a log line), even
    /// for a protocol that ignores `pause_writing`. The default is the
    /// stream transports' own cap,
    /// [`DEFAULT_MAX_WRITE_BUFFER`](twistor_reactor::DEFAULT_MAX_WRITE_BUFFER)
    /// (16 MiB); the water marks that raise `pause_writing` are the
    /// transport's (`set_write_buffer_limits`).
    pub max_write_buffer: usize,
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
            shutdown_timeout: Some(DEFAULT_TLS_SHUTDOWN_TIMEOUT),
            max_write_buffer: DEFAULT_MAX_WRITE_BUFFER,
        }
    }
}
