//! Policies that refuse a client before TLS, over real loopback sockets:
//! wrapped around the application's factory and given to `listen_tls` (the
//! natural way to write it), a refused client still costs the server no
//! handshake. The client is a plain blocking socket in a thread that sends
//! a real ClientHello (made by rustls) and reads what comes back.

use std::cell::Cell;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use twistor_protocols::{Echo, LimitConnectionRate, LimitConnections, RateLimiter};
use twistor_reactor::{Address, Factory, Reactor};
use twistor_transports::tls::rustls::pki_types::ServerName;
use twistor_transports::tls::rustls::{ClientConfig, ClientConnection};
use twistor_transports::tls::{listen_tls, ClientConfigBuilder, ServerConfigBuilder};

const BOUND: Duration = Duration::from_secs(10);

/// What the server sent back to one ClientHello.
#[derive(Debug)]
enum Answer {
    /// The first bytes the server sent (a TLS record starts with its type).
    Bytes(Vec<u8>),
    /// End of stream or reset, with no byte at all.
    Closed,
}

/// Connects, sends a ClientHello, reads the first answer; the stream is
/// returned too so that an accepted connection can stay open.
fn hello(addr: SocketAddr, config: &Arc<ClientConfig>) -> (Answer, TcpStream) {
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = ClientConnection::new(config.clone(), name).unwrap();
    let mut client_hello = Vec::new();
    tls.write_tls(&mut client_hello).unwrap();
    assert_eq!(client_hello[0], 0x16, "a handshake record");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(BOUND)).unwrap();
    // The server may have closed already: a failed write is an answer too.
    let _ = s.write_all(&client_hello);
    let mut buf = [0u8; 5];
    let answer = match s.read(&mut buf) {
        Ok(0) => Answer::Closed,
        Ok(n) => Answer::Bytes(buf[..n].to_vec()),
        Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => Answer::Closed,
        Err(e) => panic!("no answer within {BOUND:?}: {e}"),
    };
    (answer, s)
}

/// Runs `factory` behind `listen_tls` and sends three ClientHellos, one
/// after another, keeping each connection open. Returns the answers.
fn three_clients(factory: impl Factory) -> Vec<Answer> {
    let (server_config, fp) = ServerConfigBuilder::self_signed(&["localhost"]).unwrap();
    let client_config = ClientConfigBuilder::new().pinned(&fp).build().unwrap();
    let mut r = Reactor::new().unwrap();
    let port = listen_tls(&mut r, "127.0.0.1:0", factory, server_config).unwrap();
    let addr = port.local_addr();
    let (tx, rx) = mpsc::channel();
    let remote = r.remote();
    let th = thread::spawn(move || {
        let mut open = Vec::new();
        let mut answers = Vec::new();
        for _ in 0..3 {
            let (a, s) = hello(addr, &client_config);
            answers.push(a);
            open.push(s);
        }
        tx.send(answers).unwrap();
        let _ = remote.call(|_| {});
    });
    let mut answers = None;
    assert!(r
        .run_until(BOUND, |_| {
            answers = answers.take().or_else(|| rx.try_recv().ok());
            answers.is_some()
        })
        .unwrap());
    th.join().unwrap();
    answers.unwrap()
}

fn is_server_hello(a: &Answer) -> bool {
    matches!(a, Answer::Bytes(b) if b.first() == Some(&0x16))
}

#[test]
fn a_rate_limited_client_costs_no_handshake() {
    // One connection per address, never refilled.
    let built = Rc::new(Cell::new(0));
    let b = built.clone();
    let app = move |_: &Address| {
        b.set(b.get() + 1);
        Echo
    };
    let answers = three_clients(LimitConnectionRate::new(app, RateLimiter::new(0.0, 1.0)));
    assert!(
        is_server_hello(&answers[0]),
        "the first client is served: {answers:?}"
    );
    for a in &answers[1..] {
        assert!(
            matches!(a, Answer::Closed),
            "a refused client must get no TLS byte (no ServerHello): {answers:?}"
        );
    }
    assert_eq!(built.get(), 1, "no protocol was built for a refused client");
}

#[test]
fn a_client_over_the_connection_limit_costs_no_handshake() {
    // The first connection is still open (its handshake is not even
    // finished): it holds the only slot.
    let answers = three_clients(LimitConnections::new(|_: &Address| Echo, 1));
    assert!(is_server_hello(&answers[0]), "{answers:?}");
    for a in &answers[1..] {
        assert!(matches!(a, Answer::Closed), "{answers:?}");
    }
}
