//! Flow control over real TCP: a producer writes 1 GiB to a client that
//! reads in small bites and, every 32 MiB, stops reading until the producer
//! has been paused (so flow control is exercised however fast the machine
//! reads), producing only between `resume_writing` and `pause_writing`. The
//! server's write buffer must stay bounded the whole time: the peak is
//! asserted, not the wall time.

mod common;

use std::cell::Cell;
use std::io::Read;
use std::rc::Rc;
use std::sync::mpsc;

use common::{client, wait_for};
use twistor::prelude::*;

/// Bytes sent: 1 GiB (about a second on loopback, even in a debug build).
const TOTAL: usize = 1 << 30;
/// A chunk: a whole number of periods of the byte pattern.
const CHUNK: usize = 251 * 256;
/// The reader waits for a pause after each such block...
const BLOCK: usize = 32 << 20;
/// ...while this much at least is still to come (enough to fill the
/// socket buffers and push the producer over its high-water mark).
const TAIL: usize = 64 << 20;

#[derive(Default)]
struct Stats {
    peak: Cell<usize>,
    pauses: Cell<usize>,
    resumes: Cell<usize>,
    sent: Cell<usize>,
    high: Cell<usize>,
    /// Tells the reader thread of each pause.
    paused_tx: Option<mpsc::Sender<()>>,
}

impl Stats {
    fn observe(&self, t: &dyn Transport) {
        self.peak.set(self.peak.get().max(t.write_buffer_size()));
    }
}

/// Writes one chunk per step and schedules the next step to itself, until
/// told to pause: memory is bounded only if `pause_writing` comes in time.
struct Producer {
    chunk: Rc<Vec<u8>>,
    paused: bool,
    stats: Rc<Stats>,
}

impl Producer {
    fn step(&mut self, t: &mut dyn Transport) {
        self.stats.observe(t);
        if self.paused || t.is_closing() {
            return;
        }
        let sent = self.stats.sent.get();
        if sent >= TOTAL {
            t.lose_connection();
            return;
        }
        t.write(&self.chunk);
        self.stats.sent.set(sent + CHUNK);
        self.stats.observe(t);
        let id = t.id();
        let _ = t.reactor().call_on(id, |p, t| {
            p.downcast_mut::<Producer>().expect("producer").step(t);
        });
    }
}

impl Protocol for Producer {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.stats.high.set(t.write_buffer_limits().0);
        self.step(t);
    }
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
    fn pause_writing(&mut self, t: &mut dyn Transport) {
        self.stats.observe(t);
        self.stats.pauses.set(self.stats.pauses.get() + 1);
        if let Some(tx) = &self.stats.paused_tx {
            let _ = tx.send(());
        }
        self.paused = true;
    }
    fn resume_writing(&mut self, t: &mut dyn Transport) {
        self.stats.observe(t);
        self.stats.resumes.set(self.stats.resumes.get() + 1);
        self.paused = false;
        self.step(t);
    }
}

#[test]
fn a_slow_reader_keeps_the_write_buffer_bounded() {
    let mut r = common::reactor();
    let (paused_tx, paused_rx) = mpsc::channel();
    let stats: Rc<Stats> = Rc::new(Stats {
        paused_tx: Some(paused_tx),
        ..Stats::default()
    });
    let chunk: Rc<Vec<u8>> = Rc::new((0..CHUNK).map(|i| (i % 251) as u8).collect());
    let s2 = stats.clone();
    let port = listen_tcp(&mut r, "127.0.0.1:0", move |_: &Address| Producer {
        chunk: chunk.clone(),
        paused: false,
        stats: s2.clone(),
    })
    .unwrap();
    let addr = port.local_addr();
    // The reader takes small bites, and after each block waits until the
    // producer has been paused once more.
    let reader = std::thread::spawn(move || {
        let mut c = client(addr);
        let mut buf = vec![0u8; 4096];
        let mut got = 0usize;
        let mut next_wait = BLOCK;
        loop {
            if got >= next_wait && got + TAIL <= TOTAL {
                paused_rx
                    .recv_timeout(common::WAIT)
                    .expect("the producer paused while the reader did not read");
                next_wait += BLOCK;
            }
            let n = c.read(&mut buf).expect("read");
            if n == 0 {
                return got;
            }
            // Spot-check the stream: the byte at offset p is p % 251.
            assert_eq!(buf[0] as usize, got % 251, "corrupt at offset {got}");
            got += n;
        }
    });
    let s3 = stats.clone();
    wait_for(&mut r, "the whole transfer", move |r| {
        // Done when everything is sent and the connection is closed.
        s3.sent.get() >= TOTAL && r.handler_count() == 1
    });
    let got = reader.join().expect("reader");
    assert_eq!(got, TOTAL.div_ceil(CHUNK) * CHUNK, "bytes delivered");
    let high = stats.high.get();
    let peak = stats.peak.get();
    assert!(
        peak <= high + CHUNK,
        "peak write buffer {peak} over the high-water mark {high} plus one chunk"
    );
    // Flow control really was exercised, many times over.
    assert!(stats.pauses.get() >= 10, "pauses: {}", stats.pauses.get());
    assert!(
        stats.resumes.get() + 1 >= stats.pauses.get(),
        "resumes {} for {} pauses",
        stats.resumes.get(),
        stats.pauses.get()
    );
}
