//! Streaming a body to a transport with backpressure: Twisted's producers
//! (`FileSender`, push and pull producers), for any protocol.
//!
//! A [`Source`] yields a body chunk by chunk: a file or any reader
//! ([`ReadSource`]), bytes in memory ([`BytesSource`]), or bytes pushed in
//! over time by someone else through a [`channel`] (a child process's
//! output, another connection). A [`Sender`], owned by the protocol that
//! sends the body, pulls chunks only while the transport's write buffer is
//! at or under its high-water mark, stops when the transport raises
//! `pause_writing`, and goes on at `resume_writing`; so a 1 GiB file sent
//! to a slow reader holds about one high-water mark of memory, never the
//! file.
//!
//! The protocol forwards three things to its sender: `pause_writing`,
//! `resume_writing`, and the wake-ups it asked for with the [`Waker`] it
//! gave the sender (a closure that reaches the connection by id, usually
//! `reactor.call_on`). A sender wakes itself that way when it stopped at
//! the high-water mark but the flush that followed left room without a
//! pause, and a source that has nothing yet (a channel) wakes it when it
//! has.
//!
//! ```
//! use twistor_protocols::producer::{BytesSource, Progress, Sender, Waker};
//! use twistor_reactor::testing::StringTransport;
//!
//! // A test transport's kernel takes everything at once, so the sender
//! // never has to wait for room here.
//! let mut t = StringTransport::new();
//! let body = vec![7u8; 100_000];
//! // The waker would reach the connection by id; here nothing needs it.
//! let mut sender = Sender::new(BytesSource::new(body), Waker::new(|_| {}));
//! assert!(matches!(sender.send(&mut t), Progress::Finished));
//! assert_eq!(t.value().len(), 100_000);
//! assert_eq!(sender.sent(), 100_000);
//! ```

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read};
use std::rc::Rc;

use twistor_reactor::{Gone, Reactor, Transport};

/// Default size of the chunks a [`Sender`] asks its source for.
pub const DEFAULT_CHUNK: usize = 16 * 1024;

/// What a [`Source`] produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Produced {
    /// Bytes were appended to the buffer.
    Data,
    /// Nothing yet: the source wakes the sender (with the [`Waker`] it was
    /// given) when it has more.
    Pending,
    /// The body is complete.
    End,
}

/// A body to send, chunk by chunk (see the [module docs](self)).
///
/// ```
/// use twistor_protocols::producer::{Produced, Source};
/// use twistor_reactor::Reactor;
///
/// /// Counts down from `n`, one line per chunk.
/// struct Countdown(u32);
/// impl Source for Countdown {
///     fn produce(&mut self, _: &mut Reactor, buf: &mut Vec<u8>, _max: usize) -> std::io::Result<Produced> {
///         if self.0 == 0 {
///             return Ok(Produced::End);
///         }
///         buf.extend_from_slice(format!("{}\n", self.0).as_bytes());
///         self.0 -= 1;
///         Ok(Produced::Data)
///     }
/// }
/// ```
pub trait Source: 'static {
    /// Append at most `max` bytes of the body to `buf` (which is empty).
    fn produce(&mut self, r: &mut Reactor, buf: &mut Vec<u8>, max: usize) -> io::Result<Produced>;

    /// The waker to use after answering [`Produced::Pending`]. Called once,
    /// before the first `produce`.
    fn set_waker(&mut self, waker: Waker) {
        let _ = waker;
    }

    /// The consumer cannot take more for now (a push source should stop
    /// pushing: pause the process or connection it reads from).
    fn pause(&mut self, r: &mut Reactor) {
        let _ = r;
    }

    /// The consumer can take more again.
    fn resume(&mut self, r: &mut Reactor) {
        let _ = r;
    }

    /// The consumer is gone (the connection closed): stop producing for
    /// good.
    fn stop(&mut self, r: &mut Reactor) {
        let _ = r;
    }
}

/// Wakes whoever consumes a source: a closure that reaches the consuming
/// connection, which then calls its [`Sender::send`]. Cheap to clone.
///
/// ```
/// use twistor_protocols::producer::{Sender, Waker};
/// use twistor_reactor::{ConnId, Protocol, Transport};
///
/// struct Download { sender: Option<Sender> }
/// impl Protocol for Download {
///     fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
/// }
///
/// // The usual waker: a call to the connection that hands it to its sender.
/// fn waker(id: ConnId) -> Waker {
///     Waker::new(move |r| {
///         let _ = r.call_on(id, |p, t| {
///             if let Some(s) = p.downcast_mut::<Download>().and_then(|d| d.sender.as_mut()) {
///                 s.send(t);
///             }
///         });
///     })
/// }
/// # let _ = waker;
/// ```
#[derive(Clone)]
pub struct Waker(Rc<dyn Fn(&mut Reactor)>);

impl Waker {
    /// A waker that runs `f`.
    pub fn new(f: impl Fn(&mut Reactor) + 'static) -> Waker {
        Waker(Rc::new(f))
    }

    /// Wake the consumer.
    pub fn wake(&self, r: &mut Reactor) {
        (self.0)(r)
    }
}

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Waker")
    }
}

/// How a send is going.
#[derive(Debug)]
pub enum Progress {
    /// More to come: the sender waits for room or for its source.
    Going,
    /// The whole body was handed to the transport.
    Finished,
    /// The source failed; what was sent stays sent.
    Failed(io::Error),
}

/// Where a [`Sender`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderState {
    /// Writing, or waiting for the wake-up it scheduled.
    Running,
    /// The transport raised `pause_writing`.
    Paused,
    /// The source had nothing; it will wake the sender.
    Pending,
    /// Finished, failed or stopped: nothing more is sent.
    Done,
}

/// Sends a [`Source`] to a transport with backpressure (see the [module
/// docs](self)).
pub struct Sender {
    source: Box<dyn Source>,
    state: SenderState,
    waker: Waker,
    buf: Vec<u8>,
    chunk: usize,
    sent: u64,
    /// A wake-up is on its way (so at most one is ever queued by us).
    scheduled: bool,
}

impl Sender {
    /// Send `source`; `waker` must reach the connection and call
    /// [`send`](Self::send) there.
    pub fn new(source: impl Source, waker: Waker) -> Sender {
        Self::boxed(Box::new(source), waker)
    }

    /// [`new`](Self::new) for a source already boxed.
    pub fn boxed(mut source: Box<dyn Source>, waker: Waker) -> Sender {
        source.set_waker(waker.clone());
        Sender {
            source,
            state: SenderState::Running,
            waker,
            buf: Vec::new(),
            chunk: DEFAULT_CHUNK,
            sent: 0,
            scheduled: false,
        }
    }

    /// Ask the source for chunks of at most `bytes` (default
    /// [`DEFAULT_CHUNK`]).
    ///
    /// ```
    /// use twistor_protocols::producer::{BytesSource, Sender, Waker};
    /// let s = Sender::new(BytesSource::new(vec![0; 10]), Waker::new(|_| {})).with_chunk(4096);
    /// assert_eq!(s.sent(), 0);
    /// ```
    pub fn with_chunk(mut self, bytes: usize) -> Sender {
        self.chunk = bytes.max(1);
        self
    }

    /// Bytes handed to the transport so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Where the sender is.
    pub fn state(&self) -> SenderState {
        self.state
    }

    /// Write chunks while the transport's buffer is at or under its
    /// high-water mark. Call it to start, and from every wake-up.
    pub fn send(&mut self, t: &mut dyn Transport) -> Progress {
        self.scheduled = false;
        match self.state {
            SenderState::Done => return Progress::Finished,
            SenderState::Paused => return Progress::Going,
            SenderState::Running | SenderState::Pending => self.state = SenderState::Running,
        }
        let (high, _) = t.write_buffer_limits();
        loop {
            if t.is_closing() {
                self.finish(t.reactor());
                return Progress::Finished;
            }
            if t.write_buffer_size() > high {
                // Over the mark: the flush after this callback either
                // leaves it over (and `pause_writing` follows) or makes
                // room without a pause, and then this wake-up goes on.
                self.schedule(t.reactor());
                return Progress::Going;
            }
            self.buf.clear();
            match self.source.produce(t.reactor(), &mut self.buf, self.chunk) {
                Ok(Produced::Data) => {
                    t.write(&self.buf);
                    self.sent += self.buf.len() as u64;
                }
                Ok(Produced::Pending) => {
                    self.state = SenderState::Pending;
                    return Progress::Going;
                }
                Ok(Produced::End) => {
                    self.finish(t.reactor());
                    return Progress::Finished;
                }
                Err(e) => {
                    self.finish(t.reactor());
                    return Progress::Failed(e);
                }
            }
            if self.buf.capacity() > 4 * self.chunk {
                self.buf = Vec::new();
            }
        }
    }

    /// Forward the transport's `pause_writing` here.
    pub fn pause_writing(&mut self, r: &mut Reactor) {
        if matches!(self.state, SenderState::Running | SenderState::Pending) {
            self.state = SenderState::Paused;
            self.source.pause(r);
        }
    }

    /// Forward the transport's `resume_writing` here.
    pub fn resume_writing(&mut self, t: &mut dyn Transport) -> Progress {
        if self.state == SenderState::Paused {
            self.state = SenderState::Running;
            self.source.resume(t.reactor());
        }
        self.send(t)
    }

    /// The connection is gone: tell the source to stop for good.
    pub fn stop(&mut self, r: &mut Reactor) {
        self.finish(r);
    }

    fn finish(&mut self, r: &mut Reactor) {
        if self.state != SenderState::Done {
            self.state = SenderState::Done;
            self.source.stop(r);
            self.buf = Vec::new();
        }
    }

    fn schedule(&mut self, r: &mut Reactor) {
        if !self.scheduled {
            self.scheduled = true;
            self.waker.wake(r);
        }
    }
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("state", &self.state)
            .field("sent", &self.sent)
            .finish()
    }
}

// ----- sources -------------------------------------------------------------------

/// A body read from any reader, usually a file (Twisted's `FileSender`).
/// Reads happen on the loop thread, a chunk at a time.
///
/// ```
/// use twistor_protocols::producer::{Produced, ReadSource, Source};
/// let mut r = twistor_reactor::Reactor::new().unwrap();
/// let mut src = ReadSource::new(&b"hello"[..]);
/// let mut buf = Vec::new();
/// assert_eq!(src.produce(&mut r, &mut buf, 3).unwrap(), Produced::Data);
/// assert_eq!(buf, b"hel");
/// ```
pub struct ReadSource<R> {
    reader: R,
}

impl<R: Read + 'static> ReadSource<R> {
    /// Read the body from `reader`.
    pub fn new(reader: R) -> ReadSource<R> {
        ReadSource { reader }
    }
}

impl<R: Read + 'static> Source for ReadSource<R> {
    fn produce(&mut self, _: &mut Reactor, buf: &mut Vec<u8>, max: usize) -> io::Result<Produced> {
        let n = (&mut self.reader).take(max as u64).read_to_end(buf)?;
        Ok(if n == 0 { Produced::End } else { Produced::Data })
    }
}

/// A body held in memory, sent in chunks.
///
/// ```
/// use twistor_protocols::producer::{BytesSource, Produced, Source};
/// let mut r = twistor_reactor::Reactor::new().unwrap();
/// let mut src = BytesSource::new(b"abc".to_vec());
/// let mut buf = Vec::new();
/// assert_eq!(src.produce(&mut r, &mut buf, 10).unwrap(), Produced::Data);
/// buf.clear();
/// assert_eq!(src.produce(&mut r, &mut buf, 10).unwrap(), Produced::End);
/// ```
pub struct BytesSource {
    data: Vec<u8>,
    pos: usize,
}

impl BytesSource {
    /// Send `data`.
    pub fn new(data: impl Into<Vec<u8>>) -> BytesSource {
        BytesSource {
            data: data.into(),
            pos: 0,
        }
    }
}

impl Source for BytesSource {
    fn produce(&mut self, _: &mut Reactor, buf: &mut Vec<u8>, max: usize) -> io::Result<Produced> {
        if self.pos >= self.data.len() {
            return Ok(Produced::End);
        }
        let end = (self.pos + max).min(self.data.len());
        buf.extend_from_slice(&self.data[self.pos..end]);
        self.pos = end;
        Ok(Produced::Data)
    }
}

// ----- the channel -----------------------------------------------------------------

/// Default amount a [`channel`] holds before it asks its writer to pause.
pub const DEFAULT_CHANNEL_HIGH_WATER: usize = 64 * 1024;

/// What a channel asks of its writer (see [`BodyWriter::on_flow`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Stop writing for now (the consumer is paused, or the channel holds
    /// more than its high-water mark).
    Pause,
    /// Write again.
    Resume,
    /// The consumer is gone: stop for good.
    Stop,
}

type FlowHook = Box<dyn FnMut(&mut Reactor, Flow)>;

struct Shared {
    queue: VecDeque<Vec<u8>>,
    queued: usize,
    high: usize,
    closed: bool,
    consumer_gone: bool,
    consumer_paused: bool,
    /// The last flow the writer was told (`Resume` until told otherwise).
    told: Flow,
    waker: Option<Waker>,
    flow: Option<FlowHook>,
}

/// A body written over time by someone else: `channel(high)` returns the
/// writing end and the [`Source`] to hand to a [`Sender`].
///
/// The writer hears [`Flow::Pause`] when the channel holds more than
/// `high` bytes or the consumer's transport is paused, [`Flow::Resume`]
/// when it may go on, and [`Flow::Stop`] when the consumer is gone. A
/// writer that ignores `Pause` still works; memory is then its own
/// responsibility.
///
/// ```
/// use twistor_protocols::producer::{channel, Flow, Produced, Source};
/// let mut r = twistor_reactor::Reactor::new().unwrap();
/// let (writer, mut body) = channel(4);
/// let told = std::rc::Rc::new(std::cell::Cell::new(Flow::Resume));
/// let t = told.clone();
/// writer.on_flow(move |_, f| t.set(f));
/// writer.write(&mut r, b"hello").unwrap(); // over 4 bytes: pause
/// assert_eq!(told.get(), Flow::Pause);
/// let mut buf = Vec::new();
/// assert_eq!(body.produce(&mut r, &mut buf, 100).unwrap(), Produced::Data);
/// assert_eq!(told.get(), Flow::Resume);
/// writer.close(&mut r);
/// buf.clear();
/// assert_eq!(body.produce(&mut r, &mut buf, 100).unwrap(), Produced::End);
/// ```
pub fn channel(high: usize) -> (BodyWriter, ChannelSource) {
    let shared = Rc::new(RefCell::new(Shared {
        queue: VecDeque::new(),
        queued: 0,
        high,
        closed: false,
        consumer_gone: false,
        consumer_paused: false,
        told: Flow::Resume,
        waker: None,
        flow: None,
    }));
    (
        BodyWriter {
            shared: shared.clone(),
        },
        ChannelSource { shared },
    )
}

/// Tell the writer what it should do now, if that changed.
fn update_flow(shared: &Rc<RefCell<Shared>>, r: &mut Reactor) {
    let (want, hook) = {
        let mut s = shared.borrow_mut();
        let want = if s.consumer_gone {
            Flow::Stop
        } else if s.consumer_paused || s.queued > s.high {
            Flow::Pause
        } else {
            Flow::Resume
        };
        if want == s.told || s.told == Flow::Stop {
            return;
        }
        s.told = want;
        (want, s.flow.take())
    };
    if let Some(mut hook) = hook {
        // Called with nothing borrowed: the hook may use the writer.
        hook(r, want);
        let mut s = shared.borrow_mut();
        if s.flow.is_none() {
            s.flow = Some(hook);
        }
    }
}

/// The writing end of a [`channel`].
pub struct BodyWriter {
    shared: Rc<RefCell<Shared>>,
}

impl BodyWriter {
    /// Queue `data` for the consumer. [`Gone`] once the consumer is gone.
    pub fn write(&self, r: &mut Reactor, data: &[u8]) -> Result<(), Gone> {
        let waker = {
            let mut s = self.shared.borrow_mut();
            if s.consumer_gone {
                return Err(Gone);
            }
            if s.closed || data.is_empty() {
                return Ok(());
            }
            s.queue.push_back(data.to_vec());
            s.queued += data.len();
            s.waker.clone()
        };
        if let Some(w) = waker {
            w.wake(r);
        }
        update_flow(&self.shared, r);
        Ok(())
    }

    /// The body is complete: the consumer finishes once it has sent what
    /// is queued.
    pub fn close(&self, r: &mut Reactor) {
        let waker = {
            let mut s = self.shared.borrow_mut();
            s.closed = true;
            s.waker.clone()
        };
        if let Some(w) = waker {
            w.wake(r);
        }
    }

    /// Run `f` whenever the writer should pause, resume or stop.
    pub fn on_flow(&self, f: impl FnMut(&mut Reactor, Flow) + 'static) {
        self.shared.borrow_mut().flow = Some(Box::new(f));
    }

    /// Whether the consumer is gone.
    pub fn is_gone(&self) -> bool {
        self.shared.borrow().consumer_gone
    }

    /// Bytes queued and not yet taken by the consumer.
    pub fn queued(&self) -> usize {
        self.shared.borrow().queued
    }
}

/// The consuming end of a [`channel`]: a [`Source`].
pub struct ChannelSource {
    shared: Rc<RefCell<Shared>>,
}

impl Source for ChannelSource {
    fn produce(&mut self, r: &mut Reactor, buf: &mut Vec<u8>, max: usize) -> io::Result<Produced> {
        let produced = {
            let mut s = self.shared.borrow_mut();
            while buf.len() < max {
                let Some(mut front) = s.queue.pop_front() else {
                    break;
                };
                let room = max - buf.len();
                if front.len() > room {
                    buf.extend_from_slice(&front[..room]);
                    front.drain(..room);
                    s.queue.push_front(front);
                } else {
                    buf.extend_from_slice(&front);
                }
            }
            s.queued -= buf.len();
            if !buf.is_empty() {
                Produced::Data
            } else if s.closed {
                Produced::End
            } else {
                Produced::Pending
            }
        };
        update_flow(&self.shared, r);
        Ok(produced)
    }

    fn set_waker(&mut self, waker: Waker) {
        self.shared.borrow_mut().waker = Some(waker);
    }

    fn pause(&mut self, r: &mut Reactor) {
        self.shared.borrow_mut().consumer_paused = true;
        update_flow(&self.shared, r);
    }

    fn resume(&mut self, r: &mut Reactor) {
        self.shared.borrow_mut().consumer_paused = false;
        update_flow(&self.shared, r);
    }

    fn stop(&mut self, r: &mut Reactor) {
        {
            let mut s = self.shared.borrow_mut();
            s.consumer_gone = true;
            s.queue.clear();
            s.queued = 0;
        }
        update_flow(&self.shared, r);
    }
}

impl Drop for ChannelSource {
    fn drop(&mut self) {
        if let Ok(mut s) = self.shared.try_borrow_mut() {
            s.consumer_gone = true;
            s.queue.clear();
            s.queued = 0;
        }
    }
}
