//! The application framework (jetforce's, in Rust): a [`Handler`] answers a
//! [`Request`], now or later; a [`Router`] maps path patterns with named
//! captures (optionally on one host) to handlers; helpers ask for input
//! and require client certificates.
//!
//! A handler answers with a [`Reply`]: a [`Response`] now, or
//! [`Reply::Later`] after taking a [`Responder`] from its [`Context`] to
//! answer when its work is done (a timer, a thread, a child process).
//! Returning an error answers `42` and logs it; returning a
//! [`HandlerError::Answer`] (what `?` makes of a `Result<_, Response>`,
//! such as [`require_cert`]'s) answers that response.
//!
//! ```
//! use twistor_protocols::gemini::{require_cert, Request, Response, Router};
//!
//! let mut app = Router::new();
//! app.route("/", |_req| Ok(Response::gemtext("# Home\n=> /hello/world Say hello\n")?));
//! app.route("/hello/<name>", |req| {
//!     let name = req.capture("name").unwrap_or("nobody");
//!     Ok(Response::gemtext(format!("Hello, {name}!\n"))?)
//! });
//! app.route("/private", |req| {
//!     let cert = require_cert(req)?; // 60 or 62 when it is missing or expired
//!     Ok(Response::gemtext(format!("Your key: {}\n", cert.fingerprint()))?)
//! });
//!
//! let answer = app.answer_for_test(Request::for_test("gemini://localhost/hello/you"));
//! assert_eq!(answer.header(), "20 text/gemini\r\n");
//! let answer = app.answer_for_test(Request::for_test("gemini://localhost/private"));
//! assert_eq!(answer.status().code(), 60);
//! let answer = app.answer_for_test(Request::for_test("gemini://localhost/nowhere"));
//! assert_eq!(answer.status().code(), 51);
//! ```

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;
use std::time::SystemTime;

use twistor_reactor::{CallError, ConnId, Reactor, Remote};

use super::request::{normalize_host, ClientCert, Request};
use super::response::Response;
use super::titan::{not_accepted, UploadFlow, UploadReceiver};

/// Why a handler did not produce a reply.
pub enum HandlerError {
    /// Answer this response instead (an early return: a prompt, 60, 51...).
    Answer(Response),
    /// Something failed: logged, and answered with `42`.
    Failed(Box<dyn std::error::Error>),
}

impl<E: std::error::Error + 'static> From<E> for HandlerError {
    fn from(e: E) -> HandlerError {
        HandlerError::Failed(Box::new(e))
    }
}

impl From<Response> for HandlerError {
    fn from(r: Response) -> HandlerError {
        HandlerError::Answer(r)
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandlerError::Answer(r) => write!(f, "Answer({:?})", r.header()),
            HandlerError::Failed(e) => write!(f, "Failed({e})"),
        }
    }
}

/// What a handler answers.
#[derive(Debug)]
pub enum Reply {
    /// This response, now.
    Now(Response),
    /// Later, through the [`Responder`] taken with [`Context::defer`].
    Later,
}

impl From<Response> for Reply {
    fn from(r: Response) -> Reply {
        Reply::Now(r)
    }
}

/// What a handler can reach besides the request: the reactor (timers,
/// threads, processes) and a way to answer later.
pub struct Context<'a> {
    reactor: &'a mut Reactor,
    conn: ConnId,
    deferred: Cell<bool>,
    pause: Cell<bool>,
}

impl<'a> Context<'a> {
    /// A context for connection `conn`.
    pub fn new(reactor: &'a mut Reactor, conn: ConnId) -> Context<'a> {
        Context {
            reactor,
            conn,
            deferred: Cell::new(false),
            pause: Cell::new(false),
        }
    }

    /// The reactor.
    pub fn reactor(&mut self) -> &mut Reactor {
        self.reactor
    }

    /// The connection's id.
    pub fn conn_id(&self) -> ConnId {
        self.conn
    }

    /// Answer later: return [`Reply::Later`] and call
    /// [`Responder::send`] when the answer is ready.
    pub fn defer(&mut self) -> Responder {
        self.deferred.set(true);
        Responder {
            conn: self.conn,
            remote: Some(self.reactor.remote()),
        }
    }

    /// Whether [`defer`](Self::defer) was called.
    pub fn is_deferred(&self) -> bool {
        self.deferred.get()
    }

    /// Flow control of a Titan upload coming over this connection.
    pub fn upload_flow(&self) -> UploadFlow {
        UploadFlow::new(self.conn)
    }

    /// Stop reading this connection's upload as soon as the current call
    /// ([`Handler::accept_upload`] or [`UploadReceiver::data`]) returns, until
    /// [`UploadFlow::resume`]: for a receiver that must wait (for a backend
    /// to connect, for room to write).
    ///
    /// ```
    /// use twistor_protocols::gemini::{Context, HandlerError, Reply, UploadFlow, UploadReceiver};
    ///
    /// /// Holds the body until something else says it may go on.
    /// struct Gate { held: Vec<u8>, flow: Option<UploadFlow> }
    /// impl UploadReceiver for Gate {
    ///     fn data(&mut self, cx: &mut Context<'_>, chunk: &[u8]) -> Result<(), HandlerError> {
    ///         self.held.extend_from_slice(chunk);
    ///         cx.pause_upload(); // resumed later with self.flow's resume()
    ///         self.flow = Some(cx.upload_flow());
    ///         Ok(())
    ///     }
    ///     fn end(self: Box<Self>, _: &mut Context<'_>) -> Result<Reply, HandlerError> {
    ///         Ok(twistor_protocols::gemini::Response::gemtext("ok\n")?.into())
    ///     }
    /// }
    /// ```
    pub fn pause_upload(&self) {
        self.pause.set(true);
    }

    /// Whether [`pause_upload`](Self::pause_upload) was called.
    pub fn is_upload_paused(&self) -> bool {
        self.pause.get()
    }
}

/// Answers a request later (see [`Context::defer`]). Dropped without an
/// answer, it answers `40` so the client is not left waiting.
///
/// ```
/// use std::time::Duration;
/// use twistor_protocols::gemini::{Reply, Response, Router};
///
/// let mut app = Router::new();
/// // Answers after a second, without holding up the other connections.
/// app.route_deferred("/slow", |_req, cx| {
///     let responder = cx.defer();
///     cx.reactor().call_later(Duration::from_secs(1), move |r| {
///         let _ = responder.send(r, Response::gemtext("Thanks for waiting.\n").unwrap());
///     });
///     Ok(Reply::Later)
/// });
/// ```
pub struct Responder {
    conn: ConnId,
    remote: Option<Remote>,
}

impl Responder {
    /// Send the answer. [`CallError::Gone`] if the client went away
    /// meanwhile.
    pub fn send(mut self, r: &mut Reactor, response: Response) -> Result<(), CallError> {
        self.remote = None;
        r.call_on(self.conn, move |p, t| super::server::deliver(p, t, response))
    }

    /// The connection this responder answers.
    pub fn conn_id(&self) -> ConnId {
        self.conn
    }

    /// Give up answering: the connection is answered another way (or
    /// gone), so nothing is sent, not even the `40` of a dropped responder.
    ///
    /// ```
    /// use twistor_protocols::gemini::Context;
    /// let mut r = twistor_reactor::Reactor::new().unwrap();
    /// let mut cx = Context::new(&mut r, twistor_reactor::ConnId::from_token(twistor_reactor::mio::Token(1)));
    /// let responder = cx.defer();
    /// responder.dismiss(); // nothing queued
    /// assert!(!r.has_queued_work());
    /// ```
    pub fn dismiss(mut self) {
        self.remote = None;
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(remote) = self.remote.take() {
            let conn = self.conn;
            log::warn!("{conn}: a deferred response was dropped unanswered; answering 40");
            let _ = remote.call(move |r| {
                let _ = r.call_on(conn, |p, t| {
                    let answer = Response::temporary_failure("No response").expect("valid meta");
                    super::server::deliver(p, t, answer)
                });
            });
        }
    }
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Responder({})", self.conn)
    }
}

/// Answers requests: a [`Router`], [`StaticFiles`](super::StaticFiles), or
/// your own type.
///
/// ```
/// use twistor_protocols::gemini::{Context, Handler, HandlerError, Reply, Request, Response};
///
/// /// Answers every request with its own path.
/// struct Mirror;
/// impl Handler for Mirror {
///     fn handle(&self, req: Request, _cx: &mut Context<'_>) -> Result<Reply, HandlerError> {
///         Ok(Response::gemtext(format!("You asked for {}\n", req.path()))?.into())
///     }
/// }
/// ```
pub trait Handler: 'static {
    /// Answer `req`, now or later.
    fn handle(&self, req: Request, cx: &mut Context<'_>) -> Result<Reply, HandlerError>;

    /// Accept a Titan upload to `req` ([`Request::titan`] gives its size,
    /// type and token): return the receiver its body streams into, or
    /// refuse with an answer, sent before a byte of the body is read (a
    /// size over the limit is `59`). The default takes no uploads: `53`,
    /// as for any scheme a server does not serve.
    ///
    /// ```
    /// use twistor_protocols::gemini::{
    ///     check_upload_size, collect, Context, Handler, HandlerError, Reply, Request, Response, UploadReceiver,
    /// };
    ///
    /// /// Takes uploads of up to 1 KiB anywhere, and says how long they were.
    /// struct Sizer;
    /// impl Handler for Sizer {
    ///     fn handle(&self, _: Request, _: &mut Context<'_>) -> Result<Reply, HandlerError> {
    ///         Ok(Response::gemtext("Send me something with Titan.\n")?.into())
    ///     }
    ///     fn accept_upload(&self, req: Request, _: &mut Context<'_>) -> Result<Box<dyn UploadReceiver>, HandlerError> {
    ///         check_upload_size(&req, 1024)?;
    ///         Ok(collect(&req, |_, body| Ok(Response::gemtext(format!("{} bytes\n", body.len()))?.into())))
    ///     }
    /// }
    /// ```
    fn accept_upload(
        &self,
        req: Request,
        cx: &mut Context<'_>,
    ) -> Result<Box<dyn UploadReceiver>, HandlerError> {
        let _ = (req, cx);
        Err(not_accepted())
    }
}

impl Handler for Box<dyn Handler> {
    fn handle(&self, req: Request, cx: &mut Context<'_>) -> Result<Reply, HandlerError> {
        (**self).handle(req, cx)
    }

    fn accept_upload(
        &self,
        req: Request,
        cx: &mut Context<'_>,
    ) -> Result<Box<dyn UploadReceiver>, HandlerError> {
        (**self).accept_upload(req, cx)
    }
}

impl Handler for Rc<dyn Handler> {
    fn handle(&self, req: Request, cx: &mut Context<'_>) -> Result<Reply, HandlerError> {
        (**self).handle(req, cx)
    }

    fn accept_upload(
        &self,
        req: Request,
        cx: &mut Context<'_>,
    ) -> Result<Box<dyn UploadReceiver>, HandlerError> {
        (**self).accept_upload(req, cx)
    }
}

/// 60 if `req` came without a client certificate, 62 if the certificate
/// is outside its validity; otherwise the certificate.
///
/// ```
/// use twistor_protocols::gemini::{require_cert, Request};
/// let answer = require_cert(&Request::for_test("gemini://localhost/")).unwrap_err();
/// assert_eq!(answer.header(), "60 A client certificate is required\r\n");
/// ```
pub fn require_cert(req: &Request) -> Result<&ClientCert, Response> {
    let Some(cert) = req.client_cert() else {
        return Err(Response::certificate_required("A client certificate is required").expect("valid"));
    };
    if !cert.is_valid_at(SystemTime::now()) {
        return Err(
            Response::certificate_not_valid("The certificate is expired or not yet valid").expect("valid"),
        );
    }
    Ok(cert)
}

/// Like [`require_cert`], and 61 unless the certificate chains to the CA
/// the server was configured with (`--tls-cafile`).
pub fn require_authorised_cert(req: &Request) -> Result<&ClientCert, Response> {
    let cert = require_cert(req)?;
    if !cert.authorised {
        return Err(
            Response::certificate_not_authorised("This certificate is not authorised here").expect("valid"),
        );
    }
    Ok(cert)
}

/// The user's input (the decoded query), or a 10 prompt asking for it.
///
/// ```
/// use twistor_protocols::gemini::{input, Request};
/// assert_eq!(input(&Request::for_test("gemini://h/q?a%20b"), "Say:").unwrap(), "a b");
/// assert_eq!(input(&Request::for_test("gemini://h/q"), "Say:").unwrap_err().header(), "10 Say:\r\n");
/// ```
pub fn input(req: &Request, prompt: &str) -> Result<String, Response> {
    match req.input() {
        Some(text) => Ok(text),
        None => Err(Response::input(prompt).unwrap_or_else(bad_prompt)),
    }
}

/// Like [`input`], with an 11 prompt (the client hides what is typed).
pub fn sensitive_input(req: &Request, prompt: &str) -> Result<String, Response> {
    match req.input() {
        Some(text) => Ok(text),
        None => Err(Response::sensitive_input(prompt).unwrap_or_else(bad_prompt)),
    }
}

fn bad_prompt(e: super::InvalidMeta) -> Response {
    log::error!("invalid input prompt: {e}");
    Response::cgi_error("Invalid prompt").expect("valid")
}

// ----- patterns ------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `<name>`: one segment.
    Capture(String),
    /// `<*name>`: the rest of the path (possibly empty).
    Rest(String),
}

/// A route pattern: `[host]/path/<name>/<*rest>`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    host: Option<String>,
    segments: Vec<Segment>,
}

impl Pattern {
    fn parse(text: &str) -> Result<Pattern, String> {
        let slash = text
            .find('/')
            .ok_or_else(|| format!("route pattern {text:?} has no path (it must contain '/')"))?;
        let host = match &text[..slash] {
            "" => None,
            h => Some(normalize_host(h)?),
        };
        let mut segments = Vec::new();
        let parts: Vec<&str> = text[slash + 1..].split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            let seg = if let Some(name) = part.strip_prefix("<*").and_then(|p| p.strip_suffix('>')) {
                if i + 1 != parts.len() {
                    return Err(format!("in {text:?}, <*{name}> must be the last segment"));
                }
                Segment::Rest(name.to_string())
            } else if let Some(name) = part.strip_prefix('<').and_then(|p| p.strip_suffix('>')) {
                Segment::Capture(name.to_string())
            } else {
                Segment::Literal(part.to_string())
            };
            segments.push(seg);
        }
        Ok(Pattern { host, segments })
    }

    fn matches(&self, host: &str, path: &str) -> Option<Vec<(String, String)>> {
        if self.host.as_deref().is_some_and(|h| h != host) {
            return None;
        }
        let path = path.strip_prefix('/').unwrap_or(path);
        let mut rest = path;
        let mut captures = Vec::new();
        for (i, seg) in self.segments.iter().enumerate() {
            let last = i + 1 == self.segments.len();
            if let Segment::Rest(name) = seg {
                captures.push((name.clone(), rest.to_string()));
                return Some(captures);
            }
            let (part, tail) = match rest.split_once('/') {
                Some((p, t)) if !last => (p, Some(t)),
                Some(_) => return None,
                None if last => (rest, None),
                None => return None,
            };
            match seg {
                Segment::Literal(l) if l == part => {}
                Segment::Capture(name) if !part.is_empty() => captures.push((name.clone(), part.to_string())),
                _ => return None,
            }
            rest = tail.unwrap_or("");
        }
        Some(captures)
    }
}

// ----- the router -------------------------------------------------------------------

/// A handler from a closure answering now.
struct Now<F>(F);
impl<F> Handler for Now<F>
where
    F: Fn(&Request) -> Result<Response, HandlerError> + 'static,
{
    fn handle(&self, req: Request, _: &mut Context<'_>) -> Result<Reply, HandlerError> {
        (self.0)(&req).map(Reply::Now)
    }
}

/// A handler from a closure that may answer later.
struct Deferred<F>(F);
impl<F> Handler for Deferred<F>
where
    F: Fn(Request, &mut Context<'_>) -> Result<Reply, HandlerError> + 'static,
{
    fn handle(&self, req: Request, cx: &mut Context<'_>) -> Result<Reply, HandlerError> {
        (self.0)(req, cx)
    }
}

/// A handler from a closure accepting uploads up to a size.
struct Uploads<F> {
    max_size: u64,
    f: F,
}
impl<F> Handler for Uploads<F>
where
    F: Fn(&Request, &mut Context<'_>) -> Result<Box<dyn UploadReceiver>, HandlerError> + 'static,
{
    fn handle(&self, _: Request, _: &mut Context<'_>) -> Result<Reply, HandlerError> {
        // Never routed here: an upload route takes only Titan requests.
        Ok(Reply::Now(Response::not_found_default()))
    }

    fn accept_upload(
        &self,
        req: Request,
        cx: &mut Context<'_>,
    ) -> Result<Box<dyn UploadReceiver>, HandlerError> {
        check_upload_size(&req, self.max_size)?;
        (self.f)(&req, cx)
    }
}

/// `59` if `req` declares an upload larger than `max_size` bytes.
///
/// ```
/// use twistor_protocols::gemini::{check_upload_size, Request};
/// let req = Request::for_test("titan://h/a;size=2000");
/// assert_eq!(check_upload_size(&req, 1000).unwrap_err().header(), "59 The upload is larger than 1000 bytes\r\n");
/// assert!(check_upload_size(&req, 2000).is_ok());
/// ```
pub fn check_upload_size(req: &Request, max_size: u64) -> Result<(), Response> {
    match req.titan() {
        Some(t) if t.size > max_size => Err(Response::bad_request(format!(
            "The upload is larger than {max_size} bytes"
        ))
        .expect("valid meta")),
        _ => Ok(()),
    }
}

/// Which requests a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Takes {
    /// Gemini requests ([`Router::route`], [`Router::route_deferred`]).
    Gemini,
    /// Titan uploads ([`Router::upload`]).
    Titan,
    /// Both, the handler deciding ([`Router::handler`], [`Router::mount`]).
    Both,
}

impl Takes {
    fn takes(self, titan: bool) -> bool {
        match self {
            Takes::Gemini => !titan,
            Takes::Titan => titan,
            Takes::Both => true,
        }
    }
}

/// What a route matches: a pattern, or a mounted prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Matcher {
    Pattern(Pattern),
    /// A path prefix (no trailing slash; `""` for everything), optionally
    /// on one host.
    Prefix {
        host: Option<String>,
        prefix: String,
    },
}

struct Route {
    matcher: Matcher,
    takes: Takes,
    handler: Box<dyn Handler>,
}

/// Routes requests to handlers by path pattern (jetforce's
/// `JetforceApplication`).
///
/// A pattern is a path whose segments are literals, `<name>` (one
/// non-empty segment, captured) or a final `<*name>` (the rest of the path,
/// possibly empty, captured); it may start with a host name
/// (`example.org/notes/<id>`) to match only that host. Paths are matched
/// decoded and exactly (`/notes` and `/notes/` differ). The first route
/// that matches wins; without one, the fallback handler answers, or 51.
///
/// Titan uploads go to the routes added with [`upload`](Self::upload),
/// [`handler`](Self::handler) or [`mount`](Self::mount) (never to
/// [`route`](Self::route)'s), then to the fallback; without one, `53`.
///
/// ```
/// use twistor_protocols::gemini::{Request, Response, Router};
/// let mut app = Router::new();
/// app.route("/files/<*path>", |req| Ok(Response::gemtext(req.capture("path").unwrap().to_string())?));
/// app.route("other.example/", |_| Ok(Response::gemtext("the other host\n")?));
/// let a = app.answer_for_test(Request::for_test("gemini://localhost/files/a/b%20c"));
/// assert_eq!(a.status().code(), 20);
/// ```
#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
    fallback: Option<Box<dyn Handler>>,
}

impl Router {
    /// A router with no routes (everything is 51).
    pub fn new() -> Router {
        Router::default()
    }

    fn add(&mut self, pattern: &str, takes: Takes, handler: Box<dyn Handler>) -> &mut Router {
        match Pattern::parse(pattern) {
            Ok(p) => self.routes.push(Route {
                matcher: Matcher::Pattern(p),
                takes,
                handler,
            }),
            // A bad pattern is a programming error, found at start-up.
            Err(e) => panic!("{e}"),
        }
        self
    }

    /// Answer requests matching `pattern` with `f`, now. Panics if
    /// `pattern` is malformed (no `/`, or `<*rest>` not last).
    pub fn route(
        &mut self,
        pattern: &str,
        f: impl Fn(&Request) -> Result<Response, HandlerError> + 'static,
    ) -> &mut Router {
        self.add(pattern, Takes::Gemini, Box::new(Now(f)))
    }

    /// Answer requests matching `pattern` with `f`, which may answer
    /// later (see [`Responder`]).
    pub fn route_deferred(
        &mut self,
        pattern: &str,
        f: impl Fn(Request, &mut Context<'_>) -> Result<Reply, HandlerError> + 'static,
    ) -> &mut Router {
        self.add(pattern, Takes::Gemini, Box::new(Deferred(f)))
    }

    /// Accept Titan uploads of at most `max_size` bytes to paths matching
    /// `pattern`: `f` returns the receiver of the body (see
    /// [`collect`](super::collect) for a small one held in memory). A
    /// larger upload is answered `59` before a byte of it is read.
    ///
    /// ```
    /// use twistor_protocols::gemini::{collect, Request, Response, Router};
    /// let mut app = Router::new();
    /// app.upload("/inbox/<name>", 64 * 1024, |req, _cx| {
    ///     Ok(collect(req, |req, body| {
    ///         println!("{} bytes for {}", body.len(), req.capture("name").unwrap());
    ///         Ok(Response::redirect(req.gemini_url())?.into())
    ///     }))
    /// });
    /// ```
    pub fn upload(
        &mut self,
        pattern: &str,
        max_size: u64,
        f: impl Fn(&Request, &mut Context<'_>) -> Result<Box<dyn UploadReceiver>, HandlerError> + 'static,
    ) -> &mut Router {
        self.add(pattern, Takes::Titan, Box::new(Uploads { max_size, f }))
    }

    /// Answer requests matching `pattern` with any handler (its uploads
    /// too).
    pub fn handler(&mut self, pattern: &str, h: impl Handler) -> &mut Router {
        self.add(pattern, Takes::Both, Box::new(h))
    }

    /// Answer every request under the path `prefix` (the prefix itself,
    /// and anything below it) with `h`, uploads too: a backend such as an
    /// [`Scgi`](super::Scgi) application or a [`GeminiProxy`](super::GeminiProxy).
    /// The handler sees the prefix as [`Request::mount_point`] and the
    /// rest as [`Request::path_info`]. `prefix` may start with a host name
    /// (`example.org/app`); `/` mounts everything. Panics if `prefix` has
    /// no `/`.
    ///
    /// ```
    /// use twistor_protocols::gemini::{Request, Response, Router};
    /// let mut app = Router::new();
    /// app.route("/", |_| Ok(Response::gemtext("home\n")?));
    /// let mut inner = Router::new();
    /// inner.route("/app/<*rest>", |req| Ok(Response::gemtext(req.path_info().to_string())?));
    /// app.mount("/app", inner);
    /// let a = app.answer_for_test(Request::for_test("gemini://h/app/x"));
    /// assert_eq!(a.status().code(), 20);
    /// let a = app.answer_for_test(Request::for_test("gemini://h/application"));
    /// assert_eq!(a.status().code(), 51);
    /// ```
    pub fn mount(&mut self, prefix: &str, h: impl Handler) -> &mut Router {
        let slash = prefix
            .find('/')
            .unwrap_or_else(|| panic!("mount prefix {prefix:?} has no path (it must contain '/')"));
        let host = match &prefix[..slash] {
            "" => None,
            h => Some(normalize_host(h).unwrap_or_else(|e| panic!("{e}"))),
        };
        let prefix = prefix[slash..].trim_end_matches('/').to_string();
        self.routes.push(Route {
            matcher: Matcher::Prefix { host, prefix },
            takes: Takes::Both,
            handler: Box::new(h),
        });
        self
    }

    /// Answer requests no route matches with `h` (e.g. a
    /// [`StaticFiles`](super::StaticFiles)); its uploads too.
    pub fn fallback(&mut self, h: impl Handler) -> &mut Router {
        self.fallback = Some(Box::new(h));
        self
    }

    /// Run the router on `req` outside a server, for tests and examples:
    /// the answer it gives now (`40` if it would answer later).
    pub fn answer_for_test(&self, req: Request) -> Response {
        let mut r = Reactor::new().expect("a reactor");
        let mut cx = Context::new(&mut r, req.conn_id());
        match self.handle(req, &mut cx) {
            Ok(Reply::Now(resp)) | Err(HandlerError::Answer(resp)) => resp,
            Ok(Reply::Later) => Response::temporary_failure("answered later").expect("valid"),
            Err(HandlerError::Failed(e)) => Response::cgi_error(e.to_string()).expect("valid"),
        }
    }

    /// The route for `req`, with the request's captures or mount point set.
    fn find(&self, req: &mut Request) -> Option<&dyn Handler> {
        let host = req.hostname();
        let titan = req.titan().is_some();
        for route in self.routes.iter().filter(|r| r.takes.takes(titan)) {
            match &route.matcher {
                Matcher::Pattern(p) => {
                    if let Some(captures) = p.matches(&host, req.path()) {
                        req.set_captures(captures);
                        return Some(&*route.handler);
                    }
                }
                Matcher::Prefix { host: h, prefix } => {
                    let path = req.path();
                    let under = path == prefix
                        || path
                            .strip_prefix(prefix.as_str())
                            .is_some_and(|r| r.starts_with('/'));
                    if h.as_deref().map_or(true, |h| h == host) && under {
                        req.set_mount(prefix);
                        return Some(&*route.handler);
                    }
                }
            }
        }
        self.fallback.as_deref()
    }
}

impl Handler for Router {
    fn handle(&self, mut req: Request, cx: &mut Context<'_>) -> Result<Reply, HandlerError> {
        match self.find(&mut req) {
            Some(h) => h.handle(req, cx),
            None => Ok(Reply::Now(Response::not_found_default())),
        }
    }

    fn accept_upload(
        &self,
        mut req: Request,
        cx: &mut Context<'_>,
    ) -> Result<Box<dyn UploadReceiver>, HandlerError> {
        match self.find(&mut req) {
            Some(h) => h.accept_upload(req, cx),
            None => Err(not_accepted()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, host: &str, path: &str) -> Option<Vec<(String, String)>> {
        Pattern::parse(p).unwrap().matches(host, path)
    }

    #[test]
    fn patterns() {
        assert_eq!(m("/", "h", "/"), Some(vec![]));
        assert_eq!(m("/", "h", "/a"), None);
        assert_eq!(m("/a", "h", "/a/"), None);
        assert_eq!(m("/a/", "h", "/a/"), Some(vec![]));
        assert_eq!(m("/n/<id>", "h", "/n/7"), Some(vec![("id".into(), "7".into())]));
        assert_eq!(m("/n/<id>", "h", "/n/"), None);
        assert_eq!(m("/n/<id>", "h", "/n/7/8"), None);
        assert_eq!(m("/f/<*p>", "h", "/f/"), Some(vec![("p".into(), "".into())]));
        assert_eq!(
            m("/f/<*p>", "h", "/f/a/b"),
            Some(vec![("p".into(), "a/b".into())])
        );
        assert_eq!(m("Example.ORG/x", "example.org", "/x"), Some(vec![]));
        assert_eq!(m("example.org/x", "other.org", "/x"), None);
        assert!(Pattern::parse("nopath").is_err());
        assert!(Pattern::parse("/<*a>/b").is_err());
    }

    struct Echo;
    impl Handler for Echo {
        fn handle(&self, req: Request, _: &mut Context<'_>) -> Result<Reply, HandlerError> {
            let text = format!("{}|{}", req.mount_point(), req.path_info());
            Ok(Response::gemtext(text)?.into())
        }
    }

    fn body(r: Response) -> String {
        match r.into_parts().2 {
            super::super::Body::Bytes(b) => String::from_utf8(b).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mounts() {
        let mut app = Router::new();
        app.mount("/app/", Echo);
        app.mount("other.example/", Echo);
        let ask = |url: &str| app.answer_for_test(Request::for_test(url));
        assert_eq!(body(ask("gemini://h/app")), "/app|");
        assert_eq!(body(ask("gemini://h/app/x/y")), "/app|/x/y");
        assert_eq!(ask("gemini://h/apple").status().code(), 51);
        assert_eq!(body(ask("gemini://other.example/z")), "|/z");
    }

    #[test]
    fn uploads_go_only_to_routes_that_take_them() {
        let mut app = Router::new();
        app.route("/a", |_| Ok(Response::gemtext("read")?));
        app.upload("/a", 10, |req, _| {
            Ok(super::super::collect(req, |_, _| {
                Ok(Response::gemtext("written")?.into())
            }))
        });
        let mut r = Reactor::new().unwrap();
        let up = |url: &str, r: &mut Reactor| {
            let req = Request::for_test(url);
            let mut cx = Context::new(r, req.conn_id());
            app.accept_upload(req, &mut cx).map(|_| ()).map_err(|e| match e {
                HandlerError::Answer(a) => a.status().code(),
                HandlerError::Failed(_) => 42,
            })
        };
        assert_eq!(up("titan://h/a;size=10", &mut r), Ok(()));
        assert_eq!(up("titan://h/a;size=11", &mut r), Err(59));
        assert_eq!(up("titan://h/b;size=1", &mut r), Err(53));
        assert_eq!(
            body(app.answer_for_test(Request::for_test("gemini://h/a"))),
            "read"
        );
    }
}
