//! `StringReceiver`: one receiver for every "framed string" protocol
//! (netstrings and length-prefixed strings), generic over the [`Framing`].
//!
//! Twisted has `NetstringReceiver` and `Int8StringReceiver`,
//! `Int16StringReceiver`, `Int32StringReceiver`; here they are one
//! implementation, [`StringReceiver<F, H>`], with the framing `F` chosen by
//! type ([`Netstring`](crate::Netstring), [`Prefixed<N>`](crate::Prefixed))
//! and aliases carrying Twisted's names
//! ([`NetstringReceiver`](crate::NetstringReceiver),
//! [`Int32StringReceiver`](crate::Int32StringReceiver)...). The same
//! [`StringHandler`] works with all of them.
//!
//! Every framing has a maximum payload length (a default per framing, and
//! [`StringReceiver::with_max_length`]). A frame that declares a longer
//! payload goes to [`StringHandler::length_limit_exceeded`] as soon as its
//! header is read, before any payload is buffered; a malformed header is
//! logged.
//!
//! A framing error is final, as in Twisted (which closes the connection on
//! a bad netstring): after an over-long or malformed header there is no way
//! to know where the next frame starts, so reading on would interpret
//! payload bytes as headers. The receiver drops every byte from then on and
//! closes the connection cleanly with [`Reason::Limit`] and a log line.
//! [`StringHandler::length_limit_exceeded`] runs first (to write an error
//! message, say); if it leaves the connection open, the receiver closes it.
//!
//! Where a port sees a difference from Twisted: an over-long netstring goes
//! to `length_limit_exceeded` too (Twisted's `NetstringReceiver` just
//! closes); a `lengthLimitExceeded` override that keeps the connection
//! stalls Twisted's `IntNStringReceiver` with the bytes held, where this
//! receiver closes; no string is delivered once the connection is closing
//! (as for lines); and [`StringControl::send_string`] returns
//! [`StringTooLong`] where Twisted raises `StringTooLongError`.
//!
//! Input is kept in a [`twistor_reactor::InputBuf`]: a frame that arrives
//! whole in one chunk is delivered from the reactor's read buffer without
//! a copy, and once the buffer drains an idle connection keeps at most
//! [`InputBuf::KEEP`] bytes of it, however large its last frame was
//! ([`StringReceiver::buffer_capacity`]).

use std::error::Error;
use std::fmt;

use twistor_reactor::{InputBuf, Protocol, Reason, Transport};

use crate::control::{Control, FramingState};
use crate::timeout::TimeoutTarget;

/// What a [`Framing`] found at the start of the buffered input.
///
/// ```
/// use twistor_protocols::{Framing, Parse, Prefixed};
/// assert_eq!(Prefixed::<1>::parse(b"\x02hi!", 255), Parse::Frame { start: 1, len: 2, end: 3 });
/// assert_eq!(Prefixed::<1>::parse(b"\x02h", 255), Parse::Incomplete);
/// assert_eq!(Prefixed::<1>::parse(b"\x09", 8), Parse::TooLong(9));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse {
    /// A whole frame: the payload is `buf[start..start + len]`, and the
    /// frame ends at `end`.
    Frame {
        /// Offset of the payload.
        start: usize,
        /// Length of the payload.
        len: usize,
        /// Offset just past the frame.
        end: usize,
    },
    /// More bytes are needed.
    Incomplete,
    /// The header declares a payload longer than the maximum (the declared
    /// length, or as much of it as was read).
    TooLong(u64),
    /// The bytes cannot start a frame.
    Malformed(&'static str),
}

/// A way to frame strings on a byte stream: netstrings, length prefixes.
/// Implement it to add a framing; [`StringReceiver`] does the rest.
///
/// ```
/// use twistor_protocols::{Framing, Parse, StringTooLong};
/// use twistor_reactor::Transport;
///
/// /// Strings ended by a NUL byte.
/// struct NulTerminated;
/// impl Framing for NulTerminated {
///     const NAME: &'static str = "NUL-terminated string";
///     const DEFAULT_MAX_LENGTH: usize = 4096;
///     fn parse(buf: &[u8], max_length: usize) -> Parse {
///         match buf.iter().position(|&b| b == 0) {
///             Some(n) if n > max_length => Parse::TooLong(n as u64),
///             Some(n) => Parse::Frame { start: 0, len: n, end: n + 1 },
///             None if buf.len() > max_length => Parse::TooLong(buf.len() as u64),
///             None => Parse::Incomplete,
///         }
///     }
///     fn encode(t: &mut dyn Transport, s: &[u8]) -> Result<(), StringTooLong> {
///         t.write_sequence(&[s, b"\0"]);
///         Ok(())
///     }
/// }
/// assert_eq!(NulTerminated::parse(b"ab\0c", 10), Parse::Frame { start: 0, len: 2, end: 3 });
/// ```
pub trait Framing: 'static {
    /// The framing's name, for log lines.
    const NAME: &'static str;
    /// The default maximum payload length.
    const DEFAULT_MAX_LENGTH: usize;

    /// Look for one frame at the start of `buf`. Must not panic on any
    /// input, and must report [`Parse::TooLong`] as soon as the header
    /// shows the payload exceeds `max_length`, so memory stays bounded.
    fn parse(buf: &[u8], max_length: usize) -> Parse;

    /// Write `s` as one frame.
    fn encode(t: &mut dyn Transport, s: &[u8]) -> Result<(), StringTooLong>;
}

/// [`StringControl::send_string`] was given a string its framing cannot
/// carry (more than 255 bytes with a 1-byte prefix...).
///
/// ```
/// use twistor_protocols::{Framing, Prefixed, StringTooLong};
/// use twistor_reactor::testing::StringTransport;
/// let err = Prefixed::<1>::encode(&mut StringTransport::new(), &[0; 300]).unwrap_err();
/// assert_eq!(err, StringTooLong { len: 300, max: 255 });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StringTooLong {
    /// The string's length.
    pub len: usize,
    /// The longest string the framing can carry.
    pub max: u64,
}

impl fmt::Display for StringTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a {}-byte string does not fit this framing (at most {})",
            self.len, self.max
        )
    }
}

impl Error for StringTooLong {}

type EncodeFn = fn(&mut dyn Transport, &[u8]) -> Result<(), StringTooLong>;

/// A string framing's state, reached through a [`StringControl`]'s
/// methods.
///
/// ```
/// use twistor_protocols::{NetstringReceiver, StringControl};
/// use twistor_reactor::testing::StringTransport;
/// fn ignore(_: &mut StringControl<'_>, _: &[u8]) {}
/// let mut p = NetstringReceiver::new(ignore).with_max_length(10);
/// assert_eq!(p.with_handler(&mut StringTransport::new(), |_, c| c.max_length()), 10);
/// ```
#[derive(Debug, Clone)]
pub struct StringState {
    max_length: usize,
    input: Input,
    encode: EncodeFn,
}

/// What a [`StringReceiver`] does with its input. Changed only through
/// [`StringState::enter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    /// Frames are parsed and delivered.
    Framing,
    /// The handler asked to drop what is buffered (`clear_buffer`,
    /// STARTTLS): done when its callback returns, then back to framing.
    Discard,
    /// A framing error: the connection is closing and every byte is
    /// dropped. Final: a framed stream cannot be resynchronised.
    Broken,
}

impl StringState {
    /// The one place the input state changes. Leaving `Broken` is refused.
    fn enter(&mut self, next: Input) {
        if self.input != Input::Broken {
            self.input = next;
        }
    }
}

impl FramingState for StringState {
    fn discard_input(&mut self) {
        self.enter(Input::Discard);
    }
}

/// The handle a [`StringHandler`]'s callbacks receive: the transport (it is
/// a [`Transport`]) plus `send_string` and the length limit.
///
/// ```
/// use twistor_protocols::{Int16StringReceiver, StringControl};
/// use twistor_reactor::{testing::StringTransport, Protocol};
///
/// let mut p = Int16StringReceiver::new(|c: &mut StringControl<'_>, s: &[u8]| {
///     c.send_string(&s.repeat(2)).unwrap();
/// });
/// let mut t = StringTransport::new();
/// p.data_received(&mut t, b"\x00\x02hi");
/// assert_eq!(t.value(), b"\x00\x04hihi");
/// ```
pub type StringControl<'a> = Control<'a, StringState>;

impl Control<'_, StringState> {
    /// Send `s` as one frame (Twisted's `sendString`). Fails only if the
    /// framing cannot carry a string that long.
    pub fn send_string(&mut self, s: &[u8]) -> Result<(), StringTooLong> {
        (self.st.encode)(self.t, s)
    }

    /// The maximum payload length accepted from the peer.
    pub fn max_length(&self) -> usize {
        self.st.max_length
    }

    /// Change the maximum payload length accepted from the peer.
    ///
    /// ```
    /// use twistor_protocols::{Int32StringReceiver, StringControl};
    /// use twistor_reactor::{testing::StringTransport, Protocol};
    /// // Small frames until the peer says hello, then up to 1 MiB.
    /// let mut p = Int32StringReceiver::new(|c: &mut StringControl<'_>, s: &[u8]| {
    ///     if s == b"hello" {
    ///         c.set_max_length(1 << 20);
    ///     }
    /// })
    /// .with_max_length(16);
    /// let mut t = StringTransport::new();
    /// p.data_received(&mut t, b"\0\0\0\x05hello\0\0\x01\0");
    /// assert!(!t.disconnecting());
    /// ```
    pub fn set_max_length(&mut self, max: usize) {
        self.st.max_length = max;
    }
}

/// A framed-string protocol's callbacks, run by a [`StringReceiver`]. Only
/// [`string_received`](StringHandler::string_received) is required.
///
/// Any `FnMut(&mut StringControl, &[u8])` closure is a string handler.
///
/// ```
/// use twistor_protocols::{NetstringReceiver, StringControl, StringHandler};
/// use twistor_reactor::{testing::StringTransport, Protocol};
///
/// #[derive(Default)]
/// struct Collect(Vec<Vec<u8>>);
/// impl StringHandler for Collect {
///     fn string_received(&mut self, c: &mut StringControl<'_>, s: &[u8]) {
///         self.0.push(s.to_vec());
///         c.send_string(b"ok").unwrap();
///     }
/// }
/// let mut p = NetstringReceiver::new(Collect::default());
/// let mut t = StringTransport::new();
/// p.data_received(&mut t, b"5:hello,0:,");
/// assert_eq!(p.handler().0, [b"hello".to_vec(), vec![]]);
/// assert_eq!(t.value(), b"2:ok,2:ok,");
/// ```
pub trait StringHandler: 'static {
    /// The connection is up (after the TLS handshake, if any).
    fn connection_made(&mut self, c: &mut StringControl<'_>) {
        let _ = c;
    }

    /// A whole string arrived. It borrows the receiver's buffer: copy what
    /// you keep.
    fn string_received(&mut self, c: &mut StringControl<'_>, s: &[u8]);

    /// The peer announced a string of `length` bytes, more than the maximum
    /// (Twisted's `lengthLimitExceeded`). The default logs it and closes
    /// with [`Reason::Limit`]. Either way the receiver drops all further
    /// input, and if an override leaves the connection open, the receiver
    /// closes it (with [`Reason::Limit`]) when the override returns: the
    /// stream cannot be resynchronised.
    ///
    /// ```
    /// use twistor_protocols::{Int16StringReceiver, StringControl, StringHandler};
    /// use twistor_reactor::{testing::StringTransport, Protocol, Reason, Transport};
    /// struct Polite;
    /// impl StringHandler for Polite {
    ///     fn string_received(&mut self, _: &mut StringControl<'_>, _: &[u8]) {}
    ///     fn length_limit_exceeded(&mut self, c: &mut StringControl<'_>, _: u64) {
    ///         c.send_string(b"ERR too long").unwrap(); // then the receiver closes
    ///     }
    /// }
    /// let mut p = Int16StringReceiver::new(Polite).with_max_length(100);
    /// let mut t = StringTransport::new();
    /// p.data_received(&mut t, b"\xff\xff");
    /// assert_eq!(t.value(), b"\x00\x0cERR too long");
    /// assert!(matches!(t.close_reason(), Some(Reason::Limit(_))));
    /// ```
    fn length_limit_exceeded(&mut self, c: &mut StringControl<'_>, length: u64) {
        let max = c.max_length();
        log::warn!(
            "{}: {} announced a {length}-byte string, over the {max}-byte limit; closing",
            c.id(),
            c.peer()
        );
        c.lose_connection_with(Reason::Limit(format!("string longer than {max} bytes")));
    }

    /// The timeout set with [`Timeout::set_timeout`](crate::Timeout::set_timeout)
    /// expired (Twisted's `TimeoutMixin.timeoutConnection`). The default
    /// logs it and closes the connection with [`Reason::TimedOut`].
    fn timeout_connection(&mut self, c: &mut StringControl<'_>) {
        log::info!("{}: {} timed out; closing", c.id(), c.peer());
        c.lose_connection_with(Reason::TimedOut);
    }

    /// The peer half-closed. Return `true` to keep the connection open for
    /// writing. A partial last frame is dropped.
    fn eof_received(&mut self, c: &mut StringControl<'_>) -> bool {
        let _ = c;
        false
    }

    /// The connection is gone.
    fn connection_lost(&mut self, c: &mut StringControl<'_>, reason: &Reason) {
        let _ = (c, reason);
    }

    /// The write buffer is over its high-water mark.
    fn pause_writing(&mut self, c: &mut StringControl<'_>) {
        let _ = c;
    }

    /// The write buffer drained.
    fn resume_writing(&mut self, c: &mut StringControl<'_>) {
        let _ = c;
    }
}

impl<F> StringHandler for F
where
    F: FnMut(&mut StringControl<'_>, &[u8]) + 'static,
{
    fn string_received(&mut self, c: &mut StringControl<'_>, s: &[u8]) {
        self(c, s)
    }
}

/// A [`Protocol`] that splits input into framed strings for a
/// [`StringHandler`]. Use it through its aliases:
/// [`NetstringReceiver`](crate::NetstringReceiver),
/// [`Int8StringReceiver`](crate::Int8StringReceiver),
/// [`Int16StringReceiver`](crate::Int16StringReceiver),
/// [`Int32StringReceiver`](crate::Int32StringReceiver).
///
/// ```
/// use twistor_protocols::{Int32StringReceiver, StringControl};
/// use twistor_reactor::{testing::StringTransport, Protocol, Reason};
///
/// let mut p = Int32StringReceiver::new(|c: &mut StringControl<'_>, s: &[u8]| {
///     c.send_string(s).unwrap();
/// })
/// .with_max_length(8);
/// let mut t = StringTransport::new();
/// p.data_received(&mut t, b"\0\0\0\x02hi");
/// assert_eq!(t.value(), b"\0\0\0\x02hi");
/// p.data_received(&mut t, b"\0\0\x01\0"); // announces 256 bytes: over the limit
/// assert!(matches!(t.close_reason(), Some(Reason::Limit(_))));
/// ```
pub struct StringReceiver<F: Framing, H: StringHandler> {
    handler: H,
    st: StringState,
    buf: InputBuf,
    _framing: std::marker::PhantomData<fn() -> F>,
}

impl<F: Framing, H: StringHandler> StringReceiver<F, H> {
    /// Wrap `handler`, with the framing's default maximum length
    /// (`with_max_length` changes it).
    ///
    /// ```
    /// use twistor_protocols::{NetstringReceiver, StringControl};
    /// use twistor_reactor::{testing::StringTransport, Protocol};
    /// let mut p = NetstringReceiver::new(|_: &mut StringControl<'_>, _: &[u8]| {})
    ///     .with_max_length(3);
    /// let mut t = StringTransport::new();
    /// p.data_received(&mut t, b"3:abc,4:");
    /// assert!(t.disconnecting()); // 4 > 3
    /// assert!(p.buffered().is_empty());
    /// ```
    pub fn new(handler: H) -> Self {
        StringReceiver {
            handler,
            st: StringState {
                max_length: F::DEFAULT_MAX_LENGTH,
                input: Input::Framing,
                encode: F::encode,
            },
            buf: InputBuf::new(),
            _framing: std::marker::PhantomData,
        }
    }

    /// Set the maximum payload length accepted from the peer. A frame is
    /// buffered whole before delivery, so this bounds the memory a peer can
    /// make the connection hold; `usize::MAX` lifts the bound.
    pub fn with_max_length(mut self, max: usize) -> Self {
        self.st.max_length = max;
        self
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The handler, mutably.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// Input received and not delivered yet.
    pub fn buffered(&self) -> &[u8] {
        self.buf.as_slice()
    }

    /// Bytes of input buffer allocated right now: what this connection
    /// costs while idle. Once the buffer drains, it is at most
    /// [`InputBuf::KEEP`](twistor_reactor::InputBuf::KEEP), however large
    /// the last frame was.
    ///
    /// ```
    /// use twistor_protocols::{Int32StringReceiver, StringControl};
    /// use twistor_reactor::{testing::StringTransport, InputBuf, Protocol};
    /// let mut p = Int32StringReceiver::new(|_: &mut StringControl<'_>, _: &[u8]| {});
    /// let mut t = StringTransport::new();
    /// p.data_received(&mut t, &60_000u32.to_be_bytes());
    /// for _ in 0..60 {
    ///     p.data_received(&mut t, &[0; 1000]); // one large frame, in pieces
    /// }
    /// assert!(p.buffered().is_empty());
    /// assert!(p.buffer_capacity() <= InputBuf::KEEP);
    /// ```
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Run `f` with the handler and a [`StringControl`], then deliver the
    /// frames the change made deliverable (after a resume). How timers and
    /// other connections (through `call_on`) talk to the protocol.
    ///
    /// ```
    /// use twistor_protocols::{NetstringReceiver, StringControl};
    /// use twistor_reactor::testing::StringTransport;
    /// fn ignore(_: &mut StringControl<'_>, _: &[u8]) {}
    /// let mut p = NetstringReceiver::new(ignore);
    /// let mut t = StringTransport::new();
    /// p.with_handler(&mut t, |_, c| c.send_string(b"news").unwrap());
    /// assert_eq!(t.value(), b"4:news,");
    /// ```
    pub fn with_handler<R>(
        &mut self,
        t: &mut dyn Transport,
        f: impl FnOnce(&mut H, &mut StringControl<'_>) -> R,
    ) -> R {
        let out = f(&mut self.handler, &mut Control::new(t, &mut self.st));
        self.process(t, &[]);
        out
    }

    /// Resume reading on the transport and deliver the frames held back
    /// while it was paused.
    ///
    /// ```
    /// # use twistor_protocols::{NetstringReceiver, StringControl};
    /// # use twistor_reactor::{testing::StringTransport, Protocol, Transport};
    /// let mut p = NetstringReceiver::new(|c: &mut StringControl<'_>, s: &[u8]| {
    ///     c.write(s);
    ///     c.pause_reading();
    /// });
    /// let mut t = StringTransport::new();
    /// p.data_received(&mut t, b"1:a,1:b,");
    /// assert_eq!(t.value(), b"a");
    /// p.resume_reading(&mut t);
    /// assert_eq!(t.value(), b"ab");
    /// ```
    pub fn resume_reading(&mut self, t: &mut dyn Transport) {
        t.resume_reading();
        self.process(t, &[]);
    }

    fn process(&mut self, t: &mut dyn Transport, data: &[u8]) {
        InputBuf::feed(self, |s| &mut s.buf, data, |s, input| s.run(t, input));
        match self.st.input {
            Input::Framing => {}
            Input::Discard => {
                if !self.buf.is_empty() {
                    log::debug!("{}: discarding {} buffered byte(s)", t.id(), self.buf.len());
                }
                drop(self.buf.take());
                self.st.enter(Input::Framing);
            }
            Input::Broken => drop(self.buf.take()),
        }
    }

    /// A framing error: from now on every byte is dropped, and the
    /// connection closes with [`Reason::Limit`] (unless the handler closed
    /// it already).
    fn framing_error(&mut self, t: &mut dyn Transport, why: String) {
        self.st.enter(Input::Broken);
        if !t.is_closing() {
            log::warn!(
                "{}: {} from {}: {why}; closing (a {} stream cannot be resynchronised)",
                t.id(),
                F::NAME,
                t.peer(),
                F::NAME
            );
            t.lose_connection_with(Reason::Limit(format!("{}: {why}", F::NAME)));
        }
    }

    fn run(&mut self, t: &mut dyn Transport, input: &[u8]) -> usize {
        let mut pos = 0;
        loop {
            if self.st.input != Input::Framing || t.is_closing() || !t.is_reading() {
                return pos;
            }
            let rest = &input[pos..];
            if rest.is_empty() {
                return pos;
            }
            match F::parse(rest, self.st.max_length) {
                Parse::Frame { start, len, end }
                    if end > 0 && end <= rest.len() && start.checked_add(len).is_some_and(|e| e <= end) =>
                {
                    pos += end;
                    let s = &rest[start..start + len];
                    self.handler
                        .string_received(&mut Control::new(t, &mut self.st), s);
                }
                Parse::Frame { .. } => {
                    log::error!("{}: the {} framing returned an impossible frame", t.id(), F::NAME);
                    self.framing_error(t, "invalid frame (a bug in the framing)".into());
                    return input.len();
                }
                Parse::Incomplete => return pos,
                Parse::TooLong(n) => {
                    self.st.enter(Input::Broken);
                    self.handler
                        .length_limit_exceeded(&mut Control::new(t, &mut self.st), n);
                    let max = self.st.max_length;
                    self.framing_error(t, format!("string longer than {max} bytes ({n} announced)"));
                    return input.len();
                }
                Parse::Malformed(why) => {
                    self.framing_error(t, format!("malformed: {why}"));
                    return input.len();
                }
            }
        }
    }
}

impl<F: Framing, H: StringHandler> TimeoutTarget for StringReceiver<F, H> {
    fn timed_out(&mut self, t: &mut dyn Transport) {
        self.with_handler(t, |h, c| h.timeout_connection(c));
    }
}

impl<F: Framing, H: StringHandler> Protocol for StringReceiver<F, H> {
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
