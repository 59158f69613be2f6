//! The TLS load generator (rustls over one mio loop, one thread), for the
//! TLS echo cases and the Gemini case. Two modes:
//!
//! - **echo**: N connections, each handshakes once, then sends a message
//!   and waits for the whole echo before sending the next (req/s);
//! - **exchange**: N slots, each connects, handshakes (full, or resumed
//!   when the client configuration keeps sessions), sends one request,
//!   reads the whole answer (a given number of bytes, or up to the
//!   server's close: a Gemini response), sends close_notify, closes, and
//!   starts again (exchanges per second, each one a handshake).
//!
//! Every run is bounded in time (warm-up + window) and in count; a failed
//! connection ends the run with an error rather than being retried.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, HandshakeKind};

use crate::cpu::{core_busy, CpuTime};
use crate::proc::Proc;
use crate::table::Sample;

/// When an answer is complete.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Until {
    /// After this many plaintext bytes (an echo).
    Bytes(usize),
    /// At the server's close (close_notify, or EOF).
    Close,
}

/// What kind of load.
#[derive(Debug, Clone, PartialEq)]
pub enum TlsMode {
    /// Persistent connections, request/response of `request`.
    Echo,
    /// A new connection and handshake per request.
    Exchange,
}

/// One run.
#[derive(Clone)]
pub struct TlsSpec {
    /// The server.
    pub addr: SocketAddr,
    /// The name sent as SNI (and verified, as the configuration says).
    pub server_name: &'static str,
    /// The client configuration (its session store decides resumption).
    pub config: Arc<ClientConfig>,
    /// The mode.
    pub mode: TlsMode,
    /// Connections (echo) or slots (exchange).
    pub conns: usize,
    /// What each request sends.
    pub request: Vec<u8>,
    /// When its answer is complete.
    pub until: Until,
    /// An answer must start with this (e.g. `20 `), else the run fails.
    pub expect_prefix: Vec<u8>,
    /// Run before the window.
    pub warmup: Duration,
    /// The measured window.
    pub window: Duration,
}

/// What a run measured over its window.
#[derive(Debug, Clone, Default)]
pub struct TlsOutcome {
    /// Completed requests (echo) or exchanges.
    pub requests: u64,
    /// Answer bytes (plaintext) received.
    pub bytes: u64,
    /// Exchanges whose handshake resumed a session.
    pub resumed: u64,
    /// The window's length.
    pub elapsed: Duration,
    /// Median and 99th percentile: a request's round trip (echo), or
    /// connect to the answer's end (exchange).
    pub latency: Option<(Duration, Duration)>,
    /// The negotiated version, cipher suite and key exchange group.
    pub negotiated: String,
}

impl TlsOutcome {
    /// Requests (or exchanges) per second.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

struct Slot {
    s: TcpStream,
    tls: ClientConnection,
    /// The request has been handed to rustls.
    sent: bool,
    /// Answer bytes so far.
    got: usize,
    /// The answer's first bytes (checked against `expect_prefix`).
    head: Vec<u8>,
    started: Instant,
}

const MAX_LATENCIES: usize = 2_000_000;

fn open(spec: &TlsSpec, poll: &Poll, i: usize) -> io::Result<Slot> {
    let mut s = TcpStream::connect(spec.addr)?;
    // As every server in the bench: no Nagle delay on a short write.
    s.set_nodelay(true)?;
    poll.registry()
        .register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE)?;
    let name = ServerName::try_from(spec.server_name).map_err(io::Error::other)?;
    let tls = ClientConnection::new(spec.config.clone(), name).map_err(io::Error::other)?;
    Ok(Slot {
        s,
        tls,
        sent: false,
        got: 0,
        head: Vec::with_capacity(16),
        started: Instant::now(),
    })
}

/// What one turn on a slot found.
enum Step {
    /// Nothing finished.
    Busy,
    /// The answer is complete.
    Answered,
}

/// Drive one slot as far as its socket allows: read TLS records, and
/// after each read take the plaintext out (rustls bounds what it holds).
fn drive(slot: &mut Slot, spec: &TlsSpec, buf: &mut [u8], bytes: &mut u64) -> io::Result<Step> {
    let mut done = false;
    let mut closed = false;
    while !done && !closed {
        let eof = match slot.tls.read_tls(&mut slot.s) {
            Ok(0) => true,
            Ok(_) => {
                slot.tls
                    .process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                false
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if !slot.tls.is_handshaking() && !slot.sent {
            slot.tls.writer().write_all(&spec.request)?;
            slot.sent = true;
        }
        (done, closed) = take_plaintext(slot, spec, buf, bytes)?;
        closed |= eof;
    }
    if !slot.tls.is_handshaking() && !slot.sent {
        slot.tls.writer().write_all(&spec.request)?;
        slot.sent = true;
    }
    if closed && spec.until == Until::Close && slot.sent {
        done = true;
    } else if closed && !done {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the server closed after {} answer bytes", slot.got),
        ));
    }
    if done && !slot.head.starts_with(&spec.expect_prefix) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected answer: {:?}", String::from_utf8_lossy(&slot.head)),
        ));
    }
    flush(slot)?;
    Ok(if done { Step::Answered } else { Step::Busy })
}

/// Read what plaintext rustls has: (the answer is complete, the peer
/// closed).
fn take_plaintext(
    slot: &mut Slot,
    spec: &TlsSpec,
    buf: &mut [u8],
    bytes: &mut u64,
) -> io::Result<(bool, bool)> {
    loop {
        match slot.tls.reader().read(buf) {
            Ok(0) => return Ok((false, true)),
            Ok(n) => {
                if slot.head.len() < spec.expect_prefix.len() {
                    let take = (spec.expect_prefix.len() - slot.head.len()).min(n);
                    slot.head.extend_from_slice(&buf[..take]);
                }
                slot.got += n;
                *bytes += n as u64;
                if spec.until == Until::Bytes(slot.got) {
                    return Ok((true, false));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((false, false)),
            // The peer closed without close_notify: an end all the same.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok((false, true)),
            Err(e) => return Err(e),
        }
    }
}

fn flush(slot: &mut Slot) -> io::Result<()> {
    while slot.tls.wants_write() {
        match slot.tls.write_tls(&mut slot.s) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn negotiated(tls: &ClientConnection) -> String {
    format!(
        "{:?}, {:?}, {:?}",
        tls.protocol_version().map_or("?".into(), |v| format!("{v:?}")),
        tls.negotiated_cipher_suite()
            .map_or("?".into(), |s| format!("{:?}", s.suite())),
        tls.negotiated_key_exchange_group()
            .map_or("?".into(), |g| format!("{:?}", g.name())),
    )
    .replace('"', "")
}

/// Run `spec` against the server process `p` (its core: `server_core`)
/// and reduce the window to one [`Sample`]: rate, latency, the server's
/// CPU per operation and share, other processes' share of its core, the
/// load generator's own CPU, and in `extra` the share of resumed
/// handshakes.
pub fn sample(spec: &TlsSpec, p: &Proc, server_core: usize) -> io::Result<(Sample, TlsOutcome)> {
    let me = std::process::id();
    let probe = || {
        (
            p.cpu(),
            core_busy(server_core).unwrap_or_default(),
            CpuTime::of(me).unwrap_or_default(),
        )
    };
    let (out, a, b) = run(spec, probe)?;
    let cpu = b.0.since(&a.0);
    let client = b.2.since(&a.2);
    let t = cpu.clock.unwrap_or(cpu.stat).as_secs_f64();
    let secs = out.elapsed.as_secs_f64().max(1e-9);
    let (p50, p99) = out.latency.map_or((f64::NAN, f64::NAN), |(a, b)| {
        (a.as_secs_f64() * 1e6, b.as_secs_f64() * 1e6)
    });
    let s = Sample {
        rate: out.rate(),
        cpu_us: t * 1e6 / out.requests.max(1) as f64,
        share: t / secs * 100.0,
        p50,
        p99,
        foreign: b.1.saturating_sub(a.1).saturating_sub(cpu.stat).as_secs_f64() / secs * 100.0,
        extra: out.resumed as f64 / out.requests.max(1) as f64,
        client: client.clock.unwrap_or(client.stat).as_secs_f64() / secs * 100.0,
    };
    Ok((s, out))
}

/// Run `spec`, calling `probe` at the start and the end of the window.
pub fn run<P>(spec: &TlsSpec, mut probe: impl FnMut() -> P) -> io::Result<(TlsOutcome, P, P)> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut slots: Vec<Slot> = (0..spec.conns.max(1))
        .map(|i| open(spec, &poll, i))
        .collect::<io::Result<_>>()?;
    let start = Instant::now();
    let warm_end = start + spec.warmup;
    let mut end = warm_end + spec.window;
    let mut first = None;
    let mut window_start = warm_end;
    let mut out = TlsOutcome::default();
    let mut latencies: Vec<u32> = Vec::with_capacity(MAX_LATENCIES / 4);
    // Nothing at all for this long: the server is stuck.
    let stall = Duration::from_secs(10);
    let mut last_event = Instant::now();
    loop {
        let now = Instant::now();
        if first.is_none() && now >= warm_end {
            first = Some(probe());
            window_start = Instant::now();
            end = window_start + spec.window;
            let negotiated = std::mem::take(&mut out.negotiated);
            out = TlsOutcome {
                negotiated,
                ..TlsOutcome::default()
            };
            latencies.clear();
        }
        if first.is_some() && now >= end {
            break;
        }
        if now.duration_since(last_event) > stall {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer for 10 s"));
        }
        let timeout = end.saturating_duration_since(now).min(Duration::from_millis(50));
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            last_event = Instant::now();
            let i = ev.token().0;
            let slot = &mut slots[i];
            if ev.is_error() {
                if let Some(e) = slot.s.take_error()? {
                    return Err(e);
                }
            }
            let Step::Answered = drive(slot, spec, &mut buf, &mut out.bytes)? else {
                continue;
            };
            out.requests += 1;
            if first.is_some() && latencies.len() < MAX_LATENCIES {
                let us = slot.started.elapsed().as_micros().min(u32::MAX as u128);
                latencies.push(us as u32);
            }
            if out.negotiated.is_empty() {
                out.negotiated = negotiated(&slot.tls);
            }
            match spec.mode {
                TlsMode::Echo => {
                    slot.got = 0;
                    slot.head.clear();
                    slot.started = Instant::now();
                    slot.tls.writer().write_all(&spec.request)?;
                    flush(slot)?;
                }
                TlsMode::Exchange => {
                    if slot.tls.handshake_kind() == Some(HandshakeKind::Resumed) {
                        out.resumed += 1;
                    }
                    slot.tls.send_close_notify();
                    let _ = flush(slot);
                    *slot = open(spec, &poll, i)?;
                }
            }
        }
    }
    let last = probe();
    out.elapsed = window_start.elapsed();
    if !latencies.is_empty() {
        latencies.sort_unstable();
        let at = |q: f64| {
            Duration::from_micros(latencies[((latencies.len() - 1) as f64 * q).round() as usize] as u64)
        };
        out.latency = Some((at(0.5), at(0.99)));
    }
    Ok((out, first.expect("the window started"), last))
}
