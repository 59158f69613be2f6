//! The client side of every stream transport, written once: a connector's
//! attempts from `connect()` to the protocol's `connection_made` or the
//! factory's `client_connection_failed`.
//!
//! A transport says only how to find its addresses and how to start a
//! non-blocking connect (a [`Dialer`]: `connect_tcp`, `connect_unix`); this
//! file does the rest: the factory's callbacks, the attempt's deadline, a
//! name lookup off the loop, trying the addresses, the hand-over to the
//! stream machinery, and reporting a failure exactly once.
//!
//! # One attempt, one phase at a time
//! ```text
//! Idle ─connect─▶ Queued ─▶ Resolving ─▶ Connecting ─▶ Opening ─▶ Connected
//!                   │           │            │            │
//!                   └───────────┴────────────┴────────────┴─▶ Failed / Stopped
//! Connected, Failed, Stopped ─connect─▶ Queued (the next attempt)
//! ```
//! Every change goes through [`Link::enter`], which refuses any other.
//! Entering `Failed` or `Stopped` is what reports `client_connection_failed`
//! and entering `Opening` is what hands the socket to a protocol, and each
//! is legal only from a phase still in progress: so every attempt ends in
//! exactly one of the two, whatever ends it and at whatever stage
//! (`stop_connecting` before the attempt starts or from inside
//! `started_connecting`, the deadline, a reactor stop during the lookup or
//! the connect, a refused or panicking `build_protocol`). Callbacks of an
//! older attempt (a lookup that finishes late, a timer) carry its number
//! and are ignored.

mod race;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use twistor_reactor::{
    catch_panic, open_stream, ClientFactory, ConnId, Connector, DelayedCall, Handler, Reactor, Ready, Reason,
    StreamIo,
};

use crate::sock::Knobs;
use race::{race, Race};

/// Default time a connection attempt may take, name lookup included
/// (Twisted's default).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Default time between starting connects to successive addresses of one
/// attempt (RFC 8305's "Connection Attempt Delay", its recommended value).
pub const DEFAULT_ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// What a transport provides to the connector: its addresses and sockets.
pub(crate) trait Dialer: 'static {
    /// One address to connect to.
    type Addr: Clone + fmt::Display + Send + 'static;
    /// A socket whose connect is in flight.
    type Sock: mio::event::Source + 'static;
    /// A connected socket as a byte stream.
    type Io: StreamIo;

    /// The addresses to try, or the blocking lookup that finds them (run on
    /// the reactor's thread pool).
    fn addresses(&self) -> Addresses<Self::Addr>;

    /// Start a non-blocking connect to `addr`.
    fn start(&self, addr: &Self::Addr) -> io::Result<Self::Sock>;

    /// After a writable or error event: `None` while the connect is still in
    /// flight (a spurious wake-up), otherwise how it ended.
    fn finished(sock: &Self::Sock) -> Option<io::Result<()>>;

    /// The connected socket, as a stream to `addr`.
    fn wrap(&self, sock: Self::Sock, addr: &Self::Addr) -> Self::Io;
}

/// Where an attempt's addresses come from.
pub(crate) enum Addresses<A> {
    /// Known already (a literal address, a socket path).
    Known(Vec<A>),
    /// Found by a blocking lookup.
    Lookup(Box<dyn FnOnce() -> io::Result<Vec<A>> + Send>),
}

/// A connector's settings.
pub(crate) struct LinkOptions {
    /// The whole attempt's deadline, lookup included.
    pub timeout: Duration,
    /// How long one address has before the next is tried alongside it.
    pub attempt_delay: Duration,
    /// The limits of the connection, once made.
    pub knobs: Knobs,
}

type SharedFactory = Rc<RefCell<Box<dyn ClientFactory>>>;
type Shared<D> = Rc<RefCell<Link<D>>>;

/// Where the current attempt stands, with what it holds while in progress.
enum Phase<A> {
    /// No attempt was asked for yet.
    Idle,
    /// Asked for; starts on the next loop turn (and is still here while the
    /// factory's `started_connecting` runs, so that it may stop it).
    Queued,
    /// The name is being looked up. A stand-in handler is registered so
    /// that a reactor stop ends the attempt as it would a connecting socket.
    Resolving { stand_in: ConnId },
    /// Sockets are connecting.
    Connecting(Race<A>),
    /// A socket connected; its protocol is being built and its stream opened.
    Opening,
    /// Handed to the stream machinery: `connection_made` and
    /// `client_connection_lost` are the stream's to deliver.
    Connected,
    /// Failed (reported to the factory).
    Failed,
    /// Stopped by `stop_connecting` or a reactor stop (reported to the
    /// factory as a failure, [`Reason::Aborted`]).
    Stopped,
}

impl<A> Phase<A> {
    fn name(&self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Queued => "queued",
            Phase::Resolving { .. } => "resolving",
            Phase::Connecting(_) => "connecting",
            Phase::Opening => "opening",
            Phase::Connected => "connected",
            Phase::Failed => "failed",
            Phase::Stopped => "stopped",
        }
    }

    /// Whether an attempt may go from `self` to `next`.
    fn allows(&self, next: &Phase<A>) -> bool {
        use Phase::*;
        matches!(
            (self, next),
            (Idle | Connected | Failed | Stopped, Queued)
                | (Queued, Resolving { .. } | Connecting(_) | Failed | Stopped)
                | (Resolving { .. }, Connecting(_) | Failed | Stopped)
                | (Connecting(_), Opening | Failed | Stopped)
                | (Opening, Connected | Failed)
        )
    }

    /// Let go of what the phase held (the stand-in, the sockets).
    fn release(self, r: &mut Reactor) {
        match self {
            Phase::Resolving { stand_in } => r.remove(stand_in),
            Phase::Connecting(race) => race.release(r),
            _ => {}
        }
    }
}

/// One connector: its transport, its factory and its current attempt.
struct Link<D: Dialer> {
    dialer: D,
    destination: String,
    factory: SharedFactory,
    opts: LinkOptions,
    /// The current attempt's number; bumped by every `connect()`.
    attempt: u64,
    phase: Phase<D::Addr>,
    /// The current attempt's deadline, while it runs.
    deadline: Option<DelayedCall>,
}

impl<D: Dialer> Link<D> {
    /// The one place the phase changes. Returns the phase left (for the
    /// caller to release), or `None` if the change is illegal: then nothing
    /// changes.
    fn enter(&mut self, next: Phase<D::Addr>) -> Option<Phase<D::Addr>> {
        if !self.phase.allows(&next) {
            log::debug!(
                "connection to {}: {} -> {} refused",
                self.destination,
                self.phase.name(),
                next.name()
            );
            return None;
        }
        log::trace!(
            "connection to {}: {} -> {}",
            self.destination,
            self.phase.name(),
            next.name()
        );
        Some(std::mem::replace(&mut self.phase, next))
    }

    /// The current attempt's race, if `attempt` is current and connecting.
    fn race(&mut self, attempt: u64) -> Option<&mut Race<D::Addr>> {
        match &mut self.phase {
            Phase::Connecting(race) if self.attempt == attempt => Some(race),
            _ => None,
        }
    }

    fn is(&self, attempt: u64, phase: fn(&Phase<D::Addr>) -> bool) -> bool {
        self.attempt == attempt && phase(&self.phase)
    }
}

/// Start connecting through `dialer`: the attempt begins on the next loop
/// turn. Returns the connector (`connect` again, `stop_connecting`).
pub(crate) fn connect<D: Dialer>(
    r: &mut Reactor,
    dialer: D,
    destination: String,
    factory: impl ClientFactory,
    opts: LinkOptions,
) -> Connector {
    let link = Rc::new(RefCell::new(Link {
        dialer,
        destination,
        factory: Rc::new(RefCell::new(Box::new(factory))),
        opts,
        attempt: 0,
        phase: Phase::Idle,
        deadline: None,
    }));
    let connector = connector(&link);
    connector.connect(r);
    connector
}

/// A handle on the link. Handles keep it alive: it lives as long as an
/// attempt, a connection or someone's connector needs it.
fn connector<D: Dialer>(link: &Shared<D>) -> Connector {
    let destination = link.borrow().destination.clone();
    let (l1, l2) = (link.clone(), link.clone());
    Connector::new(destination, move |r| queue(r, &l1), move |r| stop(r, &l2))
}

/// `connect()`: queue a new attempt, unless one is in progress.
fn queue<D: Dialer>(r: &mut Reactor, link: &Shared<D>) {
    let attempt = {
        let mut l = link.borrow_mut();
        if l.enter(Phase::Queued).is_none() {
            log::debug!(
                "connect() to {} while an attempt is in progress: ignored",
                l.destination
            );
            return;
        }
        l.attempt += 1;
        l.attempt
    };
    let link = link.clone();
    r.call_soon(move |r| begin(r, &link, attempt));
}

/// `stop_connecting()`: stop the attempt in progress, if any.
fn stop<D: Dialer>(r: &mut Reactor, link: &Shared<D>) {
    let attempt = link.borrow().attempt;
    finish(r, link, attempt, Phase::Stopped, Reason::Aborted);
}

/// The attempt's turn: tell the factory, arm the deadline, find addresses.
fn begin<D: Dialer>(r: &mut Reactor, link: &Shared<D>, attempt: u64) {
    if !link.borrow().is(attempt, |p| matches!(p, Phase::Queued)) {
        return; // stopped before it began (and reported)
    }
    if r.is_stopping() {
        // No new attempts once stop() has begun, but this one still ends
        // in exactly one outcome.
        log::debug!(
            "not connecting to {}: the reactor is stopping",
            link.borrow().destination
        );
        return finish(r, link, attempt, Phase::Stopped, Reason::Aborted);
    }
    let (factory, destination, timeout) = {
        let l = link.borrow();
        (l.factory.clone(), l.destination.clone(), l.opts.timeout)
    };
    let c = connector(link);
    let Ok(mut f) = factory.try_borrow_mut() else {
        // The factory is inside a callback of its own: begin once it is out.
        let link = link.clone();
        return r.call_soon(move |r| begin(r, &link, attempt));
    };
    let _ = catch_panic(format_args!("{destination}: started_connecting"), || {
        f.started_connecting(r, &c)
    });
    drop(f);
    if !link.borrow().is(attempt, |p| matches!(p, Phase::Queued)) {
        return; // started_connecting stopped it (and it was reported)
    }
    let l2 = link.clone();
    let deadline = r.call_later(timeout, move |r| {
        finish(r, &l2, attempt, Phase::Failed, Reason::TimedOut)
    });
    link.borrow_mut().deadline = Some(deadline);
    let addresses = link.borrow().dialer.addresses();
    match addresses {
        Addresses::Known(addrs) => race(r, link, attempt, addrs),
        Addresses::Lookup(lookup) => resolve(r, link, attempt, lookup),
    }
}

/// Look the name up on the thread pool, then race its addresses.
fn resolve<D: Dialer>(
    r: &mut Reactor,
    link: &Shared<D>,
    attempt: u64,
    lookup: Box<dyn FnOnce() -> io::Result<Vec<D::Addr>> + Send>,
) {
    let l2 = link.clone();
    let stand_in = match r.insert_with(|_, _| Ok(Box::new(StandIn { link: l2, attempt }))) {
        Ok(id) => id,
        Err(e) => return finish(r, link, attempt, Phase::Failed, Reason::from_io(e)),
    };
    if link.borrow_mut().enter(Phase::Resolving { stand_in }).is_none() {
        return r.remove(stand_in);
    }
    let l2 = link.clone();
    r.defer_to_thread(lookup, move |r, res| match res {
        Ok(Ok(addrs)) if !addrs.is_empty() => race(r, &l2, attempt, addrs),
        Ok(Ok(_)) => finish(r, &l2, attempt, Phase::Failed, Reason::Dns("no addresses".into())),
        Ok(Err(e)) => finish(r, &l2, attempt, Phase::Failed, Reason::Dns(e.to_string())),
        Err(panic) => finish(r, &l2, attempt, Phase::Failed, Reason::Dns(panic)),
    });
}

/// A socket connected (and left the race): it wins, the others are
/// closed, and the connection is handed to a protocol.
fn won<D: Dialer>(r: &mut Reactor, link: &Shared<D>, attempt: u64, sock: D::Sock, addr: D::Addr) {
    let (left, deadline, factory, destination) = {
        let mut l = link.borrow_mut();
        if l.attempt != attempt {
            return;
        }
        let Some(left) = l.enter(Phase::Opening) else {
            return;
        };
        (left, l.deadline.take(), l.factory.clone(), l.destination.clone())
    };
    left.release(r);
    if let Some(d) = deadline {
        d.cancel(r);
    }
    let (io, knobs) = {
        let l = link.borrow();
        (l.dialer.wrap(sock, &addr), l.opts.knobs)
    };
    let peer = io.peer();
    log::debug!("connected to {destination} ({peer})");
    let built = catch_panic(format_args!("{destination}: build_protocol"), || {
        factory.borrow_mut().build_protocol(&peer)
    });
    let proto = match built {
        Ok(Some(p)) => p,
        Ok(None) => {
            let reason = Reason::Limit("the factory refused the connection".into());
            return finish(r, link, attempt, Phase::Failed, reason);
        }
        Err(msg) => return finish(r, link, attempt, Phase::Failed, Reason::Panic(msg)),
    };
    let (f2, c2) = (factory.clone(), connector(link));
    let on_lost =
        Box::new(move |r: &mut Reactor, reason: &Reason| report(r, &f2, &c2, Report::Lost(reason.clone())));
    match open_stream(r, io, proto, knobs.stream_options(Some(on_lost))) {
        Ok(_) => {
            link.borrow_mut().enter(Phase::Connected);
        }
        Err(e) => finish(r, link, attempt, Phase::Failed, Reason::from_io(e)),
    }
}

/// End attempt `attempt` in `to` (failed or stopped) with `reason`, if it
/// is still in progress: release what it holds and tell the factory.
fn finish<D: Dialer>(r: &mut Reactor, link: &Shared<D>, attempt: u64, to: Phase<D::Addr>, reason: Reason) {
    let (left, deadline, factory, destination) = {
        let mut l = link.borrow_mut();
        if l.attempt != attempt {
            return;
        }
        let Some(left) = l.enter(to) else { return };
        (left, l.deadline.take(), l.factory.clone(), l.destination.clone())
    };
    left.release(r);
    if let Some(d) = deadline {
        d.cancel(r);
    }
    log::debug!("connection to {destination} failed: {reason}");
    report(r, &factory, &connector(link), Report::Failed(reason));
}

/// What to tell the factory.
enum Report {
    Failed(Reason),
    Lost(Reason),
}

/// Tell the factory. When it is busy, because its own callback called
/// `stop_connecting` (Twisted allows that from `started_connecting`), it
/// is told on the next loop turn, after that callback returns.
fn report(r: &mut Reactor, factory: &SharedFactory, c: &Connector, what: Report) {
    let Ok(mut f) = factory.try_borrow_mut() else {
        let (factory, c) = (factory.clone(), c.clone());
        r.call_soon(move |r| report(r, &factory, &c, what));
        return;
    };
    let dest = c.destination();
    let _ = match &what {
        Report::Failed(reason) => catch_panic(format_args!("{dest}: client_connection_failed"), || {
            f.client_connection_failed(r, c, reason)
        }),
        Report::Lost(reason) => catch_panic(format_args!("{dest}: client_connection_lost"), || {
            f.client_connection_lost(r, c, reason)
        }),
    };
}

/// Stands for an attempt whose name is being looked up: it has no socket
/// yet, but a reactor stop must still end it.
struct StandIn<D: Dialer> {
    link: Shared<D>,
    attempt: u64,
}

impl<D: Dialer> Handler for StandIn<D> {
    fn ready(&mut self, _: &mut Reactor, _: ConnId, _: Ready) {}

    fn shutdown(&mut self, r: &mut Reactor, id: ConnId) {
        finish(r, &self.link, self.attempt, Phase::Stopped, Reason::Aborted);
        r.remove(id);
    }

    fn abort(&mut self, r: &mut Reactor, id: ConnId) {
        self.shutdown(r, id);
    }
}
