//! The three echo servers under test, each run as its own process by
//! `twistor-bench server KIND` (see `run.rs`), or on a thread for the
//! allocation count; and the extra servers of the idle-memory cases
//! (tokio's line echo, a hand-written mio + rustls echo).

pub mod mio_echo;
pub mod mio_tls_echo;
pub mod mio_udp;
pub mod tokio_echo;
pub mod tokio_tls_echo;
pub mod tokio_udp;
pub mod twistor_echo;
pub mod twistor_udp;

use std::io::{self, Write};
use std::net::SocketAddr;

/// Which echo server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// twistor: `listen_tcp` and a three-line Echo protocol.
    Twistor,
    /// A hand-written edge-triggered mio loop: the limit for this design.
    Mio,
    /// tokio's `current_thread` runtime, one task per connection.
    Tokio,
    /// The mio loop stopping at a short read (optional, see `mio_echo`).
    MioShort,
}

impl Kind {
    /// Every server there is.
    pub const ALL: [Kind; 4] = [Kind::Twistor, Kind::Mio, Kind::Tokio, Kind::MioShort];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Twistor => "twistor",
            Kind::Mio => "mio",
            Kind::Tokio => "tokio",
            Kind::MioShort => "mio-short",
        }
    }

    /// Parse a command-line name.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// Run server `kind` on 127.0.0.1 (port 0 picks a free one), calling
/// `bound` with the address once it listens. Runs until the process exits.
pub fn serve(kind: Kind, port: u16, bound: impl FnOnce(SocketAddr)) -> io::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    match kind {
        Kind::Twistor => twistor_echo::serve(addr, bound),
        Kind::Mio => mio_echo::serve(addr, false, bound),
        Kind::MioShort => mio_echo::serve(addr, true, bound),
        Kind::Tokio => tokio_echo::serve(addr, bound),
    }
}

/// What a server process does with its bound address: print the port on
/// stdout for the parent, and exit when the parent closes our stdin (so a
/// crashed parent never leaves servers behind).
pub fn announce(addr: SocketAddr) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{}", addr.port());
    let _ = out.flush();
    std::thread::spawn(|| {
        let mut sink = [0u8; 64];
        loop {
            match io::Read::read(&mut io::stdin().lock(), &mut sink) {
                Ok(0) | Err(_) => std::process::exit(0),
                Ok(_) => {}
            }
        }
    });
}
