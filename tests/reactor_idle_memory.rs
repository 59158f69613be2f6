//! What an idle plain TCP connection costs the server, counted by a global
//! allocator that tracks the bytes live on the reactor's thread: 1,000 real
//! loopback connections, idle after connecting, and idle after echoing
//! one large message each. Invariant 8: an idle connection keeps no
//! buffer capacity beyond a small bound.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::Arc;

use common::wait_for;
use twistor::prelude::*;

/// Counts the bytes live that were allocated by the thread that opted in.
struct Live;

static LIVE: AtomicI64 = AtomicI64::new(0);

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn counted() -> bool {
    COUNTED.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Live {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if counted() {
            LIVE.fetch_add(l.size() as i64, Relaxed);
        }
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if counted() {
            LIVE.fetch_add(l.size() as i64, Relaxed);
        }
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if counted() {
            LIVE.fetch_add(new as i64 - l.size() as i64, Relaxed);
        }
        System.realloc(p, l, new)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if counted() {
            LIVE.fetch_sub(l.size() as i64, Relaxed);
        }
        System.dealloc(p, l)
    }
}

#[global_allocator]
static ALLOC: Live = Live;

const CONNS: usize = 1000;
/// The bound of issue "smaller idle connections": a quarter KiB.
const BOUND: i64 = 256;
/// One large message per connection: more than the reactor's read buffer
/// and more than a write chunk, so both paths are exercised.
const MESSAGE: usize = 100 * 1024;

/// The lab's echo, which never looks at flow control.
struct Echo(Rc<Cell<usize>>);

impl Protocol for Echo {
    fn connection_made(&mut self, _: &mut dyn Transport) {
        self.0.set(self.0.get() + 1);
    }
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        t.write(data);
    }
}

/// Open `n` clients to `addr` on another thread (not counted); each sends
/// `message` bytes and reads the echo back, then stays open and idle.
fn clients(r: &mut Reactor, addr: SocketAddr, n: usize, message: usize) -> Vec<TcpStream> {
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    let remote = r.remote();
    let h = std::thread::spawn(move || {
        let mut out = Vec::with_capacity(n);
        let data = vec![7u8; message];
        let mut back = vec![0u8; message];
        for _ in 0..n {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(common::WAIT)).unwrap();
            if message > 0 {
                s.write_all(&data).unwrap();
                s.read_exact(&mut back).expect("the echo");
                assert!(back.iter().all(|&b| b == 7));
            }
            out.push(s);
        }
        d2.store(true, Relaxed);
        let _ = remote.call(|_| {});
        out
    });
    wait_for(r, "the clients", |_| done.load(Relaxed));
    h.join().expect("client thread")
}

/// Bytes live on this thread per connection for `n` idle connections
/// that each first echoed `message` bytes.
fn per_connection(message: usize) -> i64 {
    COUNTED.with(|c| c.set(true));
    let mut r = common::reactor();
    let made = Rc::new(Cell::new(0));
    let m2 = made.clone();
    let port = listen_tcp(&mut r, "127.0.0.1:0", move |_: &Address| Echo(m2.clone())).unwrap();
    let addr = port.local_addr();
    // Warm up: the read buffer, the pools, the listener's bookkeeping.
    let warm = clients(&mut r, addr, 1, MESSAGE);
    drop(warm);
    wait_for(&mut r, "the warm-up connection to go", |r| r.handler_count() == 1);
    let before = LIVE.load(Relaxed) - r.write_pool_bytes() as i64;
    let conns = clients(&mut r, addr, CONNS, message);
    let want = CONNS + 1;
    wait_for(&mut r, "every connection", |_| made.get() == want);
    // Each client read its whole echo before the next one connected, so
    // every write buffer has drained by now.
    // The reactor's pool of drained write chunks is shared by every
    // connection and bounded on its own (how full it is depends on how
    // the kernel split the large echoes): it is not a connection's cost.
    let pooled = r.write_pool_bytes();
    assert!(
        pooled <= twistor::reactor::DEFAULT_WRITE_POOL,
        "the write pool holds {pooled} bytes"
    );
    let after = LIVE.load(Relaxed) - pooled as i64;
    assert_eq!(r.handler_count(), CONNS + 1);
    drop(conns);
    wait_for(&mut r, "the connections to close", |r| r.handler_count() == 1);
    COUNTED.with(|c| c.set(false));
    (after - before) / CONNS as i64
}

#[test]
fn an_idle_connection_costs_at_most_a_quarter_kib() {
    let fresh = per_connection(0);
    let used = per_connection(MESSAGE);
    eprintln!("bytes live per idle connection: {fresh} fresh, {used} after a {MESSAGE}-byte echo");
    assert!(fresh <= BOUND, "a fresh idle connection holds {fresh} bytes");
    assert!(
        used <= BOUND,
        "an idle connection holds {used} bytes after one large message"
    );
}
