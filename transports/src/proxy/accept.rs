//! The state an accepted connection is in while its PROXY header is read,
//! before it has a protocol: a small handler of its own that peeks at the
//! socket as bytes arrive, and hands the socket to the listener's factory
//! (with the client's address) once the header is whole, or closes it.
//!
//! The header is read with `MSG_PEEK` until it is whole, then exactly its
//! bytes are taken out of the socket: the application's first bytes (a
//! TLS ClientHello, a request line) stay in the socket for the protocol
//! to read, so nothing is over-read and nothing has to be handed over.
//! The parser's verdict on a prefix is final (see `header`), so looking
//! again at a longer prefix never contradicts an earlier look.
//!
//! The contract holds because this handler is not a connection: it never
//! calls a protocol, so a socket closed here never had `connection_made`
//! and gets no `connection_lost`; its place in the listener's count (the
//! [`Slot`]) goes with the socket, to the connection or to the drop.

use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;

use mio::Interest;
use twistor_reactor::{Address, ConnId, DelayedCall, Handler, Reactor, Ready, StreamIo};

use super::header::{parse_header, Origin, Parsed, ProxyError};
use super::options::ProxyMode;
use crate::listener::{Serving, Slot};
use crate::sock::{SockIo, Socket};

/// A stream whose first bytes can be looked at without taking them, and
/// whose ends can be renamed (to the addresses a header gives).
pub(crate) trait PeekStream: StreamIo {
    /// Copy the bytes waiting in the socket into `buf`, leaving them there.
    fn peek(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Name the remote and local ends.
    fn set_ends(&mut self, peer: Address, host: Address);
}

impl<S: Socket + AsRawFd> PeekStream for SockIo<S> {
    fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        #[cfg(test)]
        PEEKS.with(|n| n.set(n.get() + 1));
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the
        // whole call, and the descriptor is the socket's own, open.
        let n = unsafe {
            libc::recv(
                self.s.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_PEEK,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn set_ends(&mut self, peer: Address, host: Address) {
        self.peer = peer;
        self.host = host;
    }
}

#[cfg(test)]
thread_local! {
    /// Peeks made on this thread (tests check that split headers are
    /// looked at piece by piece).
    pub(crate) static PEEKS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Where a connection's header reading stands. Changed only in
/// [`HeaderReader::finish`].
enum Phase<S> {
    /// Waiting for the whole header: the socket, its own remote address,
    /// and its place in the listener's count.
    Reading { stream: S, peer: Address, slot: Slot },
    /// The socket went to its protocol, or was closed.
    Over,
}

/// How a look at the socket ended.
enum Step {
    /// Not enough bytes yet.
    Wait,
    /// Reading is over.
    Done(Outcome),
}

/// How reading a header ends.
enum Outcome {
    /// Serve the connection with its own addresses (no header, in optional
    /// mode; or a header that says to).
    Direct,
    /// Serve the connection as coming from `source`, to `destination`.
    Proxied { source: Address, destination: Address },
    /// Close it.
    Refuse(Refusal),
}

/// Why a connection is closed before it has a protocol.
enum Refusal {
    Malformed(ProxyError),
    Missing,
    Truncated,
    Closed,
    TimedOut,
    Io(io::Error),
    Stopping,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Malformed(e) => e.fmt(f),
            Refusal::Missing => f.write_str("no PROXY header where one is required"),
            Refusal::Truncated => f.write_str("closed in the middle of its PROXY header"),
            Refusal::Closed => f.write_str("closed before sending a PROXY header"),
            Refusal::TimedOut => f.write_str("no whole PROXY header within the timeout"),
            Refusal::Io(e) => write!(f, "reading its PROXY header: {e}"),
            Refusal::Stopping => f.write_str("the reactor stopped before its PROXY header came"),
        }
    }
}

/// An accepted connection reading its header.
struct HeaderReader<S> {
    phase: Phase<S>,
    serving: Rc<Serving>,
    /// Fires at the deadline; inactive once it has fired.
    timer: DelayedCall,
}

/// Read the header of `stream`, accepted from `peer`, then hand it to
/// `serving` (or close it). The first look is made at once: a proxy often
/// sends the header with the connection.
pub(crate) fn read_header<S: PeekStream>(
    r: &mut Reactor,
    mut stream: S,
    peer: Address,
    serving: Rc<Serving>,
    slot: Slot,
) {
    let timeout = serving.proxy.timeout;
    let what = serving.what.clone();
    let inserted = r.insert_with(move |r, id| {
        stream.register(r.registry(), id.token(), Interest::READABLE)?;
        let timer = r.call_later(timeout, move |r| r.dispatch_now(id, Ready::NONE));
        Ok(Box::new(HeaderReader {
            phase: Phase::Reading { stream, peer, slot },
            serving,
            timer,
        }))
    });
    match inserted {
        Ok(id) => r.dispatch_now(id, Ready::READABLE),
        // The closure dropped the stream and the slot.
        Err(e) => log::warn!("{what}: cannot register a connection: {e}"),
    }
}

impl<S: PeekStream> HeaderReader<S> {
    /// Look at what has arrived.
    fn look(&mut self, r: &mut Reactor, ready: Ready) -> Step {
        let Phase::Reading { stream, .. } = &mut self.phase else {
            return Step::Wait;
        };
        let proxy = &self.serving.proxy;
        let mut buf = r.take_read_buffer();
        let len = proxy.peek_len().min(buf.len());
        let step = loop {
            let n = match stream.peek(&mut buf[..len]) {
                Ok(0) => break Step::Done(Outcome::Refuse(Refusal::Closed)),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Step::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Step::Done(Outcome::Refuse(Refusal::Io(e))),
            };
            let outcome = match parse_header(&buf[..n], proxy.v2_limit()) {
                // The peer has shut its side: no more bytes will come.
                Ok(Parsed::Incomplete) if ready.read_closed => Outcome::Refuse(Refusal::Truncated),
                Ok(Parsed::Incomplete) => break Step::Wait,
                Ok(Parsed::Absent) if proxy.mode == ProxyMode::Optional => Outcome::Direct,
                Ok(Parsed::Absent) => Outcome::Refuse(Refusal::Missing),
                Err(e) => Outcome::Refuse(Refusal::Malformed(e)),
                Ok(Parsed::Header(h)) => match take(stream, &mut buf[..h.len]) {
                    Err(e) => Outcome::Refuse(Refusal::Io(e)),
                    Ok(()) => match h.origin {
                        Origin::Client { source, destination } => Outcome::Proxied { source, destination },
                        Origin::Unknown | Origin::Local => Outcome::Direct,
                    },
                },
            };
            break Step::Done(outcome);
        };
        r.put_read_buffer(buf);
        step
    }

    /// The one place the phase changes: from reading to over, handing the
    /// socket to its protocol or closing it. Refused once over.
    fn finish(&mut self, r: &mut Reactor, id: ConnId, outcome: Outcome) {
        let Phase::Reading {
            mut stream,
            peer,
            slot,
        } = std::mem::replace(&mut self.phase, Phase::Over)
        else {
            return;
        };
        self.timer.cancel(r);
        // Before the connection registers the socket under its own id.
        let _ = stream.deregister(r.registry());
        r.remove(id);
        match outcome {
            Outcome::Direct => self.serving.start(r, stream, &peer, slot),
            Outcome::Proxied { source, destination } => {
                log::debug!("{}: {peer} relays {source}", self.serving.what);
                stream.set_ends(source.clone(), destination);
                self.serving.start(r, stream, &source, slot);
            }
            // Dropping the stream closes it; dropping the slot frees it.
            Outcome::Refuse(why) => self.serving.refused(&peer, &why),
        }
    }
}

/// Take exactly `buf.len()` bytes out of the socket: bytes a peek has
/// already seen there, so they are all waiting.
fn take<S: StreamIo>(stream: &mut S, buf: &mut [u8]) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match stream.read(&mut buf[got..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl<S: PeekStream> Handler for HeaderReader<S> {
    fn ready(&mut self, r: &mut Reactor, id: ConnId, ready: Ready) {
        let outcome = match self.look(r, ready) {
            Step::Done(outcome) => outcome,
            // The timer has fired (it is inactive only then, or once over).
            Step::Wait if !self.timer.active(r) => Outcome::Refuse(Refusal::TimedOut),
            Step::Wait => return,
        };
        self.finish(r, id, outcome);
    }

    fn shutdown(&mut self, r: &mut Reactor, id: ConnId) {
        // No protocol to let finish: close now.
        self.finish(r, id, Outcome::Refuse(Refusal::Stopping));
    }

    fn holds_shutdown(&self) -> bool {
        false
    }
}
