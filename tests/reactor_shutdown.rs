//! Invariant 7 over real TCP: `stop()` stops accepting, runs the shutdown
//! triggers, closes every connection gracefully (pending writes delivered,
//! then a clean close), aborts what does not drain by the deadline, and
//! `run()` returns.

mod common;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::{client, SharedTally, Tally};
use twistor::prelude::*;

const PER_CLIENT: usize = 4 * 1024 * 1024;

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// On `go`, writes `size` bytes; after `stop_after` such requests, stops
/// the reactor with everything still buffered.
struct Bulk {
    tally: SharedTally,
    log: Rc<RefCell<Vec<String>>>,
    gos: Rc<RefCell<usize>>,
    stop_after: usize,
    size: usize,
}

impl Protocol for Bulk {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.tally.borrow_mut().made(t.id());
    }
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        if data.starts_with(b"go") {
            t.write(&pattern(self.size));
            *self.gos.borrow_mut() += 1;
            if *self.gos.borrow() == self.stop_after {
                self.log.borrow_mut().push("stop".into());
                t.reactor().stop();
            }
        }
    }
    fn connection_lost(&mut self, t: &mut dyn Transport, reason: &Reason) {
        self.log.borrow_mut().push(format!("lost {}", reason.is_clean()));
        self.tally.borrow_mut().lost(t.id(), reason);
    }
}

struct Server {
    r: Reactor,
    addr: std::net::SocketAddr,
    tally: SharedTally,
    log: Rc<RefCell<Vec<String>>>,
}

fn server(stop_after: usize, size: usize) -> Server {
    let mut r = common::reactor();
    let tally = Tally::shared();
    let log: Rc<RefCell<Vec<String>>> = Rc::default();
    let gos = Rc::new(RefCell::new(0));
    let (t2, l2) = (tally.clone(), log.clone());
    let addr = listen_tcp(&mut r, "127.0.0.1:0", move |_: &Address| Bulk {
        tally: t2.clone(),
        log: l2.clone(),
        gos: gos.clone(),
        stop_after,
        size,
    })
    .unwrap()
    .local_addr();
    let l3 = log.clone();
    r.add_shutdown_trigger(move |_| l3.borrow_mut().push("trigger".into()));
    Server { r, addr, tally, log }
}

#[test]
fn stop_delivers_pending_writes_then_closes_cleanly_and_run_returns() {
    const CLIENTS: usize = 5;
    let mut s = server(CLIENTS, PER_CLIENT);
    s.r.set_shutdown_timeout(common::WAIT);
    let addr = s.addr;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = client(addr);
                c.write_all(b"go").unwrap();
                common::read_to_eof(&mut c)
            })
        })
        .collect();
    s.r.run().unwrap();
    // run() returned: every connection is closed, the listener is gone.
    assert_eq!(s.r.handler_count(), 0);
    let expected = pattern(PER_CLIENT);
    for c in clients {
        let got = c.join().expect("client thread");
        assert_eq!(got.len(), PER_CLIENT, "bytes delivered before the close");
        assert!(got == expected, "data corrupted");
    }
    s.tally.borrow().assert_exactly_once(CLIENTS);
    let log = s.log.borrow();
    assert_eq!(log[0], "stop");
    assert_eq!(
        log[1], "trigger",
        "triggers run before connections close: {log:?}"
    );
    assert_eq!(
        log.iter().filter(|l| *l == "lost true").count(),
        CLIENTS,
        "{log:?}"
    );
    // Nothing accepts any more.
    let e = TcpStream::connect(addr).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn a_connection_that_never_drains_is_aborted_at_the_shutdown_timeout() {
    // Far more than loopback socket buffers can absorb.
    const STUCK: usize = 96 * 1024 * 1024;
    let timeout = Duration::from_millis(300);
    let mut s = server(2, 0);
    s.r.set_shutdown_timeout(timeout);
    // The stuck client never reads.
    let mut stuck = client(s.addr);
    let tally = s.tally.clone();
    let t2 = tally.clone();
    common::wait_for(&mut s.r, "the stuck connection", move |_| {
        !t2.borrow().made.is_empty()
    });
    let stuck_id = *tally.borrow().made.keys().next().unwrap();
    // A second client reads normally.
    let addr = s.addr;
    let good = std::thread::spawn(move || {
        let mut c = client(addr);
        c.write_all(b"go").unwrap();
        common::read_to_eof(&mut c)
    });
    // Fill the stuck connection's buffer, then count it as one "go": the
    // good client's "go" stops the reactor with this still buffered.
    s.r.call_on(stuck_id, |p, t| {
        // Over the default hard cap: raise this connection's.
        t.set_max_write_buffer(2 * STUCK);
        let chunk = vec![7u8; 1024 * 1024];
        for _ in 0..STUCK / chunk.len() {
            t.write(&chunk);
        }
        p.data_received(t, b"go");
    })
    .unwrap();
    let start = Instant::now();
    s.r.run().unwrap();
    let took = start.elapsed();
    assert!(took >= timeout, "run() returned before the deadline: {took:?}");
    assert!(took < timeout + common::WAIT, "run() took {took:?}");
    assert_eq!(s.r.handler_count(), 0);
    assert!(good.join().unwrap().is_empty());
    let t = tally.borrow();
    t.assert_exactly_once(2);
    assert!(
        matches!(t.lost[&stuck_id][0], Reason::Aborted),
        "{}",
        t.lost[&stuck_id][0]
    );
    let others: Vec<&Reason> = t
        .lost
        .iter()
        .filter(|(id, _)| **id != stuck_id)
        .map(|(_, v)| &v[0])
        .collect();
    assert!(others[0].is_clean(), "{}", others[0]);
    // The abort is a reset, not an orderly end of the stream.
    let mut sink = Vec::new();
    assert!(
        stuck.read_to_end(&mut sink).is_err(),
        "the stuck client saw a clean close"
    );
    assert!(sink.len() < STUCK);
}

#[test]
fn remote_stop_and_run_again() {
    let mut r = common::reactor();
    let ran = Rc::new(RefCell::new(0));
    let remote = r.remote();
    let h = std::thread::spawn(move || remote.stop().unwrap());
    r.run().unwrap();
    h.join().unwrap();
    // Timers survive a stop; run() works again.
    let r2 = ran.clone();
    r.call_later(Duration::from_millis(1), move |r| {
        *r2.borrow_mut() += 1;
        r.stop();
    });
    r.run().unwrap();
    assert_eq!(*ran.borrow(), 1);
    // Running inside a callback is refused.
    let nested = Rc::new(RefCell::new(None));
    let n2 = nested.clone();
    r.call_later(Duration::ZERO, move |r| {
        *n2.borrow_mut() = Some(r.run().is_err());
        r.stop();
    });
    r.run().unwrap();
    assert_eq!(*nested.borrow(), Some(true));
}

#[test]
fn a_connection_started_while_stopping_is_told_to_stop_too() {
    // A shutdown trigger (say, a goodbye to a monitoring server) starts a
    // connection after stop() began. It must be shut down like the rest,
    // not left to hold run() until the shutdown deadline.
    let mut r = common::reactor();
    r.set_shutdown_timeout(common::WAIT);
    let outside = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = outside.local_addr().unwrap().port();
    let outcome: Rc<RefCell<Vec<String>>> = Rc::default();
    let o2 = outcome.clone();
    r.add_shutdown_trigger(move |r| {
        r.call_soon(move |r| {
            struct Goodbye(Rc<RefCell<Vec<String>>>);
            impl Protocol for Goodbye {
                fn connection_made(&mut self, t: &mut dyn Transport) {
                    self.0.borrow_mut().push("made".into());
                    t.write(b"goodbye");
                }
                fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
                fn connection_lost(&mut self, _: &mut dyn Transport, reason: &Reason) {
                    self.0.borrow_mut().push(format!("lost {reason}"));
                }
            }
            struct F(Rc<RefCell<Vec<String>>>);
            impl Factory for F {
                fn build_protocol(&mut self, _: &Address) -> Option<Box<dyn Protocol>> {
                    Some(Box::new(Goodbye(self.0.clone())))
                }
            }
            impl ClientFactory for F {
                fn client_connection_failed(&mut self, _: &mut Reactor, _: &Connector, reason: &Reason) {
                    self.0.borrow_mut().push(format!("failed {reason}"));
                }
            }
            connect_tcp(r, "127.0.0.1", port, F(o2.clone()));
        });
    });
    r.call_later(Duration::ZERO, |r| r.stop());
    let start = Instant::now();
    r.run().unwrap();
    let took = start.elapsed();
    assert!(
        took < common::WAIT / 2,
        "run() was held for {took:?} by a late connection"
    );
    let outcome = outcome.borrow();
    // Either the attempt was cancelled, or the connection closed cleanly.
    let ok = matches!(outcome.as_slice(), [f] if f.starts_with("failed"))
        || matches!(outcome.as_slice(), [m, l] if m == "made" && l.contains("closed cleanly"));
    assert!(ok, "{outcome:?}");
    drop(outside);
}
