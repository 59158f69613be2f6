//! `twistor echo` as a new user meets it: flags that cannot go together are
//! refused (exit status 2), `--help` says what each flag needs, a host name
//! is resolved, the generated certificate verifies with Python's `ssl` and
//! host-name checking for 127.0.0.1, ::1 and localhost, the passphrase
//! variable is honoured, rustls cannot flood the log at the default level,
//! and debug logging shows sizes and addresses, never payloads.

mod programs;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use programs::{have, run, twistor, Running, WAIT};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("twistor-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn echo(args: &[&str]) -> Command {
    let mut c = twistor();
    c.arg("echo").args(args);
    c
}

#[test]
fn flags_that_cannot_go_together_exit_2() {
    for args in [
        &["--no-tcp", "--udp", "--tls"][..],
        &["--no-tcp"],
        &["--cert", "domain.crt", "--key", "domain.key"],
        &["--tls", "--cert", "domain.crt"],
        &["--cert-out", "x.crt"],
        &["--tls", "--cert", "a", "--key", "b", "--cert-out", "c"],
        &["--port", "99999"],
    ] {
        let out = run(echo(args));
        assert_eq!(out.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.starts_with("error: "), "{args:?}: {}", out.stderr);
    }
}

#[test]
fn help_says_what_each_flag_needs_and_its_default() {
    let out = run(echo(&["--help"]));
    assert_eq!(out.code(), Some(0));
    let help = out.stdout;
    for needle in [
        "[default: every interface, IPv6 and IPv4]",
        "[default: 1234]",
        "needs --udp; not with --tls",
        "needs --tls and --key",
        "TWISTOR_PASSPHRASE_FILE",
        "[default: twistor-echo-PORT.crt in the temporary directory]",
        "a name is resolved",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}

#[test]
fn a_host_name_is_resolved_and_served() {
    let server = Running::start(echo(&["--host", "localhost", "--port", "0"]));
    let port = server.wait_port("TCP echo on");
    let mut c = TcpStream::connect(("localhost", port)).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    c.write_all(b"by name").unwrap();
    let mut back = [0u8; 7];
    c.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"by name");
    let (status, _) = server.stop();
    assert!(status.success());
}

#[test]
fn an_unknown_host_is_one_clean_line() {
    let out = run(echo(&["--host", "no-such-host.invalid", "--port", "0"]));
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(
        out.stderr
            .starts_with("twistor: cannot resolve --host no-such-host.invalid"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}

const PYTHON_CHECK: &str = r#"
import socket, ssl, sys
cafile, port = sys.argv[1], int(sys.argv[2])
ctx = ssl.create_default_context(cafile=cafile)
assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
for host in sys.argv[3:]:
    with socket.create_connection((host, port), timeout=20) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            s.sendall(b"hello " + host.encode())
            print("verified", host, s.recv(100).decode())
try:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
        ctx.wrap_socket(raw, server_hostname="not-this-host.test")
    print("NOT REFUSED")
except ssl.SSLCertVerificationError as e:
    print("refused", e.verify_message)
"#;

#[test]
fn the_generated_certificate_verifies_for_every_local_name() {
    if !have("python3", "--version") {
        return;
    }
    let dir = temp_dir("python");
    let crt = dir.join("echo.crt");
    let server = Running::start(echo(&[
        "--tls",
        "--port",
        "0",
        "--cert-out",
        crt.to_str().unwrap(),
    ]));
    let port = server.wait_port("TLS echo on");
    server.wait_line("the certificate's path", |l| l.contains("certificate written to"));
    let out = run({
        let mut c = Command::new("python3");
        c.args(["-c", PYTHON_CHECK, crt.to_str().unwrap(), &port.to_string()]);
        c.args(["127.0.0.1", "::1", "localhost"]);
        c
    });
    assert!(out.status.success(), "{out:?}");
    for host in ["127.0.0.1", "::1", "localhost"] {
        assert!(
            out.stdout.contains(&format!("verified {host} hello {host}")),
            "{host}: {}",
            out.stdout
        );
    }
    // Host names are really checked: another name is refused.
    assert!(out.stdout.contains("refused Hostname mismatch"), "{}", out.stdout);
    let pem = std::fs::read_to_string(&crt).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    assert!(!pem.contains("PRIVATE KEY"), "the key must not be written");
    server.stop();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_certificate_file_and_fingerprint_are_logged_as_openssl_shows_them() {
    let server = Running::start(echo(&["--tls", "--host", "127.0.0.1", "--port", "0"]));
    let port = server.wait_port("TLS echo on");
    let line = server.wait_line("the fingerprint", |l| l.contains("SHA-256 fingerprint: "));
    let logged = line.split("SHA-256 fingerprint: ").nth(1).unwrap();
    let logged = logged.split(' ').next().unwrap().to_string();
    let line = server.wait_line("the certificate's path", |l| l.contains("certificate written to"));
    let path = line.split("certificate written to ").nth(1).unwrap();
    let path = PathBuf::from(path.split(": ").next().unwrap());
    assert_eq!(
        path,
        std::env::temp_dir().join(format!("twistor-echo-{port}.crt"))
    );
    assert!(path.is_file());
    if have("openssl", "version") {
        let out = run({
            let mut c = Command::new("openssl");
            c.args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
                .arg(&path);
            c
        });
        // "sha256 Fingerprint=AB:CD:..." (the prefix's case varies by version)
        let shown = out.stdout.trim().split('=').nth(1).unwrap().to_string();
        assert_eq!(shown, logged);
    }
    server.stop();
    std::fs::remove_file(path).unwrap();
}

/// An EC key encrypted with `secret`, and its self-signed certificate.
fn encrypted_key(dir: &std::path::Path) {
    let out = run({
        let mut c = Command::new("openssl");
        c.args(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]);
        c.args(["-keyout", "enc.key", "-x509", "-days", "2", "-out", "enc.crt"]);
        c.args(["-subj", "/CN=localhost", "-passout", "pass:secret"]);
        c.current_dir(dir);
        c
    });
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn the_passphrase_file_variable_is_honoured_without_a_terminal() {
    if !have("openssl", "version") {
        return;
    }
    let dir = temp_dir("pass");
    encrypted_key(&dir);
    std::fs::write(dir.join("pass.txt"), "secret\n").unwrap();
    let args = ["--tls", "--cert", "enc.crt", "--key", "enc.key", "--port", "0"];

    // No terminal, no file: one line that says what to do.
    let out = run({
        let mut c = echo(&args);
        c.current_dir(&dir);
        c
    });
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(
        out.stderr.contains("set TWISTOR_PASSPHRASE_FILE"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--passphrase-file"), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);

    // The variable: the server starts.
    let server = Running::start({
        let mut c = echo(&args);
        c.current_dir(&dir).env("TWISTOR_PASSPHRASE_FILE", "pass.txt");
        c
    });
    server.wait_port("TLS echo on");
    server.stop();

    // The flag does the same.
    let server = Running::start({
        let mut c = echo(&args);
        c.current_dir(&dir).args(["--passphrase-file", "pass.txt"]);
        c
    });
    server.wait_port("TLS echo on");
    server.stop();
    std::fs::remove_dir_all(dir).unwrap();
}

/// Run a TLS echo round trip with `openssl s_client` sending an IP address
/// as SNI; the server's whole log.
fn ip_sni_round_trip(rust_log: Option<&str>) -> Vec<String> {
    let mut cmd = echo(&["--tls", "--host", "127.0.0.1", "--port", "0"]);
    if let Some(filter) = rust_log {
        cmd.env("RUST_LOG", filter);
    }
    let server = Running::start(cmd);
    let port = server.wait_port("TLS echo on");
    let client = Running::start_with_stdin(
        Command::new("openssl")
            .args(["s_client", "-quiet", "-connect"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-servername", "127.0.0.1"])
            .stdin(Stdio::piped()),
    );
    client.wait_line("the handshake", |l| l.starts_with("verify return"));
    drop(client); // killed: enough that the handshake happened
    let (status, log) = server.stop();
    assert!(status.success());
    std::fs::remove_file(std::env::temp_dir().join(format!("twistor-echo-{port}.crt"))).unwrap();
    log
}

#[test]
fn a_client_cannot_flood_the_log_through_rustls_at_the_default_level() {
    if !have("openssl", "version") {
        return;
    }
    let log = ip_sni_round_trip(None);
    assert!(!log.iter().any(|l| l.contains("rustls")), "{log:?}");
    // RUST_LOG still brings rustls's warnings back.
    let log = ip_sni_round_trip(Some("info,rustls=warn"));
    assert!(log.iter().any(|l| l.contains("Illegal SNI")), "{log:?}");
}

#[test]
fn debug_logs_sizes_and_addresses_never_payloads_for_tcp_and_udp() {
    let mut cmd = echo(&["--udp", "--host", "127.0.0.1", "--port", "0"]);
    cmd.env("RUST_LOG", "debug");
    let server = Running::start(cmd);
    let port = server.wait_port("UDP echo on");

    let payload = b"payload-that-must-not-be-logged";
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    tcp.write_all(payload).unwrap();
    let mut back = vec![0u8; payload.len()];
    tcp.read_exact(&mut back).unwrap();
    let tcp_peer = tcp.local_addr().unwrap();
    drop(tcp);

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(WAIT)).unwrap();
    udp.send_to(payload, ("127.0.0.1", port)).unwrap();
    let (n, _) = udp.recv_from(&mut back).unwrap();
    assert_eq!(&back[..n], payload);

    let n = payload.len();
    server.wait_line("the TCP size", |l| l.ends_with(&format!("{tcp_peer}: {n} bytes")));
    let udp_peer = udp.local_addr().unwrap();
    server.wait_line("the UDP size", |l| l.ends_with(&format!("{udp_peer}: {n} bytes")));
    server.wait_line("the TCP close", |l| l.contains(&format!("{tcp_peer}: closed")));
    let (_, log) = server.stop();
    assert!(!log.iter().any(|l| l.contains("payload-that")), "{log:?}");
}

#[test]
fn threads_run_several_reactors_on_one_port_and_stop_together() {
    let server = Running::start(echo(&["--threads", "2", "--port", "0", "--udp"]));
    server.wait_line("the group starts", |l| l.contains("running 2 reactors"));
    let port = server.wait_port("TCP echo on");
    // Connections from many source ports: the kernel spreads them over the
    // two listeners; every one is echoed whichever reactor has it.
    let mut conns: Vec<TcpStream> = (0..32)
        .map(|i| {
            let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.set_read_timeout(Some(WAIT)).unwrap();
            let msg = format!("hello {i:02}");
            c.write_all(msg.as_bytes()).unwrap();
            let mut back = [0u8; 8];
            c.read_exact(&mut back).unwrap();
            assert_eq!(&back, msg.as_bytes());
            c
        })
        .collect();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(WAIT)).unwrap();
    udp.send_to(b"datagram", ("127.0.0.1", port)).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = udp.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"datagram");
    // One SIGTERM stops every reactor; each connection sees a clean close.
    let (status, _) = server.stop();
    assert!(status.success(), "{status:?}");
    for c in &mut conns {
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).expect("a clean close");
        assert!(rest.is_empty());
    }
}
