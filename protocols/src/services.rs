//! The classic small services (Twisted's `twisted.protocols.wire`): Echo
//! (RFC 862), Discard (RFC 863), Chargen (RFC 864), Daytime (RFC 867) and
//! QOTD (RFC 865). Each is a few lines; any closure `|_: &Address| Echo` is
//! their factory.

use std::sync::OnceLock;
use std::time::SystemTime;

use twistor_reactor::{Protocol, Transport};
use twistor_transports::utc::{civil_from_days, days_and_seconds};

/// Sends back whatever it receives (RFC 862). When the peer does not read
/// and the write buffer passes its high-water mark, it stops reading until
/// the buffer drains, so a client that only sends cannot grow it without
/// bound.
///
/// ```
/// use twistor_protocols::Echo;
/// use twistor_reactor::{testing::StringTransport, Protocol};
/// let mut t = StringTransport::new();
/// Echo.data_received(&mut t, b"hello");
/// assert_eq!(t.value(), b"hello");
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl Protocol for Echo {
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        t.write(data);
    }
    fn pause_writing(&mut self, t: &mut dyn Transport) {
        t.pause_reading();
    }
    fn resume_writing(&mut self, t: &mut dyn Transport) {
        t.resume_reading();
    }
}

/// Reads and ignores everything (RFC 863).
///
/// ```
/// use twistor_protocols::Discard;
/// use twistor_reactor::{testing::StringTransport, Protocol};
/// let mut t = StringTransport::new();
/// Discard.data_received(&mut t, b"into the void");
/// assert!(t.value().is_empty());
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct Discard;

impl Protocol for Discard {
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
}

const CHARGEN_LINE: usize = 72;
const CHARGEN_CHARS: usize = 95; // b' '..=b'~'

/// One full cycle of RFC 864's pattern: 95 lines of 72 characters, each
/// line starting one character further along the printable ASCII set.
fn chargen_cycle() -> &'static [u8] {
    static CYCLE: OnceLock<Vec<u8>> = OnceLock::new();
    CYCLE.get_or_init(|| {
        let mut v = Vec::with_capacity(CHARGEN_CHARS * (CHARGEN_LINE + 2));
        for line in 0..CHARGEN_CHARS {
            for i in 0..CHARGEN_LINE {
                v.push(b' ' + ((line + i) % CHARGEN_CHARS) as u8);
            }
            v.extend_from_slice(b"\r\n");
        }
        v
    })
}

/// Sends RFC 864's rotating character pattern until the peer goes away,
/// and ignores input.
///
/// It honours flow control: it fills the write buffer just past its
/// high-water mark, stops at `pause_writing` and carries on at
/// `resume_writing`, so a slow reader costs at most one high-water mark of
/// memory (plus one write).
///
/// ```
/// use twistor_protocols::Chargen;
/// use twistor_reactor::{testing::StringTransport, Protocol};
/// let mut t = StringTransport::new();
/// let mut p = Chargen::default();
/// p.connection_made(&mut t);
/// assert!(t.value().starts_with(b" !\"#$%&'()*+,-./0123"));
/// assert_eq!(&t.value()[72..76], b"\r\n!\"");
/// ```
#[derive(Debug, Default)]
pub struct Chargen {
    /// Offset into the pattern's cycle.
    pos: usize,
    paused: bool,
    kick_pending: bool,
}

impl Chargen {
    /// Write until the buffer is past its high-water mark (or, on a
    /// transport that reports no buffer, one high-water mark's worth), then
    /// schedule another round unless paused.
    fn produce(&mut self, t: &mut dyn Transport) {
        if self.paused || t.is_closing() {
            return;
        }
        let cycle = chargen_cycle();
        let (high, _) = t.write_buffer_limits();
        let mut written = 0;
        while t.write_buffer_size() <= high && written <= high {
            let end = cycle.len().min(self.pos + 16 * 1024);
            t.write(&cycle[self.pos..end]);
            written += end - self.pos;
            self.pos = end % cycle.len();
        }
        // If the kernel takes all of it, no pause_writing will come: go on
        // from the reactor's queue (after this callback's flush).
        if !self.kick_pending {
            let id = t.id();
            let kicked = t.reactor().call_on(id, |p, t| {
                if let Some(c) = p.downcast_mut::<Chargen>() {
                    c.kick_pending = false;
                    c.produce(t);
                }
            });
            self.kick_pending = kicked.is_ok();
        }
    }
}

impl Protocol for Chargen {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.produce(t);
    }
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    fn pause_writing(&mut self, _: &mut dyn Transport) {
        self.paused = true;
    }
    fn resume_writing(&mut self, t: &mut dyn Transport) {
        self.paused = false;
        self.produce(t);
    }
}

/// Sends the current UTC date and time in `asctime` form
/// (`Wed Nov 25 16:48:19 2026\r\n`, as Twisted does), then closes (RFC 867).
///
/// ```
/// use twistor_protocols::Daytime;
/// use twistor_reactor::{testing::StringTransport, Protocol};
/// let mut t = StringTransport::new();
/// Daytime.connection_made(&mut t);
/// assert_eq!(t.value().len(), 26);
/// assert!(t.value().ends_with(b"\r\n"));
/// assert!(t.disconnecting());
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct Daytime;

impl Protocol for Daytime {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        let line = asctime(SystemTime::now());
        t.write_sequence(&[line.as_bytes(), b"\r\n"]);
        t.lose_connection();
    }
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
}

/// `time` in UTC, formatted as C's `asctime` (without the newline).
pub(crate) fn asctime(time: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (days, rem) = days_and_seconds(time);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        d,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        y
    )
}

/// Sends a quote, then closes (RFC 865). The default quote is Twisted's.
///
/// ```
/// use twistor_protocols::Qotd;
/// use twistor_reactor::{testing::StringTransport, Address, Protocol};
/// let mut t = StringTransport::new();
/// Qotd::new("Simple is better than complex.").connection_made(&mut t);
/// assert_eq!(t.value(), b"Simple is better than complex.\r\n");
/// assert!(t.disconnecting());
///
/// // A factory that hands every connection the same quote:
/// let quote = std::rc::Rc::<str>::from("Hello");
/// let _factory = move |_: &Address| Qotd::new(quote.clone());
/// ```
#[derive(Debug, Clone)]
pub struct Qotd {
    quote: std::rc::Rc<str>,
}

impl Qotd {
    /// Serve `quote` (`\r\n` is added unless it already ends a line).
    pub fn new(quote: impl Into<std::rc::Rc<str>>) -> Qotd {
        Qotd { quote: quote.into() }
    }
}

impl Default for Qotd {
    fn default() -> Self {
        Qotd::new("An apple a day keeps the doctor away.")
    }
}

impl Protocol for Qotd {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        t.write(self.quote.as_bytes());
        if !self.quote.ends_with('\n') {
            t.write(b"\r\n");
        }
        t.lose_connection();
    }
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn asctime_matches_c() {
        assert_eq!(
            asctime(UNIX_EPOCH - Duration::from_secs(1)),
            "Wed Dec 31 23:59:59 1969"
        );
        let at = |s| asctime(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "Thu Jan  1 00:00:00 1970");
        // date -u -d @1764089299
        assert_eq!(at(1_764_089_299), "Tue Nov 25 16:48:19 2025");
        assert_eq!(at(951_782_400), "Tue Feb 29 00:00:00 2000");
        assert_eq!(at(4_107_542_399), "Sun Feb 28 23:59:59 2100");
    }

    #[test]
    fn chargen_cycle_is_rfc_864() {
        let c = chargen_cycle();
        assert_eq!(c.len(), 95 * 74);
        assert!(
            c.starts_with(b" !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefg\r\n")
        );
        let last = &c[94 * 74..];
        assert!(last.starts_with(b"~ !\"#"));
    }
}
