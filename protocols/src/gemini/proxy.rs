//! A reverse proxy to an upstream Gemini server: a host (a
//! [`VirtualHost`](super::VirtualHost) whose handler is the proxy) or a
//! path prefix ([`Router::mount`](super::Router::mount)) served by another
//! server, over TLS.
//!
//! Each request opens a TLS connection to the upstream (SNI: the
//! configured name, by default the upstream's host; none for an IP
//! address), sends the request line (the client's URL as sent, or with
//! its host and port rewritten to the upstream's), then a Titan upload's
//! body as it arrives, and relays the upstream's answer as it comes, with
//! backpressure both ways (see `relay.rs`). The client's host must be one
//! the proxying server serves, as for any request (`53` otherwise).
//!
//! How the upstream's certificate is trusted ([`UpstreamTrust`]): by
//! default on first use, as Gemini clients do (the first certificate seen
//! for the SNI name is remembered for the life of the process, and another
//! is refused); or pinned SHA-256 fingerprints; or CA certificates (the
//! chain and the name are verified). Any failure upstream (refused, TLS
//! failure or an untrusted certificate, no answer in time, a header that
//! is not Gemini) is `43 PROXY ERROR` if nothing was sent yet; a body cut
//! upstream is cut for the client too (no close_notify).

use std::rc::Rc;
use std::time::Duration;

use twistor_reactor::Transport;
use twistor_transports::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use twistor_transports::tls::{ClientConfigBuilder, TofuStore};

use super::config::DEFAULT_PORT;
use super::relay::{self, Dial, Forward, Spec};
use super::request::Request;
use super::response::Status;
use super::router::{Context, Handler, HandlerError, Reply};
use super::titan::{not_accepted, UploadReceiver};

/// Default [`ProxyBuilder::timeout`].
pub const DEFAULT_PROXY_TIMEOUT: Duration = Duration::from_secs(30);

/// How the upstream's certificate is trusted.
///
/// ```
/// use twistor_protocols::gemini::{GeminiProxy, UpstreamTrust};
/// use twistor_transports::tls::{generate_self_signed_cert, sha256_fingerprint};
/// let (chain, _key) = generate_self_signed_cert(&["upstream.example"]).unwrap();
/// let pinned = UpstreamTrust::Pinned(vec![sha256_fingerprint(&chain[0])]);
/// let by_ca = UpstreamTrust::Ca(chain);
/// for trust in [UpstreamTrust::FirstUse, pinned, by_ca] {
///     assert!(GeminiProxy::builder("127.0.0.1", 1966).trust(trust).build().is_ok());
/// }
/// ```
#[derive(Debug, Clone, Default)]
pub enum UpstreamTrust {
    /// The first certificate seen is remembered (in memory, for the life
    /// of the process) and any other refused: the Gemini convention, and
    /// the default.
    #[default]
    FirstUse,
    /// Only certificates with these SHA-256 fingerprints (hex, colons
    /// allowed); names and issuers are not checked.
    Pinned(Vec<String>),
    /// Certificates issued by these CAs, for the SNI name.
    Ca(Vec<CertificateDer<'static>>),
}

/// Builds a [`GeminiProxy`].
///
/// | knob | default |
/// |---|---|
/// | [`sni`](Self::sni) | the upstream's host (none for an address) |
/// | [`rewrite_host`](Self::rewrite_host) | no: the client's URL as sent |
/// | [`trust`](Self::trust) | [`UpstreamTrust::FirstUse`] |
/// | [`client_cert`](Self::client_cert) | none |
/// | [`timeout`](Self::timeout) | 30 s ([`DEFAULT_PROXY_TIMEOUT`]) |
/// | [`uploads`](Self::uploads) | passed on |
///
/// ```
/// use std::time::Duration;
/// use twistor_protocols::gemini::GeminiProxy;
/// use twistor_transports::tls::generate_self_signed_cert;
/// let (chain, key) = generate_self_signed_cert(&["proxy"]).unwrap();
/// let proxy = GeminiProxy::builder("10.0.0.2", 1965)
///     .sni("notes.internal")
///     .rewrite_host(true)
///     .client_cert(chain, key)
///     .timeout(Duration::from_secs(10))
///     .uploads(false)
///     .build()
///     .unwrap();
/// # let _ = proxy;
/// ```
pub struct ProxyBuilder {
    host: String,
    port: u16,
    sni: Option<String>,
    rewrite_host: bool,
    trust: UpstreamTrust,
    client_cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    timeout: Duration,
    uploads: bool,
}

impl ProxyBuilder {
    /// The name sent as SNI and verified (a CA's certificate must name
    /// it; first use remembers the certificate under it).
    pub fn sni(mut self, name: &str) -> ProxyBuilder {
        self.sni = Some(name.to_string());
        self
    }

    /// Rewrite the request's host and port to the upstream's (its SNI
    /// name and port) before sending it on; by default the URL goes as
    /// the client sent it (the upstream serves the same name).
    pub fn rewrite_host(mut self, on: bool) -> ProxyBuilder {
        self.rewrite_host = on;
        self
    }

    /// How the upstream's certificate is trusted.
    pub fn trust(mut self, trust: UpstreamTrust) -> ProxyBuilder {
        self.trust = trust;
        self
    }

    /// Present this client certificate to the upstream.
    pub fn client_cert(
        mut self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> ProxyBuilder {
        self.client_cert = Some((chain, key));
        self
    }

    /// To connect, shake hands and answer; then the longest the upstream
    /// may fall silent while the client is reading.
    pub fn timeout(mut self, timeout: Duration) -> ProxyBuilder {
        self.timeout = timeout;
        self
    }

    /// Pass Titan uploads on to the upstream (the default; it decides on
    /// them), or refuse them here with `53`.
    pub fn uploads(mut self, on: bool) -> ProxyBuilder {
        self.uploads = on;
        self
    }

    /// Build the TLS configuration and the proxy.
    pub fn build(self) -> std::io::Result<GeminiProxy> {
        let mut tls = ClientConfigBuilder::new();
        tls = match self.trust {
            UpstreamTrust::FirstUse => tls.tofu(TofuStore::in_memory()),
            UpstreamTrust::Pinned(fps) => {
                if fps.is_empty() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "no fingerprint to pin",
                    ));
                }
                fps.iter().fold(tls, |b, fp| b.pinned(fp))
            }
            UpstreamTrust::Ca(cas) => tls.roots(cas),
        };
        if let Some((chain, key)) = self.client_cert {
            tls = tls.client_cert(chain, key);
        }
        let host = self
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let sni = self.sni.unwrap_or_else(|| host.clone());
        Ok(GeminiProxy {
            dial: Dial::Tls {
                host,
                port: self.port,
                sni: sni.clone(),
                config: tls.build()?,
            },
            authority: self.rewrite_host.then(|| {
                let name = if sni.contains(':') {
                    format!("[{sni}]")
                } else {
                    sni
                };
                (name, self.port)
            }),
            timeout: self.timeout,
            uploads: self.uploads,
        })
    }
}

/// A handler that passes requests to an upstream Gemini server: each
/// request over its own TLS connection, sent as it came (or with its host
/// and port rewritten), a Titan body after it, the answer relayed as it
/// arrives with backpressure both ways. The upstream's certificate is
/// trusted on first use unless [`ProxyBuilder::trust`] says otherwise.
/// Upstream failures (refused, TLS, an untrusted certificate, silence past
/// the timeout, a header that is not Gemini) are `43`; a body cut upstream
/// is cut for the client too (no close_notify).
///
/// ```no_run
/// use twistor_protocols::gemini::{GeminiProxy, Router, Server, UpstreamTrust, VirtualHost};
/// // A whole host served by another server on this machine:
/// let wiki = GeminiProxy::builder("127.0.0.1", 1966)
///     .sni("wiki.example.org")
///     .trust(UpstreamTrust::Pinned(vec!["3f2a...".into()]))
///     .build()?;
/// // And one path of another host:
/// let mut app = Router::new();
/// app.mount("/feeds", GeminiProxy::builder("feeds.internal", 1965).rewrite_host(true).build()?);
/// let server = Server::builder()
///     .host(VirtualHost::new("wiki.example.org", wiki))
///     .host(VirtualHost::new("example.org", app))
///     .build()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct GeminiProxy {
    dial: Dial,
    /// Where a rewritten URL points (`None`: sent as is).
    authority: Option<(String, u16)>,
    timeout: Duration,
    uploads: bool,
}

impl GeminiProxy {
    /// Proxy to the Gemini server at `host` (a name or an address) and
    /// `port`.
    pub fn builder(host: &str, port: u16) -> ProxyBuilder {
        ProxyBuilder {
            host: host.to_string(),
            port,
            sni: None,
            rewrite_host: false,
            trust: UpstreamTrust::default(),
            client_cert: None,
            timeout: DEFAULT_PROXY_TIMEOUT,
            uploads: true,
        }
    }

    /// The request line sent upstream for `req`.
    fn request_line(&self, req: &Request) -> String {
        let url = match &self.authority {
            None => req.raw_url().to_string(),
            Some((host, port)) => {
                let mut url = req.url().clone();
                let port = (*port != DEFAULT_PORT).then_some(*port);
                if url.set_host(Some(host)).is_ok() && url.set_port(port).is_ok() {
                    url.to_string()
                } else {
                    req.raw_url().to_string()
                }
            }
        };
        format!("{url}\r\n")
    }

    fn start(&self, req: &Request, cx: &mut Context<'_>) -> Rc<relay::Link> {
        let line = self.request_line(req).into_bytes();
        let head: relay::WriteHead = Box::new(move |t: &mut dyn Transport| t.write(&line));
        let spec = Spec {
            failure: Status::ProxyError,
            meta: "The upstream server failed",
            what: "upstream",
            timeout: self.timeout,
        };
        relay::start(cx, &self.dial, spec, head)
    }
}

impl Handler for GeminiProxy {
    fn handle(&self, req: Request, cx: &mut Context<'_>) -> Result<Reply, HandlerError> {
        self.start(&req, cx);
        relay::later()
    }

    fn accept_upload(
        &self,
        req: Request,
        cx: &mut Context<'_>,
    ) -> Result<Box<dyn UploadReceiver>, HandlerError> {
        if !self.uploads {
            return Err(not_accepted());
        }
        Ok(Forward::boxed(self.start(&req, cx)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        let plain = GeminiProxy::builder("127.0.0.1", 1966).build().unwrap();
        let req = Request::for_test("gemini://front.example/a%20b?q");
        assert_eq!(plain.request_line(&req), "gemini://front.example/a%20b?q\r\n");
        let rw = GeminiProxy::builder("127.0.0.1", 1966)
            .sni("back.example")
            .rewrite_host(true)
            .build()
            .unwrap();
        assert_eq!(rw.request_line(&req), "gemini://back.example:1966/a%20b?q\r\n");
        let req = Request::for_test("titan://front.example:1965/up;size=3;token=x");
        assert_eq!(
            rw.request_line(&req),
            "titan://back.example:1966/up;size=3;token=x\r\n"
        );
        let default_port = GeminiProxy::builder("::1", 1965)
            .rewrite_host(true)
            .build()
            .unwrap();
        let req = Request::for_test("gemini://front.example:1970/");
        assert_eq!(default_port.request_line(&req), "gemini://[::1]/\r\n");
        assert!(GeminiProxy::builder("h", 1)
            .trust(UpstreamTrust::Pinned(vec![]))
            .build()
            .is_err());
    }
}
