//! Addresses of both ends of a transport, whatever the transport is.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// One end of a transport: an IP socket address, a Unix socket path, a
/// process, or a named in-memory end.
///
/// ```
/// use twistor_reactor::Address;
/// let a: Address = "127.0.0.1:1234".parse::<std::net::SocketAddr>().unwrap().into();
/// assert_eq!(a.to_string(), "127.0.0.1:1234");
/// assert_eq!(a.ip().unwrap().to_string(), "127.0.0.1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Address {
    /// A TCP or UDP address.
    Inet(SocketAddr),
    /// A Unix-domain socket path (empty for an unnamed socket).
    Unix(PathBuf),
    /// A Linux abstract-namespace Unix socket name (without the leading NUL).
    Abstract(Vec<u8>),
    /// A child process, by pid.
    Process(u32),
    /// An in-memory end (testing helpers), by name.
    Memory(String),
    /// Not known.
    Unknown,
}

impl Address {
    /// The socket address, for IP transports.
    pub fn inet(&self) -> Option<SocketAddr> {
        match self {
            Address::Inet(a) => Some(*a),
            _ => None,
        }
    }

    /// The IP address, for IP transports (what rate limiters key on).
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.inet().map(|a| a.ip())
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Address {
        Address::Inet(a)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Inet(a) => write!(f, "{a}"),
            Address::Unix(p) if p.as_os_str().is_empty() => f.write_str("unix:(unnamed)"),
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
            Address::Abstract(n) => write!(f, "unix:@{}", String::from_utf8_lossy(n)),
            Address::Process(pid) => write!(f, "process:{pid}"),
            Address::Memory(n) => write!(f, "memory:{n}"),
            Address::Unknown => f.write_str("unknown"),
        }
    }
}
