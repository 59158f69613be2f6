//! `WrappingTransport`: the one way to write a transport view that passes
//! everything to the transport below it and looks at a little on the way.
//!
//! Layers hand their inner protocol a view of the transport: a framing's
//! control (which discards buffered plaintext at `start_tls`), an idle
//! timeout's view (which notes writes). Written by hand, each such view
//! forwards some twenty methods, and one the trait gains later is silently
//! left at its default (a cap set through the view would go nowhere).
//! A view implements this trait instead, and gets every [`Transport`]
//! method forwarded, with two hooks for what layers look at.

use std::io;
use std::time::Duration;

use crate::{Address, ConnId, Reactor, Reason, TlsInfo, Transport, Upgrade};

/// A transport view over another transport. Implement the two accessors
/// (and a hook if needed); every [`Transport`] method is forwarded.
///
/// ```
/// use twistor_reactor::{testing::StringTransport, Transport, WrappingTransport};
///
/// /// Counts the bytes written through it.
/// struct Counting<'a> { t: &'a mut dyn Transport, written: usize }
///
/// impl WrappingTransport for Counting<'_> {
///     fn below(&self) -> &dyn Transport { &*self.t }
///     fn below_mut(&mut self) -> &mut dyn Transport { &mut *self.t }
///     fn on_write(&mut self, len: usize) { self.written += len; }
/// }
///
/// let mut t = StringTransport::new();
/// let mut view = Counting { t: &mut t, written: 0 };
/// view.write(b"hello");
/// view.set_max_write_buffer(1024); // forwarded like everything else
/// assert_eq!(view.written, 5);
/// assert_eq!(t.value(), b"hello");
/// assert_eq!(t.max_write_buffer(), Some(1024));
/// ```
pub trait WrappingTransport {
    /// The transport below.
    fn below(&self) -> &dyn Transport;

    /// The transport below, mutably.
    fn below_mut(&mut self) -> &mut dyn Transport;

    /// `len` bytes are about to be written (by `write` or
    /// `write_sequence`).
    fn on_write(&mut self, len: usize) {
        let _ = len;
    }

    /// An upgrade (`start_tls`) is about to be asked for.
    fn on_upgrade(&mut self) {}
}

impl<W: WrappingTransport> Transport for W {
    fn write(&mut self, data: &[u8]) {
        self.on_write(data.len());
        self.below_mut().write(data)
    }
    fn write_sequence(&mut self, bufs: &[&[u8]]) {
        self.on_write(bufs.iter().map(|b| b.len()).sum());
        self.below_mut().write_sequence(bufs)
    }
    fn lose_connection(&mut self) {
        self.below_mut().lose_connection()
    }
    fn lose_connection_with(&mut self, reason: Reason) {
        self.below_mut().lose_connection_with(reason)
    }
    fn abort_connection(&mut self) {
        self.below_mut().abort_connection()
    }
    fn write_eof(&mut self) {
        self.below_mut().write_eof()
    }
    fn can_write_eof(&self) -> bool {
        self.below().can_write_eof()
    }
    fn pause_reading(&mut self) {
        self.below_mut().pause_reading()
    }
    fn resume_reading(&mut self) {
        self.below_mut().resume_reading()
    }
    fn is_reading(&self) -> bool {
        self.below().is_reading()
    }
    fn is_closing(&self) -> bool {
        self.below().is_closing()
    }
    fn write_buffer_size(&self) -> usize {
        self.below().write_buffer_size()
    }
    fn set_write_buffer_limits(&mut self, high: usize, low: usize) {
        self.below_mut().set_write_buffer_limits(high, low)
    }
    fn write_buffer_limits(&self) -> (usize, usize) {
        self.below().write_buffer_limits()
    }
    fn set_max_write_buffer(&mut self, max: usize) {
        self.below_mut().set_max_write_buffer(max)
    }
    fn max_write_buffer(&self) -> Option<usize> {
        self.below().max_write_buffer()
    }
    fn peer(&self) -> Address {
        self.below().peer()
    }
    fn host(&self) -> Address {
        self.below().host()
    }
    fn id(&self) -> ConnId {
        self.below().id()
    }
    fn reactor(&mut self) -> &mut Reactor {
        self.below_mut().reactor()
    }
    fn set_nodelay(&mut self, on: bool) -> io::Result<()> {
        self.below_mut().set_nodelay(on)
    }
    fn set_keepalive(&mut self, idle: Option<Duration>) -> io::Result<()> {
        self.below_mut().set_keepalive(idle)
    }
    fn tls_info(&self) -> Option<&TlsInfo> {
        self.below().tls_info()
    }
    fn upgrade(&mut self, upgrade: Upgrade) {
        self.on_upgrade();
        self.below_mut().upgrade(upgrade)
    }
}

/// A protocol that runs another one and passes every callback to it, looking
/// at the start and the end of the connection on the way (a connection
/// counter, a reconnecting factory's reset). Implement the accessor and the
/// hooks you need; [`Protocol`](crate::Protocol) is implemented for you,
/// `route_call` included, so `call_on` reaches the inner protocol.
///
/// ```
/// use std::{cell::Cell, rc::Rc};
/// use twistor_reactor::{testing::StringTransport, Protocol, Reason, Transport, WrappingProtocol};
///
/// struct Echo;
/// impl Protocol for Echo {
///     fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) { t.write(d) }
/// }
///
/// /// Counts live connections.
/// struct Counted { inner: Box<dyn Protocol>, live: Rc<Cell<usize>> }
///
/// impl WrappingProtocol for Counted {
///     fn inner(&mut self) -> &mut dyn Protocol { &mut *self.inner }
///     fn on_connection_made(&mut self, _: &mut dyn Transport) { self.live.set(self.live.get() + 1) }
///     fn on_connection_lost(&mut self, _: &mut dyn Transport, _: &Reason) { self.live.set(self.live.get() - 1) }
/// }
///
/// let live = Rc::new(Cell::new(0));
/// let mut p = Counted { inner: Box::new(Echo), live: live.clone() };
/// let mut t = StringTransport::new();
/// p.connection_made(&mut t);
/// p.data_received(&mut t, b"hi");
/// assert_eq!((live.get(), t.value()), (1, &b"hi"[..]));
/// p.connection_lost(&mut t, &Reason::ConnectionDone);
/// assert_eq!(live.get(), 0);
/// ```
pub trait WrappingProtocol: 'static {
    /// The protocol every callback goes to.
    fn inner(&mut self) -> &mut dyn crate::Protocol;

    /// Runs before the inner protocol's `connection_made`.
    fn on_connection_made(&mut self, t: &mut dyn Transport) {
        let _ = t;
    }

    /// Runs before the inner protocol's `connection_lost`.
    fn on_connection_lost(&mut self, t: &mut dyn Transport, reason: &Reason) {
        let _ = (t, reason);
    }
}

impl<W: WrappingProtocol> crate::Protocol for W {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.on_connection_made(t);
        self.inner().connection_made(t)
    }
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        self.inner().data_received(t, data)
    }
    fn eof_received(&mut self, t: &mut dyn Transport) -> bool {
        self.inner().eof_received(t)
    }
    fn connection_lost(&mut self, t: &mut dyn Transport, reason: &Reason) {
        self.on_connection_lost(t, reason);
        self.inner().connection_lost(t, reason)
    }
    fn pause_writing(&mut self, t: &mut dyn Transport) {
        self.inner().pause_writing(t)
    }
    fn resume_writing(&mut self, t: &mut dyn Transport) {
        self.inner().resume_writing(t)
    }
    fn route_call(
        &mut self,
        t: &mut dyn Transport,
        call: crate::ProtocolCall,
    ) -> Option<crate::ProtocolCall> {
        let inner = self.inner();
        let call = inner.route_call(t, call)?;
        call(inner, t);
        None
    }
}
