//! Regressions found by the `udp_port` fuzz target (fuzz/src/udp.rs), each
//! reduced to a plain test over real loopback sockets.

use std::cell::RefCell;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::rc::Rc;
use std::time::Duration;

use twistor_reactor::{DatagramProtocol, DatagramTransport, Reactor};
use twistor_transports::udp::{listen_udp_with, UdpOptions};

const WAIT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Datagram(SocketAddr, Vec<u8>),
    Error(io::ErrorKind),
}

/// Connects the socket to the sender of a datagram that says "connect";
/// records everything.
struct ConnectOnAsk(Rc<RefCell<Vec<Seen>>>);

impl DatagramProtocol for ConnectOnAsk {
    fn datagram_received(&mut self, t: &mut dyn DatagramTransport, data: &[u8], from: SocketAddr) {
        self.0.borrow_mut().push(Seen::Datagram(from, data.to_vec()));
        if data == b"connect" {
            t.connect(from).unwrap();
        }
    }
    fn error_received(&mut self, _: &mut dyn DatagramTransport, err: &io::Error) {
        self.0.borrow_mut().push(Seen::Error(err.kind()));
    }
}

/// Found by the fuzzer: once a socket is connected, a datagram from any
/// other address is dropped, whatever its size. One that was already
/// queued when the socket connected, and is larger than the maximum, was
/// reported to `error_received` as `InvalidData` instead.
#[test]
fn a_connected_socket_hears_nothing_of_an_oversized_datagram_from_another_peer() {
    let mut r = Reactor::new().unwrap();
    let seen = Rc::new(RefCell::new(Vec::new()));
    let opts = UdpOptions {
        max_datagram: 16,
        ..UdpOptions::default()
    };
    let port = listen_udp_with(&mut r, "127.0.0.1:0", ConnectOnAsk(seen.clone()), opts).unwrap();
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let a_addr = a.local_addr().unwrap();
    // All three are queued before the port reads any: B's oversized
    // datagram is behind A's "connect" and ahead of A's "last".
    a.send_to(b"connect", port.local_addr()).unwrap();
    b.send_to(&[b'x'; 32], port.local_addr()).unwrap();
    a.send_to(b"last", port.local_addr()).unwrap();
    let done = r
        .run_until(WAIT, |_| {
            seen.borrow()
                .iter()
                .any(|s| *s == Seen::Datagram(a_addr, b"last".to_vec()))
        })
        .unwrap();
    assert!(done, "A's datagrams did not arrive: {:?}", seen.borrow());
    assert_eq!(
        *seen.borrow(),
        [
            Seen::Datagram(a_addr, b"connect".to_vec()),
            Seen::Datagram(a_addr, b"last".to_vec()),
        ]
    );
}
