//! A real UDP port (`listen_udp_with`) on loopback, receiving arbitrary
//! datagrams from two client sockets, with a protocol the datagrams steer.
//!
//! The input is: a configuration byte (IPv4 or IPv6 loopback, the read
//! budget), the maximum datagram size, then datagrams, each a header byte
//! (which client sends it; a length multiplier) and a length byte followed
//! by the payload. At most [`MAX_DATAGRAMS`] datagrams and
//! [`MAX_TOTAL_BYTES`] bytes per input, so every socket buffer on the path
//! holds them all. The payload's first byte steers the protocol:
//!
//! | first byte | the protocol |
//! |---|---|
//! | `E` | sends the datagram back to its sender (`send_to`) |
//! | `C` | connects the socket to the sender |
//! | `D` | connects the socket to a closed loopback port and writes to it |
//! | `S` | `stop_listening` |
//! | `W` | `write` (the connected peer; an error if not connected) |
//! | `T` | `send_to` the other client (an error if connected elsewhere) |
//! | `B` | turns broadcast on or off (nothing is sent to a broadcast address) |
//! | `6` | `send_to` an address of the other family |
//!
//! Checked: nothing panics; every datagram is accounted for exactly as a
//! model of the port predicts (delivered once, in order, with its sender;
//! dropped when connected elsewhere or after `stop_listening`; reported to
//! `error_received` as `InvalidData` when larger than the maximum); each
//! send returns what the model predicts; each echo arrives intact and
//! nothing else does; `stop_protocol` runs exactly once after a stop.
//! Every wait is on the event, bounded.
//!
//! Traffic goes to loopback addresses only.

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::rc::Rc;
use std::time::Duration;

use twistor_reactor::{DatagramProtocol, DatagramTransport, Reactor};
use twistor_transports::udp::{listen_udp_with, UdpOptions};

use crate::input::Input;

/// Datagrams per input, at most.
pub const MAX_DATAGRAMS: usize = 32;
/// Payload bytes per input, at most.
pub const MAX_TOTAL_BYTES: usize = 16 * 1024;
/// How long to wait for an event that must happen (generous: a loaded
/// machine).
const WAIT: Duration = Duration::from_secs(20);

/// What the protocol saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `datagram_received`.
    Datagram(SocketAddr, Vec<u8>),
    /// `error_received`, by kind.
    Error(io::ErrorKind),
    /// The result of a send the protocol made: whether it succeeded.
    Sent(bool),
    /// `stop_protocol`.
    Stopped,
}

/// Addresses the protocol sends to.
#[derive(Clone, Copy)]
struct Peers {
    clients: [SocketAddr; 2],
    /// A loopback port nothing listens on.
    closed: SocketAddr,
    /// A loopback address of the other family.
    other_family: SocketAddr,
}

struct Steered {
    log: Rc<RefCell<Vec<Event>>>,
    peers: Peers,
    /// A `6` command sent to the other family: the kernel's refusal of it
    /// may come back as an `error_received` (a send queued for the batch's
    /// `sendmmsg` reports it there, as asyncio does), which the model does
    /// not predict.
    other_family_sent: bool,
}

impl Steered {
    fn note(&self, e: Event) {
        self.log.borrow_mut().push(e);
    }
}

impl DatagramProtocol for Steered {
    fn datagram_received(&mut self, t: &mut dyn DatagramTransport, data: &[u8], from: SocketAddr) {
        self.note(Event::Datagram(from, data.to_vec()));
        let other = if from == self.peers.clients[0] {
            self.peers.clients[1]
        } else {
            self.peers.clients[0]
        };
        match data.first() {
            Some(b'E') => self.note(Event::Sent(t.send_to(data, from).is_ok())),
            Some(b'C') => self.note(Event::Sent(t.connect(from).is_ok())),
            Some(b'D') => {
                let ok = t.connect(self.peers.closed).is_ok() && t.write(data).is_ok();
                self.note(Event::Sent(ok));
            }
            Some(b'S') => t.stop_listening(),
            Some(b'W') => self.note(Event::Sent(t.write(data).is_ok())),
            Some(b'T') => self.note(Event::Sent(t.send_to(data, other).is_ok())),
            Some(b'B') => {
                let on = data.get(1).is_some_and(|b| b & 1 == 1);
                self.note(Event::Sent(t.set_broadcast(on).is_ok()));
            }
            Some(b'6') => {
                // Either answer is fine; it must not panic or be sent elsewhere.
                self.other_family_sent = true;
                let _ = t.send_to(data, self.peers.other_family);
            }
            _ => {}
        }
    }

    fn error_received(&mut self, _: &mut dyn DatagramTransport, err: &io::Error) {
        // The model predicts only these two kinds; any other is the
        // kernel refusing a send to the other family.
        let predicted = matches!(
            err.kind(),
            io::ErrorKind::InvalidData | io::ErrorKind::ConnectionRefused
        );
        if self.other_family_sent && !predicted {
            return;
        }
        self.note(Event::Error(err.kind()));
    }

    fn stop_protocol(&mut self, _: &mut dyn DatagramTransport) {
        self.note(Event::Stopped);
    }
}

/// What the port should do with the datagrams: the model.
struct Model {
    events: Vec<Event>,
    /// Per client, the datagrams it should get back.
    echoes: [Vec<Vec<u8>>; 2],
    stopped: bool,
    /// Connected to the closed port at some point: refusals may follow.
    refusals_possible: bool,
}

fn model(sent: &[(usize, Vec<u8>)], peers: &Peers, max: usize) -> Model {
    let mut m = Model {
        events: Vec::new(),
        echoes: [Vec::new(), Vec::new()],
        stopped: false,
        refusals_possible: false,
    };
    let mut connected: Option<SocketAddr> = None;
    for (who, data) in sent {
        let from = peers.clients[*who];
        if connected.is_some_and(|c| c != from) {
            continue;
        }
        if data.len() > max {
            m.events.push(Event::Error(io::ErrorKind::InvalidData));
            continue;
        }
        m.events.push(Event::Datagram(from, data.clone()));
        let other = 1 - who;
        match data.first() {
            Some(b'E') => {
                m.events.push(Event::Sent(true));
                m.echoes[*who].push(data.clone());
            }
            Some(b'C') => {
                m.events.push(Event::Sent(true));
                connected = Some(from);
            }
            Some(b'D') => {
                m.events.push(Event::Sent(true));
                connected = Some(peers.closed);
                m.refusals_possible = true;
            }
            Some(b'S') => {
                m.stopped = true;
                m.events.push(Event::Stopped);
                break;
            }
            Some(b'W') => {
                // Connected here means connected to this sender.
                let ok = connected.is_some();
                m.events.push(Event::Sent(ok));
                if ok {
                    m.echoes[*who].push(data.clone());
                }
            }
            Some(b'T') => {
                let ok = connected.is_none();
                m.events.push(Event::Sent(ok));
                if ok {
                    m.echoes[other].push(data.clone());
                }
            }
            Some(b'B') => m.events.push(Event::Sent(true)),
            _ => {}
        }
    }
    m
}

/// A loopback port that nothing will listen on: bound here and closed
/// once every socket of the run is bound (closed at once, the kernel could
/// hand the same port to the port under test, which would then talk to
/// itself).
fn closed_port(ip: IpAddr) -> io::Result<(SocketAddr, UdpSocket)> {
    let s = UdpSocket::bind((ip, 0))?;
    Ok((s.local_addr()?, s))
}

/// The fuzz target's body.
pub fn run(data: &[u8]) {
    let mut inp = Input::new(data);
    let config = inp.byte();
    let max = 1 + usize::from(inp.byte()) * 4;
    let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let (ip, other_ip) = if config & 1 == 0 { (v4, v6) } else { (v6, v4) };
    let mut r = Reactor::new().expect("a reactor");
    let log = Rc::new(RefCell::new(Vec::new()));
    let clients = match (UdpSocket::bind((ip, 0)), UdpSocket::bind((ip, 0))) {
        (Ok(a), Ok(b)) => [a, b],
        // No IPv6 loopback on this machine: nothing to test in this run.
        _ if ip == v6 => return,
        (Err(e), _) | (_, Err(e)) => panic!("bind a client on {ip}: {e}"),
    };
    let (closed, closed_holder) = closed_port(ip).expect("a closed port");
    let peers = Peers {
        clients: [
            clients[0].local_addr().expect("addr"),
            clients[1].local_addr().expect("addr"),
        ],
        closed,
        other_family: (other_ip, 9).into(),
    };
    let opts = UdpOptions {
        max_datagram: max,
        read_budget: 1 + usize::from(config >> 1) % 8,
        ..UdpOptions::default()
    };
    let proto = Steered {
        log: log.clone(),
        peers,
        other_family_sent: false,
    };
    let port = listen_udp_with(&mut r, (ip, 0), proto, opts).expect("listen_udp");
    drop(closed_holder);
    let to = port.local_addr();

    // Send everything first: the port then meets queued datagrams, the
    // case where connecting and stopping must drop the right ones.
    let mut sent = Vec::new();
    let mut total = 0;
    while !inp.is_empty() && sent.len() < MAX_DATAGRAMS && total < MAX_TOTAL_BYTES {
        let head = inp.byte();
        let who = usize::from(head & 1);
        let len = usize::from(inp.byte()) * (1 + usize::from(head >> 1) % 8);
        let payload = inp.take(len.min(MAX_TOTAL_BYTES - total)).to_vec();
        total += payload.len();
        let n = clients[who].send_to(&payload, to).expect("send on loopback");
        assert_eq!(n, payload.len());
        sent.push((who, payload));
    }
    let want = model(&sent, &peers, max);

    let is_refusal = |e: &Event| matches!(e, Event::Error(io::ErrorKind::ConnectionRefused));
    let seen = |log: &RefCell<Vec<Event>>| log.borrow().iter().filter(|e| !is_refusal(e)).count();
    let done = r
        .run_until(WAIT, |_| seen(&log) >= want.events.len())
        .expect("run the reactor");
    let got: Vec<Event> = log.borrow().iter().filter(|e| !is_refusal(e)).cloned().collect();
    assert!(done, "timed out: wanted {:?}\ngot {:?}", want.events, got);
    assert_eq!(got, want.events, "what the port delivered");
    if !want.refusals_possible {
        assert!(
            !log.borrow().iter().any(is_refusal),
            "a refusal with no closed peer"
        );
    }
    assert_eq!(port.is_listening(), !want.stopped);

    // Every echo arrives intact, and nothing else.
    let mut buf = vec![0u8; 4096];
    for (c, echoes) in clients.iter().zip(&want.echoes) {
        c.set_read_timeout(Some(WAIT)).expect("timeout");
        for e in echoes {
            let (n, from) = c.recv_from(&mut buf).expect("an echo");
            assert_eq!(from, to);
            assert_eq!(&buf[..n], &e[..]);
        }
        c.set_nonblocking(true).expect("nonblocking");
        // Sends on loopback are queued at once: anything more is here now.
        if let Ok((n, _)) = c.recv_from(&mut buf) {
            panic!("an unexpected datagram of {n} bytes");
        }
    }
    port.stop_listening(&mut r);
    r.run_pending().expect("turn");
    assert!(!port.is_listening());
    let stops = log.borrow().iter().filter(|e| **e == Event::Stopped).count();
    assert_eq!(stops, 1, "stop_protocol runs exactly once");
}
