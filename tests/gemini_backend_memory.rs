//! Backends relay large answers to slow clients with bounded memory: a
//! real SCGI application (Python) sending 256 MiB, a second twistor
//! Gemini server behind the reverse proxy sending a 256 MiB file, and a
//! CGI script writing 256 MiB through a large pipe. The
//! client reads a burst only after each pause of the front connection, so
//! it is slower than the backend on any machine; if the relay read the
//! backend regardless, the whole body would pile up in the server. The
//! other way, a 32 MiB Titan upload goes to an SCGI application that
//! reads it slowly: the client's upload is not read while the backend's
//! connection is full. What is asserted is an allocation count (the peak
//! of live heap bytes in this process, the upstream server included), not
//! a time.

mod gemini_common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use gemini_common::*;
use twistor::protocols::gemini::{
    CgiOptions, GeminiConnection, GeminiProxy, Router, Scgi, ScgiOptions, Server, StaticFiles, UpstreamTrust,
    VirtualHost,
};
use twistor::reactor::{Address, Protocol, ProtocolCall, Reason, Transport};
use twistor::transports::tls::{listen_tls_with, rustls, ClientConfigBuilder};
use twistor::transports::ListenOptions;

/// Counts live heap bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is passed to the system allocator unchanged; only
// counters are updated besides.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            if new_size > layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A CGI script sending `SIZE_MIB` MiB of zeros through a 1 MiB pipe.
const FLOOD: &str = r#"#!/usr/bin/env python3
import fcntl, os
try:
    fcntl.fcntl(1, 1031, 1 << 20)  # F_SETPIPE_SZ
except OSError:
    pass
os.write(1, b"20 application/octet-stream\r\n")
chunk = bytes(1 << 20)
for _ in range(SIZE_MIB):
    view = memoryview(chunk)
    while view:
        view = view[os.write(1, view):]
"#;

const MIB: u64 = 1 << 20;
const SIZE_MIB: u64 = 256;
const BURST: usize = 16 << 20;
/// The most the heap may grow while a body passes through: buffers of a
/// few high-water marks, TLS state, the client's own buffers. The body is
/// 32 times that.
const BOUND: usize = 8 << 20;

/// Sits between TLS and the front Gemini connection and reports its
/// pauses, so that the client reads only while the server waits for it.
struct Measure {
    inner: GeminiConnection,
    pauses: Rc<Cell<usize>>,
    signal: mpsc::Sender<()>,
}

impl Protocol for Measure {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.inner.connection_made(t);
    }
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        self.inner.data_received(t, data);
    }
    fn eof_received(&mut self, t: &mut dyn Transport) -> bool {
        self.inner.eof_received(t)
    }
    fn connection_lost(&mut self, t: &mut dyn Transport, reason: &Reason) {
        self.inner.connection_lost(t, reason);
    }
    fn pause_writing(&mut self, t: &mut dyn Transport) {
        self.pauses.set(self.pauses.get() + 1);
        self.inner.pause_writing(t);
        let _ = self.signal.send(());
    }
    fn resume_writing(&mut self, t: &mut dyn Transport) {
        self.inner.resume_writing(t);
    }
    fn route_call(&mut self, t: &mut dyn Transport, call: ProtocolCall) -> Option<ProtocolCall> {
        let call = self.inner.route_call(t, call)?;
        call(&mut self.inner, t);
        None
    }
}

/// Fetch `url` over rustls, reading a burst after each pause signal;
/// returns the header and the body's length (all zeros, checked).
fn slow_fetch(
    addr: std::net::SocketAddr,
    config: std::sync::Arc<rustls::ClientConfig>,
    url: String,
    pauses: mpsc::Receiver<()>,
) -> (Vec<u8>, u64) {
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let conn = rustls::ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(format!("{url}\r\n").as_bytes()).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut header = Vec::new();
    let mut body = 0u64;
    loop {
        if let Err(mpsc::RecvTimeoutError::Timeout) = pauses.recv_timeout(WAIT) {
            eprintln!("no pause signal in time: reading on");
        }
        let mut burst = 0;
        while burst < BURST {
            let n = tls.read(&mut buf).expect("a clean end of the response");
            if n == 0 {
                return (header, body);
            }
            burst += n;
            let mut chunk = &buf[..n];
            if !header.ends_with(b"\r\n") {
                let end = chunk
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(chunk.len(), |i| i + 1);
                header.extend_from_slice(&chunk[..end]);
                chunk = &chunk[end..];
            }
            assert!(chunk.iter().all(|&b| b == 0), "corrupt body");
            body += chunk.len() as u64;
        }
    }
}

#[test]
fn large_answers_from_backends_keep_memory_bounded() {
    if !have("python3") {
        return;
    }
    let dir = temp_dir("backend-memory");
    // Sparse: no disk is used, reads return zeros.
    std::fs::File::create(dir.join("big.bin"))
        .unwrap()
        .set_len(SIZE_MIB * MIB)
        .unwrap();
    let scgi = ScgiBackend::start("tcp");
    let mut r = reactor();
    let upstream = Server::builder()
        .host(VirtualHost::new("localhost", StaticFiles::new(&dir)))
        .build()
        .unwrap();
    let up_fp = upstream.fingerprints()[0].1.clone();
    let up = listen(&mut r, &upstream, "127.0.0.1");

    let mut app = Router::new();
    let scgi_opts = ScgiOptions {
        max_upload: Some(64 * MIB),
        ..ScgiOptions::default()
    };
    let scgi_address = format!("127.0.0.1:{}", scgi.address).parse().unwrap();
    app.mount("/scgi", Scgi::with_options(scgi_address, scgi_opts));
    let proxy = GeminiProxy::builder("127.0.0.1", up.port())
        .sni("localhost")
        .rewrite_host(true)
        .trust(UpstreamTrust::Pinned(vec![up_fp]))
        .build()
        .unwrap();
    app.mount("/big.bin", proxy);
    // A CGI script that writes as fast as it can, through a pipe made
    // large so that one readable event brings more than the body channel's
    // high-water mark: pausing must take effect from inside that event.
    let cgi_root = dir.join("cgi-root");
    std::fs::create_dir_all(cgi_root.join("cgi-bin")).unwrap();
    let flood = cgi_root.join("cgi-bin/flood.py");
    std::fs::write(&flood, FLOOD.replace("SIZE_MIB", &SIZE_MIB.to_string())).unwrap();
    std::fs::set_permissions(&flood, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    app.fallback(StaticFiles::new(&cgi_root).with_cgi(CgiOptions {
        timeout: WAIT * 4,
        ..CgiOptions::default()
    }));
    let front = Server::builder()
        .host(VirtualHost::new("localhost", app))
        .build()
        .unwrap();
    let front_fp = front.fingerprints()[0].1.clone();

    let urls = [
        ("scgi", "/scgi/big?256", "20 application/octet-stream\r\n"),
        ("proxy", "/big.bin", "20 application/octet-stream\r\n"),
        ("cgi", "/cgi-bin/flood.py", "20 application/octet-stream\r\n"),
    ];
    for (name, path, header) in urls {
        let (tx, rx) = mpsc::channel();
        let pauses: Rc<Cell<usize>> = Rc::default();
        let p2 = pauses.clone();
        let srv = front.clone();
        let port = listen_tls_with(
            &mut r,
            "127.0.0.1:0",
            move |_: &Address| Measure {
                inner: srv.connection(),
                pauses: p2.clone(),
                signal: tx.clone(),
            },
            front.tls_config(),
            front.tls_options(),
            ListenOptions::default(),
        )
        .unwrap();
        let addr = port.local_addr();
        let url = format!("gemini://localhost:{}{path}", addr.port());
        let config = ClientConfigBuilder::new().pinned(&front_fp).build().unwrap();
        let baseline = LIVE.load(Ordering::Relaxed);
        PEAK.store(baseline, Ordering::Relaxed);
        let got = in_thread(&mut r, move || slow_fetch(addr, config, url, rx));
        let growth = PEAK.load(Ordering::Relaxed).saturating_sub(baseline);
        eprintln!("{name}: peak heap growth {growth} bytes, {} pauses", pauses.get());
        assert_eq!(got.0, header.as_bytes(), "{name}");
        assert_eq!(got.1, SIZE_MIB * MIB, "{name}: body bytes");
        assert!(pauses.get() >= 10, "{name}: pauses {}", pauses.get());
        assert!(growth < BOUND, "{name}: the heap grew by {growth} bytes");
    }

    // The other way: an upload to a slow application.
    let addr = listen(&mut r, &front, "127.0.0.1");
    let config = ClientConfigBuilder::new().pinned(&front_fp).build().unwrap();
    let size = 32 * MIB;
    let baseline = LIVE.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let answer = in_thread(&mut r, move || {
        let tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        let conn = rustls::ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let line = format!("titan://localhost:{}/scgi/sink;size={size}\r\n", addr.port());
        tls.write_all(line.as_bytes()).unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..size / MIB {
            tls.write_all(&chunk).unwrap();
        }
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer).expect("a clean end of the response");
        answer
    });
    let growth = PEAK.load(Ordering::Relaxed).saturating_sub(baseline);
    eprintln!("upload: peak heap growth {growth} bytes");
    assert_eq!(answer, format!("20 text/plain\r\nGOT={size}").as_bytes());
    assert!(growth < BOUND, "upload: the heap grew by {growth} bytes");
    drop(scgi);
    std::fs::remove_dir_all(dir).unwrap();
}
