//! The event loop: one thread, one mio `Poll`, a table of handlers.
//!
//! Each registered source (a connection, a listener, a datagram port, a
//! user's own file descriptor) is a [`Handler`] in a slot of the table
//! (`slots.rs`, where the generation rule that keeps ids safe lives). A
//! turn polls, dispatches readiness (requeued work first, then new events,
//! one dispatch per id), runs due timers and queued work. While a handler
//! runs it is out of its slot, so it can use the whole `&mut Reactor`
//! without aliasing; work addressed to it meanwhile is held and delivered
//! after it returns, which is what keeps protocol callbacks from being
//! re-entered. Stopping and the stop signals are in `stop.rs`, other
//! signals in `signals.rs`, the timer API in `timer.rs`, threads in
//! `threads.rs`.

use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Registry, Token};
use slab::Slab;

use crate::slots::{Pending, Returned, Slots, Taken};
use crate::stop::State;
use crate::stream::Limits;
use crate::threads::{RemoteQueue, ThreadPool};
use crate::timer::{later, Timers};
use crate::write_buf::WritePool;
use crate::{catch_panic, CallError, ConnId, Handler, Protocol, ProtocolCall, Ready, Transport};

/// Size of the reactor's shared read buffer: one buffer for every
/// connection; `data_received` borrows a slice of it.
pub const READ_BUFFER_SIZE: usize = 64 * 1024;

pub(crate) const WAKER_TOKEN: Token = Token(usize::MAX);
pub(crate) const SIGNAL_TOKEN: Token = Token(usize::MAX - 1);
pub(crate) const USER_SIGNAL_TOKEN: Token = Token(usize::MAX - 2);

pub(crate) enum Queued {
    Soon(Box<dyn FnOnce(&mut Reactor)>),
    Call(ConnId, ProtocolCall),
}

pub(crate) type ReactorFn = Box<dyn FnOnce(&mut Reactor)>;
pub(crate) type DeferredDone = Box<dyn FnOnce(&mut Reactor, Box<dyn std::any::Any + Send>)>;

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
    /// Out of its place only while a turn walks it.
    events: Option<Events>,
    pub(crate) slots: Slots,
    pub(crate) timers: Timers,
    manual_now: Option<Instant>,
    read_buf: Vec<u8>,
    /// Drained write chunks, lent to every connection's write buffer.
    pub(crate) write_pool: WritePool,
    /// The limits of the last stream opened, shared with the next one
    /// opened with the same (a listener's connections all are).
    last_limits: Option<Rc<Limits>>,
    requeued: Vec<(ConnId, Ready)>,
    /// The other half of a double buffer with `requeued`: the list a turn
    /// dispatches from, kept with its capacity so a steady loop never
    /// allocates for requeues.
    requeued_spare: Vec<(ConnId, Ready)>,
    pub(crate) queue: VecDeque<Queued>,
    pub(crate) remote: RemoteQueue,
    pub(crate) pool: Option<ThreadPool>,
    /// Stack size of the pool's threads (tests make it impossible).
    #[cfg(test)]
    pub(crate) pool_stack: Option<usize>,
    pub(crate) deferred: Slab<DeferredDone>,
    pub(crate) state: State,
    pub(crate) stop_requested: bool,
    pub(crate) shutdown_triggers: Vec<ReactorFn>,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) install_signals: bool,
    pub(crate) signals: Option<signal_hook_mio::v1_0::Signals>,
    /// Signals handled with `add_signal_handler` (`signals.rs`).
    pub(crate) user_signals: crate::signals::UserSignals,
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
            events: Some(Events::with_capacity(1024)),
            slots: Slots::default(),
            timers: Timers::new(),
            manual_now: None,
            read_buf: vec![0; READ_BUFFER_SIZE],
            write_pool: WritePool::default(),
            last_limits: None,
            requeued: Vec::new(),
            requeued_spare: Vec::new(),
            queue: VecDeque::new(),
            remote,
            pool: None,
            #[cfg(test)]
            pool_stack: None,
            deferred: Slab::new(),
            state: State::Idle,
            stop_requested: false,
            shutdown_triggers: Vec::new(),
            shutdown_timeout: crate::DEFAULT_SHUTDOWN_TIMEOUT,
            install_signals: true,
            signals: None,
            user_signals: Default::default(),
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
        let target = later(now, d);
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
    #[inline]
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
        let id = self.slots.reserve();
        match make(self, id) {
            Ok(h) => {
                let placed = self.put_back(id, h);
                if placed && matches!(self.state, State::Stopping { .. }) {
                    // Registered after stop() began (by a trigger, a
                    // timer, a reconnect): it stops like the rest
                    // rather than holding run() until the deadline.
                    self.call_soon(move |r| r.with_handler(id, |h, r| h.shutdown(r, id)));
                }
                Ok(id)
            }
            Err(e) => {
                self.slots.free(id);
                Err(e)
            }
        }
    }

    /// Remove a handler: it is told ([`Handler::removed`]: a stream
    /// reports `connection_lost`, reason aborted, unless it ended already)
    /// and dropped, at once or, if it is running (a handler removing
    /// itself), when its callback returns. Stale ids are ignored.
    pub fn remove(&mut self, id: ConnId) {
        match self.slots.take(id) {
            Taken::Handler(h) => {
                // Its slot stays reserved (and refuses work) while it ends.
                self.slots.doom(id);
                self.drop_removed(id, h);
            }
            Taken::Running => {
                self.slots.doom(id);
            }
            Taken::Stale => {}
        }
    }

    fn drop_removed(&mut self, id: ConnId, mut h: Box<dyn Handler>) {
        let _ = catch_panic(format_args!("{id}: removed"), || h.removed(self, id));
        self.slots.free(id);
        let _ = catch_panic(format_args!("{id}: dropping the handler"), move || drop(h));
    }

    /// Whether `id` names a live handler.
    pub fn contains(&self, id: ConnId) -> bool {
        self.slots.contains(id)
    }

    /// Deliver readiness to `id` on the next loop turn, e.g. because a read
    /// stopped at the fairness budget with data still waiting.
    #[inline]
    pub fn requeue(&mut self, id: ConnId, ready: Ready) {
        self.requeued.push((id, ready));
    }

    /// Take the shared read buffer (give it back with
    /// [`put_read_buffer`](Reactor::put_read_buffer)). If it is already out,
    /// a fresh one is made.
    #[inline]
    pub fn take_read_buffer(&mut self) -> Vec<u8> {
        if self.read_buf.is_empty() {
            vec![0; READ_BUFFER_SIZE]
        } else {
            std::mem::take(&mut self.read_buf)
        }
    }

    /// Return the shared read buffer.
    #[inline]
    pub fn put_read_buffer(&mut self, buf: Vec<u8>) {
        if self.read_buf.is_empty() && buf.len() >= READ_BUFFER_SIZE {
            self.read_buf = buf;
        }
    }

    /// Bound the pool of drained write chunks that every connection's
    /// write buffer borrows from and gives back to (default
    /// [`DEFAULT_WRITE_POOL`](crate::DEFAULT_WRITE_POOL), 1 MiB). A larger
    /// pool saves allocations when many connections have output waiting at
    /// once; what does not fit is freed, so idle connections cost nothing
    /// for output either way.
    ///
    /// ```
    /// let mut r = twistor_reactor::Reactor::new().unwrap();
    /// r.set_write_pool_limit(4 << 20);
    /// assert_eq!(r.write_pool_bytes(), 0); // nothing written yet
    /// ```
    pub fn set_write_pool_limit(&mut self, bytes: usize) {
        self.write_pool.set_limit(bytes);
    }

    /// Bytes held by the pool of drained write chunks (a memory counter).
    pub fn write_pool_bytes(&self) -> usize {
        self.write_pool.bytes()
    }

    /// One shared copy of a stream's limits: connections opened with the
    /// same options (a listener's) share it, so each keeps a pointer.
    pub(crate) fn stream_limits(&mut self, limits: Limits) -> Rc<Limits> {
        match &self.last_limits {
            Some(l) if **l == limits => l.clone(),
            _ => {
                let l = Rc::new(limits);
                self.last_limits = Some(l.clone());
                l
            }
        }
    }

    /// Deliver readiness to `id` now, unless it is running (then after it
    /// returns). For a transport that must run a new handler at once: a
    /// listener calls it so `connection_made` runs inside its accept loop.
    pub fn dispatch_now(&mut self, id: ConnId, ready: Ready) {
        self.dispatch(id, Pending::Ready(ready));
    }

    pub(crate) fn dispatch(&mut self, id: ConnId, work: Pending) {
        match self.slots.take(id) {
            Taken::Handler(mut h) => {
                let res = catch_panic(format_args!("{id}: handler"), || match work {
                    Pending::Ready(ready) => h.ready(self, id, ready),
                    Pending::Call(f) => h.call(self, id, f),
                });
                self.finish_run(id, h, res);
            }
            // Running (or being built): deliver after it returns.
            Taken::Running => self.slots.hold(id, work),
            Taken::Stale => {}
        }
    }

    /// Run `f` against `id`'s handler now, if it is in its slot.
    pub(crate) fn with_handler(&mut self, id: ConnId, f: impl FnOnce(&mut dyn Handler, &mut Reactor)) {
        if let Taken::Handler(mut h) = self.slots.take(id) {
            let res = catch_panic(format_args!("{id}: handler"), || f(&mut *h, self));
            self.finish_run(id, h, res);
        }
    }

    fn finish_run(&mut self, id: ConnId, h: Box<dyn Handler>, res: Result<(), String>) {
        if res.is_err() {
            log::error!("{id}: closing the handler after its panic");
            self.slots.free(id);
            // Dropping a handler after its panic may panic again; contain it.
            let _ = catch_panic(format_args!("{id}: dropping the handler"), move || drop(h));
            return;
        }
        self.put_back(id, h);
    }

    /// Give a handler back to its slot, delivering the work held for it
    /// meanwhile. Returns whether it is in its slot again.
    fn put_back(&mut self, id: ConnId, h: Box<dyn Handler>) -> bool {
        match self.slots.put_back(id, h) {
            Returned::Placed { held: false } => true,
            Returned::Placed { held: true } => {
                for w in self.slots.take_held(id) {
                    match w {
                        Pending::Ready(r) => self.requeued.push((id, r)),
                        Pending::Call(f) => self.queue.push_back(Queued::Call(id, f)),
                    }
                }
                true
            }
            Returned::Doomed(h) => {
                self.drop_removed(id, h);
                false
            }
            Returned::Orphan(h) => {
                drop(h);
                false
            }
        }
    }

    // ----- reaching connections by id ------------------------------------

    /// Run `f` against the protocol and transport of connection `id`, after
    /// the current callback returns (never re-entering a running protocol).
    /// Returns [`CallError::Gone`] if `id` is stale, and
    /// [`CallError::NotAConnection`] if it names a source without a
    /// protocol (a listener, a datagram port: see
    /// [`Handler::has_protocol`]); if the connection ends before the call
    /// is delivered, the call is dropped.
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
    ) -> Result<(), CallError> {
        if !self.contains(id) {
            return Err(CallError::Gone);
        }
        if !self.slots.has_protocol(id) {
            return Err(CallError::NotAConnection);
        }
        self.queue.push_back(Queued::Call(id, Box::new(f)));
        Ok(())
    }

    /// Write `data` to connection `id` (queued like [`call_on`](Reactor::call_on)).
    pub fn write_to(&mut self, id: ConnId, data: impl Into<Vec<u8>>) -> Result<(), CallError> {
        let data = data.into();
        self.call_on(id, move |_, t| t.write(&data))
    }

    /// Gracefully close connection `id` (`lose_connection`).
    pub fn close(&mut self, id: ConnId) -> Result<(), CallError> {
        self.call_on(id, |_, t| t.lose_connection())
    }

    /// Run `f` on the loop thread after the current callback returns
    /// (asyncio's `call_soon`).
    pub fn call_soon(&mut self, f: impl FnOnce(&mut Reactor) + 'static) {
        self.queue.push_back(Queued::Soon(Box::new(f)));
    }

    // ----- the loop ------------------------------------------------------

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
        if let Err(e) = self.install_signal_handlers() {
            self.state = State::Idle;
            return Err(e);
        }
        let res = self.run_loop(None);
        self.remove_signal_handlers();
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
        let deadline = later(Instant::now(), timeout);
        let res = self.run_loop(Some((deadline, &mut done)));
        self.state = State::Idle;
        self.stop_requested = false;
        res.map(|_| done(self))
    }

    /// One loop turn that does not wait: dispatch whatever is ready or
    /// requeued and run queued work (and due timers, on the real clock).
    /// For tests and for embedding the reactor in another loop.
    ///
    /// Like `run`, it is refused while the loop is already running (from
    /// inside a callback).
    pub fn run_pending(&mut self) -> io::Result<()> {
        if self.state != State::Idle {
            return Err(io::Error::other("the reactor is already running"));
        }
        self.state = State::Running;
        let res = self.turn(Some(Duration::ZERO));
        self.state = State::Idle;
        res
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
            if self.stopping_done() {
                return Ok(());
            }
            let timeout = self.poll_timeout(until.as_ref().map(|(d, _)| *d));
            self.turn(timeout)?;
        }
    }

    /// One loop turn: poll, dispatch, timers, queued work.
    fn turn(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.turns += 1;
        let mut events = self.events.take().unwrap_or_else(|| Events::with_capacity(1024));
        match self.poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                self.events = Some(events);
                return Err(e);
            }
        }
        // Requeued work from the previous turn goes first, then new events;
        // readiness for one id is merged into one dispatch (found in O(1)
        // through the slot's mark, taken off as it is dispatched).
        let spare = std::mem::take(&mut self.requeued_spare);
        let mut requeued = std::mem::replace(&mut self.requeued, spare);
        let mut merged = 0;
        for i in 0..requeued.len() {
            let (id, ready) = requeued[i];
            match self.slots.mark(id, merged) {
                Some(pos) => requeued[pos].1 = requeued[pos].1.merge(ready),
                None => {
                    requeued[merged] = (id, ready);
                    merged += 1;
                }
            }
        }
        requeued.truncate(merged);
        for e in events.iter() {
            match e.token() {
                WAKER_TOKEN => self.run_remote(),
                SIGNAL_TOKEN => self.on_signal(),
                USER_SIGNAL_TOKEN => self.run_signal_handlers(),
                t => {
                    let id = ConnId::from_token(t);
                    let ready = Ready::from_event(e);
                    match self.slots.mark(id, requeued.len()) {
                        Some(pos) => requeued[pos].1 = requeued[pos].1.merge(ready),
                        None => requeued.push((id, ready)),
                    }
                }
            }
        }
        events.clear();
        self.events = Some(events);
        for (id, ready) in requeued.drain(..) {
            self.slots.unmark(id);
            self.dispatch(id, Pending::Ready(ready));
            self.run_queued();
        }
        // Handlers requeued during this turn went into `self.requeued` (the
        // spare, with its capacity); keep the drained list as the next spare.
        self.requeued_spare = requeued;
        if self.manual_now.is_none() && !self.timers.is_empty() {
            self.run_timers();
        }
        self.run_queued();
        Ok(())
    }

    fn poll_timeout(&mut self, until: Option<Instant>) -> Option<Duration> {
        if !self.requeued.is_empty()
            || !self.queue.is_empty()
            || self.stop_requested && self.state == State::Running
        {
            return Some(Duration::ZERO);
        }
        let mut wake = until;
        if let State::Stopping { deadline } = self.state {
            wake = Some(wake.map_or(deadline, |w| w.min(deadline)));
        }
        if self.manual_now.is_none() && !self.timers.is_empty() {
            if let Some(t) = self.timers.next_deadline() {
                wake = Some(wake.map_or(t, |w| w.min(t)));
            }
        }
        // The clock is read only when there is a deadline to wait for.
        let now = match wake {
            Some(_) => Instant::now(),
            None => return None,
        };
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
    #[inline]
    pub(crate) fn run_queued(&mut self) {
        if self.queue.is_empty() {
            return;
        }
        self.run_queued_now();
    }

    fn run_queued_now(&mut self) {
        let mut budget = self.queue.len().max(1024);
        while budget > 0 {
            budget -= 1;
            let Some(q) = self.queue.pop_front() else {
                return;
            };
            match q {
                Queued::Soon(f) => {
                    let _ = catch_panic(format_args!("call_soon callback"), || f(self));
                }
                Queued::Call(id, f) => self.dispatch(id, Pending::Call(f)),
            }
        }
    }

    /// Forget all queued work (the end of a stop).
    pub(crate) fn clear_queued(&mut self) {
        self.queue.clear();
        self.requeued.clear();
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

    /// Counts the readiness it is given.
    struct Count(std::rc::Rc<std::cell::Cell<u32>>);

    impl Handler for Count {
        fn ready(&mut self, _: &mut Reactor, _: ConnId, _: Ready) {
            self.0.set(self.0.get() + 1);
        }
        fn shutdown(&mut self, r: &mut Reactor, id: ConnId) {
            r.remove(id)
        }
    }

    #[test]
    fn a_stale_requeue_does_not_swallow_the_new_occupants_readiness() {
        let mut r = Reactor::with_manual_clock().unwrap();
        let old_runs = std::rc::Rc::new(std::cell::Cell::new(0));
        let new_runs = std::rc::Rc::new(std::cell::Cell::new(0));
        let o = old_runs.clone();
        let old = r.insert_with(|_, _| Ok(Box::new(Count(o)))).unwrap();
        // Requeued (say, at its fairness budget), then closed in the same
        // turn; its slot goes to a new connection that asks for its first
        // dispatch (as open_stream does for connection_made).
        r.requeue(old, Ready::READABLE);
        r.remove(old);
        let n = new_runs.clone();
        let new = r.insert_with(|_, _| Ok(Box::new(Count(n)))).unwrap();
        assert_eq!(new.index(), old.index());
        r.requeue(new, Ready::NONE);
        r.run_pending().unwrap();
        assert_eq!(old_runs.get(), 0);
        assert_eq!(new_runs.get(), 1, "the new occupant was never dispatched");
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
