//! Titan uploads, Gemini's companion protocol for writing: the request's
//! parameters, the receiver an upload's body streams into, and the flow
//! control a receiver uses when it cannot keep up.
//!
//! A Titan request is `titan://host/path;size=N;mime=T;token=X` and CRLF,
//! then exactly `N` bytes of body, then the server's ordinary Gemini
//! response. The parameters sit on the last path segment, in any order:
//! `size` is required (decimal bytes; `0` asks to delete the resource),
//! `mime` defaults to `text/gemini`, `token` is optional; values are
//! percent-decoded, and a parameter the specification does not define is
//! ignored. A malformed or missing `size`, a repeated parameter, or a
//! value holding a control character is refused with `59`.
//!
//! The server asks the virtual host's [`Handler::accept_upload`](super::Handler::accept_upload)
//! for an [`UploadReceiver`] before it reads a byte of the body (a handler
//! that refuses answers at once: a size over its limit is `59`), then
//! feeds it the body as it arrives, chunk by chunk (the bytes that came in
//! the same packet as the request line first), and asks it for the answer
//! once all `N` bytes are in. A receiver that cannot take more for now
//! pauses the client with [`UploadFlow::pause`] and resumes it later. A
//! client that stops sending before `N` bytes is cut off after the
//! server's [`upload_timeout`](super::ServerOptions::upload_timeout), and
//! the receiver is told to [`abort`](UploadReceiver::abort).

use percent_encoding::percent_decode_str;
use twistor_reactor::{ConnId, Reactor};

use super::request::{Refusal, Request};
use super::response::{Response, Status};
use super::router::{Context, HandlerError, Reply};

/// Default largest upload a route or a directory accepts (10 MiB).
pub const DEFAULT_MAX_UPLOAD: u64 = 10 * 1024 * 1024;

/// The MIME type of an upload that names none.
pub const DEFAULT_UPLOAD_MIME: &str = "text/gemini";

/// A Titan request's parameters.
///
/// ```
/// use twistor_protocols::gemini::Request;
/// let req = Request::for_test("titan://example.org/notes/a.gmi;mime=text/plain;size=5;token=s%20t");
/// let titan = req.titan().unwrap();
/// assert_eq!((titan.size, titan.mime.as_str(), titan.token.as_deref()), (5, "text/plain", Some("s t")));
/// assert_eq!(req.path(), "/notes/a.gmi");
/// assert_eq!(req.gemini_url(), "gemini://example.org/notes/a.gmi");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Titan {
    /// The body's size in bytes (`0`: delete the resource).
    pub size: u64,
    /// The body's MIME type (default [`DEFAULT_UPLOAD_MIME`]).
    pub mime: String,
    /// The token the client sent, if any (percent-decoded).
    pub token: Option<String>,
}

impl Titan {
    /// Parse the parameters after the last path segment's first `;`
    /// (`size=10;mime=text/plain`), in any order.
    ///
    /// ```
    /// use twistor_protocols::gemini::Titan;
    /// assert_eq!(Titan::parse("size=0").unwrap().mime, "text/gemini");
    /// assert!(Titan::parse("mime=text/plain").is_err()); // no size
    /// assert!(Titan::parse("size=-1").is_err());
    /// assert!(Titan::parse("size=1;size=2").is_err());
    /// ```
    pub fn parse(params: &str) -> Result<Titan, Refusal> {
        let mut size = None;
        let mut mime = None;
        let mut token = None;
        for param in params.split(';') {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            let slot = match key {
                "size" => &mut size,
                "mime" => &mut mime,
                "token" => &mut token,
                // "No other parameters are used": a later extension's are ignored.
                _ => continue,
            };
            if slot.is_some() {
                return Err(bad("A Titan parameter is given twice"));
            }
            let value = percent_decode_str(value)
                .decode_utf8()
                .map_err(|_| bad("A Titan parameter is not valid UTF-8 once decoded"))?;
            if value.chars().any(char::is_control) {
                return Err(bad("A Titan parameter holds a control character"));
            }
            *slot = Some(value.into_owned());
        }
        let size = size.ok_or(bad("A Titan request needs a size parameter"))?;
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("The Titan size must be a number of bytes"));
        }
        let size: u64 = size.parse().map_err(|_| bad("The Titan size is too large"))?;
        let mime = match mime {
            Some(m) if m.trim().is_empty() => return Err(bad("The Titan MIME type is empty")),
            Some(m) => m,
            None => DEFAULT_UPLOAD_MIME.to_string(),
        };
        Ok(Titan { size, mime, token })
    }
}

const fn bad(meta: &'static str) -> Refusal {
    Refusal {
        status: Status::BadRequest,
        meta,
    }
}

/// Split an encoded path into the path and the Titan parameters of its
/// last segment: from the first `;` after which only `name=value` pairs
/// (or bare names) follow, names being letters, digits, `-` and `_`.
/// Only `mime` and `token` values may hold a `/` (a MIME type does), so
/// `/a;v=1/b;size=3` is the path `/a;v=1/b`.
pub(crate) fn split_params(raw_path: &str) -> (&str, Option<&str>) {
    let is_param = |p: &str| {
        let (name, value) = p.split_once('=').unwrap_or((p, ""));
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && (!value.contains('/') || name == "mime" || name == "token")
    };
    for (i, _) in raw_path.match_indices(';') {
        let tail = &raw_path[i + 1..];
        if tail.split(';').all(is_param) {
            return (&raw_path[..i], Some(tail));
        }
    }
    (raw_path, None)
}

/// `url` with the value of every `;token=` parameter replaced by `-`,
/// for log lines (a token is a password).
pub(crate) fn redact_token(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(i) = rest.find(";token=") {
        let start = i + ";token=".len();
        out.push_str(&rest[..start]);
        out.push('-');
        let tail = &rest[start..];
        rest = &tail[tail.find([';', '?', '#', '\r', '\n']).unwrap_or(tail.len())..];
    }
    out.push_str(rest);
    out
}

/// Receives a Titan upload's body as it arrives (what
/// [`Handler::accept_upload`](super::Handler::accept_upload) returns). The chunks come
/// in order and add up to exactly the declared size; then
/// [`end`](Self::end) answers. If the upload will not complete (the
/// client went away or stalled, or the answer came first),
/// [`abort`](Self::abort) is called instead, to undo what was done.
///
/// ```
/// use twistor_protocols::gemini::{Context, HandlerError, Reply, Response, UploadReceiver};
///
/// /// Counts the bytes uploaded and says how many came.
/// struct Count(u64);
/// impl UploadReceiver for Count {
///     fn data(&mut self, _cx: &mut Context<'_>, chunk: &[u8]) -> Result<(), HandlerError> {
///         self.0 += chunk.len() as u64;
///         Ok(())
///     }
///     fn end(self: Box<Self>, _cx: &mut Context<'_>) -> Result<Reply, HandlerError> {
///         Ok(Response::gemtext(format!("{} bytes\n", self.0))?.into())
///     }
/// }
/// ```
pub trait UploadReceiver: 'static {
    /// The next bytes of the body. An error answers at once (the rest of
    /// the body is not read, and [`abort`](Self::abort) is called).
    fn data(&mut self, cx: &mut Context<'_>, chunk: &[u8]) -> Result<(), HandlerError>;

    /// The whole body has arrived: answer, now or later (through a
    /// [`Responder`](super::Responder)).
    fn end(self: Box<Self>, cx: &mut Context<'_>) -> Result<Reply, HandlerError>;

    /// The upload will not complete: undo what was done (remove a
    /// temporary file, close a backend connection).
    fn abort(self: Box<Self>, r: &mut Reactor) {
        let _ = r;
    }
}

/// Pauses and resumes reading an upload's body from its client: a
/// receiver whose output is slower than the client (a busy backend) calls
/// [`pause`](Self::pause) and later [`resume`](Self::resume). While
/// paused, the upload timeout does not run. Cheap to copy.
///
/// ```
/// use twistor_protocols::gemini::{Context, UploadFlow};
/// let mut r = twistor_reactor::Reactor::new().unwrap();
/// let cx = Context::new(&mut r, twistor_reactor::ConnId::from_token(twistor_reactor::mio::Token(1)));
/// let flow: UploadFlow = cx.upload_flow();
/// assert_eq!(flow.conn_id(), cx.conn_id());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadFlow {
    conn: ConnId,
}

impl UploadFlow {
    /// Flow control for the upload on connection `conn`.
    pub fn new(conn: ConnId) -> UploadFlow {
        UploadFlow { conn }
    }

    /// The connection the upload comes over.
    pub fn conn_id(&self) -> ConnId {
        self.conn
    }

    /// Stop reading the body for now (takes effect after the current
    /// callback).
    pub fn pause(&self, r: &mut Reactor) {
        let _ = r.call_on(self.conn, |p, t| super::server::flow(p, t, true));
    }

    /// Read the body again.
    pub fn resume(&self, r: &mut Reactor) {
        let _ = r.call_on(self.conn, |p, t| super::server::flow(p, t, false));
    }
}

/// A receiver that gathers the whole body in memory, then calls `f` with
/// the request and the body: for small uploads to a route whose size limit
/// bounds the memory (see [`Router::upload`](super::Router::upload)).
///
/// ```
/// use twistor_protocols::gemini::{collect, Response, Router};
/// let mut app = Router::new();
/// app.upload("/notes/<name>", 4096, |req, _cx| {
///     Ok(collect(req, |req, body| {
///         let text = String::from_utf8(body).map_err(|_| Response::bad_request("Not UTF-8").unwrap())?;
///         Ok(Response::redirect(req.gemini_url())?.into())
///     }))
/// });
/// ```
pub fn collect(
    req: &Request,
    f: impl FnOnce(Request, Vec<u8>) -> Result<Reply, HandlerError> + 'static,
) -> Box<dyn UploadReceiver> {
    let size = req.titan().map_or(0, |t| t.size);
    Box::new(Collect {
        req: req.clone(),
        // The declared size, checked against the route's limit already.
        body: Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(1 << 20)),
        f: Box::new(f),
    })
}

type Finish = Box<dyn FnOnce(Request, Vec<u8>) -> Result<Reply, HandlerError>>;

struct Collect {
    req: Request,
    body: Vec<u8>,
    f: Finish,
}

impl UploadReceiver for Collect {
    fn data(&mut self, _: &mut Context<'_>, chunk: &[u8]) -> Result<(), HandlerError> {
        self.body.extend_from_slice(chunk);
        Ok(())
    }

    fn end(self: Box<Self>, _: &mut Context<'_>) -> Result<Reply, HandlerError> {
        let Collect { req, body, f } = *self;
        f(req, body)
    }
}

/// What a handler that takes no uploads answers a Titan request: 53, as
/// for any scheme a server does not serve.
pub(crate) fn not_accepted() -> HandlerError {
    HandlerError::Answer(
        Response::proxy_request_refused("Titan uploads are not accepted here").expect("valid meta"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params() {
        let t = Titan::parse("token=a%3Bb;size=12;mime=image/png").unwrap();
        assert_eq!(
            t,
            Titan {
                size: 12,
                mime: "image/png".into(),
                token: Some("a;b".into())
            }
        );
        assert_eq!(Titan::parse("size=3;edit").unwrap().size, 3);
        for bad in [
            "",
            "size",
            "size=",
            "size=+1",
            "size=1e3",
            "size=99999999999999999999999",
            "size=1;mime=",
            "size=1;token=a%0Ab",
            "size=1;token=%ff",
            "size=1;mime=a;mime=b",
        ] {
            assert_eq!(
                Titan::parse(bad).map_err(|r| r.status),
                Err(Status::BadRequest),
                "{bad}"
            );
        }
    }

    #[test]
    fn tokens_are_not_logged() {
        assert_eq!(
            redact_token("titan://h/a;size=3;token=s3cret;mime=x?q"),
            "titan://h/a;size=3;token=-;mime=x?q"
        );
        assert_eq!(redact_token("titan://h/a;token=s3cret"), "titan://h/a;token=-");
        assert_eq!(redact_token("gemini://h/a"), "gemini://h/a");
    }

    #[test]
    fn splitting() {
        assert_eq!(split_params("/a/b;size=1"), ("/a/b", Some("size=1")));
        assert_eq!(
            split_params("/a;x/b;size=2;mime=t"),
            ("/a;x/b", Some("size=2;mime=t"))
        );
        assert_eq!(
            split_params("/u;size=2;mime=text/plain;token=a"),
            ("/u", Some("size=2;mime=text/plain;token=a"))
        );
        assert_eq!(split_params("/a;x/b"), ("/a;x/b", None));
        assert_eq!(split_params("/a;v=1/b;size=3"), ("/a;v=1/b", Some("size=3")));
        assert_eq!(split_params("/"), ("/", None));
        assert_eq!(split_params("/;size=1"), ("/", Some("size=1")));
    }
}
