//! `connect_tcp` over real loopback: the connect timeout, cancelling an
//! attempt, host names resolved off the loop, and a bare-port listener
//! reachable over both IPv4 and IPv6. Every attempt ends in exactly one of
//! `connection_made` or `client_connection_failed`.

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use common::{client, round_trip, wait_for};
use twistor::prelude::*;
use twistor::transports::{connect_tcp_with, listen_tcp_with, ConnectOptions, ListenOptions};

/// What happened to each attempt, by attempt number.
type Outcomes = Rc<RefCell<Vec<(usize, String)>>>;

struct Probe {
    n: usize,
    out: Outcomes,
}

impl Protocol for Probe {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.out.borrow_mut().push((self.n, "made".into()));
        t.write(b"ping");
    }
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
}

struct ProbeFactory {
    n: usize,
    out: Outcomes,
}

impl Factory for ProbeFactory {
    fn build_protocol(&mut self, _: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(Probe {
            n: self.n,
            out: self.out.clone(),
        }))
    }
}

impl ClientFactory for ProbeFactory {
    fn client_connection_failed(&mut self, _: &mut Reactor, _: &Connector, reason: &Reason) {
        let what = match reason {
            Reason::TimedOut => "timed out".to_string(),
            Reason::Aborted => "aborted".to_string(),
            other => format!("failed: {other}"),
        };
        self.out.borrow_mut().push((self.n, what));
    }
}

/// A listening socket whose accept queue fills after one connection: a
/// listener with backlog 0 in a reactor that never runs. Further SYNs are
/// dropped, so connects to it hang until their timeout.
fn full_backlog() -> (Reactor, u16) {
    let mut idle = common::reactor();
    let opts = ListenOptions {
        backlog: 0,
        ..ListenOptions::default()
    };
    let port = listen_tcp_with(
        &mut idle,
        "127.0.0.1:0",
        |_: &Address| Probe {
            n: usize::MAX,
            out: Rc::default(),
        },
        opts,
    )
    .unwrap();
    (idle, port.port())
}

fn outcomes_of(out: &Outcomes, n: usize) -> Vec<String> {
    out.borrow()
        .iter()
        .filter(|(i, _)| *i == n)
        .map(|(_, s)| s.clone())
        .collect()
}

#[test]
fn a_connect_that_hangs_times_out_exactly_once() {
    const ATTEMPTS: usize = 4;
    let (_idle, port) = full_backlog();
    let mut r = common::reactor();
    let out: Outcomes = Rc::default();
    let opts = ConnectOptions {
        timeout: Duration::from_millis(300),
        ..ConnectOptions::default()
    };
    for n in 0..ATTEMPTS {
        let f = ProbeFactory { n, out: out.clone() };
        connect_tcp_with(&mut r, "127.0.0.1", port, f, opts.clone());
    }
    let o = out.clone();
    wait_for(&mut r, "every attempt to end", move |_| {
        o.borrow().len() >= ATTEMPTS
    });
    // No timer or socket is left that could report again.
    let o = out.clone();
    wait_for(&mut r, "the attempts to settle", move |r| {
        r.timer_count() == 0 && r.handler_count() == o.borrow().iter().filter(|(_, s)| s == "made").count()
    });
    r.run_pending().unwrap();
    let mut timed_out = 0;
    for n in 0..ATTEMPTS {
        let got = outcomes_of(&out, n);
        assert_eq!(got.len(), 1, "attempt {n}: {got:?}");
        assert!(got[0] == "made" || got[0] == "timed out", "attempt {n}: {got:?}");
        timed_out += usize::from(got[0] == "timed out");
    }
    assert!(timed_out >= ATTEMPTS - 2, "{:?}", out.borrow());
}

#[test]
fn stop_connecting_cancels_a_pending_attempt_once() {
    let (_idle, port) = full_backlog();
    let mut r = common::reactor();
    let out: Outcomes = Rc::default();
    // Fill the queue first, so the second attempt hangs.
    let f = ProbeFactory {
        n: 0,
        out: out.clone(),
    };
    connect_tcp(&mut r, "127.0.0.1", port, f);
    let o = out.clone();
    wait_for(&mut r, "the first connection", move |_| !o.borrow().is_empty());
    let f = ProbeFactory {
        n: 1,
        out: out.clone(),
    };
    let connector = connect_tcp(&mut r, "127.0.0.1", port, f);
    // Let the attempt start, then cancel it.
    wait_for(&mut r, "the second attempt to start", |r| r.handler_count() == 2);
    assert!(outcomes_of(&out, 1).is_empty(), "the second attempt did not hang");
    connector.stop_connecting(&mut r);
    connector.stop_connecting(&mut r);
    let o = out.clone();
    wait_for(&mut r, "the cancellation", move |_| {
        !outcomes_of(&o, 1).is_empty()
    });
    wait_for(&mut r, "the attempt to settle", |r| r.timer_count() == 0);
    r.run_pending().unwrap();
    assert_eq!(outcomes_of(&out, 0), vec!["made"]);
    assert_eq!(outcomes_of(&out, 1), vec!["aborted"]);
}

struct Echo;

impl Protocol for Echo {
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        t.write(data);
    }
}

#[test]
fn a_bare_port_listens_on_ipv4_and_ipv6_and_localhost_resolves_off_the_loop() {
    let mut r = common::reactor();
    let port = listen_tcp(&mut r, 0u16, |_: &Address| Echo).unwrap();
    assert!(port.port() != 0, "port 0 reports the bound port");
    let p = port.port();
    for ip in ["127.0.0.1", "::1"] {
        let addr = std::net::SocketAddr::new(ip.parse().unwrap(), p);
        let mut c = client(addr);
        let back = common::in_thread(&mut r, move || round_trip(&mut c, b"dual"));
        assert_eq!(back, b"dual", "over {ip}");
    }
    // A host name: looked up on the thread pool, then connected.
    let out: Outcomes = Rc::default();
    let f = ProbeFactory {
        n: 0,
        out: out.clone(),
    };
    connect_tcp(&mut r, "localhost", p, f);
    let o = out.clone();
    wait_for(&mut r, "the connection by name", move |_| !o.borrow().is_empty());
    assert_eq!(outcomes_of(&out, 0), vec!["made"]);
}

/// A live echo server on loopback, in the test's own reactor.
fn live_server(r: &mut Reactor) -> u16 {
    listen_tcp(r, "127.0.0.1:0", |_: &Address| Echo).unwrap().port()
}

#[test]
fn stop_connecting_before_the_attempt_starts_fails_it_and_it_never_connects() {
    let mut r = common::reactor();
    let port = live_server(&mut r);
    let out: Outcomes = Rc::default();
    let f = ProbeFactory {
        n: 0,
        out: out.clone(),
    };
    // Twisted: connectTCP(...).stopConnecting() fails the attempt at once.
    let connector = connect_tcp(&mut r, "127.0.0.1", port, f);
    connector.stop_connecting(&mut r);
    connector.stop_connecting(&mut r);
    assert_eq!(outcomes_of(&out, 0), vec!["aborted"]);
    // Nothing is left that could connect or report later.
    wait_for(&mut r, "the attempt to settle", |r| {
        r.timer_count() == 0 && r.handler_count() == 1
    });
    r.run_pending().unwrap();
    assert_eq!(outcomes_of(&out, 0), vec!["aborted"]);
    // The connector still works: a new attempt connects.
    connector.connect(&mut r);
    let o = out.clone();
    wait_for(&mut r, "the second attempt", move |_| o.borrow().len() == 2);
    assert_eq!(outcomes_of(&out, 0), vec!["aborted", "made"]);
}

/// Stops its own attempt from `started_connecting`, as Twisted's docs for
/// `startedConnecting` invite.
struct StopsAtOnce {
    out: Outcomes,
}

impl Factory for StopsAtOnce {
    fn build_protocol(&mut self, _: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(Probe {
            n: 0,
            out: self.out.clone(),
        }))
    }
}

impl ClientFactory for StopsAtOnce {
    fn started_connecting(&mut self, r: &mut Reactor, connector: &Connector) {
        self.out.borrow_mut().push((0, "started".into()));
        connector.stop_connecting(r);
    }
    fn client_connection_failed(&mut self, _: &mut Reactor, _: &Connector, reason: &Reason) {
        self.out.borrow_mut().push((0, format!("failed: {reason:?}")));
    }
}

#[test]
fn stop_connecting_from_started_connecting_reports_the_failure_once() {
    let mut r = common::reactor();
    let port = live_server(&mut r);
    for host in ["127.0.0.1", "localhost"] {
        let out: Outcomes = Rc::default();
        connect_tcp(&mut r, host, port, StopsAtOnce { out: out.clone() });
        let o = out.clone();
        wait_for(&mut r, "the failure", move |_| o.borrow().len() >= 2);
        wait_for(&mut r, "the attempt to settle", |r| {
            r.timer_count() == 0 && r.handler_count() == 1
        });
        r.run_pending().unwrap();
        assert_eq!(
            outcomes_of(&out, 0),
            vec!["started", "failed: Aborted"],
            "to {host}"
        );
    }
}

/// Stops the reactor as soon as its attempt has started.
struct StopsTheReactor {
    out: Outcomes,
}

impl Factory for StopsTheReactor {
    fn build_protocol(&mut self, _: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(Probe {
            n: 0,
            out: self.out.clone(),
        }))
    }
}

impl ClientFactory for StopsTheReactor {
    fn started_connecting(&mut self, r: &mut Reactor, _: &Connector) {
        r.stop();
    }
    fn client_connection_failed(&mut self, _: &mut Reactor, _: &Connector, reason: &Reason) {
        self.out.borrow_mut().push((0, format!("failed: {reason:?}")));
    }
}

#[test]
fn a_reactor_stop_ends_an_attempt_at_any_stage_exactly_once() {
    // "localhost" stops while the name is being looked up; an address
    // while the socket is connecting.
    for host in ["localhost", "127.0.0.1"] {
        let mut r = common::reactor();
        let port = live_server(&mut r);
        let out: Outcomes = Rc::default();
        connect_tcp(&mut r, host, port, StopsTheReactor { out: out.clone() });
        r.run().unwrap();
        assert_eq!(outcomes_of(&out, 0), vec!["failed: Aborted"], "to {host}");
        // Nothing more arrives later (a lookup finishing, a timer).
        r.run_until(Duration::from_millis(200), |_| false).unwrap();
        assert_eq!(outcomes_of(&out, 0), vec!["failed: Aborted"], "to {host}");
        assert_eq!(r.timer_count(), 0);
    }
}

/// An address that never answers, on loopback: a listener with a backlog
/// of 0, in a reactor that never runs, whose one queued connection is
/// never accepted. The kernel drops every further SYN, so a connect to it
/// stays in flight until given up. Keep the returned reactor and stream
/// alive as long as the black hole is needed.
fn black_hole(ip: &str) -> (Reactor, std::net::TcpStream, std::net::SocketAddr) {
    let mut idle = common::reactor();
    let opts = ListenOptions {
        backlog: 0,
        ..ListenOptions::default()
    };
    let port = listen_tcp_with(&mut idle, format!("{ip}:0"), |_: &Address| Echo, opts).unwrap();
    let addr = port.local_addr();
    // This one fills the accept queue.
    let filler = std::net::TcpStream::connect_timeout(&addr, common::WAIT).unwrap();
    (idle, filler, addr)
}

/// A resolver that answers every name with `addrs`, in that order.
fn fixed(addrs: Vec<std::net::SocketAddr>) -> twistor::transports::addr::Resolver {
    twistor::transports::addr::Resolver::new(move |_, _| Ok(addrs.clone()))
}

/// Records what became of the attempt, and the address connected to.
struct Where(Outcomes);

impl Factory for Where {
    fn build_protocol(&mut self, addr: &Address) -> Option<Box<dyn Protocol>> {
        self.0.borrow_mut().push((1, addr.to_string()));
        Some(Box::new(Probe {
            n: 0,
            out: self.0.clone(),
        }))
    }
}

impl ClientFactory for Where {
    fn client_connection_failed(&mut self, _: &mut Reactor, _: &Connector, reason: &Reason) {
        self.0.borrow_mut().push((0, format!("failed: {reason}")));
    }
}

/// Happy Eyeballs (RFC 8305): a first address that never answers (an
/// IPv6 one, as a broken IPv6 route would be) does not starve the next:
/// after the attempt delay the next address is tried alongside, the first
/// to connect wins, and the loser is closed.
#[test]
fn a_black_holed_first_address_does_not_starve_the_next() {
    let (_l, _filler, hole) = black_hole("[::1]");
    let mut r = common::reactor();
    let open = std::net::SocketAddr::new("127.0.0.1".parse().unwrap(), live_server(&mut r));
    let out: Outcomes = Rc::default();
    let opts = ConnectOptions {
        timeout: Duration::from_secs(10),
        resolver: fixed(vec![hole, open]),
        ..ConnectOptions::default()
    };
    connect_tcp_with(&mut r, "dual.test", 1, Where(out.clone()), opts);
    let o = out.clone();
    wait_for(&mut r, "the attempt to end", move |_| {
        !outcomes_of(&o, 0).is_empty()
    });
    assert_eq!(outcomes_of(&out, 0), vec!["made"]);
    assert_eq!(outcomes_of(&out, 1), vec![open.to_string()]);
    // The connect to the black hole was closed, and no timer is left:
    // the listener, and the two ends of the one connection.
    wait_for(&mut r, "the attempt to settle", |r| {
        r.handler_count() == 3 && r.timer_count() == 0
    });
}

/// However many addresses race, the timeout bounds the whole attempt: it
/// fails once, and every socket it opened is closed.
#[test]
fn the_timeout_bounds_the_whole_race() {
    let (_i6, _f6, hole6) = black_hole("[::1]");
    let (_i4, _f4, hole4) = black_hole("127.0.0.1");
    let mut r = common::reactor();
    let out: Outcomes = Rc::default();
    let opts = ConnectOptions {
        timeout: Duration::from_millis(500),
        attempt_delay: Duration::from_millis(50),
        resolver: fixed(vec![hole6, hole4]),
        ..ConnectOptions::default()
    };
    connect_tcp_with(&mut r, "dual.test", 1, Where(out.clone()), opts);
    let o = out.clone();
    wait_for(&mut r, "the attempt to end", move |_| !o.borrow().is_empty());
    wait_for(&mut r, "the sockets to close", |r| {
        r.handler_count() == 0 && r.timer_count() == 0
    });
    r.run_pending().unwrap();
    assert_eq!(*out.borrow(), vec![(0, "failed: timed out".to_string())]);
}
