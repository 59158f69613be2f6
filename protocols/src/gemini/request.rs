//! Gemini requests: finding the request line in what a client sent,
//! checking it against the specification, and the [`Request`] a handler
//! gets.
//!
//! A request is one absolute URL of at most [`MAX_REQUEST`] bytes and a
//! CRLF. Refused with 59 (bad request): a longer line, an LF without CR, an
//! empty line, a byte-order mark, invalid UTF-8, a control character or a
//! leading or trailing space, a relative URL or one without a scheme, a
//! userinfo part (even empty), a fragment (even empty), a URL without a
//! host, and a path whose percent-decoding is not UTF-8. Which schemes,
//! hosts and ports are served is the server's business (53 otherwise).
//! Host names are compared in punycode and lowercase; IPv4 and IPv6
//! literals are parsed as addresses; an empty path is `/`.

use std::net::IpAddr;
use std::time::SystemTime;

use percent_encoding::percent_decode_str;
use twistor_reactor::{Address, CertFacts, ConnId};
use url::{Host, Url};

use super::response::Status;
use super::titan::{split_params, Titan};

/// The longest URL accepted, in bytes (CRLF not counted).
pub const MAX_REQUEST: usize = 1024;

/// Why a request line was refused: the status and meta to answer with.
///
/// ```
/// use twistor_protocols::gemini::{parse_request_line, Status};
/// let refusal = parse_request_line(b"gemini://example.org/#top\r\n").unwrap_err();
/// assert_eq!(refusal.status, Status::BadRequest);
/// assert_eq!(refusal.meta, "A request must not have a fragment");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The status to answer.
    pub status: Status,
    /// The meta to answer.
    pub meta: &'static str,
}

const fn bad(meta: &'static str) -> Refusal {
    Refusal {
        status: Status::BadRequest,
        meta,
    }
}

/// A request line found and checked: the URL and where it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLine {
    /// The URL as parsed (normalized: percent-encoded, dot segments
    /// resolved).
    pub url: Url,
    /// The URL exactly as the client sent it.
    pub raw: String,
    /// The host: a lowercase punycode name or an IP address.
    pub host: Host<String>,
    /// The port, if the URL gives one.
    pub port: Option<u16>,
    /// The path, percent-decoded; `/` for an empty path (without a Titan
    /// request's parameters).
    pub path: String,
    /// The path as sent: percent-encoded, dot segments resolved, `/` for
    /// an empty one, without a Titan request's parameters.
    pub raw_path: String,
    /// A Titan request's parameters (`titan` scheme only).
    pub titan: Option<Titan>,
    /// Bytes of input the line took, CRLF included (what follows belongs
    /// to a request body, as in Titan).
    pub consumed: usize,
}

/// Look for a complete request line at the start of `buf` and check it.
///
/// `Ok(None)`: not complete yet, keep reading (`buf` can hold no valid
/// request line longer than [`MAX_REQUEST`] + 2 bytes: past that it is
/// refused). Never panics, whatever `buf` holds.
///
/// ```
/// use twistor_protocols::gemini::{parse_request_line, Status};
/// assert_eq!(parse_request_line(b"gemini://example.org/a").unwrap(), None);
/// let line = parse_request_line(b"gemini://Example.ORG/caf%C3%A9?q\r\n").unwrap().unwrap();
/// assert_eq!(line.host.to_string(), "example.org");
/// assert_eq!(line.path, "/café");
/// assert_eq!(line.consumed, 34);
/// let refusal = parse_request_line(b"gemini://example.org/\n").unwrap_err();
/// assert_eq!(refusal.status, Status::BadRequest);
/// ```
pub fn parse_request_line(buf: &[u8]) -> Result<Option<RequestLine>, Refusal> {
    let limit = buf.len().min(MAX_REQUEST + 2);
    let Some(lf) = buf[..limit].iter().position(|&b| b == b'\n') else {
        // The URL so far: everything but a CR that may yet be followed by LF.
        let url_len = buf.len() - usize::from(buf.last() == Some(&b'\r'));
        if url_len > MAX_REQUEST {
            return Err(bad("Request too long: the URL may be at most 1024 bytes"));
        }
        return Ok(None);
    };
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Err(bad("A request ends with CRLF, not a bare LF"));
    }
    let line = &buf[..lf - 1];
    if line.len() > MAX_REQUEST {
        return Err(bad("Request too long: the URL may be at most 1024 bytes"));
    }
    let mut parsed = parse_url(line)?;
    parsed.consumed = lf + 1;
    Ok(Some(parsed))
}

/// Check one URL (the request line without its CRLF).
fn parse_url(line: &[u8]) -> Result<RequestLine, Refusal> {
    if line.is_empty() {
        return Err(bad("Empty request"));
    }
    let text = std::str::from_utf8(line).map_err(|_| bad("The request is not valid UTF-8"))?;
    if text.starts_with('\u{feff}') {
        return Err(bad("A request must not begin with a byte-order mark"));
    }
    if text.chars().any(char::is_control) {
        return Err(bad("The request holds a control character"));
    }
    if text.starts_with(' ') || text.ends_with(' ') {
        return Err(bad("The request has a leading or trailing space"));
    }
    let url = Url::parse(text).map_err(|e| match e {
        url::ParseError::RelativeUrlWithoutBase => bad("The request must be an absolute URL"),
        _ => bad("The request is not a valid URL"),
    })?;
    if url.fragment().is_some() {
        return Err(bad("A request must not have a fragment"));
    }
    if has_userinfo(text) || !url.username().is_empty() || url.password().is_some() {
        return Err(bad("A request must not have a userinfo part"));
    }
    let host = match url.host() {
        None => return Err(bad("The URL has no host")),
        Some(Host::Domain("")) => return Err(bad("The URL has no host")),
        // Opaque hosts (any scheme but the web's) are neither IDNA-mapped
        // nor lowercased by the URL parser: do what it does for http.
        Some(Host::Domain(d)) => Host::parse(d).map_err(|_| bad("The URL's host is not valid"))?,
        Some(Host::Ipv4(a)) => Host::Ipv4(a),
        Some(Host::Ipv6(a)) => Host::Ipv6(a),
    };
    let mut raw_path = if url.path().is_empty() { "/" } else { url.path() };
    let mut titan = None;
    if url.scheme() == "titan" {
        let (path, params) = split_params(raw_path);
        let params = params.ok_or(bad("A Titan request needs a size parameter"))?;
        titan = Some(Titan::parse(params)?);
        raw_path = if path.is_empty() { "/" } else { path };
    }
    let path = percent_decode_str(raw_path)
        .decode_utf8()
        .map_err(|_| bad("The path is not valid UTF-8 once decoded"))?
        .into_owned();
    Ok(RequestLine {
        port: url.port(),
        raw: text.to_string(),
        raw_path: raw_path.to_string(),
        titan,
        url,
        host,
        path,
        consumed: 0,
    })
}

/// Whether the authority of `text` holds an `@` (the URL parser drops an
/// empty userinfo, which must be refused all the same).
fn has_userinfo(text: &str) -> bool {
    let Some(rest) = text.split_once("://").map(|(_, r)| r) else {
        return false;
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    rest[..end].contains('@')
}

/// A host as a plain string: a name, or an address without brackets
/// (what `SERVER_NAME` and vhost tables use).
///
/// ```
/// use twistor_protocols::gemini::host_name;
/// assert_eq!(host_name(&url::Host::parse("[::1]").unwrap()), "::1");
/// assert_eq!(host_name(&url::Host::parse("Caf%C3%A9.org").unwrap()), "xn--caf-dma.org");
/// ```
pub fn host_name(host: &Host<String>) -> String {
    match host {
        Host::Domain(d) => d.clone(),
        Host::Ipv4(a) => a.to_string(),
        Host::Ipv6(a) => a.to_string(),
    }
}

/// Normalize a configured host name the way request hosts are (punycode,
/// lowercase, addresses parsed), for comparing with them.
///
/// ```
/// use twistor_protocols::gemini::normalize_host;
/// assert_eq!(normalize_host("Café.example").unwrap(), "xn--caf-dma.example");
/// assert_eq!(normalize_host("[::1]").unwrap(), "::1");
/// assert_eq!(normalize_host("::1").unwrap(), "::1");
/// assert!(normalize_host("a b").is_err());
/// ```
pub fn normalize_host(name: &str) -> Result<String, String> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    Host::parse(name)
        .map(|h| host_name(&h))
        .map_err(|e| format!("{name:?} is not a valid host name: {e}"))
}

/// The client's certificate, as a handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// Its facts: SHA-256 fingerprint, subject CN, validity, serial.
    pub facts: CertFacts,
    /// Whether it chains to a CA the server was configured with
    /// (`TLS_CLIENT_AUTHORISED`); always false without one.
    pub authorised: bool,
}

impl ClientCert {
    /// The SHA-256 fingerprint, lowercase hex: the usual identity key.
    pub fn fingerprint(&self) -> &str {
        &self.facts.sha256_fingerprint
    }

    /// `SHA256:` and the fingerprint in uppercase hex, as
    /// `TLS_CLIENT_HASH` gives it.
    pub fn hash(&self) -> String {
        format!("SHA256:{}", self.facts.sha256_fingerprint.to_ascii_uppercase())
    }

    /// The subject's common name (`REMOTE_USER`).
    pub fn subject_cn(&self) -> Option<&str> {
        self.facts.subject_cn.as_deref()
    }

    /// Whether `now` is within the certificate's validity.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.facts.not_before <= now && now <= self.facts.not_after
    }
}

/// Facts about the TLS session a request came over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFacts {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: String,
    /// The cipher suite's IANA name, e.g. `TLS_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// The server name the client asked for (SNI).
    pub sni: Option<String>,
    /// The client's certificate, if it sent one.
    pub client_cert: Option<ClientCert>,
}

/// A request as a handler gets it.
///
/// ```
/// use twistor_protocols::gemini::Request;
/// let req = Request::for_test("gemini://example.org/notes/7?hello%20world");
/// assert_eq!(req.path(), "/notes/7");
/// assert_eq!(req.query().as_deref(), Some("hello world"));
/// assert_eq!(req.raw_query(), Some("hello%20world"));
/// assert_eq!(req.hostname(), "example.org");
/// ```
#[derive(Debug, Clone)]
pub struct Request {
    line: RequestLine,
    captures: Vec<(String, String)>,
    /// The prefix a [`Router::mount`](super::Router::mount) matched.
    mount: Option<String>,
    remote: Address,
    local: Address,
    tls: TlsFacts,
    conn: ConnId,
}

impl Request {
    /// A request for a checked request line, from `remote` to `local`.
    pub fn new(line: RequestLine, remote: Address, local: Address, tls: TlsFacts, conn: ConnId) -> Request {
        Request {
            line,
            captures: Vec::new(),
            mount: None,
            remote,
            local,
            tls,
            conn,
        }
    }

    /// A request for `url` with made-up addresses and no TLS facts, for
    /// tests and examples. Panics if `url` is not a valid request.
    pub fn for_test(url: &str) -> Request {
        let line = parse_request_line(format!("{url}\r\n").as_bytes())
            .expect("a valid request")
            .expect("a complete line");
        Request::new(
            line,
            Address::Inet(([192, 0, 2, 1], 40000).into()),
            Address::Inet(([192, 0, 2, 2], 1965).into()),
            TlsFacts::default(),
            ConnId::from_token(twistor_reactor::mio::Token(0)),
        )
    }

    /// The same request with a client certificate (tests and examples).
    ///
    /// ```
    /// use twistor_protocols::gemini::Request;
    /// use twistor_transports::tls::{cert_facts, generate_self_signed_cert};
    /// let (chain, _key) = generate_self_signed_cert(&["alice"]).unwrap();
    /// let req = Request::for_test("gemini://example.org/").with_client_cert(cert_facts(&chain[0]).unwrap(), false);
    /// assert_eq!(req.client_cert().unwrap().subject_cn(), Some("alice"));
    /// ```
    pub fn with_client_cert(mut self, facts: CertFacts, authorised: bool) -> Request {
        self.tls.client_cert = Some(ClientCert { facts, authorised });
        self
    }

    /// The parsed URL.
    pub fn url(&self) -> &Url {
        &self.line.url
    }

    /// The URL exactly as the client sent it (`GEMINI_URL`).
    pub fn raw_url(&self) -> &str {
        &self.line.raw
    }

    /// The URL's scheme (`gemini`).
    pub fn scheme(&self) -> &str {
        self.line.url.scheme()
    }

    /// The host: a name in lowercase punycode, or an address.
    pub fn host(&self) -> &Host<String> {
        &self.line.host
    }

    /// The host as a string (addresses without brackets).
    pub fn hostname(&self) -> String {
        host_name(&self.line.host)
    }

    /// The port the URL names, if any.
    pub fn port(&self) -> Option<u16> {
        self.line.port
    }

    /// The path, percent-decoded (`/` for an empty one).
    pub fn path(&self) -> &str {
        &self.line.path
    }

    /// The path as sent (percent-encoded, dot segments resolved), without
    /// a Titan request's parameters.
    pub fn raw_path(&self) -> &str {
        &self.line.raw_path
    }

    /// A Titan request's parameters (`None` for a Gemini request).
    ///
    /// ```
    /// use twistor_protocols::gemini::Request;
    /// assert_eq!(Request::for_test("titan://h/a;size=3").titan().unwrap().size, 3);
    /// assert!(Request::for_test("gemini://h/a;size=3").titan().is_none());
    /// ```
    pub fn titan(&self) -> Option<&Titan> {
        self.line.titan.as_ref()
    }

    /// The Gemini URL of the resource this request names: the scheme
    /// `gemini`, without Titan parameters and without the query. Where a
    /// Titan upload's answer usually redirects to.
    ///
    /// ```
    /// use twistor_protocols::gemini::Request;
    /// let req = Request::for_test("titan://example.org:1966/a%20b.gmi;size=3?q");
    /// assert_eq!(req.gemini_url(), "gemini://example.org:1966/a%20b.gmi");
    /// ```
    pub fn gemini_url(&self) -> String {
        let port = match self.line.port {
            Some(p) => format!(":{p}"),
            None => String::new(),
        };
        let host = match &self.line.host {
            Host::Ipv6(a) => format!("[{a}]"),
            h => host_name(h),
        };
        format!("gemini://{host}{port}{}", self.line.raw_path)
    }

    /// The prefix of the path a [`Router::mount`](super::Router::mount)
    /// matched (`SCRIPT_NAME` for a backend), or `""`.
    ///
    /// ```
    /// use twistor_protocols::gemini::{Context, Handler, HandlerError, Reply, Request, Response, Router};
    /// struct Where;
    /// impl Handler for Where {
    ///     fn handle(&self, req: Request, _: &mut Context<'_>) -> Result<Reply, HandlerError> {
    ///         Ok(Response::gemtext(format!("{} {}", req.mount_point(), req.path_info()))?.into())
    ///     }
    /// }
    /// let mut app = Router::new();
    /// app.mount("/app", Where);
    /// let answer = app.answer_for_test(Request::for_test("gemini://h/app/x/y"));
    /// assert_eq!(answer.header(), "20 text/gemini\r\n");
    /// assert_eq!(Request::for_test("gemini://h/app/x").mount_point(), ""); // not mounted
    /// ```
    pub fn mount_point(&self) -> &str {
        self.mount.as_deref().unwrap_or("")
    }

    /// The decoded path after the [`mount_point`](Self::mount_point)
    /// (`PATH_INFO` for a backend): the whole path when nothing was
    /// mounted.
    ///
    /// Decoded means the client chooses what it holds: the URL parser
    /// removes dot segments it can see, but `..%2F` arrives as `../`.
    /// Never join this (or a [`capture`](Self::capture)) onto a file path
    /// unchecked: [`StaticFiles`](super::StaticFiles) refuses such paths,
    /// and a handler of yours that touches files must too.
    ///
    /// ```
    /// use twistor_protocols::gemini::Request;
    /// assert_eq!(Request::for_test("gemini://h/a%20b").path_info(), "/a b");
    /// assert_eq!(Request::for_test("gemini://h/a/../b").path_info(), "/b");
    /// assert_eq!(Request::for_test("gemini://h/a/..%2Fb").path_info(), "/a/../b");
    /// ```
    pub fn path_info(&self) -> &str {
        let prefix = self.mount_point();
        self.line.path.strip_prefix(prefix).unwrap_or(&self.line.path)
    }

    pub(crate) fn set_mount(&mut self, prefix: &str) {
        self.mount = Some(prefix.to_string());
    }

    /// The query, percent-decoded (not valid UTF-8: lossily).
    pub fn query(&self) -> Option<String> {
        self.line
            .url
            .query()
            .map(|q| percent_decode_str(q).decode_utf8_lossy().into_owned())
    }

    /// The query as sent (`QUERY_STRING`).
    pub fn raw_query(&self) -> Option<&str> {
        self.line.url.query()
    }

    /// What the user typed after a 10 or 11 prompt: the decoded query, if
    /// there is a non-empty one.
    pub fn input(&self) -> Option<String> {
        self.query().filter(|q| !q.is_empty())
    }

    /// A capture of the route that matched (`<name>` in its pattern),
    /// percent-decoded: it can be `..` or hold `/` (see
    /// [`path_info`](Self::path_info) before using it as a file name).
    pub fn capture(&self, name: &str) -> Option<&str> {
        self.captures
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn set_captures(&mut self, captures: Vec<(String, String)>) {
        self.captures = captures;
    }

    /// The client's address.
    pub fn remote(&self) -> &Address {
        &self.remote
    }

    /// The client's IP address.
    pub fn remote_ip(&self) -> Option<IpAddr> {
        self.remote.ip()
    }

    /// The server's address for this connection.
    pub fn local(&self) -> &Address {
        &self.local
    }

    /// The TLS session's facts.
    pub fn tls(&self) -> &TlsFacts {
        &self.tls
    }

    /// The client's certificate, if it sent one.
    pub fn client_cert(&self) -> Option<&ClientCert> {
        self.tls.client_cert.as_ref()
    }

    /// The connection's id (for answering later by id).
    pub fn conn_id(&self) -> ConnId {
        self.conn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(input: &[u8]) -> Option<u8> {
        match parse_request_line(input) {
            Ok(Some(_)) => Some(20),
            Ok(None) => None,
            Err(r) => Some(r.status.code()),
        }
    }

    #[test]
    fn request_lines() {
        assert_eq!(status(b"gemini://h/\r\n"), Some(20));
        assert_eq!(status(b"gemini://h\r\n"), Some(20));
        assert_eq!(status(b"gemini://h/"), None);
        assert_eq!(status(b"gemini://h/\r"), None);
        assert_eq!(status(b"\r\n"), Some(59));
        assert_eq!(status(b"gemini://h/\n"), Some(59));
        assert_eq!(status(b"/relative\r\n"), Some(59));
        assert_eq!(status(b"example.org/\r\n"), Some(59));
        assert_eq!(status(b"gemini://u@h/\r\n"), Some(59));
        assert_eq!(status(b"gemini://@h/\r\n"), Some(59));
        assert_eq!(status(b"gemini://h/#\r\n"), Some(59));
        assert_eq!(status(b"gemini://h/\xff\r\n"), Some(59));
        assert_eq!(status(b"gemini://h/%ff\r\n"), Some(59));
        assert_eq!(status(b"gemini://h/a\tb\r\n"), Some(59));
        assert_eq!(status(b"\xef\xbb\xbfgemini://h/\r\n"), Some(59));
        assert_eq!(status(b"gemini:nohost\r\n"), Some(59));
        assert_eq!(status(b"gemini:///path\r\n"), Some(59));
    }

    #[test]
    fn length_limit() {
        let url = |n: usize| {
            let mut u = b"gemini://h/".to_vec();
            u.resize(n, b'a');
            u
        };
        let mut ok = url(MAX_REQUEST);
        assert_eq!(status(&ok), None);
        ok.push(b'\r');
        assert_eq!(status(&ok), None);
        ok.push(b'\n');
        assert_eq!(status(&ok), Some(20));
        let long = url(MAX_REQUEST + 1);
        assert_eq!(status(&long), Some(59));
        let mut long = url(MAX_REQUEST + 1);
        long.extend_from_slice(b"\r\n");
        assert_eq!(status(&long), Some(59));
    }

    #[test]
    fn hosts_and_paths() {
        let l = parse_request_line(b"gemini://[::1]:1965\r\nrest")
            .unwrap()
            .unwrap();
        assert_eq!(host_name(&l.host), "::1");
        assert_eq!(l.port, Some(1965));
        assert_eq!(l.path, "/");
        assert_eq!(l.consumed, 21);
        let l = parse_request_line(b"gemini://127.0.0.1/a%20b/../c\r\n")
            .unwrap()
            .unwrap();
        assert!(matches!(l.host, Host::Ipv4(_)));
        assert_eq!(l.path, "/c");
        let l = parse_request_line("gemini://bücher.example/\r\n".as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(host_name(&l.host), "xn--bcher-kva.example");
    }

    #[test]
    fn titan_lines() {
        let l = parse_request_line(b"titan://h/a%20b/c.gmi;mime=text/plain;size=5?q\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(l.path, "/a b/c.gmi");
        assert_eq!(l.raw_path, "/a%20b/c.gmi");
        let t = l.titan.unwrap();
        assert_eq!((t.size, t.mime.as_str(), t.token), (5, "text/plain", None));
        assert_eq!(l.consumed, 48);
        // Gemini requests have no parameters: a ';' is part of the path.
        let l = parse_request_line(b"gemini://h/a;size=5\r\n").unwrap().unwrap();
        assert_eq!((l.path.as_str(), l.titan), ("/a;size=5", None));
        assert_eq!(status(b"titan://h/a\r\n"), Some(59));
        assert_eq!(status(b"titan://h/a;size=x\r\n"), Some(59));
        assert_eq!(status(b"titan://h/a;size=1;size=1\r\n"), Some(59));
        assert_eq!(status(b"titan://h/;size=0\r\n"), Some(20));
    }
}
