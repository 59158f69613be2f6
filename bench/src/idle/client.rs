//! The client side of `twistor-bench idle`: many connections to one echo
//! server, opened in waves, each sending one message and waiting for the
//! whole echo, then kept open and idle. A twistor reactor on this thread
//! drives them (TCP, or TLS with the server's certificate pinned).

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use twistor_reactor::{Address, ClientFactory, ConnId, Connector, Protocol, Reactor, Reason, Transport};
use twistor_transports::tls::rustls::ClientConfig;
use twistor_transports::{connect_tcp, connect_tls};

/// Connections opened, or messages sent, before waiting for their echoes.
const WAVE: usize = 250;
/// The bound on one wave (generous: a loaded machine, TLS handshakes).
const WAVE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Default)]
struct Stats {
    /// Bytes each connection has had echoed, by index.
    echoed: RefCell<Vec<usize>>,
    /// Connections whose echo is complete so far (of the current message).
    complete: Cell<usize>,
    failed: Cell<usize>,
    lost: Cell<usize>,
    ids: RefCell<Vec<ConnId>>,
}

/// Counts echoed bytes; a connection is complete when `expect` bytes came
/// back.
struct Client {
    index: usize,
    first: Rc<[u8]>,
    stats: Rc<Stats>,
    expect: Rc<Cell<usize>>,
}

impl Protocol for Client {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.stats.ids.borrow_mut()[self.index] = t.id();
        t.write(&self.first);
    }

    fn data_received(&mut self, _: &mut dyn Transport, data: &[u8]) {
        let mut echoed = self.stats.echoed.borrow_mut();
        let before = echoed[self.index];
        echoed[self.index] += data.len();
        let want = self.expect.get();
        if before < want && echoed[self.index] >= want {
            self.stats.complete.set(self.stats.complete.get() + 1);
        }
    }

    fn connection_lost(&mut self, _: &mut dyn Transport, _: &Reason) {
        self.stats.lost.set(self.stats.lost.get() + 1);
    }
}

/// Builds connection number `index`; counts failed attempts, a failed
/// TLS handshake included (reported after the protocol was built).
struct OneClient {
    index: usize,
    stats: Rc<Stats>,
    client: Option<Client>,
}

impl twistor_reactor::Factory for OneClient {
    fn build_protocol(&mut self, _: &Address) -> Option<Box<dyn Protocol>> {
        self.client.take().map(|c| Box::new(c) as Box<dyn Protocol>)
    }
}

impl ClientFactory for OneClient {
    fn client_connection_failed(&mut self, _: &mut Reactor, _: &Connector, reason: &Reason) {
        eprintln!("idle: connection {} failed: {reason}", self.index);
        self.stats.failed.set(self.stats.failed.get() + 1);
    }
}

/// The open, idle connections.
pub struct Clients {
    r: Reactor,
    stats: Rc<Stats>,
    expect: Rc<Cell<usize>>,
}

impl Clients {
    /// Open `n` connections to 127.0.0.1:`port` (TLS when `tls` is given),
    /// each sending `first` and waiting for its echo.
    pub fn open(port: u16, n: usize, first: &[u8], tls: Option<Arc<ClientConfig>>) -> io::Result<Clients> {
        let mut r = Reactor::new()?;
        r.set_install_signal_handlers(false);
        let stats = Rc::new(Stats {
            echoed: RefCell::new(vec![0; n]),
            ids: RefCell::new(vec![ConnId::from_token(mio::Token(usize::MAX)); n]),
            ..Stats::default()
        });
        let expect = Rc::new(Cell::new(first.len()));
        let first: Rc<[u8]> = first.into();
        let mut c = Clients { r, stats, expect };
        for start in (0..n).step_by(WAVE) {
            let end = (start + WAVE).min(n);
            for index in start..end {
                let factory = OneClient {
                    index,
                    stats: c.stats.clone(),
                    client: Some(Client {
                        index,
                        first: first.clone(),
                        stats: c.stats.clone(),
                        expect: c.expect.clone(),
                    }),
                };
                match &tls {
                    None => drop(connect_tcp(&mut c.r, "127.0.0.1", port, factory)),
                    Some(cfg) => drop(connect_tls(&mut c.r, "127.0.0.1", port, factory, cfg.clone())),
                }
            }
            c.wait(end, "connect and echo the first message")?;
        }
        Ok(c)
    }

    /// Send `msg` on every connection, a wave at a time, each wave waiting
    /// for its echoes.
    pub fn send_all(&mut self, msg: &[u8]) -> io::Result<()> {
        let n = self.stats.ids.borrow().len();
        self.expect.set(self.expect.get() + msg.len());
        self.stats.complete.set(0);
        let msg: Rc<[u8]> = msg.into();
        for start in (0..n).step_by(WAVE) {
            let end = (start + WAVE).min(n);
            for i in start..end {
                let id = self.stats.ids.borrow()[i];
                let m = msg.clone();
                self.r
                    .call_on(id, move |_, t| t.write(&m))
                    .map_err(|_| io::Error::other(format!("connection {i} is gone")))?;
            }
            self.wait(end, "echo the large message")?;
        }
        Ok(())
    }

    /// Run until `count` connections are complete, or fail.
    fn wait(&mut self, count: usize, what: &str) -> io::Result<()> {
        let s = self.stats.clone();
        let done = self.r.run_until(WAVE_TIMEOUT, |_| {
            s.complete.get() >= count || s.failed.get() > 0 || s.lost.get() > 0
        })?;
        if !done || s.failed.get() > 0 || s.lost.get() > 0 {
            return Err(io::Error::other(format!(
                "{what}: {} of {count} connections done, {} failed, {} lost",
                s.complete.get(),
                s.failed.get(),
                s.lost.get()
            )));
        }
        Ok(())
    }
}
