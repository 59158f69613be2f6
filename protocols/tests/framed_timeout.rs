//! Twisted's `class P(LineReceiver, TimeoutMixin)`: a line (or string)
//! handler with a timeout of its own, set per state, reset per line, and an
//! overridable `timeout_connection`. On the manual clock.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use twistor_protocols::{
    IdleTimeout, LineControl, LineHandler, LineReceiver, NetstringReceiver, StringControl, StringHandler,
    Timeout,
};
use twistor_reactor::testing::{MemoryPair, Recorder};
use twistor_reactor::{Reason, Transport};

const S: Duration = Duration::from_secs(1);

type Log = Rc<RefCell<Vec<String>>>;

/// SMTP-like: 3 s to send each command; no timeout while "DATA" runs,
/// until "."; a timeout answers 421 and closes.
struct Smtp {
    timeout: Timeout,
    log: Log,
    in_data: bool,
}

impl LineHandler for Smtp {
    fn connection_made(&mut self, c: &mut LineControl<'_>) {
        self.timeout.set_timeout::<LineReceiver<Self>>(c, Some(3 * S));
    }
    fn line_received(&mut self, c: &mut LineControl<'_>, line: &[u8]) {
        self.log
            .borrow_mut()
            .push(String::from_utf8_lossy(line).into_owned());
        match (self.in_data, line) {
            (false, b"DATA") => {
                self.in_data = true;
                let old = self.timeout.set_timeout::<LineReceiver<Self>>(c, None);
                assert_eq!(old, Some(3 * S));
            }
            (true, b".") => {
                self.in_data = false;
                self.timeout.set_timeout::<LineReceiver<Self>>(c, Some(3 * S));
            }
            _ => self.timeout.reset_timeout(c),
        }
    }
    fn timeout_connection(&mut self, c: &mut LineControl<'_>) {
        self.log.borrow_mut().push("timeout".into());
        c.send_line(b"421 timeout");
        c.lose_connection_with(Reason::TimedOut);
    }
    fn connection_lost(&mut self, _: &mut LineControl<'_>, reason: &Reason) {
        self.log.borrow_mut().push(format!("lost: {reason}"));
    }
}

fn smtp() -> (MemoryPair, Log, Rc<RefCell<twistor_reactor::testing::Record>>) {
    let log = Log::default();
    let server = LineReceiver::new(Smtp {
        timeout: Timeout::default(),
        log: log.clone(),
        in_data: false,
    });
    let (client, client_log) = Recorder::new();
    let mut pair = MemoryPair::new(Box::new(client), Box::new(server)).unwrap();
    pair.pump();
    (pair, log, client_log)
}

#[test]
fn a_line_handler_sets_resets_and_clears_its_own_timeout() {
    let (mut pair, log, client) = smtp();
    pair.advance(2 * S);
    pair.with_client(|_, t| t.write(b"HELO x\r\n"));
    pair.advance(2 * S);
    assert!(!pair.is_closed(), "a line reset it");
    pair.with_client(|_, t| t.write(b"DATA\r\n"));
    pair.advance(60 * S);
    assert!(!pair.is_closed(), "set_timeout(None) cleared it");
    pair.with_client(|_, t| t.write(b".\r\n"));
    pair.advance(2 * S);
    assert!(!pair.is_closed());
    pair.advance(S);
    assert!(pair.is_closed());
    assert_eq!(
        *log.borrow(),
        ["HELO x", "DATA", ".", "timeout", "lost: timed out"],
        "its own timeout_connection ran, once"
    );
    assert_eq!(client.borrow().data, b"421 timeout\r\n");
}

#[test]
fn the_timeout_reaches_a_handler_inside_another_policy() {
    let log = Log::default();
    let server = IdleTimeout::new(
        LineReceiver::new(Smtp {
            timeout: Timeout::default(),
            log: log.clone(),
            in_data: false,
        }),
        100 * S,
    );
    let mut pair = MemoryPair::new(Box::new(Recorder::default()), Box::new(server)).unwrap();
    pair.pump();
    pair.advance(3 * S);
    assert!(pair.is_closed());
    assert_eq!(*log.borrow(), ["timeout", "lost: timed out"]);
}

#[test]
fn no_timeout_after_the_connection_is_gone() {
    let (mut pair, log, _) = smtp();
    pair.with_client(|_, t| t.lose_connection());
    assert!(pair.is_closed());
    pair.advance(10 * S);
    assert!(!log.borrow().iter().any(|l| l == "timeout"), "{:?}", log.borrow());
}

/// A netstring handler with a whole-request deadline and the default
/// timeout action.
struct Deadline(Timeout, Rc<RefCell<Vec<Reason>>>);

impl StringHandler for Deadline {
    fn connection_made(&mut self, c: &mut StringControl<'_>) {
        self.0.set_timeout::<NetstringReceiver<Self>>(c, Some(5 * S));
    }
    fn string_received(&mut self, c: &mut StringControl<'_>, s: &[u8]) {
        let _ = c.send_string(s);
    }
    fn connection_lost(&mut self, _: &mut StringControl<'_>, reason: &Reason) {
        self.1.borrow_mut().push(reason.clone());
    }
}

#[test]
fn a_string_handler_times_out_with_the_default_action() {
    let lost = Rc::new(RefCell::new(Vec::new()));
    let server = NetstringReceiver::new(Deadline(Timeout::default(), lost.clone()));
    let (client, client_log) = Recorder::new();
    let mut pair = MemoryPair::new(Box::new(client), Box::new(server)).unwrap();
    pair.pump();
    pair.with_client(|_, t| t.write(b"2:hi,"));
    pair.advance(4 * S);
    assert!(
        !pair.is_closed(),
        "traffic does not reset a deadline nobody resets"
    );
    pair.advance(S);
    assert!(pair.is_closed());
    assert!(matches!(lost.borrow()[..], [Reason::TimedOut]));
    assert_eq!(client_log.borrow().data, b"2:hi,");
}
