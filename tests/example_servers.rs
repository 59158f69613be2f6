//! Every server example says where it listens in exactly one
//! `listening on ...` line, and an example that fails prints one clean
//! line (`Error: ...`, never Rust's debug form) and exits 1.

mod programs;

use std::net::TcpListener;
use std::path::PathBuf;

use programs::{example_command, run, Running};
use twistor::transports::tls::generate_self_signed_pem;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("twistor-examples-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Start `name` with `args` in `dir`, wait for its `listening on` line,
/// stop it, and return every line it printed.
fn listening_lines(name: &str, args: &[&str], dir: &std::path::Path) -> Vec<String> {
    let mut c = example_command(name);
    c.args(args).current_dir(dir);
    let server = Running::start(c);
    server.wait_line("listening on", |l| l.starts_with("listening on "));
    let (_, out) = server.stop();
    out.into_iter().filter(|l| l.contains("listening on")).collect()
}

#[test]
fn every_server_example_prints_one_listening_line() {
    let dir = temp_dir("listening");
    let (cert, key) = generate_self_signed_pem(&["localhost"]).unwrap();
    std::fs::write(dir.join("domain.crt"), cert).unwrap();
    std::fs::write(dir.join("domain.key"), key).unwrap();
    let socket = dir.join("echo.sock");
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let cases: &[(&str, Vec<&str>, &str)] = &[
        ("echo_tcp", vec!["0"], "listening on TCP [::]:"),
        ("echo_udp", vec!["0"], "listening on UDP [::]:"),
        ("echo_tls", vec!["0"], "listening on TLS [::]:"),
        ("chat", vec!["0"], "listening on TCP [::]:"),
        (
            "portforward",
            vec!["0", "127.0.0.1", &closed],
            "listening on TCP [::]:",
        ),
        ("starttls", vec!["server", "0"], "listening on TCP [::]:"),
        (
            "echo_unix",
            vec!["server", socket.to_str().unwrap()],
            "listening on unix:/",
        ),
    ];
    for (name, args, start) in cases {
        let lines = listening_lines(name, args, &dir);
        assert_eq!(lines.len(), 1, "{name}: {lines:?}");
        assert!(lines[0].starts_with(start), "{name}: {lines:?}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_port_in_use_is_one_clean_line_and_exit_1() {
    // A dual-stack listener holds the port for IPv6 and IPv4 alike.
    let held = TcpListener::bind("[::]:0")
        .or_else(|_| TcpListener::bind("0.0.0.0:0"))
        .unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    for name in ["echo_tcp", "chat"] {
        let mut c = example_command(name);
        c.arg(&port);
        let out = run(c);
        assert_eq!(out.code(), Some(1), "{name}: {out:?}");
        assert!(out.stderr.starts_with("Error: "), "{name}: {}", out.stderr);
        assert!(out.stderr.contains("in use"), "{name}: {}", out.stderr);
        assert!(
            !out.stderr.contains("kind:"),
            "{name}: debug form: {}",
            out.stderr
        );
        assert_eq!(out.stderr.lines().count(), 1, "{name}: {}", out.stderr);
    }
}

#[test]
fn the_tls_example_without_its_files_says_how_to_make_them() {
    let dir = temp_dir("no-cert");
    let mut c = example_command("echo_tls");
    c.arg("0").current_dir(&dir);
    let out = run(c);
    std::fs::remove_dir_all(dir).unwrap();
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert_eq!(
        out.stderr,
        "Error: domain.crt not found; make a certificate and its key with: \
         openssl req -newkey rsa:2048 -keyout domain.key -x509 -days 365 -out domain.crt\n"
    );
}
