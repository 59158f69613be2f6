//! The framings and policies over real loopback TCP, with a plain blocking
//! std client in a thread. Every wait is bounded.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::rc::Rc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use twistor_protocols::{Echo, IdleTimeout, LimitConnections, LineControl, LineHandler, LineReceiver};
use twistor_reactor::{Address, Protocol, Reactor, Reason, Transport};
use twistor_transports::listen_tcp;

const BOUND: Duration = Duration::from_secs(10);

/// Sends the client thread's result and wakes the reactor to look at it.
struct Waking<T>(mpsc::Sender<T>, twistor_reactor::Remote);

impl<T> Waking<T> {
    fn send(&self, v: T) -> Result<(), mpsc::SendError<T>> {
        self.0.send(v)?;
        let _ = self.1.call(|_| {});
        Ok(())
    }
}

struct Upper(Rc<RefCell<Vec<Reason>>>);

impl LineHandler for Upper {
    fn line_received(&mut self, c: &mut LineControl<'_>, line: &[u8]) {
        c.send_line(&line.to_ascii_uppercase());
    }
    fn connection_lost(&mut self, _: &mut LineControl<'_>, reason: &Reason) {
        self.0.borrow_mut().push(reason.clone());
    }
}

fn client(addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(BOUND)).unwrap();
    s
}

#[test]
fn line_receiver_over_tcp_and_over_long_line() {
    let mut r = Reactor::new().unwrap();
    let lost = Rc::new(RefCell::new(Vec::new()));
    let l2 = lost.clone();
    let port = listen_tcp(&mut r, "127.0.0.1:0", move |_: &Address| {
        LineReceiver::new(Upper(l2.clone())).with_max_length(1024)
    })
    .unwrap();
    let addr = port.local_addr();
    let (tx, rx) = mpsc::channel();
    let tx = Waking(tx, r.remote());
    let th = thread::spawn(move || {
        let mut s = client(addr);
        s.write_all(b"hello\r\nwor").unwrap();
        s.write_all(b"ld\r\n").unwrap();
        let mut got = vec![0; 14];
        s.read_exact(&mut got).unwrap();
        // Now a line far over the limit: the server closes.
        let _ = s.write_all(&[b'x'; 8192]);
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        tx.send((got, rest)).unwrap();
    });
    let mut result = None;
    assert!(r
        .run_until(BOUND, |_| {
            result = result.take().or_else(|| rx.try_recv().ok());
            result.is_some() && !lost.borrow().is_empty()
        })
        .unwrap());
    th.join().unwrap();
    let (got, rest) = result.unwrap();
    assert_eq!(got, b"HELLO\r\nWORLD\r\n");
    assert!(rest.is_empty());
    assert!(
        matches!(lost.borrow()[..], [Reason::Limit(_)]),
        "{:?}",
        lost.borrow()
    );
}

#[test]
fn idle_timeout_over_tcp() {
    let mut r = Reactor::new().unwrap();
    let lost = Rc::new(RefCell::new(Vec::new()));
    let l2 = lost.clone();
    let port = listen_tcp(&mut r, "127.0.0.1:0", move |_: &Address| {
        IdleTimeout::new(LineReceiver::new(Upper(l2.clone())), Duration::from_millis(300))
    })
    .unwrap();
    let addr = port.local_addr();
    let (tx, rx) = mpsc::channel();
    let tx = Waking(tx, r.remote());
    let th = thread::spawn(move || {
        let mut s = client(addr);
        s.write_all(b"ping\r\n").unwrap();
        let mut all = Vec::new();
        // Sends nothing more: the server must close after 300 ms idle.
        let res = s.read_to_end(&mut all);
        tx.send((res.is_ok(), all)).unwrap();
    });
    let mut result = None;
    assert!(r
        .run_until(BOUND, |_| {
            result = result.take().or_else(|| rx.try_recv().ok());
            result.is_some() && !lost.borrow().is_empty()
        })
        .unwrap());
    th.join().unwrap();
    let (clean_eof, all) = result.unwrap();
    assert!(
        clean_eof,
        "the client saw an orderly close, not a reset or its own timeout"
    );
    assert_eq!(all, b"PING\r\n");
    assert!(matches!(lost.borrow()[..], [Reason::TimedOut]));
}

/// Reports its end on a channel the client thread can wait on.
struct Tell(Echo, mpsc::Sender<()>);

impl Protocol for Tell {
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        self.0.data_received(t, data);
    }
    fn connection_lost(&mut self, _: &mut dyn Transport, _: &Reason) {
        let _ = self.1.send(());
    }
}

#[test]
fn connection_limit_over_tcp() {
    let mut r = Reactor::new().unwrap();
    let (lost_tx, lost_rx) = mpsc::channel();
    let factory = LimitConnections::new(move |_: &Address| Tell(Echo, lost_tx.clone()), 1);
    let counter = factory.counter();
    let port = listen_tcp(&mut r, "127.0.0.1:0", factory).unwrap();
    let addr = port.local_addr();
    let (tx, rx) = mpsc::channel();
    let tx = Waking(tx, r.remote());
    let th = thread::spawn(move || {
        let echo = |s: &mut TcpStream| {
            s.write_all(b"a").ok()?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b).ok()?;
            Some(b[0])
        };
        let mut first = client(addr);
        let a = echo(&mut first);
        // Over the limit: accepted by the kernel, closed by the listener.
        let mut second = client(addr);
        let b = echo(&mut second);
        // Free the slot; wait until the server has seen it go.
        first.shutdown(Shutdown::Both).unwrap();
        let freed = lost_rx.recv_timeout(BOUND).is_ok();
        let mut third = client(addr);
        let c = echo(&mut third);
        tx.send((a, b, freed, c)).unwrap();
    });
    let mut result = None;
    assert!(r
        .run_until(BOUND, |_| {
            result = result.take().or_else(|| rx.try_recv().ok());
            result.is_some()
        })
        .unwrap());
    th.join().unwrap();
    assert_eq!(result.unwrap(), (Some(b'a'), None, true, Some(b'a')));
    assert!(counter.get() <= 1, "the third connection is the only one counted");
}

type Users = Rc<RefCell<Vec<twistor_reactor::ConnId>>>;

/// The crate docs' chat server.
struct Chat {
    users: Users,
}

impl LineHandler for Chat {
    fn connection_made(&mut self, c: &mut LineControl<'_>) {
        self.users.borrow_mut().push(c.id());
        c.send_line(b"welcome");
    }
    fn line_received(&mut self, c: &mut LineControl<'_>, line: &[u8]) {
        let msg = [
            b"<".as_slice(),
            &c.peer().ip().unwrap().to_string().into_bytes(),
            b"> ",
            line,
            b"\r\n",
        ]
        .concat();
        let me = c.id();
        for &id in self.users.borrow().iter().filter(|&&id| id != me) {
            let _ = c.reactor().write_to(id, msg.clone());
        }
    }
    fn connection_lost(&mut self, c: &mut LineControl<'_>, _: &Reason) {
        let me = c.id();
        self.users.borrow_mut().retain(|&id| id != me);
    }
}

#[test]
fn chat_broadcast_over_tcp() {
    let mut r = Reactor::new().unwrap();
    let users = Users::default();
    let u2 = users.clone();
    let port = listen_tcp(&mut r, "127.0.0.1:0", move |_: &Address| {
        LineReceiver::new(Chat { users: u2.clone() })
    })
    .unwrap();
    let addr = port.local_addr();
    let (tx, rx) = mpsc::channel();
    let tx = Waking(tx, r.remote());
    let th = thread::spawn(move || {
        let mut welcome = [0u8; 9];
        let mut bob = client(addr);
        bob.read_exact(&mut welcome).unwrap();
        let mut alice = client(addr);
        alice.read_exact(&mut welcome).unwrap();
        alice.write_all(b"hi all\r\n").unwrap();
        let mut got = [0u8; 20];
        bob.read_exact(&mut got).unwrap();
        drop(alice);
        // Bob's next line reaches nobody; the server must not choke on
        // Alice's stale id either.
        bob.write_all(b"anyone?\r\n").unwrap();
        tx.send(got.to_vec()).unwrap();
    });
    let mut result = None;
    assert!(r
        .run_until(BOUND, |_| {
            result = result.take().or_else(|| rx.try_recv().ok());
            result.is_some()
        })
        .unwrap());
    th.join().unwrap();
    assert_eq!(result.unwrap(), b"<127.0.0.1> hi all\r\n");
}
