//! Replacing a TLS listener's configuration while it serves
//! (`ReloadableServerConfig`), over loopback: a connection opened before
//! the replacement keeps talking on the old certificate, a new one gets
//! the new certificate, a client that held a session from before does a
//! full handshake with the new one, and a failed load keeps the old.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use twistor_reactor::{Address, ConnId, Protocol, Reactor, Reason, Transport};
use twistor_transports::tls::rustls::{ClientConfig, ServerConfig};
use twistor_transports::tls::{
    connect_tls, listen_tls, ClientConfigBuilder, ReloadableServerConfig, ServerConfigBuilder,
};

const WAIT: Duration = Duration::from_secs(20);

/// A new self-signed configuration for localhost and its fingerprint.
fn new_cert() -> (Arc<ServerConfig>, String) {
    ServerConfigBuilder::self_signed(&["localhost"]).unwrap()
}

/// The server: echoes.
struct Echo;
impl Protocol for Echo {
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        t.write(d);
    }
}

#[derive(Debug, Default)]
struct Seen {
    id: Option<ConnId>,
    fingerprint: Option<String>,
    resumed: bool,
    data: Vec<u8>,
    lost: Option<Reason>,
}

type Shared = Rc<RefCell<Seen>>;

/// A client that stays open and records what it sees.
struct Client(Shared);
impl Protocol for Client {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        let info = t.tls_info().unwrap();
        let mut s = self.0.borrow_mut();
        s.id = Some(t.id());
        s.fingerprint = info.peer_cert.as_ref().map(|c| c.sha256_fingerprint.clone());
        s.resumed = info.resumed;
    }
    fn data_received(&mut self, _: &mut dyn Transport, d: &[u8]) {
        self.0.borrow_mut().data.extend_from_slice(d);
    }
    fn connection_lost(&mut self, _: &mut dyn Transport, reason: &Reason) {
        self.0.borrow_mut().lost = Some(reason.clone());
    }
}

/// A client configuration trusting each of `fingerprints`.
fn client_config(fingerprints: &[&str]) -> Arc<ClientConfig> {
    let mut b = ClientConfigBuilder::new();
    for fp in fingerprints {
        b = b.pinned(fp);
    }
    b.build().unwrap()
}

/// Connect and wait for the handshake; the client's record.
fn open(r: &mut Reactor, port: u16, config: &Arc<ClientConfig>) -> Shared {
    let seen = Shared::default();
    let s = seen.clone();
    connect_tls(
        r,
        "localhost",
        port,
        move |_: &Address| Client(s.clone()),
        config.clone(),
    );
    let made = r
        .run_until(WAIT, |_| {
            seen.borrow().id.is_some() || seen.borrow().lost.is_some()
        })
        .unwrap();
    assert!(
        made && seen.borrow().id.is_some(),
        "no connection: {:?}",
        seen.borrow()
    );
    seen
}

/// Send `data` on the client's connection and wait for its echo.
fn echo(r: &mut Reactor, seen: &Shared, data: &[u8]) {
    let id = seen.borrow().id.unwrap();
    seen.borrow_mut().data.clear();
    r.write_to(id, data.to_vec()).unwrap();
    let ok = r.run_until(WAIT, |_| seen.borrow().data == data).unwrap();
    assert!(ok, "no echo: {:?}", seen.borrow());
}

fn close(r: &mut Reactor, seen: &Shared) {
    let id = seen.borrow().id.unwrap();
    r.close(id).unwrap();
    let ok = r.run_until(WAIT, |_| seen.borrow().lost.is_some()).unwrap();
    assert!(ok);
    assert!(
        seen.borrow().lost.as_ref().unwrap().is_clean(),
        "{:?}",
        seen.borrow()
    );
}

#[test]
fn new_connections_get_the_new_certificate_and_open_ones_keep_the_old() {
    let (old, old_fp) = new_cert();
    let (new, new_fp) = new_cert();
    let certs = ReloadableServerConfig::new(old);
    let mut r = Reactor::new().unwrap();
    let port = listen_tls(&mut r, "127.0.0.1:0", |_: &Address| Echo, certs.clone())
        .unwrap()
        .port();
    let trusting_both = client_config(&[&old_fp, &new_fp]);
    let before = open(&mut r, port, &trusting_both);
    assert_eq!(before.borrow().fingerprint.as_deref(), Some(&*old_fp));

    certs.replace(new);
    assert_eq!(certs.replacements(), 1);

    let after = open(&mut r, port, &trusting_both);
    assert_eq!(after.borrow().fingerprint.as_deref(), Some(&*new_fp));
    // The connection from before still talks, on its old session.
    echo(&mut r, &before, b"still here");
    echo(&mut r, &after, b"new here");
    close(&mut r, &before);
    close(&mut r, &after);
    // A client that trusts only the old certificate is now refused.
    let old_only = client_config(&[&old_fp]);
    let seen = Shared::default();
    let s = seen.clone();
    connect_tls(
        &mut r,
        "localhost",
        port,
        move |_: &Address| Client(s.clone()),
        old_only,
    );
    let failed = r.run_until(WAIT, |r| r.handler_count() == 1).unwrap();
    assert!(failed, "the refused attempt did not end");
    assert!(seen.borrow().id.is_none(), "{:?}", seen.borrow());
}

#[test]
fn a_session_from_before_the_replacement_does_not_resume() {
    let (old, old_fp) = new_cert();
    let (new, new_fp) = new_cert();
    let certs = ReloadableServerConfig::new(old);
    let mut r = Reactor::new().unwrap();
    let port = listen_tls(&mut r, "127.0.0.1:0", |_: &Address| Echo, certs.clone())
        .unwrap()
        .port();
    let client = client_config(&[&old_fp, &new_fp]);
    // Two connections before: the second resumes (the store works).
    for resumed in [false, true] {
        let c = open(&mut r, port, &client);
        echo(&mut r, &c, b"ticket, please");
        assert_eq!(c.borrow().resumed, resumed);
        close(&mut r, &c);
    }
    certs.replace(new);
    // The new configuration has its own ticket keys: a full handshake,
    // with the new certificate.
    let c = open(&mut r, port, &client);
    assert!(!c.borrow().resumed);
    assert_eq!(c.borrow().fingerprint.as_deref(), Some(&*new_fp));
    close(&mut r, &c);
}

#[test]
fn a_failed_load_keeps_the_configuration() {
    let (old, old_fp) = new_cert();
    let certs = ReloadableServerConfig::new(old.clone());
    let mut r = Reactor::new().unwrap();
    let port = listen_tls(&mut r, "127.0.0.1:0", |_: &Address| Echo, certs.clone())
        .unwrap()
        .port();
    let err = certs
        .reload(|| Err(io::Error::new(io::ErrorKind::InvalidData, "no CERTIFICATE found")))
        .unwrap_err();
    assert!(err.to_string().contains("no CERTIFICATE"));
    assert_eq!(certs.replacements(), 0);
    assert!(Arc::ptr_eq(&certs.current(), &old));
    let c = open(&mut r, port, &client_config(&[&old_fp]));
    assert_eq!(c.borrow().fingerprint.as_deref(), Some(&*old_fp));
    close(&mut r, &c);
}
