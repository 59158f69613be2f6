//! [`IpNet`]: an IP network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`,
//! or one address), which is how a listener names the proxies it trusts
//! to send a PROXY header.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IP network: an address and a prefix length. Parsed from CIDR
/// notation; a bare address is a network of that one address.
///
/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, as a dual-stack socket
/// may report a client) is matched as the IPv4 address it stands for.
///
/// ```
/// use twistor_transports::proxy::IpNet;
/// let lan: IpNet = "10.0.0.0/8".parse().unwrap();
/// assert!(lan.contains("10.20.30.40".parse().unwrap()));
/// assert!(lan.contains("::ffff:10.0.0.1".parse().unwrap()));
/// assert!(!lan.contains("11.0.0.1".parse().unwrap()));
/// let one: IpNet = "::1".parse().unwrap();
/// assert_eq!(one.to_string(), "::1/128");
/// assert!("10.0.0.0/33".parse::<IpNet>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    /// The network address, host bits cleared.
    addr: IpAddr,
    prefix: u8,
}

/// Why a string is not an [`IpNet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadIpNet(String);

impl fmt::Display for BadIpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not an IP network (10.0.0.0/8, 2001:db8::/32 or one address): {:?}",
            self.0
        )
    }
}

impl std::error::Error for BadIpNet {}

impl IpNet {
    /// The network of `addr` with `prefix` leading bits (host bits are
    /// cleared); `None` if the prefix is longer than the address (32 bits
    /// for IPv4, 128 for IPv6).
    ///
    /// ```
    /// use twistor_transports::proxy::IpNet;
    /// let net = IpNet::new("192.0.2.77".parse().unwrap(), 24).unwrap();
    /// assert_eq!(net.to_string(), "192.0.2.0/24");
    /// assert!(IpNet::new("192.0.2.77".parse().unwrap(), 40).is_none());
    /// ```
    pub fn new(addr: IpAddr, prefix: u8) -> Option<IpNet> {
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & mask32(prefix)?).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & mask128(prefix)?).into()),
        };
        Some(IpNet { addr, prefix })
    }

    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask32(self.prefix).is_some_and(|m| u32::from(ip) & m == u32::from(net))
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask128(self.prefix).is_some_and(|m| u128::from(ip) & m == u128::from(net))
            }
            _ => false,
        }
    }
}

fn mask32(prefix: u8) -> Option<u32> {
    (prefix <= 32).then(|| u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0))
}

fn mask128(prefix: u8) -> Option<u128> {
    (prefix <= 128).then(|| u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0))
}

impl From<IpAddr> for IpNet {
    /// The network of this one address.
    fn from(addr: IpAddr) -> IpNet {
        let addr = addr.to_canonical();
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        IpNet { addr, prefix }
    }
}

impl FromStr for IpNet {
    type Err = BadIpNet;

    fn from_str(s: &str) -> Result<IpNet, BadIpNet> {
        let bad = || BadIpNet(s.to_string());
        match s.split_once('/') {
            None => s.parse::<IpAddr>().map(IpNet::from).map_err(|_| bad()),
            Some((addr, prefix)) => {
                let addr = addr.parse::<IpAddr>().map_err(|_| bad())?;
                if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let prefix = prefix.parse::<u8>().map_err(|_| bad())?;
                IpNet::new(addr, prefix).ok_or_else(bad)
            }
        }
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_from_zero_to_full() {
        assert!(net("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!net("0.0.0.0/0").contains(ip("::1")));
        assert!(net("::/0").contains(ip("2001:db8::1")));
        assert!(net("192.0.2.1").contains(ip("192.0.2.1")));
        assert!(!net("192.0.2.1").contains(ip("192.0.2.2")));
        assert!(net("192.0.2.128/25").contains(ip("192.0.2.255")));
        assert!(!net("192.0.2.128/25").contains(ip("192.0.2.127")));
        assert!(net("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(!net("2001:db8::/32").contains(ip("2001:db9::1")));
        assert_eq!(net("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(net("::ffff:10.0.0.1").to_string(), "10.0.0.1/32");
    }

    #[test]
    fn bad_networks_are_refused() {
        for s in [
            "",
            "/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x",
            "10.0.0.0/8/8",
        ] {
            assert!(s.parse::<IpNet>().is_err(), "{s:?} was taken");
        }
    }
}
