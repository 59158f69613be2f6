//! Length-prefixed strings: a big-endian length of `N` bytes, then the
//! payload (Twisted's `Int8StringReceiver`, `Int16StringReceiver`,
//! `Int32StringReceiver`; one generic implementation, [`Prefixed<N>`]).

use twistor_reactor::Transport;

use crate::string::{Framing, Parse, StringReceiver, StringTooLong};

/// The length-prefix [`Framing`] with an `N`-byte big-endian prefix
/// (`N` from 1 to 8).
///
/// The default maximum length is 99,999 bytes as in Twisted, or less when
/// the prefix cannot express that much (255 for one byte).
///
/// ```
/// use twistor_protocols::{Framing, Parse, Prefixed};
/// assert_eq!(Prefixed::<2>::parse(b"\x00\x03abc", 10), Parse::Frame { start: 2, len: 3, end: 5 });
/// assert_eq!(Prefixed::<2>::parse(b"\x00", 10), Parse::Incomplete);
/// assert_eq!(Prefixed::<4>::parse(b"\x00\x01\x00\x00", 10), Parse::TooLong(65536));
/// assert_eq!(Prefixed::<1>::DEFAULT_MAX_LENGTH, 255);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Prefixed<const N: usize>;

impl<const N: usize> Prefixed<N> {
    const VALID: () = assert!(N >= 1 && N <= 8, "a length prefix has 1 to 8 bytes");

    /// The longest payload an `N`-byte prefix can express.
    pub const MAX_ENCODABLE: u64 = if N >= 8 { u64::MAX } else { (1u64 << (8 * N)) - 1 };
}

impl<const N: usize> Framing for Prefixed<N> {
    const NAME: &'static str = "length-prefixed string";
    const DEFAULT_MAX_LENGTH: usize = if Self::MAX_ENCODABLE < 99_999 {
        Self::MAX_ENCODABLE as usize
    } else {
        99_999
    };

    fn parse(buf: &[u8], max_length: usize) -> Parse {
        #[allow(clippy::let_unit_value)]
        let () = Self::VALID;
        if buf.len() < N {
            return Parse::Incomplete;
        }
        let len = buf[..N].iter().fold(0u64, |n, &b| (n << 8) | u64::from(b));
        if len > max_length as u64 {
            return Parse::TooLong(len);
        }
        // len <= max_length, so it fits in usize; the end may not (an
        // 8-byte prefix with no limit).
        let Some(end) = N.checked_add(len as usize) else {
            return Parse::TooLong(len);
        };
        let len = len as usize;
        if buf.len() < end {
            return Parse::Incomplete;
        }
        Parse::Frame { start: N, len, end }
    }

    fn encode(t: &mut dyn Transport, s: &[u8]) -> Result<(), StringTooLong> {
        #[allow(clippy::let_unit_value)]
        let () = Self::VALID;
        let len = s.len() as u64;
        if len > Self::MAX_ENCODABLE {
            return Err(StringTooLong {
                len: s.len(),
                max: Self::MAX_ENCODABLE,
            });
        }
        let prefix = len.to_be_bytes();
        t.write_sequence(&[&prefix[8 - N..], s]);
        Ok(())
    }
}

/// Twisted's `Int8StringReceiver`: a 1-byte length prefix.
///
/// ```
/// use twistor_protocols::{Int8StringReceiver, StringControl};
/// use twistor_reactor::{testing::StringTransport, Protocol};
/// let mut p = Int8StringReceiver::new(|c: &mut StringControl<'_>, s: &[u8]| {
///     assert!(c.send_string(&[0u8; 256]).is_err()); // does not fit one byte
///     c.send_string(s).unwrap();
/// });
/// let mut t = StringTransport::new();
/// p.data_received(&mut t, b"\x02hi");
/// assert_eq!(t.value(), b"\x02hi");
/// ```
pub type Int8StringReceiver<H> = StringReceiver<Prefixed<1>, H>;

/// Twisted's `Int16StringReceiver`: a 2-byte big-endian length prefix.
///
/// ```
/// use twistor_protocols::{Int16StringReceiver, StringControl};
/// use twistor_reactor::{testing::StringTransport, Protocol};
/// let mut p = Int16StringReceiver::new(|c: &mut StringControl<'_>, s: &[u8]| {
///     c.send_string(s).unwrap();
/// });
/// let mut t = StringTransport::new();
/// p.data_received(&mut t, b"\x00\x02hi");
/// assert_eq!(t.value(), b"\x00\x02hi");
/// ```
pub type Int16StringReceiver<H> = StringReceiver<Prefixed<2>, H>;

/// Twisted's `Int32StringReceiver`: a 4-byte big-endian length prefix.
///
/// ```
/// use twistor_protocols::{Int32StringReceiver, StringControl};
/// use twistor_reactor::{testing::StringTransport, Protocol};
/// let mut p = Int32StringReceiver::new(|c: &mut StringControl<'_>, s: &[u8]| {
///     c.send_string(s).unwrap();
/// });
/// let mut t = StringTransport::new();
/// p.data_received(&mut t, b"\0\0\0\x02hi");
/// assert_eq!(t.value(), b"\0\0\0\x02hi");
/// ```
pub type Int32StringReceiver<H> = StringReceiver<Prefixed<4>, H>;
