//! Helpers shared by the integration tests: bounded waits on the reactor,
//! loopback listeners and clients, and a per-connection tally of the
//! callbacks the exactly-once invariant is about.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use twistor::prelude::*;
use twistor::reactor::Remote;

/// The bound on every wait: generous, so a loaded CI machine passes, and
/// finite, so a bug fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(20);

/// Run the reactor until `cond` holds; fail the test if it does not within
/// [`WAIT`].
pub fn wait_for(r: &mut Reactor, what: &str, cond: impl FnMut(&mut Reactor) -> bool) {
    let ok = r.run_until(WAIT, cond).expect("reactor loop failed");
    assert!(ok, "timed out waiting for {what}");
}

/// Run `f` on a thread while the reactor turns; return its result. The
/// thread wakes the loop when it is done, so the wait ends at once.
pub fn in_thread<T: Send + 'static>(r: &mut Reactor, f: impl FnOnce() -> T + Send + 'static) -> T {
    let remote = r.remote();
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    let h = std::thread::spawn(move || {
        // Report completion even if `f` panics, so the wait ends at once.
        struct Wake(Arc<AtomicBool>, Remote);
        impl Drop for Wake {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
                let _ = self.1.call(|_| {});
            }
        }
        let _wake = Wake(d2, remote);
        f()
    });
    wait_for(r, "a client thread", |_| done.load(Ordering::Acquire));
    h.join().expect("client thread")
}

/// A reactor on the real clock that never installs signal handlers (the
/// test process is shared by many tests).
pub fn reactor() -> Reactor {
    let mut r = Reactor::new().expect("create a reactor");
    r.set_install_signal_handlers(false);
    r
}

/// A blocking client to `addr` with read and write timeouts of [`WAIT`].
pub fn client(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to the test server");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    s
}

/// Read until EOF; panics on an error (a reset) or a timeout.
pub fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read until a clean EOF");
    out
}

/// Write `data` and read back exactly as many bytes.
pub fn round_trip(s: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    s.write_all(data).unwrap();
    let mut back = vec![0; data.len()];
    s.read_exact(&mut back).expect("read the reply");
    back
}

/// A loopback port on which nothing listens (bound, then released).
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Arm SO_LINGER with a zero timeout, so closing `s` sends RST.
pub fn set_linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized, initialised option.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt(SO_LINGER)");
}

/// Per-connection counts of the callbacks that must happen exactly once.
#[derive(Default, Debug)]
pub struct Tally {
    /// `connection_made` calls per connection.
    pub made: HashMap<ConnId, usize>,
    /// `connection_lost` reasons per connection.
    pub lost: HashMap<ConnId, Vec<Reason>>,
    /// Callbacks that arrived before `connection_made` or after
    /// `connection_lost`.
    pub out_of_order: Vec<String>,
}

/// A shared [`Tally`].
pub type SharedTally = Rc<RefCell<Tally>>;

impl Tally {
    /// A fresh shared tally.
    pub fn shared() -> SharedTally {
        Rc::new(RefCell::new(Tally::default()))
    }

    /// Record `connection_made` for `id`.
    pub fn made(&mut self, id: ConnId) {
        if self.lost.contains_key(&id) {
            self.out_of_order.push(format!("{id}: made after lost"));
        }
        *self.made.entry(id).or_default() += 1;
    }

    /// Record `connection_lost` for `id`.
    pub fn lost(&mut self, id: ConnId, reason: &Reason) {
        if !self.made.contains_key(&id) {
            self.out_of_order.push(format!("{id}: lost without made"));
        }
        self.lost.entry(id).or_default().push(reason.clone());
    }

    /// Record any other callback for `id`.
    pub fn other(&mut self, id: ConnId, what: &str) {
        if !self.made.contains_key(&id) || self.lost.contains_key(&id) {
            self.out_of_order.push(format!("{id}: {what} outside made..lost"));
        }
    }

    /// Connections that have been lost.
    pub fn lost_count(&self) -> usize {
        self.lost.len()
    }

    /// Assert that exactly `n` connections were seen, each made once and
    /// lost once, with nothing out of order.
    pub fn assert_exactly_once(&self, n: usize) {
        assert!(self.out_of_order.is_empty(), "{:?}", self.out_of_order);
        assert_eq!(self.made.len(), n, "connections made");
        assert_eq!(self.lost.len(), n, "connections lost");
        for (id, count) in &self.made {
            assert_eq!(*count, 1, "{id}: connection_made calls");
            let lost = self.lost.get(id).map_or(0, Vec::len);
            assert_eq!(lost, 1, "{id}: connection_lost calls: {:?}", self.lost.get(id));
        }
    }
}
