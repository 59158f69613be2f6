//! CGI scripts on the process transport, with jetforce's environment.
//!
//! A script runs with exactly the variables jetforce documents (see
//! [`environment`]), in its own directory and its own process group, with
//! stdin closed. Its first line must be a valid Gemini header (a defined
//! status, a meta the status allows, CRLF or LF): it is checked and sent
//! in canonical form; otherwise the client gets `42`. The rest of its
//! stdout goes to the client verbatim as it comes, with backpressure both
//! ways: while the client's connection is paused the script's pipe is not
//! read, so the script blocks. Its stderr is logged. A script still running
//! after the timeout, or whose client went away, is killed with its whole
//! process group, and reaped by the process transport (no zombies). A
//! script killed (by the timeout or any signal) after its header has its
//! client's connection cut, without close_notify, so that a cut body is
//! never taken for a whole one.
//!
//! Scripts running at once are capped; over the cap the answer is `41`
//! (server unavailable): the server as a whole is busy, which is what 41
//! says, while `44` (slow down) would blame the one client that happened
//! to come last.

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::rc::Rc;
use std::time::Duration;

use twistor_reactor::{ConnId, DelayedCall, Reactor};
use twistor_transports::process::{
    spawn_command, Process, ProcessOptions, ProcessProtocol, ProcessTransport,
};
use twistor_transports::utc::format_time;

use super::request::Request;
use super::response::{Response, Status};
use super::router::{Context, HandlerError, Reply, Responder};
use crate::producer::{channel, BodyWriter, Flow, DEFAULT_CHANNEL_HIGH_WATER};

/// Default directory of CGI scripts, relative to the served root.
pub const DEFAULT_CGI_DIR: &str = "cgi-bin";
/// Default time a script may run.
pub const DEFAULT_CGI_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of scripts running at once (per server).
pub const DEFAULT_MAX_CGI: usize = 16;
/// The longest header line read from a script (status, space, meta, CRLF).
pub(crate) const MAX_HEADER: usize = 2 + 1 + super::response::MAX_META + 2;

/// CGI knobs.
///
/// ```
/// use std::time::Duration;
/// use twistor_protocols::gemini::CgiOptions;
/// let opts = CgiOptions { timeout: Duration::from_secs(5), ..CgiOptions::default() };
/// assert_eq!(opts.dir, "cgi-bin");
/// assert_eq!(opts.max_running, 16);
/// ```
#[derive(Debug, Clone)]
pub struct CgiOptions {
    /// The scripts' directory, relative to the served root
    /// ([`DEFAULT_CGI_DIR`]).
    pub dir: String,
    /// How long a script may run ([`DEFAULT_CGI_TIMEOUT`]).
    pub timeout: Duration,
    /// Scripts running at once ([`DEFAULT_MAX_CGI`]); over it: `41`.
    pub max_running: usize,
}

impl Default for CgiOptions {
    fn default() -> Self {
        CgiOptions {
            dir: DEFAULT_CGI_DIR.to_string(),
            timeout: DEFAULT_CGI_TIMEOUT,
            max_running: DEFAULT_MAX_CGI,
        }
    }
}

/// Runs CGI scripts (used by [`StaticFiles`](super::StaticFiles)).
pub(crate) struct Cgi {
    opts: CgiOptions,
    running: Rc<Cell<usize>>,
}

impl Cgi {
    pub(crate) fn new(opts: CgiOptions) -> Cgi {
        Cgi {
            opts,
            running: Rc::new(Cell::new(0)),
        }
    }

    pub(crate) fn options(&self) -> &CgiOptions {
        &self.opts
    }

    /// Run `script` for `req`; the answer comes later.
    pub(crate) fn run(
        &self,
        script: &Path,
        script_name: &str,
        path_info: &str,
        req: Request,
        cx: &mut Context<'_>,
    ) -> Result<Reply, HandlerError> {
        if self.running.get() >= self.opts.max_running {
            log::warn!(
                "{}: {} CGI scripts running already; answering 41",
                req.conn_id(),
                self.opts.max_running
            );
            return Ok(Response::server_unavailable("Too many scripts running; try again shortly")?.into());
        }
        let mut cmd = Command::new(script);
        cmd.env_clear().envs(environment(&req, script_name, path_info));
        if let Some(dir) = script.parent() {
            cmd.current_dir(dir);
        }
        {
            use std::os::unix::process::CommandExt;
            // Its own group, so that a kill reaches what it started too.
            cmd.process_group(0);
        }
        let name = script_name.to_string();
        let shared = Rc::new(Watch::default());
        let proto = CgiProcess {
            state: CgiState::Header {
                buf: Vec::new(),
                responder: cx.defer(),
            },
            name: name.clone(),
            client: req.conn_id(),
            watch: shared.clone(),
            running: self.running.clone(),
        };
        let opts = ProcessOptions::default();
        let process = match spawn_command(cx.reactor(), proto, cmd, opts) {
            Ok(p) => p,
            Err(e) => {
                log::error!("{name}: cannot run the CGI script: {e}");
                // The responder went down with the protocol and answers 40;
                // this answer is the one sent, being first.
                return Ok(Response::cgi_error("The script could not be started")?.into());
            }
        };
        self.running.set(self.running.get() + 1);
        shared.pid.set(process.pid());
        let w = shared.clone();
        let timeout = self.opts.timeout;
        let timer = cx.reactor().call_later(timeout, move |_| {
            if !w.ended.get() {
                log::warn!("{name}: still running after {timeout:?}; killing it");
                w.timed_out.set(true);
                w.kill();
            }
        });
        *shared.timer.borrow_mut() = Some(timer);
        *shared.process.borrow_mut() = Some(process);
        Ok(Reply::Later)
    }
}

/// What the script's protocol shares with its timer and flow hook.
#[derive(Default)]
struct Watch {
    pid: Cell<u32>,
    ended: Cell<bool>,
    timed_out: Cell<bool>,
    timer: RefCell<Option<DelayedCall>>,
    process: RefCell<Option<Process>>,
}

impl Watch {
    /// Kill the script's process group (only while it is not reaped, so
    /// the group is still ours).
    fn kill(&self) {
        let pid = self.pid.get();
        if pid != 0 && !self.ended.get() {
            // SAFETY: signalling our own child's process group.
            unsafe { libc::kill(-(pid as libc::pid_t), libc::SIGKILL) };
        }
    }
}

enum CgiState {
    /// Reading the header line.
    Header { buf: Vec<u8>, responder: Responder },
    /// Passing the body on.
    Body { writer: BodyWriter },
    /// Answered (or refused): output is discarded.
    Done,
}

struct CgiProcess {
    state: CgiState,
    name: String,
    /// The client's connection (cut if the body is).
    client: ConnId,
    watch: Rc<Watch>,
    running: Rc<Cell<usize>>,
}

/// Parse a script's header line (without its line ending).
pub(crate) fn parse_header(line: &[u8]) -> Option<(Status, String)> {
    let text = std::str::from_utf8(line).ok()?;
    let code = text.get(..2)?;
    if !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let status = Status::from_code(code.parse().ok()?)?;
    let meta = match &text[2..] {
        "" => "",
        rest => rest.strip_prefix(' ')?,
    };
    Response::new(status, meta).ok()?;
    Some((status, meta.to_string()))
}

impl CgiProcess {
    fn refuse(&mut self, r: &mut Reactor, why: &str) {
        if let CgiState::Header { responder, .. } = std::mem::replace(&mut self.state, CgiState::Done) {
            log::warn!("{}: {why}; answering 42", self.name);
            let meta = if self.watch.timed_out.get() {
                "The script timed out"
            } else {
                "The script did not answer with a valid header"
            };
            let _ = responder.send(r, Response::cgi_error(meta).expect("valid"));
        }
        self.watch.kill();
    }

    fn header(&mut self, t: &mut dyn ProcessTransport, data: &[u8]) {
        let CgiState::Header { buf, .. } = &mut self.state else {
            return;
        };
        let room = (MAX_HEADER + 1).saturating_sub(buf.len());
        buf.extend_from_slice(&data[..data.len().min(room)]);
        let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
            if buf.len() > MAX_HEADER {
                self.refuse(t.reactor(), "the header line is too long");
            }
            return;
        };
        let line = buf[..lf].strip_suffix(b"\r").unwrap_or(&buf[..lf]);
        let Some((status, meta)) = parse_header(line) else {
            let shown = String::from_utf8_lossy(line).into_owned();
            return self.refuse(t.reactor(), &format!("invalid header {shown:?}"));
        };
        // What follows the header line is body. The line ends in this
        // read (earlier reads held no LF), so the body starts in `data`.
        let appended = data.len().min(room);
        let rest = data[appended - (buf.len() - lf - 1)..].to_vec();
        let CgiState::Header { responder, .. } = std::mem::replace(&mut self.state, CgiState::Done) else {
            return;
        };
        let mut resp = Response::new(status, meta).expect("checked");
        if status == Status::Success {
            let (writer, body) = channel(DEFAULT_CHANNEL_HIGH_WATER);
            let watch = self.watch.clone();
            writer.on_flow(move |r, flow| {
                let process = watch.process.borrow();
                match (flow, process.as_ref()) {
                    (Flow::Pause, Some(p)) => p.pause_reading(r),
                    (Flow::Resume, Some(p)) => p.resume_reading(r),
                    (Flow::Stop, _) => {
                        log::info!("the client of a CGI script went away; killing the script");
                        watch.kill();
                    }
                    _ => {}
                }
            });
            resp = resp.with_stream(body);
            if responder.send(t.reactor(), resp).is_err() {
                self.watch.kill();
                return;
            }
            if !rest.is_empty() && writer.write(t.reactor(), &rest).is_err() {
                self.watch.kill();
            }
            self.state = CgiState::Body { writer };
        } else {
            let _ = responder.send(t.reactor(), resp);
            // Nothing but a success has a body: the rest is not wanted.
            t.close_stdout();
        }
    }
}

impl ProcessProtocol for CgiProcess {
    fn connection_made(&mut self, t: &mut dyn ProcessTransport) {
        t.close_stdin();
    }

    fn out_received(&mut self, t: &mut dyn ProcessTransport, data: &[u8]) {
        match &self.state {
            CgiState::Header { .. } => self.header(t, data),
            CgiState::Body { writer } => {
                // Past the channel's high-water mark its flow hook pauses
                // the pipes (through the process handle, which reaches
                // them from inside this callback too), and resumes them
                // once the client has taken the backlog.
                if writer.write(t.reactor(), data).is_err() {
                    self.watch.kill();
                    self.state = CgiState::Done;
                }
            }
            CgiState::Done => {}
        }
    }

    fn err_received(&mut self, _: &mut dyn ProcessTransport, data: &[u8]) {
        let text = String::from_utf8_lossy(&data[..data.len().min(4096)]);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            log::warn!("{}: {line}", self.name);
        }
    }

    fn process_ended(&mut self, t: &mut dyn ProcessTransport, status: ExitStatus) {
        self.watch.ended.set(true);
        if let Some(timer) = self.watch.timer.borrow_mut().take() {
            timer.cancel(t.reactor());
        }
        self.watch.process.borrow_mut().take();
        self.running.set(self.running.get().saturating_sub(1));
        if !status.success() {
            log::info!("{}: {status}", self.name);
        }
        match std::mem::replace(&mut self.state, CgiState::Done) {
            header @ CgiState::Header { .. } => {
                self.state = header;
                self.refuse(t.reactor(), "the script ended without a valid header");
            }
            CgiState::Body { writer } => {
                use std::os::unix::process::ExitStatusExt;
                let killed = self.watch.timed_out.get() || status.signal().is_some();
                if killed && !writer.is_gone() {
                    // Killed mid-body: the client must not take what it
                    // got for a whole response, so no close_notify.
                    log::warn!(
                        "{}: killed while sending its body; cutting the response",
                        self.name
                    );
                    let _ = t.reactor().call_on(self.client, |_, c| c.abort_connection());
                }
                writer.close(t.reactor());
            }
            CgiState::Done => {}
        }
    }
}

/// The environment a CGI script gets for `req`, exactly jetforce's:
/// `GATEWAY_INTERFACE`, `SERVER_PROTOCOL`, `SERVER_SOFTWARE`,
/// `GEMINI_URL`, `SCRIPT_NAME`, `PATH_INFO`, `QUERY_STRING`,
/// `SERVER_NAME`, `SERVER_PORT`, `REMOTE_HOST`, `REMOTE_ADDR`,
/// `TLS_CIPHER`, `TLS_VERSION`, and with a client certificate `AUTH_TYPE`,
/// `REMOTE_USER`, `TLS_CLIENT_HASH`, `TLS_CLIENT_NOT_BEFORE`,
/// `TLS_CLIENT_NOT_AFTER`, `TLS_CLIENT_SERIAL_NUMBER` (decimal) and
/// `TLS_CLIENT_AUTHORISED`.
///
/// ```
/// use twistor_protocols::gemini::{cgi_environment, Request};
/// let req = Request::for_test("gemini://example.org/cgi-bin/hi.sh/extra?a%20b");
/// let env = cgi_environment(&req, "/cgi-bin/hi.sh", "/extra");
/// let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
/// assert_eq!(get("QUERY_STRING"), Some("a%20b"));
/// assert_eq!(get("PATH_INFO"), Some("/extra"));
/// assert_eq!(get("SERVER_NAME"), Some("example.org"));
/// assert_eq!(get("AUTH_TYPE"), None);
/// ```
pub fn environment(req: &Request, script_name: &str, path_info: &str) -> Vec<(&'static str, String)> {
    let ip = req
        .remote_ip()
        .map(|ip| ip.to_canonical().to_string())
        .unwrap_or_default();
    let port = req
        .local()
        .inet()
        .map(|a| a.port().to_string())
        .unwrap_or_default();
    let mut env = vec![
        ("GATEWAY_INTERFACE", "CGI/1.1".to_string()),
        ("SERVER_PROTOCOL", "GEMINI".to_string()),
        (
            "SERVER_SOFTWARE",
            format!("twistor/{}", env!("CARGO_PKG_VERSION")),
        ),
        ("GEMINI_URL", req.raw_url().to_string()),
        ("SCRIPT_NAME", script_name.to_string()),
        ("PATH_INFO", path_info.to_string()),
        ("QUERY_STRING", req.raw_query().unwrap_or("").to_string()),
        ("SERVER_NAME", req.hostname()),
        ("SERVER_PORT", port),
        ("REMOTE_HOST", ip.clone()),
        ("REMOTE_ADDR", ip),
        ("TLS_CIPHER", req.tls().cipher.clone()),
        ("TLS_VERSION", req.tls().version.clone()),
    ];
    if let Some(cert) = req.client_cert() {
        env.extend([
            ("AUTH_TYPE", "CERTIFICATE".to_string()),
            ("REMOTE_USER", cert.subject_cn().unwrap_or("").to_string()),
            ("TLS_CLIENT_HASH", cert.hash()),
            ("TLS_CLIENT_NOT_BEFORE", format_time(cert.facts.not_before)),
            ("TLS_CLIENT_NOT_AFTER", format_time(cert.facts.not_after)),
            ("TLS_CLIENT_SERIAL_NUMBER", hex_to_decimal(&cert.facts.serial)),
            (
                "TLS_CLIENT_AUTHORISED",
                if cert.authorised { "1" } else { "0" }.to_string(),
            ),
        ]);
    }
    env
}

/// A hexadecimal number of any length in decimal (serial numbers are up
/// to 20 bytes).
fn hex_to_decimal(hex: &str) -> String {
    let mut digits: Vec<u8> = vec![0]; // little-endian decimal digits
    for c in hex.chars() {
        let Some(v) = c.to_digit(16) else { continue };
        let mut carry = v;
        for d in digits.iter_mut() {
            let x = u32::from(*d) * 16 + carry;
            *d = (x % 10) as u8;
            carry = x / 10;
        }
        while carry > 0 {
            digits.push((carry % 10) as u8);
            carry /= 10;
        }
    }
    digits.iter().rev().map(|d| char::from(b'0' + d)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials() {
        assert_eq!(hex_to_decimal("00"), "0");
        assert_eq!(hex_to_decimal("ff"), "255");
        assert_eq!(hex_to_decimal("42f7178561d7"), "73629018972631");
        assert_eq!(
            hex_to_decimal("ffffffffffffffffffffffffffffffff"),
            u128::MAX.to_string()
        );
    }

    #[test]
    fn headers() {
        assert_eq!(
            parse_header(b"20 text/gemini"),
            Some((Status::Success, "text/gemini".into()))
        );
        assert_eq!(parse_header(b"51"), Some((Status::NotFound, "".into())));
        assert_eq!(parse_header(b"20"), None);
        assert_eq!(parse_header(b"21 text/gemini"), None);
        assert_eq!(parse_header(b"2 text"), None);
        assert_eq!(parse_header(b"hello"), None);
        assert_eq!(parse_header(b"20text/gemini"), None);
        assert_eq!(parse_header(b"\xff\xfe"), None);
    }
}
