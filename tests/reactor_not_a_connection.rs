//! `call_on`, `write_to` and `close` through an id that names a live
//! source without a protocol (a TCP listener, a UDP port) say so with an
//! error, instead of returning `Ok` and doing nothing.

mod common;

use std::net::SocketAddr;

use twistor::prelude::*;
use twistor::reactor::CallError;

struct Quiet;
impl Protocol for Quiet {
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
}

struct Deaf;
impl DatagramProtocol for Deaf {
    fn datagram_received(&mut self, _: &mut dyn DatagramTransport, _: &[u8], _: SocketAddr) {}
}

#[test]
fn a_listener_or_a_udp_port_id_is_not_a_connection() {
    let mut r = common::reactor();
    let tcp = listen_tcp(&mut r, "127.0.0.1:0", |_: &Address| Quiet)
        .unwrap()
        .id();
    let udp = listen_udp(&mut r, "127.0.0.1:0", Deaf).unwrap().id();
    for id in [tcp, udp] {
        assert_eq!(r.close(id), Err(CallError::NotAConnection));
        assert_eq!(r.write_to(id, b"x".to_vec()), Err(CallError::NotAConnection));
        assert_eq!(
            r.call_on(id, |_, t| t.write(b"x")),
            Err(CallError::NotAConnection)
        );
        let e = r.close(id).unwrap_err();
        assert!(e.to_string().contains("not a connection"), "{e}");
        // Still there: nothing was closed.
        assert!(r.contains(id));
    }
    // A stale id is still just gone.
    r.remove(tcp);
    assert_eq!(r.close(tcp), Err(CallError::Gone));
    assert_eq!(r.close(tcp).unwrap_err(), twistor::Gone);
}
