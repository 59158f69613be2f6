//! The hand-written mio echo loop: the limit for twistor's design. One
//! thread, edge-triggered, read until `WouldBlock` into one shared 64 KiB
//! buffer, write straight back, keep only the unwritten remainder and ask
//! for WRITABLE only while a remainder exists. No fairness budget, no
//! callbacks, no panic isolation: nothing but the syscalls.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

const LISTENER: Token = Token(usize::MAX);

struct Conn {
    s: TcpStream,
    /// Bytes read but not yet written back.
    pending: Vec<u8>,
}

/// Listen on `addr` and serve forever.
pub fn serve(addr: SocketAddr, bound: impl FnOnce(SocketAddr)) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut listener = TcpListener::bind(addr)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    bound(listener.local_addr()?);
    let mut conns: Slab<Conn> = Slab::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut s, _)) => {
                            let _ = s.set_nodelay(true);
                            let key = conns.vacant_key();
                            poll.registry().register(&mut s, Token(key), Interest::READABLE)?;
                            conns.insert(Conn {
                                s,
                                pending: Vec::new(),
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => break,
                    }
                }
                continue;
            }
            let key = ev.token().0;
            let Some(c) = conns.get_mut(key) else {
                continue;
            };
            let mut alive = true;
            if ev.is_writable() && !c.pending.is_empty() {
                alive = flush(c);
                if alive && c.pending.is_empty() {
                    poll.registry()
                        .reregister(&mut c.s, ev.token(), Interest::READABLE)?;
                }
            }
            if alive && (ev.is_readable() || ev.is_read_closed() || ev.is_error()) {
                let had_pending = !c.pending.is_empty();
                alive = echo(c, &mut buf);
                if alive && !had_pending && !c.pending.is_empty() {
                    poll.registry().reregister(
                        &mut c.s,
                        ev.token(),
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                }
            }
            if !alive {
                let mut c = conns.remove(key);
                let _ = poll.registry().deregister(&mut c.s);
            }
        }
    }
}

/// Read until `WouldBlock`, writing each chunk straight back. Returns false
/// when the connection is finished.
fn echo(c: &mut Conn, buf: &mut [u8]) -> bool {
    loop {
        match c.s.read(buf) {
            Ok(0) => return false,
            Ok(n) => {
                if c.pending.is_empty() {
                    match write_some(&mut c.s, &buf[..n]) {
                        Some(w) => c.pending.extend_from_slice(&buf[w..n]),
                        None => return false,
                    }
                } else {
                    c.pending.extend_from_slice(&buf[..n]);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Write the remainder; false on a dead connection.
fn flush(c: &mut Conn) -> bool {
    match write_some(&mut c.s, &c.pending) {
        Some(w) => {
            c.pending.drain(..w);
            true
        }
        None => false,
    }
}

/// Write as much of `data` as the socket takes; `None` on an error.
fn write_some(s: &mut TcpStream, data: &[u8]) -> Option<usize> {
    let mut done = 0;
    while done < data.len() {
        match s.write(&data[done..]) {
            Ok(0) => return None,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(done)
}
