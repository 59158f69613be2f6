//! SCGI applications behind the Gemini server, with a real SCGI
//! application written in Python (over TCP and a Unix socket) and
//! Python's `ssl` module as the client: the variables it gets (and
//! `CONTENT_LENGTH` first), a header split across writes, a Titan body
//! passed on, a bad header (42), an application that does not answer in
//! time (42), and one that is not there (42).

mod gemini_common;

use std::collections::HashMap;
use std::time::Duration;

use gemini_common::*;
use twistor::protocols::gemini::{Router, Scgi, ScgiAddress, ScgiOptions, Server, VirtualHost};

fn env_of(answer: &Answer) -> HashMap<String, String> {
    let text = String::from_utf8_lossy(answer.body()).into_owned();
    let (vars, _) = text.split_once("BODY=").unwrap_or((&text, ""));
    vars.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn scgi_applications_over_tcp_and_unix_sockets() {
    if !have("python3") {
        return;
    }
    let dir = temp_dir("scgi");
    let tcp = ScgiBackend::start("tcp");
    let sock = dir.join("app.sock");
    let unix = ScgiBackend::start(sock.to_str().unwrap());
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);

    let opts = ScgiOptions {
        timeout: Duration::from_secs(2),
        max_upload: Some(1 << 20),
    };
    let mut app = Router::new();
    app.mount(
        "/app",
        Scgi::with_options(format!("127.0.0.1:{}", tcp.address).parse().unwrap(), opts),
    );
    app.mount("/unix", Scgi::new(ScgiAddress::Unix(sock.clone())));
    app.mount(
        "/dead",
        Scgi::new(format!("127.0.0.1:{dead_port}").parse().unwrap()),
    );
    let server = Server::builder()
        .host(VirtualHost::new("localhost", app))
        .build()
        .unwrap();
    let mut r = reactor();
    let addr = listen(&mut r, &server, "127.0.0.1");
    let p = addr.port();
    let url = |path: &str| format!("gemini://localhost:{p}{path}");
    let upload = format!("titan://localhost:{p}/app/env;size=5;mime=text/plain;token=t0k\r\nhello");
    let a = ask_python(
        &mut r,
        vec![
            Ask::line(addr, &url("/app/env?a%20b")),
            Ask::line(addr, &url("/unix/env")),
            Ask::line(addr, &url("/app/split")),
            Ask::bytes(addr, upload.into_bytes()),
            Ask::line(addr, &url("/app/bad")),
            Ask::line(addr, &url("/app/silent")),
            Ask::line(addr, &url("/dead/env")),
            Ask::line(addr, &url("/app/nothing-here")),
            // Uploads go only where they are allowed.
            Ask::bytes(
                addr,
                format!("titan://localhost:{p}/unix/env;size=1\r\nx").into_bytes(),
            ),
        ],
    );

    assert_eq!(a[0].header(), "20 text/plain");
    assert!(a[0].close_notify);
    let env = env_of(&a[0]);
    let order: Vec<&str> = env["ORDER"].split(',').collect();
    assert_eq!(
        &order[..2],
        ["CONTENT_LENGTH", "SCGI"],
        "SCGI wants CONTENT_LENGTH first"
    );
    let expect = [
        ("CONTENT_LENGTH", "0".to_string()),
        ("SCGI", "1".to_string()),
        ("GATEWAY_INTERFACE", "CGI/1.1".to_string()),
        ("SERVER_PROTOCOL", "GEMINI".to_string()),
        ("GEMINI_URL", url("/app/env?a%20b")),
        ("SCRIPT_NAME", "/app".to_string()),
        ("PATH_INFO", "/env".to_string()),
        ("QUERY_STRING", "a%20b".to_string()),
        ("SERVER_NAME", "localhost".to_string()),
        ("SERVER_PORT", p.to_string()),
        ("REMOTE_ADDR", "127.0.0.1".to_string()),
        ("REMOTE_HOST", "127.0.0.1".to_string()),
        ("TLS_VERSION", "TLSv1.3".to_string()),
    ];
    for (k, v) in expect {
        assert_eq!(env.get(k), Some(&v), "{k}");
    }
    assert!(env["TLS_CIPHER"].starts_with("TLS_"), "{}", env["TLS_CIPHER"]);
    assert!(env["SERVER_SOFTWARE"].starts_with("twistor/"));
    assert!(!env.contains_key("AUTH_TYPE"));

    let env = env_of(&a[1]);
    assert_eq!(
        (env["SCRIPT_NAME"].as_str(), env["PATH_INFO"].as_str()),
        ("/unix", "/env")
    );

    assert_eq!(
        (a[2].header(), a[2].body()),
        ("20 text/gemini".to_string(), &b"split body\n"[..])
    );

    assert_eq!(a[3].status(), 20, "{:?}", a[3]);
    let env = env_of(&a[3]);
    assert_eq!(env["CONTENT_LENGTH"], "5");
    assert_eq!(env["CONTENT_TYPE"], "text/plain");
    assert_eq!(env["TITAN_TOKEN"], "t0k");
    assert!(a[3].body().ends_with(b"BODY=hello"));

    assert_eq!(a[4].header(), "42 The application did not answer");
    assert_eq!(a[5].header(), "42 The application did not answer");
    assert_eq!(a[6].header(), "42 The application did not answer");
    assert_eq!(a[7].header(), "51 No such page");
    assert_eq!(a[8].status(), 53);
    for (i, answer) in a.iter().enumerate() {
        assert!(answer.close_notify, "answer {i}: {answer:?}");
    }
    drop((tcp, unix));
    std::fs::remove_dir_all(dir).unwrap();
}

/// A Titan client that sends its body in pieces with pauses between
/// (a slow uploader, on purpose), then prints the answer's header.
const PY_SLOW_UPLOAD: &str = r#"
import socket, ssl, sys, time
port, pieces, gap = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30), server_hostname="localhost")
s.sendall(("titan://localhost:%d/app/sink;size=%d\r\n" % (port, pieces * 1000)).encode())
for _ in range(pieces):
    time.sleep(gap)
    s.sendall(b"x" * 1000)
got = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    got += chunk
print(got.decode().split("\r\n")[0], flush=True)
"#;

/// The application's answer is due within the timeout of the upload's
/// last byte, not of its first: an upload slower than the timeout, but
/// never silent for that long, goes through.
#[test]
fn a_slow_upload_is_not_an_application_timeout() {
    if !have("python3") {
        return;
    }
    let scgi = ScgiBackend::start("tcp");
    let opts = ScgiOptions {
        timeout: Duration::from_secs(2),
        max_upload: Some(1 << 20),
    };
    let mut app = Router::new();
    app.mount(
        "/app",
        Scgi::with_options(format!("127.0.0.1:{}", scgi.address).parse().unwrap(), opts),
    );
    let server = Server::builder()
        .host(VirtualHost::new("localhost", app))
        .build()
        .unwrap();
    let mut r = reactor();
    let port = listen(&mut r, &server, "127.0.0.1").port();
    // 20 pieces 0.2 s apart: 4 s in all, twice the timeout.
    let out = in_thread(&mut r, move || {
        std::process::Command::new("python3")
            .args(["-c", PY_SLOW_UPLOAD, &port.to_string(), "20", "0.2"])
            .output()
            .unwrap()
    });
    let header = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        header,
        "20 text/plain",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(scgi);
}
