//! A 1 GiB file to a client that reads slowly: the server streams it with
//! backpressure, so its write buffer (plaintext held by the TLS layer plus
//! ciphertext below) stays within the high-water mark plus one chunk (and
//! TLS record framing) the whole time. The peak is asserted, not the time taken. The client reads a
//! burst only after each pause, so it is slower than the server on any
//! machine.

mod gemini_common;

use std::cell::Cell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::sync::mpsc;

use gemini_common::*;
use twistor::protocols::gemini::{GeminiConnection, Server, StaticFiles, VirtualHost};
use twistor::protocols::producer::DEFAULT_CHUNK;
use twistor::reactor::{Address, Protocol, ProtocolCall, Reason, Transport};
use twistor::transports::tls::{listen_tls_with, rustls, ClientConfigBuilder};
use twistor::transports::ListenOptions;

const SIZE: u64 = 1 << 30;
const BURST: usize = 16 << 20;

#[derive(Default)]
struct Stats {
    peak: Cell<usize>,
    high: Cell<usize>,
    pauses: Cell<usize>,
    resumes: Cell<usize>,
}

/// Sits between TLS and the Gemini connection and watches its transport's
/// write buffer after every callback.
struct Measure {
    inner: GeminiConnection,
    stats: Rc<Stats>,
    pauses: Option<mpsc::Sender<()>>,
}

impl Measure {
    fn observe(&self, t: &dyn Transport) {
        let s = &self.stats;
        s.peak.set(s.peak.get().max(t.write_buffer_size()));
    }
}

impl Protocol for Measure {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.stats.high.set(t.write_buffer_limits().0);
        self.inner.connection_made(t);
        self.observe(t);
    }
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        self.inner.data_received(t, data);
        self.observe(t);
    }
    fn eof_received(&mut self, t: &mut dyn Transport) -> bool {
        self.inner.eof_received(t)
    }
    fn connection_lost(&mut self, t: &mut dyn Transport, reason: &Reason) {
        self.inner.connection_lost(t, reason);
    }
    fn pause_writing(&mut self, t: &mut dyn Transport) {
        self.stats.pauses.set(self.stats.pauses.get() + 1);
        self.inner.pause_writing(t);
        self.observe(t);
        if let Some(tx) = &self.pauses {
            let _ = tx.send(());
        }
    }
    fn resume_writing(&mut self, t: &mut dyn Transport) {
        self.stats.resumes.set(self.stats.resumes.get() + 1);
        self.inner.resume_writing(t);
        self.observe(t);
    }
    fn route_call(&mut self, t: &mut dyn Transport, call: ProtocolCall) -> Option<ProtocolCall> {
        let call = self.inner.route_call(t, call)?;
        call(&mut self.inner, t);
        self.observe(t);
        None
    }
}

#[test]
fn a_gigabyte_to_a_slow_reader_keeps_memory_bounded() {
    let dir = temp_dir("slow");
    // Sparse: no disk is used, reads return zeros.
    std::fs::File::create(dir.join("big.bin"))
        .unwrap()
        .set_len(SIZE)
        .unwrap();
    let server = Server::builder()
        .host(VirtualHost::new("localhost", StaticFiles::new(&dir)))
        .build()
        .unwrap();
    let fingerprint = server.fingerprints()[0].1.clone();
    let stats: Rc<Stats> = Rc::default();
    let (tx, rx) = mpsc::channel();
    let mut tx = Some(tx);
    let s2 = stats.clone();
    let srv = server.clone();
    let mut r = reactor();
    let port = listen_tls_with(
        &mut r,
        "127.0.0.1:0",
        move |_: &Address| Measure {
            inner: srv.connection(),
            stats: s2.clone(),
            pauses: tx.take(),
        },
        server.tls_config(),
        server.tls_options(),
        ListenOptions::default(),
    )
    .unwrap();
    let addr = port.local_addr();
    let config = ClientConfigBuilder::new().pinned(&fingerprint).build().unwrap();
    let got = in_thread(&mut r, move || {
        let tcp = std::net::TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        let conn = rustls::ClientConnection::new(config, "localhost".try_into().unwrap()).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(format!("gemini://localhost:{}/big.bin\r\n", addr.port()).as_bytes())
            .unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut header = Vec::new();
        let mut body = 0u64;
        loop {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(WAIT) {
                eprintln!("no pause signal in time: reading on");
            }
            let mut burst = 0;
            while burst < BURST {
                // A clean end (close_notify) reads as 0; a cut one is an error.
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
    });
    assert_eq!(got.0, b"20 application/octet-stream\r\n");
    assert_eq!(got.1, SIZE, "body bytes");
    let (peak, high) = (stats.peak.get(), stats.high.get());
    // Ciphertext is a little longer than the plaintext it carries: 22 bytes
    // of TLS record framing per 16 KiB record at most.
    let framing = ((high + DEFAULT_CHUNK) / 16384 + 2) * 22 + 64;
    assert!(
        peak <= high + DEFAULT_CHUNK + framing,
        "peak write buffer {peak} over the high-water mark {high} plus one chunk and TLS framing"
    );
    assert!(stats.pauses.get() >= 10, "pauses: {}", stats.pauses.get());
    assert!(stats.resumes.get() + 1 >= stats.pauses.get());
    std::fs::remove_dir_all(dir).unwrap();
}
