//! `ReconnectingClientFactory`: reconnect with exponential backoff and
//! jitter, like Twisted's class of the same name. Works with any connector
//! (`connect_tcp`, `connect_unix`, `connect_tls`).
//!
//! "Connected" means the application's `connection_made` ran, not that the
//! factory was asked for a protocol: a TLS client builds its protocol when
//! TCP connects, before the handshake, and a handshake that then fails is a
//! failed attempt. So each protocol this factory builds is wrapped in a thin
//! layer (`Made`) whose `connection_made` is what starts the counting over.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use twistor_reactor::{
    Address, ClientFactory, Connector, DelayedCall, Factory, Protocol, Reactor, Reason, Transport,
    WrappingProtocol,
};

type Build = Box<dyn FnMut(&Address) -> Option<Box<dyn Protocol>>>;
type Hook = Box<dyn FnMut(&mut Reactor, &Connector, &Reason)>;

/// A client factory that reconnects whenever a connection fails or is lost.
///
/// Delays grow by `factor` from `initial_delay` up to `max_delay`, each
/// randomised by ±`jitter` (a fraction), and go back to the start once a
/// connection is made: once the protocol's `connection_made` runs (over TLS,
/// after the handshake; a failed handshake counts as a failed attempt).
/// After `max_retries` consecutive failures it gives up.
/// Defaults are Twisted's: 1 s initial, ×e, 3600 s max, jitter 0.1196.
///
/// ```no_run
/// use std::time::Duration;
/// use twistor_reactor::{Protocol, Reactor, Transport};
/// use twistor_transports::{connect_tcp, ReconnectingClientFactory};
/// struct Client;
/// impl Protocol for Client {
///     fn data_received(&mut self, _: &mut dyn Transport, d: &[u8]) { println!("{d:?}") }
/// }
/// let mut r = Reactor::new().unwrap();
/// let f = ReconnectingClientFactory::new(|_: &_| Client)
///     .max_delay(Duration::from_secs(30))
///     .max_retries(Some(10));
/// connect_tcp(&mut r, "localhost", 1234, f);
/// r.run().unwrap();
/// ```
pub struct ReconnectingClientFactory {
    build: Build,
    on_failed: Option<Hook>,
    on_lost: Option<Hook>,
    initial_delay: Duration,
    max_delay: Duration,
    factor: f64,
    jitter: f64,
    max_retries: Option<u32>,
    rng: u64,
    state: Rc<State>,
}

#[derive(Default)]
struct State {
    /// Failed attempts (and losses) since the last connection was made.
    retries: Cell<u32>,
    /// The delay the next retry waits for, before jitter.
    delay: Cell<Duration>,
    stopped: Cell<bool>,
    pending: Cell<Option<DelayedCall>>,
    /// The connector of the attempt in progress, from `started_connecting`
    /// until the attempt ends (so the cycle through it never outlives it).
    connecting: RefCell<Option<Connector>>,
}

/// Stops a [`ReconnectingClientFactory`] from outside (Twisted's
/// `stopTrying`). Get one with [`ReconnectingClientFactory::stopper`].
#[derive(Clone)]
pub struct StopTrying(Rc<State>);

impl StopTrying {
    /// Stop reconnecting: cancel a scheduled retry, and stop an attempt in
    /// progress (it fails with `Reason::Aborted`), as Twisted's
    /// `stopTrying` does. A connection already made is left alone.
    pub fn stop_trying(&self, r: &mut Reactor) {
        self.0.stopped.set(true);
        if let Some(call) = self.0.pending.take() {
            call.cancel(r);
        }
        let connecting = self.0.connecting.borrow_mut().take();
        if let Some(c) = connecting {
            c.stop_connecting(r);
        }
    }
}

impl ReconnectingClientFactory {
    /// A reconnecting factory whose protocols come from `build`.
    pub fn new<F, P>(mut build: F) -> Self
    where
        F: FnMut(&Address) -> P + 'static,
        P: Protocol,
    {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        ReconnectingClientFactory {
            build: Box::new(move |a| Some(Box::new(build(a)) as Box<dyn Protocol>)),
            on_failed: None,
            on_lost: None,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(3600),
            factor: std::f64::consts::E,
            jitter: 0.119_626_565_582,
            max_retries: None,
            rng: seed | 1,
            state: Rc::new(State {
                delay: Cell::new(Duration::from_secs(1)),
                ..State::default()
            }),
        }
    }

    /// First delay (default 1 s).
    pub fn initial_delay(mut self, d: Duration) -> Self {
        self.initial_delay = d;
        self.state.delay.set(d);
        self
    }

    /// Longest delay (default 3600 s).
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }

    /// Growth factor per failure (default e).
    pub fn factor(mut self, f: f64) -> Self {
        self.factor = f.max(1.0);
        self
    }

    /// Random spread of each delay, as a fraction (default 0.1196; 0 = none).
    pub fn jitter(mut self, j: f64) -> Self {
        self.jitter = j.clamp(0.0, 1.0);
        self
    }

    /// Give up after this many consecutive failed attempts (default: never).
    pub fn max_retries(mut self, n: Option<u32>) -> Self {
        self.max_retries = n;
        self
    }

    /// Also call `f` on each failed attempt (before the retry is scheduled).
    pub fn on_failed(mut self, f: impl FnMut(&mut Reactor, &Connector, &Reason) + 'static) -> Self {
        self.on_failed = Some(Box::new(f));
        self
    }

    /// Also call `f` when an established connection is lost.
    pub fn on_lost(mut self, f: impl FnMut(&mut Reactor, &Connector, &Reason) + 'static) -> Self {
        self.on_lost = Some(Box::new(f));
        self
    }

    /// A handle that stops the reconnecting from anywhere.
    pub fn stopper(&self) -> StopTrying {
        StopTrying(self.state.clone())
    }

    /// The delay the next retry would wait, before jitter.
    pub fn current_delay(&self) -> Duration {
        self.state.delay.get()
    }

    fn next_random(&mut self) -> f64 {
        // xorshift64*: jitter needs spread, not cryptographic quality.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `d × k`, capped at `max_delay`; a product too large for a
    /// `Duration` (a huge or unbounded `max_delay`, an infinite factor) is
    /// the cap, where `Duration::mul_f64` would panic.
    fn scaled(&self, d: Duration, k: f64) -> Duration {
        Duration::try_from_secs_f64(d.as_secs_f64() * k)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    fn retry(&mut self, r: &mut Reactor, connector: &Connector) {
        if self.state.stopped.get() {
            return;
        }
        if r.is_stopping() {
            // The reactor is shutting down: a retry would only fail again.
            log::debug!(
                "not reconnecting to {}: the reactor is stopping",
                connector.destination()
            );
            return;
        }
        let retries = self.state.retries.get().saturating_add(1);
        self.state.retries.set(retries);
        if let Some(max) = self.max_retries {
            if retries > max {
                log::info!("giving up on {} after {max} retries", connector.destination());
                return;
            }
        }
        let base = self.state.delay.get();
        let spread = (self.next_random() * 2.0 - 1.0) * self.jitter;
        let wait = self.scaled(base, (1.0 + spread).max(0.0));
        self.state.delay.set(self.scaled(base, self.factor));
        log::info!(
            "reconnecting to {} in {:.2} s",
            connector.destination(),
            wait.as_secs_f64()
        );
        let c = connector.clone();
        let state = self.state.clone();
        let call = r.call_later(wait, move |r| {
            state.pending.set(None);
            if !state.stopped.get() {
                c.connect(r);
            }
        });
        self.state.pending.set(Some(call));
    }
}

impl Factory for ReconnectingClientFactory {
    fn build_protocol(&mut self, addr: &Address) -> Option<Box<dyn Protocol>> {
        let inner = (self.build)(addr)?;
        Some(Box::new(Made {
            inner,
            state: self.state.clone(),
            initial_delay: self.initial_delay,
        }))
    }
}

/// The layer under which every protocol of a [`ReconnectingClientFactory`]
/// runs: when the protocol's `connection_made` runs, the connection is
/// made, and the next loss starts over from the initial delay. Everything
/// else passes straight through (`call_on` closures too, so they reach the
/// protocol itself).
struct Made {
    inner: Box<dyn Protocol>,
    state: Rc<State>,
    initial_delay: Duration,
}

impl WrappingProtocol for Made {
    fn inner(&mut self) -> &mut dyn Protocol {
        &mut *self.inner
    }
    fn on_connection_made(&mut self, _: &mut dyn Transport) {
        self.state.connecting.borrow_mut().take();
        self.state.retries.set(0);
        self.state.delay.set(self.initial_delay);
    }
}

impl ClientFactory for ReconnectingClientFactory {
    fn started_connecting(&mut self, _: &mut Reactor, connector: &Connector) {
        *self.state.connecting.borrow_mut() = Some(connector.clone());
    }

    fn client_connection_failed(&mut self, r: &mut Reactor, connector: &Connector, reason: &Reason) {
        self.state.connecting.borrow_mut().take();
        if let Some(f) = self.on_failed.as_mut() {
            f(r, connector, reason);
        }
        self.retry(r, connector);
    }

    fn client_connection_lost(&mut self, r: &mut Reactor, connector: &Connector, reason: &Reason) {
        if let Some(f) = self.on_lost.as_mut() {
            f(r, connector, reason);
        }
        self.retry(r, connector);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twistor_reactor::testing::StringTransport;

    struct Quiet;
    impl Protocol for Quiet {
        fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    }

    /// `stop_trying` during an attempt stops that attempt too (Twisted's
    /// `stopTrying` calls `stopConnecting`), and only that attempt.
    #[test]
    fn stop_trying_stops_the_attempt_in_progress() {
        let mut r = Reactor::with_manual_clock().unwrap();
        let stops = Rc::new(Cell::new(0));
        let s2 = stops.clone();
        let connector = Connector::new("nowhere:1".into(), |_| {}, move |_| s2.set(s2.get() + 1));
        let mut f = ReconnectingClientFactory::new(|_: &_| Quiet);
        let stopper = f.stopper();
        // An attempt that ended is not stopped again.
        f.started_connecting(&mut r, &connector);
        f.client_connection_failed(&mut r, &connector, &Reason::TimedOut);
        f.started_connecting(&mut r, &connector);
        let mut p = f.build_protocol(&Address::Unknown).unwrap();
        p.connection_made(&mut StringTransport::new());
        stopper.stop_trying(&mut r);
        assert_eq!(stops.get(), 0);
        // One in progress is.
        let mut f = ReconnectingClientFactory::new(|_: &_| Quiet);
        let stopper = f.stopper();
        f.started_connecting(&mut r, &connector);
        stopper.stop_trying(&mut r);
        stopper.stop_trying(&mut r);
        assert_eq!(stops.get(), 1);
        f.client_connection_failed(&mut r, &connector, &Reason::Aborted);
        assert_eq!(r.timer_count(), 0, "a retry was scheduled after stop_trying");
    }

    /// Building a protocol is not connecting (TLS builds one before its
    /// handshake): the counting starts over only in `connection_made`. And
    /// the layer that notices it is transparent to `call_on`.
    #[test]
    fn the_delay_starts_over_at_connection_made_not_at_build_protocol() {
        let mut r = Reactor::with_manual_clock().unwrap();
        let connector = Connector::new("nowhere:1".into(), |_| {}, |_| {});
        let mut f = ReconnectingClientFactory::new(|_: &_| Quiet)
            .initial_delay(Duration::from_secs(1))
            .factor(2.0)
            .jitter(0.0);
        f.client_connection_failed(&mut r, &connector, &Reason::Aborted);
        assert_eq!(f.current_delay(), Duration::from_secs(2));
        let mut p = f.build_protocol(&Address::Unknown).unwrap();
        assert_eq!(
            f.current_delay(),
            Duration::from_secs(2),
            "reset at build_protocol"
        );
        let mut t = StringTransport::new();
        p.connection_made(&mut t);
        assert_eq!(f.current_delay(), Duration::from_secs(1));
        let call: twistor_reactor::ProtocolCall =
            Box::new(|p, _| assert!(p.downcast_mut::<Quiet>().is_some()));
        let routed = p.route_call(&mut t, call);
        assert!(routed.is_none(), "the call did not go through to the protocol");
    }

    /// No cap on the delay (`Duration::MAX`) and a steep factor: the delay
    /// saturates instead of overflowing, and every failure still schedules
    /// a retry.
    #[test]
    fn an_unbounded_delay_saturates_instead_of_panicking() {
        let mut r = Reactor::with_manual_clock().unwrap();
        let connector = Connector::new("nowhere:1".into(), |_| {}, |_| {});
        let mut f = ReconnectingClientFactory::new(|_: &_| Quiet)
            .max_delay(Duration::MAX)
            .factor(f64::INFINITY);
        for n in 1..=3 {
            f.client_connection_failed(&mut r, &connector, &Reason::Aborted);
            assert_eq!(r.timer_count(), 1, "failure {n} scheduled no retry");
            if let Some(call) = f.state.pending.take() {
                call.cancel(&mut r);
            }
        }
        assert_eq!(f.current_delay(), Duration::MAX);
        let mut f = ReconnectingClientFactory::new(|_: &_| Quiet)
            .initial_delay(Duration::MAX)
            .max_delay(Duration::MAX);
        f.client_connection_failed(&mut r, &connector, &Reason::Aborted);
        assert_eq!(r.timer_count(), 1);
    }
}
