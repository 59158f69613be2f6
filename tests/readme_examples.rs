//! The README's "Writing your own protocol" example, as written there, run
//! both ways the README shows: by hand with a StringTransport, and over a
//! MemoryPair on the manual clock.

use std::time::Duration;

use twistor::prelude::*;
use twistor::testing::{MemoryPair, Recorder, StringTransport};

/// Greets, then closes connections that stay silent for 10 seconds.
struct Greeter {
    idle: Option<DelayedCall>,
}

impl Protocol for Greeter {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        t.write(b"hello\r\n");
        let id = t.id();
        self.idle = Some(t.reactor().call_later(Duration::from_secs(10), move |r| {
            let _ = r.close(id);
        }));
    }

    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        if let Some(call) = self.idle {
            call.reset(t.reactor(), Duration::from_secs(10));
        }
        t.write(data);
    }

    fn connection_lost(&mut self, t: &mut dyn Transport, _reason: &Reason) {
        if let Some(call) = self.idle.take() {
            call.cancel(t.reactor());
        }
    }
}

#[test]
fn greeter_by_hand_with_a_string_transport() {
    let mut t = StringTransport::new();
    let mut p = Greeter { idle: None };
    p.connection_made(&mut t);
    assert_eq!(t.value(), b"hello\r\n");
}

#[test]
fn greeter_times_out_on_the_manual_clock() {
    let (client, log) = Recorder::new();
    let mut pair = MemoryPair::new(Box::new(client), Box::new(Greeter { idle: None })).unwrap();
    pair.pump();
    assert_eq!(log.borrow().data, b"hello\r\n");
    // Traffic resets the timer...
    pair.advance(Duration::from_secs(9));
    pair.with_client(|_, t| t.write(b"still here\r\n"));
    pair.advance(Duration::from_secs(9));
    assert!(!pair.is_closed());
    assert_eq!(log.borrow().data, b"hello\r\nstill here\r\n");
    // ...and silence closes.
    pair.advance(Duration::from_secs(2));
    assert!(pair.is_closed());
    assert_eq!(log.borrow().lost.len(), 1);
}
