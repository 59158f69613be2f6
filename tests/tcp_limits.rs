//! Listener limits over real TCP: `max_connections` closes connections
//! over the limit at once (never building a protocol for them) and admits
//! new ones as soon as a live one ends; a taken port is a clear error.

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use common::{client, in_thread, round_trip, wait_for};
use twistor::prelude::*;
use twistor::transports::{listen_tcp_with, ListenOptions};

struct Echo;

impl Protocol for Echo {
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        t.write(data);
    }
}

#[test]
fn max_connections_refuses_the_excess_and_admits_again_when_one_ends() {
    let mut r = common::reactor();
    let built = Rc::new(RefCell::new(0));
    let b2 = built.clone();
    let opts = ListenOptions {
        max_connections: Some(2),
        ..ListenOptions::default()
    };
    let addr = listen_tcp_with(
        &mut r,
        "127.0.0.1:0",
        move |_: &Address| {
            *b2.borrow_mut() += 1;
            Echo
        },
        opts,
    )
    .unwrap()
    .local_addr();
    let a = client(addr);
    let mut b = client(addr);
    let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    assert_eq!(in_thread(&mut r, move || round_trip(&mut a2, b"a")), b"a");
    assert_eq!(in_thread(&mut r, move || round_trip(&mut b2, b"b")), b"b");
    // The third is over the limit: closed at once, no protocol built.
    let mut c = client(addr);
    let got = in_thread(&mut r, move || common::read_to_eof(&mut c));
    assert!(got.is_empty());
    assert_eq!(*built.borrow(), 2);
    // One ends; a new connection is admitted.
    a.shutdown(std::net::Shutdown::Both).unwrap();
    let mut a3 = a.try_clone().unwrap();
    assert!(in_thread(&mut r, move || common::read_to_eof(&mut a3)).is_empty());
    wait_for(&mut r, "the first connection to go", |r| r.handler_count() == 2);
    let mut d = client(addr);
    assert_eq!(in_thread(&mut r, move || round_trip(&mut d, b"d")), b"d");
    assert_eq!(*built.borrow(), 3);
    assert_eq!(in_thread(&mut r, move || round_trip(&mut b, b"b")), b"b");
}

#[test]
fn listening_on_a_taken_port_is_a_clear_error() {
    let mut r = common::reactor();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let e = listen_tcp(&mut r, addr, |_: &Address| Echo).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
    assert_eq!(r.handler_count(), 0);
}

/// Serves one connection, then stops its listener from `connection_made`.
struct OnlyOne {
    port: Rc<RefCell<Option<twistor::ListeningPort>>>,
}

impl Protocol for OnlyOne {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        if let Some(port) = self.port.borrow_mut().take() {
            port.stop_listening(t.reactor());
        }
    }
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        t.write(data);
    }
}

#[test]
fn stop_listening_in_connection_made_stops_before_the_next_accept() {
    let mut r = common::reactor();
    let built = Rc::new(RefCell::new(0));
    let port: Rc<RefCell<Option<twistor::ListeningPort>>> = Rc::default();
    let (b2, p2) = (built.clone(), port.clone());
    let listening = twistor::listen_tcp(&mut r, "127.0.0.1:0", move |_: &Address| {
        *b2.borrow_mut() += 1;
        OnlyOne { port: p2.clone() }
    })
    .unwrap();
    let addr = listening.local_addr();
    *port.borrow_mut() = Some(listening);
    // Five connections wait in the backlog before the loop first runs, so
    // one accept event sees them all.
    let clients: Vec<_> = (0..5).map(|_| client(addr)).collect();
    let mut first = clients[0].try_clone().unwrap();
    assert_eq!(in_thread(&mut r, move || round_trip(&mut first, b"x")), b"x");
    wait_for(&mut r, "the listener to go", |r| r.handler_count() == 1);
    assert_eq!(*built.borrow(), 1, "protocols built after the listener stopped");
    drop(clients);
}
