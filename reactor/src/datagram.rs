//! The datagram contracts: `DatagramProtocol` and `DatagramTransport`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::{ConnId, Reactor};

/// The application side of a datagram socket (Twisted's
/// `DatagramProtocol`).
///
/// Callbacks are never re-entered, and a panic in one closes only the
/// socket it belongs to.
///
/// ```
/// use std::net::SocketAddr;
/// use twistor_reactor::{DatagramProtocol, DatagramTransport};
/// /// The lab's UDP echo.
/// struct Echo;
/// impl DatagramProtocol for Echo {
///     fn datagram_received(&mut self, t: &mut dyn DatagramTransport, data: &[u8], from: SocketAddr) {
///         let _ = t.send_to(data, from);
///     }
/// }
/// ```
pub trait DatagramProtocol: std::any::Any {
    /// The socket is ready (Twisted's `startProtocol`).
    fn start_protocol(&mut self, t: &mut dyn DatagramTransport) {
        let _ = t;
    }

    /// A datagram arrived. `data` borrows the reactor's shared buffer (copy
    /// what you keep); it may be empty, since empty datagrams are legal.
    fn datagram_received(&mut self, t: &mut dyn DatagramTransport, data: &[u8], from: SocketAddr);

    /// An error was reported for the socket, e.g. `ConnectionRefused` after
    /// an ICMP port-unreachable on a connected socket, or (kind
    /// `InvalidData`) a datagram that was dropped because it was larger than
    /// the socket's maximum datagram size.
    fn error_received(&mut self, t: &mut dyn DatagramTransport, err: &io::Error) {
        let _ = (t, err);
    }

    /// The socket is closed (Twisted's `stopProtocol`).
    fn stop_protocol(&mut self, t: &mut dyn DatagramTransport) {
        let _ = t;
    }
}

impl dyn DatagramProtocol {
    /// Downcast to the concrete protocol type (e.g. in a closure given to a
    /// UDP port's `call`).
    ///
    /// ```
    /// use std::net::SocketAddr;
    /// use twistor_reactor::{DatagramProtocol, DatagramTransport};
    /// struct Counter(u32);
    /// impl DatagramProtocol for Counter {
    ///     fn datagram_received(&mut self, _: &mut dyn DatagramTransport, _: &[u8], _: SocketAddr) {
    ///         self.0 += 1;
    ///     }
    /// }
    /// let mut p: Box<dyn DatagramProtocol> = Box::new(Counter(3));
    /// assert_eq!(p.downcast_mut::<Counter>().unwrap().0, 3);
    /// ```
    pub fn downcast_mut<T: DatagramProtocol>(&mut self) -> Option<&mut T> {
        (self as &mut dyn std::any::Any).downcast_mut::<T>()
    }

    /// Downcast to the concrete protocol type.
    pub fn downcast_ref<T: DatagramProtocol>(&self) -> Option<&T> {
        (self as &dyn std::any::Any).downcast_ref::<T>()
    }
}

/// Which local interface multicast traffic uses.
///
/// IPv4 names an interface by one of its addresses, IPv6 by its index
/// (`1` is usually the loopback interface on Linux).
///
/// ```
/// use twistor_reactor::Interface;
/// let lo = Interface::V4(std::net::Ipv4Addr::LOCALHOST);
/// assert_ne!(lo, Interface::Any);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interface {
    /// Let the kernel choose (the interface of the default route).
    #[default]
    Any,
    /// The IPv4 interface with this address.
    V4(Ipv4Addr),
    /// The interface with this index (IPv6).
    Index(u32),
}

impl Interface {
    /// The interface as an IPv4 address (`0.0.0.0` for `Any` and `Index`).
    pub fn v4(self) -> Ipv4Addr {
        match self {
            Interface::V4(a) => a,
            _ => Ipv4Addr::UNSPECIFIED,
        }
    }

    /// The interface as an index (`0`, the kernel's choice, unless `Index`).
    pub fn index(self) -> u32 {
        match self {
            Interface::Index(i) => i,
            _ => 0,
        }
    }
}

/// The socket side of a datagram protocol, as seen from its callbacks.
///
/// There is no write buffer that grows. A transport may send at once, or
/// (as twistor's UDP port does on Linux while it delivers a batch of
/// datagrams read with one `recvmmsg`) queue the datagrams sent during the
/// batch in a fixed area and send them together with one `sendmmsg` when
/// the batch ends; `send_to` then returns `Ok` once the datagram is queued.
/// When the kernel's send buffer is full the datagram is dropped: UDP never
/// grows memory without bound. The drop is logged and counted in
/// [`dropped_sends`](DatagramTransport::dropped_sends); a send made at once
/// also reports it to the caller as an error of kind `WouldBlock`.
pub trait DatagramTransport {
    /// Send one datagram to `addr`. On a connected socket `addr` must be the
    /// connected peer.
    fn send_to(&mut self, data: &[u8], addr: SocketAddr) -> io::Result<()>;

    /// Send one datagram to the connected peer (`NotConnected` if the socket
    /// is not connected).
    fn write(&mut self, data: &[u8]) -> io::Result<()>;

    /// Connect to `addr`: `write` sends there, and datagrams from any other
    /// address are dropped.
    fn connect(&mut self, addr: SocketAddr) -> io::Result<()>;

    /// Close the socket once the current callback returns (Twisted's
    /// `stopListening`); `stop_protocol` follows.
    fn stop_listening(&mut self);

    /// The local address.
    fn host(&self) -> io::Result<SocketAddr>;

    /// The connected peer, if connected.
    fn peer(&self) -> Option<SocketAddr>;

    /// This socket's id.
    fn id(&self) -> ConnId;

    /// The reactor.
    fn reactor(&mut self) -> &mut Reactor;

    /// Allow sending to broadcast addresses.
    fn set_broadcast(&mut self, on: bool) -> io::Result<()>;

    /// Join a multicast group (IPv4 or IPv6) on `interface`.
    fn join_group(&mut self, group: IpAddr, interface: Interface) -> io::Result<()>;

    /// Leave a multicast group.
    fn leave_group(&mut self, group: IpAddr, interface: Interface) -> io::Result<()>;

    /// The interface outgoing multicast datagrams leave by.
    fn set_multicast_interface(&mut self, interface: Interface) -> io::Result<()>;

    /// Multicast TTL (hop limit for IPv6).
    fn set_multicast_ttl(&mut self, ttl: u32) -> io::Result<()>;

    /// Whether multicast datagrams sent are looped back to local listeners.
    fn set_multicast_loopback(&mut self, on: bool) -> io::Result<()>;

    /// How many datagrams were dropped because the kernel's send buffer was
    /// full.
    fn dropped_sends(&self) -> u64 {
        0
    }
}
