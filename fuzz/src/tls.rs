//! The server side of the TLS layer (`TlsProtocol::server`) over the
//! in-memory pair, fed arbitrary bytes as if from a client.
//!
//! The input is: a configuration byte (which server configuration: plain;
//! SNI certificates, ALPN and "any client certificate"; optional client
//! certificates from a CA; SNI certificates only, no default), chunk sizes
//! ([`chunk_sizes`](crate::input::chunk_sizes)), then the bytes, delivered
//! chunk by chunk with the pair pumped in between.
//!
//! Checked, for every input:
//! - nothing panics (libfuzzer-sys aborts on a panic even where the
//!   stream machinery would catch it);
//! - what the server sends back stays small (its first flight and an
//!   alert, never an amount that grows with the input);
//! - the application never hears of the connection: no handshake can
//!   complete with no real client answering, so neither its
//!   `connection_made` nor its `connection_lost` runs;
//! - the handshake timeout closes the connection, both ends end, and the
//!   failure hook gets a reason that is not a panic.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};

use twistor_reactor::testing::{MemoryPair, Recorder};
use twistor_reactor::Reason;
use twistor_transports::tls::rustls::ServerConfig;
use twistor_transports::tls::{
    generate_self_signed_cert, ClientAuth, ServerConfigBuilder, TlsProtocol, DEFAULT_HANDSHAKE_TIMEOUT,
};

use crate::input::{chunk_sizes, split, Input};

/// The most the server may send in reply to one input.
pub const MAX_REPLY: usize = 64 * 1024;

fn configs() -> &'static [Arc<ServerConfig>; 4] {
    static CONFIGS: OnceLock<[Arc<ServerConfig>; 4]> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let cert = |name: &str| generate_self_signed_cert(&[name]).expect("a certificate");
        let alpn: &[&[u8]] = &[b"gemini", b"http/1.1"];
        let plain = ServerConfigBuilder::self_signed(&["localhost"])
            .expect("config")
            .0;
        let (d, dk) = cert("localhost");
        let (a, ak) = cert("a.example");
        let (b, bk) = cert("b.example");
        let sni_any = ServerConfigBuilder::new()
            .cert(d.clone(), dk.clone_key())
            .and_then(|s| s.sni_cert("a.example", a.clone(), ak.clone_key()))
            .and_then(|s| s.sni_cert("b.example", b.clone(), bk.clone_key()))
            .expect("certificates")
            .alpn(alpn)
            .client_auth(ClientAuth::Any)
            .build()
            .expect("config");
        let (ca, _) = cert("a test CA");
        let optional = ServerConfigBuilder::new()
            .cert(d, dk)
            .expect("certificate")
            .alpn(alpn)
            .client_auth(ClientAuth::Optional(ca))
            .build()
            .expect("config");
        let sni_only = ServerConfigBuilder::new()
            .sni_cert("a.example", a, ak)
            .and_then(|s| s.sni_cert("b.example", b, bk))
            .expect("certificates")
            .build()
            .expect("config");
        [plain, sni_any, optional, sni_only]
    })
}

/// The fuzz target's body.
pub fn run(data: &[u8]) {
    let mut inp = Input::new(data);
    let config = configs()[usize::from(inp.byte() % 4)].clone();
    let sizes = chunk_sizes(&mut inp);
    let bytes = inp.rest();

    let failure = Rc::new(RefCell::new(None));
    let f = failure.clone();
    let (app, app_log) = Recorder::new();
    let server = TlsProtocol::server(Box::new(app), config)
        .expect("the layer")
        .with_failure_hook(move |why| *f.borrow_mut() = Some(why.clone()));
    let (client, client_log) = Recorder::new();
    let mut pair = MemoryPair::new(Box::new(client), Box::new(server)).expect("the pair");
    // The connection is made (and the handshake timer armed) on the first
    // turn, before any byte arrives.
    pair.pump();
    for chunk in split(bytes, &sizes) {
        pair.inject_to_server(chunk);
        pair.pump();
        let reply = client_log.borrow().data.len();
        assert!(reply <= MAX_REPLY, "the server sent {reply} bytes");
    }
    pair.advance(DEFAULT_HANDSHAKE_TIMEOUT);
    assert!(
        !pair.reactor.contains(pair.server),
        "server still open after the handshake timeout"
    );
    assert!(pair.is_closed(), "the client end did not see the close");
    let app = app_log.borrow();
    assert_eq!((app.made, app.lost.len(), app.data.len()), (0, 0, 0), "{app:?}");
    let why = failure.borrow().clone();
    assert!(!matches!(why, Some(Reason::Panic(_)) | None), "{why:?}");
}
