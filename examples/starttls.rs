//! STARTTLS: a line protocol that starts in plaintext and upgrades the live
//! connection to TLS when the client says `STARTTLS` (as SMTP, IMAP and
//! XMPP do). Both sides are here.
//!
//! ```text
//! cargo run --example starttls server [PORT]   # default port 1234
//! cargo run --example starttls client [PORT]   # HELLO, STARTTLS, HELLO, QUIT
//! ```
//!
//! The server uses a freshly generated certificate (for localhost,
//! 127.0.0.1 and ::1) and prints its fingerprint; the client trusts it on
//! first use (an explicit opt-in). The client's exit status is 1 when the
//! connection failed.
//!
//! Security note: after `STARTTLS`, both sides drop whatever plaintext
//! they still hold. Interpreting bytes that arrived before the handshake as
//! if they came over TLS is the command-injection bug of CVE-2011-0411.
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use twistor::prelude::*;
use twistor::transports::tls::rustls::{ClientConfig, ServerConfig};
use twistor::transports::tls::{
    generate_self_signed, openssl_fingerprint, ClientConfigBuilder, TlsOptions, TlsRole, TofuStore,
    LOCAL_NAMES,
};

/// Split complete lines off `buf`.
fn next_line(buf: &mut Vec<u8>) -> Option<String> {
    let pos = buf.iter().position(|&b| b == b'\n')?;
    let line: Vec<u8> = buf.drain(..=pos).collect();
    Some(String::from_utf8_lossy(&line).trim_end().to_string())
}

struct Server {
    buf: Vec<u8>,
    config: Arc<ServerConfig>,
}

impl Protocol for Server {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        t.write(b"READY say STARTTLS to secure this connection\r\n");
    }

    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        self.buf.extend_from_slice(data);
        while let Some(line) = next_line(&mut self.buf) {
            let secure = t.tls_info().is_some();
            match line.as_str() {
                "STARTTLS" if !secure => {
                    t.write(b"OK begin TLS\r\n");
                    if let Err(e) = start_tls(
                        t,
                        TlsRole::Server(self.config.clone()),
                        TlsOptions::default(),
                        |_, t| println!("{}: now {}", t.peer(), t.tls_info().unwrap().version),
                    ) {
                        eprintln!("cannot start TLS: {e}");
                        t.lose_connection();
                    }
                    // Never interpret what followed the command in plaintext.
                    self.buf.clear();
                    return;
                }
                "QUIT" => {
                    t.write(b"BYE\r\n");
                    t.lose_connection();
                    return;
                }
                _ => {
                    let how = if secure { "over TLS" } else { "in plaintext" };
                    println!("{}: {line:?} {how}", t.peer());
                    t.write(format!("ECHO {line} ({how})\r\n").as_bytes());
                }
            }
        }
    }

    fn connection_lost(&mut self, t: &mut dyn Transport, reason: &Reason) {
        println!("{}: gone ({reason})", t.peer());
    }
}

struct Client {
    buf: Vec<u8>,
    config: Arc<ClientConfig>,
}

impl Protocol for Client {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        t.write(b"HELLO\r\nSTARTTLS\r\n");
    }

    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        self.buf.extend_from_slice(data);
        while let Some(line) = next_line(&mut self.buf) {
            println!("server: {line}");
            if line == "OK begin TLS" && t.tls_info().is_none() {
                let role = TlsRole::Client {
                    config: self.config.clone(),
                    server_name: "localhost".into(),
                };
                let started = start_tls(t, role, TlsOptions::default(), |_, t| {
                    let info = t.tls_info().unwrap();
                    println!("secured: {} {}", info.version, info.cipher_suite);
                    t.write(b"HELLO\r\nQUIT\r\n");
                });
                if let Err(e) = started {
                    eprintln!("cannot start TLS: {e}");
                    t.lose_connection();
                }
                self.buf.clear();
                return;
            }
        }
    }
}

struct ClientFactoryImpl {
    config: Arc<ClientConfig>,
    failed: Rc<Cell<bool>>,
}

impl Factory for ClientFactoryImpl {
    fn build_protocol(&mut self, _: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(Client {
            buf: Vec::new(),
            config: self.config.clone(),
        }))
    }
}

impl ClientFactory for ClientFactoryImpl {
    fn client_connection_failed(&mut self, r: &mut Reactor, _: &Connector, reason: &Reason) {
        println!("connection failed: {reason}");
        self.failed.set(true);
        r.stop();
    }
    fn client_connection_lost(&mut self, r: &mut Reactor, _: &Connector, reason: &Reason) {
        println!("connection closed: {reason}");
        r.stop();
    }
}

fn main() -> lab::Result {
    lab::init_logging();
    let mut args = lab::Args::new("server|client [PORT]");
    let mode = args.mode(&["server", "client"]);
    let port = args.port();
    let mut reactor = Reactor::new()?;
    if mode == "client" {
        let config = ClientConfigBuilder::new().tofu(TofuStore::in_memory()).build()?;
        let failed = Rc::new(Cell::new(false));
        let factory = ClientFactoryImpl {
            config,
            failed: failed.clone(),
        };
        connect_tcp(&mut reactor, "localhost", port, factory);
        reactor.run()?;
        if failed.get() {
            std::process::exit(1);
        }
        return Ok(());
    }
    let (config, fingerprint) = generate_self_signed(LOCAL_NAMES)?;
    let listening = listen_tcp(&mut reactor, port, move |_: &Address| Server {
        buf: Vec::new(),
        config: config.clone(),
    })?;
    println!("listening on TCP {} (STARTTLS)", listening.local_addr());
    println!("certificate SHA-256 {}", openssl_fingerprint(&fingerprint));
    Ok(reactor.run()?)
}
