//! Stopping, Twisted's way, and the signals that ask for it.
//!
//! `stop()` only asks; the loop then stops accepting (listeners go at
//! once), runs the shutdown triggers, asks every connection to close
//! gracefully, and waits for them up to the shutdown deadline
//! ([`DEFAULT_SHUTDOWN_TIMEOUT`]), when it aborts the rest. `run()` installs
//! SIGINT / SIGTERM handlers that call `stop()`; a second signal while
//! stopping aborts every connection at once. Once `run()` returns, the
//! default action (terminate) is back (`signals.rs` keeps it, and handles
//! the other signals a program asks for).

use std::io;
use std::time::{Duration, Instant};

use crate::reactor::SIGNAL_TOKEN;
use crate::signals::default_action;
use crate::timer::later;
use crate::{catch_panic, Reactor};

/// Default time `stop()` gives connections to flush before aborting them.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the loop is in its run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Idle,
    Running,
    Stopping { deadline: Instant },
}

impl Reactor {
    /// Time `stop()` allows connections to flush before aborting them.
    pub fn set_shutdown_timeout(&mut self, d: Duration) {
        self.shutdown_timeout = d;
    }

    /// Whether `run()` installs SIGINT / SIGTERM handlers that call
    /// `stop()` (default: yes, as Twisted does; a second signal while
    /// stopping aborts every connection at once).
    pub fn set_install_signal_handlers(&mut self, on: bool) {
        self.install_signals = on;
    }

    /// Run `f` when `stop()` begins, before connections are closed
    /// (Twisted's `addSystemEventTrigger('before', 'shutdown', f)`).
    pub fn add_shutdown_trigger(&mut self, f: impl FnOnce(&mut Reactor) + 'static) {
        self.shutdown_triggers.push(Box::new(f));
    }

    /// Ask the loop to stop: it stops accepting, runs the shutdown triggers,
    /// calls `lose_connection` on every connection, waits for them to flush
    /// (up to the shutdown timeout), aborts the rest and returns from
    /// `run()`. Calling it again while stopping does nothing more.
    pub fn stop(&mut self) {
        self.stop_requested = true;
    }

    /// Whether the reactor is stopping (or asked to).
    pub fn is_stopping(&self) -> bool {
        self.stop_requested || matches!(self.state, State::Stopping { .. })
    }

    /// Called by the loop before each turn: begin a requested stop, and
    /// say whether the stop is over (then `run()` returns).
    pub(crate) fn stopping_done(&mut self) -> bool {
        if self.stop_requested && self.state == State::Running {
            self.begin_stop();
        }
        let State::Stopping { deadline } = self.state else {
            return false;
        };
        if !self.slots.any_holds_shutdown() {
            self.finish_stop();
            return true;
        }
        if Instant::now() < deadline {
            return false;
        }
        log::warn!("shutdown timeout: aborting {} connection(s)", self.slots.len());
        // An aborted connection's connection_lost may open another (told
        // to stop like the rest, but it cannot drain now): abort those
        // too, so that every connection made is also lost. Bounded against
        // a chain that never ends; what remains is dropped by finish_stop.
        for _ in 0..8 {
            self.abort_all();
            if !self.slots.any_holds_shutdown() {
                break;
            }
        }
        self.finish_stop();
        true
    }

    fn begin_stop(&mut self) {
        log::debug!("stopping: {} handler(s)", self.slots.len());
        self.state = State::Stopping {
            deadline: later(Instant::now(), self.shutdown_timeout),
        };
        for f in std::mem::take(&mut self.shutdown_triggers) {
            let _ = catch_panic(format_args!("shutdown trigger"), || f(self));
        }
        for id in self.slots.ids() {
            self.with_handler(id, |h, r| h.shutdown(r, id));
        }
        self.run_queued();
    }

    fn abort_all(&mut self) {
        for id in self.slots.ids() {
            self.with_handler(id, |h, r| h.abort(r, id));
        }
        self.run_queued();
    }

    fn finish_stop(&mut self) {
        // Whatever still holds a slot (a handler that ignored abort) goes.
        let n = self.slots.len();
        if n > 0 {
            log::debug!("dropping {n} remaining handler(s)");
        }
        self.slots.clear();
        self.clear_queued();
    }

    pub(crate) fn on_signal(&mut self) {
        let mut got = Vec::new();
        if let Some(s) = self.signals.as_mut() {
            got.extend(s.pending());
        }
        for sig in got {
            let name = if sig == libc::SIGINT { "SIGINT" } else { "SIGTERM" };
            if matches!(self.state, State::Stopping { .. }) {
                log::warn!("{name} again while stopping: aborting every connection");
                self.abort_all();
            } else {
                log::info!("{name} received: stopping");
                self.stop();
            }
        }
    }

    /// Install the SIGINT / SIGTERM handlers, if asked to (`run()` does).
    pub(crate) fn install_signal_handlers(&mut self) -> io::Result<()> {
        if !self.install_signals || self.signals.is_some() {
            return Ok(());
        }
        match signal_hook_mio::v1_0::Signals::new([libc::SIGINT, libc::SIGTERM]) {
            Ok(mut s) => {
                self.registry()
                    .register(&mut s, SIGNAL_TOKEN, mio::Interest::READABLE)?;
                default_action::handling(libc::SIGINT, true);
                default_action::handling(libc::SIGTERM, true);
                self.signals = Some(s);
            }
            Err(e) => log::warn!("cannot install signal handlers: {e}"),
        }
        Ok(())
    }

    /// Undo [`install_signal_handlers`](Reactor::install_signal_handlers).
    pub(crate) fn remove_signal_handlers(&mut self) {
        if let Some(mut s) = self.signals.take() {
            let _ = self.registry().deregister(&mut s);
            drop(s);
            default_action::handling(libc::SIGINT, false);
            default_action::handling(libc::SIGTERM, false);
        }
    }
}
