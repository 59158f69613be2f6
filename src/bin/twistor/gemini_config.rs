//! `twistor gemini --config FILE`: the TOML config file, read with serde
//! into the library's server types. Virtual hosts are `[[vhost]]` tables;
//! the top-level keys are the server's. A host serves a directory
//! (`dir`), and may take Titan uploads into it (`[vhost.titan]`), pass
//! path prefixes to SCGI applications (`[[vhost.scgi]]`) and to upstream
//! Gemini servers (`[[vhost.proxy]]`, `prefix = "/"` for the whole host).
//!
//! ```toml
//! port = 1965
//! rate_limit = "60/5m"
//! proxy_protocol = "required"        # behind HAProxy / nginx (default "off")
//! proxy_trusted = ["10.0.0.5"]       # who may send the header (default: anyone)
//!
//! [[vhost]]
//! hostname = "example.org"
//! aliases = ["www.example.org"]
//! dir = "/srv/gemini/example.org"
//! tls_certfile = "/etc/gemini/example.org.crt"
//! tls_keyfile = "/etc/gemini/example.org.key"
//!
//! [vhost.titan]
//! token = "s3cret"
//!
//! [[vhost.scgi]]
//! prefix = "/app"
//! address = "127.0.0.1:4000"
//!
//! [[vhost]]
//! hostname = "notes.example.org"
//! [[vhost.proxy]]
//! upstream = "10.0.0.2:1965"
//! fingerprint = ["3f2a..."]
//! ```

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::{key_passphrase, Asking};
use serde::Deserialize;
use twistor::protocols::gemini::{
    CgiOptions, GeminiProxy, Handler, Router, Scgi, ScgiAddress, ScgiOptions, ServerOptions, StaticFiles,
    TitanOptions, UpstreamTrust, VirtualHost, DEFAULT_INDEX_FILE, DEFAULT_PORT,
};
use twistor::transports::tls::{load_ca, load_certs, load_key};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Address to listen on (default: every interface).
    pub host: Option<IpAddr>,
    /// Port (default 1965).
    pub port: Option<u16>,
    /// Read a PROXY protocol header first: "required", "optional" or
    /// "off" (the default); `--proxy-protocol` overrides it.
    pub proxy_protocol: Option<String>,
    /// The proxies allowed to send one (addresses or CIDR networks);
    /// empty: any client can claim any address.
    #[serde(default)]
    pub proxy_trusted: Vec<String>,
    /// Seconds a connection has to send its header (default 10).
    pub proxy_timeout: Option<u64>,
    /// Where generated certificates are kept.
    pub state_dir: Option<PathBuf>,
    /// jetforce's syntax, e.g. `60/5m`.
    pub rate_limit: Option<String>,
    /// CA file for client certificates.
    pub tls_cafile: Option<PathBuf>,
    /// CA directory for client certificates.
    pub tls_capath: Option<PathBuf>,
    /// Whether the access log names client addresses (default true).
    pub log_client_addresses: Option<bool>,
    /// Seconds a client has to send its request (default 10).
    pub request_timeout: Option<u64>,
    /// Seconds a Titan upload may go without a byte (default 30).
    pub upload_timeout: Option<u64>,
    /// Refuse (53) a request whose host is not the SNI name (default false).
    pub strict_sni: Option<bool>,
    /// Connections at once per listener (default 1024).
    pub max_connections: Option<usize>,
    /// Connections at once per client address (default 64; 0 = no cap).
    pub max_connections_per_address: Option<usize>,
    /// Seconds a CGI script may run (default 30).
    pub cgi_timeout: Option<u64>,
    /// CGI scripts at once (default 16).
    pub max_cgi: Option<usize>,
    /// The virtual hosts; the first one's certificate is the default.
    #[serde(default)]
    pub vhost: Vec<VhostConfig>,
}

/// One `[[vhost]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VhostConfig {
    /// Its name (IDN names may be given in Unicode or punycode).
    pub hostname: String,
    /// Other names for the same site.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The directory served (optional when SCGI or proxy routes serve the
    /// host).
    pub dir: Option<PathBuf>,
    /// CGI directory relative to `dir` (default `cgi-bin`).
    pub cgi_dir: Option<String>,
    /// Index file (default `index.gmi`).
    pub index_file: Option<String>,
    /// `lang` for text/gemini.
    pub default_lang: Option<String>,
    /// Certificate chain (PEM); without it one is generated and kept.
    pub tls_certfile: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_keyfile: Option<PathBuf>,
    /// Titan uploads into `dir`.
    pub titan: Option<TitanConfig>,
    /// SCGI applications by path prefix.
    #[serde(default)]
    pub scgi: Vec<ScgiConfig>,
    /// Upstream Gemini servers by path prefix.
    #[serde(default)]
    pub proxy: Vec<ProxyConfig>,
}

/// `[vhost.titan]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TitanConfig {
    /// The token uploads must carry.
    pub token: String,
    /// Largest upload in bytes (default 10 MiB).
    pub max_size: Option<u64>,
}

/// One `[[vhost.scgi]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScgiConfig {
    /// The path prefix the application serves (its `SCRIPT_NAME`).
    pub prefix: String,
    /// `HOST:PORT`, or a Unix socket's path.
    pub address: String,
    /// Seconds to connect and answer (default 30).
    pub timeout: Option<u64>,
    /// Pass Titan uploads of at most this many bytes (default: none).
    pub max_upload: Option<u64>,
}

/// One `[[vhost.proxy]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// The path prefix proxied (default `/`: the whole host).
    pub prefix: Option<String>,
    /// `HOST:PORT` or `HOST` (port 1965) of the upstream server.
    pub upstream: String,
    /// The name sent as SNI and verified (default: the upstream's host).
    pub sni: Option<String>,
    /// Rewrite the URL's host and port to the upstream's (default false).
    pub rewrite_host: Option<bool>,
    /// Trust only these SHA-256 fingerprints.
    #[serde(default)]
    pub fingerprint: Vec<String>,
    /// Trust certificates from this CA file (or directory).
    pub ca: Option<PathBuf>,
    /// A client certificate to present (PEM), with `client_key`.
    pub client_cert: Option<PathBuf>,
    /// Its key (PEM, unencrypted).
    pub client_key: Option<PathBuf>,
    /// Seconds to connect and answer (default 30).
    pub timeout: Option<u64>,
    /// Pass Titan uploads on (default true).
    pub uploads: Option<bool>,
}

impl ConfigFile {
    /// Apply the file's server-wide knobs that the command line has no
    /// flag for.
    pub fn apply(&self, options: &mut ServerOptions) {
        if let Some(secs) = self.upload_timeout {
            options.upload_timeout = Duration::from_secs(secs);
        }
        if let Some(on) = self.strict_sni {
            options.strict_sni = on;
        }
    }
}

/// Read and check `path`; paths in it are relative to its directory.
pub fn load(path: &Path) -> Result<ConfigFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut config: ConfigFile = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| format!(" (line {})", text[..s.start].lines().count().max(1)))
            .unwrap_or_default();
        format!("{}: {}{line}", path.display(), e.message())
    })?;
    if config.vhost.is_empty() {
        return Err(format!("{}: no [[vhost]] is defined", path.display()));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let rel = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    for p in [
        &mut config.state_dir,
        &mut config.tls_cafile,
        &mut config.tls_capath,
    ]
    .into_iter()
    .flatten()
    {
        rel(p);
    }
    for v in &mut config.vhost {
        let err = |what: &str| format!("{}: vhost {}: {what}", path.display(), v.hostname);
        for p in [&mut v.dir, &mut v.tls_certfile, &mut v.tls_keyfile]
            .into_iter()
            .flatten()
        {
            rel(p);
        }
        if v.tls_certfile.is_some() != v.tls_keyfile.is_some() {
            return Err(err("tls_certfile and tls_keyfile go together"));
        }
        if v.dir.is_none() && v.scgi.is_empty() && v.proxy.is_empty() {
            return Err(err("give it a dir, an [[vhost.scgi]] or a [[vhost.proxy]]"));
        }
        if v.titan.is_some() && v.dir.is_none() {
            return Err(err("[vhost.titan] needs a dir to upload into"));
        }
        for s in &mut v.scgi {
            if s.address.starts_with('.') {
                s.address = base.join(&s.address).display().to_string();
            }
        }
        for p in &mut v.proxy {
            for f in [&mut p.ca, &mut p.client_cert, &mut p.client_key]
                .into_iter()
                .flatten()
            {
                rel(f);
            }
            if p.client_cert.is_some() != p.client_key.is_some() {
                return Err(err("a proxy's client_cert and client_key go together"));
            }
            if !p.fingerprint.is_empty() && p.ca.is_some() {
                return Err(err("a proxy trusts a fingerprint or a ca, not both"));
            }
        }
    }
    Ok(config)
}

/// The static files of a host's `dir`.
fn static_files(v: &VhostConfig, dir: &Path, cgi: &CgiOptions) -> Result<StaticFiles, String> {
    if !dir.is_dir() {
        return Err(format!("{}: not a readable directory", dir.display()));
    }
    std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let cgi = CgiOptions {
        dir: v.cgi_dir.clone().unwrap_or_else(|| cgi.dir.clone()),
        ..cgi.clone()
    };
    let mut files = StaticFiles::new(dir)
        .with_index_file(v.index_file.as_deref().unwrap_or(DEFAULT_INDEX_FILE))
        .with_cgi(cgi);
    if let Some(lang) = &v.default_lang {
        files = files.with_default_lang(lang)?;
    }
    if let Some(t) = &v.titan {
        let mut options = TitanOptions::new(t.token.clone());
        if let Some(max) = t.max_size {
            options.max_size = max;
        }
        files = files.with_titan(options)?;
    }
    Ok(files)
}

/// `HOST:PORT`, `[V6]:PORT` or `HOST` (port 1965).
fn host_port(text: &str) -> Result<(String, u16), String> {
    let bad = || format!("invalid upstream {text:?}: expected HOST:PORT");
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => DEFAULT_PORT,
            None => return Err(bad()),
        };
        return Ok((host.to_string(), port));
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Ok((host.to_string(), port.parse().map_err(|_| bad())?)),
        Some(_) => Err(bad()),
        None if text.is_empty() => Err(bad()),
        None => Ok((text.to_string(), DEFAULT_PORT)),
    }
}

fn proxy(p: &ProxyConfig, asking: Asking) -> Result<GeminiProxy, String> {
    let (host, port) = host_port(&p.upstream)?;
    let mut b = GeminiProxy::builder(&host, port)
        .rewrite_host(p.rewrite_host.unwrap_or(false))
        .uploads(p.uploads.unwrap_or(true));
    if let Some(sni) = &p.sni {
        b = b.sni(sni);
    }
    if let Some(secs) = p.timeout {
        b = b.timeout(Duration::from_secs(secs));
    }
    if !p.fingerprint.is_empty() {
        b = b.trust(UpstreamTrust::Pinned(p.fingerprint.clone()));
    } else if let Some(ca) = &p.ca {
        let cas = load_ca(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        b = b.trust(UpstreamTrust::Ca(cas));
    }
    if let (Some(cert), Some(key)) = (&p.client_cert, &p.client_key) {
        let chain = load_certs(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
        let passphrase = key_passphrase(key, None, asking).map_err(|e| format!("{}: {e}", key.display()))?;
        let key = load_key(key, &passphrase).map_err(|e| format!("{}: {e}", key.display()))?;
        b = b.client_cert(chain, key);
    }
    b.build().map_err(|e| format!("proxy to {}: {e}", p.upstream))
}

/// One `[[vhost]]` as the library's virtual host: its directory (with CGI
/// and Titan), behind its SCGI and proxy routes if it has any.
pub fn virtual_host(v: VhostConfig, cgi: &CgiOptions, asking: Asking) -> Result<VirtualHost, String> {
    let files = match &v.dir {
        Some(dir) => Some(static_files(&v, dir, cgi)?),
        None => None,
    };
    let handler: Box<dyn Handler> = if v.scgi.is_empty() && v.proxy.is_empty() {
        Box::new(files.expect("checked when loaded"))
    } else {
        let mut app = Router::new();
        for s in &v.scgi {
            let address: ScgiAddress = s.address.parse()?;
            let options = ScgiOptions {
                timeout: s
                    .timeout
                    .map_or(ScgiOptions::default().timeout, Duration::from_secs),
                max_upload: s.max_upload,
            };
            app.mount(&mount_prefix(&s.prefix)?, Scgi::with_options(address, options));
        }
        for p in &v.proxy {
            let prefix = mount_prefix(p.prefix.as_deref().unwrap_or("/"))?;
            app.mount(&prefix, proxy(p, asking)?);
        }
        if let Some(files) = files {
            app.fallback(files);
        }
        Box::new(app)
    };
    let mut host = VirtualHost::new(&v.hostname, handler);
    for alias in &v.aliases {
        host = host.alias(alias);
    }
    if let (Some(c), Some(k)) = (v.tls_certfile, v.tls_keyfile) {
        let passphrase = key_passphrase(&k, None, asking).map_err(|e| format!("{}: {e}", k.display()))?;
        host = host.cert_files_with(c, k, passphrase);
    }
    Ok(host)
}

/// A route prefix from the file: a path starting with `/`.
fn mount_prefix(prefix: &str) -> Result<String, String> {
    if !prefix.starts_with('/') {
        return Err(format!("prefix {prefix:?} must start with /"));
    }
    Ok(prefix.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_addresses() {
        assert_eq!(host_port("a.example:1966").unwrap(), ("a.example".into(), 1966));
        assert_eq!(host_port("a.example").unwrap(), ("a.example".into(), 1965));
        assert_eq!(host_port("[::1]:7").unwrap(), ("::1".into(), 7));
        assert_eq!(host_port("[::1]").unwrap(), ("::1".into(), 1965));
        assert!(host_port("::1").is_err());
        assert!(host_port("a:b").is_err());
        assert!(host_port("").is_err());
    }

    #[test]
    fn backends_from_toml() {
        let text = r#"
            upload_timeout = 5
            strict_sni = true
            [[vhost]]
            hostname = "a.example"
            [[vhost.scgi]]
            prefix = "/app"
            address = "127.0.0.1:4000"
            max_upload = 100
            [[vhost.proxy]]
            upstream = "10.0.0.2"
            fingerprint = ["ab"]
        "#;
        let file: ConfigFile = toml::from_str(text).unwrap();
        let mut opts = ServerOptions::default();
        file.apply(&mut opts);
        assert_eq!(opts.upload_timeout, Duration::from_secs(5));
        assert!(opts.strict_sni);
        let v = &file.vhost[0];
        assert_eq!(
            (v.scgi[0].prefix.as_str(), v.scgi[0].max_upload),
            ("/app", Some(100))
        );
        assert_eq!(v.proxy[0].fingerprint, ["ab"]);
        assert!(
            toml::from_str::<ConfigFile>("[[vhost]]\nhostname = \"a\"\n[vhost.titan]\ntokn = \"x\"\n")
                .is_err()
        );
    }
}
