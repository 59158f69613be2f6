//! `TlsProtocol`: the lower half of the TLS helper pair.
//!
//! It owns the rustls connection and the application protocol and is itself
//! the [`Protocol`] of the transport below (TCP, a Unix socket, the in-memory
//! test pair). Ciphertext arriving from below is decrypted and handed to the
//! application through a [`TlsTransport`] view; plaintext the application
//! writes during a callback is buffered and encrypted once the callback
//! returns, so many small writes become few records.
//!
//! Timeouts use reactor timers that flag the layer and then deliver an empty
//! call to the connection (`call_on`): the layer looks at its flags at the
//! start of every entry point, so no timer ever needs the protocol object
//! itself, and a manual clock drives them in tests.

use std::cell::{Cell, RefCell};
use std::io::{self, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};
use twistor_reactor::{DelayedCall, Protocol, ProtocolCall, Reason, Transport};

use super::info::session_info;
use super::options::TlsOptions;
use super::view::{TlsTransport, ViewState};

/// What a client connector wants to know about a connection's layer: did
/// the application ever get `connection_made`, and how did it end.
#[derive(Default)]
pub(crate) struct Outcome {
    pub made: Cell<bool>,
    pub reason: RefCell<Option<Reason>>,
}

/// Told why a connection ended before its handshake completed.
type FailureHook = Box<dyn FnOnce(&Reason)>;

const HANDSHAKE_EXPIRED: u8 = 1;
const SHUTDOWN_EXPIRED: u8 = 2;

/// Stands in for the application protocol while an upgrade swaps it.
struct Detached;
impl Protocol for Detached {
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
}

/// Writes what rustls produces straight into the transport below.
struct Lower<'a>(&'a mut dyn Transport);

impl Write for Lower<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf);
        Ok(buf.len())
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut n = 0;
        for b in bufs {
            self.0.write(b);
            n += b.len();
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A client connection to `server_name`.
pub(crate) fn client_connection(config: Arc<ClientConfig>, server_name: &str) -> io::Result<Connection> {
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{server_name:?}: {e}")))?;
    Ok(ClientConnection::new(config, name)
        .map_err(io::Error::other)?
        .into())
}

/// A server connection.
pub(crate) fn server_connection(config: Arc<ServerConfig>) -> io::Result<Connection> {
    Ok(ServerConnection::new(config).map_err(io::Error::other)?.into())
}

/// Describe a rustls error for a [`Reason::Tls`].
fn describe(e: &rustls::Error, handshaking: bool) -> String {
    let what = match e {
        rustls::Error::AlertReceived(a) => format!("received fatal alert: {a:?}"),
        // A verifier's own message as written (rustls shows it as Debug).
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o)) => {
            format!("certificate verification failed: {o}")
        }
        rustls::Error::InvalidCertificate(c) => format!("certificate verification failed: {c}"),
        rustls::Error::NoCertificatesPresented => "the peer presented no certificate".to_string(),
        other => format!("{other} (fatal alert sent)"),
    };
    if handshaking {
        format!("handshake failed: {what}")
    } else {
        what
    }
}

/// The TLS layer: a [`Protocol`] for the transport below that runs an
/// application protocol above it.
///
/// Most code never builds one: [`listen_tls`](super::listen_tls),
/// [`connect_tls`](super::connect_tls) and [`start_tls`](super::start_tls)
/// do. Build one by hand to put TLS over any other transport, such as the
/// in-memory test pair:
///
/// ```
/// use std::sync::Arc;
/// use twistor_reactor::{testing::{MemoryPair, Recorder}, Protocol, Transport};
/// use twistor_transports::tls::{ClientConfigBuilder, ServerConfigBuilder, TlsProtocol};
///
/// struct Echo;
/// impl Protocol for Echo {
///     fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) { t.write(d) }
/// }
/// let (server_config, fingerprint) = ServerConfigBuilder::self_signed(&["localhost"]).unwrap();
/// let client_config = ClientConfigBuilder::new().pinned(&fingerprint).build().unwrap();
/// let (client, log) = Recorder::new();
/// let mut pair = MemoryPair::new(
///     Box::new(TlsProtocol::client(Box::new(client), client_config, "localhost").unwrap()),
///     Box::new(TlsProtocol::server(Box::new(Echo), server_config).unwrap()),
/// ).unwrap();
/// pair.pump();
/// assert_eq!(log.borrow().made, 1);
/// pair.with_client(|_, t| t.write(b"hello"));
/// assert_eq!(log.borrow().data, b"hello");
/// ```
pub struct TlsProtocol {
    conn: Connection,
    app: Box<dyn Protocol>,
    st: ViewState,
    opts: TlsOptions,
    /// The name a client asked for.
    sni: Option<String>,
    /// Ciphertext received but not yet taken by rustls (reading is paused
    /// below while it exists).
    inbuf: Vec<u8>,
    flags: Rc<Cell<u8>>,
    handshake_timer: Option<DelayedCall>,
    shutdown_timer: Option<DelayedCall>,
    started: bool,
    /// The handshake is complete.
    tls_up: bool,
    /// We asked the transport below to close.
    lower_closing: bool,
    /// The peer sent close_notify.
    peer_closed: bool,
    eof_delivered: bool,
    /// The application asked to stay open after the peer's close_notify.
    keep_open: bool,
    fail_reason: Option<Reason>,
    /// Calls routed to the application before its `connection_made`.
    early_calls: Vec<ProtocolCall>,
    on_handshake: Option<ProtocolCall>,
    outcome: Option<Rc<Outcome>>,
    on_failure: Option<FailureHook>,
    lost: bool,
}

impl TlsProtocol {
    pub(crate) fn with_conn(conn: Connection, app: Box<dyn Protocol>, sni: Option<String>) -> TlsProtocol {
        let mut conn = conn;
        // The transport below buffers and applies the water marks.
        conn.set_buffer_limit(None);
        TlsProtocol {
            conn,
            app,
            st: ViewState::new(),
            opts: TlsOptions::default(),
            sni,
            inbuf: Vec::new(),
            flags: Rc::new(Cell::new(0)),
            handshake_timer: None,
            shutdown_timer: None,
            started: false,
            tls_up: false,
            lower_closing: false,
            peer_closed: false,
            eof_delivered: false,
            keep_open: false,
            fail_reason: None,
            early_calls: Vec::new(),
            on_handshake: None,
            outcome: None,
            on_failure: None,
            lost: false,
        }
    }

    /// The server side of a TLS layer running `app`.
    pub fn server(app: Box<dyn Protocol>, config: Arc<ServerConfig>) -> io::Result<TlsProtocol> {
        Ok(Self::with_conn(server_connection(config)?, app, None))
    }

    /// The client side of a TLS layer running `app`, connecting to
    /// `server_name` (a DNS name, sent as SNI and verified against the
    /// certificate, or an IP address).
    pub fn client(
        app: Box<dyn Protocol>,
        config: Arc<ClientConfig>,
        server_name: &str,
    ) -> io::Result<TlsProtocol> {
        let conn = client_connection(config, server_name)?;
        Ok(Self::with_conn(conn, app, Some(server_name.to_string())))
    }

    /// Set the timeouts.
    pub fn with_options(mut self, opts: TlsOptions) -> TlsProtocol {
        self.opts = opts;
        self
    }

    /// Run `f` against the application once the handshake is complete
    /// (used by `start_tls`, where the application was made before).
    pub(crate) fn on_handshake(mut self, f: ProtocolCall) -> TlsProtocol {
        self.on_handshake = Some(f);
        self
    }

    /// Run `f` with the reason if the connection ends before the handshake
    /// completes (timeout, garbage, alert, closed): the application never
    /// hears of such a connection, so this is how a server counts or logs
    /// failed handshakes.
    ///
    /// ```
    /// # use twistor_reactor::testing::{MemoryPair, Recorder};
    /// # use twistor_transports::tls::{ServerConfigBuilder, TlsProtocol};
    /// use std::{cell::RefCell, rc::Rc};
    /// let (config, _) = ServerConfigBuilder::self_signed(&["localhost"]).unwrap();
    /// let failed = Rc::new(RefCell::new(None));
    /// let f = failed.clone();
    /// let server = TlsProtocol::server(Box::new(Recorder::new().0), config)
    ///     .unwrap()
    ///     .with_failure_hook(move |reason| *f.borrow_mut() = Some(reason.to_string()));
    /// let mut pair = MemoryPair::new(Box::new(Recorder::new().0), Box::new(server)).unwrap();
    /// pair.inject_to_server(b"GET / HTTP/1.0\r\n\r\n");
    /// pair.pump();
    /// assert!(failed.borrow().as_deref().unwrap().starts_with("TLS error"));
    /// ```
    pub fn with_failure_hook(mut self, f: impl FnOnce(&Reason) + 'static) -> TlsProtocol {
        self.on_failure = Some(Box::new(f));
        self
    }

    pub(crate) fn with_outcome(mut self, o: Rc<Outcome>) -> TlsProtocol {
        self.outcome = Some(o);
        self
    }

    /// The application was already told `connection_made` (start_tls).
    pub(crate) fn app_already_made(mut self) -> TlsProtocol {
        self.st.made = true;
        self
    }

    /// The application protocol, for inspection.
    ///
    /// ```
    /// # use twistor_reactor::testing::Recorder;
    /// # use twistor_transports::tls::{ServerConfigBuilder, TlsProtocol};
    /// let (config, _) = ServerConfigBuilder::self_signed(&["localhost"]).unwrap();
    /// let layer = TlsProtocol::server(Box::new(Recorder::new().0), config).unwrap();
    /// assert!(layer.app().downcast_ref::<Recorder>().is_some());
    /// ```
    pub fn app(&self) -> &dyn Protocol {
        &*self.app
    }

    /// Whether the handshake is complete.
    pub fn is_established(&self) -> bool {
        self.tls_up
    }

    // ----- starting and timers ----------------------------------------------

    /// Begin: arm the handshake timer, and (client side) send the
    /// ClientHello. Called from `connection_made`, or right away when the
    /// layer is inserted into a live connection.
    pub(crate) fn start(&mut self, lower: &mut dyn Transport) {
        if self.started {
            return;
        }
        self.started = true;
        if let Some(d) = self.opts.handshake_timeout {
            self.handshake_timer = Some(self.arm(lower, d, HANDSHAKE_EXPIRED));
        }
        self.after(lower);
    }

    fn arm(&mut self, lower: &mut dyn Transport, d: Duration, bit: u8) -> DelayedCall {
        let flags = self.flags.clone();
        let id = lower.id();
        lower.reactor().call_later(d, move |r| {
            flags.set(flags.get() | bit);
            let _ = r.call_on(id, |_, _| {});
        })
    }

    fn check_flags(&mut self, lower: &mut dyn Transport) {
        let f = self.flags.replace(0);
        if f == 0 || self.lost {
            return;
        }
        if f & HANDSHAKE_EXPIRED != 0 && !self.tls_up {
            let d = self.opts.handshake_timeout.unwrap_or_default();
            log::info!("{}: TLS handshake timed out after {d:?}; closing", lower.id());
            self.handshake_timer = None;
            self.fail(lower, Reason::TimedOut);
        }
        if f & SHUTDOWN_EXPIRED != 0 {
            let d = self.opts.shutdown_timeout.unwrap_or_default();
            log::info!("{}: TLS close timed out after {d:?}; aborting", lower.id());
            self.shutdown_timer = None;
            self.fail_reason.get_or_insert(Reason::TimedOut);
            lower.abort_connection();
        }
    }

    fn cancel_timers(&mut self, lower: &mut dyn Transport) {
        if let Some(h) = self.handshake_timer.take() {
            h.cancel(lower.reactor());
        }
        if let Some(h) = self.shutdown_timer.take() {
            h.cancel(lower.reactor());
        }
    }

    // ----- failing and closing ------------------------------------------------

    /// End the connection with `reason`: send any pending alert, then close
    /// the transport below.
    fn fail(&mut self, lower: &mut dyn Transport, reason: Reason) {
        if self.fail_reason.is_none() {
            log::debug!("{}: TLS layer failed: {reason}", lower.id());
            self.fail_reason = Some(reason);
        }
        self.st.failed = true;
        self.st.plain_out.clear();
        self.inbuf = Vec::new();
        self.write_tls(lower);
        let reason = self.fail_reason.clone();
        self.close_lower(lower, reason);
    }

    /// Close the transport below once flushed; `reason` is what its hooks
    /// (listener, client factory) are told instead of a clean close.
    fn close_lower(&mut self, lower: &mut dyn Transport, reason: Option<Reason>) {
        if self.lower_closing {
            return;
        }
        self.lower_closing = true;
        match reason {
            Some(r) => lower.lose_connection_with(r),
            None => lower.lose_connection(),
        }
        if let (Some(d), None) = (self.opts.shutdown_timeout, &self.shutdown_timer) {
            self.shutdown_timer = Some(self.arm(lower, d, SHUTDOWN_EXPIRED));
        }
    }

    fn write_tls(&mut self, lower: &mut dyn Transport) {
        // Each round moves up to 64 records into `lower`, which takes
        // everything: the loop ends when rustls holds nothing.
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut Lower(lower)) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    // ----- input ------------------------------------------------------------------

    fn has_plaintext(&mut self) -> bool {
        matches!(self.conn.reader().into_first_chunk(), Ok(c) if !c.is_empty())
    }

    /// Feed `data` (after anything stashed) to rustls; keep what it cannot
    /// take yet.
    fn feed(&mut self, lower: &mut dyn Transport, data: &[u8]) {
        if self.inbuf.is_empty() {
            let rest = self.consume(lower, data);
            if rest > 0 && !self.st.failed {
                self.inbuf.extend_from_slice(&data[data.len() - rest..]);
            }
        } else {
            self.inbuf.extend_from_slice(data);
            let mut buf = std::mem::take(&mut self.inbuf);
            let rest = self.consume(lower, &buf);
            if rest > 0 && !self.st.failed {
                buf.drain(..buf.len() - rest);
                self.inbuf = buf;
            }
        }
    }

    /// Decrypt and deliver as much of `data` as the application takes.
    /// Returns how many bytes were left over (reading is paused).
    fn consume(&mut self, lower: &mut dyn Transport, data: &[u8]) -> usize {
        let mut rest = data;
        let mut stuck = 0;
        loop {
            if !self.deliver(lower) {
                return rest.len();
            }
            // After the application's lose_connection, input is dropped
            // (as a closing TCP transport stops reading), once the
            // handshake it waits for is done.
            let closed_by_app = self.st.close_requested && self.tls_up;
            if self.st.failed || self.lost || closed_by_app || rest.is_empty() || self.peer_closed {
                return 0;
            }
            match self.conn.read_tls(&mut rest) {
                Ok(0) => stuck += 1,
                Ok(_) => stuck = 0,
                Err(_) if self.has_plaintext() => {
                    // rustls's plaintext buffer is full and the application
                    // is not taking it: keep the rest for later.
                    stuck += 1;
                    if stuck > 2 {
                        return rest.len();
                    }
                    continue;
                }
                Err(e) => {
                    self.fail(lower, Reason::Tls(format!("malformed TLS input: {e}")));
                    return 0;
                }
            }
            if stuck > 2 {
                self.fail(lower, Reason::Tls("malformed TLS record".into()));
                return 0;
            }
            match self.conn.process_new_packets() {
                Ok(state) => {
                    if state.peer_has_closed() {
                        self.peer_closed = true;
                    }
                }
                Err(e) => {
                    let reason = Reason::Tls(describe(&e, !self.tls_up));
                    log::info!("{}: {reason}", lower.id());
                    self.fail(lower, reason);
                    return 0;
                }
            }
            if !self.tls_up && !self.conn.is_handshaking() {
                self.handshake_done(lower);
            }
        }
    }

    /// Hand decrypted bytes (then the peer's close_notify) to the
    /// application while it reads. False if it paused with data left.
    fn deliver(&mut self, lower: &mut dyn Transport) -> bool {
        if !self.tls_up || !self.st.made {
            return true;
        }
        // An upgrade asked for during a callback takes effect when it
        // returns: what follows belongs to the new protocol, not this one.
        while self.st.app_reading
            && self.st.upgrade.is_none()
            && !self.st.failed
            && !self.lost
            && !self.st.close_requested
        {
            let chunk = match self.conn.reader().into_first_chunk() {
                Ok(c) if !c.is_empty() => c,
                _ => break,
            };
            let n = chunk.len();
            let mut view = TlsTransport {
                lower: &mut *lower,
                st: &mut self.st,
            };
            self.app.data_received(&mut view, chunk);
            io::BufRead::consume(&mut self.conn.reader(), n);
        }
        if self.st.failed || self.lost || self.st.close_requested {
            return true;
        }
        if self.has_plaintext() {
            return false;
        }
        if self.peer_closed && !self.eof_delivered && self.st.app_reading && self.st.upgrade.is_none() {
            self.eof_delivered = true;
            let mut view = TlsTransport {
                lower: &mut *lower,
                st: &mut self.st,
            };
            self.keep_open = self.app.eof_received(&mut view);
            if !self.keep_open {
                self.st.close_requested = true;
            }
        }
        true
    }

    /// Look at stashed input again (reading was resumed).
    fn pump_input(&mut self, lower: &mut dyn Transport) {
        if self.st.failed || self.lost || !self.tls_up {
            return;
        }
        if !self.inbuf.is_empty() {
            self.feed(lower, &[]);
        } else {
            self.consume(lower, &[]);
        }
    }

    fn handshake_done(&mut self, lower: &mut dyn Transport) {
        self.tls_up = true;
        if let Some(h) = self.handshake_timer.take() {
            h.cancel(lower.reactor());
        }
        let info = session_info(&self.conn, self.sni.as_deref());
        log::debug!(
            "{}: TLS established: {} {} alpn={:?} sni={:?}",
            lower.id(),
            info.version,
            info.cipher_suite,
            info.alpn.as_deref().map(String::from_utf8_lossy),
            info.sni
        );
        self.st.info = Some(info);
        if let Some(o) = &self.outcome {
            o.made.set(true);
        }
        let mut view = TlsTransport {
            lower: &mut *lower,
            st: &mut self.st,
        };
        if !view.st.made {
            view.st.made = true;
            self.app.connection_made(&mut view);
        }
        if let Some(f) = self.on_handshake.take() {
            f(&mut *self.app, &mut view);
        }
        for call in std::mem::take(&mut self.early_calls) {
            // The application may itself wrap a protocol: let it route too.
            if let Some(call) = self.app.route_call(&mut view, call) {
                call(&mut *self.app, &mut view);
            }
        }
    }

    // ----- after every callback ------------------------------------------------------

    /// Apply what the application asked for during a callback: a protocol
    /// swap, the buffered plaintext (encrypted in one go), close_notify, and
    /// the reading state below.
    fn after(&mut self, lower: &mut dyn Transport) {
        for _ in 0..8 {
            let Some(up) = self.st.upgrade.take() else { break };
            let old = std::mem::replace(&mut self.app, Box::new(Detached));
            let mut view = TlsTransport {
                lower: &mut *lower,
                st: &mut self.st,
            };
            self.app = up(old, &mut view);
            // Input held back while the swap was pending is the new
            // protocol's: look at it again.
            self.st.kick = true;
        }
        if self.lost {
            return;
        }
        if self.tls_up && !self.st.failed {
            if !self.st.plain_out.is_empty() && !self.st.writes_closed {
                // Unlimited buffer: write_all cannot come up short.
                let _ = self.conn.writer().write_all(&self.st.plain_out);
                self.st.plain_out.clear();
                if self.st.plain_out.capacity() > 256 * 1024 {
                    self.st.plain_out = Vec::new();
                }
            }
            if (self.st.close_requested || self.st.eof_requested) && !self.st.writes_closed {
                self.st.writes_closed = true;
                self.conn.send_close_notify();
            }
        }
        self.write_tls(lower);
        // A close asked for during the handshake (after start_tls) waits
        // for it, within the handshake timeout, so that what was written
        // goes out encrypted, then close_notify; unless the reactor stops.
        let close_now = (self.st.close_requested && (self.tls_up || lower.reactor().is_stopping()))
            || (self.st.writes_closed && self.peer_closed && !self.keep_open)
            || (self.eof_delivered && !self.keep_open);
        if close_now && !self.lower_closing {
            let reason = self.st.close_reason.clone();
            self.close_lower(lower, reason);
        } else if self.st.close_requested && !self.lower_closing && self.shutdown_timer.is_none() {
            // Waiting for the handshake is part of closing: bounded by the
            // shutdown timeout even without a handshake timeout.
            if let Some(d) = self.opts.shutdown_timeout {
                self.shutdown_timer = Some(self.arm(lower, d, SHUTDOWN_EXPIRED));
            }
        }
        let want = (!self.tls_up || !self.st.made || self.st.app_reading)
            && self.inbuf.is_empty()
            && !self.st.failed;
        if want != self.st.lower_reading {
            self.st.lower_reading = want;
            if want {
                lower.resume_reading();
            } else {
                lower.pause_reading();
            }
        }
        if std::mem::take(&mut self.st.kick)
            && self.tls_up
            && (!self.inbuf.is_empty() || self.has_plaintext() || (self.peer_closed && !self.eof_delivered))
        {
            let id = lower.id();
            let _ = lower.reactor().call_on(id, |_, _| {});
        }
    }
}

impl Protocol for TlsProtocol {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.start(t);
    }

    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        self.check_flags(t);
        if self.st.failed || self.lost || self.peer_closed {
            return;
        }
        self.feed(t, data);
        self.after(t);
    }

    fn eof_received(&mut self, t: &mut dyn Transport) -> bool {
        self.check_flags(t);
        if self.st.failed || self.lost {
            return false;
        }
        if self.peer_closed {
            self.pump_input(t);
            self.after(t);
            return self.keep_open && !self.st.close_requested;
        }
        if self.lower_closing && self.st.writes_closed {
            // We closed first; the peer answered with a bare FIN.
            return false;
        }
        let reason = if self.tls_up {
            "truncated: the peer closed the connection without close_notify"
        } else {
            "the peer closed the connection during the handshake"
        };
        log::debug!("{}: {reason}", t.id());
        self.fail_reason.get_or_insert(Reason::Tls(reason.into()));
        self.st.failed = true;
        // What is still queued below goes out, within the shutdown timeout:
        // a peer that half-closes and stops reading cannot hold it forever.
        let reason = self.fail_reason.clone();
        self.close_lower(t, reason);
        false
    }

    fn connection_lost(&mut self, t: &mut dyn Transport, reason: &Reason) {
        if self.lost {
            return;
        }
        self.lost = true;
        self.cancel_timers(t);
        let reason = match self.fail_reason.take().or_else(|| self.st.close_reason.take()) {
            Some(r) => r,
            // The peer sent close_notify and we answered with ours: a reset
            // while sending that answer loses nothing.
            None if self.peer_closed && !self.keep_open && reason.io_kind().is_some() => {
                Reason::ConnectionDone
            }
            None if !self.tls_up && reason.is_clean() => {
                Reason::Tls("the connection closed before the handshake completed".into())
            }
            None => reason.clone(),
        };
        if let Some(o) = &self.outcome {
            *o.reason.borrow_mut() = Some(reason.clone());
        }
        if !self.tls_up {
            if let Some(f) = self.on_failure.take() {
                f(&reason);
            }
        }
        if self.st.made {
            let mut view = TlsTransport {
                lower: t,
                st: &mut self.st,
            };
            self.app.connection_lost(&mut view, &reason);
        }
    }

    fn pause_writing(&mut self, t: &mut dyn Transport) {
        if self.st.made && !self.lost {
            let mut view = TlsTransport {
                lower: &mut *t,
                st: &mut self.st,
            };
            self.app.pause_writing(&mut view);
            self.after(t);
        }
    }

    fn resume_writing(&mut self, t: &mut dyn Transport) {
        if self.st.made && !self.lost {
            let mut view = TlsTransport {
                lower: &mut *t,
                st: &mut self.st,
            };
            self.app.resume_writing(&mut view);
            self.after(t);
        }
    }

    fn route_call(&mut self, t: &mut dyn Transport, call: ProtocolCall) -> Option<ProtocolCall> {
        self.check_flags(t);
        self.pump_input(t);
        if self.lost {
            return None;
        }
        if self.st.made {
            let mut view = TlsTransport {
                lower: &mut *t,
                st: &mut self.st,
            };
            // The application may itself wrap a protocol: let it route too.
            if let Some(call) = self.app.route_call(&mut view, call) {
                call(&mut *self.app, &mut view);
            }
        } else if t.reactor().is_stopping() {
            // The reactor is shutting down: a handshake in progress has no
            // application to close it, so close it here.
            self.close_lower(t, None);
        } else if !self.st.failed {
            self.early_calls.push(call);
        }
        self.after(t);
        None
    }
}
