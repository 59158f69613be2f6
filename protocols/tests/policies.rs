//! Policies: idle timeouts on the manual clock, the connection limit, the
//! per-address rate limiter, and wrappers that forward every callback.

use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

use twistor_protocols::{
    IdleTimeout, LimitConnectionRate, LimitConnections, Qotd, RateLimiter, Timeout, TimeoutMixin,
};
use twistor_reactor::testing::{MemoryPair, Record, Recorder, StringTransport};
use twistor_reactor::{Address, Factory, Protocol, Reactor, Reason, Transport};

const S: Duration = Duration::from_secs(1);

/// A client that stops reading at once until told otherwise.
struct Stubborn;
impl Protocol for Stubborn {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        t.pause_reading();
    }
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
}

/// Runs every callback through `server` (a wrapper around a Recorder) and
/// checks the Recorder saw each one exactly as sent.
fn check_forwards_everything(server: Box<dyn Protocol>, log: Rc<RefCell<Record>>) {
    let mut pair = MemoryPair::new(Box::new(Stubborn), server).unwrap();
    pair.pump();
    assert_eq!(log.borrow().made, 1);
    // call_on reaches the inner protocol through route_call.
    let reached = Rc::new(Cell::new(false));
    let r2 = reached.clone();
    pair.with_server(move |p, _| r2.set(p.downcast_mut::<Recorder>().is_some()));
    assert!(reached.get(), "call_on did not reach the wrapped protocol");
    // pause_writing / resume_writing.
    pair.with_server(|_, t| t.write(&vec![0; 1 << 20]));
    assert_eq!(log.borrow().paused, 1);
    pair.with_client(|_, t| t.resume_reading());
    assert_eq!(log.borrow().resumed, 1);
    // data, eof, lost.
    pair.with_client(|_, t| {
        t.write(b"data");
        t.write_eof();
    });
    let log = log.borrow();
    assert_eq!(log.data, b"data");
    assert_eq!(log.eofs, 1);
    assert_eq!(log.lost.len(), 1);
    assert!(pair.is_closed());
}

#[test]
fn idle_timeout_forwards_everything() {
    let (rec, log) = Recorder::new();
    check_forwards_everything(Box::new(IdleTimeout::new(rec, 10 * S)), log);
}

#[test]
fn connection_limit_forwards_everything() {
    let (rec, log) = Recorder::new();
    let rec = RefCell::new(Some(rec));
    let mut f = LimitConnections::new(move |_: &Address| rec.borrow_mut().take().unwrap(), 1);
    let p = f.build_protocol(&Address::Unknown).unwrap();
    check_forwards_everything(p, log);
    assert_eq!(f.active(), 0);
}

#[test]
fn rate_limit_forwards_everything() {
    let (rec, log) = Recorder::new();
    let rec = RefCell::new(Some(rec));
    let mut f = LimitConnectionRate::new(
        move |_: &Address| rec.borrow_mut().take().unwrap(),
        RateLimiter::new(1.0, 1.0),
    );
    let p = f.build_protocol(&Address::Unknown).unwrap();
    check_forwards_everything(p, log);
}

#[test]
fn idle_timeout_resets_on_traffic_and_closes_with_timed_out() {
    let (client, client_log) = Recorder::new();
    let (server, server_log) = Recorder::new();
    let mut pair = MemoryPair::new(Box::new(client), Box::new(IdleTimeout::new(server, 10 * S))).unwrap();
    pair.pump();
    for _ in 0..5 {
        pair.advance(6 * S);
        pair.with_client(|_, t| t.write(b"."));
    }
    assert!(!pair.is_closed(), "traffic every 6 s keeps a 10 s timeout away");
    pair.advance(9 * S);
    assert!(!pair.is_closed());
    pair.advance(S);
    assert!(pair.is_closed());
    assert!(matches!(server_log.borrow().lost[..], [Reason::TimedOut]));
    assert!(client_log.borrow().lost[0].is_clean());
    assert_eq!(pair.reactor.timer_count(), 0, "no timer left behind");
}

#[test]
fn idle_timeout_action_can_keep_the_connection_and_rearms() {
    let (client, client_log) = Recorder::new();
    let (server, _) = Recorder::new();
    let server = IdleTimeout::new(server, 5 * S).with_timeout_action(|_, t| t.write(b"ping\r\n"));
    let mut pair = MemoryPair::new(Box::new(client), Box::new(server)).unwrap();
    pair.pump();
    pair.advance(5 * S);
    assert_eq!(client_log.borrow().data, b"ping\r\n");
    // Without traffic the timer stays off; the next data arms it again.
    pair.advance(20 * S);
    assert_eq!(client_log.borrow().data, b"ping\r\n");
    pair.with_client(|_, t| t.write(b"pong"));
    pair.advance(5 * S);
    assert_eq!(client_log.borrow().data, b"ping\r\nping\r\n");
    assert!(!pair.is_closed());
}

#[test]
fn idle_timeout_counts_a_draining_write_buffer_as_traffic() {
    let (server, _) = Recorder::new();
    let mut pair = MemoryPair::new(Box::new(Stubborn), Box::new(IdleTimeout::new(server, 10 * S))).unwrap();
    pair.pump();
    pair.advance(6 * S);
    pair.with_server(|_, t| t.write(&vec![0; 1 << 20])); // pause_writing
    pair.advance(3 * S);
    pair.with_client(|_, t| t.resume_reading()); // drains: resume_writing at 9 s
    pair.advance(8 * S);
    assert!(
        !pair.is_closed(),
        "without the reset it would have closed at 10 s"
    );
    pair.advance(2 * S);
    assert!(pair.is_closed());
}

#[test]
fn lost_connection_cancels_the_idle_timer() {
    let (client, _) = Recorder::new();
    let (server, _) = Recorder::new();
    let mut pair = MemoryPair::new(Box::new(client), Box::new(IdleTimeout::new(server, 10 * S))).unwrap();
    pair.pump();
    assert_eq!(pair.reactor.timer_count(), 1);
    pair.with_client(|_, t| t.lose_connection());
    assert!(pair.is_closed());
    assert_eq!(pair.reactor.timer_count(), 0);
}

#[derive(Default)]
struct Session {
    timeout: Timeout,
    lost: Rc<RefCell<Vec<Reason>>>,
}

impl TimeoutMixin for Session {
    fn timeout_state(&mut self) -> &mut Timeout {
        &mut self.timeout
    }
}

impl Protocol for Session {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        assert_eq!(self.set_timeout(t, Some(3 * S)), None);
    }
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        match data {
            b"off" => {
                self.set_timeout(t, None);
            }
            b"long" => {
                // "off" came first: no timeout was running.
                assert_eq!(self.set_timeout(t, Some(100 * S)), None);
            }
            _ => self.reset_timeout(t),
        }
    }
    fn connection_lost(&mut self, _: &mut dyn Transport, reason: &Reason) {
        self.lost.borrow_mut().push(reason.clone());
    }
}

#[test]
fn timeout_mixin_set_reset_cancel() {
    let (client, _) = Recorder::new();
    let mut pair = MemoryPair::new(Box::new(client), Box::new(Session::default())).unwrap();
    pair.pump();
    pair.advance(2 * S);
    pair.with_client(|_, t| t.write(b"x"));
    pair.advance(2 * S);
    assert!(!pair.is_closed(), "reset_timeout postponed it");
    pair.with_client(|_, t| t.write(b"off"));
    pair.advance(60 * S);
    assert!(!pair.is_closed(), "set_timeout(None) cancelled it");
    pair.with_client(|_, t| t.write(b"long"));
    pair.advance(99 * S);
    assert!(!pair.is_closed());
    pair.with_server(|p, _| {
        let s = p.downcast_mut::<Session>().unwrap();
        assert_eq!(s.timeout.period(), Some(100 * S));
    });
    pair.advance(S);
    assert!(pair.is_closed());
}

#[test]
fn timeout_mixin_default_action_reports_timed_out() {
    let (client, client_log) = Recorder::new();
    let session = Session::default();
    let lost = session.lost.clone();
    let mut pair = MemoryPair::new(Box::new(client), Box::new(session)).unwrap();
    pair.pump();
    pair.advance(2 * S);
    assert!(!pair.is_closed());
    pair.advance(S);
    assert!(pair.is_closed());
    assert!(matches!(lost.borrow()[..], [Reason::TimedOut]));
    assert!(client_log.borrow().lost[0].is_clean());
}

#[test]
fn connection_limit_refuses_and_counts_down_on_connection_lost() {
    let mut f = LimitConnections::new(|_: &Address| Recorder::default(), 2);
    let counter = f.counter();
    let mut pairs: Vec<MemoryPair> = (0..2)
        .map(|_| {
            let server = f.build_protocol(&Address::Unknown).unwrap();
            let mut p = MemoryPair::new(Box::new(Recorder::default()), server).unwrap();
            p.pump();
            p
        })
        .collect();
    assert_eq!(counter.get(), 2);
    assert!(f.build_protocol(&Address::Unknown).is_none());
    assert!(f.build_protocol(&Address::Unknown).is_none());
    pairs[0].with_client(|_, t| t.lose_connection());
    assert!(pairs[0].is_closed());
    assert_eq!(counter.get(), 1, "connection_lost counted down");
    let third = f.build_protocol(&Address::Unknown);
    assert!(third.is_some());
    assert_eq!(counter.get(), 2);
    drop(third); // never connected: dropping it counts down too
    assert_eq!(counter.get(), 1);
    pairs.clear();
}

#[test]
fn connection_limit_overflow_protocol() {
    let mut f = LimitConnections::new(|_: &Address| Recorder::default(), 0)
        .with_overflow(|_: &Address| Qotd::new("busy"));
    let server = f.build_protocol(&Address::Unknown).unwrap();
    let (client, log) = Recorder::new();
    let mut pair = MemoryPair::new(Box::new(client), server).unwrap();
    pair.pump();
    assert_eq!(log.borrow().data, b"busy\r\n");
    assert!(pair.is_closed());
    assert_eq!(f.active(), 0);
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn rate_limiter_refills_by_the_manual_clock() {
    let mut r = Reactor::with_manual_clock().unwrap();
    let mut l = RateLimiter::new(2.0, 4.0);
    let a = ip("192.0.2.1");
    for _ in 0..4 {
        assert!(l.try_acquire(a, r.now()).is_ok());
    }
    assert_eq!(l.try_acquire(a, r.now()), Err(Duration::from_millis(500)));
    // Another address has its own bucket.
    assert!(l.try_acquire(ip("192.0.2.2"), r.now()).is_ok());
    r.advance(Duration::from_millis(499));
    assert!(l.try_acquire(a, r.now()).is_err());
    r.advance(Duration::from_millis(1));
    assert!(l.try_acquire(a, r.now()).is_ok());
    assert!(l.try_acquire(a, r.now()).is_err());
    // Refill caps at the burst.
    r.advance(3600 * S);
    for _ in 0..4 {
        assert!(l.try_acquire(a, r.now()).is_ok());
    }
    assert!(l.try_acquire(a, r.now()).is_err());
    // An IPv4 client seen through a dual-stack socket is the same client.
    assert!(l.try_acquire(ip("::ffff:192.0.2.1"), r.now()).is_err());
    // Neighbours in one IPv6 /64 share a bucket.
    let mut l = RateLimiter::new(1.0, 1.0);
    assert!(l.try_acquire(ip("2001:db8::1"), r.now()).is_ok());
    assert!(l.try_acquire(ip("2001:db8::2"), r.now()).is_err());
    assert!(l.try_acquire(ip("2001:db8:0:1::1"), r.now()).is_ok());
}

#[test]
fn rate_limiter_memory_is_bounded_and_evicts_refilled_buckets_first() {
    let mut r = Reactor::with_manual_clock().unwrap();
    let mut l = RateLimiter::new(1.0, 5.0).with_max_tracked(10);
    let hot = ip("198.51.100.1");
    for _ in 0..5 {
        l.try_acquire(hot, r.now()).unwrap();
    }
    for i in 2..11 {
        l.try_acquire(ip(&format!("198.51.100.{i}")), r.now()).unwrap();
    }
    assert_eq!(l.tracked(), 10);
    // The others refill in 1 s; the hot address needs 5 s.
    r.advance(2 * S);
    l.try_acquire(ip("203.0.113.1"), r.now()).unwrap();
    assert_eq!(l.tracked(), 2, "refilled buckets were forgotten");
    // The hot address still has only the 2 tokens it earned.
    assert!(l.try_acquire(hot, r.now()).is_ok());
    assert!(l.try_acquire(hot, r.now()).is_ok());
    assert!(l.try_acquire(hot, r.now()).is_err());
    // A flood of new addresses never grows the table past its cap.
    for i in 0..5000u32 {
        let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        let _ = l.try_acquire(a, r.now());
        assert!(l.tracked() <= 10);
    }
}

#[test]
fn connection_rate_limit_refuses_then_refills() {
    let log_all = Rc::new(RefCell::new(Vec::new()));
    let l2 = log_all.clone();
    let r = Reactor::with_manual_clock().unwrap();
    let now = Rc::new(Cell::new(r.now()));
    let n2 = now.clone();
    let mut f = LimitConnectionRate::new(
        move |_: &Address| {
            let (r, l) = Recorder::new();
            l2.borrow_mut().push(l);
            r
        },
        RateLimiter::new(1.0, 2.0),
    )
    .with_clock(move || n2.get());
    let peer = Address::Inet("192.0.2.9:5555".parse().unwrap());
    assert!(f.build_protocol(&peer).is_some());
    assert!(f.build_protocol(&peer).is_some());
    assert!(
        f.build_protocol(&peer).is_none(),
        "refused at accept: the listener closes it before any TLS"
    );
    assert_eq!(log_all.borrow().len(), 2, "the app's factory never saw the third");
    // Another address is not affected.
    let other = Address::Inet("192.0.2.10:1".parse().unwrap());
    assert!(f.build_protocol(&other).is_some());
    // Unix sockets are not limited.
    for _ in 0..5 {
        assert!(f.build_protocol(&Address::Unknown).is_some());
    }
    // One second later the address may connect again, once.
    now.set(now.get() + S);
    assert!(f.build_protocol(&peer).is_some());
    assert!(f.build_protocol(&peer).is_none());
}

#[test]
fn connection_rate_limit_refusal_message() {
    let built = Rc::new(Cell::new(0));
    let b = built.clone();
    let mut f = LimitConnectionRate::new(
        move |_: &Address| {
            b.set(b.get() + 1);
            Recorder::default()
        },
        RateLimiter::new(1.0, 1.0),
    )
    .with_refusal(|t, wait| t.write(format!("wait {}ms\r\n", wait.as_millis()).as_bytes()));
    let peer = Address::Inet("192.0.2.9:5555".parse().unwrap());
    let _first = f.build_protocol(&peer).unwrap();
    let mut refused = f.build_protocol(&peer).expect("a protocol that says why");
    assert_eq!(built.get(), 1, "not the app's protocol");
    let mut t = StringTransport::new().with_peer(peer);
    refused.connection_made(&mut t);
    let text = String::from_utf8(t.value().to_vec()).unwrap();
    assert!(text.starts_with("wait ") && text.ends_with("ms\r\n"), "{text:?}");
    assert!(matches!(t.close_reason(), Some(Reason::Limit(_))));
    refused.data_received(&mut t, b"ignored");
}

#[test]
fn idle_timeout_counts_writes_as_traffic() {
    // A server streaming to a quiet client (a download written from a timer
    // or another connection through call_on): the client never sends.
    let (client, client_log) = Recorder::new();
    let (server, server_log) = Recorder::new();
    let mut pair = MemoryPair::new(Box::new(client), Box::new(IdleTimeout::new(server, 10 * S))).unwrap();
    pair.pump();
    for _ in 0..5 {
        pair.advance(6 * S);
        pair.with_server(|_, t| t.write(b"chunk"));
    }
    assert!(
        !pair.is_closed(),
        "writes every 6 s keep a 10 s timeout away (Twisted's TimeoutProtocol)"
    );
    assert_eq!(client_log.borrow().data.len(), 25);
    // An empty write is not traffic.
    pair.advance(6 * S);
    pair.with_server(|_, t| t.write(b""));
    pair.advance(4 * S);
    assert!(pair.is_closed());
    assert!(matches!(server_log.borrow().lost[..], [Reason::TimedOut]));
}

#[test]
fn idle_timeout_stops_counting_writes_to_a_peer_that_does_not_read() {
    // Writes pile up past the high-water mark: the peer is not reading, and
    // more writes must not keep its connection alive (only the buffer
    // draining, resume_writing, counts then).
    let (server, server_log) = Recorder::new();
    let mut pair = MemoryPair::new(Box::new(Stubborn), Box::new(IdleTimeout::new(server, 10 * S))).unwrap();
    pair.pump();
    pair.with_server(|_, t| t.write(&vec![0; 1 << 20])); // over the high-water mark
    assert_eq!(server_log.borrow().paused, 1);
    for _ in 0..3 {
        pair.advance(3 * S);
        pair.with_server(|_, t| t.write(b"more"));
    }
    assert!(!server_closing(&mut pair));
    pair.advance(S);
    // (The close waits for a flush that cannot happen: the peer does not
    // read. The transport's close deadline ends it; here it is closing.)
    assert!(
        server_closing(&mut pair),
        "10 s after the last write made below the mark"
    );
    assert!(
        server_log.borrow().lost.is_empty() || matches!(server_log.borrow().lost[..], [Reason::TimedOut])
    );
}

/// Whether the server's transport is closing (or gone).
fn server_closing(pair: &mut MemoryPair) -> bool {
    let closing = Rc::new(Cell::new(true));
    let c = closing.clone();
    pair.with_server(move |_, t| c.set(t.is_closing()));
    closing.get()
}

/// A TimeoutMixin protocol that streams through its timed transport view.
#[derive(Default)]
struct Streamer {
    timeout: Timeout,
}

impl TimeoutMixin for Streamer {
    fn timeout_state(&mut self) -> &mut Timeout {
        &mut self.timeout
    }
}

impl Protocol for Streamer {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.set_timeout(t, Some(10 * S));
    }
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
}

#[test]
fn timeout_mixin_counts_writes_through_its_view() {
    let (client, client_log) = Recorder::new();
    let mut pair = MemoryPair::new(Box::new(client), Box::new(Streamer::default())).unwrap();
    pair.pump();
    for _ in 0..5 {
        pair.advance(6 * S);
        pair.with_server(|p, t| {
            let s = p.downcast_mut::<Streamer>().unwrap();
            let mut t = s.timed(t);
            t.write(b"chunk");
        });
    }
    assert!(!pair.is_closed(), "writes through timed() reset the timeout");
    assert_eq!(client_log.borrow().data.len(), 25);
    // A write straight to the transport does not.
    pair.advance(6 * S);
    pair.with_server(|_, t| t.write(b"raw"));
    pair.advance(4 * S);
    assert!(pair.is_closed());
}

#[test]
fn connection_limit_bounds_overflow_connections_too() {
    // Overflow connections used to be unbounded: past the cap every new
    // client got the overflow protocol (after a TLS handshake, over TLS),
    // so the cap did not bind at all. Now they have a cap of their own.
    let mut f = LimitConnections::new(|_: &Address| Recorder::default(), 2)
        .with_overflow(|_: &Address| Qotd::new("busy"))
        .with_max_overflow(2);
    let counter = f.counter();
    let served: Vec<_> = (0..2)
        .map(|_| f.build_protocol(&Address::Unknown).unwrap())
        .collect();
    let overflow: Vec<_> = (0..2)
        .map(|_| f.build_protocol(&Address::Unknown).unwrap())
        .collect();
    assert_eq!(counter.get(), 2, "overflow connections are not counted as served");
    assert!(
        f.build_protocol(&Address::Unknown).is_none(),
        "past max overflow connections, refused"
    );
    // An overflow connection that ends frees its place.
    let mut overflow = overflow;
    let (client, _) = Recorder::new();
    let mut pair = MemoryPair::new(Box::new(client), overflow.pop().unwrap()).unwrap();
    pair.pump();
    assert!(pair.is_closed());
    assert!(f.build_protocol(&Address::Unknown).is_some());
    drop(served);
}

#[test]
fn idle_timeout_expiring_during_a_close_does_nothing() {
    // The protocol closes while its peer does not read, so the close waits
    // for a flush; the idle period passes meanwhile. The timeout action must
    // not run against a connection that is already closing (the close and
    // its reason stay the protocol's own).
    let (server, server_log) = Recorder::new();
    let fired = Rc::new(Cell::new(0));
    let f = fired.clone();
    let idle = IdleTimeout::new(server, 10 * S).with_timeout_action(move |_, t| {
        f.set(f.get() + 1);
        t.abort_connection();
    });
    let mut pair = MemoryPair::new(Box::new(Stubborn), Box::new(idle)).unwrap();
    pair.pump();
    pair.with_server(|_, t| {
        t.write(&vec![0; 1 << 20]);
        t.lose_connection_with(Reason::Limit("closing on purpose".into()));
    });
    assert!(server_closing(&mut pair));
    pair.advance(11 * S);
    assert_eq!(fired.get(), 0, "the timeout action ran during a close");
    assert!(server_log
        .borrow()
        .lost
        .iter()
        .all(|r| matches!(r, Reason::Limit(_))));
}

#[test]
fn timeout_mixin_never_fires_after_connection_lost() {
    // Twisted's protocols must call setTimeout(None) in connectionLost;
    // here a forgotten timer finds the connection gone and does nothing.
    let session = Session::default();
    let lost = session.lost.clone();
    let (client, _) = Recorder::new();
    let mut pair = MemoryPair::new(Box::new(client), Box::new(session)).unwrap();
    pair.pump();
    pair.with_client(|_, t| t.lose_connection());
    assert!(pair.is_closed());
    pair.advance(10 * S);
    assert_eq!(lost.borrow().len(), 1, "{:?}", lost.borrow());
    assert!(lost.borrow()[0].is_clean());
}
