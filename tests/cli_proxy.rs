//! `--proxy-protocol` end to end: `twistor echo` behind a PROXY v1 header
//! sees (and logs) the header's client, a connection without one is
//! closed, `--proxy-trusted` and `optional` decide who may send one, TLS
//! runs above it, and `twistor gemini` logs the header's client as the
//! requester, from its flag or its config file. Flags that cannot go
//! together exit 2.

mod programs;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use programs::{run, twistor, Running, WAIT};
use twistor::transports::tls::rustls::pki_types::ServerName;
use twistor::transports::tls::rustls::{ClientConfig, ClientConnection, StreamOwned};
use twistor::transports::tls::{generate_self_signed_pem, ClientConfigBuilder, TofuStore};

const HEADER: &[u8] = b"PROXY TCP4 192.0.2.1 127.0.0.1 56324 1234\r\n";
const CLIENT: &str = "192.0.2.1:56324";

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("twistor-cli-proxy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn echo_server(args: &[&str]) -> (Running, u16) {
    let server = Running::start({
        let mut c = twistor();
        c.args(["echo", "--host", "127.0.0.1", "--port", "0"]).args(args);
        c.env("RUST_LOG", "debug");
        c
    });
    let port = server.wait_port("echo on");
    (server, port)
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// Send `data`; what comes back before the server closes or `want` bytes
/// have come.
fn exchange(s: &mut TcpStream, data: &[u8], want: usize) -> Vec<u8> {
    s.write_all(data).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while got.len() < want {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break, // closed (or reset) by the server
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

#[test]
fn echo_behind_a_v1_header_sees_the_client_and_closes_without_one() {
    let (server, port) = echo_server(&["--proxy-protocol"]);
    server.wait_line("the PROXY setting", |l| {
        l.contains("PROXY protocol header required") && l.contains("any client can claim any address")
    });
    let mut c = connect(port);
    let mut sent = HEADER.to_vec();
    sent.extend_from_slice(b"hello");
    assert_eq!(
        exchange(&mut c, &sent, 5),
        b"hello",
        "the header must not be echoed"
    );
    server.wait_line("the header's client", |l| {
        l.contains(&format!("{CLIENT}: connected"))
    });
    server.wait_line("the read, by the header's client", |l| {
        l.contains(&format!("{CLIENT}: 5 bytes"))
    });
    // No header: closed, nothing echoed.
    let mut c = connect(port);
    assert_eq!(exchange(&mut c, b"hello\r\n", 1), b"");
    let (status, _) = server.stop();
    assert!(status.success(), "{status:?}");
}

#[test]
fn echo_trusts_only_the_networks_named() {
    let (server, port) = echo_server(&["--proxy-protocol=required", "--proxy-trusted", "10.0.0.0/8"]);
    server.wait_line("the PROXY setting", |l| l.contains("trusted 10.0.0.0/8"));
    // 127.0.0.1 may not send a header: closed.
    let mut c = connect(port);
    let mut sent = HEADER.to_vec();
    sent.extend_from_slice(b"hello");
    assert_eq!(exchange(&mut c, &sent, 5), b"");
    server.stop();

    // Optional, with loopback trusted: a header is read when there is one,
    // and a connection without one is served as it is.
    let (server, port) = echo_server(&["--proxy-protocol=optional", "--proxy-trusted", "127.0.0.1"]);
    let mut c = connect(port);
    assert_eq!(exchange(&mut c, &sent, 5), b"hello");
    server.wait_line("the header's client", |l| {
        l.contains(&format!("{CLIENT}: connected"))
    });
    let mut c = connect(port);
    assert_eq!(exchange(&mut c, b"direct", 6), b"direct");
    server.wait_line("the direct client", |l| {
        l.contains("127.0.0.1:") && l.contains(": 6 bytes")
    });
    server.stop();
}

/// A TLS client trusting anything (these tests are about addresses).
fn any_server() -> Arc<ClientConfig> {
    ClientConfigBuilder::new()
        .tofu(TofuStore::in_memory())
        .build()
        .unwrap()
}

/// Send the PROXY header on a new connection, then speak TLS over it.
fn tls_behind_header(port: u16) -> StreamOwned<ClientConnection, TcpStream> {
    let mut sock = connect(port);
    sock.write_all(HEADER).unwrap();
    let conn = ClientConnection::new(any_server(), ServerName::try_from("localhost").unwrap()).unwrap();
    StreamOwned::new(conn, sock)
}

#[test]
fn tls_echo_reads_the_header_before_the_handshake() {
    let (server, port) = echo_server(&["--tls", "--proxy-protocol"]);
    let mut tls = tls_behind_header(port);
    tls.write_all(b"over TLS").unwrap();
    let mut back = [0u8; 8];
    tls.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"over TLS");
    server.wait_line("the header's client", |l| {
        l.contains(&format!("{CLIENT}: connected"))
    });
    server.stop();
}

fn gemini_ask(port: u16) -> String {
    let mut tls = tls_behind_header(port);
    tls.write_all(b"gemini://localhost/\r\n").unwrap();
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

fn gemini_server(dir: &Path, args: &[&str]) -> (Running, u16) {
    let server = Running::start({
        let mut c = twistor();
        c.args(["gemini", "--host", "127.0.0.1", "--port", "0"])
            .args(args);
        c.env("XDG_DATA_HOME", dir.join("data"));
        c
    });
    let port = server.wait_port("Gemini on");
    (server, port)
}

#[test]
fn gemini_logs_the_headers_client_from_its_flag_and_its_config_file() {
    let dir = temp_dir("gemini");
    let (server, port) = gemini_server(&dir, &["--proxy-protocol", "--state-dir", dir.to_str().unwrap()]);
    assert!(gemini_ask(port).starts_with("20 "));
    server.wait_line("the access log", |l| {
        l.contains("access] 192.0.2.1 \"gemini://localhost/\" 20")
    });
    server.stop();

    // The same from the config file, with the proxy named.
    std::fs::create_dir_all(dir.join("site")).unwrap();
    std::fs::write(dir.join("site/index.gmi"), "# behind a proxy\n").unwrap();
    let (cert, key) = generate_self_signed_pem(&["localhost"]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
    std::fs::write(
        dir.join("capsules.toml"),
        "proxy_protocol = \"required\"\nproxy_trusted = [\"127.0.0.0/8\"]\nproxy_timeout = 5\n\
         [[vhost]]\nhostname = \"localhost\"\ndir = \"site\"\n\
         tls_certfile = \"cert.pem\"\ntls_keyfile = \"key.pem\"\n",
    )
    .unwrap();
    let config = dir.join("capsules.toml");
    let (server, port) = gemini_server(&dir, &["--config", config.to_str().unwrap()]);
    server.wait_line("the PROXY setting", |l| l.contains("trusted 127.0.0.0/8; 5 s"));
    let answer = gemini_ask(port);
    assert!(answer.contains("behind a proxy"), "{answer}");
    server.wait_line("the access log", |l| {
        l.contains("access] 192.0.2.1 \"gemini://localhost/\" 20")
    });
    // Without a header: closed before TLS.
    let mut c = connect(port);
    assert_eq!(exchange(&mut c, b"\x16\x03\x01\x00\x05hello", 1), b"");
    server.stop();

    // A bad key in the file is one line and status 2.
    std::fs::write(
        &config,
        "proxy_protocol = \"sometimes\"\n[[vhost]]\nhostname = \"x\"\ndir = \"site\"\n",
    )
    .unwrap();
    let out = run({
        let mut c = twistor();
        c.args(["gemini", "--port", "0", "--config"]).arg(&config);
        c
    });
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(
        out.stderr.contains("proxy_protocol = \"sometimes\""),
        "{}",
        out.stderr
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn proxy_flags_are_refused_with_udp_and_explained_in_help() {
    for args in [
        &["echo", "--udp", "--proxy-protocol"][..],
        &["echo", "--no-tcp", "--udp", "--proxy-protocol=optional"],
        &["echo", "--proxy-trusted", "10.0.0.0/8"],
        &["echo", "--proxy-protocol=sometimes"],
        &["echo", "--proxy-protocol", "--proxy-trusted", "10.0.0.0/33"],
        &["gemini", "--proxy-trusted", "10.0.0.1"],
    ] {
        let out = run({
            let mut c = twistor();
            c.args(args);
            c
        });
        assert_eq!(out.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.starts_with("error: "), "{args:?}: {}", out.stderr);
    }
    for cmd in ["echo", "gemini"] {
        let out = run({
            let mut c = twistor();
            c.args([cmd, "--help"]);
            c
        });
        for needle in [
            "--proxy-protocol[=<MODE>]",
            "what the bare flag means",
            "any client can claim any address",
            "--proxy-timeout <SECS>",
            "[default: 10]",
        ] {
            assert!(
                out.stdout.contains(needle),
                "{cmd} --help lacks {needle:?}:\n{}",
                out.stdout
            );
        }
    }
}
