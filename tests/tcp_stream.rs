//! The stream transport's contract over real TCP: pause/resume reading
//! (data and EOF that arrive while paused are delivered after resuming),
//! half-close from our side, calls to a connection that closes before they
//! are delivered, and a peer that resets while we still have data to send.

mod common;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::rc::Rc;

use common::{client, set_linger_zero, wait_for};
use twistor::prelude::*;

type Log = Rc<RefCell<Vec<String>>>;

/// Logs what it sees; behaviour chosen by `mode`.
struct Seen {
    log: Log,
    id: Rc<RefCell<Option<ConnId>>>,
    mode: &'static str,
}

impl Protocol for Seen {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        *self.id.borrow_mut() = Some(t.id());
        if self.mode == "paused" {
            t.pause_reading();
            assert!(!t.is_reading());
        }
        self.log.borrow_mut().push("made".into());
    }
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        self.log
            .borrow_mut()
            .push(format!("data {}", String::from_utf8_lossy(data)));
        match (self.mode, data) {
            ("half", b"x") => {
                t.write(b"reply");
                t.write_eof();
                t.write(b"ignored after write_eof");
            }
            ("late-call", _) => {
                t.abort_connection();
                let log = self.log.clone();
                let id = t.id();
                // Queued while the connection is still alive...
                t.reactor()
                    .call_on(id, move |_, _| log.borrow_mut().push("late call ran".into()))
                    .expect("still alive while the callback runs");
            }
            ("reset", b"go") => {
                // More than loopback buffers take, less than the hard cap.
                let chunk = vec![0u8; 1 << 20];
                for _ in 0..12 {
                    t.write(&chunk);
                }
                t.lose_connection();
            }
            _ => {}
        }
    }
    fn eof_received(&mut self, _: &mut dyn Transport) -> bool {
        self.log.borrow_mut().push("eof".into());
        false
    }
    fn connection_lost(&mut self, _: &mut dyn Transport, reason: &Reason) {
        let what = if reason.is_clean() {
            "clean".to_string()
        } else {
            reason.to_string()
        };
        self.log.borrow_mut().push(format!("lost {what}"));
    }
}

fn server(r: &mut Reactor, mode: &'static str) -> (std::net::SocketAddr, Log, Rc<RefCell<Option<ConnId>>>) {
    let log: Log = Rc::default();
    let id: Rc<RefCell<Option<ConnId>>> = Rc::default();
    let (l2, i2) = (log.clone(), id.clone());
    let addr = listen_tcp(r, "127.0.0.1:0", move |_: &Address| Seen {
        log: l2.clone(),
        id: i2.clone(),
        mode,
    })
    .unwrap()
    .local_addr();
    (addr, log, id)
}

fn lost(log: &Log) -> impl FnMut(&mut Reactor) -> bool {
    let log = log.clone();
    move |_| log.borrow().iter().any(|l| l.starts_with("lost"))
}

#[test]
fn data_and_eof_that_arrive_while_paused_are_delivered_after_resume_reading() {
    let mut r = common::reactor();
    let (addr, log, id) = server(&mut r, "paused");
    let mut c = client(addr);
    let l2 = log.clone();
    wait_for(&mut r, "the connection", move |_| !l2.borrow().is_empty());
    c.write_all(b"abc").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    // The bytes and the FIN are in the server's socket now; while paused,
    // turns of the loop deliver nothing.
    for _ in 0..20 {
        r.run_pending().unwrap();
    }
    assert_eq!(*log.borrow(), vec!["made"]);
    let id = id.borrow().unwrap();
    r.call_on(id, |_, t| {
        t.resume_reading();
        assert!(t.is_reading());
    })
    .unwrap();
    wait_for(&mut r, "the close", lost(&log));
    assert_eq!(*log.borrow(), vec!["made", "data abc", "eof", "lost clean"]);
    assert!(common::read_to_eof(&mut c).is_empty());
}

#[test]
fn write_eof_half_closes_our_side_and_reading_goes_on() {
    let mut r = common::reactor();
    let (addr, log, _) = server(&mut r, "half");
    let mut c = client(addr);
    c.write_all(b"x").unwrap();
    let mut c2 = c.try_clone().unwrap();
    let got = common::in_thread(&mut r, move || common::read_to_eof(&mut c2));
    assert_eq!(got, b"reply", "writes after write_eof are dropped");
    // Our side is closed for writing, not for reading.
    c.write_all(b"more").unwrap();
    let l2 = log.clone();
    wait_for(&mut r, "data after the half-close", move |_| {
        l2.borrow().iter().any(|l| l == "data more")
    });
    c.shutdown(Shutdown::Write).unwrap();
    wait_for(&mut r, "the close", lost(&log));
    for _ in 0..5 {
        r.run_pending().unwrap();
    }
    assert_eq!(
        *log.borrow(),
        vec!["made", "data x", "data more", "eof", "lost clean"]
    );
}

#[test]
fn a_call_queued_to_a_connection_that_closes_first_is_dropped() {
    let mut r = common::reactor();
    let (addr, log, id) = server(&mut r, "late-call");
    let mut c = client(addr);
    c.write_all(b"anything").unwrap();
    wait_for(&mut r, "the close", lost(&log));
    for _ in 0..5 {
        r.run_pending().unwrap();
    }
    assert_eq!(
        *log.borrow(),
        vec!["made", "data anything", "lost connection aborted"]
    );
    let id = id.borrow().unwrap();
    assert!(!r.contains(id));
    assert_eq!(
        r.write_to(id, b"x".to_vec()),
        Err(twistor::reactor::CallError::Gone)
    );
}

#[test]
fn a_peer_reset_with_output_pending_is_one_lost_connection_not_a_clean_close() {
    let mut r = common::reactor();
    let (addr, log, _) = server(&mut r, "reset");
    let mut c = client(addr);
    c.write_all(b"go").unwrap();
    // Read a little of the 12 MiB, then reset.
    let l2 = log.clone();
    wait_for(&mut r, "the request", move |_| l2.borrow().len() >= 2);
    let mut buf = [0u8; 4096];
    c.read_exact(&mut buf).unwrap();
    set_linger_zero(&c);
    drop(c);
    wait_for(&mut r, "the loss", lost(&log));
    for _ in 0..5 {
        r.run_pending().unwrap();
    }
    let log = log.borrow();
    let losses: Vec<&String> = log.iter().filter(|l| l.starts_with("lost")).collect();
    assert_eq!(losses.len(), 1, "{log:?}");
    assert!(losses[0].starts_with("lost connection lost"), "{log:?}");
}
