//! `ReconnectingClientFactory` over real TCP: it keeps trying while the
//! server is down, connects once it comes back on the same port,
//! reconnects after the connection is lost, and stops when told to.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use common::{closed_port, wait_for};
use twistor::prelude::*;
use twistor::ListeningPort;

#[derive(Default, Debug)]
struct Seen {
    failed: usize,
    lost: usize,
    made: usize,
}

/// A client that says hello and records its connections.
struct Hello(Rc<RefCell<Seen>>);

impl Protocol for Hello {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.0.borrow_mut().made += 1;
        t.write(b"hello");
    }
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
}

/// The server: counts hellos, and lets the test close its connections.
struct Server {
    hellos: Rc<RefCell<Vec<ConnId>>>,
}

impl Protocol for Server {
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        if data.starts_with(b"hello") {
            self.hellos.borrow_mut().push(t.id());
        }
    }
}

fn listen(r: &mut Reactor, port: u16, hellos: &Rc<RefCell<Vec<ConnId>>>) -> ListeningPort {
    let h = hellos.clone();
    listen_tcp(
        r,
        ("127.0.0.1:".to_string() + &port.to_string()).as_str(),
        move |_: &Address| Server { hellos: h.clone() },
    )
    .expect("listen again on the same port")
}

#[test]
fn reconnects_after_the_server_comes_back_and_after_a_lost_connection() {
    let mut r = common::reactor();
    let port = closed_port();
    let seen: Rc<RefCell<Seen>> = Rc::default();
    let (s1, s2, s3) = (seen.clone(), seen.clone(), seen.clone());
    let factory = ReconnectingClientFactory::new(move |_: &Address| Hello(s1.clone()))
        .initial_delay(Duration::from_millis(10))
        .max_delay(Duration::from_millis(50))
        .factor(2.0)
        .jitter(0.0)
        .on_failed(move |_, _, reason| {
            assert_eq!(
                reason.io_kind(),
                Some(std::io::ErrorKind::ConnectionRefused),
                "{reason}"
            );
            s2.borrow_mut().failed += 1;
        })
        .on_lost(move |_, _, _| s3.borrow_mut().lost += 1);
    let stopper = factory.stopper();
    connect_tcp(&mut r, "127.0.0.1", port, factory);

    // Down: it keeps failing and retrying.
    let s = seen.clone();
    wait_for(&mut r, "three failed attempts", move |_| s.borrow().failed >= 3);
    assert_eq!(seen.borrow().made, 0);

    // Back on the same port: it connects and says hello.
    let hellos: Rc<RefCell<Vec<ConnId>>> = Rc::default();
    let listener = listen(&mut r, port, &hellos);
    let h = hellos.clone();
    wait_for(&mut r, "the first hello", move |_| h.borrow().len() == 1);
    assert_eq!(seen.borrow().made, 1);

    // The server goes away: the connection is lost, attempts fail again.
    listener.stop_listening(&mut r);
    let first = hellos.borrow()[0];
    r.close(first).unwrap();
    let failed_before = seen.borrow().failed;
    let s = seen.clone();
    wait_for(&mut r, "the loss and two more failures", move |_| {
        let s = s.borrow();
        s.lost == 1 && s.failed >= failed_before + 2
    });

    // And back again: a second connection.
    let listener = listen(&mut r, port, &hellos);
    let h = hellos.clone();
    wait_for(&mut r, "the second hello", move |_| h.borrow().len() == 2);
    {
        let s = seen.borrow();
        assert_eq!(s.made, 2);
        assert_eq!(s.lost, 1);
    }

    // stop_trying: after this loss, no more attempts.
    stopper.stop_trying(&mut r);
    let second = hellos.borrow()[1];
    r.close(second).unwrap();
    let s = seen.clone();
    wait_for(&mut r, "the second loss", move |_| s.borrow().lost == 2);
    // Nothing left that could reconnect: no timer, only the listener.
    wait_for(&mut r, "the client to settle", |r| {
        r.timer_count() == 0 && r.handler_count() == 1
    });
    r.run_pending().unwrap();
    assert_eq!(hellos.borrow().len(), 2);
    assert_eq!(seen.borrow().made, 2);
    listener.stop_listening(&mut r);
}

#[test]
fn max_retries_gives_up_after_exactly_that_many_attempts() {
    let mut r = common::reactor();
    let failed = Rc::new(RefCell::new(0));
    let f2 = failed.clone();
    let factory = ReconnectingClientFactory::new(|_: &Address| Hello(Rc::default()))
        .initial_delay(Duration::from_millis(1))
        .max_delay(Duration::from_millis(5))
        .jitter(0.0)
        .max_retries(Some(3))
        .on_failed(move |_, _, _| *f2.borrow_mut() += 1);
    connect_tcp(&mut r, "127.0.0.1", closed_port(), factory);
    // The first attempt plus three retries, then nothing pending.
    let f3 = failed.clone();
    wait_for(&mut r, "the factory to give up", move |r| {
        *f3.borrow() >= 4 && r.timer_count() == 0 && r.handler_count() == 0
    });
    r.run_pending().unwrap();
    assert_eq!(*failed.borrow(), 4);
}

#[test]
fn stopping_the_reactor_ends_the_reconnecting_without_a_pending_retry() {
    let mut r = common::reactor();
    let hellos: Rc<RefCell<Vec<ConnId>>> = Rc::default();
    let listener = listen(&mut r, 0, &hellos);
    let seen: Rc<RefCell<Seen>> = Rc::default();
    let (s1, s2) = (seen.clone(), seen.clone());
    let factory = ReconnectingClientFactory::new(move |_: &Address| Hello(s1.clone()))
        .initial_delay(Duration::from_millis(1))
        .jitter(0.0)
        .on_lost(move |_, _, _| s2.borrow_mut().lost += 1);
    connect_tcp(&mut r, "127.0.0.1", listener.port(), factory);
    let h = hellos.clone();
    wait_for(&mut r, "the hello", move |_| h.borrow().len() == 1);
    r.call_later(Duration::ZERO, |r| r.stop());
    r.run().unwrap();
    // The loss was reported once, and no retry was left behind.
    assert_eq!(seen.borrow().lost, 1);
    assert_eq!(seen.borrow().made, 1);
    assert_eq!(r.timer_count(), 0, "a retry was scheduled while stopping");
}

/// Over TLS a failed handshake is a failed attempt: it counts towards
/// `max_retries` and grows the delay, although the TCP connection (and so
/// the TLS layer's `build_protocol`) succeeded. Only the application's
/// `connection_made`, after the handshake, starts the counting over.
#[test]
fn a_failed_tls_handshake_backs_off_and_counts_towards_max_retries() {
    use twistor::transports::tls::{generate_self_signed, ClientConfigBuilder};

    let mut r = common::reactor();
    let (server_config, _) = generate_self_signed(&["localhost"]).unwrap();
    let port = listen_tls(&mut r, "127.0.0.1:0", |_: &Address| Echo, server_config)
        .unwrap()
        .port();
    // Pinned to a certificate the server does not have: every handshake fails.
    let client_config = ClientConfigBuilder::new()
        .pinned(&"ab".repeat(32))
        .build()
        .unwrap();
    let seen: Rc<RefCell<Seen>> = Rc::default();
    let delays: Rc<RefCell<Vec<Duration>>> = Rc::default();
    let (s1, s2, d2) = (seen.clone(), seen.clone(), delays.clone());
    let factory = ReconnectingClientFactory::new(move |_: &Address| Hello(s1.clone()))
        .initial_delay(Duration::from_millis(5))
        .max_delay(Duration::from_secs(1))
        .factor(2.0)
        .jitter(0.0)
        .max_retries(Some(2))
        .on_failed(move |_, _, reason| {
            assert!(matches!(reason, Reason::Tls(_)), "{reason}");
            s2.borrow_mut().failed += 1;
        });
    let f = Rc::new(RefCell::new(factory));
    let probe = f.clone();
    connect_tls(&mut r, "127.0.0.1", port, Shared(f), client_config);
    // Each failure is followed by the delay the next retry waits for.
    let s = seen.clone();
    let mut last = 0;
    wait_for(&mut r, "the factory to give up", move |r| {
        let failed = s.borrow().failed;
        assert!(failed <= 3, "{failed} attempts: max_retries was ignored");
        if failed != last {
            last = failed;
            d2.borrow_mut().push(probe.borrow().current_delay());
        }
        failed >= 3 && r.timer_count() == 0 && r.handler_count() == 1
    });
    r.run_pending().unwrap();
    // The first attempt and two retries, then nothing.
    assert_eq!(seen.borrow().failed, 3);
    assert_eq!(seen.borrow().made, 0);
    // The delay doubled after each failed handshake that was retried (the
    // third failure gives up, and schedules nothing).
    assert_eq!(
        *delays.borrow(),
        vec![
            Duration::from_millis(10),
            Duration::from_millis(20),
            Duration::from_millis(20)
        ],
        "the delay did not grow with each failed handshake"
    );
}

/// Echoes (the TLS server's application protocol).
struct Echo;

impl Protocol for Echo {
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        t.write(data);
    }
}

/// A client factory shared with the test, which reads its state.
struct Shared(Rc<RefCell<ReconnectingClientFactory>>);

impl Factory for Shared {
    fn build_protocol(&mut self, addr: &Address) -> Option<Box<dyn Protocol>> {
        self.0.borrow_mut().build_protocol(addr)
    }
}

impl ClientFactory for Shared {
    fn started_connecting(&mut self, r: &mut Reactor, c: &Connector) {
        self.0.borrow_mut().started_connecting(r, c)
    }
    fn client_connection_failed(&mut self, r: &mut Reactor, c: &Connector, reason: &Reason) {
        self.0.borrow_mut().client_connection_failed(r, c, reason)
    }
    fn client_connection_lost(&mut self, r: &mut Reactor, c: &Connector, reason: &Reason) {
        self.0.borrow_mut().client_connection_lost(r, c, reason)
    }
}
