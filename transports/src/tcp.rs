//! TCP: `listen_tcp` and `connect_tcp` (Twisted's `listenTCP` /
//! `connectTCP`), built on the reactor's extension API only.
//!
//! Connections run on [`open_stream`](twistor_reactor::open_stream), so
//! they get the whole Protocol/Transport contract; the listener is the
//! shared accept loop, and a client attempt the shared connection
//! lifecycle (with Happy Eyeballs). This file only knows how to make TCP
//! sockets and name their ends.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mio::Interest;
use socket2::{Domain, Protocol as SockProto, Socket, Type};
use twistor_reactor::{Address, ClientFactory, ConnId, Connector, Reactor};

use crate::addr::{interleave, Resolver};
pub use crate::addr::{unmap, ListenAddr};
use crate::connector::{self, Addresses, Dialer, LinkOptions};
pub use crate::connector::{DEFAULT_ATTEMPT_DELAY, DEFAULT_CONNECT_TIMEOUT};
use crate::listener::{Accepted, Acceptor, Listener};
pub use crate::listener::{DEFAULT_ACCEPT_BUDGET, DEFAULT_BACKLOG};
use crate::proxy::ProxyOptions;
use crate::sock::{ask_kernel, Knobs, SockIo};

// ----- listening ------------------------------------------------------------------

/// Options for [`listen_tcp_with`].
///
/// ```
/// use std::time::Duration;
/// use twistor_transports::ListenOptions;
/// let opts = ListenOptions {
///     max_connections: Some(1000),
///     close_timeout: Duration::from_secs(10),
///     ..ListenOptions::default()
/// };
/// assert!(opts.reuse_addr);
/// ```
#[derive(Debug, Clone)]
pub struct ListenOptions {
    /// Listen backlog (default [`DEFAULT_BACKLOG`], 1024).
    pub backlog: i32,
    /// SO_REUSEADDR (default on, so a restarted server can bind at once).
    pub reuse_addr: bool,
    /// SO_REUSEPORT (default off): one listener per reactor per core.
    pub reuse_port: bool,
    /// For IPv6 addresses: `Some(true)` = IPv6 only, `Some(false)` =
    /// dual-stack, `None` = dual-stack for a bare port, system default otherwise.
    pub v6_only: Option<bool>,
    /// Maximum live connections; new ones over it are closed at once with a
    /// log line (default: no limit).
    pub max_connections: Option<usize>,
    /// Connections accepted per readiness event before the other
    /// connections get a turn (default [`DEFAULT_ACCEPT_BUDGET`], 128).
    pub accept_budget: usize,
    /// Write-buffer high-water mark of each connection (default
    /// [`DEFAULT_HIGH_WATER`](twistor_reactor::DEFAULT_HIGH_WATER), 64 KiB).
    pub high_water: usize,
    /// Write-buffer low-water mark of each connection (default
    /// [`DEFAULT_LOW_WATER`](twistor_reactor::DEFAULT_LOW_WATER), 16 KiB).
    pub low_water: usize,
    /// How long a graceful close of a connection may spend flushing before
    /// it is aborted (default
    /// [`DEFAULT_CLOSE_TIMEOUT`](twistor_reactor::DEFAULT_CLOSE_TIMEOUT), 30 s).
    pub close_timeout: Duration,
    /// Hard cap on each connection's write buffer: past it the connection
    /// is aborted with a limit reason (default
    /// [`DEFAULT_MAX_WRITE_BUFFER`](twistor_reactor::DEFAULT_MAX_WRITE_BUFFER), 16 MiB).
    pub max_write_buffer: usize,
    /// Whether each connection opens with a PROXY protocol header naming
    /// the real client, read before the factory is called (default: off).
    /// See [`proxy`](crate::proxy), and mind who may send one.
    pub proxy_protocol: ProxyOptions,
}

impl Default for ListenOptions {
    fn default() -> Self {
        let knobs = Knobs::default();
        ListenOptions {
            backlog: DEFAULT_BACKLOG,
            reuse_addr: true,
            reuse_port: false,
            v6_only: None,
            max_connections: None,
            accept_budget: DEFAULT_ACCEPT_BUDGET,
            high_water: knobs.high_water,
            low_water: knobs.low_water,
            close_timeout: knobs.close_timeout,
            max_write_buffer: knobs.max_write_buffer,
            proxy_protocol: ProxyOptions::default(),
        }
    }
}

impl ListenOptions {
    /// What the listener does with these options.
    fn accepted(&self) -> Accepted {
        Accepted {
            max_connections: self.max_connections,
            accept_budget: self.accept_budget,
            knobs: Knobs {
                high_water: self.high_water,
                low_water: self.low_water,
                close_timeout: self.close_timeout,
                max_write_buffer: self.max_write_buffer,
            },
            proxy: self.proxy_protocol.clone(),
        }
    }
}

/// A listening port (Twisted's `IListeningPort`).
#[derive(Debug, Clone)]
pub struct ListeningPort {
    id: ConnId,
    addr: SocketAddr,
}

impl ListeningPort {
    /// The address actually bound (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The listener's id in the reactor.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Stop accepting; connections already accepted carry on.
    pub fn stop_listening(&self, r: &mut Reactor) {
        r.remove(self.id);
    }
}

/// The listening socket, and what it knows of every connection it accepts.
struct TcpAcceptor {
    l: mio::net::TcpListener,
    /// The local address of every accepted connection, when the listener
    /// is bound to one address; `None` for a wildcard one (`[::]`,
    /// `0.0.0.0`), where only the kernel knows which address was reached.
    host: Option<Address>,
}

impl TcpAcceptor {
    fn new(l: mio::net::TcpListener, bound: SocketAddr) -> TcpAcceptor {
        let host = (!bound.ip().is_unspecified()).then(|| Address::Inet(unmap(bound)));
        TcpAcceptor { l, host }
    }
}

impl Acceptor for TcpAcceptor {
    type Stream = TcpIo;

    /// One `accept4`, and no other call when the listener has one address:
    /// accept gave the peer, the listener knows the local end, and Nagle
    /// is already off (accepted sockets inherit TCP_NODELAY from the
    /// listener on Linux; elsewhere it is set here).
    fn accept(&mut self) -> io::Result<(TcpIo, Address)> {
        let (s, peer) = self.l.accept()?;
        let peer = Address::Inet(unmap(peer));
        let host = match &self.host {
            Some(h) => h.clone(),
            None => ask_kernel(|| s.local_addr())
                .map(|a| Address::Inet(unmap(a)))
                .unwrap_or(Address::Unknown),
        };
        #[cfg(not(target_os = "linux"))]
        let _ = ask_kernel(|| s.set_nodelay(true));
        Ok((
            SockIo {
                s,
                peer: peer.clone(),
                host,
            },
            peer,
        ))
    }

    fn deregister(&mut self, r: &Reactor) {
        let _ = r.registry().deregister(&mut self.l);
    }
}

/// Listen for TCP connections (Twisted's `reactor.listenTCP(port, factory)`).
///
/// ```no_run
/// use twistor_reactor::{Protocol, Reactor, Transport};
/// struct Echo;
/// impl Protocol for Echo {
///     fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) { t.write(d) }
/// }
/// let mut r = Reactor::new().unwrap();
/// let port = twistor_transports::listen_tcp(&mut r, 1234, |_: &_| Echo).unwrap();
/// println!("listening on {}", port.local_addr());
/// r.run().unwrap();
/// ```
pub fn listen_tcp(
    r: &mut Reactor,
    addr: impl Into<ListenAddr>,
    factory: impl twistor_reactor::Factory,
) -> io::Result<ListeningPort> {
    listen_tcp_with(r, addr, factory, ListenOptions::default())
}

/// [`listen_tcp`] with options.
pub fn listen_tcp_with(
    r: &mut Reactor,
    addr: impl Into<ListenAddr>,
    factory: impl twistor_reactor::Factory,
    opts: ListenOptions,
) -> io::Result<ListeningPort> {
    let addr = addr.into();
    let mut last = None;
    for (cand, dual) in addr.candidates()? {
        match bind_listener(cand, dual, &opts) {
            Ok(l) => return register_listener(r, l, Box::new(factory), &opts),
            Err(e) => {
                // A bare port falls back to IPv4 where IPv6 is unavailable,
                // but not when the port itself is taken.
                let unavailable =
                    e.kind() == io::ErrorKind::AddrInUse || e.kind() == io::ErrorKind::PermissionDenied;
                last = Some(e);
                if unavailable {
                    break;
                }
            }
        }
    }
    let e = last.unwrap_or_else(|| io::Error::other("no address to listen on"));
    Err(io::Error::new(
        e.kind(),
        format!("cannot listen on TCP {addr}: {e}"),
    ))
}

fn bind_listener(addr: SocketAddr, dual: bool, opts: &ListenOptions) -> io::Result<std::net::TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(SockProto::TCP))?;
    if opts.reuse_addr {
        sock.set_reuse_address(true)?;
    }
    if opts.reuse_port {
        sock.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        match opts.v6_only {
            Some(v) => sock.set_only_v6(v)?,
            None if dual => sock.set_only_v6(false)?,
            None => {}
        }
    }
    sock.set_nonblocking(true)?;
    // Accepted sockets inherit it (Linux), which saves a call per accept.
    sock.set_nodelay(true)?;
    sock.bind(&addr.into())?;
    sock.listen(opts.backlog)?;
    Ok(sock.into())
}

fn register_listener(
    r: &mut Reactor,
    l: std::net::TcpListener,
    factory: Box<dyn twistor_reactor::Factory>,
    opts: &ListenOptions,
) -> io::Result<ListeningPort> {
    let bound = l.local_addr()?;
    let mut l = mio::net::TcpListener::from_std(l);
    let settings = opts.accepted();
    let id = r.insert_with(|r, id| {
        r.registry().register(&mut l, id.token(), Interest::READABLE)?;
        Ok(Box::new(Listener::new(
            TcpAcceptor::new(l, bound),
            factory,
            settings,
            format!("TCP listener {bound}"),
        )))
    })?;
    log::debug!("listening on TCP {bound}");
    Ok(ListeningPort { id, addr: bound })
}

// ----- the stream --------------------------------------------------------------------

/// A connected TCP socket as a [`StreamIo`](twistor_reactor::StreamIo).
type TcpIo = SockIo<mio::net::TcpStream>;

/// Wrap a connected client socket whose addresses are known: Nagle off
/// (request/response protocols want it).
fn tcp_io(s: mio::net::TcpStream, peer: Address, host: Address) -> TcpIo {
    let _ = ask_kernel(|| s.set_nodelay(true));
    SockIo { s, peer, host }
}

// ----- connecting ------------------------------------------------------------------------

/// Options for [`connect_tcp_with`].
///
/// ```
/// use std::time::Duration;
/// use twistor_transports::ConnectOptions;
/// let opts = ConnectOptions { timeout: Duration::from_secs(5), ..ConnectOptions::default() };
/// assert_eq!(opts.max_write_buffer, twistor_reactor::DEFAULT_MAX_WRITE_BUFFER);
/// ```
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Time allowed for the whole attempt, name lookup included (default
    /// [`DEFAULT_CONNECT_TIMEOUT`], 30 s).
    pub timeout: Duration,
    /// Local address to bind before connecting (default: none, the system
    /// picks).
    pub bind: Option<SocketAddr>,
    /// How host names become addresses (default: the system's resolver).
    pub resolver: Resolver,
    /// Happy Eyeballs (RFC 8305): when a name has several addresses, how
    /// long one connect may go unanswered before the next address is tried
    /// alongside it (default [`DEFAULT_ATTEMPT_DELAY`], 250 ms). The first
    /// to connect wins and the others are closed; an address that fails
    /// gives way to the next at once. [`timeout`](Self::timeout) still
    /// bounds the whole attempt.
    pub attempt_delay: Duration,
    /// Write-buffer high-water mark of the connection (default
    /// [`DEFAULT_HIGH_WATER`](twistor_reactor::DEFAULT_HIGH_WATER), 64 KiB).
    pub high_water: usize,
    /// Write-buffer low-water mark (default [`DEFAULT_LOW_WATER`](twistor_reactor::DEFAULT_LOW_WATER), 16 KiB).
    pub low_water: usize,
    /// How long a graceful close may spend flushing before the connection
    /// is aborted (default [`DEFAULT_CLOSE_TIMEOUT`](twistor_reactor::DEFAULT_CLOSE_TIMEOUT), 30 s).
    pub close_timeout: Duration,
    /// Hard cap on the write buffer: past it the connection is aborted
    /// with a limit reason (default [`DEFAULT_MAX_WRITE_BUFFER`](twistor_reactor::DEFAULT_MAX_WRITE_BUFFER), 16 MiB).
    pub max_write_buffer: usize,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        let knobs = Knobs::default();
        ConnectOptions {
            timeout: DEFAULT_CONNECT_TIMEOUT,
            bind: None,
            resolver: Resolver::system(),
            attempt_delay: DEFAULT_ATTEMPT_DELAY,
            high_water: knobs.high_water,
            low_water: knobs.low_water,
            close_timeout: knobs.close_timeout,
            max_write_buffer: knobs.max_write_buffer,
        }
    }
}

impl ConnectOptions {
    fn knobs(&self) -> Knobs {
        Knobs {
            high_water: self.high_water,
            low_water: self.low_water,
            close_timeout: self.close_timeout,
            max_write_buffer: self.max_write_buffer,
        }
    }
}

/// Connect to `host:port` over TCP (Twisted's
/// `reactor.connectTCP(host, port, factory)`).
///
/// The host may be a name (resolved on the thread pool, never blocking the
/// loop) or an address. A name's addresses are tried as RFC 8305 (Happy
/// Eyeballs) says: IPv6 and IPv4 alternate, a new connect starts every
/// [`attempt_delay`](ConnectOptions::attempt_delay) (250 ms) while none has
/// answered, the first to connect wins, and the others are closed; so an
/// address that never answers (a broken IPv6 route) costs a quarter of a
/// second, not the whole timeout. The attempt ends in exactly one of the
/// protocol's `connection_made` or the factory's
/// `client_connection_failed`.
///
/// ```no_run
/// use twistor_reactor::{Protocol, Reactor, Transport};
/// struct Hello;
/// impl Protocol for Hello {
///     fn connection_made(&mut self, t: &mut dyn Transport) { t.write(b"Hello, world!") }
///     fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
///         println!("Server said: {}", String::from_utf8_lossy(d));
///         t.lose_connection();
///     }
/// }
/// let mut r = Reactor::new().unwrap();
/// twistor_transports::connect_tcp(&mut r, "localhost", 1234, |_: &_| Hello);
/// r.run().unwrap();
/// ```
pub fn connect_tcp(r: &mut Reactor, host: &str, port: u16, factory: impl ClientFactory) -> Connector {
    connect_tcp_with(r, host, port, factory, ConnectOptions::default())
}

/// [`connect_tcp`] with options.
///
/// ```no_run
/// use std::time::Duration;
/// use twistor_reactor::{testing::Recorder, Reactor};
/// use twistor_transports::{connect_tcp_with, ConnectOptions};
/// let opts = ConnectOptions { timeout: Duration::from_secs(5), ..ConnectOptions::default() };
/// let mut r = Reactor::new().unwrap();
/// connect_tcp_with(&mut r, "localhost", 1234, |_: &_| Recorder::new().0, opts);
/// r.run().unwrap();
/// ```
pub fn connect_tcp_with(
    r: &mut Reactor,
    host: &str,
    port: u16,
    factory: impl ClientFactory,
    opts: ConnectOptions,
) -> Connector {
    let destination = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let link = LinkOptions {
        timeout: opts.timeout,
        attempt_delay: opts.attempt_delay,
        knobs: opts.knobs(),
    };
    let dialer = TcpDialer {
        host: host.trim_start_matches('[').trim_end_matches(']').to_string(),
        port,
        bind: opts.bind,
        resolver: opts.resolver,
    };
    connector::connect(r, dialer, destination, factory, link)
}

/// How TCP finds addresses and makes sockets for the shared connector.
struct TcpDialer {
    host: String,
    port: u16,
    bind: Option<SocketAddr>,
    resolver: Resolver,
}

impl Dialer for TcpDialer {
    type Addr = SocketAddr;
    type Sock = mio::net::TcpStream;
    type Io = TcpIo;

    fn addresses(&self) -> Addresses<SocketAddr> {
        // A literal address needs no lookup; a name is resolved off the loop.
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Addresses::Known(vec![SocketAddr::new(ip, self.port)]);
        }
        let (resolver, host, port) = (self.resolver.clone(), self.host.clone(), self.port);
        Addresses::Lookup(Box::new(move || resolver.resolve(&host, port).map(interleave)))
    }

    fn start(&self, addr: &SocketAddr) -> io::Result<mio::net::TcpStream> {
        let sock = Socket::new(Domain::for_address(*addr), Type::STREAM, Some(SockProto::TCP))?;
        sock.set_nonblocking(true)?;
        if let Some(b) = self.bind {
            sock.bind(&b.into())?;
        }
        match sock.connect(&(*addr).into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        Ok(mio::net::TcpStream::from_std(sock.into()))
    }

    fn finished(sock: &mio::net::TcpStream) -> Option<io::Result<()>> {
        // SO_ERROR says whether it failed; peer_addr confirms it connected.
        match sock.take_error() {
            Ok(Some(e)) | Err(e) => Some(Err(e)),
            Ok(None) => match ask_kernel(|| sock.peer_addr()) {
                Ok(_) => Some(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => None,
                Err(e) => Some(Err(e)),
            },
        }
    }

    fn wrap(&self, sock: mio::net::TcpStream, addr: &SocketAddr) -> TcpIo {
        let host = ask_kernel(|| sock.local_addr())
            .map(|a| Address::Inet(unmap(a)))
            .unwrap_or(Address::Unknown);
        tcp_io(sock, Address::Inet(unmap(*addr)), host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;
    use twistor_reactor::{Protocol, Transport};

    use crate::sock::KERNEL_ASKS;

    /// Records the addresses each accepted connection sees.
    struct Names(Rc<RefCell<Vec<(Address, Address)>>>);
    impl Protocol for Names {
        fn connection_made(&mut self, t: &mut dyn Transport) {
            self.0.borrow_mut().push((t.peer(), t.host()));
        }
        fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    }

    /// Accept asks the kernel nothing it has already said: accept4 gave the
    /// peer, the listener's own address is the local one when it is bound
    /// to one address, and Nagle is off already (inherited from the
    /// listener). Only a wildcard listener must ask which of its addresses
    /// a connection came to.
    #[test]
    fn accepting_asks_the_kernel_nothing_it_already_said() {
        const N: usize = 20;
        let cases = [
            (ListenAddr::from("127.0.0.1:0"), 0),
            (ListenAddr::from("0.0.0.0:0"), 1),
            (ListenAddr::Port(0), 1), // dual-stack [::]
        ];
        for (bind, per_connection) in cases {
            let mut r = Reactor::new().unwrap();
            r.set_install_signal_handlers(false);
            let seen = Rc::new(RefCell::new(Vec::new()));
            let s2 = seen.clone();
            let port = listen_tcp(&mut r, bind.clone(), move |_: &Address| Names(s2.clone())).unwrap();
            let to = SocketAddr::from(([127, 0, 0, 1], port.port()));
            let before = KERNEL_ASKS.with(|n| n.get());
            let clients: Vec<_> = (0..N)
                .map(|_| std::net::TcpStream::connect(to).unwrap())
                .collect();
            let done = r
                .run_until(Duration::from_secs(20), |_| seen.borrow().len() == N)
                .unwrap();
            assert!(done, "{bind}: accepted {} of {N}", seen.borrow().len());
            let asked = KERNEL_ASKS.with(|n| n.get()) - before;
            assert_eq!(
                asked,
                (N * per_connection) as u64,
                "{bind}: calls per {N} accepts"
            );
            // And the names are right.
            for (c, (peer, host)) in clients.iter().zip(seen.borrow().iter()) {
                assert_eq!(*peer, Address::Inet(c.local_addr().unwrap()), "{bind}");
                assert_eq!(*host, Address::Inet(to), "{bind}");
            }
        }
    }

    /// What lets accept skip setting TCP_NODELAY: the accepted socket has
    /// it from the listener.
    #[test]
    fn accepted_sockets_have_nagle_off() {
        use std::os::fd::AsRawFd;
        let l = bind_listener("127.0.0.1:0".parse().unwrap(), false, &ListenOptions::default()).unwrap();
        let to = l.local_addr().unwrap();
        let mut acceptor = TcpAcceptor::new(mio::net::TcpListener::from_std(l), to);
        let _c = std::net::TcpStream::connect(to).unwrap();
        // Wait (bounded) for the connection to be ready to accept.
        let mut p = libc::pollfd {
            fd: acceptor.l.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        assert_eq!(unsafe { libc::poll(&mut p, 1, 20_000) }, 1, "nothing to accept");
        let (io, _) = acceptor.accept().unwrap();
        assert!(socket2::SockRef::from(&io.s).nodelay().unwrap());
    }

    /// Every stream limit given to a listener or a connector is what its
    /// streams are opened with.
    #[test]
    fn every_knob_reaches_the_stream_options() {
        let l = ListenOptions {
            max_connections: Some(6),
            accept_budget: 5,
            high_water: 1,
            low_water: 2,
            close_timeout: Duration::from_secs(3),
            max_write_buffer: 4,
            proxy_protocol: crate::proxy::ProxyOptions::required(),
            ..ListenOptions::default()
        };
        let a = l.accepted();
        assert_eq!((a.max_connections, a.accept_budget), (Some(6), 5));
        assert_eq!(a.proxy, crate::proxy::ProxyOptions::required());
        let o = a.knobs.stream_options(None);
        assert_eq!(
            (o.high_water, o.low_water, o.close_timeout, o.max_write_buffer),
            (1, 2, Duration::from_secs(3), 4)
        );
        let c = ConnectOptions {
            high_water: 7,
            low_water: 8,
            close_timeout: Duration::from_secs(9),
            max_write_buffer: 10,
            ..ConnectOptions::default()
        };
        let o = c.knobs().stream_options(None);
        assert_eq!(
            (o.high_water, o.low_water, o.close_timeout, o.max_write_buffer),
            (7, 8, Duration::from_secs(9), 10)
        );
        // The defaults are the reactor's.
        let d = twistor_reactor::StreamOptions::default();
        let o = ListenOptions::default().accepted().knobs.stream_options(None);
        assert_eq!(
            (o.high_water, o.low_water, o.close_timeout, o.max_write_buffer),
            (d.high_water, d.low_water, d.close_timeout, d.max_write_buffer)
        );
    }
}
