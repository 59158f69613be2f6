//! Static files over a live server: MIME types and lang, index files,
//! listings with escaped links, the redirect to the slash form, traversal,
//! encoded separators, dotfiles and symlink escapes refused, unicode file
//! names, special files.

mod gemini_common;

use std::os::unix::fs::symlink;

use gemini_common::*;
use twistor::protocols::gemini::{Server, StaticFiles, VirtualHost};

#[test]
fn static_files_are_served_and_guarded() {
    if !have("python3") {
        return;
    }
    let dir = temp_dir("static");
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("docs")).unwrap();
    std::fs::create_dir_all(root.join("empty dir")).unwrap();
    std::fs::create_dir_all(root.join(".well-known")).unwrap();
    std::fs::create_dir_all(root.join(".git")).unwrap();
    std::fs::write(root.join("index.gmi"), "# Home\n").unwrap();
    std::fs::write(root.join("docs/page.gemini"), "# Page\n").unwrap();
    std::fs::write(root.join("docs/a b#c?.txt"), "odd name").unwrap();
    std::fs::write(root.join("docs/café.gmi"), "# Café\n").unwrap();
    std::fs::write(root.join("docs/photo.png"), [0x89, b'P', b'N', b'G']).unwrap();
    std::fs::write(root.join("docs/blob.weird-ext"), "?").unwrap();
    std::fs::write(root.join("docs/.hidden"), "secret").unwrap();
    std::fs::write(root.join(".well-known/security.txt"), "Contact: me").unwrap();
    std::fs::write(root.join(".git/config"), "secret").unwrap();
    std::fs::write(dir.join("outside.txt"), "outside").unwrap();
    symlink(dir.join("outside.txt"), root.join("escape.txt")).unwrap();
    symlink(&dir, root.join("escape-dir")).unwrap();
    symlink(root.join("docs/page.gemini"), root.join("inside.gmi")).unwrap();
    symlink(root.join("docs/.hidden"), root.join("via-link")).unwrap();
    let fifo = root.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid path; mkfifo only creates the node.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);

    let files = StaticFiles::new(&root).with_default_lang("en").unwrap();
    let server = Server::builder()
        .host(VirtualHost::new("localhost", files))
        .build()
        .unwrap();
    let mut r = reactor();
    let addr = listen(&mut r, &server, "127.0.0.1");
    let p = addr.port();
    let cases: Vec<(&str, String, &str, Option<&str>)> = vec![
        ("index", "/".into(), "20 text/gemini; lang=en", Some("# Home\n")),
        (
            "empty path",
            "".into(),
            "20 text/gemini; lang=en",
            Some("# Home\n"),
        ),
        (
            ".gemini",
            "/docs/page.gemini".into(),
            "20 text/gemini; lang=en",
            Some("# Page\n"),
        ),
        ("png", "/docs/photo.png".into(), "20 image/png", None),
        (
            "unknown type",
            "/docs/blob.weird-ext".into(),
            "20 application/octet-stream",
            None,
        ),
        (
            "unicode name",
            "/docs/caf%C3%A9.gmi".into(),
            "20 text/gemini; lang=en",
            Some("# Café\n"),
        ),
        (
            "escaped name",
            "/docs/a%20b%23c%3F.txt".into(),
            "20 text/plain",
            Some("odd name"),
        ),
        (
            "slash redirect",
            "/docs".into(),
            "31 gemini://localhost:PORT/docs/",
            None,
        ),
        (
            "slash redirect keeps the query",
            "/docs?x".into(),
            "31 gemini://localhost:PORT/docs/?x",
            None,
        ),
        ("missing", "/nothing.gmi".into(), "51 Not found", None),
        ("dot-dot", "/../outside.txt".into(), "51 Not found", None),
        (
            "encoded dot-dot",
            "/docs/%2e%2e/%2e%2e/outside.txt".into(),
            "51 Not found",
            None,
        ),
        (
            "encoded slash",
            "/docs%2fpage.gemini".into(),
            "51 Not found",
            None,
        ),
        ("encoded NUL", "/index.gmi%00".into(), "51 Not found", None),
        ("dotfile", "/docs/.hidden".into(), "51 Not found", None),
        ("dot directory", "/.git/config".into(), "51 Not found", None),
        (
            ".well-known",
            "/.well-known/security.txt".into(),
            "20 text/plain",
            Some("Contact: me"),
        ),
        ("symlink out", "/escape.txt".into(), "51 Not found", None),
        (
            "symlinked dir out",
            "/escape-dir/outside.txt".into(),
            "51 Not found",
            None,
        ),
        ("symlink to a dotfile", "/via-link".into(), "51 Not found", None),
        (
            "symlink inside",
            "/inside.gmi".into(),
            "20 text/gemini; lang=en",
            Some("# Page\n"),
        ),
        ("a FIFO", "/fifo".into(), "51 Not found", None),
    ];
    let asks = cases
        .iter()
        .map(|(_, path, _, _)| Ask::line(addr, &format!("gemini://localhost:{p}{path}")))
        .chain([Ask::line(addr, &format!("gemini://localhost:{p}/docs/"))])
        .collect();
    let answers = ask_python(&mut r, asks);
    for ((what, _, header, body), a) in cases.iter().zip(&answers) {
        assert_eq!(a.header(), header.replace("PORT", &p.to_string()), "{what}");
        assert!(a.close_notify, "{what}");
        if let Some(b) = body {
            assert_eq!(String::from_utf8_lossy(a.body()), *b, "{what}");
        }
    }
    // The listing: sorted, no dotfiles, links percent-encoded, labels as is.
    let listing = answers.last().unwrap();
    assert_eq!(listing.header(), "20 text/gemini; lang=en");
    let text = String::from_utf8_lossy(listing.body()).into_owned();
    let links: Vec<&str> = text.lines().filter(|l| l.starts_with("=>")).collect();
    assert_eq!(
        links,
        [
            "=> ../ ..",
            "=> ./a%20b%23c%3F.txt a b#c?.txt",
            "=> ./blob.weird-ext blob.weird-ext",
            "=> ./caf%C3%A9.gmi café.gmi",
            "=> ./page.gemini page.gemini",
            "=> ./photo.png photo.png",
        ],
        "{text}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
