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
//! answers 53 for a scheme other than `gemini`, a host it does not serve
//! (names in punycode, IP literals as addresses) or another port.
//!
//! # Responses
//! See [`Response`]; only 20 carries a body.
//!
//! # Applications
//! See [`Router`] and [`Responder`].
//!
//! # Static files and CGI
//! See [`StaticFiles`] and [`cgi_environment`].

mod certs;
mod cgi;
mod client;
mod client_conn;
mod client_error;
mod client_exchange;
mod client_trust;
mod client_upload;
mod config;
mod known_hosts;
mod request;
mod response;
mod router;
mod server;
mod static_files;
mod terminal;

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
    DEFAULT_MAX_CONNECTIONS, DEFAULT_PORT, DEFAULT_REQUEST_TIMEOUT, DEFAULT_STALL_TIMEOUT,
};
pub use known_hosts::{default_data_dir, default_known_hosts_path, format_time, KnownHost, KnownHosts};
pub use request::{
    host_name, normalize_host, parse_request_line, ClientCert, Refusal, Request, RequestLine, TlsFacts,
    MAX_REQUEST,
};
pub use response::{Body, InvalidMeta, Response, Status, MAX_META};
pub use router::{
    input, require_authorised_cert, require_cert, sensitive_input, Context, Handler, HandlerError, Reply,
    Responder, Router,
};
pub use server::GeminiConnection;
pub use static_files::{StaticFiles, DEFAULT_INDEX_FILE};
pub use terminal::ask_input;

/// The URL crate requests are parsed with (its `Url` and `Host` appear in
/// this module's API).
pub use url;
