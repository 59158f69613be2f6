//! A line-based chat server: every line a client sends goes to every other
//! client. Clients reach each other by `ConnId`.
//!
//! ```text
//! cargo run --example chat               # port 1234
//! telnet localhost 1234                   # in two or more terminals
//! ```
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
        c.send_line(format!("Welcome! {} here.", self.users.borrow().len()).as_bytes());
    }

    fn line_received(&mut self, c: &mut LineControl<'_>, line: &[u8]) {
        let me = c.id();
        let msg = [format!("<{}> ", c.peer()).as_bytes(), line].concat();
        self.broadcast(c.reactor(), me, &msg);
    }

    fn connection_lost(&mut self, c: &mut LineControl<'_>, _: &Reason) {
        let me = c.id();
        self.users.borrow_mut().retain(|&id| id != me);
        let left = format!("* {} left", c.peer());
        self.broadcast(c.reactor(), me, left.as_bytes());
    }
}

fn main() -> std::io::Result<()> {
    env_logger::init();
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(1234);
    let mut reactor = Reactor::new()?;
    let users = Users::default();
    listen_tcp(&mut reactor, port, move |_: &Address| {
        LineReceiver::new(Chat { users: users.clone() })
    })?;
    println!("chat on port {port}");
    reactor.run()
}
