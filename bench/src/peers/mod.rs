//! The peers the bench installs for itself, under the target directory
//! (`<target>/bench-peers/`), and the files they share:
//!
//! - a Python virtual environment (`venv/`) with Twisted, uvloop and
//!   jetforce from PyPI, made with the machine's `python3` when there is
//!   one (`python.rs`), and the echo scripts it runs (`echo_twisted.py`,
//!   `echo_asyncio.py`, written next to it);
//! - agate, the Rust Gemini server, built with `cargo install` into
//!   `peers/` (a few minutes, once: the binary is kept) (`agate.rs`);
//! - one certificate and key every TLS server of a run uses (`certs.rs`).
//!
//! A peer that cannot be had (no `python3`, no network) is left out of
//! the tables, and the report says why.

pub mod agate;
pub mod certs;
pub mod python;

use std::path::PathBuf;

/// `<target>/bench-peers`: the target directory is the one this binary
/// was built into (`<target>/release/twistor-bench`).
pub fn dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let target = exe
        .parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let d = target.join("bench-peers");
    let _ = std::fs::create_dir_all(&d);
    d
}

/// Which peers this run has, and why the missing ones are missing.
#[derive(Debug, Default)]
pub struct Available {
    /// The virtual environment's `python`, with Twisted, uvloop, jetforce.
    pub python: Option<python::Python>,
    /// The agate binary.
    pub agate: Option<PathBuf>,
    /// One line per peer left out.
    pub notes: Vec<String>,
}

impl Available {
    /// Find (and unless `quick`, install) the peers.
    pub fn find(quick: bool) -> Available {
        let mut a = Available::default();
        match python::Python::ensure() {
            Ok(p) => a.python = Some(p),
            Err(e) => a
                .notes
                .push(format!("Twisted, asyncio+uvloop and jetforce left out: {e}")),
        }
        match agate::ensure(!quick) {
            Ok(p) => a.agate = Some(p),
            Err(e) => a.notes.push(format!("agate left out: {e}")),
        }
        a
    }

    /// The notes as a markdown paragraph (empty when every peer is here).
    pub fn report(&self) -> String {
        if self.notes.is_empty() {
            return String::new();
        }
        format!("{}\n\n", self.notes.join("\n\n"))
    }
}
