//! TLS against real peers on loopback: `openssl s_client` (TLS 1.2 and 1.3)
//! and Python's `ssl` module as client and as server; bad clients (garbage,
//! stalled handshakes) are cut off while the listener keeps serving; a
//! client whose handshake fails hears `client_connection_failed`.
//!
//! Tests needing openssl or python3 are skipped, with a message, only when
//! the tool is absent.

use std::cell::RefCell;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use twistor_reactor::{Address, ClientFactory, Connector, Factory, Protocol, Reactor, Reason, Transport};
use twistor_transports::tls::rustls::ServerConfig;
use twistor_transports::tls::{
    certs_from_pem, connect_tls, generate_self_signed_cert, generate_self_signed_pem, key_from_pem,
    listen_tls, listen_tls_with, ClientConfigBuilder, Passphrase, ServerConfigBuilder, TlsOptions,
};
use twistor_transports::{connect_tcp, ListenOptions};

const WAIT: Duration = Duration::from_secs(20);
static N: AtomicUsize = AtomicUsize::new(0);

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "twistor-tls-peers-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn have(tool: &str) -> bool {
    let ok = Command::new(tool).arg("--version").output().is_ok()
        || Command::new(tool).arg("version").output().is_ok();
    if !ok {
        eprintln!("SKIPPED: {tool} is not installed (install it to run this test)");
    }
    ok
}

/// A certificate for localhost written to `dir` (cert.pem, key.pem) and
/// the server configuration made from those files' contents.
fn cert_files(dir: &Path) -> Arc<ServerConfig> {
    let (cert, key) = generate_self_signed_pem(&["localhost", "127.0.0.1"]).unwrap();
    std::fs::write(dir.join("cert.pem"), &cert).unwrap();
    std::fs::write(dir.join("key.pem"), &key).unwrap();
    ServerConfigBuilder::new()
        .cert(
            certs_from_pem(cert.as_bytes()).unwrap(),
            key_from_pem(key.as_bytes(), &Passphrase::None).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap()
}

#[derive(Default, Debug, Clone)]
struct Seen {
    data: Vec<u8>,
    version: String,
    lost: Option<Reason>,
    eof: bool,
}

/// The lab's echo, which closes (close_notify) after echoing one line.
struct EchoLine(Rc<RefCell<Seen>>);
impl Protocol for EchoLine {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.0.borrow_mut().version = t.tls_info().unwrap().version.clone();
    }
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        t.write(d);
        let mut s = self.0.borrow_mut();
        s.data.extend_from_slice(d);
        if s.data.ends_with(b"\n") {
            t.lose_connection();
        }
    }
    fn connection_lost(&mut self, _: &mut dyn Transport, reason: &Reason) {
        self.0.borrow_mut().lost = Some(reason.clone());
    }
}

/// Run a child to completion on a thread; its output arrives on the
/// channel, and the reactor is woken up when it does. The caller sets the
/// child's standard input.
fn spawn(r: &Reactor, cmd: &mut Command) -> mpsc::Receiver<std::process::Output> {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (tx, rx) = mpsc::channel();
    let remote = r.remote();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output().unwrap());
        let _ = remote.call(|_| {});
    });
    rx
}

fn run_until_output(r: &mut Reactor, rx: &mpsc::Receiver<std::process::Output>) -> std::process::Output {
    let out = Rc::new(RefCell::new(None));
    let o = out.clone();
    let done = r
        .run_until(WAIT, move |_| {
            if o.borrow().is_none() {
                if let Ok(v) = rx.try_recv() {
                    *o.borrow_mut() = Some(v);
                }
            }
            o.borrow().is_some()
        })
        .unwrap();
    assert!(done, "the peer did not finish in time");
    let v = out.borrow_mut().take().unwrap();
    v
}

fn s_client_echo(version_flag: &str, expect: &str) {
    if !have("openssl") {
        return;
    }
    let dir = temp_dir();
    let config = cert_files(&dir);
    let mut r = Reactor::new().unwrap();
    let seen = Rc::new(RefCell::new(Seen::default()));
    let s = seen.clone();
    let port = listen_tls(
        &mut r,
        "127.0.0.1:0",
        move |_: &Address| EchoLine(s.clone()),
        config,
    )
    .unwrap();
    // The line goes in through a file so that stdin stays a plain file;
    // -ign_eof makes s_client wait for the server's close_notify.
    std::fs::write(dir.join("in.txt"), "hello twistor\n").unwrap();
    let rx = spawn(
        &r,
        Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{}", port.port()),
                version_flag,
            ])
            .args(["-ign_eof", "-msg", "-servername", "localhost"])
            .stdin(std::fs::File::open(dir.join("in.txt")).unwrap()),
    );
    let out = run_until_output(&mut r, &rx);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("hello twistor"), "no echo:\n{stdout}");
    assert!(
        stdout.contains("close_notify"),
        "no close_notify seen by s_client:\n{stdout}"
    );
    // The server side saw the line, the version asked for, a clean close.
    let ok = r.run_until(WAIT, |_| seen.borrow().lost.is_some()).unwrap();
    assert!(ok);
    let seen = seen.borrow().clone();
    assert_eq!(seen.data, b"hello twistor\n");
    assert_eq!(seen.version, expect);
    assert!(seen.lost.unwrap().is_clean());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn openssl_s_client_tls12_echo_and_close_notify() {
    s_client_echo("-tls1_2", "TLSv1.2");
}

#[test]
fn openssl_s_client_tls13_echo_and_close_notify() {
    s_client_echo("-tls1_3", "TLSv1.3");
}

const PY_CLIENT: &str = r#"
import socket, ssl, sys
port, cafile = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=cafile)
with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"hello from python\n")
        got = b""
        while not got.endswith(b"\n"):
            chunk = s.recv(1024)
            if not chunk:
                break
            got += chunk
        print("ECHO", got.decode().strip(), s.version())
        s.unwrap()
        print("UNWRAPPED")
"#;

#[test]
fn python_ssl_client_echoes() {
    if !have("python3") {
        return;
    }
    let dir = temp_dir();
    let config = cert_files(&dir);
    let mut r = Reactor::new().unwrap();
    let seen = Rc::new(RefCell::new(Seen::default()));
    let s = seen.clone();
    let port = listen_tls(
        &mut r,
        "127.0.0.1:0",
        move |_: &Address| EchoLine(s.clone()),
        config,
    )
    .unwrap();
    let rx = spawn(
        &r,
        Command::new("python3")
            .args([
                "-c",
                PY_CLIENT,
                &port.port().to_string(),
                dir.join("cert.pem").to_str().unwrap(),
            ])
            .stdin(Stdio::null()),
    );
    let out = run_until_output(&mut r, &rx);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ECHO hello from python TLSv1.3"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("UNWRAPPED"), "{stdout}");
    std::fs::remove_dir_all(dir).unwrap();
}

const PY_SERVER: &str = r#"
import socket, ssl, sys
cert, key, mode = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
print(srv.getsockname()[1], flush=True)
srv.settimeout(20)
conn, _ = srv.accept()
conn.settimeout(20)
with ctx.wrap_socket(conn, server_side=True) as s:
    got = b""
    while not got.endswith(b"\n"):
        chunk = s.recv(1024)
        if not chunk:
            break
        got += chunk
    s.sendall(b"py: " + got)
    if mode == "clean":
        s.unwrap()
    else:
        # Close the TCP connection without close_notify.
        s.shutdown(socket.SHUT_RDWR)
print("DONE", flush=True)
"#;

/// A client protocol that sends a line and records what comes back.
struct LineClient(Rc<RefCell<Seen>>);
impl Protocol for LineClient {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.0.borrow_mut().version = t.tls_info().unwrap().version.clone();
        t.write(b"hello from twistor\n");
    }
    fn data_received(&mut self, _: &mut dyn Transport, d: &[u8]) {
        self.0.borrow_mut().data.extend_from_slice(d);
    }
    fn eof_received(&mut self, _: &mut dyn Transport) -> bool {
        self.0.borrow_mut().eof = true;
        false
    }
    fn connection_lost(&mut self, _: &mut dyn Transport, reason: &Reason) {
        self.0.borrow_mut().lost = Some(reason.clone());
    }
}

/// Run the Python server in `mode`; what did twistor's client see?
fn against_python_server(mode: &str) -> Option<Seen> {
    if !have("python3") {
        return None;
    }
    let dir = temp_dir();
    let _ = cert_files(&dir);
    let mut child = Command::new("python3")
        .args([
            "-c",
            PY_SERVER,
            dir.join("cert.pem").to_str().unwrap(),
            dir.join("key.pem").to_str().unwrap(),
            mode,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let port: u16 = rx
        .recv_timeout(WAIT)
        .expect("python server port")
        .trim()
        .parse()
        .unwrap();
    let client_config = ClientConfigBuilder::new()
        .ca_file(dir.join("cert.pem"))
        .unwrap()
        .build()
        .unwrap();
    let mut r = Reactor::new().unwrap();
    let seen = Rc::new(RefCell::new(Seen::default()));
    let s = seen.clone();
    connect_tls(
        &mut r,
        "localhost",
        port,
        move |_: &Address| LineClient(s.clone()),
        client_config,
    );
    let done = r.run_until(WAIT, |_| seen.borrow().lost.is_some()).unwrap();
    assert!(done, "connection did not end: {:?}", seen.borrow());
    let seen = seen.borrow().clone();
    assert_eq!(seen.data, b"py: hello from twistor\n");
    assert_eq!(rx.recv_timeout(WAIT).unwrap(), "DONE");
    let _ = child.wait();
    std::fs::remove_dir_all(dir).unwrap();
    Some(seen)
}

#[test]
fn twistor_client_against_python_ssl_server() {
    if let Some(seen) = against_python_server("clean") {
        assert!(
            seen.eof,
            "close_notify from python did not arrive as eof_received"
        );
        assert!(seen.lost.as_ref().unwrap().is_clean(), "{:?}", seen.lost);
    }
}

#[test]
fn python_server_closing_without_close_notify_is_truncation() {
    if let Some(seen) = against_python_server("truncate") {
        assert!(!seen.eof, "a bare close arrived as eof_received");
        match &seen.lost {
            Some(Reason::Tls(m)) => assert!(m.starts_with("truncated"), "{m}"),
            other => panic!("expected truncation, got {other:?}"),
        }
    }
}

/// A raw TCP client: sends `send` on connect, records what it gets and why
/// the connection ended.
struct Raw {
    send: &'static [u8],
    seen: Rc<RefCell<Seen>>,
}
impl Protocol for Raw {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        t.write(self.send);
    }
    fn data_received(&mut self, _: &mut dyn Transport, d: &[u8]) {
        self.seen.borrow_mut().data.extend_from_slice(d);
    }
    fn connection_lost(&mut self, _: &mut dyn Transport, reason: &Reason) {
        self.seen.borrow_mut().lost = Some(reason.clone());
    }
}

#[test]
fn bad_clients_are_cut_off_and_the_listener_keeps_serving() {
    let (server_config, fp) = ServerConfigBuilder::self_signed(&["localhost"]).unwrap();
    let mut r = Reactor::new().unwrap();
    let served = Rc::new(RefCell::new(Seen::default()));
    let s = served.clone();
    let opts = TlsOptions {
        handshake_timeout: Some(Duration::from_millis(300)),
        ..TlsOptions::default()
    };
    let port = listen_tls_with(
        &mut r,
        "127.0.0.1:0",
        move |_: &Address| EchoLine(s.clone()),
        server_config,
        opts,
        ListenOptions::default(),
    )
    .unwrap()
    .port();
    let garbage = Rc::new(RefCell::new(Seen::default()));
    let stalled = Rc::new(RefCell::new(Seen::default()));
    let truncated = Rc::new(RefCell::new(Seen::default()));
    for (send, seen) in [
        (&b"GET / HTTP/1.0\r\n\r\n"[..], garbage.clone()),
        (&b""[..], stalled.clone()),
        (
            &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01][..],
            truncated.clone(),
        ),
    ] {
        connect_tcp(&mut r, "127.0.0.1", port, move |_: &Address| Raw {
            send,
            seen: seen.clone(),
        });
    }
    let all_cut = r
        .run_until(WAIT, |_| {
            garbage.borrow().lost.is_some()
                && stalled.borrow().lost.is_some()
                && truncated.borrow().lost.is_some()
        })
        .unwrap();
    assert!(all_cut, "a bad client was not cut off");
    // The garbage got a fatal alert record (content type 21) before the close.
    assert_eq!(garbage.borrow().data.first(), Some(&21));
    // A good client is still served.
    let client_config = ClientConfigBuilder::new().pinned(&fp).build().unwrap();
    let good = Rc::new(RefCell::new(Seen::default()));
    let g = good.clone();
    connect_tls(
        &mut r,
        "localhost",
        port,
        move |_: &Address| LineClient(g.clone()),
        client_config,
    );
    let ok = r.run_until(WAIT, |_| good.borrow().lost.is_some()).unwrap();
    assert!(ok);
    assert_eq!(good.borrow().data, b"hello from twistor\n");
    assert!(good.borrow().lost.as_ref().unwrap().is_clean());
    assert_eq!(served.borrow().data, b"hello from twistor\n");
}

/// Records how a TLS connection attempt ended.
struct Attempt(Rc<RefCell<Vec<String>>>);
impl Factory for Attempt {
    fn build_protocol(&mut self, _: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(LineClient(Rc::new(RefCell::new(Seen::default())))))
    }
}
impl ClientFactory for Attempt {
    fn client_connection_failed(&mut self, _: &mut Reactor, _: &Connector, reason: &Reason) {
        self.0.borrow_mut().push(format!("failed: {reason}"));
    }
    fn client_connection_lost(&mut self, _: &mut Reactor, _: &Connector, reason: &Reason) {
        self.0.borrow_mut().push(format!("lost: {reason}"));
    }
}

#[test]
fn a_failed_handshake_is_a_failed_connection_attempt() {
    let (server_config, _) = ServerConfigBuilder::self_signed(&["localhost"]).unwrap();
    let mut r = Reactor::new().unwrap();
    let port = listen_tls(
        &mut r,
        "127.0.0.1:0",
        |_: &Address| EchoLine(Default::default()),
        server_config,
    )
    .unwrap()
    .port();
    // The client trusts another certificate.
    let (other, _) = generate_self_signed_cert(&["localhost"]).unwrap();
    let client_config = ClientConfigBuilder::new().roots(other).build().unwrap();
    let events = Rc::new(RefCell::new(Vec::new()));
    connect_tls(&mut r, "localhost", port, Attempt(events.clone()), client_config);
    let done = r.run_until(WAIT, |_| !events.borrow().is_empty()).unwrap();
    assert!(done);
    let events = events.borrow();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].starts_with("failed: TLS error"), "{events:?}");
    assert!(
        events[0].contains("certificate verification failed"),
        "{events:?}"
    );
}

#[test]
fn tls_over_a_unix_socket_by_wrapping_the_factories() {
    use twistor_transports::tls::{TlsClientFactory, TlsServerFactory};
    use twistor_transports::{connect_unix, listen_unix};
    let dir = temp_dir();
    let path = dir.join("tls.sock");
    let (server_config, fp) = ServerConfigBuilder::self_signed(&["localhost"]).unwrap();
    let mut r = Reactor::new().unwrap();
    let served = Rc::new(RefCell::new(Seen::default()));
    let s = served.clone();
    let server_factory = TlsServerFactory::new(
        move |_: &Address| EchoLine(s.clone()),
        server_config,
        TlsOptions::default(),
    );
    let _port = listen_unix(&mut r, &path, server_factory).unwrap();
    let client_config = ClientConfigBuilder::new().pinned(&fp).build().unwrap();
    let got = Rc::new(RefCell::new(Seen::default()));
    let g = got.clone();
    let client_factory = TlsClientFactory::new(
        move |_: &Address| LineClient(g.clone()),
        client_config,
        "localhost",
        TlsOptions::default(),
    );
    connect_unix(&mut r, &path, client_factory);
    let done = r.run_until(WAIT, |_| got.borrow().lost.is_some()).unwrap();
    assert!(done);
    assert_eq!(got.borrow().data, b"hello from twistor\n");
    assert_eq!(got.borrow().version, "TLSv1.3");
    assert!(got.borrow().lost.as_ref().unwrap().is_clean());
    assert_eq!(served.borrow().data, b"hello from twistor\n");
    std::fs::remove_dir_all(dir).unwrap();
}

const PY_WAIT_CLOSE: &str = r#"
import socket, ssl, sys
port, cafile = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=cafile)
with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"stop now\n")
        got = b""
        try:
            while True:
                chunk = s.recv(1024)
                if not chunk:
                    print("CLOSE_NOTIFY", got.decode().strip())
                    break
                got += chunk
        except ssl.SSLError as e:
            print("TRUNCATED", e)
"#;

/// Echoes, then stops the reactor.
struct EchoThenStop;
impl Protocol for EchoThenStop {
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        t.write(d);
        t.reactor().stop();
    }
}

#[test]
fn stopping_the_reactor_sends_close_notify() {
    if !have("python3") {
        return;
    }
    let dir = temp_dir();
    let config = cert_files(&dir);
    let mut r = Reactor::new().unwrap();
    r.set_install_signal_handlers(false);
    let port = listen_tls(&mut r, "127.0.0.1:0", |_: &Address| EchoThenStop, config).unwrap();
    let rx = spawn(
        &r,
        Command::new("python3")
            .args([
                "-c",
                PY_WAIT_CLOSE,
                &port.port().to_string(),
                dir.join("cert.pem").to_str().unwrap(),
            ])
            .stdin(Stdio::null()),
    );
    r.run().unwrap();
    let out = rx.recv_timeout(WAIT).expect("python client did not finish");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("CLOSE_NOTIFY stop now"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// Echoes and never closes first; records how it ended.
struct EchoAll(Rc<RefCell<Seen>>);
impl Protocol for EchoAll {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.0.borrow_mut().version = t.tls_info().unwrap().version.clone();
    }
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        t.write(d);
        self.0.borrow_mut().data.extend_from_slice(d);
    }
    fn eof_received(&mut self, _: &mut dyn Transport) -> bool {
        self.0.borrow_mut().eof = true;
        false
    }
    fn connection_lost(&mut self, _: &mut dyn Transport, reason: &Reason) {
        self.0.borrow_mut().lost = Some(reason.clone());
    }
}

/// A peer program driven line by line: what it prints arrives line by
/// line (waking the reactor), and the test writes its input as it goes.
struct Interactive {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Interactive {
    fn spawn(r: &Reactor, cmd: &mut Command) -> Interactive {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let remote = r.remote();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
                let _ = remote.call(|_| {});
            }
        });
        Interactive {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn send(&mut self, text: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Run the reactor until the program prints a line containing `what`.
    fn wait_for(&mut self, r: &mut Reactor, what: &str) {
        let found = r
            .run_until(WAIT, |_| {
                while let Ok(l) = self.lines.try_recv() {
                    self.seen.push(l);
                }
                self.seen.iter().any(|l| l.contains(what))
            })
            .unwrap();
        assert!(found, "never printed {what:?}:\n{}", self.seen.join("\n"));
    }

    /// Close its input and wait for it to exit.
    fn finish(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

#[test]
fn tls12_renegotiation_from_openssl_is_refused_cleanly() {
    if !have("openssl") {
        return;
    }
    let dir = temp_dir();
    let config = cert_files(&dir);
    let mut r = Reactor::new().unwrap();
    let seen = Rc::new(RefCell::new(Seen::default()));
    let s = seen.clone();
    let port = listen_tls(
        &mut r,
        "127.0.0.1:0",
        move |_: &Address| EchoAll(s.clone()),
        config,
    )
    .unwrap();
    let mut peer = Interactive::spawn(
        &r,
        Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{}", port.port()),
                "-tls1_2",
            ])
            .args(["-msg", "-servername", "localhost"]),
    );
    peer.send("before\n");
    peer.wait_for(&mut r, "before");
    // "R" at the start of a read makes s_client send a new ClientHello.
    peer.send("R\n");
    // rustls refuses with a warning alert, which OpenSSL takes as fatal.
    peer.wait_for(&mut r, "warning no_renegotiation");
    peer.wait_for(&mut r, "fatal handshake_failure");
    let ended = r.run_until(WAIT, |_| seen.borrow().lost.is_some()).unwrap();
    peer.finish();
    assert!(ended, "the connection outlived a refused renegotiation");
    let seen = seen.borrow().clone();
    // Nothing of the attempt reached the application; the end has a TLS
    // reason naming the peer's alert.
    assert_eq!(seen.data, b"before\n");
    match &seen.lost {
        Some(Reason::Tls(m)) => assert!(m.contains("alert"), "{m}"),
        other => panic!("expected a TLS reason, got {other:?}"),
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_peer_that_stops_reading_cannot_hold_a_closing_connection() {
    /// Writes until it is told to pause, then closes with its data unsent.
    struct Firehose(Rc<RefCell<Option<Reason>>>);
    impl Firehose {
        fn produce(&mut self, t: &mut dyn Transport) {
            if t.is_closing() {
                return;
            }
            t.write(&vec![b'h'; 1 << 20]);
            let id = t.id();
            let _ = t
                .reactor()
                .call_on(id, |p, t| p.downcast_mut::<Firehose>().unwrap().produce(t));
        }
    }
    impl Protocol for Firehose {
        fn connection_made(&mut self, t: &mut dyn Transport) {
            self.produce(t);
        }
        fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
        fn pause_writing(&mut self, t: &mut dyn Transport) {
            t.lose_connection();
        }
        fn connection_lost(&mut self, _: &mut dyn Transport, reason: &Reason) {
            *self.0.borrow_mut() = Some(reason.clone());
        }
    }
    let (sc, fp) = ServerConfigBuilder::self_signed(&["localhost"]).unwrap();
    let cc = ClientConfigBuilder::new().pinned(&fp).build().unwrap();
    let mut r = Reactor::new().unwrap();
    let lost = Rc::new(RefCell::new(None));
    let l = lost.clone();
    let opts = TlsOptions {
        shutdown_timeout: Some(Duration::from_secs(2)),
        ..TlsOptions::default()
    };
    let port = listen_tls_with(
        &mut r,
        "127.0.0.1:0",
        move |_: &Address| Firehose(l.clone()),
        sc,
        opts,
        ListenOptions::default(),
    )
    .unwrap()
    .port();
    // The client completes the handshake, then never reads again; it
    // holds its socket open until told to let go.
    let (release, hold) = mpsc::channel::<()>();
    let client = std::thread::spawn(move || {
        use twistor_transports::tls::rustls;
        let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut conn = rustls::ClientConnection::new(cc, "localhost".try_into().unwrap()).unwrap();
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).unwrap();
        }
        let _ = hold.recv_timeout(WAIT);
    });
    let ended = r.run_until(WAIT, |_| lost.borrow().is_some()).unwrap();
    let _ = release.send(());
    client.join().unwrap();
    assert!(
        ended,
        "the closing connection is held by a peer that does not read"
    );
    assert!(
        matches!(*lost.borrow(), Some(Reason::TimedOut)),
        "{:?}",
        lost.borrow()
    );
}

#[test]
fn a_panicking_protocol_swap_under_tls_is_reported_as_a_panic() {
    /// Swaps itself as soon as it is connected, with a swap that panics.
    struct Swapper;
    impl Protocol for Swapper {
        fn connection_made(&mut self, t: &mut dyn Transport) {
            t.upgrade(Box::new(|_, _| panic!("swap went off")));
        }
        fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    }
    struct Swapping(Rc<RefCell<Vec<String>>>);
    impl Factory for Swapping {
        fn build_protocol(&mut self, _: &Address) -> Option<Box<dyn Protocol>> {
            Some(Box::new(Swapper))
        }
    }
    impl ClientFactory for Swapping {
        fn client_connection_failed(&mut self, _: &mut Reactor, _: &Connector, reason: &Reason) {
            self.0.borrow_mut().push(format!("failed: {reason}"));
        }
        fn client_connection_lost(&mut self, _: &mut Reactor, _: &Connector, reason: &Reason) {
            self.0.borrow_mut().push(format!("lost: {reason}"));
        }
    }
    let (server_config, fp) = ServerConfigBuilder::self_signed(&["localhost"]).unwrap();
    let mut r = Reactor::new().unwrap();
    let port = listen_tls(
        &mut r,
        "127.0.0.1:0",
        |_: &Address| EchoLine(Default::default()),
        server_config,
    )
    .unwrap()
    .port();
    let client_config = ClientConfigBuilder::new().pinned(&fp).build().unwrap();
    let events = Rc::new(RefCell::new(Vec::new()));
    connect_tls(&mut r, "localhost", port, Swapping(events.clone()), client_config);
    let done = r.run_until(WAIT, |_| !events.borrow().is_empty()).unwrap();
    assert!(done);
    let events = events.borrow();
    assert_eq!(*events, ["lost: a callback panicked: swap went off"]);
}
