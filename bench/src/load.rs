//! The load generator: one thread, one mio loop, N connections to an echo
//! server on loopback. Four modes:
//!
//! - request/response: each connection sends a message and waits for the
//!   whole echo before sending the next (closed loop: measures req/s and
//!   each request's latency);
//! - bulk: each connection keeps a bounded window of bytes in flight
//!   (measures MB/s echoed);
//! - paced: requests are issued at a fixed total rate, at most one in flight
//!   per connection (so the server's CPU time per request can be compared at
//!   the same load, and latency measured);
//! - churn: each of N slots connects, sends one message, waits for its
//!   echo, closes, and connects again (connections per second; latency is
//!   from the connect to the whole echo).
//!
//! Every run is bounded in time (warm-up + window) and in count.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// What kind of load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Closed-loop request/response of `size`-byte messages.
    RequestResponse,
    /// Continuous `size`-byte chunks, at most `window` bytes unechoed per connection.
    Bulk {
        /// Bytes in flight per connection.
        window: usize,
    },
    /// `rate` requests per second in total, one in flight per connection.
    Paced {
        /// Requests per second.
        rate: u64,
    },
    /// Connect, one `size`-byte echo, close; again. A request is a connection.
    Churn,
}

/// One load run.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The echo server.
    pub addr: SocketAddr,
    /// The kind of load.
    pub mode: Mode,
    /// Connections.
    pub conns: usize,
    /// Message size (request/response, paced) or chunk size (bulk).
    pub size: usize,
    /// Run before the measured window starts.
    pub warmup: Duration,
    /// The measured window.
    pub window: Duration,
    /// The window also ends after this many completed requests.
    pub max_requests: u64,
}

/// What one run measured (over the window only).
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Completed requests (bulk: chunk-sized units of echoed bytes).
    pub requests: u64,
    /// Echoed bytes received.
    pub bytes: u64,
    /// Length of the window.
    pub elapsed: Duration,
    /// Paced mode: requests that could not be issued on time because every
    /// connection was still waiting for an echo.
    pub missed: u64,
    /// Median and 99th-percentile request latency (not in bulk mode).
    pub latency: Option<(Duration, Duration)>,
}

impl Outcome {
    /// Requests per second.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Echoed megabytes (10^6 bytes) per second.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

struct Conn {
    s: TcpStream,
    /// Bytes of the current request (or bulk chunk) not yet written.
    to_send: usize,
    /// Bytes written whose echo has not come back yet.
    owed: usize,
    /// When the current request was issued.
    sent_at: Instant,
    /// WRITABLE interest is registered (only while a write is short).
    want_write: bool,
    /// Churn: the connect has not completed yet.
    connecting: bool,
}

/// Latencies kept per window at most (request/response at full speed
/// makes a few hundred thousand a second).
const MAX_LATENCIES: usize = 4_000_000;

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = std::net::TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    Ok(TcpStream::from_std(s))
}

/// Churn: a new non-blocking connection for slot `i`, registered for the
/// end of its connect.
fn reconnect(c: &mut Conn, i: usize, poll: &Poll, addr: SocketAddr, size: usize) -> io::Result<()> {
    let mut s = TcpStream::connect(addr)?;
    poll.registry()
        .register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE)?;
    c.s = s;
    c.to_send = size;
    c.owed = 0;
    c.sent_at = Instant::now();
    c.want_write = true;
    c.connecting = true;
    Ok(())
}

/// Run `spec`, calling `probe` at the start and at the end of the measured
/// window (to read the server's CPU time or allocation count exactly over
/// it). Returns the outcome and both probe readings.
pub fn run<P>(spec: &Spec, mut probe: impl FnMut() -> P) -> io::Result<(Outcome, P, P)> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let msg = vec![b'x'; spec.size.max(1)];
    let mut buf = vec![0u8; 64 * 1024];
    let mut conns = Vec::with_capacity(spec.conns);
    let churn = spec.mode == Mode::Churn;
    for i in 0..spec.conns.max(1) {
        let mut s = connect(spec.addr)?;
        poll.registry().register(&mut s, Token(i), Interest::READABLE)?;
        conns.push(Conn {
            s,
            to_send: 0,
            owed: 0,
            sent_at: Instant::now(),
            want_write: false,
            connecting: false,
        });
    }

    let paced_rate = match spec.mode {
        Mode::Paced { rate } => Some(rate.max(1)),
        _ => None,
    };
    let mut latencies: Vec<u32> = Vec::new();
    if !matches!(spec.mode, Mode::Bulk { .. }) {
        let expected = match paced_rate {
            Some(rate) => rate as f64 * spec.window.as_secs_f64() * 1.1,
            None => MAX_LATENCIES as f64,
        };
        latencies.reserve((expected as usize).min(MAX_LATENCIES));
    }
    let mut idle: VecDeque<usize> = VecDeque::with_capacity(conns.len());

    let start = Instant::now();
    for (i, c) in conns.iter_mut().enumerate() {
        match spec.mode {
            Mode::Paced { .. } => idle.push_back(i),
            _ => {
                c.to_send = spec.size;
                c.sent_at = start;
            }
        }
    }
    for (i, c) in conns.iter_mut().enumerate() {
        if churn {
            reconnect(c, i, &poll, spec.addr, spec.size)?;
        } else {
            pump(c, Token(i), &poll, &msg, spec.mode, spec.size)?;
        }
    }

    let warm_end = start + spec.warmup;
    let mut end = warm_end + spec.window;
    let mut first = None;
    let mut window_start = warm_end;
    let mut out = Outcome::default();
    let mut issued: u64 = 0;
    loop {
        let now = Instant::now();
        if first.is_none() && now >= warm_end {
            first = Some(probe());
            window_start = Instant::now();
            end = window_start + spec.window;
            out = Outcome::default();
            latencies.clear();
        }
        let done = match spec.mode {
            Mode::Bulk { .. } => out.bytes / spec.size.max(1) as u64,
            _ => out.requests,
        };
        if first.is_some() && (now >= end || done >= spec.max_requests) {
            break;
        }
        let mut timeout = end.saturating_duration_since(now).min(Duration::from_millis(50));
        if let Some(rate) = paced_rate {
            let due = (now.duration_since(start).as_secs_f64() * rate as f64) as u64;
            while issued < due {
                let Some(i) = idle.pop_front() else {
                    // Every connection is busy: give up the slots we are behind.
                    if first.is_some() {
                        out.missed += due - issued;
                    }
                    issued = due;
                    break;
                };
                let c = &mut conns[i];
                c.to_send = spec.size;
                c.sent_at = now;
                issued += 1;
                pump(c, Token(i), &poll, &msg, spec.mode, spec.size)?;
            }
            if !idle.is_empty() {
                let next = start + Duration::from_secs_f64((issued + 1) as f64 / rate as f64);
                timeout = timeout.min(next.saturating_duration_since(now));
            }
        }
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut conns[i];
            if c.connecting {
                if !ev.is_writable() && !ev.is_error() {
                    continue;
                }
                if let Some(e) = c.s.take_error()? {
                    return Err(e);
                }
                c.connecting = false;
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                loop {
                    match c.s.read(&mut buf) {
                        Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed")),
                        Ok(n) => {
                            c.owed = c.owed.checked_sub(n).ok_or_else(|| {
                                io::Error::new(io::ErrorKind::InvalidData, "more bytes echoed than sent")
                            })?;
                            out.bytes += n as u64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                match spec.mode {
                    Mode::Bulk { .. } => {}
                    _ if c.owed == 0 && c.to_send == 0 => {
                        out.requests += 1;
                        if first.is_some() && latencies.len() < latencies.capacity() {
                            let us = c.sent_at.elapsed().as_micros().min(u32::MAX as u128);
                            latencies.push(us as u32);
                        }
                        match spec.mode {
                            Mode::RequestResponse => {
                                c.to_send = spec.size;
                                c.sent_at = Instant::now();
                            }
                            Mode::Churn => {
                                // Closing first leaves the TIME_WAIT here, on
                                // loopback reusable (tcp_tw_reuse).
                                reconnect(c, i, &poll, spec.addr, spec.size)?;
                                continue;
                            }
                            _ => idle.push_back(i),
                        }
                    }
                    _ => {}
                }
            }
            pump(c, ev.token(), &poll, &msg, spec.mode, spec.size)?;
        }
    }
    let last = probe();
    out.elapsed = window_start.elapsed();
    if let Mode::Bulk { .. } = spec.mode {
        out.requests = out.bytes / spec.size.max(1) as u64;
    }
    if !latencies.is_empty() {
        latencies.sort_unstable();
        let at = |q: f64| {
            let k = ((latencies.len() - 1) as f64 * q).round() as usize;
            Duration::from_micros(latencies[k] as u64)
        };
        out.latency = Some((at(0.5), at(0.99)));
    }
    Ok((out, first.expect("the window started"), last))
}

/// Write what the connection has to send (bulk: top the window up), and
/// keep WRITABLE interest registered only while a write is short.
fn pump(c: &mut Conn, token: Token, poll: &Poll, msg: &[u8], mode: Mode, size: usize) -> io::Result<()> {
    loop {
        if c.to_send == 0 {
            match mode {
                Mode::Bulk { window } if c.owed + size <= window.max(size) => c.to_send = size,
                _ => break,
            }
        }
        let n = c.to_send.min(msg.len());
        match c.s.write(&msg[..n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(w) => {
                c.to_send -= w;
                c.owed += w;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let want = c.to_send > 0;
    if want != c.want_write {
        c.want_write = want;
        let interest = if want {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        poll.registry().reregister(&mut c.s, token, interest)?;
    }
    Ok(())
}
