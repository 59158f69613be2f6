//! Titan uploads from the client, against a raw TLS listener (twistor's
//! TLS layer and a protocol that records what arrives): the request line
//! with its parameters, exactly `size` bytes after it, a file larger than
//! the write buffer's hard cap streamed with backpressure, an early answer
//! that stops the upload, an empty file, and a file that shrinks while it
//! is sent (the upload fails and the server sees no close_notify).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use twistor_protocols::gemini::{fetch, FetchError, FetchOptions, FetchResponse, ServerTrust, Upload};
use twistor_reactor::{Protocol, Reactor, Reason, Transport};
use twistor_transports::tls::{generate_self_signed, listen_tls};

const WAIT: Duration = Duration::from_secs(120);

/// What the recording server saw of one upload.
#[derive(Debug, Default, Clone)]
struct Seen {
    line: String,
    /// Body bytes received after the line.
    bytes: u64,
    /// Whether every body byte was the expected pattern.
    pattern_ok: bool,
    /// How the connection ended.
    lost: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Read the whole upload, then answer 20.
    Store,
    /// Answer 59 as soon as the line is in, and drain what follows.
    RefuseEarly,
}

struct Recorder {
    mode: Mode,
    buf: Vec<u8>,
    size: Option<u64>,
    seen: Seen,
    log: Rc<RefCell<Vec<Seen>>>,
}

fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

fn size_of(line: &str) -> u64 {
    let rest = &line[line.find(";size=").expect("a size") + 6..];
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().unwrap()
}

impl Recorder {
    fn body(&mut self, t: &mut dyn Transport, data: &[u8]) {
        for (k, &b) in data.iter().enumerate() {
            if b != pattern(self.seen.bytes + k as u64) {
                self.seen.pattern_ok = false;
            }
        }
        self.seen.bytes += data.len() as u64;
        if self.mode == Mode::Store && Some(self.seen.bytes) == self.size {
            t.write(format!("20 text/plain\r\nstored {}", self.seen.bytes).as_bytes());
            t.lose_connection();
        }
    }
}

impl Protocol for Recorder {
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        if self.size.is_some() {
            return self.body(t, data);
        }
        self.buf.extend_from_slice(data);
        let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") else {
            return;
        };
        let rest = self.buf.split_off(end + 2);
        self.seen.line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let size = size_of(&self.seen.line);
        self.size = Some(size);
        self.seen.pattern_ok = true;
        if self.mode == Mode::RefuseEarly {
            t.write(b"59 Too large for this server\r\n");
        }
        if size == 0 && self.mode == Mode::Store {
            t.write(b"20 text/plain\r\ndeleted");
            t.lose_connection();
        }
        self.body(t, &rest);
    }

    fn eof_received(&mut self, _: &mut dyn Transport) -> bool {
        false
    }

    fn connection_lost(&mut self, _: &mut dyn Transport, reason: &Reason) {
        self.seen.lost = Some(reason.to_string());
        self.log.borrow_mut().push(self.seen.clone());
    }
}

fn reactor() -> Reactor {
    let mut r = Reactor::new().unwrap();
    r.set_install_signal_handlers(false);
    r
}

/// A recording TLS server in `mode`; returns its port and log.
fn recorder(r: &mut Reactor, mode: Mode) -> (u16, Rc<RefCell<Vec<Seen>>>) {
    let (config, _) = generate_self_signed(&["localhost"]).unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    let factory = move |_: &_| Recorder {
        mode,
        buf: Vec::new(),
        size: None,
        seen: Seen::default(),
        log: l.clone(),
    };
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let port = listen_tls(r, addr, factory, config).unwrap().port();
    (port, log)
}

fn file_of(name: &str, len: u64) -> PathBuf {
    let path = std::env::temp_dir().join(format!("twistor-titan-{name}-{}", std::process::id()));
    let data: Vec<u8> = (0..len).map(pattern).collect();
    std::fs::write(&path, data).unwrap();
    path
}

/// Upload and wait for the fetch's result and the server's record of it.
fn upload(
    r: &mut Reactor,
    url: &str,
    up: Upload,
    log: &Rc<RefCell<Vec<Seen>>>,
) -> (Result<FetchResponse, FetchError>, Seen) {
    let slot = Rc::new(RefCell::new(None));
    let s = slot.clone();
    let opts = FetchOptions {
        trust: ServerTrust::Insecure,
        upload: Some(up),
        timeout: Some(WAIT),
        ..FetchOptions::default()
    };
    let before = log.borrow().len();
    fetch(r, url, opts, move |_, result| *s.borrow_mut() = Some(result));
    let done = r
        .run_until(WAIT, |_| slot.borrow().is_some() && log.borrow().len() > before)
        .unwrap();
    assert!(done, "the upload did not finish in time");
    let result = slot.borrow_mut().take().unwrap();
    let seen = log.borrow()[before].clone();
    (result, seen)
}

#[test]
fn the_request_line_then_exactly_size_bytes() {
    let mut r = reactor();
    let (port, log) = recorder(&mut r, Mode::Store);
    let path = file_of("small", 1000);
    let up = Upload::file(&path).unwrap().mime("text/gemini").token("s cret;x");
    let url = format!("titan://localhost:{port}/wiki/page.gmi");
    let (result, seen) = upload(&mut r, &url, up, &log);
    let resp = result.unwrap();
    assert_eq!(
        seen.line,
        format!("titan://localhost:{port}/wiki/page.gmi;size=1000;mime=text/gemini;token=s%20cret%3Bx")
    );
    assert_eq!((seen.bytes, seen.pattern_ok), (1000, true));
    assert_eq!((resp.code(), resp.body.as_slice()), (20, &b"stored 1000"[..]));
    assert_eq!(resp.upload_sent, Some(1000));

    // An empty file: size=0 (a delete, for Titan servers), no bytes.
    std::fs::write(&path, b"").unwrap();
    let (result, seen) = upload(&mut r, &url, Upload::file(&path).unwrap(), &log);
    assert_eq!(
        seen.line,
        format!("titan://localhost:{port}/wiki/page.gmi;size=0")
    );
    assert_eq!(seen.bytes, 0);
    assert_eq!(result.unwrap().body, b"deleted");
    std::fs::remove_file(path).unwrap();
}

#[test]
fn a_file_larger_than_the_write_cap_streams_with_backpressure() {
    // Past the 16 MiB hard cap on buffered output: written without
    // backpressure, the connection would be cut with a limit reason.
    let len = 24 << 20;
    let mut r = reactor();
    let (port, log) = recorder(&mut r, Mode::Store);
    let path = file_of("large", len);
    let url = format!("titan://localhost:{port}/big.bin");
    let (result, seen) = upload(&mut r, &url, Upload::file(&path).unwrap(), &log);
    let resp = result.unwrap();
    assert_eq!((seen.bytes, seen.pattern_ok), (len, true));
    assert_eq!(resp.body, format!("stored {len}").as_bytes());
    assert_eq!(resp.upload_sent, Some(len));
    std::fs::remove_file(path).unwrap();
}

#[test]
fn an_early_answer_stops_the_upload() {
    let len = 24 << 20;
    let mut r = reactor();
    let (port, log) = recorder(&mut r, Mode::RefuseEarly);
    let path = file_of("early", len);
    let url = format!("titan://localhost:{port}/big.bin");
    let (result, seen) = upload(&mut r, &url, Upload::file(&path).unwrap(), &log);
    let resp = result.unwrap();
    assert_eq!((resp.code(), resp.meta()), (59, "Too large for this server"));
    let sent = resp.upload_sent.unwrap();
    assert!(sent < len, "the upload went on after the answer: {sent}");
    assert_eq!(seen.bytes, sent, "the server got what the client says it sent");
    assert!(seen.pattern_ok);
    std::fs::remove_file(path).unwrap();
}

#[test]
fn a_file_that_shrinks_fails_the_upload_without_close_notify() {
    let mut r = reactor();
    let (port, log) = recorder(&mut r, Mode::Store);
    let path = file_of("shrinks", 4_000_000);
    let up = Upload::file(&path).unwrap();
    // Shrunk after its size was taken: it ends after many chunks were sent.
    let data: Vec<u8> = (0..1_000_000).map(pattern).collect();
    std::fs::write(&path, data).unwrap();
    let url = format!("titan://localhost:{port}/x");
    let (result, seen) = upload(&mut r, &url, up, &log);
    match result {
        Err(e @ FetchError::Upload(_)) => {
            assert!(
                e.to_string().contains("ended after 1000000 of its 4000000 bytes"),
                "{e}"
            )
        }
        other => panic!("expected an upload error, got {other:?}"),
    }
    assert!(seen.line.ends_with(";size=4000000"), "{}", seen.line);
    assert!(seen.bytes <= 1_000_000 && seen.pattern_ok, "{seen:?}");
    let lost = seen.lost.unwrap();
    assert!(
        !lost.contains("closed cleanly"),
        "the server must not see a clean end: {lost}"
    );
    std::fs::remove_file(path).unwrap();
}
