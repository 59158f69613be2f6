//! Session resumption over loopback: a twistor client resumes against a
//! twistor server (TLS 1.3 and 1.2, tickets and session ids), and so do
//! Python's `ssl` (passing the first connection's `session=`) and
//! `openssl s_client -sess_out / -sess_in` ("Reused"); the knobs turn it
//! off; the server's session cache keeps no more than its bound, and an
//! entry stays small.
//!
//! Tests needing openssl or python3 are skipped, with a message, only when
//! the tool is absent.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use twistor_reactor::{Address, ClientFactory, Connector, Factory, Protocol, Reactor, Reason, Transport};
use twistor_transports::tls::rustls::server::StoresServerSessions;
use twistor_transports::tls::rustls::{self, ClientConfig, ServerConfig};
use twistor_transports::tls::{
    certs_from_pem, connect_tls, generate_self_signed_cert, generate_self_signed_pem, key_from_pem,
    listen_tls, ClientAuth, ClientConfigBuilder, Passphrase, ServerConfigBuilder, DEFAULT_SESSION_CACHE,
};

const WAIT: Duration = Duration::from_secs(20);
static N: AtomicUsize = AtomicUsize::new(0);

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "twistor-tls-resume-{}-{}",
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

/// A new server certificate for localhost: its PEM file in `dir`
/// (cert.pem, which clients built after it trust) and a builder holding it.
fn server_builder(dir: &Path) -> ServerConfigBuilder {
    let (cert, key) = generate_self_signed_pem(&["localhost", "127.0.0.1"]).unwrap();
    std::fs::write(dir.join("cert.pem"), &cert).unwrap();
    ServerConfigBuilder::new()
        .cert(
            certs_from_pem(cert.as_bytes()).unwrap(),
            key_from_pem(key.as_bytes(), &Passphrase::None).unwrap(),
        )
        .unwrap()
}

fn client_builder(dir: &Path) -> ClientConfigBuilder {
    ClientConfigBuilder::new()
        .trust_cert_file(dir.join("cert.pem"))
        .unwrap()
}

/// What one side saw of one connection.
#[derive(Debug, Clone, Default)]
struct Seen {
    version: String,
    resumed: Option<bool>,
    peer_fingerprint: Option<String>,
    data: Vec<u8>,
    lost: Option<Reason>,
}

type Log = Rc<RefCell<Vec<Seen>>>;

fn record(log: &Log, t: &dyn Transport) {
    let info = t.tls_info().expect("TLS below");
    log.borrow_mut().push(Seen {
        version: info.version.clone(),
        resumed: Some(info.resumed),
        peer_fingerprint: info.peer_cert.as_ref().map(|c| c.sha256_fingerprint.clone()),
        ..Seen::default()
    });
}

/// The server: echoes one line, then closes; logs each connection.
struct EchoLine(Log);
impl Protocol for EchoLine {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        record(&self.0, t);
    }
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        t.write(d);
        if d.ends_with(b"\n") {
            t.lose_connection();
        }
    }
}

/// The client: sends a line, reads the echo up to the server's close.
struct Ask(Log);
impl Protocol for Ask {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        record(&self.0, t);
        t.write(b"again?\n");
    }
    fn data_received(&mut self, _: &mut dyn Transport, d: &[u8]) {
        self.0.borrow_mut().last_mut().unwrap().data.extend_from_slice(d);
    }
    fn connection_lost(&mut self, _: &mut dyn Transport, reason: &Reason) {
        if let Some(s) = self.0.borrow_mut().last_mut() {
            s.lost = Some(reason.clone());
        }
    }
}

/// Builds [`Ask`] and records why an attempt failed, if it did.
struct AskFactory(Log);
impl Factory for AskFactory {
    fn build_protocol(&mut self, _: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(Ask(self.0.clone())))
    }
}
impl ClientFactory for AskFactory {
    fn client_connection_failed(&mut self, _: &mut Reactor, _: &Connector, reason: &Reason) {
        self.0.borrow_mut().push(Seen {
            lost: Some(reason.clone()),
            ..Seen::default()
        });
    }
}

/// A listening echo server on loopback; its port and its log.
fn serve(r: &mut Reactor, config: Arc<ServerConfig>) -> (u16, Log) {
    let log: Log = Rc::default();
    let l = log.clone();
    let port = listen_tls(r, "127.0.0.1:0", move |_: &Address| EchoLine(l.clone()), config)
        .unwrap()
        .port();
    (port, log)
}

/// One whole exchange with `config`, to its end; what the client saw.
fn exchange(r: &mut Reactor, port: u16, config: &Arc<ClientConfig>) -> Seen {
    let log: Log = Rc::default();
    connect_tls(r, "localhost", port, AskFactory(log.clone()), config.clone());
    let done = r
        .run_until(WAIT, |_| log.borrow().first().is_some_and(|s| s.lost.is_some()))
        .unwrap();
    assert!(done, "the exchange did not finish: {:?}", log.borrow());
    let seen = log.borrow()[0].clone();
    assert_eq!(seen.data, b"again?\n", "{seen:?}");
    assert!(seen.lost.as_ref().unwrap().is_clean(), "{seen:?}");
    seen
}

/// Two exchanges with one client configuration: (first, second) as the
/// client saw them, and the server's view of both.
fn twice(server: ServerConfigBuilder, client: Arc<ClientConfig>) -> (Seen, Seen, Vec<Seen>) {
    let mut r = Reactor::new().unwrap();
    let (port, log) = serve(&mut r, server.build().unwrap());
    let first = exchange(&mut r, port, &client);
    let second = exchange(&mut r, port, &client);
    let server_seen = log.borrow().clone();
    (first, second, server_seen)
}

fn assert_resumes(version: &'static rustls::SupportedProtocolVersion, tickets: bool, name: &str) {
    let dir = temp_dir();
    // One mechanism at a time: tickets and no cache, or the cache alone.
    let cache = if tickets { 0 } else { 16 };
    let server = server_builder(&dir)
        .versions(&[version])
        .tickets(tickets)
        .session_cache(cache);
    let client = client_builder(&dir).build().unwrap();
    let (first, second, server_seen) = twice(server, client);
    assert_eq!(first.version, name);
    assert_eq!(second.version, name);
    assert_eq!(first.resumed, Some(false), "{first:?}");
    assert_eq!(
        second.resumed,
        Some(true),
        "the second handshake was full: {second:?}"
    );
    // The resumed session still names the server's certificate.
    assert!(first.peer_fingerprint.is_some());
    assert_eq!(second.peer_fingerprint, first.peer_fingerprint);
    // The server saw the same.
    let resumed: Vec<_> = server_seen.iter().map(|s| s.resumed).collect();
    assert_eq!(resumed, [Some(false), Some(true)]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_twistor_client_resumes_with_a_tls13_ticket() {
    assert_resumes(&rustls::version::TLS13, true, "TLSv1.3");
}

#[test]
fn a_twistor_client_resumes_tls13_from_the_session_cache_without_tickets() {
    assert_resumes(&rustls::version::TLS13, false, "TLSv1.3");
}

#[test]
fn a_twistor_client_resumes_with_a_tls12_ticket() {
    assert_resumes(&rustls::version::TLS12, true, "TLSv1.2");
}

#[test]
fn a_twistor_client_resumes_tls12_by_session_id() {
    assert_resumes(&rustls::version::TLS12, false, "TLSv1.2");
}

#[test]
fn the_defaults_resume_and_the_knobs_turn_it_off() {
    let dir = temp_dir();
    // Defaults on both sides: resumed.
    let (_, second, _) = twice(server_builder(&dir), client_builder(&dir).build().unwrap());
    assert_eq!(second.resumed, Some(true));
    // A server without tickets or cache: never.
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let server = server_builder(&dir)
            .versions(&[version])
            .tickets(false)
            .session_cache(0);
        let (_, second, _) = twice(server, client_builder(&dir).build().unwrap());
        assert_eq!(second.resumed, Some(false), "{version:?}");
    }
    // A client without a store: never.
    let server = server_builder(&dir);
    let client = client_builder(&dir).session_cache(0).build().unwrap();
    let (_, second, _) = twice(server, client);
    assert_eq!(second.resumed, Some(false));
    // Another configuration is another store: a full handshake.
    let mut r = Reactor::new().unwrap();
    let (port, _) = serve(&mut r, server_builder(&dir).build().unwrap());
    let one = client_builder(&dir).build().unwrap();
    exchange(&mut r, port, &one);
    let other = client_builder(&dir).build().unwrap();
    assert_eq!(exchange(&mut r, port, &other).resumed, Some(false));
    assert_eq!(exchange(&mut r, port, &one).resumed, Some(true));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_session_cache_keeps_no_more_than_its_bound() {
    // TLS 1.2 without tickets: one cache entry per full handshake, and a
    // client resumes only if its entry is still there.
    let dir = temp_dir();
    let run = |bound: usize| -> (Option<bool>, Option<bool>) {
        let server = server_builder(&dir)
            .versions(&[&rustls::version::TLS12])
            .tickets(false)
            .session_cache(bound);
        let mut r = Reactor::new().unwrap();
        let (port, _) = serve(&mut r, server.build().unwrap());
        let clients: Vec<_> = (0..3).map(|_| client_builder(&dir).build().unwrap()).collect();
        for c in &clients {
            assert_eq!(exchange(&mut r, port, c).resumed, Some(false));
        }
        // The newest first (resuming adds no entry), then the oldest.
        let newest = exchange(&mut r, port, &clients[2]).resumed;
        let oldest = exchange(&mut r, port, &clients[0]).resumed;
        (newest, oldest)
    };
    // Room for three: all resume. Room for two: the oldest was pushed out.
    assert_eq!(run(3), (Some(true), Some(true)));
    assert_eq!(run(2), (Some(true), Some(false)));
    std::fs::remove_dir_all(dir).unwrap();
}

/// A session store that records the size of what the server puts in it.
#[derive(Debug, Default)]
struct Sizes(Mutex<Vec<usize>>);
impl StoresServerSessions for Sizes {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.0.lock().unwrap().push(key.len() + value.len());
        true
    }
    fn get(&self, _: &[u8]) -> Option<Vec<u8>> {
        None
    }
    fn take(&self, _: &[u8]) -> Option<Vec<u8>> {
        None
    }
    fn can_cache(&self) -> bool {
        true
    }
}

#[test]
fn a_cached_session_with_a_client_certificate_stays_small() {
    // What DEFAULT_SESSION_CACHE's memory bound rests on: an entry for a
    // client with a Gemini-style identity is well under 2 KB.
    let dir = temp_dir();
    let (id_chain, id_key) = generate_self_signed_cert(&["a gemini identity"]).unwrap();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let sizes = Arc::new(Sizes::default());
        let mut config = Arc::unwrap_or_clone(
            server_builder(&dir)
                .versions(&[version])
                .tickets(false)
                .client_auth(ClientAuth::Any)
                .build()
                .unwrap(),
        );
        config.session_storage = sizes.clone();
        let mut r = Reactor::new().unwrap();
        let (port, log) = serve(&mut r, Arc::new(config));
        let client = client_builder(&dir)
            .client_cert(id_chain.clone(), id_key.clone_key())
            .build()
            .unwrap();
        exchange(&mut r, port, &client);
        assert!(
            log.borrow()[0].peer_fingerprint.is_some(),
            "no client certificate"
        );
        let sizes = sizes.0.lock().unwrap().clone();
        assert!(!sizes.is_empty(), "{version:?}: nothing cached");
        assert!(sizes.iter().all(|&n| n < 2048), "{version:?}: {sizes:?}");
    }
    assert_eq!(DEFAULT_SESSION_CACHE, 1024);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Run a child to completion on a thread; its output arrives on the
/// channel, and the reactor is woken when it does.
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

const PY_RESUME: &str = r#"
import socket, ssl, sys
port, cafile, version = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile)
if version == "1.2":
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
session = None
for attempt in (1, 2):
    with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
            s.sendall(b"again?\n")
            got = b""
            while not got.endswith(b"\n"):
                chunk = s.recv(1024)
                if not chunk:
                    break
                got += chunk
            print("attempt", attempt, s.version(), "reused" if s.session_reused else "new", flush=True)
            session = s.session
"#;

fn python_resumes(version: &str, name: &str) {
    if !have("python3") {
        return;
    }
    let dir = temp_dir();
    let mut r = Reactor::new().unwrap();
    let (port, log) = serve(&mut r, server_builder(&dir).build().unwrap());
    let rx = spawn(
        &r,
        Command::new("python3")
            .args(["-c", PY_RESUME, &port.to_string()])
            .arg(dir.join("cert.pem"))
            .arg(version)
            .stdin(Stdio::null()),
    );
    let out = run_until_output(&mut r, &rx);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains(&format!("attempt 1 {name} new")),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(&format!("attempt 2 {name} reused")),
        "{stdout}\n{stderr}"
    );
    let resumed: Vec<_> = log.borrow().iter().map(|s| s.resumed).collect();
    assert_eq!(resumed, [Some(false), Some(true)]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn python_ssl_resumes_tls13() {
    python_resumes("1.3", "TLSv1.3");
}

#[test]
fn python_ssl_resumes_tls12() {
    python_resumes("1.2", "TLSv1.2");
}

fn s_client_resumes(version_flag: &str, name: &str) {
    if !have("openssl") {
        return;
    }
    let dir = temp_dir();
    let mut r = Reactor::new().unwrap();
    let (port, log) = serve(&mut r, server_builder(&dir).build().unwrap());
    // The line goes in through a file so that stdin stays a plain file;
    // -ign_eof makes s_client wait for the server's close (and so read
    // the tickets that come before it).
    std::fs::write(dir.join("in.txt"), "again?\n").unwrap();
    let sess = dir.join("session.pem");
    let mut outputs = Vec::new();
    for sess_flag in ["-sess_out", "-sess_in"] {
        let rx = spawn(
            &r,
            Command::new("openssl")
                .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), version_flag])
                .args(["-ign_eof", "-servername", "localhost", sess_flag])
                .arg(&sess)
                .stdin(std::fs::File::open(dir.join("in.txt")).unwrap()),
        );
        let out = run_until_output(&mut r, &rx);
        outputs.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    assert!(outputs[0].contains(&format!("New, {name}")), "{}", outputs[0]);
    assert!(outputs[1].contains(&format!("Reused, {name}")), "{}", outputs[1]);
    assert!(outputs[1].contains("again?"), "{}", outputs[1]);
    let resumed: Vec<_> = log.borrow().iter().map(|s| s.resumed).collect();
    assert_eq!(resumed, [Some(false), Some(true)]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn openssl_s_client_reuses_a_tls13_session() {
    s_client_resumes("-tls1_3", "TLSv1.3");
}

#[test]
fn openssl_s_client_reuses_a_tls12_session() {
    s_client_resumes("-tls1_2", "TLSv1.2");
}
