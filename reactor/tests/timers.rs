//! Timers driven by the manual clock: firing order, cancel, reset, delay,
//! LoopingCall, and the cost of a loop turn with 100,000 timers pending.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use twistor_reactor::{LoopingCall, Reactor};

type Fired = Rc<RefCell<Vec<(u32, Instant)>>>;

fn manual() -> (Reactor, Fired, Instant) {
    let r = Reactor::with_manual_clock().unwrap();
    let start = r.now();
    (r, Rc::default(), start)
}

/// Schedule a timer that records its tag and the clock when it fires.
fn tag(r: &mut Reactor, fired: &Fired, delay: Duration, tag: u32) -> twistor_reactor::DelayedCall {
    let f = fired.clone();
    r.call_later(delay, move |r| f.borrow_mut().push((tag, r.now())))
}

fn tags(fired: &Fired) -> Vec<u32> {
    fired.borrow().iter().map(|(t, _)| *t).collect()
}

const S: Duration = Duration::from_secs(1);

#[test]
fn timers_fire_in_deadline_order_and_equal_deadlines_in_scheduling_order() {
    let (mut r, fired, start) = manual();
    tag(&mut r, &fired, 3 * S, 30);
    for i in 0..100 {
        tag(&mut r, &fired, 2 * S, i);
    }
    tag(&mut r, &fired, S, 10);
    r.advance(S / 2);
    assert!(fired.borrow().is_empty());
    // Scheduled later, due at the same instant as the 2 s batch: after it.
    tag(&mut r, &fired, 3 * S / 2, 100);
    r.advance(10 * S);
    let mut expected = vec![10];
    expected.extend(0..=100);
    expected.push(30);
    assert_eq!(tags(&fired), expected);
    // Each fired at its own time, not at the end of the advance.
    let at: Vec<Duration> = fired.borrow().iter().map(|(_, t)| *t - start).collect();
    assert_eq!(at[0], S);
    assert!(at[1..=101].iter().all(|d| *d == 2 * S));
    assert_eq!(at[102], 3 * S);
}

#[test]
fn cancel_reset_and_delay() {
    let (mut r, fired, start) = manual();
    let cancelled = tag(&mut r, &fired, S, 1);
    let earlier = tag(&mut r, &fired, 10 * S, 2);
    let later = tag(&mut r, &fired, S, 3);
    let delayed = tag(&mut r, &fired, 2 * S, 4);
    assert!(cancelled.active(&r));
    assert!(cancelled.cancel(&mut r));
    assert!(!cancelled.active(&r));
    assert!(!cancelled.cancel(&mut r), "a second cancel reports false");
    assert!(earlier.reset(&mut r, 3 * S / 2));
    assert!(later.reset(&mut r, 5 * S));
    assert!(delayed.delay(&mut r, 2 * S));
    assert_eq!(delayed.deadline(&r), Some(start + 4 * S));
    r.advance(S);
    assert!(
        fired.borrow().is_empty(),
        "the postponed timer must not fire at 1 s"
    );
    r.advance(10 * S);
    assert_eq!(tags(&fired), vec![2, 4, 3]);
    let at: Vec<Duration> = fired.borrow().iter().map(|(_, t)| *t - start).collect();
    assert_eq!(at, vec![3 * S / 2, 4 * S, 5 * S]);
    // Spent handles are inactive and refuse everything.
    assert!(!earlier.active(&r));
    assert!(!earlier.reset(&mut r, S));
    assert!(!earlier.delay(&mut r, S));
    assert!(!earlier.cancel(&mut r));
    assert_eq!(r.timer_count(), 0);
}

#[test]
fn a_timer_reset_many_times_fires_once_at_its_last_deadline() {
    // The idle-timeout pattern: postponed on every read.
    let (mut r, fired, start) = manual();
    let call = tag(&mut r, &fired, 2 * S, 1);
    for _ in 0..1000 {
        r.advance(S / 10);
        assert!(call.reset(&mut r, 2 * S));
    }
    assert!(fired.borrow().is_empty());
    r.advance(10 * S);
    assert_eq!(tags(&fired), vec![1]);
    assert_eq!(fired.borrow()[0].1 - start, 100 * S + 2 * S);
}

#[test]
fn a_callback_can_schedule_cancel_and_reset_other_timers() {
    let (mut r, fired, _) = manual();
    let victim = tag(&mut r, &fired, 2 * S, 99);
    let f = fired.clone();
    r.call_later(S, move |r| {
        assert!(victim.cancel(r));
        let f2 = f.clone();
        // Zero delay from inside a timer: runs within the same advance.
        r.call_later(Duration::ZERO, move |r| f2.borrow_mut().push((7, r.now())));
    });
    r.advance(3 * S);
    assert_eq!(tags(&fired), vec![7]);
}

#[test]
fn looping_call_with_and_without_now() {
    let (mut r, fired, start) = manual();
    let f = fired.clone();
    let now = LoopingCall::start(&mut r, S, true, move |r| f.borrow_mut().push((1, r.now())));
    let f = fired.clone();
    let later = LoopingCall::start(&mut r, S, false, move |r| f.borrow_mut().push((2, r.now())));
    r.advance(Duration::ZERO);
    assert_eq!(tags(&fired), vec![1], "now=true runs at once, now=false waits");
    r.advance(3 * S + S / 2);
    let beats = |which: u32| -> Vec<Duration> {
        fired
            .borrow()
            .iter()
            .filter(|(t, _)| *t == which)
            .map(|(_, at)| *at - start)
            .collect()
    };
    assert_eq!(beats(1), vec![Duration::ZERO, S, 2 * S, 3 * S]);
    assert_eq!(beats(2), vec![S, 2 * S, 3 * S]);
    assert!(now.running(&r));
    assert!(now.stop(&mut r));
    assert!(!now.running(&r));
    assert!(!now.stop(&mut r));
    r.advance(2 * S);
    assert_eq!(beats(1).len(), 4);
    assert_eq!(beats(2).len(), 5);
    assert!(later.stop(&mut r));
}

#[test]
fn looping_call_with_now_calls_inside_start_as_twisted_does() {
    let (mut r, fired, start) = manual();
    let f = fired.clone();
    let lc = LoopingCall::start(&mut r, S, true, move |r| f.borrow_mut().push((1, r.now())));
    // Before any loop turn or clock movement: already called, once.
    assert_eq!(tags(&fired), vec![1]);
    assert!(lc.running(&r));
    r.advance(S);
    assert_eq!(fired.borrow()[1].1 - start, S);
    assert_eq!(tags(&fired), vec![1, 1]);
    // A first call that panics stops the loop; start still returns.
    let lc = LoopingCall::start(&mut r, S, true, |_| panic!("first beat"));
    assert!(!lc.running(&r));
    assert!(!lc.stop(&mut r));
}

#[test]
fn looping_call_stopped_from_inside_its_own_callback() {
    let (mut r, _, _) = manual();
    let handle: Rc<RefCell<Option<LoopingCall>>> = Rc::default();
    let count = Rc::new(RefCell::new(0));
    let (h2, c2) = (handle.clone(), count.clone());
    let lc = LoopingCall::start(&mut r, S, false, move |r| {
        *c2.borrow_mut() += 1;
        if *c2.borrow() == 3 {
            let lc = h2.borrow().expect("handle stored");
            assert!(lc.running(r), "running while its callback runs");
            assert!(lc.stop(r));
        }
    });
    *handle.borrow_mut() = Some(lc);
    r.advance(10 * S);
    assert_eq!(*count.borrow(), 3);
    assert!(!lc.running(&r));
    assert_eq!(r.timer_count(), 0);
}

#[test]
fn a_hundred_thousand_pending_timers_cost_o1_per_turn() {
    const N: u64 = 100_000;
    let (mut r, _, start) = manual();
    let order: Rc<RefCell<Vec<Instant>>> = Rc::default();
    for i in 0..N {
        let o = order.clone();
        // Spread over an hour, scheduled out of order.
        let secs = 60 + (i * 7919) % 3600;
        r.call_later(Duration::from_secs(secs), move |r| o.borrow_mut().push(r.now()));
    }
    assert_eq!(r.timer_count(), N as usize);

    // Manual clock: 1,000 steps with nothing due.
    let before = r.timer_work();
    for _ in 0..1000 {
        r.advance(Duration::from_millis(10));
    }
    let work = r.timer_work() - before;
    assert!(
        work <= 2 * 1000,
        "{work} heap entries examined in 1,000 idle steps"
    );

    // Real clock: 1,000 loop turns with the same load.
    let mut real = Reactor::new().unwrap();
    for i in 0..N {
        real.call_later(Duration::from_secs(3600 + i), |_| {});
    }
    let (turns0, work0) = (real.turns(), real.timer_work());
    for _ in 0..1000 {
        real.run_pending().unwrap();
    }
    let turns = real.turns() - turns0;
    let work = real.timer_work() - work0;
    assert_eq!(turns, 1000);
    assert!(work <= 2 * turns, "{work} heap entries examined in {turns} turns");

    // Cancelling most of a queue keeps turns cheap: stale entries are
    // dropped once (amortised), not examined on every turn.
    let mut third = Reactor::new().unwrap();
    let handles: Vec<_> = (0..N)
        .map(|i| third.call_later(Duration::from_secs(3600 + i), |_| {}))
        .collect();
    for h in &handles[..(N as usize - 10)] {
        assert!(h.cancel(&mut third));
    }
    assert_eq!(third.timer_count(), 10);
    let work0 = third.timer_work();
    third.run_pending().unwrap();
    let first = third.timer_work() - work0;
    assert!(first <= N, "{first} examined on the first turn after cancelling");
    let work0 = third.timer_work();
    for _ in 0..1000 {
        third.run_pending().unwrap();
    }
    let work = third.timer_work() - work0;
    assert!(work <= 2 * 1000, "{work} examined after mass cancellation");

    // And they all fire, in deadline order, each at its own time.
    r.advance(Duration::from_secs(3700));
    let order = order.borrow();
    assert_eq!(order.len(), N as usize);
    assert!(order.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(order[0] - start, Duration::from_secs(60));
}

/// "Never" is a fair delay to ask for (a delay parsed from a peer's
/// message, a shutdown timeout meaning "wait for ever"): it must not
/// overflow the clock and panic.
#[test]
fn delays_too_large_for_the_clock_mean_never_instead_of_panicking() {
    let (mut r, fired, _) = manual();
    let a = tag(&mut r, &fired, Duration::MAX, 1);
    let b = tag(&mut r, &fired, S, 2);
    assert!(b.reset(&mut r, Duration::MAX));
    let c = tag(&mut r, &fired, S, 3);
    assert!(c.delay(&mut r, Duration::MAX));
    let f = fired.clone();
    let lc = LoopingCall::start(&mut r, Duration::MAX, true, move |_| {
        f.borrow_mut().push((4, Instant::now()))
    });
    r.advance(Duration::from_secs(10 * 365 * 24 * 3600));
    assert_eq!(tags(&fired), vec![4]);
    assert!(a.active(&r) && b.active(&r) && c.active(&r) && lc.running(&r));
    assert!(r.run_until(Duration::MAX, |_| true).unwrap());

    let mut r = Reactor::new().unwrap();
    r.set_install_signal_handlers(false);
    r.set_shutdown_timeout(Duration::MAX);
    r.call_later(Duration::ZERO, |r| r.stop());
    r.run().unwrap();
}

/// `Duration::MAX` means "never" to a user (an unbounded timeout or
/// back-off): it is far in the future, not a panic inside the reactor.
#[test]
fn a_delay_too_long_for_an_instant_saturates() {
    let (mut r, fired, _) = manual();
    let never = tag(&mut r, &fired, Duration::MAX, 1);
    let soon = tag(&mut r, &fired, S, 2);
    assert!(never.active(&r));
    assert!(soon.reset(&mut r, Duration::MAX));
    assert!(never.delay(&mut r, Duration::MAX));
    let beat = LoopingCall::start(&mut r, Duration::MAX, false, |_| {});
    let fast = LoopingCall::start(&mut r, Duration::MAX, true, |_| {});
    r.advance(Duration::from_secs(3600));
    assert!(tags(&fired).is_empty());
    assert!(never.active(&r) && soon.active(&r));
    assert!(beat.stop(&mut r) && fast.stop(&mut r));
    r.run_until(Duration::from_millis(1), |_| false).unwrap();
}
