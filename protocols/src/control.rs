//! `Control`: the handle a framing's handler callbacks receive.
//!
//! A framing protocol ([`LineReceiver`](crate::LineReceiver),
//! [`NetstringReceiver`](crate::NetstringReceiver), the length-prefixed
//! receivers) owns a user handler and calls it with a `Control`: the
//! connection's transport plus the framing's own state. `Control` is itself
//! a [`Transport`] (every call is forwarded), so a handler writes, closes,
//! schedules timers and starts TLS through it exactly as a plain protocol
//! does through its transport; the framing adds its own methods
//! (`send_line`, `set_raw_mode`, `send_string`, `clear_buffer`...).
//!
//! One rule is enforced here for every framing: when a handler calls
//! [`Transport::upgrade`] (which `start_tls` is built on), whatever input the
//! framing still holds is discarded, never interpreted. Plaintext pipelined
//! after a `STARTTLS` command must not be read as if it had come through TLS
//! (the CVE-2011-0411 bug class).

use twistor_reactor::{Transport, WrappingTransport};

/// What a framing's state must offer its [`Control`]. Implemented by
/// [`LineState`](crate::LineState) and [`StringState`](crate::StringState);
/// a new framing built on [`Control`] implements it for its own state.
///
/// ```
/// use twistor_protocols::FramingState;
/// #[derive(Default)]
/// struct MyState { discard: bool }
/// impl FramingState for MyState {
///     fn discard_input(&mut self) { self.discard = true }
/// }
/// let mut st = MyState::default();
/// st.discard_input();
/// assert!(st.discard);
/// ```
pub trait FramingState {
    /// Drop every buffered input byte once the current callback returns and
    /// stop delivering what is left of the current chunk.
    fn discard_input(&mut self);
}

/// The handle a framing passes to its handler's callbacks: the transport,
/// plus the framing's state (see the module docs).
///
/// The framings name their own: [`LineControl`](crate::LineControl) and
/// [`StringControl`](crate::StringControl).
///
/// ```
/// use twistor_protocols::{LineControl, LineHandler, LineReceiver};
/// use twistor_reactor::{testing::StringTransport, Protocol, Transport};
///
/// struct Hello;
/// impl LineHandler for Hello {
///     fn line_received(&mut self, c: &mut LineControl<'_>, line: &[u8]) {
///         // `c` is a Transport: write, peer(), reactor(), lose_connection()...
///         c.write(b"peer ");
///         c.write(c.peer().to_string().as_bytes());
///         c.send_line(b"");
///         if line == b"quit" {
///             c.lose_connection();
///         }
///     }
/// }
///
/// let mut t = StringTransport::new();
/// let mut p = LineReceiver::new(Hello);
/// p.data_received(&mut t, b"quit\r\n");
/// assert_eq!(t.value(), b"peer 127.0.0.1:40000\r\n");
/// assert!(t.disconnecting());
/// ```
pub struct Control<'a, S: FramingState> {
    pub(crate) t: &'a mut dyn Transport,
    pub(crate) st: &'a mut S,
}

impl<'a, S: FramingState> Control<'a, S> {
    /// A control over `t` and `st`: how a framing of your own (one with its
    /// own [`FramingState`]) hands its handler the same kind of handle.
    ///
    /// ```
    /// use twistor_protocols::{Control, FramingState};
    /// use twistor_reactor::{testing::StringTransport, Transport};
    /// struct Words { discard: bool }
    /// impl FramingState for Words {
    ///     fn discard_input(&mut self) { self.discard = true }
    /// }
    /// let mut t = StringTransport::new();
    /// let mut st = Words { discard: false };
    /// let mut c = Control::new(&mut t, &mut st);
    /// c.write(b"hi");
    /// c.clear_buffer();
    /// assert!(c.state().discard);
    /// ```
    pub fn new(t: &'a mut dyn Transport, st: &'a mut S) -> Self {
        Control { t, st }
    }

    /// The framing's state.
    pub fn state(&mut self) -> &mut S {
        self.st
    }

    /// Discard every input byte the framing still holds (the rest of the
    /// current chunk included): nothing more is delivered from it. Input
    /// that arrives later is framed as usual.
    ///
    /// [`upgrade`](Transport::upgrade) (hence `start_tls`) does this by
    /// itself. (Twisted's `clearLineBuffer`.)
    ///
    /// ```
    /// use twistor_protocols::{LineControl, LineReceiver};
    /// use twistor_reactor::{testing::StringTransport, Protocol};
    /// let mut p = LineReceiver::new(|c: &mut LineControl<'_>, line: &[u8]| {
    ///     c.send_line(line);
    ///     if line == b"RESET" {
    ///         c.clear_buffer(); // forget everything pipelined after it
    ///     }
    /// });
    /// let mut t = StringTransport::new();
    /// p.data_received(&mut t, b"RESET\r\nlost\r\n");
    /// assert_eq!(t.value(), b"RESET\r\n");
    /// ```
    pub fn clear_buffer(&mut self) {
        self.st.discard_input();
    }
}

impl<S: FramingState> WrappingTransport for Control<'_, S> {
    fn below(&self) -> &dyn Transport {
        &*self.t
    }
    fn below_mut(&mut self) -> &mut dyn Transport {
        &mut *self.t
    }
    fn on_upgrade(&mut self) {
        // STARTTLS: what is still buffered arrived in plaintext before the
        // handshake and must never be interpreted.
        self.st.discard_input();
    }
}
