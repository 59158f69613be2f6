//! Idle timeouts (Twisted's `policies.TimeoutMixin` and
//! `policies.TimeoutProtocol`), built on the reactor's timers:
//! [`DelayedCall::reset`] only moves a deadline, so resetting on every read
//! is cheap.
//!
//! - [`IdleTimeout<P>`] wraps any protocol: the timer restarts whenever data
//!   arrives, the protocol writes, or the write buffer drains, and when it
//!   fires the connection is closed with [`Reason::TimedOut`] (or your
//!   action runs instead).
//! - [`TimeoutMixin`] is for a protocol that manages its own timeout, as in
//!   Twisted: `set_timeout`, `reset_timeout`, an overridable
//!   `timeout_connection`, and [`TimeoutMixin::timed`], a transport view
//!   whose writes restart the timeout.
//!
//! ## What counts as traffic
//!
//! As in Twisted's `TimeoutProtocol`, writes count as well as reads: a
//! server streaming a long download to a client that sends nothing is not
//! idle. A write counts while the write buffer is at or below its
//! high-water mark; past it the peer is not keeping up, and only the buffer
//! draining (`resume_writing`) counts, so a peer that stops reading is still
//! timed out however much the protocol tries to write. Bytes sent with
//! [`Reactor::write_to`](twistor_reactor::Reactor::write_to) bypass the
//! protocol and are not seen; write through `call_on` instead.
//!
//! An idle timeout does not bound a peer that sends a byte now and then
//! (a "slowloris" holding a request open). For a deadline on a whole
//! request, use [`TimeoutMixin`]: `set_timeout` when the request starts,
//! no `reset_timeout` until it is complete.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use twistor_reactor::{DelayedCall, Protocol, ProtocolCall, Reason, Transport, WrappingTransport};

type TimeoutAction<P> = Box<dyn FnMut(&mut P, &mut dyn Transport)>;

/// Wraps a protocol and closes its connection after `period` without
/// traffic (Twisted's `TimeoutProtocol`): incoming data restarts the timer,
/// so do the protocol's writes, and so does `resume_writing` (a slow reader
/// draining a big response); see [what counts](self#what-counts-as-traffic).
/// Every callback is forwarded, `call_on` included, so
/// `p.downcast_mut::<P>()` still finds the inner protocol.
///
/// The period is fixed for the connection's life. Twisted's
/// `TimeoutProtocol.setTimeout(None)` / `cancelTimeout()` (a protocol that
/// stops being timed in some state) has no counterpart here: such a
/// protocol keeps its own [`Timeout`] instead ([`TimeoutMixin`], or
/// [`Timeout::set_timeout`] from a line or string handler), which it can
/// set, clear and reset per state.
///
/// A protocol that streams from a timer or from another connection (through
/// `call_on`) keeps its connection alive with its writes:
///
/// ```
/// use std::time::Duration;
/// use twistor_protocols::{Discard, IdleTimeout};
/// use twistor_reactor::testing::{MemoryPair, Recorder};
///
/// let (client, _) = Recorder::new(); // sends nothing
/// let server = IdleTimeout::new(Discard, Duration::from_secs(10));
/// let mut pair = MemoryPair::new(Box::new(client), Box::new(server)).unwrap();
/// pair.pump();
/// for _ in 0..3 {
///     pair.advance(Duration::from_secs(8));
///     pair.with_server(|_, t| t.write(b"next chunk"));
/// }
/// assert!(!pair.is_closed());
/// ```
///
/// ```
/// use std::time::Duration;
/// use twistor_protocols::{Echo, IdleTimeout};
/// use twistor_reactor::testing::{MemoryPair, Recorder};
/// use twistor_reactor::Address;
///
/// // As a factory: `move |_: &Address| IdleTimeout::new(Echo, Duration::from_secs(60))`.
/// let (client, log) = Recorder::new();
/// let server = IdleTimeout::new(Echo, Duration::from_secs(60));
/// let mut pair = MemoryPair::new(Box::new(client), Box::new(server)).unwrap();
/// pair.pump();
/// pair.advance(Duration::from_secs(59));
/// assert!(!pair.is_closed());
/// pair.advance(Duration::from_secs(1));
/// assert!(pair.is_closed());
/// assert_eq!(log.borrow().lost.len(), 1);
/// ```
pub struct IdleTimeout<P: Protocol> {
    inner: P,
    period: Duration,
    call: Option<DelayedCall>,
    due: Rc<Cell<bool>>,
    action: Option<TimeoutAction<P>>,
}

impl<P: Protocol> IdleTimeout<P> {
    /// Close `inner`'s connection after `period` without traffic.
    pub fn new(inner: P, period: Duration) -> Self {
        IdleTimeout {
            inner,
            period,
            call: None,
            due: Rc::new(Cell::new(false)),
            action: None,
        }
    }

    /// Run `action` instead of closing when the timeout fires (Twisted's
    /// `timeoutConnection` override). If it leaves the connection open, the
    /// timer starts again with the next traffic; what the action itself
    /// writes (a keepalive probe) does not count.
    ///
    /// ```
    /// use std::time::Duration;
    /// use twistor_protocols::{Echo, IdleTimeout};
    /// use twistor_reactor::{Reason, Transport};
    /// let _p = IdleTimeout::new(Echo, Duration::from_secs(30)).with_timeout_action(|_echo, t| {
    ///     t.write(b"idle for too long, bye\r\n");
    ///     t.lose_connection_with(Reason::TimedOut);
    /// });
    /// ```
    pub fn with_timeout_action(mut self, action: impl FnMut(&mut P, &mut dyn Transport) + 'static) -> Self {
        self.action = Some(Box::new(action));
        self
    }

    /// The wrapped protocol.
    ///
    /// ```
    /// use std::time::Duration;
    /// use twistor_protocols::{IdleTimeout, Qotd};
    /// let p = IdleTimeout::new(Qotd::default(), Duration::from_secs(5));
    /// let _quote: &Qotd = p.inner();
    /// ```
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// The wrapped protocol, mutably.
    pub fn inner_mut(&mut self) -> &mut P {
        &mut self.inner
    }

    fn arm(&mut self, t: &mut dyn Transport) {
        let id = t.id();
        let due = self.due.clone();
        self.call = Some(t.reactor().call_later(self.period, move |r| {
            // The wrapper hears it in route_call, whatever layers sit above
            // it and route calls down. A layer that runs calls straight
            // against its protocol (no routing) hands the closure the
            // wrapper itself: the downcast catches that case. The flag makes
            // sure it fires once either way.
            due.set(true);
            let _ = r.call_on(id, |p, t| {
                if let Some(me) = p.downcast_mut::<IdleTimeout<P>>() {
                    me.check_due(t);
                }
            });
        }));
    }

    fn reset(&mut self, t: &mut dyn Transport) {
        match self.call {
            Some(c) if c.reset(t.reactor(), self.period) => {}
            _ => self.arm(t),
        }
    }

    /// Run `f` with the inner protocol and a view of `t` that notes writes;
    /// restart the timer if one counted.
    fn noting<R>(&mut self, t: &mut dyn Transport, f: impl FnOnce(&mut P, &mut dyn Transport) -> R) -> R {
        let mut view = TimedTransport::new(t, None);
        let out = f(&mut self.inner, &mut view);
        let active = view.active;
        drop(view);
        if active && !t.is_closing() {
            self.reset(t);
        }
        out
    }

    fn check_due(&mut self, t: &mut dyn Transport) {
        if self.due.replace(false) {
            self.fire(t);
        }
    }

    fn fire(&mut self, t: &mut dyn Transport) {
        self.call = None;
        if t.is_closing() {
            return;
        }
        match self.action.as_mut() {
            Some(action) => action(&mut self.inner, t),
            None => {
                log::info!("{}: {} idle for {:?}; closing", t.id(), t.peer(), self.period);
                t.lose_connection_with(Reason::TimedOut);
            }
        }
    }
}

impl<P: Protocol> Protocol for IdleTimeout<P> {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.arm(t);
        self.inner.connection_made(t);
    }
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        self.reset(t);
        self.inner.data_received(t, data);
    }
    fn eof_received(&mut self, t: &mut dyn Transport) -> bool {
        self.noting(t, |p, t| p.eof_received(t))
    }
    fn connection_lost(&mut self, t: &mut dyn Transport, reason: &Reason) {
        if let Some(c) = self.call.take() {
            c.cancel(t.reactor());
        }
        self.inner.connection_lost(t, reason);
    }
    fn pause_writing(&mut self, t: &mut dyn Transport) {
        self.inner.pause_writing(t);
    }
    fn resume_writing(&mut self, t: &mut dyn Transport) {
        // The peer is reading what we send: that is traffic too.
        self.reset(t);
        self.inner.resume_writing(t);
    }
    fn route_call(&mut self, t: &mut dyn Transport, call: ProtocolCall) -> Option<ProtocolCall> {
        self.check_due(t);
        // Timers and other connections reach the protocol this way: what
        // it writes from here (a stream's next chunk) is traffic.
        self.noting(t, |p, t| {
            if let Some(call) = p.route_call(t, call) {
                call(p, t);
            }
        });
        None
    }
    // data_received, resume_writing and connection_made restart the timer
    // themselves, at the same instant as any write they make; in
    // pause_writing the buffer is past the mark, so writes do not count.
}

/// The state a [`TimeoutMixin`] protocol keeps: a field of your protocol
/// (see [`TimeoutMixin`] for a whole example).
///
/// ```
/// use twistor_protocols::Timeout;
/// let t = Timeout::default();
/// assert_eq!(t.period(), None); // no timeout until set_timeout
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct Timeout {
    call: Option<DelayedCall>,
    period: Option<Duration>,
}

impl Timeout {
    /// Start (`Some`) or clear (`None`) the timeout from inside a framing's
    /// handler, returning the previous period: Twisted's `setTimeout` for
    /// `class P(LineReceiver, TimeoutMixin)`. `P` is the protocol the
    /// handler lives in (`LineReceiver<Self>`, `NetstringReceiver<Self>`...);
    /// when the timeout expires, its [`TimeoutTarget::timed_out`] runs,
    /// which calls the handler's `timeout_connection` (by default: close
    /// with [`Reason::TimedOut`]). Nothing runs once the connection is gone.
    ///
    /// ```
    /// use std::time::Duration;
    /// use twistor_protocols::{LineControl, LineHandler, LineReceiver, Timeout};
    /// use twistor_reactor::Transport;
    ///
    /// /// 30 s to send each command.
    /// struct Commands { timeout: Timeout }
    /// impl LineHandler for Commands {
    ///     fn connection_made(&mut self, c: &mut LineControl<'_>) {
    ///         self.timeout.set_timeout::<LineReceiver<Self>>(c, Some(Duration::from_secs(30)));
    ///     }
    ///     fn line_received(&mut self, c: &mut LineControl<'_>, line: &[u8]) {
    ///         self.timeout.reset_timeout(c);
    ///         c.send_line(line);
    ///     }
    ///     fn timeout_connection(&mut self, c: &mut LineControl<'_>) {
    ///         c.send_line(b"421 too slow");
    ///         c.lose_connection();
    ///     }
    /// }
    /// // The factory for listen_tcp:
    /// let factory = |_: &twistor_reactor::Address| {
    ///     LineReceiver::new(Commands { timeout: Timeout::default() })
    /// };
    /// # let _ = factory;
    /// ```
    pub fn set_timeout<P: TimeoutTarget>(
        &mut self,
        t: &mut dyn Transport,
        period: Option<Duration>,
    ) -> Option<Duration> {
        let old = std::mem::replace(&mut self.period, period);
        if let Some(c) = self.call.take() {
            c.cancel(t.reactor());
        }
        if let Some(period) = period {
            let id = t.id();
            self.call = Some(t.reactor().call_later(period, move |r| {
                // A connection that is gone reports so: nothing runs.
                let _ = r.call_on(id, |p, t| {
                    if let Some(me) = p.downcast_mut::<P>() {
                        me.timed_out(t);
                    }
                });
            }));
        }
        old
    }

    /// Restart the timeout set with [`set_timeout`](Self::set_timeout)
    /// (Twisted's `resetTimeout`). Nothing happens if none is set or it
    /// already expired.
    ///
    /// ```
    /// use std::time::Duration;
    /// use twistor_protocols::{LineControl, LineHandler, LineReceiver, Timeout};
    /// use twistor_reactor::testing::{MemoryPair, Recorder};
    /// use twistor_reactor::Transport;
    ///
    /// struct Chat(Timeout);
    /// impl LineHandler for Chat {
    ///     fn connection_made(&mut self, c: &mut LineControl<'_>) {
    ///         self.0.set_timeout::<LineReceiver<Self>>(c, Some(Duration::from_secs(10)));
    ///     }
    ///     fn line_received(&mut self, c: &mut LineControl<'_>, _: &[u8]) {
    ///         self.0.reset_timeout(c);
    ///     }
    /// }
    /// let server = LineReceiver::new(Chat(Timeout::default()));
    /// let mut pair = MemoryPair::new(Box::new(Recorder::default()), Box::new(server))?;
    /// pair.pump();
    /// pair.advance(Duration::from_secs(9));
    /// pair.with_client(|_, t| t.write(b"hi\r\n"));
    /// pair.advance(Duration::from_secs(9));
    /// assert!(!pair.is_closed());
    /// pair.advance(Duration::from_secs(1));
    /// assert!(pair.is_closed());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn reset_timeout(&mut self, t: &mut dyn Transport) {
        if let (Some(c), Some(period)) = (self.call, self.period) {
            c.reset(t.reactor(), period);
        }
    }

    /// The current period, if a timeout is set.
    pub fn period(&self) -> Option<Duration> {
        self.period
    }
}

/// A protocol that a [`Timeout`] set from inside it
/// ([`Timeout::set_timeout`]) calls back when it expires. The framings
/// implement it by calling their handler's `timeout_connection`
/// ([`LineHandler::timeout_connection`](crate::LineHandler::timeout_connection),
/// [`StringHandler::timeout_connection`](crate::StringHandler::timeout_connection));
/// a framing of your own can do the same.
///
/// ```
/// use twistor_protocols::TimeoutTarget;
/// use twistor_reactor::{Protocol, Transport};
/// struct Mine;
/// impl Protocol for Mine {
///     fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
/// }
/// impl TimeoutTarget for Mine {
///     fn timed_out(&mut self, t: &mut dyn Transport) {
///         t.write(b"bye\r\n");
///         t.lose_connection();
///     }
/// }
/// ```
pub trait TimeoutTarget: Protocol {
    /// The timeout expired.
    fn timed_out(&mut self, t: &mut dyn Transport);
}

/// Twisted's `TimeoutMixin` for a protocol that manages its own timeout:
/// keep a [`Timeout`] field, return it from
/// [`timeout_state`](TimeoutMixin::timeout_state), call
/// [`set_timeout`](TimeoutMixin::set_timeout) and
/// [`reset_timeout`](TimeoutMixin::reset_timeout) where it fits your
/// protocol, and override [`timeout_connection`](TimeoutMixin::timeout_connection)
/// if closing is not what you want.
///
/// The timer reaches the protocol with `call_on` and a downcast to `Self`,
/// so it works under wrappers and TLS; if the connection is gone by then,
/// nothing happens (forgetting `set_timeout(t, None)` is harmless).
///
/// A line or string handler (Twisted's `class P(LineReceiver,
/// TimeoutMixin)`) is not a protocol: it keeps a [`Timeout`] and calls
/// [`Timeout::set_timeout`] and [`Timeout::reset_timeout`] instead.
///
/// ```
/// use std::time::Duration;
/// use twistor_protocols::{Timeout, TimeoutMixin};
/// use twistor_reactor::testing::{MemoryPair, Recorder};
/// use twistor_reactor::{Protocol, Transport};
///
/// #[derive(Default)]
/// struct Login { timeout: Timeout }
/// impl TimeoutMixin for Login {
///     fn timeout_state(&mut self) -> &mut Timeout { &mut self.timeout }
///     fn timeout_connection(&mut self, t: &mut dyn Transport) {
///         t.write(b"login timed out\r\n");
///         t.lose_connection();
///     }
/// }
/// impl Protocol for Login {
///     fn connection_made(&mut self, t: &mut dyn Transport) {
///         self.set_timeout(t, Some(Duration::from_secs(30)));
///     }
///     fn data_received(&mut self, t: &mut dyn Transport, _: &[u8]) {
///         self.reset_timeout(t);
///     }
/// }
///
/// let (client, log) = Recorder::new();
/// let mut pair = MemoryPair::new(Box::new(client), Box::new(Login::default())).unwrap();
/// pair.pump();
/// pair.advance(Duration::from_secs(30));
/// assert_eq!(log.borrow().data, b"login timed out\r\n");
/// assert!(pair.is_closed());
/// ```
pub trait TimeoutMixin: Protocol + Sized {
    /// Where the timeout state lives in your protocol.
    fn timeout_state(&mut self) -> &mut Timeout;

    /// The timeout fired. The default logs it and closes with
    /// [`Reason::TimedOut`].
    fn timeout_connection(&mut self, t: &mut dyn Transport) {
        log::info!("{}: {} timed out; closing", t.id(), t.peer());
        t.lose_connection_with(Reason::TimedOut);
    }

    /// Start (or with `None`, stop) the timeout; returns the previous
    /// period (Twisted's `setTimeout`).
    fn set_timeout(&mut self, t: &mut dyn Transport, period: Option<Duration>) -> Option<Duration> {
        let st = self.timeout_state();
        let old = std::mem::replace(&mut st.period, period);
        if let Some(c) = st.call.take() {
            c.cancel(t.reactor());
        }
        if let Some(period) = period {
            let id = t.id();
            let call = t.reactor().call_later(period, move |r| {
                let _ = r.call_on(id, |p, t| {
                    if let Some(me) = p.downcast_mut::<Self>() {
                        me.timeout_state().call = None;
                        me.timeout_connection(t);
                    }
                });
            });
            self.timeout_state().call = Some(call);
        }
        old
    }

    /// Restart the running timeout from now (Twisted's `resetTimeout`):
    /// call it on traffic. Does nothing if no timeout is running.
    fn reset_timeout(&mut self, t: &mut dyn Transport) {
        let st = *self.timeout_state();
        if let (Some(c), Some(period)) = (st.call, st.period) {
            c.reset(t.reactor(), period);
        }
    }

    /// A view of `t` whose writes restart the running timeout (when the
    /// view is dropped, once however many writes were made), following
    /// the [rules](self#what-counts-as-traffic) `IdleTimeout` follows.
    /// Write through it wherever sending is activity: a download's chunks,
    /// a reply. It borrows only `t`, so `self` stays free to use.
    ///
    /// ```
    /// use std::time::Duration;
    /// use twistor_protocols::{Timeout, TimeoutMixin};
    /// use twistor_reactor::testing::{MemoryPair, Recorder};
    /// use twistor_reactor::{Protocol, Transport};
    ///
    /// #[derive(Default)]
    /// struct Ticker { timeout: Timeout, n: u32 }
    /// impl TimeoutMixin for Ticker {
    ///     fn timeout_state(&mut self) -> &mut Timeout { &mut self.timeout }
    /// }
    /// impl Ticker {
    ///     fn tick(&mut self, t: &mut dyn Transport) {
    ///         let mut t = self.timed(t);
    ///         self.n += 1;
    ///         t.write(format!("tick {}\r\n", self.n).as_bytes());
    ///     }
    /// }
    /// impl Protocol for Ticker {
    ///     fn connection_made(&mut self, t: &mut dyn Transport) {
    ///         self.set_timeout(t, Some(Duration::from_secs(10)));
    ///     }
    ///     fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    /// }
    ///
    /// let (client, log) = Recorder::new();
    /// let mut pair = MemoryPair::new(Box::new(client), Box::new(Ticker::default())).unwrap();
    /// pair.pump();
    /// for _ in 0..3 {
    ///     pair.advance(Duration::from_secs(8));
    ///     pair.with_server(|p, t| p.downcast_mut::<Ticker>().unwrap().tick(t));
    /// }
    /// assert!(!pair.is_closed(), "each tick restarted the 10 s timeout");
    /// assert_eq!(log.borrow().data, b"tick 1\r\ntick 2\r\ntick 3\r\n");
    /// ```
    fn timed<'a>(&mut self, t: &'a mut dyn Transport) -> TimedTransport<'a> {
        let st = *self.timeout_state();
        TimedTransport::new(t, st.call.zip(st.period))
    }
}

/// A transport view that notes writes as activity for a timeout, made by
/// [`TimeoutMixin::timed`] (and used inside [`IdleTimeout`]). It forwards
/// everything to the transport it wraps.
///
/// A write counts when it is not empty and the write buffer is at or below
/// its high-water mark (see [what counts](self#what-counts-as-traffic)).
/// When the view is dropped after a counted write, the timeout it came
/// with restarts from now.
///
/// ```
/// use twistor_protocols::{Timeout, TimeoutMixin};
/// use twistor_reactor::{testing::StringTransport, Protocol, Transport};
/// #[derive(Default)]
/// struct P { timeout: Timeout }
/// impl TimeoutMixin for P {
///     fn timeout_state(&mut self) -> &mut Timeout { &mut self.timeout }
/// }
/// impl Protocol for P {
///     fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
/// }
/// let mut t = StringTransport::new();
/// let mut p = P::default();
/// p.timed(&mut t).write(b"hello"); // no timeout set: just a write
/// assert_eq!(t.value(), b"hello");
/// ```
pub struct TimedTransport<'a> {
    t: &'a mut dyn Transport,
    /// The timer to restart on drop after a counted write.
    restart: Option<(DelayedCall, Duration)>,
    /// A write counted.
    active: bool,
}

impl<'a> TimedTransport<'a> {
    fn new(t: &'a mut dyn Transport, restart: Option<(DelayedCall, Duration)>) -> Self {
        TimedTransport {
            t,
            restart,
            active: false,
        }
    }

    fn note(&mut self, len: usize) {
        if len > 0 && !self.active {
            let (high, _) = self.t.write_buffer_limits();
            self.active = self.t.write_buffer_size() <= high;
        }
    }
}

impl Drop for TimedTransport<'_> {
    fn drop(&mut self) {
        // Not while unwinding from a panic in the protocol: that connection
        // is about to end, and its timer with it.
        if self.active && !std::thread::panicking() {
            if let Some((call, period)) = self.restart {
                call.reset(self.t.reactor(), period);
            }
        }
    }
}

impl WrappingTransport for TimedTransport<'_> {
    fn below(&self) -> &dyn Transport {
        &*self.t
    }
    fn below_mut(&mut self) -> &mut dyn Transport {
        &mut *self.t
    }
    fn on_write(&mut self, len: usize) {
        self.note(len);
    }
}
