//! `twistor gemini` end to end: with no flags but a free `--port`, it
//! serves the built-in capsule to a real client (Python's ssl), its pages
//! link to one another, its generated certificate and state directory
//! survive a restart unchanged, SIGTERM stops it cleanly, and bad flags
//! or files are one line and status 2.

mod gemini_common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use gemini_common::*;

const BIN: &str = env!("CARGO_BIN_EXE_twistor");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start `twistor gemini ARGS` with its data directory under `home`; wait
/// until it listens. Returns the child and its log lines so far.
#[allow(clippy::zombie_processes)] // the caller stops and waits for it
fn start(home: &Path, args: &[&str]) -> (Child, Vec<String>, mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .arg("gemini")
        .args(args)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    loop {
        let line = rx.recv_timeout(WAIT).expect("the server did not start in time");
        let done = line.contains("Gemini on");
        seen.push(line);
        if done {
            return (child, seen, rx);
        }
    }
}

fn stop(mut child: Child, rx: &mpsc::Receiver<String>) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    // The reader thread may still be passing on the last lines: take them
    // until it ends (stderr closed), with a bound.
    let mut rest = Vec::new();
    while let Ok(line) = rx.recv_timeout(WAIT) {
        rest.push(line);
    }
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
}

/// Ask with Python while nothing runs in this process but the client.
fn ask(asks: Vec<Ask>) -> Vec<Answer> {
    let mut r = reactor();
    ask_python(&mut r, asks)
}

#[test]
fn no_flags_serves_the_built_in_capsule_and_keeps_its_certificate() {
    if !have("python3") {
        return;
    }
    let home = temp_dir("cli");
    let port = free_port();
    let (child, log, rx) = start(&home, &["--port", &port.to_string()]);
    assert!(
        log.iter().any(|l| l.contains("generated the certificate")),
        "{log:?}"
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (cert, key) = client_cert(&home, "alice");
    let url = |p: &str| format!("gemini://localhost:{port}{p}");
    let answers = ask(vec![
        Ask::line(addr, &url("/")),
        Ask::line(addr, &url("/about.gmi")),
        Ask::line(addr, &url("/serve.gmi")),
        Ask::line(addr, &url("/echo")),
        Ask::line(addr, &url("/echo?hello%20there")),
        Ask::line(addr, &url("/whoami")),
        Ask::line(addr, &url("/whoami")).cert(&cert, &key),
        Ask::line(addr, &format!("gemini://127.0.0.1:{port}/")).sni(None),
    ]);
    let home_page = String::from_utf8_lossy(answers[0].body()).into_owned();
    assert_eq!(answers[0].header(), "20 text/gemini");
    assert!(home_page.contains("twistor"));
    // Every page the home page links to is served.
    for link in ["/about.gmi", "/serve.gmi", "/echo", "/whoami"] {
        assert!(home_page.contains(&format!("=> {link} ")), "no link to {link}");
    }
    assert_eq!(answers[1].status(), 20);
    assert_eq!(answers[2].status(), 20);
    assert_eq!(answers[3].header(), "10 Say something");
    assert!(String::from_utf8_lossy(answers[4].body()).contains("> hello there"));
    assert_eq!(answers[5].status(), 60);
    assert_eq!(answers[6].status(), 20);
    assert!(String::from_utf8_lossy(answers[6].body()).contains("You are alice"));
    assert_eq!(answers[7].status(), 20, "127.0.0.1 is localhost's alias");
    assert!(answers.iter().all(|a| a.close_notify));
    let fingerprint = answers[0].server_cert.clone();
    assert!(
        log.iter().any(|l| l.contains(&fingerprint)),
        "the fingerprint is logged: {log:?}"
    );

    // The state directory: under the data directory, owner-only, and kept.
    let state = home.join("data/twistor/gemini");
    let key_file = state.join("localhost.key");
    let before: Vec<(String, Vec<u8>)> = files(&state);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the key is readable by its owner only");
        let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
    stop(child, &rx);

    let (child, log, rx) = start(&home, &["--port", &port.to_string()]);
    assert!(
        log.iter().any(|l| l.contains("loaded the certificate")),
        "{log:?}"
    );
    let again = ask(vec![Ask::line(addr, &url("/"))]);
    assert_eq!(
        again[0].server_cert, fingerprint,
        "the certificate changed across a restart"
    );
    assert_eq!(
        files(&state),
        before,
        "the state directory changed across a restart"
    );
    stop(child, &rx);
    std::fs::remove_dir_all(home).unwrap();
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn bad_flags_and_files_are_one_line_and_status_2() {
    let home = temp_dir("cli-bad");
    let config = home.join("bad.toml");
    std::fs::write(
        &config,
        "port = \"not a number\"\n[[vhost]]\nhostname = \"x\"\ndir = \".\"\n",
    )
    .unwrap();
    let cases: Vec<Vec<String>> = vec![
        vec!["--bogus".into()],
        vec!["--port".into(), "seventy".into()],
        vec!["--rate-limit".into(), "60".into()],
        vec!["--dir".into(), home.join("missing").display().to_string()],
        vec![
            "--tls-certfile".into(),
            "/nonexistent.crt".into(),
            "--tls-keyfile".into(),
            "/nonexistent.key".into(),
        ],
        vec!["--tls-certfile".into(), "/nonexistent.crt".into()],
        vec!["--tls-cafile".into(), "/nonexistent-ca.pem".into()],
        vec!["--config".into(), config.display().to_string()],
        vec!["--config".into(), home.join("missing.toml").display().to_string()],
        vec![
            "--default-lang".into(),
            "en gb".into(),
            "--dir".into(),
            home.display().to_string(),
        ],
    ];
    for args in cases {
        let out = Command::new(BIN)
            .arg("gemini")
            .args(&args)
            .arg("--state-dir")
            .arg(home.join("state"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: not one line: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{stderr}"
        );
    }
    std::fs::remove_dir_all(home).unwrap();
}

#[test]
fn threads_serve_from_several_reactors_on_one_port() {
    if !have("python3") {
        return;
    }
    let home = temp_dir("cli-threads");
    let (child, log, rx) = start(&home, &["--port", "0", "--threads", "2"]);
    assert!(log.iter().any(|l| l.contains("running 2 reactors")), "{log:?}");
    let line = log.iter().find(|l| l.contains("Gemini on")).unwrap();
    let port: u16 = line.rsplit(':').next().unwrap().trim().parse().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Each request is a new connection from a new source port: the kernel
    // spreads them over both reactors' listeners, and each reactor's own
    // server answers with the one certificate kept in the state directory.
    let answers = ask((0..16)
        .map(|_| Ask::line(addr, &format!("gemini://localhost:{port}/")))
        .collect());
    assert!(
        answers.iter().all(|a| a.header() == "20 text/gemini"),
        "{answers:?}"
    );
    assert!(answers.iter().all(|a| a.server_cert == answers[0].server_cert));
    assert!(answers.iter().all(|a| a.close_notify));
    stop(child, &rx);
    std::fs::remove_dir_all(home).unwrap();
}
