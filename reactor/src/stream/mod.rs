//! A ready-made [`Handler`] for any byte stream: the Protocol/Transport
//! machinery that TCP, Unix sockets, pipes and the in-memory test pair share.
//!
//! A transport only has to say how to read, write, half-close and register
//! its source ([`StreamIo`]); [`open_stream`] then gives it the full
//! contract: exactly-once `connection_made` / `connection_lost`, reads until
//! `WouldBlock` under a fairness budget into the reactor's shared buffer,
//! writes coalesced per callback and flushed with one vectored write,
//! WRITABLE interest only while a remainder exists, water marks raising
//! `pause_writing` / `resume_writing`, a hard cap on buffered output, a
//! deadline on a graceful close, half-close, protocol upgrades
//! (`start_tls`) and panic isolation.
//!
//! Files: `phase.rs` is the lifecycle (one named state, one function that
//! changes it), `view.rs` the transport a protocol sees during a
//! callback, `conn.rs` the connection that runs the callbacks and carries
//! out what they asked for; the write buffer is `write_buf.rs`, beside the
//! reactor-wide pool it borrows from.

use std::io::{self, IoSlice};
use std::time::Duration;

use mio::{Interest, Registry, Token};

use crate::{Address, ConnId, Protocol, Reactor, Ready, Reason};

mod conn;
mod phase;
mod view;

pub(crate) use conn::Limits;
use conn::{State, StreamConn};
use phase::Phase;

/// Default high-water mark of a write buffer (asyncio's default).
pub const DEFAULT_HIGH_WATER: usize = 64 * 1024;
/// Default low-water mark of a write buffer.
pub const DEFAULT_LOW_WATER: usize = 16 * 1024;
/// Default bytes read from one connection per readiness event before the
/// others get a turn (the fairness budget).
pub const DEFAULT_READ_BUDGET: usize = 256 * 1024;
/// Default time a graceful close (`lose_connection`, `write_eof` once the
/// peer's EOF came, `stop()`) may spend flushing before the connection is
/// aborted (reset) with [`Reason::TimedOut`] and a log line. The deadline
/// is armed only while bytes wait to be flushed.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default hard cap on a write buffer. The water marks only advise; a
/// write that would take the buffered bytes past this aborts the
/// connection (reset) with [`Reason::Limit`] and a log line, even if its
/// protocol ignores `pause_writing`. A protocol changes its own with
/// [`Transport::set_max_write_buffer`](crate::Transport::set_max_write_buffer).
pub const DEFAULT_MAX_WRITE_BUFFER: usize = 16 * 1024 * 1024;

/// The byte-stream operations a transport provides to [`open_stream`].
pub trait StreamIo: 'static {
    /// Read into `buf` (non-blocking; `WouldBlock` when drained, `Ok(0)` at EOF).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Write from `bufs` (non-blocking).
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Half-close the sending direction.
    fn shutdown_write(&mut self) -> io::Result<()>;
    /// Register the source with `interest` under `token`.
    fn register(&mut self, reg: &Registry, token: Token, interest: Interest) -> io::Result<()>;
    /// Change the registered interest.
    fn reregister(&mut self, reg: &Registry, token: Token, interest: Interest) -> io::Result<()>;
    /// Deregister the source.
    fn deregister(&mut self, reg: &Registry) -> io::Result<()>;
    /// The remote end.
    fn peer(&self) -> Address;
    /// The local end.
    fn host(&self) -> Address;
    /// Set TCP_NODELAY, where that means something.
    fn set_nodelay(&mut self, on: bool) -> io::Result<()> {
        let _ = on;
        Err(io::Error::new(io::ErrorKind::Unsupported, "not a TCP transport"))
    }
    /// Set TCP keepalive, where that means something.
    fn set_keepalive(&mut self, idle: Option<Duration>) -> io::Result<()> {
        let _ = idle;
        Err(io::Error::new(io::ErrorKind::Unsupported, "not a TCP transport"))
    }
    /// Prepare for an abortive close (TCP: reset instead of FIN).
    fn prepare_abort(&mut self) {}
}

/// Called once when a stream connection ends, after the protocol's
/// `connection_lost` (listeners count connections with it, client
/// connectors report `client_connection_lost` with it).
pub type LostHook = Box<dyn FnOnce(&mut Reactor, &Reason)>;

/// Options for [`open_stream`] and [`open_stream_now`]; every field has a
/// default (`..StreamOptions::default()`).
///
/// ```
/// use std::time::Duration;
/// use twistor_reactor::StreamOptions;
/// let opts = StreamOptions {
///     close_timeout: Duration::from_secs(5),
///     max_write_buffer: 1 << 20,
///     ..StreamOptions::default()
/// };
/// assert_eq!(opts.high_water, twistor_reactor::DEFAULT_HIGH_WATER);
/// ```
pub struct StreamOptions {
    /// Write-buffer high-water mark.
    pub high_water: usize,
    /// Write-buffer low-water mark.
    pub low_water: usize,
    /// Bytes read per readiness event before yielding to others.
    pub read_budget: usize,
    /// How long a graceful close may spend flushing before it becomes an
    /// abort (see [`DEFAULT_CLOSE_TIMEOUT`]).
    pub close_timeout: Duration,
    /// Hard cap on buffered output (see [`DEFAULT_MAX_WRITE_BUFFER`]).
    pub max_write_buffer: usize,
    /// Runs once when the connection ends.
    pub on_lost: Option<LostHook>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            high_water: DEFAULT_HIGH_WATER,
            low_water: DEFAULT_LOW_WATER,
            read_budget: DEFAULT_READ_BUDGET,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            max_write_buffer: DEFAULT_MAX_WRITE_BUFFER,
            on_lost: None,
        }
    }
}

/// Register `io` and run `protocol` over it; `connection_made` is called on
/// the next loop turn (what a connector or a pipe wants). Returns the
/// connection's id. See [`open_stream_now`] for a listener.
pub fn open_stream<S: StreamIo>(
    r: &mut Reactor,
    io: S,
    protocol: Box<dyn Protocol>,
    opts: StreamOptions,
) -> io::Result<ConnId> {
    let id = register(r, io, protocol, opts)?;
    r.requeue(id, Ready::NONE);
    Ok(id)
}

/// Like [`open_stream`], but `connection_made` runs at once, before this
/// returns (or, if the connection's id is somehow busy, right after the
/// running callback): what a listener wants, so that a protocol that
/// stops its listener in `connection_made` stops it before the next
/// connection is accepted, as in Twisted. The connection is dispatched
/// once, not once now and again on the next turn.
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
/// use twistor_reactor::{open_stream_now, Protocol, Reactor, StreamOptions, Transport};
/// # use std::io::{self, IoSlice};
/// # use twistor_reactor::{Address, StreamIo};
/// # struct Nothing;
/// # impl StreamIo for Nothing {
/// #     fn read(&mut self, _: &mut [u8]) -> io::Result<usize> { Err(io::ErrorKind::WouldBlock.into()) }
/// #     fn write_vectored(&mut self, b: &[IoSlice<'_>]) -> io::Result<usize> { Ok(b.iter().map(|s| s.len()).sum()) }
/// #     fn shutdown_write(&mut self) -> io::Result<()> { Ok(()) }
/// #     fn register(&mut self, _: &mio::Registry, _: mio::Token, _: mio::Interest) -> io::Result<()> { Ok(()) }
/// #     fn reregister(&mut self, _: &mio::Registry, _: mio::Token, _: mio::Interest) -> io::Result<()> { Ok(()) }
/// #     fn deregister(&mut self, _: &mio::Registry) -> io::Result<()> { Ok(()) }
/// #     fn peer(&self) -> Address { Address::Unknown }
/// #     fn host(&self) -> Address { Address::Unknown }
/// # }
/// struct Made(Rc<Cell<bool>>);
/// impl Protocol for Made {
///     fn connection_made(&mut self, _: &mut dyn Transport) { self.0.set(true) }
///     fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
/// }
///
/// let mut r = Reactor::new().unwrap();
/// let made = Rc::new(Cell::new(false));
/// open_stream_now(&mut r, Nothing, Box::new(Made(made.clone())), StreamOptions::default()).unwrap();
/// assert!(made.get());
/// assert!(!r.has_queued_work());
/// ```
pub fn open_stream_now<S: StreamIo>(
    r: &mut Reactor,
    io: S,
    protocol: Box<dyn Protocol>,
    opts: StreamOptions,
) -> io::Result<ConnId> {
    let id = register(r, io, protocol, opts)?;
    r.dispatch_now(id, Ready::NONE);
    Ok(id)
}

fn register<S: StreamIo>(
    r: &mut Reactor,
    mut io: S,
    protocol: Box<dyn Protocol>,
    opts: StreamOptions,
) -> io::Result<ConnId> {
    r.insert_with(move |r, id| {
        io.register(r.registry(), id.token(), Interest::READABLE)?;
        let limits = r.stream_limits(Limits {
            high: opts.high_water,
            low: opts.low_water.min(opts.high_water),
            budget: opts.read_budget.max(1),
            close_timeout: opts.close_timeout,
            max_write: opts.max_write_buffer,
        });
        Ok(Box::new(StreamConn {
            proto: protocol,
            st: State {
                io,
                phase: Phase::New,
                out: Default::default(),
                limits,
                on_lost: opts.on_lost,
                upgrade: None,
                reading: true,
                writing_paused: false,
                want_writable: false,
                unsettled: false,
            },
        }))
    })
}
