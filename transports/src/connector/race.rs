//! The race between a connection attempt's addresses (Happy Eyeballs, RFC
//! 8305): start one connect, start the next if none has answered after the
//! attempt delay, move on at once when one fails, and stop at the first
//! that connects. Only the [`Connecting`](super::Phase::Connecting) phase
//! runs this; everything before and after is the connector's.

use std::collections::VecDeque;
use std::io;

use mio::Interest;
use twistor_reactor::{ConnId, DelayedCall, Handler, Reactor, Ready, Reason};

use super::{finish, won, Dialer, Phase, Shared};

/// The addresses of an attempt racing each other (Happy Eyeballs, RFC
/// 8305): those not tried yet, in order, the sockets connecting now, and
/// the timer that starts the next address if none has connected by then.
pub(super) struct Race<A> {
    untried: VecDeque<A>,
    flying: Vec<ConnId>,
    next: Option<DelayedCall>,
    /// The error of the last address that failed, for the report.
    last_error: Option<io::Error>,
}

impl<A> Race<A> {
    pub(super) fn new(addrs: Vec<A>) -> Race<A> {
        Race {
            untried: addrs.into(),
            flying: Vec::new(),
            next: None,
            last_error: None,
        }
    }

    pub(super) fn release(self, r: &mut Reactor) {
        // Dropping a handler closes its socket.
        for id in self.flying {
            r.remove(id);
        }
        if let Some(t) = self.next {
            t.cancel(r);
        }
    }

    fn failure(&mut self) -> Reason {
        let e = self
            .last_error
            .take()
            .unwrap_or_else(|| io::Error::other("no address to connect to"));
        Reason::from_io(e)
    }
}

/// Start connecting to `addrs`.
pub(super) fn race<D: Dialer>(r: &mut Reactor, link: &Shared<D>, attempt: u64, addrs: Vec<D::Addr>) {
    let left = {
        let mut l = link.borrow_mut();
        if l.attempt != attempt {
            return;
        }
        match l.enter(Phase::Connecting(Race::new(addrs))) {
            Some(left) => left,
            None => return,
        }
    };
    left.release(r);
    launch(r, link, attempt);
}

/// Start the connect to the next untried address, and arm the timer that
/// starts the one after it if this one has not connected by then: the
/// sockets race, and the first to connect wins. An address that fails
/// (at once or later) gives way to the next at once; when none is left
/// and no socket is connecting, the attempt has failed.
fn launch<D: Dialer>(r: &mut Reactor, link: &Shared<D>, attempt: u64) {
    loop {
        let mut l = link.borrow_mut();
        let delay = l.opts.attempt_delay;
        let Some(race) = l.race(attempt) else { return };
        if let Some(t) = race.next.take() {
            t.cancel(r);
        }
        let Some(addr) = race.untried.pop_front() else {
            break;
        };
        let started = l.dialer.start(&addr);
        drop(l);
        let error = match started {
            Ok(sock) => {
                let l2 = link.clone();
                let made = r.insert_with(move |r, id| {
                    let mut sock = sock;
                    r.registry().register(&mut sock, id.token(), Interest::WRITABLE)?;
                    Ok(Box::new(Dialing {
                        sock: Some(sock),
                        addr,
                        link: l2,
                        attempt,
                    }))
                });
                match made {
                    Ok(id) => {
                        let mut l = link.borrow_mut();
                        let Some(race) = l.race(attempt) else {
                            drop(l);
                            return r.remove(id);
                        };
                        race.flying.push(id);
                        if !race.untried.is_empty() {
                            let l2 = link.clone();
                            race.next = Some(r.call_later(delay, move |r| launch(r, &l2, attempt)));
                        }
                        return;
                    }
                    Err(e) => e,
                }
            }
            Err(e) => {
                log::debug!("connect to {addr}: {e}");
                e
            }
        };
        if let Some(race) = link.borrow_mut().race(attempt) {
            race.last_error = Some(error);
        }
    }
    let failed = {
        let mut l = link.borrow_mut();
        match l.race(attempt) {
            Some(race) if race.flying.is_empty() => Some(race.failure()),
            _ => None,
        }
    };
    if let Some(reason) = failed {
        finish(r, link, attempt, Phase::Failed, reason);
    }
}

/// One socket's connect failed: try the next address.
fn lost_one<D: Dialer>(r: &mut Reactor, link: &Shared<D>, attempt: u64, id: ConnId, e: io::Error) {
    {
        let mut l = link.borrow_mut();
        let Some(race) = l.race(attempt) else { return };
        race.flying.retain(|&f| f != id);
        race.last_error = Some(e);
    }
    launch(r, link, attempt);
}

/// The handler of a socket whose connect is in flight.
struct Dialing<D: Dialer> {
    sock: Option<D::Sock>,
    addr: D::Addr,
    link: Shared<D>,
    attempt: u64,
}

impl<D: Dialer> Handler for Dialing<D> {
    fn ready(&mut self, r: &mut Reactor, id: ConnId, ready: Ready) {
        if !ready.writable && !ready.error {
            return;
        }
        let Some(outcome) = self.sock.as_ref().and_then(D::finished) else {
            return; // not done yet (or done with already)
        };
        let Some(mut sock) = self.sock.take() else { return };
        let _ = r.registry().deregister(&mut sock);
        r.remove(id);
        match outcome {
            Ok(()) => {
                if let Some(race) = self.link.borrow_mut().race(self.attempt) {
                    race.flying.retain(|&f| f != id);
                }
                won(r, &self.link, self.attempt, sock, self.addr.clone());
            }
            Err(e) => {
                log::debug!("connect to {}: {e}", self.addr);
                drop(sock);
                lost_one(r, &self.link, self.attempt, id, e);
            }
        }
    }

    fn shutdown(&mut self, r: &mut Reactor, id: ConnId) {
        // The reactor is stopping: the attempt ends (closing every socket
        // of the race), and this one goes in any case.
        finish(r, &self.link, self.attempt, Phase::Stopped, Reason::Aborted);
        r.remove(id);
    }

    fn abort(&mut self, r: &mut Reactor, id: ConnId) {
        self.shutdown(r, id);
    }
}
