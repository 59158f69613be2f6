//! The reactor handler behind a UDP socket: reading (one datagram per
//! syscall, or on Linux a batch per `recvmmsg`), delivering each datagram to
//! the protocol, and the socket's life (start, calls, close).

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use mio::net::UdpSocket;
use mio::Interest;
use socket2::{MaybeUninitSlice, MsgHdrMut, SockAddr, SockRef, Socket};
use twistor_reactor::{ConnId, DatagramProtocol, DatagramTransport, Handler, Reactor, Ready};

use super::view::View;
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
            st: State::new(sock, local.is_ipv6(), peer, &opts, shared),
        }))
    })
}

/// A UDP socket's state, shared by the handler and the transport view.
pub(super) struct State {
    pub(super) sock: UdpSocket,
    pub(super) v6: bool,
    pub(super) peer: Option<SocketAddr>,
    max: usize,
    budget: usize,
    /// Datagrams per `recvmmsg` / `sendmmsg` (1: one per syscall).
    #[cfg(target_os = "linux")]
    pub(super) batch: usize,
    /// The receive batch, made at the first batched read.
    #[cfg(target_os = "linux")]
    recv: Option<super::batch::RecvBatch>,
    /// The send batch, made at the first send queued in a read batch.
    #[cfg(target_os = "linux")]
    pub(super) send: Option<super::batch::SendBatch>,
    /// The protocol runs inside a read batch: sends are queued for the
    /// batch's `sendmmsg`.
    pub(super) queueing: bool,
    /// Errors of queued sends, for `error_received` once the callback
    /// that was running has returned.
    pub(super) send_errors: Vec<io::Error>,
    pub(super) shared: Rc<Shared>,
    started: bool,
    /// `stop_listening` was called: close after the current callback.
    pub(super) stopping: bool,
    pub(super) closed: bool,
}

impl State {
    pub(super) fn new(
        sock: UdpSocket,
        v6: bool,
        peer: Option<SocketAddr>,
        opts: &UdpOptions,
        shared: Rc<Shared>,
    ) -> State {
        State {
            sock,
            v6,
            peer,
            max: opts.max_datagram.clamp(1, twistor_reactor::READ_BUFFER_SIZE),
            budget: opts.read_budget.max(1),
            #[cfg(target_os = "linux")]
            batch: opts.batch.clamp(1, super::MAX_BATCH),
            #[cfg(target_os = "linux")]
            recv: None,
            #[cfg(target_os = "linux")]
            send: None,
            queueing: false,
            send_errors: Vec::new(),
            shared,
            started: false,
            stopping: false,
            closed: false,
        }
    }
}

struct UdpHandler {
    proto: Box<dyn DatagramProtocol>,
    st: State,
}

/// The kernel's send buffer is full (or it is out of buffers).
pub(super) fn is_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS)
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

/// A datagram that is not delivered: from someone other than a connected
/// socket's peer (dropped, whatever its size), or cut (reported to
/// `error_received`, with its real size when the kernel told it).
#[cold]
fn odd_datagram(
    p: &mut dyn DatagramProtocol,
    t: &mut dyn DatagramTransport,
    max: usize,
    len: usize,
    stranger: bool,
    from: SocketAddr,
) {
    let id = t.id();
    // A connected socket hears nothing of other peers, not even that they
    // sent something too large (such a datagram can be queued before
    // `connect`).
    if stranger {
        log::debug!("{id}: datagram from {from} dropped: connected to another peer");
        return;
    }
    let err = io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "datagram of {} bytes from {from} dropped: larger than the maximum datagram size ({max} bytes)",
            len.max(max + 1)
        ),
    );
    log::debug!("{id}: {err}");
    p.error_received(t, &err);
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
        // What the protocol wrote before it stopped (or panicked) still
        // leaves, as it would have at once outside a batch.
        self.st.queueing = false;
        self.st.flush_sends(id);
        for e in self.st.send_errors.drain(..) {
            log::debug!("{id}: a send failed as the socket closed: {e}");
        }
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

    /// Hand one received datagram to the protocol (or report it cut, or
    /// drop it if a connected socket's peer did not send it). Returns
    /// whether the socket is still open.
    #[inline(always)]
    fn deliver(
        &mut self,
        r: &mut Reactor,
        id: ConnId,
        data: &[u8],
        len: usize,
        truncated: bool,
        from: SocketAddr,
    ) -> bool {
        let stranger = self.st.peer.is_some_and(|p| p != from);
        if truncated || stranger {
            let max = self.st.max;
            return self.invoke(r, id, |p, t| odd_datagram(p, t, max, len, stranger, from))
                && self.settle(r, id);
        }
        self.invoke(r, id, |p, t| p.datagram_received(t, data, from)) && self.settle(r, id)
    }

    /// Report an error of the socket to the protocol. Returns whether the
    /// socket is still open.
    fn report(&mut self, r: &mut Reactor, id: ConnId, err: &io::Error) -> bool {
        self.invoke(r, id, |p, t| p.error_received(t, err)) && self.settle(r, id)
    }

    fn read(&mut self, r: &mut Reactor, id: ConnId) {
        #[cfg(target_os = "linux")]
        if self.st.batch > 1 {
            return self.read_batches(r, id);
        }
        self.read_one_by_one(r, id);
    }

    /// Read until `WouldBlock` or the budget, one datagram per syscall, into
    /// the reactor's shared read buffer.
    fn read_one_by_one(&mut self, r: &mut Reactor, id: ConnId) {
        let mut buf = r.take_read_buffer();
        let max = self.st.max;
        for i in 0.. {
            if i == self.st.budget {
                // Fairness: others get a turn; come back on the next one.
                r.requeue(id, Ready::READABLE);
                break;
            }
            let open = match recv(&self.st.sock, &mut buf[..max]) {
                Ok(Recv::Datagram(n, from)) => self.deliver(r, id, &buf[..n], n, false, from),
                Ok(Recv::Truncated(n, from)) => self.deliver(r, id, &[], n, true, from),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
                // ICMP errors (connection refused...) arrive here, once each.
                Err(e) => self.report(r, id, &e),
            };
            if !open {
                break;
            }
        }
        r.put_read_buffer(buf);
    }

    /// Read in batches of `recvmmsg` until the socket is drained or the
    /// budget is spent. Each datagram still goes to its own
    /// `datagram_received`, in order; what the protocol sends meanwhile is
    /// queued and leaves in one `sendmmsg` after each batch.
    #[cfg(target_os = "linux")]
    fn read_batches(&mut self, r: &mut Reactor, id: ConnId) {
        use std::os::fd::AsRawFd;
        let (cap, slot) = (self.st.batch, self.st.max);
        let mut rb = self
            .st
            .recv
            .take()
            .unwrap_or_else(|| super::batch::RecvBatch::new(cap, slot));
        let fd = self.st.sock.as_raw_fd();
        let mut done = 0;
        loop {
            if done >= self.st.budget {
                // Fairness: others get a turn; come back on the next one.
                r.requeue(id, Ready::READABLE);
                break;
            }
            let want = rb.cap().min(self.st.budget - done);
            let n = match rb.recv(fd, want) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors (connection refused...) arrive here, once each.
                    done += 1;
                    if self.report(r, id, &e) {
                        continue;
                    }
                    break;
                }
            };
            done += n;
            if !self.deliver_batch(r, id, &rb, n) || !self.flush(r, id) {
                break;
            }
            // A short batch means the socket had no more: the next datagram
            // raises a new edge, so the read that would say `WouldBlock` is
            // skipped. A connected socket reads on to that answer, which is
            // where a pending ICMP error (refused) is reported.
            if n < want && self.st.peer.is_none() {
                break;
            }
        }
        self.st.recv = Some(rb);
    }

    /// Hand the `n` datagrams of a receive batch to the protocol, in order,
    /// with sends queued for the batch's `sendmmsg`. One panic boundary
    /// covers the batch (a panic closes the socket, so no later datagram of
    /// it would be delivered anyway); a stop asked for by a callback takes
    /// effect before the next datagram. Returns whether the socket is open.
    #[cfg(target_os = "linux")]
    fn deliver_batch(&mut self, r: &mut Reactor, id: ConnId, rb: &super::batch::RecvBatch, n: usize) -> bool {
        self.st.queueing = true;
        let run = catch_unwind(AssertUnwindSafe(|| {
            for k in 0..n {
                let d = rb.get(k);
                let mut view = View {
                    st: &mut self.st,
                    r: &mut *r,
                    id,
                };
                let stranger = view.st.peer.is_some_and(|p| p != d.from);
                if d.truncated || stranger {
                    let max = view.st.max;
                    odd_datagram(&mut *self.proto, &mut view, max, d.len, stranger, d.from);
                } else {
                    self.proto.datagram_received(&mut view, d.data, d.from);
                }
                if self.st.stopping || self.st.shared.stop.get() {
                    break;
                }
            }
        }));
        self.st.queueing = false;
        if let Err(p) = run {
            log::error!(
                "{id}: datagram protocol panicked: {}; closing the socket",
                twistor_reactor::panic_message(&*p)
            );
            self.close(r, id);
            return false;
        }
        self.settle(r, id)
    }

    /// Send what a read batch queued, and report what the kernel refused
    /// (other than a full buffer, which is counted). Returns whether the
    /// socket is still open.
    #[cfg(target_os = "linux")]
    fn flush(&mut self, r: &mut Reactor, id: ConnId) -> bool {
        self.st.flush_sends(id);
        while !self.st.send_errors.is_empty() {
            let e = self.st.send_errors.remove(0);
            if !self.report(r, id, &e) {
                return false;
            }
        }
        true
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
