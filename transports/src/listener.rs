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
//!
//! With the PROXY protocol on, a connection is not given to the factory
//! when it is accepted but when its header has been read (`proxy::accept`),
//! so the factory sees the client's address; it counts against the
//! connection limit from the moment it is accepted. What turns a stream
//! into a running connection ([`Serving`]) is shared by the listener and
//! its connections still reading a header.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::time::Duration;

use twistor_reactor::{
    catch_panic, open_stream_now, Address, ConnId, Factory, Handler, LostHook, Reactor, Ready,
};

use crate::proxy::accept::{read_header, PeekStream};
use crate::proxy::options::Admit;
use crate::proxy::ProxyOptions;
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
    type Stream: PeekStream;
    /// Accept one connection (non-blocking).
    fn accept(&mut self) -> io::Result<(Self::Stream, Address)>;
    /// Deregister from the poller.
    fn deregister(&mut self, r: &Reactor);
}

/// A listener's settings: its limits, and the limits it hands to every
/// stream it accepts.
#[derive(Debug, Clone, Default)]
pub(crate) struct Accepted {
    pub max_connections: Option<usize>,
    /// Connections accepted per readiness event (at least one).
    pub accept_budget: usize,
    pub knobs: Knobs,
    /// Whether connections open with a PROXY header.
    pub proxy: ProxyOptions,
}

/// One connection's place in its listener's count of live connections:
/// taken when the connection is accepted, given back when this is dropped
/// (with the connection's lost hook, or with the connection itself if it
/// never got a protocol). The count cannot drift: there is no other way
/// to change it.
pub(crate) struct Slot(Rc<Cell<usize>>);

impl Slot {
    fn take(live: &Rc<Cell<usize>>) -> Slot {
        live.set(live.get() + 1);
        Slot(live.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// What turns an accepted stream into a running connection: the factory
/// and the limits every connection gets. Shared by the listener and its
/// connections still reading a PROXY header, which finish even if the
/// listener stops meanwhile, as connections already accepted do.
pub(crate) struct Serving {
    /// Borrowed only around `build_protocol`, which cannot reach the
    /// reactor and so cannot re-enter.
    factory: RefCell<Box<dyn Factory>>,
    knobs: Knobs,
    pub(crate) proxy: ProxyOptions,
    pub(crate) what: String,
    /// Connections closed over their PROXY header since the listener began.
    bad_headers: Cell<u64>,
}

impl Serving {
    /// Build the protocol for a connection from `addr` and run it over
    /// `stream`; `connection_made` runs before this returns. A refusal
    /// from the factory (or its panic, logged) closes the stream.
    pub(crate) fn start<S: PeekStream>(&self, r: &mut Reactor, stream: S, addr: &Address, slot: Slot) {
        let built = catch_panic(format_args!("{}: build_protocol for {addr}", self.what), || {
            self.factory.borrow_mut().build_protocol(addr)
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
        let on_lost: LostHook = Box::new(move |_, _| drop(slot));
        let opts = self.knobs.stream_options(Some(on_lost));
        match open_stream_now(r, stream, proto, opts) {
            // connection_made has run: as Twisted does, inside the accept loop.
            Ok(_) => {}
            // open_stream dropped the options, the hook and so the slot.
            Err(e) => log::warn!("{}: cannot register a connection from {addr}: {e}", self.what),
        }
    }

    /// Note a connection from `addr` closed over its PROXY header: each
    /// one at debug level, and a warning when the count reaches a power of
    /// two (a flood of them cannot flood the log).
    pub(crate) fn refused(&self, addr: &Address, why: &dyn std::fmt::Display) {
        let n = self.bad_headers.get() + 1;
        self.bad_headers.set(n);
        log::debug!("{}: closed {addr}: {why}", self.what);
        if n.is_power_of_two() {
            log::warn!(
                "{}: closed {n} connection(s) over the PROXY protocol so far; the last, from {addr}: {why}",
                self.what
            );
        }
    }
}

pub(crate) struct Listener<A: Acceptor> {
    acceptor: A,
    serving: Rc<Serving>,
    max_connections: Option<usize>,
    accept_budget: usize,
    live: Rc<Cell<usize>>,
    /// Accepting is paused after EMFILE/ENFILE until a timer resumes it.
    paused: Rc<Cell<bool>>,
    /// Connections refused over `max_connections` since the last log line.
    refused: u64,
    /// Inside a descriptor-exhaustion episode (logged once, at its start).
    exhausted: bool,
}

impl<A: Acceptor> Listener<A> {
    pub(crate) fn new(acceptor: A, factory: Box<dyn Factory>, settings: Accepted, what: String) -> Self {
        let proxy = &settings.proxy;
        if proxy.mode == crate::proxy::ProxyMode::Optional && proxy.trusted.is_empty() {
            log::warn!(
                "{what}: any client may send a PROXY header and claim any address; \
                 list the proxies' addresses as trusted"
            );
        }
        Listener {
            acceptor,
            serving: Rc::new(Serving {
                factory: RefCell::new(factory),
                knobs: settings.knobs,
                proxy: settings.proxy,
                what,
                bad_headers: Cell::new(0),
            }),
            max_connections: settings.max_connections,
            accept_budget: settings.accept_budget,
            live: Rc::new(Cell::new(0)),
            paused: Rc::new(Cell::new(false)),
            refused: 0,
            exhausted: false,
        }
    }

    fn serve(&mut self, r: &mut Reactor, stream: A::Stream, addr: Address) {
        if let Some(max) = self.max_connections {
            if self.live.get() >= max {
                self.refused += 1;
                if self.refused.is_power_of_two() {
                    log::warn!(
                        "{}: connection limit ({max}) reached; closed {} new connection(s) so far",
                        self.serving.what,
                        self.refused
                    );
                }
                return; // dropping the stream closes it
            }
        }
        let slot = Slot::take(&self.live);
        match self.serving.proxy.admit(&addr) {
            Admit::Direct => self.serving.start(r, stream, &addr, slot),
            Admit::ReadHeader => read_header(r, stream, addr, self.serving.clone(), slot),
            Admit::Refuse => self
                .serving
                .refused(&addr, &"not a trusted source of PROXY headers"),
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
        for _ in 0..self.accept_budget.max(1) {
            match self.acceptor.accept() {
                Ok((stream, addr)) => {
                    if self.exhausted {
                        self.exhausted = false;
                        log::info!("{}: accepting again", self.serving.what);
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
                        log::debug!("{}: accept failed again: {e}", self.serving.what);
                    } else {
                        self.exhausted = true;
                        log::warn!(
                            "{}: accept failed: {e}; retrying every {} ms until it clears",
                            self.serving.what,
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
                    log::debug!("{}: accept error: {e}", self.serving.what);
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
