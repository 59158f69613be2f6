//! The Gemini client against twistor's Gemini server, both in this
//! process on one reactor, over real loopback sockets: trust on first use
//! (first use, a changed certificate refused with both fingerprints, then
//! replaced on request; an expired pin replaced; two ports of one host
//! pinned apart), redirects (followed, across hosts, loops, limits, other
//! schemes), input, SNI only for names, a client certificate reaching a CGI
//! script and not another host, and every limit's error.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use twistor_protocols::gemini::{
    fetch, fetch_with, input, sensitive_input, with_input, CgiOptions, FetchError, FetchHandler,
    FetchOptions, FetchResponse, Identity, KnownHost, KnownHosts, Redirect, RedirectStop, Replacement, Reply,
    Response, ResponseHead, Router, Server, ServerTrust, StaticFiles, TrustDecision, VirtualHost,
};
use twistor_reactor::Reactor;
use twistor_transports::tls::generate_self_signed_cert;

/// The bound on every wait.
const WAIT: Duration = Duration::from_secs(60);

fn reactor() -> Reactor {
    let mut r = Reactor::new().unwrap();
    r.set_install_signal_handlers(false);
    r
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("twistor-gemini-client-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Fetch `url` and run the reactor until the result is in.
fn get(r: &mut Reactor, url: &str, opts: FetchOptions) -> Result<FetchResponse, FetchError> {
    let slot = Rc::new(RefCell::new(None));
    let s = slot.clone();
    fetch(r, url, opts, move |_, result| *s.borrow_mut() = Some(result));
    let done = r.run_until(WAIT, |_| slot.borrow().is_some()).unwrap();
    assert!(done, "no result for {url} in time");
    let result = slot.borrow_mut().take().unwrap();
    result
}

fn tofu(store: &std::sync::Arc<KnownHosts>) -> FetchOptions {
    FetchOptions {
        trust: ServerTrust::KnownHosts(store.clone()),
        ..FetchOptions::default()
    }
}

/// The test capsule: pages, redirects of every kind, input, SNI, and CGI
/// under `root` when given.
fn app(root: Option<&Path>) -> Router {
    let mut app = Router::new();
    app.route("/", |_| Ok(Response::gemtext("# Home\n")?));
    app.route("/a", |_| Ok(Response::redirect("/b")?));
    app.route("/b", |req| {
        let port = req.port().unwrap_or(1965);
        Ok(Response::redirect_permanent(format!(
            "gemini://127.0.0.1:{port}/c"
        ))?)
    });
    app.route("/c", |req| {
        Ok(Response::gemtext(format!("c for {}\n", req.hostname()))?)
    });
    app.route("/loop1", |_| Ok(Response::redirect("/loop2")?));
    app.route("/loop2", |_| Ok(Response::redirect("loop1")?));
    app.route("/chain/<n>", |req| {
        let n: u32 = req.capture("n").unwrap().parse().unwrap();
        if n == 0 {
            return Ok(Response::gemtext("end\n")?);
        }
        Ok(Response::redirect(format!("/chain/{}", n - 1))?)
    });
    app.route("/elsewhere", |_| Ok(Response::redirect("https://example.org/")?));
    app.route("/nowhere", |_| Ok(Response::redirect("gemini://[zz/")?));
    app.route("/ask", |req| {
        let name = input(req, "Your name?")?;
        Ok(Response::gemtext(format!("Hello, {name}!\n"))?)
    });
    app.route("/secret", |req| {
        let s = sensitive_input(req, "Password")?;
        Ok(Response::gemtext(format!("{} characters\n", s.chars().count()))?)
    });
    app.route("/sni", |req| {
        Ok(Response::gemtext(format!("{:?}", req.tls().sni))?)
    });
    app.route("/big", |_| {
        Ok(Response::success("application/octet-stream")?.with_body(vec![7u8; 200_000]))
    });
    app.route("/to-cgi-elsewhere", |req| {
        let port = req.port().unwrap_or(1965);
        Ok(Response::redirect(format!(
            "gemini://127.0.0.1:{port}/cgi-bin/who.sh"
        ))?)
    });
    // Never answered while the test runs (the responders are kept).
    let kept = Rc::new(RefCell::new(Vec::new()));
    app.route_deferred("/never", move |_, cx| {
        kept.borrow_mut().push(cx.defer());
        Ok(Reply::Later)
    });
    if let Some(root) = root {
        app.fallback(StaticFiles::new(root).with_cgi(CgiOptions::default()));
    }
    app
}

/// A server for `localhost` (and 127.0.0.1, ::1) with this certificate.
fn server(cert_names: &[&str], root: Option<&Path>) -> Server {
    let (chain, key) = generate_self_signed_cert(cert_names).unwrap();
    Server::builder()
        .host(
            VirtualHost::new("localhost", app(root))
                .alias("127.0.0.1")
                .alias("::1")
                .cert(chain, key),
        )
        .build()
        .unwrap()
}

fn listen(r: &mut Reactor, server: &Server, addr: &str) -> SocketAddr {
    let addr: SocketAddr = addr.parse().unwrap();
    server.listen(r, addr).unwrap().local_addr()
}

#[test]
fn trust_on_first_use_then_a_changed_certificate_is_refused_then_trusted_on_request() {
    let dir = temp_dir("tofu");
    let file = dir.join("data/known_hosts");
    let store = KnownHosts::open(&file).unwrap();
    let mut r = reactor();
    let first = server(&["first"], None);
    let port = first
        .listen(&mut r, "127.0.0.1:0".parse::<SocketAddr>().unwrap())
        .unwrap();
    let p = port.port();
    let url = format!("gemini://localhost:{p}/");
    let first_fp = first.fingerprints()[0].1.clone();

    let resp = get(&mut r, &url, tofu(&store)).unwrap();
    assert_eq!((resp.code(), resp.body.as_slice()), (20, &b"# Home\n"[..]));
    assert_eq!(resp.head.server_cert.fingerprint, first_fp);
    assert_eq!(resp.head.server_cert.decision, TrustDecision::FirstUse);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(&format!("localhost {p} {first_fp} ")), "{text}");
    // Another client reading the file knows it now.
    let resp = get(&mut r, &url, tofu(&KnownHosts::open(&file).unwrap())).unwrap();
    assert_eq!(resp.head.server_cert.decision, TrustDecision::Known);

    // Another server, another certificate, the same host and port.
    port.stop_listening(&mut r);
    let second = server(&["second"], None);
    let again = second.listen(&mut r, format!("127.0.0.1:{p}").parse::<SocketAddr>().unwrap());
    let again = again.expect("the port again");
    let second_fp = second.fingerprints()[0].1.clone();
    assert_ne!(first_fp, second_fp);
    match get(&mut r, &url, tofu(&store)) {
        Err(FetchError::CertificateChanged(c)) => {
            assert_eq!(
                (c.trusted.fingerprint.as_str(), c.offered.as_str()),
                (first_fp.as_str(), second_fp.as_str())
            );
            let msg = c.to_string();
            assert!(msg.contains(&first_fp) && msg.contains(&second_fp), "{msg}");
            assert!(msg.contains(&format!("localhost:{p}")), "{msg}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(
        std::fs::read_to_string(&file).unwrap().contains(&first_fp),
        "the pin is kept"
    );

    // Told to trust the new one: accepted, and it replaces the old pin.
    let resp = get(
        &mut r,
        &url,
        FetchOptions {
            trust_new: true,
            ..tofu(&store)
        },
    )
    .unwrap();
    assert_eq!(
        resp.head.server_cert.decision,
        TrustDecision::Replaced {
            old: first_fp.clone(),
            why: Replacement::TrustNew
        }
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(&second_fp) && !text.contains(&first_fp), "{text}");
    let resp = get(&mut r, &url, tofu(&KnownHosts::open(&file).unwrap())).unwrap();
    assert_eq!(resp.head.server_cert.decision, TrustDecision::Known);

    // Insecure: nothing checked, nothing recorded.
    let empty = KnownHosts::in_memory();
    let resp = get(
        &mut r,
        &url,
        FetchOptions {
            trust: ServerTrust::Insecure,
            ..tofu(&empty)
        },
    )
    .unwrap();
    assert_eq!(resp.head.server_cert.decision, TrustDecision::Unchecked);
    again.stop_listening(&mut r);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_expired_pin_is_replaced_but_a_valid_one_is_not() {
    let mut r = reactor();
    let s = server(&["localhost"], None);
    let addr = listen(&mut r, &s, "127.0.0.1:0");
    let url = format!("gemini://localhost:{}/", addr.port());
    let pin = |expires: SystemTime| {
        let store = KnownHosts::in_memory();
        store
            .record(KnownHost {
                host: "localhost".into(),
                port: addr.port(),
                fingerprint: "ab".repeat(32),
                first_seen: UNIX_EPOCH,
                expires,
            })
            .unwrap();
        store
    };
    let expired = UNIX_EPOCH + Duration::from_secs(1_000_000);
    let resp = get(&mut r, &url, tofu(&pin(expired))).unwrap();
    assert_eq!(
        resp.head.server_cert.decision,
        TrustDecision::Replaced {
            old: "ab".repeat(32),
            why: Replacement::Expired(expired)
        }
    );
    let valid = SystemTime::now() + Duration::from_secs(86_400);
    let err = get(&mut r, &url, tofu(&pin(valid))).unwrap_err();
    assert!(matches!(err, FetchError::CertificateChanged(_)), "{err}");
}

#[test]
fn two_ports_of_one_host_are_trusted_apart() {
    let mut r = reactor();
    let (one, two) = (server(&["one"], None), server(&["two"], None));
    let p1 = listen(&mut r, &one, "127.0.0.1:0").port();
    let p2 = listen(&mut r, &two, "127.0.0.1:0").port();
    let store = KnownHosts::in_memory();
    for (p, s) in [(p1, &one), (p2, &two), (p1, &one), (p2, &two)] {
        let resp = get(&mut r, &format!("gemini://localhost:{p}/"), tofu(&store)).unwrap();
        assert_eq!(resp.head.server_cert.fingerprint, s.fingerprints()[0].1);
    }
    assert_eq!(
        store.get("localhost", p1).unwrap().fingerprint,
        one.fingerprints()[0].1
    );
    assert_eq!(
        store.get("localhost", p2).unwrap().fingerprint,
        two.fingerprints()[0].1
    );
    assert_eq!(store.entries().len(), 2);
}

#[test]
fn redirects_are_followed_reported_and_stopped() {
    let mut r = reactor();
    let s = server(&["localhost"], None);
    let p = listen(&mut r, &s, "127.0.0.1:0").port();
    let store = KnownHosts::in_memory();
    let url = |path: &str| format!("gemini://localhost:{p}{path}");

    // Two hops, the second to another host (an address of the same server).
    let resp = get(&mut r, &url("/a"), tofu(&store)).unwrap();
    assert_eq!(resp.code(), 20);
    assert_eq!(resp.body, b"c for 127.0.0.1\n");
    assert_eq!(resp.url().as_str(), format!("gemini://127.0.0.1:{p}/c"));
    let hops: Vec<(u8, String, bool)> = resp
        .redirects
        .iter()
        .map(|h| (h.code, h.to.to_string(), h.cross_host))
        .collect();
    assert_eq!(
        hops,
        vec![
            (30, url("/b"), false),
            (31, format!("gemini://127.0.0.1:{p}/c"), true)
        ]
    );
    assert!(resp.redirect_stopped.is_none());

    // A loop: the 3x that would close it is the result.
    let resp = get(&mut r, &url("/loop1"), tofu(&store)).unwrap();
    assert_eq!((resp.code(), resp.redirects.len()), (30, 1));
    assert_eq!(
        resp.redirect_stopped,
        Some(RedirectStop::Loop(url("/loop1").parse().unwrap()))
    );

    // Five hops are followed, not six; the knob changes it.
    let resp = get(&mut r, &url("/chain/5"), tofu(&store)).unwrap();
    assert_eq!((resp.code(), resp.redirects.len()), (20, 5));
    let resp = get(&mut r, &url("/chain/6"), tofu(&store)).unwrap();
    assert_eq!(resp.code(), 30);
    assert_eq!(resp.redirect_stopped, Some(RedirectStop::Limit(5)));
    let opts = FetchOptions {
        max_redirects: 0,
        ..tofu(&store)
    };
    let resp = get(&mut r, &url("/a"), opts).unwrap();
    assert_eq!((resp.code(), resp.meta()), (30, "/b"));
    assert_eq!(resp.redirect_stopped, Some(RedirectStop::Limit(0)));

    // Other schemes and non-URLs are not followed.
    let resp = get(&mut r, &url("/elsewhere"), tofu(&store)).unwrap();
    assert!(
        matches!(resp.redirect_stopped, Some(RedirectStop::Scheme(_))),
        "{resp:?}"
    );
    let resp = get(&mut r, &url("/nowhere"), tofu(&store)).unwrap();
    assert!(
        matches!(resp.redirect_stopped, Some(RedirectStop::Invalid(_))),
        "{resp:?}"
    );
}

#[test]
fn input_is_returned_and_answered_in_the_query() {
    let mut r = reactor();
    let s = server(&["localhost"], None);
    let p = listen(&mut r, &s, "127.0.0.1:0").port();
    let store = KnownHosts::in_memory();
    let resp = get(&mut r, &format!("gemini://localhost:{p}/ask"), tofu(&store)).unwrap();
    assert_eq!((resp.code(), resp.meta()), (10, "Your name?"));
    let answer = with_input(resp.url(), "Zoë & co?");
    let resp = get(&mut r, answer.as_str(), tofu(&store)).unwrap();
    assert_eq!(resp.body, "Hello, Zoë & co?!\n".as_bytes());
    let resp = get(&mut r, &format!("gemini://localhost:{p}/secret"), tofu(&store)).unwrap();
    assert_eq!(resp.code(), 11);
}

#[test]
fn sni_is_sent_for_names_and_not_for_addresses() {
    let mut r = reactor();
    let s = server(&["localhost"], None);
    let p = listen(&mut r, &s, "127.0.0.1:0").port();
    let store = KnownHosts::in_memory();
    let body =
        |r: &mut Reactor, url: String| String::from_utf8(get(r, &url, tofu(&store)).unwrap().body).unwrap();
    assert_eq!(
        body(&mut r, format!("gemini://localhost:{p}/sni")),
        "Some(\"localhost\")"
    );
    assert_eq!(
        body(&mut r, format!("gemini://LocalHost:{p}/sni")),
        "Some(\"localhost\")"
    );
    assert_eq!(body(&mut r, format!("gemini://127.0.0.1:{p}/sni")), "None");
    match s.listen(&mut r, "[::1]:0".parse::<SocketAddr>().unwrap()) {
        Ok(l) => assert_eq!(body(&mut r, format!("gemini://[::1]:{}/sni", l.port())), "None"),
        Err(e) => eprintln!("SKIPPED the IPv6 part: cannot listen on ::1: {e}"),
    }
}

#[test]
fn a_client_certificate_reaches_cgi_and_never_another_host() {
    let dir = temp_dir("identity");
    let bin = dir.join("root/cgi-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("who.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf '20 text/plain\\r\\n'\necho \"user=$REMOTE_USER\"\necho \"hash=$TLS_CLIENT_HASH\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (alice, created) = Identity::named_in(&dir.join("identities"), "alice").unwrap();
    assert!(created);
    let mut r = reactor();
    let s = server(&["localhost"], Some(&dir.join("root")));
    let p = listen(&mut r, &s, "127.0.0.1:0").port();
    let store = KnownHosts::in_memory();
    let opts = FetchOptions {
        identity: Some(alice.clone()),
        ..tofu(&store)
    };
    let resp = get(
        &mut r,
        &format!("gemini://localhost:{p}/cgi-bin/who.sh"),
        opts.clone(),
    )
    .unwrap();
    let text = String::from_utf8(resp.body).unwrap();
    let hash = format!("SHA256:{}", alice.fingerprint().to_ascii_uppercase());
    assert_eq!(text, format!("user=alice\nhash={hash}\n"));

    // Redirected to another host: the certificate stays home.
    let resp = get(&mut r, &format!("gemini://localhost:{p}/to-cgi-elsewhere"), opts).unwrap();
    assert!(resp.redirects[0].cross_host);
    assert_eq!(String::from_utf8(resp.body).unwrap(), "user=\nhash=\n");

    // The same identity on the next run: loaded, not made anew.
    let (again, created) = Identity::named_in(&dir.join("identities"), "alice").unwrap();
    assert!(!created);
    assert_eq!(again.fingerprint(), alice.fingerprint());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn limits_and_failures_are_clear_errors() {
    let mut r = reactor();
    let s = server(&["localhost"], None);
    let p = listen(&mut r, &s, "127.0.0.1:0").port();
    let store = KnownHosts::in_memory();

    // The whole request: a server that never answers.
    let opts = FetchOptions {
        timeout: Some(Duration::from_secs(1)),
        ..tofu(&store)
    };
    let err = get(&mut r, &format!("gemini://localhost:{p}/never"), opts).unwrap_err();
    assert!(matches!(err, FetchError::Timeout { .. }), "{err:?}");
    assert_eq!(err.to_string(), "the request did not complete within 1 s");

    // The body bound of fetch().
    let opts = FetchOptions {
        max_body: 100_000,
        ..tofu(&store)
    };
    let err = get(&mut r, &format!("gemini://localhost:{p}/big"), opts).unwrap_err();
    assert!(
        matches!(err, FetchError::BodyTooLarge { limit: 100_000 }),
        "{err:?}"
    );
    let resp = get(&mut r, &format!("gemini://localhost:{p}/big"), tofu(&store)).unwrap();
    assert_eq!(resp.body.len(), 200_000);

    // Nobody listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let err = get(
        &mut r,
        &format!("gemini://127.0.0.1:{closed_port}/"),
        tofu(&store),
    )
    .unwrap_err();
    assert!(matches!(err, FetchError::Connect { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("cannot connect to 127.0.0.1:{closed_port}: ")),
        "{msg}"
    );
    assert!(msg.to_lowercase().contains("refused"), "{msg}");

    // A TCP listener that never speaks TLS: the handshake times out.
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let opts = FetchOptions {
        connect_timeout: Duration::from_secs(1),
        ..tofu(&store)
    };
    let url = format!("gemini://127.0.0.1:{}/", mute.local_addr().unwrap().port());
    let err = get(&mut r, &url, opts).unwrap_err();
    assert!(matches!(err, FetchError::HandshakeTimeout { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("TLS handshake did not complete within 1 s"),
        "{err}"
    );
    drop(mute);

    // URLs that cannot be fetched.
    for (url, part) in [
        ("https://example.org/", "only gemini:// and titan://"),
        ("not a url", "is not a URL"),
        ("gemini://user@localhost/", "userinfo"),
        ("titan://localhost/x", "needs something to upload"),
    ] {
        let err = get(&mut r, url, tofu(&store)).unwrap_err();
        assert!(matches!(err, FetchError::BadUrl(_)), "{url}: {err:?}");
        assert!(err.to_string().contains(part), "{url}: {err}");
    }
    let long = format!("gemini://localhost/{}", "a".repeat(1100));
    assert!(matches!(
        get(&mut r, &long, tofu(&store)),
        Err(FetchError::BadUrl(_))
    ));
}

/// Records what a streaming handler is told; panics in `body` if asked.
struct Recording {
    events: Rc<RefCell<Vec<String>>>,
    panic_in_body: bool,
}

impl FetchHandler for Recording {
    fn header(&mut self, _: &mut Reactor, head: &ResponseHead) {
        self.events
            .borrow_mut()
            .push(format!("header {} {}", head.code, head.meta));
    }
    fn redirect(&mut self, _: &mut Reactor, hop: &Redirect) {
        self.events
            .borrow_mut()
            .push(format!("redirect {} cross={}", hop.to.path(), hop.cross_host));
    }
    fn body(&mut self, _: &mut Reactor, data: &[u8]) -> Result<(), FetchError> {
        if self.panic_in_body {
            panic!("a handler bug");
        }
        self.events.borrow_mut().push(format!("body {}", data.len()));
        Ok(())
    }
    fn done(&mut self, _: &mut Reactor, result: Result<FetchResponse, FetchError>) {
        let what = match result {
            Ok(resp) => format!("done {} {} bytes", resp.code(), resp.body_len),
            Err(e) => format!("failed: {e}"),
        };
        self.events.borrow_mut().push(what);
    }
}

#[test]
fn a_handler_sees_each_header_and_its_panic_ends_only_its_fetch() {
    let mut r = reactor();
    let s = server(&["localhost"], None);
    let p = listen(&mut r, &s, "127.0.0.1:0").port();
    let run = |r: &mut Reactor, url: String, panic_in_body: bool| {
        let events = Rc::new(RefCell::new(Vec::new()));
        let handler = Recording {
            events: events.clone(),
            panic_in_body,
        };
        fetch_with(r, &url, FetchOptions::default(), handler);
        let e = events.clone();
        let done = r
            .run_until(WAIT, |_| {
                e.borrow()
                    .last()
                    .is_some_and(|l| l.starts_with("done") || l.starts_with("failed"))
            })
            .unwrap();
        assert!(done, "{url}: no end in time");
        let v = events.borrow().clone();
        v
    };
    let events = run(&mut r, format!("gemini://localhost:{p}/a"), false);
    assert_eq!(
        events[..4],
        [
            "header 30 /b",
            "redirect /b cross=false",
            &format!("header 31 gemini://127.0.0.1:{p}/c")[..],
            "redirect /c cross=true"
        ]
    );
    assert_eq!(events[4], "header 20 text/gemini");
    assert!(
        events[5..events.len() - 1].iter().all(|e| e.starts_with("body ")),
        "{events:?}"
    );
    assert_eq!(events.last().unwrap(), "done 20 16 bytes");

    let events = run(&mut r, format!("gemini://localhost:{p}/big"), true);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        events[1],
        "failed: the response handler stopped the fetch: body panicked: a handler bug"
    );
    // The reactor, the server and other fetches carry on.
    let resp = get(
        &mut r,
        &format!("gemini://localhost:{p}/"),
        FetchOptions::default(),
    )
    .unwrap();
    assert_eq!(resp.body, b"# Home\n");
}
