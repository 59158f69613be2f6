//! CGI over a live server: every environment variable, without a client
//! certificate, with a self-signed one, and with one a configured CA
//! issued; a bad header is 42; a script past its timeout is killed (its
//! whole process group) and reaped; scripts over the cap are answered 41;
//! a large output is streamed whole; a body cut by a kill ends without
//! close_notify.

mod gemini_common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use gemini_common::*;
use twistor::protocols::gemini::{CgiOptions, Server, StaticFiles, VirtualHost};
use twistor::transports::tls::certs_from_pem;

fn script(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A CA, and a client certificate for `cn` it issued: (ca.pem, cert, key).
fn ca_and_client(dir: &Path, cn: &str) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    ca.distinguished_name.push(DnType::CommonName, "Test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, cn);
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join(format!("{cn}.crt")),
        dir.join(format!("{cn}.key")),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, leaf_cert.pem()).unwrap();
    std::fs::write(&paths.2, leaf_key.serialize_pem()).unwrap();
    paths
}

fn env_of(body: &[u8]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        // The shell adds its working directory itself.
        .filter(|(k, _)| k != "PWD")
        .collect();
    v.sort();
    v
}

fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
    env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

#[test]
fn cgi_environment_and_errors() {
    if !have("python3") {
        return;
    }
    let dir = temp_dir("cgi");
    let root = dir.join("root");
    let bin = root.join("cgi-bin");
    std::fs::create_dir_all(&bin).unwrap();
    script(&bin, "env.sh", "printf '20 text/plain\\r\\n'\nexec /usr/bin/env");
    script(&bin, "bad.sh", "echo 'Hello, not a header'");
    script(&bin, "silent.sh", "exit 0");
    script(&bin, "lf.sh", "printf '51 nothing here\\n'");
    script(
        &bin,
        "big.sh",
        "printf '20 application/octet-stream\\r\\n'\nhead -c 3000000 /dev/zero",
    );
    std::fs::write(bin.join("source.sh"), "#!/bin/sh\necho secret\n").unwrap(); // not executable
    let (ca, alice_crt, alice_key) = ca_and_client(&dir, "alice");
    let (bob_crt, bob_key) = client_cert(&dir, "bob");

    let files = StaticFiles::new(&root).with_cgi(CgiOptions::default());
    let server = Server::builder()
        .host(VirtualHost::new("localhost", files))
        .client_ca(certs_from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    let mut r = reactor();
    let addr = listen(&mut r, &server, "127.0.0.1");
    let p = addr.port();
    let url = format!("gemini://localhost:{p}/cgi-bin/env.sh/extra/path?a%20b");
    let answers = ask_python(
        &mut r,
        vec![
            Ask::line(addr, &url),
            Ask::line(addr, &url).cert(&bob_crt, &bob_key),
            Ask::line(addr, &url).cert(&alice_crt, &alice_key),
            Ask::line(addr, &format!("gemini://localhost:{p}/cgi-bin/bad.sh")),
            Ask::line(addr, &format!("gemini://localhost:{p}/cgi-bin/silent.sh")),
            Ask::line(addr, &format!("gemini://localhost:{p}/cgi-bin/lf.sh")),
            Ask::line(addr, &format!("gemini://localhost:{p}/cgi-bin/source.sh")),
            Ask::line(addr, &format!("gemini://localhost:{p}/cgi-bin/big.sh")),
        ],
    );
    for a in &answers {
        assert!(a.close_notify, "{a:?}");
    }

    // Without a certificate: exactly jetforce's variables.
    let env = env_of(answers[0].body());
    let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "GATEWAY_INTERFACE",
            "GEMINI_URL",
            "PATH_INFO",
            "QUERY_STRING",
            "REMOTE_ADDR",
            "REMOTE_HOST",
            "SCRIPT_NAME",
            "SERVER_NAME",
            "SERVER_PORT",
            "SERVER_PROTOCOL",
            "SERVER_SOFTWARE",
            "TLS_CIPHER",
            "TLS_VERSION",
        ]
    );
    assert_eq!(get(&env, "GATEWAY_INTERFACE"), Some("CGI/1.1"));
    assert_eq!(get(&env, "SERVER_PROTOCOL"), Some("GEMINI"));
    assert!(get(&env, "SERVER_SOFTWARE").unwrap().starts_with("twistor/"));
    assert_eq!(get(&env, "GEMINI_URL"), Some(url.as_str()));
    assert_eq!(get(&env, "SCRIPT_NAME"), Some("/cgi-bin/env.sh"));
    assert_eq!(get(&env, "PATH_INFO"), Some("/extra/path"));
    assert_eq!(get(&env, "QUERY_STRING"), Some("a%20b"));
    assert_eq!(get(&env, "SERVER_NAME"), Some("localhost"));
    assert_eq!(get(&env, "SERVER_PORT"), Some(p.to_string().as_str()));
    assert_eq!(get(&env, "REMOTE_ADDR"), Some("127.0.0.1"));
    assert_eq!(get(&env, "REMOTE_HOST"), Some("127.0.0.1"));
    assert_eq!(get(&env, "TLS_VERSION"), Some("TLSv1.3"));
    assert!(get(&env, "TLS_CIPHER").unwrap().starts_with("TLS_"), "{env:?}");

    // A self-signed certificate: accepted, not authorised.
    let env = env_of(answers[1].body());
    let bob_fp = answers[1].client_cert_hash(&bob_crt);
    assert_eq!(get(&env, "AUTH_TYPE"), Some("CERTIFICATE"));
    assert_eq!(get(&env, "REMOTE_USER"), Some("bob"));
    assert_eq!(get(&env, "TLS_CLIENT_HASH"), Some(bob_fp.as_str()));
    assert_eq!(get(&env, "TLS_CLIENT_AUTHORISED"), Some("0"));
    let date = |k: &str| {
        let v = get(&env, k).unwrap().to_string();
        assert!(v.len() == 20 && v.ends_with('Z') && &v[10..11] == "T", "{k}={v}");
        v
    };
    assert!(date("TLS_CLIENT_NOT_BEFORE") < date("TLS_CLIENT_NOT_AFTER"));
    let serial = get(&env, "TLS_CLIENT_SERIAL_NUMBER").unwrap();
    assert!(
        !serial.is_empty() && serial.bytes().all(|b| b.is_ascii_digit()),
        "{serial}"
    );
    assert_eq!(env.len(), 13 + 7);

    // Issued by the configured CA: authorised.
    let env = env_of(answers[2].body());
    assert_eq!(get(&env, "REMOTE_USER"), Some("alice"));
    assert_eq!(get(&env, "TLS_CLIENT_AUTHORISED"), Some("1"));

    assert_eq!(answers[3].status(), 42, "bad header");
    assert_eq!(answers[4].status(), 42, "no output");
    assert_eq!(
        answers[5].header(),
        "51 nothing here",
        "an LF-ended header is accepted"
    );
    assert_eq!(answers[6].status(), 51, "a non-executable script is not sent");
    assert_eq!(answers[7].header(), "20 application/octet-stream");
    assert_eq!(answers[7].body().len(), 3_000_000, "the whole output, streamed");
    std::fs::remove_dir_all(dir).unwrap();
}

impl Answer {
    /// `SHA256:` and the uppercase fingerprint of the certificate in `pem`.
    fn client_cert_hash(&self, pem: &Path) -> String {
        let der = certs_from_pem(&std::fs::read(pem).unwrap()).unwrap();
        let fp = twistor::transports::tls::sha256_fingerprint(&der[0]);
        format!("SHA256:{}", fp.to_ascii_uppercase())
    }
}

/// Whether process `pid` is gone or a zombie (killed, not yet reaped by init).
fn not_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn cgi_timeout_kills_and_reaps() {
    if !have("python3") {
        return;
    }
    let dir = temp_dir("cgi-timeout");
    let root = dir.join("root");
    let bin = root.join("cgi-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let marks = dir.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    // Starts a grandchild, records both pids, and waits for ever.
    script(
        &bin,
        "slow.sh",
        &format!(
            "sleep 1000 &\necho $! > {m}/grandchild.tmp && mv {m}/grandchild.tmp {m}/grandchild\necho $$ > {m}/pid.tmp && mv {m}/pid.tmp {m}/pid\nwait",
            m = marks.display()
        ),
    );
    script(&bin, "quick.sh", "printf '20 text/plain\\r\\nquick'");
    let opts = CgiOptions {
        timeout: Duration::from_secs(1),
        max_running: 1,
        ..CgiOptions::default()
    };
    let server = Server::builder()
        .host(VirtualHost::new(
            "localhost",
            StaticFiles::new(&root).with_cgi(opts),
        ))
        .build()
        .unwrap();
    let mut r = reactor();
    let addr = listen(&mut r, &server, "127.0.0.1");
    let p = addr.port();

    // The slow request, left running in the background.
    let slow = Command::new("python3")
        .args(["-c", SLOW_CLIENT, &p.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid_file = marks.join("pid");
    let ok = r.run_until(WAIT, |_| pid_file.exists()).unwrap();
    assert!(ok, "the slow script never started");
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let grandchild: u32 = std::fs::read_to_string(marks.join("grandchild"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // The slow one is killed at its timeout: its client gets 42.
    let out = in_thread(&mut r, move || slow.wait_with_output().unwrap());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "42 The script timed out"
    );
    // Reaped (no zombie left), and its grandchild killed with it.
    let ok = r
        .run_until(WAIT, |_| {
            !Path::new(&format!("/proc/{pid}")).exists() && not_running(grandchild)
        })
        .unwrap();
    assert!(ok, "the script {pid} or its child {grandchild} is still there");

    // The slot is free again.
    let again = ask_python(
        &mut r,
        vec![Ask::line(
            addr,
            &format!("gemini://localhost:{p}/cgi-bin/quick.sh"),
        )],
    );
    assert_eq!(again[0].header(), "20 text/plain");
    assert_eq!(again[0].body(), b"quick");
    std::fs::remove_dir_all(dir).unwrap();
}

const SLOW_CLIENT: &str = r#"
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
port = int(sys.argv[1])
with socket.create_connection(("127.0.0.1", port), timeout=60) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(("gemini://localhost:%d/cgi-bin/slow.sh\r\n" % port).encode())
        got = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
print(got.decode().strip())
"#;

#[test]
fn scripts_over_the_cap_are_answered_41() {
    if !have("python3") {
        return;
    }
    let dir = temp_dir("cgi-cap");
    let bin = dir.join("root/cgi-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fifo = dir.join("release");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid path; mkfifo only creates the node.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let started = dir.join("started");
    // Runs until the test writes a line to the FIFO: no timing involved.
    script(
        &bin,
        "slow.sh",
        &format!(
            "touch {}\nread line < {}\nprintf '20 text/plain\\r\\nreleased'",
            started.display(),
            fifo.display()
        ),
    );
    script(&bin, "quick.sh", "printf '20 text/plain\\r\\nquick'");
    let opts = CgiOptions {
        timeout: Duration::from_secs(600),
        max_running: 1,
        ..CgiOptions::default()
    };
    let server = Server::builder()
        .host(VirtualHost::new(
            "localhost",
            StaticFiles::new(dir.join("root")).with_cgi(opts),
        ))
        .build()
        .unwrap();
    let mut r = reactor();
    let addr = listen(&mut r, &server, "127.0.0.1");
    let p = addr.port();
    let slow = Command::new("python3")
        .args(["-c", SLOW_CLIENT, &p.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        r.run_until(WAIT, |_| started.exists()).unwrap(),
        "the slow script never started"
    );
    let quick = format!("gemini://localhost:{p}/cgi-bin/quick.sh");
    let busy = ask_python(&mut r, vec![Ask::line(addr, &quick)]);
    assert_eq!(
        busy[0].status(),
        41,
        "{:?}",
        String::from_utf8_lossy(&busy[0].data)
    );
    let f = fifo.clone();
    std::thread::spawn(move || std::fs::write(f, "go\n").unwrap());
    let out = in_thread(&mut r, move || slow.wait_with_output().unwrap());
    assert!(String::from_utf8_lossy(&out.stdout).contains("released"));
    let again = ask_python(&mut r, vec![Ask::line(addr, &quick)]);
    assert_eq!(again[0].body(), b"quick");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_body_cut_by_the_timeout_ends_without_close_notify() {
    if !have("python3") {
        return;
    }
    let dir = temp_dir("cgi-cut");
    let bin = dir.join("cgi-bin");
    std::fs::create_dir_all(&bin).unwrap();
    // Half a page, then nothing until it is killed.
    script(
        &bin,
        "stuck.sh",
        "printf '20 text/plain\\r\\nhalf a pa'\nexec sleep 1000",
    );
    // Half a page, then a kill by something else.
    script(
        &bin,
        "killed.sh",
        "printf '20 text/plain\\r\\nhalf a pa'\nkill -9 $$",
    );
    script(&bin, "whole.sh", "printf '20 text/plain\\r\\nwhole'");
    let opts = CgiOptions {
        timeout: Duration::from_secs(1),
        ..CgiOptions::default()
    };
    let server = Server::builder()
        .host(VirtualHost::new(
            "localhost",
            StaticFiles::new(&dir).with_cgi(opts),
        ))
        .build()
        .unwrap();
    let mut r = reactor();
    let addr = listen(&mut r, &server, "127.0.0.1");
    let asks = ["stuck", "killed", "whole"]
        .iter()
        .map(|s| Ask::line(addr, &format!("gemini://localhost/cgi-bin/{s}.sh")))
        .collect();
    let answers = ask_python(&mut r, asks);
    // A cut body must not look whole: no close_notify.
    for cut in &answers[..2] {
        assert_eq!(cut.header(), "20 text/plain", "{cut:?}");
        assert_eq!(cut.body(), b"half a pa", "{cut:?}");
        assert!(!cut.close_notify, "{cut:?}");
    }
    assert_eq!(answers[2].body(), b"whole");
    assert!(answers[2].close_notify, "{:?}", answers[2]);
    std::fs::remove_dir_all(dir).unwrap();
}
