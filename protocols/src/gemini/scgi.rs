//! SCGI applications (the simple CGI successor that molly-brown and
//! stargazer speak), over TCP or a Unix socket.
//!
//! A request becomes one connection to the application: the headers as a
//! netstring (the toolkit's [`Netstring`] framing), `CONTENT_LENGTH`
//! first as SCGI requires, then `SCGI=1`, then the CGI variables of
//! [`cgi_environment`](super::cgi_environment) (`SCRIPT_NAME` is the
//! prefix the handler is mounted at, `PATH_INFO` the rest of the path).
//! A Gemini request has no body (`CONTENT_LENGTH=0`); a Titan upload, if
//! the application takes them, has its body after the headers
//! (`CONTENT_LENGTH` its size, with `CONTENT_TYPE` its MIME type and
//! `TITAN_TOKEN` its token, if any).
//!
//! The application answers with a Gemini response, header first, and
//! closes the connection at its end. The header is checked (a defined
//! status, a meta the status allows; CRLF or LF): otherwise the client
//! gets `42`. The body is relayed as it comes, with backpressure: while
//! the client reads slowly, the application's socket is not read.
//!
//! An application that cannot be reached, closes without answering, or
//! does not answer within the timeout is `42`, like a CGI script that
//! fails: to the client, an SCGI application is the server's own dynamic
//! content, not another server (`43` says a proxied server failed).

use std::path::PathBuf;
use std::time::Duration;

use twistor_reactor::Transport;

use super::cgi::environment;
use super::relay::{self, Dial, Forward, Spec};
use super::request::Request;
use super::response::{Response, Status};
use super::router::{check_upload_size, Context, Handler, HandlerError, Reply};
use super::titan::{not_accepted, UploadReceiver};
use crate::{Framing, Netstring};

/// Default [`ScgiOptions::timeout`].
pub const DEFAULT_SCGI_TIMEOUT: Duration = Duration::from_secs(30);

/// Where an SCGI application listens.
///
/// ```
/// use twistor_protocols::gemini::ScgiAddress;
/// let tcp: ScgiAddress = "127.0.0.1:4000".parse().unwrap();
/// assert_eq!(tcp, ScgiAddress::Tcp { host: "127.0.0.1".into(), port: 4000 });
/// let unix: ScgiAddress = "/run/app.sock".parse().unwrap();
/// assert_eq!(unix, ScgiAddress::Unix("/run/app.sock".into()));
/// assert!("no-port".parse::<ScgiAddress>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScgiAddress {
    /// A TCP address (a host name or an IP address, and a port).
    Tcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// A Unix-domain socket's path.
    Unix(PathBuf),
}

impl std::str::FromStr for ScgiAddress {
    type Err = String;

    /// `HOST:PORT` (`[::1]:4000` for IPv6), or a path starting with `/`
    /// or `.` for a Unix socket.
    fn from_str(s: &str) -> Result<ScgiAddress, String> {
        if s.starts_with('/') || s.starts_with('.') {
            return Ok(ScgiAddress::Unix(PathBuf::from(s)));
        }
        let err = || format!("invalid SCGI address {s:?}: expected HOST:PORT or a socket path");
        let (host, port) = s.rsplit_once(':').ok_or_else(err)?;
        let port: u16 = port.parse().map_err(|_| err())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(err());
        }
        Ok(ScgiAddress::Tcp {
            host: host.to_string(),
            port,
        })
    }
}

/// SCGI knobs.
///
/// | knob | default |
/// |---|---|
/// | [`timeout`](Self::timeout) | 30 s ([`DEFAULT_SCGI_TIMEOUT`]) |
/// | [`max_upload`](Self::max_upload) | no uploads |
///
/// ```
/// use std::time::Duration;
/// use twistor_protocols::gemini::ScgiOptions;
/// let opts = ScgiOptions { timeout: Duration::from_secs(5), max_upload: Some(1 << 20) };
/// assert_eq!(ScgiOptions::default().max_upload, None);
/// # let _ = opts;
/// ```
#[derive(Debug, Clone)]
pub struct ScgiOptions {
    /// To connect and send the header; then the longest the application
    /// may fall silent while the client is reading.
    pub timeout: Duration,
    /// Pass Titan uploads of at most this many bytes to the application
    /// (`None`: uploads are refused with `53`).
    pub max_upload: Option<u64>,
}

impl Default for ScgiOptions {
    fn default() -> Self {
        ScgiOptions {
            timeout: DEFAULT_SCGI_TIMEOUT,
            max_upload: None,
        }
    }
}

/// A handler that passes requests to an SCGI application; mount it at a
/// path prefix with [`Router::mount`](super::Router::mount).
///
/// ```no_run
/// use twistor_protocols::gemini::{Router, Scgi, Server, StaticFiles, VirtualHost};
/// let mut app = Router::new();
/// app.mount("/app", Scgi::new("127.0.0.1:4000".parse().unwrap()));
/// app.fallback(StaticFiles::new("/srv/gemini"));
/// let server = Server::builder().host(VirtualHost::new("localhost", app)).build()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Scgi {
    dial: Dial,
    options: ScgiOptions,
}

impl std::fmt::Debug for Scgi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scgi")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Scgi {
    /// Pass requests to the application at `address`.
    pub fn new(address: ScgiAddress) -> Scgi {
        Scgi::with_options(address, ScgiOptions::default())
    }

    /// [`new`](Self::new) with knobs.
    pub fn with_options(address: ScgiAddress, options: ScgiOptions) -> Scgi {
        let dial = match address {
            ScgiAddress::Tcp { host, port } => Dial::Tcp { host, port },
            ScgiAddress::Unix(path) => Dial::Unix(path),
        };
        Scgi { dial, options }
    }

    fn spec(&self) -> Spec {
        Spec {
            failure: Status::CgiError,
            meta: "The application did not answer",
            what: "SCGI application",
            timeout: self.options.timeout,
        }
    }

    fn start(&self, req: &Request, cx: &mut Context<'_>) -> Result<std::rc::Rc<relay::Link>, HandlerError> {
        let headers = headers(req)?;
        let head: relay::WriteHead = Box::new(move |t: &mut dyn Transport| {
            let _ = Netstring::encode(t, &headers);
        });
        Ok(relay::start(cx, &self.dial, self.spec(), head))
    }
}

/// The request's SCGI headers, NUL-separated (the netstring's payload).
///
/// A value holding a NUL (a `%00` in the path) cannot be sent: `59`.
pub(crate) fn headers(req: &Request) -> Result<Vec<u8>, HandlerError> {
    let titan = req.titan();
    let mut vars: Vec<(&str, String)> = vec![
        ("CONTENT_LENGTH", titan.map_or(0, |t| t.size).to_string()),
        ("SCGI", "1".to_string()),
    ];
    vars.extend(environment(req, req.mount_point(), req.path_info()));
    if let Some(t) = titan {
        vars.push(("CONTENT_TYPE", t.mime.clone()));
        if let Some(token) = &t.token {
            vars.push(("TITAN_TOKEN", token.clone()));
        }
    }
    let mut out = Vec::new();
    for (name, value) in vars {
        if value.contains('\0') {
            return Err(HandlerError::Answer(
                Response::bad_request("The request holds a NUL").expect("valid meta"),
            ));
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    Ok(out)
}

impl Handler for Scgi {
    fn handle(&self, req: Request, cx: &mut Context<'_>) -> Result<Reply, HandlerError> {
        self.start(&req, cx)?;
        relay::later()
    }

    fn accept_upload(
        &self,
        req: Request,
        cx: &mut Context<'_>,
    ) -> Result<Box<dyn UploadReceiver>, HandlerError> {
        let Some(max) = self.options.max_upload else {
            return Err(not_accepted());
        };
        check_upload_size(&req, max)?;
        Ok(Forward::boxed(self.start(&req, cx)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(payload: &[u8]) -> Vec<(String, String)> {
        let text = String::from_utf8(payload.to_vec()).unwrap();
        let parts: Vec<&str> = text.split('\0').collect();
        parts
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0].to_string(), c[1].to_string()))
            .collect()
    }

    #[test]
    fn content_length_comes_first() {
        let h = headers(&Request::for_test("gemini://h/app/x?q")).unwrap();
        let v = vars(&h);
        assert_eq!(v[0], ("CONTENT_LENGTH".into(), "0".into()));
        assert_eq!(v[1], ("SCGI".into(), "1".into()));
        assert!(v.contains(&("QUERY_STRING".into(), "q".into())));
        assert!(h.ends_with(b"\0"));
        let h = headers(&Request::for_test("titan://h/up;size=12;mime=text/plain;token=t")).unwrap();
        let v = vars(&h);
        assert_eq!(v[0], ("CONTENT_LENGTH".into(), "12".into()));
        assert!(v.contains(&("CONTENT_TYPE".into(), "text/plain".into())));
        assert!(v.contains(&("TITAN_TOKEN".into(), "t".into())));
        assert!(headers(&Request::for_test("gemini://h/a%00b")).is_err());
    }
}
