//! A TCP port forwarder with backpressure (Twisted's `portforward`).
//!
//! The two sides of each proxied connection reach each other by `ConnId`.
//! When one side's write buffer goes over its high-water mark
//! (`pause_writing`), the other side stops reading until it drains
//! (`resume_writing`), so a slow receiver never makes the proxy buffer
//! without bound. An EOF from one side is passed on as a half-close
//! (`write_eof`), so a client that stops sending still gets its answer.
//!
//! ```text
//! cargo run --example portforward [PORT] [HOST] [TARGET_PORT]   # default 1234 localhost 8080
//! ```
use twistor::prelude::*;

/// One side of a proxied connection.
struct Proxy {
    /// The other side, once both are connected.
    peer: Option<ConnId>,
    /// Where to connect to (for the incoming side only).
    target: Option<(String, u16)>,
}

impl Proxy {
    /// Run `f` on the other side's transport.
    fn tell_peer(&self, t: &mut dyn Transport, f: impl FnOnce(&mut dyn Transport) + 'static) {
        if let Some(peer) = self.peer {
            let _ = t.reactor().call_on(peer, move |_, other| f(other));
        }
    }
}

impl Protocol for Proxy {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        let me = t.id();
        if let Some((host, port)) = self.target.take() {
            // Incoming: hold the client until the target answers.
            t.pause_reading();
            connect_tcp(t.reactor(), &host, port, Outgoing { incoming: me });
        } else {
            // Outgoing: introduce ourselves to the incoming side.
            self.tell_peer(t, move |other| other.resume_reading());
            let incoming = self.peer.unwrap();
            let _ = t.reactor().call_on(incoming, move |p, _| {
                if let Some(p) = p.downcast_mut::<Proxy>() {
                    p.peer = Some(me);
                }
            });
        }
    }

    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        let data = data.to_vec();
        self.tell_peer(t, move |other| other.write(&data));
    }

    // Half-close: this side has finished sending, so the other side
    // finishes too, once its buffer is flushed; the answer still flows back.
    fn eof_received(&mut self, t: &mut dyn Transport) -> bool {
        self.tell_peer(t, |other| other.write_eof());
        true
    }

    fn connection_lost(&mut self, t: &mut dyn Transport, _: &Reason) {
        self.tell_peer(t, |other| other.lose_connection());
    }

    // Backpressure: our buffer is full, so the other side must stop reading.
    fn pause_writing(&mut self, t: &mut dyn Transport) {
        self.tell_peer(t, |other| other.pause_reading());
    }

    fn resume_writing(&mut self, t: &mut dyn Transport) {
        self.tell_peer(t, |other| other.resume_reading());
    }
}

/// Connects the outgoing side, or closes the incoming one if it cannot.
struct Outgoing {
    incoming: ConnId,
}

impl Factory for Outgoing {
    fn build_protocol(&mut self, _: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(Proxy {
            peer: Some(self.incoming),
            target: None,
        }))
    }
}

impl ClientFactory for Outgoing {
    fn client_connection_failed(&mut self, r: &mut Reactor, c: &Connector, reason: &Reason) {
        eprintln!("cannot reach {}: {reason}", c.destination());
        let _ = r.close(self.incoming);
    }
}

fn main() -> lab::Result {
    lab::init_logging();
    let mut args = lab::Args::new("[PORT] [HOST] [TARGET_PORT]");
    let port = args.port();
    let host = args.text_or("localhost");
    let target_port = args.port_or(8080);
    let mut reactor = Reactor::new()?;
    let target = format!("{host}:{target_port}");
    let listening = listen_tcp(&mut reactor, port, move |_: &Address| Proxy {
        peer: None,
        target: Some((host.clone(), target_port)),
    })?;
    println!(
        "listening on TCP {}, forwarding to {target}",
        listening.local_addr()
    );
    Ok(reactor.run()?)
}
