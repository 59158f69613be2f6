//! The tokio echo servers: a `current_thread` runtime, one task per
//! connection. The byte echo gives each task its own 64 KiB buffer (the
//! usual tokio echo); the line echo reads lines with a `BufReader` and
//! `read_until` into one reused `Vec` per connection (the usual tokio line
//! loop; it has no line-length limit).

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Listen on `addr` and serve forever.
pub fn serve(addr: SocketAddr, bound: impl FnOnce(SocketAddr)) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        bound(listener.local_addr()?);
        loop {
            let (mut s, _) = listener.accept().await?;
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    })
}

/// Listen on `addr` and echo `\n`-terminated lines forever.
pub fn serve_lines(addr: SocketAddr, bound: impl FnOnce(SocketAddr)) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        bound(listener.local_addr()?);
        loop {
            let (mut s, _) = listener.accept().await?;
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let (r, mut w) = s.split();
                let mut r = BufReader::new(r);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match r.read_until(b'\n', &mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {
                            if w.write_all(&line).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    })
}
