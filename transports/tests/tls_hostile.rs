//! The TLS layer against a peer that does what it likes: a rustls client
//! driven by hand, whose ciphertext the test puts on the wire itself (in
//! 1-byte pieces, with alerts where none belong, with records no peer
//! should send). The server is a real `TlsProtocol` over the in-memory
//! pair; what it sends back reaches a recorder at the client end and is
//! fed to the hand-driven client.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use twistor_reactor::testing::{MemoryPair, Record, Recorder};
use twistor_reactor::{Protocol, Reason, Transport};
use twistor_transports::tls::rustls::{self, ClientConfig, ClientConnection};
use twistor_transports::tls::{ClientConfigBuilder, ServerConfigBuilder, TlsOptions, TlsProtocol};

struct Echo;
impl Protocol for Echo {
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        t.write(d)
    }
}

/// How the server's side ended, as its failure hook and application saw it.
type Failure = Rc<RefCell<Option<Reason>>>;

/// A server layer running `app` at the far end of a pair whose client end
/// is a recorder, and a hand-driven client configured to trust it.
fn setup(app: Box<dyn Protocol>) -> (MemoryPair, Rc<RefCell<Record>>, Failure, Hand) {
    let (sc, fp) = ServerConfigBuilder::self_signed(&["localhost"]).unwrap();
    let cc = ClientConfigBuilder::new().pinned(&fp).build().unwrap();
    let failed: Failure = Rc::new(RefCell::new(None));
    let f = failed.clone();
    let server = TlsProtocol::server(app, sc)
        .unwrap()
        .with_options(TlsOptions::default())
        .with_failure_hook(move |r| *f.borrow_mut() = Some(r.clone()));
    let (wire, log) = Recorder::new();
    let pair = MemoryPair::new(Box::new(wire), Box::new(server)).unwrap();
    (pair, log, failed, Hand::new(cc))
}

/// A TLS client whose every byte the test places.
struct Hand {
    conn: ClientConnection,
    /// How much of the recorder's data has been fed to `conn`.
    fed: usize,
}

impl Hand {
    fn new(config: Arc<ClientConfig>) -> Hand {
        let conn = ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
        Hand { conn, fed: 0 }
    }

    /// The ciphertext the client has to send.
    fn output(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while self.conn.wants_write() {
            self.conn.write_tls(&mut out).unwrap();
        }
        out
    }

    /// Send its output in `piece`-byte writes, the server reading each.
    fn send(&mut self, pair: &mut MemoryPair, piece: usize) {
        for p in self.output().chunks(piece) {
            pair.inject_to_server(p);
            pair.pump();
        }
    }

    /// Take in what the server sent since last time.
    fn receive(&mut self, log: &Rc<RefCell<Record>>) -> Result<(), rustls::Error> {
        let data = log.borrow().data[self.fed..].to_vec();
        self.fed += data.len();
        let mut rest = &data[..];
        while !rest.is_empty() {
            self.conn.read_tls(&mut rest).unwrap();
            self.conn.process_new_packets()?;
        }
        Ok(())
    }

    /// Complete the handshake, sending in `piece`-byte writes.
    fn handshake(&mut self, pair: &mut MemoryPair, log: &Rc<RefCell<Record>>, piece: usize) {
        for _ in 0..10 {
            self.send(pair, piece);
            self.receive(log).unwrap();
            if !self.conn.is_handshaking() && !self.conn.wants_write() {
                return;
            }
        }
        panic!("the handshake did not complete");
    }

    /// Plaintext the server sent.
    fn read_plaintext(&mut self) -> Vec<u8> {
        let mut got = Vec::new();
        let _ = std::io::Read::read_to_end(&mut self.conn.reader(), &mut got);
        got
    }
}

/// A warning-level close_notify alert, in the clear.
const CLEAR_CLOSE_NOTIFY: [u8; 7] = [21, 3, 3, 0, 2, 1, 0];

#[test]
fn a_peer_sending_one_byte_at_a_time_gets_through() {
    let (mut pair, log, failed, mut hand) = setup(Box::new(Echo));
    hand.handshake(&mut pair, &log, 1);
    std::io::Write::write_all(&mut hand.conn.writer(), b"ping, one byte at a time").unwrap();
    hand.send(&mut pair, 1);
    hand.receive(&log).unwrap();
    assert_eq!(hand.read_plaintext(), b"ping, one byte at a time");
    assert!(failed.borrow().is_none(), "{:?}", failed.borrow());
}

#[test]
fn a_clear_close_notify_before_the_handshake_is_ignored_and_bounded() {
    let (mut pair, log, failed, mut hand) = setup(Box::new(Echo));
    // Unauthenticated: it cannot close anything (rustls takes it as a
    // warning), and the handshake may still happen.
    pair.inject_to_server(&CLEAR_CLOSE_NOTIFY);
    pair.pump();
    assert!(pair.reactor.contains(pair.server));
    hand.handshake(&mut pair, &log, 4096);
    std::io::Write::write_all(&mut hand.conn.writer(), b"still here").unwrap();
    hand.send(&mut pair, 4096);
    hand.receive(&log).unwrap();
    assert_eq!(hand.read_plaintext(), b"still here");
    assert!(failed.borrow().is_none());

    // A peer that sends only that and waits holds its slot no longer than
    // the handshake timeout.
    let (mut pair, _, failed, _) = setup(Box::new(Echo));
    pair.inject_to_server(&CLEAR_CLOSE_NOTIFY);
    pair.pump();
    pair.advance(twistor_transports::tls::DEFAULT_HANDSHAKE_TIMEOUT + Duration::from_secs(1));
    assert!(!pair.reactor.contains(pair.server));
    assert!(
        matches!(*failed.borrow(), Some(Reason::TimedOut)),
        "{:?}",
        failed.borrow()
    );
}

#[test]
fn a_close_notify_in_the_middle_of_the_handshake_fails_it_at_once() {
    let (mut pair, _, failed, mut hand) = setup(Box::new(Echo));
    // The ClientHello, then a close_notify in the clear where the
    // client's encrypted Finished should be (TLS 1.3 allows no warnings).
    hand.send(&mut pair, 4096);
    pair.inject_to_server(&CLEAR_CLOSE_NOTIFY);
    pair.pump();
    assert!(!pair.reactor.contains(pair.server), "the server waits for more");
    let reason = failed.borrow().clone();
    match reason {
        Some(Reason::Tls(m)) => assert!(m.starts_with("handshake failed"), "{m}"),
        other => panic!("expected a TLS reason, got {other:?}"),
    }
}

#[test]
fn a_record_longer_than_tls_allows_is_refused_at_its_header() {
    let (app, got) = Recorder::new();
    let (mut pair, log, _, mut hand) = setup(Box::new(app));
    hand.handshake(&mut pair, &log, 4096);
    // Application data claiming 65,535 bytes (the limit is 16 KiB plus
    // 256): refused on its header, before any of the body is kept.
    pair.inject_to_server(&[23, 3, 3, 0xff, 0xff]);
    pair.inject_to_server(&[0; 100]);
    pair.pump();
    assert!(!pair.reactor.contains(pair.server));
    let lost = got.borrow().lost.clone();
    match lost.first() {
        Some(Reason::Tls(m)) => assert!(!m.starts_with("handshake"), "{m}"),
        other => panic!("expected a TLS reason, got {other:?}"),
    }
    // The peer was told, by an alert (rustls sends decode_error).
    let answer = hand.receive(&log);
    assert!(
        matches!(answer, Err(rustls::Error::AlertReceived(_))),
        "{answer:?}"
    );
}

#[test]
fn a_handshake_message_too_large_to_buffer_is_refused() {
    let (mut pair, _, failed, _) = setup(Box::new(Echo));
    // A ClientHello header claiming 16 MiB, then records of filler: rustls
    // buffers at most 64 KiB of one handshake message.
    let mut first = vec![1, 0xff, 0xff, 0xff];
    first.resize(16 * 1024, 0);
    let mut sent = 0;
    for i in 0..64 {
        if !pair.reactor.contains(pair.server) {
            break;
        }
        let body = if i == 0 { first.clone() } else { vec![0; 16 * 1024] };
        pair.inject_to_server(&[22, 3, 1, 0x40, 0x00]);
        pair.inject_to_server(&body);
        pair.pump();
        sent += body.len();
    }
    assert!(
        !pair.reactor.contains(pair.server),
        "still buffering after {sent} bytes"
    );
    assert!(sent <= 80 * 1024, "{sent}");
    assert!(
        matches!(*failed.borrow(), Some(Reason::Tls(_))),
        "{:?}",
        failed.borrow()
    );
}

/// "before", close_notify, then "after" (rustls still encrypts what is
/// written after its close_notify, so a peer can send it), all at once or
/// record by record: what the server's application saw.
fn data_after_close_notify(record_by_record: bool) -> Rc<RefCell<Record>> {
    let (app, got) = Recorder::new();
    let (mut pair, log, _, mut hand) = setup(Box::new(app));
    hand.handshake(&mut pair, &log, 4096);
    std::io::Write::write_all(&mut hand.conn.writer(), b"before").unwrap();
    hand.conn.send_close_notify();
    std::io::Write::write_all(&mut hand.conn.writer(), b"after").unwrap();
    let wire = hand.output();
    let mut i = 0;
    while i < wire.len() {
        let len = u16::from_be_bytes([wire[i + 3], wire[i + 4]]) as usize;
        let end = if record_by_record { i + 5 + len } else { wire.len() };
        pair.inject_to_server(&wire[i..end]);
        pair.pump();
        i = end;
    }
    got
}

#[test]
fn data_after_close_notify_is_never_delivered() {
    for record_by_record in [false, true] {
        let got = data_after_close_notify(record_by_record);
        let got = got.borrow();
        assert_eq!(got.data, b"before", "record by record: {record_by_record}");
        assert_eq!(got.eofs, 1);
        assert_eq!(got.lost.len(), 1);
        assert!(got.lost[0].is_clean(), "{:?}", got.lost);
    }
}
