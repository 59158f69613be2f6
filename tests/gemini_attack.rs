//! Hostile input against a live server, over real TLS from Python's ssl
//! module: request lines the parser must refuse or take exactly, and
//! answers whose redirect URL would outgrow the 1024-byte meta limit
//! (a normalized URL can be three times the bytes the client sent).

mod gemini_common;

use gemini_common::*;
use twistor::protocols::gemini::{Server, StaticFiles, TitanOptions, VirtualHost};

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
