//! One connection of a Gemini client: send the request line (and a Titan
//! upload, streamed with backpressure), read and check the response
//! header, pass the body on, and tell a complete body (close_notify) from
//! a cut one.
//!
//! A connection goes through these phases, changed only by
//! [`ClientConn::enter`], which refuses an illegal step:
//!
//! ```text
//! Handshaking --connection_made--> Header --2x--> Body --close_notify--> Ended
//!                       |             `--other status, bad header, lost--> Ended
//!                       `--the fetch is over (stale)--> Ended
//! ```
//!
//! An upload runs beside the `Header` phase: a server may answer before it
//! has every byte (an error, usually), and then the upload stops.

use twistor_reactor::{ConnId, Protocol, Reactor, Reason, Transport};

use super::client::MAX_HEADER;
use super::client_error::FetchError;
use super::client_exchange::{self, HeaderAction, Shared};
use super::client_upload::{upload_source, UploadBody};
use super::response::MAX_META;
use crate::producer::{Progress, Sender, Waker};

/// A response header as received: the code and the meta (see
/// [`parse_response_header`] for an example).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHeader {
    /// Two digits, 10 to 69.
    pub code: u8,
    /// The meta (empty when the line was just the code).
    pub meta: String,
}

/// Look for a complete response header at the start of `buf` and check it;
/// returns it and the bytes it took (CRLF included), `Ok(None)` while it is
/// incomplete, or what is wrong with it. Never panics, whatever `buf`
/// holds.
///
/// ```
/// use twistor_protocols::gemini::parse_response_header;
/// let (h, used) = parse_response_header(b"20 text/gemini\r\n# Hi").unwrap().unwrap();
/// assert_eq!((h.code, h.meta.as_str(), used), (20, "text/gemini", 16));
/// assert_eq!(parse_response_header(b"51\r\n").unwrap().unwrap().0.meta, "");
/// assert_eq!(parse_response_header(b"20 text/gem").unwrap(), None);
/// assert!(parse_response_header(b"HTTP/1.1 200 OK\r\n").is_err());
/// assert!(parse_response_header(b"20 text/gemini\n").is_err());
/// ```
pub fn parse_response_header(buf: &[u8]) -> Result<Option<(ResponseHeader, usize)>, String> {
    let window = &buf[..buf.len().min(MAX_HEADER)];
    // Fail as soon as the first bytes cannot begin a header.
    match *window {
        [b, ..] if !(b'1'..=b'6').contains(&b) => {
            return Err(format!(
                "it does not begin with a status code (first byte {})",
                describe(b)
            ))
        }
        [_, b, ..] if !b.is_ascii_digit() => {
            return Err("it does not begin with a two-digit status code".into())
        }
        [_, _, b, ..] if b != b' ' && b != b'\r' => {
            return Err(format!(
                "status {} is not followed by a space or CRLF",
                String::from_utf8_lossy(&window[..2])
            ))
        }
        _ => {}
    }
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() >= MAX_HEADER {
            return Err(format!(
                "no CRLF within the first {MAX_HEADER} bytes (a meta may be at most {MAX_META} bytes)"
            ));
        }
        return Ok(None);
    };
    if lf == 0 || window[lf - 1] != b'\r' {
        return Err("the header line ends with LF alone, not CRLF".into());
    }
    let line = &window[..lf - 1];
    if line.len() < 2 {
        return Err("it does not begin with a two-digit status code".into());
    }
    let code = (line[0] - b'0') * 10 + (line[1] - b'0');
    if line.len() > 2 && line[2] != b' ' {
        return Err(format!("status {code} is not followed by a space or CRLF"));
    }
    let meta = line.get(3..).unwrap_or(&[]);
    if meta.len() > MAX_META {
        return Err(format!(
            "the meta is {} bytes, over the {MAX_META}-byte limit",
            meta.len()
        ));
    }
    let meta = std::str::from_utf8(meta).map_err(|_| "the meta is not valid UTF-8".to_string())?;
    if meta.chars().any(char::is_control) {
        return Err("the meta holds a control character".into());
    }
    Ok(Some((
        ResponseHeader {
            code,
            meta: meta.to_string(),
        },
        lf + 1,
    )))
}

fn describe(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("0x{b:02x}")
    }
}

/// What a connection sends once it is up.
pub(crate) struct Request {
    /// The request line, without CRLF.
    pub line: String,
    /// A Titan body and its size.
    pub upload: Option<(UploadBody, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshaking,
    Header,
    Body,
    Ended,
}

/// The protocol of one client connection (over the TLS layer).
pub(crate) struct ClientConn {
    fetch: Shared,
    /// Which of the fetch's connections this is (a later one makes it stale).
    seq: u64,
    phase: Phase,
    /// The header so far (at most [`MAX_HEADER`] bytes).
    header: Vec<u8>,
    /// The upload being sent, if any.
    upload: Option<Sender>,
    upload_sent: Option<u64>,
    body_len: u64,
    target: String,
}

impl ClientConn {
    pub(crate) fn new(fetch: Shared, seq: u64, target: String) -> ClientConn {
        ClientConn {
            fetch,
            seq,
            phase: Phase::Handshaking,
            header: Vec::new(),
            upload: None,
            upload_sent: None,
            body_len: 0,
            target,
        }
    }

    /// The one place the phase changes.
    fn enter(&mut self, next: Phase) {
        let legal = matches!(
            (self.phase, next),
            (Phase::Handshaking, Phase::Header | Phase::Ended)
                | (Phase::Header, Phase::Body | Phase::Ended)
                | (Phase::Body, Phase::Ended)
        );
        assert!(
            legal,
            "gemini client connection: {:?} -> {next:?} is not a legal step",
            self.phase
        );
        self.phase = next;
    }

    /// End the fetch with `result` (if this connection still speaks for it).
    fn finish(&mut self, r: &mut Reactor, result: Result<(), FetchError>) {
        if self.phase != Phase::Ended {
            self.enter(Phase::Ended);
        }
        client_exchange::finish_exchange(r, &self.fetch, self.seq, result, self.body_len, self.upload_sent);
    }

    fn fail(&mut self, t: &mut dyn Transport, message: String) {
        let target = self.target.clone();
        self.stop_upload(t.reactor());
        self.finish(t.reactor(), Err(FetchError::BadResponse { target, message }));
        t.abort_connection();
    }

    /// What a close before a complete header means.
    fn closed_early(&self) -> String {
        if self.header.is_empty() {
            "the server closed the connection without answering".into()
        } else {
            format!(
                "the server closed the connection after {} bytes of an incomplete header",
                self.header.len()
            )
        }
    }

    fn stop_upload(&mut self, r: &mut Reactor) {
        if let Some(mut s) = self.upload.take() {
            self.upload_sent = Some(s.sent());
            s.stop(r);
        }
    }

    /// Send more of the upload (also what its waker calls).
    fn pump(&mut self, t: &mut dyn Transport) {
        let Some(sender) = self.upload.as_mut() else {
            return;
        };
        let progress = sender.send(t);
        self.after_progress(t, progress);
    }

    fn after_progress(&mut self, t: &mut dyn Transport, progress: Progress) {
        match progress {
            Progress::Going => {}
            Progress::Finished => {
                if let Some(s) = self.upload.take() {
                    self.upload_sent = Some(s.sent());
                }
            }
            Progress::Failed(e) => {
                self.stop_upload(t.reactor());
                self.finish(t.reactor(), Err(FetchError::Upload(e.to_string())));
                // No close_notify: the server must not take a cut upload for a whole one.
                t.abort_connection();
            }
        }
    }

    fn on_header_bytes(&mut self, t: &mut dyn Transport, data: &[u8]) {
        let room = MAX_HEADER.saturating_sub(self.header.len());
        let taken = data.len().min(room);
        self.header.extend_from_slice(&data[..taken]);
        let (header, used) = match parse_response_header(&self.header) {
            Ok(None) => return,
            Err(e) => return self.fail(t, e),
            Ok(Some(found)) => found,
        };
        // The server has answered: whatever was not uploaded yet never will be.
        self.stop_upload(t.reactor());
        let mut rest = self.header.split_off(used);
        rest.extend_from_slice(&data[taken..]);
        self.header = Vec::new();
        let action = client_exchange::on_header(t, &self.fetch, self.seq, header, self.upload_sent);
        match action {
            HeaderAction::Body => {
                self.enter(Phase::Body);
                if !rest.is_empty() {
                    self.on_body(t, &rest);
                }
            }
            HeaderAction::Close => {
                self.enter(Phase::Ended);
                t.lose_connection();
            }
        }
    }

    fn on_body(&mut self, t: &mut dyn Transport, data: &[u8]) {
        self.body_len += data.len() as u64;
        if let Err(e) = client_exchange::on_body(t.reactor(), &self.fetch, self.seq, data) {
            self.finish(t.reactor(), Err(e));
            t.abort_connection();
        }
    }
}

/// Whether the peer closed without close_notify (what the TLS layer
/// reports as `truncated: ...`).
fn is_truncation(reason: &Reason) -> bool {
    matches!(reason, Reason::Tls(m) if m.starts_with("truncated"))
}

/// Reaches a connection's protocol to send more of its upload.
fn waker(id: ConnId) -> Waker {
    Waker::new(move |r| {
        let _ = r.call_on(id, |p, t| {
            if let Some(c) = p.downcast_mut::<ClientConn>() {
                c.pump(t);
            }
        });
    })
}

impl Protocol for ClientConn {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        let Some(request) = client_exchange::on_connected(t, &self.fetch, self.seq) else {
            // The fetch is over (timed out, cancelled): nothing to ask.
            self.enter(Phase::Ended);
            t.abort_connection();
            return;
        };
        self.enter(Phase::Header);
        t.write_sequence(&[request.line.as_bytes(), b"\r\n"]);
        if let Some((body, size)) = request.upload {
            self.upload_sent = Some(0);
            if size == 0 {
                return;
            }
            match upload_source(&body, size) {
                Ok(source) => {
                    self.upload = Some(Sender::boxed(source, waker(t.id())));
                    self.pump(t);
                }
                Err(e) => {
                    self.finish(t.reactor(), Err(FetchError::Upload(e.to_string())));
                    t.abort_connection();
                }
            }
        }
    }

    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        match self.phase {
            Phase::Header => self.on_header_bytes(t, data),
            Phase::Body => self.on_body(t, data),
            // Bytes after a non-2x header, or once the fetch is over.
            Phase::Handshaking | Phase::Ended => {}
        }
    }

    fn eof_received(&mut self, t: &mut dyn Transport) -> bool {
        match self.phase {
            Phase::Header => {
                let message = self.closed_early();
                self.fail(t, message);
            }
            Phase::Body => self.finish(t.reactor(), Ok(())),
            Phase::Handshaking | Phase::Ended => {}
        }
        false
    }

    fn connection_lost(&mut self, t: &mut dyn Transport, reason: &Reason) {
        self.stop_upload(t.reactor());
        let target = self.target.clone();
        let result = match (self.phase, reason) {
            (Phase::Ended | Phase::Handshaking, _) => return,
            (Phase::Body, Reason::ConnectionDone) => Ok(()),
            (Phase::Body, r) if is_truncation(r) => Err(FetchError::Truncated {
                target,
                received: self.body_len,
            }),
            (Phase::Header, r) if r.is_clean() || is_truncation(r) => Err(FetchError::BadResponse {
                target,
                message: self.closed_early(),
            }),
            (_, reason) => Err(FetchError::Lost {
                target,
                reason: reason.clone(),
            }),
        };
        self.finish(t.reactor(), result);
    }

    fn pause_writing(&mut self, t: &mut dyn Transport) {
        if let Some(s) = self.upload.as_mut() {
            s.pause_writing(t.reactor());
        }
    }

    fn resume_writing(&mut self, t: &mut dyn Transport) {
        if let Some(s) = self.upload.as_mut() {
            let progress = s.resume_writing(t);
            self.after_progress(t, progress);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(buf: &[u8]) -> String {
        parse_response_header(buf).unwrap_err()
    }

    #[test]
    fn headers() {
        let (h, n) = parse_response_header(b"31 gemini://x/\r\n").unwrap().unwrap();
        assert_eq!((h.code, h.meta.as_str(), n), (31, "gemini://x/", 16));
        let (h, _) = parse_response_header(b"20 \r\n").unwrap().unwrap();
        assert_eq!(h.meta, "");
        assert_eq!(parse_response_header(b"").unwrap(), None);
        assert_eq!(parse_response_header(b"2").unwrap(), None);
        assert_eq!(parse_response_header(b"20 text\r").unwrap(), None);
        assert!(err(b"<html>").contains("'<'"));
        assert!(err(b"\x16\x03\x01").contains("0x16"));
        assert!(err(b"7x\r\n").contains("status code"));
        assert!(err(b"2x\r\n").contains("two-digit"));
        assert!(err(b"200 OK\r\n").contains("not followed by a space"));
        assert!(err(b"20\ttext/gemini\r\n").contains("not followed"));
        assert!(err(b"20 a\x1bb\r\n").contains("control"));
        assert!(err(b"20 \xff\r\n").contains("UTF-8"));
        assert!(err(b"20 text/gemini\n").contains("LF alone"));
        assert!(err(b"20\rX\r\n").contains("not followed"));
    }

    #[test]
    fn meta_limit() {
        let line = |n: usize| {
            let mut v = b"20 ".to_vec();
            v.resize(3 + n, b'a');
            v.extend_from_slice(b"\r\n");
            v
        };
        assert_eq!(
            parse_response_header(&line(MAX_META)).unwrap().unwrap().1,
            MAX_HEADER
        );
        assert!(err(&line(MAX_META + 1)).contains("no CRLF within"));
        // Without any CRLF: refused once more than a header's worth arrived.
        let mut long = line(MAX_HEADER);
        long.truncate(MAX_HEADER);
        assert!(err(&long).contains("no CRLF"));
        assert_eq!(parse_response_header(&long[..MAX_HEADER - 1]).unwrap(), None);
        // Garbage is refused from its first bytes.
        assert!(err(b"2222").contains("not followed"));
    }

    proptest::proptest! {
        /// Whatever a server sends: no panic, and a header found is a
        /// whole line within the limit.
        #[test]
        fn any_bytes(buf in proptest::collection::vec(proptest::num::u8::ANY, 0..1100)) {
            if let Ok(Some((h, used))) = parse_response_header(&buf) {
                proptest::prop_assert!(used <= MAX_HEADER && &buf[used - 2..used] == b"\r\n");
                proptest::prop_assert!((10..70).contains(&h.code) && h.meta.len() <= MAX_META);
            }
        }

        /// A valid header is found whole, however much body follows.
        #[test]
        fn valid_headers(code in 10u8..70, meta in "[ -~]{0,1024}", body in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let mut buf = format!("{code} {meta}\r\n").into_bytes();
            let len = buf.len();
            buf.extend_from_slice(&body);
            let (h, used) = parse_response_header(&buf).unwrap().unwrap();
            proptest::prop_assert_eq!((h.code, h.meta.as_str(), used), (code, meta.as_str(), len));
        }
    }
}
