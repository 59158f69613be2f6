//! Helpers shared by the Gemini tests: a server on loopback, and Python's
//! `ssl` module as the Gemini client (a client no one here wrote), which
//! reports each response's bytes and whether it ended with close_notify.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use twistor::protocols::gemini::Server;
use twistor::reactor::Reactor;

/// The bound on every wait.
pub const WAIT: Duration = Duration::from_secs(30);

/// A reactor on the real clock without signal handlers.
pub fn reactor() -> Reactor {
    let mut r = Reactor::new().expect("a reactor");
    r.set_install_signal_handlers(false);
    r
}

/// Whether `tool` runs here; if not, say the test is skipped.
pub fn have(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg(if tool == "openssl" { "version" } else { "--version" })
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: {tool} is not installed");
    }
    ok
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("twistor-gemini-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Listen on `ip`, port 0; return the bound address.
pub fn listen(r: &mut Reactor, server: &Server, ip: &str) -> SocketAddr {
    let addr: SocketAddr = format!("{ip}:0").parse().unwrap();
    server.listen(r, addr).expect("listen").local_addr()
}

/// Run `f` on a thread while the reactor turns; return its result.
pub fn in_thread<T: Send + 'static>(r: &mut Reactor, f: impl FnOnce() -> T + Send + 'static) -> T {
    let remote = r.remote();
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    let h = std::thread::spawn(move || {
        struct Wake(Arc<AtomicBool>, twistor::reactor::Remote);
        impl Drop for Wake {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
                let _ = self.1.call(|_| {});
            }
        }
        let _wake = Wake(d2, remote);
        f()
    });
    let ok = r.run_until(WAIT * 4, |_| done.load(Ordering::Acquire)).unwrap();
    assert!(ok, "the client thread did not finish in time");
    h.join().expect("client thread")
}

/// One request for the Python client.
#[derive(Debug, Clone)]
pub struct Ask {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The name sent as SNI (`None`: none).
    pub sni: Option<String>,
    /// The bytes sent.
    pub data: Vec<u8>,
    /// A client certificate and key (PEM files).
    pub cert: Option<(PathBuf, PathBuf)>,
}

impl Ask {
    /// `line` and CRLF to `addr`, with SNI `localhost`.
    pub fn line(addr: SocketAddr, line: &str) -> Ask {
        Ask::bytes(addr, format!("{line}\r\n").into_bytes())
    }

    /// Exactly `data` to `addr`, with SNI `localhost`.
    pub fn bytes(addr: SocketAddr, data: Vec<u8>) -> Ask {
        Ask {
            addr,
            sni: Some("localhost".into()),
            data,
            cert: None,
        }
    }

    /// With this SNI.
    pub fn sni(mut self, name: Option<&str>) -> Ask {
        self.sni = name.map(str::to_string);
        self
    }

    /// With a client certificate.
    pub fn cert(mut self, cert: &Path, key: &Path) -> Ask {
        self.cert = Some((cert.to_path_buf(), key.to_path_buf()));
        self
    }
}

/// What the Python client saw.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// Everything received.
    pub data: Vec<u8>,
    /// The response ended with the server's close_notify (not a bare EOF).
    pub close_notify: bool,
    /// The TLS version negotiated.
    pub tls_version: String,
    /// SHA-256 of the server's certificate, lowercase hex.
    pub server_cert: String,
    /// An exception the client hit, if any.
    pub error: Option<String>,
}

impl Answer {
    /// The header line, without CRLF.
    pub fn header(&self) -> String {
        let text = String::from_utf8_lossy(&self.data);
        text.split("\r\n").next().unwrap_or("").to_string()
    }

    /// The status code (0 when there is no header).
    pub fn status(&self) -> u8 {
        self.header().get(..2).and_then(|c| c.parse().ok()).unwrap_or(0)
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        match self.data.windows(2).position(|w| w == b"\r\n") {
            Some(i) => &self.data[i + 2..],
            None => &[],
        }
    }
}

const PY_CLIENT: &str = r#"
import hashlib, socket, ssl, sys
lines = sys.stdin.read().split("\n")
for line in lines:
    if not line.strip():
        continue
    host, port, sni, data, cert, key = line.split(" ")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert != "-":
        ctx.load_cert_chain(cert, key)
    got, notify, version, fp, err = b"", "0", "-", "-", "-"
    try:
        raw = socket.create_connection((host, int(port)), timeout=30)
        s = ctx.wrap_socket(raw, server_hostname=None if sni == "-" else sni, suppress_ragged_eofs=False)
        version = s.version()
        fp = hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()
        s.sendall(bytes.fromhex(data) if data != "-" else b"")
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            notify = "1"
        except ssl.SSLEOFError:
            notify = "0"
        s.close()
    except Exception as e:
        err = repr(e).replace(" ", "_")
    print(" ".join([got.hex() or "-", notify, version, fp, err]), flush=True)
"#;

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    if s == "-" {
        return Vec::new();
    }
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// Send each request with Python's ssl module (one process, one
/// connection each, in order) while the reactor serves them.
pub fn ask_python(r: &mut Reactor, asks: Vec<Ask>) -> Vec<Answer> {
    let n = asks.len();
    let mut input = String::new();
    for a in &asks {
        let (cert, key) = match &a.cert {
            Some((c, k)) => (c.display().to_string(), k.display().to_string()),
            None => ("-".into(), "-".into()),
        };
        let data = if a.data.is_empty() {
            "-".to_string()
        } else {
            hex(&a.data)
        };
        input.push_str(&format!(
            "{} {} {} {} {cert} {key}\n",
            a.addr.ip(),
            a.addr.port(),
            a.sni.as_deref().unwrap_or("-"),
            data
        ));
    }
    let out = in_thread(r, move || {
        use std::io::Write;
        let mut child = Command::new("python3")
            .args(["-c", PY_CLIENT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3");
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let answers: Vec<Answer> = stdout
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Answer {
                data: unhex(f[0]),
                close_notify: f[1] == "1",
                tls_version: f[2].to_string(),
                server_cert: f[3].to_string(),
                error: (f[4] != "-").then(|| f[4].to_string()),
            }
        })
        .collect();
    assert_eq!(
        answers.len(),
        n,
        "python client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    answers
}

/// Write a self-signed client certificate for `cn` into `dir`: (cert, key).
pub fn client_cert(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = twistor::transports::tls::generate_self_signed_pem(&[cn]).unwrap();
    let (c, k) = (dir.join(format!("{cn}.crt")), dir.join(format!("{cn}.key")));
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    (c, k)
}

/// A real SCGI application in Python (a few lines of socket code speaking
/// the protocol, nothing of ours): it reads the netstring of headers and
/// `CONTENT_LENGTH` bytes of body, then answers by `PATH_INFO`:
///
/// - `/env`: `20 text/plain`, then the header names in the order sent
///   (`ORDER=...`), each `NAME=value`, and `BODY=` with the body;
/// - `/big`: `20 application/octet-stream` and `QUERY_STRING` MiB of zeros;
/// - `/bad`: an HTTP status line (not a Gemini header);
/// - `/silent`: nothing until the server closes the connection;
/// - `/split`: the header in three writes, then a short body;
/// - `/sink`: reads the body slowly (256 KiB at a time, a few
///   milliseconds apart, a deliberately slow consumer), then answers
///   `20 text/plain` and `GOT=<bytes>`.
const PY_SCGI: &str = r#"
import os, socket, sys, threading, time
def read_exact(c, n):
    data = b""
    while len(data) < n:
        chunk = c.recv(min(65536, n - len(data)))
        if not chunk:
            raise EOFError
        data += chunk
    return data
def handle(c):
    try:
        length = b""
        while True:
            ch = read_exact(c, 1)
            if ch == b":":
                break
            length += ch
        payload = read_exact(c, int(length))
        assert read_exact(c, 1) == b","
        parts = payload.split(b"\0")[:-1]
        names = [p.decode() for p in parts[0::2]]
        env = dict(zip(names, [p.decode() for p in parts[1::2]]))
        path = env.get("PATH_INFO", "")
        if path == "/sink":
            left = int(env["CONTENT_LENGTH"])
            while left:
                left -= len(read_exact(c, min(left, 1 << 18)))
                time.sleep(0.005)
            c.sendall(b"20 text/plain\r\nGOT=" + env["CONTENT_LENGTH"].encode())
            return
        body = read_exact(c, int(env["CONTENT_LENGTH"]))
        if path == "/env":
            out = "ORDER=" + ",".join(names) + "\n"
            out += "".join("%s=%s\n" % (k, v) for k, v in sorted(env.items()))
            c.sendall(b"20 text/plain\r\n" + out.encode() + b"BODY=" + body)
        elif path == "/big":
            c.sendall(b"20 application/octet-stream\r\n")
            zeros = bytes(1 << 20)
            for _ in range(int(env["QUERY_STRING"])):
                c.sendall(zeros)
        elif path == "/bad":
            c.sendall(b"HTTP/1.0 200 OK\r\n\r\nhello")
        elif path == "/silent":
            c.recv(1)
        elif path == "/split":
            for part in (b"2", b"0 text/ge", b"mini\r\nsplit body\n"):
                c.sendall(part)
        else:
            c.sendall(b"51 No such page\r\n")
    except Exception as e:
        print("scgi backend:", repr(e), file=sys.stderr, flush=True)
    finally:
        c.close()
where = sys.argv[1]
if where == "tcp":
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    name = str(s.getsockname()[1])
else:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(where)
    name = where
s.listen(64)
print(name, flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
"#;

/// A running Python SCGI application; killed when dropped.
pub struct ScgiBackend {
    child: std::process::Child,
    /// Its TCP port, or its socket's path.
    pub address: String,
}

impl ScgiBackend {
    /// Start one on TCP (`"tcp"`) or on a Unix socket at a path.
    pub fn start(where_: &str) -> ScgiBackend {
        use std::io::BufRead;
        let mut child = Command::new("python3")
            .args(["-c", PY_SCGI, where_])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        ScgiBackend {
            child,
            address: line.trim().to_string(),
        }
    }
}

impl Drop for ScgiBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
