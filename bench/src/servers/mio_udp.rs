//! The hand-written mio UDP echo loop, the naive way: edge-triggered,
//! `recv_from` until `WouldBlock` into one 64 KiB buffer, each datagram
//! sent straight back with `send_to` (dropped if the send buffer is full).
//! One datagram per syscall each way, no batching, no callbacks.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use crate::udp_load::set_buffer;

/// Listen on `addr` with a `rcvbuf`-byte receive buffer and serve forever.
pub fn serve(addr: SocketAddr, rcvbuf: usize, bound: impl FnOnce(SocketAddr)) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut sock = UdpSocket::bind(addr)?;
    set_buffer(sock.as_raw_fd(), libc::SO_RCVBUF, rcvbuf)?;
    poll.registry()
        .register(&mut sock, Token(0), Interest::READABLE)?;
    bound(sock.local_addr()?);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for _ in events.iter() {
            loop {
                match sock.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        let _ = sock.send_to(&buf[..n], from);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {}
                }
            }
        }
    }
}
