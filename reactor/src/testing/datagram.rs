//! `FakeDatagramTransport`: drive a `DatagramProtocol` without sockets.

use std::io;
use std::net::{IpAddr, SocketAddr};

use mio::Token;

use crate::{ConnId, DatagramTransport, Interface, Reactor};

/// A datagram transport that records what a protocol does to it (Twisted's
/// `proto_helpers.FakeDatagramTransport`).
///
/// ```
/// use std::net::SocketAddr;
/// use twistor_reactor::testing::FakeDatagramTransport;
/// use twistor_reactor::{DatagramProtocol, DatagramTransport};
///
/// struct Echo;
/// impl DatagramProtocol for Echo {
///     fn datagram_received(&mut self, t: &mut dyn DatagramTransport, data: &[u8], from: SocketAddr) {
///         t.send_to(data, from).unwrap();
///     }
/// }
///
/// let mut t = FakeDatagramTransport::new();
/// let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
/// Echo.datagram_received(&mut t, b"ping", from);
/// assert_eq!(t.sent(), &[(b"ping".to_vec(), from)]);
/// ```
pub struct FakeDatagramTransport {
    sent: Vec<(Vec<u8>, SocketAddr)>,
    host: SocketAddr,
    peer: Option<SocketAddr>,
    stopped: bool,
    broadcast: bool,
    groups: Vec<(IpAddr, Interface)>,
    multicast_interface: Interface,
    ttl: u32,
    loopback: bool,
    reactor: Reactor,
    id: ConnId,
}

impl Default for FakeDatagramTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeDatagramTransport {
    /// A transport "bound" to `127.0.0.1:1234`, with a manual-clock reactor.
    pub fn new() -> FakeDatagramTransport {
        FakeDatagramTransport {
            sent: Vec::new(),
            host: ([127, 0, 0, 1], 1234).into(),
            peer: None,
            stopped: false,
            broadcast: false,
            groups: Vec::new(),
            multicast_interface: Interface::Any,
            ttl: 1,
            loopback: true,
            reactor: Reactor::with_manual_clock().expect("create a reactor"),
            id: ConnId::from_token(Token(0)),
        }
    }

    /// The same, "bound" to `host`.
    pub fn with_host(mut self, host: SocketAddr) -> Self {
        self.host = host;
        self
    }

    /// Every datagram sent, with its destination, in order.
    pub fn sent(&self) -> &[(Vec<u8>, SocketAddr)] {
        &self.sent
    }

    /// Take the datagrams sent so far.
    pub fn take(&mut self) -> Vec<(Vec<u8>, SocketAddr)> {
        std::mem::take(&mut self.sent)
    }

    /// Whether `stop_listening` was called.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Whether broadcast is allowed.
    pub fn broadcast(&self) -> bool {
        self.broadcast
    }

    /// The multicast groups joined (and not left).
    pub fn groups(&self) -> &[(IpAddr, Interface)] {
        &self.groups
    }

    /// The multicast settings: `(interface, ttl, loopback)`.
    pub fn multicast(&self) -> (Interface, u32, bool) {
        (self.multicast_interface, self.ttl, self.loopback)
    }
}

fn stopped_err() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "stop_listening was called")
}

impl DatagramTransport for FakeDatagramTransport {
    fn send_to(&mut self, data: &[u8], addr: SocketAddr) -> io::Result<()> {
        if self.stopped {
            return Err(stopped_err());
        }
        if let Some(peer) = self.peer {
            if peer != addr {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("connected to {peer}, not {addr}"),
                ));
            }
        }
        self.sent.push((data.to_vec(), addr));
        Ok(())
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        match self.peer {
            Some(peer) => self.send_to(data, peer),
            None => Err(io::Error::new(io::ErrorKind::NotConnected, "not connected")),
        }
    }

    fn connect(&mut self, addr: SocketAddr) -> io::Result<()> {
        if self.stopped {
            return Err(stopped_err());
        }
        self.peer = Some(addr);
        Ok(())
    }

    fn stop_listening(&mut self) {
        self.stopped = true;
    }

    fn host(&self) -> io::Result<SocketAddr> {
        Ok(self.host)
    }

    fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    fn id(&self) -> ConnId {
        self.id
    }

    fn reactor(&mut self) -> &mut Reactor {
        &mut self.reactor
    }

    fn set_broadcast(&mut self, on: bool) -> io::Result<()> {
        self.broadcast = on;
        Ok(())
    }

    fn join_group(&mut self, group: IpAddr, interface: Interface) -> io::Result<()> {
        if !group.is_multicast() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a multicast group",
            ));
        }
        self.groups.push((group, interface));
        Ok(())
    }

    fn leave_group(&mut self, group: IpAddr, interface: Interface) -> io::Result<()> {
        let before = self.groups.len();
        self.groups.retain(|g| *g != (group, interface));
        if self.groups.len() == before {
            return Err(io::Error::new(io::ErrorKind::AddrNotAvailable, "not a member"));
        }
        Ok(())
    }

    fn set_multicast_interface(&mut self, interface: Interface) -> io::Result<()> {
        self.multicast_interface = interface;
        Ok(())
    }

    fn set_multicast_ttl(&mut self, ttl: u32) -> io::Result<()> {
        self.ttl = ttl;
        Ok(())
    }

    fn set_multicast_loopback(&mut self, on: bool) -> io::Result<()> {
        self.loopback = on;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connected_mode_and_groups_are_recorded() {
        let mut t = FakeDatagramTransport::new();
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(t.write(b"x").unwrap_err().kind(), io::ErrorKind::NotConnected);
        t.connect(peer).unwrap();
        t.write(b"one").unwrap();
        assert!(t.send_to(b"two", "127.0.0.1:10".parse().unwrap()).is_err());
        assert_eq!(t.take(), vec![(b"one".to_vec(), peer)]);
        let g: IpAddr = "239.1.2.3".parse().unwrap();
        assert!(t.join_group("10.0.0.1".parse().unwrap(), Interface::Any).is_err());
        t.join_group(g, Interface::Any).unwrap();
        assert_eq!(t.groups(), &[(g, Interface::Any)]);
        t.leave_group(g, Interface::Any).unwrap();
        assert!(t.leave_group(g, Interface::Any).is_err());
        t.stop_listening();
        assert!(t.stopped() && t.write(b"late").is_err());
    }
}
