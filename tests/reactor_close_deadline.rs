//! The close deadline (invariant 8): a graceful close that cannot flush,
//! because the peer stopped reading, is aborted once the stream's close
//! timeout passes, reason `TimedOut`. Real loopback peers that never
//! read; the reactor runs on a manual clock, so the 30 s default is
//! crossed by advancing it, not by waiting.

mod common;

use std::cell::RefCell;
use std::net::TcpStream;
use std::rc::Rc;
use std::time::Duration;

use common::{client, wait_for};
use twistor::prelude::*;
use twistor::reactor::DEFAULT_CLOSE_TIMEOUT;

/// What the server's connection went through.
#[derive(Default)]
struct Seen {
    closing: bool,
    eof: bool,
    lost: Vec<Reason>,
}

/// How the flood ends once the peer's window is full.
#[derive(Clone, Copy)]
enum End {
    /// `lose_connection`.
    Close,
    /// `write_eof`; the peer's EOF then leaves nothing to do but flush.
    WriteEof,
}

/// Writes 256 KiB per step, one step per loop turn, until more is left
/// in its write buffer than the kernel could still take (the loopback
/// send buffer grows to 4 MiB at most here), then ends as told. Bounded:
/// 64 MiB at most.
struct Flood {
    end: End,
    sent: usize,
    seen: Rc<RefCell<Seen>>,
}

const STEP: usize = 256 * 1024;
/// What is left buffered when the flood ends: more than the kernel's
/// buffers can ever take from a peer that does not read.
const LEFT: usize = 6 << 20;

impl Flood {
    fn step(&mut self, t: &mut dyn Transport) {
        if t.is_closing() || self.seen.borrow().closing {
            return;
        }
        if t.write_buffer_size() >= LEFT || self.sent >= 64 << 20 {
            self.seen.borrow_mut().closing = true;
            match self.end {
                End::Close => t.lose_connection(),
                End::WriteEof => t.write_eof(),
            }
            return;
        }
        t.write(&[b'x'; STEP]);
        self.sent += STEP;
        let id = t.id();
        let _ = t
            .reactor()
            .call_on(id, |p, t| p.downcast_mut::<Flood>().unwrap().step(t));
    }
}

impl Protocol for Flood {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.step(t);
    }
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    fn eof_received(&mut self, _: &mut dyn Transport) -> bool {
        self.seen.borrow_mut().eof = true;
        // Stay open for writing: only the flush is left.
        true
    }
    fn connection_lost(&mut self, _: &mut dyn Transport, reason: &Reason) {
        self.seen.borrow_mut().lost.push(reason.clone());
    }
}

/// A manual-clock reactor with a flooding server and one client that
/// never reads; returns once the server has started its graceful close.
fn flooded(end: End) -> (Reactor, TcpStream, Rc<RefCell<Seen>>) {
    let mut r = Reactor::with_manual_clock().unwrap();
    let seen: Rc<RefCell<Seen>> = Rc::default();
    let s2 = seen.clone();
    let port = listen_tcp(&mut r, "127.0.0.1:0", move |_: &Address| Flood {
        end,
        sent: 0,
        seen: s2.clone(),
    })
    .unwrap();
    let c = client(port.local_addr());
    let s3 = seen.clone();
    wait_for(&mut r, "the server to start closing", move |_| {
        s3.borrow().closing
    });
    (r, c, seen)
}

#[test]
fn lose_connection_to_a_peer_that_never_reads_times_out() {
    let (mut r, _c, seen) = flooded(End::Close);
    // Just short of the deadline: still flushing, still holding its slot.
    r.advance(DEFAULT_CLOSE_TIMEOUT - Duration::from_secs(1));
    r.run_pending().unwrap();
    assert!(seen.borrow().lost.is_empty(), "{:?}", seen.borrow().lost);
    assert_eq!(r.handler_count(), 2);
    // Past it: aborted, reason timed out, the slot given back.
    r.advance(Duration::from_secs(2));
    r.run_pending().unwrap();
    let lost = &seen.borrow().lost;
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert!(matches!(lost[0], Reason::TimedOut), "{lost:?}");
    assert_eq!(r.handler_count(), 1, "only the listener is left");
}

#[test]
fn write_eof_then_the_peers_eof_times_out_too() {
    let (mut r, c, seen) = flooded(End::WriteEof);
    // The peer half-closes but still reads nothing: all that is left to
    // the connection is a flush that cannot finish.
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let s2 = seen.clone();
    wait_for(&mut r, "the peer's EOF", move |_| s2.borrow().eof);
    assert!(seen.borrow().lost.is_empty(), "{:?}", seen.borrow().lost);
    r.advance(DEFAULT_CLOSE_TIMEOUT + Duration::from_secs(1));
    r.run_pending().unwrap();
    let lost = &seen.borrow().lost;
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert!(matches!(lost[0], Reason::TimedOut), "{lost:?}");
    assert_eq!(r.handler_count(), 1);
}
