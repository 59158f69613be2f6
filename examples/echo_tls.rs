//! The lab's SSL echo server: the TCP echo with TLS below it.
//!
//! ```text
//! openssl req -newkey rsa:2048 -keyout domain.key -x509 -days 365 -out domain.crt
//! cargo run --example echo_tls [PORT]      # port 1234; type the PEM pass phrase
//! openssl s_client -connect localhost:1234
//! ```
//!
//! `default_server_config` loads `domain.crt` and `domain.key` from the
//! working directory, asks for the key's passphrase if it is encrypted
//! (without echo; or reads it from the file named by
//! `TWISTOR_PASSPHRASE_FILE`), and says which file is missing and how to
//! make it.
use twistor::prelude::*;
use twistor::transports::tls::default_server_config;

struct Echo;

impl Protocol for Echo {
    fn data_received(&mut self, transport: &mut dyn Transport, data: &[u8]) {
        transport.write(data);
    }
}

fn main() -> lab::Result {
    lab::init_logging();
    let port = lab::Args::new("[PORT]").port();
    let config = default_server_config("domain.crt", "domain.key")?;
    let mut reactor = Reactor::new()?;
    let listening = listen_tls(&mut reactor, port, |_: &Address| Echo, config)?;
    println!("listening on TLS {}", listening.local_addr());
    Ok(reactor.run()?)
}
