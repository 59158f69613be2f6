//! `twistor gemini --config FILE`: the TOML config file, read with serde
//! into the library's server types. Virtual hosts are `[[vhost]]` tables;
//! the top-level keys are the server's.
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
//! [[vhost]]
//! hostname = "notes.example.org"
//! dir = "/srv/gemini/notes"   # no certificate: one is generated and kept
//! ```

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

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
    /// Connections at once per listener (default 1024).
    pub max_connections: Option<usize>,
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
    /// The directory served.
    pub dir: PathBuf,
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
        rel(&mut v.dir);
        for p in [&mut v.tls_certfile, &mut v.tls_keyfile].into_iter().flatten() {
            rel(p);
        }
        if v.tls_certfile.is_some() != v.tls_keyfile.is_some() {
            return Err(format!(
                "{}: vhost {}: tls_certfile and tls_keyfile go together",
                path.display(),
                v.hostname
            ));
        }
    }
    Ok(config)
}
