//! Signals a program handles on the loop (asyncio's
//! `loop.add_signal_handler`): SIGHUP to reload a configuration, SIGUSR1
//! to reopen a log, anything but the stop signals, which are `stop.rs`'s.
//!
//! A handler is installed when it is added and removed when it is removed
//! (or the reactor dropped): a signal nobody asked for keeps its default
//! action, so SIGHUP still ends a program that has no use for it. The
//! signal is noted by signal-hook's async-signal-safe handler and the
//! callback runs later, on the loop, as any other event does, with the
//! whole reactor; several deliveries of one signal between two turns run
//! it once. This file also keeps the default action of a signal once no
//! reactor handles it any more (`default_action`), for these handlers and
//! for the SIGINT / SIGTERM handlers `run()` installs.

use std::collections::HashMap;
use std::io;

use libc::c_int;
use signal_hook_mio::v1_0::Signals;

use crate::reactor::USER_SIGNAL_TOKEN;
use crate::{catch_panic, Reactor};

type SignalFn = Box<dyn FnMut(&mut Reactor)>;

/// The handlers added with [`Reactor::add_signal_handler`], and the one
/// source that receives their signals.
#[derive(Default)]
pub(crate) struct UserSignals {
    /// Registered with the poll under `USER_SIGNAL_TOKEN`; `Some` exactly
    /// while `handlers` is not empty, and listening for exactly its keys.
    source: Option<Signals>,
    /// A handler is `None` while it runs: taken out of the table so that
    /// it can use the whole reactor (and add or remove handlers).
    handlers: HashMap<c_int, Option<SignalFn>>,
}

impl Drop for UserSignals {
    fn drop(&mut self) {
        if self.source.take().is_some() {
            for &sig in self.handlers.keys() {
                default_action::handling(sig, false);
            }
        }
    }
}

impl Reactor {
    /// Call `f` on the loop each time the process receives `signal`
    /// (asyncio's `loop.add_signal_handler`), from now until
    /// [`remove_signal_handler`](Reactor::remove_signal_handler) or until
    /// the reactor is dropped; meanwhile the signal no longer has its
    /// default action. A second handler for the same signal replaces the
    /// first. `f` runs between events with the whole reactor, like a timer
    /// (a signal that arrives while the loop is not running waits for the
    /// next `run()`); several deliveries close together may run it once. A
    /// panic in `f` is caught and logged; the handler stays.
    ///
    /// The usual use is SIGHUP for "reload your configuration" (see
    /// [`SIGHUP`](crate::SIGHUP)). SIGINT and SIGTERM stop the loop
    /// already while `run()` runs; a handler added for them runs as well.
    /// Signals that cannot be handled (SIGKILL, SIGSTOP, SIGSEGV, SIGILL,
    /// SIGFPE) are refused with an error.
    ///
    /// ```
    /// use std::rc::Rc;
    /// use std::cell::Cell;
    /// use twistor_reactor::{Reactor, SIGUSR1};
    ///
    /// let mut r = Reactor::new().unwrap();
    /// let reloads = Rc::new(Cell::new(0));
    /// let seen = reloads.clone();
    /// r.add_signal_handler(SIGUSR1, move |r| {
    ///     seen.set(seen.get() + 1);
    ///     r.stop();
    /// })
    /// .unwrap();
    /// // SAFETY: kill(2) on this very process, whose SIGUSR1 is handled now.
    /// unsafe { libc::kill(libc::getpid(), SIGUSR1) };
    /// r.run().unwrap(); // the handler runs, and stops the loop
    /// assert_eq!(reloads.get(), 1);
    /// assert!(r.remove_signal_handler(SIGUSR1));
    /// ```
    pub fn add_signal_handler(
        &mut self,
        signal: c_int,
        f: impl FnMut(&mut Reactor) + 'static,
    ) -> io::Result<()> {
        if !can_handle(signal) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("signal {signal} cannot be handled"),
            ));
        }
        if let Some(slot) = self.user_signals.handlers.get_mut(&signal) {
            *slot = Some(Box::new(f));
            return Ok(());
        }
        match self.user_signals.source.as_mut() {
            Some(source) => source.add_signal(signal)?,
            None => {
                let mut source = Signals::new([signal])?;
                self.registry()
                    .register(&mut source, USER_SIGNAL_TOKEN, mio::Interest::READABLE)?;
                self.user_signals.source = Some(source);
            }
        }
        default_action::handling(signal, true);
        self.user_signals.handlers.insert(signal, Some(Box::new(f)));
        log::debug!("handling signal {signal}");
        Ok(())
    }

    /// Stop handling `signal`: its default action is back (unless another
    /// reactor handles it). Returns whether a handler was there. A handler
    /// may remove itself.
    ///
    /// ```
    /// use twistor_reactor::{Reactor, SIGHUP};
    /// let mut r = Reactor::new().unwrap();
    /// assert!(!r.remove_signal_handler(SIGHUP));
    /// r.add_signal_handler(SIGHUP, |_| println!("reload")).unwrap();
    /// assert!(r.remove_signal_handler(SIGHUP)); // SIGHUP terminates again
    /// ```
    pub fn remove_signal_handler(&mut self, signal: c_int) -> bool {
        if self.user_signals.handlers.remove(&signal).is_none() {
            return false;
        }
        // signal-hook cannot take one signal off a source: make a new one
        // for the others (a delivery in between is noted by neither and
        // dropped; the signal stays out of its default action meanwhile).
        if let Some(mut old) = self.user_signals.source.take() {
            let _ = self.registry().deregister(&mut old);
        }
        let rest: Vec<c_int> = self.user_signals.handlers.keys().copied().collect();
        if !rest.is_empty() {
            match Signals::new(rest.iter().copied()) {
                Ok(mut source) => {
                    match self
                        .registry()
                        .register(&mut source, USER_SIGNAL_TOKEN, mio::Interest::READABLE)
                    {
                        Ok(()) => self.user_signals.source = Some(source),
                        Err(e) => log::error!("cannot handle signals {rest:?} any more: {e}"),
                    }
                }
                Err(e) => log::error!("cannot handle signals {rest:?} any more: {e}"),
            }
            if self.user_signals.source.is_none() {
                for &sig in &rest {
                    default_action::handling(sig, false);
                }
                self.user_signals.handlers.clear();
            }
        }
        default_action::handling(signal, false);
        log::debug!("no longer handling signal {signal}");
        true
    }

    /// Run the handlers of the signals that arrived (the loop calls this
    /// when their source is readable).
    pub(crate) fn run_signal_handlers(&mut self) {
        let got: Vec<c_int> = match self.user_signals.source.as_mut() {
            Some(source) => source.pending().collect(),
            None => return,
        };
        for sig in got {
            let Some(mut f) = self.user_signals.handlers.get_mut(&sig).and_then(Option::take) else {
                continue;
            };
            log::debug!("signal {sig} received");
            let _ = catch_panic(format_args!("the handler of signal {sig}"), || f(self));
            // Put it back unless it was removed or replaced meanwhile.
            if let Some(slot @ None) = self.user_signals.handlers.get_mut(&sig) {
                *slot = Some(f);
            }
        }
    }
}

/// Whether `signal` is a signal number this system knows and signal-hook
/// may handle (it panics on the others).
fn can_handle(signal: c_int) -> bool {
    // signal-hook's table has room for signals below 128.
    if !(1..128).contains(&signal) || signal_hook::consts::FORBIDDEN.contains(&signal) {
        return false;
    }
    // SAFETY: sigemptyset and sigaddset only write the local set; sigaddset
    // fails with EINVAL for a number that is not a signal here.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal) == 0
    }
}

/// Keeps a signal's default action (terminate, for SIGINT, SIGTERM,
/// SIGHUP) while no reactor handles it.
///
/// signal-hook leaves its process-wide handler in place when the last
/// action for a signal is removed, so once a reactor stopped handling a
/// signal it would be ignored: Ctrl-C would no longer end a program that
/// goes on after its reactor stopped, nor SIGHUP one that no longer
/// reloads. A conditional default action, armed only while no reactor
/// handles the signal, restores the usual behaviour. Counted per signal,
/// since several reactors (threads) may handle one.
pub(crate) mod default_action {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, OnceLock};

    use libc::c_int;

    /// Per signal: how many handle it, and the flag that arms its default.
    type Table = Mutex<HashMap<c_int, (usize, Arc<AtomicBool>)>>;

    fn table() -> &'static Table {
        static TABLE: OnceLock<Table> = OnceLock::new();
        TABLE.get_or_init(Table::default)
    }

    /// A reactor starts (`true`) or stops (`false`) handling `sig`. Call
    /// it after installing the handler and after removing it.
    pub(crate) fn handling(sig: c_int, on: bool) {
        let mut table = table().lock().unwrap_or_else(|e| e.into_inner());
        let (count, default_on) = table.entry(sig).or_insert_with(|| {
            let flag = Arc::new(AtomicBool::new(false));
            if let Err(e) = signal_hook::flag::register_conditional_default(sig, flag.clone()) {
                log::warn!("cannot keep the default action of signal {sig}: {e}");
            }
            (0, flag)
        });
        if on {
            *count += 1;
        } else {
            *count = count.saturating_sub(1);
        }
        default_on.store(*count == 0, Ordering::SeqCst);
    }
}
