//! The Gemini reverse proxy against live upstreams on loopback, with
//! Python's `ssl` module as the client: a second twistor Gemini server
//! reached through a path prefix (URL rewritten, fingerprint pinned) and
//! as a whole host (URL as sent), a Titan upload passed through, first-use
//! trust, and every upstream failure answered 43: nothing listening, a
//! certificate that is not the pinned one, a header that is not Gemini,
//! an upstream that never answers.

mod gemini_common;

use std::net::SocketAddr;
use std::time::Duration;

use gemini_common::*;
use twistor::protocols::gemini::{
    GeminiProxy, Router, Server, StaticFiles, TitanOptions, UpstreamTrust, VirtualHost,
};
use twistor::reactor::{Address, Protocol, Reactor, Transport};
use twistor::transports::tls::{listen_tls, ServerConfigBuilder};

/// Answers an HTTP status line to whatever it is asked.
struct Garbage;
impl Protocol for Garbage {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        t.write(b"HTTP/1.1 200 OK\r\n\r\nhello");
        t.lose_connection();
    }
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
}

/// Never answers.
struct Silent;
impl Protocol for Silent {
    fn data_received(&mut self, _: &mut dyn Transport, _: &[u8]) {}
}

fn tls_upstream<P: Protocol>(r: &mut Reactor, make: fn() -> P) -> SocketAddr {
    let (config, _) = ServerConfigBuilder::self_signed(&["localhost"]).unwrap();
    listen_tls(r, "127.0.0.1:0", move |_: &Address| make(), config)
        .unwrap()
        .local_addr()
}

#[test]
fn proxy_to_a_second_server_and_every_failure_is_43() {
    if !have("python3") {
        return;
    }
    let dir = temp_dir("proxy");
    std::fs::create_dir_all(dir.join("up/inbox")).unwrap();
    std::fs::create_dir_all(dir.join("tofu")).unwrap();
    std::fs::write(dir.join("tofu/page.gmi"), "# Trusted on first use\n").unwrap();
    std::fs::write(dir.join("index.gmi"), "# Upstream home\n").unwrap();
    std::fs::write(dir.join("up/page.gmi"), "# A page upstream\n").unwrap();
    let mut r = reactor();

    // The upstream: another twistor Gemini server, taking uploads.
    let files = StaticFiles::new(&dir)
        .with_titan(TitanOptions::new("tok"))
        .unwrap();
    let upstream = Server::builder()
        .host(VirtualHost::new("upstream.example", files).alias("proxied.example"))
        .build()
        .unwrap();
    let up_fp = upstream.fingerprints()[0].1.clone();
    let up = listen(&mut r, &upstream, "127.0.0.1");

    let garbage = tls_upstream(&mut r, || Garbage);
    let silent = tls_upstream(&mut r, || Silent);
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };

    let proxy = |port: u16| GeminiProxy::builder("127.0.0.1", port).sni("upstream.example");
    let pinned = || UpstreamTrust::Pinned(vec![up_fp.clone()]);
    let mut app = Router::new();
    app.mount(
        "/up",
        proxy(up.port())
            .rewrite_host(true)
            .trust(pinned())
            .build()
            .unwrap(),
    );
    app.mount("/tofu", proxy(up.port()).rewrite_host(true).build().unwrap());
    app.mount("/dead", proxy(dead_port).build().unwrap());
    app.mount(
        "/wrongcert",
        proxy(up.port())
            .trust(UpstreamTrust::Pinned(vec!["00".repeat(32)]))
            .build()
            .unwrap(),
    );
    app.mount("/garbage", proxy(garbage.port()).build().unwrap());
    app.mount(
        "/silent",
        proxy(silent.port())
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap(),
    );
    let whole_host = proxy(up.port())
        .sni("proxied.example")
        .trust(pinned())
        .build()
        .unwrap();
    let front = Server::builder()
        .host(VirtualHost::new("localhost", app))
        .host(VirtualHost::new("proxied.example", whole_host))
        .build()
        .unwrap();
    let addr = listen(&mut r, &front, "127.0.0.1");
    let p = addr.port();
    let url = |path: &str| format!("gemini://localhost:{p}{path}");
    let a = ask_python(
        &mut r,
        vec![
            Ask::line(addr, &url("/up/page.gmi")),
            Ask::line(addr, &url("/tofu/page.gmi")),
            // The whole host, its URL passed on as sent.
            Ask::line(addr, "gemini://proxied.example/").sni(Some("proxied.example")),
            Ask::bytes(
                addr,
                format!("titan://localhost:{p}/up/inbox/new.gmi;size=6;token=tok\r\nhello\n").into_bytes(),
            ),
            Ask::line(addr, &url("/up/inbox/new.gmi")),
            Ask::line(addr, &url("/up/missing.gmi")),
            Ask::line(addr, &url("/dead/")),
            Ask::line(addr, &url("/wrongcert/")),
            Ask::line(addr, &url("/garbage/")),
            Ask::line(addr, &url("/silent/")),
            // A host the front does not serve is refused, not proxied.
            Ask::line(addr, &format!("gemini://elsewhere.example:{p}/up/page.gmi")),
        ],
    );
    assert_eq!(
        (a[0].header(), a[0].body()),
        ("20 text/gemini".into(), &b"# A page upstream\n"[..])
    );
    assert!(a[0].close_notify);
    // The path goes upstream as it is: /tofu/page.gmi there.
    assert_eq!(
        a[1].body(),
        b"# Trusted on first use\n",
        "first-use trust: {:?}",
        a[1]
    );
    assert_eq!(a[2].body(), b"# Upstream home\n");
    assert_eq!(
        a[3].header(),
        format!("30 gemini://upstream.example:{}/up/inbox/new.gmi", up.port())
    );
    assert_eq!(std::fs::read(dir.join("up/inbox/new.gmi")).unwrap(), b"hello\n");
    assert_eq!(a[4].body(), b"hello\n");
    assert_eq!(a[5].status(), 51, "the upstream's own answer");
    for (i, answer) in a[6..10].iter().enumerate() {
        assert_eq!(answer.header(), "43 The upstream server failed", "failure {i}");
        assert!(answer.close_notify);
    }
    assert_eq!(a[10].status(), 53);
    std::fs::remove_dir_all(dir).unwrap();
}
