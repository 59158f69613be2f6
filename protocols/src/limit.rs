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
//!
//! A cap per client address ([`LimitConnections::with_max_per_peer`],
//! Twisted's `policies.LimitConnectionsByPeer`) keeps one host from taking
//! every slot. One peer is one IPv4 address (an IPv4-mapped IPv6 address
//! counts as its IPv4 address, so a dual-stack listener cannot be used to
//! double the share) or one IPv6 /64 network, since one host usually holds
//! a whole /64 (Twisted keys by the exact host string). A peer is
//! remembered only while it has a connection, so that table is bounded by
//! the connections open.

use std::cell::Cell;
use std::rc::Rc;

use twistor_reactor::{Address, Factory, Protocol, Reason, Transport, WrappingProtocol};

use crate::peer_slots::{PeerSlot, PeerSlots};

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
    /// Connections per peer, capped (`None`: no per-peer cap).
    peers: Option<PeerSlots>,
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
            peers: None,
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

    /// Allow at most `n` connections at once from one peer (Twisted's
    /// `LimitConnectionsByPeer.maxConnectionsPerPeer`; no per-peer cap
    /// unless set; `n` is at least 1). One peer is one IPv4 address, IPv4-mapped IPv6
    /// included, or one IPv6 /64 (see the [module docs](self)). A peer at
    /// its cap is refused, overflow protocol or not; addresses that are not
    /// IP (Unix sockets, pipes) are not capped per peer.
    ///
    /// ```
    /// use twistor_protocols::{Echo, LimitConnections};
    /// use twistor_reactor::{Address, Factory};
    /// let mut f = LimitConnections::new(|_: &Address| Echo, 1000).with_max_per_peer(1);
    /// let v4 = Address::Inet("192.0.2.1:4000".parse().unwrap());
    /// let mapped = Address::Inet("[::ffff:192.0.2.1]:4001".parse().unwrap());
    /// let first = f.build_protocol(&v4);
    /// assert!(first.is_some());
    /// assert!(f.build_protocol(&mapped).is_none()); // the same host
    /// drop(first); // (normally: its connection_lost)
    /// assert!(f.build_protocol(&mapped).is_some());
    /// ```
    pub fn with_max_per_peer(mut self, n: usize) -> Self {
        self.peers = Some(PeerSlots::new(n, "the per-peer connection limit"));
        self
    }

    /// Peers with at least one connection open right now (bounded by the
    /// connections open).
    ///
    /// ```
    /// use twistor_protocols::{Echo, LimitConnections};
    /// use twistor_reactor::{Address, Factory};
    /// let mut f = LimitConnections::new(|_: &Address| Echo, 10).with_max_per_peer(2);
    /// let a = f.build_protocol(&Address::Inet("[2001:db8::1]:1".parse().unwrap()));
    /// let b = f.build_protocol(&Address::Inet("[2001:db8::2]:1".parse().unwrap()));
    /// assert_eq!(f.peers(), 1); // one /64
    /// drop((a, b));
    /// assert_eq!(f.peers(), 0);
    /// ```
    pub fn peers(&self) -> usize {
        self.peers.as_ref().map_or(0, PeerSlots::tracked)
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
        // The peer's slot is taken first; on any refusal below it is
        // dropped, which gives it back.
        let peer = match (&self.peers, addr.ip()) {
            (Some(peers), Some(ip)) => Some(peers.take(ip)?),
            _ => None,
        };
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
        let mut counted = Counted::new(inner, &self.active);
        counted.peer = peer;
        Some(Box::new(counted))
    }
}

/// A counted connection's protocol: forwards everything, counts down once.
struct Counted {
    inner: Box<dyn Protocol>,
    active: Option<Rc<Cell<usize>>>,
    /// The peer's slot to give back too, if there is a per-peer cap.
    peer: Option<PeerSlot>,
}

impl Counted {
    /// Count `inner` in `active` until it ends.
    fn new(inner: Box<dyn Protocol>, active: &Rc<Cell<usize>>) -> Counted {
        active.set(active.get() + 1);
        Counted {
            inner,
            active: Some(active.clone()),
            peer: None,
        }
    }

    fn release(&mut self) {
        if let Some(a) = self.active.take() {
            a.set(a.get().saturating_sub(1));
        }
        self.peer = None;
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
