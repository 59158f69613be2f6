//! Invariants 4 and 5 through the extension API (`open_stream` over a Unix
//! socket pair, with an I/O layer that counts what the machinery asks of
//! it): writes made in one callback leave in one vectored write, WRITABLE
//! interest is registered only while unwritten output remains, and every
//! connection reads into the reactor's one shared buffer.

use std::cell::RefCell;
use std::io::{self, IoSlice, Read, Write};
use std::rc::Rc;
use std::time::Duration;

use mio::net::UnixStream;
use mio::{Interest, Registry, Token};
use twistor_reactor::{open_stream, Address, Protocol, Reactor, StreamIo, StreamOptions, Transport};

const WAIT: Duration = Duration::from_secs(20);

#[derive(Default, Debug)]
struct Calls {
    writes: usize,
    /// Interest passed to each reregister: true when WRITABLE was asked.
    reregisters: Vec<bool>,
}

/// A Unix stream that counts write calls and interest changes.
struct Counted {
    s: UnixStream,
    calls: Rc<RefCell<Calls>>,
}

impl StreamIo for Counted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.s.read(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.calls.borrow_mut().writes += 1;
        self.s.write_vectored(bufs)
    }
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.s.shutdown(std::net::Shutdown::Write)
    }
    fn register(&mut self, reg: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        reg.register(&mut self.s, token, interest)
    }
    fn reregister(&mut self, reg: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        self.calls.borrow_mut().reregisters.push(interest.is_writable());
        reg.reregister(&mut self.s, token, interest)
    }
    fn deregister(&mut self, reg: &Registry) -> io::Result<()> {
        reg.deregister(&mut self.s)
    }
    fn peer(&self) -> Address {
        Address::Memory("peer".into())
    }
    fn host(&self) -> Address {
        Address::Memory("host".into())
    }
}

type Log = Rc<RefCell<Vec<String>>>;

/// Writes `pieces` small pieces in connection_made, then `big` bytes when
/// asked with `big`; logs where its data arrived.
struct Writer {
    pieces: usize,
    big: usize,
    log: Log,
}

impl Protocol for Writer {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        for i in 0..self.pieces {
            t.write(format!("{i:04},").as_bytes());
        }
        if self.pieces > 0 {
            // The whole callback's output is still buffered here.
            self.log
                .borrow_mut()
                .push(format!("buffered {}", t.write_buffer_size()));
        }
    }
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        self.log.borrow_mut().push(format!("ptr {:p}", data.as_ptr()));
        if data.starts_with(b"big") {
            t.write(&vec![b'b'; self.big]);
        }
    }
}

fn open(r: &mut Reactor, pieces: usize, big: usize) -> (UnixStream, Rc<RefCell<Calls>>, Log) {
    let (a, b) = UnixStream::pair().unwrap();
    let calls: Rc<RefCell<Calls>> = Rc::default();
    let log: Log = Rc::default();
    let io = Counted {
        s: a,
        calls: calls.clone(),
    };
    let proto = Writer {
        pieces,
        big,
        log: log.clone(),
    };
    open_stream(r, io, Box::new(proto), StreamOptions::default()).unwrap();
    (b, calls, log)
}

/// Read exactly `n` bytes from the non-blocking peer while the reactor runs.
fn read_peer(r: &mut Reactor, peer: &mut UnixStream, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let ok = r
        .run_until(WAIT, |_| {
            loop {
                match peer.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => out.extend_from_slice(&buf[..k]),
                    Err(_) => break,
                }
            }
            out.len() >= n
        })
        .unwrap();
    assert!(ok, "read {} of {n} bytes", out.len());
    out
}

#[test]
fn writes_in_one_callback_leave_in_one_vectored_write() {
    let mut r = Reactor::new().unwrap();
    let (mut peer, calls, log) = open(&mut r, 500, 0);
    let got = read_peer(&mut r, &mut peer, 500 * 5);
    let expected: String = (0..500).map(|i| format!("{i:04},")).collect();
    assert_eq!(String::from_utf8(got).unwrap(), expected);
    assert_eq!(log.borrow()[0], format!("buffered {}", 500 * 5));
    let c = calls.borrow();
    assert_eq!(
        c.writes, 1,
        "500 writes in one callback took {} write calls",
        c.writes
    );
    assert!(
        c.reregisters.is_empty(),
        "no WRITABLE interest without a remainder: {c:?}"
    );
}

#[test]
fn writable_interest_only_while_a_remainder_exists() {
    let mut r = Reactor::new().unwrap();
    // Far more than a socket pair buffers.
    const BIG: usize = 8 << 20;
    let (mut peer, calls, _) = open(&mut r, 0, BIG);
    peer.write_all(b"big").unwrap();
    let c2 = calls.clone();
    let ok = r
        .run_until(WAIT, move |_| c2.borrow().reregisters.first() == Some(&true))
        .unwrap();
    assert!(ok, "WRITABLE interest was never asked for a remainder");
    let got = read_peer(&mut r, &mut peer, BIG);
    assert_eq!(got.len(), BIG);
    let c3 = calls.clone();
    let ok = r
        .run_until(WAIT, move |_| c3.borrow().reregisters.last() == Some(&false))
        .unwrap();
    assert!(ok, "WRITABLE interest kept after draining: {:?}", calls.borrow());
    // Exactly one switch on and one switch off.
    assert_eq!(calls.borrow().reregisters, vec![true, false]);
}

#[test]
fn every_connection_reads_into_the_one_shared_buffer() {
    let mut r = Reactor::new().unwrap();
    let mut peers = Vec::new();
    let mut logs = Vec::new();
    for _ in 0..3 {
        let (peer, _, log) = open(&mut r, 0, 0);
        peers.push(peer);
        logs.push(log);
    }
    for round in 0..2 {
        for p in peers.iter_mut() {
            p.write_all(format!("hello {round}").as_bytes()).unwrap();
        }
        let ls = logs.clone();
        let ok = r
            .run_until(WAIT, move |_| ls.iter().all(|l| l.borrow().len() > round))
            .unwrap();
        assert!(ok);
    }
    let ptrs: Vec<String> = logs.iter().flat_map(|l| l.borrow().clone()).collect();
    assert_eq!(ptrs.len(), 6);
    assert!(
        ptrs.iter().all(|p| *p == ptrs[0]),
        "data_received slices: {ptrs:?}"
    );
}
