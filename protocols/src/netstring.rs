//! Netstrings (D. J. Bernstein's `12:hello world!,`), Twisted's
//! `NetstringReceiver`.
//!
//! The length is decimal ASCII without leading zeros, then `:`, the payload
//! and `,`. An over-long length is caught while its digits are still
//! arriving, so a peer cannot make the receiver buffer more than the
//! maximum (default [`Netstring::DEFAULT_MAX_LENGTH`](crate::Framing::DEFAULT_MAX_LENGTH),
//! 99,999 bytes as in Twisted).

use twistor_reactor::Transport;

use crate::string::{Framing, Parse, StringReceiver, StringTooLong};

/// The netstring [`Framing`].
///
/// ```
/// use twistor_protocols::{Framing, Netstring, Parse};
/// assert_eq!(Netstring::parse(b"3:abc,", 10), Parse::Frame { start: 2, len: 3, end: 6 });
/// assert_eq!(Netstring::parse(b"3:ab", 10), Parse::Incomplete);
/// assert_eq!(Netstring::parse(b"11", 10), Parse::TooLong(11));
/// assert!(matches!(Netstring::parse(b"3:abc;", 10), Parse::Malformed(_)));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Netstring;

impl Framing for Netstring {
    const NAME: &'static str = "netstring";
    const DEFAULT_MAX_LENGTH: usize = 99_999;

    fn parse(buf: &[u8], max_length: usize) -> Parse {
        let mut n: u64 = 0;
        for (i, &b) in buf.iter().enumerate() {
            match b {
                b'0'..=b'9' => {
                    if i == 1 && buf[0] == b'0' {
                        return Parse::Malformed("length with a leading zero");
                    }
                    n = match n.checked_mul(10).and_then(|n| n.checked_add(u64::from(b - b'0'))) {
                        Some(n) => n,
                        None => return Parse::TooLong(u64::MAX),
                    };
                    if n > max_length as u64 {
                        return Parse::TooLong(n);
                    }
                }
                b':' if i > 0 => {
                    // n <= max_length, so it fits in usize.
                    let len = n as usize;
                    let start = i + 1;
                    let Some(end) = start.checked_add(len).and_then(|e| e.checked_add(1)) else {
                        return Parse::TooLong(n);
                    };
                    if buf.len() < end {
                        return Parse::Incomplete;
                    }
                    if buf[end - 1] != b',' {
                        return Parse::Malformed("missing ',' after the payload");
                    }
                    return Parse::Frame { start, len, end };
                }
                _ => return Parse::Malformed("bad length"),
            }
        }
        Parse::Incomplete
    }

    fn encode(t: &mut dyn Transport, s: &[u8]) -> Result<(), StringTooLong> {
        let len = s.len().to_string();
        t.write_sequence(&[len.as_bytes(), b":", s, b","]);
        Ok(())
    }
}

/// Twisted's `NetstringReceiver`: a [`StringReceiver`] with the
/// [`Netstring`] framing.
///
/// ```
/// use twistor_protocols::{NetstringReceiver, StringControl};
/// use twistor_reactor::{testing::StringTransport, Protocol, Reason};
///
/// let mut p = NetstringReceiver::new(|c: &mut StringControl<'_>, s: &[u8]| {
///     c.send_string(s).unwrap(); // echo
/// });
/// let mut t = StringTransport::new();
/// p.data_received(&mut t, b"5:hello,");
/// assert_eq!(t.value(), b"5:hello,");
/// p.data_received(&mut t, b"x:"); // not a length: closed with Reason::Limit
/// assert!(matches!(t.close_reason(), Some(Reason::Limit(_))));
/// ```
pub type NetstringReceiver<H> = StringReceiver<Netstring, H>;
