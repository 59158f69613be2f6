//! The chat example as the README offers it: telnet sends CRLF, nc sends
//! LF alone, and both are chat; a line over the limit closes only that
//! client, and the server's log says why at the default level.

mod programs;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use programs::{example_command, Running, WAIT};

struct Client {
    out: TcpStream,
    lines: BufReader<TcpStream>,
}

impl Client {
    fn connect(port: u16) -> Client {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        Client {
            out: s.try_clone().unwrap(),
            lines: BufReader::new(s),
        }
    }

    /// The next line, with its line end.
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.lines.read_line(&mut l).expect("a line from the chat server");
        l
    }

    /// Whether the server closed this connection: end of file, or a reset
    /// when the close left some of our bytes unread.
    fn closed(&mut self) -> bool {
        let mut l = String::new();
        match self.lines.read_line(&mut l) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }

    fn local(&self) -> String {
        self.out.local_addr().unwrap().to_string()
    }
}

fn chat() -> (Running, u16) {
    let mut c = example_command("chat");
    c.arg("0");
    let server = Running::start(c);
    let port = server.wait_port("listening on TCP");
    (server, port)
}

#[test]
fn lf_and_crlf_lines_are_both_broadcast() {
    let (_server, port) = chat();
    let mut telnet = Client::connect(port);
    assert_eq!(telnet.line(), "Welcome! 1 here.\r\n");
    let mut nc = Client::connect(port);
    assert_eq!(nc.line(), "Welcome! 2 here.\r\n");
    assert_eq!(telnet.line(), format!("* {} joined\r\n", nc.local()));

    nc.out.write_all(b"hello from nc\n").unwrap();
    assert_eq!(telnet.line(), format!("<{}> hello from nc\r\n", nc.local()));
    telnet.out.write_all(b"hello from telnet\r\n").unwrap();
    assert_eq!(nc.line(), format!("<{}> hello from telnet\r\n", telnet.local()));
}

#[test]
fn an_over_long_line_closes_that_client_and_is_logged_by_default() {
    let (server, port) = chat();
    let mut a = Client::connect(port);
    a.line();
    let mut b = Client::connect(port);
    b.line();
    a.line(); // b joined
    let _ = b.out.write_all(&vec![b'x'; 20_000]); // may meet the close
    assert!(b.closed(), "the over-long line's sender is closed");
    assert_eq!(a.line(), format!("* {} left\r\n", b.local()));
    server.wait_line("the limit's log line", |l| {
        l.contains("WARN") && l.contains("sent a line longer than 16384 bytes; closing")
    });
    server.wait_line("why the client left", |l| {
        l.ends_with("left: limit exceeded: line longer than 16384 bytes")
    });
}
