//! The per-address connection cap (Twisted's
//! `policies.LimitConnectionsByPeer`): IPv4, IPv6 by /64, IPv4-mapped IPv6
//! counted as IPv4, slots freed by a clean close, a reset and a panic in
//! `connection_made`, and over real loopback TCP.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use twistor_protocols::{Echo, LimitConnections};
use twistor_reactor::testing::{MemoryPair, Recorder};
use twistor_reactor::{Address, Factory, Protocol, Reactor, Reason, Transport};
use twistor_transports::listen_tcp;

const BOUND: Duration = Duration::from_secs(30);

fn at(s: &str) -> Address {
    Address::Inet(s.parse::<SocketAddr>().unwrap())
}

#[test]
fn per_peer_cap_by_address_family() {
    let mut f = LimitConnections::new(|_: &Address| Echo, 100).with_max_per_peer(2);
    let a1 = f.build_protocol(&at("192.0.2.1:1000"));
    let a2 = f.build_protocol(&at("192.0.2.1:1001"));
    assert!(a1.is_some() && a2.is_some());
    // The same host over IPv4-mapped IPv6 is the same peer.
    assert!(f.build_protocol(&at("[::ffff:192.0.2.1]:1002")).is_none());
    assert!(f.build_protocol(&at("192.0.2.1:1003")).is_none());
    // Another IPv4 host is not.
    let b = f.build_protocol(&at("192.0.2.2:1000"));
    assert!(b.is_some());
    // IPv6: one /64 is one peer.
    let c1 = f.build_protocol(&at("[2001:db8:1:2::1]:1000"));
    let c2 = f.build_protocol(&at("[2001:db8:1:2:ffff::9]:1000"));
    assert!(c1.is_some() && c2.is_some());
    assert!(f.build_protocol(&at("[2001:db8:1:2::77]:1000")).is_none());
    assert!(f.build_protocol(&at("[2001:db8:1:3::1]:1000")).is_some());
    assert_eq!(f.peers(), 3);
    // A slot freed is a slot again.
    drop(a1);
    assert!(f.build_protocol(&at("[::ffff:192.0.2.1]:1004")).is_some());
    // Non-IP addresses are not capped per peer.
    let unix: Vec<_> = (0..5).map(|_| f.build_protocol(&Address::Unknown)).collect();
    assert!(unix.iter().all(Option::is_some));
}

#[test]
fn per_peer_counts_return_to_zero_and_forget_the_peer() {
    let mut f = LimitConnections::new(|_: &Address| Recorder::default(), 10).with_max_per_peer(1);
    let server = f.build_protocol(&at("198.51.100.7:5")).unwrap();
    let mut pair = MemoryPair::new(Box::new(Recorder::default()), server).unwrap();
    pair.pump();
    assert!(f.build_protocol(&at("198.51.100.7:6")).is_none());
    pair.with_client(|_, t| t.abort_connection());
    assert!(pair.is_closed());
    assert_eq!(f.peers(), 0, "no entry is kept for a peer with no connection");
    assert_eq!(f.active(), 0);
    assert!(f.build_protocol(&at("198.51.100.7:7")).is_some());
}

/// Echoes and reports its end so the client thread can wait for it; the
/// first one built panics in `connection_made` instead, and its slot must
/// come back all the same.
struct Tell {
    boom: bool,
    /// Sends `boom` when the connection ends.
    lost: mpsc::Sender<bool>,
}

impl Protocol for Tell {
    fn connection_made(&mut self, _: &mut dyn Transport) {
        assert!(!self.boom, "boom (expected by the test)");
    }
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        Echo.data_received(t, data);
    }
    fn connection_lost(&mut self, _: &mut dyn Transport, _: &Reason) {
        let _ = self.lost.send(self.boom);
    }
}

/// Close with a RST (SO_LINGER 0), as a crashing peer does.
fn reset(s: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a valid `linger` of the size given.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    drop(s);
}

fn echo(s: &mut TcpStream) -> Option<u8> {
    s.set_read_timeout(Some(BOUND)).unwrap();
    s.write_all(b"a").ok()?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).ok()?;
    Some(b[0])
}

/// One client at a time per address over loopback: a second is refused, a
/// reset (SO_LINGER 0) frees the slot, and so does a panicking
/// `connection_made`.
fn per_peer_over_tcp(host: &str) {
    let mut r = Reactor::new().unwrap();
    let (lost_tx, lost_rx) = mpsc::channel();
    let mut first_built = true;
    let factory = LimitConnections::new(
        move |_: &Address| Tell {
            boom: std::mem::replace(&mut first_built, false),
            lost: lost_tx.clone(),
        },
        100,
    )
    .with_max_per_peer(1);
    let counter = factory.counter();
    let port = listen_tcp(&mut r, format!("{host}:0"), factory).unwrap();
    let addr = port.local_addr();
    let (tx, rx) = mpsc::channel();
    let remote = r.remote();
    let th = thread::spawn(move || {
        // The first connection's protocol panics: it must be closed and
        // its slot freed (the next connection is served).
        let mut s = TcpStream::connect(addr).unwrap();
        let boom = echo(&mut s);
        drop(s);
        let mut first = TcpStream::connect(addr).unwrap();
        let a = echo(&mut first);
        let mut second = TcpStream::connect(addr).unwrap();
        let b = echo(&mut second);
        // An abrupt reset frees the slot.
        reset(first);
        // The panicking one may report its end too: wait for the reset one.
        let freed = (0..2).any(|_| lost_rx.recv_timeout(BOUND) == Ok(false));
        let mut third = TcpStream::connect(addr).unwrap();
        let c = echo(&mut third);
        // The third stays open (sent along) until the counts are checked.
        tx.send(((boom, a, b, freed, c), third)).unwrap();
        let _ = remote.call(|_| {});
    });
    let mut result = None;
    assert!(r
        .run_until(BOUND, |_| {
            result = result.take().or_else(|| rx.try_recv().ok());
            result.is_some()
        })
        .unwrap());
    th.join().unwrap();
    let (result, _third) = result.unwrap();
    assert_eq!(result, (None, Some(b'a'), None, true, Some(b'a')));
    assert_eq!(counter.get(), 1, "only the third connection is counted");
}

#[test]
fn per_peer_over_tcp_ipv4() {
    per_peer_over_tcp("127.0.0.1");
}

#[test]
fn per_peer_over_tcp_ipv6() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    }
    per_peer_over_tcp("[::1]");
}
