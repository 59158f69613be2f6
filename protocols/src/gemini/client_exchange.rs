//! One fetch from start to end: the connections it makes (one per
//! request: redirects make more), the whole-fetch deadline, the
//! certificate's trust decision taken from its verifier, redirects followed or
//! refused, and the handler told exactly once how it ended.
//!
//! A fetch goes through four phases, changed only by [`Fetch::enter`],
//! which refuses an illegal step:
//!
//! ```text
//! Idle --connect--> Connecting --handshake done--> Exchanging --3x followed--> Idle
//!   any --response complete, error, timeout, cancel--> Done
//! ```
//!
//! The handler is called with no borrow of the fetch held (it is taken out
//! for the call), so it may start other fetches or cancel this one; a
//! panic in it ends this fetch only.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::time::Duration;

use twistor_reactor::{
    catch_panic, Address, ClientFactory, ConnId, Connector, DelayedCall, Factory, Protocol, Reactor, Reason,
    Transport,
};
use twistor_transports::tls::{connect_tls_with, TlsOptions};
use twistor_transports::ConnectOptions;
use url::Url;

use super::client::{
    FetchHandle, FetchHandler, FetchOptions, FetchResponse, Redirect, RedirectStop, ResponseHead, Target,
};
use super::client_conn::{ClientConn, Request, ResponseHeader};
use super::client_error::FetchError;
use super::client_trust::{client_config, Seen, ServerCert};

/// A fetch, shared by its connections, their factory and its timer.
pub(crate) type Shared = Rc<RefCell<Fetch>>;

#[derive(Debug)]
enum Phase {
    /// Nothing connected: before the first connection, between redirects.
    Idle,
    /// Connection `seq` is being made (name lookup, TCP, TLS handshake).
    Connecting {
        seq: u64,
        connector: Connector,
        seen: Seen,
    },
    /// Connection `seq` is up: request sent, response coming.
    Exchanging {
        seq: u64,
        conn: ConnId,
        cert: ServerCert,
    },
    /// Over; the handler has its result.
    Done,
}

impl Phase {
    fn name(&self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Connecting { .. } => "connecting",
            Phase::Exchanging { .. } => "exchanging",
            Phase::Done => "done",
        }
    }
}

/// The state of one fetch (see the [module docs](self)).
pub(crate) struct Fetch {
    url: String,
    opts: FetchOptions,
    /// Out while one of its callbacks runs; gone once `done` ran.
    handler: Option<Box<dyn FetchHandler>>,
    phase: Phase,
    /// The number of the latest connection (older ones are stale).
    seq: u64,
    /// The URL being fetched now.
    target: Option<Target>,
    /// Host and port of the URL first asked for: the only place the
    /// client certificate goes.
    origin: Option<(String, u16)>,
    /// Every URL asked for, to see a loop.
    visited: Vec<String>,
    redirects: Vec<Redirect>,
    /// The header of the response whose body is coming.
    head: Option<ResponseHead>,
    /// Only the first request carries the upload.
    upload_due: bool,
    deadline: Option<DelayedCall>,
}

impl Fetch {
    /// The one place the phase changes; returns the phase left.
    fn enter(&mut self, next: Phase) -> Phase {
        let legal = matches!(
            (&self.phase, &next),
            (Phase::Idle, Phase::Connecting { .. })
                | (Phase::Connecting { .. }, Phase::Exchanging { .. })
                | (Phase::Exchanging { .. }, Phase::Idle)
                | (
                    Phase::Idle | Phase::Connecting { .. } | Phase::Exchanging { .. },
                    Phase::Done
                )
        );
        assert!(
            legal,
            "gemini fetch: {} -> {} is not a legal step",
            self.phase.name(),
            next.name()
        );
        std::mem::replace(&mut self.phase, next)
    }

    fn target_name(&self) -> String {
        self.target.as_ref().map(Target::authority).unwrap_or_default()
    }
}

/// Start a fetch (what [`fetch_with`](super::fetch_with) does): it begins
/// on the next turn, so the handler never runs inside this call.
pub(crate) fn start(
    r: &mut Reactor,
    url: &str,
    opts: FetchOptions,
    handler: Box<dyn FetchHandler>,
) -> FetchHandle {
    let fetch = Rc::new(RefCell::new(Fetch {
        url: url.to_string(),
        upload_due: opts.upload.is_some(),
        opts,
        handler: Some(handler),
        phase: Phase::Idle,
        seq: 0,
        target: None,
        origin: None,
        visited: Vec::new(),
        redirects: Vec::new(),
        head: None,
        deadline: None,
    }));
    let handle = FetchHandle(Rc::downgrade(&fetch));
    r.call_soon(move |r| begin(r, &fetch));
    handle
}

fn begin(r: &mut Reactor, rc: &Shared) {
    let checked = {
        let f = rc.borrow();
        if matches!(f.phase, Phase::Done) {
            return; // cancelled before it began
        }
        Url::parse(&f.url)
            .map_err(|e| FetchError::BadUrl(format!("{:?} is not a URL: {e}", f.url)))
            .and_then(Target::new)
            .and_then(|t| {
                let upload = f.opts.upload.as_ref();
                t.request_line(upload).map(|_| t)
            })
    };
    let target = match checked {
        Ok(t) => t,
        Err(e) => return finish(r, rc, Err(e), false),
    };
    {
        let mut f = rc.borrow_mut();
        f.origin = Some((target.host.clone(), target.port));
        f.visited.push(target.key());
        f.target = Some(target);
        if let Some(after) = f.opts.timeout {
            let weak = Rc::downgrade(rc);
            f.deadline = Some(r.call_later(after, move |r| {
                if let Some(rc) = weak.upgrade() {
                    rc.borrow_mut().deadline = None;
                    finish(r, &rc, Err(FetchError::Timeout { after }), true);
                }
            }));
        }
    }
    connect(r, rc);
}

/// Open a connection to the current target.
fn connect(r: &mut Reactor, rc: &Shared) {
    let prepared = {
        let mut f = rc.borrow_mut();
        if !matches!(f.phase, Phase::Idle) {
            return; // over meanwhile
        }
        f.seq += 1;
        let target = f.target.clone().expect("a target once begun");
        let identity = match &f.origin {
            Some((h, p)) if *h == target.host && *p == target.port => f.opts.identity.as_ref(),
            _ => None,
        };
        client_config(target.port, &f.opts.trust, f.opts.trust_new, identity)
            .map(|(config, seen)| (config, seen, target, f.seq, f.opts.connect_timeout))
    };
    let (config, seen, target, seq, limit) = match prepared {
        Ok(p) => p,
        Err(e) => return finish(r, rc, Err(FetchError::Options(e.to_string())), false),
    };
    let attempt = Attempt {
        fetch: rc.clone(),
        seq,
        tcp_up: Rc::new(Cell::new(false)),
        target: target.authority(),
        limit,
    };
    let tls = TlsOptions {
        handshake_timeout: Some(limit),
        ..TlsOptions::default()
    };
    let tcp = ConnectOptions {
        timeout: limit,
        ..ConnectOptions::default()
    };
    // The host without brackets: an address is sent no SNI, a name is.
    let connector = connect_tls_with(r, &target.host, target.port, attempt, config, tls, tcp);
    rc.borrow_mut().enter(Phase::Connecting { seq, connector, seen });
}

/// Builds the connection's protocol and hears how connecting went.
struct Attempt {
    fetch: Shared,
    seq: u64,
    /// TCP connected: a timeout now is the handshake's.
    tcp_up: Rc<Cell<bool>>,
    target: String,
    limit: Duration,
}

impl Factory for Attempt {
    fn build_protocol(&mut self, _: &Address) -> Option<Box<dyn Protocol>> {
        self.tcp_up.set(true);
        Some(Box::new(ClientConn::new(
            self.fetch.clone(),
            self.seq,
            self.target.clone(),
        )))
    }
}

impl ClientFactory for Attempt {
    fn client_connection_failed(&mut self, r: &mut Reactor, _: &Connector, reason: &Reason) {
        let seen = {
            let f = self.fetch.borrow();
            match &f.phase {
                Phase::Connecting { seq, seen, .. } if *seq == self.seq => seen.clone(),
                _ => return, // stale: the fetch moved on or is over
            }
        };
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).take();
        let target = self.target.clone();
        let error = match (seen, reason) {
            (Some(Err(changed)), _) => FetchError::CertificateChanged(changed),
            (_, Reason::TimedOut) if self.tcp_up.get() => FetchError::HandshakeTimeout {
                target,
                after: self.limit,
            },
            (_, Reason::TimedOut) => FetchError::ConnectTimeout {
                target,
                after: self.limit,
            },
            (_, Reason::Tls(message)) => FetchError::Tls {
                target,
                message: message.clone(),
            },
            (_, reason) => FetchError::Connect {
                target,
                reason: reason.clone(),
            },
        };
        finish(r, &self.fetch, Err(error), false);
    }
}

/// The handshake of connection `seq` completed: what should it send?
/// `None` when the fetch no longer wants it.
pub(crate) fn on_connected(t: &mut dyn Transport, rc: &Shared, seq: u64) -> Option<Request> {
    let checked = {
        let mut f = rc.borrow_mut();
        let seen = match &f.phase {
            Phase::Connecting { seq: s, seen, .. } if *s == seq => seen.clone(),
            _ => return None,
        };
        let cert = seen.lock().unwrap_or_else(|e| e.into_inner()).take();
        match cert {
            Some(Ok(cert)) => {
                f.enter(Phase::Exchanging {
                    seq,
                    conn: t.id(),
                    cert,
                });
                let upload = if std::mem::take(&mut f.upload_due) {
                    f.opts.upload.as_ref()
                } else {
                    None
                };
                let target = f.target.as_ref().expect("a target");
                target.request_line(upload).map(|line| Request {
                    line,
                    upload: upload.map(|u| (u.body.clone(), u.size)),
                })
            }
            // Cannot happen with a fresh configuration (no resumption), but
            // never send a request to a server nobody judged.
            _ => Err(FetchError::Tls {
                target: f.target_name(),
                message: "the server's certificate was not checked".into(),
            }),
        }
    };
    match checked {
        Ok(request) => Some(request),
        Err(e) => {
            finish(t.reactor(), rc, Err(e), false);
            None
        }
    }
}

/// What a connection does after the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderAction {
    /// Read the body.
    Body,
    /// Close (the response is complete, a redirect is followed, or the
    /// fetch is over).
    Close,
}

/// Connection `seq` received a response header.
pub(crate) fn on_header(
    t: &mut dyn Transport,
    rc: &Shared,
    seq: u64,
    header: ResponseHeader,
    upload_sent: Option<u64>,
) -> HeaderAction {
    let (head, next) = {
        let f = rc.borrow();
        let Phase::Exchanging { seq: s, cert, .. } = &f.phase else {
            return HeaderAction::Close;
        };
        if *s != seq {
            return HeaderAction::Close;
        }
        let head = ResponseHead {
            url: f.target.as_ref().expect("a target").url.clone(),
            code: header.code,
            meta: header.meta,
            server_cert: cert.clone(),
        };
        let next = (head.class() == 3).then(|| next_hop(&f, &head));
        (head, next)
    };
    let r = t.reactor();
    if !call(r, rc, "header", |h, r| h.header(r, &head)) {
        return HeaderAction::Close;
    }
    match next {
        Some(Ok((hop, target))) => {
            {
                let mut f = rc.borrow_mut();
                if !matches!(f.phase, Phase::Exchanging { .. }) {
                    return HeaderAction::Close;
                }
                f.redirects.push(hop.clone());
                f.visited.push(target.key());
                f.target = Some(target);
                f.enter(Phase::Idle);
            }
            if call(r, rc, "redirect", |h, r| h.redirect(r, &hop)) {
                let rc = rc.clone();
                r.call_soon(move |r| connect(r, &rc));
            }
            HeaderAction::Close
        }
        stopped => {
            let class = head.class();
            let stopped = stopped.and_then(Result::err);
            if class == 2 && stopped.is_none() {
                rc.borrow_mut().head = Some(head);
                return HeaderAction::Body;
            }
            let response = {
                let mut f = rc.borrow_mut();
                FetchResponse {
                    head,
                    body: Vec::new(),
                    body_len: 0,
                    redirects: std::mem::take(&mut f.redirects),
                    redirect_stopped: stopped,
                    upload_sent,
                }
            };
            finish(r, rc, Ok(response), false);
            HeaderAction::Close
        }
    }
}

/// Where a 3x leads, or why it is not followed.
fn next_hop(f: &Fetch, head: &ResponseHead) -> Result<(Redirect, Target), RedirectStop> {
    let current = f.target.as_ref().expect("a target");
    let meta = head.meta.trim();
    if meta.is_empty() {
        return Err(RedirectStop::Invalid("the redirect gives no URL".into()));
    }
    let to = current
        .url
        .join(meta)
        .map_err(|e| RedirectStop::Invalid(format!("{meta:?} is not a URL: {e}")))?;
    if to.scheme() != "gemini" {
        return Err(RedirectStop::Scheme(to));
    }
    let next = Target::new(to).map_err(|e| RedirectStop::Invalid(e.to_string()))?;
    if f.visited.contains(&next.key()) {
        return Err(RedirectStop::Loop(next.url));
    }
    if f.redirects.len() >= f.opts.max_redirects {
        return Err(RedirectStop::Limit(f.redirects.len()));
    }
    let hop = Redirect {
        from: current.url.clone(),
        to: next.url.clone(),
        code: head.code,
        cross_host: (next.host.as_str(), next.port) != (current.host.as_str(), current.port),
    };
    Ok((hop, next))
}

/// A piece of the body of connection `seq`; an error stops the fetch.
pub(crate) fn on_body(r: &mut Reactor, rc: &Shared, seq: u64, data: &[u8]) -> Result<(), FetchError> {
    if !matches!(rc.borrow().phase, Phase::Exchanging { seq: s, .. } if s == seq) {
        return Err(FetchError::Cancelled);
    }
    let mut outcome = Ok(());
    let called = call(r, rc, "body", |h, r| outcome = h.body(r, data));
    if !called {
        return Err(FetchError::Cancelled); // the handler panicked: the fetch is over
    }
    outcome
}

/// Connection `seq` ended: the body is complete (`Ok`) or it failed.
pub(crate) fn finish_exchange(
    r: &mut Reactor,
    rc: &Shared,
    seq: u64,
    result: Result<(), FetchError>,
    body_len: u64,
    upload_sent: Option<u64>,
) {
    let response = {
        let mut f = rc.borrow_mut();
        if !matches!(f.phase, Phase::Exchanging { seq: s, .. } if s == seq) {
            return;
        }
        match (result, f.head.take()) {
            (Ok(()), Some(head)) => Ok(FetchResponse {
                head,
                body: Vec::new(),
                body_len,
                redirects: std::mem::take(&mut f.redirects),
                redirect_stopped: None,
                upload_sent,
            }),
            (Ok(()), None) => Err(FetchError::BadResponse {
                target: f.target_name(),
                message: "the connection ended before a response".into(),
            }),
            (Err(e), _) => Err(e),
        }
    };
    finish(r, rc, response, false);
}

/// Run a handler callback with no borrow held; a panic in it ends the
/// fetch (returns false then, or when the fetch is over).
fn call(
    r: &mut Reactor,
    rc: &Shared,
    what: &str,
    f: impl FnOnce(&mut dyn FetchHandler, &mut Reactor),
) -> bool {
    let Some(mut h) = rc.borrow_mut().handler.take() else {
        return false;
    };
    let outcome = catch_panic(format_args!("gemini fetch handler: {what}"), || f(&mut *h, r));
    rc.borrow_mut().handler = Some(h);
    match outcome {
        Ok(()) => !matches!(rc.borrow().phase, Phase::Done),
        Err(panic) => {
            finish(
                r,
                rc,
                Err(FetchError::Handler(format!("{what} panicked: {panic}"))),
                false,
            );
            false
        }
    }
}

/// End the fetch (once): stop the deadline, close what is still open when
/// `abort` says the end comes from outside the connection (a timeout, a
/// cancel), and give the handler its result.
fn finish(r: &mut Reactor, rc: &Shared, result: Result<FetchResponse, FetchError>, abort: bool) {
    let (left, deadline, handler) = {
        let mut f = rc.borrow_mut();
        if matches!(f.phase, Phase::Done) {
            return;
        }
        let left = f.enter(Phase::Done);
        (left, f.deadline.take(), f.handler.take())
    };
    if let Some(d) = deadline {
        d.cancel(r);
    }
    // A stop closes the connection under the fetch: say that, not what
    // the closing looked like from below.
    let result = match result {
        Err(e) if r.is_stopping() && !matches!(e, FetchError::Cancelled) => Err(FetchError::Stopped),
        other => other,
    };
    if abort {
        match left {
            Phase::Connecting { connector, .. } => connector.stop_connecting(r),
            Phase::Exchanging { conn, .. } => {
                let _ = r.call_on(conn, |_, t| t.abort_connection());
            }
            Phase::Idle | Phase::Done => {}
        }
    }
    if let Some(mut h) = handler {
        let _ = catch_panic(format_args!("gemini fetch handler: done"), || h.done(r, result));
    }
}

/// [`FetchHandle::cancel`].
pub(crate) fn cancel(r: &mut Reactor, weak: &Weak<RefCell<Fetch>>) {
    let Some(rc) = weak.upgrade() else {
        return;
    };
    let busy = rc.try_borrow().map(|f| f.handler.is_none()).unwrap_or(true);
    if busy && is_active(weak) {
        // Called from one of this fetch's own callbacks: right after it.
        let weak = weak.clone();
        r.call_soon(move |r| cancel(r, &weak));
        return;
    }
    finish(r, &rc, Err(FetchError::Cancelled), true);
}

/// [`FetchHandle::is_active`].
pub(crate) fn is_active(weak: &Weak<RefCell<Fetch>>) -> bool {
    weak.upgrade()
        .is_some_and(|rc| rc.try_borrow().map_or(true, |f| !matches!(f.phase, Phase::Done)))
}
