//! Timers: `call_later`, cancel, reset, and `LoopingCall` (Twisted's
//! `reactor.callLater` and `task.LoopingCall`).
//!
//! ```text
//! cargo run --example timers
//! ```
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use twistor::prelude::*;

fn main() -> lab::Result {
    lab::init_logging();
    let mut reactor = Reactor::new()?;

    // A call that runs once, after half a second.
    reactor.call_later(Duration::from_millis(500), |_| {
        println!("0.5 s: call_later fired")
    });

    // A call that is cancelled before it runs.
    let doomed = reactor.call_later(Duration::from_millis(300), |_| println!("never printed"));
    doomed.cancel(&mut reactor);
    println!("cancelled a call: active = {}", doomed.active(&reactor));

    // A call pushed back: scheduled for 0.2 s, reset to 0.8 s.
    let late = reactor.call_later(Duration::from_millis(200), |_| {
        println!("0.8 s: the reset call fired")
    });
    late.reset(&mut reactor, Duration::from_millis(800));

    // A looping call every 250 ms, starting now; it stops itself after 5 beats.
    let beats = Rc::new(Cell::new(0));
    let b = beats.clone();
    let looping = Rc::new(Cell::new(None::<LoopingCall>));
    let me = looping.clone();
    let lc = LoopingCall::start(&mut reactor, Duration::from_millis(250), true, move |r| {
        b.set(b.get() + 1);
        println!("beat {}", b.get());
        if b.get() == 5 {
            if let Some(lc) = me.get() {
                lc.stop(r);
            }
            println!("looping call stopped; stopping the reactor");
            r.stop();
        }
    });
    looping.set(Some(lc));

    reactor.run()?;
    println!("done after {} beats", beats.get());
    Ok(())
}
