//! The `portforward` example, run as a student would: bytes sent through
//! it reach the target, and the target's answer comes back in full even
//! when the client half-closes after sending (`nc -N`, `shutdown(SHUT_WR)`),
//! as a file piped through the proxy does.

mod programs;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use programs::example;

const WAIT: Duration = Duration::from_secs(20);

/// A blocking echo server on loopback that echoes until EOF, then closes:
/// the target behind the proxy.
fn echo_target() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut s);
            });
        }
    });
    port
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_half_closing_client_gets_the_whole_answer_through_the_proxy() {
    let target = echo_target();
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = Command::new(example("portforward"))
        .args([port.to_string(), "127.0.0.1".into(), target.to_string()])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the proxy to listen: its log says so.
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if line.contains("listening on TCP") {
                let _ = tx.send(());
            }
        }
    });
    let _guard = Killed(child);
    rx.recv_timeout(WAIT).expect("the proxy never listened");

    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    c.set_write_timeout(Some(WAIT)).unwrap();
    let mut w = c.try_clone().unwrap();
    let data = payload.clone();
    let writer = std::thread::spawn(move || {
        w.write_all(&data).unwrap();
        // Done sending, still listening: a half-close.
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    c.read_to_end(&mut back).expect("reading the answer");
    writer.join().unwrap();
    assert_eq!(back.len(), payload.len(), "the answer was cut short");
    assert!(back == payload, "the answer differs");
}
