//! The stream contracts: `Protocol`, `Transport`, `Factory`, `ClientFactory`.
//!
//! A protocol never owns its transport: every callback receives it as an
//! argument (`&mut dyn Transport`). That keeps borrows simple and lets the
//! same protocol run over TCP, Unix sockets, pipes, TLS or an in-memory test
//! transport.

use std::any::Any;
use std::io;
use std::time::{Duration, SystemTime};

use crate::{Address, ConnId, Reactor, Reason};

/// A closure delivered to a connection's protocol by [`Reactor::call_on`].
pub type ProtocolCall = Box<dyn FnOnce(&mut dyn Protocol, &mut dyn Transport)>;

/// Replaces the protocol of a live connection (see [`Transport::upgrade`]).
/// It receives the current protocol and the transport and returns the new
/// one, which usually wraps the old (a TLS layer does exactly that).
pub type Upgrade = Box<dyn FnOnce(Box<dyn Protocol>, &mut dyn Transport) -> Box<dyn Protocol>>;

/// The application side of a stream connection (Twisted's `IProtocol`,
/// asyncio's `Protocol`).
///
/// Only [`data_received`](Protocol::data_received) is required. Callbacks are
/// never re-entered: anything a callback causes (flow control, a close, a
/// message from another connection) is delivered after it returns.
///
/// ```
/// use twistor_reactor::{Protocol, Transport};
///
/// /// The lab's echo protocol.
/// struct Echo;
/// impl Protocol for Echo {
///     fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
///         t.write(data);
///     }
/// }
///
/// let mut t = twistor_reactor::testing::StringTransport::new();
/// let mut p = Echo;
/// p.data_received(&mut t, b"hi");
/// assert_eq!(t.value(), b"hi");
/// ```
pub trait Protocol: Any {
    /// The connection is established (after the TLS handshake, when TLS is
    /// below). Exactly once per connection.
    fn connection_made(&mut self, t: &mut dyn Transport) {
        let _ = t;
    }

    /// Bytes arrived. `data` borrows the reactor's shared read buffer: copy
    /// what you need to keep.
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]);

    /// The peer half-closed (EOF, or TLS close_notify). Return `true` to keep
    /// the connection open for writing; the default, `false`, closes it after
    /// the write buffer is flushed.
    fn eof_received(&mut self, t: &mut dyn Transport) -> bool {
        let _ = t;
        false
    }

    /// The connection is gone. Exactly once per connection that saw
    /// `connection_made`. Writes made here are discarded; the reactor is
    /// still reachable through `t.reactor()`.
    fn connection_lost(&mut self, t: &mut dyn Transport, reason: &Reason) {
        let _ = (t, reason);
    }

    /// The transport's write buffer went over its high-water mark: stop
    /// producing until [`resume_writing`](Protocol::resume_writing).
    fn pause_writing(&mut self, t: &mut dyn Transport) {
        let _ = t;
    }

    /// The write buffer drained below its low-water mark.
    fn resume_writing(&mut self, t: &mut dyn Transport) {
        let _ = t;
    }

    /// Route a closure from [`Reactor::call_on`] to the right protocol.
    ///
    /// Plain protocols keep the default, which returns the call so that it
    /// runs against `self`. A layer that wraps another protocol (TLS, an
    /// idle timeout, a connection counter) passes the call on to the wrapped
    /// protocol's own `route_call` (with the layer's transport view), runs
    /// what comes back against the wrapped protocol, and returns `None`.
    /// Layers nest that way, so the call reaches the innermost protocol and
    /// every layer on the way sees it.
    ///
    /// ```
    /// use twistor_reactor::{Protocol, ProtocolCall, Transport};
    ///
    /// /// A layer that counts the bytes its protocol receives.
    /// struct Counting<P: Protocol> { inner: P, bytes: usize }
    ///
    /// impl<P: Protocol> Protocol for Counting<P> {
    ///     fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
    ///         self.bytes += data.len();
    ///         self.inner.data_received(t, data);
    ///     }
    ///     fn route_call(&mut self, t: &mut dyn Transport, call: ProtocolCall) -> Option<ProtocolCall> {
    ///         let call = self.inner.route_call(t, call)?;
    ///         call(&mut self.inner, t);
    ///         None
    ///     }
    ///     // ... and every other callback forwarded the same way.
    /// }
    /// ```
    fn route_call(&mut self, t: &mut dyn Transport, call: ProtocolCall) -> Option<ProtocolCall> {
        let _ = t;
        Some(call)
    }
}

impl dyn Protocol {
    /// Downcast to the concrete protocol type, as in
    /// `reactor.call_on(id, |p, t| p.downcast_mut::<Chat>().unwrap().greet(t))`.
    pub fn downcast_mut<T: Protocol>(&mut self) -> Option<&mut T> {
        (self as &mut dyn Any).downcast_mut::<T>()
    }

    /// Downcast to the concrete protocol type.
    pub fn downcast_ref<T: Protocol>(&self) -> Option<&T> {
        (self as &dyn Any).downcast_ref::<T>()
    }
}

/// Facts about the TLS session below a transport (see
/// [`Transport::tls_info`]). Filled in by the TLS layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// Protocol version, e.g. `"TLSv1.3"`.
    pub version: String,
    /// Negotiated cipher suite, e.g. `"TLS13_AES_256_GCM_SHA384"`.
    pub cipher_suite: String,
    /// Negotiated ALPN protocol, if any.
    pub alpn: Option<Vec<u8>>,
    /// The server name the client asked for (SNI), if any.
    pub sni: Option<String>,
    /// The peer's certificate chain, DER, leaf first (empty when the peer
    /// sent none).
    pub peer_chain: Vec<Vec<u8>>,
    /// Facts about the peer's leaf certificate.
    pub peer_cert: Option<CertFacts>,
    /// Whether the handshake resumed an earlier session (a ticket or a
    /// cached session id) rather than doing a full one; the peer's
    /// certificate is then the one shown when that session was made.
    pub resumed: bool,
}

/// Facts about one X.509 certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// SHA-256 of the DER certificate, lowercase hex.
    pub sha256_fingerprint: String,
    /// The subject's common name, if it has one.
    pub subject_cn: Option<String>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// Serial number, lowercase hex.
    pub serial: String,
}

/// The connection side of a stream connection (Twisted's `ITransport`,
/// asyncio's `Transport`), as seen from inside a protocol callback.
///
/// Writes are buffered and flushed once the callback returns; a close
/// requested with [`lose_connection`](Transport::lose_connection) happens
/// after the buffer is flushed.
pub trait Transport {
    /// Queue bytes for sending.
    fn write(&mut self, data: &[u8]);

    /// Queue several buffers for sending (flushed with one vectored write).
    fn write_sequence(&mut self, bufs: &[&[u8]]) {
        for b in bufs {
            self.write(b);
        }
    }

    /// Flush what is buffered, then close (TLS sends close_notify first).
    fn lose_connection(&mut self);

    /// Like [`lose_connection`](Transport::lose_connection), but
    /// `connection_lost` (and the listener's or client factory's hooks) are
    /// told `reason` instead of [`Reason::ConnectionDone`]: how a protocol
    /// reports that it closed because a limit was hit
    /// ([`Reason::Limit`]) or the peer went idle ([`Reason::TimedOut`]).
    ///
    /// Transports that cannot carry a reason fall back to a plain
    /// `lose_connection` (the default).
    ///
    /// ```
    /// use twistor_reactor::{testing::StringTransport, Reason, Transport};
    /// let mut t = StringTransport::new();
    /// t.lose_connection_with(Reason::Limit("line too long".into()));
    /// assert!(t.disconnecting());
    /// assert!(matches!(t.close_reason(), Some(Reason::Limit(_))));
    /// ```
    fn lose_connection_with(&mut self, reason: Reason) {
        let _ = reason;
        self.lose_connection();
    }

    /// Close now, discarding whatever is buffered.
    fn abort_connection(&mut self);

    /// Flush, then half-close the sending direction. Reading goes on.
    fn write_eof(&mut self);

    /// Whether [`write_eof`](Transport::write_eof) is supported.
    fn can_write_eof(&self) -> bool {
        true
    }

    /// Stop delivering `data_received` until `resume_reading`.
    fn pause_reading(&mut self);

    /// Deliver data again after `pause_reading`.
    fn resume_reading(&mut self);

    /// Whether reading is on (not paused, not closed).
    fn is_reading(&self) -> bool;

    /// Whether the transport is closing or closed.
    fn is_closing(&self) -> bool;

    /// Bytes buffered and not yet accepted by the kernel.
    fn write_buffer_size(&self) -> usize;

    /// Set the write buffer's high and low water marks (`low <= high`).
    fn set_write_buffer_limits(&mut self, high: usize, low: usize);

    /// The write buffer's `(high, low)` water marks.
    fn write_buffer_limits(&self) -> (usize, usize);

    /// Set this connection's hard cap on buffered output (the stream's
    /// default is [`DEFAULT_MAX_WRITE_BUFFER`](crate::DEFAULT_MAX_WRITE_BUFFER),
    /// 16 MiB, unless its listener or connector chose another). The water
    /// marks only advise; past this many bytes waiting to be sent, counted
    /// as they are written, the connection is aborted with
    /// [`Reason::Limit`] and a log line, even if the protocol ignores
    /// `pause_writing`. A protocol that streams large replies to slow
    /// peers raises it; one facing untrusted peers may lower it. Lowering
    /// it below what is already buffered aborts at once.
    ///
    /// Transports without a write buffer of their own ignore it (the
    /// default); a layer passes it to the transport below.
    ///
    /// ```
    /// use twistor_reactor::{testing::StringTransport, Transport};
    /// let mut t = StringTransport::new();
    /// t.set_max_write_buffer(1 << 20);
    /// assert_eq!(t.max_write_buffer(), Some(1 << 20));
    /// ```
    fn set_max_write_buffer(&mut self, max: usize) {
        let _ = max;
    }

    /// The hard cap on buffered output, if this transport has one (see
    /// [`set_max_write_buffer`](Transport::set_max_write_buffer)).
    fn max_write_buffer(&self) -> Option<usize> {
        None
    }

    /// The remote end.
    fn peer(&self) -> Address;

    /// The local end.
    fn host(&self) -> Address;

    /// This connection's id: give it to other connections, timers or
    /// threads so they can reach this connection later.
    fn id(&self) -> ConnId;

    /// The reactor: timers, stop, connect, listen, `call_on`.
    fn reactor(&mut self) -> &mut Reactor;

    /// Set TCP_NODELAY (on by default for TCP).
    fn set_nodelay(&mut self, on: bool) -> io::Result<()> {
        let _ = on;
        Err(io::Error::new(io::ErrorKind::Unsupported, "not a TCP transport"))
    }

    /// Turn TCP keepalive on with the given idle time, or off with `None`.
    fn set_keepalive(&mut self, idle: Option<Duration>) -> io::Result<()> {
        let _ = idle;
        Err(io::Error::new(io::ErrorKind::Unsupported, "not a TCP transport"))
    }

    /// Facts about the TLS session, when TLS is below this transport.
    fn tls_info(&self) -> Option<&TlsInfo> {
        None
    }

    /// Replace the protocol of this connection once the current callback
    /// returns: `start_tls` is built on this. Bytes already delivered to the
    /// old protocol stay with it; the layer sees only what arrives next.
    /// What is written after this call in the same callback, and a
    /// `lose_connection` or `write_eof` made then, go through the new
    /// protocol once it is in place (a TLS layer encrypts the bytes and
    /// closes with close_notify), after everything written before.
    fn upgrade(&mut self, upgrade: Upgrade);
}

/// Builds a protocol for each new connection (Twisted's `Factory`).
///
/// Any `FnMut(&Address) -> P` closure is a factory; return `None` from a
/// hand-written factory to refuse a connection.
///
/// ```
/// use twistor_reactor::{Address, Factory, Protocol, Transport};
/// struct Echo;
/// impl Protocol for Echo {
///     fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) { t.write(d) }
/// }
/// let mut f = |_: &Address| Echo;
/// assert!(f.build_protocol(&Address::Unknown).is_some());
/// ```
pub trait Factory: 'static {
    /// A protocol for a connection from (or to) `addr`, or `None` to refuse.
    fn build_protocol(&mut self, addr: &Address) -> Option<Box<dyn Protocol>>;
}

impl<F, P> Factory for F
where
    F: FnMut(&Address) -> P + 'static,
    P: Protocol,
{
    fn build_protocol(&mut self, addr: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(self(addr)))
    }
}

/// A factory for outgoing connections that hears how they went (Twisted's
/// `ClientFactory`). Every attempt ends in exactly one of a protocol's
/// `connection_made` or [`client_connection_failed`](ClientFactory::client_connection_failed).
///
/// Closures are client factories too, with the default (silent) callbacks.
pub trait ClientFactory: Factory {
    /// An attempt is starting.
    fn started_connecting(&mut self, r: &mut Reactor, connector: &Connector) {
        let _ = (r, connector);
    }

    /// The attempt failed; `connector.connect(r)` tries again.
    fn client_connection_failed(&mut self, r: &mut Reactor, connector: &Connector, reason: &Reason) {
        let _ = (r, connector, reason);
    }

    /// An established connection ended; `connector.connect(r)` reconnects.
    fn client_connection_lost(&mut self, r: &mut Reactor, connector: &Connector, reason: &Reason) {
        let _ = (r, connector, reason);
    }
}

impl<F, P> ClientFactory for F
where
    F: FnMut(&Address) -> P + 'static,
    P: Protocol,
{
}

/// The thing that made an outgoing connection, and can make it again.
///
/// Cheap to clone; keep one to reconnect later (a reconnecting factory does).
#[derive(Clone)]
pub struct Connector {
    destination: String,
    retry: std::rc::Rc<dyn Fn(&mut Reactor)>,
    stop: std::rc::Rc<dyn Fn(&mut Reactor)>,
}

impl Connector {
    /// Build a connector for a transport implementation: `retry` starts a new
    /// attempt with the same factory, `stop` cancels a pending attempt.
    pub fn new(
        destination: String,
        retry: impl Fn(&mut Reactor) + 'static,
        stop: impl Fn(&mut Reactor) + 'static,
    ) -> Connector {
        Connector {
            destination,
            retry: std::rc::Rc::new(retry),
            stop: std::rc::Rc::new(stop),
        }
    }

    /// Start a new attempt (it begins on the next loop turn).
    pub fn connect(&self, r: &mut Reactor) {
        (self.retry)(r)
    }

    /// Cancel the attempt in progress, if any: it ends in
    /// `client_connection_failed` with [`Reason::Aborted`].
    pub fn stop_connecting(&self, r: &mut Reactor) {
        (self.stop)(r)
    }

    /// Where this connector connects to, as given (e.g. `"localhost:1234"`).
    pub fn destination(&self) -> &str {
        &self.destination
    }
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Connector({})", self.destination)
    }
}

/// Stands in for a protocol while [`swap_protocol`] replaces it.
struct Detached;
impl Protocol for Detached {
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
}

/// Apply an [`Upgrade`] to the protocol in `slot`: the one protocol swap,
/// used by the stream machinery and by every layer that carries a protocol
/// (TLS). The upgrade closure receives the current protocol and returns
/// the new one, which takes its place.
///
/// A panic in the closure is caught (and logged under `what`) and returned
/// as its message; the slot then holds an inert protocol that ignores
/// everything, since the old one was moved into the closure. The caller
/// should end the connection with [`Reason::Panic`].
///
/// ```
/// use twistor_reactor::{swap_protocol, testing::StringTransport, Protocol, Transport};
///
/// struct Old;
/// impl Protocol for Old {
///     fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
/// }
/// struct Shout(Box<dyn Protocol>);
/// impl Protocol for Shout {
///     fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
///         t.write(&d.to_ascii_uppercase());
///     }
/// }
///
/// let mut t = StringTransport::new();
/// let mut slot: Box<dyn Protocol> = Box::new(Old);
/// swap_protocol(&mut slot, Box::new(|old, _t| Box::new(Shout(old))), &mut t, format_args!("upgrade")).unwrap();
/// slot.data_received(&mut t, b"hi");
/// assert_eq!(t.value(), b"HI");
/// ```
pub fn swap_protocol(
    slot: &mut Box<dyn Protocol>,
    upgrade: Upgrade,
    t: &mut dyn Transport,
    what: std::fmt::Arguments<'_>,
) -> Result<(), String> {
    let old = std::mem::replace(slot, Box::new(Detached));
    *slot = crate::catch_panic(what, || upgrade(old, t))?;
    Ok(())
}
