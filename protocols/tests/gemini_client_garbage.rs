//! The Gemini client against servers that misbehave: a small server on
//! Python's `ssl` module (an implementation no one here wrote) answers
//! each request path with a broken response, and a plain TCP server
//! answers without TLS at all. Every case is a clear error, never a
//! panic; a body that ends without close_notify is reported as truncated.
//!
//! Skipped, with a message, when python3 is absent.

use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::Duration;

use twistor_protocols::gemini::{fetch, FetchError, FetchOptions, FetchResponse, ServerTrust};
use twistor_reactor::Reactor;
use twistor_transports::tls::generate_self_signed_pem;

const WAIT: Duration = Duration::from_secs(60);

const PY_SERVER: &str = r#"
import socket, ssl, sys, urllib.parse
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(16)
print(srv.getsockname()[1], flush=True)
ANSWERS = {
    "ok": b"20 text/plain\r\nwhole body",
    "truncated": b"20 text/plain\r\npartial body",
    "header-then-cut": b"20 text/plain\r\n",
    "no-crlf": b"20 text/gemini",
    "short": b"2",
    "long-meta": b"20 " + b"a" * 2000 + b"\r\n",
    "http": b"HTTP/1.1 200 OK\r\n\r\n",
    "lf": b"20 text/gemini\n",
    "control": b"20 text/\x1b[31mgemini\r\n",
    "bad-utf8": b"20 text/\xffgemini\r\n",
    "silent": b"",
}
while True:
    raw, _ = srv.accept()
    raw.settimeout(30)
    try:
        s = ctx.wrap_socket(raw, server_side=True)
        line = b""
        while not line.endswith(b"\r\n") and len(line) < 2048:
            c = s.recv(1)
            if not c:
                break
            line += c
        mode = urllib.parse.urlsplit(line.decode().strip()).path.lstrip("/")
        if mode == "quit":
            break
        s.sendall(ANSWERS[mode])
        if mode in ("truncated", "header-then-cut"):
            s.shutdown(socket.SHUT_RDWR)  # TCP only: no close_notify
            s.close()
        else:
            s.unwrap()  # close_notify
            raw.close()
    except (ConnectionError, ssl.SSLError):
        raw.close()  # the client gave up on a broken answer: expected
    except Exception as e:
        print("server:", repr(e), file=sys.stderr, flush=True)
        raw.close()
"#;

fn reactor() -> Reactor {
    let mut r = Reactor::new().unwrap();
    r.set_install_signal_handlers(false);
    r
}

fn get(r: &mut Reactor, url: &str) -> Result<FetchResponse, FetchError> {
    let slot = Rc::new(RefCell::new(None));
    let s = slot.clone();
    let opts = FetchOptions {
        trust: ServerTrust::Insecure,
        ..FetchOptions::default()
    };
    fetch(r, url, opts, move |_, result| *s.borrow_mut() = Some(result));
    assert!(
        r.run_until(WAIT, |_| slot.borrow().is_some()).unwrap(),
        "{url}: no result in time"
    );
    let result = slot.borrow_mut().take().unwrap();
    result
}

fn have_python() -> bool {
    let ok = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: python3 is not installed");
    }
    ok
}

fn bad_response(result: Result<FetchResponse, FetchError>) -> String {
    match result {
        Err(e @ FetchError::BadResponse { .. }) => e.to_string(),
        other => panic!("expected an invalid response, got {other:?}"),
    }
}

#[test]
fn broken_responses_are_clear_errors() {
    if !have_python() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("twistor-gemini-garbage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = generate_self_signed_pem(&["localhost"]).unwrap();
    std::fs::write(dir.join("c.pem"), cert).unwrap();
    std::fs::write(dir.join("k.pem"), key).unwrap();
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(PY_SERVER)
        .arg(dir.join("c.pem"))
        .arg(dir.join("k.pem"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut port = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut port)
        .unwrap();
    let port: u16 = port.trim().parse().expect("the server's port");
    let url = |mode: &str| format!("gemini://127.0.0.1:{port}/{mode}");
    let mut r = reactor();

    let ok = get(&mut r, &url("ok")).unwrap();
    assert_eq!((ok.code(), ok.body.as_slice()), (20, &b"whole body"[..]));

    match get(&mut r, &url("truncated")) {
        Err(e @ FetchError::Truncated { received: 12, .. }) => {
            assert!(
                e.to_string().contains("without close_notify after 12 bytes"),
                "{e}"
            )
        }
        other => panic!("expected a truncation, got {other:?}"),
    }
    assert!(matches!(
        get(&mut r, &url("header-then-cut")),
        Err(FetchError::Truncated { received: 0, .. })
    ));

    let e = bad_response(get(&mut r, &url("no-crlf")));
    assert!(e.contains("after 14 bytes of an incomplete header"), "{e}");
    let e = bad_response(get(&mut r, &url("short")));
    assert!(e.contains("after 1 bytes of an incomplete header"), "{e}");
    let e = bad_response(get(&mut r, &url("long-meta")));
    assert!(e.contains("no CRLF within the first 1029 bytes"), "{e}");
    let e = bad_response(get(&mut r, &url("http")));
    assert!(
        e.contains("does not begin with a status code (first byte 'H')"),
        "{e}"
    );
    let e = bad_response(get(&mut r, &url("lf")));
    assert!(e.contains("LF alone"), "{e}");
    let e = bad_response(get(&mut r, &url("control")));
    assert!(e.contains("control character"), "{e}");
    let e = bad_response(get(&mut r, &url("bad-utf8")));
    assert!(e.contains("not valid UTF-8"), "{e}");
    let e = bad_response(get(&mut r, &url("silent")));
    assert!(e.contains("without answering"), "{e}");
    assert!(
        e.starts_with(&format!("127.0.0.1:{port} sent an invalid response: ")),
        "{e}"
    );

    // Still serving after all that: the client left nothing behind.
    assert_eq!(get(&mut r, &url("ok")).unwrap().code(), 20);
    let _ = get(&mut r, &url("quit"));
    let status = child.wait().unwrap();
    assert!(status.success(), "the Python server failed: {status}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_server_without_tls_is_a_tls_error() {
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = plain.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = plain.accept().unwrap();
        let _ = s.write_all(b"20 text/gemini\r\nnot encrypted\r\n");
    });
    let mut r = reactor();
    match get(&mut r, &format!("gemini://127.0.0.1:{port}/")) {
        Err(e @ FetchError::Tls { .. }) => {
            assert!(
                e.to_string()
                    .starts_with(&format!("127.0.0.1:{port}: TLS failed: ")),
                "{e}"
            )
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
    server.join().unwrap();
}
