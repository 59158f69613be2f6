//! A ready-made [`Handler`] for any byte stream: the Protocol/Transport
//! machinery that TCP, Unix sockets, pipes and the in-memory test pair share.
//!
//! A transport only has to say how to read, write, half-close and register
//! its source ([`StreamIo`]); [`open_stream`] then gives it the full
//! contract: exactly-once `connection_made` / `connection_lost`, reads until
//! `WouldBlock` under a fairness budget into the reactor's shared buffer,
//! writes coalesced per callback and flushed with one vectored write,
//! WRITABLE interest only while a remainder exists, water marks raising
//! `pause_writing` / `resume_writing`, half-close, protocol upgrades
//! (`start_tls`) and panic isolation.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use mio::{Interest, Registry, Token};

use crate::reason::panic_message;
use crate::{Address, ConnId, Handler, Protocol, ProtocolCall, Reactor, Ready, Reason, Transport, Upgrade};

/// Default high-water mark of a write buffer (asyncio's default).
pub const DEFAULT_HIGH_WATER: usize = 64 * 1024;
/// Default low-water mark of a write buffer.
pub const DEFAULT_LOW_WATER: usize = 16 * 1024;
/// Default bytes read from one connection per readiness event before the
/// others get a turn (the fairness budget).
pub const DEFAULT_READ_BUDGET: usize = 256 * 1024;
/// Default time a graceful close (`lose_connection`, `write_eof` after EOF)
/// may spend flushing before the connection is aborted with
/// [`Reason::TimedOut`].
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default hard cap on a write buffer. The water marks only advise; past
/// this many buffered bytes the connection is aborted with
/// [`Reason::Limit`], even if its protocol ignores `pause_writing`.
pub const DEFAULT_MAX_WRITE_BUFFER: usize = 16 * 1024 * 1024;

/// The byte-stream operations a transport provides to [`open_stream`].
pub trait StreamIo: 'static {
    /// Read into `buf` (non-blocking; `WouldBlock` when drained, `Ok(0)` at EOF).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Write from `bufs` (non-blocking).
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Half-close the sending direction.
    fn shutdown_write(&mut self) -> io::Result<()>;
    /// Register the source with `interest` under `token`.
    fn register(&mut self, reg: &Registry, token: Token, interest: Interest) -> io::Result<()>;
    /// Change the registered interest.
    fn reregister(&mut self, reg: &Registry, token: Token, interest: Interest) -> io::Result<()>;
    /// Deregister the source.
    fn deregister(&mut self, reg: &Registry) -> io::Result<()>;
    /// The remote end.
    fn peer(&self) -> Address;
    /// The local end.
    fn host(&self) -> Address;
    /// Set TCP_NODELAY, where that means something.
    fn set_nodelay(&mut self, on: bool) -> io::Result<()> {
        let _ = on;
        Err(io::Error::new(io::ErrorKind::Unsupported, "not a TCP transport"))
    }
    /// Set TCP keepalive, where that means something.
    fn set_keepalive(&mut self, idle: Option<Duration>) -> io::Result<()> {
        let _ = idle;
        Err(io::Error::new(io::ErrorKind::Unsupported, "not a TCP transport"))
    }
    /// Prepare for an abortive close (TCP: reset instead of FIN).
    fn prepare_abort(&mut self) {}
}

/// Called once when a stream connection ends, after the protocol's
/// `connection_lost` (listeners count connections with it, client
/// connectors report `client_connection_lost` with it).
pub type LostHook = Box<dyn FnOnce(&mut Reactor, &Reason)>;

/// Options for [`open_stream`].
pub struct StreamOptions {
    /// Write-buffer high-water mark.
    pub high_water: usize,
    /// Write-buffer low-water mark.
    pub low_water: usize,
    /// Bytes read per readiness event before yielding to others.
    pub read_budget: usize,
    /// How long a graceful close may take before it becomes an abort.
    pub close_timeout: Duration,
    /// Hard cap on buffered output (see [`DEFAULT_MAX_WRITE_BUFFER`]).
    pub max_write_buffer: usize,
    /// Runs once when the connection ends.
    pub on_lost: Option<LostHook>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            high_water: DEFAULT_HIGH_WATER,
            low_water: DEFAULT_LOW_WATER,
            read_budget: DEFAULT_READ_BUDGET,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            max_write_buffer: DEFAULT_MAX_WRITE_BUFFER,
            on_lost: None,
        }
    }
}

/// Register `io` and run `protocol` over it. `connection_made` is called on
/// the next loop turn, or at once if the caller follows with
/// [`Reactor::dispatch_now`]`(id, Ready::NONE)` (listeners do, so that a
/// protocol that stops its listener in `connection_made` stops it before
/// the next connection is accepted, as in Twisted). Returns the connection's id.
pub fn open_stream<S: StreamIo>(
    r: &mut Reactor,
    mut io: S,
    protocol: Box<dyn Protocol>,
    opts: StreamOptions,
) -> io::Result<ConnId> {
    let id = r.insert_with(move |r, id| {
        io.register(r.registry(), id.token(), Interest::READABLE)?;
        let peer = io.peer();
        let host = io.host();
        Ok(Box::new(StreamConn {
            proto: protocol,
            st: State {
                io,
                out: WriteBuf::default(),
                high: opts.high_water,
                low: opts.low_water.min(opts.high_water),
                budget: opts.read_budget.max(1),
                on_lost: opts.on_lost,
                peer,
                host,
                made: false,
                reading: true,
                read_eof: false,
                closing: false,
                close_reason: None,
                eof_pending: false,
                eof_sent: false,
                abort: false,
                closed: false,
                writing_paused: false,
                want_writable: false,
                upgrade: None,
                after_upgrade: AfterUpgrade::default(),
            },
        }))
    })?;
    r.requeue(id, Ready::NONE);
    Ok(id)
}

// ----- the write buffer ------------------------------------------------------

const CHUNK: usize = 64 * 1024;
const MAX_IOV: usize = 64;

/// Pending output: a queue of chunks; small writes are appended to the last
/// chunk, and one drained chunk is kept for reuse so a steady echo allocates
/// nothing.
#[derive(Default)]
struct WriteBuf {
    chunks: VecDeque<Vec<u8>>,
    head: usize,
    len: usize,
    spare: Option<Vec<u8>>,
}

impl WriteBuf {
    fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.len += data.len();
        if let Some(last) = self.chunks.back_mut() {
            if last.len() + data.len() <= CHUNK.max(last.capacity()) {
                last.extend_from_slice(data);
                return;
            }
        }
        let mut v = self.spare.take().unwrap_or_default();
        v.extend_from_slice(data);
        self.chunks.push_back(v);
    }

    fn write_to<S: StreamIo>(&mut self, io: &mut S) -> io::Result<usize> {
        if self.chunks.len() == 1 {
            // The usual case (a callback's writes coalesce into one chunk):
            // skip building the 64-slot iovec array.
            let written = io.write_vectored(&[IoSlice::new(&self.chunks[0][self.head..])])?;
            self.consume(written);
            return Ok(written);
        }
        let mut iov = [IoSlice::new(&[]); MAX_IOV];
        let mut n = 0;
        for (i, c) in self.chunks.iter().take(MAX_IOV).enumerate() {
            iov[i] = IoSlice::new(if i == 0 { &c[self.head..] } else { c });
            n += 1;
        }
        let written = io.write_vectored(&iov[..n])?;
        self.consume(written);
        Ok(written)
    }

    fn consume(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let avail = self.chunks[0].len() - self.head;
            if n >= avail {
                n -= avail;
                self.head = 0;
                let mut v = self.chunks.pop_front().unwrap();
                if v.capacity() <= 2 * CHUNK {
                    v.clear();
                    self.spare = Some(v);
                }
            } else {
                self.head += n;
                n = 0;
            }
        }
    }

    fn clear(&mut self) {
        self.chunks.clear();
        self.head = 0;
        self.len = 0;
    }
}

// ----- the connection ----------------------------------------------------------

struct State<S> {
    io: S,
    out: WriteBuf,
    high: usize,
    low: usize,
    budget: usize,
    on_lost: Option<LostHook>,
    peer: Address,
    host: Address,
    made: bool,
    /// Not paused by the protocol.
    reading: bool,
    read_eof: bool,
    /// `lose_connection` was called: close once flushed.
    closing: bool,
    /// The reason given to `lose_connection_with` (first one wins).
    close_reason: Option<Reason>,
    /// `write_eof` was called: half-close once flushed.
    eof_pending: bool,
    eof_sent: bool,
    abort: bool,
    closed: bool,
    /// `pause_writing` was delivered and `resume_writing` not yet.
    writing_paused: bool,
    want_writable: bool,
    upgrade: Option<Upgrade>,
    /// Asked for after `upgrade` during the same callback: the new
    /// protocol's to carry out (so that what follows `start_tls` is
    /// encrypted, never sent in the clear, and a close waits for TLS).
    after_upgrade: AfterUpgrade,
}

/// Writes and closes asked for while an upgrade is pending.
#[derive(Default)]
struct AfterUpgrade {
    data: Vec<u8>,
    write_eof: bool,
    /// `lose_connection` (with its reason, if one was given).
    close: Option<Option<Reason>>,
}

impl AfterUpgrade {
    /// What to run through the new protocol, if anything was asked for.
    fn into_call(self) -> Option<ProtocolCall> {
        if self.data.is_empty() && !self.write_eof && self.close.is_none() {
            return None;
        }
        Some(Box::new(move |_, t| {
            if !self.data.is_empty() {
                t.write(&self.data);
            }
            if self.write_eof {
                t.write_eof();
            }
            match self.close {
                Some(Some(reason)) => t.lose_connection_with(reason),
                Some(None) => t.lose_connection(),
                None => {}
            }
        }))
    }
}

struct StreamConn<S> {
    proto: Box<dyn Protocol>,
    st: State<S>,
}

/// The transport a protocol sees during a callback.
struct View<'a, S> {
    st: &'a mut State<S>,
    r: &'a mut Reactor,
    id: ConnId,
}

impl<S: StreamIo> Transport for View<'_, S> {
    fn write(&mut self, data: &[u8]) {
        let st = &mut *self.st;
        if st.closed || st.abort || st.eof_sent || st.eof_pending {
            log::trace!("{}: write after close or write_eof ignored", self.id);
            return;
        }
        if st.upgrade.is_some() {
            let after = &mut st.after_upgrade;
            if after.close.is_none() && !after.write_eof {
                after.data.extend_from_slice(data);
            }
            return;
        }
        st.out.push(data);
    }

    fn lose_connection(&mut self) {
        if self.st.upgrade.is_some() {
            self.st.after_upgrade.close.get_or_insert(None);
            return;
        }
        self.st.closing = true;
    }

    fn lose_connection_with(&mut self, reason: Reason) {
        if self.st.upgrade.is_some() {
            self.st.after_upgrade.close.get_or_insert(Some(reason));
            return;
        }
        if !self.st.closing && self.st.close_reason.is_none() {
            self.st.close_reason = Some(reason);
        }
        self.st.closing = true;
    }

    fn abort_connection(&mut self) {
        self.st.abort = true;
    }

    fn write_eof(&mut self) {
        if self.st.upgrade.is_some() {
            self.st.after_upgrade.write_eof = true;
            return;
        }
        self.st.eof_pending = true;
    }

    fn pause_reading(&mut self) {
        self.st.reading = false;
    }

    fn resume_reading(&mut self) {
        if !self.st.reading {
            self.st.reading = true;
            // Edge-triggered: data that arrived while paused raised no new
            // edge, so look for it ourselves.
            self.r.requeue(self.id, Ready::READABLE);
        }
    }

    fn is_reading(&self) -> bool {
        self.st.reading && !self.st.read_eof && !self.st.closed
    }

    fn is_closing(&self) -> bool {
        self.st.closing || self.st.abort || self.st.closed || self.st.after_upgrade.close.is_some()
    }

    fn write_buffer_size(&self) -> usize {
        self.st.out.len
    }

    fn set_write_buffer_limits(&mut self, high: usize, low: usize) {
        self.st.high = high;
        self.st.low = low.min(high);
    }

    fn write_buffer_limits(&self) -> (usize, usize) {
        (self.st.high, self.st.low)
    }

    fn peer(&self) -> Address {
        self.st.peer.clone()
    }

    fn host(&self) -> Address {
        self.st.host.clone()
    }

    fn id(&self) -> ConnId {
        self.id
    }

    fn reactor(&mut self) -> &mut Reactor {
        self.r
    }

    fn set_nodelay(&mut self, on: bool) -> io::Result<()> {
        self.st.io.set_nodelay(on)
    }

    fn set_keepalive(&mut self, idle: Option<Duration>) -> io::Result<()> {
        self.st.io.set_keepalive(idle)
    }

    fn upgrade(&mut self, upgrade: Upgrade) {
        self.st.upgrade = Some(upgrade);
    }
}

/// Stands in for the protocol while an upgrade swaps it.
struct Detached;
impl Protocol for Detached {
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
}

impl<S: StreamIo> StreamConn<S> {
    /// Run one protocol callback, catching a panic. Returns false if the
    /// callback panicked (the connection is then closed).
    fn invoke(
        &mut self,
        r: &mut Reactor,
        id: ConnId,
        f: impl FnOnce(&mut dyn Protocol, &mut dyn Transport),
    ) -> bool {
        let mut view = View {
            st: &mut self.st,
            r,
            id,
        };
        let proto = &mut *self.proto;
        match catch_unwind(AssertUnwindSafe(|| f(proto, &mut view))) {
            Ok(()) => true,
            Err(p) => {
                let msg = panic_message(&*p);
                log::error!("{id}: protocol callback panicked: {msg}; closing the connection");
                self.st.out.clear();
                self.close(r, id, Reason::Panic(msg));
                false
            }
        }
    }

    fn ensure_made(&mut self, r: &mut Reactor, id: ConnId) -> bool {
        if !self.st.made {
            self.st.made = true;
            if !self.invoke(r, id, |p, t| p.connection_made(t)) {
                return false;
            }
            self.settle(r, id);
        }
        !self.st.closed
    }

    /// Everything that follows a callback: apply an upgrade, flush once,
    /// raise flow-control notifications, close or half-close when flushed,
    /// and keep the registered interest in step.
    fn settle(&mut self, r: &mut Reactor, id: ConnId) {
        // Bounded: each pass either makes progress or ends the loop.
        for _ in 0..16 {
            if self.st.closed {
                return;
            }
            if self.st.abort {
                self.close(r, id, Reason::Aborted);
                return;
            }
            if let Some(up) = self.st.upgrade.take() {
                let old = std::mem::replace(&mut self.proto, Box::new(Detached));
                let mut view = View {
                    st: &mut self.st,
                    r,
                    id,
                };
                match catch_unwind(AssertUnwindSafe(|| up(old, &mut view))) {
                    Ok(new) => self.proto = new,
                    Err(p) => {
                        let msg = panic_message(&*p);
                        log::error!("{id}: protocol upgrade panicked: {msg}");
                        self.close(r, id, Reason::Panic(msg));
                        return;
                    }
                }
                // Carried out through the new protocol (a TLS layer holds
                // writes until its handshake is done).
                if let Some(held) = std::mem::take(&mut self.st.after_upgrade).into_call() {
                    let ok = self.invoke(r, id, |p, t| {
                        if let Some(call) = p.route_call(t, held) {
                            call(p, t)
                        }
                    });
                    if !ok {
                        return;
                    }
                }
                continue;
            }
            if let Err(e) = self.flush() {
                self.close(r, id, Reason::from_io(e));
                return;
            }
            let size = self.st.out.len;
            if !self.st.writing_paused && size > self.st.high {
                self.st.writing_paused = true;
                if !self.invoke(r, id, |p, t| p.pause_writing(t)) {
                    return;
                }
                continue;
            }
            if self.st.writing_paused && size <= self.st.low {
                self.st.writing_paused = false;
                if !self.invoke(r, id, |p, t| p.resume_writing(t)) {
                    return;
                }
                continue;
            }
            if size == 0 {
                if self.st.closing {
                    let reason = self.st.close_reason.take().unwrap_or(Reason::ConnectionDone);
                    self.close(r, id, reason);
                    return;
                }
                if self.st.eof_pending && !self.st.eof_sent {
                    self.st.eof_sent = true;
                    if let Err(e) = self.st.io.shutdown_write() {
                        self.close(r, id, Reason::from_io(e));
                        return;
                    }
                    if self.st.read_eof {
                        self.close(r, id, Reason::ConnectionDone);
                        return;
                    }
                }
            }
            break;
        }
        self.update_interest(r, id);
    }

    fn flush(&mut self) -> io::Result<()> {
        while self.st.out.len > 0 {
            match self.st.out.write_to(&mut self.st.io) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn update_interest(&mut self, r: &mut Reactor, id: ConnId) {
        let want = self.st.out.len > 0;
        if want != self.st.want_writable {
            self.st.want_writable = want;
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Err(e) = self.st.io.reregister(r.registry(), id.token(), interest) {
                self.close(r, id, Reason::from_io(e));
            }
        }
    }

    fn read(&mut self, r: &mut Reactor, id: ConnId) {
        let mut buf = r.take_read_buffer();
        let mut total = 0;
        loop {
            let st = &self.st;
            if !st.reading || st.read_eof || st.closing || st.abort || st.closed || st.upgrade.is_some() {
                break;
            }
            match self.st.io.read(&mut buf) {
                Ok(0) => {
                    self.st.read_eof = true;
                    let mut keep_open = false;
                    if !self.invoke(r, id, |p, t| keep_open = p.eof_received(t)) {
                        break;
                    }
                    if !keep_open || self.st.eof_sent {
                        self.st.closing = true;
                    }
                    self.settle(r, id);
                    break;
                }
                Ok(n) => {
                    let data = &buf[..n];
                    if !self.invoke(r, id, |p, t| p.data_received(t, data)) {
                        break;
                    }
                    self.settle(r, id);
                    total += n;
                    if total >= self.st.budget {
                        // Fairness: let the others have a turn, come back next turn.
                        r.requeue(id, Ready::READABLE);
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.close(r, id, Reason::from_io(e));
                    break;
                }
            }
        }
        r.put_read_buffer(buf);
    }

    fn close(&mut self, r: &mut Reactor, id: ConnId, reason: Reason) {
        if self.st.closed {
            return;
        }
        self.st.closed = true;
        if matches!(reason, Reason::Aborted) {
            self.st.io.prepare_abort();
        }
        let _ = self.st.io.deregister(r.registry());
        self.st.out.clear();
        if self.st.made {
            let mut view = View {
                st: &mut self.st,
                r,
                id,
            };
            let proto = &mut *self.proto;
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| proto.connection_lost(&mut view, &reason))) {
                log::error!("{id}: connection_lost panicked: {}", panic_message(&*p));
            }
        }
        if let Some(hook) = self.st.on_lost.take() {
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| hook(r, &reason))) {
                log::error!("{id}: connection-lost hook panicked: {}", panic_message(&*p));
            }
        }
        r.remove(id);
    }
}

impl<S: StreamIo> Handler for StreamConn<S> {
    fn ready(&mut self, r: &mut Reactor, id: ConnId, ready: Ready) {
        if self.st.closed || !self.ensure_made(r, id) {
            return;
        }
        if ready.writable && self.st.out.len > 0 {
            self.settle(r, id);
        }
        if ready.readable && !self.st.closed {
            self.read(r, id);
        }
        if !self.st.closed {
            self.settle(r, id);
        }
    }

    fn call(&mut self, r: &mut Reactor, id: ConnId, call: ProtocolCall) {
        if self.st.closed || !self.ensure_made(r, id) {
            return;
        }
        let ok = self.invoke(r, id, |p, t| {
            if let Some(call) = p.route_call(t, call) {
                call(p, t)
            }
        });
        if ok {
            self.settle(r, id);
        }
    }

    fn shutdown(&mut self, r: &mut Reactor, id: ConnId) {
        if self.st.closed || !self.ensure_made(r, id) {
            return;
        }
        // Through the protocol, so a layer (TLS) can send its close_notify.
        self.call(r, id, Box::new(|_, t| t.lose_connection()));
    }

    fn abort(&mut self, r: &mut Reactor, id: ConnId) {
        self.close(r, id, Reason::Aborted);
    }

    fn has_protocol(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most `limit` bytes per write, recording them and how many
    /// slices each write was given.
    struct Trickle {
        limit: usize,
        got: Vec<u8>,
        slices: Vec<usize>,
    }

    impl StreamIo for Trickle {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.slices.push(bufs.len());
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.limit - n);
                self.got.extend_from_slice(&b[..take]);
                n += take;
                if n == self.limit {
                    break;
                }
            }
            Ok(n)
        }
        fn shutdown_write(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn register(&mut self, _: &Registry, _: Token, _: Interest) -> io::Result<()> {
            Ok(())
        }
        fn reregister(&mut self, _: &Registry, _: Token, _: Interest) -> io::Result<()> {
            Ok(())
        }
        fn deregister(&mut self, _: &Registry) -> io::Result<()> {
            Ok(())
        }
        fn peer(&self) -> Address {
            Address::Unknown
        }
        fn host(&self) -> Address {
            Address::Unknown
        }
    }

    #[test]
    fn partial_writes_keep_bytes_in_order_across_chunks() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut out = WriteBuf::default();
        for piece in data.chunks(30_000) {
            out.push(piece);
        }
        assert!(out.chunks.len() > 1);
        let mut io = Trickle {
            limit: 7_777,
            got: Vec::new(),
            slices: Vec::new(),
        };
        for _ in 0..1000 {
            if out.len == 0 {
                break;
            }
            out.write_to(&mut io).unwrap();
            assert_eq!(out.len, data.len() - io.got.len());
        }
        assert_eq!(io.got, data);
        // Several chunks went out as one vectored write; the last chunk alone
        // as a single slice.
        assert!(io.slices.iter().any(|&n| n > 1));
        assert_eq!(io.slices.last(), Some(&1));
        // A drained chunk is kept for reuse: the next write allocates nothing new.
        assert!(out.spare.is_some());
    }
}
