//! `Reactor::remove` on a live stream ends it properly: exactly one
//! `connection_lost` (reason aborted) and the lost hook runs, so a
//! listener's connection count is given back. Whether the stream is
//! removed from outside (another connection, a timer, the test) or by
//! its own protocol during a callback. Real loopback connections.

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use common::{client, in_thread, round_trip, wait_for, SharedTally, Tally};
use twistor::prelude::*;
use twistor::transports::{listen_tcp_with, ListenOptions};

/// Echoes, tallies, and on "die" removes its own connection.
struct Tallied {
    tally: SharedTally,
    ids: Rc<RefCell<Vec<ConnId>>>,
}

impl Protocol for Tallied {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.tally.borrow_mut().made(t.id());
        self.ids.borrow_mut().push(t.id());
    }
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        if data == b"die" {
            let id = t.id();
            t.reactor().remove(id);
            return;
        }
        t.write(data);
    }
    fn connection_lost(&mut self, t: &mut dyn Transport, reason: &Reason) {
        self.tally.borrow_mut().lost(t.id(), reason);
    }
}

fn server(r: &mut Reactor) -> (std::net::SocketAddr, SharedTally, Rc<RefCell<Vec<ConnId>>>) {
    let tally = Tally::shared();
    let ids: Rc<RefCell<Vec<ConnId>>> = Rc::default();
    let (t2, i2) = (tally.clone(), ids.clone());
    let opts = ListenOptions {
        max_connections: Some(1),
        ..ListenOptions::default()
    };
    let port = listen_tcp_with(
        r,
        "127.0.0.1:0",
        move |_: &Address| Tallied {
            tally: t2.clone(),
            ids: i2.clone(),
        },
        opts,
    )
    .unwrap();
    (port.local_addr(), tally, ids)
}

#[test]
fn removing_a_stream_from_outside_ends_it_and_frees_its_listener_slot() {
    let mut r = common::reactor();
    let (addr, tally, ids) = server(&mut r);
    // Each client stays open (a clone goes to the thread that uses it).
    let a = client(addr);
    let mut a2 = a.try_clone().unwrap();
    assert_eq!(in_thread(&mut r, move || round_trip(&mut a2, b"a")), b"a");
    let id = ids.borrow()[0];
    r.remove(id);
    assert!(!r.contains(id));
    {
        let t = tally.borrow();
        t.assert_exactly_once(1);
        assert!(matches!(t.lost[&id][0], Reason::Aborted), "{:?}", t.lost);
    }
    // The listener counted it out: with a limit of one, a new client is served.
    let b = client(addr);
    let mut b2 = b.try_clone().unwrap();
    assert_eq!(in_thread(&mut r, move || round_trip(&mut b2, b"b")), b"b");
    let second = ids.borrow()[1];
    r.remove(second);
    tally.borrow().assert_exactly_once(2);
}

#[test]
fn a_protocol_that_removes_its_own_connection_is_lost_once() {
    let mut r = common::reactor();
    let (addr, tally, ids) = server(&mut r);
    let mut a = client(addr);
    std::io::Write::write_all(&mut a, b"die").unwrap();
    let t2 = tally.clone();
    wait_for(&mut r, "the connection to go", move |_| {
        t2.borrow().lost_count() == 1
    });
    let id = ids.borrow()[0];
    tally.borrow().assert_exactly_once(1);
    assert!(matches!(tally.borrow().lost[&id][0], Reason::Aborted));
    // ... and its listener slot is free again.
    let mut b = client(addr);
    assert_eq!(in_thread(&mut r, move || round_trip(&mut b, b"b")), b"b");
}
