//! The UDP load generator: one thread, one connected socket, a fixed
//! number of datagrams in flight against a UDP echo server on loopback.
//! Each echo that comes back is answered by a new datagram, so the server
//! always has `inflight` datagrams to work on. The generator reads and
//! sends in batches (`recvmmsg` / `sendmmsg`) so that it, not the server,
//! is the cheaper side.
//!
//! UDP may drop datagrams (a full receive buffer): when nothing has come
//! back for a while, whatever is still in flight is counted lost and sent
//! again. Every run is bounded in time and in count.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::ptr;
use std::time::{Duration, Instant};

/// Datagrams per `recvmmsg` / `sendmmsg` call of the generator.
const BATCH: usize = 256;

/// One UDP load run.
#[derive(Debug, Clone)]
pub struct UdpSpec {
    /// The echo server.
    pub addr: SocketAddr,
    /// Datagrams kept in flight.
    pub inflight: usize,
    /// Datagram size in bytes.
    pub size: usize,
    /// Run before the measured window starts.
    pub warmup: Duration,
    /// The measured window.
    pub window: Duration,
    /// Send no more than this many datagrams in all (warm-up included);
    /// the run ends once each is answered or lost.
    pub max_datagrams: u64,
    /// Nothing back for this long: what is in flight is counted lost.
    pub loss_timeout: Duration,
}

/// What one run measured over its window.
#[derive(Debug, Clone, Default)]
pub struct UdpOutcome {
    /// Echoes received in the window.
    pub datagrams: u64,
    /// Datagrams counted lost in the window.
    pub lost: u64,
    /// Length of the window.
    pub elapsed: Duration,
}

impl UdpOutcome {
    /// Echoes per second.
    pub fn rate(&self) -> f64 {
        self.datagrams as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Set an integer socket option (the bench has no socket2).
pub fn set_buffer(fd: RawFd, opt: libc::c_int, bytes: usize) -> io::Result<()> {
    let v = bytes as libc::c_int;
    // SAFETY: a valid socket and a correctly sized option value.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Fixed arrays for `BATCH` datagrams of `size` bytes: headers and iovecs
/// pointing into one buffer.
struct Batch {
    buf: Vec<u8>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

impl Batch {
    fn new(size: usize) -> Batch {
        let mut b = Batch {
            buf: vec![b'u'; BATCH * size],
            iovs: Vec::with_capacity(BATCH),
            // SAFETY: mmsghdr is plain data; null pointers are valid.
            hdrs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
        };
        let base = b.buf.as_mut_ptr();
        for k in 0..BATCH {
            b.iovs.push(libc::iovec {
                // SAFETY: inside the buffer.
                iov_base: unsafe { base.add(k * size) }.cast(),
                iov_len: size,
            });
        }
        for k in 0..BATCH {
            b.hdrs[k].msg_hdr.msg_iov = &mut b.iovs[k];
            b.hdrs[k].msg_hdr.msg_iovlen = 1;
        }
        b
    }

    /// Send `n` datagrams (at most `BATCH`) on the connected socket;
    /// returns how many the kernel took.
    fn send(&mut self, fd: RawFd, n: usize) -> io::Result<usize> {
        let n = n.min(BATCH);
        // SAFETY: the headers point into this batch's buffer.
        let rc = unsafe { libc::sendmmsg(fd, self.hdrs.as_mut_ptr(), n as _, 0) };
        match rc {
            n if n >= 0 => Ok(n as usize),
            _ => Err(io::Error::last_os_error()),
        }
    }

    /// Receive what is there (at most `BATCH`), without waiting.
    fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for h in &mut self.hdrs {
            h.msg_hdr.msg_flags = 0;
        }
        // SAFETY: the headers point into this batch's buffer.
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                BATCH as _,
                libc::MSG_DONTWAIT as _,
                ptr::null_mut(),
            )
        };
        match rc {
            n if n >= 0 => Ok(n as usize),
            _ => Err(io::Error::last_os_error()),
        }
    }
}

/// Wait until `fd` is readable, at most `timeout`; returns whether it is.
fn wait_readable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd.
    match unsafe { libc::poll(&mut pfd, 1, ms) } {
        n if n > 0 => Ok(true),
        0 => Ok(false),
        _ => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

/// Run `spec`, calling `probe` at the start and the end of the measured
/// window. Returns the outcome and both probe readings.
pub fn run<P>(spec: &UdpSpec, mut probe: impl FnMut() -> P) -> io::Result<(UdpOutcome, P, P)> {
    let local: SocketAddr = if spec.addr.is_ipv6() {
        "[::1]:0".parse().unwrap()
    } else {
        "127.0.0.1:0".parse().unwrap()
    };
    let sock = UdpSocket::bind(local)?;
    sock.connect(spec.addr)?;
    sock.set_nonblocking(true)?;
    let fd = sock.as_raw_fd();
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        set_buffer(fd, opt, 4 << 20)?;
    }
    let mut out = Batch::new(spec.size.max(1));
    let mut inb = Batch::new(spec.size.max(1) + 64);
    let inflight = spec.inflight.clamp(1, 1 << 16);
    let (mut sent, mut answered, mut lost) = (0u64, 0u64, 0u64);
    let mut in_flight = 0usize;
    let start = Instant::now();
    let warm_end = start + spec.warmup;
    let hard_end = warm_end + spec.window;
    let mut first: Option<(P, u64, u64)> = None;
    let mut last_progress = Instant::now();
    let result = loop {
        let now = Instant::now();
        if first.is_none() && now >= warm_end {
            first = Some((probe(), answered, lost));
        }
        let finished = sent >= spec.max_datagrams && in_flight == 0;
        if now >= hard_end || finished {
            break probe();
        }
        // Top the flight up (never past the total).
        while in_flight < inflight && sent < spec.max_datagrams {
            let want = (inflight - in_flight).min((spec.max_datagrams - sent) as usize);
            match out.send(fd, want) {
                Ok(0) => break,
                Ok(n) => {
                    sent += n as u64;
                    in_flight += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if !wait_readable(fd, spec.loss_timeout.min(Duration::from_millis(100)))? {
            if in_flight > 0 && last_progress.elapsed() >= spec.loss_timeout {
                lost += in_flight as u64;
                in_flight = 0;
                last_progress = Instant::now();
            }
            continue;
        }
        loop {
            match inb.recv(fd) {
                Ok(0) => break,
                Ok(n) => {
                    answered += n as u64;
                    in_flight = in_flight.saturating_sub(n);
                    last_progress = Instant::now();
                    if n < BATCH {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // An ICMP error (nobody listening) on the connected socket.
                Err(e) => return Err(e),
            }
        }
    };
    let (p0, a0, l0) = match first {
        Some(f) => f,
        // Ended during the warm-up: an empty window.
        None => (probe(), answered, lost),
    };
    let outcome = UdpOutcome {
        datagrams: answered - a0,
        lost: lost - l0,
        elapsed: Instant::now()
            .saturating_duration_since(warm_end)
            .max(Duration::from_nanos(1)),
    };
    Ok((outcome, p0, result))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plain echo on a thread; the generator keeps 8 in flight and
    /// stops after exactly 100.
    #[test]
    fn keeps_the_flight_and_stops_at_the_count() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let addr = server.local_addr().unwrap();
        let echo = std::thread::spawn(move || {
            let mut buf = [0u8; 128];
            for _ in 0..100 {
                let (k, from) = server.recv_from(&mut buf).unwrap();
                server.send_to(&buf[..k], from).unwrap();
            }
        });
        let spec = UdpSpec {
            addr,
            inflight: 8,
            size: 32,
            warmup: Duration::ZERO,
            window: Duration::from_secs(20),
            max_datagrams: 100,
            loss_timeout: Duration::from_secs(5),
        };
        let (out, (), ()) = run(&spec, || ()).unwrap();
        assert_eq!((out.datagrams, out.lost), (100, 0));
        echo.join().unwrap();
    }
}
