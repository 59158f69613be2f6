//! The stop sequence's exactly-once promise at the shutdown deadline: a
//! connection that a `connection_lost` opens while the others are being
//! aborted is made and lost like every other, never silently dropped.

use std::cell::Cell;
use std::io::{self, IoSlice};
use std::rc::Rc;
use std::time::Duration;

use mio::{Interest, Registry, Token};
use twistor_reactor::{open_stream, Address, Protocol, Reactor, Reason, StreamIo, StreamOptions, Transport};

/// A peer that never reads and never sends: output stays buffered for ever.
struct Stuck;

impl StreamIo for Stuck {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
    fn write_vectored(&mut self, _: &[IoSlice<'_>]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
    fn shutdown_write(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn register(&mut self, _: &Registry, _: Token, _: Interest) -> io::Result<()> {
        Ok(())
    }
    fn reregister(&mut self, _: &Registry, _: Token, _: Interest) -> io::Result<()> {
        Ok(())
    }
    fn deregister(&mut self, _: &Registry) -> io::Result<()> {
        Ok(())
    }
    fn peer(&self) -> Address {
        Address::Memory("stuck".into())
    }
    fn host(&self) -> Address {
        Address::Memory("here".into())
    }
}

#[derive(Default)]
struct Tally {
    made: Cell<usize>,
    lost: Cell<usize>,
}

/// Writes on connecting (so a graceful close never finishes); when lost,
/// opens one more such connection if `respawn` says so.
struct Writer {
    tally: Rc<Tally>,
    respawn: bool,
}

impl Protocol for Writer {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.tally.made.set(self.tally.made.get() + 1);
        t.write(b"never delivered");
    }
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    fn connection_lost(&mut self, t: &mut dyn Transport, _: &Reason) {
        self.tally.lost.set(self.tally.lost.get() + 1);
        if self.respawn {
            let proto = Box::new(Writer {
                tally: self.tally.clone(),
                respawn: false,
            });
            open_stream(t.reactor(), Stuck, proto, StreamOptions::default()).unwrap();
        }
    }
}

#[test]
fn a_connection_opened_while_the_deadline_aborts_the_rest_is_lost_too() {
    let mut r = Reactor::new().unwrap();
    r.set_install_signal_handlers(false);
    r.set_shutdown_timeout(Duration::from_millis(100));
    let tally = Rc::new(Tally::default());
    let proto = Box::new(Writer {
        tally: tally.clone(),
        respawn: true,
    });
    open_stream(&mut r, Stuck, proto, StreamOptions::default()).unwrap();
    r.call_later(Duration::ZERO, |r| r.stop());
    r.run().unwrap();
    assert_eq!(tally.made.get(), 2, "both connections were made");
    assert_eq!(tally.lost.get(), 2, "every connection made is lost exactly once");
    assert_eq!(r.handler_count(), 0);
}
