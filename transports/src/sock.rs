//! A connected mio stream socket as a [`StreamIo`]: the part TCP and Unix
//! sockets share. What differs (TCP's Nagle, keepalive and abortive close)
//! is the [`Socket`] trait's to say. Also the per-connection limits
//! ([`Knobs`]) that listeners and connectors hand to every stream they open.

use std::io::{self, IoSlice, Read, Write};
use std::time::Duration;

use mio::{Interest, Registry, Token};
use socket2::SockRef;
use twistor_reactor::{
    Address, LostHook, StreamIo, StreamOptions, DEFAULT_CLOSE_TIMEOUT, DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER,
    DEFAULT_MAX_WRITE_BUFFER,
};

/// Run `f`, one call that asks the kernel something about a connected
/// socket (its addresses, an option). Every such call on the path of a new
/// connection goes through here, so that a test can count them: a
/// connection should cost no call whose answer is already known.
pub(crate) fn ask_kernel<T>(f: impl FnOnce() -> T) -> T {
    #[cfg(test)]
    KERNEL_ASKS.with(|n| n.set(n.get() + 1));
    f()
}

#[cfg(test)]
thread_local! {
    /// Calls made through [`ask_kernel`] on this thread.
    pub(crate) static KERNEL_ASKS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The limits of each stream a listener accepts or a connector opens, as
/// its options give them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Knobs {
    pub high_water: usize,
    pub low_water: usize,
    pub close_timeout: Duration,
    pub max_write_buffer: usize,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            high_water: DEFAULT_HIGH_WATER,
            low_water: DEFAULT_LOW_WATER,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            max_write_buffer: DEFAULT_MAX_WRITE_BUFFER,
        }
    }
}

impl Knobs {
    /// The options for [`open_stream`](twistor_reactor::open_stream).
    pub fn stream_options(self, on_lost: Option<LostHook>) -> StreamOptions {
        StreamOptions {
            high_water: self.high_water,
            low_water: self.low_water,
            close_timeout: self.close_timeout,
            max_write_buffer: self.max_write_buffer,
            on_lost,
            ..StreamOptions::default()
        }
    }
}

/// A stream socket type (mio's `TcpStream`, `UnixStream`).
pub(crate) trait Socket: Read + Write + mio::event::Source + 'static {
    fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()>;

    fn set_nodelay(&self, on: bool) -> io::Result<()> {
        let _ = on;
        Err(io::Error::new(io::ErrorKind::Unsupported, "not a TCP transport"))
    }

    fn set_keepalive(&self, idle: Option<Duration>) -> io::Result<()> {
        let _ = idle;
        Err(io::Error::new(io::ErrorKind::Unsupported, "not a TCP transport"))
    }

    fn prepare_abort(&self) {}
}

impl Socket for mio::net::TcpStream {
    fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        mio::net::TcpStream::shutdown(self, how)
    }

    fn set_nodelay(&self, on: bool) -> io::Result<()> {
        mio::net::TcpStream::set_nodelay(self, on)
    }

    fn set_keepalive(&self, idle: Option<Duration>) -> io::Result<()> {
        let sock = SockRef::from(self);
        match idle {
            Some(t) => sock.set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(t)),
            None => sock.set_keepalive(false),
        }
    }

    fn prepare_abort(&self) {
        // Linger 0: the close sends RST, as an abort should.
        let _ = SockRef::from(self).set_linger(Some(Duration::ZERO));
    }
}

impl Socket for mio::net::UnixStream {
    fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        mio::net::UnixStream::shutdown(self, how)
    }
}

/// A connected socket and the addresses of its two ends.
pub(crate) struct SockIo<S> {
    pub(crate) s: S,
    pub(crate) peer: Address,
    pub(crate) host: Address,
}

impl<S: Socket> StreamIo for SockIo<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.s.read(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // One buffer (the usual case) is a plain send: cheaper than writev.
        match bufs {
            [one] => self.s.write(one),
            _ => self.s.write_vectored(bufs),
        }
    }
    fn shutdown_write(&mut self) -> io::Result<()> {
        match self.s.shutdown(std::net::Shutdown::Write) {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            r => r,
        }
    }
    fn register(&mut self, reg: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        reg.register(&mut self.s, token, interest)
    }
    fn reregister(&mut self, reg: &Registry, token: Token, interest: Interest) -> io::Result<()> {
        reg.reregister(&mut self.s, token, interest)
    }
    fn deregister(&mut self, reg: &Registry) -> io::Result<()> {
        reg.deregister(&mut self.s)
    }
    fn peer(&self) -> Address {
        self.peer.clone()
    }
    fn host(&self) -> Address {
        self.host.clone()
    }
    fn set_nodelay(&mut self, on: bool) -> io::Result<()> {
        self.s.set_nodelay(on)
    }
    fn set_keepalive(&mut self, idle: Option<Duration>) -> io::Result<()> {
        self.s.set_keepalive(idle)
    }
    fn prepare_abort(&mut self) {
        self.s.prepare_abort()
    }
}
