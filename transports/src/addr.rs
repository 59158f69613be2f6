//! Internet addresses as the transports take them: what a listener binds
//! ([`ListenAddr`]: a bare port means every interface, dual-stack), how an
//! address a dual-stack socket reports is shown ([`unmap`]), and how a
//! client finds a host's addresses ([`Resolver`]). TCP and UDP share these.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

/// What `listen_tcp` (and `listen_udp`) accept as an address.
///
/// - a bare port (`1234`): every interface, IPv6 and IPv4 (dual-stack), so
///   `telnet localhost 1234` works whether localhost is `::1` or `127.0.0.1`;
///   falls back to IPv4 only where IPv6 is unavailable;
/// - a socket address or a string such as `"127.0.0.1:0"` or `"[::1]:8080"`.
///
/// ```
/// use twistor_transports::ListenAddr;
/// assert_eq!(ListenAddr::from(1234u16).to_string(), "[::]:1234");
/// assert_eq!(ListenAddr::from("127.0.0.1:0").to_string(), "127.0.0.1:0");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// All interfaces, dual-stack.
    Port(u16),
    /// One address.
    Addr(SocketAddr),
    /// Not a valid address (reported when listening).
    Invalid(String),
}

impl From<u16> for ListenAddr {
    fn from(p: u16) -> Self {
        ListenAddr::Port(p)
    }
}
impl From<SocketAddr> for ListenAddr {
    fn from(a: SocketAddr) -> Self {
        ListenAddr::Addr(a)
    }
}
impl From<&str> for ListenAddr {
    fn from(s: &str) -> Self {
        match s.parse::<SocketAddr>() {
            Ok(a) => ListenAddr::Addr(a),
            Err(_) => match s.parse::<u16>() {
                Ok(p) => ListenAddr::Port(p),
                Err(_) => ListenAddr::Invalid(s.to_string()),
            },
        }
    }
}
impl From<String> for ListenAddr {
    fn from(s: String) -> Self {
        ListenAddr::from(s.as_str())
    }
}
impl From<(IpAddr, u16)> for ListenAddr {
    fn from((ip, p): (IpAddr, u16)) -> Self {
        ListenAddr::Addr(SocketAddr::new(ip, p))
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Port(p) => write!(f, "[::]:{p}"),
            ListenAddr::Addr(a) => write!(f, "{a}"),
            ListenAddr::Invalid(s) => write!(f, "{s}"),
        }
    }
}

impl ListenAddr {
    /// The addresses to try, in order, and whether the first is dual-stack.
    pub(crate) fn candidates(&self) -> io::Result<Vec<(SocketAddr, bool)>> {
        match self {
            ListenAddr::Port(p) => Ok(vec![
                (SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), *p), true),
                (SocketAddr::new(IpAddr::V4([0, 0, 0, 0].into()), *p), false),
            ]),
            ListenAddr::Addr(a) => Ok(vec![(*a, false)]),
            ListenAddr::Invalid(s) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a port or socket address: {s:?} (try \"127.0.0.1:1234\" or \"[::1]:1234\")"),
            )),
        }
    }
}

/// An IPv4-mapped IPv6 address (what a dual-stack socket reports for IPv4
/// peers) as the plain IPv4 address people expect to see.
///
/// ```
/// use std::net::SocketAddr;
/// use twistor_transports::addr::unmap;
/// let mapped: SocketAddr = "[::ffff:192.0.2.1]:80".parse().unwrap();
/// assert_eq!(unmap(mapped), "192.0.2.1:80".parse::<SocketAddr>().unwrap());
/// let v6: SocketAddr = "[::1]:80".parse().unwrap();
/// assert_eq!(unmap(v6), v6);
/// ```
pub fn unmap(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        a => a,
    }
}

/// Order a host's addresses for connecting, as RFC 8305 section 4 does:
/// keep the resolver's order within each family, but alternate families,
/// starting with the family of the first address, so that one broken
/// family cannot hold back every address of the other.
pub(crate) fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let Some(first) = addrs.first() else {
        return addrs;
    };
    let v6_first = first.is_ipv6();
    let (mut lead, mut other): (VecDeque<SocketAddr>, VecDeque<SocketAddr>) =
        addrs.iter().partition(|a| a.is_ipv6() == v6_first);
    let mut out = Vec::with_capacity(addrs.len());
    while !lead.is_empty() || !other.is_empty() {
        out.extend(lead.pop_front());
        out.extend(other.pop_front());
    }
    out
}

/// How `connect_tcp` turns a host name into addresses (Twisted's
/// `IHostnameResolver`). The default is the system's (`getaddrinfo`, which
/// also orders the addresses by RFC 6724's preferences); give another to
/// use your own table, a DNS client, or fixed answers in a test.
///
/// It runs on the reactor's thread pool, never on the loop, and only for
/// names: a literal address is connected to as it is.
///
/// ```
/// use std::net::SocketAddr;
/// use twistor_transports::addr::Resolver;
/// let fixed = Resolver::new(|host, port| match host {
///     "db.internal" => Ok(vec![SocketAddr::from(([10, 0, 0, 7], port))]),
///     _ => Err(std::io::Error::new(std::io::ErrorKind::NotFound, "unknown host")),
/// });
/// assert_eq!(fixed.resolve("db.internal", 5432).unwrap(), vec!["10.0.0.7:5432".parse().unwrap()]);
/// assert!(fixed.resolve("elsewhere", 80).is_err());
/// assert!(!Resolver::system().resolve("localhost", 80).unwrap().is_empty());
/// ```
#[derive(Clone)]
pub struct Resolver(Arc<ResolveFn>);

type ResolveFn = dyn Fn(&str, u16) -> io::Result<Vec<SocketAddr>> + Send + Sync;

impl Resolver {
    /// A resolver that calls `f(host, port)`.
    pub fn new(f: impl Fn(&str, u16) -> io::Result<Vec<SocketAddr>> + Send + Sync + 'static) -> Resolver {
        Resolver(Arc::new(f))
    }

    /// The system's resolver (`getaddrinfo`).
    pub fn system() -> Resolver {
        Resolver::new(|host, port| (host, port).to_socket_addrs().map(Iterator::collect))
    }

    /// Look `host` up (blocking).
    pub fn resolve(&self, host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        (self.0)(host, port)
    }
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::system()
    }
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn interleave_alternates_families_starting_with_the_first() {
        let got = interleave(addrs(&[
            "[::1]:1",
            "[::2]:1",
            "[::3]:1",
            "10.0.0.1:1",
            "10.0.0.2:1",
        ]));
        assert_eq!(
            got,
            addrs(&["[::1]:1", "10.0.0.1:1", "[::2]:1", "10.0.0.2:1", "[::3]:1"])
        );
        let got = interleave(addrs(&["10.0.0.1:1", "10.0.0.2:1", "[::1]:1"]));
        assert_eq!(got, addrs(&["10.0.0.1:1", "[::1]:1", "10.0.0.2:1"]));
        let one_family = addrs(&["10.0.0.2:1", "10.0.0.1:1"]);
        assert_eq!(interleave(one_family.clone()), one_family);
        assert!(interleave(Vec::new()).is_empty());
    }
}
