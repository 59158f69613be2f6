//! Unix-domain sockets: echo over a path and an abstract name, addresses,
//! stale socket files, removal on stop, file mode, connection failures and
//! exactly-once callbacks.

use std::cell::RefCell;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use twistor_reactor::testing::{Record, Recorder};
use twistor_reactor::{Address, ClientFactory, Connector, Factory, Protocol, Reactor, Reason, Transport};
use twistor_transports::unix::{connect_unix, listen_unix, listen_unix_with, UnixAddr, UnixListenOptions};

const WAIT: Duration = Duration::from_secs(10);

/// A unique socket path for this test (removed if left over).
fn sock_path(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let p = std::env::temp_dir().join(format!(
        "twistor-{}-{}-{name}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&p);
    p
}

/// Echoes, and records like a `Recorder`.
struct Echo(Recorder);
impl Protocol for Echo {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.0.connection_made(t);
    }
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        self.0.data_received(t, data);
        t.write(data);
    }
    fn connection_lost(&mut self, t: &mut dyn Transport, reason: &Reason) {
        self.0.connection_lost(t, reason);
    }
}

/// Records the addresses a server connection saw.
type Seen = Rc<RefCell<Vec<(Address, Address)>>>;

/// The records of every server connection, in order.
type Records = Rc<RefCell<Vec<Rc<RefCell<Record>>>>>;

fn echo_factory() -> (impl Factory, Records, Seen) {
    let records = Rc::new(RefCell::new(Vec::new()));
    let seen: Seen = Rc::new(RefCell::new(Vec::new()));
    let (r2, s2) = (records.clone(), seen.clone());
    let f = move |_: &Address| {
        let (rec, log) = Recorder::new();
        r2.borrow_mut().push(log);
        struct Noting(Echo, Seen);
        impl Protocol for Noting {
            fn connection_made(&mut self, t: &mut dyn Transport) {
                self.1.borrow_mut().push((t.host(), t.peer()));
                self.0.connection_made(t);
            }
            fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
                self.0.data_received(t, d);
            }
            fn connection_lost(&mut self, t: &mut dyn Transport, r: &Reason) {
                self.0.connection_lost(t, r);
            }
        }
        Noting(Echo(rec), s2.clone())
    };
    (f, records, seen)
}

/// A client that sends `msg`, closes once it is echoed, and counts every
/// factory and protocol callback.
#[derive(Default)]
struct Counts {
    made: usize,
    lost: usize,
    failed: Vec<Reason>,
    client_lost: usize,
    data: Vec<u8>,
    peer: Option<Address>,
}

struct Client {
    counts: Rc<RefCell<Counts>>,
    msg: &'static [u8],
}

struct ClientProto {
    counts: Rc<RefCell<Counts>>,
    msg: &'static [u8],
}

impl Protocol for ClientProto {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        let mut c = self.counts.borrow_mut();
        c.made += 1;
        c.peer = Some(t.peer());
        t.write(self.msg);
    }
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        let mut c = self.counts.borrow_mut();
        c.data.extend_from_slice(data);
        if c.data.len() >= self.msg.len() {
            t.lose_connection();
        }
    }
    fn connection_lost(&mut self, _: &mut dyn Transport, _: &Reason) {
        self.counts.borrow_mut().lost += 1;
    }
}

impl Factory for Client {
    fn build_protocol(&mut self, _: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(ClientProto {
            counts: self.counts.clone(),
            msg: self.msg,
        }))
    }
}

impl ClientFactory for Client {
    fn client_connection_failed(&mut self, _: &mut Reactor, _: &Connector, reason: &Reason) {
        self.counts.borrow_mut().failed.push(reason.clone());
    }
    fn client_connection_lost(&mut self, _: &mut Reactor, _: &Connector, _: &Reason) {
        self.counts.borrow_mut().client_lost += 1;
    }
}

fn client(msg: &'static [u8]) -> (Client, Rc<RefCell<Counts>>) {
    let counts = Rc::new(RefCell::new(Counts::default()));
    (
        Client {
            counts: counts.clone(),
            msg,
        },
        counts,
    )
}

fn round_trip(addr: UnixAddr) {
    let mut r = Reactor::new().unwrap();
    let (f, records, seen) = echo_factory();
    let port = listen_unix(&mut r, addr.clone(), f).unwrap();
    assert_eq!(port.local_addr(), &addr);
    let (c, counts) = client(b"hello over unix");
    connect_unix(&mut r, addr.clone(), c);
    assert!(r
        .run_until(WAIT, |_| counts.borrow().client_lost == 1
            && records.borrow().iter().all(|l| l.borrow().lost.len() == 1))
        .unwrap());
    r.run_pending().unwrap();
    let c = counts.borrow();
    assert_eq!(c.data, b"hello over unix");
    assert_eq!((c.made, c.lost, c.client_lost, c.failed.len()), (1, 1, 1, 0));
    assert_eq!(c.peer, Some(addr.to_address()));
    let records = records.borrow();
    assert_eq!(records.len(), 1);
    let server = records[0].borrow();
    assert_eq!((server.made, server.lost.len()), (1, 1));
    assert_eq!(server.data, b"hello over unix");
    assert!(server.lost[0].is_clean(), "{:?}", server.lost[0]);
    // The server's end is named by the listening address; the client's end
    // is unnamed.
    assert_eq!(
        seen.borrow()[0],
        (addr.to_address(), Address::Unix(PathBuf::new()))
    );
    port.stop_listening(&mut r);
}

#[test]
fn echo_over_a_socket_file() {
    let path = sock_path("echo");
    round_trip(UnixAddr::Path(path.clone()));
    assert!(!path.exists(), "socket file left behind");
}

#[test]
fn echo_over_an_abstract_name() {
    if !cfg!(target_os = "linux") {
        eprintln!("SKIPPED: abstract names are Linux-only");
        return;
    }
    let name = format!("@twistor-test-{}", std::process::id());
    round_trip(UnixAddr::from(name.as_str()));
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let path = sock_path("stale");
    // A crashed server: its socket file outlives it.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let mut r = Reactor::new().unwrap();
    let (f, _, _) = echo_factory();
    let _port = listen_unix(&mut r, &path, f).unwrap();
    let (c, counts) = client(b"fresh");
    connect_unix(&mut r, &path, c);
    assert!(r.run_until(WAIT, |_| counts.borrow().client_lost == 1).unwrap());
    assert_eq!(counts.borrow().data, b"fresh");
}

#[test]
fn a_stale_socket_file_is_kept_when_asked() {
    let path = sock_path("stale-kept");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let mut r = Reactor::new().unwrap();
    let (f, _, _) = echo_factory();
    let opts = UnixListenOptions {
        remove_stale: false,
        ..UnixListenOptions::default()
    };
    let e = listen_unix_with(&mut r, &path, f, opts).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    assert!(e.to_string().contains("stale"), "{e}");
    assert!(path.exists());
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_live_server_or_a_plain_file_is_never_removed() {
    let path = sock_path("live");
    let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let mut r = Reactor::new().unwrap();
    let (f, _, _) = echo_factory();
    let e = listen_unix(&mut r, &path, f).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    assert!(e.to_string().contains("another server"), "{e}");
    assert!(live.accept().is_ok(), "the live server lost its socket");
    drop(live);
    std::fs::remove_file(&path).unwrap();

    std::fs::write(&path, b"precious").unwrap();
    let (f, _, _) = echo_factory();
    let e = listen_unix(&mut r, &path, f).unwrap_err();
    assert!(e.to_string().contains("not a socket"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn the_file_goes_on_stop_listening_and_on_reactor_stop() {
    let mut r = Reactor::new().unwrap();
    r.set_install_signal_handlers(false);
    let (a, b) = (sock_path("stop-a"), sock_path("stop-b"));
    let (f, _, _) = echo_factory();
    let pa = listen_unix(&mut r, &a, f).unwrap();
    let (f, _, _) = echo_factory();
    listen_unix(&mut r, &b, f).unwrap();
    assert!(a.exists() && b.exists());
    pa.stop_listening(&mut r);
    assert!(!a.exists());
    // Nobody listens any more: a client is refused.
    let (c, counts) = client(b"x");
    connect_unix(&mut r, &a, c);
    assert!(r.run_until(WAIT, |_| !counts.borrow().failed.is_empty()).unwrap());
    assert_eq!(counts.borrow().failed[0].io_kind(), Some(io::ErrorKind::NotFound));
    r.call_soon(|r| r.stop());
    r.run().unwrap();
    assert!(!b.exists());
}

#[test]
fn a_replaced_file_is_left_alone() {
    let path = sock_path("replaced");
    let mut r = Reactor::new().unwrap();
    let (f, _, _) = echo_factory();
    let port = listen_unix(&mut r, &path, f).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"someone else's").unwrap();
    port.stop_listening(&mut r);
    assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn the_file_mode_is_set() {
    let path = sock_path("mode");
    let mut r = Reactor::new().unwrap();
    let (f, _, _) = echo_factory();
    let opts = UnixListenOptions {
        mode: Some(0o600),
        ..UnixListenOptions::default()
    };
    let port = listen_unix_with(&mut r, &path, f, opts).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    port.stop_listening(&mut r);
}

#[test]
fn failures_are_reported_once() {
    let mut r = Reactor::new().unwrap();
    // Nobody listens on a stale file: refused.
    let path = sock_path("refused");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let (c, refused) = client(b"x");
    connect_unix(&mut r, &path, c);
    // No such file.
    let (c, missing) = client(b"x");
    connect_unix(&mut r, sock_path("missing"), c);
    // Cancelled before it began.
    let (c, cancelled) = client(b"x");
    let connector = connect_unix(&mut r, &path, c);
    connector.stop_connecting(&mut r);
    connector.stop_connecting(&mut r);
    assert!(r
        .run_until(WAIT, |_| !refused.borrow().failed.is_empty()
            && !missing.borrow().failed.is_empty())
        .unwrap());
    r.run_pending().unwrap();
    for (counts, kind) in [
        (&refused, Some(io::ErrorKind::ConnectionRefused)),
        (&missing, Some(io::ErrorKind::NotFound)),
        (&cancelled, None),
    ] {
        let c = counts.borrow();
        assert_eq!(c.failed.len(), 1);
        assert_eq!(c.failed[0].io_kind(), kind, "{:?}", c.failed[0]);
        assert_eq!((c.made, c.lost, c.client_lost), (0, 0, 0));
    }
    assert!(matches!(cancelled.borrow().failed[0], Reason::Aborted));
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn many_clients_each_get_exactly_one_made_and_lost() {
    const N: usize = 50;
    let path = sock_path("many");
    let mut r = Reactor::new().unwrap();
    let (f, records, _) = echo_factory();
    let _port = listen_unix(&mut r, &path, f).unwrap();
    let mut all = Vec::new();
    for _ in 0..N {
        let (c, counts) = client(b"ping");
        connect_unix(&mut r, &path, c);
        all.push(counts);
    }
    assert!(r
        .run_until(WAIT, |_| all.iter().all(|c| c.borrow().client_lost == 1)
            && records.borrow().len() == N
            && records.borrow().iter().all(|l| l.borrow().lost.len() == 1))
        .unwrap());
    r.run_pending().unwrap();
    for c in &all {
        let c = c.borrow();
        assert_eq!((c.made, c.lost, c.client_lost, c.failed.len()), (1, 1, 1, 0));
        assert_eq!(c.data, b"ping");
    }
    for l in records.borrow().iter() {
        assert_eq!((l.borrow().made, l.borrow().lost.len()), (1, 1));
    }
}

#[test]
fn reconnecting_through_the_connector_works() {
    let path = sock_path("again");
    let mut r = Reactor::new().unwrap();
    let (f, records, _) = echo_factory();
    let _port = listen_unix(&mut r, &path, f).unwrap();
    let (c, counts) = client(b"one");
    let connector = connect_unix(&mut r, &path, c);
    assert!(r.run_until(WAIT, |_| counts.borrow().client_lost == 1).unwrap());
    connector.connect(&mut r);
    assert!(r.run_until(WAIT, |_| counts.borrow().client_lost == 2).unwrap());
    assert_eq!(counts.borrow().made, 2);
    assert_eq!(records.borrow().len(), 2);
}

#[test]
fn nc_talks_to_the_unix_echo() {
    use std::process::ExitStatus;
    use twistor_transports::process::{spawn_process, ProcessProtocol, ProcessTransport};
    if std::process::Command::new("nc").arg("-h").output().is_err() {
        eprintln!("SKIPPED: nc is not installed");
        return;
    }
    struct Nc(Rc<RefCell<(Vec<u8>, bool)>>);
    impl ProcessProtocol for Nc {
        fn connection_made(&mut self, t: &mut dyn ProcessTransport) {
            t.write(b"hello over a path\n");
            t.close_stdin();
        }
        fn out_received(&mut self, _: &mut dyn ProcessTransport, data: &[u8]) {
            self.0.borrow_mut().0.extend_from_slice(data);
        }
        fn process_ended(&mut self, _: &mut dyn ProcessTransport, _: ExitStatus) {
            self.0.borrow_mut().1 = true;
        }
    }
    let path = sock_path("nc");
    let mut r = Reactor::new().unwrap();
    let (f, records, _) = echo_factory();
    let _port = listen_unix(&mut r, &path, f).unwrap();
    let out = Rc::new(RefCell::new((Vec::new(), false)));
    // -N: shut the socket down at the end of input, so the server sees EOF.
    let p = path.to_str().unwrap();
    spawn_process(&mut r, Nc(out.clone()), "nc", ["-U", "-N", p], None, None).unwrap();
    assert!(
        r.run_until(WAIT, |_| out.borrow().1).unwrap(),
        "nc did not finish"
    );
    assert_eq!(out.borrow().0, b"hello over a path\n");
    assert!(r
        .run_until(WAIT, |_| records
            .borrow()
            .iter()
            .all(|l| l.borrow().lost.len() == 1))
        .unwrap());
}

/// Stops its own attempt from `started_connecting`, as Twisted's docs for
/// `startedConnecting` invite.
struct StopsAtOnce(Client);

impl Factory for StopsAtOnce {
    fn build_protocol(&mut self, a: &Address) -> Option<Box<dyn Protocol>> {
        self.0.build_protocol(a)
    }
}

impl ClientFactory for StopsAtOnce {
    fn started_connecting(&mut self, r: &mut Reactor, connector: &Connector) {
        connector.stop_connecting(r);
    }
    fn client_connection_failed(&mut self, r: &mut Reactor, c: &Connector, reason: &Reason) {
        self.0.client_connection_failed(r, c, reason);
    }
}

#[test]
fn stop_connecting_from_started_connecting_fails_the_attempt_once() {
    let mut r = Reactor::new().unwrap();
    let (f, records, _) = echo_factory();
    let port = listen_unix(&mut r, format!("@twistor-stop-{}", std::process::id()), f).unwrap();
    let (c, counts) = client(b"x");
    connect_unix(&mut r, port.local_addr().clone(), StopsAtOnce(c));
    r.run_until(WAIT, |_| !counts.borrow().failed.is_empty()).unwrap();
    // Give a wrongly made connection every chance to show up.
    for _ in 0..3 {
        r.run_pending().unwrap();
    }
    let c = counts.borrow();
    assert_eq!(c.failed.len(), 1, "{:?}", c.failed);
    assert!(matches!(c.failed[0], Reason::Aborted), "{:?}", c.failed[0]);
    assert_eq!((c.made, c.lost, c.client_lost), (0, 0, 0));
    assert!(records.borrow().is_empty(), "the server saw a connection");
    port.stop_listening(&mut r);
}

/// Accepting follows the reads' fairness rule: one readiness event accepts
/// at most `accept_budget` connections, then the listener waits its turn
/// behind everything else ready, until the backlog is drained.
#[test]
fn accepting_stops_at_its_budget_each_turn_and_drains_the_backlog() {
    const BUDGET: usize = 4;
    const CLIENTS: usize = 10;
    let path = sock_path("budget");
    let mut r = Reactor::new().unwrap();
    r.set_install_signal_handlers(false);
    let built = Rc::new(RefCell::new(0));
    let b2 = built.clone();
    let opts = UnixListenOptions {
        accept_budget: BUDGET,
        ..UnixListenOptions::default()
    };
    let port = listen_unix_with(
        &mut r,
        &path,
        move |_: &Address| {
            *b2.borrow_mut() += 1;
            Recorder::new().0
        },
        opts,
    )
    .unwrap();
    // A Unix-domain connect returns once the connection is queued on the
    // listener: all ten are waiting before the loop first turns.
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| std::os::unix::net::UnixStream::connect(&path).unwrap())
        .collect();
    let mut per_turn = Vec::new();
    while *built.borrow() < CLIENTS && per_turn.len() < 10 {
        r.run_pending().unwrap();
        per_turn.push(*built.borrow());
    }
    assert_eq!(per_turn, [4, 8, 10]);
    drop(clients);
    port.stop_listening(&mut r);
}

/// The file is ours as long as it is the same inode: a mode change after
/// listening (which changes the file's ctime) does not make stop leave it
/// behind.
#[test]
fn the_file_goes_on_stop_even_after_a_chmod() {
    let path = sock_path("chmod");
    let mut r = Reactor::new().unwrap();
    let (f, _, _) = echo_factory();
    let port = listen_unix(&mut r, &path, f).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).unwrap();
    port.stop_listening(&mut r);
    assert!(!path.exists(), "the socket file was left behind after a chmod");
}
