//! Server processes under test: start one (this binary with a
//! subcommand, a Python script in the bench's virtual environment, or an
//! installed peer such as agate), pinned to a core if asked, learn the
//! port it listens on, read its CPU time, and stop it.
//!
//! A server either prints its port on the first line of its stdout (the
//! bench's own servers and scripts; they exit when their stdin closes), or
//! is told a port and is waited for until it accepts connections there
//! (agate, jetforce). Whatever happens, dropping a [`Proc`] ends it.

use std::io::{self, BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cpu::CpuTime;

/// How a started server makes its port known.
#[derive(Debug, Clone, Copy)]
pub enum PortFrom {
    /// The first line of its stdout.
    Stdout,
    /// It was told this port: wait until it accepts TCP connections there.
    Told(u16),
}

/// What to start.
pub struct Launch<'a> {
    /// Name in reports.
    pub name: &'a str,
    /// The program.
    pub program: &'a Path,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(&'a str, String)>,
    /// Pin it (and its threads) to this core.
    pub core: Option<usize>,
    /// How its port is learnt.
    pub port: PortFrom,
    /// Let its stderr through (our own servers' errors); else discarded
    /// (a peer's access log).
    pub stderr: bool,
}

/// A running server process.
pub struct Proc {
    /// What it is, for reports.
    pub name: String,
    /// Where it listens (127.0.0.1).
    pub addr: SocketAddr,
    child: Child,
    out: Option<BufReader<ChildStdout>>,
}

/// The bound on a server's start (an agate or jetforce start included).
const START_TIMEOUT: Duration = Duration::from_secs(30);

impl Proc {
    /// Start a server and learn its port.
    pub fn spawn(l: Launch<'_>) -> io::Result<Proc> {
        let mut cmd = Command::new(l.program);
        cmd.args(&l.args)
            .stdin(Stdio::piped())
            .stdout(match l.port {
                PortFrom::Stdout => Stdio::piped(),
                PortFrom::Told(_) => Stdio::null(),
            })
            .stderr(if l.stderr { Stdio::inherit() } else { Stdio::null() });
        for (k, v) in &l.env {
            cmd.env(k, v);
        }
        if let Some(core) = l.core {
            // SAFETY: only sched_setaffinity between fork and exec, which is
            // async-signal-safe; the set is built before the fork.
            let set = crate::cpu::one_core(core);
            unsafe {
                cmd.pre_exec(move || {
                    if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", l.program.display())))?;
        let started = match l.port {
            PortFrom::Stdout => {
                let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
                let mut line = String::new();
                out.read_line(&mut line)?;
                line.trim().parse::<u16>().ok().map(|p| (p, Some(out)))
            }
            PortFrom::Told(port) => wait_listening(&mut child, port).then_some((port, None)),
        };
        let Some((port, out)) = started else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!("the {} server did not start", l.name)));
        };
        Ok(Proc {
            name: l.name.to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
            out,
        })
    }

    /// Start this binary with `args` (a subcommand that announces its port).
    pub fn start_self(name: &str, args: &[String]) -> io::Result<Proc> {
        let exe = std::env::current_exe()?;
        Proc::spawn(Launch {
            name,
            program: &exe,
            args: args.to_vec(),
            env: Vec::new(),
            core: None,
            port: PortFrom::Stdout,
            stderr: true,
        })
    }

    /// Start `program args...` (which announces its port).
    pub fn start(name: &str, program: &str, args: &[String]) -> io::Result<Proc> {
        Proc::spawn(Launch {
            name,
            program: Path::new(program),
            args: args.to_vec(),
            env: Vec::new(),
            core: None,
            port: PortFrom::Stdout,
            stderr: true,
        })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's CPU time so far (all its threads).
    pub fn cpu(&self) -> CpuTime {
        CpuTime::of(self.child.id()).unwrap_or_default()
    }

    /// Close its stdin, wait for it to exit, and return what else it printed.
    pub fn finish(mut self) -> io::Result<String> {
        drop(self.child.stdin.take());
        let mut rest = String::new();
        if let Some(out) = self.out.as_mut() {
            out.read_to_string(&mut rest)?;
        }
        self.child.wait()?;
        Ok(rest)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        // Ended already after `finish`; otherwise make sure it ends.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Wait until something accepts on 127.0.0.1:`port`, or the child exits,
/// or the start bound passes.
fn wait_listening(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + START_TIMEOUT;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A TCP port free on 127.0.0.1 right now (for a server that must be told
/// one).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
