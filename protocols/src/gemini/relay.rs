//! A backend that answers a request for the server: an SCGI application
//! or an upstream Gemini server. One backend connection per request: the
//! request is sent (and a Titan body streamed after it, as it arrives),
//! and the backend's Gemini response is relayed to the client as it comes.
//!
//! The two connections reach each other by id, as the portforward
//! example's do, with backpressure both ways:
//!
//! - backend to client: the body goes through a [`channel`]; while the
//!   client's transport is over its high-water mark (or the channel over
//!   its own), the backend connection is not read, so the backend blocks
//!   and memory stays at about two high-water marks;
//! - client to backend (an upload): while the backend connection's write
//!   buffer is over its high-water mark, the client's upload is not read
//!   ([`UploadFlow`]); before the backend is connected it is not read
//!   either.
//!
//! The relay's life is one named [`Stage`], changed in one place. The
//! backend must connect and send a valid header within the timeout (of
//! the upload's last byte, for an upload), and then must not fall silent
//! for that long while the client is reading;
//! otherwise the client gets the failure status (`42` for SCGI, `43` for a
//! proxy) if nothing was sent yet, or its connection is cut (no
//! close_notify, so it cannot mistake a cut body for a whole one).

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use twistor_reactor::{
    Address, ClientFactory, ConnId, Connector, DelayedCall, Factory, Protocol, Reactor, Reason, Transport,
};
use twistor_transports::tls::rustls::ClientConfig;
use twistor_transports::tls::{TlsClientFactory, TlsOptions};
use twistor_transports::unix::{connect_unix_with, UnixConnectOptions};
use twistor_transports::{connect_tcp_with, ConnectOptions};

use super::cgi::{parse_header, MAX_HEADER};
use super::response::{Response, Status};
use super::router::{Context, HandlerError, Reply, Responder};
use super::titan::{UploadFlow, UploadReceiver};
use crate::producer::{channel, BodyWriter, Flow, DEFAULT_CHANNEL_HIGH_WATER};

/// Where a backend listens.
#[derive(Clone)]
pub(crate) enum Dial {
    /// Plain TCP (SCGI).
    Tcp { host: String, port: u16 },
    /// A Unix-domain socket (SCGI).
    Unix(PathBuf),
    /// TLS over TCP (a Gemini upstream): `sni` is the name sent and
    /// verified.
    Tls {
        host: String,
        port: u16,
        sni: String,
        config: Arc<ClientConfig>,
    },
}

impl Dial {
    fn connect(&self, r: &mut Reactor, factory: RelayFactory, timeout: Duration) -> Connector {
        match self {
            Dial::Tcp { host, port } => {
                let opts = ConnectOptions {
                    timeout,
                    ..ConnectOptions::default()
                };
                connect_tcp_with(r, host, *port, factory, opts)
            }
            Dial::Unix(path) => {
                let opts = UnixConnectOptions {
                    timeout,
                    ..UnixConnectOptions::default()
                };
                connect_unix_with(r, path.as_path(), factory, opts)
            }
            Dial::Tls {
                host,
                port,
                sni,
                config,
            } => {
                let tls = TlsOptions {
                    handshake_timeout: Some(timeout),
                    ..TlsOptions::default()
                };
                let opts = ConnectOptions {
                    timeout,
                    ..ConnectOptions::default()
                };
                let factory = TlsClientFactory::new(factory, config.clone(), sni, tls);
                connect_tcp_with(r, host, *port, factory, opts)
            }
        }
    }
}

/// How a relay fails and how long it waits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    /// Answered when the backend fails before answering.
    pub(crate) failure: Status,
    /// Its meta.
    pub(crate) meta: &'static str,
    /// What the backend is, for log lines.
    pub(crate) what: &'static str,
    /// To connect and answer; then the longest silence while relaying.
    pub(crate) timeout: Duration,
}

/// Writes the request to the backend once it is connected.
pub(crate) type WriteHead = Box<dyn FnOnce(&mut dyn Transport)>;

/// Where a relay is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Connecting to the backend (and, for TLS, the handshake).
    Connecting,
    /// The request is sent; waiting for the header line.
    Awaiting,
    /// Relaying the body of a `20`.
    Relaying,
    /// Finished, failed or given up.
    Done,
}

/// What the client's side and the backend's side share.
pub(crate) struct Link {
    spec: Spec,
    client: ConnId,
    stage: Cell<Stage>,
    responder: RefCell<Option<Responder>>,
    backend: Cell<Option<ConnId>>,
    connector: RefCell<Option<Connector>>,
    /// The connect-and-answer timeout, then the silence timeout.
    timer: Cell<Option<DelayedCall>>,
    /// Upload bytes that came before the backend was connected.
    early: RefCell<Vec<u8>>,
    /// The client's upload is paused until the backend is connected.
    upload_waits: Cell<bool>,
    /// The client cannot take more: the backend is not read.
    paused: Cell<bool>,
}

impl Link {
    /// The one place the stage changes.
    fn enter(&self, next: Stage) {
        let now = self.stage.get();
        let legal = matches!(
            (now, next),
            (Stage::Connecting, Stage::Awaiting | Stage::Done)
                | (Stage::Awaiting, Stage::Relaying | Stage::Done)
                | (Stage::Relaying, Stage::Done)
        );
        assert!(legal, "relay: {now:?} -> {next:?} is not a legal step");
        self.stage.set(next);
    }

    fn disarm(&self, r: &mut Reactor) {
        if let Some(t) = self.timer.take() {
            t.cancel(r);
        }
    }

    /// (Re)start the timer; when it fires, `why` is the failure.
    fn arm(self: &Rc<Self>, r: &mut Reactor, why: &'static str) {
        self.disarm(r);
        let weak: Weak<Link> = Rc::downgrade(self);
        let timeout = self.spec.timeout;
        let call = r.call_later(timeout, move |r| {
            if let Some(link) = weak.upgrade() {
                link.timer.set(None);
                link.fail(r, &format!("{why} within {timeout:?}"));
            }
        });
        self.timer.set(Some(call));
    }

    /// The backend failed or is given up: the client gets the failure
    /// status if nothing was sent to it yet, else its connection is cut.
    fn fail(&self, r: &mut Reactor, why: &str) {
        if self.stage.get() == Stage::Done {
            return;
        }
        let stage = self.stage.get();
        self.enter(Stage::Done);
        self.disarm(r);
        self.close_backend(r, stage);
        let responder = self.responder.borrow_mut().take();
        match responder {
            Some(responder) => {
                log::warn!(
                    "{}: {}: {why}; answering {}",
                    self.client,
                    self.spec.what,
                    self.spec.failure
                );
                let answer = Response::new(self.spec.failure, self.spec.meta).expect("valid meta");
                let _ = responder.send(r, answer);
            }
            None => {
                log::warn!("{}: {}: {why}; cutting the response", self.client, self.spec.what);
                let _ = r.call_on(self.client, |_, t| t.abort_connection());
            }
        }
    }

    /// Give up without answering (the client is answered otherwise, or
    /// gone).
    fn give_up(&self, r: &mut Reactor) {
        if self.stage.get() == Stage::Done {
            return;
        }
        let stage = self.stage.get();
        self.enter(Stage::Done);
        self.disarm(r);
        self.close_backend(r, stage);
        let responder = self.responder.borrow_mut().take();
        if let Some(responder) = responder {
            responder.dismiss();
        }
    }

    fn close_backend(&self, r: &mut Reactor, stage: Stage) {
        match self.backend.get() {
            Some(id) => {
                let _ = r.call_on(id, |_, t| t.abort_connection());
            }
            None if stage == Stage::Connecting => {
                let connector = self.connector.borrow_mut().take();
                if let Some(c) = connector {
                    c.stop_connecting(r);
                }
            }
            None => {}
        }
    }

    fn answered(&self) -> bool {
        self.responder.borrow().is_none()
    }

    /// Tell the backend's connection to pause or resume reading.
    fn backend_reading(&self, r: &mut Reactor, on: bool) {
        if let Some(id) = self.backend.get() {
            let _ = r.call_on(
                id,
                move |_, t| {
                    if on {
                        t.resume_reading()
                    } else {
                        t.pause_reading()
                    }
                },
            );
        }
    }
}

/// Connect to the backend and send it `head` once connected; the answer
/// goes to the client through a responder taken from `cx` now. The link
/// returned feeds an upload's body (see [`Forward`]).
pub(crate) fn start(cx: &mut Context<'_>, dial: &Dial, spec: Spec, head: WriteHead) -> Rc<Link> {
    let link = Rc::new(Link {
        spec,
        client: cx.conn_id(),
        stage: Cell::new(Stage::Connecting),
        responder: RefCell::new(Some(cx.defer())),
        backend: Cell::new(None),
        connector: RefCell::new(None),
        timer: Cell::new(None),
        early: RefCell::new(Vec::new()),
        upload_waits: Cell::new(false),
        paused: Cell::new(false),
    });
    link.arm(cx.reactor(), "no answer");
    let factory = RelayFactory {
        link: link.clone(),
        head: Some(head),
    };
    let connector = dial.connect(cx.reactor(), factory, spec.timeout);
    *link.connector.borrow_mut() = Some(connector);
    link
}

/// The answer to a request relayed to a backend: later.
pub(crate) fn later() -> Result<Reply, HandlerError> {
    Ok(Reply::Later)
}

/// Builds the backend's protocol; hears a failed connect.
struct RelayFactory {
    link: Rc<Link>,
    head: Option<WriteHead>,
}

impl Factory for RelayFactory {
    fn build_protocol(&mut self, _: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(Backend {
            link: self.link.clone(),
            head: self.head.take(),
            header: Vec::new(),
            writer: None,
        }))
    }
}

impl ClientFactory for RelayFactory {
    fn client_connection_failed(&mut self, r: &mut Reactor, c: &Connector, reason: &Reason) {
        if self.link.stage.get() == Stage::Connecting {
            // Nothing to stop: this attempt is over.
            self.link.connector.borrow_mut().take();
        }
        self.link
            .fail(r, &format!("cannot connect to {}: {reason}", c.destination()));
    }
}

/// The backend connection's protocol.
struct Backend {
    link: Rc<Link>,
    head: Option<WriteHead>,
    /// The header line so far (at most `MAX_HEADER + 1` bytes).
    header: Vec<u8>,
    /// Where a `20`'s body goes.
    writer: Option<BodyWriter>,
}

impl Backend {
    fn on_header(&mut self, t: &mut dyn Transport, data: &[u8]) {
        let room = (MAX_HEADER + 1).saturating_sub(self.header.len());
        let taken = data.len().min(room);
        self.header.extend_from_slice(&data[..taken]);
        let Some(lf) = self.header.iter().position(|&b| b == b'\n') else {
            if self.header.len() > MAX_HEADER {
                self.link.fail(t.reactor(), "the header line is too long");
            }
            return;
        };
        let header = std::mem::take(&mut self.header);
        let line = header[..lf].strip_suffix(b"\r").unwrap_or(&header[..lf]);
        let Some((status, meta)) = parse_header(line) else {
            let shown = String::from_utf8_lossy(line).into_owned();
            let why = format!("not a valid Gemini header: {shown:?}");
            return self.link.fail(t.reactor(), &why);
        };
        let mut rest = header[lf + 1..].to_vec();
        rest.extend_from_slice(&data[taken..]);
        self.answer(t, status, meta, rest);
    }

    fn answer(&mut self, t: &mut dyn Transport, status: Status, meta: String, rest: Vec<u8>) {
        let link = self.link.clone();
        link.disarm(t.reactor());
        let responder = link.responder.borrow_mut().take();
        let Some(responder) = responder else {
            return;
        };
        let resp = Response::new(status, meta).expect("checked");
        if status != Status::Success {
            // Only a success has a body: the rest is not wanted.
            link.enter(Stage::Done);
            let _ = responder.send(t.reactor(), resp);
            t.lose_connection();
            return;
        }
        let (writer, body) = channel(DEFAULT_CHANNEL_HIGH_WATER);
        let weak = Rc::downgrade(&link);
        writer.on_flow(move |r, flow| {
            if let Some(link) = weak.upgrade() {
                on_flow(&link, r, flow);
            }
        });
        if responder.send(t.reactor(), resp.with_stream(body)).is_err() {
            link.enter(Stage::Done);
            t.abort_connection();
            return;
        }
        link.enter(Stage::Relaying);
        link.arm(t.reactor(), "no more of the body");
        if !rest.is_empty() && writer.write(t.reactor(), &rest).is_err() {
            link.give_up(t.reactor());
        }
        self.writer = Some(writer);
    }

    /// The body is complete.
    fn complete(&mut self, t: &mut dyn Transport) {
        if self.link.stage.get() == Stage::Relaying {
            self.link.enter(Stage::Done);
            self.link.disarm(t.reactor());
            if let Some(w) = self.writer.take() {
                w.close(t.reactor());
            }
        }
    }
}

/// The client's side asks the backend's to pause, resume or stop.
fn on_flow(link: &Rc<Link>, r: &mut Reactor, flow: Flow) {
    match flow {
        Flow::Pause => {
            link.paused.set(true);
            if link.stage.get() == Stage::Relaying {
                link.disarm(r);
            }
            link.backend_reading(r, false);
        }
        Flow::Resume => {
            link.paused.set(false);
            if link.stage.get() == Stage::Relaying {
                link.arm(r, "no more of the body");
            }
            link.backend_reading(r, true);
        }
        Flow::Stop => {
            log::debug!(
                "{}: the client went away; closing its {}",
                link.client,
                link.spec.what
            );
            link.give_up(r);
        }
    }
}

impl Protocol for Backend {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        let link = self.link.clone();
        if link.stage.get() != Stage::Connecting {
            // Given up meanwhile.
            t.abort_connection();
            return;
        }
        link.backend.set(Some(t.id()));
        link.connector.borrow_mut().take();
        link.enter(Stage::Awaiting);
        if let Some(head) = self.head.take() {
            head(t);
        }
        let early = std::mem::take(&mut *link.early.borrow_mut());
        if !early.is_empty() {
            t.write(&early);
        }
        if link.upload_waits.replace(false) {
            UploadFlow::new(link.client).resume(t.reactor());
        }
    }

    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        match self.link.stage.get() {
            Stage::Awaiting => self.on_header(t, data),
            Stage::Relaying => {
                let Some(writer) = &self.writer else {
                    return;
                };
                if writer.write(t.reactor(), data).is_err() {
                    self.link.give_up(t.reactor());
                    return;
                }
                if !self.link.paused.get() {
                    if let Some(timer) = self.link.timer.get() {
                        timer.reset(t.reactor(), self.link.spec.timeout);
                    }
                }
            }
            Stage::Connecting | Stage::Done => {}
        }
    }

    fn eof_received(&mut self, t: &mut dyn Transport) -> bool {
        match self.link.stage.get() {
            Stage::Awaiting => self.link.fail(t.reactor(), "it closed without answering"),
            Stage::Relaying => self.complete(t),
            Stage::Connecting | Stage::Done => {}
        }
        false
    }

    fn connection_lost(&mut self, t: &mut dyn Transport, reason: &Reason) {
        match self.link.stage.get() {
            Stage::Awaiting => {
                let why = format!("the connection ended before an answer ({reason})");
                self.link.fail(t.reactor(), &why);
            }
            Stage::Relaying if reason.is_clean() => self.complete(t),
            Stage::Relaying => {
                let why = format!("the connection ended mid-body ({reason})");
                self.link.fail(t.reactor(), &why);
            }
            Stage::Connecting | Stage::Done => {}
        }
        self.writer = None;
    }

    fn pause_writing(&mut self, t: &mut dyn Transport) {
        // An upload is coming faster than the backend takes it.
        UploadFlow::new(self.link.client).pause(t.reactor());
    }

    fn resume_writing(&mut self, t: &mut dyn Transport) {
        UploadFlow::new(self.link.client).resume(t.reactor());
    }
}

/// Streams a Titan upload's body to the backend.
pub(crate) struct Forward {
    link: Rc<Link>,
}

impl Forward {
    pub(crate) fn boxed(link: Rc<Link>) -> Box<dyn UploadReceiver> {
        Box::new(Forward { link })
    }
}

impl UploadReceiver for Forward {
    fn data(&mut self, cx: &mut Context<'_>, chunk: &[u8]) -> Result<(), HandlerError> {
        match (self.link.stage.get(), self.link.backend.get()) {
            (Stage::Connecting, _) => {
                // Held until the backend is connected; the client waits.
                self.link.early.borrow_mut().extend_from_slice(chunk);
                if !self.link.upload_waits.replace(true) {
                    cx.pause_upload();
                }
            }
            (stage @ (Stage::Awaiting | Stage::Relaying), Some(backend)) => {
                let _ = cx.reactor().write_to(backend, chunk.to_vec());
                if stage == Stage::Awaiting {
                    // The answer is due within the timeout of the last byte.
                    if let Some(timer) = self.link.timer.get() {
                        timer.reset(cx.reactor(), self.link.spec.timeout);
                    }
                }
            }
            // Answered or failed: the rest of the body is not wanted.
            _ => {}
        }
        Ok(())
    }

    fn end(self: Box<Self>, _: &mut Context<'_>) -> Result<Reply, HandlerError> {
        later()
    }

    fn abort(self: Box<Self>, r: &mut Reactor) {
        if !self.link.answered() {
            log::debug!(
                "{}: the upload did not complete; closing its {}",
                self.link.client,
                self.link.spec.what
            );
            self.link.give_up(r);
        }
    }
}
