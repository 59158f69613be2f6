//! Reloading without a restart: certificate files (and `twistor gemini`'s
//! config file) are replaced under a running server and SIGHUP sent. A
//! connection opened before the reload and still open finishes on the old
//! certificate (and, for Gemini, the old site), a new connection gets the
//! new one, and a broken file keeps what was there, with a log line that
//! says why. Every wait is for the server's own log line, with a bound.

mod programs;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use programs::{twistor, Running, WAIT};
use twistor::transports::tls::rustls::pki_types::ServerName;
use twistor::transports::tls::rustls::{ClientConfig, ClientConnection, StreamOwned};
use twistor::transports::tls::{
    certs_from_pem, generate_self_signed_pem, sha256_fingerprint, ClientConfigBuilder,
};

type Tls = StreamOwned<ClientConnection, TcpStream>;

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("twistor-reload-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A new certificate for localhost written to `dir` as cert.pem and
/// key.pem (each replaced whole, by rename, as a renewal tool does); its
/// SHA-256 fingerprint.
fn write_cert(dir: &Path) -> String {
    let (cert, key) = generate_self_signed_pem(&["localhost", "127.0.0.1"]).unwrap();
    replace(&dir.join("key.pem"), key.as_bytes());
    replace(&dir.join("cert.pem"), cert.as_bytes());
    sha256_fingerprint(&certs_from_pem(cert.as_bytes()).unwrap()[0])
}

fn replace(path: &Path, data: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).unwrap();
    std::fs::rename(tmp, path).unwrap();
}

/// A client trusting each of these certificates (resuming sessions, as
/// real clients do).
fn client(fingerprints: &[&str]) -> Arc<ClientConfig> {
    let mut b = ClientConfigBuilder::new();
    for fp in fingerprints {
        b = b.pinned(fp);
    }
    b.build().unwrap()
}

/// Connect and finish the handshake; the stream and the fingerprint of the
/// certificate the server showed.
fn connect(port: u16, config: &Arc<ClientConfig>) -> (Tls, String) {
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    sock.set_write_timeout(Some(WAIT)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(config.clone(), name).unwrap();
    let mut tls = StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    let fp = sha256_fingerprint(&tls.conn.peer_certificates().unwrap()[0]);
    (tls, fp)
}

fn hup(server: &Running) {
    // SAFETY: kill(2) on the child `server` owns and has not reaped.
    assert_eq!(unsafe { libc::kill(server.id() as libc::pid_t, libc::SIGHUP) }, 0);
}

/// Send SIGHUP and wait for the log line of reload `n`: `ok` is the
/// phrase of a good one; the line is returned.
fn reload(server: &Running, n: u32, ok: &str) -> String {
    hup(server);
    let tag = format!("(reload {n})");
    let failed = format!("reload {n} failed");
    server.wait_line(&format!("reload {n} to finish"), |l| {
        (l.contains(ok) && l.contains(&tag)) || l.contains(&failed)
    })
}

fn echo_line(tls: &mut Tls, line: &[u8]) {
    tls.write_all(line).unwrap();
    tls.flush().unwrap();
    let mut back = vec![0; line.len()];
    tls.read_exact(&mut back).unwrap();
    assert_eq!(back, line);
}

#[test]
fn echo_reloads_its_certificate_on_sighup() {
    let dir = temp_dir("echo");
    let first = write_cert(&dir);
    let server = Running::start({
        let mut c = twistor();
        c.args(["echo", "--tls", "--host", "127.0.0.1", "--port", "0"]);
        c.arg("--cert").arg(dir.join("cert.pem"));
        c.arg("--key").arg(dir.join("key.pem"));
        c
    });
    let port = server.wait_port("TLS echo on");
    server.wait_line("the reload handler", |l| l.contains("SIGHUP reloads"));

    let (mut before, shown) = connect(port, &client(&[&first]));
    assert_eq!(shown, first);
    echo_line(&mut before, b"before\n");

    let second = write_cert(&dir);
    let line = reload(&server, 1, "TLS configuration reloaded");
    assert!(line.contains("reloaded"), "{line}");
    server.wait_line("the new fingerprint", |l| {
        l.contains(&format!("fingerprint {second}"))
    });

    // A new connection gets the new certificate, even from a client that
    // holds a session from before.
    let both = client(&[&first, &second]);
    let (mut after, shown) = connect(port, &both);
    assert_eq!(shown, second);
    echo_line(&mut after, b"after\n");
    // The connection from before goes on, on the old certificate.
    echo_line(&mut before, b"still the old one\n");
    assert_eq!(
        sha256_fingerprint(&before.conn.peer_certificates().unwrap()[0]),
        first
    );
    before.conn.send_close_notify();
    before.conn.complete_io(&mut before.sock).unwrap();

    // A broken certificate file keeps the certificate in use, and says why.
    replace(
        &dir.join("cert.pem"),
        b"-----BEGIN CERTIFICATE-----\nnot base64\n",
    );
    let line = reload(&server, 2, "TLS configuration reloaded");
    assert!(
        line.contains("reload 2 failed, keeping the previous TLS configuration"),
        "{line}"
    );
    assert!(line.contains("cert.pem"), "the file is not named: {line}");
    let (_, shown) = connect(port, &both);
    assert_eq!(shown, second);
    // A missing key, too.
    write_cert(&dir);
    std::fs::remove_file(dir.join("key.pem")).unwrap();
    let line = reload(&server, 3, "TLS configuration reloaded");
    assert!(line.contains("reload 3 failed"), "{line}");
    assert!(line.contains("key.pem"), "{line}");
    let (_, shown) = connect(port, &both);
    assert_eq!(shown, second);

    let (status, _) = server.stop();
    assert!(status.success(), "{status:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Ask for `url` on a connection already open; the whole answer.
fn gemini_request(mut tls: Tls, url: &str) -> String {
    tls.write_all(format!("{url}\r\n").as_bytes()).unwrap();
    tls.flush().unwrap();
    let mut body = Vec::new();
    tls.read_to_end(&mut body).unwrap();
    String::from_utf8(body).unwrap()
}

fn write_site(dir: &Path, name: &str, text: &str) -> PathBuf {
    let site = dir.join(name);
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("index.gmi"), text).unwrap();
    site
}

fn write_config(dir: &Path, site: &str) {
    let text = format!(
        "[[vhost]]\nhostname = \"localhost\"\naliases = [\"127.0.0.1\"]\ndir = \"{site}\"\n\
         tls_certfile = \"cert.pem\"\ntls_keyfile = \"key.pem\"\n"
    );
    replace(&dir.join("capsules.toml"), text.as_bytes());
}

#[test]
fn gemini_reloads_its_config_and_certificates_on_sighup() {
    let dir = temp_dir("gemini");
    write_site(&dir, "old", "# the old site\n");
    write_site(&dir, "new", "# the new site\n");
    write_config(&dir, "old");
    let first = write_cert(&dir);
    let server = Running::start({
        let mut c = twistor();
        c.args(["gemini", "--host", "127.0.0.1", "--port", "0", "--config"]);
        c.arg(dir.join("capsules.toml"));
        c.env("XDG_DATA_HOME", dir.join("data"));
        c
    });
    let port = server.wait_port("Gemini on");
    server.wait_line("the reload handler", |l| l.contains("SIGHUP reloads"));
    let url = "gemini://localhost/";
    let (tls, shown) = connect(port, &client(&[&first]));
    assert_eq!(shown, first);
    assert!(gemini_request(tls, url).contains("the old site"));

    // Opened before the reload, asked after it.
    let (before, _) = connect(port, &client(&[&first]));
    write_config(&dir, "new");
    let second = write_cert(&dir);
    let line = reload(&server, 1, "configuration reloaded");
    assert!(!line.contains("failed"), "{line}");
    let answer = gemini_request(before, url);
    assert!(answer.starts_with("20 "), "{answer}");
    assert!(answer.contains("the old site"), "{answer}");

    let both = client(&[&first, &second]);
    let (tls, shown) = connect(port, &both);
    assert_eq!(shown, second);
    assert!(gemini_request(tls, url).contains("the new site"));

    // A config file that does not parse keeps everything.
    replace(&dir.join("capsules.toml"), b"[[vhost]\nhostname = ");
    let line = reload(&server, 2, "configuration reloaded");
    assert!(
        line.contains("reload 2 failed, keeping the previous configuration"),
        "{line}"
    );
    assert!(line.contains("capsules.toml"), "{line}");
    // So does a broken certificate.
    write_config(&dir, "old");
    replace(&dir.join("cert.pem"), b"not a certificate\n");
    let line = reload(&server, 3, "configuration reloaded");
    assert!(line.contains("reload 3 failed"), "{line}");
    assert!(line.contains("cert.pem"), "{line}");
    let (tls, shown) = connect(port, &both);
    assert_eq!(shown, second);
    assert!(gemini_request(tls, url).contains("the new site"));

    let (status, _) = server.stop();
    assert!(status.success(), "{status:?}");
    std::fs::remove_dir_all(dir).unwrap();
}
