//! The lab's SSL echo server: the TCP echo with TLS below it.
//!
//! Loads `domain.crt` and `domain.key` from the working directory and asks
//! for the key's passphrase if it is encrypted (or reads it from the file
//! named by `TWISTOR_PASSPHRASE_FILE`).
//!
//! ```text
//! openssl req -newkey rsa:2048 -keyout domain.key -x509 -days 365 -out domain.crt
//! cargo run --example echo_tls             # port 1234; type the PEM pass phrase
//! openssl s_client -connect localhost:1234
//! ```
use twistor::prelude::*;
use twistor::transports::tls::{is_encrypted_key, listen_tls, load_server_config, Passphrase};

struct Echo;

impl Protocol for Echo {
    fn connection_made(&mut self, transport: &mut dyn Transport) {
        if let Some(info) = transport.tls_info() {
            println!(
                "{} connected: {} {}",
                transport.peer(),
                info.version,
                info.cipher_suite
            );
        }
    }

    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        println!("received {:?}", String::from_utf8_lossy(data));
        transport.write(data);
    }
}

fn main() -> std::io::Result<()> {
    env_logger::init();
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(1234);
    let (cert, key) = ("domain.crt", "domain.key");
    if !std::path::Path::new(cert).exists() || !std::path::Path::new(key).exists() {
        eprintln!(
            "{cert} and {key} are needed in the working directory; make them with\n  \
             openssl req -newkey rsa:2048 -keyout {key} -x509 -days 365 -out {cert}"
        );
        std::process::exit(2);
    }
    let passphrase = match std::env::var_os("TWISTOR_PASSPHRASE_FILE") {
        Some(f) => Passphrase::File(f.into()),
        None if is_encrypted_key(&std::fs::read(key)?) => Passphrase::Prompt,
        None => Passphrase::None,
    };
    let config = match load_server_config(cert, key, &passphrase) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot load the certificate: {e}");
            std::process::exit(1);
        }
    };
    let mut reactor = Reactor::new()?;
    let port = listen_tls(&mut reactor, port, |_: &Address| Echo, config)?;
    println!("TLS echo on port {}", port.port());
    reactor.run()
}
