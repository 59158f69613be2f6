//! The framings and policies under the real TLS layer, over the in-memory
//! pair (no sockets): STARTTLS with LineReceiver on both sides, pipelined
//! plaintext discarded, and an idle timeout below TLS.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use twistor_protocols::{IdleTimeout, LineControl, LineHandler, LineReceiver};
use twistor_reactor::testing::{MemoryPair, Recorder};
use twistor_reactor::{Reason, Transport};
use twistor_transports::tls::rustls::{ClientConfig, ServerConfig};
use twistor_transports::tls::{
    start_tls, ClientConfigBuilder, ServerConfigBuilder, TlsOptions, TlsProtocol, TlsRole,
};

fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let (server, fp) = ServerConfigBuilder::self_signed(&["localhost"]).unwrap();
    (server, ClientConfigBuilder::new().pinned(&fp).build().unwrap())
}

type Log = Rc<RefCell<Vec<String>>>;

struct Server {
    config: Arc<ServerConfig>,
    log: Log,
    lost: Rc<RefCell<Vec<Reason>>>,
}

impl LineHandler for Server {
    fn line_received(&mut self, c: &mut LineControl<'_>, line: &[u8]) {
        let line = String::from_utf8_lossy(line).into_owned();
        let secure = c.tls_info().is_some();
        self.log.borrow_mut().push(format!("{line} secure={secure}"));
        if line == "STARTTLS" && !secure {
            c.send_line(b"OK begin TLS");
            // Through the control: what was pipelined after this line is
            // dropped by the LineReceiver.
            start_tls(
                c,
                TlsRole::Server(self.config.clone()),
                TlsOptions::default(),
                |_, _| {},
            )
            .unwrap();
        } else {
            c.send_line(format!("echo: {line}").as_bytes());
        }
    }
    fn connection_lost(&mut self, _: &mut LineControl<'_>, reason: &Reason) {
        self.lost.borrow_mut().push(reason.clone());
    }
}

struct Client {
    config: Arc<ClientConfig>,
    log: Log,
}

impl LineHandler for Client {
    fn connection_made(&mut self, c: &mut LineControl<'_>) {
        // A pipelining attacker's injected command rides along.
        c.send_line(b"STARTTLS");
        c.send_line(b"INJECTED");
    }
    fn line_received(&mut self, c: &mut LineControl<'_>, line: &[u8]) {
        let line = String::from_utf8_lossy(line).into_owned();
        self.log.borrow_mut().push(line.clone());
        if line == "OK begin TLS" {
            let role = TlsRole::Client {
                config: self.config.clone(),
                server_name: "localhost".into(),
            };
            start_tls(c, role, TlsOptions::default(), |_, t| t.write(b"HELLO\r\n")).unwrap();
        }
    }
}

#[test]
fn starttls_with_line_receivers_discards_pipelined_plaintext() {
    let (sc, cc) = configs();
    let server_log: Log = Default::default();
    let client_log: Log = Default::default();
    let lost = Rc::new(RefCell::new(Vec::new()));
    let server = LineReceiver::new(Server {
        config: sc,
        log: server_log.clone(),
        lost: lost.clone(),
    });
    let client = LineReceiver::new(Client {
        config: cc,
        log: client_log.clone(),
    });
    let mut pair = MemoryPair::new(Box::new(client), Box::new(server)).unwrap();
    pair.pump();
    assert_eq!(
        *server_log.borrow(),
        ["STARTTLS secure=false", "HELLO secure=true"],
        "INJECTED was pipelined in plaintext and must never be interpreted"
    );
    assert_eq!(*client_log.borrow(), ["OK begin TLS", "echo: HELLO"]);
    pair.with_client(|_, t| t.lose_connection());
    assert!(pair.is_closed());
    assert!(lost.borrow()[0].is_clean(), "close_notify: {:?}", lost.borrow());
}

#[test]
fn idle_timeout_below_tls_closes_with_close_notify() {
    let (sc, cc) = configs();
    let lost = Rc::new(RefCell::new(Vec::new()));
    let app = IdleTimeout::new(
        LineReceiver::new(Server {
            config: sc.clone(),
            log: Default::default(),
            lost: lost.clone(),
        }),
        Duration::from_secs(30),
    );
    let server = TlsProtocol::server(Box::new(app), sc).unwrap();
    let (client, client_log) = Recorder::new();
    let client = TlsProtocol::client(Box::new(client), cc, "localhost").unwrap();
    let mut pair = MemoryPair::new(Box::new(client), Box::new(server)).unwrap();
    pair.pump();
    assert_eq!(client_log.borrow().made, 1, "handshake done");
    pair.advance(Duration::from_secs(20));
    pair.with_client(|_, t| t.write(b"ping\r\n"));
    assert_eq!(client_log.borrow().data, b"echo: ping\r\n");
    pair.advance(Duration::from_secs(29));
    assert!(!pair.is_closed(), "traffic at 20 s postponed the timeout");
    pair.advance(Duration::from_secs(1));
    assert!(pair.is_closed());
    assert!(
        matches!(lost.borrow()[..], [Reason::TimedOut]),
        "{:?}",
        lost.borrow()
    );
    // The client saw close_notify: an orderly end, not a truncation.
    assert_eq!(client_log.borrow().eofs, 1);
    assert!(
        client_log.borrow().lost[0].is_clean(),
        "{:?}",
        client_log.borrow().lost
    );
}
