//! Batched datagram I/O (Linux): `recvmmsg(2)` reads many datagrams per
//! syscall into one reused receive area, `sendmmsg(2)` sends the datagrams
//! a protocol wrote during one read batch.
//!
//! Both batches are fixed arrays of `mmsghdr` / `iovec` / address slots
//! made once per socket, pointing into one storage area each; nothing is
//! allocated per datagram. The pointers are set when a batch is made and
//! stay valid because the arrays and the area are never resized.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::ptr;

/// Bytes of the area the datagrams of one send batch are copied into: room
/// for the largest UDP datagram, so any datagram fits once the area is
/// flushed.
pub(super) const SEND_AREA: usize = 64 * 1024;

/// A `sockaddr_storage` of zeroes (plain data: all-zero is valid).
fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data.
    unsafe { zeroed() }
}

/// An `mmsghdr` of zeroes: null pointers, zero lengths.
fn zeroed_hdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is plain old data; null pointers are valid values.
    unsafe { zeroed() }
}

/// The receive side: `cap` slots of `slot` bytes each.
pub(super) struct RecvBatch {
    slot: usize,
    area: Vec<u8>,
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
}

/// One datagram of a receive batch.
pub(super) struct Received<'a> {
    /// The bytes (at most the slot; all of them unless `truncated`).
    pub data: &'a [u8],
    /// The datagram's real length (with `MSG_TRUNC`, even when cut).
    pub len: usize,
    /// Larger than the slot: its tail was dropped by the kernel.
    pub truncated: bool,
    /// The sender (unspecified if the kernel gave no address), an
    /// IPv4-mapped address as plain IPv4.
    pub from: SocketAddr,
}

impl RecvBatch {
    /// `cap` datagrams of up to `slot` bytes. The area is zeroed memory
    /// that is only made resident where datagrams are written.
    pub(super) fn new(cap: usize, slot: usize) -> RecvBatch {
        let cap = cap.max(1);
        let mut b = RecvBatch {
            slot,
            area: vec![0u8; cap * slot],
            hdrs: (0..cap).map(|_| zeroed_hdr()).collect(),
            iovs: Vec::with_capacity(cap),
            addrs: (0..cap).map(|_| zeroed_storage()).collect(),
        };
        let base = b.area.as_mut_ptr();
        for k in 0..cap {
            b.iovs.push(libc::iovec {
                // SAFETY: k * slot < cap * slot, inside the area.
                iov_base: unsafe { base.add(k * slot) }.cast(),
                iov_len: slot,
            });
        }
        for k in 0..cap {
            let h = &mut b.hdrs[k].msg_hdr;
            h.msg_name = (&mut b.addrs[k] as *mut libc::sockaddr_storage).cast();
            h.msg_iov = &mut b.iovs[k];
            h.msg_iovlen = 1;
        }
        b
    }

    /// How many datagrams one call can read.
    pub(super) fn cap(&self) -> usize {
        self.hdrs.len()
    }

    /// Read up to `want` datagrams (at most `cap`) with one `recvmmsg`;
    /// returns how many arrived. Fewer than asked means the socket had no
    /// more (or an error is pending, returned by the next call).
    pub(super) fn recv(&mut self, fd: RawFd, want: usize) -> io::Result<usize> {
        let want = want.clamp(1, self.cap());
        for h in &mut self.hdrs[..want] {
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // MSG_TRUNC: each msg_len is the datagram's real length, so a cut
        // one is told from one that fit exactly.
        // SAFETY: `hdrs[..want]` point at this batch's own iovecs, area
        // slots and address slots, all alive and sized as declared.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                want as _,
                libc::MSG_TRUNC as _,
                ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Datagram `k` of the last `recv` (`k` below what it returned).
    #[inline(always)]
    pub(super) fn get(&self, k: usize) -> Received<'_> {
        let h = &self.hdrs[k];
        let len = h.msg_len as usize;
        let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len > self.slot;
        let start = k * self.slot;
        let from = to_std(&self.addrs[k], h.msg_hdr.msg_namelen, true)
            .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
        Received {
            data: &self.area[start..start + len.min(self.slot)],
            len,
            truncated,
            from,
        }
    }
}

/// The socket address the kernel wrote, if it is IPv4 or IPv6; with
/// `unmap`, an IPv4-mapped IPv6 address as the plain IPv4 one.
#[inline]
fn to_std(ss: &libc::sockaddr_storage, len: libc::socklen_t, unmap: bool) -> Option<SocketAddr> {
    let len = len as usize;
    match ss.ss_family as libc::c_int {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            if let Some(v4) = ip.to_ipv4_mapped().filter(|_| unmap) {
                return Some(SocketAddr::V4(SocketAddrV4::new(v4, u16::from_be(a.sin6_port))));
            }
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Write `addr` into `ss` for a socket of the given family (`v6`): plain
/// IPv4 becomes IPv4-mapped on an IPv6 socket, an IPv4-mapped address
/// plain IPv4 on an IPv4 socket. Returns the address's length.
#[inline]
fn from_std(addr: &SocketAddr, v6: bool, ss: &mut libc::sockaddr_storage) -> libc::socklen_t {
    let v4 = |ip: Ipv4Addr, port: u16, ss: &mut libc::sockaddr_storage| {
        // SAFETY: sockaddr_storage is large and aligned enough for any
        // sockaddr; every field of the sockaddr_in is written.
        let s = unsafe { &mut *(ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
        s.sin_family = libc::AF_INET as libc::sa_family_t;
        s.sin_port = port.to_be();
        s.sin_addr.s_addr = u32::from(ip).to_be();
        s.sin_zero = [0; 8];
        size_of::<libc::sockaddr_in>() as libc::socklen_t
    };
    let v6addr = |ip: Ipv6Addr, port: u16, flow: u32, scope: u32, ss: &mut libc::sockaddr_storage| {
        // SAFETY: as above, for sockaddr_in6.
        let s = unsafe { &mut *(ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
        s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        s.sin6_port = port.to_be();
        s.sin6_addr.s6_addr = ip.octets();
        s.sin6_flowinfo = flow;
        s.sin6_scope_id = scope;
        size_of::<libc::sockaddr_in6>() as libc::socklen_t
    };
    match addr {
        SocketAddr::V4(a) if !v6 => v4(*a.ip(), a.port(), ss),
        SocketAddr::V4(a) => v6addr(a.ip().to_ipv6_mapped(), a.port(), 0, 0, ss),
        SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(ip) if !v6 => v4(ip, a.port(), ss),
            _ => v6addr(*a.ip(), a.port(), a.flowinfo(), a.scope_id(), ss),
        },
    }
}

/// What became of one queued datagram that the kernel did not take.
pub(super) enum SendFailure {
    /// The send buffer was full: this datagram and the rest of the batch
    /// were dropped (`count` of them).
    Full {
        /// Datagrams dropped.
        count: usize,
        /// Where the first of them was going.
        to: Option<SocketAddr>,
        /// Its size.
        len: usize,
    },
    /// Any other error, for this one datagram.
    Error(io::Error),
}

/// The send side: up to `cap` datagrams, copied into one area of
/// [`SEND_AREA`] bytes.
pub(super) struct SendBatch {
    len: usize,
    used: usize,
    /// The socket is IPv6 (destinations are written in its family).
    v6: bool,
    area: Vec<u8>,
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
}

impl SendBatch {
    /// A batch of up to `cap` datagrams for a socket of family `v6`.
    pub(super) fn new(cap: usize, v6: bool) -> SendBatch {
        let cap = cap.max(1);
        let mut b = SendBatch {
            len: 0,
            used: 0,
            v6,
            area: vec![0u8; SEND_AREA],
            hdrs: (0..cap).map(|_| zeroed_hdr()).collect(),
            iovs: (0..cap)
                .map(|_| libc::iovec {
                    iov_base: ptr::null_mut(),
                    iov_len: 0,
                })
                .collect(),
            addrs: (0..cap).map(|_| zeroed_storage()).collect(),
        };
        for k in 0..cap {
            let h = &mut b.hdrs[k].msg_hdr;
            h.msg_iov = &mut b.iovs[k];
            h.msg_iovlen = 1;
        }
        b
    }

    /// Datagrams queued.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Whether `data` can be queued without a flush first.
    #[inline]
    pub(super) fn has_room(&self, data: &[u8]) -> bool {
        self.len < self.hdrs.len() && self.used + data.len() <= self.area.len()
    }

    /// Queue a copy of `data` for `dest` (`None`: the connected peer), or
    /// return false if the batch has no room for it (flush, then push).
    #[inline]
    pub(super) fn push(&mut self, data: &[u8], dest: Option<&SocketAddr>) -> bool {
        if !self.has_room(data) {
            return false;
        }
        let k = self.len;
        // SAFETY: `used + data.len()` is inside the area (checked above),
        // and the caller's slice cannot overlap this batch's own area.
        let at = unsafe {
            let at = self.area.as_mut_ptr().add(self.used);
            ptr::copy_nonoverlapping(data.as_ptr(), at, data.len());
            at
        };
        self.used += data.len();
        self.len += 1;
        // SAFETY: k < hdrs.len() (has_room), and iovs and addrs are as
        // long as hdrs (made so in `new`, never resized).
        let (iov, h, ss) = unsafe {
            (
                self.iovs.get_unchecked_mut(k),
                &mut self.hdrs.get_unchecked_mut(k).msg_hdr,
                self.addrs.get_unchecked_mut(k),
            )
        };
        *iov = libc::iovec {
            iov_base: at.cast(),
            iov_len: data.len(),
        };
        match dest {
            Some(a) => {
                h.msg_namelen = from_std(a, self.v6, ss);
                h.msg_name = (ss as *mut libc::sockaddr_storage).cast();
            }
            None => {
                h.msg_name = ptr::null_mut();
                h.msg_namelen = 0;
            }
        }
        true
    }

    /// Where queued datagram `k` was going (`None`: the connected peer).
    fn dest(&self, k: usize) -> Option<SocketAddr> {
        let h = &self.hdrs[k].msg_hdr;
        if h.msg_name.is_null() {
            return None;
        }
        to_std(&self.addrs[k], h.msg_namelen, true)
    }

    /// Send everything queued with as few `sendmmsg` calls as the kernel
    /// allows, calling `failed` for what it refused, and empty the batch.
    /// Returns how many datagrams the kernel took.
    pub(super) fn flush(&mut self, fd: RawFd, mut failed: impl FnMut(SendFailure)) -> usize {
        let mut i = 0;
        let mut sent = 0;
        while i < self.len {
            // SAFETY: hdrs[i..len] point at this batch's iovecs (into the
            // area) and address slots, all alive and sized as declared.
            let n = unsafe { libc::sendmmsg(fd, self.hdrs[i..].as_mut_ptr(), (self.len - i) as _, 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if super::port::is_full(&e) {
                    // The rest would find the buffer just as full.
                    failed(SendFailure::Full {
                        count: self.len - i,
                        to: self.dest(i),
                        len: self.iovs[i].iov_len,
                    });
                    break;
                }
                // Only the first datagram is known to have failed; the
                // next call tries the ones after it.
                failed(SendFailure::Error(e));
                i += 1;
                continue;
            }
            for k in i..i + n as usize {
                let (want, got) = (self.iovs[k].iov_len, self.hdrs[k].msg_len as usize);
                if got == want {
                    sent += 1;
                } else {
                    failed(SendFailure::Error(io::Error::other(format!(
                        "datagram of {want} bytes sent as {got} bytes"
                    ))));
                }
            }
            i += n as usize;
        }
        self.len = 0;
        self.used = 0;
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn addresses_survive_the_round_trip_through_sockaddr() {
        for a in [
            "127.0.0.1:5353",
            "[::1]:443",
            "[fe80::1%2]:9",
            "[::ffff:10.0.0.1]:80",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            let mut ss = zeroed_storage();
            let len = from_std(&a, a.is_ipv6(), &mut ss);
            assert_eq!(to_std(&ss, len, false), Some(a));
        }
        assert_eq!(to_std(&zeroed_storage(), 0, false), None);
        // Written in the socket's family.
        let four: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:80".parse().unwrap();
        let mut ss = zeroed_storage();
        let len = from_std(&four, true, &mut ss);
        assert_eq!(to_std(&ss, len, false), Some(mapped));
        assert_eq!(to_std(&ss, len, true), Some(four), "unmapped");
        let len = from_std(&mapped, false, &mut ss);
        assert_eq!(to_std(&ss, len, false), Some(four));
    }

    #[test]
    fn one_send_batch_and_one_receive_batch_carry_many_datagrams() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let mut s = SendBatch::new(8, false);
        for i in 0..8u8 {
            let d = vec![i; 1 + i as usize * 100];
            assert!(s.push(&d, Some(&to)));
        }
        assert!(!s.push(b"x", Some(&to)), "eight is the batch");
        let mut errors = 0;
        assert_eq!(s.flush(tx.as_raw_fd(), |_| errors += 1), 8);
        assert_eq!((errors, s.len()), (0, 0));
        // Slots of 300 bytes: datagrams 3..7 (301+ bytes) are cut.
        let mut r = RecvBatch::new(16, 300);
        let mut got = Vec::new();
        while got.len() < 8 {
            // Wait (bounded) until something is there.
            let mut pfd = libc::pollfd {
                fd: rx.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            assert_eq!(unsafe { libc::poll(&mut pfd, 1, 20_000) }, 1, "datagrams arrive");
            let n = r.recv(rx.as_raw_fd(), 16).unwrap();
            for k in 0..n {
                let d = r.get(k);
                assert_eq!(d.from, tx.local_addr().unwrap());
                got.push((d.data[0], d.len, d.truncated, d.data.len()));
            }
        }
        let want: Vec<_> = (0..8u8)
            .map(|i| {
                let len = 1 + i as usize * 100;
                (i, len, len > 300, len.min(300))
            })
            .collect();
        assert_eq!(got, want);
    }
}
