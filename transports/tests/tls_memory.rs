//! The TLS layer over the in-memory pair: handshake, echo, close_notify,
//! truncation, timeouts under the manual clock, bad input, record
//! coalescing, flow control, call routing, client certificates and SNI. No
//! sockets at all.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use twistor_reactor::testing::{MemoryPair, Recorder};
use twistor_reactor::{Protocol, Reason, Transport};
use twistor_transports::tls::rustls::{self, ClientConfig, ServerConfig};
use twistor_transports::tls::{
    generate_self_signed_cert, sha256_fingerprint, ClientAuth, ClientConfigBuilder, ServerConfigBuilder,
    TlsOptions, TlsProtocol,
};

struct Echo;
impl Protocol for Echo {
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        t.write(d)
    }
}

type Failure = Rc<RefCell<Option<Reason>>>;

fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let (server, fp) = ServerConfigBuilder::self_signed(&["localhost"]).unwrap();
    let client = ClientConfigBuilder::new().pinned(&fp).build().unwrap();
    (server, client)
}

fn server_layer(
    app: Box<dyn Protocol>,
    config: Arc<ServerConfig>,
    opts: TlsOptions,
) -> (TlsProtocol, Failure) {
    let failed: Failure = Rc::new(RefCell::new(None));
    let f = failed.clone();
    let layer = TlsProtocol::server(app, config)
        .unwrap()
        .with_options(opts)
        .with_failure_hook(move |r| *f.borrow_mut() = Some(r.clone()));
    (layer, failed)
}

fn client_layer(app: Box<dyn Protocol>, config: Arc<ClientConfig>, name: &str) -> (TlsProtocol, Failure) {
    let failed: Failure = Rc::new(RefCell::new(None));
    let f = failed.clone();
    let layer = TlsProtocol::client(app, config, name)
        .unwrap()
        .with_failure_hook(move |r| *f.borrow_mut() = Some(r.clone()));
    (layer, failed)
}

fn tls_message(r: &Option<Reason>) -> String {
    match r {
        Some(Reason::Tls(m)) => m.clone(),
        other => panic!("expected a TLS reason, got {other:?}"),
    }
}

#[test]
fn handshake_echo_and_close_notify() {
    let (sc, cc) = configs();
    let (client, clog) = Recorder::new();
    let (server, slog) = Recorder::new();
    let (cl, _) = client_layer(Box::new(client), cc, "localhost");
    let (sl, _) = server_layer(Box::new(server), sc, TlsOptions::default());
    let mut pair = MemoryPair::new(Box::new(cl), Box::new(sl)).unwrap();
    pair.pump();
    assert_eq!(clog.borrow().made, 1);
    assert_eq!(slog.borrow().made, 1);
    pair.with_client(|_, t| {
        let info = t.tls_info().expect("tls info");
        assert_eq!(info.version, "TLSv1.3");
        assert!(info.peer_cert.is_some());
        t.write(b"hello ");
        t.write(b"world");
    });
    assert_eq!(slog.borrow().data, b"hello world");
    pair.with_server(|_, t| {
        assert_eq!(t.tls_info().unwrap().sni.as_deref(), Some("localhost"));
        t.write(b"back");
    });
    assert_eq!(clog.borrow().data, b"back");
    // The client closes: close_notify reaches the server as eof_received.
    pair.with_client(|_, t| t.lose_connection());
    assert!(pair.is_closed());
    assert_eq!(slog.borrow().eofs, 1);
    assert!(clog.borrow().lost[0].is_clean(), "{:?}", clog.borrow().lost);
    assert!(slog.borrow().lost[0].is_clean(), "{:?}", slog.borrow().lost);
}

#[test]
fn echo_protocol_through_the_layer() {
    let (sc, cc) = configs();
    let (client, clog) = Recorder::new();
    let (cl, _) = client_layer(Box::new(client), cc, "localhost");
    let (sl, _) = server_layer(Box::new(Echo), sc, TlsOptions::default());
    let mut pair = MemoryPair::new(Box::new(cl), Box::new(sl)).unwrap();
    pair.pump();
    pair.with_client(|_, t| t.write(b"ping\r\n"));
    assert_eq!(clog.borrow().data, b"ping\r\n");
}

#[test]
fn close_without_close_notify_is_truncation() {
    let (sc, cc) = configs();
    let (client, _clog) = Recorder::new();
    let (server, slog) = Recorder::new();
    let (cl, _) = client_layer(Box::new(client), cc, "localhost");
    let (sl, _) = server_layer(Box::new(server), sc, TlsOptions::default());
    let mut pair = MemoryPair::new(Box::new(cl), Box::new(sl)).unwrap();
    pair.pump();
    // Abort below the client's layer: the server sees EOF without close_notify.
    pair.with_client(|_, t| t.abort_connection());
    assert!(pair.is_closed());
    let lost = slog.borrow().lost.clone();
    assert_eq!(lost.len(), 1);
    assert!(
        tls_message(&lost.first().cloned()).starts_with("truncated"),
        "{lost:?}"
    );
    assert_eq!(slog.borrow().eofs, 0);
}

/// A client that says nothing.
struct Silent;
impl Protocol for Silent {
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
}

#[test]
fn handshake_timeout_fires_on_the_manual_clock() {
    let (sc, _) = configs();
    let opts = TlsOptions {
        handshake_timeout: Some(Duration::from_secs(10)),
        ..TlsOptions::default()
    };
    let (sl, failed) = server_layer(Box::new(Echo), sc, opts);
    let mut pair = MemoryPair::new(Box::new(Silent), Box::new(sl)).unwrap();
    pair.pump();
    pair.advance(Duration::from_secs(9));
    assert!(pair.reactor.contains(pair.server), "closed too early");
    pair.advance(Duration::from_secs(2));
    assert!(
        !pair.reactor.contains(pair.server),
        "still open after the timeout"
    );
    assert!(
        matches!(*failed.borrow(), Some(Reason::TimedOut)),
        "{:?}",
        failed.borrow()
    );
}

/// A client that sends the first bytes of a ClientHello, then stalls.
struct Dribble;
impl Protocol for Dribble {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        t.write(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]);
    }
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
}

#[test]
fn stalled_handshake_times_out() {
    let (sc, _) = configs();
    let (sl, failed) = server_layer(Box::new(Echo), sc, TlsOptions::default());
    let mut pair = MemoryPair::new(Box::new(Dribble), Box::new(sl)).unwrap();
    pair.pump();
    assert!(pair.reactor.contains(pair.server));
    pair.advance(twistor_transports::tls::DEFAULT_HANDSHAKE_TIMEOUT);
    assert!(!pair.reactor.contains(pair.server));
    assert!(
        matches!(*failed.borrow(), Some(Reason::TimedOut)),
        "{:?}",
        failed.borrow()
    );
}

#[test]
fn garbage_instead_of_client_hello() {
    let (sc, _) = configs();
    let (sl, failed) = server_layer(Box::new(Echo), sc, TlsOptions::default());
    let (client, clog) = Recorder::new();
    let mut pair = MemoryPair::new(Box::new(client), Box::new(sl)).unwrap();
    pair.inject_to_server(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    pair.pump();
    assert!(!pair.reactor.contains(pair.server));
    let msg = tls_message(&failed.borrow());
    assert!(msg.starts_with("handshake failed"), "{msg}");
    // The client saw an alert record (content type 21) and then the close.
    assert_eq!(clog.borrow().data.first(), Some(&21), "{:?}", clog.borrow().data);
}

#[test]
fn truncated_record_then_close() {
    let (sc, _) = configs();
    let (sl, failed) = server_layer(Box::new(Echo), sc, TlsOptions::default());
    let (client, _) = Recorder::new();
    let mut pair = MemoryPair::new(Box::new(client), Box::new(sl)).unwrap();
    pair.inject_to_server(&[0x16, 0x03, 0x01, 0x01, 0x00, 0x01, 0x00]);
    pair.pump();
    assert!(pair.reactor.contains(pair.server));
    pair.with_client(|_, t| t.lose_connection());
    assert!(!pair.reactor.contains(pair.server));
    let msg = tls_message(&failed.borrow());
    assert!(msg.contains("during the handshake"), "{msg}");
}

#[test]
fn wrong_certificate_reports_the_cause_on_both_sides() {
    let (sc, _) = configs();
    let (other_chain, _) = generate_self_signed_cert(&["localhost"]).unwrap();
    let cc = ClientConfigBuilder::new().roots(other_chain).build().unwrap();
    let (cl, cfail) = client_layer(Box::new(Recorder::new().0), cc, "localhost");
    let (sl, sfail) = server_layer(Box::new(Echo), sc, TlsOptions::default());
    let mut pair = MemoryPair::new(Box::new(cl), Box::new(sl)).unwrap();
    pair.pump();
    assert!(pair.is_closed());
    let c = tls_message(&cfail.borrow());
    assert!(c.contains("certificate verification failed"), "{c}");
    let s = tls_message(&sfail.borrow());
    assert!(s.contains("received fatal alert"), "{s}");
}

/// Counts TLS records of each content type in a byte stream.
fn app_records(wire: &[u8]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i + 5 <= wire.len() {
        let len = u16::from_be_bytes([wire[i + 3], wire[i + 4]]) as usize;
        if wire[i] == 23 {
            n += 1;
        }
        i += 5 + len;
    }
    n
}

#[test]
fn small_writes_in_one_callback_make_one_record() {
    let (sc, cc) = configs();
    let (cl, _) = client_layer(Box::new(Recorder::new().0), cc, "localhost");
    let (server, slog) = Recorder::new();
    let (sl, _) = server_layer(Box::new(server), sc, TlsOptions::default());
    let mut pair = MemoryPair::new(Box::new(cl), Box::new(sl)).unwrap();
    pair.pump();
    assert!(pair.client_to_server().is_empty());
    pair.reactor
        .call_on(pair.client, |_, t| {
            for i in 0..100u8 {
                t.write(&[b'a' + i % 26; 10]);
            }
        })
        .unwrap();
    pair.reactor.run_pending().unwrap();
    let wire = pair.client_to_server();
    assert_eq!(app_records(&wire), 1, "{} bytes on the wire", wire.len());
    pair.pump();
    assert_eq!(slog.borrow().data.len(), 1000);
}

/// Writes `total` bytes as fast as flow control lets it, recording the
/// largest write buffer it ever saw.
struct Producer {
    left: usize,
    peak: Rc<RefCell<usize>>,
    paused: bool,
    pause_count: Rc<RefCell<usize>>,
}
impl Producer {
    fn produce(&mut self, t: &mut dyn Transport) {
        let chunk = [b'x'; 16 * 1024];
        while self.left > 0 && !self.paused && t.write_buffer_size() < 256 * 1024 {
            let n = self.left.min(chunk.len());
            t.write(&chunk[..n]);
            self.left -= n;
            let size = t.write_buffer_size();
            let mut peak = self.peak.borrow_mut();
            *peak = (*peak).max(size);
        }
        if self.left == 0 {
            t.lose_connection();
        } else if !self.paused {
            // Not paused: the buffer drained into the pipe; go on next turn.
            let id = t.id();
            let _ = t
                .reactor()
                .call_on(id, |p, t| p.downcast_mut::<Producer>().unwrap().produce(t));
        }
    }
}
impl Protocol for Producer {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.produce(t);
    }
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    fn pause_writing(&mut self, _: &mut dyn Transport) {
        self.paused = true;
        *self.pause_count.borrow_mut() += 1;
    }
    fn resume_writing(&mut self, t: &mut dyn Transport) {
        self.paused = false;
        self.produce(t);
    }
}

/// Reads in bursts: pauses after each burst until the test resumes it.
struct SlowReader {
    got: Rc<RefCell<usize>>,
    burst: usize,
    since_pause: usize,
    pauses: Rc<RefCell<usize>>,
    eof: Rc<RefCell<bool>>,
}
impl Protocol for SlowReader {
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        *self.got.borrow_mut() += d.len();
        self.since_pause += d.len();
        if self.since_pause >= self.burst {
            self.since_pause = 0;
            *self.pauses.borrow_mut() += 1;
            t.pause_reading();
        }
    }
    fn eof_received(&mut self, _: &mut dyn Transport) -> bool {
        *self.eof.borrow_mut() = true;
        false
    }
}

#[test]
fn flow_control_crosses_the_layer_and_memory_stays_bounded() {
    const TOTAL: usize = 1 << 30;
    let (sc, cc) = configs();
    let peak = Rc::new(RefCell::new(0));
    let got = Rc::new(RefCell::new(0));
    let pauses = Rc::new(RefCell::new(0));
    let eof = Rc::new(RefCell::new(false));
    let reader = SlowReader {
        got: got.clone(),
        burst: 1 << 20,
        since_pause: 0,
        pauses: pauses.clone(),
        eof: eof.clone(),
    };
    let writer_pauses = Rc::new(RefCell::new(0));
    let producer = Producer {
        left: TOTAL,
        peak: peak.clone(),
        paused: false,
        pause_count: writer_pauses.clone(),
    };
    let (cl, _) = client_layer(Box::new(reader), cc, "localhost");
    let (sl, _) = server_layer(Box::new(producer), sc, TlsOptions::default());
    let mut pair = MemoryPair::new(Box::new(cl), Box::new(sl)).unwrap();
    pair.pump();
    let mut rounds = 0;
    // A paused reader hears of close_notify only after it resumes.
    while !*eof.borrow() && rounds < 10_000 {
        rounds += 1;
        pair.with_client(|_, t| t.resume_reading());
    }
    assert_eq!(*got.borrow(), TOTAL);
    assert!(*eof.borrow(), "close_notify not seen");
    assert!(*pauses.borrow() >= 16, "the reader never paused");
    // The reader's pauses reached the writer through both layers.
    assert!(
        *writer_pauses.borrow() >= 16,
        "the writer was paused {} times",
        writer_pauses.borrow()
    );
    assert!(pair.is_closed());
    // The producer never held more than its own limit plus one chunk, and
    // the layer kept nothing unbounded.
    assert!(*peak.borrow() < 512 * 1024, "peak write buffer {}", peak.borrow());
}

#[test]
fn call_on_reaches_the_application_through_the_layer() {
    let (sc, cc) = configs();
    let (cl, _) = client_layer(Box::new(Recorder::new().0), cc, "localhost");
    let (server, slog) = Recorder::new();
    let (sl, _) = server_layer(Box::new(server), sc, TlsOptions::default());
    let mut pair = MemoryPair::new(Box::new(cl), Box::new(sl)).unwrap();
    // A call made before the handshake completes waits for connection_made.
    pair.reactor
        .call_on(pair.client, |p, t| {
            assert!(
                p.downcast_mut::<Recorder>().is_some(),
                "call reached the layer, not the app"
            );
            t.write(b"early");
        })
        .unwrap();
    pair.pump();
    assert_eq!(slog.borrow().data, b"early");
    let hits = Rc::new(RefCell::new(0));
    let h = hits.clone();
    pair.with_server(move |p, _| {
        if p.downcast_mut::<Recorder>().is_some() {
            *h.borrow_mut() += 1;
        }
    });
    assert_eq!(*hits.borrow(), 1);
}

fn client_cert_case(mode: ClientAuth, present: bool) -> (bool, Option<String>) {
    let (chain, key) = generate_self_signed_cert(&["client"]).unwrap();
    let fp = sha256_fingerprint(&chain[0]);
    let (server_chain, server_key) = generate_self_signed_cert(&["localhost"]).unwrap();
    let server_fp = sha256_fingerprint(&server_chain[0]);
    let sc = ServerConfigBuilder::new()
        .cert(server_chain, server_key)
        .unwrap()
        .client_auth(mode)
        .build()
        .unwrap();
    let mut cb = ClientConfigBuilder::new().pinned(&server_fp);
    if present {
        cb = cb.client_cert(chain, key);
    }
    let cc = cb.build().unwrap();
    let seen = Rc::new(RefCell::new(None));
    let s2 = seen.clone();
    struct See(Rc<RefCell<Option<String>>>);
    impl Protocol for See {
        fn connection_made(&mut self, t: &mut dyn Transport) {
            let info = t.tls_info().unwrap();
            *self.0.borrow_mut() = info.peer_cert.as_ref().map(|c| c.sha256_fingerprint.clone());
        }
        fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    }
    let (cl, _) = client_layer(Box::new(Recorder::new().0), cc, "localhost");
    let (sl, _) = server_layer(Box::new(See(s2)), sc, TlsOptions::default());
    let mut pair = MemoryPair::new(Box::new(cl), Box::new(sl)).unwrap();
    pair.pump();
    let up = pair.reactor.contains(pair.server);
    let got = seen.borrow().clone();
    if let Some(g) = &got {
        assert_eq!(g, &fp);
    }
    (up, got)
}

#[test]
fn client_certificate_modes() {
    let (ca_chain, _) = generate_self_signed_cert(&["some ca"]).unwrap();
    // Any: a self-signed client certificate is accepted and visible.
    let (up, seen) = client_cert_case(ClientAuth::Any, true);
    assert!(up && seen.is_some());
    // Any: no certificate is fine too.
    let (up, seen) = client_cert_case(ClientAuth::Any, false);
    assert!(up && seen.is_none());
    // Required: a self-signed certificate not issued by the CA is refused.
    let (up, _) = client_cert_case(ClientAuth::Required(ca_chain.clone()), true);
    assert!(!up);
    // Required: no certificate is refused.
    let (up, _) = client_cert_case(ClientAuth::Required(ca_chain.clone()), false);
    assert!(!up);
    // Optional: none is fine, an unknown one is refused.
    let (up, _) = client_cert_case(ClientAuth::Optional(ca_chain.clone()), false);
    assert!(up);
    let (up, _) = client_cert_case(ClientAuth::Optional(ca_chain), true);
    assert!(!up);
    // None: no certificate asked for, none seen.
    let (up, seen) = client_cert_case(ClientAuth::None, true);
    assert!(up && seen.is_none());
}

#[test]
fn sni_picks_the_certificate_for_each_name() {
    let (a_chain, a_key) = generate_self_signed_cert(&["a.test"]).unwrap();
    let (b_chain, b_key) = generate_self_signed_cert(&["b.test"]).unwrap();
    let (d_chain, d_key) = generate_self_signed_cert(&["default.test"]).unwrap();
    let fps: Vec<String> = [&a_chain, &b_chain, &d_chain]
        .iter()
        .map(|c| sha256_fingerprint(&c[0]))
        .collect();
    let sc = ServerConfigBuilder::new()
        .cert(d_chain.clone(), d_key)
        .unwrap()
        .sni_cert("a.test", a_chain.clone(), a_key)
        .unwrap()
        .sni_cert("B.test", b_chain.clone(), b_key)
        .unwrap()
        .build()
        .unwrap();
    for (name, roots, fp) in [
        ("a.test", a_chain, &fps[0]),
        ("b.test", b_chain, &fps[1]),
        ("default.test", d_chain, &fps[2]),
    ] {
        let cc = ClientConfigBuilder::new().roots(roots).build().unwrap();
        let got = Rc::new(RefCell::new(None));
        let g = got.clone();
        struct Peer(Rc<RefCell<Option<String>>>);
        impl Protocol for Peer {
            fn connection_made(&mut self, t: &mut dyn Transport) {
                *self.0.borrow_mut() = t
                    .tls_info()
                    .unwrap()
                    .peer_cert
                    .as_ref()
                    .map(|c| c.sha256_fingerprint.clone());
            }
            fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
        }
        let (cl, cfail) = client_layer(Box::new(Peer(g)), cc, name);
        let (sl, _) = server_layer(Box::new(Echo), sc.clone(), TlsOptions::default());
        let mut pair = MemoryPair::new(Box::new(cl), Box::new(sl)).unwrap();
        pair.pump();
        assert!(cfail.borrow().is_none(), "{name}: {:?}", cfail.borrow());
        assert_eq!(got.borrow().as_ref(), Some(fp), "{name}");
    }
}

#[test]
fn alpn_is_negotiated() {
    let (chain, key) = generate_self_signed_cert(&["localhost"]).unwrap();
    let fp = sha256_fingerprint(&chain[0]);
    let sc = ServerConfigBuilder::new()
        .cert(chain, key)
        .unwrap()
        .alpn(&[b"gemini", b"h2"])
        .build()
        .unwrap();
    let cc = ClientConfigBuilder::new()
        .pinned(&fp)
        .alpn(&[b"h2"])
        .build()
        .unwrap();
    let (cl, _) = client_layer(Box::new(Recorder::new().0), cc, "localhost");
    let (sl, _) = server_layer(Box::new(Echo), sc, TlsOptions::default());
    let mut pair = MemoryPair::new(Box::new(cl), Box::new(sl)).unwrap();
    pair.pump();
    let alpn = Rc::new(RefCell::new(None));
    let a = alpn.clone();
    pair.with_client(move |_, t| *a.borrow_mut() = t.tls_info().unwrap().alpn.clone());
    assert_eq!(alpn.borrow().as_deref(), Some(&b"h2"[..]));
}

/// Writes more than the pipe holds, then closes.
struct Flood;
impl Protocol for Flood {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        t.write(&vec![b'z'; 1 << 20]);
        t.lose_connection();
    }
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
}

/// Never reads: pauses at once.
struct Stubborn;
impl Protocol for Stubborn {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        t.pause_reading();
    }
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
}

#[test]
fn shutdown_timeout_aborts_a_close_the_peer_never_reads() {
    let (sc, cc) = configs();
    let lost = Rc::new(RefCell::new(None));
    struct FloodAndRecord(Flood, Rc<RefCell<Option<Reason>>>);
    impl Protocol for FloodAndRecord {
        fn connection_made(&mut self, t: &mut dyn Transport) {
            self.0.connection_made(t)
        }
        fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
        fn connection_lost(&mut self, _: &mut dyn Transport, reason: &Reason) {
            *self.1.borrow_mut() = Some(reason.clone());
        }
    }
    let opts = TlsOptions {
        shutdown_timeout: Some(Duration::from_secs(5)),
        ..TlsOptions::default()
    };
    let (cl, _) = client_layer(Box::new(Stubborn), cc, "localhost");
    let (sl, _) = server_layer(Box::new(FloodAndRecord(Flood, lost.clone())), sc, opts);
    let mut pair = MemoryPair::new(Box::new(cl), Box::new(sl)).unwrap();
    pair.pump();
    assert!(
        pair.reactor.contains(pair.server),
        "closed although the data cannot have been delivered"
    );
    pair.advance(Duration::from_secs(4));
    assert!(pair.reactor.contains(pair.server));
    pair.advance(Duration::from_secs(2));
    assert!(!pair.reactor.contains(pair.server));
    assert!(
        matches!(*lost.borrow(), Some(Reason::TimedOut)),
        "{:?}",
        lost.borrow()
    );
}

#[test]
fn trust_on_first_use_refuses_a_changed_certificate() {
    let store = twistor_transports::tls::TofuStore::in_memory();
    let cc = ClientConfigBuilder::new().tofu(store.clone()).build().unwrap();
    // The same certificate twice, then a different one for the same name.
    let (first, _) = ServerConfigBuilder::self_signed(&["capsule.test"]).unwrap();
    let (second, _) = ServerConfigBuilder::self_signed(&["capsule.test"]).unwrap();
    let mut outcomes = Vec::new();
    for sc in [first.clone(), first, second] {
        let (cl, failed) = client_layer(Box::new(Recorder::new().0), cc.clone(), "capsule.test");
        let (sl, _) = server_layer(Box::new(Echo), sc, TlsOptions::default());
        let mut pair = MemoryPair::new(Box::new(cl), Box::new(sl)).unwrap();
        pair.pump();
        let f = failed.borrow().clone();
        outcomes.push(f);
    }
    assert!(outcomes[0].is_none(), "{:?}", outcomes[0]);
    assert!(outcomes[1].is_none(), "{:?}", outcomes[1]);
    let msg = tls_message(&outcomes[2]);
    // The verifier's words, not a dump of the error's structure.
    assert!(
        msg.starts_with(
            "handshake failed: certificate verification failed: the certificate of capsule.test changed"
        ),
        "{msg}"
    );
    assert!(store.get("capsule.test").is_some());
}

#[test]
fn write_eof_sends_close_notify_and_keeps_reading() {
    let (sc, cc) = configs();
    let (client, clog) = Recorder::new();
    /// Answers the peer's close_notify with a last word, then closes.
    struct LastWord;
    impl Protocol for LastWord {
        fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
        fn eof_received(&mut self, t: &mut dyn Transport) -> bool {
            t.write(b"goodbye");
            t.lose_connection();
            true
        }
    }
    let (cl, _) = client_layer(Box::new(client), cc, "localhost");
    let (sl, _) = server_layer(Box::new(LastWord), sc, TlsOptions::default());
    let mut pair = MemoryPair::new(Box::new(cl), Box::new(sl)).unwrap();
    pair.pump();
    pair.with_client(|_, t| t.write_eof());
    assert_eq!(clog.borrow().data, b"goodbye");
    assert_eq!(clog.borrow().eofs, 1);
    assert!(pair.is_closed());
    assert!(clog.borrow().lost[0].is_clean(), "{:?}", clog.borrow().lost);
}

#[test]
fn one_huge_write_is_sent_whole() {
    // 12 MiB in one callback: many more records than one write_tls round
    // moves (64), and under the write-buffer cap (16 MiB).
    const SIZE: usize = 12 << 20;
    let (sc, cc) = configs();
    struct Huge;
    impl Protocol for Huge {
        fn connection_made(&mut self, t: &mut dyn Transport) {
            t.write(&vec![7u8; SIZE]);
            t.lose_connection();
        }
        fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    }
    let got = Rc::new(RefCell::new(0usize));
    struct Count(Rc<RefCell<usize>>);
    impl Protocol for Count {
        fn data_received(&mut self, _: &mut dyn Transport, d: &[u8]) {
            *self.0.borrow_mut() += d.len();
        }
    }
    let (cl, _) = client_layer(Box::new(Count(got.clone())), cc, "localhost");
    let (sl, _) = server_layer(Box::new(Huge), sc, TlsOptions::default());
    let mut pair = MemoryPair::new(Box::new(cl), Box::new(sl)).unwrap();
    pair.pump();
    assert_eq!(*got.borrow(), SIZE);
    assert!(pair.is_closed());
}

#[test]
fn an_application_under_tls_sets_its_own_write_buffer_cap() {
    // A protocol lowers its cap from inside TLS: the view reports it, and a
    // write past it ends the connection with a limit, not 16 MiB later.
    let (sc, cc) = configs();
    let seen = Rc::new(RefCell::new(None));
    let lost = Rc::new(RefCell::new(Vec::new()));
    struct Small(Rc<RefCell<Option<Option<usize>>>>, Rc<RefCell<Vec<Reason>>>);
    impl Protocol for Small {
        fn connection_made(&mut self, t: &mut dyn Transport) {
            t.set_max_write_buffer(256 * 1024);
            *self.0.borrow_mut() = Some(t.max_write_buffer());
            t.write(&vec![7u8; 1 << 20]);
        }
        fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
        fn connection_lost(&mut self, _: &mut dyn Transport, reason: &Reason) {
            self.1.borrow_mut().push(reason.clone());
        }
    }
    let (cl, _) = client_layer(Box::new(Recorder::new().0), cc, "localhost");
    let app = Small(seen.clone(), lost.clone());
    let (sl, _) = server_layer(Box::new(app), sc, TlsOptions::default());
    let mut pair = MemoryPair::new(Box::new(cl), Box::new(sl)).unwrap();
    pair.pump();
    assert_eq!(*seen.borrow(), Some(Some(256 * 1024)));
    assert!(pair.is_closed());
    let lost = lost.borrow().clone();
    assert!(matches!(lost.as_slice(), [Reason::Limit(_)]), "{lost:?}");
}

/// Records what it receives, and swaps itself for `next` on "UP\n".
struct Upgrader {
    got: Rc<RefCell<Vec<u8>>>,
    next: Option<Box<dyn Protocol>>,
}
impl Protocol for Upgrader {
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        self.got.borrow_mut().extend_from_slice(d);
        if d == b"UP\n" {
            if let Some(next) = self.next.take() {
                t.upgrade(Box::new(move |_old, _t| next));
            }
        }
    }
}

#[test]
fn input_after_an_upgrade_request_goes_to_the_new_protocol() {
    let (sc, cc) = configs();
    let (cl, _) = client_layer(Box::new(Recorder::new().0), cc, "localhost");
    let old_got = Rc::new(RefCell::new(Vec::new()));
    let (next, nlog) = Recorder::new();
    let app = Upgrader {
        got: old_got.clone(),
        next: Some(Box::new(next)),
    };
    let (sl, _) = server_layer(Box::new(app), sc, TlsOptions::default());
    let mut pair = MemoryPair::new(Box::new(cl), Box::new(sl)).unwrap();
    pair.pump();
    // Two records that reach the server in one read: the upgrade is asked
    // for while handling the first one.
    pair.reactor
        .call_on(pair.client, |_, t| t.write(b"UP\n"))
        .unwrap();
    pair.reactor
        .call_on(pair.client, |_, t| t.write(b"after"))
        .unwrap();
    pair.pump();
    assert_eq!(*old_got.borrow(), b"UP\n", "the old protocol kept reading");
    assert_eq!(nlog.borrow().data, b"after");
    // And the connection goes on with the new protocol.
    pair.reactor
        .call_on(pair.client, |_, t| t.write(b" more"))
        .unwrap();
    pair.pump();
    assert_eq!(nlog.borrow().data, b"after more");
}

/// `chain` presented with someone else's key: what a peer that copied a
/// certificate but does not hold its key can do.
fn stolen(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    other_key: &rustls::pki_types::PrivateKeyDer<'static>,
) -> Arc<rustls::sign::SingleCertAndKey> {
    let signer = rustls::crypto::ring::sign::any_supported_type(other_key).unwrap();
    Arc::new(rustls::sign::CertifiedKey::new(chain, signer).into())
}

#[test]
fn a_certificate_without_its_key_is_refused() {
    let (_, other_key) = generate_self_signed_cert(&["other"]).unwrap();
    // "Any client certificate": the client must still prove it holds the key.
    let (client_chain, _) = generate_self_signed_cert(&["client"]).unwrap();
    let (server_chain, server_key) = generate_self_signed_cert(&["localhost"]).unwrap();
    let server_fp = sha256_fingerprint(&server_chain[0]);
    let sc = ServerConfigBuilder::new()
        .cert(server_chain.clone(), server_key)
        .unwrap()
        .client_auth(ClientAuth::Any)
        .build()
        .unwrap();
    let mut cc: ClientConfig = (*ClientConfigBuilder::new().pinned(&server_fp).build().unwrap()).clone();
    cc.client_auth_cert_resolver = stolen(client_chain, &other_key);
    let (client, clog) = Recorder::new();
    let (server, slog) = Recorder::new();
    let (cl, _) = client_layer(Box::new(client), Arc::new(cc), "localhost");
    let (sl, sfailed) = server_layer(Box::new(server), sc, TlsOptions::default());
    let mut pair = MemoryPair::new(Box::new(cl), Box::new(sl)).unwrap();
    pair.pump();
    assert_eq!(
        slog.borrow().made,
        0,
        "the server accepted a client without its key"
    );
    assert!(!pair.reactor.contains(pair.server));
    let msg = tls_message(&sfailed.borrow());
    assert!(msg.starts_with("handshake failed"), "{msg}");
    // In TLS 1.3 the client is done before the server has checked it: it
    // learns of the refusal from the alert.
    let lost = clog.borrow().lost.clone();
    let msg = tls_message(&lost.first().cloned());
    assert!(msg.contains("alert"), "{msg}");

    // A pinned fingerprint: the server must prove it holds the pinned
    // certificate's key.
    let (sc, _) = configs();
    let mut sc: ServerConfig = (*sc).clone();
    sc.cert_resolver = stolen(server_chain, &other_key);
    let cc = ClientConfigBuilder::new().pinned(&server_fp).build().unwrap();
    let (client, clog) = Recorder::new();
    let (cl, cfailed) = client_layer(Box::new(client), cc, "localhost");
    let (sl, _) = server_layer(Box::new(Echo), Arc::new(sc), TlsOptions::default());
    let mut pair = MemoryPair::new(Box::new(cl), Box::new(sl)).unwrap();
    pair.pump();
    assert_eq!(
        clog.borrow().made,
        0,
        "the client trusted a server without the pinned key"
    );
    assert!(!pair.reactor.contains(pair.client));
    let msg = tls_message(&cfailed.borrow());
    assert!(msg.starts_with("handshake failed"), "{msg}");
}

/// Forwards everything to a TLS layer, but lets `call_on` reach the
/// transport below it (to close it without close_notify).
struct Below(TlsProtocol);
impl Protocol for Below {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.0.connection_made(t)
    }
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        self.0.data_received(t, d)
    }
    fn eof_received(&mut self, t: &mut dyn Transport) -> bool {
        self.0.eof_received(t)
    }
    fn connection_lost(&mut self, t: &mut dyn Transport, reason: &Reason) {
        self.0.connection_lost(t, reason)
    }
}

#[test]
fn shutdown_timeout_bounds_a_truncated_connection_the_peer_never_reads() {
    let (sc, cc) = configs();
    /// Writes more than the pipe holds and waits.
    struct Talker;
    impl Protocol for Talker {
        fn connection_made(&mut self, t: &mut dyn Transport) {
            t.write(&vec![b'z'; 1 << 20]);
        }
        fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    }
    let opts = TlsOptions {
        shutdown_timeout: Some(Duration::from_secs(5)),
        ..TlsOptions::default()
    };
    let (cl, _) = client_layer(Box::new(Stubborn), cc, "localhost");
    let (sl, _) = server_layer(Box::new(Talker), sc, opts);
    let mut pair = MemoryPair::new(Box::new(Below(cl)), Box::new(sl)).unwrap();
    pair.pump();
    assert!(pair.reactor.contains(pair.server));
    // The client half-closes below TLS (no close_notify) and never reads.
    pair.reactor.call_on(pair.client, |_, t| t.write_eof()).unwrap();
    pair.pump();
    pair.advance(Duration::from_secs(4));
    assert!(pair.reactor.contains(pair.client), "the client went away");
    pair.advance(Duration::from_secs(2));
    assert!(
        !pair.reactor.contains(pair.server),
        "a truncated connection whose peer does not read is held forever"
    );
}

#[test]
fn trust_on_first_use_file_written_by_hand_is_honoured() {
    let (chain, key) = generate_self_signed_cert(&["capsule.test"]).unwrap();
    let fp = sha256_fingerprint(&chain[0]);
    // As a person would write it: the name as they spell it, the
    // fingerprint as `openssl x509 -fingerprint -sha256` prints it.
    let colons: Vec<String> = fp
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_uppercase())
        .collect();
    let path = std::env::temp_dir().join(format!("twistor-tofu-{}-hand", std::process::id()));
    std::fs::write(&path, format!("Capsule.Test {}\n", colons.join(":"))).unwrap();
    let store = twistor_transports::tls::TofuStore::open(&path).unwrap();
    let cc = ClientConfigBuilder::new().tofu(store).build().unwrap();
    let genuine = ServerConfigBuilder::new()
        .cert(chain, key)
        .unwrap()
        .build()
        .unwrap();
    let (impostor, _) = ServerConfigBuilder::self_signed(&["capsule.test"]).unwrap();
    let mut outcomes = Vec::new();
    for sc in [impostor, genuine] {
        let (cl, failed) = client_layer(Box::new(Recorder::new().0), cc.clone(), "capsule.test");
        let (sl, _) = server_layer(Box::new(Echo), sc, TlsOptions::default());
        let mut pair = MemoryPair::new(Box::new(cl), Box::new(sl)).unwrap();
        pair.pump();
        let f = failed.borrow().clone();
        outcomes.push(f);
    }
    let _ = std::fs::remove_file(&path);
    assert!(
        tls_message(&outcomes[0]).contains("changed"),
        "an impostor was trusted: {:?}",
        outcomes[0]
    );
    assert!(outcomes[1].is_none(), "{:?}", outcomes[1]);
}

#[test]
fn trust_on_first_use_remembers_only_a_server_that_proved_its_key() {
    let store = twistor_transports::tls::TofuStore::in_memory();
    let cc = ClientConfigBuilder::new().tofu(store.clone()).build().unwrap();
    let (_, other_key) = generate_self_signed_cert(&["other"]).unwrap();
    // First contact: someone shows a certificate without holding its key.
    let (unproven, _) = generate_self_signed_cert(&["capsule.test"]).unwrap();
    let (sc, _) = ServerConfigBuilder::self_signed(&["capsule.test"]).unwrap();
    let mut sc: ServerConfig = (*sc).clone();
    sc.cert_resolver = stolen(unproven, &other_key);
    let (genuine, _) = ServerConfigBuilder::self_signed(&["capsule.test"]).unwrap();
    let mut outcomes = Vec::new();
    for sc in [Arc::new(sc), genuine] {
        let (cl, failed) = client_layer(Box::new(Recorder::new().0), cc.clone(), "capsule.test");
        let (sl, _) = server_layer(Box::new(Echo), sc, TlsOptions::default());
        let mut pair = MemoryPair::new(Box::new(cl), Box::new(sl)).unwrap();
        pair.pump();
        let f = failed.borrow().clone();
        outcomes.push(f);
    }
    assert!(outcomes[0].is_some(), "a server without its key was trusted");
    assert!(
        outcomes[1].is_none(),
        "the unproven certificate was remembered: {:?}",
        outcomes[1]
    );
}

#[test]
fn trust_on_first_use_remembers_a_tls12_server() {
    let store = twistor_transports::tls::TofuStore::in_memory();
    let cc = ClientConfigBuilder::new().tofu(store.clone()).build().unwrap();
    let (chain, key) = generate_self_signed_cert(&["old.test"]).unwrap();
    let fp = sha256_fingerprint(&chain[0]);
    let sc = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let (client, clog) = Recorder::new();
    let (cl, failed) = client_layer(Box::new(client), cc, "old.test");
    let (sl, _) = server_layer(Box::new(Echo), Arc::new(sc), TlsOptions::default());
    let mut pair = MemoryPair::new(Box::new(cl), Box::new(sl)).unwrap();
    pair.pump();
    assert!(failed.borrow().is_none(), "{:?}", failed.borrow());
    assert_eq!(clog.borrow().made, 1);
    let version = Rc::new(RefCell::new(None));
    let v = version.clone();
    pair.with_client(move |_, t| *v.borrow_mut() = t.tls_info().map(|i| i.version.clone()));
    assert_eq!(version.borrow().as_deref(), Some("TLSv1.2"));
    assert_eq!(store.get("old.test"), Some(fp));
}

#[test]
fn a_client_connecting_by_address_sends_no_sni_and_gets_the_default_certificate() {
    let (sc, fp) = ServerConfigBuilder::self_signed(&["localhost"]).unwrap();
    let cc = ClientConfigBuilder::new().pinned(&fp).build().unwrap();
    let (client, clog) = Recorder::new();
    let (server, _) = Recorder::new();
    let (cl, cfail) = client_layer(Box::new(client), cc, "127.0.0.1");
    let (sl, _) = server_layer(Box::new(server), sc, TlsOptions::default());
    let mut pair = MemoryPair::new(Box::new(cl), Box::new(sl)).unwrap();
    pair.pump();
    assert!(cfail.borrow().is_none(), "{:?}", cfail.borrow());
    assert_eq!(clog.borrow().made, 1);
    let sni = Rc::new(RefCell::new(Vec::new()));
    let (s1, s2) = (sni.clone(), sni.clone());
    pair.with_server(move |_, t| s1.borrow_mut().push(t.tls_info().map(|i| i.sni.clone())));
    // The client reports the name it sent: none.
    pair.with_client(move |_, t| s2.borrow_mut().push(t.tls_info().map(|i| i.sni.clone())));
    assert_eq!(*sni.borrow(), vec![Some(None), Some(None)]);
}

#[test]
fn a_paused_reader_that_half_closed_still_gets_what_came_before_close_notify() {
    let (sc, cc) = configs();
    /// Half-closes as soon as it is connected; stops reading at the first
    /// bytes it gets.
    struct HalfCloser(Recorder);
    impl Protocol for HalfCloser {
        fn connection_made(&mut self, t: &mut dyn Transport) {
            self.0.connection_made(t);
            t.write_eof();
        }
        fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
            self.0.data_received(t, d);
            t.pause_reading();
        }
        fn eof_received(&mut self, t: &mut dyn Transport) -> bool {
            self.0.eof_received(t)
        }
        fn connection_lost(&mut self, t: &mut dyn Transport, reason: &Reason) {
            self.0.connection_lost(t, reason)
        }
    }
    /// Answers close_notify with two records' worth and its own
    /// close_notify: they reach the client in one read.
    struct Answer;
    impl Protocol for Answer {
        fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
        fn eof_received(&mut self, t: &mut dyn Transport) -> bool {
            t.write(&[b'w'; 20_000]);
            false
        }
    }
    let (rec, clog) = Recorder::new();
    let (cl, _) = client_layer(Box::new(HalfCloser(rec)), cc, "localhost");
    let (sl, _) = server_layer(Box::new(Answer), sc, TlsOptions::default());
    let mut pair = MemoryPair::new(Box::new(cl), Box::new(sl)).unwrap();
    pair.pump();
    // The client read the first record and paused.
    assert_eq!(clog.borrow().data.len(), 16 * 1024);
    assert!(clog.borrow().lost.is_empty(), "closed under a paused reader");
    for _ in 0..10 {
        pair.with_client(|_, t| t.resume_reading());
    }
    let log = clog.borrow();
    assert_eq!(log.data.len(), 20_000);
    assert_eq!(log.eofs, 1);
    assert_eq!(log.lost.len(), 1);
    assert!(log.lost[0].is_clean(), "{:?}", log.lost);
    assert!(pair.is_closed());
}

#[test]
fn a_write_past_the_cap_ends_the_connection_with_a_limit() {
    let (sc, cc) = configs();
    /// Writes more than the cap in one go, as a protocol ignoring
    /// pause_writing would, and records how it ended.
    struct Flooder(Rc<RefCell<Option<Reason>>>);
    impl Protocol for Flooder {
        fn connection_made(&mut self, t: &mut dyn Transport) {
            t.write(&vec![b'f'; 600 * 1024]);
            t.write(&vec![b'f'; 600 * 1024]);
            assert!(t.is_closing(), "still open past the cap");
            assert!(t.write_buffer_size() <= 1 << 20);
        }
        fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
        fn connection_lost(&mut self, _: &mut dyn Transport, reason: &Reason) {
            *self.0.borrow_mut() = Some(reason.clone());
        }
    }
    let lost = Rc::new(RefCell::new(None));
    let opts = TlsOptions {
        max_write_buffer: 1 << 20,
        ..TlsOptions::default()
    };
    let (cl, _) = client_layer(Box::new(Recorder::new().0), cc, "localhost");
    let (sl, _) = server_layer(Box::new(Flooder(lost.clone())), sc, opts);
    let mut pair = MemoryPair::new(Box::new(cl), Box::new(sl)).unwrap();
    pair.pump();
    assert!(!pair.reactor.contains(pair.server));
    assert!(
        matches!(*lost.borrow(), Some(Reason::Limit(_))),
        "{:?}",
        lost.borrow()
    );
}

/// Panics when it receives `trigger`; records how its connection ended.
struct Bomb {
    trigger: &'static [u8],
    lost: Rc<RefCell<Vec<Reason>>>,
    /// Panic inside a protocol swap rather than in the callback itself.
    in_upgrade: bool,
}
impl Protocol for Bomb {
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        if d != self.trigger {
            t.write(d);
        } else if self.in_upgrade {
            t.upgrade(Box::new(|_, _| panic!("upgrade went off")));
        } else {
            panic!("went off");
        }
    }
    fn connection_lost(&mut self, _: &mut dyn Transport, reason: &Reason) {
        self.lost.borrow_mut().push(reason.clone());
    }
}

fn panic_case(in_upgrade: bool) -> (Vec<Reason>, Vec<Reason>, Vec<u8>) {
    let (sc, cc) = configs();
    let lost = Rc::new(RefCell::new(Vec::new()));
    let bomb = Bomb {
        trigger: b"boom",
        lost: lost.clone(),
        in_upgrade,
    };
    let (client, clog) = Recorder::new();
    let (cl, _) = client_layer(Box::new(client), cc, "localhost");
    let (sl, _) = server_layer(Box::new(bomb), sc, TlsOptions::default());
    let mut pair = MemoryPair::new(Box::new(cl), Box::new(sl)).unwrap();
    pair.pump();
    pair.with_client(|_, t| t.write(b"fine"));
    pair.with_client(|_, t| t.write(b"boom"));
    assert!(
        !pair.reactor.contains(pair.server),
        "the panicking connection lives on"
    );
    let server_lost = lost.borrow().clone();
    let client_lost = clog.borrow().lost.clone();
    let data = clog.borrow().data.clone();
    (server_lost, client_lost, data)
}

#[test]
fn a_panicking_application_ends_its_connection_with_a_panic_reason() {
    let (server_lost, client_lost, data) = panic_case(false);
    assert_eq!(data, b"fine");
    // Exactly one connection_lost, with the panic's message.
    assert_eq!(server_lost.len(), 1, "{server_lost:?}");
    assert!(
        matches!(&server_lost[0], Reason::Panic(m) if m == "went off"),
        "{server_lost:?}"
    );
    // No close_notify for a panic: the peer sees a truncation.
    let msg = tls_message(&client_lost.first().cloned());
    assert!(msg.starts_with("truncated"), "{msg}");
}

#[test]
fn a_panicking_protocol_swap_under_tls_ends_the_connection() {
    let (server_lost, client_lost, data) = panic_case(true);
    assert_eq!(data, b"fine");
    // The old protocol went into the swap and is gone with it: it hears
    // nothing more.
    assert!(server_lost.is_empty(), "{server_lost:?}");
    let msg = tls_message(&client_lost.first().cloned());
    assert!(msg.starts_with("truncated"), "{msg}");
}
