//! `TlsProtocol`: the lower half of the TLS helper pair.
//!
//! It owns the rustls connection and the application protocol and is itself
//! the [`Protocol`] of the transport below (TCP, a Unix socket, the in-memory
//! test pair). Ciphertext arriving from below is decrypted and handed to the
//! application through a [`TlsTransport`] view; plaintext the application
//! writes during a callback is buffered and encrypted once the callback
//! returns, so many small writes become few records.
//!
//! The layer's life is one named [`Phase`](super::state::Phase) (the diagram
//! is in `state.rs`). The entry points that carry events (input, EOF, a
//! routed call, flow control) do the same three things: look at expired
//! timers, do their work, then [`after`](TlsProtocol::after) applies what
//! the application asked for.
//!
//! Timeouts use reactor timers that only deliver an empty call to the
//! connection (`call_on`); the layer sees at its next entry that the timer
//! is no longer pending. No timer needs the protocol object itself, and a
//! manual clock drives them in tests.
//!
//! Memory: an idle layer keeps no buffer of its own beyond a small bound.
//! Ciphertext rustls cannot take yet (reading is then paused below) is an
//! [`InputBuf`]; the plaintext buffer is lent from the thread's spares
//! while the application writes and given back when drained;
//! plaintext is handed to rustls in pieces, so rustls's queue of records
//! stays short; and once input is drained, rustls is let to shrink its own
//! input buffer (see [`TlsProtocol::trim_rustls`]).

use std::io::{self, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};
use twistor_reactor::{
    catch_panic, swap_protocol, DelayedCall, InputBuf, Protocol, ProtocolCall, Reason, Transport,
};

use super::info::session_info;
use super::options::TlsOptions;
use super::state::Phase;
use super::view::{give_back, TlsTransport, ViewState};

/// What a client connector wants to know about a connection's layer: did
/// the application ever get `connection_made`, and how did it end.
#[derive(Default)]
pub(crate) struct Outcome {
    pub made: std::cell::Cell<bool>,
    pub reason: std::cell::RefCell<Option<Reason>>,
}

/// Told why a connection ended before its handshake completed.
type FailureHook = Box<dyn FnOnce(&Reason)>;

/// Plaintext handed to rustls at once: four full records. rustls queues a
/// record per 16 KiB and never shrinks that queue; in pieces it stays short
/// however large one write is.
const PIECE: usize = 64 * 1024;

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

/// A reader that has nothing yet: given to rustls so that it prepares a read
/// (and shrinks its input buffer) without taking anything.
struct WouldBlock;

impl io::Read for WouldBlock {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
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
    /// The phase, the knobs, and everything the application's view records.
    st: ViewState,
    /// Ciphertext received but not yet taken by rustls. Non-empty only while
    /// the application is not reading (reading is then paused below).
    inbuf: InputBuf,
    /// Pending while the handshake is (expired when no longer pending).
    handshake_timer: Option<DelayedCall>,
    /// Pending while closing is (expired when no longer pending).
    shutdown_timer: Option<DelayedCall>,
    /// The peer's close_notify has been read (delivered to the application
    /// as `eof_received` once it has read what came before).
    peer_closed: bool,
    /// The application answered the peer's close_notify by staying open:
    /// a reset after that can lose what it wrote since.
    kept_open: bool,
    /// The transport below asked us to pause writing and has not resumed.
    lower_paused: bool,
    /// The application was told `pause_writing` and not yet resumed.
    app_paused: bool,
    /// What the layer needs only until the handshake completes.
    setup: Option<Box<Setup>>,
    outcome: Option<Rc<Outcome>>,
}

/// The part of a layer that is dropped when the handshake completes.
#[derive(Default)]
struct Setup {
    /// The name a client asked for.
    sni: Option<String>,
    /// Calls routed to the application before its `connection_made`.
    early_calls: Vec<ProtocolCall>,
    on_handshake: Option<ProtocolCall>,
    on_failure: Option<FailureHook>,
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
            inbuf: InputBuf::new(),
            handshake_timer: None,
            shutdown_timer: None,
            peer_closed: false,
            kept_open: false,
            lower_paused: false,
            app_paused: false,
            setup: Some(Box::new(Setup {
                sni,
                ..Setup::default()
            })),
            outcome: None,
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

    /// Set the timeouts and the write-buffer cap.
    pub fn with_options(mut self, opts: TlsOptions) -> TlsProtocol {
        self.st.opts = opts;
        self
    }

    /// Run `f` against the application once the handshake is complete
    /// (used by `start_tls`, where the application was made before).
    pub(crate) fn on_handshake(mut self, f: ProtocolCall) -> TlsProtocol {
        self.setup_mut().on_handshake = Some(f);
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
        self.setup_mut().on_failure = Some(Box::new(f));
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
        self.st.info.is_some()
    }

    fn setup_mut(&mut self) -> &mut Setup {
        self.setup.get_or_insert_with(Box::default)
    }

    fn phase(&self) -> Phase {
        self.st.life.phase()
    }

    fn goto(&mut self, to: Phase, lower: &dyn Transport) -> bool {
        self.st.life.goto(to, lower.id())
    }

    /// A view of the layer for the application's callbacks.
    fn view<'a>(st: &'a mut ViewState, lower: &'a mut dyn Transport) -> TlsTransport<'a> {
        TlsTransport { lower, st }
    }

    // ----- starting and timers ----------------------------------------------

    /// Begin: arm the handshake timer, and (client side) send the
    /// ClientHello. Called from `connection_made`, or right away when the
    /// layer is inserted into a live connection.
    pub(crate) fn start(&mut self, lower: &mut dyn Transport) {
        if self.phase() != Phase::Unwrapped || !self.goto(Phase::Handshaking, lower) {
            return;
        }
        if let Some(d) = self.st.opts.handshake_timeout {
            self.handshake_timer = Some(Self::arm(lower, d));
        }
        self.after(lower);
    }

    /// A timer that, when due, wakes the connection with an empty call.
    fn arm(lower: &mut dyn Transport, d: Duration) -> DelayedCall {
        let id = lower.id();
        lower.reactor().call_later(d, move |r| {
            let _ = r.call_on(id, |_, _| {});
        })
    }

    /// Whether `timer` was armed and has fired (it is cleared if so).
    fn expired(timer: &mut Option<DelayedCall>, lower: &mut dyn Transport) -> bool {
        match timer {
            Some(h) if !h.active(lower.reactor()) => {
                *timer = None;
                true
            }
            _ => false,
        }
    }

    /// Act on a timer that fired since the last entry.
    fn check_timers(&mut self, lower: &mut dyn Transport) {
        if self.phase() == Phase::Closed {
            return;
        }
        if Self::expired(&mut self.handshake_timer, lower) && self.phase() == Phase::Handshaking {
            let d = self.st.opts.handshake_timeout.unwrap_or_default();
            log::info!("{}: TLS handshake timed out after {d:?}; closing", lower.id());
            self.fail(lower, Reason::TimedOut);
        }
        if Self::expired(&mut self.shutdown_timer, lower) {
            let d = self.st.opts.shutdown_timeout.unwrap_or_default();
            log::info!("{}: TLS close timed out after {d:?}; aborting", lower.id());
            self.st.life.fail(Reason::TimedOut, lower.id());
            lower.abort_connection();
        }
    }

    fn cancel_timers(&mut self, lower: &mut dyn Transport) {
        for h in [self.handshake_timer.take(), self.shutdown_timer.take()]
            .into_iter()
            .flatten()
        {
            h.cancel(lower.reactor());
        }
    }

    // ----- failing and closing ------------------------------------------------

    /// End the connection with `reason`: send any pending alert, then close
    /// the transport below.
    fn fail(&mut self, lower: &mut dyn Transport, reason: Reason) {
        let closing = self.phase().closing();
        if !self.st.life.fail(reason.clone(), lower.id()) {
            return;
        }
        self.st.plain_out = Vec::new();
        self.inbuf.clear();
        self.write_tls(lower);
        if !closing {
            self.close_lower(lower, Some(reason));
        }
    }

    /// Our close_notify is out (or the handshake is abandoned): close below.
    fn shut_down(&mut self, lower: &mut dyn Transport) {
        if self.goto(Phase::ShuttingDown, lower) {
            let reason = self.st.life.reason().cloned();
            self.close_lower(lower, reason);
        }
    }

    /// Close the transport below once flushed, within the shutdown timeout;
    /// `reason` is what its hooks (listener, client factory) are told
    /// instead of a clean close.
    fn close_lower(&mut self, lower: &mut dyn Transport, reason: Option<Reason>) {
        match reason {
            Some(r) => lower.lose_connection_with(r),
            None => lower.lose_connection(),
        }
        self.arm_shutdown_timer(lower);
    }

    fn arm_shutdown_timer(&mut self, lower: &mut dyn Transport) {
        if let (Some(d), None) = (self.st.opts.shutdown_timeout, &self.shutdown_timer) {
            self.shutdown_timer = Some(Self::arm(lower, d));
        }
    }

    /// Move everything rustls has to send into the transport below.
    fn write_tls(&mut self, lower: &mut dyn Transport) {
        // `Lower` takes everything, so the loop ends when rustls holds
        // nothing (each round moves up to 64 records).
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

    /// The peer's close_notify is read and the application not yet told.
    fn eof_pending(&self) -> bool {
        self.peer_closed && matches!(self.phase(), Phase::Wrapped | Phase::WriteClosed)
    }

    /// Feed `data` (after anything held) to rustls; keep what it cannot
    /// take yet.
    fn feed(&mut self, lower: &mut dyn Transport, data: &[u8]) {
        InputBuf::feed(
            self,
            |s| &mut s.inbuf,
            data,
            |s, input| input.len() - s.consume(lower, input),
        );
        if !self.phase().reading() {
            self.inbuf.clear();
        } else if self.inbuf.is_empty() {
            self.trim_rustls();
        }
    }

    /// Let rustls shrink its input buffer. rustls keeps that buffer at its
    /// peak size (up to 32 KiB after a full 16 KiB record) until its next
    /// read, and shrinks it to its 4 KiB floor at the start of a read when
    /// it holds no partial record. A read that would block does just that
    /// and takes nothing; when nothing shrinks it costs a few comparisons.
    fn trim_rustls(&mut self) {
        let _ = self.conn.read_tls(&mut WouldBlock);
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
            // After the application's lose_connection, input is dropped (as
            // a closing TCP transport stops reading), once the handshake it
            // waits for is done.
            let closed_by_app = self.st.close_requested && self.is_established();
            if !self.phase().reading() || closed_by_app || rest.is_empty() || self.peer_closed {
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
                Ok(state) => self.peer_closed |= state.peer_has_closed(),
                Err(e) => {
                    let reason = Reason::Tls(describe(&e, !self.is_established()));
                    // Debug, not info: any client can cause one of these per
                    // connection, and the reason reaches connection_lost or
                    // client_connection_failed anyway.
                    log::debug!("{}: {reason}", lower.id());
                    self.fail(lower, reason);
                    return 0;
                }
            }
            if self.phase() == Phase::Handshaking && !self.conn.is_handshaking() {
                self.handshake_done(lower);
            }
        }
    }

    /// Hand decrypted bytes (then the peer's close_notify) to the
    /// application while it reads. False if it paused with data left.
    fn deliver(&mut self, lower: &mut dyn Transport) -> bool {
        if !self.is_established() || !self.st.made {
            return true;
        }
        // An upgrade asked for during a callback takes effect when it
        // returns: what follows belongs to the new protocol, not this one.
        let taking = |s: &Self| {
            s.st.app_reading
                && s.st.upgrade.is_none()
                && !s.st.close_requested
                && matches!(s.phase(), Phase::Wrapped | Phase::WriteClosed)
        };
        while taking(self) {
            let chunk = match self.conn.reader().into_first_chunk() {
                Ok(c) if !c.is_empty() => c,
                _ => break,
            };
            let n = chunk.len();
            self.app
                .data_received(&mut Self::view(&mut self.st, lower), chunk);
            io::BufRead::consume(&mut self.conn.reader(), n);
        }
        if self.st.close_requested || self.phase().closing() {
            return true;
        }
        if self.has_plaintext() {
            return false;
        }
        if self.eof_pending() && taking(self) {
            let keep_open = self.app.eof_received(&mut Self::view(&mut self.st, lower));
            if keep_open && self.phase() == Phase::Wrapped && !self.st.close_requested {
                self.kept_open = true;
                self.goto(Phase::ReadClosed, lower);
            } else {
                // Closed both ways now (or the application wants it): the
                // close is applied after this callback.
                self.st.close_requested = true;
            }
        }
        true
    }

    /// Look at held input again (reading was resumed).
    fn pump_input(&mut self, lower: &mut dyn Transport) {
        if self.phase().reading() && self.is_established() {
            self.feed(lower, &[]);
        }
    }

    fn handshake_done(&mut self, lower: &mut dyn Transport) {
        if !self.goto(Phase::Wrapped, lower) {
            return;
        }
        if let Some(h) = self.handshake_timer.take() {
            h.cancel(lower.reactor());
        }
        let setup = *self.setup.take().unwrap_or_default();
        let info = session_info(&self.conn, setup.sni.as_deref());
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
        let mut view = Self::view(&mut self.st, lower);
        if !view.st.made {
            view.st.made = true;
            self.app.connection_made(&mut view);
        }
        if let Some(f) = setup.on_handshake {
            f(&mut *self.app, &mut view);
        }
        for call in setup.early_calls {
            // The application may itself wrap a protocol: let it route too.
            if let Some(call) = self.app.route_call(&mut view, call) {
                call(&mut *self.app, &mut view);
            }
        }
    }

    // ----- after every callback ------------------------------------------------------

    /// Apply what the application asked for during a callback: a protocol
    /// swap, the plaintext it wrote (encrypted in one go), a close, flow
    /// control, and the reading state below.
    fn after(&mut self, lower: &mut dyn Transport) {
        // Bounded: another round only when a flow-control notification ran
        // application code that may have asked for more.
        for _ in 0..8 {
            if !self.swap_protocols(lower) || self.phase() == Phase::Closed {
                return;
            }
            self.send_plaintext(lower);
            self.apply_close(lower);
            self.write_tls(lower);
            if self.phase().closing() {
                // However it began (the view ends a connection over its
                // write cap at once), closing is bounded.
                self.arm_shutdown_timer(lower);
            }
            if !self.flow(lower) {
                break;
            }
        }
        self.update_reading(lower);
    }

    /// Apply protocol swaps asked for by the application. False if one
    /// panicked (the connection then ends with [`Reason::Panic`]).
    fn swap_protocols(&mut self, lower: &mut dyn Transport) -> bool {
        for _ in 0..8 {
            let Some(up) = self.st.upgrade.take() else { break };
            let id = lower.id();
            let mut view = Self::view(&mut self.st, lower);
            if let Err(msg) = swap_protocol(
                &mut self.app,
                up,
                &mut view,
                format_args!("{id}: protocol upgrade"),
            ) {
                self.fail(lower, Reason::Panic(msg));
                return false;
            }
            // Input held back while the swap was pending is the new
            // protocol's: look at it again.
            self.st.kick = true;
        }
        true
    }

    /// Encrypt the plaintext written, once the handshake is done (until
    /// then it is held), in pieces so rustls's record queue stays short.
    fn send_plaintext(&mut self, lower: &mut dyn Transport) {
        if self.st.plain_out.is_empty() || !matches!(self.phase(), Phase::Wrapped | Phase::ReadClosed) {
            return;
        }
        let out = std::mem::take(&mut self.st.plain_out);
        for piece in out.chunks(PIECE) {
            // Unlimited buffer: write_all cannot come up short.
            let _ = self.conn.writer().write_all(piece);
            self.write_tls(lower);
        }
        // Drained: the buffer goes to the thread's spares, so an idle
        // connection holds none and the next write anywhere reuses it.
        give_back(out);
    }

    /// Carry out a `lose_connection` or `write_eof`: close_notify, then the
    /// phase it leads to. Both wait for the handshake to complete.
    fn apply_close(&mut self, lower: &mut dyn Transport) {
        let (close, eof) = (self.st.close_requested, self.st.eof_requested);
        match self.phase() {
            Phase::Handshaking if close && lower.reactor().is_stopping() => self.shut_down(lower),
            // Waiting for the handshake is part of closing: bounded by the
            // shutdown timeout even without a handshake timeout.
            Phase::Handshaking if close => self.arm_shutdown_timer(lower),
            Phase::Wrapped | Phase::ReadClosed if close => {
                self.conn.send_close_notify();
                self.shut_down(lower);
            }
            // After the peer's close_notify is delivered (not merely read:
            // a paused application still has data before it to take).
            Phase::WriteClosed if close => self.shut_down(lower),
            Phase::Wrapped if eof => {
                self.conn.send_close_notify();
                self.goto(Phase::WriteClosed, lower);
            }
            Phase::ReadClosed if eof => {
                // Closed both ways.
                self.conn.send_close_notify();
                self.shut_down(lower);
            }
            _ => {}
        }
    }

    /// Tell the application to pause or resume writing. Plaintext held
    /// during the handshake counts, with what waits below, against the
    /// transport's water marks; once nothing is held, the transport below
    /// decides (its own notifications reach us). True if a notification
    /// ran (the application may have written or closed).
    fn flow(&mut self, lower: &mut dyn Transport) -> bool {
        if !self.st.made || matches!(self.phase(), Phase::Failed | Phase::Closed) {
            return false;
        }
        let held = !self.st.plain_out.is_empty();
        let size = self.st.unsent(&*lower);
        let (high, low) = lower.write_buffer_limits();
        let want = self.lower_paused || (held && size > if self.app_paused { low } else { high });
        if want == self.app_paused {
            return false;
        }
        self.app_paused = want;
        let mut view = Self::view(&mut self.st, lower);
        if want {
            self.app.pause_writing(&mut view);
        } else {
            self.app.resume_writing(&mut view);
        }
        true
    }

    /// Read below while the application reads (and always during the
    /// handshake); look at held input again if reading was resumed.
    fn update_reading(&mut self, lower: &mut dyn Transport) {
        let want = self.phase() != Phase::Failed
            && (!self.is_established() || !self.st.made || self.st.app_reading)
            && self.inbuf.is_empty();
        if want != self.st.lower_reading {
            self.st.lower_reading = want;
            if want {
                lower.resume_reading();
            } else {
                lower.pause_reading();
            }
        }
        if std::mem::take(&mut self.st.kick)
            && self.is_established()
            && (!self.inbuf.is_empty() || self.has_plaintext() || self.eof_pending())
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
        self.check_timers(t);
        if !self.phase().reading() || self.peer_closed {
            return;
        }
        self.feed(t, data);
        self.after(t);
    }

    fn eof_received(&mut self, t: &mut dyn Transport) -> bool {
        self.check_timers(t);
        if self.peer_closed {
            self.pump_input(t);
            self.after(t);
            // Stay open while the application may still write, or has not
            // yet heard of the close_notify.
            return !self.st.close_requested
                && matches!(
                    self.phase(),
                    Phase::Wrapped | Phase::WriteClosed | Phase::ReadClosed
                );
        }
        if self.phase().closing() {
            // We closed first (or failed); the peer answered with a FIN.
            return false;
        }
        let reason = if self.is_established() {
            "truncated: the peer closed the connection without close_notify"
        } else {
            "the peer closed the connection during the handshake"
        };
        log::debug!("{}: {reason}", t.id());
        // What is still queued below goes out, within the shutdown timeout:
        // a peer that half-closes and stops reading cannot hold it forever.
        self.fail(t, Reason::Tls(reason.into()));
        false
    }

    fn connection_lost(&mut self, t: &mut dyn Transport, reason: &Reason) {
        if self.phase() == Phase::Closed || !self.goto(Phase::Closed, t) {
            return;
        }
        self.cancel_timers(t);
        self.st.plain_out = Vec::new();
        self.inbuf.clear();
        let reason = match self.st.life.take_reason() {
            Some(r) => r,
            // The peer sent close_notify and we answered with ours: a reset
            // while sending that answer loses nothing.
            None if self.peer_closed && !self.kept_open && reason.io_kind().is_some() => {
                Reason::ConnectionDone
            }
            None if !self.is_established() && reason.is_clean() => {
                Reason::Tls("the connection closed before the handshake completed".into())
            }
            None => reason.clone(),
        };
        if let Some(o) = &self.outcome {
            *o.reason.borrow_mut() = Some(reason.clone());
        }
        // Set until the handshake completes: the application may never
        // have heard of this connection, the hook is how it learns why.
        if let Some(f) = self.setup.take().and_then(|s| s.on_failure) {
            let _ = catch_panic(format_args!("{}: TLS failure hook", t.id()), || f(&reason));
        }
        if self.st.made {
            self.app
                .connection_lost(&mut Self::view(&mut self.st, t), &reason);
        }
    }

    fn pause_writing(&mut self, t: &mut dyn Transport) {
        self.check_timers(t);
        self.lower_paused = true;
        self.after(t);
    }

    fn resume_writing(&mut self, t: &mut dyn Transport) {
        self.check_timers(t);
        self.lower_paused = false;
        self.after(t);
    }

    fn route_call(&mut self, t: &mut dyn Transport, call: ProtocolCall) -> Option<ProtocolCall> {
        self.check_timers(t);
        self.pump_input(t);
        if self.phase() == Phase::Closed {
            return None;
        }
        if self.st.made {
            let mut view = Self::view(&mut self.st, t);
            // The application may itself wrap a protocol: let it route too.
            if let Some(call) = self.app.route_call(&mut view, call) {
                call(&mut *self.app, &mut view);
            }
        } else if t.reactor().is_stopping() {
            // The reactor is shutting down: a handshake in progress has no
            // application to close it, so close it here.
            if self.phase() == Phase::Handshaking {
                self.shut_down(t);
            }
        } else if let (false, Some(setup)) = (self.phase().closing(), self.setup.as_mut()) {
            setup.early_calls.push(call);
        }
        self.after(t);
        None
    }
}

#[cfg(test)]
#[path = "layer_tests.rs"]
mod tests;
