//! A hand-written mio + rustls echo server, in the shape of rustls's own
//! `tlsserver-mio` example: one `ServerConnection` per socket, read TLS
//! until `WouldBlock`, process, echo the plaintext, write TLS while rustls
//! has some, WRITABLE interest only while it does. No timeouts, no flow
//! control: the floor for a TLS connection's memory on rustls, which the
//! idle-memory case compares twistor's TLS layer with.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use twistor_transports::tls::rustls::{ServerConfig, ServerConnection};

const LISTENER: Token = Token(usize::MAX);

struct Conn {
    s: TcpStream,
    tls: ServerConnection,
    writable: bool,
}

/// Listen on `addr` and serve forever with `config`.
pub fn serve(addr: SocketAddr, config: Arc<ServerConfig>, bound: impl FnOnce(SocketAddr)) -> io::Result<()> {
    serve_with(addr, config, bound, || true)
}

/// [`serve`], calling `after_turn` after each loop turn (the allocation
/// count reads the thread's figure there) and ending when it returns false.
pub fn serve_with(
    addr: SocketAddr,
    config: Arc<ServerConfig>,
    bound: impl FnOnce(SocketAddr),
    mut after_turn: impl FnMut() -> bool,
) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut listener = TcpListener::bind(addr)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    bound(listener.local_addr()?);
    let mut conns: Slab<Conn> = Slab::new();
    let mut buf = vec![0u8; 64 * 1024];
    while after_turn() {
        match poll.poll(&mut events, Some(std::time::Duration::from_millis(100))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                while let Ok((mut s, _)) = listener.accept() {
                    let _ = s.set_nodelay(true);
                    let Ok(mut tls) = ServerConnection::new(config.clone()) else {
                        continue;
                    };
                    // Like twistor's layer: the socket side bounds the writes.
                    tls.set_buffer_limit(None);
                    let key = conns.vacant_key();
                    poll.registry().register(&mut s, Token(key), Interest::READABLE)?;
                    conns.insert(Conn {
                        s,
                        tls,
                        writable: false,
                    });
                }
                continue;
            }
            let key = ev.token().0;
            let Some(c) = conns.get_mut(key) else {
                continue;
            };
            let alive = serve_one(c, &mut buf);
            if alive && c.tls.wants_write() != c.writable {
                c.writable = c.tls.wants_write();
                let interest = if c.writable {
                    Interest::READABLE | Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                poll.registry().reregister(&mut c.s, ev.token(), interest)?;
            }
            if !alive {
                let mut c = conns.remove(key);
                let _ = poll.registry().deregister(&mut c.s);
            }
        }
    }
    Ok(())
}

/// Read, decrypt, echo, write. False when the connection is finished.
fn serve_one(c: &mut Conn, buf: &mut [u8]) -> bool {
    loop {
        match c.tls.read_tls(&mut c.s) {
            Ok(0) => return false,
            Ok(_) => {
                if c.tls.process_new_packets().is_err() {
                    // rustls queued an alert: send it, then close.
                    let _ = c.tls.write_tls(&mut c.s);
                    return false;
                }
                loop {
                    match c.tls.reader().read(buf) {
                        Ok(0) => return false,
                        Ok(n) => {
                            if c.tls.writer().write_all(&buf[..n]).is_err() {
                                return false;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => return false,
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    while c.tls.wants_write() {
        match c.tls.write_tls(&mut c.s) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}
