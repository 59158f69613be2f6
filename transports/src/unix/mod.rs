//! Unix-domain stream sockets: `listen_unix` and `connect_unix` (Twisted's
//! `listenUNIX` / `connectUNIX`), with exactly the Protocol/Transport API of
//! TCP.
//!
//! Connections run on [`open_stream`](twistor_reactor::open_stream), the
//! listener is the shared accept loop of every stream listener (budgeted
//! accepts, connection limit, back-off when descriptors run out) and a
//! client attempt the shared connection lifecycle; this file only knows
//! how to make Unix sockets and name their ends, and `file` how to keep
//! the socket file.
//!
//! # The socket file
//! - **Stale files.** A server that crashed leaves its socket file behind,
//!   and binding the path again fails with "address in use". By default
//!   ([`UnixListenOptions::remove_stale`]) `listen_unix` then checks whether
//!   anyone is listening there: if a connection is refused, the file is
//!   stale, so it is removed (only if it is still that same file: a server
//!   starting at the same moment may have put its own socket there) and the
//!   bind retried. A live server's socket, or a file that is not a socket,
//!   is never removed.
//! - **Removal.** The file is removed when the port stops listening
//!   ([`UnixPort::stop_listening`], or the reactor stopping), unless it was
//!   replaced by another file meanwhile (the same device and inode is the
//!   same file: a `chmod` since does not matter).
//! - **Mode.** [`UnixListenOptions::mode`] sets the file's permissions
//!   before the socket starts listening, so no client connects under the
//!   umask's defaults, and without ever following the path: the file is
//!   made in a private directory and linked into place with its mode, so a
//!   symlink swapped in by someone who can write to the directory cannot
//!   redirect the change.
//! - **Abstract names** (Linux): a name in the abstract namespace has no
//!   file at all; write it `"@name"` or [`UnixAddr::Abstract`].

mod file;

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mio::net::{UnixListener, UnixStream};
use mio::Interest;
use socket2::{Domain, SockAddr, Socket, Type};
use twistor_reactor::{Address, ClientFactory, ConnId, Connector, Factory, Reactor};

use self::file::SocketFile;
use crate::connector::{
    self, Addresses, Dialer, LinkOptions, DEFAULT_ATTEMPT_DELAY, DEFAULT_CONNECT_TIMEOUT,
};
use crate::listener::{Accepted, Acceptor, Listener, DEFAULT_ACCEPT_BUDGET, DEFAULT_BACKLOG};
use crate::proxy::ProxyOptions;
use crate::sock::{ask_kernel, Knobs, SockIo};

// ----- addresses -------------------------------------------------------------

/// A Unix socket address: a path, or (Linux) a name in the abstract
/// namespace.
///
/// Strings and paths convert into it; a string starting with `@` names an
/// abstract socket (the notation of `ss` and `netstat`).
///
/// ```
/// use twistor_transports::unix::UnixAddr;
/// assert_eq!(UnixAddr::from("/tmp/echo.sock"), UnixAddr::Path("/tmp/echo.sock".into()));
/// assert_eq!(UnixAddr::from("@echo"), UnixAddr::Abstract(b"echo".to_vec()));
/// assert_eq!(UnixAddr::from("@echo").to_string(), "unix:@echo");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UnixAddr {
    /// A socket file.
    Path(PathBuf),
    /// A Linux abstract-namespace name (without the leading NUL byte).
    Abstract(Vec<u8>),
}

impl From<&str> for UnixAddr {
    fn from(s: &str) -> UnixAddr {
        match s.strip_prefix('@') {
            Some(name) => UnixAddr::Abstract(name.as_bytes().to_vec()),
            None => UnixAddr::Path(s.into()),
        }
    }
}

impl From<String> for UnixAddr {
    fn from(s: String) -> UnixAddr {
        UnixAddr::from(s.as_str())
    }
}

impl From<&String> for UnixAddr {
    fn from(s: &String) -> UnixAddr {
        UnixAddr::from(s.as_str())
    }
}

impl From<&Path> for UnixAddr {
    fn from(p: &Path) -> UnixAddr {
        UnixAddr::Path(p.to_path_buf())
    }
}

impl From<PathBuf> for UnixAddr {
    fn from(p: PathBuf) -> UnixAddr {
        UnixAddr::Path(p)
    }
}

impl From<&PathBuf> for UnixAddr {
    fn from(p: &PathBuf) -> UnixAddr {
        UnixAddr::Path(p.clone())
    }
}

impl UnixAddr {
    /// The same address as an [`Address`] (what `peer()` / `host()` give).
    pub fn to_address(&self) -> Address {
        match self {
            UnixAddr::Path(p) => Address::Unix(p.clone()),
            UnixAddr::Abstract(n) => Address::Abstract(n.clone()),
        }
    }

    fn sockaddr(&self) -> io::Result<SockAddr> {
        match self {
            UnixAddr::Path(p) => SockAddr::unix(p),
            UnixAddr::Abstract(name) => {
                if !cfg!(any(target_os = "linux", target_os = "android")) {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        "abstract Unix socket names exist only on Linux",
                    ));
                }
                let mut bytes = vec![0u8];
                bytes.extend_from_slice(name);
                SockAddr::unix(OsStr::from_bytes(&bytes))
            }
        }
    }
}

impl std::fmt::Display for UnixAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.to_address().fmt(f)
    }
}

/// Name one end of a Unix socket.
fn address_of(a: std::os::unix::net::SocketAddr) -> Address {
    if let Some(p) = a.as_pathname() {
        return Address::Unix(p.to_path_buf());
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        #[cfg(target_os = "android")]
        use std::os::android::net::SocketAddrExt;
        #[cfg(target_os = "linux")]
        use std::os::linux::net::SocketAddrExt;
        if let Some(n) = a.as_abstract_name() {
            return Address::Abstract(n.to_vec());
        }
    }
    Address::Unix(PathBuf::new())
}

// ----- the stream ------------------------------------------------------------

/// A connected Unix stream socket as a [`StreamIo`](twistor_reactor::StreamIo).
type UnixIo = SockIo<UnixStream>;

// ----- listening -------------------------------------------------------------

/// Options for [`listen_unix_with`].
///
/// ```
/// use twistor_transports::unix::UnixListenOptions;
/// let opts = UnixListenOptions { mode: Some(0o660), ..UnixListenOptions::default() };
/// assert!(opts.remove_stale);
/// ```
#[derive(Debug, Clone)]
pub struct UnixListenOptions {
    /// Remove a stale socket file (one nobody listens on) and bind again
    /// (default on). A live server's socket is never removed.
    pub remove_stale: bool,
    /// Permissions of the socket file, e.g. `0o600` (default: the umask's).
    pub mode: Option<u32>,
    /// Listen backlog (default [`DEFAULT_BACKLOG`], 1024).
    pub backlog: i32,
    /// Maximum live connections; new ones over it are closed at once with a
    /// log line (default: no limit).
    pub max_connections: Option<usize>,
    /// Connections accepted per readiness event before the other
    /// connections get a turn (default
    /// [`DEFAULT_ACCEPT_BUDGET`], 128).
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
    /// the real client (nginx or HAProxy in front, talking to this socket),
    /// read before the factory is called (default: off). See
    /// [`proxy`](crate::proxy).
    pub proxy_protocol: ProxyOptions,
}

impl Default for UnixListenOptions {
    fn default() -> Self {
        let knobs = Knobs::default();
        UnixListenOptions {
            remove_stale: true,
            mode: None,
            backlog: DEFAULT_BACKLOG,
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

impl UnixListenOptions {
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

/// A listening Unix socket (Twisted's `IListeningPort`).
///
/// ```
/// use twistor_reactor::{Protocol, Reactor, Transport};
/// use twistor_transports::unix::{listen_unix, UnixAddr};
/// struct Quiet;
/// impl Protocol for Quiet {
///     fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
/// }
/// let mut r = Reactor::new().unwrap();
/// let name = format!("@twistor-doc-port-{}", std::process::id());
/// let port = listen_unix(&mut r, name.as_str(), |_: &_| Quiet).unwrap();
/// assert_eq!(port.local_addr(), &UnixAddr::from(name.as_str()));
/// port.stop_listening(&mut r);
/// ```
#[derive(Debug, Clone)]
pub struct UnixPort {
    id: ConnId,
    addr: UnixAddr,
}

impl UnixPort {
    /// The address listened on.
    pub fn local_addr(&self) -> &UnixAddr {
        &self.addr
    }

    /// The listener's id in the reactor.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Stop accepting and remove the socket file; connections already
    /// accepted carry on.
    pub fn stop_listening(&self, r: &mut Reactor) {
        r.remove(self.id);
    }
}

/// The listening socket, and the file to remove when it goes.
struct UnixAcceptor {
    l: UnixListener,
    host: Address,
    file: Option<SocketFile>,
}

impl Acceptor for UnixAcceptor {
    type Stream = UnixIo;
    fn accept(&mut self) -> io::Result<(UnixIo, Address)> {
        // Accept named the peer and the listener knows its own name: no
        // other call is needed.
        let (s, peer) = self.l.accept()?;
        let peer = address_of(peer);
        let io = SockIo {
            s,
            peer: peer.clone(),
            host: self.host.clone(),
        };
        Ok((io, peer))
    }
    fn deregister(&mut self, r: &Reactor) {
        let _ = r.registry().deregister(&mut self.l);
    }
}

impl Drop for UnixAcceptor {
    fn drop(&mut self) {
        // Before `l` closes: the open socket is what makes the file's
        // identity certain (see `file`).
        if let Some(file) = &self.file {
            file.remove();
        }
    }
}

/// Listen for connections on a Unix socket (Twisted's
/// `reactor.listenUNIX(path, factory)`).
///
/// ```
/// use twistor_reactor::{Protocol, Reactor, Transport};
/// use twistor_transports::unix::listen_unix;
/// struct Echo;
/// impl Protocol for Echo {
///     fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) { t.write(d) }
/// }
/// let path = std::env::temp_dir().join(format!("twistor-doc-{}.sock", std::process::id()));
/// let mut r = Reactor::new().unwrap();
/// let port = listen_unix(&mut r, &path, |_: &_| Echo).unwrap();
/// assert!(path.exists());
/// port.stop_listening(&mut r);
/// assert!(!path.exists());
/// ```
pub fn listen_unix(
    r: &mut Reactor,
    addr: impl Into<UnixAddr>,
    factory: impl Factory,
) -> io::Result<UnixPort> {
    listen_unix_with(r, addr, factory, UnixListenOptions::default())
}

/// [`listen_unix`] with options.
///
/// ```
/// use std::os::unix::fs::PermissionsExt;
/// use twistor_reactor::{Protocol, Reactor, Transport};
/// use twistor_transports::unix::{listen_unix_with, UnixListenOptions};
/// struct Quiet;
/// impl Protocol for Quiet {
///     fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
/// }
/// let path = std::env::temp_dir().join(format!("twistor-doc-mode-{}.sock", std::process::id()));
/// let mut r = Reactor::new().unwrap();
/// let opts = UnixListenOptions { mode: Some(0o600), ..Default::default() };
/// let port = listen_unix_with(&mut r, &path, |_: &_| Quiet, opts).unwrap();
/// assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
/// port.stop_listening(&mut r);
/// ```
pub fn listen_unix_with(
    r: &mut Reactor,
    addr: impl Into<UnixAddr>,
    factory: impl Factory,
    opts: UnixListenOptions,
) -> io::Result<UnixPort> {
    let addr = addr.into();
    let (sock, file) = file::bind(&addr, &opts)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    // Built before registering, so that if anything below fails, dropping
    // it removes the socket file we just made.
    let mut acceptor = UnixAcceptor {
        l: UnixListener::from_std(sock.into()),
        host: addr.to_address(),
        file,
    };
    let settings = opts.accepted();
    let what = format!("Unix listener {addr}");
    let id = r.insert_with(move |r, id| {
        r.registry()
            .register(&mut acceptor.l, id.token(), Interest::READABLE)?;
        Ok(Box::new(Listener::new(
            acceptor,
            Box::new(factory),
            settings,
            what,
        )))
    })?;
    log::debug!("listening on {addr}");
    Ok(UnixPort { id, addr })
}

// ----- connecting ------------------------------------------------------------

/// Options for [`connect_unix_with`].
///
/// ```
/// use std::time::Duration;
/// use twistor_transports::unix::UnixConnectOptions;
/// let opts = UnixConnectOptions { close_timeout: Duration::from_secs(5), ..Default::default() };
/// assert_eq!(opts.max_write_buffer, twistor_reactor::DEFAULT_MAX_WRITE_BUFFER);
/// ```
#[derive(Debug, Clone)]
pub struct UnixConnectOptions {
    /// Time allowed for the attempt (default
    /// [`DEFAULT_CONNECT_TIMEOUT`],
    /// 30 s). A Unix-domain connect completes or fails at once, so this
    /// rarely matters.
    pub timeout: Duration,
    /// Write-buffer high-water mark of the connection (default
    /// [`DEFAULT_HIGH_WATER`](twistor_reactor::DEFAULT_HIGH_WATER), 64 KiB).
    pub high_water: usize,
    /// Write-buffer low-water mark (default
    /// [`DEFAULT_LOW_WATER`](twistor_reactor::DEFAULT_LOW_WATER), 16 KiB).
    pub low_water: usize,
    /// How long a graceful close may spend flushing before the connection
    /// is aborted (default
    /// [`DEFAULT_CLOSE_TIMEOUT`](twistor_reactor::DEFAULT_CLOSE_TIMEOUT), 30 s).
    pub close_timeout: Duration,
    /// Hard cap on the write buffer: past it the connection is aborted with
    /// a limit reason (default
    /// [`DEFAULT_MAX_WRITE_BUFFER`](twistor_reactor::DEFAULT_MAX_WRITE_BUFFER), 16 MiB).
    pub max_write_buffer: usize,
}

impl Default for UnixConnectOptions {
    fn default() -> Self {
        let knobs = Knobs::default();
        UnixConnectOptions {
            timeout: DEFAULT_CONNECT_TIMEOUT,
            high_water: knobs.high_water,
            low_water: knobs.low_water,
            close_timeout: knobs.close_timeout,
            max_write_buffer: knobs.max_write_buffer,
        }
    }
}

impl UnixConnectOptions {
    fn knobs(&self) -> Knobs {
        Knobs {
            high_water: self.high_water,
            low_water: self.low_water,
            close_timeout: self.close_timeout,
            max_write_buffer: self.max_write_buffer,
        }
    }
}

/// Connect to a Unix socket (Twisted's `reactor.connectUNIX(path, factory)`).
///
/// The attempt starts on the next loop turn and ends in exactly one of the
/// protocol's `connection_made` or the factory's `client_connection_failed`
/// (`ConnectionRefused` when nobody listens, `NotFound` when there is no
/// such file, `WouldBlock` when the listener's backlog is full).
///
/// ```
/// use std::time::Duration;
/// use twistor_reactor::{Protocol, Reactor, Transport};
/// use twistor_transports::unix::{connect_unix, listen_unix};
/// struct Echo;
/// impl Protocol for Echo {
///     fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) { t.write(d) }
/// }
/// struct Hello;
/// impl Protocol for Hello {
///     fn connection_made(&mut self, t: &mut dyn Transport) { t.write(b"hi") }
///     fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
///         assert_eq!(d, b"hi");
///         t.reactor().stop();
///     }
/// }
/// let mut r = Reactor::new().unwrap();
/// let port = listen_unix(&mut r, format!("@twistor-doc-{}", std::process::id()), |_: &_| Echo).unwrap();
/// connect_unix(&mut r, port.local_addr().clone(), |_: &_| Hello);
/// r.set_install_signal_handlers(false);
/// r.run().unwrap();
/// ```
pub fn connect_unix(r: &mut Reactor, addr: impl Into<UnixAddr>, factory: impl ClientFactory) -> Connector {
    connect_unix_with(r, addr, factory, UnixConnectOptions::default())
}

/// [`connect_unix`] with options.
///
/// ```
/// use std::time::Duration;
/// use twistor_reactor::{testing::Recorder, Reactor};
/// use twistor_transports::unix::{connect_unix_with, UnixConnectOptions};
/// let opts = UnixConnectOptions { max_write_buffer: 1 << 20, ..Default::default() };
/// let mut r = Reactor::new().unwrap();
/// connect_unix_with(&mut r, "/run/app.sock", |_: &_| Recorder::new().0, opts);
/// ```
pub fn connect_unix_with(
    r: &mut Reactor,
    addr: impl Into<UnixAddr>,
    factory: impl ClientFactory,
    opts: UnixConnectOptions,
) -> Connector {
    let addr = addr.into();
    let link = LinkOptions {
        timeout: opts.timeout,
        attempt_delay: DEFAULT_ATTEMPT_DELAY,
        knobs: opts.knobs(),
    };
    connector::connect(r, UnixDialer(addr.clone()), addr.to_string(), factory, link)
}

/// How Unix sockets make their one connection for the shared connector.
struct UnixDialer(UnixAddr);

impl Dialer for UnixDialer {
    type Addr = UnixAddr;
    type Sock = UnixStream;
    type Io = UnixIo;

    fn addresses(&self) -> Addresses<UnixAddr> {
        Addresses::Known(vec![self.0.clone()])
    }

    fn start(&self, addr: &UnixAddr) -> io::Result<UnixStream> {
        let sock = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        sock.set_nonblocking(true)?;
        match sock.connect(&addr.sockaddr()?) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            // A full backlog: the listener is overloaded, not absent.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("{addr}: the listener's backlog is full"),
                ))
            }
            Err(e) => return Err(e),
        }
        Ok(UnixStream::from_std(sock.into()))
    }

    fn finished(sock: &UnixStream) -> Option<io::Result<()>> {
        match sock.take_error() {
            Ok(Some(e)) | Err(e) => Some(Err(e)),
            Ok(None) => match ask_kernel(|| sock.peer_addr()) {
                Ok(_) => Some(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => None,
                Err(e) => Some(Err(e)),
            },
        }
    }

    fn wrap(&self, sock: UnixStream, addr: &UnixAddr) -> UnixIo {
        // A client socket is never bound here, so its own end is unnamed.
        SockIo {
            s: sock,
            peer: addr.to_address(),
            host: Address::Unix(PathBuf::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every stream limit given to a Unix listener or connector is what its
    /// streams are opened with.
    #[test]
    fn every_knob_reaches_the_stream_options() {
        let l = UnixListenOptions {
            max_connections: Some(6),
            accept_budget: 5,
            high_water: 1,
            low_water: 2,
            close_timeout: Duration::from_secs(3),
            max_write_buffer: 4,
            proxy_protocol: ProxyOptions::optional(),
            ..UnixListenOptions::default()
        };
        let a = l.accepted();
        assert_eq!((a.max_connections, a.accept_budget), (Some(6), 5));
        assert_eq!(a.proxy, ProxyOptions::optional());
        let o = a.knobs.stream_options(None);
        assert_eq!(
            (o.high_water, o.low_water, o.close_timeout, o.max_write_buffer),
            (1, 2, Duration::from_secs(3), 4)
        );
        let c = UnixConnectOptions {
            high_water: 7,
            low_water: 8,
            close_timeout: Duration::from_secs(9),
            max_write_buffer: 10,
            ..UnixConnectOptions::default()
        };
        let o = c.knobs().stream_options(None);
        assert_eq!(
            (o.high_water, o.low_water, o.close_timeout, o.max_write_buffer),
            (7, 8, Duration::from_secs(9), 10)
        );
    }
}
