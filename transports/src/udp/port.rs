//! The reactor handler behind a UDP socket, and the transport view its
//! protocol sees during a callback.

use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use mio::net::UdpSocket;
use mio::Interest;
use socket2::{MaybeUninitSlice, MsgHdrMut, SockAddr, SockRef, Socket};
use twistor_reactor::{ConnId, DatagramProtocol, DatagramTransport, Handler, Interface, Reactor, Ready};

use super::{Shared, UdpOptions};
use crate::addr::unmap;

/// Register `sock` and wrap it in a handler. Returns the new id.
pub(super) fn insert(
    r: &mut Reactor,
    sock: Socket,
    local: SocketAddr,
    peer: Option<SocketAddr>,
    proto: Box<dyn DatagramProtocol>,
    opts: UdpOptions,
    shared: Rc<Shared>,
) -> io::Result<ConnId> {
    let mut sock = UdpSocket::from_std(sock.into());
    r.insert_with(move |r, id| {
        r.registry().register(&mut sock, id.token(), Interest::READABLE)?;
        Ok(Box::new(UdpHandler {
            proto,
            st: State {
                v6: local.is_ipv6(),
                sock,
                peer,
                max: opts.max_datagram.clamp(1, twistor_reactor::READ_BUFFER_SIZE),
                budget: opts.read_budget.max(1),
                shared,
                started: false,
                stopping: false,
                closed: false,
            },
        }))
    })
}

struct State {
    sock: UdpSocket,
    v6: bool,
    peer: Option<SocketAddr>,
    max: usize,
    budget: usize,
    shared: Rc<Shared>,
    started: bool,
    /// `stop_listening` was called: close after the current callback.
    stopping: bool,
    closed: bool,
}

struct UdpHandler {
    proto: Box<dyn DatagramProtocol>,
    st: State,
}

/// The transport a datagram protocol sees during a callback.
struct View<'a> {
    st: &'a mut State,
    r: &'a mut Reactor,
    id: ConnId,
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

    fn sent(&mut self, res: io::Result<usize>, len: usize, to: SocketAddr) -> io::Result<()> {
        match res {
            Ok(n) if n == len => Ok(()),
            Ok(n) => Err(io::Error::other(format!(
                "datagram of {len} bytes sent as {n} bytes"
            ))),
            Err(e) if is_full(&e) => {
                let shared = &self.st.shared;
                let n = shared.dropped.get() + 1;
                shared.dropped.set(n);
                // One line for the first drop and then at each power of two:
                // a flood of drops must not become a flood of log lines.
                if n.is_power_of_two() {
                    log::warn!(
                        "{}: send buffer full, datagram of {len} bytes to {to} dropped ({n} dropped so far)",
                        self.id
                    );
                } else {
                    log::debug!("{}: send buffer full, datagram to {to} dropped", self.id);
                }
                Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("send buffer full: datagram to {to} dropped"),
                ))
            }
            Err(e) => Err(e),
        }
    }
}

/// The kernel's send buffer is full (or it is out of buffers).
fn is_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS)
}

fn closed_err() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the UDP socket is closed")
}

impl DatagramTransport for View<'_> {
    fn send_to(&mut self, data: &[u8], addr: SocketAddr) -> io::Result<()> {
        if self.st.closed || self.st.stopping {
            return Err(closed_err());
        }
        if let Some(peer) = self.st.peer {
            if unmap(addr) != peer {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("this socket is connected to {peer}, not {addr}"),
                ));
            }
            return self.write(data);
        }
        let to = self.dest(addr);
        let res = self.st.sock.send_to(data, to);
        self.sent(res, data.len(), addr)
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
        let res = self.st.sock.send(data);
        self.sent(res, data.len(), peer)
    }

    fn connect(&mut self, addr: SocketAddr) -> io::Result<()> {
        if self.st.closed || self.st.stopping {
            return Err(closed_err());
        }
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

/// One received datagram, or why there is none.
enum Recv {
    Datagram(usize, SocketAddr),
    /// Larger than the buffer: `at_least` bytes (the full size on Linux).
    Truncated(usize, SocketAddr),
}

/// Receive one datagram into `buf`, noticing truncation (`MSG_TRUNC`).
fn recv(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<Recv> {
    let s = SockRef::from(sock);
    let cap = buf.len();
    // SAFETY: `buf` is initialised memory; viewing it as MaybeUninit only
    // forgets that, and recvmsg writes nothing but bytes into it.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    let mut bufs = [MaybeUninitSlice::new(uninit)];
    // Room for either family; the kernel writes the sender here.
    let mut from = SockAddr::from(std::net::SocketAddrV6::new(
        std::net::Ipv6Addr::UNSPECIFIED,
        0,
        0,
        0,
    ));
    let mut msg = MsgHdrMut::new().with_addr(&mut from).with_buffers(&mut bufs);
    // On Linux MSG_TRUNC makes recvmsg return the datagram's real length.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let flags = libc::MSG_TRUNC;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let flags = 0;
    let n = s.recvmsg(&mut msg, flags)?;
    let truncated = msg.flags().is_truncated() || n > cap;
    let from = from
        .as_socket()
        .map(unmap)
        .unwrap_or_else(|| ([0, 0, 0, 0], 0).into());
    Ok(if truncated {
        Recv::Truncated(n.max(cap + 1), from)
    } else {
        Recv::Datagram(n, from)
    })
}

impl UdpHandler {
    /// Run one protocol callback, catching a panic (which closes the
    /// socket). Returns false if it panicked.
    fn invoke(
        &mut self,
        r: &mut Reactor,
        id: ConnId,
        f: impl FnOnce(&mut dyn DatagramProtocol, &mut dyn DatagramTransport),
    ) -> bool {
        let mut view = View {
            st: &mut self.st,
            r,
            id,
        };
        let proto = &mut *self.proto;
        match catch_unwind(AssertUnwindSafe(|| f(proto, &mut view))) {
            Ok(()) => true,
            Err(p) => {
                log::error!(
                    "{id}: datagram protocol panicked: {}; closing the socket",
                    twistor_reactor::panic_message(&*p)
                );
                self.close(r, id);
                false
            }
        }
    }

    fn close(&mut self, r: &mut Reactor, id: ConnId) {
        if self.st.closed {
            return;
        }
        self.st.stopping = true;
        let _ = r.registry().deregister(&mut self.st.sock);
        self.st.shared.calls.borrow_mut().clear();
        if self.st.started {
            let mut view = View {
                st: &mut self.st,
                r,
                id,
            };
            let proto = &mut *self.proto;
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| proto.stop_protocol(&mut view))) {
                log::error!(
                    "{id}: stop_protocol panicked: {}",
                    twistor_reactor::panic_message(&*p)
                );
            }
        }
        self.st.closed = true;
        self.st.shared.open.set(false);
        r.remove(id);
    }

    /// Close if the protocol or the handle asked to.
    fn settle(&mut self, r: &mut Reactor, id: ConnId) -> bool {
        if !self.st.closed && (self.st.stopping || self.st.shared.stop.get()) {
            self.close(r, id);
        }
        !self.st.closed
    }

    fn read(&mut self, r: &mut Reactor, id: ConnId) {
        let mut buf = r.take_read_buffer();
        let max = self.st.max;
        for i in 0.. {
            if i == self.st.budget {
                // Fairness: others get a turn; come back on the next one.
                r.requeue(id, Ready::READABLE);
                break;
            }
            match recv(&self.st.sock, &mut buf[..max]) {
                Ok(Recv::Datagram(n, from)) => {
                    if self.st.peer.is_some_and(|p| p != from) {
                        log::debug!("{id}: datagram from {from} dropped: connected to another peer");
                        continue;
                    }
                    let data = &buf[..n];
                    if !self.invoke(r, id, |p, t| p.datagram_received(t, data, from)) {
                        break;
                    }
                }
                Ok(Recv::Truncated(n, from)) => {
                    let err = io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "datagram of {n} bytes from {from} dropped: larger than the maximum datagram size ({max} bytes)"
                        ),
                    );
                    log::debug!("{id}: {err}");
                    if !self.invoke(r, id, |p, t| p.error_received(t, &err)) {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // ICMP errors (connection refused...) arrive here, once each.
                    if !self.invoke(r, id, |p, t| p.error_received(t, &e)) {
                        break;
                    }
                }
            }
            if !self.settle(r, id) {
                break;
            }
        }
        r.put_read_buffer(buf);
    }

    fn run_calls(&mut self, r: &mut Reactor, id: ConnId) {
        // Bounded: calls queued by these calls wait for the next turn.
        let calls = std::mem::take(&mut *self.st.shared.calls.borrow_mut());
        for c in calls {
            if self.st.closed || !self.invoke(r, id, c) || !self.settle(r, id) {
                return;
            }
        }
    }
}

impl Handler for UdpHandler {
    fn ready(&mut self, r: &mut Reactor, id: ConnId, ready: Ready) {
        if self.st.closed {
            return;
        }
        if !self.st.started {
            self.st.started = true;
            if !self.invoke(r, id, |p, t| p.start_protocol(t)) || !self.settle(r, id) {
                return;
            }
        }
        self.run_calls(r, id);
        if !self.settle(r, id) {
            return;
        }
        if ready.readable {
            self.read(r, id);
        }
    }

    fn shutdown(&mut self, r: &mut Reactor, id: ConnId) {
        self.close(r, id);
    }

    fn abort(&mut self, r: &mut Reactor, id: ConnId) {
        self.close(r, id);
    }

    fn holds_shutdown(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The send policy: a full kernel buffer drops the datagram, counts it
    /// and says so; other errors are passed through uncounted. (A loopback
    /// send practically never finds the buffer full, so the policy is
    /// exercised here with the errors the kernel would return.)
    #[test]
    fn a_full_send_buffer_drops_and_counts() {
        let mut r = Reactor::new().unwrap();
        let std_sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let shared = Rc::new(Shared::default());
        let mut st = State {
            sock: UdpSocket::from_std(std_sock),
            v6: false,
            peer: None,
            max: 1024,
            budget: 1,
            shared: shared.clone(),
            started: true,
            stopping: false,
            closed: false,
        };
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
    }
}
