//! SIGTERM to a running `twistor echo` process: it stops gracefully, its
//! clients see a clean close (EOF, not a reset), and it exits 0.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;

use common::{client, round_trip, WAIT};

/// Start `twistor echo` on a free loopback port; returns the child, the
/// bound address it logged, and the lines of its log as they come.
fn start_echo() -> (Child, SocketAddr, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_twistor"))
        .args(["echo", "--host", "127.0.0.1", "--port", "0"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start twistor echo");
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    while let Ok(line) = lines.recv_timeout(WAIT) {
        if let Some(rest) = line.split("TCP echo on ").nth(1) {
            if let Ok(addr) = rest.trim().parse::<SocketAddr>() {
                return (child, addr, lines);
            }
        }
        seen.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("twistor echo did not log its address; log: {seen:?}");
}

/// Wait for a log line containing `what`.
fn wait_log(lines: &mpsc::Receiver<String>, what: &str) {
    let mut seen = Vec::new();
    while let Ok(line) = lines.recv_timeout(WAIT) {
        if line.contains(what) {
            return;
        }
        seen.push(line);
    }
    panic!("no log line with {what:?}; log: {seen:?}");
}

/// Wait for the child to exit, with a bound.
fn wait_exit(mut child: Child) -> std::process::ExitStatus {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(WAIT) {
        Ok(status) => status.expect("wait for twistor echo"),
        Err(_) => {
            // SAFETY: plain kill(2) on the child we started.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("twistor echo did not exit after SIGTERM");
        }
    }
}

#[test]
fn sigterm_stops_twistor_echo_with_a_clean_close_and_exit_status_0() {
    let (child, addr, logs) = start_echo();
    // Two clients, each proven served before the signal.
    let mut a = client(addr);
    let mut b = client(addr);
    assert_eq!(round_trip(&mut a, b"hello\n"), b"hello\n");
    assert_eq!(round_trip(&mut b, b"world\n"), b"world\n");

    // SAFETY: plain kill(2) on the child we started.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(rc, 0);

    // Each client reads a clean EOF: read returns 0, not an error.
    for c in [&mut a, &mut b] {
        let mut buf = [0u8; 16];
        let n = c.read(&mut buf).expect("a clean close, not a reset");
        assert_eq!(n, 0, "unexpected data: {:?}", &buf[..n]);
    }
    let status = wait_exit(child);
    assert!(status.success(), "exit status: {status:?}");
    wait_log(&logs, "SIGTERM");
    // The port is released.
    let e = std::net::TcpStream::connect(addr).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
}
