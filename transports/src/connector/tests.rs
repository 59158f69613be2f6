//! The connector against a scripted transport, on a manual clock: each
//! address refuses at once, fails later, never answers, or connects, so
//! the race's timing and every way an attempt can end are checked without
//! a network and without waiting.

use std::cell::RefCell;
use std::rc::Rc;

use mio::net::UnixStream;
use twistor_reactor::{Address, Factory, Protocol};

use super::*;
use crate::sock::SockIo;

/// What connecting to a scripted address does.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Script {
    /// `connect` fails at once.
    Refuse,
    /// The connect is in flight, then fails.
    FailLater,
    /// The connect never completes (a black hole).
    Hang,
    /// The connect succeeds.
    Connect,
}

#[derive(Clone, Debug)]
struct Addr(&'static str, Script);

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

type Log = Rc<RefCell<Vec<String>>>;

fn entries(log: &Log) -> Vec<String> {
    log.borrow().clone()
}

/// A "socket": one end of a socket pair, writable at once, whose connect
/// ends as its script says. Its closing is logged.
struct FakeSock {
    s: Option<UnixStream>,
    name: &'static str,
    script: Script,
    log: Log,
}

impl Drop for FakeSock {
    fn drop(&mut self) {
        if self.s.is_some() {
            self.log.borrow_mut().push(format!("closed {}", self.name));
        }
    }
}

impl mio::event::Source for FakeSock {
    fn register(&mut self, r: &mio::Registry, t: mio::Token, i: Interest) -> io::Result<()> {
        self.s.as_mut().unwrap().register(r, t, i)
    }
    fn reregister(&mut self, r: &mio::Registry, t: mio::Token, i: Interest) -> io::Result<()> {
        self.s.as_mut().unwrap().reregister(r, t, i)
    }
    fn deregister(&mut self, r: &mio::Registry) -> io::Result<()> {
        self.s.as_mut().unwrap().deregister(r)
    }
}

use mio::Interest;

struct Fake {
    addrs: Vec<Addr>,
    lookup: bool,
    log: Log,
    /// The far ends of connected pairs, kept open.
    far: Rc<RefCell<Vec<UnixStream>>>,
}

impl Dialer for Fake {
    type Addr = Addr;
    type Sock = FakeSock;
    type Io = SockIo<UnixStream>;

    fn addresses(&self) -> Addresses<Addr> {
        let addrs = self.addrs.clone();
        if self.lookup {
            Addresses::Lookup(Box::new(move || Ok(addrs)))
        } else {
            Addresses::Known(addrs)
        }
    }

    fn start(&self, addr: &Addr) -> io::Result<FakeSock> {
        self.log.borrow_mut().push(format!("start {}", addr.0));
        if addr.1 == Script::Refuse {
            return Err(io::ErrorKind::ConnectionRefused.into());
        }
        let (s, far) = UnixStream::pair()?;
        self.far.borrow_mut().push(far);
        Ok(FakeSock {
            s: Some(s),
            name: addr.0,
            script: addr.1,
            log: self.log.clone(),
        })
    }

    fn finished(sock: &FakeSock) -> Option<io::Result<()>> {
        match sock.script {
            Script::Hang => None,
            Script::FailLater => Some(Err(io::ErrorKind::ConnectionReset.into())),
            _ => Some(Ok(())),
        }
    }

    fn wrap(&self, mut sock: FakeSock, addr: &Addr) -> SockIo<UnixStream> {
        self.log.borrow_mut().push(format!("connected {}", addr.0));
        SockIo {
            s: sock.s.take().unwrap(),
            peer: Address::Memory(addr.0.into()),
            host: Address::Unknown,
        }
    }
}

/// How the test factory behaves.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Normal,
    Refuse,
    PanicInBuild,
    PanicInStarted,
    StopInStarted,
}

/// Logs the factory's callbacks; its protocols record into `made`.
struct Rec {
    log: Log,
    mode: Mode,
    made: Rc<RefCell<usize>>,
}

impl Factory for Rec {
    fn build_protocol(&mut self, addr: &Address) -> Option<Box<dyn Protocol>> {
        self.log.borrow_mut().push(format!("build {addr}"));
        match self.mode {
            Mode::Refuse => None,
            Mode::PanicInBuild => panic!("build fails"),
            _ => Some(Box::new(Made(self.made.clone()))),
        }
    }
}

impl ClientFactory for Rec {
    fn started_connecting(&mut self, r: &mut Reactor, c: &Connector) {
        self.log.borrow_mut().push("started".into());
        match self.mode {
            Mode::PanicInStarted => panic!("started fails"),
            Mode::StopInStarted => c.stop_connecting(r),
            _ => {}
        }
    }
    fn client_connection_failed(&mut self, _: &mut Reactor, _: &Connector, reason: &Reason) {
        self.log.borrow_mut().push(format!("failed: {reason}"));
    }
}

/// Counts `connection_made`.
struct Made(Rc<RefCell<usize>>);

impl Protocol for Made {
    fn connection_made(&mut self, _: &mut dyn twistor_reactor::Transport) {
        *self.0.borrow_mut() += 1;
    }
    fn data_received(&mut self, _: &mut dyn twistor_reactor::Transport, _: &[u8]) {}
}

struct Setup {
    r: Reactor,
    log: Log,
    made: Rc<RefCell<usize>>,
    connector: Connector,
    _far: Rc<RefCell<Vec<UnixStream>>>,
}

fn setup(addrs: &[Addr], mode: Mode, lookup: bool) -> Setup {
    let mut r = Reactor::with_manual_clock().unwrap();
    let log: Log = Rc::default();
    let made = Rc::new(RefCell::new(0));
    let far = Rc::new(RefCell::new(Vec::new()));
    let dialer = Fake {
        addrs: addrs.to_vec(),
        lookup,
        log: log.clone(),
        far: far.clone(),
    };
    let factory = Rec {
        log: log.clone(),
        mode,
        made: made.clone(),
    };
    let opts = LinkOptions {
        timeout: Duration::from_secs(10),
        attempt_delay: Duration::from_millis(250),
        knobs: Knobs::default(),
    };
    let connector = connect(&mut r, dialer, "fake".into(), factory, opts);
    Setup {
        r,
        log,
        made,
        connector,
        _far: far,
    }
}

/// Run the loop (I/O, queued work and the thread pool's results; the
/// manual clock stands still) until `done`, within a generous bound.
fn turn_until(r: &mut Reactor, mut done: impl FnMut() -> bool) {
    let ok = r.run_until(Duration::from_secs(20), |_| done()).unwrap();
    assert!(ok, "not reached within 20 s");
}

/// A few turns with nothing expected to happen.
fn settle(r: &mut Reactor) {
    for _ in 0..5 {
        r.run_pending().unwrap();
    }
}

const A_HANG: Addr = Addr("a", Script::Hang);
const B_HANG: Addr = Addr("b", Script::Hang);
const C_CONNECT: Addr = Addr("c", Script::Connect);

#[test]
fn addresses_start_one_attempt_delay_apart_and_the_first_to_connect_wins() {
    let mut s = setup(&[A_HANG, B_HANG, C_CONNECT], Mode::Normal, false);
    settle(&mut s.r);
    assert_eq!(entries(&s.log), ["started", "start a"]);
    s.r.advance(Duration::from_millis(249));
    settle(&mut s.r);
    assert_eq!(entries(&s.log), ["started", "start a"]);
    s.r.advance(Duration::from_millis(1));
    assert_eq!(entries(&s.log), ["started", "start a", "start b"]);
    s.r.advance(Duration::from_millis(250));
    let made = s.made.clone();
    turn_until(&mut s.r, || *made.borrow() == 1);
    let log = entries(&s.log);
    assert_eq!(log[..4], ["started", "start a", "start b", "start c"]);
    // The winner is handed over; the losers are closed.
    let mut rest = log[4..].to_vec();
    rest.sort();
    assert_eq!(rest, ["build memory:c", "closed a", "closed b", "connected c"]);
    // Nothing is left but the connection: no race timer, no deadline.
    assert_eq!(s.r.timer_count(), 0);
    assert_eq!(s.r.handler_count(), 1);
}

#[test]
fn a_failed_address_gives_way_to_the_next_at_once() {
    for first in [Addr("a", Script::Refuse), Addr("a", Script::FailLater)] {
        let mut s = setup(&[first, Addr("b", Script::Connect)], Mode::Normal, true);
        let made = s.made.clone();
        // No time passes: the next address does not wait for the delay.
        turn_until(&mut s.r, || *made.borrow() == 1);
        let log = entries(&s.log);
        let starts: Vec<_> = log.iter().filter(|e| e.starts_with("start")).collect();
        assert_eq!(starts, ["started", "start a", "start b"], "{log:?}");
        assert!(!log.iter().any(|e| e.starts_with("failed")), "{log:?}");
    }
}

#[test]
fn the_timeout_bounds_the_whole_race_and_fails_it_once() {
    let mut s = setup(&[A_HANG, B_HANG], Mode::Normal, false);
    settle(&mut s.r);
    s.r.advance(Duration::from_secs(10));
    let mut log = entries(&s.log);
    log.sort();
    assert_eq!(
        log,
        [
            "closed a",
            "closed b",
            "failed: timed out",
            "start a",
            "start b",
            "started"
        ]
    );
    assert_eq!(s.r.timer_count(), 0);
    assert_eq!(s.r.handler_count(), 0);
    s.r.advance(Duration::from_secs(60));
    settle(&mut s.r);
    assert_eq!(entries(&s.log).len(), 6, "{:?}", entries(&s.log));
}

#[test]
fn when_every_address_fails_the_attempt_fails_once_with_the_last_error() {
    let mut s = setup(
        &[Addr("a", Script::Refuse), Addr("b", Script::FailLater)],
        Mode::Normal,
        false,
    );
    let log = s.log.clone();
    turn_until(&mut s.r, || log.borrow().iter().any(|e| e.starts_with("failed")));
    settle(&mut s.r);
    let failed: Vec<_> = entries(&s.log)
        .into_iter()
        .filter(|e| e.starts_with("failed"))
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("reset"), "{failed:?}");
    assert_eq!(s.r.timer_count(), 0);
    assert_eq!(s.r.handler_count(), 0);
}

#[test]
fn a_refused_or_panicking_build_protocol_fails_the_attempt_once() {
    for (mode, why) in [(Mode::Refuse, "limit"), (Mode::PanicInBuild, "panicked")] {
        let mut s = setup(&[C_CONNECT], mode, false);
        let log = s.log.clone();
        turn_until(&mut s.r, || log.borrow().iter().any(|e| e.starts_with("failed")));
        settle(&mut s.r);
        let log = entries(&s.log);
        assert_eq!(log.len(), 5, "{log:?}");
        assert_eq!(log[..4], ["started", "start c", "connected c", "build memory:c"]);
        assert!(log[4].starts_with("failed") && log[4].contains(why), "{log:?}");
        assert_eq!(*s.made.borrow(), 0);
        assert_eq!((s.r.timer_count(), s.r.handler_count()), (0, 0));
    }
}

#[test]
fn stop_connecting_ends_an_attempt_once_at_every_stage() {
    // Before it starts: failed at once, and it never starts.
    let mut s = setup(&[C_CONNECT], Mode::Normal, false);
    s.connector.stop_connecting(&mut s.r);
    s.connector.stop_connecting(&mut s.r);
    settle(&mut s.r);
    assert_eq!(entries(&s.log), ["failed: connection aborted"]);
    // From inside started_connecting: reported after it returns.
    let mut s = setup(&[C_CONNECT], Mode::StopInStarted, false);
    settle(&mut s.r);
    assert_eq!(entries(&s.log), ["started", "failed: connection aborted"]);
    // While connecting: the sockets close, the timers go.
    let mut s = setup(&[A_HANG, B_HANG], Mode::Normal, false);
    settle(&mut s.r);
    s.connector.stop_connecting(&mut s.r);
    s.connector.stop_connecting(&mut s.r);
    assert_eq!(
        entries(&s.log),
        ["started", "start a", "closed a", "failed: connection aborted"]
    );
    assert_eq!((s.r.timer_count(), s.r.handler_count()), (0, 0));
    // Once connected, there is nothing to stop.
    let mut s = setup(&[C_CONNECT], Mode::Normal, false);
    let made = s.made.clone();
    turn_until(&mut s.r, || *made.borrow() == 1);
    s.connector.stop_connecting(&mut s.r);
    settle(&mut s.r);
    assert!(!entries(&s.log).iter().any(|e| e.starts_with("failed")));
}

#[test]
fn a_reactor_stop_ends_a_connecting_attempt_once() {
    let mut s = setup(&[A_HANG, B_HANG], Mode::Normal, false);
    settle(&mut s.r);
    s.r.advance(Duration::from_millis(250));
    s.r.stop();
    s.r.run().unwrap();
    let mut log = entries(&s.log);
    log.sort();
    assert_eq!(
        log,
        [
            "closed a",
            "closed b",
            "failed: connection aborted",
            "start a",
            "start b",
            "started"
        ]
    );
    assert_eq!(s.r.timer_count(), 0);
}

#[test]
fn a_panicking_started_connecting_does_not_stop_the_attempt() {
    let mut s = setup(&[C_CONNECT], Mode::PanicInStarted, false);
    let made = s.made.clone();
    turn_until(&mut s.r, || *made.borrow() == 1);
    assert!(!entries(&s.log).iter().any(|e| e.starts_with("failed")));
}

#[test]
fn connect_during_an_attempt_is_ignored_and_works_again_after_it() {
    let mut s = setup(&[Addr("a", Script::Refuse)], Mode::Normal, false);
    s.connector.connect(&mut s.r);
    settle(&mut s.r);
    assert_eq!(
        entries(&s.log),
        [
            "started",
            "start a",
            "failed: connection lost: connection refused"
        ]
    );
    s.connector.connect(&mut s.r);
    settle(&mut s.r);
    assert_eq!(entries(&s.log).len(), 6, "{:?}", entries(&s.log));
}

#[test]
fn only_the_lifecycle_transitions_are_allowed() {
    use Phase::*;
    let phases = || -> Vec<Phase<()>> {
        vec![
            Idle,
            Queued,
            Resolving {
                stand_in: ConnId::from_token(mio::Token(0)),
            },
            Connecting(Race::new(Vec::new())),
            Opening,
            Connected,
            Failed,
            Stopped,
        ]
    };
    let mut allowed = Vec::new();
    for from in phases() {
        for to in phases() {
            if from.allows(&to) {
                allowed.push(format!("{} -> {}", from.name(), to.name()));
            }
        }
    }
    assert_eq!(
        allowed,
        [
            "idle -> queued",
            "queued -> resolving",
            "queued -> connecting",
            "queued -> failed",
            "queued -> stopped",
            "resolving -> connecting",
            "resolving -> failed",
            "resolving -> stopped",
            "connecting -> opening",
            "connecting -> failed",
            "connecting -> stopped",
            "opening -> connected",
            "opening -> failed",
            "connected -> queued",
            "failed -> queued",
            "stopped -> queued",
        ]
    );
}
