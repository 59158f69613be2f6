//! Invariant 3 over real TCP: one firehose peer cannot starve the others.
//!
//! Fifty request/response peers measure their round trips, first alone,
//! then while one peer sends as fast as it can to a server that does real
//! work per byte (so the server, not the sender, is the bottleneck and the
//! firehose socket never runs dry). With the per-event read budget the
//! small peers get a turn every few hundred kilobytes; without it they
//! would wait for the whole firehose. The worst loaded round trip is
//! compared with the unloaded median, as a ratio.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use common::{client, round_trip, wait_for};
use twistor::prelude::*;

const PEERS: usize = 50;
const ROUNDS: usize = 8;
/// The firehose's own bounds: it stops when the small peers are done, or
/// after this long, or after this many bytes, whichever comes first.
const FIREHOSE_TIME: Duration = Duration::from_secs(6);
const FIREHOSE_BYTES: usize = 8 << 30;
/// Worst loaded round trip / unloaded median. A budgeted server measures
/// tens to a few hundred here; a starved peer waits for the whole
/// firehose, thousands of times longer.
const MAX_RATIO: f64 = 2000.0;
/// Floor of the unloaded median, so a very fast machine does not make the
/// bound tighter than scheduling noise.
const MIN_BASE: Duration = Duration::from_micros(100);

/// Echoes requests; a connection that starts with `F` is the firehose and
/// its bytes are checksummed (work per byte), not echoed.
struct Fair {
    firehose: Option<bool>,
    sum: u64,
}

impl Protocol for Fair {
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        let firehose = *self.firehose.get_or_insert(data.first() == Some(&b'F'));
        if firehose {
            for b in data {
                self.sum = self.sum.wrapping_mul(31).wrapping_add(u64::from(*b));
            }
            std::hint::black_box(self.sum);
        } else {
            t.write(data);
        }
    }
}

/// Round trips of every peer, `ROUNDS` times over.
fn measure(peers: &mut [std::net::TcpStream]) -> Vec<Duration> {
    let req = [b'r'; 32];
    let mut out = Vec::with_capacity(peers.len() * ROUNDS);
    for _ in 0..ROUNDS {
        for p in peers.iter_mut() {
            let t0 = Instant::now();
            assert_eq!(round_trip(p, &req), req);
            out.push(t0.elapsed());
        }
    }
    out
}

struct Report {
    unloaded: Vec<Duration>,
    loaded: Vec<Duration>,
    /// Firehose bytes written while the loaded round trips ran.
    firehose_during: usize,
}

fn drive(addr: std::net::SocketAddr) -> Report {
    let mut peers: Vec<_> = (0..PEERS).map(|_| client(addr)).collect();
    // Warm up, then the unloaded baseline.
    measure(&mut peers);
    let unloaded = measure(&mut peers);

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let (flowing_tx, flowing) = mpsc::channel();
    let (s2, w2) = (stop.clone(), written.clone());
    let firehose = thread::spawn(move || {
        let mut c = client(addr);
        let buf = vec![b'F'; 256 * 1024];
        let start = Instant::now();
        let mut total = 0;
        let mut told = false;
        while !s2.load(Ordering::Relaxed) && start.elapsed() < FIREHOSE_TIME && total < FIREHOSE_BYTES {
            c.write_all(&buf).unwrap();
            total += buf.len();
            w2.store(total, Ordering::Relaxed);
            // Well past what the socket buffers hold: the server is busy.
            if !told && total >= 32 << 20 {
                told = true;
                let _ = flowing_tx.send(());
            }
        }
    });
    flowing
        .recv_timeout(common::WAIT)
        .expect("the firehose never got going");
    let before = written.load(Ordering::Relaxed);
    let loaded = measure(&mut peers);
    let firehose_during = written.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    firehose.join().expect("firehose thread");
    Report {
        unloaded,
        loaded,
        firehose_during,
    }
}

#[test]
fn a_firehose_peer_does_not_starve_fifty_request_response_peers() {
    let mut r = common::reactor();
    let addr = listen_tcp(&mut r, "127.0.0.1:0", |_: &Address| Fair {
        firehose: None,
        sum: 0,
    })
    .unwrap()
    .local_addr();
    let report = common::in_thread(&mut r, move || drive(addr));

    let mut unloaded = report.unloaded.clone();
    unloaded.sort();
    let base = unloaded[unloaded.len() / 2].max(MIN_BASE);
    let worst = *report.loaded.iter().max().unwrap();
    let ratio = worst.as_secs_f64() / base.as_secs_f64();
    assert!(
        ratio <= MAX_RATIO,
        "worst loaded round trip {worst:?} is {ratio:.0}x the unloaded median {base:?} (bound {MAX_RATIO}x)"
    );
    // The loaded run really was loaded: the firehose kept flowing.
    assert!(
        report.firehose_during >= 4 << 20,
        "only {} firehose bytes during the loaded run",
        report.firehose_during
    );
}

#[test]
fn one_peer_reads_at_most_the_budget_per_loop_turn() {
    // The fairness budget itself: one loop turn reads at most the budget
    // (plus one read) from a peer before requeueing it.
    let mut r = common::reactor();
    let reads = std::rc::Rc::new(std::cell::RefCell::new(Vec::<usize>::new()));
    let rd = reads.clone();
    struct Count(std::rc::Rc<std::cell::RefCell<Vec<usize>>>);
    impl Protocol for Count {
        fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
            let turn = t.reactor().turns() as usize;
            let mut v = self.0.borrow_mut();
            // Bytes read per loop turn, indexed by turn.
            if v.len() <= turn {
                v.resize(turn + 1, 0);
            }
            v[turn] += data.len();
        }
    }
    let addr = listen_tcp(&mut r, "127.0.0.1:0", move |_: &Address| Count(rd.clone()))
        .unwrap()
        .local_addr();
    // Queue 1 MiB in the socket while the loop is not running, so one
    // readiness event finds far more than the budget waiting.
    const SENT: usize = 1 << 20;
    let mut c = client(addr);
    wait_for(&mut r, "the connection", |r| r.handler_count() == 2);
    let (tx, rx) = mpsc::channel();
    let sender = thread::spawn(move || {
        c.write_all(&vec![0u8; SENT]).unwrap();
        let _ = tx.send(());
        c
    });
    rx.recv_timeout(common::WAIT)
        .expect("the socket buffers did not take 1 MiB");
    let rd = reads.clone();
    wait_for(&mut r, "everything to arrive", move |_| {
        rd.borrow().iter().sum::<usize>() >= SENT
    });
    drop(sender.join().unwrap());
    let most = *reads.borrow().iter().max().unwrap();
    let limit = twistor::reactor::DEFAULT_READ_BUDGET + twistor::reactor::READ_BUFFER_SIZE;
    assert!(
        most <= limit,
        "{most} bytes read from one peer in one turn (budget {limit})"
    );
}
