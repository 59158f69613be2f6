//! `twistor fetch URL`: a Gemini and Titan client with trust on first use.
//!
//! The body goes to stdout, each response's `STATUS META` line and every
//! note (a certificate trusted on first use or replaced, a redirect to
//! another host) to stderr. On 10 or 11 it asks on the terminal (11
//! without echo) and asks again with the answer as the query. The exit
//! status says how it ended:
//!
//! | status | meaning |
//! |---|---|
//! | 0 | 2x: the body was received whole |
//! | 1 | network, TLS or protocol failure: refused, timed out, a changed certificate, an invalid response, a body cut short |
//! | 2 | usage: a bad flag or URL, an unreadable file |
//! | 3 | 3x not followed: too many redirects, a loop, another scheme |
//! | 4 | 4x: temporary failure |
//! | 5 | 5x: permanent failure |
//! | 6 | 6x: client certificate required or refused |
//! | 7 | 1x: input was asked for and none could be read |
//! | 130 | interrupted (Ctrl-C, SIGTERM) |

use std::cell::RefCell;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use twistor::protocols::gemini::{
    self, ask_input, default_data_dir, default_known_hosts_path, fetch_with, format_time, with_input,
    FetchError, FetchHandler, FetchOptions, FetchResponse, Identity, KnownHosts, Redirect, Replacement,
    ResponseHead, ServerTrust, TrustDecision, Upload, DEFAULT_MAX_REDIRECTS, GEMINI_PORT,
};
use twistor::reactor::Reactor;

use crate::common;

/// `twistor fetch`'s flags.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Exit status: 0 for 2x; 1 network, TLS or protocol failure; 2 usage; \
3 redirect not followed (limit, loop, other scheme); 4 for 4x; 5 for 5x; 6 for 6x; \
7 input asked for and none given; 130 interrupted."
)]
pub struct FetchArgs {
    /// The URL: gemini://HOST[:PORT]/PATH, or titan://... with --upload
    url: String,
    /// Known-hosts file for trust on first use [default: $XDG_DATA_HOME/twistor/known_hosts
    /// or ~/.local/share/twistor/known_hosts]
    #[arg(long, value_name = "FILE")]
    known_hosts: Option<PathBuf>,
    /// Accept a server certificate that differs from the one remembered, and remember it
    /// instead
    #[arg(long)]
    trust_new: bool,
    /// Check nothing about the server's certificate and remember nothing (dangerous)
    #[arg(long, conflicts_with_all = ["trust_new", "known_hosts"])]
    insecure: bool,
    /// Client certificate, PEM (with --key)
    #[arg(long, value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,
    /// Its private key, PEM (an encrypted key's passphrase comes from the file named by
    /// TWISTOR_PASSPHRASE_FILE, or is asked on the terminal)
    #[arg(long, value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,
    /// Present the self-signed identity NAME, generated the first time and kept in
    /// $XDG_DATA_HOME/twistor/identities (or ~/.local/share/twistor/identities)
    #[arg(long, value_name = "NAME", conflicts_with = "cert")]
    identity: Option<String>,
    /// Redirects to follow (0: none)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_REDIRECTS)]
    max_redirects: usize,
    /// Seconds the whole request may take, redirects included (0: no limit)
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    timeout: u64,
    /// Seconds to connect and complete the TLS handshake
    #[arg(long, value_name = "SECS", default_value_t = 15)]
    connect_timeout: u64,
    /// Answer the first input prompt (10 or 11) with TEXT instead of asking
    #[arg(long, value_name = "TEXT")]
    input: Option<String>,
    /// Titan: upload FILE to the titan:// URL (streamed; an empty file is size=0, which
    /// servers take as a delete)
    #[arg(long, value_name = "FILE")]
    upload: Option<PathBuf>,
    /// Titan: the upload's MIME type [default: from the file name]
    #[arg(long, value_name = "TYPE", requires = "upload")]
    mime: Option<String>,
    /// Titan: the token (password) the server asks for
    #[arg(long, value_name = "TEXT", requires = "upload")]
    token: Option<String>,
}

/// How the command ends.
enum End {
    Status(u8),
    /// A usage problem: one line, status 2.
    Usage(String),
    /// A failure: one line, status 1.
    Failed(String),
}

/// Run `twistor fetch`.
pub fn run(args: FetchArgs) -> ExitCode {
    let end = fetch_all(args);
    let (code, message) = match end {
        End::Status(c) => (c, None),
        End::Usage(m) => (2, Some(m)),
        End::Failed(m) => (1, Some(m)),
    };
    if let Some(m) = message {
        eprintln!("twistor: {m}");
    }
    ExitCode::from(code)
}

fn options(args: &FetchArgs) -> Result<FetchOptions, String> {
    let trust = if args.insecure {
        eprintln!(
            "twistor: WARNING: --insecure: the server's certificate is not checked; anyone on the \
             way can read and change this exchange"
        );
        ServerTrust::Insecure
    } else {
        let file = args.known_hosts.clone().unwrap_or_else(default_known_hosts_path);
        ServerTrust::KnownHosts(KnownHosts::open(file).map_err(|e| e.to_string())?)
    };
    let identity = match (&args.cert, &args.key, &args.identity) {
        (Some(cert), Some(key), _) => {
            Some(Identity::from_files(cert, key, &common::passphrase(None)).map_err(|e| e.to_string())?)
        }
        (_, _, Some(name)) => {
            let (id, created) = Identity::named(name).map_err(|e| e.to_string())?;
            if created {
                eprintln!(
                    "twistor: created the identity {name} (SHA-256 {}) in {}",
                    id.fingerprint(),
                    default_data_dir().join("identities").display()
                );
            }
            Some(id)
        }
        _ => None,
    };
    let upload = match &args.upload {
        Some(path) => {
            let up = Upload::file(path).map_err(|e| e.to_string())?;
            let up = match &args.mime {
                Some(m) => up.mime(m),
                None => up.mime_from_name(),
            };
            Some(match &args.token {
                Some(t) => up.token(t),
                None => up,
            })
        }
        None => None,
    };
    Ok(FetchOptions {
        trust,
        trust_new: args.trust_new,
        identity,
        max_redirects: args.max_redirects,
        connect_timeout: Duration::from_secs(args.connect_timeout.max(1)),
        timeout: (args.timeout > 0).then(|| Duration::from_secs(args.timeout)),
        upload,
        ..FetchOptions::default()
    })
}

fn fetch_all(args: FetchArgs) -> End {
    let opts = match options(&args) {
        Ok(o) => o,
        Err(e) => return End::Usage(e),
    };
    let mut url = args.url.clone();
    let mut answer = args.input.clone();
    loop {
        let resp = match fetch_once(&url, opts.clone()) {
            Ok(Some(resp)) => resp,
            Ok(None) | Err(FetchError::Stopped) => {
                eprintln!("twistor: interrupted");
                return End::Status(130);
            }
            Err(e @ (FetchError::BadUrl(_) | FetchError::Options(_))) => return End::Usage(e.to_string()),
            Err(e @ FetchError::CertificateChanged(_)) => {
                return End::Failed(format!(
                    "{e}. If you expect this change, run again with --trust-new to trust the new certificate"
                ))
            }
            Err(e) => return End::Failed(e.to_string()),
        };
        match resp.head.class() {
            1 => {
                let sensitive = resp.code() == 11;
                let typed = match answer.take() {
                    Some(a) => Some(a),
                    None => match ask_input(if sensitive { "(not echoed) > " } else { "> " }, sensitive) {
                        Ok(a) => a,
                        Err(e) => return End::Failed(format!("cannot read the input: {e}")),
                    },
                };
                let Some(typed) = typed else {
                    eprintln!("twistor: no input given (standard input is at its end)");
                    return End::Status(7);
                };
                url = with_input(resp.url(), &typed).to_string();
            }
            2 => return End::Status(0),
            3 => {
                if let Some(stop) = &resp.redirect_stopped {
                    eprintln!("twistor: redirect to {:?} {stop}", resp.meta());
                }
                return End::Status(3);
            }
            class => return End::Status(class),
        }
    }
}

/// One fetch (redirects included) on its own reactor; `Ok(None)` when it
/// was interrupted.
fn fetch_once(url: &str, opts: FetchOptions) -> Result<Option<FetchResponse>, FetchError> {
    let mut r = Reactor::new().map_err(|e| FetchError::Options(format!("cannot start: {e}")))?;
    let result = Rc::new(RefCell::new(None));
    let handler = Cli {
        result: result.clone(),
        identity: opts.identity.is_some(),
        known_hosts: match &opts.trust {
            ServerTrust::KnownHosts(k) => k.path().map(|p| p.display().to_string()),
            ServerTrust::Insecure => None,
        },
        stdout: io::stdout(),
        cert_noted: None,
    };
    fetch_with(&mut r, url, opts, handler);
    if let Err(e) = r.run() {
        return Err(FetchError::Options(format!("the event loop failed: {e}")));
    }
    let outcome = result.borrow_mut().take();
    outcome.transpose()
}

/// Writes the body to stdout and the headers and notes to stderr.
struct Cli {
    result: Rc<RefCell<Option<Result<FetchResponse, FetchError>>>>,
    identity: bool,
    known_hosts: Option<String>,
    stdout: io::Stdout,
    /// The server whose certificate was last noted (each is noted once).
    cert_noted: Option<String>,
}

fn authority(url: &gemini::url::Url) -> String {
    let host = url.host_str().unwrap_or("");
    format!("{host}:{}", url.port().unwrap_or(GEMINI_PORT))
}

impl Cli {
    fn note_certificate(&mut self, head: &ResponseHead) {
        let who = authority(&head.url);
        if self.cert_noted.as_deref() == Some(who.as_str()) {
            return;
        }
        let cert = &head.server_cert;
        let fp = &cert.fingerprint;
        let kept = self
            .known_hosts
            .as_deref()
            .map(|f| format!(" (remembered in {f})"))
            .unwrap_or_default();
        match &cert.decision {
            TrustDecision::FirstUse => {
                eprintln!("twistor: trusting {who} on first use: SHA-256 {fp}{kept}")
            }
            TrustDecision::Replaced {
                old,
                why: Replacement::TrustNew,
            } => eprintln!(
                "twistor: the certificate of {who} changed from SHA-256 {old}; trusting the new one, \
                 SHA-256 {fp}, as --trust-new says{kept}"
            ),
            TrustDecision::Replaced {
                old,
                why: Replacement::Expired(when),
            } => eprintln!(
                "twistor: the certificate of {who} changed from SHA-256 {old}, which expired {}; \
                 trusting the new one, SHA-256 {fp}{kept}",
                format_time(*when)
            ),
            TrustDecision::Known | TrustDecision::Unchecked => {}
        }
        self.cert_noted = Some(who);
    }
}

impl FetchHandler for Cli {
    fn header(&mut self, _: &mut Reactor, head: &ResponseHead) {
        self.note_certificate(head);
        if head.meta.is_empty() {
            eprintln!("{}", head.code);
        } else {
            eprintln!("{} {}", head.code, head.meta);
        }
    }

    fn redirect(&mut self, _: &mut Reactor, hop: &Redirect) {
        if hop.cross_host {
            let cert = if self.identity {
                " (the client certificate is not sent there)"
            } else {
                ""
            };
            eprintln!("twistor: redirected to another host: {}{cert}", hop.to);
        }
    }

    fn body(&mut self, _: &mut Reactor, data: &[u8]) -> Result<(), FetchError> {
        self.stdout
            .write_all(data)
            .map_err(|e| FetchError::Handler(format!("cannot write the body to standard output: {e}")))
    }

    fn done(&mut self, r: &mut Reactor, result: Result<FetchResponse, FetchError>) {
        let result = match (self.stdout.flush(), result) {
            (Err(e), Ok(_)) => Err(FetchError::Handler(format!(
                "cannot write the body to standard output: {e}"
            ))),
            (_, result) => result,
        };
        *self.result.borrow_mut() = Some(result);
        r.stop();
    }
}
