//! The PROXY protocol knobs of a stream listener ([`ProxyOptions`]), their
//! defaults, and the one decision they make for each accepted connection:
//! read a header from it, serve it as it is, or close it.

use std::time::Duration;

use twistor_reactor::Address;

use super::header::V1_MAX_LEN;
use super::net::IpNet;

/// How long a connection has to deliver its whole PROXY header before it
/// is closed: 10 s. A proxy writes the header first thing, in the same
/// packet as the client's first bytes or just before, so this is ample
/// even for a loaded proxy, and it bounds how long a connection that
/// trickles a header (or sends nothing) holds a slot.
pub const DEFAULT_PROXY_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest version-2 header accepted, its 16 fixed bytes included:
/// 4 KiB, room for the addresses (at most 232 bytes, for Unix paths) and
/// the TLVs proxies add (ALPN, SNI, a unique id, TLS facts, a cloud
/// provider's endpoint id). Version 1 is bounded by the specification
/// ([`V1_MAX_LEN`](super::V1_MAX_LEN), 107 bytes).
pub const DEFAULT_MAX_PROXY_HEADER: usize = 4096;

/// Whether a listener reads a PROXY header before anything else.
///
/// ```
/// use twistor_transports::proxy::ProxyMode;
/// assert_eq!(ProxyMode::default(), ProxyMode::Off);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyMode {
    /// No header is read: the first bytes are the application's (the
    /// default).
    #[default]
    Off,
    /// Every connection from a trusted source must open with a header;
    /// one that does not (or whose header is malformed) is closed before
    /// its protocol is built. What the specification asks of a receiver.
    Required,
    /// A connection from a trusted source may open with a header: if its
    /// first bytes are not one, it is served with its own addresses. The
    /// listener has to guess from the first bytes, so it waits for them
    /// (up to the timeout): only for protocols whose client speaks first
    /// (TLS, HTTP, Gemini). Meant for a listener that both a proxy and
    /// clients reach, with the proxy's addresses in
    /// [`trusted`](ProxyOptions::trusted).
    Optional,
}

/// The PROXY protocol options of a stream listener (the
/// `proxy_protocol` field of [`ListenOptions`](crate::ListenOptions) and
/// [`UnixListenOptions`](crate::unix::UnixListenOptions)).
///
/// **Trust.** A header is the sender's word: whoever can send one can
/// claim any address, and so dodge rate limits and bans keyed on it and
/// write what they like in the logs. Make sure that only the proxy can
/// send one: list its addresses in [`trusted`](Self::trusted), or let no
/// one else reach the port (a firewall, a loopback or private address, a
/// Unix socket whose mode admits only the proxy). With `trusted` empty,
/// every source may send a header.
///
/// ```
/// use std::time::Duration;
/// use twistor_transports::proxy::{ProxyMode, ProxyOptions};
/// use twistor_transports::ListenOptions;
/// let opts = ListenOptions {
///     proxy_protocol: ProxyOptions {
///         trusted: vec!["10.0.0.0/8".parse().unwrap()],
///         timeout: Duration::from_secs(3),
///         ..ProxyOptions::required()
///     },
///     ..ListenOptions::default()
/// };
/// assert_eq!(opts.proxy_protocol.mode, ProxyMode::Required);
/// assert_eq!(ListenOptions::default().proxy_protocol.mode, ProxyMode::Off);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyOptions {
    /// Whether a header is read (default [`ProxyMode::Off`]).
    pub mode: ProxyMode,
    /// The sources allowed to send a header (default: empty, every
    /// source). When it is not empty, a connection from any other IP
    /// address is never read for a header: with
    /// [`Required`](ProxyMode::Required) it is closed at once, with
    /// [`Optional`](ProxyMode::Optional) it is served with its own
    /// addresses (a header it sends reaches the application as data). A
    /// Unix-domain peer has no IP address: who may connect to a Unix
    /// socket is the socket file's mode to decide, so it is always trusted.
    pub trusted: Vec<IpNet>,
    /// How long a connection has to deliver its whole header (default
    /// [`DEFAULT_PROXY_TIMEOUT`], 10 s); past it, it is closed.
    pub timeout: Duration,
    /// The largest version-2 header accepted, in bytes, its 16 fixed
    /// bytes included (default [`DEFAULT_MAX_PROXY_HEADER`], 4 KiB; at
    /// most [`READ_BUFFER_SIZE`](twistor_reactor::READ_BUFFER_SIZE),
    /// 64 KiB, which larger values stand for). A longer one is refused as
    /// soon as its length field arrives. Version 1 is bounded at 107 bytes
    /// by the specification.
    pub max_header_size: usize,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        ProxyOptions {
            mode: ProxyMode::Off,
            trusted: Vec::new(),
            timeout: DEFAULT_PROXY_TIMEOUT,
            max_header_size: DEFAULT_MAX_PROXY_HEADER,
        }
    }
}

impl ProxyOptions {
    /// Every connection opens with a header (from any source, until
    /// [`trusted`](Self::trusted) says otherwise), with the default limits.
    ///
    /// ```
    /// use twistor_transports::proxy::{ProxyMode, ProxyOptions};
    /// assert_eq!(ProxyOptions::required().mode, ProxyMode::Required);
    /// ```
    pub fn required() -> ProxyOptions {
        ProxyOptions {
            mode: ProxyMode::Required,
            ..ProxyOptions::default()
        }
    }

    /// A header is read when the first bytes are one, with the default
    /// limits. Set [`trusted`](Self::trusted) too: without it any client
    /// can claim any address.
    ///
    /// ```
    /// use twistor_transports::proxy::{ProxyMode, ProxyOptions};
    /// let opts = ProxyOptions { trusted: vec!["192.0.2.10".parse().unwrap()], ..ProxyOptions::optional() };
    /// assert_eq!(opts.mode, ProxyMode::Optional);
    /// ```
    pub fn optional() -> ProxyOptions {
        ProxyOptions {
            mode: ProxyMode::Optional,
            ..ProxyOptions::default()
        }
    }

    /// What to do with a connection from `peer`.
    pub(crate) fn admit(&self, peer: &Address) -> Admit {
        if self.mode == ProxyMode::Off {
            return Admit::Direct;
        }
        let trusted = self.trusted.is_empty()
            || match peer.ip() {
                Some(ip) => self.trusted.iter().any(|net| net.contains(ip)),
                None => true,
            };
        match (trusted, self.mode) {
            (true, _) => Admit::ReadHeader,
            (false, ProxyMode::Optional) => Admit::Direct,
            (false, _) => Admit::Refuse,
        }
    }

    /// The bound on a version-2 header as the parser takes it.
    pub(crate) fn v2_limit(&self) -> usize {
        self.max_header_size.min(twistor_reactor::READ_BUFFER_SIZE)
    }

    /// How many bytes to look at, at most, for a header of either version.
    pub(crate) fn peek_len(&self) -> usize {
        self.v2_limit().max(V1_MAX_LEN)
    }
}

/// The fate of one accepted connection under a listener's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Build its protocol now, with its own addresses.
    Direct,
    /// Read its header first.
    ReadHeader,
    /// Close it: it came from a source not trusted to send a header.
    Refuse,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> Address {
        Address::Inet(s.parse().unwrap())
    }

    #[test]
    fn who_is_read_served_or_refused() {
        let from_lan = peer("10.1.2.3:5000");
        let from_far = peer("203.0.113.9:5000");
        let unix = Address::Unix("".into());
        assert_eq!(ProxyOptions::default().admit(&from_lan), Admit::Direct);
        for mode in [ProxyOptions::required(), ProxyOptions::optional()] {
            assert_eq!(mode.admit(&from_far), Admit::ReadHeader);
        }
        let trusted = vec!["10.0.0.0/8".parse().unwrap()];
        let required = ProxyOptions {
            trusted: trusted.clone(),
            ..ProxyOptions::required()
        };
        assert_eq!(required.admit(&from_lan), Admit::ReadHeader);
        assert_eq!(required.admit(&from_far), Admit::Refuse);
        assert_eq!(required.admit(&unix), Admit::ReadHeader);
        let optional = ProxyOptions {
            trusted,
            ..ProxyOptions::optional()
        };
        assert_eq!(optional.admit(&from_lan), Admit::ReadHeader);
        assert_eq!(optional.admit(&from_far), Admit::Direct);
    }

    #[test]
    fn the_peek_bound_covers_v1_and_stays_within_the_read_buffer() {
        let with = |max_header_size| ProxyOptions {
            max_header_size,
            ..ProxyOptions::default()
        };
        assert_eq!(with(0).peek_len(), V1_MAX_LEN);
        assert_eq!(with(4096).peek_len(), 4096);
        assert_eq!(with(usize::MAX).peek_len(), twistor_reactor::READ_BUFFER_SIZE);
        assert_eq!(with(usize::MAX).v2_limit(), twistor_reactor::READ_BUFFER_SIZE);
        assert_eq!(with(20).v2_limit(), 20);
    }
}
