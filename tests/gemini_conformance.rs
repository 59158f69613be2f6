//! Conformance: one malformed or edge-case request per rule of the Gemini
//! specification, against a live server on loopback (IPv4 and IPv6), each
//! with its expected status; close_notify is checked on every response.
//! The client is Python's `ssl` module; `openssl s_client` is checked too.

mod gemini_common;

use std::net::SocketAddr;
use std::time::Duration;

use gemini_common::*;
use twistor::protocols::gemini::{Reply, Response, Router, Server, ServerOptions, Status, VirtualHost};

fn app() -> Router {
    let mut app = Router::new();
    app.route("/", |_| Ok(Response::gemtext("root\n")?));
    app.route("/say/<word>", |req| {
        Ok(Response::gemtext(req.capture("word").unwrap().to_string())?)
    });
    app.route("/query", |req| {
        Ok(Response::gemtext(req.query().unwrap_or_default())?)
    });
    app.route("/status/<code>", |req| {
        let code: u8 = req.capture("code").unwrap().parse()?;
        let status = Status::from_code(code).ok_or_else(Response::not_found_default)?;
        let meta = match code {
            20 => "text/plain",
            30 | 31 => "/",
            _ => "meta here",
        };
        Ok(Response::new(status, meta)?.with_body("body"))
    });
    app.route("/panic", |_| panic!("a bug in the application"));
    app.route("/badmeta", |_| Ok(Response::not_found("a\r\n20 text/gemini")?));
    app.route_deferred("/later", |_, cx| {
        let responder = cx.defer();
        cx.reactor().call_later(Duration::from_millis(10), move |r| {
            let _ = responder.send(r, Response::gemtext("later\n").unwrap());
        });
        Ok(Reply::Later)
    });
    app
}

fn server() -> Server {
    let mut cafe = Router::new();
    cafe.route("/", |_| Ok(Response::gemtext("café host\n")?));
    Server::builder()
        .host(
            VirtualHost::new("localhost", app())
                .alias("127.0.0.1")
                .alias("::1"),
        )
        .host(VirtualHost::new("café.example", cafe))
        .options(ServerOptions {
            request_timeout: Duration::from_millis(700),
            ..ServerOptions::default()
        })
        .build()
        .unwrap()
}

/// (what the case checks, request bytes, expected status or 0 for "closed
/// without a response", expected body if any)
fn cases(addr: SocketAddr) -> Vec<(&'static str, Vec<u8>, u8, Option<&'static str>)> {
    let p = addr.port();
    let line = |s: String| format!("{s}\r\n").into_bytes();
    let mut long = format!("gemini://localhost:{p}/");
    long.push_str(&"a".repeat(1024 - long.len()));
    assert_eq!(long.len(), 1024);
    let too_long = format!("{long}b");
    let mut cases = vec![
        (
            "a plain request",
            line(format!("gemini://localhost:{p}/")),
            20,
            Some("root\n"),
        ),
        (
            "an empty path is /",
            line(format!("gemini://localhost:{p}")),
            20,
            Some("root\n"),
        ),
        ("no port", line("gemini://localhost/".into()), 20, Some("root\n")),
        (
            "host case",
            line(format!("gemini://LocalHost:{p}/")),
            20,
            Some("root\n"),
        ),
        (
            "IPv4 literal",
            line(format!("gemini://127.0.0.1:{p}/")),
            20,
            Some("root\n"),
        ),
        (
            "IPv6 literal",
            line(format!("gemini://[::1]:{p}/")),
            20,
            Some("root\n"),
        ),
        (
            "unserved literal",
            line(format!("gemini://192.0.2.1:{p}/")),
            53,
            None,
        ),
        (
            "percent-decoding",
            line(format!("gemini://localhost:{p}/say/caf%C3%A9")),
            20,
            Some("café"),
        ),
        (
            "query decoding",
            line(format!("gemini://localhost:{p}/query?a%20b")),
            20,
            Some("a b"),
        ),
        (
            "IDN host",
            line(format!("gemini://café.example:{p}/")),
            20,
            Some("café host\n"),
        ),
        (
            "IDN in punycode",
            line(format!("gemini://xn--caf-dma.example:{p}/")),
            20,
            Some("café host\n"),
        ),
        ("1024 bytes", line(long), 51, None),
        ("1025 bytes", line(too_long), 59, None),
        (
            "LF without CR",
            format!("gemini://localhost:{p}/\n").into_bytes(),
            59,
            None,
        ),
        ("empty request", b"\r\n".to_vec(), 59, None),
        (
            "invalid UTF-8",
            b"gemini://localhost/\xff\xfe\r\n".to_vec(),
            59,
            None,
        ),
        (
            "byte-order mark",
            line(format!("\u{feff}gemini://localhost:{p}/")),
            59,
            None,
        ),
        ("relative URL", line("/index.gmi".into()), 59, None),
        (
            "no scheme",
            line(format!("localhost:{p}/index.gmi").replacen(':', "", 1)),
            59,
            None,
        ),
        (
            "userinfo",
            line(format!("gemini://user@localhost:{p}/")),
            59,
            None,
        ),
        (
            "empty userinfo",
            line(format!("gemini://@localhost:{p}/")),
            59,
            None,
        ),
        ("fragment", line(format!("gemini://localhost:{p}/#top")), 59, None),
        (
            "encoded invalid UTF-8",
            line(format!("gemini://localhost:{p}/%ff")),
            59,
            None,
        ),
        (
            "control character",
            line(format!("gemini://localhost:{p}/a\tb")),
            59,
            None,
        ),
        ("other scheme", line(format!("https://localhost:{p}/")), 53, None),
        ("other host", line(format!("gemini://example.com:{p}/")), 53, None),
        (
            "other port",
            line(format!("gemini://localhost:{}/", p.wrapping_add(1).max(1))),
            53,
            None,
        ),
        (
            "a handler that panics",
            line(format!("gemini://localhost:{p}/panic")),
            42,
            None,
        ),
        (
            "a meta with CRLF is never sent",
            line(format!("gemini://localhost:{p}/badmeta")),
            42,
            None,
        ),
        (
            "a deferred answer",
            line(format!("gemini://localhost:{p}/later")),
            20,
            Some("later\n"),
        ),
        (
            "unknown path",
            line(format!("gemini://localhost:{p}/nothing")),
            51,
            None,
        ),
        (
            "request timeout",
            format!("gemini://localhost:{p}/").into_bytes(),
            0,
            None,
        ),
    ];
    for s in Status::ALL {
        let body = (s == Status::Success).then_some("body");
        cases.push((
            "every status",
            line(format!("gemini://localhost:{p}/status/{}", s.code())),
            s.code(),
            body,
        ));
    }
    cases
}

fn check(ip: &str) {
    if !have("python3") {
        return;
    }
    let mut r = reactor();
    let server = server();
    let addr = listen(&mut r, &server, ip);
    let cases = cases(addr);
    let asks = cases
        .iter()
        .map(|(_, data, _, _)| Ask::bytes(addr, data.clone()))
        .collect();
    let answers = ask_python(&mut r, asks);
    for ((what, _, status, body), a) in cases.iter().zip(&answers) {
        assert_eq!(a.error, None, "{what}: {a:?}");
        assert_eq!(a.status(), *status, "{what}: got {:?}", a.header());
        assert!(a.close_notify, "{what}: no close_notify");
        if *status == 0 {
            assert!(a.data.is_empty(), "{what}: {a:?}");
        }
        if let Some(b) = body {
            assert_eq!(String::from_utf8_lossy(a.body()), *b, "{what}");
        } else if *status != 20 {
            assert!(a.body().is_empty(), "{what}: a body with {}", a.header());
        }
        if *status != 0 {
            assert!(
                a.data.windows(2).any(|w| w == b"\r\n"),
                "{what}: header without CRLF"
            );
        }
        assert!(
            a.tls_version == "TLSv1.3" || a.tls_version == "TLSv1.2",
            "{what}: {}",
            a.tls_version
        );
    }
    // Status lines with a meta have exactly one space after the code.
    let meta_case = answers.iter().find(|a| a.status() == 44).unwrap();
    assert_eq!(meta_case.header(), "44 meta here");
}

#[test]
fn conformance_over_ipv4() {
    check("127.0.0.1");
}

#[test]
fn conformance_over_ipv6() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("SKIPPED: no IPv6 loopback here");
        return;
    }
    check("[::1]");
}

/// `openssl s_client -servername`: the response and the body, and the TLS
/// close it reports.
#[test]
fn openssl_s_client_is_served() {
    if !have("openssl") {
        return;
    }
    let mut r = reactor();
    let server = server();
    let addr = listen(&mut r, &server, "127.0.0.1");
    let out = in_thread(&mut r, move || {
        use std::io::Write;
        let mut child = std::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &addr.to_string(),
                "-servername",
                "localhost",
                "-quiet",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(format!("gemini://localhost:{}/say/hello\r\n", addr.port()).as_bytes())
            .unwrap();
        // Keep stdin open: s_client must end because the server closed.
        let out = child.wait_with_output().unwrap();
        drop(stdin);
        out
    });
    assert_eq!(String::from_utf8_lossy(&out.stdout), "20 text/gemini\r\nhello");
}
