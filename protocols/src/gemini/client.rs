//! A Gemini (and Titan) client: [`fetch`] a URL and get its response in a
//! callback, or [`fetch_with`] a [`FetchHandler`] that gets the body as it
//! arrives.
//!
//! The rules a fetch follows are in [`fetch`]'s docs.

use std::fmt;
use std::time::Duration;

use percent_encoding::utf8_percent_encode;
use twistor_reactor::Reactor;
use url::Url;

use super::client_error::FetchError;
use super::client_exchange;
use super::client_trust::{Identity, ServerCert, ServerTrust};
use super::client_upload::{titan_request, Upload, PARAM};
use super::request::{host_name, parse_request_line, MAX_REQUEST};
use super::response::{Status, MAX_META};

/// Redirects followed by default (the specification's advice).
pub const DEFAULT_MAX_REDIRECTS: usize = 5;
/// Time allowed by default to look the name up, connect and complete the
/// TLS handshake.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Time allowed by default for a whole fetch, redirects included.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest body [`fetch`] collects by default (16 MiB).
pub const DEFAULT_MAX_BODY: usize = 16 << 20;
/// The longest response header accepted: two digits, a space, a meta of
/// [`MAX_META`] bytes, CRLF.
pub const MAX_HEADER: usize = 2 + 1 + MAX_META + 2;
/// The port of a URL that names none.
pub const GEMINI_PORT: u16 = 1965;

/// How a fetch goes (every field has a default).
///
/// ```
/// use std::time::Duration;
/// use twistor_protocols::gemini::{FetchOptions, KnownHosts, ServerTrust};
/// let opts = FetchOptions {
///     trust: ServerTrust::KnownHosts(KnownHosts::in_memory()),
///     max_redirects: 2,
///     timeout: Some(Duration::from_secs(10)),
///     ..FetchOptions::default()
/// };
/// assert_eq!(opts.connect_timeout, twistor_protocols::gemini::DEFAULT_CONNECT_TIMEOUT);
/// ```
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Whom to trust (default: trust on first use, remembered in memory
    /// only; use [`KnownHosts::open_default`](super::KnownHosts::open_default)
    /// to share the user's known-hosts file).
    pub trust: ServerTrust,
    /// Accept a certificate that differs from the one remembered, and
    /// remember it instead (default: refuse it).
    pub trust_new: bool,
    /// The client certificate to present to the URL's host (default: none).
    pub identity: Option<Identity>,
    /// Redirects to follow ([`DEFAULT_MAX_REDIRECTS`]; 0 follows none).
    pub max_redirects: usize,
    /// Limit on name lookup, TCP connect and TLS handshake, for each
    /// connection ([`DEFAULT_CONNECT_TIMEOUT`]).
    pub connect_timeout: Duration,
    /// Limit on the whole fetch, redirects included
    /// ([`DEFAULT_FETCH_TIMEOUT`]; `None` for none).
    pub timeout: Option<Duration>,
    /// The largest body [`fetch`] collects ([`DEFAULT_MAX_BODY`]); past
    /// it the fetch fails with [`FetchError::BodyTooLarge`]. A
    /// [`FetchHandler`] gets the body in pieces and keeps what it wants.
    pub max_body: usize,
    /// A Titan upload, for a `titan://` URL (default: none).
    pub upload: Option<Upload>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            trust: ServerTrust::default(),
            trust_new: false,
            identity: None,
            max_redirects: DEFAULT_MAX_REDIRECTS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: Some(DEFAULT_FETCH_TIMEOUT),
            max_body: DEFAULT_MAX_BODY,
            upload: None,
        }
    }
}

/// What the user typed after a 10 or 11 becomes the query of the URL that
/// asked: percent-encoded (a space is `%20`), replacing any query.
///
/// ```
/// use twistor_protocols::gemini::with_input;
/// let url = url::Url::parse("gemini://example.org/search?old").unwrap();
/// assert_eq!(with_input(&url, "café & tea?").as_str(), "gemini://example.org/search?caf%C3%A9%20%26%20tea%3F");
/// ```
pub fn with_input(url: &Url, input: &str) -> Url {
    let mut u = url.clone();
    u.set_fragment(None);
    u.set_query(Some(&utf8_percent_encode(input, PARAM).to_string()));
    u
}

/// A URL checked for fetching: its host normalized (lowercase punycode,
/// addresses parsed), its port, and the request line that asks for it.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub url: Url,
    pub host: String,
    pub port: u16,
}

impl Target {
    /// Check `url` (a fragment is dropped: it is never sent).
    pub fn new(mut url: Url) -> Result<Target, FetchError> {
        url.set_fragment(None);
        if !matches!(url.scheme(), "gemini" | "titan") {
            return Err(FetchError::BadUrl(format!(
                "{url}: only gemini:// and titan:// URLs can be fetched"
            )));
        }
        // The host, port and form are checked as the server will check them;
        // a titan:// URL as its gemini:// twin, since its parameters (size
        // first of all) are added only when the request is made.
        let mut checked = url.clone();
        if url.scheme() == "titan" {
            let _ = checked.set_scheme("gemini");
        }
        let line = parse_request_line(format!("{checked}\r\n").as_bytes())
            .map_err(|refusal| FetchError::BadUrl(format!("{url}: {}", refusal.meta)))?
            .ok_or_else(|| FetchError::BadUrl(format!("{url}: not a valid request")))?;
        let host = host_name(&line.host);
        // Send the host as it is compared: punycode, lowercase.
        if matches!(line.host, url::Host::Domain(_)) && url.host_str() != Some(host.as_str()) {
            url.set_host(Some(&host))
                .map_err(|e| FetchError::BadUrl(format!("{url}: the host: {e}")))?;
        }
        Ok(Target {
            port: line.port.unwrap_or(GEMINI_PORT),
            url,
            host,
        })
    }

    /// `host:port` (an IPv6 address in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// What identifies this URL for loop detection.
    pub fn key(&self) -> String {
        format!(
            "{}://{}{}?{}",
            self.url.scheme(),
            self.authority(),
            match self.url.path() {
                "" => "/",
                p => p,
            },
            self.url.query().unwrap_or("")
        )
    }

    /// The request line (without CRLF), checked against the limit.
    pub fn request_line(&self, upload: Option<&Upload>) -> Result<String, FetchError> {
        let line = match upload {
            Some(u) => titan_request(&self.url, u)?,
            None if self.url.scheme() == "titan" => {
                return Err(FetchError::BadUrl(format!(
                    "{}: a titan:// URL needs something to upload",
                    self.url
                )))
            }
            None => self.url.to_string(),
        };
        if line.len() > MAX_REQUEST {
            return Err(FetchError::BadUrl(format!(
                "the request is {} bytes, over the {MAX_REQUEST}-byte limit of a Gemini request",
                line.len()
            )));
        }
        Ok(line)
    }
}

/// A response header, and where it came from.
///
/// ```
/// use twistor_protocols::gemini::ResponseHead;
/// /// What to do with a header, by its class.
/// fn describe(head: &ResponseHead) -> String {
///     match head.class() {
///         1 => format!("asks: {}", head.meta),
///         2 => format!("a {} document from {}", head.mime().unwrap(), head.url),
///         3 => format!("moved to {}", head.meta),
///         _ => format!("failed with {}: {}", head.code, head.meta),
///     }
/// }
/// # let _ = describe;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The URL that answered (after redirects, the last one).
    pub url: Url,
    /// The two-digit status code (10 to 69; codes the specification does
    /// not define are kept as sent: handle them by their first digit).
    pub code: u8,
    /// The meta: a prompt, a MIME type, a URL or a message.
    pub meta: String,
    /// The server's certificate and what was decided about it.
    pub server_cert: ServerCert,
}

impl ResponseHead {
    /// The status, if the specification defines this code.
    pub fn status(&self) -> Option<Status> {
        Status::from_code(self.code)
    }

    /// The first digit: 1 input, 2 success, 3 redirect, 4 temporary
    /// failure, 5 permanent failure, 6 client certificate.
    pub fn class(&self) -> u8 {
        self.code / 10
    }

    /// The body's MIME type for a 2x (`text/gemini; charset=utf-8` when
    /// the meta is empty, as the specification says).
    pub fn mime(&self) -> Option<&str> {
        match (self.class(), self.meta.trim()) {
            (2, "") => Some("text/gemini; charset=utf-8"),
            (2, m) => Some(m),
            _ => None,
        }
    }
}

/// One redirect that was followed.
///
/// ```
/// use twistor_protocols::gemini::FetchResponse;
/// /// The hops that left the host first asked.
/// fn elsewhere(resp: &FetchResponse) -> Vec<String> {
///     resp.redirects.iter().filter(|h| h.cross_host).map(|h| h.to.to_string()).collect()
/// }
/// # let _ = elsewhere;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// The URL that answered 3x.
    pub from: Url,
    /// Where it led.
    pub to: Url,
    /// 30 or 31 (or another 3x code).
    pub code: u8,
    /// Whether `to` is another host or port than `from` (the client
    /// certificate, if any, is not presented there).
    pub cross_host: bool,
}

/// Why a 3x response was not followed.
///
/// ```
/// use twistor_protocols::gemini::{FetchResponse, RedirectStop};
/// fn is_loop(resp: &FetchResponse) -> bool {
///     matches!(resp.redirect_stopped, Some(RedirectStop::Loop(_)))
/// }
/// # let _ = is_loop;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedirectStop {
    /// [`FetchOptions::max_redirects`] were followed already.
    Limit(usize),
    /// It leads to a URL this fetch already visited.
    Loop(Url),
    /// It leads to another scheme (only `gemini` is followed).
    Scheme(Url),
    /// Its meta is not a URL.
    Invalid(String),
}

impl fmt::Display for RedirectStop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedirectStop::Limit(n) => write!(f, "not followed: {n} redirects were followed already"),
            RedirectStop::Loop(u) => write!(f, "not followed: a redirect loop back to {u}"),
            RedirectStop::Scheme(u) => write!(f, "not followed: {u} is not a gemini:// URL"),
            RedirectStop::Invalid(m) => write!(f, "not followed: {m}"),
        }
    }
}

/// The result of a fetch: the last response, and how it was reached.
///
/// ```
/// use twistor_protocols::gemini::FetchResponse;
/// fn summary(resp: &FetchResponse) -> String {
///     format!(
///         "{} {} from {} after {} redirects, {} bytes",
///         resp.code(), resp.meta(), resp.url(), resp.redirects.len(), resp.body_len
///     )
/// }
/// # let _ = summary;
/// ```
#[derive(Debug, Clone)]
pub struct FetchResponse {
    /// The response header.
    pub head: ResponseHead,
    /// The body ([`fetch`] collects it; empty with a [`FetchHandler`],
    /// which got it in pieces).
    pub body: Vec<u8>,
    /// Bytes of body received.
    pub body_len: u64,
    /// The redirects followed, in order.
    pub redirects: Vec<Redirect>,
    /// Set when the response is a 3x that was not followed.
    pub redirect_stopped: Option<RedirectStop>,
    /// For an upload: the bytes sent (less than its size when the server
    /// answered before it had them all).
    pub upload_sent: Option<u64>,
}

impl FetchResponse {
    /// The status code.
    pub fn code(&self) -> u8 {
        self.head.code
    }

    /// The meta.
    pub fn meta(&self) -> &str {
        &self.head.meta
    }

    /// The URL that answered.
    pub fn url(&self) -> &Url {
        &self.head.url
    }
}

/// Gets a fetch's responses as they arrive (see [`fetch_with`]). All
/// callbacks run on the reactor's thread; [`done`](Self::done) runs
/// exactly once, last.
///
/// ```
/// use twistor_protocols::gemini::{FetchError, FetchHandler, FetchResponse, ResponseHead};
/// use twistor_reactor::Reactor;
///
/// /// Counts the body's lines as they come, keeping none of it.
/// struct Lines(usize);
/// impl FetchHandler for Lines {
///     fn header(&mut self, _: &mut Reactor, head: &ResponseHead) {
///         println!("{} {}", head.code, head.meta);
///     }
///     fn body(&mut self, _: &mut Reactor, data: &[u8]) -> Result<(), FetchError> {
///         self.0 += data.iter().filter(|&&b| b == b'\n').count();
///         Ok(())
///     }
///     fn done(&mut self, r: &mut Reactor, result: Result<FetchResponse, FetchError>) {
///         println!("{} lines: {:?}", self.0, result.map(|resp| resp.code()));
///         r.stop();
///     }
/// }
/// ```
pub trait FetchHandler: 'static {
    /// A response header arrived: each redirect's, then the last one's.
    fn header(&mut self, r: &mut Reactor, head: &ResponseHead) {
        let _ = (r, head);
    }

    /// A redirect is being followed (after its [`header`](Self::header)).
    fn redirect(&mut self, r: &mut Reactor, hop: &Redirect) {
        let _ = (r, hop);
    }

    /// A piece of the body of a 2x response. An error stops the fetch
    /// (the connection is aborted) and is what [`done`](Self::done) gets.
    fn body(&mut self, r: &mut Reactor, data: &[u8]) -> Result<(), FetchError>;

    /// The fetch is over: the last response (its body already given to
    /// [`body`](Self::body)), or why it failed.
    fn done(&mut self, r: &mut Reactor, result: Result<FetchResponse, FetchError>);
}

/// A fetch in progress: cancel it.
#[derive(Debug, Clone)]
pub struct FetchHandle(pub(crate) std::rc::Weak<std::cell::RefCell<client_exchange::Fetch>>);

impl FetchHandle {
    /// Stop the fetch: its connection is aborted and its handler's `done`
    /// gets [`FetchError::Cancelled`] (on a later turn when called from
    /// one of its own callbacks). Nothing happens if it is over.
    ///
    /// ```
    /// use twistor_protocols::gemini::{fetch, FetchError, FetchOptions};
    /// let mut r = twistor_reactor::Reactor::new().unwrap();
    /// let handle = fetch(&mut r, "gemini://192.0.2.1/", FetchOptions::default(), |r, result| {
    ///     assert!(matches!(result, Err(FetchError::Cancelled)));
    ///     r.stop();
    /// });
    /// handle.cancel(&mut r);
    /// r.run().unwrap();
    /// ```
    pub fn cancel(&self, r: &mut Reactor) {
        client_exchange::cancel(r, &self.0);
    }

    /// Whether the fetch is still going.
    pub fn is_active(&self) -> bool {
        client_exchange::is_active(&self.0)
    }
}

/// Fetch `url` and hand the last response, body collected (up to
/// [`FetchOptions::max_body`]), or the error to `on_done` on a later turn
/// of the reactor.
///
/// One fetch is one or more requests, each on its own TLS connection:
///
/// - The server is trusted on first use (see [`ServerTrust`] for the
///   rules); a client
///   certificate ([`Identity`]) is presented to the host and port of the
///   URL fetched, never to another host a redirect leads to.
/// - SNI carries the host name; none is sent for an IP address.
/// - Redirects (3x) are followed up to [`FetchOptions::max_redirects`]
///   ([`DEFAULT_MAX_REDIRECTS`]), to `gemini` URLs only. A redirect to a
///   URL already visited, past the limit, to another scheme, or to no
///   valid URL is not followed: the 3x response is the result, with
///   [`FetchResponse::redirect_stopped`] saying why. Every hop is in
///   [`FetchResponse::redirects`], marked when it leads to another host.
/// - Input (10, 11) is returned: ask the user and fetch
///   [`with_input`]`(url, answer)`.
/// - Limits: [`FetchOptions::connect_timeout`] (name lookup, TCP and the
///   TLS handshake), [`FetchOptions::timeout`] (the whole fetch,
///   redirects included), [`FetchOptions::max_body`] (what [`fetch`]
///   collects). A response header must be at most [`MAX_HEADER`] bytes.
/// - What a server sends is checked, never trusted: a header that is not
///   `<two digits>[ <meta>]` and CRLF, with a meta of at most 1024 bytes
///   of UTF-8 without control characters, is a [`FetchError::BadResponse`];
///   a body that ends without TLS close_notify is
///   [`FetchError::Truncated`] (the body may be cut short).
/// - A Titan upload ([`FetchOptions::upload`], a `titan://` URL) sends
///   `URL;size=N;mime=T;token=X` and CRLF, then exactly N bytes streamed
///   from the file with backpressure, then reads a normal response.
///
/// ```
/// use twistor_protocols::gemini::{fetch, FetchOptions, Response, Router, Server, ServerTrust, VirtualHost};
/// use twistor_reactor::Reactor;
///
/// // A capsule on loopback to fetch from.
/// let mut app = Router::new();
/// app.route("/", |_| Ok(Response::gemtext("# Hello\n")?));
/// let server = Server::builder().host(VirtualHost::new("localhost", app)).build()?;
/// let mut r = Reactor::new()?;
/// let port = server.listen(&mut r, "127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())?.local_addr().port();
///
/// let got = std::rc::Rc::new(std::cell::RefCell::new(None));
/// let slot = got.clone();
/// let url = format!("gemini://localhost:{port}/");
/// fetch(&mut r, &url, FetchOptions::default(), move |r, result| {
///     *slot.borrow_mut() = Some(result);
///     r.stop();
/// });
/// r.run()?;
/// let response = got.borrow_mut().take().unwrap().unwrap();
/// assert_eq!((response.code(), response.meta()), (20, "text/gemini"));
/// assert_eq!(response.body, b"# Hello\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn fetch(
    r: &mut Reactor,
    url: &str,
    options: FetchOptions,
    on_done: impl FnOnce(&mut Reactor, Result<FetchResponse, FetchError>) + 'static,
) -> FetchHandle {
    let limit = options.max_body;
    let collect = Collect {
        body: Vec::new(),
        limit,
        on_done: Some(Box::new(on_done)),
    };
    fetch_with(r, url, options, collect)
}

/// Fetch `url`, giving each header and each piece of the body to
/// `handler` as they arrive; `handler.done` gets the outcome (on a later
/// turn, never from inside this call).
///
/// ```
/// use twistor_protocols::gemini::{fetch_with, FetchError, FetchHandler, FetchOptions, FetchResponse};
/// use twistor_reactor::Reactor;
/// struct ToStdout;
/// impl FetchHandler for ToStdout {
///     fn body(&mut self, _: &mut Reactor, data: &[u8]) -> Result<(), FetchError> {
///         use std::io::Write;
///         std::io::stdout().write_all(data).map_err(|e| FetchError::Handler(e.to_string()))
///     }
///     fn done(&mut self, r: &mut Reactor, result: Result<FetchResponse, FetchError>) {
///         if let Err(e) = result { eprintln!("{e}") }
///         r.stop();
///     }
/// }
/// let mut r = Reactor::new().unwrap();
/// // Not a URL to fetch: `done` says why, on the first turn.
/// fetch_with(&mut r, "https://example.org/", FetchOptions::default(), ToStdout);
/// r.run().unwrap();
/// ```
pub fn fetch_with(
    r: &mut Reactor,
    url: &str,
    options: FetchOptions,
    handler: impl FetchHandler,
) -> FetchHandle {
    client_exchange::start(r, url, options, Box::new(handler))
}

type OnDone = Box<dyn FnOnce(&mut Reactor, Result<FetchResponse, FetchError>)>;

/// The handler behind [`fetch`]: keeps the body, up to a limit.
struct Collect {
    body: Vec<u8>,
    limit: usize,
    on_done: Option<OnDone>,
}

impl FetchHandler for Collect {
    fn body(&mut self, _: &mut Reactor, data: &[u8]) -> Result<(), FetchError> {
        if self.body.len() + data.len() > self.limit {
            self.body = Vec::new();
            return Err(FetchError::BodyTooLarge { limit: self.limit });
        }
        self.body.extend_from_slice(data);
        Ok(())
    }

    fn done(&mut self, r: &mut Reactor, result: Result<FetchResponse, FetchError>) {
        let result = result.map(|mut resp| {
            resp.body = std::mem::take(&mut self.body);
            resp
        });
        if let Some(f) = self.on_done.take() {
            f(r, result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(u: &str) -> Result<Target, FetchError> {
        Target::new(Url::parse(u).unwrap())
    }

    #[test]
    fn targets() {
        let t = target("gemini://Example.ORG/a b#frag").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("example.org", 1965));
        assert_eq!(t.request_line(None).unwrap(), "gemini://example.org/a%20b");
        let t = target("gemini://[::1]:1966/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 1966));
        assert_eq!(t.authority(), "[::1]:1966");
        let t = target("gemini://bücher.example/").unwrap();
        assert_eq!(t.host, "xn--bcher-kva.example");
        assert!(t
            .request_line(None)
            .unwrap()
            .starts_with("gemini://xn--bcher-kva.example/"));
        assert!(target("https://example.org/").is_err());
        assert!(target("gemini://user@example.org/").is_err());
        let long = format!("gemini://example.org/{}", "a".repeat(1100));
        assert!(target(&long).is_err());
        let t = target("titan://example.org/x").unwrap();
        assert!(t.request_line(None).is_err(), "titan needs an upload");
    }
}
