//! The PROXY protocol header as bytes: one parser for version 1 (a text
//! line) and version 2 (binary), pure, that never panics on any input and
//! never looks past the end of the header.
//!
//! The parser is given the bytes received so far from the start of the
//! connection and says one of four things: not enough bytes yet, not a
//! PROXY header at all, a malformed header, or a whole header and its
//! length on the wire. Its answer for a prefix of the input is final as
//! soon as it is not "not enough yet": more bytes never change it. That is
//! what lets the listener peek at the socket again as bytes arrive and
//! take exactly the header's bytes out of it, leaving the application's
//! first bytes where they were.

use std::ffi::OsStr;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use twistor_reactor::Address;

use crate::addr::unmap;

/// The longest version-1 header, its CRLF included: the specification's
/// bound (a `TCP6` line with the longest addresses and ports).
pub const V1_MAX_LEN: usize = 107;

/// The 12 bytes that open every version-2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// What opens every version-1 header.
const V1_PREFIX: &[u8] = b"PROXY ";

/// Signature, version and command, family and transport, length.
const V2_FIXED_LEN: usize = 16;

/// The size of one Unix address in a version-2 header (`sun_path`).
const V2_UNIX_LEN: usize = 108;

/// A whole PROXY header.
///
/// ```
/// use twistor_transports::proxy::{parse_header, Origin, Parsed};
/// let bytes = b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\nGET / HTTP/1.0\r\n";
/// let Ok(Parsed::Header(h)) = parse_header(bytes, 4096) else { panic!() };
/// assert_eq!((h.version, h.len), (1, 44));
/// let Origin::Client { source, destination } = h.origin else { panic!() };
/// assert_eq!(source.to_string(), "203.0.113.7:56324");
/// assert_eq!(destination.to_string(), "192.0.2.1:443");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHeader {
    /// 1 (the text line) or 2 (binary).
    pub version: u8,
    /// The header's length on the wire, in bytes: what the listener takes
    /// out of the connection before the application reads.
    pub len: usize,
    /// What the header says of the connection it opens.
    pub origin: Origin,
}

/// Whom a PROXY header says the connection is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The proxy relays a client: `source` is the client's address and
    /// `destination` the address the client connected to (the proxy's).
    /// IPv4-mapped IPv6 addresses are given as IPv4, as the listener gives
    /// its own peers.
    Client {
        /// The client.
        source: Address,
        /// Where the client connected to.
        destination: Address,
    },
    /// The proxy does not know (version 1 `UNKNOWN`, version 2 with an
    /// unspecified family): the connection's own addresses stand.
    Unknown,
    /// The proxy's own connection, a health check for instance (version 2
    /// `LOCAL`): the connection's own addresses stand.
    Local,
}

/// What the first bytes of a connection hold, as far as they go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// The bytes so far begin a PROXY header, or are too few to tell:
    /// wait for more.
    Incomplete,
    /// The bytes do not begin a PROXY header of either version.
    Absent,
    /// A whole header.
    Header(ProxyHeader),
}

/// Why bytes that begin as a PROXY header are not a valid one.
///
/// ```
/// use twistor_transports::proxy::{parse_header, ProxyError};
/// let err = parse_header(b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n", 4096).unwrap_err();
/// assert_eq!(err, ProxyError::BadLine("a port is not a number from 0 to 65535"));
/// assert!(err.to_string().contains("port"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyError {
    /// Longer than allowed: version 1 has no CRLF within its 107 bytes,
    /// or a version-2 header is longer than the configured maximum.
    TooLong {
        /// The bound, in bytes.
        limit: usize,
    },
    /// A version-1 line that does not follow the grammar.
    BadLine(&'static str),
    /// A version-2 header whose version is not 2 (the byte given).
    BadVersion(u8),
    /// A version-2 command that is neither LOCAL nor PROXY (the byte given).
    BadCommand(u8),
    /// A version-2 family and transport byte the specification does not
    /// define.
    BadFamily(u8),
    /// A version-2 header too short for the addresses its family needs.
    ShortAddresses {
        /// The length the header gives (after its 16 fixed bytes).
        len: usize,
        /// The length the family's addresses need.
        need: usize,
    },
    /// A version-2 TLV that overruns the header.
    BadTlv,
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::TooLong { limit } => write!(f, "PROXY header longer than {limit} bytes"),
            ProxyError::BadLine(why) => write!(f, "bad PROXY v1 line: {why}"),
            ProxyError::BadVersion(b) => write!(f, "PROXY v2 header with version {}", b >> 4),
            ProxyError::BadCommand(b) => write!(f, "PROXY v2 header with command {}", b & 0x0f),
            ProxyError::BadFamily(b) => write!(f, "PROXY v2 header with family/transport {b:#04x}"),
            ProxyError::ShortAddresses { len, need } => write!(
                f,
                "PROXY v2 header of {len} bytes where its addresses need {need}"
            ),
            ProxyError::BadTlv => f.write_str("PROXY v2 header with a TLV that overruns it"),
        }
    }
}

impl std::error::Error for ProxyError {}

/// Parse the start of a connection as a PROXY header of version 1 or 2.
///
/// `buf` is every byte received so far, from the first; `max_len` bounds
/// a version-2 header, its 16 fixed bytes included (a version-1 line is
/// bounded by the specification: [`V1_MAX_LEN`]). The answer is final
/// once it is not [`Parsed::Incomplete`]: more bytes never change it.
/// Never panics, whatever the bytes.
///
/// ```
/// use twistor_transports::proxy::{parse_header, Parsed, V2_SIGNATURE};
/// assert_eq!(parse_header(b"PROXY TCP4 1.2", 4096), Ok(Parsed::Incomplete));
/// assert_eq!(parse_header(b"GET / HTTP/1.1\r\n", 4096), Ok(Parsed::Absent));
/// // Version 2, LOCAL command (a health check from the proxy itself).
/// let mut local = V2_SIGNATURE.to_vec();
/// local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
/// let Ok(Parsed::Header(h)) = parse_header(&local, 4096) else { panic!() };
/// assert_eq!((h.version, h.len), (2, 16));
/// ```
pub fn parse_header(buf: &[u8], max_len: usize) -> Result<Parsed, ProxyError> {
    if buf.is_empty() {
        Ok(Parsed::Incomplete)
    } else if starts_like(buf, V1_PREFIX) {
        parse_v1(buf)
    } else if starts_like(buf, &V2_SIGNATURE) {
        parse_v2(buf, max_len)
    } else {
        Ok(Parsed::Absent)
    }
}

/// Whether `buf` and `sig` agree as far as both go.
fn starts_like(buf: &[u8], sig: &[u8]) -> bool {
    let n = buf.len().min(sig.len());
    buf[..n] == sig[..n]
}

// ----- version 1 -------------------------------------------------------------

/// `PROXY TCP4|TCP6 src dst sport dport\r\n` or `PROXY UNKNOWN ...\r\n`.
fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    // Find the CRLF within the bound, judging each byte only on bytes
    // within the window, so a longer input never changes the verdict.
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let mut end = None;
    for (i, &b) in window.iter().enumerate() {
        match b {
            b'\n' if i > 0 && window[i - 1] == b'\r' => {
                end = Some(i + 1);
                break;
            }
            b'\n' => return Err(ProxyError::BadLine("a line feed without a carriage return")),
            b'\r' => {
                if window.get(i + 1).is_some_and(|&n| n != b'\n') {
                    return Err(ProxyError::BadLine("a carriage return without a line feed"));
                }
            }
            0x20..=0x7e => {}
            _ => return Err(ProxyError::BadLine("a byte that is not printable ASCII")),
        }
    }
    let Some(end) = end else {
        return if buf.len() >= V1_MAX_LEN {
            Err(ProxyError::TooLong { limit: V1_MAX_LEN })
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    // Printable ASCII only, so this is UTF-8.
    let line = std::str::from_utf8(&buf[V1_PREFIX.len()..end - 2])
        .map_err(|_| ProxyError::BadLine("a byte that is not printable ASCII"))?;
    let origin = v1_origin(line)?;
    Ok(Parsed::Header(ProxyHeader {
        version: 1,
        len: end,
        origin,
    }))
}

/// The words after `PROXY `.
fn v1_origin(line: &str) -> Result<Origin, ProxyError> {
    let mut words = line.split(' ');
    let v6 = match words.next() {
        // Whatever follows UNKNOWN is to be ignored.
        Some("UNKNOWN") => return Ok(Origin::Unknown),
        Some("TCP4") => false,
        Some("TCP6") => true,
        _ => return Err(ProxyError::BadLine("the protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let mut next = || {
        words
            .next()
            .ok_or(ProxyError::BadLine("fewer than four fields after the protocol"))
    };
    let (src, dst, sport, dport) = (next()?, next()?, next()?, next()?);
    if words.next().is_some() {
        return Err(ProxyError::BadLine(
            "more than four fields after the protocol, or a space too many",
        ));
    }
    let ip = |s: &str| -> Result<std::net::IpAddr, ProxyError> {
        if v6 {
            s.parse::<Ipv6Addr>()
                .map(Into::into)
                .map_err(|_| ProxyError::BadLine("an address that is not IPv6 after TCP6"))
        } else {
            s.parse::<Ipv4Addr>()
                .map(Into::into)
                .map_err(|_| ProxyError::BadLine("an address that is not IPv4 after TCP4"))
        }
    };
    let source = SocketAddr::new(ip(src)?, v1_port(sport)?);
    let destination = SocketAddr::new(ip(dst)?, v1_port(dport)?);
    Ok(Origin::Client {
        source: Address::Inet(unmap(source)),
        destination: Address::Inet(unmap(destination)),
    })
}

/// A port: one to five decimal digits, at most 65535 (no sign, no space:
/// `u16::from_str` alone would take `+80`).
fn v1_port(s: &str) -> Result<u16, ProxyError> {
    const BAD: ProxyError = ProxyError::BadLine("a port is not a number from 0 to 65535");
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BAD);
    }
    s.parse::<u16>().map_err(|_| BAD)
}

// ----- version 2 -------------------------------------------------------------

/// The binary header: signature, version and command, family and
/// transport, a big-endian length, then addresses and TLVs.
fn parse_v2(buf: &[u8], max_len: usize) -> Result<Parsed, ProxyError> {
    let Some(fixed) = buf.get(..V2_FIXED_LEN) else {
        return Ok(Parsed::Incomplete);
    };
    let (ver_cmd, fam) = (fixed[12], fixed[13]);
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::BadVersion(ver_cmd));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(ProxyError::BadCommand(ver_cmd)),
    };
    // The only pairs the specification defines; any other is to be refused.
    if !matches!(fam, 0x00 | 0x11 | 0x12 | 0x21 | 0x22 | 0x31 | 0x32) {
        return Err(ProxyError::BadFamily(fam));
    }
    let len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    let total = V2_FIXED_LEN + len;
    if total > max_len {
        return Err(ProxyError::TooLong { limit: max_len });
    }
    let Some(body) = buf.get(V2_FIXED_LEN..total) else {
        return Ok(Parsed::Incomplete);
    };
    let origin = if local {
        // LOCAL: the address block (and the family) are to be ignored.
        Origin::Local
    } else {
        let (origin, used) = v2_addresses(fam, body)?;
        check_tlvs(&body[used..])?;
        origin
    };
    Ok(Parsed::Header(ProxyHeader {
        version: 2,
        len: total,
        origin,
    }))
}

/// The addresses of a PROXY command, and how many bytes of the block they
/// take (TLVs follow them).
fn v2_addresses(fam: u8, body: &[u8]) -> Result<(Origin, usize), ProxyError> {
    let need = match fam >> 4 {
        1 => 12,
        2 => 36,
        3 => 2 * V2_UNIX_LEN,
        // Unspecified: the whole block is to be ignored, TLVs included.
        _ => return Ok((Origin::Unknown, body.len())),
    };
    let Some(a) = body.get(..need) else {
        return Err(ProxyError::ShortAddresses {
            len: body.len(),
            need,
        });
    };
    let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
    let (source, destination) = match fam >> 4 {
        1 => {
            let ip = |at: usize| Ipv4Addr::new(a[at], a[at + 1], a[at + 2], a[at + 3]);
            (
                Address::Inet(SocketAddr::new(ip(0).into(), port(8))),
                Address::Inet(SocketAddr::new(ip(4).into(), port(10))),
            )
        }
        2 => {
            let ip = |at: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&a[at..at + 16]);
                Ipv6Addr::from(o)
            };
            (
                Address::Inet(unmap(SocketAddr::new(ip(0).into(), port(32)))),
                Address::Inet(unmap(SocketAddr::new(ip(16).into(), port(34)))),
            )
        }
        _ => (unix_address(&a[..V2_UNIX_LEN]), unix_address(&a[V2_UNIX_LEN..])),
    };
    Ok((Origin::Client { source, destination }, need))
}

/// A `sun_path`: a NUL-terminated path, or (a leading NUL) an abstract
/// name, padded with NULs.
fn unix_address(raw: &[u8]) -> Address {
    match raw.split_first() {
        Some((0, name)) => {
            let end = name.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            if end == 0 {
                Address::Unix(PathBuf::new())
            } else {
                Address::Abstract(name[..end].to_vec())
            }
        }
        _ => {
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            Address::Unix(PathBuf::from(OsStr::from_bytes(&raw[..end])))
        }
    }
}

/// TLVs (type, big-endian length, value) fill the rest exactly; their
/// contents are not needed here and are skipped.
fn check_tlvs(mut rest: &[u8]) -> Result<(), ProxyError> {
    while !rest.is_empty() {
        let Some(&[_, hi, lo]) = rest.get(..3) else {
            return Err(ProxyError::BadTlv);
        };
        let end = 3 + usize::from(u16::from_be_bytes([hi, lo]));
        rest = rest.get(end..).ok_or(ProxyError::BadTlv)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(buf: &[u8]) -> ProxyHeader {
        match parse_header(buf, 4096) {
            Ok(Parsed::Header(h)) => h,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn client(s: &str, d: &str) -> Origin {
        Origin::Client {
            source: Address::Inet(s.parse().unwrap()),
            destination: Address::Inet(d.parse().unwrap()),
        }
    }

    fn v2(ver_cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut v = V2_SIGNATURE.to_vec();
        v.extend_from_slice(&[ver_cmd, fam]);
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn v1_tcp4_tcp6_unknown() {
        let h = header(b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nrest");
        assert_eq!((h.version, h.len), (1, 45));
        assert_eq!(h.origin, client("192.0.2.7:56324", "198.51.100.1:443"));
        let h = header(b"PROXY TCP6 2001:db8::7 2001:db8::1 1 65535\r\n");
        assert_eq!(h.origin, client("[2001:db8::7]:1", "[2001:db8::1]:65535"));
        // IPv4-mapped addresses come out as IPv4.
        let h = header(b"PROXY TCP6 ::ffff:192.0.2.7 ::1 80 81\r\n");
        assert_eq!(h.origin, client("192.0.2.7:80", "[::1]:81"));
        assert_eq!(header(b"PROXY UNKNOWN\r\n").origin, Origin::Unknown);
        let h = header(b"PROXY UNKNOWN ffff:f...f:ffff 1.2.3.4 0 0\r\nx");
        assert_eq!((h.origin, h.len), (Origin::Unknown, 43));
    }

    #[test]
    fn v1_longest_line_fits_and_one_more_byte_does_not() {
        let max6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let tcp6 = format!("PROXY TCP6 {max6} {max6} 65535 65535\r\n");
        assert_eq!(header(tcp6.as_bytes()).len, 104);
        // The specification's worst case: UNKNOWN with everything after it.
        let longest = format!("PROXY UNKNOWN {max6} {max6} 65535 65535\r\n");
        assert_eq!(longest.len(), V1_MAX_LEN);
        assert_eq!(header(longest.as_bytes()).len, V1_MAX_LEN);
        let long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX_LEN - 15));
        assert_eq!(long.len(), V1_MAX_LEN + 1);
        let err = parse_header(long.as_bytes(), 4096).unwrap_err();
        assert_eq!(err, ProxyError::TooLong { limit: V1_MAX_LEN });
        // Decided at the bound, before any CRLF could come.
        let err = parse_header(&long.as_bytes()[..V1_MAX_LEN], 4096).unwrap_err();
        assert_eq!(err, ProxyError::TooLong { limit: V1_MAX_LEN });
    }

    #[test]
    fn v1_malformed_lines() {
        let bad: &[&[u8]] = &[
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rx",
            b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 000001 2\r\n",
            b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY \r\n",
            b"PROXY UNKNOWNX\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.\xc3\xa9 1 2\r\n",
        ];
        for b in bad {
            assert!(
                matches!(parse_header(b, 4096), Err(ProxyError::BadLine(_))),
                "{:?} was taken",
                String::from_utf8_lossy(b)
            );
        }
    }

    #[test]
    fn incomplete_and_absent() {
        for p in ["P", "PROXY", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r"] {
            assert_eq!(parse_header(p.as_bytes(), 4096), Ok(Parsed::Incomplete), "{p:?}");
        }
        assert_eq!(parse_header(&V2_SIGNATURE[..5], 4096), Ok(Parsed::Incomplete));
        assert_eq!(parse_header(&V2_SIGNATURE, 4096), Ok(Parsed::Incomplete));
        for a in [
            "GET /",
            "PROXX",
            "proxy ",
            "\x16\x03\x01",
            "\r\n\r\n\x00\r\nQUIT\r",
        ] {
            assert_eq!(parse_header(a.as_bytes(), 4096), Ok(Parsed::Absent), "{a:?}");
        }
    }

    #[test]
    fn v2_inet_inet6_unix_local_unspec() {
        let mut body = vec![192, 0, 2, 7, 198, 51, 100, 1];
        body.extend_from_slice(&56324u16.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        let h = header(&v2(0x21, 0x11, &body));
        assert_eq!((h.version, h.len), (2, 28));
        assert_eq!(h.origin, client("192.0.2.7:56324", "198.51.100.1:443"));

        let mut body = "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        body.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        body.extend_from_slice(&[0, 80, 1, 187]);
        let h = header(&v2(0x21, 0x21, &body));
        assert_eq!(h.origin, client("[2001:db8::7]:80", "[2001:db8::1]:443"));

        let mut body = vec![0u8; 216];
        body[..9].copy_from_slice(b"/run/a.sk");
        body[108..113].copy_from_slice(b"\0name");
        let h = header(&v2(0x21, 0x31, &body));
        assert_eq!(
            h.origin,
            Origin::Client {
                source: Address::Unix("/run/a.sk".into()),
                destination: Address::Abstract(b"name".to_vec()),
            }
        );

        // LOCAL ignores whatever block follows; UNSPEC ignores its block.
        assert_eq!(header(&v2(0x20, 0x11, &[1, 2, 3])).origin, Origin::Local);
        assert_eq!(header(&v2(0x21, 0x00, &[9; 7])).origin, Origin::Unknown);
    }

    #[test]
    fn v2_tlvs_are_skipped_but_must_fit() {
        let mut body = vec![127, 0, 0, 1, 127, 0, 0, 2, 0, 1, 0, 2];
        body.extend_from_slice(&[0x01, 0, 2, b'h', b'2', 0x04, 0, 0]);
        let h = header(&v2(0x21, 0x11, &body));
        assert_eq!((h.len, h.origin), (16 + 20, client("127.0.0.1:1", "127.0.0.2:2")));
        for tail in [&[0x01][..], &[0x01, 0], &[0x01, 0, 3, 1, 2]] {
            let mut b = body[..12].to_vec();
            b.extend_from_slice(tail);
            assert_eq!(parse_header(&v2(0x21, 0x11, &b), 4096), Err(ProxyError::BadTlv));
        }
    }

    #[test]
    fn v2_malformed_headers() {
        let ok = [127, 0, 0, 1, 127, 0, 0, 2, 0, 1, 0, 2];
        assert_eq!(
            parse_header(&v2(0x11, 0x11, &ok), 4096),
            Err(ProxyError::BadVersion(0x11))
        );
        assert_eq!(
            parse_header(&v2(0x22, 0x11, &ok), 4096),
            Err(ProxyError::BadCommand(0x22))
        );
        for fam in [0x01, 0x10, 0x13, 0x41, 0xff] {
            assert_eq!(
                parse_header(&v2(0x21, fam, &ok), 4096),
                Err(ProxyError::BadFamily(fam))
            );
        }
        assert_eq!(
            parse_header(&v2(0x21, 0x21, &ok), 4096),
            Err(ProxyError::ShortAddresses { len: 12, need: 36 })
        );
        // The length is judged from the 16 fixed bytes, before the rest comes.
        let big = v2(0x21, 0x11, &[0; 300]);
        assert_eq!(
            parse_header(&big[..16], 200),
            Err(ProxyError::TooLong { limit: 200 })
        );
        assert!(matches!(parse_header(&big, 316), Ok(Parsed::Header(_))));
    }
}
