//! The lab's SSL echo client: says hello over TLS, prints the answer, and
//! stops the reactor whether the connection failed or ended. Exit status 1
//! when it failed.
//!
//! ```text
//! cargo run --example echo_tls_client [PORT]                     # localhost:1234
//! cargo run --example echo_tls_client -- --trust FILE [PORT]     # trust this certificate
//! cargo run --example echo_tls_client -- --pin SHA256 [PORT]     # or this fingerprint
//! ```
//!
//! Whom it trusts: the certificate in `--trust FILE` or with the SHA-256
//! fingerprint `--pin` gives (`AB:CD:...` as openssl prints it, or plain
//! hex); else the lab's `domain.crt` when the working directory has it;
//! else the authorities the system trusts. A certificate refused is
//! explained: which one the server showed, what was expected, what to do.
use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;

use twistor::prelude::*;
use twistor::transports::tls::ClientConfigBuilder;

struct EchoClient;

impl Protocol for EchoClient {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        transport.write(b"Hello, world!");
    }

    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        println!("Server said: {}", String::from_utf8_lossy(data));
        transport.lose_connection();
    }
}

struct EchoFactory {
    failed: Rc<Cell<bool>>,
}

impl Factory for EchoFactory {
    fn build_protocol(&mut self, _addr: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(EchoClient))
    }
}

impl ClientFactory for EchoFactory {
    fn client_connection_failed(&mut self, reactor: &mut Reactor, _: &Connector, reason: &Reason) {
        println!("Connection failed: {reason}");
        if matches!(reason, Reason::Tls(m) if m.contains("certificate")) {
            println!("{WHAT_TO_DO}");
        }
        self.failed.set(true);
        reactor.stop();
    }

    fn client_connection_lost(&mut self, reactor: &mut Reactor, _: &Connector, reason: &Reason) {
        println!("Connection lost: {reason}");
        self.failed.set(!reason.is_clean());
        reactor.stop();
    }
}

const WHAT_TO_DO: &str = "\
If this is the server you meant, tell this client to trust its certificate:
  by its file:         cargo run --example echo_tls_client -- --trust domain.crt
                       (twistor echo --tls logs the file it wrote: certificate written to ...)
  by its fingerprint:  cargo run --example echo_tls_client -- --pin AB:CD:...
                       (the SHA-256 above; openssl x509 -noout -fingerprint -sha256 -in FILE shows it)";

fn main() -> lab::Result {
    lab::init_logging();
    let mut args = lab::Args::new("[--trust FILE] [--pin SHA256] [PORT]");
    let (trust, pin) = (args.option("--trust"), args.option("--pin"));
    let port = args.port();
    let mut config = ClientConfigBuilder::new(); // the system's authorities
    if let Some(fingerprint) = &pin {
        config = config.pinned(fingerprint);
    }
    match trust {
        Some(file) => config = config.trust_cert_file(file)?,
        None if pin.is_none() && Path::new("domain.crt").exists() => {
            config = config.trust_cert_file("domain.crt")?; // the lab's certificate
        }
        None => {}
    }
    let failed = Rc::new(Cell::new(false));
    let mut reactor = Reactor::new()?;
    let factory = EchoFactory {
        failed: failed.clone(),
    };
    connect_tls(&mut reactor, "localhost", port, factory, config.build()?);
    reactor.run()?;
    if failed.get() {
        std::process::exit(1);
    }
    Ok(())
}
