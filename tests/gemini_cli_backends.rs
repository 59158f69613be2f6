//! `twistor gemini --config` with the backend keys: Titan uploads into a
//! host's directory, an SCGI application (Python) at a prefix, a whole
//! host proxied to an upstream Gemini server, and `strict_sni`; Python's
//! `ssl` module is the client.

mod gemini_common;

use std::process::{Command, Stdio};

use gemini_common::*;
use twistor::protocols::gemini::{Server, StaticFiles, VirtualHost};

#[test]
fn titan_scgi_and_proxy_from_the_config_file() {
    if !have("python3") {
        return;
    }
    let dir = temp_dir("cli-backends");
    std::fs::create_dir_all(dir.join("site")).unwrap();
    std::fs::create_dir_all(dir.join("upstream")).unwrap();
    std::fs::write(dir.join("site/index.gmi"), "# Site\n").unwrap();
    std::fs::write(dir.join("upstream/index.gmi"), "# Upstream\n").unwrap();
    let scgi = ScgiBackend::start("tcp");

    // The upstream: a twistor server in this process.
    let upstream = Server::builder()
        .host(VirtualHost::new(
            "proxied.example",
            StaticFiles::new(dir.join("upstream")),
        ))
        .build()
        .unwrap();
    let up_fp = upstream.fingerprints()[0].1.clone();
    let mut r = reactor();
    let up = listen(&mut r, &upstream, "127.0.0.1");

    let config = dir.join("gemini.toml");
    std::fs::write(
        &config,
        format!(
            r#"state_dir = "state"
upload_timeout = 5
strict_sni = true

[[vhost]]
hostname = "site.example"
dir = "site"
[vhost.titan]
token = "tok"
max_size = 100
[[vhost.scgi]]
prefix = "/app"
address = "127.0.0.1:{}"

[[vhost]]
hostname = "proxied.example"
[[vhost.proxy]]
upstream = "127.0.0.1:{}"
sni = "proxied.example"
rewrite_host = true
fingerprint = ["{up_fp}"]
"#,
            scgi.address,
            up.port()
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_twistor"))
        .args([
            "gemini",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--config",
        ])
        .arg(&config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    while !rx.recv_timeout(WAIT).expect("server start").contains("Gemini on") {}
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let site = |path: &str| format!("gemini://site.example:{port}{path}");
    let upload = format!("titan://site.example:{port}/new.gmi;size=6;token=tok\r\nhello\n");
    let a = ask_python(
        &mut r,
        vec![
            Ask::bytes(addr, upload.into_bytes()).sni(Some("site.example")),
            Ask::line(addr, &site("/new.gmi")).sni(Some("site.example")),
            Ask::line(addr, &site("/app/env")).sni(Some("site.example")),
            Ask::line(addr, &format!("gemini://proxied.example:{port}/")).sni(Some("proxied.example")),
            Ask::line(addr, &format!("gemini://proxied.example:{port}/")).sni(Some("site.example")),
        ],
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    assert_eq!(a[0].header(), format!("30 gemini://site.example:{port}/new.gmi"));
    assert_eq!(a[1].body(), b"hello\n");
    assert_eq!(a[2].header(), "20 text/plain");
    assert!(String::from_utf8_lossy(a[2].body()).contains("SCRIPT_NAME=/app\n"));
    assert_eq!(a[3].body(), b"# Upstream\n");
    assert_eq!(a[4].status(), 53, "strict_sni");
    drop(scgi);
    std::fs::remove_dir_all(dir).unwrap();
}
