//! Per-peer rate limiting: a token bucket per client IP address.
//!
//! [`RateLimiter`] is the reusable part: `try_acquire(ip, now)` takes a
//! token from that address's bucket or says how long to wait. Protocols
//! call it per request (a Gemini server answers `44 SLOW DOWN`);
//! [`LimitConnectionRate`] wraps a factory to limit new connections per
//! address. Time comes from the caller (`t.reactor().now()` in a protocol),
//! so the manual clock drives it in tests.
//!
//! [`LimitConnectionRate`] decides when the listener accepts, before any
//! protocol is built: a refused client costs an accept and a close, and no
//! TLS handshake even when the wrapper is given to `listen_tls` (see its
//! docs for the composition).
//!
//! Memory is bounded: at most [`RateLimiter::with_max_tracked`] addresses
//! are tracked. When the table is full, one pass over it makes room for an
//! eighth of it at once: buckets that have refilled (which are exactly like
//! a fresh bucket, so forgetting them loses nothing) are dropped first,
//! then those closest to refilled. The next eighth of new addresses need no
//! pass, so a flood of new addresses costs a small constant per address
//! (amortised), not a scan of the table each. IPv4-mapped IPv6 addresses
//! count as IPv4, and IPv6 addresses are keyed by their /64 network by
//! default, since one host usually holds a whole /64
//! ([`RateLimiter::with_ipv6_prefix`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use twistor_reactor::{Address, Factory, Protocol, Reason, Transport};

/// Default number of addresses a [`RateLimiter`] tracks.
///
/// ```
/// assert_eq!(twistor_protocols::DEFAULT_MAX_TRACKED, 10_000);
/// ```
pub const DEFAULT_MAX_TRACKED: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets keyed by IP address (see the [module docs](self)).
///
/// Each address may do `burst` things at once and `rate` per second in the
/// long run.
///
/// ```
/// use std::time::{Duration, Instant};
/// use twistor_protocols::RateLimiter;
///
/// let mut limiter = RateLimiter::new(2.0, 3.0); // 2/s, bursts of 3
/// let ip = "192.0.2.7".parse().unwrap();
/// let t0 = Instant::now();
/// for _ in 0..3 {
///     assert!(limiter.try_acquire(ip, t0).is_ok());
/// }
/// let wait = limiter.try_acquire(ip, t0).unwrap_err();
/// assert_eq!(wait, Duration::from_millis(500));
/// assert!(limiter.try_acquire(ip, t0 + wait).is_ok());
/// ```
#[derive(Debug, Clone)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    max_tracked: usize,
    ipv6_prefix: u8,
    buckets: HashMap<IpAddr, Bucket>,
    /// Buckets looked at by eviction, in total (the cost of making room).
    examined: u64,
}

impl RateLimiter {
    /// `rate` tokens per second, up to `burst` saved up. Negative or NaN
    /// values count as zero.
    ///
    /// ```
    /// use std::time::Instant;
    /// use twistor_protocols::RateLimiter;
    /// // 10 requests per minute, bursts of 5; remember at most 1,000
    /// // addresses; key IPv6 clients by their /56.
    /// let mut l = RateLimiter::new(10.0 / 60.0, 5.0)
    ///     .with_max_tracked(1000)
    ///     .with_ipv6_prefix(56);
    /// assert!(l.try_acquire("2001:db8:0:1::1".parse().unwrap(), Instant::now()).is_ok());
    /// assert_eq!(l.tracked(), 1);
    /// ```
    pub fn new(rate: f64, burst: f64) -> RateLimiter {
        let clean = |x: f64| if x.is_nan() || x < 0.0 { 0.0 } else { x };
        RateLimiter {
            rate: clean(rate),
            burst: clean(burst),
            max_tracked: DEFAULT_MAX_TRACKED,
            ipv6_prefix: 64,
            buckets: HashMap::new(),
            examined: 0,
        }
    }

    /// Track at most `n` addresses (at least 1).
    pub fn with_max_tracked(mut self, n: usize) -> Self {
        self.max_tracked = n.max(1);
        self
    }

    /// Key IPv6 addresses by their first `bits` bits (default 64; 128 keys
    /// each address on its own).
    pub fn with_ipv6_prefix(mut self, bits: u8) -> Self {
        self.ipv6_prefix = bits.min(128);
        self
    }

    /// Addresses tracked right now.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }

    /// Take one token for `ip` at time `now`; if there is none, the error
    /// says how long until there is.
    pub fn try_acquire(&mut self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        self.try_acquire_n(ip, now, 1.0)
    }

    /// Take `n` tokens for `ip` at time `now` (e.g. bytes for a bandwidth
    /// limit). A request larger than the burst can never succeed and waits
    /// [`Duration::MAX`].
    ///
    /// ```
    /// use std::time::Instant;
    /// use twistor_protocols::RateLimiter;
    /// let mut bw = RateLimiter::new(1000.0, 4096.0); // bytes
    /// let ip = "2001:db8::1".parse().unwrap();
    /// assert!(bw.try_acquire_n(ip, Instant::now(), 4096.0).is_ok());
    /// assert!(bw.try_acquire_n(ip, Instant::now(), 5000.0).is_err());
    /// ```
    pub fn try_acquire_n(&mut self, ip: IpAddr, now: Instant, n: f64) -> Result<(), Duration> {
        let n = if n.is_nan() || n < 0.0 { 0.0 } else { n };
        let key = self.key(ip);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_tracked {
            self.evict(now);
        }
        let (rate, burst) = (self.rate, self.burst);
        let b = self.buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        if now > b.last {
            b.last = now;
        }
        if b.tokens >= n {
            b.tokens -= n;
            return Ok(());
        }
        if n > burst || rate == 0.0 {
            return Err(Duration::MAX);
        }
        Err(Duration::try_from_secs_f64((n - b.tokens) / rate).unwrap_or(Duration::MAX))
    }

    /// The bucket key for `ip`.
    fn key(&self, ip: IpAddr) -> IpAddr {
        peer_key(ip, self.ipv6_prefix)
    }

    /// Make room for at least an eighth of the table, in one pass: drop
    /// every refilled bucket (exactly like a fresh one: nothing is lost),
    /// then, if that is not enough, the buckets closest to refilled (the
    /// least is lost). The next eighth of new addresses then need no pass,
    /// so the cost per new address is a small constant however the
    /// buckets refill.
    fn evict(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        let want = (self.max_tracked / 8).max(1);
        let before = self.buckets.len();
        self.examined += before as u64;
        // Tokens each bucket still misses, refilled ones dropped.
        let mut missing: Vec<(f64, Instant, IpAddr)> = Vec::new();
        self.buckets.retain(|k, b| {
            let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
            let m = burst - (b.tokens + elapsed * rate);
            if m > 0.0 {
                missing.push((m, b.last, *k));
                true
            } else {
                false
            }
        });
        let freed = before - self.buckets.len();
        let n = want.saturating_sub(freed).min(missing.len());
        if n > 0 {
            // The n that miss the fewest tokens (the older one on a tie).
            missing.select_nth_unstable_by(n - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            for (_, _, k) in &missing[..n] {
                self.buckets.remove(k);
            }
            log::debug!("rate limiter full: forgot {n} address(es) not yet refilled");
        }
    }
}

/// Who counts as one peer: an IPv4-mapped IPv6 address is its IPv4
/// address, and an IPv6 address is its network of `ipv6_prefix` bits (128:
/// the address itself).
pub(crate) fn peer_key(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) if ipv6_prefix < 128 => {
            let bits = u128::from(v6);
            let mask = if ipv6_prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(ipv6_prefix))
            };
            IpAddr::V6(Ipv6Addr::from(bits & mask))
        }
        other => other,
    }
}

type RefusalFn = Rc<dyn Fn(&mut dyn Transport, Duration)>;
type ClockFn = Rc<dyn Fn() -> Instant>;

/// Wraps a factory and limits how often each IP address may connect, with a
/// shared [`RateLimiter`].
///
/// The check runs in [`build_protocol`](Factory::build_protocol), when the
/// listener accepts the connection: a refused connection is closed at once,
/// your factory is not even asked for a protocol, and **no TLS handshake
/// is made**, wherever the wrapper sits. `listen_tls(r, port,
/// LimitConnectionRate::new(app, limiter), config)` is cheap: the TLS
/// listener asks this factory for the application's protocol at accept
/// time, before the handshake, and closes the socket when it gets none.
///
/// With [`with_refusal`](Self::with_refusal), a refused client is told why
/// before the close; talking to it takes a connection, so over TLS that
/// costs a handshake again. Leave it unset where refusals must be cheap.
///
/// Non-IP connections (Unix sockets) are not limited.
///
/// ```
/// use twistor_protocols::{Echo, LimitConnectionRate, RateLimiter};
/// use twistor_reactor::{Address, Factory};
///
/// // 1 connection per second per address, bursts of 2.
/// let mut f = LimitConnectionRate::new(|_: &Address| Echo, RateLimiter::new(1.0, 2.0));
/// let peer = Address::Inet("192.0.2.7:40000".parse().unwrap());
/// assert!(f.build_protocol(&peer).is_some());
/// assert!(f.build_protocol(&peer).is_some());
/// assert!(f.build_protocol(&peer).is_none()); // refused: the listener closes it
/// ```
///
/// Over TLS, the composition to write:
///
/// ```no_run
/// use twistor_protocols::{Echo, IdleTimeout, LimitConnectionRate, LimitConnections, RateLimiter};
/// use twistor_reactor::{Address, Reactor};
/// use twistor_transports::tls::{generate_self_signed, listen_tls};
/// use std::time::Duration;
///
/// let mut r = Reactor::new()?;
/// let (config, _) = generate_self_signed(&["localhost"])?;
/// let app = |_: &Address| IdleTimeout::new(Echo, Duration::from_secs(60));
/// // Both policies refuse before the handshake: a refused client costs an
/// // accept and a close, nothing more.
/// let policies = LimitConnections::new(
///     LimitConnectionRate::new(app, RateLimiter::new(1.0, 10.0)),
///     1000,
/// );
/// listen_tls(&mut r, 1965, policies, config)?;
/// r.run()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LimitConnectionRate<F: Factory> {
    inner: F,
    limiter: Rc<RefCell<RateLimiter>>,
    refusal: Option<RefusalFn>,
    clock: ClockFn,
}

impl<F: Factory> LimitConnectionRate<F> {
    /// Limit `inner`'s connections per address with `limiter`.
    ///
    /// ```
    /// use twistor_protocols::{Echo, LimitConnectionRate, RateLimiter};
    /// use twistor_reactor::Address;
    /// // At most 5 new connections per address per second, bursts of 20.
    /// let f = LimitConnectionRate::new(|_: &Address| Echo, RateLimiter::new(5.0, 20.0));
    /// assert_eq!(f.limiter().borrow().tracked(), 0);
    /// ```
    pub fn new(inner: F, limiter: RateLimiter) -> Self {
        Self::shared(inner, Rc::new(RefCell::new(limiter)))
    }

    /// Like [`new`](Self::new), with a limiter shared with other factories
    /// or protocols (e.g. two listeners counting against one budget).
    ///
    /// ```
    /// use std::{cell::RefCell, rc::Rc};
    /// use twistor_protocols::{Daytime, Echo, LimitConnectionRate, RateLimiter};
    /// use twistor_reactor::Address;
    /// let budget = Rc::new(RefCell::new(RateLimiter::new(1.0, 10.0)));
    /// let _echo = LimitConnectionRate::shared(|_: &Address| Echo, budget.clone());
    /// let _daytime = LimitConnectionRate::shared(|_: &Address| Daytime, budget);
    /// ```
    pub fn shared(inner: F, limiter: Rc<RefCell<RateLimiter>>) -> Self {
        LimitConnectionRate {
            inner,
            limiter,
            refusal: None,
            clock: Rc::new(Instant::now),
        }
    }

    /// Talk to a refused client before closing: `refusal` runs with its
    /// transport and how long the address should wait, then the connection
    /// closes with [`Reason::Limit`]. Your factory is not asked for a
    /// protocol. Over TLS this runs after a handshake: a refusal you can
    /// read costs one.
    ///
    /// ```
    /// use twistor_protocols::{Echo, LimitConnectionRate, RateLimiter};
    /// use twistor_reactor::{testing::StringTransport, Address, Factory, Transport};
    ///
    /// let mut f = LimitConnectionRate::new(|_: &Address| Echo, RateLimiter::new(1.0, 1.0))
    ///     .with_refusal(|t, wait| t.write(format!("slow down: {}s\r\n", wait.as_secs_f64().ceil()).as_bytes()));
    /// let mut t = StringTransport::new();
    /// let _first = f.build_protocol(&t.peer()).unwrap();
    /// let mut refused = f.build_protocol(&t.peer()).unwrap();
    /// refused.connection_made(&mut t);
    /// assert_eq!(t.value(), b"slow down: 1s\r\n");
    /// assert!(t.disconnecting());
    /// ```
    pub fn with_refusal(mut self, refusal: impl Fn(&mut dyn Transport, Duration) + 'static) -> Self {
        self.refusal = Some(Rc::new(refusal));
        self
    }

    /// Read the time from `clock` instead of [`Instant::now`]. A factory
    /// has no reactor at hand; a test on the manual clock passes its own.
    ///
    /// ```
    /// use std::{cell::Cell, rc::Rc, time::{Duration, Instant}};
    /// use twistor_protocols::{Echo, LimitConnectionRate, RateLimiter};
    /// use twistor_reactor::{Address, Factory};
    ///
    /// let now = Rc::new(Cell::new(Instant::now()));
    /// let n = now.clone();
    /// let mut f = LimitConnectionRate::new(|_: &Address| Echo, RateLimiter::new(1.0, 1.0))
    ///     .with_clock(move || n.get());
    /// let peer = Address::Inet("192.0.2.7:40000".parse().unwrap());
    /// assert!(f.build_protocol(&peer).is_some());
    /// assert!(f.build_protocol(&peer).is_none());
    /// now.set(now.get() + Duration::from_secs(1));
    /// assert!(f.build_protocol(&peer).is_some());
    /// ```
    pub fn with_clock(mut self, clock: impl Fn() -> Instant + 'static) -> Self {
        self.clock = Rc::new(clock);
        self
    }

    /// The limiter, to inspect or share.
    pub fn limiter(&self) -> Rc<RefCell<RateLimiter>> {
        self.limiter.clone()
    }
}

impl<F: Factory> Factory for LimitConnectionRate<F> {
    fn build_protocol(&mut self, addr: &Address) -> Option<Box<dyn Protocol>> {
        if let Some(ip) = addr.ip() {
            let now = (self.clock)();
            let res = self.limiter.borrow_mut().try_acquire(ip, now);
            if let Err(wait) = res {
                log::debug!("{addr}: connects too often; refused (retry in {wait:?})");
                return self.refusal.as_ref().map(|refusal| {
                    Box::new(Refused {
                        refusal: refusal.clone(),
                        wait,
                    }) as Box<dyn Protocol>
                });
            }
        }
        self.inner.build_protocol(addr)
    }
}

/// A refused connection with a refusal to send: says it, then closes.
struct Refused {
    refusal: RefusalFn,
    wait: Duration,
}

impl Protocol for Refused {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        (self.refusal)(t, self.wait);
        let who = t.peer();
        t.lose_connection_with(Reason::Limit(format!("{who}: connection rate limit")));
    }
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// A steady stream of new addresses, one per millisecond, each taking
    /// its only token, with buckets refilling after `refill_ms`. Returns the
    /// buckets eviction examined per new address.
    fn examined_per_insert(refill_ms: Option<u64>, inserts: u32) -> f64 {
        let max = 1000;
        let rate = refill_ms.map_or(0.0, |ms| 1000.0 / ms as f64);
        let mut l = RateLimiter::new(rate, 1.0).with_max_tracked(max);
        let t0 = Instant::now();
        for i in 0..inserts {
            let now = t0 + Duration::from_millis(u64::from(i));
            assert!(l.try_acquire(IpAddr::V4(Ipv4Addr::from(i)), now).is_ok());
            assert!(l.tracked() <= max, "the table outgrew its cap");
        }
        l.examined as f64 / f64::from(inserts)
    }

    #[test]
    fn eviction_is_amortised_constant_per_new_address() {
        // Buckets refilling just as the table fills up (999 ms, 1 s) used to
        // free one entry per full scan of the table: 1,000 buckets examined
        // per new address.
        for refill_ms in [
            None,
            Some(1),
            Some(500),
            Some(999),
            Some(1000),
            Some(1001),
            Some(1500),
            Some(60_000),
        ] {
            let per = examined_per_insert(refill_ms, 100_000);
            assert!(
                per < 20.0,
                "refill after {refill_ms:?} ms: {per:.1} buckets examined per new address"
            );
        }
    }

    #[test]
    fn keys() {
        let l = RateLimiter::new(1.0, 1.0);
        let k = |s: &str| l.key(s.parse().unwrap()).to_string();
        assert_eq!(k("::ffff:192.0.2.1"), "192.0.2.1");
        assert_eq!(k("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::");
        let l = l.with_ipv6_prefix(128);
        assert_eq!(l.key("2001:db8::5".parse().unwrap()).to_string(), "2001:db8::5");
        let l = RateLimiter::new(1.0, 1.0).with_ipv6_prefix(0);
        assert_eq!(l.key("2001:db8::5".parse().unwrap()).to_string(), "::");
    }
}
