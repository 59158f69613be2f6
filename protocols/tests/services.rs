//! The small services over the in-memory pair: echo round trip and
//! backpressure, chargen bounded by flow control, daytime, qotd, discard.

use std::cell::RefCell;
use std::rc::Rc;

use twistor_protocols::{Chargen, Daytime, Discard, Echo, Qotd};
use twistor_reactor::testing::{MemoryPair, Recorder, StringTransport};
use twistor_reactor::{Protocol, Transport, DEFAULT_HIGH_WATER};

/// A client that counts what it reads and stops reading past `limit`.
struct Sink {
    got: Rc<RefCell<usize>>,
    limit: usize,
}

impl Protocol for Sink {
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        *self.got.borrow_mut() += data.len();
        if *self.got.borrow() >= self.limit {
            t.pause_reading();
        }
    }
}

fn server_buffer(pair: &mut MemoryPair) -> usize {
    let size = Rc::new(RefCell::new(usize::MAX));
    let s = size.clone();
    pair.with_server(move |_, t| *s.borrow_mut() = t.write_buffer_size());
    let n = *size.borrow();
    n
}

#[test]
fn chargen_stays_bounded_under_a_slow_reader_and_resumes() {
    const MIB: usize = 1 << 20;
    let got = Rc::new(RefCell::new(0));
    let client = Sink {
        got: got.clone(),
        limit: MIB,
    };
    let mut pair = MemoryPair::new(Box::new(client), Box::new(Chargen::default())).unwrap();
    pair.pump();
    let first = *got.borrow();
    assert!(first >= MIB, "the client got {first} bytes");
    assert!(first < MIB + 64 * 1024, "the client got {first} bytes");
    // The reader stopped: chargen stopped too, its buffer just past the
    // high-water mark (one write at most over it).
    let buffered = server_buffer(&mut pair);
    assert!(
        buffered > 0 && buffered <= DEFAULT_HIGH_WATER + 16 * 1024,
        "{buffered}"
    );
    assert!(!pair.is_closed());

    // Let the reader take another MiB: resume_writing restarts chargen.
    pair.with_client(|p, t| {
        p.downcast_mut::<Sink>().unwrap().limit += MIB;
        t.resume_reading();
    });
    let second = *got.borrow();
    assert!((2 * MIB..2 * MIB + 64 * 1024).contains(&second), "{second}");
    let buffered = server_buffer(&mut pair);
    assert!(buffered <= DEFAULT_HIGH_WATER + 16 * 1024, "{buffered}");
}

#[test]
fn chargen_pattern_is_continuous_across_writes() {
    let (client, record) = Recorder::new();
    let mut pair = MemoryPair::new(Box::new(client), Box::new(Chargen::default())).unwrap();
    // One pump moves at most a few pipe-fulls (the recorder reads all).
    pair.reactor.run_pending().unwrap();
    pair.with_client(|_, t| t.lose_connection());
    let data = record.borrow().data.clone();
    assert!(data.len() > 7030, "{}", data.len());
    for (i, line) in data.chunks(74).take(data.len() / 74).enumerate() {
        let first = b' ' + (i % 95) as u8;
        assert_eq!(line[0], first, "line {i}");
        assert_eq!(&line[72..], b"\r\n", "line {i}");
    }
}

#[test]
fn echo_round_trip_and_backpressure() {
    const N: usize = 2 << 20;
    let got = Rc::new(RefCell::new(0));
    let client = Sink {
        got: got.clone(),
        limit: 0, // pauses at the first byte
    };
    let mut pair = MemoryPair::new(Box::new(client), Box::new(Echo)).unwrap();
    pair.pump();
    pair.with_client(|_, t| {
        let chunk = vec![b'e'; 64 * 1024];
        for _ in 0..N / chunk.len() {
            t.write(&chunk);
        }
    });
    // The client reads nothing more: the echo server must stop reading
    // rather than buffer 2 MiB.
    let buffered = server_buffer(&mut pair);
    assert!(buffered <= 2 * DEFAULT_HIGH_WATER, "echo buffered {buffered}");
    assert!(*got.borrow() < N);
    pair.with_client(|p, t| {
        p.downcast_mut::<Sink>().unwrap().limit = usize::MAX;
        t.resume_reading();
    });
    assert_eq!(*got.borrow(), N);
}

#[test]
fn echo_with_a_recorder() {
    let (client, record) = Recorder::new();
    let mut pair = MemoryPair::new(Box::new(client), Box::new(Echo)).unwrap();
    pair.with_client(|_, t| t.write(b"Hello, world!"));
    assert_eq!(record.borrow().data, b"Hello, world!");
}

#[test]
fn discard_daytime_qotd() {
    let (client, record) = Recorder::new();
    let mut pair = MemoryPair::new(Box::new(client), Box::new(Discard)).unwrap();
    pair.with_client(|_, t| t.write(b"nobody hears this"));
    assert!(record.borrow().data.is_empty());
    assert!(!pair.is_closed());

    let (client, record) = Recorder::new();
    let mut pair = MemoryPair::new(Box::new(client), Box::new(Daytime)).unwrap();
    pair.pump();
    assert!(pair.is_closed());
    let line = String::from_utf8(record.borrow().data.clone()).unwrap();
    // e.g. "Wed Nov 25 16:48:19 2026\r\n"
    assert_eq!(line.len(), 26, "{line:?}");
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f.len(), 5, "{line:?}");
    assert!(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].contains(&f[0]));
    assert!(f[3].len() == 8 && f[3].as_bytes()[2] == b':');
    assert!(f[4].parse::<u32>().unwrap() >= 2024);

    let mut t = StringTransport::new();
    Qotd::default().connection_made(&mut t);
    assert_eq!(t.value(), b"An apple a day keeps the doctor away.\r\n");
    let mut t = StringTransport::new();
    Qotd::new("two\r\nlines\r\n").connection_made(&mut t);
    assert_eq!(t.value(), b"two\r\nlines\r\n");
}
