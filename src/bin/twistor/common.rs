//! What every `twistor` subcommand shares: logging set-up, printing an
//! error cleanly (one line, not Rust's debug form), where a key's
//! passphrase comes from (asked once, kept for reloads), and the PROXY
//! protocol flags of the servers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use twistor::transports::proxy::{IpNet, ProxyMode, ProxyOptions, DEFAULT_PROXY_TIMEOUT};
use twistor::transports::tls::{is_encrypted_key, Passphrase};

/// Log through `RUST_LOG`, or with twistor's default filter when it is
/// unset: `info`, and only errors from rustls (see
/// [`twistor::lab::DEFAULT_LOG_FILTER`]).
pub fn init_logging() {
    twistor::lab::init_logging();
}

/// The process's exit status for a subcommand's result; an error is printed
/// as one line, `twistor: MESSAGE`.
pub fn exit_code(result: std::io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("twistor: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Where the passphrase of an encrypted key comes from: the file given on
/// the command line, or else twistor's usual source (the file named by
/// `TWISTOR_PASSPHRASE_FILE`, or the terminal).
pub fn passphrase(file: Option<&PathBuf>) -> Passphrase {
    match file {
        Some(f) => Passphrase::File(f.clone()),
        None => Passphrase::from_env_or_prompt(),
    }
}

/// Passphrases typed on the terminal, by key file: kept in memory so that
/// a reload, which runs on a loop (one of several with `--threads`), never
/// has to ask.
static TYPED: Mutex<Option<HashMap<PathBuf, String>>> = Mutex::new(None);

fn typed(key: &Path) -> Option<String> {
    let t = TYPED.lock().unwrap_or_else(|e| e.into_inner());
    t.as_ref().and_then(|m| m.get(key).cloned())
}

/// Whether loading a key may ask for its passphrase on the terminal:
/// at start, yes; on a reload (SIGHUP), no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asking {
    /// At start: the terminal may be asked.
    Allowed,
    /// On a reload: never ask; a key whose passphrase was typed at start
    /// uses that one.
    Never,
}

/// The passphrase of the key in `key`, from the file given on the command
/// line or twistor's usual source (see [`passphrase`]), such that loading
/// the key again later never asks: a passphrase that would be asked on the
/// terminal is asked now, once, only if the key is encrypted, and kept in
/// memory. With [`Asking::Never`] a passphrase not typed before is
/// missing (the key's loading then says so).
pub fn key_passphrase(key: &Path, file: Option<&PathBuf>, asking: Asking) -> std::io::Result<Passphrase> {
    let source = passphrase(file);
    if source != Passphrase::Prompt {
        return Ok(source);
    }
    if let Some(typed) = typed(key) {
        return Ok(Passphrase::Value(typed));
    }
    // An unreadable file is reported by whoever loads it.
    let encrypted = std::fs::read(key).is_ok_and(|pem| is_encrypted_key(&pem));
    if !encrypted {
        return Ok(Passphrase::None);
    }
    if asking == Asking::Never {
        return Ok(Passphrase::None);
    }
    let typed = Passphrase::Prompt.get()?;
    TYPED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(key.to_path_buf(), typed.clone());
    Ok(Passphrase::Value(typed))
}

/// How `--proxy-protocol` may be given: bare means `required`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyModeArg {
    /// Every connection must open with a header; one without is closed.
    Required,
    /// A connection may open with one; one without is served as it is.
    Optional,
}

/// The PROXY protocol flags of a stream server.
#[derive(clap::Args, Debug, Clone)]
pub struct ProxyArgs {
    /// Read a PROXY protocol header (v1 or v2, as HAProxy's send-proxy or
    /// nginx's proxy_protocol write it) before anything else, so the logs
    /// and limits see the real client: `required` (what the bare flag
    /// means) closes connections without one, `optional` serves them as
    /// they are [default: off]
    #[arg(
        long,
        value_name = "MODE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "required"
    )]
    pub proxy_protocol: Option<ProxyModeArg>,
    /// A proxy allowed to send the header: an address or a network
    /// (10.0.0.0/8, 2001:db8::/32); repeat for several. Connections from
    /// elsewhere are closed (required) or served as they are (optional).
    /// Empty, the default, means any client can claim any address (keep
    /// the port out of reach of all but the proxy)
    #[arg(long, value_name = "CIDR", requires = "proxy_protocol")]
    pub proxy_trusted: Vec<IpNet>,
    /// Seconds a connection has to send its whole header before it is
    /// closed
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_PROXY_TIMEOUT.as_secs())]
    pub proxy_timeout: u64,
}

impl ProxyArgs {
    /// The listener options the flags ask for (`None` when
    /// `--proxy-protocol` was not given).
    pub fn options(&self) -> Option<ProxyOptions> {
        let mode = match self.proxy_protocol? {
            ProxyModeArg::Required => ProxyMode::Required,
            ProxyModeArg::Optional => ProxyMode::Optional,
        };
        Some(ProxyOptions {
            mode,
            trusted: self.proxy_trusted.clone(),
            timeout: Duration::from_secs(self.proxy_timeout),
            ..ProxyOptions::default()
        })
    }
}

/// PROXY protocol options from a config file's words: `mode` is
/// `required`, `optional` or `off`, `trusted` networks in CIDR notation,
/// `timeout` in seconds (default 10).
pub fn proxy_options(mode: &str, trusted: &[String], timeout: Option<u64>) -> Result<ProxyOptions, String> {
    let mode = match mode {
        "required" => ProxyMode::Required,
        "optional" => ProxyMode::Optional,
        "off" => ProxyMode::Off,
        other => {
            return Err(format!(
                "proxy_protocol = {other:?}: expected \"required\", \"optional\" or \"off\""
            ))
        }
    };
    let trusted = trusted
        .iter()
        .map(|t| t.parse::<IpNet>().map_err(|e| format!("proxy_trusted: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ProxyOptions {
        mode,
        trusted,
        timeout: timeout.map_or(DEFAULT_PROXY_TIMEOUT, Duration::from_secs),
        ..ProxyOptions::default()
    })
}

/// Say how the listeners read PROXY headers, and from whom.
pub fn log_proxy(opts: &ProxyOptions) {
    let mode = match opts.mode {
        ProxyMode::Off => return,
        ProxyMode::Required => "required",
        ProxyMode::Optional => "optional",
    };
    let from = if opts.trusted.is_empty() {
        "any source: any client can claim any address".to_string()
    } else {
        let who: Vec<String> = opts.trusted.iter().map(ToString::to_string).collect();
        format!("trusted {}", who.join(", "))
    };
    log::info!(
        "PROXY protocol header {mode} before each connection ({from}; {} s to send it)",
        opts.timeout.as_secs()
    );
}
