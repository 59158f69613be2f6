//! The event loop: one thread, one mio `Poll`, a slab of handlers.
//!
//! Each registered source (a connection, a listener, a datagram port, a
//! user's own file descriptor) is a [`Handler`] in a slab slot. While a
//! handler runs it is taken out of its slot, so it can use the whole
//! `&mut Reactor` (timers, new connections, `call_on`) without aliasing; work
//! addressed to a handler that is running is queued and delivered after it
//! returns, which is what keeps protocol callbacks from being re-entered.

use std::collections::VecDeque;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Registry, Token};
use slab::Slab;

use crate::reason::panic_message;
use crate::threads::{Remote, RemoteQueue, ThreadPool};
use crate::timer::{DelayedCall, TimerFn, Timers};
use crate::{ConnId, Gone, Protocol, ProtocolCall, Transport};

/// Size of the reactor's shared read buffer: one buffer for every
/// connection; `data_received` borrows a slice of it.
pub const READ_BUFFER_SIZE: usize = 64 * 1024;

/// Default time `stop()` gives connections to flush before aborting them.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

const WAKER_TOKEN: Token = Token(usize::MAX);
const SIGNAL_TOKEN: Token = Token(usize::MAX - 1);

/// Readiness delivered to a [`Handler`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ready {
    /// The source can be read (or has hit EOF or an error).
    pub readable: bool,
    /// The source can be written.
    pub writable: bool,
    /// The peer closed its sending side.
    pub read_closed: bool,
    /// An error is pending on the source.
    pub error: bool,
}

impl Ready {
    /// Readable only (what [`Reactor::requeue`] usually carries).
    pub const READABLE: Ready = Ready {
        readable: true,
        writable: false,
        read_closed: false,
        error: false,
    };
    /// Writable only.
    pub const WRITABLE: Ready = Ready {
        readable: false,
        writable: true,
        read_closed: false,
        error: false,
    };
    /// Nothing: a wake-up with no readiness (used to run deferred work).
    pub const NONE: Ready = Ready {
        readable: false,
        writable: false,
        read_closed: false,
        error: false,
    };

    fn from_event(e: &mio::event::Event) -> Ready {
        Ready {
            readable: e.is_readable() || e.is_read_closed() || e.is_error(),
            writable: e.is_writable() || e.is_write_closed() || e.is_error(),
            read_closed: e.is_read_closed(),
            error: e.is_error(),
        }
    }

    fn merge(self, o: Ready) -> Ready {
        Ready {
            readable: self.readable | o.readable,
            writable: self.writable | o.writable,
            read_closed: self.read_closed | o.read_closed,
            error: self.error | o.error,
        }
    }
}

/// A registered source's event handler: the reactor's extension API.
///
/// The transports crate builds TCP, UDP, Unix sockets and pipes on nothing
/// but this trait, so a user can add a transport of their own (a serial
/// port, an inotify descriptor) the same way, as with Twisted's
/// `FileDescriptor` or libuv's `uv_poll_t`. Register the mio source with
/// `id.token()` inside [`Reactor::insert_with`]; readiness for that token
/// arrives at [`ready`](Handler::ready).
///
/// A handler ends itself with [`Reactor::remove`]; it is dropped (closing
/// its source) once its callback returns.
///
/// ```
/// use std::io::Read;
/// use mio::{Interest, unix::pipe};
/// use twistor_reactor::{ConnId, Handler, Reactor, Ready};
///
/// /// Reads a pipe and stops the reactor at EOF.
/// struct Drain(pipe::Receiver, usize);
/// impl Handler for Drain {
///     fn ready(&mut self, r: &mut Reactor, id: ConnId, _: Ready) {
///         let mut buf = [0u8; 64];
///         loop {
///             match self.0.read(&mut buf) {
///                 Ok(0) => { r.remove(id); r.stop(); return; }
///                 Ok(n) => self.1 += n,
///                 Err(_) => return, // WouldBlock: wait for the next edge
///             }
///         }
///     }
///     fn shutdown(&mut self, r: &mut Reactor, id: ConnId) { r.remove(id) }
/// }
///
/// let mut r = Reactor::new().unwrap();
/// let (tx, mut rx) = pipe::new().unwrap();
/// r.insert_with(|r, id| {
///     r.registry().register(&mut rx, id.token(), Interest::READABLE)?;
///     Ok(Box::new(Drain(rx, 0)))
/// }).unwrap();
/// std::thread::spawn(move || { use std::io::Write; let mut tx = tx; tx.write_all(b"bye").unwrap(); });
/// r.run().unwrap();
/// ```
pub trait Handler: 'static {
    /// The source is ready (or the handler was requeued / woken).
    fn ready(&mut self, r: &mut Reactor, id: ConnId, ready: Ready);

    /// Run a closure against this handler's protocol (see
    /// [`Reactor::call_on`]). Handlers without a protocol drop it.
    fn call(&mut self, r: &mut Reactor, id: ConnId, call: ProtocolCall) {
        let _ = (r, id, call);
        log::debug!("{id}: call_on delivered to a handler without a protocol; dropped");
    }

    /// The reactor is stopping: stop accepting, or start a graceful close.
    /// Call [`Reactor::remove`] once done (a listener at once, a connection
    /// after its buffer is flushed).
    fn shutdown(&mut self, r: &mut Reactor, id: ConnId);

    /// The shutdown deadline passed: close now. The default removes the
    /// handler, dropping (and so closing) its source.
    fn abort(&mut self, r: &mut Reactor, id: ConnId) {
        r.remove(id);
    }

    /// Whether `stop()` waits for this handler to go (connections: yes;
    /// listeners and helpers: they go at once anyway).
    fn holds_shutdown(&self) -> bool {
        true
    }
}

struct Slot {
    gen: u32,
    /// `None` while the handler runs (or before `insert_with` fills it).
    handler: Option<Box<dyn Handler>>,
    /// `remove` was called while the handler was out of its slot.
    doomed: bool,
    /// Work that arrived while the handler was out of its slot.
    deferred: Vec<Pending>,
    /// The turn in which this slot was last put on the dispatch list, and
    /// its place there (merges readiness for one id into one dispatch).
    mark: u64,
    pos: u32,
}

enum Pending {
    Ready(Ready),
    Call(ProtocolCall),
}

enum Queued {
    Soon(Box<dyn FnOnce(&mut Reactor)>),
    Call(ConnId, ProtocolCall),
}

type ReactorFn = Box<dyn FnOnce(&mut Reactor)>;
type DeferredDone = Box<dyn FnOnce(&mut Reactor, Box<dyn std::any::Any + Send>)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Running,
    Stopping { deadline: Instant },
}

/// The event loop (Twisted's reactor). One per thread; `!Send`.
///
/// ```
/// use std::time::Duration;
/// use twistor_reactor::Reactor;
/// let mut r = Reactor::new().unwrap();
/// r.call_later(Duration::from_millis(1), |r| r.stop());
/// r.run().unwrap(); // returns once stopped
/// ```
pub struct Reactor {
    poll: Poll,
    events: Events,
    slots: Slab<Slot>,
    gens: Vec<u32>,
    pub(crate) timers: Timers,
    manual_now: Option<Instant>,
    read_buf: Vec<u8>,
    requeued: Vec<(ConnId, Ready)>,
    /// The other half of a double buffer with `requeued`: the list a turn
    /// dispatches from, kept with its capacity so a steady loop never
    /// allocates for requeues.
    requeued_spare: Vec<(ConnId, Ready)>,
    queue: VecDeque<Queued>,
    remote: RemoteQueue,
    pool: Option<ThreadPool>,
    deferred: Slab<DeferredDone>,
    state: State,
    stop_requested: bool,
    shutdown_triggers: Vec<ReactorFn>,
    shutdown_timeout: Duration,
    install_signals: bool,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    turns: u64,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Reactor {
    /// A reactor on the real clock.
    pub fn new() -> io::Result<Reactor> {
        let poll = Poll::new()?;
        let remote = RemoteQueue::new(poll.registry(), WAKER_TOKEN)?;
        Ok(Reactor {
            poll,
            events: Events::with_capacity(1024),
            slots: Slab::new(),
            gens: Vec::new(),
            timers: Timers::new(),
            manual_now: None,
            read_buf: vec![0; READ_BUFFER_SIZE],
            requeued: Vec::new(),
            requeued_spare: Vec::new(),
            queue: VecDeque::new(),
            remote,
            pool: None,
            deferred: Slab::new(),
            state: State::Idle,
            stop_requested: false,
            shutdown_triggers: Vec::new(),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            install_signals: true,
            signals: None,
            turns: 0,
            _not_send: std::marker::PhantomData,
        })
    }

    /// A reactor whose timers follow a manual clock (Twisted's
    /// `task.Clock`): time moves only with [`advance`](Reactor::advance), so
    /// timeout logic is tested without sleeping. Its `run()` does not install
    /// signal handlers.
    pub fn with_manual_clock() -> io::Result<Reactor> {
        let mut r = Reactor::new()?;
        r.manual_now = Some(Instant::now());
        r.install_signals = false;
        Ok(r)
    }

    /// The reactor's idea of now: the real clock, or the manual one.
    pub fn now(&self) -> Instant {
        self.manual_now.unwrap_or_else(Instant::now)
    }

    /// Whether this reactor runs on a manual clock.
    pub fn is_manual_clock(&self) -> bool {
        self.manual_now.is_some()
    }

    /// Move the manual clock forward by `d`, running every timer that falls
    /// due (in deadline order, each at its own time) and all queued work.
    ///
    /// # Panics
    /// On a reactor built with [`Reactor::new`] (real clock).
    pub fn advance(&mut self, d: Duration) {
        let now = self
            .manual_now
            .expect("advance() needs Reactor::with_manual_clock()");
        let target = crate::timer::after(now, d);
        loop {
            self.run_queued();
            match self.timers.next_deadline() {
                Some(t) if t <= target => {
                    if t > self.manual_now.unwrap() {
                        self.manual_now = Some(t);
                    }
                    self.run_timers();
                }
                _ => break,
            }
        }
        self.manual_now = Some(target);
        self.run_queued();
    }

    /// The mio registry, to register a source with `id.token()`.
    pub fn registry(&self) -> &Registry {
        self.poll.registry()
    }

    /// How many loop turns have run (a spinning loop shows up here).
    pub fn turns(&self) -> u64 {
        self.turns
    }

    /// How many handlers (connections, listeners...) are registered.
    pub fn handler_count(&self) -> usize {
        self.slots.len()
    }

    /// How many timers are pending.
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// How many timer-queue entries the loop has examined so far: a cost
    /// counter. A turn with no timer due examines one or two, however many
    /// timers are pending; each timer that fires, or was cancelled or
    /// postponed, adds about one more.
    ///
    /// ```
    /// use std::time::Duration;
    /// let mut r = twistor_reactor::Reactor::with_manual_clock().unwrap();
    /// for i in 0..1000 {
    ///     r.call_later(Duration::from_secs(60 + i), |_| {});
    /// }
    /// let before = r.timer_work();
    /// r.advance(Duration::from_secs(1)); // nothing due
    /// assert!(r.timer_work() - before <= 2);
    /// ```
    pub fn timer_work(&self) -> u64 {
        self.timers.examined()
    }

    /// Whether work is waiting for the next loop turn: requeued readiness
    /// (e.g. from `resume_reading`) or queued calls. A test pump keeps
    /// turning while there is.
    pub fn has_queued_work(&self) -> bool {
        !self.requeued.is_empty() || !self.queue.is_empty()
    }

    // ----- handlers: the extension API ---------------------------------

    /// Add a handler. `make` receives the reactor and the new id; it should
    /// register its mio source with `id.token()` and return the handler. If
    /// it fails, the slot is released and the error returned.
    pub fn insert_with<F>(&mut self, make: F) -> io::Result<ConnId>
    where
        F: FnOnce(&mut Reactor, ConnId) -> io::Result<Box<dyn Handler>>,
    {
        let key = self.slots.vacant_key();
        if key >= self.gens.len() {
            self.gens.resize(key + 1, 0);
        }
        let gen = self.gens[key];
        self.slots.insert(Slot {
            gen,
            handler: None,
            doomed: false,
            deferred: Vec::new(),
            mark: 0,
            pos: 0,
        });
        let id = ConnId::new(key, gen);
        match make(self, id) {
            Ok(h) => {
                let slot = &mut self.slots[key];
                if slot.doomed {
                    self.free(key);
                    drop(h);
                } else {
                    slot.handler = Some(h);
                    self.flush_deferred(id);
                    if matches!(self.state, State::Stopping { .. }) {
                        // Registered after stop() began (by a trigger, a
                        // timer, a reconnect): it stops like the rest
                        // rather than holding run() until the deadline.
                        self.call_soon(move |r| r.with_handler(id, |h, r| h.shutdown(r, id)));
                    }
                }
                Ok(id)
            }
            Err(e) => {
                self.free(key);
                Err(e)
            }
        }
    }

    /// Remove a handler (typically itself). If it is running, it is dropped
    /// when its callback returns. Stale ids are ignored.
    pub fn remove(&mut self, id: ConnId) {
        let Some(slot) = self.slots.get_mut(id.index()) else {
            return;
        };
        if slot.gen != id.generation() {
            return;
        }
        if slot.handler.is_some() {
            let h = slot.handler.take();
            self.free(id.index());
            drop(h);
        } else {
            slot.doomed = true;
        }
    }

    fn free(&mut self, key: usize) {
        self.slots.remove(key);
        self.gens[key] = self.gens[key].wrapping_add(1);
    }

    /// Whether `id` names a live handler.
    pub fn contains(&self, id: ConnId) -> bool {
        matches!(self.slots.get(id.index()), Some(s) if s.gen == id.generation() && !s.doomed)
    }

    /// Deliver readiness to `id` on the next loop turn, e.g. because a read
    /// stopped at the fairness budget with data still waiting.
    pub fn requeue(&mut self, id: ConnId, ready: Ready) {
        self.requeued.push((id, ready));
    }

    /// Take the shared read buffer (give it back with
    /// [`put_read_buffer`](Reactor::put_read_buffer)). If it is already out,
    /// a fresh one is made.
    pub fn take_read_buffer(&mut self) -> Vec<u8> {
        if self.read_buf.is_empty() {
            vec![0; READ_BUFFER_SIZE]
        } else {
            std::mem::take(&mut self.read_buf)
        }
    }

    /// Return the shared read buffer.
    pub fn put_read_buffer(&mut self, buf: Vec<u8>) {
        if self.read_buf.is_empty() && buf.len() >= READ_BUFFER_SIZE {
            self.read_buf = buf;
        }
    }

    /// Deliver readiness to `id` now, unless it is running (then after it
    /// returns). For a transport that must run a new handler at once: a
    /// listener calls it so `connection_made` runs inside its accept loop.
    pub fn dispatch_now(&mut self, id: ConnId, ready: Ready) {
        self.dispatch(id, Pending::Ready(ready));
    }

    fn dispatch(&mut self, id: ConnId, work: Pending) {
        let Some(slot) = self.slots.get_mut(id.index()) else {
            return;
        };
        if slot.gen != id.generation() || slot.doomed {
            return;
        }
        let Some(mut h) = slot.handler.take() else {
            // Running (or being built): deliver after it returns.
            slot.deferred.push(work);
            return;
        };
        let res = catch_unwind(AssertUnwindSafe(|| match work {
            Pending::Ready(ready) => h.ready(self, id, ready),
            Pending::Call(f) => h.call(self, id, f),
        }));
        self.put_back(id, h, res);
    }

    fn put_back(&mut self, id: ConnId, h: Box<dyn Handler>, res: std::thread::Result<()>) {
        if let Err(p) = res {
            log::error!("{id}: handler panicked: {}; closing it", panic_message(&*p));
            self.free(id.index());
            // Dropping a handler after its panic may panic again; contain it.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(h)));
            return;
        }
        match self.slots.get_mut(id.index()) {
            Some(slot) if slot.gen == id.generation() => {
                if slot.doomed {
                    self.free(id.index());
                    drop(h);
                } else {
                    slot.handler = Some(h);
                    self.flush_deferred(id);
                }
            }
            // The slot went while the handler ran (the reactor was cleared).
            _ => drop(h),
        }
    }

    fn flush_deferred(&mut self, id: ConnId) {
        let slot = &mut self.slots[id.index()];
        if !slot.deferred.is_empty() {
            let work = std::mem::take(&mut slot.deferred);
            for w in work {
                match w {
                    Pending::Ready(r) => self.requeued.push((id, r)),
                    Pending::Call(f) => self.queue.push_back(Queued::Call(id, f)),
                }
            }
        }
    }

    // ----- reaching connections by id ------------------------------------

    /// Run `f` against the protocol and transport of connection `id`, after
    /// the current callback returns (never re-entering a running protocol).
    /// Returns [`Gone`] if `id` is stale; if the connection ends before the
    /// call is delivered, the call is dropped.
    ///
    /// ```
    /// # use twistor_reactor::*;
    /// # let mut r = Reactor::new().unwrap();
    /// # let id = twistor_reactor::ConnId::from_token(mio::Token(7));
    /// // Anything holding an id can write to that connection:
    /// let res = r.call_on(id, |_proto, t| t.write(b"hello\r\n"));
    /// assert!(res.is_err()); // this id names nothing
    /// ```
    pub fn call_on(
        &mut self,
        id: ConnId,
        f: impl FnOnce(&mut dyn Protocol, &mut dyn Transport) + 'static,
    ) -> Result<(), Gone> {
        if !self.contains(id) {
            return Err(Gone);
        }
        self.queue.push_back(Queued::Call(id, Box::new(f)));
        Ok(())
    }

    /// Write `data` to connection `id` (queued like [`call_on`](Reactor::call_on)).
    pub fn write_to(&mut self, id: ConnId, data: impl Into<Vec<u8>>) -> Result<(), Gone> {
        let data = data.into();
        self.call_on(id, move |_, t| t.write(&data))
    }

    /// Gracefully close connection `id` (`lose_connection`).
    pub fn close(&mut self, id: ConnId) -> Result<(), Gone> {
        self.call_on(id, |_, t| t.lose_connection())
    }

    /// Run `f` on the loop thread after the current callback returns
    /// (asyncio's `call_soon`).
    pub fn call_soon(&mut self, f: impl FnOnce(&mut Reactor) + 'static) {
        self.queue.push_back(Queued::Soon(Box::new(f)));
    }

    // ----- timers ----------------------------------------------------------

    /// Run `f` after `delay` (Twisted's `reactor.callLater`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let mut r = twistor_reactor::Reactor::with_manual_clock().unwrap();
    /// let call = r.call_later(Duration::from_secs(1), |_| println!("tick"));
    /// r.advance(Duration::from_secs(1));
    /// assert!(!call.active(&r));
    /// ```
    pub fn call_later(&mut self, delay: Duration, f: impl FnOnce(&mut Reactor) + 'static) -> DelayedCall {
        let deadline = crate::timer::after(self.now(), delay);
        self.timers.schedule(deadline, TimerFn::Once(Box::new(f)))
    }

    /// Run `f` against connection `id`'s protocol after `delay`: how a
    /// protocol schedules a call to itself. If the connection is gone by
    /// then, nothing happens.
    pub fn call_later_on(
        &mut self,
        id: ConnId,
        delay: Duration,
        f: impl FnOnce(&mut dyn Protocol, &mut dyn Transport) + 'static,
    ) -> DelayedCall {
        self.call_later(delay, move |r| {
            let _ = r.call_on(id, f);
        })
    }

    fn run_timers(&mut self) -> bool {
        let now = self.now();
        let mut ran = false;
        while let Some((h, f)) = self.timers.pop_due(now) {
            ran = true;
            match f {
                TimerFn::Once(f) => {
                    if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(self))) {
                        log::error!("timer callback panicked: {}", panic_message(&*p));
                    }
                }
                TimerFn::Repeat { mut f, interval } => match catch_unwind(AssertUnwindSafe(|| f(self))) {
                    Ok(()) => self.timers.rearm(h, TimerFn::Repeat { f, interval }, now),
                    Err(p) => {
                        log::error!("looping call panicked: {}; it is stopped", panic_message(&*p));
                        self.timers.discard(h);
                    }
                },
            }
            self.run_queued();
        }
        ran
    }

    // ----- threads -----------------------------------------------------------

    /// A handle other threads use to run closures on this loop
    /// (`call_from_thread`) or stop it. `Send + Clone`.
    pub fn remote(&self) -> Remote {
        self.remote.handle()
    }

    /// Run blocking `work` on a small thread pool and `done` with its result
    /// back on the loop thread (Twisted's `deferToThread`). If `work`
    /// panics, `done` gets `Err` with the panic message.
    ///
    /// ```
    /// let mut r = twistor_reactor::Reactor::new().unwrap();
    /// r.defer_to_thread(|| 6 * 7, |r, answer| { assert_eq!(answer, Ok(42)); r.stop() });
    /// r.run().unwrap();
    /// ```
    pub fn defer_to_thread<T: Send + 'static>(
        &mut self,
        work: impl FnOnce() -> T + Send + 'static,
        done: impl FnOnce(&mut Reactor, Result<T, String>) + 'static,
    ) {
        let key = self.deferred.insert(Box::new(move |r, any| {
            let res = *any.downcast::<Result<T, String>>().expect("result type");
            done(r, res)
        }));
        let remote = self.remote.handle();
        let pool = self.pool.get_or_insert_with(ThreadPool::new);
        pool.submit(Box::new(move || {
            let res = catch_unwind(AssertUnwindSafe(work)).map_err(|p| panic_message(&*p));
            let boxed: Box<dyn std::any::Any + Send> = Box::new(res);
            let _ = remote.call(move |r| r.finish_deferred(key, boxed));
        }));
    }

    fn finish_deferred(&mut self, key: usize, res: Box<dyn std::any::Any + Send>) {
        if let Some(done) = self.deferred.try_remove(key) {
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| done(self, res))) {
                log::error!("defer_to_thread callback panicked: {}", panic_message(&*p));
            }
        }
    }

    // ----- running and stopping ----------------------------------------------

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

    /// Run until stopped. Returns `Ok(())` once `stop()` has finished.
    ///
    /// `run()` may be called again after it returns: the loop carries on
    /// with whatever is still registered (timers survive a stop; listeners
    /// and connections do not). Calling it from inside a callback is an
    /// error, since the loop is already running.
    pub fn run(&mut self) -> io::Result<()> {
        if self.state != State::Idle {
            return Err(io::Error::other("the reactor is already running"));
        }
        self.state = State::Running;
        if self.install_signals && self.signals.is_none() {
            match signal_hook_mio::v1_0::Signals::new([libc::SIGINT, libc::SIGTERM]) {
                Ok(mut s) => {
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut s, SIGNAL_TOKEN, mio::Interest::READABLE)
                    {
                        self.state = State::Idle;
                        return Err(e);
                    }
                    signal_default::handling(true);
                    self.signals = Some(s);
                }
                Err(e) => log::warn!("cannot install signal handlers: {e}"),
            }
        }
        let res = self.run_loop(None);
        if let Some(mut s) = self.signals.take() {
            let _ = self.poll.registry().deregister(&mut s);
            drop(s);
            signal_default::handling(false);
        }
        self.state = State::Idle;
        self.stop_requested = false;
        res
    }

    /// Run loop turns until `done` returns true or `timeout` passes;
    /// returns whether `done` became true. A test helper: wait on the event,
    /// with a bound. Does not install signal handlers; `stop()` is honoured.
    pub fn run_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&mut Reactor) -> bool,
    ) -> io::Result<bool> {
        if self.state != State::Idle {
            return Err(io::Error::other("the reactor is already running"));
        }
        self.state = State::Running;
        let deadline = crate::timer::after(Instant::now(), timeout);
        let res = self.run_loop(Some((deadline, &mut done)));
        self.state = State::Idle;
        self.stop_requested = false;
        res.map(|_| done(self))
    }

    #[allow(clippy::type_complexity)]
    fn run_loop(
        &mut self,
        mut until: Option<(Instant, &mut dyn FnMut(&mut Reactor) -> bool)>,
    ) -> io::Result<()> {
        loop {
            if let Some((deadline, done)) = until.as_mut() {
                if done(self) || Instant::now() >= *deadline {
                    return Ok(());
                }
            }
            if self.stop_requested && self.state == State::Running {
                self.begin_stop();
            }
            if let State::Stopping { deadline } = self.state {
                if !self
                    .slots
                    .iter()
                    .any(|(_, s)| s.handler.as_ref().is_some_and(|h| h.holds_shutdown()))
                {
                    self.finish_stop();
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    log::warn!("shutdown timeout: aborting {} connection(s)", self.slots.len());
                    self.abort_all();
                    self.finish_stop();
                    return Ok(());
                }
            }
            let timeout = self.poll_timeout(until.as_ref().map(|(d, _)| *d));
            self.turn(timeout)?;
        }
    }

    /// One loop turn: poll, dispatch, timers, queued work.
    fn turn(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.turns += 1;
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        // Requeued work from the previous turn goes first, then new events;
        // readiness for one id is merged into one dispatch (found in O(1)
        // through the slot's mark).
        let turn = self.turns;
        let spare = std::mem::take(&mut self.requeued_spare);
        let mut requeued = std::mem::replace(&mut self.requeued, spare);
        let mut merged = 0;
        for i in 0..requeued.len() {
            let (id, ready) = requeued[i];
            match self.mark(id, turn, merged) {
                Some(pos) => requeued[pos].1 = requeued[pos].1.merge(ready),
                None => {
                    requeued[merged] = (id, ready);
                    merged += 1;
                }
            }
        }
        requeued.truncate(merged);
        let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        for e in events.iter() {
            match e.token() {
                WAKER_TOKEN => self.run_remote(),
                SIGNAL_TOKEN => self.on_signal(),
                t => {
                    let id = ConnId::from_token(t);
                    let ready = Ready::from_event(e);
                    match self.mark(id, turn, requeued.len()) {
                        Some(pos) => requeued[pos].1 = requeued[pos].1.merge(ready),
                        None => requeued.push((id, ready)),
                    }
                }
            }
        }
        events.clear();
        self.events = events;
        for (id, ready) in requeued.drain(..) {
            self.dispatch(id, Pending::Ready(ready));
            self.run_queued();
        }
        // Handlers requeued during this turn went into `self.requeued` (the
        // spare, with its capacity); keep the drained list as the next spare.
        self.requeued_spare = requeued;
        if self.manual_now.is_none() {
            self.run_timers();
        }
        self.run_queued();
        Ok(())
    }

    /// One loop turn that does not wait: dispatch whatever is ready or
    /// requeued and run queued work (and due timers, on the real clock).
    /// For tests and for embedding the reactor in another loop.
    pub fn run_pending(&mut self) -> io::Result<()> {
        self.turn(Some(Duration::ZERO))
    }

    /// Note that `id` is dispatched this turn at `pos`, or return the
    /// position it already has.
    fn mark(&mut self, id: ConnId, turn: u64, pos: usize) -> Option<usize> {
        let slot = self.slots.get_mut(id.index())?;
        if slot.mark == turn {
            return Some(slot.pos as usize);
        }
        slot.mark = turn;
        slot.pos = pos as u32;
        None
    }

    fn poll_timeout(&mut self, until: Option<Instant>) -> Option<Duration> {
        if !self.requeued.is_empty()
            || !self.queue.is_empty()
            || self.stop_requested && self.state == State::Running
        {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let mut wake = until;
        if let State::Stopping { deadline } = self.state {
            wake = Some(wake.map_or(deadline, |w| w.min(deadline)));
        }
        if self.manual_now.is_none() {
            if let Some(t) = self.timers.next_deadline() {
                wake = Some(wake.map_or(t, |w| w.min(t)));
            }
        }
        // Round up to whole milliseconds (epoll's resolution) so a timer
        // is never woken for a fraction early and spun on.
        wake.map(|w| {
            let d = w.saturating_duration_since(now);
            let ms = d.as_nanos().div_ceil(1_000_000);
            Duration::from_millis(ms as u64)
        })
    }

    /// Run queued `call_soon` / `call_on` work, bounded so that work which
    /// keeps queueing more cannot starve I/O.
    fn run_queued(&mut self) {
        let mut budget = self.queue.len().max(1024);
        while budget > 0 {
            budget -= 1;
            let Some(q) = self.queue.pop_front() else {
                return;
            };
            match q {
                Queued::Soon(f) => {
                    if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(self))) {
                        log::error!("call_soon callback panicked: {}", panic_message(&*p));
                    }
                }
                Queued::Call(id, f) => self.dispatch(id, Pending::Call(f)),
            }
        }
    }

    fn run_remote(&mut self) {
        for f in self.remote.drain() {
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(self))) {
                log::error!("call_from_thread callback panicked: {}", panic_message(&*p));
            }
            self.run_queued();
        }
        if self.remote.take_stop() {
            self.stop();
        }
    }

    fn on_signal(&mut self) {
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

    fn begin_stop(&mut self) {
        log::debug!("stopping: {} handler(s)", self.slots.len());
        self.state = State::Stopping {
            deadline: crate::timer::after(Instant::now(), self.shutdown_timeout),
        };
        for f in std::mem::take(&mut self.shutdown_triggers) {
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(self))) {
                log::error!("shutdown trigger panicked: {}", panic_message(&*p));
            }
        }
        let ids: Vec<ConnId> = self.slots.iter().map(|(k, s)| ConnId::new(k, s.gen)).collect();
        for id in ids {
            self.with_handler(id, |h, r| h.shutdown(r, id));
        }
        self.run_queued();
    }

    fn abort_all(&mut self) {
        let ids: Vec<ConnId> = self.slots.iter().map(|(k, s)| ConnId::new(k, s.gen)).collect();
        for id in ids {
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
        for g in self.gens.iter_mut() {
            *g = g.wrapping_add(1);
        }
        self.queue.clear();
        self.requeued.clear();
    }

    fn with_handler(&mut self, id: ConnId, f: impl FnOnce(&mut dyn Handler, &mut Reactor)) {
        let Some(slot) = self.slots.get_mut(id.index()) else {
            return;
        };
        if slot.gen != id.generation() || slot.doomed {
            return;
        }
        let Some(mut h) = slot.handler.take() else {
            return;
        };
        let res = catch_unwind(AssertUnwindSafe(|| f(&mut *h, self)));
        self.put_back(id, h, res);
    }
}

/// Keeps SIGINT / SIGTERM terminating the process while no reactor is
/// running with its signal handlers.
///
/// signal-hook leaves its process-wide handler in place when the last
/// action for a signal is removed, so once `run()` returned the signals
/// would be ignored: Ctrl-C would no longer end a program that goes on
/// after its reactor stopped. A conditional default action, armed only
/// while no reactor handles the signals, restores the usual behaviour.
mod signal_default {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, OnceLock};

    struct Guard {
        running: Mutex<usize>,
        default_on: Arc<AtomicBool>,
    }

    fn guard() -> &'static Guard {
        static GUARD: OnceLock<Guard> = OnceLock::new();
        GUARD.get_or_init(|| {
            let default_on = Arc::new(AtomicBool::new(false));
            for sig in [libc::SIGINT, libc::SIGTERM] {
                if let Err(e) = signal_hook::flag::register_conditional_default(sig, default_on.clone()) {
                    log::warn!("cannot keep the default action of signal {sig}: {e}");
                }
            }
            Guard {
                running: Mutex::new(0),
                default_on,
            }
        })
    }

    /// A reactor starts (`true`) or stops (`false`) handling the signals.
    pub(super) fn handling(on: bool) {
        let g = guard();
        let mut n = g.running.lock().unwrap_or_else(|e| e.into_inner());
        if on {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
        }
        g.default_on.store(*n == 0, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Reactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("handlers", &self.slots.len())
            .field("timers", &self.timers.len())
            .field("state", &self.state)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Requeues itself until it has run `left` times, noting the loop turn
    /// of each run.
    struct Again {
        left: u32,
        turns: std::rc::Rc<std::cell::RefCell<Vec<u64>>>,
    }

    impl Handler for Again {
        fn ready(&mut self, r: &mut Reactor, id: ConnId, ready: Ready) {
            assert!(ready.readable);
            self.turns.borrow_mut().push(r.turns());
            self.left -= 1;
            if self.left > 0 {
                r.requeue(id, Ready::READABLE);
            }
        }
        fn shutdown(&mut self, r: &mut Reactor, id: ConnId) {
            r.remove(id)
        }
    }

    #[test]
    fn requeued_handlers_run_once_per_turn_across_turns() {
        let mut r = Reactor::with_manual_clock().unwrap();
        let turns = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let mut ids = Vec::new();
        for _ in 0..3 {
            let t = turns.clone();
            let id = r
                .insert_with(|_, _| Ok(Box::new(Again { left: 5, turns: t })))
                .unwrap();
            r.requeue(id, Ready::READABLE);
            ids.push(id);
        }
        for _ in 0..10 {
            r.run_pending().unwrap();
        }
        let seen = turns.borrow();
        assert_eq!(seen.len(), 15, "{seen:?}");
        // Three handlers per turn, on five consecutive turns.
        for (k, chunk) in seen.chunks(3).enumerate() {
            assert!(chunk.iter().all(|&t| t == chunk[0]), "{seen:?}");
            assert_eq!(chunk[0], seen[0] + k as u64, "{seen:?}");
        }
    }
}
