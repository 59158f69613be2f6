//! Bad input never panics the TLS layer: random bytes and mutated or cut
//! real ClientHellos sent to a server layer over the in-memory pair always
//! end in a clean close with a TLS or timeout reason (the fuzz target in
//! `fuzz/` does the same without bounds).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use twistor::reactor::testing::{MemoryPair, Recorder};
use twistor::reactor::{Protocol, Reason, Transport};
use twistor::transports::tls::rustls::{ClientConfig, ServerConfig};
use twistor::transports::tls::{
    ClientConfigBuilder, ServerConfigBuilder, TlsProtocol, DEFAULT_HANDSHAKE_TIMEOUT,
};

struct Echo;
impl Protocol for Echo {
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        t.write(d)
    }
}

fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    static C: OnceLock<(Arc<ServerConfig>, Arc<ClientConfig>)> = OnceLock::new();
    C.get_or_init(|| {
        let (s, fp) = ServerConfigBuilder::self_signed(&["localhost"]).unwrap();
        (s, ClientConfigBuilder::new().pinned(&fp).build().unwrap())
    })
    .clone()
}

/// A real ClientHello, captured from a client layer.
fn client_hello() -> Vec<u8> {
    let (_, cc) = configs();
    let client = TlsProtocol::client(Box::new(Recorder::new().0), cc, "localhost").unwrap();
    let (server, log) = Recorder::new();
    let mut pair = MemoryPair::new(Box::new(client), Box::new(server)).unwrap();
    pair.pump();
    let hello = log.borrow().data.clone();
    assert_eq!(hello[0], 22, "not a handshake record");
    hello
}

/// Send `chunks` to a server layer; return why it closed.
fn feed(chunks: &[&[u8]]) -> Option<Reason> {
    let (sc, _) = configs();
    let reason = Rc::new(RefCell::new(None));
    let r = reason.clone();
    let server = TlsProtocol::server(Box::new(Echo), sc)
        .unwrap()
        .with_failure_hook(move |why| *r.borrow_mut() = Some(why.clone()));
    let mut pair = MemoryPair::new(Box::new(Recorder::new().0), Box::new(server)).unwrap();
    for c in chunks {
        pair.inject_to_server(c);
        pair.pump();
    }
    pair.advance(DEFAULT_HANDSHAKE_TIMEOUT);
    assert!(
        !pair.reactor.contains(pair.server),
        "still open after the handshake timeout"
    );
    let why = reason.borrow().clone();
    why
}

fn assert_clean_failure(why: Option<Reason>) {
    match why {
        Some(Reason::Tls(_)) | Some(Reason::TimedOut) => {}
        other => panic!("expected a TLS or timeout reason, got {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(data in proptest::collection::vec(any::<u8>(), 0..4096), cut in any::<usize>()) {
        let cut = cut % (data.len() + 1);
        assert_clean_failure(feed(&[&data[..cut], &data[cut..]]));
    }

    #[test]
    fn mutated_client_hello(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        let mut hello = client_hello();
        for (pos, val) in flips {
            let n = hello.len();
            hello[pos % n] = val;
        }
        let cut = cut % (hello.len() + 1);
        assert_clean_failure(feed(&[&hello[..cut], &hello[cut..]]));
    }

    #[test]
    fn client_hello_then_garbage(tail in proptest::collection::vec(any::<u8>(), 1..2048)) {
        let hello = client_hello();
        assert_clean_failure(feed(&[&hello, &tail]));
    }
}
