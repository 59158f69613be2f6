//! Descriptor exhaustion: a server in a child process with a low
//! RLIMIT_NOFILE is flooded with connections. accept() fails with EMFILE;
//! the listener must log it once, back off instead of spinning (counted in
//! loop turns, not time), and serve new connections once descriptors are
//! free again.
//!
//! The child is this test binary re-run with `--ignored --exact
//! emfile_child` and an environment variable; it talks to the parent over
//! its stdin (commands) and stdout (lines starting with `emfile:`).

mod common;

use std::cell::Cell;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{client, round_trip, WAIT};
use twistor::prelude::*;

const CHILD_ENV: &str = "TWISTOR_TEST_EMFILE_CHILD";
/// The child's descriptor limit, and how many connections flood it.
const FD_LIMIT: u64 = 64;
const FLOOD: usize = 200;
/// How long the child watches its loop while exhausted.
const WINDOW: Duration = Duration::from_millis(500);
/// Loop turns allowed in that window. Backing off costs a few turns per
/// 100 ms retry; a loop spinning on EMFILE makes hundreds of thousands.
const MAX_TURNS: u64 = 300;

// ----- the child -------------------------------------------------------------------

static WARNINGS: AtomicUsize = AtomicUsize::new(0);
static RETRIES: AtomicUsize = AtomicUsize::new(0);

/// Counts the listener's exhaustion log lines (warnings and retries).
struct Counter;

impl log::Log for Counter {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, rec: &log::Record) {
        let msg = rec.args().to_string();
        if msg.contains("accept failed again") {
            RETRIES.fetch_add(1, Ordering::Relaxed);
        } else if msg.contains("accept failed") {
            WARNINGS.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn flush(&self) {}
}

struct Echo;

impl Protocol for Echo {
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        t.write(data);
    }
}

thread_local! {
    static ACCEPTED: Cell<usize> = const { Cell::new(0) };
}

fn command(r: &mut Reactor, line: &str) {
    match line {
        "flooded" => {
            let (turns, warnings, retries) = (
                r.turns(),
                WARNINGS.load(Ordering::Relaxed),
                RETRIES.load(Ordering::Relaxed),
            );
            r.call_later(WINDOW, move |r| {
                println!(
                    "emfile: turns={} accepted={} warnings={} retries={}",
                    r.turns() - turns,
                    ACCEPTED.with(Cell::get),
                    WARNINGS.load(Ordering::Relaxed) - warnings,
                    RETRIES.load(Ordering::Relaxed) - retries,
                );
            });
        }
        _ => r.stop(),
    }
}

#[test]
#[ignore = "the child process of listener_survives_emfile_without_spinning"]
fn emfile_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    log::set_logger(&Counter).unwrap();
    log::set_max_level(log::LevelFilter::Debug);
    let lim = libc::rlimit {
        rlim_cur: FD_LIMIT,
        rlim_max: FD_LIMIT,
    };
    // SAFETY: setrlimit with a valid, initialised struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);

    let mut r = common::reactor();
    let port = listen_tcp(&mut r, "127.0.0.1:0", |_: &Address| {
        ACCEPTED.with(|a| a.set(a.get() + 1));
        Echo
    })
    .unwrap();
    let remote = r.remote();
    thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let line = line.unwrap_or_default();
            if remote.call(move |r| command(r, line.trim())).is_err() {
                return;
            }
        }
        let _ = remote.stop();
    });
    println!("emfile: port={}", port.port());
    r.run().unwrap();
    println!("emfile: stopped");
}

// ----- the parent ------------------------------------------------------------------

/// The value of `key=` in a child's report line.
fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

#[test]
fn listener_survives_emfile_without_spinning() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "emfile_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the child");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest may print its "test ... " prefix on the same line.
            if let Some(rest) = line.split("emfile: ").nth(1) {
                let _ = tx.send(rest.to_string());
            }
        }
    });
    let next = |what: &str| -> String {
        lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("the child did not report {what}"))
    };

    let port = field(&next("its port"), "port") as u16;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    // Far more connections than the child has descriptors.
    let flood: Vec<_> = (0..FLOOD)
        .map(|_| {
            let mut c = client(addr);
            c.write_all(b"x").unwrap();
            c
        })
        .collect();
    writeln!(stdin, "flooded").unwrap();
    let report = next("the exhausted window");
    let (turns, accepted) = (field(&report, "turns"), field(&report, "accepted"));
    let (warnings, retries) = (field(&report, "warnings"), field(&report, "retries"));
    assert!(
        (accepted as usize) < FLOOD,
        "the child accepted every connection: not exhausted ({report})"
    );
    assert!(
        warnings + retries >= 2,
        "accept kept failing and was retried: {report}"
    );
    assert!(warnings <= 1, "EMFILE is logged once per episode: {report}");
    assert!(
        turns <= MAX_TURNS,
        "the loop spun while out of descriptors: {report}"
    );

    // Descriptors come back: the listener serves a new connection.
    drop(flood);
    let mut fresh = client(addr);
    assert_eq!(round_trip(&mut fresh, b"ping"), b"ping");
    drop(fresh);

    writeln!(stdin, "quit").unwrap();
    assert_eq!(next("its end"), "stopped");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = rx.recv_timeout(WAIT).expect("the child exits").unwrap();
    assert!(status.success(), "child: {status:?}");
}
