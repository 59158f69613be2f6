//! Reading a header that arrives one byte at a time, over real loopback
//! sockets, with each byte looked at before the next is sent (the peek
//! counter says when): the factory is called once, after the last byte,
//! with the client's address, and the application's bytes are untouched.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::linux::net::SocketAddrExt;
use std::rc::Rc;
use std::time::Duration;

use twistor_reactor::{Address, Protocol, Reactor, Transport};

use super::accept::PEEKS;
use super::ProxyOptions;
use crate::unix::{listen_unix_with, UnixListenOptions};
use crate::{listen_tcp_with, ListenOptions};

const WAIT: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Seen {
    built: Vec<Address>,
    peers: Vec<(Address, Address)>,
    data: Vec<u8>,
}

struct Echo(Rc<RefCell<Seen>>);
impl Protocol for Echo {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.0.borrow_mut().peers.push((t.peer(), t.host()));
    }
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        self.0.borrow_mut().data.extend_from_slice(d);
        t.write(d);
    }
}

fn peeks() -> u64 {
    PEEKS.with(|n| n.get())
}

/// Send `header` then `hello` one byte at a time, waiting after each byte
/// until the listener has looked at it; check what the server saw.
fn byte_by_byte(
    r: &mut Reactor,
    client: &mut (impl Read + Write),
    seen: &Rc<RefCell<Seen>>,
    header: &[u8],
    hello: &[u8],
) {
    for (i, b) in header.iter().enumerate() {
        let before = peeks();
        client.write_all(&[*b]).unwrap();
        let looked = r.run_until(WAIT, |_| peeks() > before).unwrap();
        assert!(looked, "byte {i} of the header was never looked at");
        if i + 1 < header.len() {
            assert!(seen.borrow().built.is_empty(), "built after {} bytes", i + 1);
        }
    }
    let done = r.run_until(WAIT, |_| seen.borrow().peers.len() == 1).unwrap();
    assert!(done, "no connection after the whole header");
    for b in hello {
        client.write_all(&[*b]).unwrap();
    }
    let n = hello.len();
    let echoed = r.run_until(WAIT, |_| seen.borrow().data.len() == n).unwrap();
    assert!(echoed, "the application's bytes did not all arrive");
    assert_eq!(seen.borrow().data, hello);
    let mut back = vec![0; n];
    client.read_exact(&mut back).unwrap();
    assert_eq!(back, hello);
}

#[test]
fn a_header_one_byte_at_a_time_over_tcp() {
    let mut r = Reactor::new().unwrap();
    r.set_install_signal_handlers(false);
    let seen = Rc::new(RefCell::new(Seen::default()));
    let s = seen.clone();
    let opts = ListenOptions {
        proxy_protocol: ProxyOptions::required(),
        ..ListenOptions::default()
    };
    let factory = move |a: &Address| {
        s.borrow_mut().built.push(a.clone());
        Echo(s.clone())
    };
    let port = listen_tcp_with(&mut r, "127.0.0.1:0", factory, opts).unwrap();
    let mut client = std::net::TcpStream::connect(port.local_addr()).unwrap();
    client.set_nodelay(true).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    let header = b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 1965\r\n";
    byte_by_byte(&mut r, &mut client, &seen, header, b"hello\r\n");
    let client_addr = Address::Inet("[2001:db8::7]:40000".parse::<SocketAddr>().unwrap());
    assert_eq!(seen.borrow().built, vec![client_addr.clone()]);
    let host = Address::Inet("[2001:db8::1]:1965".parse::<SocketAddr>().unwrap());
    assert_eq!(seen.borrow().peers, vec![(client_addr, host)]);
}

#[test]
fn a_v2_header_one_byte_at_a_time_over_a_unix_socket() {
    let mut r = Reactor::new().unwrap();
    r.set_install_signal_handlers(false);
    let seen = Rc::new(RefCell::new(Seen::default()));
    let s = seen.clone();
    let opts = UnixListenOptions {
        proxy_protocol: ProxyOptions::required(),
        ..UnixListenOptions::default()
    };
    let factory = move |a: &Address| {
        s.borrow_mut().built.push(a.clone());
        Echo(s.clone())
    };
    let name = format!("@twistor-proxy-split-{}", std::process::id());
    listen_unix_with(&mut r, name.as_str(), factory, opts).unwrap();
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name.as_bytes()[1..]).unwrap();
    let mut client = std::os::unix::net::UnixStream::connect_addr(&addr).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    let mut header = super::V2_SIGNATURE.to_vec();
    header.extend_from_slice(&[
        0x21, 0x11, 0, 12, 198, 51, 100, 9, 192, 0, 2, 1, 0x9c, 0x40, 0, 80,
    ]);
    byte_by_byte(&mut r, &mut client, &seen, &header, b"GET /\r\n");
    let client_addr = Address::Inet("198.51.100.9:40000".parse::<SocketAddr>().unwrap());
    assert_eq!(seen.borrow().built, vec![client_addr.clone()]);
    let host = Address::Inet("192.0.2.1:80".parse::<SocketAddr>().unwrap());
    assert_eq!(seen.borrow().peers, vec![(client_addr, host)]);
}
