//! The Gemini server protocol: one connection, one request, one response,
//! then close_notify.
//!
//! A connection goes through four phases, changed only by
//! [`GeminiConnection::enter`], which refuses an illegal step:
//!
//! ```text
//! Request --(line refused, rate limited, host not served)--> Closing
//! Request --(handler answers later)--> Handling --(Responder::send)--> Sending | Closing
//! Request --(handler answers now)--> Sending (a body to stream) | Closing (none)
//! Sending --(body sent, failed, or client gone)--> Closing
//! ```
//!
//! The request line must arrive within the request timeout; a body is
//! streamed with a [`Sender`] (backpressure: a slow reader holds about one
//! high-water mark of memory), and a reader that stops reading altogether
//! is cut off after the stall timeout. Each request gets one access-log
//! line (target `twistor::gemini::access`): client address (or `-`), URL,
//! status, meta, body bytes, duration.

use std::rc::Rc;
use std::time::{Duration, Instant};

use twistor_reactor::{catch_panic, ConnId, DelayedCall, Protocol, Reason, Transport};
use twistor_transports::tls::rustls::pki_types::{CertificateDer, UnixTime};

use super::config::Shared;
use super::request::{
    host_name, parse_request_line, ClientCert, Request, RequestLine, TlsFacts, MAX_REQUEST,
};
use super::response::{Response, Status};
use super::router::{Context, HandlerError, Reply};
use crate::producer::{Progress, Sender, Waker};

/// Where a connection is (see the [module docs](self)).
#[derive(Debug)]
enum Phase {
    /// Reading the request line.
    Request,
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
            Phase::Handling => "handling",
            Phase::Sending(_) => "sending",
            Phase::Closing => "closing",
        }
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
    /// The request timeout, then the stall timeout.
    timer: Option<DelayedCall>,
    access: Access,
    started: Instant,
    /// The client's address as logged.
    peer: String,
}

impl GeminiConnection {
    pub(crate) fn new(server: Rc<Shared>) -> GeminiConnection {
        GeminiConnection {
            server,
            phase: Phase::Request,
            input: Vec::new(),
            timer: None,
            access: Access::default(),
            started: Instant::now(),
            peer: String::new(),
        }
    }

    /// The one place the phase changes.
    fn enter(&mut self, next: Phase) {
        let legal = matches!(
            (&self.phase, &next),
            (
                Phase::Request,
                Phase::Handling | Phase::Sending(_) | Phase::Closing
            ) | (Phase::Handling, Phase::Sending(_) | Phase::Closing)
                | (Phase::Sending(_), Phase::Closing)
        );
        assert!(
            legal,
            "gemini connection: {} -> {} is not a legal step",
            self.phase.name(),
            next.name()
        );
        self.phase = next;
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

    // ----- the request ----------------------------------------------------------------

    fn on_line(&mut self, t: &mut dyn Transport, line: RequestLine) {
        self.disarm(t);
        self.access.url = Some(line.raw.clone());
        let server = self.server.clone();
        if let (Some(limiter), Some(ip)) = (&server.limiter, t.peer().ip()) {
            let now = t.reactor().now();
            if let Err(wait) = limiter.borrow_mut().try_acquire(ip, now) {
                return self.respond(t, Response::slow_down(wait));
            }
        }
        if line.url.scheme() != "gemini" {
            return self.refuse(
                t,
                Status::ProxyRequestRefused,
                "This server serves only gemini URLs",
            );
        }
        let Some(site) = server.sites.get(&host_name(&line.host)).cloned() else {
            return self.refuse(t, Status::ProxyRequestRefused, "This host is not served here");
        };
        let local_port = t.host().inet().map(|a| a.port());
        if line.port.is_some() && line.port != local_port {
            return self.refuse(t, Status::ProxyRequestRefused, "This port is not served here");
        }
        let req = Request::new(line, t.peer(), t.host(), self.tls_facts(t), t.id());
        self.enter(Phase::Handling);
        let id = t.id();
        let mut cx = Context::new(t.reactor(), id);
        let outcome = catch_panic(format_args!("{id}: gemini handler"), || site.handle(req, &mut cx));
        let deferred = cx.is_deferred();
        match outcome {
            Ok(Ok(Reply::Now(resp))) | Ok(Err(HandlerError::Answer(resp))) => self.respond(t, resp),
            Ok(Ok(Reply::Later)) if deferred => {}
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
        t.lose_connection();
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
        if !matches!(self.phase, Phase::Request) {
            // One request per connection; Gemini requests carry no body.
            return;
        }
        // Never hold more than a longest valid line: past that it is refused.
        let room = (MAX_REQUEST + 2).saturating_sub(self.input.len());
        self.input.extend_from_slice(&data[..data.len().min(room)]);
        match parse_request_line(&self.input) {
            Ok(None) => {}
            Ok(Some(line)) => {
                self.input = Vec::new();
                self.on_line(t, line);
            }
            Err(refusal) => {
                self.disarm(t);
                self.access.url = Some(String::from_utf8_lossy(&self.input).into_owned());
                self.input = Vec::new();
                log::debug!("{}: request refused: {}", t.id(), refusal.meta);
                self.refuse(t, refusal.status, refusal.meta);
            }
        }
    }

    fn eof_received(&mut self, t: &mut dyn Transport) -> bool {
        // A client may half-close after its request; keep sending the answer.
        let answering = !matches!(self.phase, Phase::Request | Phase::Closing);
        if !answering {
            self.disarm(t);
        }
        answering
    }

    fn connection_lost(&mut self, t: &mut dyn Transport, reason: &Reason) {
        self.disarm(t);
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
