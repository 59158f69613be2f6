//! `twistor fetch` end to end against twistor's Gemini server (in this
//! process, on loopback): trust on first use in the data directory, a
//! changed certificate refused with both fingerprints, `--trust-new`;
//! every exit status; input from `--input` and from the terminal (a
//! pseudo-terminal, no echo for 11); identities reaching a CGI script;
//! redirects to another host said on stderr; a Titan upload streamed to a
//! recording TLS listener.

mod gemini_common;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::rc::Rc;
use std::sync::mpsc;

use gemini_common::*;
use twistor::protocols::gemini::{
    input, require_cert, sensitive_input, CgiOptions, Response, Router, Server, StaticFiles, VirtualHost,
};
use twistor::reactor::{Protocol, Reactor, Reason, Transport};
use twistor::transports::tls::{generate_self_signed, generate_self_signed_cert, listen_tls};

const BIN: &str = env!("CARGO_BIN_EXE_twistor");

fn app(root: &Path) -> Router {
    let mut app = Router::new();
    app.route("/", |_| Ok(Response::gemtext("# Home\n")?));
    app.route("/ask", |req| {
        let name = input(req, "Your name?")?;
        Ok(Response::gemtext(format!(
            "Hello, {name}! ({})\n",
            req.raw_query().unwrap()
        ))?)
    });
    app.route("/secret", |req| {
        let s = sensitive_input(req, "Password")?;
        Ok(Response::gemtext(format!("secret={s}\n"))?)
    });
    app.route("/temp", |_| Ok(Response::temporary_failure("Try later")?));
    app.route("/nope", |_| Ok(Response::not_found("No such page")?));
    app.route("/me", |req| {
        let cert = require_cert(req)?;
        Ok(Response::gemtext(format!("cn={:?}\n", cert.subject_cn()))?)
    });
    app.route("/loop1", |_| Ok(Response::redirect("/loop2")?));
    app.route("/loop2", |_| Ok(Response::redirect("/loop1")?));
    app.route("/chain/<n>", |req| {
        let n: u32 = req.capture("n").unwrap().parse().unwrap();
        if n == 0 {
            return Ok(Response::gemtext("end\n")?);
        }
        Ok(Response::redirect(format!("/chain/{}", n - 1))?)
    });
    app.route("/cross", |req| {
        let port = req.port().unwrap_or(1965);
        Ok(Response::redirect(format!(
            "gemini://127.0.0.1:{port}/cgi-bin/who.sh"
        ))?)
    });
    app.fallback(StaticFiles::new(root).with_cgi(CgiOptions::default()));
    app
}

/// A capsule for localhost (and 127.0.0.1) with a new certificate, CGI
/// under `home/root`.
fn server(home: &Path) -> Server {
    let root = home.join("root");
    let bin = root.join("cgi-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("who.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf '20 text/plain\\r\\n'\necho \"user=$REMOTE_USER hash=$TLS_CLIENT_HASH\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (chain, key) = generate_self_signed_cert(&["localhost"]).unwrap();
    Server::builder()
        .host(
            VirtualHost::new("localhost", app(&root))
                .alias("127.0.0.1")
                .cert(chain, key),
        )
        .build()
        .unwrap()
}

/// What `twistor fetch` did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The last `STATUS META` line.
    fn header(&self) -> &str {
        self.stderr
            .lines()
            .rev()
            .find(|l| l.len() >= 2 && l.as_bytes()[..2].iter().all(u8::is_ascii_digit))
            .unwrap_or("")
    }
}

/// `twistor fetch ARGS` with its data directory under `home`, stdin
/// empty, while `r` serves.
fn twistor_fetch(r: &mut Reactor, home: &Path, args: &[&str]) -> Run {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let data = home.join("data");
    in_thread(r, move || {
        Run::from(
            Command::new(BIN)
                .arg("fetch")
                .args(&args)
                .env("XDG_DATA_HOME", &data)
                .env_remove("TWISTOR_PASSPHRASE_FILE")
                .stdin(Stdio::null())
                .output()
                .unwrap(),
        )
    })
}

#[test]
fn trust_on_first_use_a_changed_certificate_and_trust_new() {
    let home = temp_dir("fetch-tofu");
    let mut r = reactor();
    let first = server(&home);
    let port = first
        .listen(&mut r, "127.0.0.1:0".parse::<SocketAddr>().unwrap())
        .unwrap();
    let p = port.port();
    let first_fp = first.fingerprints()[0].1.clone();
    let url = format!("gemini://localhost:{p}/");
    let known_hosts = home.join("data/twistor/known_hosts");

    let run = twistor_fetch(&mut r, &home, &[&url]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, "# Home\n");
    assert_eq!(run.header(), "20 text/gemini");
    assert!(
        run.stderr.contains(&format!(
            "trusting localhost:{p} on first use: SHA-256 {first_fp}"
        )),
        "{}",
        run.stderr
    );
    let text = std::fs::read_to_string(&known_hosts).unwrap();
    assert!(text.contains(&format!("localhost {p} {first_fp} ")), "{text}");
    let run = twistor_fetch(&mut r, &home, &[&url]);
    assert_eq!(run.code, Some(0));
    assert!(!run.stderr.contains("first use"), "{}", run.stderr);

    // The same host and port, another certificate.
    port.stop_listening(&mut r);
    let second = server(&home);
    let again = second
        .listen(&mut r, format!("127.0.0.1:{p}").parse::<SocketAddr>().unwrap())
        .unwrap();
    let second_fp = second.fingerprints()[0].1.clone();
    let run = twistor_fetch(&mut r, &home, &[&url]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(run.stdout, "");
    let line = run.stderr.trim_end();
    assert!(
        line.starts_with(&format!("twistor: the certificate of localhost:{p} changed: ")),
        "{line}"
    );
    assert!(line.contains(&first_fp) && line.contains(&second_fp), "{line}");
    assert!(line.contains("--trust-new"), "{line}");
    assert_eq!(line.lines().count(), 1, "one line: {line}");

    let run = twistor_fetch(&mut r, &home, &["--trust-new", &url]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "changed from SHA-256 {first_fp}; trusting the new one, SHA-256 {second_fp}"
        )),
        "{}",
        run.stderr
    );
    let run = twistor_fetch(&mut r, &home, &[&url]);
    assert_eq!(run.code, Some(0), "the new certificate is remembered: {run:?}");

    // --known-hosts elsewhere: a first use there; --insecure: loud, nothing kept.
    let other = home.join("other_known_hosts");
    let run = twistor_fetch(&mut r, &home, &["--known-hosts", other.to_str().unwrap(), &url]);
    assert!(run.stderr.contains("on first use"), "{}", run.stderr);
    assert!(std::fs::read_to_string(&other).unwrap().contains(&second_fp));
    let run = twistor_fetch(&mut r, &home, &["--insecure", &url]);
    assert_eq!(run.code, Some(0));
    assert!(run.stderr.contains("WARNING: --insecure"), "{}", run.stderr);
    again.stop_listening(&mut r);
    std::fs::remove_dir_all(home).unwrap();
}

#[test]
fn exit_statuses() {
    let home = temp_dir("fetch-exit");
    let mut r = reactor();
    let s = server(&home);
    let p = listen(&mut r, &s, "127.0.0.1").port();
    let url = |path: &str| format!("gemini://localhost:{p}{path}");
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (vec![url("/")], 0, "20 text/gemini"),
        (vec![url("/temp")], 4, "40 Try later"),
        (vec![url("/nope")], 5, "51 No such page"),
        (vec![url("/me")], 6, "60 "),
        (vec![url("/loop1")], 3, "30 /loop1"),
        (vec![url("/chain/5")], 0, "20 text/gemini"),
        (vec![url("/chain/6")], 3, "30 /chain/0"),
        (
            vec!["--max-redirects".into(), "1".into(), url("/chain/2")],
            3,
            "30 /chain/0",
        ),
        (vec![url("/ask")], 7, "10 Your name?"),
    ];
    for (args, code, header) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = twistor_fetch(&mut r, &home, &args);
        assert_eq!(run.code, Some(code), "{args:?}: {run:?}");
        assert!(run.header().starts_with(header), "{args:?}: {run:?}");
    }
    let run = twistor_fetch(&mut r, &home, &[&url("/loop1")]);
    assert!(
        run.stderr.contains("not followed: a redirect loop"),
        "{}",
        run.stderr
    );
    let run = twistor_fetch(&mut r, &home, &[&url("/ask")]);
    assert!(run.stderr.contains("no input given"), "{}", run.stderr);

    // Usage: one line, status 2.
    for args in [
        vec!["https://example.org/"],
        vec!["gemini://localhost/", "--mime", "text/plain"],
        vec!["gemini://localhost/", "--identity", "../x"],
        vec!["gemini://localhost/", "--upload", "/nonexistent/file"],
        vec!["titan://localhost/x"],
        vec![],
    ] {
        let run = twistor_fetch(&mut r, &home, &args);
        assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
        assert_eq!(
            run.stderr.trim_end().lines().count(),
            1,
            "{args:?}: {}",
            run.stderr
        );
    }

    // Network failures: status 1, one line naming the server.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let run = twistor_fetch(&mut r, &home, &[&format!("gemini://127.0.0.1:{closed_port}/")]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr
            .starts_with(&format!("twistor: cannot connect to 127.0.0.1:{closed_port}: ")),
        "{}",
        run.stderr
    );
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mute_url = format!("gemini://127.0.0.1:{}/", mute.local_addr().unwrap().port());
    let run = twistor_fetch(&mut r, &home, &["--connect-timeout", "1", &mute_url]);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stderr.contains("TLS handshake did not complete within 1 s"),
        "{}",
        run.stderr
    );
    drop(mute);

    // Interrupted while the handshake hangs: 130, said in one line.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mute_url = format!("gemini://127.0.0.1:{}/", mute.local_addr().unwrap().port());
    let child = Command::new(BIN)
        .args(["fetch", &mute_url])
        .env("XDG_DATA_HOME", home.join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _conn = mute.accept().unwrap(); // it is connected, so its loop runs
                                        // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let run = Run::from(child.wait_with_output().unwrap());
    assert_eq!(run.code, Some(130), "{run:?}");
    assert!(run.stderr.ends_with("twistor: interrupted\n"), "{}", run.stderr);
    std::fs::remove_dir_all(home).unwrap();
}

#[test]
fn input_identities_and_redirects_to_another_host() {
    let home = temp_dir("fetch-input");
    let mut r = reactor();
    let s = server(&home);
    let p = listen(&mut r, &s, "127.0.0.1").port();
    let url = |path: &str| format!("gemini://localhost:{p}{path}");

    let run = twistor_fetch(&mut r, &home, &["--input", "Zoë & co", &url("/ask")]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, "Hello, Zoë & co! (Zo%C3%AB%20%26%20co)\n");
    let headers: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with(['1', '2'])).collect();
    assert_eq!(headers, ["10 Your name?", "20 text/gemini"]);

    // A named identity: created once, then the same; a CGI script sees it.
    let run = twistor_fetch(&mut r, &home, &["--identity", "alice", &url("/cgi-bin/who.sh")]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stderr.contains("created the identity alice"),
        "{}",
        run.stderr
    );
    let crt = home.join("data/twistor/identities/alice.crt");
    let pem = std::fs::read(&crt).unwrap();
    let der = twistor::transports::tls::certs_from_pem(&pem).unwrap();
    let hash = twistor::transports::tls::sha256_fingerprint(&der[0]).to_ascii_uppercase();
    assert_eq!(run.stdout, format!("user=alice hash=SHA256:{hash}\n"));
    let run = twistor_fetch(&mut r, &home, &["--identity", "alice", &url("/me")]);
    assert_eq!(run.stdout, "cn=Some(\"alice\")\n");
    assert!(!run.stderr.contains("created"), "{}", run.stderr);

    // Certificate files; the identity stays home on a redirect elsewhere.
    let (cert, key) = client_cert(&home, "bob");
    let files = ["--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()];
    let run = twistor_fetch(
        &mut r,
        &home,
        &[&files[..], &[url("/cgi-bin/who.sh").as_str()]].concat(),
    );
    assert!(run.stdout.starts_with("user=bob hash=SHA256:"), "{run:?}");
    let run = twistor_fetch(&mut r, &home, &[&files[..], &[url("/cross").as_str()]].concat());
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, "user= hash=\n");
    assert!(
        run.stderr.contains(&format!(
            "redirected to another host: gemini://127.0.0.1:{p}/cgi-bin/who.sh (the client certificate is not sent there)"
        )),
        "{}",
        run.stderr
    );
    std::fs::remove_dir_all(home).unwrap();
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

/// Run `twistor fetch URL` on a terminal, type `answer` once `prompt` is
/// on stderr; return the run and what the terminal displayed.
fn on_terminal(
    r: &mut Reactor,
    home: &Path,
    url: String,
    prompt: &'static str,
    answer: &'static str,
) -> (Run, String) {
    let data = home.join("data");
    in_thread(r, move || {
        let (master, slave) = pty();
        let mut child = Command::new(BIN)
            .args(["fetch", &url])
            .env("XDG_DATA_HOME", &data)
            .stdin(Stdio::from(slave))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for the prompt (read on a thread, so the wait is bounded).
        let mut stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut buf = [0u8; 256];
            loop {
                match stderr.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        all.extend_from_slice(&buf[..n]);
                        let _ = tx.send(String::from_utf8_lossy(&all).into_owned());
                    }
                }
            }
            String::from_utf8_lossy(&all).into_owned()
        });
        loop {
            let so_far = rx.recv_timeout(WAIT).expect("the prompt did not show in time");
            if so_far.ends_with(prompt) {
                break;
            }
        }
        let mut typing = std::fs::File::from(master.try_clone().unwrap());
        typing.write_all(format!("{answer}\n").as_bytes()).unwrap();
        let mut stdout = String::new();
        child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
        let status = child.wait().unwrap();
        let stderr = reader.join().unwrap();
        // What the terminal shows: read until the slave side is gone.
        let mut screen = Vec::new();
        let mut term = std::fs::File::from(master);
        let _ = term.read_to_end(&mut screen);
        (
            Run {
                code: status.code(),
                stdout,
                stderr,
            },
            String::from_utf8_lossy(&screen).into_owned(),
        )
    })
}

#[test]
fn input_is_asked_on_the_terminal_and_a_secret_is_not_echoed() {
    let home = temp_dir("fetch-pty");
    let mut r = reactor();
    let s = server(&home);
    let p = listen(&mut r, &s, "127.0.0.1").port();

    let (run, screen) = on_terminal(
        &mut r,
        &home,
        format!("gemini://localhost:{p}/ask"),
        "> ",
        "hello world",
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, "Hello, hello world! (hello%20world)\n");
    assert!(run.stderr.contains("10 Your name?\n> "), "{}", run.stderr);
    assert!(
        screen.contains("hello world"),
        "a 10 answer is echoed: {screen:?}"
    );

    let (run, screen) = on_terminal(
        &mut r,
        &home,
        format!("gemini://localhost:{p}/secret"),
        "(not echoed) > ",
        "s3cr3t pw",
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, "secret=s3cr3t pw\n");
    assert!(
        !screen.contains("s3cr3t"),
        "an 11 answer must not be echoed: {screen:?}"
    );
    std::fs::remove_dir_all(home).unwrap();
}

/// The uploads a recorder saw: (request line, body).
type Uploads = Rc<RefCell<Vec<(String, Vec<u8>)>>>;

/// Records one Titan upload: the line, then `size` bytes, then answers.
struct TitanRecorder {
    buf: Vec<u8>,
    want: Option<usize>,
    log: Uploads,
}

impl Protocol for TitanRecorder {
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        self.buf.extend_from_slice(data);
        if self.want.is_none() {
            let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
            let size = line.split(';').find_map(|p| p.strip_prefix("size=")).unwrap();
            self.want = Some(end + 2 + size.parse::<usize>().unwrap());
        }
        if Some(self.buf.len()) == self.want {
            let end = self.buf.windows(2).position(|w| w == b"\r\n").unwrap();
            let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
            let body = self.buf.split_off(end + 2);
            self.log.borrow_mut().push((line, body));
            t.write(b"30 gemini://localhost/wiki/page\r\n");
            t.lose_connection();
        }
    }

    fn connection_lost(&mut self, _: &mut dyn Transport, _: &Reason) {}
}

#[test]
fn a_titan_upload_from_the_command_line() {
    let home = temp_dir("fetch-titan");
    let mut r = reactor();
    let (config, _) = generate_self_signed(&["localhost"]).unwrap();
    let log = Rc::new(RefCell::new(Vec::new()));
    let l = log.clone();
    let factory = move |_: &_| TitanRecorder {
        buf: Vec::new(),
        want: None,
        log: l.clone(),
    };
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let port = listen_tls(&mut r, addr, factory, config).unwrap().port();
    let file: PathBuf = home.join("page.gmi");
    let content: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&file, &content).unwrap();

    let url = format!("titan://localhost:{port}/wiki/page");
    let upload = ["--max-redirects", "0", "--upload", file.to_str().unwrap()];
    let run = twistor_fetch(
        &mut r,
        &home,
        &[&[url.as_str()][..], &upload, &["--token", "hunter 2"]].concat(),
    );
    // The answer is a redirect to the page, not followed here.
    assert_eq!(run.code, Some(3), "{run:?}");
    assert_eq!(run.header(), "30 gemini://localhost/wiki/page", "{run:?}");
    let (line, body) = log.borrow()[0].clone();
    assert_eq!(
        line,
        format!("{url};size=300000;mime=text/gemini;token=hunter%202")
    );
    assert!(body == content, "the body arrived changed ({} bytes)", body.len());

    let run = twistor_fetch(
        &mut r,
        &home,
        &[
            &url,
            "--max-redirects",
            "0",
            "--upload",
            file.to_str().unwrap(),
            "--mime",
            "text/plain",
        ],
    );
    assert_eq!(run.code, Some(3), "{run:?}");
    assert_eq!(log.borrow()[1].0, format!("{url};size=300000;mime=text/plain"));
    std::fs::remove_dir_all(home).unwrap();
}

#[test]
fn a_titan_upload_from_the_command_line_to_twistors_own_server() {
    use twistor::protocols::gemini::TitanOptions;
    let home = temp_dir("fetch-titan-server");
    let root = home.join("wiki");
    std::fs::create_dir_all(&root).unwrap();
    let mut r = reactor();
    let (chain, key) = generate_self_signed_cert(&["localhost"]).unwrap();
    let files = StaticFiles::new(&root)
        .with_titan(TitanOptions::new("s3cret"))
        .unwrap();
    let server = Server::builder()
        .host(VirtualHost::new("localhost", files).cert(chain, key))
        .build()
        .unwrap();
    let port = server.listen(&mut r, "127.0.0.1:0").unwrap().port();
    let page = home.join("notes.gmi");
    let content = "# Notes\n\nWritten with twistor fetch.\n".repeat(2_000);
    std::fs::write(&page, &content).unwrap();
    let url = format!("titan://localhost:{port}/notes.gmi");

    // A wrong token is refused (59: exit status 5) and nothing is written.
    let run = twistor_fetch(
        &mut r,
        &home,
        &[&url, "--upload", page.to_str().unwrap(), "--token", "guess"],
    );
    assert_eq!(run.code, Some(5), "{run:?}");
    assert!(!root.join("notes.gmi").exists());

    // The upload is answered with a redirect to the page, which fetch
    // follows: what it prints is what it uploaded.
    let run = twistor_fetch(
        &mut r,
        &home,
        &[&url, "--upload", page.to_str().unwrap(), "--token", "s3cret"],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.header(), "20 text/gemini", "{run:?}");
    assert!(run.stdout == content, "printed {} bytes", run.stdout.len());
    assert_eq!(std::fs::read_to_string(root.join("notes.gmi")).unwrap(), content);

    // An empty upload (size=0) deletes the page.
    let empty = home.join("empty");
    std::fs::write(&empty, b"").unwrap();
    let run = twistor_fetch(
        &mut r,
        &home,
        &[&url, "--upload", empty.to_str().unwrap(), "--token", "s3cret"],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(!root.join("notes.gmi").exists());
    std::fs::remove_dir_all(home).unwrap();
}
