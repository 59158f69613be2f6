//! Server processes: start `twistor-bench server KIND` pinned to a core,
//! learn its port, read its CPU time, and stop it.

use std::io::{self, BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use crate::cpu::CpuTime;
use crate::servers::Kind;

/// A running server process.
pub struct ServerProcess {
    /// Which server.
    pub kind: Kind,
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
}

impl ServerProcess {
    /// Start server `kind` as a child process pinned to `core`.
    pub fn start(kind: Kind, core: usize) -> io::Result<ServerProcess> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(["server", kind.name(), "--cpu", &core.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout).read_line(&mut line)?;
        let port: u16 = match line.trim().parse() {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::other(format!("{} server did not start", kind.name())));
            }
        };
        Ok(ServerProcess {
            kind,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
        })
    }

    /// The server's CPU time so far.
    pub fn cpu(&self) -> CpuTime {
        CpuTime::of(self.child.id()).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Closing stdin makes the server exit; kill in case it is stuck.
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
