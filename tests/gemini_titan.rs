//! Titan uploads against a live server, with Python's `ssl` module as the
//! client: into a served directory (written atomically, deleted with
//! `size=0`, refused when too large before the body is read, cut off
//! when the body stalls, refused outside the root and without the token)
//! and into a framework route.

mod gemini_common;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use gemini_common::*;
use twistor::protocols::gemini::{
    collect, CgiOptions, Response, Router, Server, ServerOptions, StaticFiles, TitanOptions, VirtualHost,
};

const TOKEN: &str = "s3cret";

/// A Titan request: the line for `path` with `params`, then `body`.
fn titan(addr: std::net::SocketAddr, path: &str, params: &str, body: &[u8]) -> Ask {
    let mut data = format!("titan://localhost:{}{path};{params}\r\n", addr.port()).into_bytes();
    data.extend_from_slice(body);
    Ask::bytes(addr, data)
}

/// A server for `dir` taking uploads with `TOKEN`, and these options.
fn files_server(dir: &Path, max_size: u64, options: ServerOptions) -> Server {
    let files = StaticFiles::new(dir)
        .with_cgi(CgiOptions::default())
        .with_titan(TitanOptions {
            max_size,
            ..TitanOptions::new(TOKEN)
        })
        .unwrap();
    Server::builder()
        .host(VirtualHost::new("localhost", files))
        .options(options)
        .build()
        .unwrap()
}

/// Files whose names start with `.titan-upload` anywhere under `dir`.
fn temporaries(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            } else if name.starts_with(".titan-upload") {
                found.push(e.path().display().to_string());
            }
        }
    }
    found
}

#[test]
fn upload_replace_read_and_delete() {
    if !have("python3") {
        return;
    }
    let dir = temp_dir("titan-files");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("sub/old.gmi"), "old\n").unwrap();
    let server = files_server(&dir, 1 << 20, ServerOptions::default());
    let mut r = reactor();
    let addr = listen(&mut r, &server, "127.0.0.1");
    let p = addr.port();
    // A body large enough to come in several reads, its start in the
    // request line's packet.
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let a = ask_python(
        &mut r,
        vec![
            titan(
                addr,
                "/sub/new.bin",
                &format!("size={};token={TOKEN}", body.len()),
                &body,
            ),
            titan(
                addr,
                "/sub/old.gmi",
                &format!("mime=text/gemini;token={TOKEN};size=4"),
                b"new\n",
            ),
            Ask::line(addr, &format!("gemini://localhost:{p}/sub/old.gmi")),
            titan(addr, "/sub/new.bin", &format!("token={TOKEN};size=0"), b""),
            titan(addr, "/sub/missing.gmi", &format!("size=0;token={TOKEN}"), b""),
        ],
    );
    assert_eq!(a[0].header(), format!("30 gemini://localhost:{p}/sub/new.bin"));
    assert!(a[0].close_notify);
    assert_eq!(a[1].header(), format!("30 gemini://localhost:{p}/sub/old.gmi"));
    assert_eq!((a[2].status(), a[2].body()), (20, &b"new\n"[..]));
    assert_eq!(
        (a[3].header(), a[3].body()),
        ("20 text/gemini".to_string(), &b"Deleted.\n"[..])
    );
    assert_eq!(a[4].status(), 51);
    assert!(!dir.join("sub/new.bin").exists(), "deleted");
    assert_eq!(std::fs::read(dir.join("sub/old.gmi")).unwrap(), b"new\n");
    assert!(temporaries(&dir).is_empty(), "{:?}", temporaries(&dir));

    // The first upload's bytes, checked before the delete on a second run.
    let a = ask_python(
        &mut r,
        vec![titan(
            addr,
            "/big.bin",
            &format!("size={};token={TOKEN}", body.len()),
            &body,
        )],
    );
    assert_eq!(a[0].status(), 30);
    assert_eq!(std::fs::read(dir.join("big.bin")).unwrap(), body);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn too_large_is_refused_before_the_body() {
    if !have("python3") {
        return;
    }
    let dir = temp_dir("titan-large");
    // A server that waited for the body would wait ten minutes, past the
    // client's bound: the answer must come from the line alone.
    let options = ServerOptions {
        upload_timeout: Duration::from_secs(600),
        ..ServerOptions::default()
    };
    let server = files_server(&dir, 1000, options);
    let mut r = reactor();
    let addr = listen(&mut r, &server, "127.0.0.1");
    let a = ask_python(
        &mut r,
        vec![
            titan(addr, "/a.gmi", &format!("size=1001;token={TOKEN}"), b""),
            titan(addr, "/a.gmi", &format!("size=1000;token={TOKEN}"), &[b'x'; 1000]),
        ],
    );
    assert_eq!(a[0].header(), "59 The upload is larger than 1000 bytes");
    assert!(a[0].close_notify);
    assert_eq!(a[1].status(), 30);
    assert_eq!(std::fs::read(dir.join("a.gmi")).unwrap().len(), 1000);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_stalled_upload_is_cut_off_and_leaves_nothing() {
    if !have("python3") {
        return;
    }
    let dir = temp_dir("titan-stall");
    let options = ServerOptions {
        upload_timeout: Duration::from_secs(1),
        ..ServerOptions::default()
    };
    let server = files_server(&dir, 1 << 20, options);
    let mut r = reactor();
    let addr = listen(&mut r, &server, "127.0.0.1");
    // 10 of the 100 bytes declared, then the client only waits.
    let a = ask_python(
        &mut r,
        vec![titan(
            addr,
            "/partial.gmi",
            &format!("size=100;token={TOKEN}"),
            &[b'x'; 10],
        )],
    );
    assert_eq!(a[0].header(), "59 The upload stalled before its declared size");
    assert!(!dir.join("partial.gmi").exists());
    assert!(temporaries(&dir).is_empty(), "{:?}", temporaries(&dir));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn uploads_stay_inside_the_root_and_need_the_token() {
    if !have("python3") {
        return;
    }
    let dir = temp_dir("titan-refused");
    let root = dir.join("root");
    let outside = dir.join("outside");
    std::fs::create_dir_all(root.join("cgi-bin")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
    let server = files_server(&root, 1 << 20, ServerOptions::default());
    let mut r = reactor();
    let addr = listen(&mut r, &server, "127.0.0.1");
    let ok = format!("size=3;token={TOKEN}");
    // A body of 1 MiB sent at once with a refused line: the answer must
    // still reach the client (the server reads and drops the body rather
    // than reset the connection).
    let big = vec![b'x'; 1 << 20];
    let a = ask_python(
        &mut r,
        vec![
            titan(addr, "/%2e%2e/outside/x.gmi", &ok, b"abc"),
            titan(addr, "/link/x.gmi", &ok, b"abc"),
            titan(addr, "/.hidden", &ok, b"abc"),
            titan(addr, "/cgi-bin/run.sh", &ok, b"abc"),
            titan(addr, "/nodir/x.gmi", &ok, b"abc"),
            titan(addr, "/cgi-bin", &ok, b"abc"),
            titan(addr, "/x.gmi", "size=3", b"abc"),
            titan(addr, "/x.gmi", "size=3;token=guess", b"abc"),
            titan(addr, "/x.gmi", &format!("size={};token=guess", big.len()), &big),
        ],
    );
    let statuses: Vec<u8> = a.iter().map(|a| a.status()).collect();
    assert_eq!(statuses, [51, 51, 51, 51, 51, 50, 59, 59, 59], "{a:?}");
    assert_eq!(a[6].header(), "59 A token is required to upload here");
    assert_eq!(a[7].header(), "59 Wrong token");
    assert!(a[8].close_notify, "{:?}", a[8]);
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written outside"
    );
    assert!(!root.join("x.gmi").exists() && !root.join(".hidden").exists());
    assert!(!root.join("cgi-bin/run.sh").exists());
    assert!(temporaries(&dir).is_empty());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn uploads_to_a_framework_route() {
    if !have("python3") {
        return;
    }
    let notes: Rc<RefCell<HashMap<String, Vec<u8>>>> = Rc::default();
    let mut app = Router::new();
    let n = notes.clone();
    app.upload("/notes/<name>", 64, move |req, _cx| {
        let n = n.clone();
        Ok(collect(req, move |req, body| {
            let name = req.capture("name").unwrap().to_string();
            n.borrow_mut().insert(name, body);
            Ok(Response::redirect(req.gemini_url())?.into())
        }))
    });
    let n = notes.clone();
    app.route("/notes/<name>", move |req| {
        let notes = n.borrow();
        match notes.get(req.capture("name").unwrap()) {
            Some(text) => Ok(Response::success("text/plain")?.with_body(text.clone())),
            None => Ok(Response::not_found_default()),
        }
    });
    let server = Server::builder()
        .host(VirtualHost::new("localhost", app))
        .host(VirtualHost::new(
            "other.example",
            StaticFiles::new("/nonexistent"),
        ))
        .build()
        .unwrap();
    let mut r = reactor();
    let addr = listen(&mut r, &server, "127.0.0.1");
    let p = addr.port();
    let a = ask_python(
        &mut r,
        vec![
            titan(addr, "/notes/todo", "size=11;mime=text/plain", b"buy milk\r\n!"),
            Ask::line(addr, &format!("gemini://localhost:{p}/notes/todo")),
            titan(addr, "/notes/big", "size=65", &[b'y'; 65]),
            // A Gemini-only path and a host without uploads: 53.
            titan(addr, "/elsewhere", "size=1", b"z"),
            Ask::bytes(
                addr,
                format!("titan://other.example:{p}/a;size=1\r\nz").into_bytes(),
            )
            .sni(Some("other.example")),
            // No size: a bad request.
            titan(addr, "/notes/x", "mime=text/plain", b""),
            // Refused (a host not served) with a large body already on
            // its way: the answer still arrives whole.
            Ask::bytes(addr, {
                let mut d = format!("titan://nowhere.example:{p}/a;size=8388608\r\n").into_bytes();
                d.extend_from_slice(&vec![b'z'; 8 << 20]);
                d
            }),
        ],
    );
    assert_eq!(a[0].header(), format!("30 gemini://localhost:{p}/notes/todo"));
    assert_eq!((a[1].status(), a[1].body()), (20, &b"buy milk\r\n!"[..]));
    assert_eq!(a[2].header(), "59 The upload is larger than 64 bytes");
    assert_eq!(a[3].status(), 53);
    assert_eq!(a[4].status(), 53);
    assert_eq!(a[5].header(), "59 A Titan request needs a size parameter");
    assert_eq!(a[6].status(), 53, "{:?}", a[6].error);
    assert!(a[6].close_notify);
    assert_eq!(notes.borrow().len(), 1);
}

/// The body's start in the same read as the request line is the body's
/// start, not lost, whatever way the bytes are cut: driven by hand over a
/// StringTransport, one cut at a time.
#[test]
fn the_body_starts_in_the_request_lines_read() {
    use twistor::protocols::gemini::GeminiConnection;
    use twistor::reactor::testing::StringTransport;
    use twistor::reactor::Protocol;

    // A short body, and one longer than a longest request line (so the
    // read holding the line holds more than the line buffer takes).
    let bodies: [Vec<u8>; 2] = [b"0123456789".to_vec(), (0..5000u32).map(|i| i as u8).collect()];
    for body in bodies {
        let mut request = format!("titan://localhost/notes/x;size={}\r\n", body.len()).into_bytes();
        let line_end = request.len();
        request.extend_from_slice(&body);
        for cut in [
            1,
            line_end - 1,
            line_end,
            line_end + 1,
            line_end + 7,
            request.len(),
        ] {
            let got: Rc<RefCell<Vec<u8>>> = Rc::default();
            let g = got.clone();
            let mut app = Router::new();
            app.upload("/notes/<name>", 8192, move |req, _cx| {
                let g = g.clone();
                Ok(collect(req, move |req, body| {
                    *g.borrow_mut() = body;
                    Ok(Response::redirect(req.gemini_url())?.into())
                }))
            });
            let server = Server::builder()
                .host(VirtualHost::new("localhost", app))
                .build()
                .unwrap();
            let mut c: GeminiConnection = server.connection();
            let mut t = StringTransport::new();
            c.connection_made(&mut t);
            c.data_received(&mut t, &request[..cut]);
            c.data_received(&mut t, &request[cut..]);
            assert_eq!(*got.borrow(), body, "cut at {cut}");
            assert_eq!(t.value(), b"30 gemini://localhost/notes/x\r\n", "cut at {cut}");
        }
    }
}
