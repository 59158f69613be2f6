//! Gemini responses: every status the specification defines, the header
//! (`<STATUS> <META>\r\n`) checked where it is built, and the body (bytes,
//! a file streamed from disk, or a stream produced over time).
//!
//! A meta longer than [`MAX_META`] bytes or holding a CR, an LF or another
//! control character is refused by the constructor that was given it
//! ([`InvalidMeta`]), so a header that would break the protocol is never
//! sent.

use std::fmt;
use std::fs::File;
use std::time::Duration;

use crate::producer::{BytesSource, ReadSource, Source};

/// The longest meta sent, in bytes (the limit of the original
/// specification, which every client still assumes).
pub const MAX_META: usize = 1024;

/// A Gemini status code: every one the specification (v0.24) defines, and
/// no other (a server must not send undefined codes).
///
/// ```
/// use twistor_protocols::gemini::Status;
/// assert_eq!(Status::NotFound.code(), 51);
/// assert_eq!(Status::from_code(44), Some(Status::SlowDown));
/// assert_eq!(Status::from_code(21), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// 10: the client should ask the user for a line of input.
    Input,
    /// 11: as 10, for a secret (not echoed).
    SensitiveInput,
    /// 20: the body follows; meta is its MIME type.
    Success,
    /// 30: go to meta (a URL), this time.
    RedirectTemporary,
    /// 31: go to meta, from now on.
    RedirectPermanent,
    /// 40: failed, may work later.
    TemporaryFailure,
    /// 41: overloaded or in maintenance.
    ServerUnavailable,
    /// 42: a CGI script (or similar) failed or timed out.
    CgiError,
    /// 43: a proxied request failed.
    ProxyError,
    /// 44: too many requests; slow down.
    SlowDown,
    /// 50: failed, and will fail again.
    PermanentFailure,
    /// 51: no such resource.
    NotFound,
    /// 52: the resource is gone for good.
    Gone,
    /// 53: this server does not serve that host, port or scheme.
    ProxyRequestRefused,
    /// 59: the request is malformed.
    BadRequest,
    /// 60: a client certificate is needed.
    ClientCertificateRequired,
    /// 61: the certificate is not authorised for this resource.
    CertificateNotAuthorised,
    /// 62: the certificate is not valid (dates, signature).
    CertificateNotValid,
}

impl Status {
    /// Every status, in code order.
    pub const ALL: [Status; 18] = [
        Status::Input,
        Status::SensitiveInput,
        Status::Success,
        Status::RedirectTemporary,
        Status::RedirectPermanent,
        Status::TemporaryFailure,
        Status::ServerUnavailable,
        Status::CgiError,
        Status::ProxyError,
        Status::SlowDown,
        Status::PermanentFailure,
        Status::NotFound,
        Status::Gone,
        Status::ProxyRequestRefused,
        Status::BadRequest,
        Status::ClientCertificateRequired,
        Status::CertificateNotAuthorised,
        Status::CertificateNotValid,
    ];

    /// The two-digit code.
    pub fn code(self) -> u8 {
        match self {
            Status::Input => 10,
            Status::SensitiveInput => 11,
            Status::Success => 20,
            Status::RedirectTemporary => 30,
            Status::RedirectPermanent => 31,
            Status::TemporaryFailure => 40,
            Status::ServerUnavailable => 41,
            Status::CgiError => 42,
            Status::ProxyError => 43,
            Status::SlowDown => 44,
            Status::PermanentFailure => 50,
            Status::NotFound => 51,
            Status::Gone => 52,
            Status::ProxyRequestRefused => 53,
            Status::BadRequest => 59,
            Status::ClientCertificateRequired => 60,
            Status::CertificateNotAuthorised => 61,
            Status::CertificateNotValid => 62,
        }
    }

    /// The status with this code, if the specification defines one.
    pub fn from_code(code: u8) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.code() == code)
    }

    /// Whether the meta must not be empty (1x prompts, 2x MIME types, 3x
    /// URLs); for 4x, 5x and 6x it is an optional message.
    pub fn meta_required(self) -> bool {
        self.code() < 40
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

/// Why a meta was refused.
///
/// ```
/// use twistor_protocols::gemini::{InvalidMeta, Response};
/// assert!(matches!(Response::not_found("a\r\n20 text/gemini"), Err(InvalidMeta::Control)));
/// assert!(matches!(Response::input("x".repeat(2000)), Err(InvalidMeta::TooLong(2000))));
/// assert!(matches!(Response::redirect(""), Err(InvalidMeta::Empty)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidMeta {
    /// Longer than [`MAX_META`] bytes (the length is given).
    TooLong(usize),
    /// Holds a CR, an LF or another control character.
    Control,
    /// Empty where the status needs one (a prompt, a MIME type, a URL).
    Empty,
}

impl fmt::Display for InvalidMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidMeta::TooLong(n) => write!(f, "meta of {n} bytes is over the {MAX_META}-byte limit"),
            InvalidMeta::Control => f.write_str("meta holds a CR, LF or other control character"),
            InvalidMeta::Empty => f.write_str("this status needs a non-empty meta"),
        }
    }
}

impl std::error::Error for InvalidMeta {}

/// Check a meta for `status`.
fn check_meta(status: Status, meta: &str) -> Result<(), InvalidMeta> {
    if meta.len() > MAX_META {
        return Err(InvalidMeta::TooLong(meta.len()));
    }
    if meta.chars().any(char::is_control) {
        return Err(InvalidMeta::Control);
    }
    if status.meta_required() && meta.trim().is_empty() {
        return Err(InvalidMeta::Empty);
    }
    Ok(())
}

/// A response body.
pub enum Body {
    /// No body (every status but 20, or an empty document).
    Empty,
    /// Bytes in memory.
    Bytes(Vec<u8>),
    /// A file, streamed from disk with backpressure.
    File(File),
    /// Any [`Source`]: a stream produced over time, with backpressure (see
    /// [`producer::channel`](crate::producer::channel)).
    Stream(Box<dyn Source>),
}

impl Body {
    /// The body as a source for a [`Sender`](crate::producer::Sender), or
    /// `None` when there is nothing to send.
    pub fn into_source(self) -> Option<Box<dyn Source>> {
        match self {
            Body::Empty => None,
            Body::Bytes(b) if b.is_empty() => None,
            Body::Bytes(b) => Some(Box::new(BytesSource::new(b))),
            Body::File(f) => Some(Box::new(ReadSource::new(f))),
            Body::Stream(s) => Some(s),
        }
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Body::Empty => f.write_str("Empty"),
            Body::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            Body::File(_) => f.write_str("File"),
            Body::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// A Gemini response: a status, its meta, and (for 20) a body.
///
/// Every constructor that takes text checks it ([`InvalidMeta`]), so a
/// handler uses `?`:
///
/// ```
/// use twistor_protocols::gemini::{Response, Status};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let r = Response::gemtext("# Hello\n")?;
/// assert_eq!(r.status(), Status::Success);
/// assert_eq!(r.header(), "20 text/gemini\r\n");
/// let r = Response::input("Your name?")?;
/// assert_eq!(r.header(), "10 Your name?\r\n");
/// let r = Response::slow_down(std::time::Duration::from_millis(1500));
/// assert_eq!(r.header(), "44 2\r\n");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Response {
    status: Status,
    meta: String,
    body: Body,
}

impl Response {
    /// A response with `status` and `meta` (checked) and no body.
    pub fn new(status: Status, meta: impl Into<String>) -> Result<Response, InvalidMeta> {
        let meta = meta.into();
        check_meta(status, &meta)?;
        Ok(Response {
            status,
            meta,
            body: Body::Empty,
        })
    }

    /// A response whose meta is known to be valid (the constant ones).
    fn fixed(status: Status, meta: &'static str) -> Response {
        debug_assert!(check_meta(status, meta).is_ok());
        Response {
            status,
            meta: meta.to_string(),
            body: Body::Empty,
        }
    }

    /// 10: ask the user for input; the client repeats the request with it
    /// as the query (see [`Request::input`](super::Request::input)).
    pub fn input(prompt: impl Into<String>) -> Result<Response, InvalidMeta> {
        Response::new(Status::Input, prompt)
    }

    /// 11: ask for a secret (not echoed).
    pub fn sensitive_input(prompt: impl Into<String>) -> Result<Response, InvalidMeta> {
        Response::new(Status::SensitiveInput, prompt)
    }

    /// 20 with a MIME type; add a body with [`with_body`](Self::with_body)
    /// or [`with_file`](Self::with_file).
    pub fn success(mime: impl Into<String>) -> Result<Response, InvalidMeta> {
        Response::new(Status::Success, mime)
    }

    /// 20 `text/gemini` with `text` as the body.
    pub fn gemtext(text: impl Into<String>) -> Result<Response, InvalidMeta> {
        Ok(Response::fixed(Status::Success, "text/gemini").with_body(text.into().into_bytes()))
    }

    /// 30: go to `url` this time.
    pub fn redirect(url: impl Into<String>) -> Result<Response, InvalidMeta> {
        Response::new(Status::RedirectTemporary, url)
    }

    /// 31: go to `url` from now on.
    pub fn redirect_permanent(url: impl Into<String>) -> Result<Response, InvalidMeta> {
        Response::new(Status::RedirectPermanent, url)
    }

    /// 40 with a message (may be empty).
    pub fn temporary_failure(msg: impl Into<String>) -> Result<Response, InvalidMeta> {
        Response::new(Status::TemporaryFailure, msg)
    }

    /// 41 with a message.
    pub fn server_unavailable(msg: impl Into<String>) -> Result<Response, InvalidMeta> {
        Response::new(Status::ServerUnavailable, msg)
    }

    /// 42 with a message.
    pub fn cgi_error(msg: impl Into<String>) -> Result<Response, InvalidMeta> {
        Response::new(Status::CgiError, msg)
    }

    /// 43 with a message.
    pub fn proxy_error(msg: impl Into<String>) -> Result<Response, InvalidMeta> {
        Response::new(Status::ProxyError, msg)
    }

    /// 44 with the whole seconds to wait (rounded up) as the meta, as
    /// jetforce answers.
    pub fn slow_down(wait: Duration) -> Response {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Response {
            status: Status::SlowDown,
            meta: secs.max(1).to_string(),
            body: Body::Empty,
        }
    }

    /// 50 with a message.
    pub fn permanent_failure(msg: impl Into<String>) -> Result<Response, InvalidMeta> {
        Response::new(Status::PermanentFailure, msg)
    }

    /// 51 with a message.
    pub fn not_found(msg: impl Into<String>) -> Result<Response, InvalidMeta> {
        Response::new(Status::NotFound, msg)
    }

    /// 52 with a message.
    pub fn gone(msg: impl Into<String>) -> Result<Response, InvalidMeta> {
        Response::new(Status::Gone, msg)
    }

    /// 53 with a message.
    pub fn proxy_request_refused(msg: impl Into<String>) -> Result<Response, InvalidMeta> {
        Response::new(Status::ProxyRequestRefused, msg)
    }

    /// 59 with a message.
    pub fn bad_request(msg: impl Into<String>) -> Result<Response, InvalidMeta> {
        Response::new(Status::BadRequest, msg)
    }

    /// 60 with a message (say why a certificate is needed).
    pub fn certificate_required(msg: impl Into<String>) -> Result<Response, InvalidMeta> {
        Response::new(Status::ClientCertificateRequired, msg)
    }

    /// 61 with a message.
    pub fn certificate_not_authorised(msg: impl Into<String>) -> Result<Response, InvalidMeta> {
        Response::new(Status::CertificateNotAuthorised, msg)
    }

    /// 62 with a message.
    pub fn certificate_not_valid(msg: impl Into<String>) -> Result<Response, InvalidMeta> {
        Response::new(Status::CertificateNotValid, msg)
    }

    /// 51 `Not found`.
    pub fn not_found_default() -> Response {
        Response::fixed(Status::NotFound, "Not found")
    }

    /// Set the body (sent only with status 20).
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Response {
        self.body = Body::Bytes(body.into());
        self
    }

    /// Stream `file` as the body (sent only with status 20).
    pub fn with_file(mut self, file: File) -> Response {
        self.body = Body::File(file);
        self
    }

    /// Stream `source` as the body (sent only with status 20).
    ///
    /// ```
    /// use twistor_protocols::gemini::Response;
    /// use twistor_protocols::producer::channel;
    /// let (writer, body) = channel(64 * 1024);
    /// let r = Response::success("text/plain").unwrap().with_stream(body);
    /// # let _ = (r, writer);
    /// ```
    pub fn with_stream(mut self, source: impl Source) -> Response {
        self.body = Body::Stream(Box::new(source));
        self
    }

    /// The status.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The meta.
    pub fn meta(&self) -> &str {
        &self.meta
    }

    /// The header line, CRLF included.
    pub fn header(&self) -> String {
        if self.meta.is_empty() {
            format!("{}\r\n", self.status.code())
        } else {
            format!("{} {}\r\n", self.status.code(), self.meta)
        }
    }

    /// Split into status, meta and body.
    pub fn into_parts(self) -> (Status, String, Body) {
        (self.status, self.meta, self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips() {
        for s in Status::ALL {
            assert_eq!(Status::from_code(s.code()), Some(s));
        }
        for code in 0..=99u8 {
            if let Some(s) = Status::from_code(code) {
                assert_eq!(s.code(), code);
            }
        }
    }

    #[test]
    fn meta_limits() {
        assert!(Response::not_found("x".repeat(MAX_META)).is_ok());
        assert_eq!(
            Response::not_found("x".repeat(MAX_META + 1)).unwrap_err(),
            InvalidMeta::TooLong(MAX_META + 1)
        );
        assert_eq!(Response::not_found("a\nb").unwrap_err(), InvalidMeta::Control);
        assert_eq!(Response::not_found("a\rb").unwrap_err(), InvalidMeta::Control);
        assert_eq!(Response::success(" ").unwrap_err(), InvalidMeta::Empty);
        assert_eq!(Response::not_found("").unwrap().header(), "51\r\n");
        assert_eq!(Response::slow_down(Duration::ZERO).meta(), "1");
        assert_eq!(Response::slow_down(Duration::from_secs(3)).meta(), "3");
    }
}
