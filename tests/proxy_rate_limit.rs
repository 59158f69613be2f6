//! Behind a PROXY-protocol load balancer, a per-address policy in the
//! factory keys on the client the header names, not on the proxy: here
//! `LimitConnectionRate` allows one connection per client, and every
//! connection comes from the same socket address (the "proxy", 127.0.0.1).

mod common;

use std::io::Write;

use common::{client, in_thread, read_to_eof, round_trip};
use twistor::prelude::*;
use twistor::protocols::{LimitConnectionRate, RateLimiter};
use twistor::transports::proxy::ProxyOptions;
use twistor::transports::{listen_tcp_with, ListenOptions};

struct Echo;

impl Protocol for Echo {
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        t.write(data);
    }
}

#[test]
fn the_connection_rate_limit_keys_on_the_client_the_header_names() {
    let mut r = common::reactor();
    // One connection per address, never refilled.
    let policy = LimitConnectionRate::new(|_: &Address| Echo, RateLimiter::new(0.0, 1.0));
    let limiter = policy.limiter();
    let opts = ListenOptions {
        proxy_protocol: ProxyOptions::required(),
        ..ListenOptions::default()
    };
    let addr = listen_tcp_with(&mut r, "127.0.0.1:0", policy, opts)
        .unwrap()
        .local_addr();
    let via_proxy = move |client_ip: &str| {
        let mut c = client(addr);
        write!(c, "PROXY TCP4 {client_ip} 192.0.2.1 40000 7\r\n").unwrap();
        c
    };

    // The first client is served...
    let mut first = in_thread(&mut r, move || {
        let mut c = via_proxy("203.0.113.7");
        assert_eq!(round_trip(&mut c, b"one"), b"one");
        c
    });
    // ...a second connection from the same client is refused (closed
    // once its header is read), though the proxy's address is the same...
    let refused = in_thread(&mut r, move || read_to_eof(&mut via_proxy("203.0.113.7")));
    assert_eq!(refused, b"");
    // ...and another client through the same proxy is served.
    let served = in_thread(&mut r, move || {
        round_trip(&mut via_proxy("203.0.113.8"), b"three")
    });
    assert_eq!(served, b"three");
    // Two clients tracked, not one proxy.
    assert_eq!(limiter.borrow().tracked(), 2);
    assert_eq!(round_trip_in(&mut r, &mut first), b"again");
}

/// The first client's connection still works.
fn round_trip_in(r: &mut Reactor, c: &mut std::net::TcpStream) -> Vec<u8> {
    let mut c = c.try_clone().unwrap();
    in_thread(r, move || round_trip(&mut c, b"again"))
}
