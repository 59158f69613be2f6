//! What an idle server-side TLS connection costs, counted by a live-bytes
//! allocator over 1,000 loopback connections that each echoed one large
//! message (64 KiB, as four full records, each echoed before the next is
//! sent) and then went quiet.
//!
//! The servers run the same exchange on the counted thread, one after the
//! other, against clients on an uncounted thread:
//! - bare rustls: a `ServerConnection` driven by hand over a blocking
//!   socket: what the rustls connection itself holds, as it leaves itself
//!   and after a read that would block (which lets it shrink its input
//!   buffer to its 4 KiB floor, as the TLS layer does);
//! - twistor over plain TCP: a twistor connection without TLS;
//! - twistor over TLS (`listen_tls`).
//!
//! The TLS layer's own share is what a TLS connection costs beyond a plain
//! one and the rustls connection inside it. Run with `--nocapture` to see
//! the figures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use twistor_reactor::{Protocol, Reactor, Transport};
use twistor_transports::listen_tcp;
use twistor_transports::tls::rustls::{self, ClientConfig, ServerConfig};
use twistor_transports::tls::{listen_tls, ClientConfigBuilder, ServerConfigBuilder};

// ----- a live-bytes counter for the threads that opt in ----------------------------

struct Counting;

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<i64> = const { Cell::new(0) };
}

fn note(delta: i64) {
    // try_with: never panic inside the allocator, even during thread exit.
    let _ = COUNTED.try_with(|c| {
        if c.get() {
            let _ = LIVE.try_with(|l| l.set(l.get() + delta));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as i64);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as i64);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size as i64 - layout.size() as i64);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as i64));
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Live heap bytes allocated by this thread since it started counting.
fn live() -> i64 {
    COUNTED.with(|c| c.set(true));
    LIVE.with(|l| l.get())
}

// ----- the exchange ----------------------------------------------------------------

const CONNECTIONS: usize = 1000;
/// The one large message each connection echoes before going idle...
const MESSAGE: usize = 64 * 1024;
/// ...one full TLS record at a time. (Sent at once, several records would
/// pile up in the write buffer below TLS in one go, and that buffer's spare
/// capacity, kept by the stream, would differ from a plain connection's.)
const PIECE: usize = 16 * 1024;
const WAIT: Duration = Duration::from_secs(300);

/// Either side of a client connection.
enum Client {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Client {
    fn io(&mut self) -> &mut dyn ReadWrite {
        match self {
            Client::Plain(s) => s,
            Client::Tls(s) => &mut **s,
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Connects `n` clients one after another; each sends one message and
/// reads its echo, then stays open until `release`.
fn clients(
    port: u16,
    tls: Option<Arc<ClientConfig>>,
    n: usize,
    release: Arc<Barrier>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let message: Vec<u8> = (0..MESSAGE).map(|i| (i % 251) as u8).collect();
        let mut echo = vec![0u8; MESSAGE];
        let mut open = Vec::with_capacity(n);
        for _ in 0..n {
            let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
            sock.set_read_timeout(Some(WAIT)).unwrap();
            sock.set_nodelay(true).unwrap();
            let mut c = match &tls {
                None => Client::Plain(sock),
                Some(config) => {
                    let conn = rustls::ClientConnection::new(config.clone(), "localhost".try_into().unwrap())
                        .unwrap();
                    Client::Tls(Box::new(rustls::StreamOwned::new(conn, sock)))
                }
            };
            for (piece, back) in message.chunks(PIECE).zip(echo.chunks_mut(PIECE)) {
                c.io().write_all(piece).unwrap();
                c.io().flush().unwrap();
                c.io().read_exact(back).unwrap();
            }
            assert_eq!(echo, message);
            open.push(c);
        }
        release.wait();
        drop(open);
    })
}

fn configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let (server, fp) = ServerConfigBuilder::self_signed(&["localhost"]).unwrap();
    (server, ClientConfigBuilder::new().pinned(&fp).build().unwrap())
}

/// Counts what it echoes.
struct Echo(Rc<Cell<usize>>);
impl Protocol for Echo {
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        self.0.set(self.0.get() + d.len());
        t.write(d);
    }
}

/// Bytes per idle connection of a twistor server, TLS or not.
fn twistor_server(tls: bool) -> f64 {
    let (sc, cc) = configs();
    let mut r = Reactor::new().unwrap();
    let echoed = Rc::new(Cell::new(0));
    let e = echoed.clone();
    let factory = move |_: &_| Echo(e.clone());
    let port = if tls {
        listen_tls(&mut r, "127.0.0.1:0", factory, sc).unwrap().port()
    } else {
        listen_tcp(&mut r, "127.0.0.1:0", factory).unwrap().port()
    };
    let client_config = tls.then_some(cc);
    // One connection first: the reactor's shared buffers and the
    // listener's first allocations are not a connection's cost.
    let warm = Arc::new(Barrier::new(1));
    let c = clients(port, client_config.clone(), 1, warm);
    assert!(r.run_until(WAIT, |_| echoed.get() == MESSAGE).unwrap());
    c.join().unwrap();
    assert!(
        r.run_until(WAIT, |r| r.handler_count() == 1).unwrap(),
        "warm-up connection still open"
    );
    echoed.set(0);

    let before = live();
    let release = Arc::new(Barrier::new(2));
    let c = clients(port, client_config, CONNECTIONS, release.clone());
    let done = r
        .run_until(WAIT, |_| echoed.get() == CONNECTIONS * MESSAGE)
        .unwrap();
    assert!(done, "echoed {} of {}", echoed.get(), CONNECTIONS * MESSAGE);
    // Let the last echo's ciphertext leave (the client has read it all, so
    // it has), and any call queued behind it run.
    r.run_until(Duration::from_millis(50), |_| false).unwrap();
    let after = live();
    assert_eq!(r.handler_count(), CONNECTIONS + 1);
    release.wait();
    c.join().unwrap();
    assert!(r.run_until(WAIT, |r| r.handler_count() == 1).unwrap());
    (after - before) as f64 / CONNECTIONS as f64
}

/// Bytes per idle connection of a bare rustls server doing the same; with
/// `floor`, after a read that would block.
fn rustls_server(floor: bool) -> f64 {
    /// A socket with nothing to read yet.
    struct WouldBlock;
    impl Read for WouldBlock {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::WouldBlock.into())
        }
    }
    let (sc, cc) = configs();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut kept = Vec::with_capacity(CONNECTIONS + 1);
    let mut buf = vec![0u8; PIECE];
    let serve = |kept: &mut Vec<_>, buf: &mut Vec<u8>| {
        let (mut sock, _) = listener.accept().unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        sock.set_nodelay(true).unwrap();
        let mut conn = Box::new(rustls::ServerConnection::new(sc.clone()).unwrap());
        let mut s = rustls::Stream::new(&mut *conn, &mut sock);
        for _ in 0..MESSAGE / PIECE {
            s.read_exact(buf).unwrap();
            s.write_all(buf).unwrap();
            s.flush().unwrap();
        }
        if floor {
            let _ = conn.read_tls(&mut WouldBlock);
        }
        kept.push((conn, sock));
    };
    let warm = Arc::new(Barrier::new(1));
    let c = clients(port, Some(cc.clone()), 1, warm);
    serve(&mut kept, &mut buf);
    c.join().unwrap();
    kept.clear();

    let before = live();
    let release = Arc::new(Barrier::new(2));
    let c = clients(port, Some(cc), CONNECTIONS, release.clone());
    for _ in 0..CONNECTIONS {
        serve(&mut kept, &mut buf);
    }
    let after = live();
    release.wait();
    c.join().unwrap();
    (after - before) as f64 / CONNECTIONS as f64
}

#[test]
fn an_idle_tls_connection_costs_little_beyond_the_rustls_connection() {
    let rustls_as_left = rustls_server(false);
    let rustls_floor = rustls_server(true);
    let plain = twistor_server(false);
    let tls = twistor_server(true);
    let layer = tls - plain - rustls_floor;
    println!(
        "idle server connection after a {} KiB echo, bytes each over {CONNECTIONS}: \
         rustls ServerConnection as it leaves itself {rustls_as_left:.0}, at its floor \
         {rustls_floor:.0}; twistor plain TCP {plain:.0}; twistor TLS {tls:.0}; \
         twistor's share of a TLS connection {:.0}, of which the TLS layer {layer:.0}",
        MESSAGE / 1024,
        tls - rustls_floor,
    );
    // The layer lets rustls shrink to its floor...
    assert!(
        tls < plain + rustls_as_left - 8192.0,
        "rustls kept its peak input buffer"
    );
    // ...and adds little of its own (its struct beside the rustls
    // connection, the session facts, and today the stream's spare write
    // chunk, a record header or two larger than a plain connection's): with
    // a plain connection at a quarter KiB, a TLS connection costs at most
    // 1 KiB beyond rustls's.
    assert!(
        layer <= 768.0,
        "the TLS layer adds {layer:.0} bytes to each idle connection"
    );
}
