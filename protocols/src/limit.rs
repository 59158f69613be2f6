//! A cap on simultaneous connections per factory (Twisted's
//! `policies.LimitTotalConnectionsFactory`).
//!
//! [`LimitConnections`] wraps a [`Factory`]: past the cap, new connections
//! are refused (the listener closes them at once) or handed to an overflow
//! protocol, e.g. one that writes "busy" and closes. Overflow connections
//! have a cap of their own ([`DEFAULT_MAX_OVERFLOW`],
//! [`LimitConnections::with_max_overflow`]); past it they are refused too,
//! so the limit binds however many clients arrive. The count goes down when
//! a connection's `connection_lost` runs (or, failing that, when its protocol
//! is dropped), so it never leaks.
//!
//! The check runs in `build_protocol`, when the listener accepts: a refused
//! connection costs an accept and a close, and no TLS handshake wherever the
//! wrapper sits (`listen_tls(r, port, LimitConnections::new(app, 1000),
//! config)` refuses before TLS, because the TLS listener asks for the
//! application's protocol at accept time). Over TLS, a connection counts
//! from accept, handshake included, so slow handshakes hold slots too. An
//! overflow protocol, having something to say, runs after the handshake.

use std::cell::Cell;
use std::rc::Rc;

use twistor_reactor::{Address, Factory, Protocol, Reason, Transport, WrappingProtocol};

type OverflowFn = Box<dyn FnMut(&Address) -> Option<Box<dyn Protocol>>>;

/// Default number of connections a [`LimitConnections`] factory serves at
/// once with its overflow protocol, beyond its cap. An overflow protocol
/// says "busy" and closes, so a few are plenty; each may hold a socket (and
/// over TLS, a handshake) for a while.
///
/// ```
/// assert_eq!(twistor_protocols::DEFAULT_MAX_OVERFLOW, 64);
/// ```
pub const DEFAULT_MAX_OVERFLOW: usize = 64;

/// Wraps a factory and allows at most `max` of its connections at once.
///
/// ```
/// use twistor_protocols::{Echo, LimitConnections};
/// use twistor_reactor::{Address, Factory};
///
/// let mut f = LimitConnections::new(|_: &Address| Echo, 2);
/// let count = f.counter();
/// let a = f.build_protocol(&Address::Unknown);
/// let b = f.build_protocol(&Address::Unknown);
/// assert!(a.is_some() && b.is_some());
/// assert!(f.build_protocol(&Address::Unknown).is_none()); // over the limit
/// assert_eq!(count.get(), 2);
/// drop(a); // (normally: its connection_lost)
/// assert_eq!(count.get(), 1);
/// assert!(f.build_protocol(&Address::Unknown).is_some());
/// ```
pub struct LimitConnections<F: Factory> {
    inner: F,
    max: usize,
    active: Rc<Cell<usize>>,
    overflow: Option<OverflowFn>,
    max_overflow: usize,
    overflow_active: Rc<Cell<usize>>,
    warned: bool,
}

/// A live count of a [`LimitConnections`] factory's connections (readable
/// after the factory has moved into a listener).
///
/// ```
/// use twistor_protocols::{Echo, LimitConnections};
/// use twistor_reactor::{Address, Factory};
/// let mut f = LimitConnections::new(|_: &Address| Echo, 10);
/// let counter = f.counter(); // keep this; give `f` to listen_tcp
/// let _p = f.build_protocol(&Address::Unknown);
/// assert_eq!(counter.get(), 1);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ConnectionCounter(Rc<Cell<usize>>);

impl ConnectionCounter {
    /// Connections open right now.
    pub fn get(&self) -> usize {
        self.0.get()
    }
}

impl<F: Factory> LimitConnections<F> {
    /// Allow at most `max` connections from `inner` at once.
    pub fn new(inner: F, max: usize) -> Self {
        LimitConnections {
            inner,
            max,
            active: Rc::new(Cell::new(0)),
            overflow: None,
            max_overflow: DEFAULT_MAX_OVERFLOW,
            overflow_active: Rc::new(Cell::new(0)),
            warned: false,
        }
    }

    /// Serve connections over the limit with `overflow`'s protocol instead
    /// of refusing them (Twisted's `overflowProtocol`). They do not count
    /// against the limit, but against their own cap
    /// ([`with_max_overflow`](Self::with_max_overflow)), past which they are
    /// refused.
    ///
    /// ```
    /// use twistor_protocols::{Echo, LimitConnections, Qotd};
    /// use twistor_reactor::{Address, Factory};
    /// let mut f = LimitConnections::new(|_: &Address| Echo, 0)
    ///     .with_overflow(|_: &Address| Qotd::new("Too busy, try again later."));
    /// assert!(f.build_protocol(&Address::Unknown).is_some());
    /// ```
    pub fn with_overflow<P: Protocol>(mut self, mut overflow: impl FnMut(&Address) -> P + 'static) -> Self {
        self.overflow = Some(Box::new(move |a| Some(Box::new(overflow(a)))));
        self
    }

    /// Serve at most `n` overflow connections at once (default
    /// [`DEFAULT_MAX_OVERFLOW`]); past that, refuse.
    ///
    /// ```
    /// use twistor_protocols::{Echo, LimitConnections, Qotd};
    /// use twistor_reactor::{Address, Factory};
    /// let mut f = LimitConnections::new(|_: &Address| Echo, 0)
    ///     .with_overflow(|_: &Address| Qotd::new("busy"))
    ///     .with_max_overflow(1);
    /// let busy = f.build_protocol(&Address::Unknown);
    /// assert!(busy.is_some());
    /// assert!(f.build_protocol(&Address::Unknown).is_none());
    /// drop(busy); // (normally: its connection_lost)
    /// assert!(f.build_protocol(&Address::Unknown).is_some());
    /// ```
    pub fn with_max_overflow(mut self, n: usize) -> Self {
        self.max_overflow = n;
        self
    }

    /// A handle on the number of open connections.
    pub fn counter(&self) -> ConnectionCounter {
        ConnectionCounter(self.active.clone())
    }

    /// Connections open right now.
    pub fn active(&self) -> usize {
        self.active.get()
    }
}

impl<F: Factory> Factory for LimitConnections<F> {
    fn build_protocol(&mut self, addr: &Address) -> Option<Box<dyn Protocol>> {
        if self.active.get() >= self.max {
            if !self.warned {
                log::warn!(
                    "connection limit ({}) reached: refusing new connections",
                    self.max
                );
                self.warned = true;
            } else {
                log::debug!("{addr}: over the connection limit ({}); refused", self.max);
            }
            let overflow = self.overflow.as_mut()?;
            if self.overflow_active.get() >= self.max_overflow {
                log::debug!(
                    "{addr}: overflow connections at their cap ({}); refused",
                    self.max_overflow
                );
                return None;
            }
            let inner = overflow(addr)?;
            return Some(Box::new(Counted::new(inner, &self.overflow_active)));
        }
        self.warned = false;
        let inner = self.inner.build_protocol(addr)?;
        Some(Box::new(Counted::new(inner, &self.active)))
    }
}

/// A counted connection's protocol: forwards everything, counts down once.
struct Counted {
    inner: Box<dyn Protocol>,
    active: Option<Rc<Cell<usize>>>,
}

impl Counted {
    /// Count `inner` in `active` until it ends.
    fn new(inner: Box<dyn Protocol>, active: &Rc<Cell<usize>>) -> Counted {
        active.set(active.get() + 1);
        Counted {
            inner,
            active: Some(active.clone()),
        }
    }

    fn release(&mut self) {
        if let Some(a) = self.active.take() {
            a.set(a.get().saturating_sub(1));
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.release();
    }
}

impl WrappingProtocol for Counted {
    fn inner(&mut self) -> &mut dyn Protocol {
        &mut *self.inner
    }
    fn on_connection_lost(&mut self, _: &mut dyn Transport, _: &Reason) {
        self.release();
    }
}
