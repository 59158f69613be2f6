//! Tests of the TLS layer that look at its private buffers.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use twistor_reactor::testing::{MemoryPair, Recorder};
use twistor_reactor::{ConnId, InputBuf, Protocol, Reason, Transport};

use super::TlsProtocol;
use crate::tls::{ClientConfigBuilder, ServerConfigBuilder};

/// Runs a TLS layer and lets `call_on` reach the layer itself (calls run
/// against this protocol, not the application).
struct Inspect(TlsProtocol);

impl Protocol for Inspect {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.0.connection_made(t)
    }
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        self.0.data_received(t, d)
    }
    fn eof_received(&mut self, t: &mut dyn Transport) -> bool {
        self.0.eof_received(t)
    }
    fn connection_lost(&mut self, t: &mut dyn Transport, reason: &Reason) {
        self.0.connection_lost(t, reason)
    }
    fn pause_writing(&mut self, t: &mut dyn Transport) {
        self.0.pause_writing(t)
    }
    fn resume_writing(&mut self, t: &mut dyn Transport) {
        self.0.resume_writing(t)
    }
}

struct Echo;
impl Protocol for Echo {
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        t.write(d)
    }
}

/// Pauses reading after every chunk it gets; counts what it got.
struct Sipper(Rc<Cell<usize>>);
impl Protocol for Sipper {
    fn data_received(&mut self, t: &mut dyn Transport, d: &[u8]) {
        self.0.set(self.0.get() + d.len());
        t.pause_reading();
    }
}

fn pair(server_app: Box<dyn Protocol>) -> (MemoryPair, Rc<RefCell<twistor_reactor::testing::Record>>) {
    let (sc, fp) = ServerConfigBuilder::self_signed(&["localhost"]).unwrap();
    let cc = ClientConfigBuilder::new().pinned(&fp).build().unwrap();
    let (client, log) = Recorder::new();
    let client = TlsProtocol::client(Box::new(client), cc, "localhost").unwrap();
    let server = Inspect(TlsProtocol::server(server_app, sc).unwrap());
    let mut pair = MemoryPair::new(Box::new(client), Box::new(server)).unwrap();
    pair.pump();
    assert_eq!(log.borrow().made, 1);
    (pair, log)
}

/// The capacities of the layer's plaintext and ciphertext buffers.
fn capacities(pair: &mut MemoryPair) -> (usize, usize) {
    let id: ConnId = pair.server;
    let got = Rc::new(Cell::new((0, 0)));
    let g = got.clone();
    pair.reactor
        .call_on(id, move |p, _| {
            let layer = &p.downcast_mut::<Inspect>().unwrap().0;
            g.set((layer.st.plain_out.capacity(), layer.inbuf.capacity()));
        })
        .unwrap();
    pair.pump();
    got.get()
}

#[test]
fn an_idle_layer_gives_back_its_buffers_after_a_large_message() {
    let (mut pair, log) = pair(Box::new(Echo));
    let message: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let m = message.clone();
    pair.with_client(move |_, t| t.write(&m));
    assert_eq!(log.borrow().data, message);
    let (plain, input) = capacities(&mut pair);
    assert!(plain <= InputBuf::KEEP, "plaintext buffer keeps {plain} bytes");
    assert!(input <= InputBuf::KEEP, "ciphertext buffer keeps {input} bytes");
}

#[test]
fn ciphertext_held_for_a_paused_reader_is_given_back_once_read() {
    let got = Rc::new(Cell::new(0));
    let (mut pair, _) = pair(Box::new(Sipper(got.clone())));
    const SIZE: usize = 1 << 20;
    pair.with_client(|_, t| t.write(&vec![b's'; SIZE]));
    let mut held = 0;
    for _ in 0..10_000 {
        if got.get() == SIZE {
            break;
        }
        held = held.max(capacities(&mut pair).1);
        let resume: twistor_reactor::ProtocolCall = Box::new(|_, t| t.resume_reading());
        pair.reactor
            .call_on(pair.server, move |p, t| {
                let layer = &mut p.downcast_mut::<Inspect>().unwrap().0;
                if let Some(call) = layer.route_call(t, resume) {
                    call(layer, t);
                }
            })
            .unwrap();
        pair.pump();
    }
    assert_eq!(got.get(), SIZE);
    // It did hold ciphertext while paused, and holds none now.
    assert!(held > 0);
    let (plain, input) = capacities(&mut pair);
    assert!(input <= InputBuf::KEEP, "ciphertext buffer keeps {input} bytes");
    assert!(plain <= InputBuf::KEEP, "plaintext buffer keeps {plain} bytes");
}
