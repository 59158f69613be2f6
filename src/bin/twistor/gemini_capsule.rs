//! The capsule `twistor gemini` serves when it is given no directory: a
//! few pages that introduce twistor and link to one another, plus two that
//! show what the framework does (an input prompt, a client certificate).

use twistor::protocols::gemini::{input, require_cert, Response, Router};

const HOME: &str = "\
# twistor

You are reading a Gemini capsule served by twistor, a Twisted-style networking toolkit in Rust: one reactor, protocols and transports, and this Gemini server built on them.

=> /about.gmi What twistor is
=> /serve.gmi Serve your own capsule
=> /echo Type something (an input prompt)
=> /whoami Who am I? (a client certificate)
";

const ABOUT: &str = "\
# What twistor is

twistor is a networking toolkit in the style of Twisted: a single-threaded reactor dispatches events to protocol objects through transports (TCP, UDP, Unix sockets, child processes, TLS).

This server is one of its protocols: one request per connection, the answer streamed with backpressure, close_notify after every response.

=> / Home
=> /serve.gmi Serve your own capsule
";

const SERVE: &str = "\
# Serve your own capsule

```
twistor gemini --dir ~/capsule --hostname example.org
```

Files ending in .gmi are served as text/gemini, directories show their index.gmi or a listing, and executables in cgi-bin/ run as CGI scripts. Several host names, each with its own certificate, come from a config file:

```
twistor gemini --config capsules.toml
```

=> / Home
";

/// The built-in capsule.
pub fn capsule() -> Router {
    let mut app = Router::new();
    app.route("/", |_| Ok(Response::gemtext(HOME)?));
    app.route("/about.gmi", |_| Ok(Response::gemtext(ABOUT)?));
    app.route("/serve.gmi", |_| Ok(Response::gemtext(SERVE)?));
    app.route("/echo", |req| {
        let text = input(req, "Say something")?;
        Ok(Response::gemtext(format!(
            "# You said\n\n> {text}\n\n=> / Home\n"
        ))?)
    });
    app.route("/whoami", |req| {
        let cert = require_cert(req)?;
        let name = cert.subject_cn().unwrap_or("(no name)");
        Ok(Response::gemtext(format!(
            "# You are {name}\n\nYour certificate's SHA-256 fingerprint:\n\n```\n{}\n```\n\n=> / Home\n",
            cert.fingerprint()
        ))?)
    });
    app
}
