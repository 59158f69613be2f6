//! `TlsTransport`: the short-lived transport an application protocol sees
//! when TLS is below it. Plaintext written to it is buffered for the rest of
//! the callback and encrypted in one go when the callback returns (held
//! until then if the handshake is not done); its write-buffer size is that
//! plaintext plus what waits below, bounded by the layer's cap. Everything
//! that is not about bytes (addresses, timers, the reactor, the water
//! marks) is passed through to the transport below.

use std::cell::RefCell;
use std::io;
use std::time::Duration;

use twistor_reactor::{Address, ConnId, Reactor, Reason, TlsInfo, Transport, Upgrade};

use super::options::TlsOptions;
use super::state::Lifecycle;

/// Drained plaintext buffers kept for the next write of any TLS
/// connection on this thread (a reactor is one thread, and a callback
/// is never re-entered, so a buffer is lent to one connection at a time):
/// a steady echo reuses them and allocates nothing, while an idle
/// connection holds no plaintext capacity at all. Bounded: at most
/// [`SPARE_BUFFERS`] buffers of at most [`SPARE_CAPACITY`] bytes each
/// (1 MiB in all); a larger one is freed.
const SPARE_BUFFERS: usize = 16;
/// The largest buffer kept (one piece, see the layer's `PIECE`).
const SPARE_CAPACITY: usize = 64 * 1024;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty plaintext buffer: a kept one, or a new (unallocated) one.
pub(crate) fn spare_buffer() -> Vec<u8> {
    SPARE
        .try_with(|s| s.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Give a drained plaintext buffer back for the next write (or free it:
/// no capacity, too large, or enough kept).
pub(crate) fn give_back(mut buf: Vec<u8>) {
    if buf.capacity() == 0 || buf.capacity() > SPARE_CAPACITY {
        return;
    }
    buf.clear();
    let _ = SPARE.try_with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < SPARE_BUFFERS {
            s.push(buf);
        }
    });
}

/// The part of the TLS layer's state that the application's transport view
/// reads and writes. The view only records what the application asks for;
/// the layer applies it once the callback returns (an abort and a write
/// over the cap excepted: they end the connection at once).
pub(crate) struct ViewState {
    /// Plaintext written during the current callback (or held until the
    /// handshake completes), not yet encrypted. Drained after every
    /// callback once the handshake is done.
    pub plain_out: Vec<u8>,
    /// The layer's phase; see [`Lifecycle`].
    pub life: Lifecycle,
    /// The application's `connection_made` has run.
    pub made: bool,
    /// The application has not paused reading.
    pub app_reading: bool,
    /// The layer has the transport below reading.
    pub lower_reading: bool,
    /// The application called `lose_connection` (applied when the
    /// handshake is done; a reason it gave is in `life`).
    pub close_requested: bool,
    /// The application called `write_eof` (applied when the handshake is
    /// done).
    pub eof_requested: bool,
    /// Buffered input should be looked at again after this callback
    /// (reading was resumed, or the protocol swapped).
    pub kick: bool,
    /// A protocol swap requested by the application.
    pub upgrade: Option<Upgrade>,
    /// Facts about the session: `Some` exactly once the handshake is done.
    pub info: Option<TlsInfo>,
    /// The layer's knobs (the view applies the write cap).
    pub opts: TlsOptions,
}

impl ViewState {
    pub(crate) fn new() -> ViewState {
        ViewState {
            plain_out: Vec::new(),
            life: Lifecycle::new(),
            made: false,
            app_reading: true,
            lower_reading: true,
            close_requested: false,
            eof_requested: false,
            kick: false,
            upgrade: None,
            info: None,
            opts: TlsOptions::default(),
        }
    }

    /// What the application has written and the connection not yet sent.
    pub(crate) fn unsent(&self, lower: &dyn Transport) -> usize {
        self.plain_out.len() + lower.write_buffer_size()
    }
}

/// The transport an application protocol is given when TLS is below it:
/// plaintext in, ciphertext out to the transport below.
///
/// It exists only for the length of one callback; the application reaches it
/// as `&mut dyn Transport` like any other transport. What is TLS-specific is
/// [`Transport::tls_info`], and the meaning of closing: `lose_connection`
/// flushes, sends close_notify, then closes the connection below.
///
/// ```
/// use twistor_reactor::{Protocol, Transport};
///
/// struct ShowPeer;
/// impl Protocol for ShowPeer {
///     fn connection_made(&mut self, t: &mut dyn Transport) {
///         if let Some(info) = t.tls_info() {
///             let who = info.peer_cert.as_ref().and_then(|c| c.subject_cn.clone());
///             t.write(format!("{} {:?}\r\n", info.version, who).as_bytes());
///         }
///     }
///     fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
/// }
/// ```
pub struct TlsTransport<'a> {
    pub(crate) lower: &'a mut dyn Transport,
    pub(crate) st: &'a mut ViewState,
}

impl Transport for TlsTransport<'_> {
    fn write(&mut self, data: &[u8]) {
        let st = &mut *self.st;
        let id = self.lower.id();
        if st.close_requested || st.eof_requested || !st.life.phase().writable() {
            log::trace!("{id}: TLS write after close ignored");
            return;
        }
        let size = st.unsent(&*self.lower) + data.len();
        if size > st.opts.max_write_buffer {
            let cap = st.opts.max_write_buffer;
            log::warn!("{id}: {size} bytes written and not sent, over the cap of {cap}; closing");
            st.plain_out = Vec::new();
            let reason = Reason::Limit(format!("write buffer over {cap} bytes"));
            if st.life.fail(reason.clone(), id) {
                self.lower.lose_connection_with(reason);
            }
            return;
        }
        if st.plain_out.capacity() == 0 {
            st.plain_out = spare_buffer();
        }
        st.plain_out.extend_from_slice(data);
    }

    fn lose_connection(&mut self) {
        self.st.close_requested = true;
    }

    fn lose_connection_with(&mut self, reason: Reason) {
        if !self.st.close_requested {
            self.st.life.close_with(reason);
        }
        self.st.close_requested = true;
    }

    fn abort_connection(&mut self) {
        self.st.plain_out = Vec::new();
        self.st.life.abort(self.lower.id());
        self.lower.abort_connection();
    }

    fn write_eof(&mut self) {
        self.st.eof_requested = true;
    }

    fn pause_reading(&mut self) {
        self.st.app_reading = false;
        if self.st.lower_reading {
            self.st.lower_reading = false;
            self.lower.pause_reading();
        }
    }

    fn resume_reading(&mut self) {
        if !self.st.app_reading {
            self.st.app_reading = true;
            self.st.kick = true;
        }
    }

    fn is_reading(&self) -> bool {
        self.st.app_reading && !self.is_closing()
    }

    fn is_closing(&self) -> bool {
        self.st.close_requested || self.st.life.phase().closing() || self.lower.is_closing()
    }

    fn write_buffer_size(&self) -> usize {
        self.st.unsent(&*self.lower)
    }

    fn set_write_buffer_limits(&mut self, high: usize, low: usize) {
        self.lower.set_write_buffer_limits(high, low);
    }

    fn write_buffer_limits(&self) -> (usize, usize) {
        self.lower.write_buffer_limits()
    }

    /// The cap applies to plaintext not yet sent (held here plus what waits
    /// below). The transport below gets the same cap plus room for record
    /// framing, so the two checks agree on when a connection is over it.
    fn set_max_write_buffer(&mut self, max: usize) {
        self.st.opts.max_write_buffer = max;
        self.lower
            .set_max_write_buffer(max.saturating_add(max / 16).saturating_add(64 * 1024));
    }

    fn max_write_buffer(&self) -> Option<usize> {
        Some(self.st.opts.max_write_buffer)
    }

    fn peer(&self) -> Address {
        self.lower.peer()
    }

    fn host(&self) -> Address {
        self.lower.host()
    }

    fn id(&self) -> ConnId {
        self.lower.id()
    }

    fn reactor(&mut self) -> &mut Reactor {
        self.lower.reactor()
    }

    fn set_nodelay(&mut self, on: bool) -> io::Result<()> {
        self.lower.set_nodelay(on)
    }

    fn set_keepalive(&mut self, idle: Option<Duration>) -> io::Result<()> {
        self.lower.set_keepalive(idle)
    }

    fn tls_info(&self) -> Option<&TlsInfo> {
        self.st.info.as_ref()
    }

    fn upgrade(&mut self, upgrade: Upgrade) {
        self.st.upgrade = Some(upgrade);
    }
}
