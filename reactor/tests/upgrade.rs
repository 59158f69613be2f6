//! `Transport::upgrade` under the stream machinery: what the old protocol
//! writes (and a close it asks for) after asking for the swap, in the same
//! callback, is the new protocol's to carry out (so a TLS layer encrypts
//! it), and order is kept.

use twistor_reactor::testing::{MemoryPair, Recorder};
use twistor_reactor::{Protocol, ProtocolCall, Transport};

/// Writes around its own replacement by a protocol that tags what it sends.
struct Old;
impl Protocol for Old {
    fn data_received(&mut self, t: &mut dyn Transport, _: &[u8]) {
        t.write(b"before ");
        t.upgrade(Box::new(|_old, _t| Box::new(Tagging)));
        t.write(b"after");
        t.lose_connection();
        assert!(t.is_closing());
    }
}

/// Routes every call to itself and tags what is written through it.
struct Tagging;
impl Protocol for Tagging {
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    fn route_call(&mut self, t: &mut dyn Transport, call: ProtocolCall) -> Option<ProtocolCall> {
        t.write(b"[new]");
        Some(call)
    }
}

#[test]
fn writes_and_close_after_upgrade_go_through_the_new_protocol_in_order() {
    let (client, log) = Recorder::new();
    let mut pair = MemoryPair::new(Box::new(client), Box::new(Old)).unwrap();
    pair.inject_to_server(b"go");
    pair.pump();
    assert_eq!(String::from_utf8_lossy(&log.borrow().data), "before [new]after");
    assert!(pair.is_closed());
    assert!(log.borrow().lost[0].is_clean());
}
