//! The tokio UDP echo server: a `current_thread` runtime and the usual
//! `recv_from` / `send_to` loop over one 64 KiB buffer.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use crate::udp_load::set_buffer;

/// Listen on `addr` with a `rcvbuf`-byte receive buffer and serve forever.
pub fn serve(addr: SocketAddr, rcvbuf: usize, bound: impl FnOnce(SocketAddr)) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let std_sock = std::net::UdpSocket::bind(addr)?;
    set_buffer(std_sock.as_raw_fd(), libc::SO_RCVBUF, rcvbuf)?;
    std_sock.set_nonblocking(true)?;
    rt.block_on(async move {
        let sock = tokio::net::UdpSocket::from_std(std_sock)?;
        bound(sock.local_addr()?);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let (n, from) = sock.recv_from(&mut buf).await?;
            let _ = sock.send_to(&buf[..n], from).await;
        }
    })
}
