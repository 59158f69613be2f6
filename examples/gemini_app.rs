//! A Gemini notes capsule on the framework: each visitor's notes are kept
//! under their client certificate's SHA-256 fingerprint, so a certificate
//! is an account and nobody needs a password.
//!
//! ```text
//! cargo run --example gemini_app            # port 1965
//! cargo run --example gemini_app 1966       # another port
//! ```
//!
//! Then browse `gemini://localhost/` with any Gemini client, and make a
//! client certificate when it asks for one. A Titan client (Lagrange,
//! `twistor fetch`) can also upload several notes at once, one per line,
//! to `titan://localhost/notes/add`. Notes live in memory.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use twistor::protocols::gemini::{
    collect, input, require_cert, Request, Response, Router, Server, VirtualHost,
};
use twistor::reactor::Reactor;

/// Notes by certificate fingerprint.
type Notes = Rc<RefCell<HashMap<String, Vec<String>>>>;

/// The largest Titan upload of notes taken, in bytes.
const MAX_UPLOAD: u64 = 4096;

/// One line per note: a control character would break the page.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `path` on the request's host, as a Gemini URL (a Titan upload's
/// answer must not send the client to a titan:// URL).
fn gemini_url(req: &Request, path: &str) -> String {
    let url = req.gemini_url();
    let end = url.len() - req.raw_path().len();
    format!("{}{path}", &url[..end])
}

fn app(notes: Notes) -> Router {
    let mut app = Router::new();
    app.route("/", |_| {
        Ok(Response::gemtext(
            "# Notes\n\nA notebook per client certificate.\n\n=> /notes My notes\n",
        )?)
    });
    let n = notes.clone();
    app.route("/notes", move |req| {
        let me = require_cert(req)?.fingerprint().to_string();
        let notes = n.borrow();
        let mine = notes.get(&me).map(Vec::as_slice).unwrap_or_default();
        let mut page = format!("# My notes\n\n{} note(s)\n\n", mine.len());
        for note in mine {
            page.push_str(&format!("* {note}\n"));
        }
        page.push_str("\n=> /notes/add Add a note\n=> /notes/clear Delete them all\n");
        let upload = gemini_url(req, "/notes/add").replacen("gemini://", "titan://", 1);
        page.push_str(&format!("=> {upload} Upload notes, one per line (Titan)\n"));
        Ok(Response::gemtext(page)?)
    });
    let n = notes.clone();
    app.route("/notes/add", move |req| {
        let me = require_cert(req)?.fingerprint().to_string();
        let text = input(req, "Your note")?;
        n.borrow_mut().entry(me).or_default().push(one_line(&text));
        Ok(Response::redirect("/notes")?)
    });
    // Titan: several notes at once, the body held in memory (at most
    // MAX_UPLOAD bytes: larger uploads are refused before they are read).
    let n = notes.clone();
    app.upload("/notes/add", MAX_UPLOAD, move |req, _cx| {
        let me = require_cert(req)?.fingerprint().to_string();
        let n = n.clone();
        Ok(collect(req, move |req, body| {
            let text = String::from_utf8_lossy(&body);
            let mut notes = n.borrow_mut();
            let mine = notes.entry(me).or_default();
            mine.extend(text.lines().filter(|l| !l.trim().is_empty()).map(one_line));
            Ok(Response::redirect(gemini_url(&req, "/notes"))?.into())
        }))
    });
    app.route("/notes/clear", move |req| {
        let me = require_cert(req)?.fingerprint().to_string();
        notes.borrow_mut().remove(&me);
        Ok(Response::redirect("/notes")?)
    });
    app
}

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(1965);
    let server = Server::builder()
        .host(
            VirtualHost::new("localhost", app(Notes::default()))
                .alias("127.0.0.1")
                .alias("::1"),
        )
        .build()?;
    let mut reactor = Reactor::new()?;
    let listening = server.listen(&mut reactor, port)?;
    log::info!("notes capsule on gemini://localhost:{}/", listening.port());
    reactor.run()
}

#[cfg(test)]
mod tests {
    use super::*;
    use twistor::protocols::gemini::Request;
    use twistor::transports::tls::{cert_facts, generate_self_signed_cert};

    #[test]
    fn notes_are_kept_per_certificate() {
        let notes = Notes::default();
        let app = app(notes.clone());
        let cert = |name| cert_facts(&generate_self_signed_cert(&[name]).unwrap().0[0]).unwrap();
        let (alice, bob) = (cert("alice"), cert("bob"));
        let ask = |url: &str, who: Option<&twistor::reactor::CertFacts>| {
            let mut req = Request::for_test(url);
            if let Some(c) = who {
                req = req.with_client_cert(c.clone(), false);
            }
            app.answer_for_test(req)
        };
        assert_eq!(ask("gemini://localhost/notes", None).status().code(), 60);
        assert_eq!(
            ask("gemini://localhost/notes/add", Some(&alice)).status().code(),
            10
        );
        let added = ask("gemini://localhost/notes/add?buy%20milk", Some(&alice));
        assert_eq!(added.header(), "30 /notes\r\n");
        assert_eq!(notes.borrow()[&alice.sha256_fingerprint], ["buy milk"]);
        assert!(!notes.borrow().contains_key(&bob.sha256_fingerprint));
        ask("gemini://localhost/notes/clear", Some(&alice));
        assert!(notes.borrow().is_empty());
    }

    #[test]
    fn notes_are_uploaded_with_titan() {
        use twistor::protocols::gemini::{Context, Handler, HandlerError, Reply};
        let notes = Notes::default();
        let app = app(notes.clone());
        let alice = cert_facts(&generate_self_signed_cert(&["alice"]).unwrap().0[0]).unwrap();
        let mut r = Reactor::new().unwrap();
        let body = b"milk\n\nbread\n";
        let url = format!("titan://localhost:1966/notes/add;size={}", body.len());
        let req = Request::for_test(&url).with_client_cert(alice.clone(), false);
        let mut cx = Context::new(&mut r, req.conn_id());
        let mut receiver = app.accept_upload(req, &mut cx).unwrap();
        receiver.data(&mut cx, body).unwrap();
        let Ok(Reply::Now(answer)) = receiver.end(&mut cx) else {
            panic!("an answer now");
        };
        assert_eq!(answer.header(), "30 gemini://localhost:1966/notes\r\n");
        assert_eq!(notes.borrow()[&alice.sha256_fingerprint], ["milk", "bread"]);
        // No certificate: 60 before a byte is read; too large: 59.
        let req = Request::for_test("titan://localhost/notes/add;size=3");
        let Err(HandlerError::Answer(a)) = app.accept_upload(req, &mut cx) else {
            panic!("refused");
        };
        assert_eq!(a.status().code(), 60);
        let req = Request::for_test("titan://localhost/notes/add;size=4097").with_client_cert(alice, false);
        let Err(HandlerError::Answer(a)) = app.accept_upload(req, &mut cx) else {
            panic!("refused");
        };
        assert_eq!(a.status().code(), 59);
    }
}
