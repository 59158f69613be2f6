//! Invariant 6 over real TCP: a panic in a user callback ends only its own
//! connection (with `Reason::Panic`); a panicking factory, timer, `call_on`
//! closure or cross-thread call never takes the reactor down.

mod common;

use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;
use std::time::Duration;

use common::{client, in_thread, round_trip, wait_for, SharedTally, Tally};
use twistor::prelude::*;

/// Echo that panics on `boom`.
struct Fragile {
    tally: SharedTally,
}

impl Protocol for Fragile {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.tally.borrow_mut().made(t.id());
    }
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        if data.starts_with(b"boom") {
            t.write(b"never sent: the panic discards buffered output");
            panic!("boom in data_received");
        }
        t.write(data);
    }
    fn connection_lost(&mut self, t: &mut dyn Transport, reason: &Reason) {
        self.tally.borrow_mut().lost(t.id(), reason);
    }
}

fn server(r: &mut Reactor, tally: &SharedTally) -> std::net::SocketAddr {
    let t = tally.clone();
    let mut n = 0;
    listen_tcp(r, "127.0.0.1:0", move |_: &Address| {
        n += 1;
        // Every third connection's factory call panics.
        if n % 3 == 0 {
            panic!("factory panics for connection {n}");
        }
        Fragile { tally: t.clone() }
    })
    .unwrap()
    .local_addr()
}

#[test]
fn a_panicking_protocol_ends_only_its_own_connection() {
    let mut r = common::reactor();
    let tally = Tally::shared();
    let addr = server(&mut r, &tally);
    // Connections 1 and 2 are served; 3 hits the panicking factory.
    let mut a = client(addr);
    let mut b = client(addr);
    assert_eq!(run_trip(&mut r, &mut a, b"one"), b"one");
    assert_eq!(run_trip(&mut r, &mut b, b"two"), b"two");
    let mut refused = client(addr);
    let got = in_thread(&mut r, move || common::read_to_eof(&mut refused));
    assert!(got.is_empty(), "the refused connection is closed");
    // The listener survived the factory's panic.
    let mut c = client(addr);
    assert_eq!(run_trip(&mut r, &mut c, b"three"), b"three");

    // b panics: it is closed, with nothing more sent.
    b.write_all(b"boom").unwrap();
    let got = in_thread(&mut r, move || common::read_to_eof(&mut b));
    assert!(
        got.is_empty(),
        "output buffered before the panic was sent: {got:?}"
    );
    let t2 = tally.clone();
    wait_for(&mut r, "the panicked connection to be lost", move |_| {
        t2.borrow().lost_count() == 1
    });
    {
        let t = tally.borrow();
        let reasons: Vec<&Reason> = t.lost.values().map(|v| &v[0]).collect();
        assert!(
            matches!(reasons[0], Reason::Panic(m) if m.contains("boom in data_received")),
            "{reasons:?}"
        );
    }
    // The others carry on.
    assert_eq!(run_trip(&mut r, &mut a, b"still here"), b"still here");
    assert_eq!(run_trip(&mut r, &mut c, b"me too"), b"me too");
    drop((a, c));
    let t3 = tally.clone();
    wait_for(&mut r, "the rest to close", move |_| {
        t3.borrow().lost_count() == 3
    });
    let t = tally.borrow();
    t.assert_exactly_once(3);
    let clean = t.lost.values().filter(|v| v[0].is_clean()).count();
    assert_eq!(clean, 2);
}

/// A round trip through `s` while the reactor runs.
fn run_trip(r: &mut Reactor, s: &mut std::net::TcpStream, data: &'static [u8]) -> Vec<u8> {
    let mut s2 = s.try_clone().unwrap();
    in_thread(r, move || round_trip(&mut s2, data))
}

#[test]
fn panicking_timers_call_on_closures_and_thread_calls_do_not_kill_the_reactor() {
    let mut r = common::reactor();
    let tally = Tally::shared();
    let addr = server(&mut r, &tally);
    let mut a = client(addr);
    let mut b = client(addr);
    assert_eq!(run_trip(&mut r, &mut a, b"a"), b"a");
    assert_eq!(run_trip(&mut r, &mut b, b"b"), b"b");
    let ids: Vec<ConnId> = {
        let t = tally.borrow();
        let mut ids: Vec<ConnId> = t.made.keys().copied().collect();
        ids.sort();
        ids
    };

    let ran: Rc<RefCell<Vec<&'static str>>> = Rc::default();
    r.call_later(Duration::ZERO, |_| panic!("timer panics"));
    let x = ran.clone();
    r.call_later(Duration::from_millis(1), move |_| {
        x.borrow_mut().push("timer after")
    });
    let x = ran.clone();
    let mut beats = 0;
    let lc = LoopingCall::start(&mut r, Duration::from_millis(1), true, move |_| {
        beats += 1;
        x.borrow_mut().push("beat");
        if beats == 2 {
            panic!("looping call panics on its second beat");
        }
    });
    r.call_soon(|_| panic!("call_soon panics"));
    r.remote().call(|_| panic!("call_from_thread panics")).unwrap();
    r.defer_to_thread(|| 1, |_, _| panic!("defer_to_thread callback panics"));
    let x = ran.clone();
    r.defer_to_thread(
        || -> u32 { panic!("work panics on the pool") },
        move |_, res| {
            assert!(res.unwrap_err().contains("work panics"));
            x.borrow_mut().push("deferred error delivered");
        },
    );
    // A closure delivered to connection b panics: b ends, a does not.
    r.call_on(ids[1], |_, _| panic!("call_on closure panics"))
        .unwrap();
    let x = ran.clone();
    wait_for(&mut r, "the later work", move |r| {
        let x = x.borrow();
        x.contains(&"timer after") && x.contains(&"deferred error delivered") && !lc.running(r)
    });
    assert_eq!(ran.borrow().iter().filter(|s| **s == "beat").count(), 2);

    let got = in_thread(&mut r, move || common::read_to_eof(&mut b));
    assert!(got.is_empty());
    let t2 = tally.clone();
    wait_for(&mut r, "b to be lost", move |_| t2.borrow().lost_count() == 1);
    {
        let t = tally.borrow();
        let reason = &t.lost[&ids[1]][0];
        assert!(
            matches!(reason, Reason::Panic(m) if m.contains("call_on")),
            "{reason}"
        );
    }
    assert_eq!(run_trip(&mut r, &mut a, b"alive"), b"alive");
    // And the reactor still stops normally.
    r.call_later(Duration::from_millis(1), |r| r.stop());
    r.run().unwrap();
    let t = tally.borrow();
    t.assert_exactly_once(2);
}

#[test]
fn a_panic_in_connection_made_or_connection_lost_is_contained() {
    /// Panics where it is told to.
    struct Bad {
        in_made: bool,
        lost: Rc<RefCell<Vec<Reason>>>,
    }
    impl Protocol for Bad {
        fn connection_made(&mut self, _: &mut dyn Transport) {
            if self.in_made {
                panic!("connection_made panics");
            }
        }
        fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
            t.write(d);
        }
        fn connection_lost(&mut self, _: &mut dyn Transport, reason: &Reason) {
            self.lost.borrow_mut().push(reason.clone());
            panic!("connection_lost panics");
        }
    }
    let mut r = common::reactor();
    let lost: Rc<RefCell<Vec<Reason>>> = Rc::default();
    let l2 = lost.clone();
    let mut n = 0;
    let addr = listen_tcp(&mut r, "127.0.0.1:0", move |_: &Address| {
        n += 1;
        Bad {
            in_made: n == 1,
            lost: l2.clone(),
        }
    })
    .unwrap()
    .local_addr();
    let mut first = client(addr);
    let got = in_thread(&mut r, move || common::read_to_eof(&mut first));
    assert!(got.is_empty());
    let mut second = client(addr);
    assert_eq!(run_trip(&mut r, &mut second, b"ok"), b"ok");
    drop(second);
    let l3 = lost.clone();
    wait_for(&mut r, "both losses", move |_| l3.borrow().len() == 2);
    let lost = lost.borrow();
    assert!(
        matches!(&lost[0], Reason::Panic(m) if m.contains("connection_made")),
        "{}",
        lost[0]
    );
    assert!(lost[1].is_clean(), "{}", lost[1]);
    assert_eq!(r.handler_count(), 1, "only the listener is left");
}
