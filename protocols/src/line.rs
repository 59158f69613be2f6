//! `LineReceiver`: a protocol that splits its input into lines (Twisted's
//! `twisted.protocols.basic.LineReceiver`).
//!
//! You write a [`LineHandler`] (`line_received`, and `raw_data_received` if
//! the protocol switches to raw mode); [`LineReceiver`] wraps it into a
//! [`Protocol`] that works over any transport: TCP, TLS, Unix sockets or the
//! in-memory test pair.
//!
//! - The delimiter is `\r\n` by default ([`LineReceiver::with_delimiter`]).
//! - Lines are bounded: a line longer than [`DEFAULT_MAX_LINE_LENGTH`]
//!   ([`LineReceiver::with_max_length`]) goes to
//!   [`LineHandler::line_length_exceeded`], which by default logs it and
//!   closes the connection with [`Reason::Limit`]. If an override keeps the
//!   connection open, the over-long line is skipped up to the next
//!   delimiter. Memory per connection stays below the limit, and once the
//!   buffer drains an idle connection keeps at most
//!   [`InputBuf::KEEP`] bytes of it, however long its last line was
//!   ([`LineReceiver::buffer_capacity`]).
//! - The delimiter is found with the `memchr` crate's SIMD search, and a
//!   partial line is searched only once: each chunk's search starts where
//!   the previous one stopped.
//! - [`LineControl::set_raw_mode`] / [`LineControl::set_line_mode`] switch
//!   framing in the middle of a chunk: the bytes after the line that asked
//!   for raw mode go to `raw_data_received`, and the bytes a raw handler
//!   hands back with [`LineControl::set_line_mode_with`] are split into lines
//!   again. Handing back the tail of the data it was given costs no copy,
//!   so many short raw runs in one chunk stay linear in the chunk's size.
//! - As in Twisted, lines still buffered are not delivered while the
//!   transport is closing or reading is paused; they are delivered once
//!   reading resumes through [`LineReceiver::resume_reading`] (or any
//!   [`LineReceiver::with_handler`] call).
//! - Buffered input is discarded, never interpreted, when the handler starts
//!   TLS (see [`Control`]) or calls [`Control::clear_buffer`].
//!
//! ## Where it differs from Twisted, on purpose
//!
//! - [`LineHandler::line_length_exceeded`] gets the first `max_length + 1`
//!   bytes of the over-long line, not the line and everything buffered
//!   after it (that would mean buffering past the limit). If an override
//!   keeps the connection open, only the over-long line is dropped and the
//!   lines after it are delivered; Twisted drops the whole buffer.
//! - [`Control::clear_buffer`] returns nothing (Twisted's
//!   `clearLineBuffer()` returns what it dropped). To hand the bytes after
//!   a line to another protocol, call [`LineControl::set_raw_mode`] in
//!   `line_received`: `raw_data_received` gets them next, and can
//!   [`upgrade`](twistor_reactor::Transport::upgrade) to a protocol that
//!   is given them first.
//! - [`LineControl::set_line_mode_with`] called from `line_received` frames
//!   its bytes before the rest of the chunk; Twisted appends them after.
//! - As in Twisted, a partial line is over-long once it holds
//!   `max_length + delimiter length` bytes with no delimiter; a line of
//!   exactly `max_length` bytes is accepted, even with its delimiter split
//!   across reads. Twisted's `LineOnlyReceiver` is a `LineReceiver` whose
//!   handler never calls `set_raw_mode`.
//! - A handler with a timeout of its own (`class P(LineReceiver,
//!   TimeoutMixin)`) keeps a [`Timeout`](crate::Timeout) and overrides
//!   [`LineHandler::timeout_connection`].

use std::mem;

use memchr::memmem::Finder;
use twistor_reactor::{InputBuf, Protocol, Reason, Transport};

use crate::control::{Control, FramingState};
use crate::timeout::TimeoutTarget;

/// Default maximum line length in bytes, delimiter excluded (Twisted's
/// `LineReceiver.MAX_LENGTH`).
///
/// ```
/// assert_eq!(twistor_protocols::DEFAULT_MAX_LINE_LENGTH, 16384);
/// ```
pub const DEFAULT_MAX_LINE_LENGTH: usize = 16 * 1024;

/// The handle a [`LineHandler`]'s callbacks receive: the transport (it is a
/// [`Transport`]) plus the line framing's controls.
///
/// ```
/// use twistor_protocols::{LineControl, LineReceiver};
/// use twistor_reactor::{testing::StringTransport, Protocol};
///
/// // A closure is a line handler too.
/// let mut p = LineReceiver::new(|c: &mut LineControl<'_>, line: &[u8]| {
///     c.send_line(&line.to_ascii_uppercase());
/// });
/// let mut t = StringTransport::new();
/// p.data_received(&mut t, b"hello\r\nworld\r\n");
/// assert_eq!(t.value(), b"HELLO\r\nWORLD\r\n");
/// ```
pub type LineControl<'a> = Control<'a, LineState>;

/// The line framing's state, reached through a [`LineControl`]'s methods
/// (`set_raw_mode`, `set_delimiter`, `set_max_length`...).
///
/// ```
/// use twistor_protocols::{LineControl, LineReceiver};
/// use twistor_reactor::testing::StringTransport;
/// fn on_line(_: &mut LineControl<'_>, _: &[u8]) {}
/// let mut p = LineReceiver::new(on_line);
/// let raw = p.with_handler(&mut StringTransport::new(), |_, c| c.is_raw_mode());
/// assert!(!raw);
/// ```
#[derive(Debug, Clone)]
pub struct LineState {
    /// Searches for the delimiter (and holds it: `finder.needle()`).
    finder: Finder<'static>,
    max_length: usize,
    mode: Mode,
    discard: bool,
    /// Bytes a raw handler gave back with `set_line_mode_with`, copied.
    pushback: Option<Vec<u8>>,
    /// While `raw_data_received` runs: the address and length of the data
    /// it was given, to recognise a hand-back of its own tail.
    raw_window: Option<(usize, usize)>,
    /// The raw handler gave back the last `n` bytes of its data: framed
    /// again in place, without a copy.
    handback: Option<usize>,
    /// How much of the buffered tail is known to hold no delimiter.
    scanned: usize,
}

/// How a [`LineReceiver`] frames its input right now. Changed only
/// through [`LineState::enter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Split input into lines.
    Lines,
    /// Inside an over-long line whose hook kept the connection: drop bytes
    /// up to the next delimiter, then back to `Lines`.
    Skipping,
    /// Hand input to `raw_data_received` unsplit.
    Raw,
}

impl LineState {
    /// The one place the mode changes. Only line mode can find an
    /// over-long line, so `Raw -> Skipping` is refused.
    fn enter(&mut self, next: Mode) {
        if (self.mode, next) == (Mode::Raw, Mode::Skipping) {
            debug_assert!(false, "raw mode cannot skip an over-long line");
            return;
        }
        self.mode = next;
    }
}

impl FramingState for LineState {
    fn discard_input(&mut self) {
        self.discard = true;
    }
}

impl Control<'_, LineState> {
    /// Write `line` followed by the delimiter (Twisted's `sendLine`).
    ///
    /// ```
    /// # use twistor_protocols::{LineControl, LineReceiver};
    /// # use twistor_reactor::{testing::StringTransport, Protocol};
    /// let mut p = LineReceiver::new(|c: &mut LineControl<'_>, _: &[u8]| c.send_line(b"ok"))
    ///     .with_delimiter(b"\n");
    /// let mut t = StringTransport::new();
    /// p.data_received(&mut t, b"x\n");
    /// assert_eq!(t.value(), b"ok\n");
    /// ```
    pub fn send_line(&mut self, line: &[u8]) {
        self.t.write_sequence(&[line, self.st.finder.needle()]);
    }

    /// Switch to raw mode: from the next byte on, input goes to
    /// [`LineHandler::raw_data_received`] unsplit, starting with whatever
    /// followed the current line in the buffer (Twisted's `setRawMode`).
    ///
    /// ```
    /// # use twistor_protocols::{LineControl, LineHandler, LineReceiver};
    /// # use twistor_reactor::{testing::StringTransport, Protocol};
    /// #[derive(Default)]
    /// struct Upload { body: Vec<u8> }
    /// impl LineHandler for Upload {
    ///     fn line_received(&mut self, c: &mut LineControl<'_>, line: &[u8]) {
    ///         if line == b"BODY" { c.set_raw_mode() }
    ///     }
    ///     fn raw_data_received(&mut self, _: &mut LineControl<'_>, data: &[u8]) {
    ///         self.body.extend_from_slice(data);
    ///     }
    /// }
    /// let mut p = LineReceiver::new(Upload::default());
    /// p.data_received(&mut StringTransport::new(), b"BODY\r\nraw\r\nbytes");
    /// assert_eq!(p.handler().body, b"raw\r\nbytes");
    /// ```
    pub fn set_raw_mode(&mut self) {
        self.st.enter(Mode::Raw);
    }

    /// Switch back to line mode (Twisted's `setLineMode()`): input from the
    /// next chunk on is split into lines. From inside
    /// `raw_data_received`, use [`set_line_mode_with`](Self::set_line_mode_with)
    /// to hand back the part of the chunk you did not consume.
    ///
    /// ```
    /// # use twistor_protocols::{LineControl, LineHandler, LineReceiver};
    /// # use twistor_reactor::{testing::StringTransport, Protocol};
    /// /// Raw mode until a chunk ends with "END".
    /// #[derive(Default)]
    /// struct Until { lines: usize }
    /// impl LineHandler for Until {
    ///     fn line_received(&mut self, c: &mut LineControl<'_>, _: &[u8]) {
    ///         self.lines += 1;
    ///         c.set_raw_mode();
    ///     }
    ///     fn raw_data_received(&mut self, c: &mut LineControl<'_>, data: &[u8]) {
    ///         if data.ends_with(b"END") {
    ///             c.set_line_mode();
    ///         }
    ///     }
    /// }
    /// let mut p = LineReceiver::new(Until::default());
    /// let mut t = StringTransport::new();
    /// p.data_received(&mut t, b"go\r\n");
    /// p.data_received(&mut t, b"raw\r\nEND");
    /// p.data_received(&mut t, b"a line\r\n");
    /// assert_eq!(p.handler().lines, 2);
    /// ```
    pub fn set_line_mode(&mut self) {
        if self.st.mode == Mode::Raw {
            self.st.enter(Mode::Lines);
        }
    }

    /// Switch back to line mode, and split `rest` into lines before any
    /// later input (Twisted's `setLineMode(extra)`). A raw handler calls it
    /// with the unconsumed tail of the data it was given.
    ///
    /// ```
    /// # use twistor_protocols::{LineControl, LineHandler, LineReceiver};
    /// # use twistor_reactor::{testing::StringTransport, Protocol};
    /// /// "DATA n" is followed by n raw bytes, then lines again.
    /// #[derive(Default)]
    /// struct Sized { want: usize, got: Vec<Vec<u8>> }
    /// impl LineHandler for Sized {
    ///     fn line_received(&mut self, c: &mut LineControl<'_>, line: &[u8]) {
    ///         if let Some(n) = line.strip_prefix(b"DATA ") {
    ///             self.want = std::str::from_utf8(n).unwrap().parse().unwrap();
    ///             c.set_raw_mode();
    ///         } else {
    ///             self.got.push(line.to_vec());
    ///         }
    ///     }
    ///     fn raw_data_received(&mut self, c: &mut LineControl<'_>, data: &[u8]) {
    ///         let (body, rest) = data.split_at(self.want.min(data.len()));
    ///         self.want -= body.len();
    ///         self.got.push(body.to_vec());
    ///         if self.want == 0 {
    ///             c.set_line_mode_with(rest);
    ///         }
    ///     }
    /// }
    /// let mut p = LineReceiver::new(Sized::default());
    /// p.data_received(&mut StringTransport::new(), b"DATA 3\r\nabcnext\r\n");
    /// assert_eq!(p.handler().got, [b"abc".to_vec(), b"next".to_vec()]);
    /// ```
    pub fn set_line_mode_with(&mut self, rest: &[u8]) {
        self.set_line_mode();
        if rest.is_empty() {
            return;
        }
        // The usual case: the unconsumed tail of the data being delivered.
        // Those bytes are still in the receiver's input, so it just goes
        // back over them, whatever their number (copying them each time
        // would make many small raw runs in one chunk quadratic).
        if let Some((start, len)) = self.st.raw_window {
            let at = rest.as_ptr() as usize;
            let is_tail = at >= start && at + rest.len() == start + len;
            if is_tail && self.st.handback.is_none() && self.st.pushback.is_none() {
                self.st.handback = Some(rest.len());
                return;
            }
        }
        self.st
            .pushback
            .get_or_insert_with(Vec::new)
            .extend_from_slice(rest);
    }

    /// Whether raw mode is on.
    pub fn is_raw_mode(&self) -> bool {
        self.st.mode == Mode::Raw
    }

    /// The delimiter.
    pub fn delimiter(&self) -> &[u8] {
        self.st.finder.needle()
    }

    /// Change the delimiter for the lines that follow.
    ///
    /// ```
    /// # use twistor_protocols::{LineControl, LineReceiver};
    /// # use twistor_reactor::{testing::StringTransport, Protocol};
    /// // The first line picks the delimiter for the rest.
    /// let mut p = LineReceiver::new(|c: &mut LineControl<'_>, line: &[u8]| {
    ///     if line == b"UNIX" {
    ///         c.set_delimiter(b"\n");
    ///     } else {
    ///         c.send_line(line);
    ///     }
    /// });
    /// let mut t = StringTransport::new();
    /// p.data_received(&mut t, b"UNIX\r\nsome\nlines\n");
    /// assert_eq!(t.value(), b"some\nlines\n");
    /// ```
    ///
    /// # Panics
    /// If `delimiter` is empty.
    pub fn set_delimiter(&mut self, delimiter: &[u8]) {
        assert!(!delimiter.is_empty(), "a line delimiter cannot be empty");
        self.st.finder = Finder::new(delimiter).into_owned();
        self.st.scanned = 0;
    }

    /// The maximum line length.
    pub fn max_length(&self) -> usize {
        self.st.max_length
    }

    /// Change the maximum line length (e.g. after a login).
    ///
    /// ```
    /// # use twistor_protocols::{LineControl, LineReceiver};
    /// # use twistor_reactor::{testing::StringTransport, Protocol};
    /// let mut p = LineReceiver::new(|c: &mut LineControl<'_>, line: &[u8]| {
    ///     if line == b"login" {
    ///         c.set_max_length(c.max_length() * 4);
    ///     }
    /// })
    /// .with_max_length(8);
    /// let mut t = StringTransport::new();
    /// p.data_received(&mut t, b"login\r\nsixteen-byte-line\r\n");
    /// assert!(!t.disconnecting());
    /// ```
    pub fn set_max_length(&mut self, max: usize) {
        self.st.max_length = max;
    }
}

/// A line protocol's callbacks, run by a [`LineReceiver`]. Only
/// [`line_received`](LineHandler::line_received) is required.
///
/// Any `FnMut(&mut LineControl, &[u8])` closure is a line handler.
///
/// ```
/// use twistor_protocols::{LineControl, LineHandler, LineReceiver};
/// use twistor_reactor::{testing::StringTransport, Protocol, Reason, Transport};
///
/// /// A tiny chat-style command protocol.
/// struct Commands;
/// impl LineHandler for Commands {
///     fn connection_made(&mut self, c: &mut LineControl<'_>) {
///         c.send_line(b"welcome");
///     }
///     fn line_received(&mut self, c: &mut LineControl<'_>, line: &[u8]) {
///         match line {
///             b"quit" => c.lose_connection(),
///             other => c.send_line(other),
///         }
///     }
///     fn connection_lost(&mut self, _: &mut LineControl<'_>, reason: &Reason) {
///         println!("gone: {reason}");
///     }
/// }
///
/// let mut t = StringTransport::new();
/// let mut p = LineReceiver::new(Commands);
/// p.connection_made(&mut t);
/// p.data_received(&mut t, b"hi\r\nquit\r\nignored\r\n");
/// assert_eq!(t.value(), b"welcome\r\nhi\r\n");
/// assert!(t.disconnecting());
/// ```
pub trait LineHandler: 'static {
    /// The connection is up (after the TLS handshake, if any).
    fn connection_made(&mut self, c: &mut LineControl<'_>) {
        let _ = c;
    }

    /// A complete line arrived, without its delimiter. It borrows the
    /// receiver's buffer: copy what you keep.
    fn line_received(&mut self, c: &mut LineControl<'_>, line: &[u8]);

    /// Data arrived in raw mode. The default drops it (with a debug log).
    fn raw_data_received(&mut self, c: &mut LineControl<'_>, data: &[u8]) {
        log::debug!(
            "{}: {} raw byte(s) dropped: raw_data_received not implemented",
            c.id(),
            data.len()
        );
    }

    /// A line longer than the maximum arrived; `line` holds its first
    /// `max_length + 1` bytes. The default logs it and closes the connection
    /// with [`Reason::Limit`]. If an override leaves the connection open, the
    /// rest of the over-long line is skipped.
    fn line_length_exceeded(&mut self, c: &mut LineControl<'_>, line: &[u8]) {
        let _ = line;
        let max = c.max_length();
        log::warn!(
            "{}: {} sent a line longer than {max} bytes; closing",
            c.id(),
            c.peer()
        );
        c.lose_connection_with(Reason::Limit(format!("line longer than {max} bytes")));
    }

    /// The timeout set with [`Timeout::set_timeout`](crate::Timeout::set_timeout)
    /// expired (Twisted's `TimeoutMixin.timeoutConnection`). The default
    /// logs it and closes the connection with [`Reason::TimedOut`].
    fn timeout_connection(&mut self, c: &mut LineControl<'_>) {
        log::info!("{}: {} timed out; closing", c.id(), c.peer());
        c.lose_connection_with(Reason::TimedOut);
    }

    /// The peer half-closed. Return `true` to keep the connection open for
    /// writing. A partial last line (no delimiter) is dropped, as in Twisted.
    fn eof_received(&mut self, c: &mut LineControl<'_>) -> bool {
        let _ = c;
        false
    }

    /// The connection is gone.
    fn connection_lost(&mut self, c: &mut LineControl<'_>, reason: &Reason) {
        let _ = (c, reason);
    }

    /// The write buffer is over its high-water mark.
    fn pause_writing(&mut self, c: &mut LineControl<'_>) {
        let _ = c;
    }

    /// The write buffer drained.
    fn resume_writing(&mut self, c: &mut LineControl<'_>) {
        let _ = c;
    }
}

impl<F> LineHandler for F
where
    F: FnMut(&mut LineControl<'_>, &[u8]) + 'static,
{
    fn line_received(&mut self, c: &mut LineControl<'_>, line: &[u8]) {
        self(c, line)
    }
}

/// A [`Protocol`] that splits input into lines for a [`LineHandler`]
/// (Twisted's `LineReceiver`). See the [module docs](self).
///
/// ```
/// use twistor_protocols::{LineControl, LineHandler, LineReceiver};
/// use twistor_reactor::{testing::StringTransport, Protocol};
///
/// struct Shout;
/// impl LineHandler for Shout {
///     fn line_received(&mut self, c: &mut LineControl<'_>, line: &[u8]) {
///         c.send_line(&line.to_ascii_uppercase());
///     }
/// }
///
/// // A factory for listen_tcp: `|_: &Address| LineReceiver::new(Shout)`.
/// let mut p = LineReceiver::new(Shout).with_max_length(1024);
/// let mut t = StringTransport::new();
/// p.data_received(&mut t, b"hel");
/// p.data_received(&mut t, b"lo\r\n");
/// assert_eq!(t.value(), b"HELLO\r\n");
/// ```
pub struct LineReceiver<H: LineHandler> {
    handler: H,
    st: LineState,
    buf: InputBuf,
    /// Bytes the delimiter search has looked at, in total (each byte of a
    /// long partial line is looked at once, not once per chunk, and a
    /// chunk of many lines is looked at once, not once per line).
    searched: u64,
    /// Bytes handed back by raw handlers that had to be copied.
    copied: u64,
}

impl<H: LineHandler> LineReceiver<H> {
    /// Wrap `handler`, with the `\r\n` delimiter and the default maximum line
    /// length; `with_delimiter` and `with_max_length` change them.
    ///
    /// ```
    /// use twistor_protocols::{LineControl, LineReceiver};
    /// use twistor_reactor::{testing::StringTransport, Protocol};
    /// let mut p = LineReceiver::new(|c: &mut LineControl<'_>, line: &[u8]| c.send_line(line))
    ///     .with_delimiter(b"\0")
    ///     .with_max_length(255);
    /// let mut t = StringTransport::new();
    /// p.data_received(&mut t, b"one\0two\0");
    /// assert_eq!(t.value(), b"one\0two\0");
    /// ```
    pub fn new(handler: H) -> Self {
        LineReceiver {
            handler,
            st: LineState {
                finder: Finder::new(b"\r\n").into_owned(),
                max_length: DEFAULT_MAX_LINE_LENGTH,
                mode: Mode::Lines,
                discard: false,
                pushback: None,
                raw_window: None,
                handback: None,
                scanned: 0,
            },
            buf: InputBuf::new(),
            searched: 0,
            copied: 0,
        }
    }

    /// Use another delimiter (e.g. `b"\n"`).
    ///
    /// # Panics
    /// If `delimiter` is empty.
    pub fn with_delimiter(mut self, delimiter: &[u8]) -> Self {
        assert!(!delimiter.is_empty(), "a line delimiter cannot be empty");
        self.st.finder = Finder::new(delimiter).into_owned();
        self
    }

    /// Set the maximum line length (delimiter excluded).
    pub fn with_max_length(mut self, max: usize) -> Self {
        self.st.max_length = max;
        self
    }

    /// The handler (see [`set_raw_mode`](LineControl::set_raw_mode) for an
    /// example).
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The handler, mutably (use [`with_handler`](Self::with_handler) when
    /// the handler needs the connection).
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// Input received and not delivered yet (a partial line, or lines held
    /// back while reading is paused).
    ///
    /// ```
    /// # use twistor_protocols::{LineControl, LineReceiver};
    /// # use twistor_reactor::{testing::StringTransport, Protocol};
    /// let mut p = LineReceiver::new(|_: &mut LineControl<'_>, _: &[u8]| {});
    /// p.data_received(&mut StringTransport::new(), b"done\r\npart");
    /// assert_eq!(p.buffered(), b"part");
    /// ```
    pub fn buffered(&self) -> &[u8] {
        self.buf.as_slice()
    }

    /// Bytes of input buffer allocated right now: what this connection
    /// costs while idle. Once the buffer drains, it is at most
    /// [`InputBuf::KEEP`](twistor_reactor::InputBuf::KEEP), however long
    /// the last line was.
    ///
    /// ```
    /// # use twistor_protocols::{LineControl, LineReceiver};
    /// # use twistor_reactor::{testing::StringTransport, InputBuf, Protocol};
    /// let mut p = LineReceiver::new(|_: &mut LineControl<'_>, _: &[u8]| {});
    /// let mut t = StringTransport::new();
    /// for _ in 0..15 {
    ///     p.data_received(&mut t, &[b'x'; 1000]); // one long line, in pieces
    /// }
    /// p.data_received(&mut t, b"\r\n");
    /// assert!(p.buffer_capacity() <= InputBuf::KEEP);
    /// ```
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Run `f` with the handler and a [`LineControl`] for this connection,
    /// then deliver whatever the change made deliverable (buffered lines
    /// after a resume, buffered bytes after a switch to raw mode). This is
    /// how code outside a callback (a timer, another connection through
    /// `call_on`) talks to a line protocol.
    ///
    /// ```
    /// use twistor_protocols::{LineControl, LineReceiver};
    /// use twistor_reactor::{testing::StringTransport, Protocol, Transport};
    ///
    /// type Chat = LineReceiver<fn(&mut LineControl<'_>, &[u8])>;
    /// fn on_line(_: &mut LineControl<'_>, _: &[u8]) {}
    ///
    /// let mut p: Box<dyn Protocol> = Box::new(Chat::new(on_line));
    /// let mut t = StringTransport::new();
    /// // What `reactor.call_on(id, |p, t| ...)` would run:
    /// let chat = p.downcast_mut::<Chat>().unwrap();
    /// chat.with_handler(&mut t, |_, c| c.send_line(b"<alice> hi"));
    /// assert_eq!(t.value(), b"<alice> hi\r\n");
    /// ```
    pub fn with_handler<R>(
        &mut self,
        t: &mut dyn Transport,
        f: impl FnOnce(&mut H, &mut LineControl<'_>) -> R,
    ) -> R {
        let out = f(&mut self.handler, &mut Control::new(t, &mut self.st));
        self.process(t, &[]);
        out
    }

    /// Resume reading on the transport and deliver the lines held back
    /// while it was paused (Twisted's `resumeProducing`).
    ///
    /// ```
    /// # use twistor_protocols::{LineControl, LineReceiver};
    /// # use twistor_reactor::{testing::StringTransport, Protocol, Transport};
    /// let mut p = LineReceiver::new(|c: &mut LineControl<'_>, line: &[u8]| {
    ///     c.send_line(line);
    ///     c.pause_reading(); // one line at a time
    /// });
    /// let mut t = StringTransport::new();
    /// p.data_received(&mut t, b"a\r\nb\r\n");
    /// assert_eq!(t.value(), b"a\r\n");
    /// p.resume_reading(&mut t);
    /// assert_eq!(t.value(), b"a\r\nb\r\n");
    /// ```
    pub fn resume_reading(&mut self, t: &mut dyn Transport) {
        t.resume_reading();
        self.process(t, &[]);
    }

    /// Frame `data` (after what is buffered), then settle discards and
    /// hand-backs.
    fn process(&mut self, t: &mut dyn Transport, data: &[u8]) {
        let mut data = data;
        loop {
            let mut handed_back = false;
            InputBuf::feed(
                self,
                |s| &mut s.buf,
                data,
                |s, input| {
                    let used = s.run(t, input);
                    if !s.st.discard {
                        if let Some(back) = s.st.pushback.take() {
                            s.copied += back.len() as u64;
                            // Bytes a raw handler gave back go in front of
                            // what it did not see yet.
                            s.buf.unread(&back);
                            s.st.scanned = 0;
                            handed_back = true;
                        }
                    }
                    used
                },
            );
            if self.st.discard {
                if !self.buf.is_empty() || self.st.pushback.is_some() {
                    log::debug!("{}: discarding {} buffered byte(s)", t.id(), self.buf.len());
                }
                self.buf.clear();
                self.st.pushback = None;
                self.st.discard = false;
                if self.st.mode == Mode::Skipping {
                    self.st.enter(Mode::Lines);
                }
                self.st.scanned = 0;
                return;
            }
            if !handed_back {
                return;
            }
            data = &[];
        }
    }

    /// Deliver what `input` holds; returns how many bytes were consumed.
    fn run(&mut self, t: &mut dyn Transport, input: &[u8]) -> usize {
        let mut pos = 0;
        let mut hint = mem::take(&mut self.st.scanned);
        loop {
            if self.st.discard || self.st.pushback.is_some() || t.is_closing() || !t.is_reading() {
                return pos;
            }
            let rest = &input[pos..];
            if rest.is_empty() {
                return pos;
            }
            if self.st.mode == Mode::Raw {
                self.st.raw_window = Some((rest.as_ptr() as usize, rest.len()));
                self.st.handback = None;
                self.handler
                    .raw_data_received(&mut Control::new(t, &mut self.st), rest);
                self.st.raw_window = None;
                pos = input.len();
                if let Some(n) = self.st.handback.take() {
                    match self.st.pushback.as_mut() {
                        // Go back over the tail it handed back.
                        None => pos -= n,
                        // More was handed back after it: keep the order.
                        Some(more) => {
                            more.splice(0..0, rest[rest.len() - n..].iter().copied());
                        }
                    }
                }
                continue;
            }
            let dlen = self.st.finder.needle().len();
            let from = mem::take(&mut hint).min(rest.len());
            let found = self.st.finder.find(&rest[from..]);
            // The search stops at the first delimiter: it looked at the
            // bytes up to its end, or at all of them.
            self.searched += found.map_or(rest.len() - from, |i| i + dlen) as u64;
            match found {
                Some(i) => {
                    let line = &rest[..from + i];
                    pos += from + i + dlen;
                    if self.st.mode == Mode::Skipping {
                        // The end of the over-long line.
                        self.st.enter(Mode::Lines);
                        continue;
                    }
                    let max = self.st.max_length;
                    let mut c = Control::new(t, &mut self.st);
                    if line.len() > max {
                        self.handler.line_length_exceeded(&mut c, &line[..max + 1]);
                    } else {
                        self.handler.line_received(&mut c, line);
                    }
                }
                None => {
                    // A partial delimiter may end `rest`: keep it.
                    let keep = (dlen - 1).min(rest.len());
                    if self.st.mode == Mode::Skipping {
                        return input.len() - keep;
                    }
                    let max = self.st.max_length;
                    if rest.len() <= max.saturating_add(dlen - 1) {
                        self.st.scanned = rest.len() - keep;
                        return pos;
                    }
                    // The line under way is over-long already.
                    self.st.enter(Mode::Skipping);
                    pos = input.len() - keep;
                    self.handler
                        .line_length_exceeded(&mut Control::new(t, &mut self.st), &rest[..max + 1]);
                }
            }
        }
    }
}

impl<H: LineHandler> TimeoutTarget for LineReceiver<H> {
    fn timed_out(&mut self, t: &mut dyn Transport) {
        self.with_handler(t, |h, c| h.timeout_connection(c));
    }
}

impl<H: LineHandler> Protocol for LineReceiver<H> {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.with_handler(t, |h, c| h.connection_made(c));
    }

    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        self.process(t, data);
    }

    fn eof_received(&mut self, t: &mut dyn Transport) -> bool {
        self.handler.eof_received(&mut Control::new(t, &mut self.st))
    }

    fn connection_lost(&mut self, t: &mut dyn Transport, reason: &Reason) {
        drop(self.buf.take());
        self.handler
            .connection_lost(&mut Control::new(t, &mut self.st), reason);
    }

    fn pause_writing(&mut self, t: &mut dyn Transport) {
        self.handler.pause_writing(&mut Control::new(t, &mut self.st));
    }

    fn resume_writing(&mut self, t: &mut dyn Transport) {
        self.handler.resume_writing(&mut Control::new(t, &mut self.st));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twistor_reactor::testing::StringTransport;

    #[test]
    fn a_long_partial_line_is_searched_once() {
        // 16,000 bytes of one line, one byte at a time: searching the whole
        // partial line again on each byte would look at 128 million bytes.
        let mut t = StringTransport::new();
        let mut p = LineReceiver::new(|_: &mut LineControl<'_>, _: &[u8]| {});
        for i in 0..16_000 {
            p.data_received(&mut t, if i % 2 == 0 { b"\r" } else { b"x" });
        }
        p.data_received(&mut t, b"\r\n");
        assert!(!t.disconnecting());
        assert!(p.buffered().is_empty());
        assert!(p.searched <= 2 * 16_002, "searched {} bytes", p.searched);
    }

    #[test]
    fn many_tiny_lines_in_one_chunk_are_searched_once() {
        // A million empty lines, then 100,000 one-byte lines, each in one
        // chunk: every line's search stops at its delimiter, so the bytes
        // looked at stay the chunk's size, not the chunk's size per line.
        let mut t = StringTransport::new();
        let mut n = 0u64;
        let mut p = LineReceiver::new(move |c: &mut LineControl<'_>, _: &[u8]| {
            n += 1;
            if n == 1_100_000 {
                c.send_line(b"done");
            }
        });
        let empty = b"\r\n".repeat(1_000_000);
        p.data_received(&mut t, &empty);
        assert!(p.searched <= empty.len() as u64, "searched {} bytes", p.searched);
        let tiny = b"x\r\n".repeat(100_000);
        p.data_received(&mut t, &tiny);
        assert_eq!(t.value(), b"done\r\n");
        let total = (empty.len() + tiny.len()) as u64;
        assert!(p.searched <= total, "searched {} bytes for {total}", p.searched);
    }

    /// "n\r\n" is followed by n raw bytes, then lines again.
    #[derive(Default)]
    struct Chunks {
        want: usize,
        raw: usize,
        lines: usize,
    }

    impl LineHandler for Chunks {
        fn line_received(&mut self, c: &mut LineControl<'_>, line: &[u8]) {
            self.lines += 1;
            self.want = std::str::from_utf8(line).unwrap().parse().unwrap();
            c.set_raw_mode();
        }
        fn raw_data_received(&mut self, c: &mut LineControl<'_>, data: &[u8]) {
            let (mine, rest) = data.split_at(self.want.min(data.len()));
            self.want -= mine.len();
            self.raw += mine.len();
            if self.want == 0 {
                c.set_line_mode_with(rest);
            }
        }
    }

    #[test]
    fn handing_back_the_rest_of_a_chunk_copies_nothing() {
        // 4,000 small raw segments in one 44 KB chunk: copying what is
        // handed back each time would copy 88 MB (quadratic in the chunk).
        let chunk = b"8\r\n12345678".repeat(4000);
        let mut t = StringTransport::new();
        let mut p = LineReceiver::new(Chunks::default());
        p.data_received(&mut t, &chunk);
        assert_eq!((p.handler().lines, p.handler().raw), (4000, 32_000));
        assert!(p.buffered().is_empty());
        assert!(p.copied <= chunk.len() as u64, "copied {} bytes", p.copied);
        // Split anywhere, the same.
        let mut p = LineReceiver::new(Chunks::default());
        for piece in chunk.chunks(1000) {
            p.data_received(&mut t, piece);
        }
        assert_eq!((p.handler().lines, p.handler().raw), (4000, 32_000));
        assert!(p.copied <= chunk.len() as u64, "copied {} bytes", p.copied);
    }

    #[test]
    fn hand_backs_that_are_not_the_tail_are_copied_in_order() {
        let got = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        struct H(std::rc::Rc<std::cell::RefCell<Vec<Vec<u8>>>>);
        impl LineHandler for H {
            fn line_received(&mut self, c: &mut LineControl<'_>, line: &[u8]) {
                self.0.borrow_mut().push(line.to_vec());
                if line == b"raw" {
                    c.set_raw_mode();
                }
            }
            fn raw_data_received(&mut self, c: &mut LineControl<'_>, data: &[u8]) {
                self.0.borrow_mut().push(b"<raw>".to_vec());
                // The tail, then bytes of its own, then a middle piece.
                c.set_line_mode_with(&data[2..]);
                c.set_line_mode_with(b"own\r\n");
                c.set_line_mode_with(&data[..2]);
            }
        }
        let mut p = LineReceiver::new(H(got.clone()));
        let mut t = StringTransport::new();
        p.data_received(&mut t, b"raw\r\nABt\r\n");
        p.data_received(&mut t, b"\r\n");
        let got: Vec<String> = got
            .borrow()
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        assert_eq!(got, ["raw", "<raw>", "t", "own", "AB"]);
        assert_eq!(p.copied, 10, "the three hand-backs, once each");
    }

    #[test]
    fn multi_byte_delimiters_across_chunks() {
        let got = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let g = got.clone();
        let mut p =
            LineReceiver::new(move |_: &mut LineControl<'_>, l: &[u8]| g.borrow_mut().push(l.to_vec()))
                .with_delimiter(b"\r\n\r\n");
        let mut t = StringTransport::new();
        for chunk in [&b"a\r\n"[..], b"\r", b"\nb\r\n\r", b"x\r\n\r\n"] {
            p.data_received(&mut t, chunk);
        }
        assert_eq!(*got.borrow(), [b"a".to_vec(), b"b\r\n\rx".to_vec()]);
    }
}
