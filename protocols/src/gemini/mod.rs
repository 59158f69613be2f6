//! A Gemini server (protocol v0.24): jetforce's features on twistor,
//! hardened, with a certificate per virtual host chosen by SNI.
//!
//! One file per concern:
//!
//! - [`request`](self#parsing-requests): finding and checking the request
//!   line ([`parse_request_line`]), and the [`Request`] handlers get.
//! - [`response`](self#responses): every [`Status`], [`Response`] with its
//!   meta checked where it is built, and the [`Body`].
//! - [`router`](self#applications): [`Handler`], [`Router`] (path patterns
//!   with captures), answering later ([`Responder`]), [`require_cert`],
//!   [`input`].
//! - [`static_files`](self#static-files-and-cgi): [`StaticFiles`], and CGI
//!   with jetforce's environment ([`CgiOptions`], [`cgi_environment`]).
//! - [`titan`](self#titan-uploads): Titan requests' parameters
//!   ([`Titan`]), the [`UploadReceiver`] a body streams into, its flow
//!   control ([`UploadFlow`]); `static_upload`: uploads into a served
//!   directory ([`TitanOptions`]).
//! - [`scgi`](self#backends): SCGI applications ([`Scgi`]); [`proxy`](self#backends):
//!   upstream Gemini servers ([`GeminiProxy`]); `relay`: the backend
//!   connection both use, joined to the client's with backpressure both
//!   ways.
//! - [`config`](self#servers): [`Server`], [`VirtualHost`],
//!   [`ServerOptions`], [`RateLimit`]; certificates kept across restarts
//!   ([`load_or_generate_cert`]).
//! - the server protocol itself, [`GeminiConnection`]: one request per
//!   connection, the answer streamed with backpressure, close_notify after
//!   every response, an access-log line per request.
//!
//! # Servers
//!
//! ```no_run
//! use twistor_protocols::gemini::{Response, Router, Server, ServerOptions, StaticFiles, VirtualHost};
//! use twistor_reactor::Reactor;
//!
//! let mut app = Router::new();
//! app.route("/", |_| Ok(Response::gemtext("# Hello, Gemini\n")?));
//! let server = Server::builder()
//!     .host(VirtualHost::new("app.example.org", app).cert_files("app.crt", "app.key"))
//!     .host(VirtualHost::new("files.example.org", StaticFiles::new("/srv/files")))
//!     .options(ServerOptions { rate_limit: Some("60/5m".parse().unwrap()), ..ServerOptions::default() })
//!     .state_dir("/var/lib/gemini") // files.example.org's generated certificate lives here
//!     .build()?;
//! let mut reactor = Reactor::new()?;
//! server.listen(&mut reactor, 1965)?;
//! reactor.run()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Parsing requests
//! See [`parse_request_line`] for what is refused with 59; the server
//! answers 53 for a scheme other than `gemini` and `titan`, a host it does
//! not serve (names in punycode, IP literals as addresses) or another
//! port. The URL's host picks the virtual host even when it is not the
//! SNI name (the specification defines 53 by the hosts a server serves,
//! and a proxy request's host is never the proxy's name);
//! [`ServerOptions::strict_sni`] refuses that.
//!
//! # Responses
//! See [`Response`]; only 20 carries a body.
//!
//! # Applications
//! See [`Router`] and [`Responder`].
//!
//! # Static files and CGI
//! See [`StaticFiles`] and [`cgi_environment`].
//!
//! # Titan uploads
//! A `titan://` request goes to the virtual host's
//! [`Handler::accept_upload`]: [`Router::upload`] takes them per route,
//! [`StaticFiles::with_titan`] into a directory; see [`UploadReceiver`].
//!
//! # Backends
//! [`Router::mount`] puts an [`Scgi`] application or a [`GeminiProxy`] at
//! a path prefix; a [`GeminiProxy`] can also be a whole virtual host's
//! handler.

mod certs;
mod cgi;
mod client;
mod client_conn;
mod client_error;
mod client_exchange;
mod client_trust;
mod client_upload;
mod config;
mod proxy;
mod relay;
mod request;
mod response;
mod router;
mod scgi;
mod server;
mod static_files;
mod static_upload;
mod terminal;
mod titan;

pub use certs::{default_state_dir, load_or_generate_cert, KeptCert};
pub use cgi::{
    environment as cgi_environment, CgiOptions, DEFAULT_CGI_DIR, DEFAULT_CGI_TIMEOUT, DEFAULT_MAX_CGI,
};
pub use client::{
    fetch, fetch_with, with_input, FetchHandle, FetchHandler, FetchOptions, FetchResponse, Redirect,
    RedirectStop, ResponseHead, DEFAULT_CONNECT_TIMEOUT, DEFAULT_FETCH_TIMEOUT, DEFAULT_MAX_BODY,
    DEFAULT_MAX_REDIRECTS, GEMINI_PORT, MAX_HEADER,
};
pub use client_conn::{parse_response_header, ResponseHeader};
pub use client_error::FetchError;
pub use client_trust::{CertificateChanged, Identity, Replacement, ServerCert, ServerTrust, TrustDecision};
pub use client_upload::{titan_request, Upload};
pub use config::{
    CertSource, RateLimit, Server, ServerBuilder, ServerOptions, VirtualHost, DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_ADDRESS, DEFAULT_PORT, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_STALL_TIMEOUT, DEFAULT_UPLOAD_TIMEOUT,
};
pub use proxy::{GeminiProxy, ProxyBuilder, UpstreamTrust, DEFAULT_PROXY_TIMEOUT};
pub use request::{
    host_name, normalize_host, parse_request_line, ClientCert, Refusal, Request, RequestLine, TlsFacts,
    MAX_REQUEST,
};
pub use response::{Body, InvalidMeta, Response, Status, MAX_META};
pub use router::{
    check_upload_size, input, require_authorised_cert, require_cert, sensitive_input, Context, Handler,
    HandlerError, Reply, Responder, Router,
};
pub use scgi::{Scgi, ScgiAddress, ScgiOptions, DEFAULT_SCGI_TIMEOUT};
pub use server::GeminiConnection;
pub use static_files::{StaticFiles, DEFAULT_INDEX_FILE};
pub use static_upload::TitanOptions;
pub use terminal::ask_input;
pub use titan::{collect, Titan, UploadFlow, UploadReceiver, DEFAULT_MAX_UPLOAD, DEFAULT_UPLOAD_MIME};
pub use twistor_transports::tls::{
    default_data_dir, default_known_hosts_path, format_time, KnownHost, KnownHosts,
};

/// The URL crate requests are parsed with (its `Url` and `Host` appear in
/// this module's API).
pub use url;
