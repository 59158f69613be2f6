//! A line-based chat server: every line a client sends goes to every other
//! client. Clients reach each other by `ConnId`.
//!
//! ```text
//! cargo run --example chat [PORT]        # default port 1234
//! telnet localhost 1234                   # in two or more terminals; nc works too
//! ```
//!
//! A line longer than 16 KiB closes that client's connection (logged, and
//! the others are told it left).
use std::cell::RefCell;
use std::rc::Rc;

use twistor::prelude::*;
use twistor::protocols::{LineControl, LineHandler, LineReceiver};

/// Who is connected, shared by every connection of the server.
type Users = Rc<RefCell<Vec<ConnId>>>;

struct Chat {
    users: Users,
}

impl Chat {
    /// Send `line` to everybody but `from`.
    fn broadcast(&self, r: &mut Reactor, from: ConnId, line: &[u8]) {
        for &id in self.users.borrow().iter().filter(|&&id| id != from) {
            let _ = r.write_to(id, [line, b"\r\n"].concat());
        }
    }
}

impl LineHandler for Chat {
    fn connection_made(&mut self, c: &mut LineControl<'_>) {
        let me = c.id();
        let joined = format!("* {} joined", c.peer());
        self.broadcast(c.reactor(), me, joined.as_bytes());
        self.users.borrow_mut().push(me);
        c.write(format!("Welcome! {} here.\r\n", self.users.borrow().len()).as_bytes());
    }

    fn line_received(&mut self, c: &mut LineControl<'_>, line: &[u8]) {
        // Lines end at LF; a CR before it (telnet's CRLF) is dropped too.
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let me = c.id();
        let msg = [format!("<{}> ", c.peer()).as_bytes(), line].concat();
        self.broadcast(c.reactor(), me, &msg);
    }

    fn connection_lost(&mut self, c: &mut LineControl<'_>, reason: &Reason) {
        println!("{} left: {reason}", c.peer());
        let me = c.id();
        self.users.borrow_mut().retain(|&id| id != me);
        let left = format!("* {} left", c.peer());
        self.broadcast(c.reactor(), me, left.as_bytes());
    }
}

fn main() -> lab::Result {
    lab::init_logging();
    let port = lab::Args::new("[PORT]").port();
    let mut reactor = Reactor::new()?;
    let users = Users::default();
    let listening = listen_tcp(&mut reactor, port, move |_: &Address| {
        // Twisted's LineReceiver splits at CRLF only, so lines from `nc` (LF
        // alone) would never arrive: split at LF and drop a CR before it,
        // which serves telnet (CRLF) and nc alike.
        LineReceiver::new(Chat { users: users.clone() }).with_delimiter(b"\n")
    })?;
    println!("listening on TCP {}", listening.local_addr());
    Ok(reactor.run()?)
}
