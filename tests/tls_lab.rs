//! The lab's SSL section, line for line, with the real example binaries: a
//! key encrypted by `openssl req`, `echo_tls` asking for the pass phrase on
//! its terminal (a pseudo-terminal here) or reading it from the file named
//! by `TWISTOR_PASSPHRASE_FILE`, `openssl s_client` echoing a line, and
//! `echo_tls_client` talking to it. Then the client's failures, as a
//! student meets them: the lab's CA:TRUE certificate and the one
//! `twistor echo --tls` generates, each explained, with a non-zero exit,
//! and accepted once trusted by file or by fingerprint.
//!
//! Skipped, with a message, only when openssl is absent.

mod programs;

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use programs::{example_command, have, run, twistor, Finished, Running};
use twistor::transports::tls::generate_self_signed_pem;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("twistor-tls-lab-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The lab's command: a 2048-bit RSA key encrypted with `pass`, and a
/// self-signed certificate (CA:TRUE, as `openssl req -x509` makes it).
fn lab_certificate(dir: &Path, pass: &str) {
    let out = run({
        let mut c = Command::new("openssl");
        c.args([
            "req",
            "-newkey",
            "rsa:2048",
            "-keyout",
            "domain.key",
            "-x509",
            "-days",
            "365",
        ]);
        c.args(["-out", "domain.crt", "-subj", "/CN=localhost", "-passout"]);
        c.arg(format!("pass:{pass}")).current_dir(dir);
        c
    });
    assert!(out.status.success(), "{out:?}");
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

/// Start echo_tls on a terminal in `dir` and type `pass` at its prompt;
/// the master end is returned to keep the terminal open.
fn start_on_terminal(dir: &Path, pass: &str) -> (Running, OwnedFd) {
    let (master, slave) = pty();
    let server = Running::start_with_stdin(
        example_command("echo_tls")
            .arg("0")
            .current_dir(dir)
            .stdin(Stdio::from(slave)),
    );
    let mut typing = std::fs::File::from(master.try_clone().unwrap());
    typing.write_all(format!("{pass}\n").as_bytes()).unwrap();
    (server, master)
}

/// The lab's client, run in `dir` with `args`.
fn client(dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> Finished {
    let mut c = example_command("echo_tls_client");
    c.args(args).current_dir(dir);
    for (k, v) in env {
        c.env(k, v);
    }
    run(c)
}

fn assert_echoed(out: &Finished) {
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(
        out.stdout.contains("Server said: Hello, world!"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("Connection lost: connection closed cleanly"),
        "{}",
        out.stdout
    );
}

#[test]
fn the_lab_ssl_section_line_for_line() {
    if !have("openssl", "version") {
        return;
    }
    let dir = temp_dir("lab");
    lab_certificate(&dir, "lab pass phrase");

    // A wrong pass phrase: a clear error, and the server does not start.
    let (server, _master) = start_on_terminal(&dir, "not it");
    server.wait_line("the prompt", |l| l == "Enter PEM pass phrase:");
    let line = server.wait_line("the error", |l| l.starts_with("Error: "));
    assert!(
        line.contains("domain.key") && line.contains("wrong passphrase"),
        "{line}"
    );
    let (status, _) = server.wait();
    assert_eq!(status.code(), Some(1));

    // The right one: the server starts and echoes over TLS.
    let (server, _master) = start_on_terminal(&dir, "lab pass phrase");
    let port = server.wait_port("listening on TLS");
    let s_client = Running::start_with_stdin(
        Command::new("openssl")
            .args(["s_client", "-connect", &format!("localhost:{port}"), "-ign_eof"])
            .stdin(Stdio::piped()),
    );
    let mut s_client = s_client;
    s_client.write_stdin(b"hello lab\n");
    s_client.wait_line("the echo", |l| l == "hello lab");
    drop(s_client);

    // The lab's client, trusting the lab's certificate in its directory.
    assert_echoed(&client(&dir, &[&port.to_string()], &[]));
    server.stop();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_passphrase_file_variable_replaces_the_terminal() {
    if !have("openssl", "version") {
        return;
    }
    let dir = temp_dir("variable");
    lab_certificate(&dir, "from a file");
    std::fs::write(dir.join("pass.txt"), "from a file\n").unwrap();

    // No terminal and no variable: one line that says what to do.
    let mut c = example_command("echo_tls");
    c.arg("0").current_dir(&dir);
    let out = run(c);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stderr.starts_with("Error: domain.key: "), "{}", out.stderr);
    assert!(
        out.stderr.contains("set TWISTOR_PASSPHRASE_FILE"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);

    let mut c = example_command("echo_tls");
    c.arg("0")
        .current_dir(&dir)
        .env("TWISTOR_PASSPHRASE_FILE", "pass.txt");
    let server = Running::start(c);
    let port = server.wait_port("listening on TLS");
    assert_echoed(&client(&dir, &[&port.to_string()], &[]));
    server.stop();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_lab_certificate_elsewhere_is_explained_and_exits_1() {
    if !have("openssl", "version") {
        return;
    }
    let dir = temp_dir("elsewhere");
    lab_certificate(&dir, "pw");
    std::fs::write(dir.join("pass.txt"), "pw\n").unwrap();
    let mut c = example_command("echo_tls");
    c.arg("0")
        .current_dir(&dir)
        .env("TWISTOR_PASSPHRASE_FILE", "pass.txt");
    let server = Running::start(c);
    let port = server.wait_port("listening on TLS").to_string();

    // A client elsewhere, trusting the usual authorities (here: one that
    // has nothing to do with the lab).
    let elsewhere = temp_dir("elsewhere-client");
    let (ca, _) = generate_self_signed_pem(&["an authority"]).unwrap();
    let bundle = elsewhere.join("authorities.pem");
    std::fs::write(&bundle, ca).unwrap();
    let out = client(&elsewhere, &[&port], &[("SSL_CERT_FILE", &bundle)]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(
        out.stdout
            .contains("is a CA certificate (basicConstraints CA:TRUE"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("(CaUsedAsEndEntity)"), "{}", out.stdout);
    assert!(out.stdout.contains("--trust domain.crt"), "{}", out.stdout);
    assert!(out.stdout.contains("--pin"), "{}", out.stdout);

    // Trusting the file, from anywhere, works.
    let crt = dir.join("domain.crt");
    let out = client(
        &elsewhere,
        &["--trust", crt.to_str().unwrap(), &port],
        &[("SSL_CERT_FILE", &bundle)],
    );
    assert_echoed(&out);
    server.stop();
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::remove_dir_all(elsewhere).unwrap();
}

#[test]
fn twistor_echo_tls_is_refused_explained_then_trusted_by_file_or_fingerprint() {
    let dir = temp_dir("twistor");
    let crt = dir.join("echo.crt");
    let mut c = twistor();
    c.args([
        "echo",
        "--tls",
        "--port",
        "0",
        "--cert-out",
        crt.to_str().unwrap(),
    ]);
    let server = Running::start(c);
    let port = server.wait_port("TLS echo on").to_string();
    let line = server.wait_line("the fingerprint", |l| l.contains("SHA-256 fingerprint: "));
    let fingerprint = line
        .split("SHA-256 fingerprint: ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    server.wait_line("the certificate's file", |l| l.contains("certificate written to"));

    let (ca, _) = generate_self_signed_pem(&["an authority"]).unwrap();
    let bundle = dir.join("authorities.pem");
    std::fs::write(&bundle, ca).unwrap();
    let env: &[(&str, &Path)] = &[("SSL_CERT_FILE", &bundle)];

    let out = client(&dir, &[&port], env);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stdout.starts_with("Connection failed: "), "{}", out.stdout);
    assert!(out.stdout.contains("is self-signed"), "{}", out.stdout);
    assert!(out.stdout.contains(fingerprint), "{}", out.stdout);
    assert!(out.stdout.contains("(UnknownIssuer)"), "{}", out.stdout);
    assert!(
        out.stdout.contains("tell this client to trust its certificate"),
        "{}",
        out.stdout
    );

    assert_echoed(&client(&dir, &["--trust", crt.to_str().unwrap(), &port], env));
    assert_echoed(&client(&dir, &["--pin", fingerprint, &port], env));
    let other = "00".repeat(32);
    let out = client(&dir, &["--pin", &other, &port], env);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stdout.contains("not the one trusted"), "{}", out.stdout);
    server.stop();
    std::fs::remove_dir_all(dir).unwrap();
}
