//! Testing helpers, public like Twisted's `proto_helpers`: drive protocols
//! without sockets.
//!
//! - [`StringTransport`] records writes and closes and fakes addresses; call a
//!   protocol's methods directly with it.
//! - A manual clock: [`Reactor::with_manual_clock`] and
//!   [`Reactor::advance`] (the reactor inside a `StringTransport` and a
//!   [`MemoryPair`] uses one).
//! - [`MemoryPair`]: two protocols connected in memory, with a pump. They run
//!   under the real stream machinery ([`open_stream`]),
//!   so flow control, half-close, `call_on` and layers such as TLS behave
//!   as over TCP; one difference: an abort reaches the peer as a plain EOF
//!   (as over a Unix socket), not as a reset.
//! - [`FakeDatagramTransport`]: records what a `DatagramProtocol` sends.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice, Read};
use std::rc::Rc;
use std::time::Duration;

use mio::{Interest, Registry, Token};

mod datagram;
pub use datagram::FakeDatagramTransport;

use crate::{
    open_stream, Address, ConnId, Protocol, Reactor, Ready, Reason, StreamIo, StreamOptions, Transport,
    Upgrade,
};

/// A transport that records what a protocol does to it.
///
/// ```
/// use twistor_reactor::{testing::StringTransport, Protocol, Transport};
/// struct Greeter;
/// impl Protocol for Greeter {
///     fn connection_made(&mut self, t: &mut dyn Transport) { t.write(b"hello\r\n"); }
///     fn data_received(&mut self, t: &mut dyn Transport, _: &[u8]) { t.lose_connection(); }
/// }
/// let mut t = StringTransport::new();
/// let mut p = Greeter;
/// p.connection_made(&mut t);
/// assert_eq!(t.value(), b"hello\r\n");
/// p.data_received(&mut t, b"bye");
/// assert!(t.disconnecting());
/// ```
pub struct StringTransport {
    written: Vec<u8>,
    disconnecting: bool,
    close_reason: Option<Reason>,
    aborted: bool,
    eof_written: bool,
    reading: bool,
    limits: (usize, usize),
    max_write: usize,
    peer: Address,
    host: Address,
    id: ConnId,
    reactor: Reactor,
    upgrades: Vec<Upgrade>,
}

impl Default for StringTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl StringTransport {
    /// A transport with fake loopback addresses and a manual-clock reactor.
    pub fn new() -> StringTransport {
        StringTransport {
            written: Vec::new(),
            disconnecting: false,
            close_reason: None,
            aborted: false,
            eof_written: false,
            reading: true,
            limits: (crate::DEFAULT_HIGH_WATER, crate::DEFAULT_LOW_WATER),
            max_write: crate::DEFAULT_MAX_WRITE_BUFFER,
            peer: Address::Inet(([127, 0, 0, 1], 40000).into()),
            host: Address::Inet(([127, 0, 0, 1], 1234).into()),
            id: ConnId::from_token(Token(0)),
            reactor: Reactor::with_manual_clock().expect("create a reactor"),
            upgrades: Vec::new(),
        }
    }

    /// Fake the peer address.
    pub fn with_peer(mut self, peer: Address) -> Self {
        self.peer = peer;
        self
    }

    /// Everything written so far.
    pub fn value(&self) -> &[u8] {
        &self.written
    }

    /// Return and forget everything written so far.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.written)
    }

    /// Whether `lose_connection` was called.
    pub fn disconnecting(&self) -> bool {
        self.disconnecting
    }

    /// The reason given to `lose_connection_with`, if it was called.
    pub fn close_reason(&self) -> Option<&Reason> {
        self.close_reason.as_ref()
    }

    /// Whether `abort_connection` was called.
    pub fn aborted(&self) -> bool {
        self.aborted
    }

    /// Whether `write_eof` was called.
    pub fn eof_written(&self) -> bool {
        self.eof_written
    }

    /// How many upgrades (`start_tls`) were requested.
    pub fn upgrade_count(&self) -> usize {
        self.upgrades.len()
    }
}

impl Transport for StringTransport {
    fn write(&mut self, data: &[u8]) {
        if !self.aborted {
            self.written.extend_from_slice(data);
        }
    }
    fn lose_connection(&mut self) {
        self.disconnecting = true;
    }
    fn lose_connection_with(&mut self, reason: Reason) {
        if !self.disconnecting && self.close_reason.is_none() {
            self.close_reason = Some(reason);
        }
        self.disconnecting = true;
    }
    fn abort_connection(&mut self) {
        self.aborted = true;
        self.disconnecting = true;
    }
    fn write_eof(&mut self) {
        self.eof_written = true;
    }
    fn pause_reading(&mut self) {
        self.reading = false;
    }
    fn resume_reading(&mut self) {
        self.reading = true;
    }
    fn is_reading(&self) -> bool {
        self.reading && !self.disconnecting
    }
    fn is_closing(&self) -> bool {
        self.disconnecting
    }
    fn write_buffer_size(&self) -> usize {
        0
    }
    fn set_write_buffer_limits(&mut self, high: usize, low: usize) {
        self.limits = (high, low.min(high));
    }
    fn write_buffer_limits(&self) -> (usize, usize) {
        self.limits
    }
    fn set_max_write_buffer(&mut self, max: usize) {
        self.max_write = max;
    }
    fn max_write_buffer(&self) -> Option<usize> {
        Some(self.max_write)
    }
    fn peer(&self) -> Address {
        self.peer.clone()
    }
    fn host(&self) -> Address {
        self.host.clone()
    }
    fn id(&self) -> ConnId {
        self.id
    }
    fn reactor(&mut self) -> &mut Reactor {
        &mut self.reactor
    }
    fn upgrade(&mut self, upgrade: Upgrade) {
        self.upgrades.push(upgrade);
    }
}

// ----- the in-memory pair ------------------------------------------------------

/// Capacity of one direction of a [`MemoryPair`]; a writer that fills it
/// sees `WouldBlock`, so flow control is exercised.
pub const MEMORY_PIPE_CAPACITY: usize = 256 * 1024;

#[derive(Default)]
struct Pipe {
    data: VecDeque<u8>,
    /// The writer half-closed or closed.
    eof: bool,
    /// The reader is gone: writes fail with a reset.
    reader_gone: bool,
}

struct MemIo {
    inbox: Rc<RefCell<Pipe>>,
    outbox: Rc<RefCell<Pipe>>,
    me: Address,
    peer: Address,
}

impl StreamIo for MemIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut p = self.inbox.borrow_mut();
        if p.data.is_empty() {
            return if p.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        p.data.read(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut p = self.outbox.borrow_mut();
        if p.reader_gone {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        let room = MEMORY_PIPE_CAPACITY - p.data.len();
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut n = 0;
        for b in bufs {
            let take = b.len().min(room - n);
            p.data.extend(&b[..take]);
            n += take;
            if n == room {
                break;
            }
        }
        Ok(n)
    }
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.outbox.borrow_mut().eof = true;
        Ok(())
    }
    fn register(&mut self, _: &Registry, _: Token, _: Interest) -> io::Result<()> {
        Ok(())
    }
    fn reregister(&mut self, _: &Registry, _: Token, _: Interest) -> io::Result<()> {
        Ok(())
    }
    fn deregister(&mut self, _: &Registry) -> io::Result<()> {
        // Closing: the peer sees EOF, and its writes now fail.
        self.outbox.borrow_mut().eof = true;
        self.inbox.borrow_mut().reader_gone = true;
        Ok(())
    }
    fn peer(&self) -> Address {
        self.peer.clone()
    }
    fn host(&self) -> Address {
        self.me.clone()
    }
}

/// Two protocols connected in memory, and a pump to move bytes between
/// them (Twisted's `loopback.loopbackAsync` / `iosim.connect`).
///
/// ```
/// use twistor_reactor::{testing::MemoryPair, Protocol, Transport, Reason};
/// use std::{cell::RefCell, rc::Rc};
///
/// struct Echo;
/// impl Protocol for Echo {
///     fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) { t.write(d) }
/// }
/// struct Client(Rc<RefCell<Vec<u8>>>);
/// impl Protocol for Client {
///     fn connection_made(&mut self, t: &mut dyn Transport) { t.write(b"ping") }
///     fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
///         self.0.borrow_mut().extend_from_slice(d);
///         t.lose_connection();
///     }
/// }
/// let got = Rc::new(RefCell::new(Vec::new()));
/// let mut pair = MemoryPair::new(Box::new(Client(got.clone())), Box::new(Echo)).unwrap();
/// pair.pump();
/// assert_eq!(&*got.borrow(), b"ping");
/// assert!(pair.is_closed());
/// ```
pub struct MemoryPair {
    /// The reactor both ends run on (manual clock).
    pub reactor: Reactor,
    /// The client end's id.
    pub client: ConnId,
    /// The server end's id.
    pub server: ConnId,
    c2s: Rc<RefCell<Pipe>>,
    s2c: Rc<RefCell<Pipe>>,
}

impl MemoryPair {
    /// Connect `client` and `server` on a new manual-clock reactor.
    pub fn new(client: Box<dyn Protocol>, server: Box<dyn Protocol>) -> io::Result<MemoryPair> {
        Self::on(Reactor::with_manual_clock()?, client, server)
    }

    /// Connect `client` and `server` on the given reactor.
    pub fn on(
        mut reactor: Reactor,
        client: Box<dyn Protocol>,
        server: Box<dyn Protocol>,
    ) -> io::Result<MemoryPair> {
        let c2s = Rc::new(RefCell::new(Pipe::default()));
        let s2c = Rc::new(RefCell::new(Pipe::default()));
        let caddr = Address::Memory("client".into());
        let saddr = Address::Memory("server".into());
        let server = open_stream(
            &mut reactor,
            MemIo {
                inbox: c2s.clone(),
                outbox: s2c.clone(),
                me: saddr.clone(),
                peer: caddr.clone(),
            },
            server,
            StreamOptions::default(),
        )?;
        let client = open_stream(
            &mut reactor,
            MemIo {
                inbox: s2c.clone(),
                outbox: c2s.clone(),
                me: caddr,
                peer: saddr,
            },
            client,
            StreamOptions::default(),
        )?;
        Ok(MemoryPair {
            reactor,
            client,
            server,
            c2s,
            s2c,
        })
    }

    /// Move bytes both ways and run queued work until nothing more happens
    /// (bounded: at most 100,000 rounds). On the manual clock timers do not
    /// fire; use [`advance`](MemoryPair::advance) for that (on a real-clock
    /// reactor given to [`MemoryPair::on`], due timers run as usual).
    pub fn pump(&mut self) {
        for _ in 0..100_000 {
            let before = self.fingerprint();
            for (id, inbox, outbox) in [
                (self.client, &self.s2c, &self.c2s),
                (self.server, &self.c2s, &self.s2c),
            ] {
                let (has_input, outbox_room) = {
                    let i = inbox.borrow();
                    (
                        !i.data.is_empty() || i.eof,
                        outbox.borrow().data.len() < MEMORY_PIPE_CAPACITY,
                    )
                };
                let ready = Ready {
                    readable: has_input,
                    writable: outbox_room,
                    read_closed: false,
                    error: false,
                };
                if self.reactor.contains(id) && (ready.readable || ready.writable) {
                    self.reactor.requeue(id, ready);
                }
            }
            let _ = self.reactor.run_pending();
            if self.fingerprint() == before && !self.reactor.has_queued_work() {
                return;
            }
        }
    }

    fn fingerprint(&self) -> (usize, usize, bool, bool, bool, bool) {
        let c = self.c2s.borrow();
        let s = self.s2c.borrow();
        (
            c.data.len(),
            s.data.len(),
            c.eof,
            s.eof,
            self.reactor.contains(self.client),
            self.reactor.contains(self.server),
        )
    }

    /// Advance the manual clock (firing timers), then pump.
    pub fn advance(&mut self, d: Duration) {
        self.reactor.advance(d);
        self.pump();
    }

    /// Run `f` against the client's protocol and transport, then pump.
    pub fn with_client(&mut self, f: impl FnOnce(&mut dyn Protocol, &mut dyn Transport) + 'static) {
        let _ = self.reactor.call_on(self.client, f);
        self.pump();
    }

    /// Run `f` against the server's protocol and transport, then pump.
    pub fn with_server(&mut self, f: impl FnOnce(&mut dyn Protocol, &mut dyn Transport) + 'static) {
        let _ = self.reactor.call_on(self.server, f);
        self.pump();
    }

    /// Bytes sent by the client and not yet read by the server.
    pub fn client_to_server(&self) -> Vec<u8> {
        self.c2s.borrow().data.iter().copied().collect()
    }

    /// Put raw bytes on the wire towards the server, as if the client sent
    /// them (for garbage-input tests).
    pub fn inject_to_server(&mut self, data: &[u8]) {
        self.c2s.borrow_mut().data.extend(data);
    }

    /// Put raw bytes on the wire towards the client.
    pub fn inject_to_client(&mut self, data: &[u8]) {
        self.s2c.borrow_mut().data.extend(data);
    }

    /// Whether both ends are closed.
    pub fn is_closed(&self) -> bool {
        !self.reactor.contains(self.client) && !self.reactor.contains(self.server)
    }
}

/// A protocol that records every callback, for tests: what it received,
/// whether it was made and lost, and why.
#[derive(Default)]
pub struct Recorder {
    /// Shared record, readable while the protocol lives in a connection.
    pub log: Rc<RefCell<Record>>,
}

/// What a [`Recorder`] saw.
#[derive(Default, Debug)]
pub struct Record {
    /// `connection_made` calls.
    pub made: usize,
    /// Bytes received.
    pub data: Vec<u8>,
    /// `eof_received` calls.
    pub eofs: usize,
    /// `connection_lost` reasons.
    pub lost: Vec<Reason>,
    /// `pause_writing` calls.
    pub paused: usize,
    /// `resume_writing` calls.
    pub resumed: usize,
}

impl Recorder {
    /// A recorder and a handle on its record.
    pub fn new() -> (Recorder, Rc<RefCell<Record>>) {
        let log = Rc::new(RefCell::new(Record::default()));
        (Recorder { log: log.clone() }, log)
    }
}

impl Protocol for Recorder {
    fn connection_made(&mut self, _: &mut dyn Transport) {
        self.log.borrow_mut().made += 1;
    }
    fn data_received(&mut self, _: &mut dyn Transport, data: &[u8]) {
        self.log.borrow_mut().data.extend_from_slice(data);
    }
    fn eof_received(&mut self, _: &mut dyn Transport) -> bool {
        self.log.borrow_mut().eofs += 1;
        false
    }
    fn connection_lost(&mut self, _: &mut dyn Transport, reason: &Reason) {
        self.log.borrow_mut().lost.push(reason.clone());
    }
    fn pause_writing(&mut self, _: &mut dyn Transport) {
        self.log.borrow_mut().paused += 1;
    }
    fn resume_writing(&mut self, _: &mut dyn Transport) {
        self.log.borrow_mut().resumed += 1;
    }
}
