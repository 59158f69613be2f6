//! UDP over real loopback sockets: echo (IPv4, IPv6, dual-stack), connected
//! mode, ICMP errors, multicast, broadcast, size limits, truncation,
//! stop_listening and panic isolation.

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::rc::Rc;
use std::time::Duration;

use twistor_reactor::{DatagramProtocol, DatagramTransport, Interface, Reactor};
use twistor_transports::udp::{connect_udp, listen_udp, listen_udp_with, UdpEcho, UdpOptions};

const WAIT: Duration = Duration::from_secs(10);

type OnStart = Box<dyn FnOnce(&mut dyn DatagramTransport)>;

#[derive(Default)]
struct Log {
    started: usize,
    stopped: usize,
    datagrams: Vec<(Vec<u8>, SocketAddr)>,
    errors: Vec<(io::ErrorKind, String)>,
}

/// Records every callback; runs `on_start` in `start_protocol`.
struct Rec {
    log: Rc<RefCell<Log>>,
    on_start: Option<OnStart>,
    panic_on: Option<&'static [u8]>,
}

fn rec() -> (Rec, Rc<RefCell<Log>>) {
    let log = Rc::new(RefCell::new(Log::default()));
    (
        Rec {
            log: log.clone(),
            on_start: None,
            panic_on: None,
        },
        log,
    )
}

impl DatagramProtocol for Rec {
    fn start_protocol(&mut self, t: &mut dyn DatagramTransport) {
        self.log.borrow_mut().started += 1;
        if let Some(f) = self.on_start.take() {
            f(t);
        }
    }
    fn datagram_received(&mut self, _: &mut dyn DatagramTransport, data: &[u8], from: SocketAddr) {
        if self.panic_on == Some(data) {
            panic!("told to panic");
        }
        self.log.borrow_mut().datagrams.push((data.to_vec(), from));
    }
    fn error_received(&mut self, _: &mut dyn DatagramTransport, err: &io::Error) {
        self.log.borrow_mut().errors.push((err.kind(), err.to_string()));
    }
    fn stop_protocol(&mut self, _: &mut dyn DatagramTransport) {
        self.log.borrow_mut().stopped += 1;
    }
}

/// A blocking peer socket with a bound on every receive.
fn peer(addr: &str) -> UdpSocket {
    let s = UdpSocket::bind(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    s
}

/// Run the reactor until `s` receives a datagram; return it.
fn run_until_reply(r: &mut Reactor, s: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 70_000];
    let mut got = None;
    r.run_until(WAIT, |_| {
        if got.is_none() {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                got = Some((buf[..n].to_vec(), from));
            }
        }
        got.is_some()
    })
    .unwrap();
    got.expect("no reply within the bound")
}

fn echo_round_trip(bind: &str, client: &str) {
    let mut r = Reactor::new().unwrap();
    let port = listen_udp(&mut r, bind, UdpEcho::new()).unwrap();
    let c = peer(client);
    c.send_to(b"hello", port.local_addr()).unwrap();
    let (data, from) = run_until_reply(&mut r, &c);
    assert_eq!(data, b"hello");
    assert_eq!(from, port.local_addr());
}

#[test]
fn echo_ipv4() {
    echo_round_trip("127.0.0.1:0", "127.0.0.1:0");
}

#[test]
fn echo_ipv6() {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("SKIPPED echo_ipv6: this host has no IPv6 loopback");
        return;
    }
    echo_round_trip("[::1]:0", "[::1]:0");
}

#[test]
fn bare_port_is_dual_stack_and_reports_plain_ipv4() {
    let mut r = Reactor::new().unwrap();
    let (p, log) = rec();
    let port = listen_udp(&mut r, 0u16, p).unwrap();
    let n = port.local_addr().port();
    let c4 = peer("127.0.0.1:0");
    c4.send_to(b"four", ("127.0.0.1", n)).unwrap();
    assert!(r.run_until(WAIT, |_| log.borrow().datagrams.len() == 1).unwrap());
    assert_eq!(
        log.borrow().datagrams[0],
        (b"four".to_vec(), c4.local_addr().unwrap())
    );
    // A reply to the plain IPv4 address goes out through the IPv6 socket.
    let to = c4.local_addr().unwrap();
    port.send_to(&mut r, b"back", to);
    let (data, _) = run_until_reply(&mut r, &c4);
    assert_eq!(data, b"back");
    if port.local_addr().is_ipv6() {
        let c6 = peer("[::1]:0");
        c6.send_to(b"six", ("::1", n)).unwrap();
        assert!(r.run_until(WAIT, |_| log.borrow().datagrams.len() == 2).unwrap());
        assert_eq!(log.borrow().datagrams[1].1, c6.local_addr().unwrap());
    }
}

#[test]
fn connected_mode_drops_foreign_datagrams() {
    let mut r = Reactor::new().unwrap();
    let friend = peer("127.0.0.1:0");
    let stranger = peer("127.0.0.1:0");
    let (p, log) = rec();
    let port = connect_udp(&mut r, friend.local_addr().unwrap(), p).unwrap();
    r.run_pending().unwrap();
    stranger.send_to(b"stranger", port.local_addr()).unwrap();
    friend.send_to(b"friend", port.local_addr()).unwrap();
    // The friend's datagram was sent last, so once it is in, the stranger's
    // would be too had it not been dropped.
    assert!(r.run_until(WAIT, |_| !log.borrow().datagrams.is_empty()).unwrap());
    r.run_pending().unwrap();
    let log = log.borrow();
    assert_eq!(
        log.datagrams,
        vec![(b"friend".to_vec(), friend.local_addr().unwrap())]
    );
}

#[test]
fn connected_socket_to_closed_port_gets_connection_refused() {
    let mut r = Reactor::new().unwrap();
    let closed = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap(); // closed at once
    let (mut p, log) = rec();
    p.on_start = Some(Box::new(|t| t.write(b"anyone?").unwrap()));
    let _port = connect_udp(&mut r, closed, p).unwrap();
    assert!(r.run_until(WAIT, |_| !log.borrow().errors.is_empty()).unwrap());
    assert_eq!(log.borrow().errors[0].0, io::ErrorKind::ConnectionRefused);
}

#[test]
fn largest_and_empty_datagrams_round_trip() {
    for (bind, size) in [("127.0.0.1:0", 65_507), ("[::1]:0", 65_527)] {
        if UdpSocket::bind(bind).is_err() {
            eprintln!("SKIPPED {bind}: no such loopback");
            continue;
        }
        let mut r = Reactor::new().unwrap();
        let port = listen_udp(&mut r, bind, UdpEcho::new()).unwrap();
        let c = peer(bind);
        let big: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        c.send_to(&big, port.local_addr()).unwrap();
        assert_eq!(run_until_reply(&mut r, &c).0, big);
        c.send_to(b"", port.local_addr()).unwrap();
        assert_eq!(run_until_reply(&mut r, &c).0, b"");
    }
}

#[test]
fn oversized_datagram_is_reported_not_cut() {
    let mut r = Reactor::new().unwrap();
    let (p, log) = rec();
    let opts = UdpOptions {
        max_datagram: 100,
        ..UdpOptions::default()
    };
    let port = listen_udp_with(&mut r, "127.0.0.1:0", p, opts).unwrap();
    let c = peer("127.0.0.1:0");
    c.send_to(&[7u8; 200], port.local_addr()).unwrap();
    c.send_to(&[8u8; 100], port.local_addr()).unwrap();
    assert!(r.run_until(WAIT, |_| log.borrow().datagrams.len() == 1).unwrap());
    let log = log.borrow();
    assert_eq!(log.errors.len(), 1);
    assert_eq!(log.errors[0].0, io::ErrorKind::InvalidData);
    assert!(log.errors[0].1.contains("200 bytes"), "{}", log.errors[0].1);
    assert_eq!(log.datagrams[0].0, vec![8u8; 100]);
}

#[test]
fn multicast_reaches_two_listeners_on_loopback() {
    let group = Ipv4Addr::new(239, 255, 42, 99);
    let mut r = Reactor::new().unwrap();
    let opts = UdpOptions {
        reuse_address: true,
        ..UdpOptions::default()
    };
    let (a, log_a) = rec();
    let first = listen_udp_with(&mut r, SocketAddr::from((group, 0)), a, opts.clone()).unwrap();
    let port = first.local_addr().port();
    let (b, log_b) = rec();
    let second = listen_udp_with(&mut r, SocketAddr::from((group, port)), b, opts).unwrap();
    let joined = Rc::new(RefCell::new(Vec::new()));
    for l in [&first, &second] {
        let j = joined.clone();
        l.call(&mut r, move |_, t| {
            j.borrow_mut()
                .push(t.join_group(IpAddr::V4(group), Interface::V4(Ipv4Addr::LOCALHOST)));
        });
    }
    let (mut s, _) = rec();
    let sent = Rc::new(RefCell::new(None));
    let sent2 = sent.clone();
    s.on_start = Some(Box::new(move |t| {
        // Loopback only: out through lo, and a TTL of 0 keeps it on this host.
        let res = t
            .set_multicast_interface(Interface::V4(Ipv4Addr::LOCALHOST))
            .and_then(|_| t.set_multicast_ttl(0))
            .and_then(|_| t.set_multicast_loopback(true))
            .and_then(|_| t.send_to(b"to the group", (group, port).into()));
        *sent2.borrow_mut() = Some(res);
    }));
    assert!(r.run_until(WAIT, |_| joined.borrow().len() == 2).unwrap());
    for j in joined.borrow().iter() {
        if let Err(e) = j {
            eprintln!("SKIPPED multicast: cannot join a group on loopback here: {e}");
            return;
        }
    }
    let _sender = listen_udp(&mut r, "127.0.0.1:0", s).unwrap();
    assert!(r.run_until(WAIT, |_| sent.borrow().is_some()).unwrap());
    if let Some(Err(e)) = sent.borrow().as_ref() {
        if matches!(e.raw_os_error(), Some(libc::ENETUNREACH) | Some(libc::ENODEV)) {
            eprintln!("SKIPPED multicast: the kernel has no multicast route on loopback: {e}");
            return;
        }
        panic!("multicast send failed: {e}");
    }
    assert!(r
        .run_until(WAIT, |_| log_a.borrow().datagrams.len() == 1
            && log_b.borrow().datagrams.len() == 1)
        .unwrap());
    assert_eq!(log_a.borrow().datagrams[0].0, b"to the group");
    assert_eq!(log_b.borrow().datagrams[0].0, b"to the group");
    // Leaving the group works too.
    let left = Rc::new(RefCell::new(None));
    let l2 = left.clone();
    first.call(&mut r, move |_, t| {
        *l2.borrow_mut() = Some(t.leave_group(IpAddr::V4(group), Interface::V4(Ipv4Addr::LOCALHOST)));
    });
    assert!(r.run_until(WAIT, |_| left.borrow().is_some()).unwrap());
    assert!(left.borrow().as_ref().unwrap().is_ok());
}

#[test]
fn broadcast_needs_the_broadcast_flag() {
    let mut r = Reactor::new().unwrap();
    let (p, _) = rec();
    let port = listen_udp(&mut r, "127.0.0.1:0", p).unwrap();
    let results = Rc::new(RefCell::new(Vec::new()));
    let res = results.clone();
    // 127.255.255.255 is the broadcast address of lo: nothing leaves the host.
    port.call(&mut r, move |_, t| {
        let to: SocketAddr = "127.255.255.255:9".parse().unwrap();
        res.borrow_mut().push(t.send_to(b"x", to).map_err(|e| e.kind()));
        t.set_broadcast(true).unwrap();
        res.borrow_mut().push(t.send_to(b"x", to).map_err(|e| e.kind()));
    });
    assert!(r.run_until(WAIT, |_| results.borrow().len() == 2).unwrap());
    let results = results.borrow();
    assert_eq!(results[0], Err(io::ErrorKind::PermissionDenied));
    assert_eq!(results[1], Ok(()));
}

#[test]
fn stop_listening_closes_once() {
    let mut r = Reactor::new().unwrap();
    let (p, log) = rec();
    let port = listen_udp(&mut r, "127.0.0.1:0", p).unwrap();
    let addr = port.local_addr();
    r.run_pending().unwrap();
    assert_eq!(log.borrow().started, 1);
    port.stop_listening(&mut r);
    port.stop_listening(&mut r);
    assert!(r.run_until(WAIT, |_| !port.is_listening()).unwrap());
    r.run_pending().unwrap();
    assert_eq!(log.borrow().stopped, 1);
    // The port is free again.
    UdpSocket::bind(addr).unwrap();
}

#[test]
fn stop_listening_from_a_callback() {
    let mut r = Reactor::new().unwrap();
    struct StopOnFirst(Rc<RefCell<usize>>);
    impl DatagramProtocol for StopOnFirst {
        fn datagram_received(&mut self, t: &mut dyn DatagramTransport, _: &[u8], _: SocketAddr) {
            *self.0.borrow_mut() += 1;
            t.stop_listening();
            assert!(t.send_to(b"late", "127.0.0.1:9".parse().unwrap()).is_err());
        }
    }
    let n = Rc::new(RefCell::new(0));
    let port = listen_udp(&mut r, "127.0.0.1:0", StopOnFirst(n.clone())).unwrap();
    let c = peer("127.0.0.1:0");
    for _ in 0..3 {
        c.send_to(b"x", port.local_addr()).unwrap();
    }
    assert!(r.run_until(WAIT, |_| !port.is_listening()).unwrap());
    assert_eq!(*n.borrow(), 1);
}

#[test]
fn a_panicking_protocol_closes_only_its_socket() {
    let mut r = Reactor::new().unwrap();
    let (mut p, log) = rec();
    p.panic_on = Some(b"boom");
    let bad = listen_udp(&mut r, "127.0.0.1:0", p).unwrap();
    let good = listen_udp(&mut r, "127.0.0.1:0", UdpEcho::new()).unwrap();
    let c = peer("127.0.0.1:0");
    c.send_to(b"boom", bad.local_addr()).unwrap();
    assert!(r.run_until(WAIT, |_| !bad.is_listening()).unwrap());
    assert_eq!(log.borrow().stopped, 1);
    c.send_to(b"still here", good.local_addr()).unwrap();
    assert_eq!(run_until_reply(&mut r, &c).0, b"still here");
}

#[test]
fn reading_is_fair_and_drains_a_burst() {
    let mut r = Reactor::new().unwrap();
    let (p, log) = rec();
    let opts = UdpOptions {
        read_budget: 4,
        recv_buffer_size: Some(1 << 20),
        ..UdpOptions::default()
    };
    let port = listen_udp_with(&mut r, "127.0.0.1:0", p, opts).unwrap();
    r.run_pending().unwrap();
    let c = peer("127.0.0.1:0");
    for i in 0..100u32 {
        c.send_to(&i.to_be_bytes(), port.local_addr()).unwrap();
    }
    let turns = r.turns();
    assert!(r
        .run_until(WAIT, |_| log.borrow().datagrams.len() == 100)
        .unwrap());
    // 100 datagrams at 4 per event take at least 25 turns: the budget holds.
    assert!(r.turns() - turns >= 25, "{} turns", r.turns() - turns);
    let got: Vec<u32> = log
        .borrow()
        .datagrams
        .iter()
        .map(|(d, _)| u32::from_be_bytes(d[..4].try_into().unwrap()))
        .collect();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
}

#[test]
fn reactor_stop_calls_stop_protocol() {
    let mut r = Reactor::new().unwrap();
    r.set_install_signal_handlers(false);
    let (p, log) = rec();
    let port = listen_udp(&mut r, "127.0.0.1:0", p).unwrap();
    r.call_later(Duration::from_millis(1), |r| r.stop());
    r.run().unwrap();
    assert_eq!((log.borrow().started, log.borrow().stopped), (1, 1));
    assert!(!port.is_listening());
}

#[test]
fn ipv6_multicast_on_loopback_where_the_kernel_routes_it() {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("SKIPPED ipv6 multicast: no IPv6 loopback");
        return;
    }
    // The loopback interface's index.
    // SAFETY: a NUL-terminated name.
    let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    if lo == 0 {
        eprintln!("SKIPPED ipv6 multicast: no interface named lo");
        return;
    }
    let group: std::net::Ipv6Addr = "ff02::7477:6973".parse().unwrap();
    let mut r = Reactor::new().unwrap();
    let opts = UdpOptions {
        reuse_address: true,
        ..UdpOptions::default()
    };
    let (a, log_a) = rec();
    let first = listen_udp_with(&mut r, "[::]:0", a, opts.clone()).unwrap();
    let port = first.local_addr().port();
    let (b, log_b) = rec();
    let second = listen_udp_with(
        &mut r,
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)),
        b,
        opts,
    )
    .unwrap();
    let results = Rc::new(RefCell::new(Vec::new()));
    for l in [&first, &second] {
        let res = results.clone();
        l.call(&mut r, move |_, t| {
            res.borrow_mut()
                .push(t.join_group(IpAddr::V6(group), Interface::Index(lo)))
        });
    }
    let (mut s, _) = rec();
    let res = results.clone();
    s.on_start = Some(Box::new(move |t| {
        let dest = SocketAddr::V6(std::net::SocketAddrV6::new(group, port, 0, lo));
        let sent = t
            .set_multicast_interface(Interface::Index(lo))
            .and_then(|_| t.set_multicast_ttl(1))
            .and_then(|_| t.set_multicast_loopback(true))
            .and_then(|_| t.send_to(b"six", dest));
        res.borrow_mut().push(sent);
    }));
    assert!(r.run_until(WAIT, |_| results.borrow().len() == 2).unwrap());
    let _sender = listen_udp(&mut r, "[::1]:0", s).unwrap();
    assert!(r.run_until(WAIT, |_| results.borrow().len() == 3).unwrap());
    for res in results.borrow().iter() {
        if let Err(e) = res {
            if matches!(
                e.raw_os_error(),
                Some(libc::ENETUNREACH) | Some(libc::ENODEV) | Some(libc::EADDRNOTAVAIL)
            ) {
                eprintln!("SKIPPED ipv6 multicast: the kernel has no IPv6 multicast route on lo: {e}");
                return;
            }
            panic!("ipv6 multicast failed: {e}");
        }
    }
    assert!(r
        .run_until(WAIT, |_| log_a.borrow().datagrams.len() == 1
            && log_b.borrow().datagrams.len() == 1)
        .unwrap());
    assert_eq!(log_a.borrow().datagrams[0].0, b"six");
}

#[test]
fn bad_addresses_and_taken_ports_are_clear_errors() {
    let mut r = Reactor::new().unwrap();
    let e = listen_udp(&mut r, "not an address", UdpEcho::new()).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    let first = listen_udp(&mut r, "127.0.0.1:0", UdpEcho::new()).unwrap();
    let e = listen_udp(&mut r, first.local_addr(), UdpEcho::new()).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    assert!(e.to_string().contains(&first.local_addr().to_string()), "{e}");
}

/// Runs `nc` with `args`, feeding it `input`; returns its stdout once it
/// exits (None: no `nc` here).
fn run_nc(r: &mut Reactor, args: &[&str], input: &'static [u8]) -> Option<Vec<u8>> {
    use std::process::ExitStatus;
    use twistor_transports::process::{spawn_process, ProcessProtocol, ProcessTransport};
    if std::process::Command::new("nc").arg("-h").output().is_err() {
        return None;
    }
    struct Nc(&'static [u8], Rc<RefCell<(Vec<u8>, bool)>>);
    impl ProcessProtocol for Nc {
        fn connection_made(&mut self, t: &mut dyn ProcessTransport) {
            t.write(self.0);
            t.close_stdin();
        }
        fn out_received(&mut self, _: &mut dyn ProcessTransport, data: &[u8]) {
            self.1.borrow_mut().0.extend_from_slice(data);
        }
        fn process_ended(&mut self, _: &mut dyn ProcessTransport, _: ExitStatus) {
            self.1.borrow_mut().1 = true;
        }
    }
    let out = Rc::new(RefCell::new((Vec::new(), false)));
    spawn_process(r, Nc(input, out.clone()), "nc", args, None, None).unwrap();
    assert!(
        r.run_until(WAIT, |_| out.borrow().1).unwrap(),
        "nc did not finish"
    );
    let got = out.borrow().0.clone();
    Some(got)
}

#[test]
fn nc_talks_to_the_udp_echo() {
    let mut r = Reactor::new().unwrap();
    // A bare port, as in the lab: nc's "localhost" may be ::1 or 127.0.0.1.
    let port = listen_udp(&mut r, 0u16, UdpEcho::new()).unwrap();
    let p = port.local_addr().port().to_string();
    // -w1: nc leaves one second after the last datagram.
    match run_nc(&mut r, &["-u", "-w1", "localhost", &p], b"hello nc\n") {
        Some(out) => assert_eq!(out, b"hello nc\n"),
        None => eprintln!("SKIPPED: nc is not installed"),
    }
}

#[test]
fn a_dual_stack_socket_connects_to_an_ipv4_peer() {
    let mut r = Reactor::new().unwrap();
    let friend = peer("127.0.0.1:0");
    let to = friend.local_addr().unwrap();
    let (mut p, log) = rec();
    p.on_start = Some(Box::new(move |t| {
        t.connect(to).unwrap();
        assert_eq!(t.peer(), Some(to));
        t.write(b"via [::]").unwrap();
    }));
    let port = listen_udp(&mut r, 0u16, p).unwrap();
    let n = port.local_addr().port();
    let (data, from) = run_until_reply(&mut r, &friend);
    assert_eq!((data.as_slice(), from.port()), (&b"via [::]"[..], n));
    friend.send_to(b"back", from).unwrap();
    assert!(r.run_until(WAIT, |_| log.borrow().datagrams.len() == 1).unwrap());
    // Reported as the plain IPv4 address it was connected to.
    assert_eq!(log.borrow().datagrams[0], (b"back".to_vec(), to));
}
