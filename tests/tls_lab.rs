//! The lab's SSL section, line for line, with the real example binary: a
//! key encrypted by `openssl req`, `echo_tls` asking for the pass phrase on
//! its terminal (a pseudo-terminal here), `openssl s_client` echoing a
//! line, and `echo_tls_client` talking to it.
//!
//! Skipped, with a message, only when openssl is absent.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn have_openssl() -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: openssl is not installed (install it to run this test)");
    }
    ok
}

/// The example binaries sit next to the test's own directory in target/.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let path = dir.join(name);
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--example", name, "--manifest-path"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .status()
            .unwrap();
        assert!(status.success(), "cannot build the {name} example");
    }
    path
}

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("twistor-tls-lab-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A pseudo-terminal: (master, slave).
fn pty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills two descriptors we then own.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty failed");
    // SAFETY: both descriptors are fresh and ours.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// Start echo_tls on a terminal in `dir`, type `pass`, and return the child
/// with a channel of its output lines.
fn start_server(dir: &Path, pass: &str) -> (Child, mpsc::Receiver<String>, OwnedFd) {
    let (master, slave) = pty();
    let mut child = Command::new(example("echo_tls"))
        .arg("0")
        .current_dir(dir)
        .stdin(Stdio::from(slave))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut typing = std::fs::File::from(master.try_clone().unwrap());
    typing.write_all(format!("{pass}\n").as_bytes()).unwrap();
    let (tx, rx) = mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    (child, rx, master)
}

fn wait_line(rx: &mpsc::Receiver<String>, pred: impl Fn(&str) -> bool) -> String {
    loop {
        let line = rx.recv_timeout(WAIT).expect("the server said nothing in time");
        if pred(&line) {
            return line;
        }
    }
}

fn stop(mut child: Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}

#[test]
fn the_lab_ssl_section_line_for_line() {
    if !have_openssl() {
        return;
    }
    let dir = temp_dir();
    let out = Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "rsa:2048",
            "-keyout",
            "domain.key",
            "-x509",
            "-days",
            "365",
        ])
        .args([
            "-out",
            "domain.crt",
            "-subj",
            "/CN=localhost",
            "-passout",
            "pass:lab pass phrase",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A wrong pass phrase: a clear error, and the server does not start.
    let (child, rx, _master) = start_server(&dir, "not it");
    wait_line(&rx, |l| l == "Enter PEM pass phrase:");
    let line = wait_line(&rx, |l| l.contains("cannot load"));
    assert!(line.contains("wrong passphrase"), "{line}");
    let mut child = child;
    assert!(!child.wait().unwrap().success());

    // The right one: the server starts and echoes over TLS.
    let (child, rx, _master) = start_server(&dir, "lab pass phrase");
    let line = wait_line(&rx, |l| l.starts_with("TLS echo on port"));
    let port: u16 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let s_client = Command::new("openssl")
        .args(["s_client", "-connect", &format!("localhost:{port}"), "-ign_eof"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut s_client = s_client;
    s_client
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"hello lab\n")
        .unwrap();
    let (tx, echoed) = mpsc::channel();
    let stdout = s_client.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    wait_line(&rx, |l| l.contains("received \"hello lab\\n\""));
    wait_line(&echoed, |l| l == "hello lab");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(s_client.id() as i32, libc::SIGTERM) };
    let _ = s_client.wait();

    // The lab's client, trusting the lab's certificate.
    let client = Command::new(example("echo_tls_client"))
        .arg(port.to_string())
        .current_dir(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&client.stdout);
    assert!(text.contains("Server said: Hello, world!"), "{text}");
    assert!(
        text.contains("Connection lost: connection closed cleanly"),
        "{text}"
    );
    stop(child);
    std::fs::remove_dir_all(dir).unwrap();
}
