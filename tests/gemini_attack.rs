//! Hostile clients against a live server, over real TLS from Python's
//! ssl module: answers whose redirect URL would outgrow the 1024-byte
//! meta limit (a normalized URL can be three times the bytes the client
//! sent), one host hoarding idle connections, and a directory listing
//! naming what the server refuses to serve.

mod gemini_common;

use gemini_common::*;
use twistor::protocols::gemini::{Server, ServerOptions, StaticFiles, TitanOptions, VirtualHost};

const TOKEN: &str = "s3cret";

fn server(root: &std::path::Path) -> Server {
    let files = StaticFiles::new(root)
        .with_titan(TitanOptions::new(TOKEN))
        .unwrap();
    Server::builder()
        .host(VirtualHost::new("localhost", files))
        .build()
        .unwrap()
}

#[test]
fn a_directory_redirect_too_long_for_a_meta_is_a_clear_refusal() {
    if !have("python3") {
        return;
    }
    let dir = temp_dir("attack-redirect");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let mut r = reactor();
    let addr = listen(&mut r, &server(&dir), "127.0.0.1");
    // 300 two-byte characters: 600 bytes sent, 1800 once percent-encoded.
    let long_query = "é".repeat(300);
    let short_query = "é".repeat(10);
    let asks = vec![
        Ask::line(addr, &format!("gemini://localhost/sub?{long_query}")),
        Ask::line(addr, &format!("gemini://localhost/sub?{short_query}")),
    ];
    let answers = ask_python(&mut r, asks);
    let long = &answers[0];
    assert_eq!(long.status(), 59, "{long:?}");
    assert!(long.close_notify, "{long:?}");
    let short = &answers[1];
    assert_eq!(short.status(), 31, "{short:?}");
    assert!(short.header().contains("/sub/?%C3%A9"), "{short:?}");
}

#[test]
fn an_upload_whose_url_is_too_long_to_redirect_to_is_still_acknowledged() {
    if !have("python3") {
        return;
    }
    let dir = temp_dir("attack-upload-url");
    let mut r = reactor();
    let addr = listen(&mut r, &server(&dir), "127.0.0.1");
    // Four names of 60 three-byte characters: 720 bytes sent, 2160 once
    // percent-encoded (one name may have at most 255 bytes).
    let part = "€".repeat(60);
    std::fs::create_dir_all(dir.join(&part).join(&part).join(&part)).unwrap();
    let name = format!("{part}/{part}/{part}/{part}");
    let mut data = format!("titan://localhost/{name};size=5;token={TOKEN}\r\n").into_bytes();
    data.extend_from_slice(b"hello");
    let answers = ask_python(&mut r, vec![Ask::bytes(addr, data)]);
    let a = &answers[0];
    assert_eq!(std::fs::read(dir.join(&name)).unwrap(), b"hello");
    assert_eq!(a.status(), 20, "{a:?}");
    assert!(a.close_notify, "{a:?}");
}

/// Opens `n` TCP connections to `port` from 127.0.0.2 and holds them,
/// idle, until its stdin closes.
const HOARDER: &str = r#"
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
held = []
for _ in range(n):
    s = socket.socket()
    s.bind(("127.0.0.2", 0))
    s.connect(("127.0.0.1", port))
    held.append(s)
print("ready", flush=True)
sys.stdin.read()
"#;

/// What a client at 127.0.0.1 gets while another host holds `held` idle
/// connections to a server taking 8 at once, at most `per_address` from
/// one address.
fn request_while_another_host_hoards(per_address: Option<usize>, held: usize) -> Answer {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let dir = temp_dir(&format!("attack-hoard-{}", per_address.unwrap_or(0)));
    std::fs::write(dir.join("index.gmi"), "# Home\n").unwrap();
    let server = Server::builder()
        .host(VirtualHost::new("localhost", StaticFiles::new(&dir)))
        .options(ServerOptions {
            max_connections: 8,
            max_connections_per_address: per_address,
            // The held connections never handshake: keep them for the test.
            handshake_timeout: std::time::Duration::from_secs(300),
            ..ServerOptions::default()
        })
        .build()
        .unwrap();
    let mut r = reactor();
    let addr = listen(&mut r, &server, "127.0.0.1");
    let port = addr.port();
    let mut hoarder = in_thread(&mut r, move || {
        let mut child = Command::new("python3")
            .args(["-c", HOARDER, &port.to_string(), &held.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        child
    });
    let answer = ask_python(&mut r, vec![Ask::line(addr, "gemini://localhost/")]).remove(0);
    drop(hoarder.stdin.take());
    let _ = hoarder.kill();
    let _ = hoarder.wait();
    answer
}

#[test]
fn one_address_cannot_hold_every_connection_slot() {
    if !have("python3") {
        return;
    }
    // Without a cap per address, 8 idle connections from one host shut
    // everyone else out.
    let shut_out = request_while_another_host_hoards(None, 8);
    assert_eq!(shut_out.status(), 0, "{shut_out:?}");
    // With one, that host holds 4 slots and the others are still served.
    let served = request_while_another_host_hoards(Some(4), 8);
    assert_eq!(served.status(), 20, "{served:?}");
    assert_eq!(served.body(), b"# Home\n");
}

#[test]
fn a_listing_names_only_what_can_be_served() {
    if !have("python3") {
        return;
    }
    let dir = temp_dir("attack-listing");
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("list")).unwrap();
    std::fs::write(root.join("list/page.gmi"), "# Page\n").unwrap();
    std::fs::write(root.join("list/.hidden"), "secret").unwrap();
    std::fs::write(dir.join("outside.txt"), "outside").unwrap();
    let link = |to: &std::path::Path, name: &str| {
        std::os::unix::fs::symlink(to, root.join("list").join(name)).unwrap()
    };
    link(&dir.join("outside.txt"), "escape.txt");
    link(&dir, "escape-dir");
    link(&root.join("list/.hidden"), "via-link");
    link(&root.join("list/page.gmi"), "alias.gmi");
    let fifo = std::ffi::CString::new(root.join("list/fifo").to_str().unwrap()).unwrap();
    // SAFETY: a valid path; mkfifo only creates the node.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let mut r = reactor();
    let addr = listen(&mut r, &server(&root), "127.0.0.1");
    let answers = ask_python(&mut r, vec![Ask::line(addr, "gemini://localhost/list/")]);
    let listing = String::from_utf8_lossy(answers[0].body()).into_owned();
    assert_eq!(
        listing, "# Index of /list/\n\n=> ../ ..\n=> ./alias.gmi alias.gmi\n=> ./page.gmi page.gmi\n",
        "{:?}",
        answers[0]
    );
    std::fs::remove_dir_all(dir).unwrap();
}
