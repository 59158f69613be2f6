//! Feeds arbitrary bytes to the server side of the TLS layer over the
//! in-memory pair: whatever arrives, the layer must not panic, must close
//! the connection cleanly when the input is bad, and must do it within the
//! handshake timeout.
//!
//! ```text
//! cargo install cargo-fuzz
//! cd fuzz && cargo +nightly fuzz run tls_server
//! ```
#![no_main]

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use twistor_reactor::testing::{MemoryPair, Recorder};
use twistor_reactor::{Protocol, Reason, Transport};
use twistor_transports::tls::rustls::ServerConfig;
use twistor_transports::tls::{ServerConfigBuilder, TlsProtocol, DEFAULT_HANDSHAKE_TIMEOUT};

struct Echo;
impl Protocol for Echo {
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        t.write(d)
    }
}

fn config() -> Arc<ServerConfig> {
    static CONFIG: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| ServerConfigBuilder::self_signed(&["localhost"]).expect("config").0)
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let reason = Rc::new(RefCell::new(None));
    let r = reason.clone();
    let server = TlsProtocol::server(Box::new(Echo), config())
        .expect("layer")
        .with_failure_hook(move |why| *r.borrow_mut() = Some(why.clone()));
    let (client, _log) = Recorder::new();
    let mut pair = MemoryPair::new(Box::new(client), Box::new(server)).expect("pair");
    // Two deliveries, so both whole and split records are seen.
    let cut = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    pair.inject_to_server(&data[..cut]);
    pair.pump();
    pair.inject_to_server(&data[cut..]);
    pair.pump();
    pair.advance(DEFAULT_HANDSHAKE_TIMEOUT);
    // Nothing valid can finish a handshake with no one answering the
    // server: the timeout must have closed it.
    assert!(!pair.reactor.contains(pair.server), "server still open after the handshake timeout");
    // A panic inside the layer would be caught by the stream machinery and
    // reported as the reason: that is a bug too.
    let why = reason.borrow().clone();
    assert!(!matches!(why, Some(Reason::Panic(_)) | None), "{why:?}");
});
