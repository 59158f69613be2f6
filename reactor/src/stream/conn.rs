//! The stream connection: a protocol, a byte stream and the state
//! between them. Each callback runs through [`StreamConn::invoke`]; what
//! the protocol asked for is carried out afterwards by
//! [`StreamConn::settle`], which flushes once, raises flow control,
//! applies an upgrade, and moves the lifecycle on (`phase.rs`).

use std::io;
use std::rc::Rc;
use std::time::Duration;

use mio::Interest;

use super::phase::Phase;
use super::view::View;
use crate::write_buf::WriteBuf;
use crate::{
    catch_panic, swap_protocol, ConnId, Handler, LostHook, Protocol, ProtocolCall, Reactor, Ready, Reason,
    StreamIo, Transport, Upgrade,
};

/// Everything a connection keeps besides its protocol. Kept small: an
/// idle connection is this, its slot and its protocol, nothing more.
pub(super) struct State<S> {
    pub(super) io: S,
    pub(super) phase: Phase,
    pub(super) out: WriteBuf,
    /// Shared with every connection opened with the same options, until
    /// the protocol changes its own.
    pub(super) limits: Rc<Limits>,
    pub(super) on_lost: Option<LostHook>,
    /// An upgrade asked for during the current callback, with what was
    /// asked after it.
    pub(super) upgrade: Option<Box<Upgrading>>,
    /// Not paused by the protocol.
    pub(super) reading: bool,
    /// `pause_writing` was delivered and `resume_writing` not yet.
    pub(super) writing_paused: bool,
    /// WRITABLE interest is registered (only while output waits).
    pub(super) want_writable: bool,
    /// A callback ran since the last [`settle`](StreamConn::settle):
    /// what it asked for is not carried out yet.
    pub(super) unsettled: bool,
}

/// A connection's knobs (see [`StreamOptions`](super::StreamOptions)).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Limits {
    /// Write-buffer water marks.
    pub(super) high: usize,
    pub(super) low: usize,
    /// Bytes read per readiness event before yielding (the fairness budget).
    pub(super) budget: usize,
    /// The close deadline.
    pub(super) close_timeout: Duration,
    /// The write buffer's hard cap.
    pub(super) max_write: usize,
}

/// A pending upgrade ([`Transport::upgrade`]).
pub(super) struct Upgrading {
    pub(super) upgrade: Upgrade,
    /// Asked for after `upgrade` during the same callback: the new
    /// protocol's to carry out (so that what follows `start_tls` is
    /// encrypted, never sent in the clear, and a close waits for TLS).
    pub(super) after: AfterUpgrade,
}

/// Writes and closes asked for while an upgrade is pending.
#[derive(Default)]
pub(super) struct AfterUpgrade {
    pub(super) data: Vec<u8>,
    pub(super) write_eof: bool,
    /// `lose_connection` (with its reason, if one was given).
    pub(super) close: Option<Option<Reason>>,
}

impl AfterUpgrade {
    /// What to run through the new protocol, if anything was asked for.
    fn into_call(self) -> Option<ProtocolCall> {
        if self.data.is_empty() && !self.write_eof && self.close.is_none() {
            return None;
        }
        Some(Box::new(move |_, t| {
            if !self.data.is_empty() {
                t.write(&self.data);
            }
            if self.write_eof {
                t.write_eof();
            }
            match self.close {
                Some(Some(reason)) => t.lose_connection_with(reason),
                Some(None) => t.lose_connection(),
                None => {}
            }
        }))
    }
}

pub(super) struct StreamConn<S> {
    pub(super) proto: Box<dyn Protocol>,
    pub(super) st: State<S>,
}

impl<S: StreamIo> StreamConn<S> {
    /// Run one protocol callback, catching a panic. Returns false if it
    /// panicked (the connection is then closed, reason panic).
    fn invoke(
        &mut self,
        r: &mut Reactor,
        id: ConnId,
        f: impl FnOnce(&mut dyn Protocol, &mut dyn Transport),
    ) -> bool {
        self.st.unsettled = true;
        let mut view = View {
            st: &mut self.st,
            r,
            id,
        };
        let proto = &mut *self.proto;
        match catch_panic(format_args!("{id}: protocol callback"), || f(proto, &mut view)) {
            Ok(()) => true,
            Err(msg) => {
                self.close(r, id, Reason::Panic(msg));
                false
            }
        }
    }

    /// Run `connection_made` if it has not run. Returns false if the
    /// connection is closed.
    #[inline]
    fn ensure_made(&mut self, r: &mut Reactor, id: ConnId) -> bool {
        if !self.st.phase.is_made() {
            self.st.phase.set(id, Phase::Open);
            if !self.invoke(r, id, |p, t| p.connection_made(t)) {
                return false;
            }
            self.settle(r, id);
        }
        !matches!(self.st.phase, Phase::Closed)
    }

    /// Everything that follows a callback: end an aborted connection,
    /// apply an upgrade, flush once, raise flow control, finish a close
    /// or a half-close once flushed (arming the close deadline while it
    /// cannot), and keep the registered interest in step.
    pub(super) fn settle(&mut self, r: &mut Reactor, id: ConnId) {
        // The usual case first: an open connection, no upgrade, its output
        // gone at once. Otherwise on to the whole round, flushed already.
        let mut flushed = false;
        if matches!(self.st.phase, Phase::Open) && self.st.upgrade.is_none() {
            if let Err(e) = self.flush(r) {
                self.close(r, id, Reason::from_io(e));
                return;
            }
            if self.st.out.len() == 0 && !self.st.writing_paused {
                if self.st.want_writable {
                    self.update_interest(r, id);
                }
                self.st.unsettled = false;
                return;
            }
            flushed = true;
        }
        // Bounded: each pass either makes progress or ends the loop.
        for _ in 0..16 {
            match &mut self.st.phase {
                Phase::Closed => return,
                Phase::Aborting(why) => {
                    let reason = why.take().map_or(Reason::Aborted, |b| *b);
                    self.close(r, id, reason);
                    return;
                }
                _ => {}
            }
            if self.st.upgrade.is_some() {
                let up = self.st.upgrade.take().expect("checked");
                if !self.apply_upgrade(r, id, *up) {
                    return;
                }
                continue;
            }
            if !std::mem::take(&mut flushed) {
                if let Err(e) = self.flush(r) {
                    self.close(r, id, Reason::from_io(e));
                    return;
                }
            }
            let size = self.st.out.len();
            if !self.st.writing_paused && size > self.st.limits.high {
                self.st.writing_paused = true;
                if !self.invoke(r, id, |p, t| p.pause_writing(t)) {
                    return;
                }
                continue;
            }
            if self.st.writing_paused && size <= self.st.limits.low {
                self.st.writing_paused = false;
                if !self.invoke(r, id, |p, t| p.resume_writing(t)) {
                    return;
                }
                continue;
            }
            if size > 0 {
                self.arm_close_deadline(r, id);
                break;
            }
            match &mut self.st.phase {
                Phase::Closing { reason, .. } => {
                    let reason = reason.take().map_or(Reason::ConnectionDone, |b| *b);
                    self.close(r, id, reason);
                    return;
                }
                Phase::WriteClosing => {
                    if let Err(e) = self.st.io.shutdown_write() {
                        self.close(r, id, Reason::from_io(e));
                        return;
                    }
                    self.st.phase.set(id, Phase::WriteClosed);
                }
                _ => {}
            }
            break;
        }
        self.update_interest(r, id);
        self.st.unsettled = false;
    }

    /// Swap in the new protocol, then run through it what was asked after
    /// the upgrade. Returns false if the connection closed.
    fn apply_upgrade(&mut self, r: &mut Reactor, id: ConnId, up: Upgrading) -> bool {
        let mut view = View {
            st: &mut self.st,
            r,
            id,
        };
        let swapped = swap_protocol(
            &mut self.proto,
            up.upgrade,
            &mut view,
            format_args!("{id}: protocol upgrade"),
        );
        if let Err(msg) = swapped {
            self.close(r, id, Reason::Panic(msg));
            return false;
        }
        // Carried out through the new protocol (a TLS layer holds writes
        // until its handshake is done).
        match up.after.into_call() {
            Some(held) => self.invoke(r, id, |p, t| {
                if let Some(call) = p.route_call(t, held) {
                    call(p, t)
                }
            }),
            None => true,
        }
    }

    /// A graceful close is waiting on a flush: make sure it waits no
    /// longer than the close deadline.
    fn arm_close_deadline(&mut self, r: &mut Reactor, id: ConnId) {
        let after = self.st.limits.close_timeout;
        if let Phase::Closing { timer: t @ None, .. } = &mut self.st.phase {
            let wake = move |r: &mut Reactor| r.dispatch_now(id, Ready::NONE);
            *t = Some(r.call_later(after, wake));
        }
    }

    /// Whether the close deadline has passed (its timer fired).
    fn close_deadline_passed(&self, r: &Reactor) -> bool {
        matches!(&self.st.phase, Phase::Closing { timer: Some(t), .. } if !t.active(r))
    }

    fn flush(&mut self, r: &mut Reactor) -> io::Result<()> {
        while self.st.out.len() > 0 {
            match self.st.out.write_to(&mut self.st.io, &mut r.write_pool) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn update_interest(&mut self, r: &mut Reactor, id: ConnId) {
        let want = self.st.out.len() > 0;
        if want != self.st.want_writable {
            self.st.want_writable = want;
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Err(e) = self.st.io.reregister(r.registry(), id.token(), interest) {
                self.close(r, id, Reason::from_io(e));
            }
        }
    }

    fn read(&mut self, r: &mut Reactor, id: ConnId) {
        let mut buf = r.take_read_buffer();
        let mut total = 0;
        while self.st.reading && self.st.phase.reads() && self.st.upgrade.is_none() {
            match self.st.io.read(&mut buf) {
                Ok(0) => {
                    self.eof(r, id);
                    break;
                }
                Ok(n) => {
                    let data = &buf[..n];
                    if !self.invoke(r, id, |p, t| p.data_received(t, data)) {
                        break;
                    }
                    self.settle(r, id);
                    total += n;
                    if total >= self.st.limits.budget {
                        // Fairness: let the others have a turn, come back next turn.
                        r.requeue(id, Ready::READABLE);
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.close(r, id, Reason::from_io(e));
                    break;
                }
            }
        }
        r.put_read_buffer(buf);
    }

    /// The peer half-closed: ask the protocol whether to stay open.
    fn eof(&mut self, r: &mut Reactor, id: ConnId) {
        let mut keep_open = false;
        if !self.invoke(r, id, |p, t| keep_open = p.eof_received(t)) {
            return;
        }
        let next = match self.st.phase {
            Phase::Open if keep_open => Some(Phase::ReadClosed),
            // Our side is (or is to be) half-closed too: what is left is
            // the flush, then the close.
            _ => self.st.phase.closing(None),
        };
        if let Some(next) = next {
            self.st.phase.set(id, next);
        }
        self.settle(r, id);
    }

    /// Abort: discard the output, reset where possible, report `reason`.
    fn abort(&mut self, r: &mut Reactor, id: ConnId, reason: Reason) {
        self.end(r, id, reason, true);
    }

    /// Close at once (the output is discarded), reporting `reason`.
    fn close(&mut self, r: &mut Reactor, id: ConnId, reason: Reason) {
        self.end(r, id, reason, false);
    }

    /// End the connection: exactly once, `connection_lost` (if
    /// `connection_made` ran), then the lost hook, then out of the reactor.
    /// `abortive` (or an `Aborting` phase) resets where the transport can.
    fn end(&mut self, r: &mut Reactor, id: ConnId, reason: Reason, abortive: bool) {
        match &self.st.phase {
            Phase::Closed => return,
            Phase::Closing { timer: Some(t), .. } => {
                t.cancel(r);
            }
            _ => {}
        }
        if abortive || matches!(self.st.phase, Phase::Aborting(_)) {
            self.st.io.prepare_abort();
        }
        let made = self.st.phase.is_made();
        self.st.phase.set(id, Phase::Closed);
        let _ = self.st.io.deregister(r.registry());
        self.st.out.clear(&mut r.write_pool);
        self.st.upgrade = None;
        if made {
            let mut view = View {
                st: &mut self.st,
                r,
                id,
            };
            let proto = &mut *self.proto;
            let _ = catch_panic(format_args!("{id}: connection_lost"), || {
                proto.connection_lost(&mut view, &reason)
            });
        }
        if let Some(hook) = self.st.on_lost.take() {
            let _ = catch_panic(format_args!("{id}: connection-lost hook"), || hook(r, &reason));
        }
        r.remove(id);
    }
}

impl<S: StreamIo> Handler for StreamConn<S> {
    fn ready(&mut self, r: &mut Reactor, id: ConnId, ready: Ready) {
        if matches!(self.st.phase, Phase::Closed) {
            return;
        }
        if self.close_deadline_passed(r) {
            log::warn!(
                "{id}: close deadline ({:?}) passed with {} bytes unsent (the peer is not reading): aborting",
                self.st.limits.close_timeout,
                self.st.out.len()
            );
            self.abort(r, id, Reason::TimedOut);
            return;
        }
        if !self.ensure_made(r, id) {
            return;
        }
        if ready.writable && self.st.out.len() > 0 {
            self.settle(r, id);
        }
        if ready.readable && !matches!(self.st.phase, Phase::Closed) {
            self.read(r, id);
        }
        // Each callback above was followed by a settle; one more only if
        // something is left over (or nothing ran: a bare wake-up).
        if !matches!(self.st.phase, Phase::Closed) && (self.st.unsettled || !ready.readable) {
            self.settle(r, id);
        }
    }

    fn call(&mut self, r: &mut Reactor, id: ConnId, call: ProtocolCall) {
        if matches!(self.st.phase, Phase::Closed) || !self.ensure_made(r, id) {
            return;
        }
        let ok = self.invoke(r, id, |p, t| {
            if let Some(call) = p.route_call(t, call) {
                call(p, t)
            }
        });
        if ok {
            self.settle(r, id);
        }
    }

    fn shutdown(&mut self, r: &mut Reactor, id: ConnId) {
        if matches!(self.st.phase, Phase::Closed) || !self.ensure_made(r, id) {
            return;
        }
        // Through the protocol, so a layer (TLS) can send its close_notify.
        self.call(r, id, Box::new(|_, t| t.lose_connection()));
    }

    fn abort(&mut self, r: &mut Reactor, id: ConnId) {
        self.abort(r, id, Reason::Aborted);
    }

    fn removed(&mut self, r: &mut Reactor, id: ConnId) {
        // Removed from outside (or by its protocol): end it properly. A
        // connection that closed itself is already closed.
        self.abort(r, id, Reason::Aborted);
    }

    fn has_protocol(&self) -> bool {
        true
    }
}
