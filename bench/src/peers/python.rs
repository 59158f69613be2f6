//! The Python peers: a virtual environment under `<target>/bench-peers/venv`
//! with Twisted, uvloop and jetforce (pip, from PyPI), and the echo
//! scripts the bench writes next to it. Made once; a later run finds it.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::proc::{Launch, PortFrom, Proc};

/// What pip installs into the environment.
const PACKAGES: &[&str] = &["twisted", "pyopenssl", "service_identity", "uvloop", "jetforce"];

/// The two echo scripts (written into the peers directory at each run).
const TWISTED: &str = include_str!("echo_twisted.py");
const ASYNCIO: &str = include_str!("echo_asyncio.py");

/// Which Python echo server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// Twisted's reactor (epoll), `Protocol.dataReceived`.
    Twisted,
    /// asyncio with uvloop, `asyncio.Protocol.data_received`.
    Asyncio,
}

impl Script {
    fn file(self) -> (&'static str, &'static str) {
        match self {
            Script::Twisted => ("echo_twisted.py", TWISTED),
            Script::Asyncio => ("echo_asyncio.py", ASYNCIO),
        }
    }
}

/// A ready virtual environment.
#[derive(Debug, Clone)]
pub struct Python {
    /// Its interpreter.
    pub python: PathBuf,
    /// Where its scripts are (jetforce's among them).
    pub bin: PathBuf,
    dir: PathBuf,
}

impl Python {
    /// The environment, made (and its packages installed) if missing.
    pub fn ensure() -> Result<Python, String> {
        let dir = super::dir();
        let venv = dir.join("venv");
        let bin = venv.join("bin");
        let python = bin.join("python");
        let ready = venv.join(".twistor-bench-ready");
        if !ready.exists() {
            let system = which("python3").ok_or("no python3 on this machine")?;
            eprintln!("peers: making a Python virtual environment in {}", venv.display());
            run(Command::new(&system).args(["-m", "venv"]).arg(&venv))?;
            eprintln!("peers: pip install {}", PACKAGES.join(" "));
            run(Command::new(&python)
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
                .args(PACKAGES))?;
            std::fs::write(&ready, PACKAGES.join("\n")).map_err(|e| e.to_string())?;
        }
        for s in [Script::Twisted, Script::Asyncio] {
            let (name, text) = s.file();
            std::fs::write(dir.join(name), text).map_err(|e| e.to_string())?;
        }
        Ok(Python { python, bin, dir })
    }

    /// Start echo script `s` in `mode` (`tcp`, `udp`, or `tls` with the
    /// run's certificate), pinned to `core`.
    pub fn echo(&self, s: Script, name: &str, mode: &[String], core: usize) -> io::Result<Proc> {
        let mut args = vec![self.dir.join(s.file().0).display().to_string()];
        args.extend(mode.iter().cloned());
        Proc::spawn(Launch {
            name,
            program: &self.python,
            args,
            env: Vec::new(),
            core: Some(core),
            port: PortFrom::Stdout,
            stderr: true,
        })
    }

    /// A package's version in the environment (for the report).
    pub fn version(&self, package: &str) -> String {
        let out = Command::new(&self.python)
            .args(["-m", "pip", "show", package])
            .stderr(Stdio::null())
            .output();
        out.ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .find_map(|l| l.strip_prefix("Version: ").map(str::to_string))
            })
            .unwrap_or_else(|| "?".into())
    }
}

/// Run a command to completion; its output goes to our stderr.
fn run(cmd: &mut Command) -> Result<(), String> {
    let status = cmd
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if !status.success() {
        return Err(format!("{cmd:?} failed ({status})"));
    }
    Ok(())
}

/// A program on the PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
