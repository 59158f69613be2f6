//! TCP: `listen_tcp` and `connect_tcp` (Twisted's `listenTCP` /
//! `connectTCP`), built on the reactor's extension API only.
//!
//! Connections run on [`open_stream`], so they get the whole
//! Protocol/Transport contract; this file only knows how to make sockets.

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::Duration;

use mio::Interest;
use socket2::{Domain, Protocol as SockProto, Socket, Type};
use twistor_reactor::{
    open_stream, Address, ClientFactory, ConnId, Connector, DelayedCall, Handler, Reactor, Ready, Reason,
    StreamOptions, DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER,
};

pub use crate::addr::{unmap, ListenAddr};
pub use crate::listener::DEFAULT_BACKLOG;
use crate::listener::{Accepted, Acceptor, Listener};
use crate::sock::SockIo;

/// Default time a connection attempt may take (Twisted's default).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

// ----- listening ------------------------------------------------------------------

/// Options for [`listen_tcp_with`].
///
/// ```
/// use twistor_transports::ListenOptions;
/// let opts = ListenOptions { max_connections: Some(1000), ..ListenOptions::default() };
/// assert!(opts.reuse_addr);
/// ```
#[derive(Debug, Clone)]
pub struct ListenOptions {
    /// Listen backlog (default 1024).
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
    /// Write-buffer high-water mark of each connection.
    pub high_water: usize,
    /// Write-buffer low-water mark of each connection.
    pub low_water: usize,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            backlog: DEFAULT_BACKLOG,
            reuse_addr: true,
            reuse_port: false,
            v6_only: None,
            max_connections: None,
            high_water: DEFAULT_HIGH_WATER,
            low_water: DEFAULT_LOW_WATER,
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

struct TcpAcceptor(mio::net::TcpListener);

impl Acceptor for TcpAcceptor {
    type Stream = TcpIo;
    fn accept(&mut self) -> io::Result<(TcpIo, Address)> {
        let (s, peer) = self.0.accept()?;
        let io = tcp_io(s);
        Ok((io, Address::Inet(unmap(peer))))
    }
    fn deregister(&mut self, r: &Reactor) {
        let _ = r.registry().deregister(&mut self.0);
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
    let settings = Accepted {
        max_connections: opts.max_connections,
        high_water: opts.high_water,
        low_water: opts.low_water,
    };
    let id = r.insert_with(|r, id| {
        r.registry().register(&mut l, id.token(), Interest::READABLE)?;
        Ok(Box::new(Listener::new(
            TcpAcceptor(l),
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
pub(crate) type TcpIo = SockIo<mio::net::TcpStream>;

/// Wrap a connected socket: Nagle off (request/response protocols want
/// it), addresses read once.
pub(crate) fn tcp_io(s: mio::net::TcpStream) -> TcpIo {
    let _ = s.set_nodelay(true);
    let peer = s
        .peer_addr()
        .map(|a| Address::Inet(unmap(a)))
        .unwrap_or(Address::Unknown);
    let host = s
        .local_addr()
        .map(|a| Address::Inet(unmap(a)))
        .unwrap_or(Address::Unknown);
    SockIo { s, peer, host }
}

// ----- connecting ------------------------------------------------------------------------

/// Options for [`connect_tcp_with`].
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Time allowed for the whole attempt, name lookup included (default 30 s).
    pub timeout: Duration,
    /// Local address to bind before connecting.
    pub bind: Option<SocketAddr>,
    /// Write-buffer high-water mark.
    pub high_water: usize,
    /// Write-buffer low-water mark.
    pub low_water: usize,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            timeout: DEFAULT_CONNECT_TIMEOUT,
            bind: None,
            high_water: DEFAULT_HIGH_WATER,
            low_water: DEFAULT_LOW_WATER,
        }
    }
}

type SharedFactory = Rc<RefCell<Box<dyn ClientFactory>>>;

/// One connector's state, shared by its `Connector` handles, its attempt's
/// handler and its timers.
struct ConnectState {
    host: String,
    port: u16,
    opts: ConnectOptions,
    factory: SharedFactory,
    /// Bumped for every attempt; callbacks of an older attempt do nothing.
    attempt: u64,
    /// An attempt was asked for (`connect`) and has not started yet; a
    /// `stop_connecting` before it starts clears this, and it never starts.
    queued: bool,
    /// The attempt in progress: its socket handler (if connecting) and timer.
    pending: Option<(Option<ConnId>, DelayedCall)>,
}

type Shared = Rc<RefCell<ConnectState>>;

/// Connect to `host:port` over TCP (Twisted's
/// `reactor.connectTCP(host, port, factory)`).
///
/// The host may be a name (resolved on the thread pool, never blocking the
/// loop) or an address; every resolved address is tried in order. The
/// attempt ends in exactly one of the protocol's `connection_made` or the
/// factory's `client_connection_failed`.
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
pub fn connect_tcp_with(
    r: &mut Reactor,
    host: &str,
    port: u16,
    factory: impl ClientFactory,
    opts: ConnectOptions,
) -> Connector {
    let shared: Shared = Rc::new(RefCell::new(ConnectState {
        host: host.to_string(),
        port,
        opts,
        factory: Rc::new(RefCell::new(Box::new(factory))),
        attempt: 0,
        queued: false,
        pending: None,
    }));
    queue_attempt(r, &shared);
    make_connector(&shared)
}

/// Ask for an attempt on the next loop turn, unless one is already asked
/// for or in progress.
fn queue_attempt(r: &mut Reactor, s: &Shared) {
    {
        let mut st = s.borrow_mut();
        if st.queued || st.pending.is_some() {
            log::debug!("connect() while an attempt is in progress: ignored");
            return;
        }
        st.queued = true;
    }
    let s = s.clone();
    r.call_soon(move |r| start_attempt(r, &s));
}

/// `stop_connecting`: fail the attempt asked for or in progress, if any.
fn stop_attempt(r: &mut Reactor, s: &Shared) {
    let queued = std::mem::replace(&mut s.borrow_mut().queued, false);
    if queued {
        let factory = s.borrow().factory.clone();
        report_failed(r, &factory, &make_connector(s), Reason::Aborted);
    } else {
        fail_attempt(r, s, None, Reason::Aborted);
    }
}

/// A handle on the shared state. Handles hold it alive: the state lives as
/// long as an attempt, a connection or someone's connector needs it.
fn make_connector(s: &Shared) -> Connector {
    let (host, port) = {
        let st = s.borrow();
        (st.host.clone(), st.port)
    };
    let dest = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let (s1, s2) = (s.clone(), s.clone());
    Connector::new(
        dest,
        move |r| queue_attempt(r, &s1),
        move |r| stop_attempt(r, &s2),
    )
}

fn start_attempt(r: &mut Reactor, s: &Shared) {
    if !std::mem::replace(&mut s.borrow_mut().queued, false) {
        return; // stop_connecting came first, and reported it
    }
    if r.is_stopping() {
        // No new attempts once stop() has begun, but the attempt still
        // ends in exactly one outcome: it fails, as an aborted one would.
        log::debug!("not connecting to {}: the reactor is stopping", s.borrow().host);
        let factory = s.borrow().factory.clone();
        report_failed(r, &factory, &make_connector(s), Reason::Aborted);
        return;
    }
    let connector = make_connector(s);
    let (attempt, timeout, factory, host, port) = {
        let mut st = s.borrow_mut();
        st.attempt += 1;
        (
            st.attempt,
            st.opts.timeout,
            st.factory.clone(),
            st.host.clone(),
            st.port,
        )
    };
    let s2 = s.clone();
    let timer = r.call_later(timeout, move |r| {
        fail_attempt(r, &s2, Some(attempt), Reason::TimedOut)
    });
    s.borrow_mut().pending = Some((None, timer));
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        factory.borrow_mut().started_connecting(r, &connector)
    })) {
        log::error!(
            "started_connecting panicked: {}",
            twistor_reactor::panic_message(&*p)
        );
    }
    if s.borrow().attempt != attempt || s.borrow().pending.is_none() {
        return; // started_connecting stopped it (and it was reported)
    }
    // A literal address needs no lookup; a name is resolved off the loop.
    let trimmed = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = trimmed.parse::<IpAddr>() {
        try_addrs(r, s, attempt, vec![SocketAddr::new(ip, port)], None);
        return;
    }
    // While the name is looked up, a handler stands for the attempt, so
    // that a reactor stop fails it (as it does a connecting socket) rather
    // than leaving it unreported.
    let s2 = s.clone();
    match r.insert_with(|_, _| Ok(Box::new(Resolving { s: s2, attempt }))) {
        Ok(id) => {
            if let Some((h, _)) = s.borrow_mut().pending.as_mut() {
                *h = Some(id);
            }
        }
        Err(e) => return fail_attempt(r, s, Some(attempt), Reason::from_io(e)),
    }
    let s2 = s.clone();
    r.defer_to_thread(
        move || {
            (host.as_str(), port)
                .to_socket_addrs()
                .map(|a| a.collect::<Vec<_>>())
        },
        move |r, res| match res {
            Ok(Ok(addrs)) if !addrs.is_empty() => try_addrs(r, &s2, attempt, addrs, None),
            Ok(Ok(_)) => fail_attempt(r, &s2, Some(attempt), Reason::Dns("no addresses".into())),
            Ok(Err(e)) => fail_attempt(r, &s2, Some(attempt), Reason::Dns(e.to_string())),
            Err(p) => fail_attempt(r, &s2, Some(attempt), Reason::Dns(p)),
        },
    );
}

/// Try `addrs` in order; `last` is the error of the previous one.
fn try_addrs(r: &mut Reactor, s: &Shared, attempt: u64, mut addrs: Vec<SocketAddr>, last: Option<io::Error>) {
    if s.borrow().attempt != attempt || s.borrow().pending.is_none() {
        return;
    }
    // The handler of the previous step (the lookup's stand-in) is done.
    let previous = s.borrow_mut().pending.as_mut().and_then(|(h, _)| h.take());
    if let Some(id) = previous {
        r.remove(id);
    }
    if addrs.is_empty() {
        let e = last.unwrap_or_else(|| io::Error::other("no address to connect to"));
        fail_attempt(r, s, Some(attempt), Reason::from_io(e));
        return;
    }
    let addr = addrs.remove(0);
    let bind = s.borrow().opts.bind;
    let sock = match start_connect(addr, bind) {
        Ok(sock) => sock,
        Err(e) => return try_addrs(r, s, attempt, addrs, Some(e)),
    };
    let s2 = s.clone();
    let res = r.insert_with(move |r, id| {
        let mut sock = sock;
        r.registry().register(&mut sock, id.token(), Interest::WRITABLE)?;
        Ok(Box::new(Connecting {
            sock: Some(sock),
            s: s2,
            attempt,
            rest: addrs,
        }))
    });
    match res {
        Ok(id) => {
            if let Some((h, _)) = s.borrow_mut().pending.as_mut() {
                *h = Some(id);
            }
        }
        Err(e) => fail_attempt(r, s, Some(attempt), Reason::from_io(e)),
    }
}

fn start_connect(addr: SocketAddr, bind: Option<SocketAddr>) -> io::Result<mio::net::TcpStream> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(SockProto::TCP))?;
    sock.set_nonblocking(true)?;
    if let Some(b) = bind {
        sock.bind(&b.into())?;
    }
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(sock.into()))
}

/// End the attempt with `reason` (once): cancel its timer and socket and
/// tell the factory. `attempt: None` means "whatever attempt is pending".
fn fail_attempt(r: &mut Reactor, s: &Shared, attempt: Option<u64>, reason: Reason) {
    let (pending, factory) = {
        let mut st = s.borrow_mut();
        if attempt.is_some_and(|a| a != st.attempt) {
            return;
        }
        let Some(p) = st.pending.take() else {
            return;
        };
        (p, st.factory.clone())
    };
    let connector = make_connector(s);
    let (handler, timer) = pending;
    timer.cancel(r);
    if let Some(id) = handler {
        r.remove(id);
    }
    log::debug!("connection to {} failed: {reason}", connector.destination());
    report_failed(r, &factory, &connector, reason);
}

/// The handler of a socket whose connect is in flight.
struct Connecting {
    sock: Option<mio::net::TcpStream>,
    s: Shared,
    attempt: u64,
    rest: Vec<SocketAddr>,
}

impl Handler for Connecting {
    fn ready(&mut self, r: &mut Reactor, id: ConnId, ready: Ready) {
        if !ready.writable && !ready.error {
            return;
        }
        let Some(sock) = self.sock.as_mut() else {
            return;
        };
        // Connected, or failed? SO_ERROR says, then peer_addr confirms.
        let err = match sock.take_error() {
            Ok(Some(e)) => Some(e),
            Err(e) => Some(e),
            Ok(None) => match sock.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return, // spurious wake-up
                Err(e) => Some(e),
            },
        };
        let mut sock = self.sock.take().unwrap();
        let _ = r.registry().deregister(&mut sock);
        r.remove(id);
        if let Some(e) = err {
            let rest = std::mem::take(&mut self.rest);
            // Mark no handler pending before trying the next address.
            if let Some((h, _)) = self.s.borrow_mut().pending.as_mut() {
                *h = None;
            }
            try_addrs(r, &self.s, self.attempt, rest, Some(e));
            return;
        }
        connected(r, &self.s, self.attempt, sock);
    }

    fn shutdown(&mut self, r: &mut Reactor, _: ConnId) {
        fail_attempt(r, &self.s, Some(self.attempt), Reason::Aborted);
    }

    fn abort(&mut self, r: &mut Reactor, _: ConnId) {
        fail_attempt(r, &self.s, Some(self.attempt), Reason::Aborted);
    }
}

/// Stands for an attempt whose host name is being looked up: it has no
/// socket yet, but a reactor stop must still end it.
struct Resolving {
    s: Shared,
    attempt: u64,
}

impl Handler for Resolving {
    fn ready(&mut self, _: &mut Reactor, _: ConnId, _: Ready) {}

    fn shutdown(&mut self, r: &mut Reactor, _: ConnId) {
        fail_attempt(r, &self.s, Some(self.attempt), Reason::Aborted);
    }

    fn abort(&mut self, r: &mut Reactor, _: ConnId) {
        fail_attempt(r, &self.s, Some(self.attempt), Reason::Aborted);
    }
}

fn connected(r: &mut Reactor, s: &Shared, attempt: u64, sock: mio::net::TcpStream) {
    let (timer, factory, opts) = {
        let mut st = s.borrow_mut();
        if st.attempt != attempt {
            return;
        }
        let Some((_, timer)) = st.pending.take() else {
            return;
        };
        (timer, st.factory.clone(), st.opts.clone())
    };
    let connector = make_connector(s);
    timer.cancel(r);
    let io = tcp_io(sock);
    let peer = io.peer.clone();
    let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        factory.borrow_mut().build_protocol(&peer)
    }));
    let proto = match built {
        Ok(Some(p)) => p,
        Ok(None) => {
            return report_failed(
                r,
                &factory,
                &connector,
                Reason::Limit("the factory refused the connection".into()),
            )
        }
        Err(_) => {
            return report_failed(
                r,
                &factory,
                &connector,
                Reason::Panic("build_protocol panicked".into()),
            )
        }
    };
    let (f2, c2) = (factory.clone(), connector.clone());
    let stream_opts = StreamOptions {
        high_water: opts.high_water,
        low_water: opts.low_water,
        on_lost: Some(Box::new(move |r, reason| {
            f2.borrow_mut().client_connection_lost(r, &c2, reason)
        })),
        ..StreamOptions::default()
    };
    if let Err(e) = open_stream(r, io, proto, stream_opts) {
        report_failed(r, &factory, &connector, Reason::from_io(e));
    }
}

/// Tell the factory the attempt failed. When the factory is busy, because
/// its own `started_connecting` called `stop_connecting` (as Twisted
/// allows), it is told on the next loop turn, after that callback returns.
fn report_failed(r: &mut Reactor, factory: &SharedFactory, connector: &Connector, reason: Reason) {
    let Ok(mut f) = factory.try_borrow_mut() else {
        let (factory, connector) = (factory.clone(), connector.clone());
        r.call_soon(move |r| report_failed(r, &factory, &connector, reason));
        return;
    };
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        f.client_connection_failed(r, connector, &reason)
    })) {
        log::error!(
            "client_connection_failed panicked: {}",
            twistor_reactor::panic_message(&*p)
        );
    }
}
