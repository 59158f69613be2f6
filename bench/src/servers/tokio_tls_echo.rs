//! The tokio-rustls echo server: tokio's `current_thread` runtime, one task
//! per connection, `TlsAcceptor` over the same rustls configuration the
//! other Rust servers get (twistor's builder: same certificate, versions,
//! cipher suites, tickets and session cache), a 64 KiB buffer per task.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Listen on `addr` and serve forever.
pub fn serve(addr: SocketAddr, config: Arc<ServerConfig>, bound: impl FnOnce(SocketAddr)) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let acceptor = TlsAcceptor::from(config);
    rt.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        bound(listener.local_addr()?);
        loop {
            let (s, _) = listener.accept().await?;
            let _ = s.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() || s.flush().await.is_err() {
                                return;
                            }
                        }
                    }
                }
                // The peer's close_notify: answer with ours.
                let _ = s.shutdown().await;
            });
        }
    })
}
