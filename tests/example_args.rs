//! The examples read their arguments the same way: a bad port is the same
//! one line and exit status 2 in every one of them, a missing or unknown
//! mode word is an error with the usage line, `--help` prints the usage,
//! and `starttls client` never starts a server.

mod programs;

use std::net::TcpListener;

use programs::{example_command, run, Finished};

const BAD_PORT: &str = "Error: not a port number: \"abc\" (a port is a whole number from 0 to 65535)\n";

fn run_example(name: &str, args: &[&str]) -> Finished {
    let mut c = example_command(name);
    c.args(args);
    run(c)
}

#[test]
fn a_bad_port_is_the_same_line_and_exit_2_in_every_example() {
    let cases: &[(&str, &[&str])] = &[
        ("echo_tcp", &["abc"]),
        ("echo_tcp_client", &["abc"]),
        ("echo_udp", &["abc"]),
        ("echo_udp_client", &["abc"]),
        ("echo_tls", &["abc"]),
        ("echo_tls_client", &["abc"]),
        ("echo_tls_client", &["--pin", "ab:cd", "abc"]),
        ("chat", &["abc"]),
        ("portforward", &["abc"]),
        ("portforward", &["1234", "localhost", "abc"]),
        ("starttls", &["server", "abc"]),
        ("starttls", &["client", "abc"]),
    ];
    for (name, args) in cases {
        let out = run_example(name, args);
        assert_eq!(out.code(), Some(2), "{name} {args:?}: {out:?}");
        assert_eq!(out.stderr, BAD_PORT, "{name} {args:?}");
        assert_eq!(out.stdout, "", "{name} {args:?}");
    }
    // Out of range is the same kind of mistake.
    let out = run_example("echo_tcp", &["99999"]);
    assert_eq!(out.code(), Some(2));
    assert_eq!(out.stderr, BAD_PORT.replace("abc", "99999"));
}

#[test]
fn a_missing_or_unknown_mode_word_is_an_error_with_the_usage() {
    let cases: &[(&str, &[&str], &str)] = &[
        ("starttls", &[], "Error: say which: server or client"),
        (
            "starttls",
            &["1234"],
            "Error: \"1234\" is not a mode: say server or client",
        ),
        ("echo_unix", &[], "Error: say which: server or client"),
        (
            "echo_unix",
            &["serve"],
            "Error: \"serve\" is not a mode: say server or client",
        ),
    ];
    for (name, args, first) in cases {
        let out = run_example(name, args);
        assert_eq!(out.code(), Some(2), "{name} {args:?}: {out:?}");
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 2, "{name} {args:?}: {}", out.stderr);
        assert_eq!(lines[0], *first);
        assert!(
            lines[1].starts_with(&format!("usage: {name} server|client")),
            "{}",
            lines[1]
        );
        assert!(
            !out.stdout.contains("listening"),
            "{name} {args:?} started: {}",
            out.stdout
        );
    }
}

#[test]
fn help_prints_the_usage_and_exits_0() {
    let out = run_example("echo_tls_client", &["--help"]);
    assert_eq!(out.code(), Some(0));
    assert_eq!(
        out.stdout,
        "usage: echo_tls_client [--trust FILE] [--pin SHA256] [PORT]\n"
    );
}

#[test]
fn starttls_client_connects_and_never_starts_a_server() {
    // A port nobody listens on: the client says so and exits 1.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = run_example("starttls", &["client", &port.to_string()]);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stdout.starts_with("connection failed"), "{}", out.stdout);
    assert!(!out.stdout.contains("listening"), "{}", out.stdout);

    // Without a port it means the default one, 1234, as a client: checked
    // only when nothing else here listens on 1234 (else skipped, said so).
    match TcpListener::bind("[::]:1234").or_else(|_| TcpListener::bind("0.0.0.0:1234")) {
        Ok(l) => {
            drop(l);
            let out = run_example("starttls", &["client"]);
            assert_eq!(out.code(), Some(1), "{out:?}");
            assert!(out.stdout.starts_with("connection failed"), "{}", out.stdout);
            assert!(!out.stdout.contains("listening"), "{}", out.stdout);
        }
        Err(_) => eprintln!("SKIPPED: port 1234 is in use here; `starttls client` without a port not run"),
    }
}
