//! STARTTLS over the in-memory pair: a line protocol upgrades a live
//! connection on both sides, and plaintext pipelined after the STARTTLS
//! command is never interpreted (the CVE-2011-0411 bug class).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use twistor_reactor::testing::{MemoryPair, Recorder};
use twistor_reactor::{Protocol, Reason, Transport};
use twistor_transports::tls::rustls::{ClientConfig, ServerConfig};
use twistor_transports::tls::{start_tls, ClientConfigBuilder, ServerConfigBuilder, TlsOptions, TlsRole};

type Log = Rc<RefCell<Vec<String>>>;

/// The server: echoes commands, and switches to TLS on `STARTTLS`.
struct Server {
    buf: Vec<u8>,
    config: Arc<ServerConfig>,
    commands: Log,
    lost: Rc<RefCell<Option<Reason>>>,
}

impl Protocol for Server {
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        self.buf.extend_from_slice(data);
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line).trim_end().to_string();
            let secure = t.tls_info().is_some();
            if line == "STARTTLS" && !secure {
                t.write(b"OK begin TLS\r\n");
                start_tls(
                    t,
                    TlsRole::Server(self.config.clone()),
                    TlsOptions::default(),
                    |_, _| {},
                )
                .unwrap();
                // What followed the command came before the handshake: drop it.
                self.buf.clear();
                return;
            }
            self.commands.borrow_mut().push(format!("{line} secure={secure}"));
            t.write(format!("echo: {line}\r\n").as_bytes());
        }
    }
    fn connection_lost(&mut self, _: &mut dyn Transport, reason: &Reason) {
        *self.lost.borrow_mut() = Some(reason.clone());
    }
}

/// The client: pipelines `STARTTLS` with an injected command, upgrades on
/// the server's answer, then says HELLO over TLS.
struct Client {
    buf: Vec<u8>,
    config: Arc<ClientConfig>,
    got: Log,
}

impl Protocol for Client {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        t.write(b"STARTTLS\r\nINJECTED\r\n");
    }
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        self.buf.extend_from_slice(data);
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line).trim_end().to_string();
            self.got.borrow_mut().push(line.clone());
            if line == "OK begin TLS" && t.tls_info().is_none() {
                let role = TlsRole::Client {
                    config: self.config.clone(),
                    server_name: "localhost".into(),
                };
                start_tls(t, role, TlsOptions::default(), |_, t| t.write(b"HELLO\r\n")).unwrap();
                self.buf.clear();
                return;
            }
        }
    }
}

fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let (server, fp) = ServerConfigBuilder::self_signed(&["localhost"]).unwrap();
    (server, ClientConfigBuilder::new().pinned(&fp).build().unwrap())
}

#[test]
fn upgrade_both_sides_and_discard_pipelined_plaintext() {
    let (sc, cc) = configs();
    let commands: Log = Default::default();
    let got: Log = Default::default();
    let lost = Rc::new(RefCell::new(None));
    let server = Server {
        buf: Vec::new(),
        config: sc,
        commands: commands.clone(),
        lost: lost.clone(),
    };
    let client = Client {
        buf: Vec::new(),
        config: cc,
        got: got.clone(),
    };
    let mut pair = MemoryPair::new(Box::new(client), Box::new(server)).unwrap();
    pair.pump();
    assert_eq!(*commands.borrow(), vec!["HELLO secure=true".to_string()]);
    assert_eq!(
        *got.borrow(),
        vec!["OK begin TLS".to_string(), "echo: HELLO".to_string()]
    );
    // Both sides are now TLS: a clean close goes through close_notify.
    pair.with_client(|_, t| {
        assert_eq!(t.tls_info().unwrap().version, "TLSv1.3");
        t.lose_connection();
    });
    assert!(pair.is_closed());
    assert!(lost.borrow().as_ref().unwrap().is_clean(), "{:?}", lost.borrow());
}

#[test]
fn plaintext_sent_after_starttls_fails_the_handshake() {
    let (sc, _) = configs();
    let commands: Log = Default::default();
    let lost = Rc::new(RefCell::new(None));
    let server = Server {
        buf: Vec::new(),
        config: sc,
        commands: commands.clone(),
        lost: lost.clone(),
    };
    let (raw, log) = Recorder::new();
    let mut pair = MemoryPair::new(Box::new(raw), Box::new(server)).unwrap();
    pair.inject_to_server(b"STARTTLS\r\n");
    pair.pump();
    assert_eq!(log.borrow().data, b"OK begin TLS\r\n");
    // An attacker's command arrives after the upgrade, before any handshake.
    pair.inject_to_server(b"INJECTED\r\n");
    pair.pump();
    assert!(commands.borrow().is_empty(), "{:?}", commands.borrow());
    assert!(!pair.reactor.contains(pair.server));
    let reason = lost.borrow().clone();
    match reason {
        Some(Reason::Tls(m)) => assert!(m.starts_with("handshake failed"), "{m}"),
        other => panic!("expected a TLS failure, got {other:?}"),
    }
}

/// Upgrades on `STARTTLS` and writes in the same callback, after
/// `start_tls`.
struct EagerServer {
    config: Arc<ServerConfig>,
}

impl Protocol for EagerServer {
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        if data.starts_with(b"STARTTLS\r\n") && t.tls_info().is_none() {
            t.write(b"OK begin TLS\r\n");
            start_tls(
                t,
                TlsRole::Server(self.config.clone()),
                TlsOptions::default(),
                |_, _| {},
            )
            .unwrap();
            t.write(b"secret\r\n");
        }
    }
}

#[test]
fn writes_after_start_tls_in_the_same_callback_are_encrypted() {
    let (sc, cc) = configs();
    // A peer that never does TLS sees the answer, and nothing written
    // after start_tls.
    let (raw, log) = Recorder::new();
    let server = EagerServer { config: sc.clone() };
    let mut pair = MemoryPair::new(Box::new(raw), Box::new(server)).unwrap();
    pair.inject_to_server(b"STARTTLS\r\n");
    pair.pump();
    assert_eq!(
        String::from_utf8_lossy(&log.borrow().data),
        "OK begin TLS\r\n",
        "plaintext leaked after start_tls"
    );
    // A peer that does TLS gets it once the handshake is done.
    let got: Log = Default::default();
    let client = Client {
        buf: Vec::new(),
        config: cc,
        got: got.clone(),
    };
    let mut pair = MemoryPair::new(Box::new(client), Box::new(EagerServer { config: sc })).unwrap();
    pair.pump();
    assert_eq!(
        *got.borrow(),
        vec!["OK begin TLS".to_string(), "secret".to_string()]
    );
}

/// Upgrades on the server's answer and, before the handshake can have
/// completed, writes a last command and closes.
struct HastyClient {
    config: Arc<ClientConfig>,
    opts: TlsOptions,
    /// Close in the callback that called start_tls, not in a later one.
    same_callback: bool,
    lost: Rc<RefCell<Option<Reason>>>,
}

impl Protocol for HastyClient {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        t.write(b"STARTTLS\r\n");
    }
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        if data.starts_with(b"OK begin TLS") && t.tls_info().is_none() {
            let role = TlsRole::Client {
                config: self.config.clone(),
                server_name: "localhost".into(),
            };
            start_tls(t, role, self.opts, |_, _| {}).unwrap();
            if self.same_callback {
                t.write(b"QUIT\r\n");
                t.lose_connection();
                return;
            }
            let id = t.id();
            t.reactor()
                .call_on(id, |_, t| {
                    assert!(t.tls_info().is_none(), "the handshake is already done");
                    t.write(b"QUIT\r\n");
                    t.lose_connection();
                })
                .unwrap();
        }
    }
    fn connection_lost(&mut self, _: &mut dyn Transport, reason: &Reason) {
        *self.lost.borrow_mut() = Some(reason.clone());
    }
}

#[test]
fn close_during_the_handshake_sends_what_was_written_then_close_notify() {
    close_during_the_handshake(false);
}

#[test]
fn close_right_after_start_tls_sends_what_was_written_then_close_notify() {
    close_during_the_handshake(true);
}

fn close_during_the_handshake(same_callback: bool) {
    let (sc, cc) = configs();
    let commands: Log = Default::default();
    let server_lost = Rc::new(RefCell::new(None));
    let client_lost = Rc::new(RefCell::new(None));
    let server = Server {
        buf: Vec::new(),
        config: sc,
        commands: commands.clone(),
        lost: server_lost.clone(),
    };
    let client = HastyClient {
        config: cc,
        opts: TlsOptions::default(),
        same_callback,
        lost: client_lost.clone(),
    };
    let mut pair = MemoryPair::new(Box::new(client), Box::new(server)).unwrap();
    pair.pump();
    assert_eq!(*commands.borrow(), vec!["QUIT secure=true".to_string()]);
    assert!(pair.is_closed());
    let s = server_lost.borrow().clone();
    assert!(s.as_ref().is_some_and(|r| r.is_clean()), "{s:?}");
    let c = client_lost.borrow().clone();
    assert!(c.as_ref().is_some_and(|r| r.is_clean()), "{c:?}");
}

/// Answers STARTTLS, then never says anything again.
struct Mute(bool);
impl Protocol for Mute {
    fn data_received(&mut self, t: &mut dyn Transport, _: &[u8]) {
        if !std::mem::replace(&mut self.0, true) {
            t.write(b"OK begin TLS\r\n");
        }
    }
}

#[test]
fn close_during_a_stalled_handshake_is_bounded_without_a_handshake_timeout() {
    let (_, cc) = configs();
    let lost = Rc::new(RefCell::new(None));
    let opts = TlsOptions {
        handshake_timeout: None,
        shutdown_timeout: Some(std::time::Duration::from_secs(5)),
        ..TlsOptions::default()
    };
    let client = HastyClient {
        config: cc,
        opts,
        same_callback: false,
        lost: lost.clone(),
    };
    let mut pair = MemoryPair::new(Box::new(client), Box::new(Mute(false))).unwrap();
    pair.pump();
    assert!(pair.reactor.contains(pair.client));
    pair.advance(std::time::Duration::from_secs(6));
    assert!(!pair.reactor.contains(pair.client), "the close never happened");
    assert!(
        matches!(*lost.borrow(), Some(Reason::TimedOut)),
        "{:?}",
        lost.borrow()
    );
}

/// What a [`Feeder`] saw.
#[derive(Default, Debug)]
struct FeedLog {
    pauses: usize,
    /// A pause came while the handshake was still in progress.
    paused_while_handshaking: bool,
    resumes: usize,
    written: usize,
    /// The largest write-buffer size it was shown.
    peak: usize,
    lost: Option<Reason>,
}

/// A proxy-like client: upgrades on the server's answer, then writes a
/// chunk per loop turn (honouring `pause_writing` unless `stubborn`) until
/// it has written `total` bytes.
struct Feeder {
    config: Arc<ClientConfig>,
    opts: TlsOptions,
    chunk: usize,
    total: usize,
    stubborn: bool,
    paused: bool,
    log: Rc<RefCell<FeedLog>>,
}

impl Feeder {
    fn feed(&mut self, t: &mut dyn Transport) {
        if self.paused && !self.stubborn {
            return;
        }
        let n = self.chunk.min(self.total - self.log.borrow().written);
        if n == 0 || t.is_closing() {
            return;
        }
        t.write(&vec![b'p'; n]);
        let mut log = self.log.borrow_mut();
        log.written += n;
        log.peak = log.peak.max(t.write_buffer_size());
        let id = t.id();
        let _ = t
            .reactor()
            .call_on(id, |p, t| p.downcast_mut::<Feeder>().unwrap().feed(t));
    }
}

impl Protocol for Feeder {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        t.write(b"STARTTLS\r\n");
    }
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        if data.starts_with(b"OK begin TLS") && t.tls_info().is_none() {
            let role = TlsRole::Client {
                config: self.config.clone(),
                server_name: "localhost".into(),
            };
            start_tls(t, role, self.opts, |_, _| {}).unwrap();
            let id = t.id();
            t.reactor()
                .call_on(id, |p, t| p.downcast_mut::<Feeder>().unwrap().feed(t))
                .unwrap();
        }
    }
    fn pause_writing(&mut self, t: &mut dyn Transport) {
        self.paused = true;
        let mut log = self.log.borrow_mut();
        log.pauses += 1;
        log.paused_while_handshaking |= t.tls_info().is_none();
    }
    fn resume_writing(&mut self, t: &mut dyn Transport) {
        self.paused = false;
        self.log.borrow_mut().resumes += 1;
        self.feed(t);
    }
    fn connection_lost(&mut self, _: &mut dyn Transport, reason: &Reason) {
        self.log.borrow_mut().lost = Some(reason.clone());
    }
}

fn feeder(
    cc: Arc<ClientConfig>,
    opts: TlsOptions,
    chunk: usize,
    total: usize,
    stubborn: bool,
) -> (Feeder, Rc<RefCell<FeedLog>>) {
    let log = Rc::new(RefCell::new(FeedLog::default()));
    let f = Feeder {
        config: cc,
        opts,
        chunk,
        total,
        stubborn,
        paused: false,
        log: log.clone(),
    };
    (f, log)
}

#[test]
fn plaintext_held_during_the_handshake_raises_pause_writing() {
    let (_, cc) = configs();
    // The server never answers the handshake: everything stays held.
    let (client, log) = feeder(cc, TlsOptions::default(), 16 * 1024, 1 << 20, false);
    let mut pair = MemoryPair::new(Box::new(client), Box::new(Mute(false))).unwrap();
    pair.pump();
    let log = log.borrow();
    assert_eq!(log.pauses, 1, "{log:?}");
    assert!(log.paused_while_handshaking, "{log:?}");
    let high = twistor_reactor::DEFAULT_HIGH_WATER;
    // It stopped once over the high-water mark, and it was shown what it
    // had written.
    assert!(log.written > high && log.written <= high + 16 * 1024, "{log:?}");
    assert!(log.peak >= log.written, "{log:?}");
    assert!(pair.reactor.contains(pair.client));
}

#[test]
fn held_plaintext_is_sent_once_the_handshake_is_done_and_writing_resumes() {
    let (sc, cc) = configs();
    let commands: Log = Default::default();
    let server = Server {
        buf: Vec::new(),
        config: sc,
        commands: commands.clone(),
        lost: Rc::new(RefCell::new(None)),
    };
    // 96 KiB written in the first turn after start_tls, before the
    // handshake can be done, then more as flow control allows.
    let (client, log) = feeder(cc, TlsOptions::default(), 96 * 1024, 1 << 20, false);
    let mut pair = MemoryPair::new(Box::new(client), Box::new(server)).unwrap();
    pair.pump();
    let log = log.borrow();
    assert!(log.paused_while_handshaking, "{log:?}");
    assert_eq!(log.resumes, log.pauses, "{log:?}");
    assert_eq!(log.written, 1 << 20, "{log:?}");
    // The server got it all over TLS: one partial line (no newline), held
    // and not interpreted.
    let got = Rc::new(RefCell::new(0));
    let g = got.clone();
    pair.with_server(move |p, t| {
        assert!(t.tls_info().is_some());
        *g.borrow_mut() = p.downcast_mut::<Server>().unwrap().buf.len();
    });
    assert_eq!(*got.borrow(), 1 << 20);
    assert!(commands.borrow().is_empty());
}

#[test]
fn held_plaintext_past_the_cap_ends_the_connection_with_a_limit() {
    let (_, cc) = configs();
    let opts = TlsOptions {
        max_write_buffer: 1 << 20,
        ..TlsOptions::default()
    };
    // A protocol that ignores pause_writing, facing a handshake that never
    // completes.
    let (client, log) = feeder(cc, opts, 64 * 1024, 8 << 20, true);
    let mut pair = MemoryPair::new(Box::new(client), Box::new(Mute(false))).unwrap();
    pair.pump();
    let log = log.borrow();
    assert!(!pair.reactor.contains(pair.client), "{log:?}");
    assert!(matches!(log.lost, Some(Reason::Limit(_))), "{log:?}");
    assert!(log.peak <= 1 << 20, "{log:?}");
}
