//! LineReceiver: framing under any chunking, limits, raw/line mode
//! hand-over, pausing, closing, discarding buffered input (STARTTLS).

use std::cell::RefCell;
use std::rc::Rc;

use proptest::prelude::*;
use twistor_protocols::{LineControl, LineHandler, LineReceiver};
use twistor_reactor::testing::{MemoryPair, Recorder, StringTransport};
use twistor_reactor::{Protocol, Reason, Transport};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Line(Vec<u8>),
    Raw(Vec<u8>),
    TooLong(Vec<u8>),
}

/// Records every callback. "RAW n" switches to raw mode for n bytes, then
/// hands the rest back to line mode. Over-long lines are recorded, and the
/// connection closed only if `close_on_long`.
#[derive(Default)]
struct Log {
    ev: Vec<Ev>,
    raw_left: usize,
    close_on_long: bool,
    lost: Vec<Reason>,
}

impl LineHandler for Log {
    fn line_received(&mut self, c: &mut LineControl<'_>, line: &[u8]) {
        self.ev.push(Ev::Line(line.to_vec()));
        if let Some(n) = line.strip_prefix(b"RAW ") {
            self.raw_left = std::str::from_utf8(n).unwrap().parse().unwrap();
            if self.raw_left > 0 {
                c.set_raw_mode();
            }
        }
    }
    fn raw_data_received(&mut self, c: &mut LineControl<'_>, data: &[u8]) {
        let (mine, rest) = data.split_at(self.raw_left.min(data.len()));
        self.raw_left -= mine.len();
        // Coalesce raw runs so that the events do not depend on chunking.
        match self.ev.last_mut() {
            Some(Ev::Raw(v)) => v.extend_from_slice(mine),
            _ => self.ev.push(Ev::Raw(mine.to_vec())),
        }
        if self.raw_left == 0 {
            c.set_line_mode_with(rest);
        }
    }
    fn line_length_exceeded(&mut self, c: &mut LineControl<'_>, line: &[u8]) {
        self.ev.push(Ev::TooLong(line.to_vec()));
        if self.close_on_long {
            c.lose_connection_with(Reason::Limit("test".into()));
        }
    }
    fn connection_lost(&mut self, _: &mut LineControl<'_>, reason: &Reason) {
        self.lost.push(reason.clone());
    }
}

fn feed<H: LineHandler>(p: &mut LineReceiver<H>, t: &mut StringTransport, data: &[u8], sizes: &[usize]) {
    let mut pos = 0;
    let mut i = 0;
    while pos < data.len() {
        let n = sizes[i % sizes.len()].max(1).min(data.len() - pos);
        p.data_received(t, &data[pos..pos + n]);
        pos += n;
        i += 1;
    }
}

/// The reference: split on the leftmost delimiter, no mode switches.
fn model(data: &[u8], delim: &[u8], max: usize) -> Vec<Ev> {
    let mut out = Vec::new();
    let mut rest = data;
    loop {
        match rest.windows(delim.len()).position(|w| w == delim) {
            Some(i) => {
                let line = &rest[..i];
                if line.len() > max {
                    out.push(Ev::TooLong(line[..max + 1].to_vec()));
                } else {
                    out.push(Ev::Line(line.to_vec()));
                }
                rest = &rest[i + delim.len()..];
            }
            None => {
                if rest.len() > max + delim.len() - 1 {
                    out.push(Ev::TooLong(rest[..max + 1].to_vec()));
                }
                return out;
            }
        }
    }
}

fn line_bytes() -> impl Strategy<Value = Vec<u8>> {
    // A small alphabet full of delimiter pieces, to stress partial matches.
    prop::collection::vec(prop::sample::select(vec![b'a', b'b', b'\r', b'\n', b'R']), 0..40)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn any_chunking_gives_the_same_lines(
        data in line_bytes(),
        sizes in prop::collection::vec(1usize..12, 1..20),
        delim in prop::sample::select(vec![&b"\r\n"[..], b"\n", b"\r\n\r\n", b"ab"]),
        max in 0usize..12,
    ) {
        let expected = model(&data, delim, max);
        let mut t = StringTransport::new();
        let mut p = LineReceiver::new(Log::default()).with_delimiter(delim).with_max_length(max);
        feed(&mut p, &mut t, &data, &sizes);
        prop_assert_eq!(&p.handler().ev, &expected);
        // Memory stays bounded by the limit whatever the input.
        prop_assert!(p.buffered().len() <= max + delim.len());
    }

    #[test]
    fn raw_mode_hand_over_is_chunking_independent(
        parts in prop::collection::vec((line_bytes(), 0usize..9, line_bytes()), 0..6),
        sizes in prop::collection::vec(1usize..9, 1..20),
    ) {
        // Lines, "RAW n" headers followed by n raw bytes (which may contain
        // delimiters), then lines again.
        let mut data = Vec::new();
        for (line, n, raw) in &parts {
            let line: Vec<u8> = line.iter().copied().filter(|&b| b != b'\n').collect();
            data.extend_from_slice(&line);
            data.extend_from_slice(b"\r\n");
            data.extend_from_slice(format!("RAW {n}\r\n").as_bytes());
            let mut raw = raw.clone();
            raw.resize(*n, b'x');
            data.extend_from_slice(&raw);
        }
        let mut whole = LineReceiver::new(Log::default());
        whole.data_received(&mut StringTransport::new(), &data);
        let mut chunked = LineReceiver::new(Log::default());
        feed(&mut chunked, &mut StringTransport::new(), &data, &sizes);
        prop_assert_eq!(&chunked.handler().ev, &whole.handler().ev);
        let raw: usize = whole.handler().ev.iter().map(|e| match e { Ev::Raw(v) => v.len(), _ => 0 }).sum();
        prop_assert_eq!(raw, parts.iter().map(|p| p.1).sum::<usize>());
    }
}

#[test]
fn over_long_line_closes_with_limit_and_stops_delivery() {
    let mut t = StringTransport::new();
    let mut p = LineReceiver::new(|c: &mut LineControl<'_>, l: &[u8]| c.send_line(l)).with_max_length(4);
    p.data_received(&mut t, b"ok\r\ntoolong\r\nafter\r\n");
    assert_eq!(t.value(), b"ok\r\n");
    assert!(t.disconnecting());
    assert!(matches!(t.close_reason(), Some(Reason::Limit(m)) if m.contains("4 bytes")));
}

#[test]
fn over_long_partial_line_is_caught_before_its_end() {
    let mut t = StringTransport::new();
    let mut p = LineReceiver::new(|_: &mut LineControl<'_>, _: &[u8]| {}).with_max_length(8);
    for _ in 0..3 {
        p.data_received(&mut t, b"0123");
    }
    assert!(matches!(t.close_reason(), Some(Reason::Limit(_))));
    assert!(p.buffered().len() <= 9);
}

#[test]
fn over_long_line_skipped_when_the_hook_keeps_the_connection() {
    let mut t = StringTransport::new();
    let mut p = LineReceiver::new(Log::default()).with_max_length(3);
    for chunk in [&b"abcdefgh"[..], b"ijklmnop", b"qrs\r\nok\r\n"] {
        p.data_received(&mut t, chunk);
    }
    assert_eq!(
        p.handler().ev,
        [Ev::TooLong(b"abcd".to_vec()), Ev::Line(b"ok".to_vec())]
    );
    assert!(!t.disconnecting());
    // While skipping, at most a partial delimiter is kept.
    p.data_received(&mut t, &[b'z'; 100]);
    assert!(p.buffered().len() <= 3);
}

#[test]
fn over_long_line_over_a_connection_reports_limit() {
    let (client, record) = Recorder::new();
    let lost = Rc::new(RefCell::new(Vec::new()));
    let lost2 = lost.clone();
    struct Server(Rc<RefCell<Vec<Reason>>>);
    impl LineHandler for Server {
        fn line_received(&mut self, c: &mut LineControl<'_>, l: &[u8]) {
            c.send_line(l);
        }
        fn connection_lost(&mut self, _: &mut LineControl<'_>, r: &Reason) {
            self.0.borrow_mut().push(r.clone());
        }
    }
    let server = LineReceiver::new(Server(lost2)).with_max_length(16);
    let mut pair = MemoryPair::new(Box::new(client), Box::new(server)).unwrap();
    pair.pump();
    pair.with_client(|_, t| {
        t.write(b"short\r\n");
        t.write(&[b'x'; 100]);
    });
    pair.pump();
    assert!(pair.is_closed());
    assert_eq!(record.borrow().data, b"short\r\n");
    let lost = lost.borrow();
    assert_eq!(lost.len(), 1);
    assert!(matches!(&lost[0], Reason::Limit(_)), "{:?}", lost[0]);
}

#[test]
fn closing_stops_delivery_of_buffered_lines() {
    let mut t = StringTransport::new();
    let mut p = LineReceiver::new(|c: &mut LineControl<'_>, l: &[u8]| {
        c.send_line(l);
        if l == b"quit" {
            c.lose_connection();
        }
    });
    p.data_received(&mut t, b"a\r\nquit\r\nb\r\nc\r\n");
    assert_eq!(t.value(), b"a\r\nquit\r\n");
}

#[test]
fn paused_lines_wait_for_resume() {
    let mut t = StringTransport::new();
    let mut p = LineReceiver::new(|c: &mut LineControl<'_>, l: &[u8]| {
        c.send_line(l);
        c.pause_reading();
    });
    p.data_received(&mut t, b"1\r\n2\r\n3\r\npart");
    assert_eq!(t.take(), b"1\r\n");
    assert_eq!(p.buffered(), b"2\r\n3\r\npart");
    p.resume_reading(&mut t);
    assert_eq!(t.take(), b"2\r\n");
    p.resume_reading(&mut t);
    p.resume_reading(&mut t);
    assert_eq!(t.take(), b"3\r\n");
    assert_eq!(p.buffered(), b"part");
}

#[test]
fn raw_mode_gets_the_rest_of_the_chunk_and_hands_back() {
    let mut t = StringTransport::new();
    let mut p = LineReceiver::new(Log::default());
    p.data_received(&mut t, b"hello\r\nRAW 5\r\nab\r\ncnext\r\nRAW 2\r\n");
    p.data_received(&mut t, b"zzlast\r\n");
    assert_eq!(
        p.handler().ev,
        [
            Ev::Line(b"hello".to_vec()),
            Ev::Line(b"RAW 5".to_vec()),
            Ev::Raw(b"ab\r\nc".to_vec()),
            Ev::Line(b"next".to_vec()),
            Ev::Line(b"RAW 2".to_vec()),
            Ev::Raw(b"zz".to_vec()),
            Ev::Line(b"last".to_vec()),
        ]
    );
}

#[test]
fn switching_to_raw_from_outside_delivers_the_buffer() {
    let mut t = StringTransport::new();
    let mut p = LineReceiver::new(Log::default());
    p.data_received(&mut t, b"partial line");
    p.with_handler(&mut t, |h, c| {
        h.raw_left = 100;
        c.set_raw_mode();
    });
    assert_eq!(p.handler().ev, [Ev::Raw(b"partial line".to_vec())]);
    assert!(p.buffered().is_empty());
}

#[test]
fn clear_buffer_discards_the_rest() {
    let mut t = StringTransport::new();
    let mut p = LineReceiver::new(|c: &mut LineControl<'_>, l: &[u8]| {
        c.send_line(l);
        if l == b"flush" {
            c.clear_buffer();
        }
    });
    p.data_received(&mut t, b"a\r\nflush\r\nb\r\npartial");
    assert_eq!(t.take(), b"a\r\nflush\r\n");
    assert!(p.buffered().is_empty());
    p.data_received(&mut t, b"c\r\n");
    assert_eq!(t.take(), b"c\r\n");
}

#[test]
fn starttls_discards_pipelined_plaintext() {
    // The handler upgrades the connection on STARTTLS (what start_tls does
    // underneath). Commands pipelined after it in plaintext must never be
    // interpreted.
    let mut t = StringTransport::new();
    let mut p = LineReceiver::new(|c: &mut LineControl<'_>, l: &[u8]| {
        c.send_line(l);
        if l == b"STARTTLS" {
            c.upgrade(Box::new(|old, _| old));
        }
    });
    p.data_received(&mut t, b"EHLO x\r\nSTARTTLS\r\nRCPT TO:<evil>\r\npart");
    assert_eq!(t.take(), b"EHLO x\r\nSTARTTLS\r\n");
    assert_eq!(t.upgrade_count(), 1);
    assert!(p.buffered().is_empty());
    // What arrives afterwards (through the TLS layer) is framed again.
    p.data_received(&mut t, b"EHLO y\r\n");
    assert_eq!(t.take(), b"EHLO y\r\n");
}

#[test]
fn custom_delimiter_and_send_line() {
    let mut t = StringTransport::new();
    let mut p = LineReceiver::new(|c: &mut LineControl<'_>, l: &[u8]| {
        assert_eq!(c.delimiter(), b"\n");
        c.send_line(l);
    })
    .with_delimiter(b"\n");
    p.data_received(&mut t, b"a\r\nb\n");
    assert_eq!(t.value(), b"a\r\nb\n");
}

#[test]
fn call_on_reaches_the_handler_through_with_handler() {
    type Chat = LineReceiver<Log>;
    let (client, record) = Recorder::new();
    let mut pair = MemoryPair::new(Box::new(client), Box::new(Chat::new(Log::default()))).unwrap();
    pair.pump();
    pair.with_server(|p, t| {
        let chat = p.downcast_mut::<Chat>().expect("a line receiver");
        chat.with_handler(t, |h, c| {
            h.ev.push(Ev::Line(b"pushed".to_vec()));
            c.send_line(b"<bob> hello");
        });
    });
    assert_eq!(record.borrow().data, b"<bob> hello\r\n");
    pair.with_client(|_, t| t.lose_connection());
    assert!(pair.is_closed());
    pair.with_server(|_, _| panic!("gone: never delivered"));
}

#[test]
fn eof_drops_a_partial_line_and_closes() {
    let (client, _) = Recorder::new();
    let got = Rc::new(RefCell::new(Vec::new()));
    let got2 = got.clone();
    let server =
        LineReceiver::new(move |_: &mut LineControl<'_>, l: &[u8]| got2.borrow_mut().push(l.to_vec()));
    let mut pair = MemoryPair::new(Box::new(client), Box::new(server)).unwrap();
    pair.pump();
    pair.with_client(|_, t| {
        t.write(b"one\r\ntwo");
        t.write_eof();
    });
    assert_eq!(*got.borrow(), [b"one".to_vec()]);
    assert!(pair.is_closed());
}

#[test]
fn an_idle_receiver_keeps_little_buffer_after_a_long_line() {
    use twistor_reactor::InputBuf;
    let mut t = StringTransport::new();
    let mut p = LineReceiver::new(Log::default()).with_max_length(64 * 1024);
    // One 60 KB line in 1 KB pieces: the buffer must grow to hold it...
    for _ in 0..60 {
        p.data_received(&mut t, &[b'x'; 1000]);
    }
    assert!(p.buffer_capacity() >= 60_000);
    // ...and give the memory back once the line is delivered.
    p.data_received(&mut t, b"\r\n");
    assert_eq!(p.handler().ev.len(), 1);
    assert!(p.buffered().is_empty());
    assert!(
        p.buffer_capacity() <= InputBuf::KEEP,
        "an idle connection keeps {} bytes",
        p.buffer_capacity()
    );
    // The same when the long line's end comes with a short partial line.
    for _ in 0..60 {
        p.data_received(&mut t, &[b'y'; 1000]);
    }
    p.data_received(&mut t, b"\r\npart");
    assert_eq!(p.buffered(), b"part");
    assert!(p.buffer_capacity() <= InputBuf::KEEP, "{}", p.buffer_capacity());
    // And after lines held back while reading was paused.
    let mut p = LineReceiver::new(|c: &mut LineControl<'_>, _: &[u8]| c.pause_reading());
    let many = b"0123456789abcdef\r\n".repeat(3000);
    p.data_received(&mut t, &many);
    assert!(p.buffered().len() > 50_000);
    while !p.buffered().is_empty() {
        p.resume_reading(&mut t);
    }
    assert!(p.buffer_capacity() <= InputBuf::KEEP, "{}", p.buffer_capacity());
}

#[test]
fn starttls_from_raw_mode_discards_the_handed_back_tail() {
    // A raw handler hands back the rest of its data (no copy is made: the
    // receiver goes back over it) and then upgrades: the plaintext after
    // it must still never be interpreted.
    struct Upgrader(Rc<RefCell<Vec<Vec<u8>>>>);
    impl LineHandler for Upgrader {
        fn line_received(&mut self, c: &mut LineControl<'_>, line: &[u8]) {
            self.0.borrow_mut().push(line.to_vec());
            if line == b"BODY" {
                c.set_raw_mode();
            }
        }
        fn raw_data_received(&mut self, c: &mut LineControl<'_>, data: &[u8]) {
            c.set_line_mode_with(&data[3..]);
            c.upgrade(Box::new(|old, _| old));
        }
    }
    let got = Rc::new(RefCell::new(Vec::new()));
    let mut p = LineReceiver::new(Upgrader(got.clone()));
    let mut t = StringTransport::new();
    p.data_received(&mut t, b"BODY\r\nxyzINJECTED\r\n");
    assert_eq!(*got.borrow(), [b"BODY".to_vec()]);
    assert!(p.buffered().is_empty());
    p.data_received(&mut t, b"after\r\n");
    assert_eq!(*got.borrow(), [b"BODY".to_vec(), b"after".to_vec()]);
}

/// Pauses reading after every line whose first byte is 'P'.
#[derive(Default)]
struct Pauser {
    lines: Vec<Vec<u8>>,
}

impl LineHandler for Pauser {
    fn line_received(&mut self, c: &mut LineControl<'_>, line: &[u8]) {
        self.lines.push(line.to_vec());
        if line.first() == Some(&b'P') {
            c.pause_reading();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Pausing after some lines and resuming later (after any number of
    /// further chunks) never loses, repeats or reorders a line.
    #[test]
    fn pausing_and_resuming_keeps_every_line_in_order(
        data in prop::collection::vec(prop::sample::select(vec![b'a', b'P', b'\r', b'\n']), 0..80),
        sizes in prop::collection::vec(1usize..10, 1..20),
        resume_every in 1usize..4,
    ) {
        let expected = model(&data, b"\r\n", 1000);
        let mut t = StringTransport::new();
        let mut p = LineReceiver::new(Pauser::default()).with_max_length(1000);
        let mut pos = 0;
        let mut i = 0;
        while pos < data.len() {
            let n = sizes[i % sizes.len()].min(data.len() - pos);
            p.data_received(&mut t, &data[pos..pos + n]);
            pos += n;
            i += 1;
            if i % resume_every == 0 {
                p.resume_reading(&mut t);
            }
        }
        for _ in 0..=data.len() {
            p.resume_reading(&mut t);
        }
        let got: Vec<Ev> = p.handler().lines.iter().cloned().map(Ev::Line).collect();
        prop_assert_eq!(got, expected);
    }
}

#[test]
fn a_line_handler_reaches_every_transport_setting_through_its_control() {
    // The control forwards everything, the write-buffer cap included, and
    // an idle timeout's view does too.
    let mut p = LineReceiver::new(|c: &mut LineControl<'_>, line: &[u8]| {
        if line == b"CAP" {
            c.set_max_write_buffer(4096);
        }
    });
    let mut t = StringTransport::new();
    p.data_received(&mut t, b"CAP\r\n");
    assert_eq!(t.max_write_buffer(), Some(4096));

    struct Caps;
    impl Protocol for Caps {
        fn connection_made(&mut self, t: &mut dyn Transport) {
            t.set_max_write_buffer(8192);
        }
        fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    }
    let mut pair = MemoryPair::new(
        Box::new(Recorder::new().0),
        Box::new(twistor_protocols::IdleTimeout::new(
            Caps,
            std::time::Duration::from_secs(60),
        )),
    )
    .unwrap();
    pair.pump();
    let cap = Rc::new(RefCell::new(None));
    let seen = cap.clone();
    pair.with_server(move |_, t| *seen.borrow_mut() = t.max_write_buffer());
    assert_eq!(*cap.borrow(), Some(8192));
}
