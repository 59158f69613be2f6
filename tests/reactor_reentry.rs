//! Invariant 1 over real TCP: a protocol callback is never re-entered;
//! notifications raised inside a callback (flow control, `call_on` to
//! itself, a close) arrive after it returns. And a stale `ConnId` reports
//! `Gone` and never reaches the newer connection in its slot.

mod common;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::rc::Rc;

use common::{client, wait_for};
use twistor::prelude::*;
use twistor::reactor::CallError;

/// 64 KiB chunks written in one callback: more than loopback socket buffers hold.
const FLOOD_CHUNKS: usize = 256;

type Log = Rc<RefCell<Vec<String>>>;

/// Logs every callback and fails loudly (in the log) if one starts while
/// another is on the stack.
struct Nested {
    log: Log,
    depth: usize,
}

impl Nested {
    fn enter(&mut self, what: &str) {
        if self.depth > 0 {
            self.log.borrow_mut().push(format!("RE-ENTERED by {what}"));
        }
        self.depth += 1;
        self.log.borrow_mut().push(format!("{what}:start"));
    }
    fn leave(&mut self, what: &str) {
        self.log.borrow_mut().push(format!("{what}:end"));
        self.depth -= 1;
    }
}

impl Protocol for Nested {
    fn connection_made(&mut self, t: &mut dyn Transport) {
        self.enter("made");
        // A call to ourselves from inside a callback runs after it returns.
        let log = self.log.clone();
        let id = t.id();
        t.reactor()
            .call_on(id, move |_, _| log.borrow_mut().push("call_on(made)".into()))
            .unwrap();
        self.leave("made");
    }

    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        self.enter("data");
        if data.starts_with(b"flood") {
            // Far over the high-water mark, with the peer not reading.
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..FLOOD_CHUNKS {
                t.write(&chunk);
            }
            let log = self.log.clone();
            let id = t.id();
            t.reactor()
                .call_on(id, move |p, t| {
                    // Delivered through the same dispatch: must not nest.
                    let me = p.downcast_mut::<Nested>().expect("our protocol");
                    me.enter("call_on");
                    log.borrow_mut()
                        .push(format!("buffered {}", t.write_buffer_size() > 0));
                    me.leave("call_on");
                })
                .unwrap();
        }
        if data.starts_with(b"close") {
            t.lose_connection();
            self.log.borrow_mut().push(format!("closing {}", t.is_closing()));
        }
        self.leave("data");
    }

    fn pause_writing(&mut self, _: &mut dyn Transport) {
        self.enter("pause");
        self.leave("pause");
    }

    fn resume_writing(&mut self, _: &mut dyn Transport) {
        self.enter("resume");
        self.leave("resume");
    }

    fn connection_lost(&mut self, _: &mut dyn Transport, _: &Reason) {
        self.enter("lost");
        self.leave("lost");
    }
}

fn index_of(log: &[String], what: &str) -> usize {
    log.iter()
        .position(|l| l == what)
        .unwrap_or_else(|| panic!("{what} missing from {log:?}"))
}

#[test]
fn notifications_raised_inside_a_callback_arrive_after_it_returns() {
    let mut r = common::reactor();
    let log: Log = Rc::default();
    let l2 = log.clone();
    let port = listen_tcp(&mut r, "127.0.0.1:0", move |_: &Address| Nested {
        log: l2.clone(),
        depth: 0,
    })
    .unwrap();
    let mut c = client(port.local_addr());
    c.write_all(b"flood").unwrap();
    let l3 = log.clone();
    wait_for(&mut r, "pause_writing", move |_| {
        l3.borrow().iter().any(|l| l == "pause:start")
    });
    {
        let log = log.borrow();
        assert!(!log.iter().any(|l| l.starts_with("RE-ENTERED")), "{log:?}");
        // connection_made, then its call_on; data, then pause, then call_on.
        assert!(index_of(&log, "made:end") < index_of(&log, "call_on(made)"));
        assert!(index_of(&log, "data:end") < index_of(&log, "pause:start"));
        assert!(index_of(&log, "pause:end") < index_of(&log, "call_on:start"));
        assert!(log.contains(&"buffered true".to_string()), "{log:?}");
    }
    // Drain the client: resume_writing arrives, on its own.
    let c2 = std::thread::spawn(move || {
        let mut buf = vec![0; 64 * 1024];
        let mut got = 0;
        while got < FLOOD_CHUNKS * 64 * 1024 {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0, "early EOF");
            got += n;
        }
        c.write_all(b"close").unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    });
    let l4 = log.clone();
    wait_for(&mut r, "connection_lost", move |_| {
        l4.borrow().iter().any(|l| l == "lost:end")
    });
    c2.join().unwrap();
    let log = log.borrow();
    assert!(!log.iter().any(|l| l.starts_with("RE-ENTERED")), "{log:?}");
    assert!(index_of(&log, "pause:end") < index_of(&log, "resume:start"));
    assert!(log.contains(&"closing true".to_string()));
    // The close requested inside data_received lands after it returns.
    let last_data_end = log.iter().rposition(|l| l == "data:end").unwrap();
    assert!(last_data_end < index_of(&log, "lost:start"), "{log:?}");
    assert_eq!(log.iter().filter(|l| *l == "pause:start").count(), 1);
    assert_eq!(log.iter().filter(|l| *l == "resume:start").count(), 1);
}

/// What reached a [`Sink`], by connection.
type Got = Rc<RefCell<Vec<(ConnId, Vec<u8>)>>>;

/// Records what reaches it.
struct Sink {
    got: Got,
}

impl Protocol for Sink {
    fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
        self.got.borrow_mut().push((t.id(), data.to_vec()));
    }
}

#[test]
fn a_stale_conn_id_is_gone_and_never_reaches_the_next_connection_in_its_slot() {
    let mut r = common::reactor();
    let ids: Rc<RefCell<Vec<ConnId>>> = Rc::default();
    let got: Got = Rc::default();
    let (i2, g2) = (ids.clone(), got.clone());
    /// Sink that reports its id once made.
    struct Announce {
        ids: Rc<RefCell<Vec<ConnId>>>,
        sink: Sink,
    }
    impl Protocol for Announce {
        fn connection_made(&mut self, t: &mut dyn Transport) {
            self.ids.borrow_mut().push(t.id());
        }
        fn data_received(&mut self, t: &mut dyn Transport, data: &[u8]) {
            self.sink.data_received(t, data)
        }
    }
    let port = listen_tcp(&mut r, "127.0.0.1:0", move |_: &Address| Announce {
        ids: i2.clone(),
        sink: Sink { got: g2.clone() },
    })
    .unwrap();

    // The first connection comes and goes.
    let mut first = client(port.local_addr());
    let i3 = ids.clone();
    wait_for(&mut r, "the first connection", move |_| i3.borrow().len() == 1);
    let old = ids.borrow()[0];
    assert!(r.contains(old));
    first.shutdown(std::net::Shutdown::Both).unwrap();
    assert!(common::read_to_eof(&mut first).is_empty());
    wait_for(&mut r, "the first connection to go", move |r| !r.contains(old));

    // The next one takes the same slot, with a new generation.
    let mut second = client(port.local_addr());
    let i4 = ids.clone();
    wait_for(&mut r, "the second connection", move |_| i4.borrow().len() == 2);
    let new = ids.borrow()[1];
    assert_eq!(new.index(), old.index(), "the slot is reused");
    assert_ne!(new.generation(), old.generation());

    // Everything through the stale id reports Gone.
    assert_eq!(r.call_on(old, |_, t| t.write(b"wrong")), Err(CallError::Gone));
    assert_eq!(r.write_to(old, b"wrong".to_vec()), Err(CallError::Gone));
    assert_eq!(r.close(old), Err(CallError::Gone));
    // A timer aimed at the old id fires and finds nothing.
    r.call_later_on(old, std::time::Duration::ZERO, |_, t| t.write(b"wrong"));
    // The new id works, and only it reaches the new connection.
    r.write_to(new, b"right".to_vec()).unwrap();
    let mut buf = [0u8; 5];
    wait_for(&mut r, "the timer", |r| r.timer_count() == 0);
    second.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"right");
    r.close(new).unwrap();
    let rest = {
        let t = std::thread::spawn(move || common::read_to_eof(&mut second));
        wait_for(&mut r, "the second connection to go", move |r| !r.contains(new));
        t.join().unwrap()
    };
    assert!(
        rest.is_empty(),
        "the stale id's writes reached the new connection: {rest:?}"
    );
    assert!(got.borrow().is_empty());
}
