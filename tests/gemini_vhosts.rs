//! Virtual hosts over SNI: two names get two certificates and two roots;
//! an unknown host is 53; a config-file setup through `twistor gemini
//! --config`; the rate limit answers 44 with the seconds to wait.

mod gemini_common;

use std::process::{Command, Stdio};

use gemini_common::*;
use twistor::protocols::gemini::{Server, ServerOptions, StaticFiles, VirtualHost};
use twistor::transports::tls::{certs_from_pem, key_from_pem, sha256_fingerprint, Passphrase};

#[test]
fn two_hosts_two_certificates_two_roots() {
    if !have("python3") {
        return;
    }
    let dir = temp_dir("vhosts");
    for (host, text) in [("one", "# One\n"), ("two", "# Two\n")] {
        std::fs::create_dir_all(dir.join(host)).unwrap();
        std::fs::write(dir.join(host).join("index.gmi"), text).unwrap();
    }
    let (c1, k1) = twistor::transports::tls::generate_self_signed_pem(&["one.example"]).unwrap();
    let chain1 = certs_from_pem(c1.as_bytes()).unwrap();
    let key1 = key_from_pem(k1.as_bytes(), &Passphrase::None).unwrap();
    let fp1 = sha256_fingerprint(&chain1[0]);
    let server = Server::builder()
        .host(VirtualHost::new("one.example", StaticFiles::new(dir.join("one"))).cert(chain1, key1))
        .host(VirtualHost::new("two.example", StaticFiles::new(dir.join("two"))))
        .state_dir(dir.join("state"))
        .build()
        .unwrap();
    let fp2 = server.fingerprints()[1].1.clone();
    assert_ne!(fp1, fp2);
    let mut r = reactor();
    let addr = listen(&mut r, &server, "127.0.0.1");
    let p = addr.port();
    let a = ask_python(
        &mut r,
        vec![
            Ask::line(addr, &format!("gemini://one.example:{p}/")).sni(Some("one.example")),
            Ask::line(addr, &format!("gemini://two.example:{p}/")).sni(Some("two.example")),
            Ask::line(addr, &format!("gemini://unknown.example:{p}/")).sni(Some("unknown.example")),
            // No SNI at all: the first host's certificate is the default.
            Ask::line(addr, &format!("gemini://two.example:{p}/")).sni(None),
        ],
    );
    assert_eq!((a[0].status(), a[0].body()), (20, &b"# One\n"[..]));
    assert_eq!(a[0].server_cert, fp1);
    assert_eq!((a[1].status(), a[1].body()), (20, &b"# Two\n"[..]));
    assert_eq!(a[1].server_cert, fp2);
    assert_eq!(a[2].status(), 53);
    assert_eq!(a[3].server_cert, fp1);
    assert_eq!(a[3].body(), b"# Two\n", "the URL's host picks the site");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn rate_limit_answers_44_with_the_seconds_to_wait() {
    if !have("python3") {
        return;
    }
    let dir = temp_dir("rate");
    std::fs::write(dir.join("index.gmi"), "hi\n").unwrap();
    let server = Server::builder()
        .host(VirtualHost::new("localhost", StaticFiles::new(&dir)))
        .options(ServerOptions {
            // 2 requests per 10 minutes: the third waits 300 s.
            rate_limit: Some("2/10m".parse().unwrap()),
            ..ServerOptions::default()
        })
        .build()
        .unwrap();
    let mut r = reactor();
    let addr = listen(&mut r, &server, "127.0.0.1");
    let url = format!("gemini://localhost:{}/", addr.port());
    let a = ask_python(
        &mut r,
        vec![
            Ask::line(addr, &url),
            Ask::line(addr, &url),
            Ask::line(addr, &url),
        ],
    );
    assert_eq!(a[0].status(), 20);
    assert_eq!(a[1].status(), 20);
    let wait: u64 = a[2].header().strip_prefix("44 ").expect("44").parse().unwrap();
    assert!((299..=300).contains(&wait), "{}", a[2].header());
    assert!(a[2].close_notify);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn config_file_vhosts_from_the_command_line() {
    if !have("python3") {
        return;
    }
    let dir = temp_dir("vhost-config");
    for host in ["alpha", "beta"] {
        std::fs::create_dir_all(dir.join(host)).unwrap();
        std::fs::write(dir.join(host).join("index.gmi"), format!("# {host}\n")).unwrap();
    }
    let config = dir.join("capsules.toml");
    std::fs::write(
        &config,
        "state_dir = \"state\"\n\n[[vhost]]\nhostname = \"alpha.example\"\ndir = \"alpha\"\n\n\
         [[vhost]]\nhostname = \"beta.example\"\ndir = \"beta\"\ndefault_lang = \"fr\"\n",
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
    let mut r = reactor();
    let a = ask_python(
        &mut r,
        vec![
            Ask::line(addr, &format!("gemini://alpha.example:{port}/")).sni(Some("alpha.example")),
            Ask::line(addr, &format!("gemini://beta.example:{port}/")).sni(Some("beta.example")),
            Ask::line(addr, &format!("gemini://gamma.example:{port}/")).sni(Some("gamma.example")),
        ],
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    assert_eq!(
        (a[0].header(), a[0].body()),
        ("20 text/gemini".to_string(), &b"# alpha\n"[..])
    );
    assert_eq!(
        (a[1].header(), a[1].body()),
        ("20 text/gemini; lang=fr".to_string(), &b"# beta\n"[..])
    );
    assert_ne!(
        a[0].server_cert, a[1].server_cert,
        "one generated certificate per host"
    );
    assert_eq!(a[2].status(), 53);
    assert!(dir.join("state/alpha.example.crt").exists() && dir.join("state/beta.example.crt").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

/// The Gemini specification (v0.24) makes clients send SNI for a host
/// name, but defines `53` by whether the server serves the URL's host,
/// not by SNI (a proxy request's host differs from the proxy's name by
/// design): by default the URL's host picks the site. `strict_sni` is the
/// opt-in for servers whose hosts must not be reached over a connection
/// made for another.
#[test]
fn sni_and_url_host_by_default_and_strictly() {
    if !have("python3") {
        return;
    }
    let dir = temp_dir("sni-strict");
    for (host, text) in [("one", "# One\n"), ("two", "# Two\n")] {
        std::fs::create_dir_all(dir.join(host)).unwrap();
        std::fs::write(dir.join(host).join("index.gmi"), text).unwrap();
    }
    let server = |strict_sni| {
        Server::builder()
            .host(VirtualHost::new("one.example", StaticFiles::new(dir.join("one"))).alias("127.0.0.1"))
            .host(VirtualHost::new("two.example", StaticFiles::new(dir.join("two"))))
            .options(ServerOptions {
                strict_sni,
                ..ServerOptions::default()
            })
            .build()
            .unwrap()
    };
    let mut r = reactor();
    let lenient = listen(&mut r, &server(false), "127.0.0.1");
    let strict = listen(&mut r, &server(true), "127.0.0.1");
    let asks = |addr: std::net::SocketAddr| {
        let p = addr.port();
        vec![
            Ask::line(addr, &format!("gemini://two.example:{p}/")).sni(Some("one.example")),
            Ask::line(addr, &format!("gemini://two.example:{p}/")).sni(Some("TWO.example")),
            Ask::line(addr, &format!("gemini://two.example:{p}/")).sni(None),
            Ask::line(addr, &format!("gemini://127.0.0.1:{p}/")).sni(None),
            Ask::line(addr, &format!("gemini://three.example:{p}/")).sni(Some("one.example")),
        ]
    };
    let mut all = asks(lenient);
    all.extend(asks(strict));
    let a = ask_python(&mut r, all);
    let statuses: Vec<u8> = a.iter().map(|a| a.status()).collect();
    assert_eq!(statuses, [20, 20, 20, 20, 53, 53, 20, 53, 20, 53], "{a:?}");
    assert_eq!(a[0].body(), b"# Two\n", "the URL's host picks the site");
    assert_eq!(
        a[5].header(),
        "53 The URL's host is not the name this connection was made for"
    );
    assert_eq!(a[8].body(), b"# One\n", "an address host needs no SNI");
    std::fs::remove_dir_all(dir).unwrap();
}
