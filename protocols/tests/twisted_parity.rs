//! What a line-by-line port from `twisted.protocols.basic` relies on: the
//! framings checked against Twisted's documented behaviour, edge by edge
//! (exact limits, mode switches inside one chunk, pausing, malformed
//! headers, strings too long for their prefix).

use std::cell::RefCell;
use std::rc::Rc;

use twistor_protocols::{
    Int16StringReceiver, Int32StringReceiver, Int8StringReceiver, LineControl, LineHandler, LineReceiver,
    NetstringReceiver, StringControl, StringHandler,
};
use twistor_reactor::testing::StringTransport;
use twistor_reactor::{Protocol, Reason, Transport};

type Seen = Rc<RefCell<Vec<String>>>;

/// Records lines, raw data and over-long lines as strings.
struct Rec {
    seen: Seen,
}

impl LineHandler for Rec {
    fn line_received(&mut self, c: &mut LineControl<'_>, line: &[u8]) {
        let line = String::from_utf8_lossy(line).into_owned();
        self.seen.borrow_mut().push(format!("L:{line}"));
        match line.as_str() {
            "RAW" => c.set_raw_mode(),
            "PAUSE" => c.pause_reading(),
            "CLEAR" => c.clear_buffer(),
            _ => {}
        }
    }
    fn raw_data_received(&mut self, c: &mut LineControl<'_>, data: &[u8]) {
        let data = String::from_utf8_lossy(data).into_owned();
        // Raw up to "|", the rest goes back to line mode.
        match data.split_once('|') {
            Some((raw, rest)) => {
                self.seen.borrow_mut().push(format!("R:{raw}"));
                let at = data.len() - rest.len();
                let rest = data.as_bytes()[at..].to_vec();
                c.set_line_mode_with(&rest);
            }
            None => self.seen.borrow_mut().push(format!("R:{data}")),
        }
    }
    fn line_length_exceeded(&mut self, c: &mut LineControl<'_>, line: &[u8]) {
        self.seen.borrow_mut().push(format!("X:{}", line.len()));
        c.lose_connection_with(Reason::Limit("long".into()));
    }
}

fn rec(max: usize) -> (LineReceiver<Rec>, Seen) {
    let seen = Seen::default();
    (
        LineReceiver::new(Rec { seen: seen.clone() }).with_max_length(max),
        seen,
    )
}

fn take(seen: &Seen) -> Vec<String> {
    std::mem::take(&mut *seen.borrow_mut())
}

#[test]
fn a_line_of_exactly_max_length_is_a_line() {
    // Twisted: `if len(line) > self.MAX_LENGTH: lineLengthExceeded`.
    let (mut p, seen) = rec(4);
    let mut t = StringTransport::new();
    p.data_received(&mut t, b"abcd\r\n");
    assert_eq!(take(&seen), ["L:abcd"]);
    // Its delimiter split across reads: still a line.
    p.data_received(&mut t, b"efgh\r");
    p.data_received(&mut t, b"\n");
    assert_eq!(take(&seen), ["L:efgh"]);
    assert!(!t.disconnecting());
    // One byte more is over, whole or in pieces.
    p.data_received(&mut t, b"ijklm\r\n");
    assert_eq!(take(&seen), ["X:5"]);
    assert!(t.disconnecting());
    // In pieces, as in Twisted (`len(buffer) >= MAX_LENGTH + len(delimiter)`),
    // a partial line is over once it cannot be a full line plus the start
    // of a delimiter: MAX_LENGTH + 1 bytes may still be "line\r".
    let (mut p, seen) = rec(4);
    let mut t = StringTransport::new();
    for b in b"ijklm" {
        p.data_received(&mut t, &[*b]);
    }
    assert_eq!(take(&seen), Vec::<String>::new());
    p.data_received(&mut t, b"n");
    assert_eq!(take(&seen), ["X:5"]);
    assert!(t.disconnecting());
}

#[test]
fn raw_mode_from_a_line_in_the_middle_of_a_chunk() {
    // Several lines, a switch to raw inside line_received, raw bytes, a
    // hand-back with extra data holding more lines: each byte goes to the
    // handler that is current when it is reached.
    let (mut p, seen) = rec(100);
    let mut t = StringTransport::new();
    p.data_received(&mut t, b"one\r\nRAW\r\nr1\r\nr2|two\r\nRAW\r\nx|three\r\npart");
    assert_eq!(
        take(&seen),
        ["L:one", "L:RAW", "R:r1\r\nr2", "L:two", "L:RAW", "R:x", "L:three"]
    );
    assert_eq!(p.buffered(), b"part");
    p.data_received(&mut t, b"ial\r\n");
    assert_eq!(take(&seen), ["L:partial"]);
}

#[test]
fn no_line_is_delivered_while_paused_nor_after_a_close() {
    // Twisted's LineReceiver stops at `self.paused` and at
    // `transport.disconnecting`.
    let (mut p, seen) = rec(100);
    let mut t = StringTransport::new();
    p.data_received(&mut t, b"a\r\nPAUSE\r\nb\r\nRAW\r\nraw");
    assert_eq!(take(&seen), ["L:a", "L:PAUSE"]);
    p.data_received(&mut t, b"");
    assert_eq!(take(&seen), Vec::<String>::new());
    p.resume_reading(&mut t);
    assert_eq!(take(&seen), ["L:b", "L:RAW", "R:raw"]);
    let (mut p, seen) = rec(100);
    let mut t = StringTransport::new();
    p.with_handler(&mut t, |_, c| c.lose_connection());
    p.data_received(&mut t, b"late\r\n");
    assert_eq!(take(&seen), Vec::<String>::new());
}

#[test]
fn empty_lines_and_a_delimiter_split_across_reads() {
    let (mut p, seen) = rec(100);
    let mut t = StringTransport::new();
    p.data_received(&mut t, b"\r\n\r");
    p.data_received(&mut t, b"\n\r");
    p.data_received(&mut t, b"\nx");
    assert_eq!(take(&seen), ["L:", "L:", "L:"]);
    assert_eq!(p.buffered(), b"x");
}

#[test]
fn clear_buffer_drops_the_rest_of_the_chunk() {
    let (mut p, seen) = rec(100);
    let mut t = StringTransport::new();
    p.data_received(&mut t, b"CLEAR\r\nlost\r\nlost too");
    assert_eq!(take(&seen), ["L:CLEAR"]);
    assert!(p.buffered().is_empty());
    p.data_received(&mut t, b"kept\r\n");
    assert_eq!(take(&seen), ["L:kept"]);
}

#[test]
fn a_million_empty_lines_in_one_chunk() {
    let mut n = 0u32;
    let mut p = LineReceiver::new(move |c: &mut LineControl<'_>, line: &[u8]| {
        assert!(line.is_empty());
        n += 1;
        if n == 1_000_000 {
            c.send_line(b"done");
        }
    });
    let mut t = StringTransport::new();
    p.data_received(&mut t, &b"\r\n".repeat(1_000_000));
    assert_eq!(t.value(), b"done\r\n");
    assert!(p.buffered().is_empty());
}

#[test]
fn an_over_long_line_sent_slowly_is_never_buffered_past_the_limit() {
    struct Keep;
    impl LineHandler for Keep {
        fn line_received(&mut self, c: &mut LineControl<'_>, line: &[u8]) {
            c.send_line(line);
        }
        fn line_length_exceeded(&mut self, _: &mut LineControl<'_>, _: &[u8]) {}
    }
    let mut p = LineReceiver::new(Keep).with_max_length(1000);
    let mut t = StringTransport::new();
    for _ in 0..10_000 {
        p.data_received(&mut t, &[b'x'; 97]);
        assert!(
            p.buffered().len() <= 1001,
            "{} bytes buffered",
            p.buffered().len()
        );
    }
    p.data_received(&mut t, b"\r\nshort\r\n");
    assert_eq!(t.value(), b"short\r\n");
}

#[derive(Default)]
struct Strings {
    got: Vec<Vec<u8>>,
    too_long: Vec<u64>,
}

impl StringHandler for Strings {
    fn string_received(&mut self, _: &mut StringControl<'_>, s: &[u8]) {
        self.got.push(s.to_vec());
    }
    fn length_limit_exceeded(&mut self, c: &mut StringControl<'_>, length: u64) {
        self.too_long.push(length);
        c.lose_connection();
    }
}

#[test]
fn netstring_headers_as_twisted_reads_them() {
    let ok = |input: &[u8]| {
        let mut p = NetstringReceiver::new(Strings::default());
        let mut t = StringTransport::new();
        p.data_received(&mut t, input);
        (p.handler().got.clone(), t.disconnecting())
    };
    assert_eq!(ok(b"0:,5:hello,"), (vec![b"".to_vec(), b"hello".to_vec()], false));
    // Leading zero, no comma, a non-digit, no length: all refused and closed.
    for bad in [
        &b"05:hello,"[..],
        b"5:hello!",
        b"5a:hello,",
        b":,",
        b" 5:hello,",
        b"-1:,",
    ] {
        let (got, closed) = ok(bad);
        assert!(got.is_empty() && closed, "{:?}", String::from_utf8_lossy(bad));
    }
    // A length over the limit, or digits that never end, are refused at
    // once, before any payload is buffered.
    let mut p = NetstringReceiver::new(Strings::default()).with_max_length(1000);
    let mut t = StringTransport::new();
    p.data_received(&mut t, b"1001");
    assert_eq!(p.handler().too_long, [1001]);
    assert!(t.disconnecting());
    let mut p = NetstringReceiver::new(Strings::default());
    let mut t = StringTransport::new();
    for _ in 0..1000 {
        p.data_received(&mut t, b"9");
    }
    assert_eq!(p.handler().too_long.len(), 1);
    assert!(p.buffered().is_empty());
}

#[test]
fn int_n_limits_and_strings_too_long_for_the_prefix() {
    // Twisted: over MAX_LENGTH -> lengthLimitExceeded(length), which closes.
    let mut p = Int32StringReceiver::new(Strings::default()).with_max_length(10);
    let mut t = StringTransport::new();
    p.data_received(&mut t, &[0, 0]);
    p.data_received(&mut t, &[0, 11]);
    assert_eq!(p.handler().too_long, [11]);
    assert!(t.disconnecting());
    // Twisted's sendString raises StringTooLongError; here it is an Err
    // and nothing is written.
    let mut p = Int8StringReceiver::new(Strings::default());
    let mut t = StringTransport::new();
    let res = p.with_handler(&mut t, |_, c| {
        (c.send_string(&[1; 255]), c.send_string(&[1; 256]))
    });
    assert!(res.0.is_ok());
    assert_eq!(res.1.unwrap_err().len, 256);
    assert_eq!(t.value().len(), 256);
    let mut p = Int16StringReceiver::new(Strings::default());
    let mut t = StringTransport::new();
    let res = p.with_handler(&mut t, |_, c| c.send_string(&vec![0; 65_536]));
    assert!(res.is_err());
    assert!(t.value().is_empty());
}

/// Pauses reading after each string, as a consumer that is busy would.
#[derive(Default)]
struct OneAtATime(Vec<Vec<u8>>);

impl StringHandler for OneAtATime {
    fn string_received(&mut self, c: &mut StringControl<'_>, s: &[u8]) {
        self.0.push(s.to_vec());
        c.pause_reading();
    }
}

#[test]
fn strings_wait_while_reading_is_paused() {
    // Twisted's IntNStringReceiver loops `while ... and not self.paused`.
    let mut p = Int16StringReceiver::new(OneAtATime::default());
    let mut t = StringTransport::new();
    p.data_received(&mut t, b"\0\x01a\0\x01b\0\x02cd\0");
    assert_eq!(p.handler().0, [b"a".to_vec()]);
    assert_eq!(p.buffered(), b"\0\x01b\0\x02cd\0");
    p.resume_reading(&mut t);
    p.resume_reading(&mut t);
    assert_eq!(p.handler().0, [b"a".to_vec(), b"b".to_vec(), b"cd".to_vec()]);
    assert_eq!(p.buffered(), b"\0");
    p.resume_reading(&mut t);
    p.data_received(&mut t, b"\x01e");
    assert_eq!(p.handler().0.len(), 4);
}

/// After "BINARY", the connection speaks another protocol (it shouts back
/// what it gets). The bytes pipelined after that line go to it too.
struct Switcher;

struct Shout;

impl Protocol for Shout {
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        t.write(&data.to_ascii_uppercase());
    }
}

impl LineHandler for Switcher {
    fn line_received(&mut self, c: &mut LineControl<'_>, line: &[u8]) {
        if line == b"BINARY" {
            // Twisted: `rest = self.clearLineBuffer()`, then hand `rest`
            // to the next protocol. Here raw mode hands the rest over.
            c.set_raw_mode();
        } else {
            c.send_line(line);
        }
    }
    fn raw_data_received(&mut self, c: &mut LineControl<'_>, data: &[u8]) {
        let rest = data.to_vec();
        c.upgrade(Box::new(move |_old, t| {
            let mut next = Shout;
            next.data_received(t, &rest);
            Box::new(next)
        }));
    }
}

#[test]
fn switching_protocols_after_a_line_keeps_the_pipelined_bytes() {
    use twistor_reactor::testing::{MemoryPair, Recorder};
    let (client, log) = Recorder::new();
    let mut pair = MemoryPair::new(Box::new(client), Box::new(LineReceiver::new(Switcher))).unwrap();
    pair.pump();
    pair.with_client(|_, t| t.write(b"hello\r\nBINARY\r\nabc"));
    pair.with_client(|_, t| t.write(b"def\r\n"));
    assert_eq!(log.borrow().data, b"hello\r\nABCDEF\r\n");
}
