//! The transport a stream protocol sees during a callback: every request
//! is noted in the connection's state and carried out once the callback
//! returns (see `conn.rs`).

use std::io;
use std::rc::Rc;
use std::time::Duration;

use super::conn::{State, Upgrading};
use super::phase::Phase;
use crate::{Address, ConnId, Reactor, Ready, Reason, StreamIo, Transport, Upgrade};

pub(super) struct View<'a, S> {
    pub(super) st: &'a mut State<S>,
    pub(super) r: &'a mut Reactor,
    pub(super) id: ConnId,
}

impl<S: StreamIo> View<'_, S> {
    /// The hard cap is hit: discard the output and abort.
    fn over_cap(&mut self, buffered: usize) {
        let max = self.st.limits.max_write;
        log::warn!(
            "{}: write buffer over its hard cap ({buffered} > {max} bytes; the peer is not reading): aborting",
            self.id
        );
        self.st.out.clear(&mut self.r.write_pool);
        let reason = Reason::Limit(format!("write buffer over {max} bytes"));
        self.st
            .phase
            .set(self.id, Phase::Aborting(Some(Box::new(reason))));
    }

    fn close_with(&mut self, reason: Option<Reason>) {
        if let Some(up) = self.st.upgrade.as_mut() {
            up.after.close.get_or_insert(reason);
            return;
        }
        // The first reason given wins.
        if let Some(next) = self.st.phase.closing(reason) {
            self.st.phase.set(self.id, next);
        }
    }
}

impl<S: StreamIo> Transport for View<'_, S> {
    fn write(&mut self, data: &[u8]) {
        if !self.st.phase.writes() {
            log::trace!("{}: write after close or write_eof ignored", self.id);
            return;
        }
        let buffered = match self.st.upgrade.as_ref() {
            Some(up) => self.st.out.len() + up.after.data.len(),
            None => self.st.out.len(),
        } + data.len();
        if buffered > self.st.limits.max_write {
            self.over_cap(buffered);
            return;
        }
        match self.st.upgrade.as_mut() {
            Some(up) => {
                let after = &mut up.after;
                if after.close.is_none() && !after.write_eof {
                    after.data.extend_from_slice(data);
                }
            }
            None => self.st.out.push(&mut self.r.write_pool, data),
        }
    }

    fn lose_connection(&mut self) {
        self.close_with(None);
    }

    fn lose_connection_with(&mut self, reason: Reason) {
        self.close_with(Some(reason));
    }

    fn abort_connection(&mut self) {
        if !self.st.phase.is_ending() {
            self.st.phase.set(self.id, Phase::Aborting(None));
        }
    }

    fn write_eof(&mut self) {
        if let Some(up) = self.st.upgrade.as_mut() {
            up.after.write_eof = true;
            return;
        }
        match self.st.phase {
            Phase::Open => {
                self.st.phase.set(self.id, Phase::WriteClosing);
            }
            // The peer is done too: once flushed, nothing is left.
            Phase::ReadClosed => {
                let next = Phase::Closing {
                    reason: None,
                    writes: false,
                    timer: None,
                };
                self.st.phase.set(self.id, next);
            }
            _ => {}
        }
    }

    fn pause_reading(&mut self) {
        self.st.reading = false;
    }

    fn resume_reading(&mut self) {
        if !self.st.reading {
            self.st.reading = true;
            // Edge-triggered: data that arrived while paused raised no new
            // edge, so look for it ourselves.
            self.r.requeue(self.id, Ready::READABLE);
        }
    }

    fn is_reading(&self) -> bool {
        self.st.reading && self.st.phase.reads()
    }

    fn is_closing(&self) -> bool {
        self.st.phase.is_closing()
            || self
                .st
                .upgrade
                .as_ref()
                .is_some_and(|up| up.after.close.is_some())
    }

    fn write_buffer_size(&self) -> usize {
        self.st.out.len()
    }

    fn set_write_buffer_limits(&mut self, high: usize, low: usize) {
        let limits = Rc::make_mut(&mut self.st.limits);
        limits.high = high;
        limits.low = low.min(high);
    }

    fn write_buffer_limits(&self) -> (usize, usize) {
        (self.st.limits.high, self.st.limits.low)
    }

    fn set_max_write_buffer(&mut self, max: usize) {
        Rc::make_mut(&mut self.st.limits).max_write = max;
        let buffered = self.st.out.len();
        if buffered > max && !self.st.phase.is_ending() {
            self.over_cap(buffered);
        }
    }

    fn max_write_buffer(&self) -> Option<usize> {
        Some(self.st.limits.max_write)
    }

    fn peer(&self) -> Address {
        self.st.io.peer()
    }

    fn host(&self) -> Address {
        self.st.io.host()
    }

    fn id(&self) -> ConnId {
        self.id
    }

    fn reactor(&mut self) -> &mut Reactor {
        self.r
    }

    fn set_nodelay(&mut self, on: bool) -> io::Result<()> {
        self.st.io.set_nodelay(on)
    }

    fn set_keepalive(&mut self, idle: Option<Duration>) -> io::Result<()> {
        self.st.io.set_keepalive(idle)
    }

    fn upgrade(&mut self, upgrade: Upgrade) {
        match self.st.upgrade.as_mut() {
            Some(up) => up.upgrade = upgrade,
            None => {
                self.st.upgrade = Some(Box::new(Upgrading {
                    upgrade,
                    after: Default::default(),
                }))
            }
        }
    }
}
