//! The write buffer's hard cap (invariant 8): the water marks only
//! advise, so a protocol that ignores `pause_writing` (the lab echo) facing
//! a peer that writes and never reads must still be bounded. Past the cap
//! the connection is aborted with `Reason::Limit`. Real loopback peers.

mod common;

use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use common::wait_for;
use twistor::prelude::*;
use twistor::reactor::DEFAULT_MAX_WRITE_BUFFER;

#[derive(Default)]
struct Seen {
    peak: usize,
    cap: Option<usize>,
    lost: Vec<Reason>,
}

/// The lab's echo: writes back whatever comes, never looks at flow
/// control. With `cap`, it sets its own connection's hard cap first.
struct Echo {
    cap: Option<usize>,
    seen: Rc<RefCell<Seen>>,
}

impl Protocol for Echo {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        if let Some(cap) = self.cap {
            t.set_max_write_buffer(cap);
        }
        self.seen.borrow_mut().cap = t.max_write_buffer();
    }
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        t.write(data);
        let mut s = self.seen.borrow_mut();
        s.peak = s.peak.max(t.write_buffer_size());
    }
    fn connection_lost(&mut self, _: &mut dyn Transport, reason: &Reason) {
        self.seen.borrow_mut().lost.push(reason.clone());
    }
}

/// A client that writes up to `total` bytes and never reads; it stops
/// at the first error (the server's abort). Sets `done` when it stops
/// writing, and keeps the socket open until `release` says so (closing
/// it with unread data would reset the connection).
fn firehose(
    addr: SocketAddr,
    total: usize,
    done: Arc<AtomicBool>,
    release: mpsc::Receiver<()>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut s = common::client(addr);
        let chunk = vec![b'z'; 64 * 1024];
        let mut sent = 0;
        while sent < total {
            match s.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        done.store(true, Ordering::Release);
        let _ = release.recv_timeout(common::WAIT);
        sent
    })
}

fn run(cap: Option<usize>, total: usize) -> Rc<RefCell<Seen>> {
    let mut r = common::reactor();
    let seen: Rc<RefCell<Seen>> = Rc::default();
    let s2 = seen.clone();
    let port = listen_tcp(&mut r, "127.0.0.1:0", move |_: &Address| Echo {
        cap,
        seen: s2.clone(),
    })
    .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let (release, rx) = mpsc::channel();
    let client = firehose(port.local_addr(), total, done.clone(), rx);
    let s3 = seen.clone();
    wait_for(
        &mut r,
        "the connection to end or the client to finish",
        move |_| !s3.borrow().lost.is_empty() || done.load(Ordering::Acquire),
    );
    let s4 = seen.clone();
    // If the client finished first, the server may still be reading.
    let _ = r.run_until(common::WAIT, move |_| !s4.borrow().lost.is_empty());
    let _ = release.send(());
    r.stop();
    let _ = r.run_until(common::WAIT, |r| r.handler_count() == 0);
    drop(r);
    client.join().unwrap();
    seen
}

#[test]
fn the_lab_echo_facing_a_peer_that_never_reads_stays_bounded() {
    // Four times the default cap, never read: without a cap the server
    // would buffer nearly all of it.
    let seen = run(None, 4 * DEFAULT_MAX_WRITE_BUFFER);
    let s = seen.borrow();
    assert!(matches!(s.lost.first(), Some(Reason::Limit(_))), "{:?}", s.lost);
    assert_eq!(s.lost.len(), 1);
    assert!(s.peak <= DEFAULT_MAX_WRITE_BUFFER, "peak {}", s.peak);
    assert_eq!(s.cap, Some(DEFAULT_MAX_WRITE_BUFFER));
}

#[test]
fn a_protocol_can_set_its_own_cap() {
    let cap = 256 * 1024;
    let seen = run(Some(cap), 64 << 20);
    let s = seen.borrow();
    assert!(matches!(s.lost.first(), Some(Reason::Limit(_))), "{:?}", s.lost);
    assert!(s.peak <= cap, "peak {}", s.peak);
    assert_eq!(s.cap, Some(cap));
}
