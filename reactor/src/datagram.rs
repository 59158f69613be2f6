//! The datagram contracts: `DatagramProtocol` and `DatagramTransport`.

use std::io;
use std::net::SocketAddr;

use crate::{ConnId, Reactor};

/// The application side of a datagram socket (Twisted's
/// `DatagramProtocol`).
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

    /// A datagram arrived. `data` borrows the reactor's shared buffer.
    fn datagram_received(&mut self, t: &mut dyn DatagramTransport, data: &[u8], from: SocketAddr);

    /// An error was reported for the socket, e.g. `ConnectionRefused` after
    /// an ICMP port-unreachable on a connected socket, or a datagram that was
    /// truncated because it was larger than the read buffer.
    fn error_received(&mut self, t: &mut dyn DatagramTransport, err: &io::Error) {
        let _ = (t, err);
    }

    /// The socket is closed (Twisted's `stopProtocol`).
    fn stop_protocol(&mut self, t: &mut dyn DatagramTransport) {
        let _ = t;
    }
}

/// The socket side of a datagram protocol, as seen from its callbacks.
pub trait DatagramTransport {
    /// Send one datagram to `addr` (or to the connected peer when `None`
    /// is not allowed: use [`write`](DatagramTransport::write) then).
    fn send_to(&mut self, data: &[u8], addr: SocketAddr) -> io::Result<()>;

    /// Send one datagram to the connected peer.
    fn write(&mut self, data: &[u8]) -> io::Result<()>;

    /// Connect to `addr`: `write` sends there, and datagrams from any other
    /// address are dropped.
    fn connect(&mut self, addr: SocketAddr) -> io::Result<()>;

    /// Close the socket (Twisted's `stopListening`).
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

    /// Join a multicast group (`interface` selects the local interface:
    /// an IPv4 address for IPv4 groups, an index for IPv6 groups).
    fn join_group(&mut self, group: std::net::IpAddr, interface: Option<std::net::IpAddr>) -> io::Result<()>;

    /// Leave a multicast group.
    fn leave_group(&mut self, group: std::net::IpAddr, interface: Option<std::net::IpAddr>)
        -> io::Result<()>;

    /// Multicast TTL (hop limit for IPv6).
    fn set_multicast_ttl(&mut self, ttl: u32) -> io::Result<()>;

    /// Whether multicast datagrams sent are looped back to local listeners.
    fn set_multicast_loopback(&mut self, on: bool) -> io::Result<()>;
}
