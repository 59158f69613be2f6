//! One reactor per core: [`ReactorGroup`] runs N reactors, each on its own
//! thread with its own state, started and stopped together (Seastar's and
//! nginx's model: no shared state, the kernel spreads the work).
//!
//! How a group starts and stops:
//!
//! 1. Each thread creates its reactor; once all exist, their
//!    [`Remote`]s are reachable through the [`GroupHandle`].
//! 2. The setup closure runs once per reactor, on that reactor's thread, in
//!    index order (reactor 0 first), so a setup can pass something it
//!    learned (the port a listener on port 0 got) to the ones after it.
//! 3. Once every setup succeeded and the group's signal handlers are in
//!    place, every reactor runs.
//! 4. A stop (SIGINT / SIGTERM, [`GroupHandle::stop`], a failed setup, a
//!    reactor whose `run` returned or failed, a panic on a reactor thread)
//!    tells every reactor to stop; each runs its normal graceful stop, and
//!    [`ReactorGroup::run`] returns once all have returned.
//!
//! Signals belong to the group, not to its reactors: the reactors run with
//! [`Reactor::set_install_signal_handlers`] off, and one more reactor on the
//! calling thread (idle, holding nothing but the signal handlers and a
//! handler standing for the group's members) turns the first SIGINT /
//! SIGTERM into one stop for all, so every reactor stops exactly once
//! whichever thread the signal lands on. That reactor's own stop waits for
//! every member, so its handlers stay in place until the group is done.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use crate::reason::panic_message;
use crate::{ConnId, Handler, Reactor, Ready, Remote, DEFAULT_SHUTDOWN_TIMEOUT};

/// Runs one reactor per thread (by default one per core), each with its own
/// state and its own listeners, with one stop for all.
///
/// Each reactor opens its own listening socket with `SO_REUSEPORT` on the
/// same address (`ListenOptions::reuse_port` for TCP, `UdpOptions::reuse_port`
/// for UDP in the transports crate): the kernel then spreads new
/// connections (and datagrams) over the reactors by a hash of the
/// address 4-tuple. Per-reactor state stays single-threaded: the setup
/// closure builds it on the reactor's own thread.
///
/// ## Stopping
/// Ctrl-C (SIGINT), SIGTERM, [`GroupHandle::stop`], a reactor that stops by
/// itself ([`Reactor::stop`] inside a callback), a failed setup or a panic
/// on a reactor thread stop every reactor: each stops accepting, runs its
/// shutdown triggers and closes its connections gracefully within its
/// shutdown timeout ([`set_shutdown_timeout`](ReactorGroup::set_shutdown_timeout)),
/// as [`Reactor::stop`] does, and [`run`](ReactorGroup::run) returns once
/// every reactor has returned. While the group is stopping a second
/// SIGINT / SIGTERM ends the process at once with that signal's default
/// action (a lone reactor aborts its connections instead; a group has no
/// way to abort another thread's): it is the way out of a stop that cannot
/// finish.
///
/// ## Reactors talking to each other
/// Reactors share nothing, but one can run a closure on another with
/// [`Remote::call`] (Twisted's `callFromThread`): the handle's
/// [`remote`](GroupHandle::remote) gives every reactor's remote, in setup
/// and in callbacks alike. The closure must be `Send`, so it carries owned
/// data (copied bytes, `Arc`s), runs on the other reactor's thread after
/// its current callback, and may reach that reactor's connections by the
/// ids *that* reactor handed out. Do not share: a [`Reactor`] (it is
/// `!Send`), `Rc` / `RefCell` state, and ids ([`ConnId`](crate::ConnId), a
/// UDP port's or a listener's handle), which name something in one reactor
/// only (used on another they name nothing, or something else). State
/// that truly must be global (a counter, a cache) goes behind an `Arc` of
/// atomics or a lock, kept off the per-event path: a lock every reactor
/// takes per request makes the cores wait for each other.
///
/// ## Scaling and its limits
/// Each reactor is exactly the single-threaded reactor, so per-request CPU
/// does not change with the number of reactors; throughput grows with the
/// cores until the kernel's shared parts (the loopback or NIC queues, the
/// listen-socket hash) or memory bandwidth bind. The kernel's hash does not
/// look at load: a few heavy connections can land on one reactor while
/// another idles, and connections never move. `SO_REUSEPORT` lets any
/// process of the same user bind the same port and take a share of its
/// traffic.
///
/// ```
/// use std::io;
/// use std::time::Duration;
/// use twistor_reactor::ReactorGroup;
///
/// let mut group = ReactorGroup::new(2); // 0 = one per core
/// group.set_install_signal_handlers(false); // a doc test shares its process
/// let handle = group.handle();
/// group
///     .run(|r, index| {
///         // Open this reactor's listeners here (with SO_REUSEPORT); this
///         // example only stops the group after a while.
///         if index == 1 {
///             let h = handle.clone();
///             r.call_later(Duration::from_millis(10), move |_| h.stop());
///         }
///         Ok::<(), io::Error>(())
///     })
///     .unwrap();
/// ```
pub struct ReactorGroup {
    shared: Arc<Shared>,
    signals: bool,
    shutdown_timeout: Duration,
}

/// A handle on a [`ReactorGroup`], usable from any thread: stop the whole
/// group, or reach one of its reactors. Cheap to clone.
///
/// ```
/// use twistor_reactor::ReactorGroup;
/// let group = ReactorGroup::new(3);
/// let handle = group.handle();
/// assert_eq!(handle.len(), 3);
/// assert!(handle.remote(0).is_none()); // reactors exist once `run` starts
/// handle.stop(); // a group stopped before it runs returns from `run` at once
/// assert!(handle.is_stopping());
/// ```
#[derive(Clone)]
pub struct GroupHandle {
    shared: Arc<Shared>,
}

/// Where the group is in its life; changed only by [`GroupState::advance`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reactors are being created; `created` of them exist.
    Creating { created: usize },
    /// Reactor `next`'s setup runs (the ones before it succeeded).
    SettingUp { next: usize },
    /// Every setup succeeded; waiting for the signal handlers.
    SetUp,
    /// Every reactor runs.
    Running,
    /// Every reactor has been told to stop (final).
    Stopping,
}

/// What moves the group from one phase to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// A reactor was created.
    Created,
    /// Reactor `index`'s setup succeeded.
    SetUp(usize),
    /// The group's own loop (signal handling) runs.
    SignalsReady,
    /// Stop everything.
    Stop,
}

struct GroupState {
    n: usize,
    phase: Phase,
    /// The group's loop is running (its signal handlers are installed).
    signals_ready: bool,
    remotes: Vec<Option<Remote>>,
    /// The reactor on the calling thread that owns the signal handlers,
    /// and the id of its handler standing for the members.
    coordinator: Option<(Remote, ConnId)>,
    /// Member threads that have not finished yet.
    live: usize,
    /// The first failure; later ones are logged.
    error: Option<io::Error>,
}

impl GroupState {
    /// Apply `ev`; returns whether the phase changed. A transition the
    /// lifecycle does not allow changes nothing.
    fn advance(&mut self, ev: Event) -> bool {
        let next = match (self.phase, ev) {
            (Phase::Stopping, _) => None,
            (_, Event::Stop) => Some(Phase::Stopping),
            (Phase::Creating { created }, Event::Created) if created + 1 < self.n => {
                Some(Phase::Creating { created: created + 1 })
            }
            (Phase::Creating { .. }, Event::Created) => Some(Phase::SettingUp { next: 0 }),
            (Phase::SettingUp { next }, Event::SetUp(i)) if i == next && i + 1 < self.n => {
                Some(Phase::SettingUp { next: i + 1 })
            }
            (Phase::SettingUp { next }, Event::SetUp(i)) if i == next => Some(if self.signals_ready {
                Phase::Running
            } else {
                Phase::SetUp
            }),
            (Phase::SetUp, Event::SignalsReady) => Some(Phase::Running),
            (_, Event::SignalsReady) => {
                self.signals_ready = true;
                None
            }
            (phase, ev) => {
                debug_assert!(false, "reactor group: {ev:?} in phase {phase:?}");
                None
            }
        };
        match next {
            Some(p) => {
                self.phase = p;
                true
            }
            None => false,
        }
    }
}

struct Shared {
    state: Mutex<GroupState>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Apply `ev` and wake every thread waiting for a phase.
    fn advance(&self, ev: Event) {
        let mut st = self.lock();
        if st.advance(ev) {
            if st.phase == Phase::Stopping {
                let coordinator = st.coordinator.as_ref().map(|(r, _)| r);
                for r in st.remotes.iter().flatten().chain(coordinator) {
                    let _ = r.stop();
                }
            }
            self.changed.notify_all();
        }
    }

    fn stop_all(&self) {
        self.advance(Event::Stop);
    }

    /// Record a failure (the first is returned by `run`) and stop the group.
    fn fail(&self, err: io::Error) {
        {
            let mut st = self.lock();
            match st.error {
                None => st.error = Some(err),
                Some(_) => log::error!("reactor group: {err}"),
            }
        }
        self.stop_all();
    }

    /// Wait until `ready` holds for the phase or the group stops; returns
    /// whether the group goes on.
    fn wait_for(&self, ready: impl Fn(Phase) -> bool) -> bool {
        let mut st = self.lock();
        loop {
            if st.phase == Phase::Stopping {
                return false;
            }
            if ready(st.phase) {
                return true;
            }
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Publish reactor `i`'s remote. A reactor made while the group is
    /// stopping is told to stop like the others.
    fn created(&self, i: usize, remote: Remote) {
        {
            let mut st = self.lock();
            if st.phase == Phase::Stopping {
                let _ = remote.stop();
            }
            st.remotes[i] = Some(remote);
        }
        self.advance(Event::Created);
    }

    fn set_coordinator(&self, remote: Remote, members: ConnId) {
        let mut st = self.lock();
        if st.phase == Phase::Stopping {
            let _ = remote.stop();
        }
        st.coordinator = Some((remote, members));
    }

    /// `count` member threads are done (or never started). When the last
    /// is, the coordinator's stop may end.
    fn finished(&self, count: usize) {
        let mut st = self.lock();
        st.live = st.live.saturating_sub(count);
        if st.live == 0 {
            if let Some((remote, members)) = &st.coordinator {
                let members = *members;
                let _ = remote.call(move |r| r.remove(members));
            }
        }
    }
}

/// The handler on the coordinator that stands for the group's members: its
/// shutdown stops them all, and it holds the coordinator's stop (and so
/// its signal handlers) until every member thread is done.
struct Members {
    shared: Arc<Shared>,
    /// The last SIGINT / SIGTERM received (0: none, or not handling them).
    last_signal: Arc<AtomicUsize>,
}

impl Handler for Members {
    fn ready(&mut self, _: &mut Reactor, _: ConnId, _: Ready) {}

    fn shutdown(&mut self, _: &mut Reactor, _: ConnId) {
        self.shared.stop_all();
    }

    /// Only a second signal while stopping gets here (the coordinator's
    /// deadline is out of reach): end the process as that signal would.
    fn abort(&mut self, r: &mut Reactor, id: ConnId) {
        let sig = self.last_signal.load(Ordering::SeqCst) as i32;
        if sig != 0 {
            log::warn!("signal {sig} again while the reactor group stops: ending the process");
            if let Err(e) = signal_hook::low_level::emulate_default_handler(sig) {
                log::error!("cannot end the process with signal {sig}: {e}");
            }
        }
        r.remove(id);
    }
}

impl ReactorGroup {
    /// A group of `threads` reactors; `0` means one per core
    /// ([`std::thread::available_parallelism`], or 1 where it is unknown).
    pub fn new(threads: usize) -> ReactorGroup {
        let n = if threads == 0 {
            thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        ReactorGroup {
            shared: Arc::new(Shared {
                state: Mutex::new(GroupState {
                    n,
                    phase: Phase::Creating { created: 0 },
                    signals_ready: false,
                    remotes: vec![None; n],
                    coordinator: None,
                    live: n,
                    error: None,
                }),
                changed: Condvar::new(),
            }),
            signals: true,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }

    /// How many reactors the group runs.
    pub fn len(&self) -> usize {
        self.shared.lock().n
    }

    /// Whether the group runs no reactor (never: a group has at least one).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A handle to stop the group or reach its reactors from anywhere.
    pub fn handle(&self) -> GroupHandle {
        GroupHandle {
            shared: self.shared.clone(),
        }
    }

    /// Whether `run` turns SIGINT / SIGTERM into a graceful stop of every
    /// reactor (default: yes, as [`Reactor::run`] does). Off, signals keep
    /// whatever disposition the program gave them.
    pub fn set_install_signal_handlers(&mut self, on: bool) {
        self.signals = on;
    }

    /// The shutdown timeout of every reactor (default
    /// [`DEFAULT_SHUTDOWN_TIMEOUT`]; see [`Reactor::set_shutdown_timeout`]).
    /// A setup may still set its own reactor's.
    pub fn set_shutdown_timeout(&mut self, d: Duration) {
        self.shutdown_timeout = d;
    }

    /// Start every reactor, run `setup(reactor, index)` once on each (on
    /// that reactor's thread, index 0 first), run them all until the group
    /// is stopped, and return once every reactor has returned.
    ///
    /// Returns the first failure: a setup's error (which stops the group
    /// before any reactor runs), a reactor whose `run` failed or panicked
    /// (which stops the others), or a reactor that could not be created.
    /// Errors keep their kind, with the reactor's index added to the
    /// message. A panic inside a protocol callback is not a failure: it ends
    /// that connection only, as on a lone reactor.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use twistor_reactor::ReactorGroup;
    ///
    /// let mut group = ReactorGroup::new(2);
    /// group.set_install_signal_handlers(false);
    /// let set_up = AtomicUsize::new(0);
    /// let err = group
    ///     .run(|_, index| {
    ///         set_up.fetch_add(1, Ordering::SeqCst);
    ///         if index == 1 {
    ///             return Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "port taken"));
    ///         }
    ///         Ok(())
    ///     })
    ///     .unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    /// assert_eq!(err.to_string(), "reactor 1: port taken");
    /// assert_eq!(set_up.load(Ordering::SeqCst), 2);
    /// ```
    pub fn run<F>(self, setup: F) -> io::Result<()>
    where
        F: Fn(&mut Reactor, usize) -> io::Result<()> + Sync,
    {
        let shared = &self.shared;
        let n = self.len();
        if shared.lock().phase == Phase::Stopping {
            return Ok(());
        }
        let mut coordinator = Reactor::new()?;
        coordinator.set_install_signal_handlers(self.signals);
        // Its stop ends when the members are done, never at a deadline.
        coordinator.set_shutdown_timeout(Duration::MAX);
        let last_signal = Arc::new(AtomicUsize::new(0));
        let members = Members {
            shared: shared.clone(),
            last_signal: last_signal.clone(),
        };
        let members = coordinator.insert_with(|_, _| Ok(Box::new(members)))?;
        shared.set_coordinator(coordinator.remote(), members);
        // Runs in the coordinator's first turn, once its signal handlers
        // are installed: only then may the members run. The signal number
        // is noted from then on, for a second signal (see `Members`).
        let s = shared.clone();
        let signals = self.signals;
        let noted = Arc::new(Mutex::new(Vec::new()));
        let n2 = noted.clone();
        coordinator.call_soon(move |_| {
            if signals {
                for sig in [libc::SIGINT, libc::SIGTERM] {
                    let flag = last_signal.clone();
                    match signal_hook::flag::register_usize(sig, flag, sig as usize) {
                        Ok(id) => n2.lock().unwrap_or_else(|e| e.into_inner()).push(id),
                        Err(e) => log::warn!("cannot note signal {sig}: {e}"),
                    }
                }
            }
            s.advance(Event::SignalsReady);
        });
        let timeout = self.shutdown_timeout;
        let setup = &setup;
        let coordinated = thread::scope(|scope| {
            let mut threads = Vec::with_capacity(n);
            for i in 0..n {
                let spawned = thread::Builder::new()
                    .name(format!("twistor-reactor-{i}"))
                    .spawn_scoped(scope, move || member(shared, i, setup, timeout));
                match spawned {
                    Ok(t) => threads.push(t),
                    Err(e) => {
                        shared.fail(io::Error::new(
                            e.kind(),
                            format!("reactor {i}: cannot start its thread: {e}"),
                        ));
                        shared.finished(n - i);
                        break;
                    }
                }
            }
            let res = catch_unwind(AssertUnwindSafe(|| coordinator.run()));
            // However the loop ended, every reactor is told to stop.
            shared.stop_all();
            for id in noted.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
                signal_hook::low_level::unregister(id);
            }
            drop(coordinator);
            for (i, t) in threads.into_iter().enumerate() {
                if let Err(p) = t.join() {
                    shared.fail(io::Error::other(format!(
                        "reactor {i} panicked: {}",
                        panic_message(&*p)
                    )));
                }
            }
            match res {
                Ok(r) => r,
                Err(p) => Err(io::Error::other(format!(
                    "the reactor group's signal loop panicked: {}",
                    panic_message(&*p)
                ))),
            }
        });
        let failure = shared.lock().error.take();
        match failure {
            Some(e) => Err(e),
            None => coordinated,
        }
    }
}

/// The life of reactor `i`, on its own thread. Every outcome is reported
/// to `shared`; nothing escapes.
fn member<F>(shared: &Shared, i: usize, setup: &F, timeout: Duration)
where
    F: Fn(&mut Reactor, usize) -> io::Result<()> + Sync,
{
    /// Reports the thread done however it ends.
    struct Done<'a>(&'a Shared);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.finished(1);
        }
    }
    let _done = Done(shared);
    let context = |e: io::Error| io::Error::new(e.kind(), format!("reactor {i}: {e}"));
    let panicked = |what: &str, p: Box<dyn std::any::Any + Send>| {
        io::Error::other(format!("reactor {i} panicked {what}: {}", panic_message(&*p)))
    };
    let mut r = match Reactor::new() {
        Ok(r) => r,
        Err(e) => return shared.fail(context(e)),
    };
    r.set_install_signal_handlers(false);
    r.set_shutdown_timeout(timeout);
    shared.created(i, r.remote());
    if !shared.wait_for(|p| p == Phase::SettingUp { next: i }) {
        // Stopped before this reactor was set up: nothing to stop.
        return;
    }
    match catch_unwind(AssertUnwindSafe(|| setup(&mut r, i))) {
        Ok(Ok(())) => shared.advance(Event::SetUp(i)),
        Ok(Err(e)) => shared.fail(context(e)),
        Err(p) => shared.fail(panicked("in its setup", p)),
    }
    // Run even when stopping: whatever the setup opened gets its graceful
    // stop (the stop is already asked for, so it comes at once).
    shared.wait_for(|p| p == Phase::Running);
    match catch_unwind(AssertUnwindSafe(|| r.run())) {
        Ok(Ok(())) => {
            if !shared.lock().phase.eq(&Phase::Stopping) {
                log::info!("reactor {i} stopped: stopping the group");
            }
            shared.stop_all();
        }
        Ok(Err(e)) => shared.fail(context(e)),
        Err(p) => shared.fail(panicked("in its loop", p)),
    }
    if let Err(p) = catch_unwind(AssertUnwindSafe(move || drop(r))) {
        shared.fail(panicked("while closing", p));
    }
}

impl GroupHandle {
    /// Stop every reactor of the group gracefully (see
    /// [`ReactorGroup`]). Idempotent; callable from any thread, including
    /// from a callback on one of the group's reactors.
    pub fn stop(&self) {
        self.shared.stop_all();
    }

    /// Whether the group is stopping (or has stopped).
    pub fn is_stopping(&self) -> bool {
        self.shared.lock().phase == Phase::Stopping
    }

    /// How many reactors the group runs.
    pub fn len(&self) -> usize {
        self.shared.lock().n
    }

    /// Whether the group runs no reactor (never: a group has at least one).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reactor `index`'s remote, to run a closure on it from another
    /// reactor or thread ([`Remote::call`]). Every reactor's remote exists
    /// before the first setup runs; `None` before that, or for an index out
    /// of range.
    ///
    /// ```
    /// use std::io;
    /// use std::sync::mpsc;
    /// use twistor_reactor::ReactorGroup;
    ///
    /// let mut group = ReactorGroup::new(2);
    /// group.set_install_signal_handlers(false);
    /// let handle = group.handle();
    /// let (tx, rx) = mpsc::channel();
    /// group
    ///     .run(|r, index| {
    ///         if index == 0 {
    ///             // Once running, reactor 0 asks reactor 1 to answer on a
    ///             // channel, then stops the group.
    ///             let (h, tx) = (handle.clone(), tx.clone());
    ///             r.call_soon(move |_| {
    ///                 let stop = h.clone();
    ///                 h.remote(1).unwrap().call(move |_| {
    ///                     tx.send("hello from reactor 1").unwrap();
    ///                     stop.stop();
    ///                 }).unwrap();
    ///             });
    ///         }
    ///         Ok::<(), io::Error>(())
    ///     })
    ///     .unwrap();
    /// assert_eq!(rx.recv().unwrap(), "hello from reactor 1");
    /// ```
    pub fn remote(&self, index: usize) -> Option<Remote> {
        self.shared.lock().remotes.get(index).cloned().flatten()
    }
}

impl std::fmt::Debug for ReactorGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.shared.lock();
        f.debug_struct("ReactorGroup")
            .field("reactors", &st.n)
            .field("phase", &st.phase)
            .finish()
    }
}

impl std::fmt::Debug for GroupHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.shared.lock();
        write!(f, "GroupHandle({} reactors, {:?})", st.n, st.phase)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(n: usize) -> GroupState {
        GroupState {
            n,
            phase: Phase::Creating { created: 0 },
            signals_ready: false,
            remotes: vec![None; n],
            coordinator: None,
            live: n,
            error: None,
        }
    }

    #[test]
    fn phases_follow_creation_setup_in_order_and_signals() {
        let mut st = state(2);
        assert!(st.advance(Event::Created));
        assert_eq!(st.phase, Phase::Creating { created: 1 });
        assert!(st.advance(Event::Created));
        assert_eq!(st.phase, Phase::SettingUp { next: 0 });
        assert!(st.advance(Event::SetUp(0)));
        // The group's loop may start before the setups end.
        assert!(!st.advance(Event::SignalsReady));
        assert!(st.advance(Event::SetUp(1)));
        assert_eq!(st.phase, Phase::Running);
        assert!(st.advance(Event::Stop));
        assert!(!st.advance(Event::Stop), "stopping is final");
        assert!(!st.advance(Event::Created));
        assert_eq!(st.phase, Phase::Stopping);
    }

    #[test]
    fn running_waits_for_the_signal_handlers() {
        let mut st = state(1);
        st.advance(Event::Created);
        st.advance(Event::SetUp(0));
        assert_eq!(st.phase, Phase::SetUp);
        assert!(st.advance(Event::SignalsReady));
        assert_eq!(st.phase, Phase::Running);
    }

    #[test]
    #[cfg(not(debug_assertions))]
    fn a_setup_out_of_turn_is_refused() {
        let mut st = state(2);
        st.advance(Event::Created);
        st.advance(Event::Created);
        assert!(!st.advance(Event::SetUp(1)));
        assert_eq!(st.phase, Phase::SettingUp { next: 0 });
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "SetUp(1) in phase SettingUp")]
    fn a_setup_out_of_turn_is_refused() {
        let mut st = state(2);
        st.advance(Event::Created);
        st.advance(Event::Created);
        st.advance(Event::SetUp(1));
    }

    #[test]
    fn zero_means_one_per_core() {
        let cores = thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(ReactorGroup::new(0).len(), cores);
        assert_eq!(ReactorGroup::new(3).handle().len(), 3);
    }

    #[test]
    fn a_stop_from_another_thread_stops_every_reactor() {
        let mut group = ReactorGroup::new(3);
        group.set_install_signal_handlers(false);
        let handle = group.handle();
        let stopped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let st = stopped.clone();
        let h = handle.clone();
        let stopper = thread::spawn(move || {
            // Every reactor reports from its first turn; then stop them.
            for _ in 0..3 {
                rx.recv_timeout(Duration::from_secs(20)).expect("a reactor runs");
            }
            h.stop();
        });
        group
            .run(|r, _| {
                let st = st.clone();
                r.add_shutdown_trigger(move |_| {
                    st.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                });
                let tx = tx.clone();
                r.call_soon(move |_| tx.send(()).unwrap());
                Ok(())
            })
            .unwrap();
        stopper.join().unwrap();
        assert_eq!(stopped.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert!(handle.is_stopping());
    }

    #[test]
    fn a_reactor_that_stops_by_itself_stops_the_group() {
        let mut group = ReactorGroup::new(2);
        group.set_install_signal_handlers(false);
        group
            .run(|r, i| {
                if i == 0 {
                    r.call_soon(|r| r.stop());
                }
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn a_panicking_setup_is_an_error_and_later_setups_do_not_run() {
        let mut group = ReactorGroup::new(3);
        group.set_install_signal_handlers(false);
        let ran = std::sync::atomic::AtomicUsize::new(0);
        let err = group
            .run(|_, i| {
                ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i == 1 {
                    panic!("no config");
                }
                Ok(())
            })
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("reactor 1 panicked in its setup: no config"),
            "{err}"
        );
        assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
