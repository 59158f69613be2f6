//! The Gemini server protocol: one connection, one request, one response,
//! then close_notify.
//!
//! A connection goes through five phases, changed only by
//! [`GeminiConnection::enter`], which refuses an illegal step:
//!
//! ```text
//! Request --(line refused, rate limited, host not served)--> Closing
//! Request --(Titan upload accepted)--> Receiving
//! Receiving --(whole body in; or answered early, refused, stalled: aborted)--> Handling
//! Request --(handler answers later)--> Handling --(Responder::send)--> Sending | Closing
//! Request --(handler answers now)--> Sending (a body to stream) | Closing (none)
//! Sending --(body sent, failed, or client gone)--> Closing
//! ```
//!
//! The request line must arrive within the request timeout; a Titan
//! upload's body streams into its receiver as it arrives (what came in the
//! same packet as the line first), and a client that stops sending it for
//! the upload timeout is answered `59` and closed (the receiver aborts, so
//! nothing half-written stays). A response body is streamed with a
//! [`Sender`] (backpressure: a slow reader holds about one high-water mark
//! of memory), and a reader that stops reading altogether is cut off after
//! the stall timeout. When an answer goes out while the client is still
//! sending a body it declared (an upload refused before it is read), the
//! server closes its side with close_notify and reads on, discarding, until
//! the body is in, the client closes or the upload timeout passes: closing
//! with unread input would reset the connection and could destroy the
//! answer before the client reads it. Each request gets one access-log line
//! (target `twistor::gemini::access`): client address (or `-`), URL (a
//! Titan token shown as `token=-`), status, meta, body bytes, duration.

use std::rc::Rc;
use std::time::{Duration, Instant};

use twistor_reactor::{catch_panic, ConnId, DelayedCall, Protocol, Reason, Transport};
use twistor_transports::tls::rustls::pki_types::{CertificateDer, UnixTime};

use super::config::Shared;
use super::request::{
    host_name, normalize_host, parse_request_line, ClientCert, Request, RequestLine, TlsFacts, MAX_REQUEST,
};
use super::response::{Response, Status};
use super::router::{Context, HandlerError, Reply};
use super::titan::{redact_token, UploadReceiver};
use crate::peer_slots::PeerSlot;
use crate::producer::{Progress, Sender, Waker};

/// Where a connection is (see the [module docs](self)).
#[derive(Debug)]
enum Phase {
    /// Reading the request line.
    Request,
    /// Reading a Titan upload's body into its receiver.
    Receiving(Upload),
    /// The handler will answer later.
    Handling,
    /// Streaming the response body.
    Sending(Sender),
    /// Answered (or cut off): closing with close_notify.
    Closing,
}

impl Phase {
    fn name(&self) -> &'static str {
        match self {
            Phase::Request => "request",
            Phase::Receiving(_) => "receiving",
            Phase::Handling => "handling",
            Phase::Sending(_) => "sending",
            Phase::Closing => "closing",
        }
    }
}

/// A Titan upload being read.
struct Upload {
    receiver: Box<dyn UploadReceiver>,
    /// The receiver asked to stop reading for now ([`UploadFlow`](super::UploadFlow)).
    paused: bool,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upload {{ paused: {} }}", self.paused)
    }
}

/// What the access log says about a request.
#[derive(Debug, Default)]
struct Access {
    url: Option<String>,
    status: Option<Status>,
    meta: String,
    bytes: u64,
}

/// The protocol of one Gemini connection (built by
/// [`Server`](super::Server), which is its factory).
pub struct GeminiConnection {
    server: Rc<Shared>,
    phase: Phase,
    /// The request line so far (at most `MAX_REQUEST + 2` bytes).
    input: Vec<u8>,
    /// Bytes of a declared upload body not read yet.
    unread: u64,
    /// A handler or receiver of this request took a Responder.
    deferred: bool,
    /// The request timeout, then the upload, stall or linger timeout.
    timer: Option<DelayedCall>,
    access: Access,
    started: Instant,
    /// The client's address as logged.
    peer: String,
    /// This connection's place in its address's count (given back on drop).
    _slot: Option<PeerSlot>,
}

impl GeminiConnection {
    pub(crate) fn new(server: Rc<Shared>) -> GeminiConnection {
        GeminiConnection {
            server,
            phase: Phase::Request,
            input: Vec::new(),
            unread: 0,
            deferred: false,
            timer: None,
            access: Access::default(),
            started: Instant::now(),
            peer: String::new(),
            _slot: None,
        }
    }

    /// Hold `slot` for as long as this connection lives.
    pub(crate) fn hold(&mut self, slot: PeerSlot) {
        self._slot = Some(slot);
    }

    /// The one place the phase changes; returns the phase left.
    fn enter(&mut self, next: Phase) -> Phase {
        let legal = matches!(
            (&self.phase, &next),
            (
                Phase::Request,
                Phase::Receiving(_) | Phase::Handling | Phase::Sending(_) | Phase::Closing
            ) | (Phase::Receiving(_), Phase::Handling)
                | (Phase::Handling, Phase::Sending(_) | Phase::Closing)
                | (Phase::Sending(_), Phase::Closing)
        );
        assert!(
            legal,
            "gemini connection: {} -> {} is not a legal step",
            self.phase.name(),
            next.name()
        );
        std::mem::replace(&mut self.phase, next)
    }

    fn arm(
        &mut self,
        t: &mut dyn Transport,
        after: Duration,
        on_fire: fn(&mut GeminiConnection, &mut dyn Transport),
    ) {
        self.disarm(t);
        let id = t.id();
        self.timer = Some(t.reactor().call_later_on(id, after, move |p, t| {
            if let Some(c) = p.downcast_mut::<GeminiConnection>() {
                c.timer = None;
                on_fire(c, t);
            }
        }));
    }

    fn disarm(&mut self, t: &mut dyn Transport) {
        if let Some(timer) = self.timer.take() {
            timer.cancel(t.reactor());
        }
    }

    fn request_timed_out(&mut self, t: &mut dyn Transport) {
        if matches!(self.phase, Phase::Request) {
            log::info!(
                "{}: no complete request within {:?}; closing",
                t.id(),
                self.server.options.request_timeout
            );
            self.enter(Phase::Closing);
            t.lose_connection_with(Reason::TimedOut);
        }
    }

    fn stalled(&mut self, t: &mut dyn Transport) {
        if let Phase::Sending(s) = &self.phase {
            if s.state() == crate::producer::SenderState::Paused {
                log::info!(
                    "{}: the client read nothing for {:?}; aborting",
                    t.id(),
                    self.server.options.stall_timeout
                );
                t.abort_connection();
            }
        }
    }

    fn upload_stalled(&mut self, t: &mut dyn Transport) {
        if matches!(self.phase, Phase::Receiving(_)) {
            log::info!(
                "{}: no upload bytes for {:?} with {} still to come; closing",
                t.id(),
                self.server.options.upload_timeout,
                self.unread
            );
            self.abort_upload(t);
            // A stalled client gets its answer, but no lingering.
            self.unread = 0;
            self.refuse(
                t,
                Status::BadRequest,
                "The upload stalled before its declared size",
            );
        }
    }

    fn linger_over(&mut self, t: &mut dyn Transport) {
        log::debug!("{}: {} body bytes never came; closing", t.id(), self.unread);
        t.lose_connection();
    }

    // ----- the request ----------------------------------------------------------------

    /// The request line is in; `rest` is what followed it (a Titan body's
    /// start).
    fn on_line(&mut self, t: &mut dyn Transport, line: RequestLine, rest: &[u8]) {
        self.disarm(t);
        self.access.url = Some(redact_token(&line.raw));
        // A Titan body is coming, wanted or not; what came with the line
        // is its start (given to a receiver below, or dropped).
        let size = line.titan.as_ref().map_or(0, |p| p.size);
        let rest = &rest[..rest.len().min(usize::try_from(size).unwrap_or(usize::MAX))];
        self.unread = size - rest.len() as u64;
        let server = self.server.clone();
        if let (Some(limiter), Some(ip)) = (&server.limiter, t.peer().ip()) {
            let now = t.reactor().now();
            if let Err(wait) = limiter.borrow_mut().try_acquire(ip, now) {
                return self.respond(t, Response::slow_down(wait));
            }
        }
        let titan = match line.url.scheme() {
            "gemini" => false,
            "titan" => true,
            _ => {
                return self.refuse(
                    t,
                    Status::ProxyRequestRefused,
                    "This server serves only gemini and titan URLs",
                )
            }
        };
        let host = host_name(&line.host);
        let Some(site) = server.sites.get(&host).cloned() else {
            return self.refuse(t, Status::ProxyRequestRefused, "This host is not served here");
        };
        let local_port = t.host().inet().map(|a| a.port());
        if line.port.is_some() && line.port != local_port {
            return self.refuse(t, Status::ProxyRequestRefused, "This port is not served here");
        }
        if server.options.strict_sni && !sni_matches(t, &line) {
            return self.refuse(
                t,
                Status::ProxyRequestRefused,
                "The URL's host is not the name this connection was made for",
            );
        }
        let req = Request::new(line, t.peer(), t.host(), self.tls_facts(t), t.id());
        let id = t.id();
        if titan {
            // `start_upload` gives the receiver what came with the line.
            self.unread = size;
            let mut cx = Context::new(t.reactor(), id);
            let outcome = catch_panic(format_args!("{id}: gemini upload handler"), || {
                site.accept_upload(req, &mut cx)
            });
            self.deferred |= cx.is_deferred();
            let pause = cx.is_upload_paused();
            return match outcome {
                Ok(Ok(receiver)) => self.start_upload(t, receiver, rest, pause),
                Ok(Err(e)) => self.answer(t, Ok(Err(e))),
                Err(p) => self.answer(t, Err(p)),
            };
        }
        self.enter(Phase::Handling);
        let mut cx = Context::new(t.reactor(), id);
        let outcome = catch_panic(format_args!("{id}: gemini handler"), || site.handle(req, &mut cx));
        self.deferred |= cx.is_deferred();
        self.answer(t, outcome);
    }

    /// Act on what a handler (or an upload's receiver) answered.
    fn answer(&mut self, t: &mut dyn Transport, outcome: Result<Result<Reply, HandlerError>, String>) {
        let id = t.id();
        match outcome {
            Ok(Ok(Reply::Now(resp))) | Ok(Err(HandlerError::Answer(resp))) => self.respond(t, resp),
            Ok(Ok(Reply::Later)) if self.deferred => {}
            Ok(Ok(Reply::Later)) => {
                log::error!("{id}: the handler answered Later without taking a Responder");
                self.refuse(t, Status::CgiError, "The application did not answer");
            }
            Ok(Err(HandlerError::Failed(e))) => {
                log::error!("{id}: the handler failed: {e}");
                self.refuse(t, Status::CgiError, "The application failed");
            }
            Err(_) => self.refuse(t, Status::CgiError, "The application failed"),
        }
    }

    // ----- a Titan upload's body --------------------------------------------------------

    fn start_upload(
        &mut self,
        t: &mut dyn Transport,
        receiver: Box<dyn UploadReceiver>,
        rest: &[u8],
        pause: bool,
    ) {
        self.enter(Phase::Receiving(Upload {
            receiver,
            paused: false,
        }));
        if self.unread == 0 {
            return self.end_upload(t);
        }
        let timeout = self.server.options.upload_timeout;
        self.arm(t, timeout, GeminiConnection::upload_stalled);
        if pause {
            self.set_upload_paused(t, true);
        }
        if !rest.is_empty() {
            self.receive(t, rest);
        }
    }

    /// Hand body bytes to the receiver.
    fn receive(&mut self, t: &mut dyn Transport, data: &[u8]) {
        let n = data.len().min(usize::try_from(self.unread).unwrap_or(usize::MAX));
        self.unread -= n as u64;
        let Phase::Receiving(upload) = &mut self.phase else {
            return;
        };
        if !upload.paused {
            if let Some(timer) = self.timer {
                timer.reset(t.reactor(), self.server.options.upload_timeout);
            }
        }
        let id = t.id();
        let mut cx = Context::new(t.reactor(), id);
        let outcome = catch_panic(format_args!("{id}: gemini upload receiver"), || {
            upload.receiver.data(&mut cx, &data[..n])
        });
        self.deferred |= cx.is_deferred();
        if cx.is_upload_paused() {
            self.set_upload_paused(t, true);
        }
        match outcome {
            Ok(Ok(())) if self.unread == 0 => self.end_upload(t),
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.answer(t, Ok(Err(e))),
            Err(p) => self.answer(t, Err(p)),
        }
    }

    /// The whole body is in: the receiver answers.
    fn end_upload(&mut self, t: &mut dyn Transport) {
        self.disarm(t);
        let Phase::Receiving(_) = self.phase else {
            return;
        };
        let Phase::Receiving(upload) = self.enter(Phase::Handling) else {
            return;
        };
        let id = t.id();
        let mut cx = Context::new(t.reactor(), id);
        let outcome = catch_panic(format_args!("{id}: gemini upload receiver"), || {
            upload.receiver.end(&mut cx)
        });
        self.deferred |= cx.is_deferred();
        self.answer(t, outcome);
    }

    /// The upload will not complete: its receiver undoes what it did.
    fn abort_upload(&mut self, t: &mut dyn Transport) {
        let Phase::Receiving(_) = self.phase else {
            return;
        };
        if let Phase::Receiving(upload) = self.enter(Phase::Handling) {
            let id = t.id();
            let r = t.reactor();
            let _ = catch_panic(format_args!("{id}: aborting an upload"), || {
                upload.receiver.abort(r)
            });
        }
    }

    /// Pause (or resume) reading an upload's body, for its receiver.
    fn set_upload_paused(&mut self, t: &mut dyn Transport, pause: bool) {
        let Phase::Receiving(upload) = &mut self.phase else {
            return;
        };
        if upload.paused == pause {
            return;
        }
        upload.paused = pause;
        if pause {
            t.pause_reading();
            self.disarm(t);
        } else {
            t.resume_reading();
            let timeout = self.server.options.upload_timeout;
            self.arm(t, timeout, GeminiConnection::upload_stalled);
        }
    }

    fn tls_facts(&self, t: &dyn Transport) -> TlsFacts {
        let Some(info) = t.tls_info() else {
            return TlsFacts::default();
        };
        let client_cert = info.peer_cert.clone().map(|facts| ClientCert {
            facts,
            authorised: self.authorised(&info.peer_chain),
        });
        TlsFacts {
            version: info.version.clone(),
            // rustls names TLS 1.3 suites TLS13_*; the IANA name is TLS_*.
            cipher: match info.cipher_suite.strip_prefix("TLS13_") {
                Some(rest) => format!("TLS_{rest}"),
                None => info.cipher_suite.clone(),
            },
            sni: info.sni.clone(),
            client_cert,
        }
    }

    /// Whether `chain` verifies against the configured client CA.
    fn authorised(&self, chain: &[Vec<u8>]) -> bool {
        let (Some(verifier), Some(leaf)) = (&self.server.ca_verifier, chain.first()) else {
            return false;
        };
        let leaf = CertificateDer::from(leaf.as_slice());
        let rest: Vec<CertificateDer<'_>> = chain[1..]
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        verifier.verify_client_cert(&leaf, &rest, UnixTime::now()).is_ok()
    }

    // ----- the response -----------------------------------------------------------------

    fn refuse(&mut self, t: &mut dyn Transport, status: Status, meta: &'static str) {
        let resp = Response::new(status, meta).expect("constant metas are valid");
        self.respond(t, resp);
    }

    /// Send `resp` (if a response is still due).
    fn respond(&mut self, t: &mut dyn Transport, resp: Response) {
        // An answer before the whole body is in ends the upload.
        self.abort_upload(t);
        if !matches!(self.phase, Phase::Request | Phase::Handling) {
            log::debug!("{}: a response in phase {} ignored", t.id(), self.phase.name());
            return;
        }
        let (status, meta, body) = resp.into_parts();
        t.write(
            if meta.is_empty() {
                format!("{}\r\n", status.code())
            } else {
                format!("{} {meta}\r\n", status.code())
            }
            .as_bytes(),
        );
        self.access.status = Some(status);
        self.access.meta = meta;
        let source = match (status, body.into_source()) {
            (Status::Success, source) => source,
            (_, None) => None,
            (_, Some(_)) => {
                log::debug!("{}: a body with status {status} is not sent", t.id());
                None
            }
        };
        match source {
            Some(source) => {
                let sender = Sender::boxed(source, waker(t.id()));
                self.enter(Phase::Sending(sender));
                self.pump(t);
            }
            None => self.finish(t),
        }
    }

    /// Send more of the body (also what the sender's waker calls).
    fn pump(&mut self, t: &mut dyn Transport) {
        let Phase::Sending(sender) = &mut self.phase else {
            return;
        };
        match sender.send(t) {
            Progress::Going => {}
            Progress::Finished => self.finish(t),
            Progress::Failed(e) => {
                log::error!("{}: reading the response body failed: {e}; aborting", t.id());
                self.access.bytes = sender.sent();
                self.enter(Phase::Closing);
                // No close_notify: the client must not take a cut body for a whole one.
                t.abort_connection();
            }
        }
    }

    fn finish(&mut self, t: &mut dyn Transport) {
        if let Phase::Sending(s) = &self.phase {
            self.access.bytes = s.sent();
        }
        self.enter(Phase::Closing);
        self.disarm(t);
        if self.unread > 0 && !t.is_closing() {
            // The client may still be sending the body it declared: close
            // our side (close_notify) and read on, discarding, so that
            // closing with unread input does not reset the connection
            // before the client has read the answer. Bounded in time.
            t.resume_reading();
            t.write_eof();
            let linger = self.server.options.upload_timeout;
            self.arm(t, linger, GeminiConnection::linger_over);
        } else {
            t.lose_connection();
        }
    }

    fn log_access(&self, reason: &Reason) {
        let Some(status) = self.access.status else {
            if self.access.url.is_some() {
                log::debug!("request {:?} ended unanswered: {reason}", self.access.url);
            }
            return;
        };
        let who = if self.server.options.log_client_addresses {
            self.peer.clone()
        } else {
            "-".to_string()
        };
        let url = self
            .access
            .url
            .as_deref()
            .map(|u| format!("{u:?}"))
            .unwrap_or_else(|| "-".to_string());
        log::info!(
            target: "twistor::gemini::access",
            "{who} {url} {} {:?} {} {}ms",
            status.code(),
            self.access.meta,
            self.access.bytes,
            self.started.elapsed().as_millis()
        );
    }
}

/// Reaches a connection's protocol to send more of its body.
fn waker(id: ConnId) -> Waker {
    Waker::new(move |r| {
        let _ = r.call_on(id, |p, t| {
            if let Some(c) = p.downcast_mut::<GeminiConnection>() {
                c.pump(t);
            }
        });
    })
}

/// Whether the connection's SNI names the URL's host (an IP-address host
/// is reached without SNI, so it is not checked).
fn sni_matches(t: &dyn Transport, line: &RequestLine) -> bool {
    if !matches!(line.host, url::Host::Domain(_)) {
        return true;
    }
    let sni = t.tls_info().and_then(|i| i.sni.as_deref());
    sni.and_then(|n| normalize_host(n).ok()).as_deref() == Some(host_name(&line.host).as_str())
}

/// Pause or resume an upload's body on its connection (what
/// [`UploadFlow`](super::UploadFlow) delivers).
pub(crate) fn flow(p: &mut dyn Protocol, t: &mut dyn Transport, pause: bool) {
    if let Some(c) = p.downcast_mut::<GeminiConnection>() {
        c.set_upload_paused(t, pause);
    }
}

/// Hand a deferred response to its connection (what
/// [`Responder::send`](super::Responder::send) delivers).
pub(crate) fn deliver(p: &mut dyn Protocol, t: &mut dyn Transport, response: Response) {
    match p.downcast_mut::<GeminiConnection>() {
        Some(c) => c.respond(t, response),
        None => log::error!(
            "{}: a Gemini response for a connection that is not Gemini",
            t.id()
        ),
    }
}

impl Protocol for GeminiConnection {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.started = Instant::now();
        self.peer = match t.peer().ip() {
            Some(ip) => ip.to_canonical().to_string(),
            None => t.peer().to_string(),
        };
        let timeout = self.server.options.request_timeout;
        self.arm(t, timeout, GeminiConnection::request_timed_out);
    }

    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        match self.phase {
            Phase::Request => {}
            Phase::Receiving(_) => return self.receive(t, data),
            _ => {
                // One request per connection; what is left of a declared
                // body is read and dropped (see `finish`).
                let n = data.len().min(usize::try_from(self.unread).unwrap_or(usize::MAX));
                self.unread -= n as u64;
                if self.unread == 0 && matches!(self.phase, Phase::Closing) && !t.is_closing() {
                    self.disarm(t);
                    t.lose_connection();
                }
                return;
            }
        }
        // Never hold more than a longest valid line: past that it is refused.
        let room = (MAX_REQUEST + 2).saturating_sub(self.input.len());
        let taken = data.len().min(room);
        self.input.extend_from_slice(&data[..taken]);
        match parse_request_line(&self.input) {
            Ok(None) => {}
            Ok(Some(line)) => {
                let input = std::mem::take(&mut self.input);
                // What follows the line, in this read and past the part of
                // it that was taken, is a Titan body's start.
                let mut rest = input[line.consumed..].to_vec();
                rest.extend_from_slice(&data[taken..]);
                self.on_line(t, line, &rest);
            }
            Err(refusal) => {
                self.disarm(t);
                self.access.url = Some(redact_token(&String::from_utf8_lossy(&self.input)));
                self.input = Vec::new();
                log::debug!("{}: request refused: {}", t.id(), refusal.meta);
                self.refuse(t, refusal.status, refusal.meta);
            }
        }
    }

    fn eof_received(&mut self, t: &mut dyn Transport) -> bool {
        if matches!(self.phase, Phase::Receiving(_)) {
            log::info!("{}: the upload ended {} bytes short", t.id(), self.unread);
            self.abort_upload(t);
            self.unread = 0;
            self.refuse(t, Status::BadRequest, "The upload ended before its declared size");
            return true;
        }
        // A client may half-close after its request; keep sending the answer.
        let answering = !matches!(self.phase, Phase::Request | Phase::Closing);
        if !answering {
            self.disarm(t);
        }
        answering
    }

    fn connection_lost(&mut self, t: &mut dyn Transport, reason: &Reason) {
        self.disarm(t);
        if matches!(self.phase, Phase::Receiving(_)) {
            log::info!("{}: the client went away during its upload ({reason})", t.id());
            self.abort_upload(t);
        }
        if let Phase::Sending(s) = &mut self.phase {
            self.access.bytes = s.sent();
            s.stop(t.reactor());
        }
        self.log_access(reason);
    }

    fn pause_writing(&mut self, t: &mut dyn Transport) {
        if let Phase::Sending(s) = &mut self.phase {
            s.pause_writing(t.reactor());
            let stall = self.server.options.stall_timeout;
            self.arm(t, stall, GeminiConnection::stalled);
        }
    }

    fn resume_writing(&mut self, t: &mut dyn Transport) {
        self.disarm(t);
        let Phase::Sending(sender) = &mut self.phase else {
            return;
        };
        match sender.resume_writing(t) {
            Progress::Going => {}
            Progress::Finished => self.finish(t),
            Progress::Failed(e) => {
                log::error!("{}: reading the response body failed: {e}; aborting", t.id());
                self.enter(Phase::Closing);
                t.abort_connection();
            }
        }
    }
}
