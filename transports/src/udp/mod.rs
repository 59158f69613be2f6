//! UDP: `listen_udp` / `connect_udp` and the [`UdpPort`] handle.
//!
//! A UDP socket runs a [`DatagramProtocol`] (Twisted's
//! `reactor.listenUDP(port, protocol)`). Reading drains the socket under a
//! fairness budget ([`UdpOptions::read_budget`] datagrams per readiness
//! event). A datagram larger than [`UdpOptions::max_datagram`] is never
//! silently cut: it is dropped and reported to `error_received` (kind
//! `InvalidData`). When the kernel's send buffer is full a datagram is
//! dropped, logged and counted (see [`DatagramTransport`]), so memory never
//! grows without bound.
//!
//! ## Batches (Linux)
//!
//! On Linux a socket reads up to [`UdpOptions::batch`] datagrams per
//! `recvmmsg(2)` call. Each datagram still gets its own
//! `datagram_received`, in arrival order, with its own sender, and a cut
//! one is still reported; a batch that comes back short means the socket
//! is drained, so the `recvmsg` that would only say "nothing more" is
//! skipped (a connected socket still makes it: that is where an ICMP error
//! such as "refused" is reported). Datagrams a protocol sends from
//! `datagram_received` (or `error_received`) during a batch are copied into
//! a fixed send area and leave together in one `sendmmsg(2)` once the
//! batch's callbacks have returned, in the order they were written; so
//! inside a batch `send_to` / `write` return `Ok` when the datagram is
//! queued. If the kernel's send buffer fills during that flush, the rest of
//! the batch is dropped and counted ([`UdpPort::dropped_sends`]) and logged
//! as above, but not reported to the protocol; any other error the kernel
//! gives for a queued datagram goes to `error_received`. Sends made outside
//! a batch (from `start_protocol`, [`UdpPort::call`], a timer) go to the
//! kernel at once and return its answer, as everywhere else.
//!
//! Memory: a batching socket keeps one receive area of `batch` slots of
//! `max_datagram` bytes (2 MiB of address space at the defaults, of which
//! only the pages datagrams were written to become resident; set
//! `max_datagram` to the protocol's real maximum to shrink it) and a send
//! area of 64 KiB, each made on first use; nothing is allocated per
//! datagram. Other systems read and send one datagram per syscall, into
//! the reactor's shared read buffer.
//!
//! Addresses are given as for TCP ([`ListenAddr`]): a bare port listens on
//! every interface, IPv6 and IPv4 (a dual-stack `[::]` socket, falling back
//! to `0.0.0.0` where IPv6 is unavailable); IPv4 peers of a dual-stack socket
//! are reported as plain IPv4 addresses, and plain IPv4 destinations are
//! accepted by `send_to`.

#[cfg(target_os = "linux")]
mod batch;
mod echo;
mod port;
mod view;

use std::cell::{Cell, RefCell};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;

use socket2::{Domain, Protocol as SockProtocol, Socket, Type};
use twistor_reactor::{ConnId, DatagramProtocol, DatagramTransport, Reactor, Ready};

use crate::addr::ListenAddr;

pub use echo::UdpEcho;

/// Default number of datagrams read per readiness event before other
/// sources get a turn.
pub const DEFAULT_DATAGRAM_BUDGET: usize = 64;

/// Default number of datagrams read per `recvmmsg` and sent per `sendmmsg`
/// (Linux).
pub const DEFAULT_BATCH: usize = 32;

/// The largest [`UdpOptions::batch`] (the kernel's limit per call).
pub const MAX_BATCH: usize = 1024;

/// Knobs for [`listen_udp_with`] and [`connect_udp_with`].
///
/// ```
/// use twistor_transports::udp::UdpOptions;
/// let opts = UdpOptions { max_datagram: 512, ..UdpOptions::default() };
/// assert_eq!(opts.read_budget, twistor_transports::udp::DEFAULT_DATAGRAM_BUDGET);
/// ```
#[derive(Debug, Clone)]
pub struct UdpOptions {
    /// Largest datagram accepted; a bigger one is dropped and reported to
    /// `error_received`. At most (and by default) the reactor's read buffer,
    /// 64 KiB, which holds any non-jumbo UDP datagram.
    pub max_datagram: usize,
    /// Datagrams read per readiness event before other sources get a turn.
    pub read_budget: usize,
    /// Datagrams per `recvmmsg` / `sendmmsg` on Linux (default
    /// [`DEFAULT_BATCH`], at most [`MAX_BATCH`]); `1` reads and sends one
    /// datagram per syscall. See "Batches" above for what it changes and
    /// what it costs in memory.
    pub batch: usize,
    /// `SO_REUSEADDR` (several multicast listeners on one port need it).
    pub reuse_address: bool,
    /// `SO_REUSEPORT` (one socket per reactor thread on one port).
    pub reuse_port: bool,
    /// Allow sending to broadcast addresses from the start.
    pub broadcast: bool,
    /// `SO_RCVBUF`, if set.
    pub recv_buffer_size: Option<usize>,
    /// `SO_SNDBUF`, if set.
    pub send_buffer_size: Option<usize>,
}

impl Default for UdpOptions {
    fn default() -> Self {
        UdpOptions {
            max_datagram: twistor_reactor::READ_BUFFER_SIZE,
            read_budget: DEFAULT_DATAGRAM_BUDGET,
            batch: DEFAULT_BATCH,
            reuse_address: false,
            reuse_port: false,
            broadcast: false,
            recv_buffer_size: None,
            send_buffer_size: None,
        }
    }
}

/// A closure delivered to a UDP port's protocol by [`UdpPort::call`].
pub type DatagramCall = Box<dyn FnOnce(&mut dyn DatagramProtocol, &mut dyn DatagramTransport)>;

/// State shared by a [`UdpPort`] handle and its socket's handler.
#[derive(Default)]
struct Shared {
    calls: RefCell<Vec<DatagramCall>>,
    dropped: Cell<u64>,
    stop: Cell<bool>,
    open: Cell<bool>,
}

/// The handle `listen_udp` returns (Twisted's `IListeningPort` for UDP).
///
/// The socket itself lives in the reactor; this handle reaches it. Dropping
/// the handle leaves the socket open.
///
/// ```
/// use twistor_reactor::Reactor;
/// use twistor_transports::udp::{listen_udp, UdpEcho};
///
/// let mut r = Reactor::new().unwrap();
/// let port = listen_udp(&mut r, "127.0.0.1:0", UdpEcho::new()).unwrap();
/// // Reach the protocol and its transport from outside a callback:
/// port.call(&mut r, |_proto, t| t.set_broadcast(true).unwrap());
/// r.run_pending().unwrap();
/// assert_eq!(port.dropped_sends(), 0);
/// port.stop_listening(&mut r);
/// r.run_pending().unwrap();
/// assert!(!port.is_listening());
/// ```
pub struct UdpPort {
    id: ConnId,
    local: SocketAddr,
    shared: Rc<Shared>,
}

impl UdpPort {
    /// The address the socket is bound to (with the real port when 0 was
    /// asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The socket's id in the reactor.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Whether the socket is still open.
    pub fn is_listening(&self) -> bool {
        self.shared.open.get()
    }

    /// Datagrams dropped so far because the kernel's send buffer was full.
    pub fn dropped_sends(&self) -> u64 {
        self.shared.dropped.get()
    }

    /// Close the socket on the next loop turn; the protocol's
    /// `stop_protocol` runs then. Idempotent.
    pub fn stop_listening(&self, r: &mut Reactor) {
        self.shared.stop.set(true);
        r.requeue(self.id, Ready::NONE);
    }

    /// Run `f` against the protocol and its transport on the next loop turn
    /// (the datagram version of [`Reactor::call_on`]). Dropped if the socket
    /// is closed by then.
    pub fn call(
        &self,
        r: &mut Reactor,
        f: impl FnOnce(&mut dyn DatagramProtocol, &mut dyn DatagramTransport) + 'static,
    ) {
        if !self.shared.open.get() {
            return;
        }
        self.shared.calls.borrow_mut().push(Box::new(f));
        r.requeue(self.id, Ready::NONE);
    }

    /// Send a datagram from outside the protocol, on the next loop turn.
    /// Errors are logged.
    pub fn send_to(&self, r: &mut Reactor, data: &[u8], addr: SocketAddr) {
        let data = data.to_vec();
        self.call(r, move |_, t| {
            if let Err(e) = t.send_to(&data, addr) {
                log::warn!("{}: send to {addr} failed: {e}", t.id());
            }
        });
    }
}

impl std::fmt::Debug for UdpPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UdpPort({} on {})", self.id, self.local)
    }
}

/// Listen for datagrams on `addr` (a port, or an address) with `protocol`
/// (Twisted's `reactor.listenUDP`). `start_protocol` runs on the next loop
/// turn.
///
/// ```
/// use std::time::Duration;
/// use twistor_reactor::Reactor;
/// use twistor_transports::udp::{listen_udp, UdpEcho};
///
/// let mut r = Reactor::new().unwrap();
/// let port = listen_udp(&mut r, "127.0.0.1:0", UdpEcho::new()).unwrap();
///
/// let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
/// client.set_nonblocking(true).unwrap();
/// client.send_to(b"hello", port.local_addr()).unwrap();
/// let mut buf = [0u8; 16];
/// let mut got = None;
/// r.run_until(Duration::from_secs(10), |_| {
///     got = got.or(client.recv(&mut buf).ok());
///     got.is_some()
/// }).unwrap();
/// assert_eq!(&buf[..got.unwrap()], b"hello");
/// ```
pub fn listen_udp<P>(r: &mut Reactor, addr: impl Into<ListenAddr>, protocol: P) -> io::Result<UdpPort>
where
    P: DatagramProtocol,
{
    listen_udp_with(r, addr, protocol, UdpOptions::default())
}

/// [`listen_udp`] with options.
///
/// ```
/// use twistor_reactor::Reactor;
/// use twistor_transports::udp::{listen_udp_with, UdpEcho, UdpOptions};
/// let mut r = Reactor::new().unwrap();
/// let opts = UdpOptions { reuse_address: true, ..UdpOptions::default() };
/// let port = listen_udp_with(&mut r, "127.0.0.1:0", UdpEcho::new(), opts).unwrap();
/// assert_ne!(port.local_addr().port(), 0);
/// ```
pub fn listen_udp_with<P>(
    r: &mut Reactor,
    addr: impl Into<ListenAddr>,
    protocol: P,
    opts: UdpOptions,
) -> io::Result<UdpPort>
where
    P: DatagramProtocol,
{
    let addr = addr.into();
    let sock = bind_socket(&addr, &opts)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on UDP {addr}: {e}")))?;
    register(r, sock, None, Box::new(protocol), opts)
}

/// A UDP socket connected to `addr` (an IP socket address, or
/// `"localhost:PORT"`), bound to any free local port: `write` sends to the
/// peer, datagrams from anyone else are dropped, and ICMP errors (nobody
/// listening) reach `error_received` as `ConnectionRefused`.
///
/// ```
/// use std::net::SocketAddr;
/// use twistor_reactor::{DatagramProtocol, DatagramTransport, Reactor};
/// use twistor_transports::udp::connect_udp;
///
/// struct Hello;
/// impl DatagramProtocol for Hello {
///     fn start_protocol(&mut self, t: &mut dyn DatagramTransport) {
///         t.write(b"hello").unwrap();
///     }
///     fn datagram_received(&mut self, _: &mut dyn DatagramTransport, _: &[u8], _: SocketAddr) {}
/// }
/// let mut r = Reactor::new().unwrap();
/// let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
/// let port = connect_udp(&mut r, server.local_addr().unwrap(), Hello).unwrap();
/// r.run_pending().unwrap();
/// let mut buf = [0u8; 8];
/// let (n, from) = server.recv_from(&mut buf).unwrap();
/// assert_eq!((&buf[..n], from), (&b"hello"[..], port.local_addr()));
/// ```
pub fn connect_udp<A, P>(r: &mut Reactor, addr: A, protocol: P) -> io::Result<UdpPort>
where
    A: ToPeerAddr,
    P: DatagramProtocol,
{
    connect_udp_with(r, addr, protocol, UdpOptions::default())
}

/// [`connect_udp`] with options.
///
/// ```
/// use twistor_reactor::Reactor;
/// use twistor_transports::udp::{connect_udp_with, UdpEcho, UdpOptions};
/// let mut r = Reactor::new().unwrap();
/// let opts = UdpOptions { max_datagram: 512, ..UdpOptions::default() };
/// let port = connect_udp_with(&mut r, "localhost:9", UdpEcho::new(), opts).unwrap();
/// // Connected: the kernel picked the local address that reaches the peer.
/// assert!(port.local_addr().ip().is_loopback());
/// ```
pub fn connect_udp_with<A, P>(r: &mut Reactor, addr: A, protocol: P, opts: UdpOptions) -> io::Result<UdpPort>
where
    A: ToPeerAddr,
    P: DatagramProtocol,
{
    let peer = addr.to_peer_addr()?;
    let local: SocketAddr = match peer {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = bind_one(local, &opts, false)?;
    sock.connect(&peer.into())?;
    register(r, sock, Some(peer), Box::new(protocol), opts)
}

/// What [`connect_udp`] accepts as a peer: a [`SocketAddr`], or a string
/// holding an IP socket address or `localhost:PORT` (which means
/// `127.0.0.1`). Names are not resolved here, so the loop never blocks on DNS.
///
/// ```
/// use twistor_transports::udp::ToPeerAddr;
/// assert_eq!("localhost:1234".to_peer_addr().unwrap(), "127.0.0.1:1234".parse().unwrap());
/// assert!("example.org:1234".to_peer_addr().is_err());
/// ```
pub trait ToPeerAddr {
    /// The peer's socket address, or `InvalidInput`.
    fn to_peer_addr(self) -> io::Result<SocketAddr>;
}

impl ToPeerAddr for SocketAddr {
    fn to_peer_addr(self) -> io::Result<SocketAddr> {
        Ok(self)
    }
}

impl ToPeerAddr for &str {
    fn to_peer_addr(self) -> io::Result<SocketAddr> {
        if let Some(port) = self.strip_prefix("localhost:") {
            if let Ok(p) = port.parse::<u16>() {
                return Ok((Ipv4Addr::LOCALHOST, p).into());
            }
        }
        self.parse::<SocketAddr>().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not an IP socket address or localhost:PORT: {self:?}"),
            )
        })
    }
}

impl ToPeerAddr for &String {
    fn to_peer_addr(self) -> io::Result<SocketAddr> {
        self.as_str().to_peer_addr()
    }
}

impl ToPeerAddr for String {
    fn to_peer_addr(self) -> io::Result<SocketAddr> {
        self.as_str().to_peer_addr()
    }
}

/// A socket on the first of `addr`'s candidates that binds: for a bare
/// port, a dual-stack `[::]:port`, else `0.0.0.0:port` where IPv6 is
/// unavailable (the same rule as TCP).
fn bind_socket(addr: &ListenAddr, opts: &UdpOptions) -> io::Result<Socket> {
    let mut last = None;
    for (cand, dual) in addr.candidates()? {
        match bind_one(cand, opts, dual) {
            Ok(s) => return Ok(s),
            Err(e) => {
                // Fall back only when IPv6 itself is missing, not when the
                // port is taken.
                let taken = matches!(
                    e.kind(),
                    io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied
                );
                last = Some(e);
                if taken {
                    break;
                }
            }
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no address to listen on")))
}

fn bind_one(addr: SocketAddr, opts: &UdpOptions, dual_stack: bool) -> io::Result<Socket> {
    // socket2 opens sockets close-on-exec.
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(SockProtocol::UDP))?;
    if dual_stack {
        sock.set_only_v6(false)?;
    }
    if opts.reuse_address {
        sock.set_reuse_address(true)?;
    }
    if opts.reuse_port {
        sock.set_reuse_port(true)?;
    }
    if opts.broadcast {
        sock.set_broadcast(true)?;
    }
    if let Some(n) = opts.recv_buffer_size {
        sock.set_recv_buffer_size(n)?;
    }
    if let Some(n) = opts.send_buffer_size {
        sock.set_send_buffer_size(n)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock)
}

fn register(
    r: &mut Reactor,
    sock: Socket,
    peer: Option<SocketAddr>,
    protocol: Box<dyn DatagramProtocol>,
    opts: UdpOptions,
) -> io::Result<UdpPort> {
    let local = sock
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("UDP socket without an IP address"))?;
    let shared = Rc::new(Shared::default());
    shared.open.set(true);
    let id = port::insert(r, sock, local, peer, protocol, opts, shared.clone())?;
    r.requeue(id, Ready::NONE);
    Ok(UdpPort { id, local, shared })
}
