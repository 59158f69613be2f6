//! Signals a program asks for (`Reactor::add_signal_handler`): SIGHUP runs
//! its handler on the loop and does not end the process, a panicking
//! handler stays in place, and SIGHUP keeps its default action (terminate)
//! when nobody asked for it, once the handler is removed, and once the
//! reactor is dropped.
//!
//! Each case runs in a child process (this test binary re-run with
//! `--ignored --exact NAME` and an environment variable), since the point
//! is what a signal does to a whole process.

mod common;

use std::cell::Cell;
use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::rc::Rc;
use std::sync::mpsc;
use std::thread;

use common::WAIT;
use twistor::reactor::{Reactor, SIGHUP};

const CHILD_ENV: &str = "TWISTOR_TEST_SIGHUP_CHILD";

fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// A child process, killed if the test ends (or fails) before it exits.
struct Kid(Option<Child>);

impl Kid {
    fn id(&self) -> u32 {
        self.0.as_ref().unwrap().id()
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Start this binary's ignored test `name` as a child; returns it and a
/// channel of its `signal:` lines.
fn child(name: &str) -> (Kid, mpsc::Receiver<String>) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    // An ignored signal stays ignored across exec: started under `nohup`,
    // the child would never see SIGHUP's default action. Give it back.
    // SAFETY: signal(2) is async-signal-safe, as pre_exec requires.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(SIGHUP, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut c = cmd
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
    (Kid(Some(c)), rx)
}

fn hup(c: &Kid) {
    // SAFETY: plain kill(2) on a child we started and have not reaped.
    assert_eq!(unsafe { libc::kill(c.id() as libc::pid_t, SIGHUP) }, 0);
}

fn expect_line(lines: &mpsc::Receiver<String>, want: &str) {
    let got = lines
        .recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("the child did not say {want:?} in time"));
    assert_eq!(got, want);
}

/// Wait for the child to exit, at most [`WAIT`]; past that, kill it and
/// fail, naming what it was waiting for.
fn exit_status(mut kid: Kid, what: &str) -> ExitStatus {
    let c = kid.0.take().unwrap();
    let pid = c.id() as libc::pid_t;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut c = c;
        let _ = tx.send(c.wait().unwrap());
    });
    match rx.recv_timeout(WAIT) {
        Ok(s) => s,
        Err(_) => {
            // SAFETY: the child is not reaped yet (its waiter still blocks).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the child did not end in time: {what}");
        }
    }
}

#[test]
#[ignore = "child process of sighup_runs_its_handler_and_the_process_goes_on"]
fn child_reloads_on_sighup() {
    if !is_child() {
        return;
    }
    let mut r = Reactor::new().unwrap();
    let n = Rc::new(Cell::new(0));
    let seen = n.clone();
    r.add_signal_handler(SIGHUP, move |r| {
        seen.set(seen.get() + 1);
        println!("signal: hup {}", seen.get());
        match seen.get() {
            1 => panic!("the first reload fails"),
            _ => r.stop(),
        }
    })
    .unwrap();
    r.call_soon(|_| println!("signal: running"));
    r.run().unwrap();
    println!("signal: returned after {}", n.get());
}

#[test]
fn sighup_runs_its_handler_and_the_process_goes_on() {
    let (c, lines) = child("child_reloads_on_sighup");
    expect_line(&lines, "running");
    hup(&c);
    expect_line(&lines, "hup 1");
    // The handler panicked: caught, the loop goes on, the handler stays.
    hup(&c);
    expect_line(&lines, "hup 2");
    expect_line(&lines, "returned after 2");
    let status = exit_status(c, "stop after the second SIGHUP");
    assert!(status.success(), "{status:?}");
}

#[test]
#[ignore = "child process of without_a_handler_sighup_terminates"]
fn child_runs_without_a_sighup_handler() {
    if !is_child() {
        return;
    }
    let mut r = Reactor::new().unwrap();
    r.call_soon(|_| println!("signal: running"));
    r.run().unwrap();
    println!("signal: returned");
}

#[test]
fn without_a_handler_sighup_terminates() {
    let (c, lines) = child("child_runs_without_a_sighup_handler");
    expect_line(&lines, "running");
    hup(&c);
    let status = exit_status(c, "terminated by SIGHUP");
    assert_eq!(status.signal(), Some(SIGHUP), "{status:?}");
}

#[test]
#[ignore = "child process of a_removed_handler_gives_sighup_back_its_default_action"]
fn child_removes_its_handler() {
    if !is_child() {
        return;
    }
    let mut r = Reactor::new().unwrap();
    r.add_signal_handler(SIGHUP, |r| {
        assert!(r.remove_signal_handler(SIGHUP));
        println!("signal: removed");
    })
    .unwrap();
    r.call_soon(|_| println!("signal: running"));
    r.run().unwrap();
    println!("signal: returned");
}

#[test]
fn a_removed_handler_gives_sighup_back_its_default_action() {
    let (c, lines) = child("child_removes_its_handler");
    expect_line(&lines, "running");
    hup(&c);
    expect_line(&lines, "removed");
    hup(&c);
    let status = exit_status(c, "terminated by the second SIGHUP");
    assert_eq!(status.signal(), Some(SIGHUP), "{status:?}");
}

#[test]
#[ignore = "child process of a_dropped_reactor_gives_sighup_back_its_default_action"]
fn child_drops_its_reactor() {
    if !is_child() {
        return;
    }
    let mut r = Reactor::new().unwrap();
    r.add_signal_handler(SIGHUP, |_| println!("signal: reload"))
        .unwrap();
    drop(r);
    println!("signal: dropped");
    // Block until the parent closes stdin (or a signal ends us).
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    println!("signal: still alive");
}

#[test]
fn a_dropped_reactor_gives_sighup_back_its_default_action() {
    let (c, lines) = child("child_drops_its_reactor");
    expect_line(&lines, "dropped");
    hup(&c);
    let status = exit_status(c, "terminated by SIGHUP");
    assert_eq!(status.signal(), Some(SIGHUP), "{status:?}");
}

#[test]
fn signals_that_cannot_be_handled_are_refused() {
    let mut r = Reactor::new().unwrap();
    assert!(r.add_signal_handler(libc::SIGKILL, |_| {}).is_err());
    assert!(r.add_signal_handler(libc::SIGSEGV, |_| {}).is_err());
    assert!(r.add_signal_handler(0, |_| {}).is_err());
    assert!(r.add_signal_handler(4096, |_| {}).is_err());
    assert!(!r.remove_signal_handler(libc::SIGKILL));
}
