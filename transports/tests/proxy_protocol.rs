//! The PROXY protocol on real listeners over loopback: v1 and v2 headers
//! (IPv4, IPv6, UNKNOWN, LOCAL, TLVs) give the factory, `peer()` and
//! `host()` the client's addresses; malformed, missing, late and truncated
//! headers close the connection before it has a protocol (no
//! `connection_made`, no `connection_lost`) while the listener keeps
//! serving; a connection reading its header counts against
//! `max_connections`; the trusted list; TLS above the header (Python's
//! `ssl` module, and a twistor client over a Unix socket); stopping the
//! reactor with a header half read.
//!
//! The test needing python3 is skipped, with a message, only when it is
//! absent.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use twistor_reactor::{Address, Protocol, Reactor, Reason, Transport};
use twistor_transports::proxy::{IpNet, ProxyOptions, V2_SIGNATURE};
use twistor_transports::tls::{
    generate_self_signed, listen_tls_with, start_tls, ClientConfigBuilder, TlsOptions, TlsRole,
    TlsServerFactory,
};
use twistor_transports::unix::{connect_unix, listen_unix_with, UnixAddr, UnixListenOptions};
use twistor_transports::{listen_tcp_with, ListenOptions};

const WAIT: Duration = Duration::from_secs(20);

/// What the server side saw, over all its connections.
#[derive(Default, Debug)]
struct Seen {
    /// The address each `build_protocol` was called with.
    built: Vec<Address>,
    /// `peer()` and `host()` in each `connection_made`.
    made: Vec<(Address, Address)>,
    /// Every byte any connection received.
    data: Vec<u8>,
    lost: Vec<Reason>,
}

type Shared = Rc<RefCell<Seen>>;

/// Echoes and records; closes after a line feed.
struct Echo(Shared);
impl Protocol for Echo {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.0.borrow_mut().made.push((t.peer(), t.host()));
    }
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        self.0.borrow_mut().data.extend_from_slice(d);
        t.write(d);
        if d.ends_with(b"\n") {
            t.lose_connection();
        }
    }
    fn connection_lost(&mut self, _: &mut dyn Transport, reason: &Reason) {
        self.0.borrow_mut().lost.push(reason.clone());
    }
}

fn echo_factory(seen: &Shared) -> impl FnMut(&Address) -> Echo {
    let s = seen.clone();
    move |a: &Address| {
        s.borrow_mut().built.push(a.clone());
        Echo(s.clone())
    }
}

fn reactor() -> Reactor {
    let mut r = Reactor::new().unwrap();
    r.set_install_signal_handlers(false);
    r
}

/// A TCP echo on 127.0.0.1 with these PROXY options.
fn server(proxy: ProxyOptions, max_connections: Option<usize>) -> (Reactor, Shared, SocketAddr) {
    let mut r = reactor();
    let seen = Shared::default();
    let opts = ListenOptions {
        proxy_protocol: proxy,
        max_connections,
        ..ListenOptions::default()
    };
    let port = listen_tcp_with(&mut r, "127.0.0.1:0", echo_factory(&seen), opts).unwrap();
    (r, seen, port.local_addr())
}

fn inet(s: &str) -> Address {
    Address::Inet(s.parse().unwrap())
}

fn connect(to: SocketAddr, first: &[u8]) -> TcpStream {
    let mut c = TcpStream::connect(to).unwrap();
    c.set_nodelay(true).unwrap();
    c.write_all(first).unwrap();
    c
}

/// Whether the server has closed `c` (EOF or reset), without blocking.
fn closed(c: &mut TcpStream) -> bool {
    c.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

fn wait_closed(r: &mut Reactor, c: &mut TcpStream, what: &str) {
    let done = r.run_until(WAIT, |_| closed(c)).unwrap();
    assert!(done, "{what}: the connection was not closed");
}

/// Run a whole exchange: `header` then `line`, read the echo back, and
/// return what the server saw of that one connection.
fn exchange(
    r: &mut Reactor,
    seen: &Shared,
    to: SocketAddr,
    header: &[u8],
    line: &[u8],
) -> (Address, Address) {
    let before = seen.borrow().made.len();
    let mut first = header.to_vec();
    first.extend_from_slice(line);
    // Header and data in one write: nothing of the data may be lost to it.
    let mut c = connect(to, &first);
    let mut back = Vec::new();
    let done = r
        .run_until(WAIT, |_| {
            c.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 256];
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 {
                    break;
                }
                back.extend_from_slice(&buf[..n]);
            }
            back.len() >= line.len()
        })
        .unwrap();
    assert!(done, "no echo");
    assert_eq!(back, line);
    let s = seen.borrow();
    assert_eq!(s.made.len(), before + 1);
    s.made[before].clone()
}

fn v2(ver_cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
    let mut v = V2_SIGNATURE.to_vec();
    v.extend_from_slice(&[ver_cmd, fam]);
    v.extend_from_slice(&(body.len() as u16).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn v2_inet4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut body = src.to_vec();
    body.extend_from_slice(&dst);
    body.extend_from_slice(&sport.to_be_bytes());
    body.extend_from_slice(&dport.to_be_bytes());
    v2(0x21, 0x11, &body)
}

#[test]
fn v1_headers_name_the_client_to_the_factory_and_the_transport() {
    let (mut r, seen, to) = server(ProxyOptions::required(), None);
    let got = exchange(
        &mut r,
        &seen,
        to,
        b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n",
        b"hello\n",
    );
    assert_eq!(got, (inet("203.0.113.7:56324"), inet("192.0.2.1:443")));
    let got = exchange(
        &mut r,
        &seen,
        to,
        b"PROXY TCP6 2001:db8::7 2001:db8::1 1 65535\r\n",
        b"hi\n",
    );
    assert_eq!(got, (inet("[2001:db8::7]:1"), inet("[2001:db8::1]:65535")));
    // UNKNOWN: the connection's own addresses stand.
    let got = exchange(&mut r, &seen, to, b"PROXY UNKNOWN\r\n", b"x\n");
    assert_eq!(got.1, Address::Inet(to));
    assert_eq!(got.0.ip(), Some("127.0.0.1".parse().unwrap()));
    let s = seen.borrow();
    assert_eq!(s.built, s.made.iter().map(|m| m.0.clone()).collect::<Vec<_>>());
    // No byte of any header reached the application.
    assert_eq!(s.data, b"hello\nhi\nx\n");
}

#[test]
fn v2_headers_ipv4_ipv6_local_unspec_and_tlvs() {
    let (mut r, seen, to) = server(ProxyOptions::required(), None);
    let got = exchange(
        &mut r,
        &seen,
        to,
        &v2_inet4([198, 51, 100, 9], [192, 0, 2, 1], 40000, 1965),
        b"a\n",
    );
    assert_eq!(got, (inet("198.51.100.9:40000"), inet("192.0.2.1:1965")));

    let mut body = "2001:db8::9"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets()
        .to_vec();
    body.extend_from_slice(&"2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
    body.extend_from_slice(&[0x9c, 0x40, 0x07, 0xad]);
    // TLVs: ALPN "gemini", a unique id, padding: skipped.
    body.extend_from_slice(&[0x01, 0, 6]);
    body.extend_from_slice(b"gemini");
    body.extend_from_slice(&[0x05, 0, 4, 1, 2, 3, 4, 0x04, 0, 0]);
    let got = exchange(&mut r, &seen, to, &v2(0x21, 0x21, &body), b"b\n");
    assert_eq!(got, (inet("[2001:db8::9]:40000"), inet("[2001:db8::1]:1965")));

    // LOCAL (a proxy's health check) and UNSPEC keep the real addresses.
    let got = exchange(&mut r, &seen, to, &v2(0x20, 0x00, &[]), b"c\n");
    assert_eq!(got.1, Address::Inet(to));
    let got = exchange(&mut r, &seen, to, &v2(0x21, 0x00, &[7; 5]), b"d\n");
    assert_eq!(got.1, Address::Inet(to));
    assert_eq!(seen.borrow().data, b"a\nb\nc\nd\n");
}

#[test]
fn malformed_missing_and_oversized_headers_close_before_any_protocol() {
    let proxy = ProxyOptions {
        max_header_size: 64,
        ..ProxyOptions::required()
    };
    let (mut r, seen, to) = server(proxy, None);
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("no header", b"GET / HTTP/1.0\r\n\r\n".to_vec()),
        ("TLS without a header", vec![0x16, 0x03, 0x01, 0x00, 0x05]),
        (
            "bad v1 port",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 1\r\nhi\n".to_vec(),
        ),
        ("v1 family mismatch", b"PROXY TCP4 ::1 ::1 1 1\r\n".to_vec()),
        ("v1 bare LF", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 1\n".to_vec()),
        (
            "v1 too long",
            [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 120]].concat(),
        ),
        ("v2 version 1", v2(0x11, 0x11, &[0; 12])),
        ("v2 command 2", v2(0x22, 0x11, &[0; 12])),
        ("v2 family 0x41", v2(0x21, 0x41, &[0; 12])),
        ("v2 short addresses", v2(0x21, 0x21, &[0; 12])),
        (
            "v2 TLV overrun",
            v2(0x21, 0x11, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 9]),
        ),
        ("v2 over max_header_size", v2(0x21, 0x11, &[0; 60])),
    ];
    for (what, bytes) in &bad {
        let mut c = connect(to, bytes);
        wait_closed(&mut r, &mut c, what);
        // The listener still serves a good one.
        let got = exchange(
            &mut r,
            &seen,
            to,
            b"PROXY TCP4 192.0.2.5 192.0.2.1 5 6\r\n",
            b"ok\n",
        );
        assert_eq!(got.0, inet("192.0.2.5:5"), "{what}");
    }
    let s = seen.borrow();
    let n = bad.len();
    assert_eq!(
        (s.built.len(), s.made.len()),
        (n, n),
        "only the good ones were built"
    );
    // Every good connection ends once, cleanly; the bad ones never began.
    let lost = r.run_until(WAIT, |_| seen.borrow().lost.len() == n);
    drop(s);
    assert!(lost.unwrap());
    assert!(seen.borrow().lost.iter().all(Reason::is_clean));
    assert_eq!(seen.borrow().data, b"ok\n".repeat(n));
}

#[test]
fn a_header_not_whole_within_the_timeout_closes_the_connection() {
    let proxy = ProxyOptions {
        timeout: Duration::from_millis(200),
        ..ProxyOptions::required()
    };
    let (mut r, seen, to) = server(proxy, None);
    let mut partial = connect(to, b"PROXY TCP4 192.0.2.");
    let mut silent = connect(to, b"");
    wait_closed(&mut r, &mut partial, "partial header");
    wait_closed(&mut r, &mut silent, "no byte at all");
    assert!(seen.borrow().built.is_empty());
    assert!(seen.borrow().made.is_empty());
    // No timer is left behind by either connection.
    assert_eq!(r.timer_count(), 0);
}

#[test]
fn a_peer_that_shuts_down_mid_header_is_closed_at_once_not_at_the_timeout() {
    let proxy = ProxyOptions {
        timeout: Duration::from_secs(3600),
        ..ProxyOptions::required()
    };
    let (mut r, seen, to) = server(proxy, None);
    let mut c = connect(to, b"PROXY TCP6 2001:db8::");
    c.shutdown(std::net::Shutdown::Write).unwrap();
    wait_closed(&mut r, &mut c, "truncated header");
    assert!(seen.borrow().built.is_empty());
}

#[test]
fn a_connection_reading_its_header_holds_a_slot_until_it_ends() {
    let (mut r, seen, to) = server(ProxyOptions::required(), Some(1));
    let mut first = connect(to, b"PROXY TCP4 1.2.3.4 5.6.7.8 1");
    // Accepted and looking for the rest of its header: the limit is reached.
    assert!(r.run_until(WAIT, |r| r.handler_count() == 2).unwrap());
    let mut second = connect(to, b"PROXY TCP4 192.0.2.9 192.0.2.1 9 9\r\n");
    wait_closed(&mut r, &mut second, "over the limit");
    assert!(seen.borrow().built.is_empty());
    // A bad end to the first header frees its slot for the next client.
    first.write_all(b"x\r\n").unwrap();
    wait_closed(&mut r, &mut first, "bad port");
    let got = exchange(
        &mut r,
        &seen,
        to,
        b"PROXY TCP4 192.0.2.9 192.0.2.1 9 9\r\n",
        b"in\n",
    );
    assert_eq!(got.0, inet("192.0.2.9:9"));
    assert_eq!(seen.borrow().built.len(), 1);
}

#[test]
fn only_trusted_sources_may_send_a_header() {
    let elsewhere: IpNet = "10.0.0.0/8".parse().unwrap();
    let line = b"PROXY TCP4 203.0.113.7 192.0.2.1 1 2\r\n";

    // Required: an untrusted source is closed unread.
    let (mut r, seen, to) = server(
        ProxyOptions {
            trusted: vec![elsewhere],
            ..ProxyOptions::required()
        },
        None,
    );
    let mut c = connect(to, line);
    wait_closed(&mut r, &mut c, "untrusted, required");
    assert!(seen.borrow().built.is_empty());

    // Optional: an untrusted source is served as itself; its "header" is
    // just data, and cannot claim an address.
    let (mut r, seen, to) = server(
        ProxyOptions {
            trusted: vec![elsewhere],
            ..ProxyOptions::optional()
        },
        None,
    );
    let (peer, _) = exchange(&mut r, &seen, to, b"", line);
    assert_eq!(peer.ip(), Some("127.0.0.1".parse().unwrap()));
    assert_eq!(seen.borrow().data, line);

    // Trusted: the header is read.
    let (mut r, seen, to) = server(
        ProxyOptions {
            trusted: vec!["127.0.0.0/8".parse().unwrap()],
            ..ProxyOptions::required()
        },
        None,
    );
    let (peer, _) = exchange(&mut r, &seen, to, line, b"z\n");
    assert_eq!(peer, inet("203.0.113.7:1"));
}

#[test]
fn optional_mode_serves_a_client_without_a_header_as_itself() {
    let (mut r, seen, to) = server(ProxyOptions::optional(), None);
    let (peer, host) = exchange(&mut r, &seen, to, b"", b"plain\n");
    assert_eq!(peer.ip(), Some("127.0.0.1".parse().unwrap()));
    assert_eq!(host, Address::Inet(to));
    let (peer, _) = exchange(
        &mut r,
        &seen,
        to,
        b"PROXY TCP4 192.0.2.3 192.0.2.1 3 4\r\n",
        b"via\n",
    );
    assert_eq!(peer, inet("192.0.2.3:3"));
    assert_eq!(seen.borrow().data, b"plain\nvia\n");
}

#[test]
fn stopping_the_reactor_closes_connections_still_reading_a_header() {
    let (mut r, seen, to) = server(ProxyOptions::required(), None);
    // Were the header reader to hold the stop, run() would wait this long.
    r.set_shutdown_timeout(Duration::from_secs(3600));
    let mut c = connect(to, b"PROXY ");
    assert!(r.run_until(WAIT, |r| r.handler_count() == 2).unwrap());
    r.call_soon(|r| r.stop());
    r.run().unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    match c.read(&mut [0u8; 8]) {
        Ok(0) => {}
        Err(e) if e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::TimedOut => {}
        other => panic!("the connection is still open: {other:?}"),
    }
    assert!(seen.borrow().made.is_empty());
}

// ----- TLS above the header ---------------------------------------------------

fn have_python() -> bool {
    let ok = Command::new("python3").arg("--version").output().is_ok();
    if !ok {
        eprintln!("SKIPPED: python3 is not installed (install it to run this test)");
    }
    ok
}

/// Python writes the header in the clear, then runs a TLS handshake on the
/// same socket and sends a line; the server's TLS layer starts after the
/// header, and its application sees the client the header names.
#[test]
fn tls_above_the_header_with_python_ssl() {
    if !have_python() {
        return;
    }
    let (config, _) = generate_self_signed(&["localhost"]).unwrap();
    let mut r = reactor();
    let seen = Shared::default();
    let opts = ListenOptions {
        proxy_protocol: ProxyOptions::required(),
        ..ListenOptions::default()
    };
    let port = listen_tls_with(
        &mut r,
        "127.0.0.1:0",
        echo_factory(&seen),
        config,
        TlsOptions::default(),
        opts,
    )
    .unwrap();
    let header = v2_inet4([203, 0, 113, 50], [192, 0, 2, 1], 51000, 1965);
    let script = r#"
import socket, ssl, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(bytes.fromhex(sys.argv[2]))
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
t = ctx.wrap_socket(s, server_hostname="localhost")
t.sendall(b"over tls\n")
data = b""
while not data.endswith(b"\n"):
    chunk = t.recv(100)
    if not chunk:
        break
    data += chunk
sys.stdout.write(t.version() + " " + data.decode())
"#;
    let hex: String = header.iter().map(|b| format!("{b:02x}")).collect();
    let child = Command::new("python3")
        .args(["-c", script, &port.port().to_string(), &hex])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let remote = r.remote();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output().unwrap());
        let _ = remote.call(|_| {});
    });
    let out = RefCell::new(None);
    let done = r
        .run_until(WAIT, |_| {
            if let Ok(o) = rx.try_recv() {
                *out.borrow_mut() = Some(o);
            }
            out.borrow().is_some()
        })
        .unwrap();
    assert!(done, "python did not finish");
    let out = out.into_inner().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("TLSv1."), "{stdout}");
    assert!(stdout.ends_with(" over tls\n"), "{stdout}");
    let s = seen.borrow();
    assert_eq!(s.built, vec![inet("203.0.113.50:51000")]);
    assert_eq!(s.made, vec![(inet("203.0.113.50:51000"), inet("192.0.2.1:1965"))]);
    assert_eq!(s.data, b"over tls\n");
}

/// Writes a PROXY header in the clear, then starts TLS and sends a line
/// over it.
struct ProxiedTlsClient {
    header: Vec<u8>,
    role: Option<TlsRole>,
    got: Rc<RefCell<Vec<u8>>>,
}
impl Protocol for ProxiedTlsClient {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        t.write(&self.header);
        start_tls(t, self.role.take().unwrap(), TlsOptions::default(), |_, _| {}).unwrap();
        t.write(b"ping\n");
    }
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        self.got.borrow_mut().extend_from_slice(d);
        if self.got.borrow().ends_with(b"\n") {
            t.lose_connection();
        }
    }
}

/// A Unix listener with TLS above the PROXY header (nginx in front of a
/// local socket): the header names a TCP client, and that is the peer.
#[test]
fn tls_above_the_header_on_a_unix_socket() {
    let (server_config, fingerprint) = generate_self_signed(&["localhost"]).unwrap();
    let client_config = ClientConfigBuilder::new().pinned(&fingerprint).build().unwrap();
    let mut r = reactor();
    let seen = Shared::default();
    let opts = UnixListenOptions {
        proxy_protocol: ProxyOptions::required(),
        ..UnixListenOptions::default()
    };
    let name = UnixAddr::from(format!("@twistor-proxy-tls-{}", std::process::id()));
    let factory = TlsServerFactory::new(echo_factory(&seen), server_config, TlsOptions::default());
    listen_unix_with(&mut r, name.clone(), factory, opts).unwrap();
    let got = Rc::new(RefCell::new(Vec::new()));
    let g = got.clone();
    connect_unix(&mut r, name, move |_: &Address| ProxiedTlsClient {
        header: b"PROXY TCP6 2001:db8::77 2001:db8::1 4242 1965\r\n".to_vec(),
        role: Some(TlsRole::Client {
            config: Arc::clone(&client_config),
            server_name: "localhost".into(),
        }),
        got: g.clone(),
    });
    let done = r
        .run_until(WAIT, |_| {
            seen.borrow().lost.len() == 1 && got.borrow().ends_with(b"\n")
        })
        .unwrap();
    assert!(done, "the exchange did not finish: {:?}", seen.borrow());
    assert_eq!(*got.borrow(), b"ping\n");
    let s = seen.borrow();
    assert_eq!(s.built, vec![inet("[2001:db8::77]:4242")]);
    assert_eq!(
        s.made,
        vec![(inet("[2001:db8::77]:4242"), inet("[2001:db8::1]:1965"))]
    );
    assert!(s.lost[0].is_clean(), "{:?}", s.lost);
}
