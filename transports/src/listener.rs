//! The accept loop every stream listener shares (TCP and Unix sockets):
//! accept until `WouldBlock` under a per-event budget, build a protocol per
//! connection, cap the number of live connections, and ride out descriptor
//! exhaustion without spinning or dying.
//!
//! The budget is the fairness rule reads follow (invariant 3), applied to
//! accepts: a readiness event accepts until `WouldBlock` or until
//! [`DEFAULT_ACCEPT_BUDGET`] connections, and a listener stopped by its
//! budget is requeued behind every other handler ready in that turn, as a
//! connection stopped by its read budget is. A connection flood cannot
//! starve the connections already open.

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use twistor_reactor::{
    catch_panic, open_stream_now, Address, ConnId, Factory, Handler, LostHook, Reactor, Ready, StreamIo,
};

use crate::sock::Knobs;

/// Default listen backlog.
pub const DEFAULT_BACKLOG: i32 = 1024;

/// Default number of connections accepted per readiness event before the
/// other handlers get a turn (the knob: `ListenOptions::accept_budget`).
pub const DEFAULT_ACCEPT_BUDGET: usize = 128;

/// How long accepting pauses after the process ran out of descriptors.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A listening socket that yields connected streams.
pub(crate) trait Acceptor: 'static {
    type Stream: StreamIo;
    /// Accept one connection (non-blocking).
    fn accept(&mut self) -> io::Result<(Self::Stream, Address)>;
    /// Deregister from the poller.
    fn deregister(&mut self, r: &Reactor);
}

/// A listener's settings: its limits, and the limits it hands to every
/// stream it accepts.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Accepted {
    pub max_connections: Option<usize>,
    /// Connections accepted per readiness event (at least one).
    pub accept_budget: usize,
    pub knobs: Knobs,
}

pub(crate) struct Listener<A: Acceptor> {
    acceptor: A,
    factory: Box<dyn Factory>,
    settings: Accepted,
    live: Rc<Cell<usize>>,
    /// Accepting is paused after EMFILE/ENFILE until a timer resumes it.
    paused: Rc<Cell<bool>>,
    /// Connections refused over `max_connections` since the last log line.
    refused: u64,
    /// Inside a descriptor-exhaustion episode (logged once, at its start).
    exhausted: bool,
    what: String,
}

impl<A: Acceptor> Listener<A> {
    pub(crate) fn new(acceptor: A, factory: Box<dyn Factory>, settings: Accepted, what: String) -> Self {
        Listener {
            acceptor,
            factory,
            settings,
            live: Rc::new(Cell::new(0)),
            paused: Rc::new(Cell::new(false)),
            refused: 0,
            exhausted: false,
            what,
        }
    }

    fn serve(&mut self, r: &mut Reactor, stream: A::Stream, addr: Address) {
        if let Some(max) = self.settings.max_connections {
            if self.live.get() >= max {
                self.refused += 1;
                if self.refused.is_power_of_two() {
                    log::warn!(
                        "{}: connection limit ({max}) reached; closed {} new connection(s) so far",
                        self.what,
                        self.refused
                    );
                }
                return; // dropping the stream closes it
            }
        }
        let factory = &mut self.factory;
        let built = catch_panic(format_args!("{}: build_protocol for {addr}", self.what), || {
            factory.build_protocol(&addr)
        });
        let proto = match built {
            Ok(Some(p)) => p,
            Ok(None) => {
                log::debug!("{}: factory refused {addr}", self.what);
                return;
            }
            // Logged; dropping the stream closes it.
            Err(_) => return,
        };
        let live = self.live.clone();
        live.set(live.get() + 1);
        let on_lost: LostHook = Box::new(move |_, _| live.set(live.get() - 1));
        let opts = self.settings.knobs.stream_options(Some(on_lost));
        match open_stream_now(r, stream, proto, opts) {
            // connection_made now, as Twisted does inside its accept loop.
            Ok(_) => {}
            Err(e) => {
                // open_stream dropped the options, and with them the hook.
                self.live.set(self.live.get().saturating_sub(1));
                log::warn!("{}: cannot register a connection from {addr}: {e}", self.what);
            }
        }
    }
}

/// Errors that mean "out of resources": back off instead of retrying hot.
fn is_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}

impl<A: Acceptor> Handler for Listener<A> {
    fn ready(&mut self, r: &mut Reactor, id: ConnId, _: Ready) {
        if self.paused.get() {
            return;
        }
        for _ in 0..self.settings.accept_budget.max(1) {
            match self.acceptor.accept() {
                Ok((stream, addr)) => {
                    if self.exhausted {
                        self.exhausted = false;
                        log::info!("{}: accepting again", self.what);
                    }
                    self.serve(r, stream, addr);
                    if !r.contains(id) {
                        // The new protocol stopped this listener.
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if is_exhaustion(&e) => {
                    // The pending connection stays in the backlog; try again
                    // after a pause rather than spinning on a full table.
                    // Logged once per episode: the retries would flood the log.
                    if self.exhausted {
                        log::debug!("{}: accept failed again: {e}", self.what);
                    } else {
                        self.exhausted = true;
                        log::warn!(
                            "{}: accept failed: {e}; retrying every {} ms until it clears",
                            self.what,
                            ACCEPT_BACKOFF.as_millis()
                        );
                    }
                    self.paused.set(true);
                    let paused = self.paused.clone();
                    r.call_later(ACCEPT_BACKOFF, move |r| {
                        paused.set(false);
                        r.requeue(id, Ready::READABLE);
                    });
                    return;
                }
                Err(e) => {
                    // ECONNABORTED, EPROTO, EPERM (firewall)...: that one
                    // connection is gone, the listener is fine.
                    log::debug!("{}: accept error: {e}", self.what);
                }
            }
        }
        r.requeue(id, Ready::READABLE);
    }

    fn shutdown(&mut self, r: &mut Reactor, id: ConnId) {
        self.acceptor.deregister(r);
        r.remove(id);
    }

    fn holds_shutdown(&self) -> bool {
        false
    }
}
