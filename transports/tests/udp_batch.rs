//! UDP read and send batches (`recvmmsg` / `sendmmsg` on Linux) over real
//! loopback sockets: batch boundaries (more datagrams waiting than one
//! batch holds), mixed sizes, a cut datagram in the middle, senders
//! interleaved, the fairness budget, replies leaving in order, a send error
//! inside a batch, and closing or panicking in the middle of a batch. The
//! same cases pass with batches of one (the path of other systems).

use std::cell::RefCell;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::rc::Rc;
use std::time::Duration;

use twistor_reactor::{DatagramProtocol, DatagramTransport, Reactor};
use twistor_transports::udp::{connect_udp_with, listen_udp_with, UdpEcho, UdpOptions};

const WAIT: Duration = Duration::from_secs(20);

/// What a protocol saw, in order.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Datagram(Vec<u8>, SocketAddr),
    Error(io::ErrorKind),
}

type Log = Rc<RefCell<Vec<Seen>>>;

/// Records every datagram and error; answers each datagram with `reply`
/// (if any) and acts on a few commands.
struct Rec {
    log: Log,
    reply: bool,
}

impl DatagramProtocol for Rec {
    fn datagram_received(&mut self, t: &mut dyn DatagramTransport, data: &[u8], from: SocketAddr) {
        self.log.borrow_mut().push(Seen::Datagram(data.to_vec(), from));
        match data {
            b"panic" => panic!("told to panic"),
            b"stop" => {
                t.send_to(b"stopping", from).unwrap();
                t.stop_listening();
            }
            b"broadcast" => {
                // Refused by the kernel (no SO_BROADCAST): queued in a
                // batch, so the refusal arrives at error_received.
                let _ = t.send_to(b"x", "127.255.255.255:9".parse().unwrap());
                t.send_to(data, from).unwrap();
            }
            _ if self.reply => match t.peer() {
                Some(_) => t.write(data).unwrap(),
                None => t.send_to(data, from).unwrap(),
            },
            _ => {}
        }
    }
    fn error_received(&mut self, _: &mut dyn DatagramTransport, err: &io::Error) {
        self.log.borrow_mut().push(Seen::Error(err.kind()));
    }
}

fn rec(reply: bool) -> (Rec, Log) {
    let log = Log::default();
    (
        Rec {
            log: log.clone(),
            reply,
        },
        log,
    )
}

fn opts(batch: usize) -> UdpOptions {
    UdpOptions {
        batch,
        max_datagram: 1500,
        // Room for everything a test sends before the reactor reads.
        recv_buffer_size: Some(4 << 20),
        ..UdpOptions::default()
    }
}

/// A blocking peer bound to loopback, with a bounded receive.
fn peer() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// Receive `n` datagrams on `s` while the reactor turns.
fn collect(r: &mut Reactor, s: &UdpSocket, n: usize) -> Vec<Vec<u8>> {
    s.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 2048];
    let ok = r
        .run_until(WAIT, |_| {
            while let Ok(k) = s.recv(&mut buf) {
                got.push(buf[..k].to_vec());
            }
            got.len() >= n
        })
        .unwrap();
    assert!(ok, "{} of {n} datagrams came back", got.len());
    got
}

/// Mixed sizes: 1 to 1400 bytes, each datagram tagged with its number.
fn datagram(i: usize) -> Vec<u8> {
    let len = 4 + (i * 97) % 1397;
    let mut d = vec![(i % 251) as u8; len];
    d[..4].copy_from_slice(&(i as u32).to_be_bytes());
    d
}

/// 150 datagrams from three senders taking turns (more than several
/// batches hold), one of them too large in the middle: every other one
/// arrives in order with its own sender, the large one is reported where
/// it was, and nothing else is.
fn interleaved_senders_mixed_sizes_and_a_cut_one(batch: usize) {
    let mut r = Reactor::new().unwrap();
    let (p, log) = rec(false);
    let port = listen_udp_with(&mut r, "127.0.0.1:0", p, opts(batch)).unwrap();
    r.run_pending().unwrap();
    let senders = [peer(), peer(), peer()];
    let mut want = Vec::new();
    for i in 0..150 {
        let s = &senders[i % 3];
        if i == 77 {
            s.send_to(&[0xEE; 1501], port.local_addr()).unwrap();
            want.push(Seen::Error(io::ErrorKind::InvalidData));
            continue;
        }
        s.send_to(&datagram(i), port.local_addr()).unwrap();
        want.push(Seen::Datagram(datagram(i), s.local_addr().unwrap()));
    }
    assert!(r.run_until(WAIT, |_| log.borrow().len() == 150).unwrap());
    r.run_pending().unwrap();
    let seen = log.borrow();
    assert_eq!(seen.len(), want.len());
    for (k, (s, w)) in seen.iter().zip(&want).enumerate() {
        assert_eq!(s, w, "event {k}");
    }
}

#[test]
fn interleaved_senders_mixed_sizes_and_a_cut_one_in_batches() {
    interleaved_senders_mixed_sizes_and_a_cut_one(8);
}

#[test]
fn interleaved_senders_mixed_sizes_and_a_cut_one_one_at_a_time() {
    interleaved_senders_mixed_sizes_and_a_cut_one(1);
}

/// Replies written during batches leave in the order they were written.
#[test]
fn echoes_of_many_batches_come_back_in_order() {
    for batch in [1, 7, 32] {
        let mut r = Reactor::new().unwrap();
        let port = listen_udp_with(&mut r, "127.0.0.1:0", UdpEcho::new(), opts(batch)).unwrap();
        r.run_pending().unwrap();
        let c = peer();
        for i in 0..100 {
            c.send_to(&datagram(i), port.local_addr()).unwrap();
        }
        let got = collect(&mut r, &c, 100);
        let want: Vec<Vec<u8>> = (0..100).map(datagram).collect();
        assert_eq!(got, want, "batch {batch}");
    }
}

/// The fairness budget holds with batches: a batch never reads past it.
#[test]
fn the_budget_bounds_a_batched_read() {
    let mut r = Reactor::new().unwrap();
    let (p, log) = rec(false);
    let o = UdpOptions {
        read_budget: 10,
        ..opts(4)
    };
    let port = listen_udp_with(&mut r, "127.0.0.1:0", p, o).unwrap();
    r.run_pending().unwrap();
    let c = peer();
    for i in 0..100u32 {
        c.send_to(&i.to_be_bytes(), port.local_addr()).unwrap();
    }
    let turns = r.turns();
    assert!(r.run_until(WAIT, |_| log.borrow().len() == 100).unwrap());
    // 100 datagrams at 10 per event take at least 10 turns.
    assert!(r.turns() - turns >= 10, "{} turns", r.turns() - turns);
    let got: Vec<u32> = log
        .borrow()
        .iter()
        .map(|s| match s {
            Seen::Datagram(d, _) => u32::from_be_bytes(d[..4].try_into().unwrap()),
            Seen::Error(e) => panic!("{e:?}"),
        })
        .collect();
    assert_eq!(got, (0..100).collect::<Vec<_>>());
}

/// A send the kernel refuses inside a batch is reported to
/// `error_received` after the batch; the datagrams around it still leave.
#[test]
fn a_refused_send_in_a_batch_is_reported_and_the_rest_leave() {
    for batch in [1, 16] {
        let mut r = Reactor::new().unwrap();
        let (p, log) = rec(true);
        let port = listen_udp_with(&mut r, "127.0.0.1:0", p, opts(batch)).unwrap();
        r.run_pending().unwrap();
        let c = peer();
        let sent: Vec<&[u8]> = vec![b"a", b"b", b"broadcast", b"c", b"d"];
        for d in &sent {
            c.send_to(d, port.local_addr()).unwrap();
        }
        let got = collect(&mut r, &c, 5);
        assert_eq!(got, sent, "batch {batch}");
        r.run_pending().unwrap();
        let errors: Vec<Seen> = log
            .borrow()
            .iter()
            .filter(|s| matches!(s, Seen::Error(_)))
            .cloned()
            .collect();
        if batch == 1 || !cfg!(target_os = "linux") {
            // One at a time, the refusal is send_to's own result (which
            // this protocol ignores).
            assert!(errors.is_empty(), "{errors:?}");
        } else {
            // Queued, it is reported once the batch has been sent (before
            // the last reply arrived).
            assert_eq!(errors, [Seen::Error(io::ErrorKind::PermissionDenied)]);
        }
    }
}

/// `stop_listening` in the middle of a batch: the reply written by that
/// callback (and the ones before it) still leave; no later datagram is
/// delivered.
#[test]
fn stop_listening_in_the_middle_of_a_batch() {
    let mut r = Reactor::new().unwrap();
    let (p, log) = rec(true);
    let port = listen_udp_with(&mut r, "127.0.0.1:0", p, opts(16)).unwrap();
    r.run_pending().unwrap();
    let c = peer();
    for d in [&b"one"[..], b"two", b"stop", b"four", b"five"] {
        c.send_to(d, port.local_addr()).unwrap();
    }
    let got = collect(&mut r, &c, 3);
    assert_eq!(got, [&b"one"[..], b"two", b"stopping"]);
    assert!(r.run_until(WAIT, |_| !port.is_listening()).unwrap());
    assert_eq!(log.borrow().len(), 3, "{:?}", log.borrow());
}

/// A panic in the middle of a batch closes the socket; the replies
/// written before it still leave.
#[test]
fn a_panic_in_the_middle_of_a_batch() {
    let mut r = Reactor::new().unwrap();
    let (p, log) = rec(true);
    let port = listen_udp_with(&mut r, "127.0.0.1:0", p, opts(16)).unwrap();
    r.run_pending().unwrap();
    let c = peer();
    for d in [&b"one"[..], b"two", b"panic", b"four"] {
        c.send_to(d, port.local_addr()).unwrap();
    }
    let got = collect(&mut r, &c, 2);
    assert_eq!(got, [&b"one"[..], b"two"]);
    assert!(r.run_until(WAIT, |_| !port.is_listening()).unwrap());
    assert_eq!(log.borrow().len(), 3);
}

/// A connected socket reads batches too: only its peer's datagrams are
/// delivered, in order, and `write` replies leave in order.
#[test]
fn a_connected_socket_in_batches() {
    let mut r = Reactor::new().unwrap();
    let friend = peer();
    let stranger = peer();
    let (p, log) = rec(true);
    let port = connect_udp_with(&mut r, friend.local_addr().unwrap(), p, opts(8)).unwrap();
    r.run_pending().unwrap();
    for i in 0..40 {
        if i % 4 == 0 {
            stranger.send_to(b"stranger", port.local_addr()).unwrap();
        }
        friend.send_to(&datagram(i), port.local_addr()).unwrap();
    }
    let got = collect(&mut r, &friend, 40);
    assert_eq!(got, (0..40).map(datagram).collect::<Vec<_>>());
    assert!(log
        .borrow()
        .iter()
        .all(|s| matches!(s, Seen::Datagram(_, from) if *from == friend.local_addr().unwrap())));
}
