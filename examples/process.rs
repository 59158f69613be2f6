//! Run a command under a `ProcessProtocol`: stream its output, print its
//! exit status.
//!
//! ```text
//! cargo run --example process                      # runs: ls -l /
//! cargo run --example process -- sh -c 'echo out; echo err >&2; exit 3'
//! ```
//!
//! Standard output is copied through as it arrives, standard error is
//! copied with an `[stderr]` prefix, and the exit status (a code, or the
//! signal that killed it) is printed at the end. The program's own exit
//! code follows the child's.

use std::io::Write;
use std::process::ExitStatus;

use twistor::prelude::*;

/// Twisted: `class Show(ProcessProtocol)` with `outReceived`, `errReceived`
/// and `processEnded`.
struct Show;

impl ProcessProtocol for Show {
    fn connection_made(&mut self, t: &mut dyn ProcessTransport) {
        eprintln!("started pid {}", t.pid());
        // Nothing to say to the child: give it EOF on stdin.
        t.close_stdin();
    }

    fn out_received(&mut self, _: &mut dyn ProcessTransport, data: &[u8]) {
        let _ = std::io::stdout().write_all(data);
    }

    fn err_received(&mut self, _: &mut dyn ProcessTransport, data: &[u8]) {
        for line in String::from_utf8_lossy(data).lines() {
            eprintln!("[stderr] {line}");
        }
    }

    fn process_ended(&mut self, t: &mut dyn ProcessTransport, status: ExitStatus) {
        println!("process ended: {status}");
        t.reactor().stop();
    }
}

fn main() -> lab::Result {
    lab::init_logging();
    let mut args = lab::Args::new("[COMMAND [ARG...]]").rest();
    if args.is_empty() {
        args = vec!["ls".into(), "-l".into(), "/".into()];
    }
    let mut reactor = Reactor::new()?;
    let child = match spawn_process(&mut reactor, Show, &args[0], &args[1..], None, None) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot run {:?}: {e}", args[0]);
            std::process::exit(127);
        }
    };
    reactor.run()?;
    let code = match child.status() {
        Some(s) => s.code().unwrap_or(1),
        None => 1,
    };
    std::process::exit(code)
}
