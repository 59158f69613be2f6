//! Invariant 2 over real TCP: every connection, however it ends, gets
//! exactly one `connection_made` and one `connection_lost`; every client
//! attempt ends in exactly one of `connection_made` or
//! `client_connection_failed`.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::thread;
use std::time::Duration;

use common::{client, closed_port, set_linger_zero, wait_for, SharedTally, Tally};
use twistor::prelude::*;
use twistor::transports::{connect_tcp_with, ConnectOptions};

/// The server side: the client's first byte says how the connection ends.
struct Closer {
    tally: SharedTally,
    mode: Option<u8>,
}

impl Protocol for Closer {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.tally.borrow_mut().made(t.id());
    }

    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        self.tally.borrow_mut().other(t.id(), "data_received");
        if self.mode.is_some() || data.is_empty() {
            return;
        }
        self.mode = Some(data[0]);
        match data[0] {
            // Server closes gracefully: the goodbye must arrive first.
            b'S' => {
                t.write(b"bye");
                t.lose_connection();
            }
            b'A' => {
                t.write(b"discarded by the abort");
                t.abort_connection();
            }
            // 'C' (client closes), 'R' (client resets), 'H' (half-close).
            _ => {}
        }
    }

    fn eof_received(&mut self, t: &mut dyn Transport) -> bool {
        self.tally.borrow_mut().other(t.id(), "eof_received");
        if self.mode == Some(b'H') {
            // Stay open after the peer's half-close, answer, then close.
            t.write(b"done");
            t.lose_connection();
            return true;
        }
        false
    }

    fn connection_lost(&mut self, t: &mut dyn Transport, reason: &Reason) {
        self.tally.borrow_mut().lost(t.id(), reason);
    }
}

/// One client connection that ends the way `mode` says.
fn one_client(addr: SocketAddr, mode: u8) {
    let mut s = client(addr);
    s.write_all(&[mode]).unwrap();
    match mode {
        b'C' => drop(s),
        b'S' => assert_eq!(common::read_to_eof(&mut s), b"bye"),
        b'A' => {
            // An abort is a reset or an EOF, never the discarded data.
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            assert!(buf.is_empty(), "aborted connection delivered {buf:?}");
        }
        b'R' => {
            set_linger_zero(&s);
            drop(s);
        }
        b'H' => {
            s.shutdown(Shutdown::Write).unwrap();
            assert_eq!(common::read_to_eof(&mut s), b"done");
        }
        _ => unreachable!(),
    }
}

#[test]
fn a_thousand_connections_closed_every_way_are_made_and_lost_exactly_once() {
    const MODES: [u8; 5] = [b'C', b'S', b'A', b'R', b'H'];
    const PER_THREAD: usize = 250;
    const THREADS: usize = 4;
    let total = PER_THREAD * THREADS;

    let mut r = common::reactor();
    let tally = Tally::shared();
    let t2 = tally.clone();
    let port = listen_tcp(&mut r, "127.0.0.1:0", move |_: &Address| Closer {
        tally: t2.clone(),
        mode: None,
    })
    .unwrap();
    let addr = port.local_addr();

    let clients: Vec<_> = (0..THREADS)
        .map(|k| {
            thread::spawn(move || {
                for i in 0..PER_THREAD {
                    one_client(addr, MODES[(i + k) % MODES.len()]);
                }
            })
        })
        .collect();

    let t3 = tally.clone();
    wait_for(&mut r, "every connection to be lost", move |_| {
        t3.borrow().lost_count() >= total
    });
    for c in clients {
        c.join().expect("a client thread failed");
    }
    // Nothing more may arrive: run what is left and look again.
    for _ in 0..10 {
        r.run_pending().unwrap();
    }
    let t = tally.borrow();
    t.assert_exactly_once(total);
    let clean = t.lost.values().filter(|v| v[0].is_clean()).count();
    let aborted = t
        .lost
        .values()
        .filter(|v| matches!(v[0], Reason::Aborted))
        .count();
    assert_eq!(aborted, total / MODES.len(), "aborts seen as Reason::Aborted");
    // Client close, server close and half-close are all orderly.
    assert!(clean >= 3 * total / MODES.len(), "clean closes: {clean}");
    // Only the listener is left.
    assert_eq!(r.handler_count(), 1);
}

/// The client side: a factory that counts attempts' outcomes.
struct Counting {
    tally: SharedTally,
    built: usize,
    failed: Vec<Reason>,
    lost: usize,
}

impl Factory for Counting {
    fn build_protocol(&mut self, _: &Address) -> Option<Box<dyn Protocol>> {
        self.built += 1;
        Some(Box::new(Closer {
            tally: self.tally.clone(),
            mode: Some(b'C'),
        }))
    }
}

impl ClientFactory for Counting {
    fn client_connection_failed(&mut self, _: &mut Reactor, _: &Connector, reason: &Reason) {
        self.failed.push(reason.clone());
    }
    fn client_connection_lost(&mut self, _: &mut Reactor, _: &Connector, _: &Reason) {
        self.lost += 1;
    }
}

/// Shares a [`Counting`] factory with the test body.
struct Shared(std::rc::Rc<std::cell::RefCell<Counting>>);

impl Factory for Shared {
    fn build_protocol(&mut self, a: &Address) -> Option<Box<dyn Protocol>> {
        self.0.borrow_mut().build_protocol(a)
    }
}

impl ClientFactory for Shared {
    fn client_connection_failed(&mut self, r: &mut Reactor, c: &Connector, reason: &Reason) {
        self.0.borrow_mut().client_connection_failed(r, c, reason)
    }
    fn client_connection_lost(&mut self, r: &mut Reactor, c: &Connector, reason: &Reason) {
        self.0.borrow_mut().client_connection_lost(r, c, reason)
    }
}

fn counting() -> (Shared, std::rc::Rc<std::cell::RefCell<Counting>>, SharedTally) {
    let tally = Tally::shared();
    let f = std::rc::Rc::new(std::cell::RefCell::new(Counting {
        tally: tally.clone(),
        built: 0,
        failed: Vec::new(),
        lost: 0,
    }));
    (Shared(f.clone()), f, tally)
}

#[test]
fn connect_to_a_closed_port_fails_exactly_once() {
    let mut r = common::reactor();
    let (factory, seen, tally) = counting();
    let opts = ConnectOptions {
        timeout: Duration::from_secs(5),
        ..ConnectOptions::default()
    };
    connect_tcp_with(&mut r, "127.0.0.1", closed_port(), factory, opts);
    let s2 = seen.clone();
    wait_for(&mut r, "the failure", move |_| !s2.borrow().failed.is_empty());
    // Nothing is left that could report a second outcome: no connect
    // timer, no socket handler.
    assert_eq!(r.timer_count(), 0, "the connect timeout must be cancelled");
    assert_eq!(r.handler_count(), 0, "the connecting socket must be gone");
    r.run_pending().unwrap();
    let s = seen.borrow();
    assert_eq!(s.failed.len(), 1, "{:?}", s.failed);
    assert_eq!(
        s.failed[0].io_kind(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "{}",
        s.failed[0]
    );
    assert_eq!(s.built, 0);
    assert!(tally.borrow().made.is_empty());
}

#[test]
fn reactor_to_reactor_connections_are_made_and_lost_exactly_once_on_both_ends() {
    // Both ends in one reactor: client connections from connect_tcp close
    // themselves in turn by lose_connection, abort and write_eof.
    const N: usize = 60;
    let mut r = common::reactor();
    let server_tally = Tally::shared();
    let st = server_tally.clone();
    let port = listen_tcp(&mut r, "127.0.0.1:0", move |_: &Address| Closer {
        tally: st.clone(),
        mode: None,
    })
    .unwrap();

    /// Closes itself once connected, in one of three ways.
    struct Ender {
        tally: SharedTally,
        how: usize,
    }
    impl Protocol for Ender {
        fn connection_made(&mut self, t: &mut dyn Transport) {
            self.tally.borrow_mut().made(t.id());
            match self.how % 3 {
                0 => {
                    t.write(b"C");
                    t.lose_connection();
                }
                1 => t.abort_connection(),
                _ => {
                    t.write(b"C");
                    t.write_eof();
                }
            }
        }
        fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
        fn connection_lost(&mut self, t: &mut dyn Transport, reason: &Reason) {
            self.tally.borrow_mut().lost(t.id(), reason);
        }
    }

    let client_tally = Tally::shared();
    let failed = std::rc::Rc::new(std::cell::Cell::new(0));
    let lost_hook = std::rc::Rc::new(std::cell::Cell::new(0));
    for how in 0..N {
        struct F {
            tally: SharedTally,
            how: usize,
            failed: std::rc::Rc<std::cell::Cell<usize>>,
            lost: std::rc::Rc<std::cell::Cell<usize>>,
        }
        impl Factory for F {
            fn build_protocol(&mut self, _: &Address) -> Option<Box<dyn Protocol>> {
                Some(Box::new(Ender {
                    tally: self.tally.clone(),
                    how: self.how,
                }))
            }
        }
        impl ClientFactory for F {
            fn client_connection_failed(&mut self, _: &mut Reactor, _: &Connector, _: &Reason) {
                self.failed.set(self.failed.get() + 1);
            }
            fn client_connection_lost(&mut self, _: &mut Reactor, _: &Connector, _: &Reason) {
                self.lost.set(self.lost.get() + 1);
            }
        }
        connect_tcp(
            &mut r,
            "127.0.0.1",
            port.port(),
            F {
                tally: client_tally.clone(),
                how,
                failed: failed.clone(),
                lost: lost_hook.clone(),
            },
        );
    }
    let (ct, st) = (client_tally.clone(), server_tally.clone());
    wait_for(&mut r, "both ends of every connection to be lost", move |_| {
        ct.borrow().lost_count() >= N && st.borrow().lost_count() >= N
    });
    for _ in 0..10 {
        r.run_pending().unwrap();
    }
    client_tally.borrow().assert_exactly_once(N);
    server_tally.borrow().assert_exactly_once(N);
    assert_eq!(failed.get(), 0);
    assert_eq!(lost_hook.get(), N, "client_connection_lost once per connection");
}

#[test]
fn a_refusing_or_panicking_client_factory_still_reports_exactly_one_outcome() {
    let mut r = common::reactor();
    let server = Tally::shared();
    let st = server.clone();
    let port = listen_tcp(&mut r, "127.0.0.1:0", move |_: &Address| Closer {
        tally: st.clone(),
        mode: None,
    })
    .unwrap();
    let (factory, seen, tally) = counting();
    struct Panicky(Shared);
    impl Factory for Panicky {
        fn build_protocol(&mut self, _: &Address) -> Option<Box<dyn Protocol>> {
            panic!("factory refuses by panicking")
        }
    }
    impl ClientFactory for Panicky {
        fn client_connection_failed(&mut self, r: &mut Reactor, c: &Connector, reason: &Reason) {
            self.0.client_connection_failed(r, c, reason)
        }
    }
    connect_tcp(&mut r, "127.0.0.1", port.port(), Panicky(factory));
    let s2 = seen.clone();
    wait_for(&mut r, "the failure", move |_| !s2.borrow().failed.is_empty());
    r.run_pending().unwrap();
    let s = seen.borrow();
    assert_eq!(s.failed.len(), 1);
    assert!(matches!(s.failed[0], Reason::Panic(_)), "{}", s.failed[0]);
    assert!(tally.borrow().made.is_empty());
}

/// Notes whether anything was left queued for the next turn when its
/// `connection_made` ran inside the accept loop.
struct QueueWatcher(std::rc::Rc<std::cell::RefCell<Vec<bool>>>);

impl Protocol for QueueWatcher {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        let queued = t.reactor().has_queued_work();
        self.0.borrow_mut().push(queued);
    }
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        t.write(data);
    }
}

#[test]
fn an_accepted_connection_is_dispatched_once() {
    let mut r = common::reactor();
    let seen: std::rc::Rc<std::cell::RefCell<Vec<bool>>> = Default::default();
    let s2 = seen.clone();
    let addr = listen_tcp(&mut r, "127.0.0.1:0", move |_: &Address| QueueWatcher(s2.clone()))
        .unwrap()
        .local_addr();
    let c = client(addr);
    let s3 = seen.clone();
    wait_for(&mut r, "connection_made", move |_| !s3.borrow().is_empty());
    // connection_made ran inside the accept loop, and no second dispatch of
    // the new connection waits on the requeue list.
    assert_eq!(*seen.borrow(), vec![false]);
    drop(c);
}
