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
//! client certificate when it asks for one. Notes live in memory.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use twistor::protocols::gemini::{input, require_cert, Response, Router, Server, VirtualHost};
use twistor::reactor::Reactor;

/// Notes by certificate fingerprint.
type Notes = Rc<RefCell<HashMap<String, Vec<String>>>>;

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
        Ok(Response::gemtext(page)?)
    });
    let n = notes.clone();
    app.route("/notes/add", move |req| {
        let me = require_cert(req)?.fingerprint().to_string();
        let text = input(req, "Your note")?;
        // One line per note: a newline would start a new gemtext line.
        let text: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        n.borrow_mut().entry(me).or_default().push(text);
        Ok(Response::redirect("/notes")?)
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
}
