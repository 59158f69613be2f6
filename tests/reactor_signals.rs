//! Signals: while `run()` runs, SIGTERM stops the reactor gracefully; once
//! `run()` has returned, SIGTERM must terminate the process again as it
//! normally would, not be swallowed by a handler left behind.
//!
//! Each case runs in a child process (this test binary re-run with
//! `--ignored --exact NAME` and an environment variable), since the point
//! is what a signal does to a whole process.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::WAIT;

const CHILD_ENV: &str = "TWISTOR_TEST_SIGNAL_CHILD";

/// Start this binary's ignored test `name` as a child; returns it and a
/// channel of its `signal:` lines.
fn child(name: &str) -> (Child, mpsc::Receiver<String>) {
    let mut c = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the child");
    let out = c.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("signal: ").nth(1) {
                let _ = tx.send(rest.to_string());
            }
        }
    });
    (c, rx)
}

fn term(c: &Child) {
    // SAFETY: plain kill(2) on a child we started.
    assert_eq!(unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) }, 0);
}

/// Wait for the child to exit; if it does not within the bound, close its
/// stdin (which ends it) and report that it ignored the signal.
fn exit_status(mut c: Child) -> Result<std::process::ExitStatus, String> {
    let stdin = c.stdin.take();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(c.wait());
    });
    match rx.recv_timeout(WAIT / 2) {
        Ok(s) => Ok(s.unwrap()),
        Err(_) => {
            drop(stdin);
            let s = rx.recv_timeout(WAIT).map(|s| s.unwrap());
            Err(format!("the child ignored SIGTERM (then exited with {s:?})"))
        }
    }
}

#[test]
#[ignore = "child process of sigterm_after_run_returns_terminates_the_process"]
fn child_runs_then_waits() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    // run() with its signal handlers, stopped from inside.
    let mut r = twistor::Reactor::new().unwrap();
    r.call_later(Duration::from_millis(1), |r| r.stop());
    r.run().unwrap();
    println!("signal: returned");
    // Block until the parent closes stdin (or a signal ends us).
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    println!("signal: still alive");
}

#[test]
fn sigterm_after_run_returns_terminates_the_process() {
    let (c, lines) = child("child_runs_then_waits");
    assert_eq!(lines.recv_timeout(WAIT).expect("the child ran"), "returned");
    term(&c);
    let status = exit_status(c).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status:?}");
}

#[test]
#[ignore = "child process of sigterm_while_running_stops_gracefully"]
fn child_runs_until_signalled() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    let mut r = twistor::Reactor::new().unwrap();
    r.add_shutdown_trigger(|_| println!("signal: stopping"));
    // Tell the parent once the loop (and so its handlers) is running.
    r.call_later(Duration::ZERO, |_| println!("signal: running"));
    r.run().unwrap();
    println!("signal: returned");
}

#[test]
fn sigterm_while_running_stops_gracefully() {
    let (c, lines) = child("child_runs_until_signalled");
    assert_eq!(lines.recv_timeout(WAIT).expect("the child runs"), "running");
    term(&c);
    let status = exit_status(c).unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "{status:?}");
    assert_eq!(lines.recv_timeout(WAIT).unwrap(), "stopping");
    assert_eq!(lines.recv_timeout(WAIT).unwrap(), "returned");
}

#[test]
#[ignore = "child process of a_second_sigterm_while_stopping_aborts_at_once"]
fn child_with_a_stuck_connection() {
    use twistor::prelude::*;
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    /// Buffers far more than the never-reading client can take (and less
    /// than the write buffer's hard cap).
    struct Flood;
    impl Protocol for Flood {
        fn connection_made(&mut self, t: &mut dyn Transport) {
            let chunk = vec![0u8; 1 << 20];
            for _ in 0..12 {
                t.write(&chunk);
            }
            println!("signal: running");
        }
        fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
        fn connection_lost(&mut self, _: &mut dyn Transport, reason: &Reason) {
            println!("signal: lost {reason}");
        }
    }
    let mut r = Reactor::new().unwrap();
    // Long enough that only the second signal can end the stop in time.
    r.set_shutdown_timeout(WAIT * 2);
    r.add_shutdown_trigger(|_| println!("signal: stopping"));
    let addr = listen_tcp(&mut r, "127.0.0.1:0", |_: &Address| Flood)
        .unwrap()
        .local_addr();
    let stuck = std::net::TcpStream::connect(addr).unwrap();
    r.run().unwrap();
    println!("signal: returned");
    drop(stuck);
}

#[test]
fn a_second_sigterm_while_stopping_aborts_at_once() {
    let (c, lines) = child("child_with_a_stuck_connection");
    assert_eq!(lines.recv_timeout(WAIT).expect("the child runs"), "running");
    term(&c);
    assert_eq!(lines.recv_timeout(WAIT).expect("the stop began"), "stopping");
    // The stuck connection holds the stop (its deadline is far away).
    term(&c);
    let status = exit_status(c).unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "{status:?}");
    assert_eq!(lines.recv_timeout(WAIT).unwrap(), "lost connection aborted");
    assert_eq!(lines.recv_timeout(WAIT).unwrap(), "returned");
}
