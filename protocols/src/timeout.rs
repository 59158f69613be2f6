//! Idle timeouts (Twisted's `policies.TimeoutMixin` and
//! `policies.TimeoutProtocol`), built on the reactor's timers:
//! [`DelayedCall::reset`] only moves a deadline, so resetting on every read
//! is cheap.
//!
//! - [`IdleTimeout<P>`] wraps any protocol: the timer restarts whenever data
//!   arrives (or the write buffer drains), and when it fires the connection is closed with
//!   [`Reason::TimedOut`] (or your action runs instead).
//! - [`TimeoutMixin`] is for a protocol that manages its own timeout, as in
//!   Twisted: `set_timeout`, `reset_timeout`, and an overridable
//!   `timeout_connection`.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use twistor_reactor::{DelayedCall, Protocol, ProtocolCall, Reason, Transport};

type TimeoutAction<P> = Box<dyn FnMut(&mut P, &mut dyn Transport)>;

/// Wraps a protocol and closes its connection after `period` without
/// traffic (Twisted's `TimeoutProtocol`): incoming data restarts the timer,
/// and so does `resume_writing` (a slow reader draining a big response). Every callback is forwarded,
/// `call_on` included, so `p.downcast_mut::<P>()` still finds the inner
/// protocol.
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
    /// Close `inner`'s connection after `period` without incoming data.
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
    /// timer starts again with the next incoming data.
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
        self.inner.eof_received(t)
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
        let call = self.inner.route_call(t, call)?;
        call(&mut self.inner, t);
        None
    }
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
    /// The current period, if a timeout is set.
    pub fn period(&self) -> Option<Duration> {
        self.period
    }
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
}
