//! The transport a datagram protocol sees during a callback, and the send
//! policy: a datagram goes to the kernel at once, or (inside a read batch,
//! on Linux) into the batch's `sendmmsg`; a full kernel buffer drops it and
//! counts the drop.

use std::io;
use std::net::{IpAddr, SocketAddr};

use socket2::SockRef;
use twistor_reactor::{ConnId, DatagramTransport, Interface, Reactor};

use super::port::{is_full, State};
use crate::tcp::unmap;

/// The transport a datagram protocol sees during a callback.
pub(super) struct View<'a> {
    pub(super) st: &'a mut State,
    pub(super) r: &'a mut Reactor,
    pub(super) id: ConnId,
}

/// A destination for a log line (formatted only if the line is written).
struct Dest(Option<SocketAddr>);

impl std::fmt::Display for Dest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("the connected peer"),
        }
    }
}

#[cold]
fn not_the_peer(peer: SocketAddr, addr: SocketAddr) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("this socket is connected to {peer}, not {addr}"),
    )
}

#[cold]
fn closed_err() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the UDP socket is closed")
}

impl State {
    /// Count `count` datagrams dropped because the send buffer was full,
    /// the first of `len` bytes to `to`. One log line for the first drop
    /// and then at each power of two: a flood of drops must not become a
    /// flood of log lines.
    pub(super) fn note_dropped(&self, id: ConnId, count: u64, len: usize, to: Option<SocketAddr>) {
        let shared = &self.shared;
        let before = shared.dropped.get();
        let n = before + count;
        shared.dropped.set(n);
        let to = Dest(to);
        // A power of two in before+1..=n.
        if before == 0 || n.ilog2() > before.ilog2() {
            log::warn!(
                "{id}: send buffer full, datagram of {len} bytes to {to} dropped ({n} dropped so far)"
            );
        } else {
            log::debug!("{id}: send buffer full, datagram to {to} dropped");
        }
    }

    /// Send what the batch holds; refusals are counted (a full buffer) or
    /// kept in `send_errors` for `error_received` once the current
    /// callback has returned.
    #[cfg(target_os = "linux")]
    pub(super) fn flush_sends(&mut self, id: ConnId) {
        use std::os::fd::AsRawFd;
        let Some(mut q) = self.send.take() else {
            return;
        };
        if q.len() > 0 {
            let fd = self.sock.as_raw_fd();
            q.flush(fd, |f| match f {
                super::batch::SendFailure::Full { count, to, len } => {
                    self.note_dropped(id, count as u64, len, to.map(unmap));
                }
                super::batch::SendFailure::Error(e) => self.send_errors.push(e),
            });
        }
        self.send = Some(q);
    }

    #[cfg(not(target_os = "linux"))]
    pub(super) fn flush_sends(&mut self, _: ConnId) {}
}

impl View<'_> {
    /// A destination as this socket's family wants it: plain IPv4 becomes
    /// IPv4-mapped on an IPv6 socket, and the reverse on an IPv4 socket.
    fn dest(&self, addr: SocketAddr) -> SocketAddr {
        match addr {
            SocketAddr::V4(a) if self.st.v6 => SocketAddr::new(IpAddr::V6(a.ip().to_ipv6_mapped()), a.port()),
            SocketAddr::V6(_) if !self.st.v6 => unmap(addr),
            a => a,
        }
    }

    /// The outcome of a send made at once, under the send policy.
    pub(super) fn sent(&mut self, res: io::Result<usize>, len: usize, to: SocketAddr) -> io::Result<()> {
        match res {
            Ok(n) if n == len => Ok(()),
            Ok(n) => Err(io::Error::other(format!(
                "datagram of {len} bytes sent as {n} bytes"
            ))),
            Err(e) if is_full(&e) => {
                self.st.note_dropped(self.id, 1, len, Some(to));
                Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("send buffer full: datagram to {to} dropped"),
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// Queue `data` for `to` (`None`: the connected peer) in the batch's
    /// `sendmmsg`, flushing first if the batch is full.
    #[cfg(target_os = "linux")]
    #[inline]
    fn queue(&mut self, data: &[u8], to: Option<&SocketAddr>) {
        if let Some(q) = &mut self.st.send {
            if q.push(data, to) {
                return;
            }
        }
        self.st.flush_sends(self.id);
        let (cap, v6) = (self.st.batch, self.st.v6);
        let q = self
            .st
            .send
            .get_or_insert_with(|| super::batch::SendBatch::new(cap, v6));
        // An empty batch holds any datagram up to SEND_AREA bytes.
        let queued = q.push(data, to);
        debug_assert!(queued);
    }

    /// Whether a send goes into the batch rather than to the kernel now.
    fn queueing(&self, data: &[u8]) -> bool {
        #[cfg(target_os = "linux")]
        return self.st.queueing && data.len() <= super::batch::SEND_AREA;
        #[cfg(not(target_os = "linux"))]
        {
            let _ = data;
            false
        }
    }

    /// Send `data` at once to `to` (`None`: the connected peer `shown`),
    /// after whatever is queued: datagrams leave in the order written.
    fn send_now(&mut self, data: &[u8], to: Option<SocketAddr>, shown: SocketAddr) -> io::Result<()> {
        self.st.flush_sends(self.id);
        let res = match to {
            Some(a) => {
                let dest = self.dest(a);
                self.st.sock.send_to(data, dest)
            }
            None => self.st.sock.send(data),
        };
        self.sent(res, data.len(), shown)
    }
}

impl DatagramTransport for View<'_> {
    fn send_to(&mut self, data: &[u8], addr: SocketAddr) -> io::Result<()> {
        if self.st.closed || self.st.stopping {
            return Err(closed_err());
        }
        if let Some(peer) = self.st.peer {
            if unmap(addr) != peer {
                return Err(not_the_peer(peer, addr));
            }
            return self.write(data);
        }
        if self.queueing(data) {
            #[cfg(target_os = "linux")]
            self.queue(data, Some(&addr));
            return Ok(());
        }
        self.send_now(data, Some(addr), addr)
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if self.st.closed || self.st.stopping {
            return Err(closed_err());
        }
        let Some(peer) = self.st.peer else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "write needs a connected socket; use send_to",
            ));
        };
        if self.queueing(data) {
            #[cfg(target_os = "linux")]
            self.queue(data, None);
            return Ok(());
        }
        self.send_now(data, None, peer)
    }

    fn connect(&mut self, addr: SocketAddr) -> io::Result<()> {
        if self.st.closed || self.st.stopping {
            return Err(closed_err());
        }
        // Datagrams queued for the old destination leave first.
        self.st.flush_sends(self.id);
        let to = self.dest(addr);
        self.st.sock.connect(to)?;
        self.st.peer = Some(unmap(addr));
        Ok(())
    }

    fn stop_listening(&mut self) {
        self.st.stopping = true;
    }

    fn host(&self) -> io::Result<SocketAddr> {
        self.st.sock.local_addr()
    }

    fn peer(&self) -> Option<SocketAddr> {
        self.st.peer
    }

    fn id(&self) -> ConnId {
        self.id
    }

    fn reactor(&mut self) -> &mut Reactor {
        self.r
    }

    fn set_broadcast(&mut self, on: bool) -> io::Result<()> {
        self.st.sock.set_broadcast(on)
    }

    fn join_group(&mut self, group: IpAddr, interface: Interface) -> io::Result<()> {
        let s = SockRef::from(&self.st.sock);
        match group {
            IpAddr::V4(g) => s.join_multicast_v4(&g, &interface.v4()),
            IpAddr::V6(g) => s.join_multicast_v6(&g, interface.index()),
        }
    }

    fn leave_group(&mut self, group: IpAddr, interface: Interface) -> io::Result<()> {
        let s = SockRef::from(&self.st.sock);
        match group {
            IpAddr::V4(g) => s.leave_multicast_v4(&g, &interface.v4()),
            IpAddr::V6(g) => s.leave_multicast_v6(&g, interface.index()),
        }
    }

    fn set_multicast_interface(&mut self, interface: Interface) -> io::Result<()> {
        let s = SockRef::from(&self.st.sock);
        match interface {
            Interface::V4(a) => s.set_multicast_if_v4(&a),
            Interface::Index(i) => s.set_multicast_if_v6(i),
            Interface::Any if self.st.v6 => s.set_multicast_if_v6(0),
            Interface::Any => s.set_multicast_if_v4(&std::net::Ipv4Addr::UNSPECIFIED),
        }
    }

    fn set_multicast_ttl(&mut self, ttl: u32) -> io::Result<()> {
        let s = SockRef::from(&self.st.sock);
        if self.st.v6 {
            s.set_multicast_hops_v6(ttl)?;
            // A dual-stack socket sends IPv4 multicast too; best effort.
            let _ = s.set_multicast_ttl_v4(ttl);
            Ok(())
        } else {
            s.set_multicast_ttl_v4(ttl)
        }
    }

    fn set_multicast_loopback(&mut self, on: bool) -> io::Result<()> {
        let s = SockRef::from(&self.st.sock);
        if self.st.v6 {
            s.set_multicast_loop_v6(on)?;
            let _ = s.set_multicast_loop_v4(on);
            Ok(())
        } else {
            s.set_multicast_loop_v4(on)
        }
    }

    fn dropped_sends(&self) -> u64 {
        self.st.shared.dropped.get()
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::udp::{Shared, UdpOptions};

    fn state(shared: &Rc<Shared>) -> State {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        State::new(
            mio::net::UdpSocket::from_std(sock),
            false,
            None,
            &UdpOptions::default(),
            shared.clone(),
        )
    }

    /// The send policy: a full kernel buffer drops the datagram, counts it
    /// and says so; other errors are passed through uncounted. (A loopback
    /// send practically never finds the buffer full, so the policy is
    /// exercised here with the errors the kernel would return.)
    #[test]
    fn a_full_send_buffer_drops_and_counts() {
        let mut r = Reactor::new().unwrap();
        let shared = Rc::new(Shared::default());
        let mut st = state(&shared);
        let id = ConnId::from_token(mio::Token(0));
        let mut view = View {
            st: &mut st,
            r: &mut r,
            id,
        };
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let full = view
            .sent(Err(io::ErrorKind::WouldBlock.into()), 10, to)
            .unwrap_err();
        assert_eq!(full.kind(), io::ErrorKind::WouldBlock);
        let nobufs = view.sent(Err(io::Error::from_raw_os_error(libc::ENOBUFS)), 10, to);
        assert_eq!(nobufs.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        let other = view.sent(Err(io::ErrorKind::PermissionDenied.into()), 10, to);
        assert_eq!(other.unwrap_err().kind(), io::ErrorKind::PermissionDenied);
        assert!(view.sent(Ok(10), 10, to).is_ok());
        assert_eq!(view.dropped_sends(), 2);
        assert_eq!(shared.dropped.get(), 2);
        // The rest of a batch dropped at once counts each datagram.
        st.note_dropped(id, 30, 64, None);
        assert_eq!(shared.dropped.get(), 32);
    }

    /// Inside a read batch a send is queued (and so cannot fail at once);
    /// it leaves with the flush, in order with the sends around it.
    #[cfg(target_os = "linux")]
    #[test]
    fn sends_in_a_batch_are_queued_until_the_flush() {
        let mut r = Reactor::new().unwrap();
        let shared = Rc::new(Shared::default());
        let mut st = state(&shared);
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let to = peer.local_addr().unwrap();
        let id = ConnId::from_token(mio::Token(0));
        st.queueing = true;
        let mut view = View {
            st: &mut st,
            r: &mut r,
            id,
        };
        for d in [&b"one"[..], b"two", b"three"] {
            view.send_to(d, to).unwrap();
        }
        assert_eq!(view.st.send.as_ref().unwrap().len(), 3);
        view.st.queueing = false;
        // A send outside the batch goes at once, after what was queued.
        view.send_to(b"four", to).unwrap();
        assert_eq!(view.st.send.as_ref().unwrap().len(), 0);
        let mut buf = [0u8; 16];
        for want in [&b"one"[..], b"two", b"three", b"four"] {
            let n = peer.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], want);
        }
        assert!(st.send_errors.is_empty());
    }
}
