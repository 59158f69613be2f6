//! Timers: a binary heap of deadlines with lazy deletion.
//!
//! Scheduling, cancelling and postponing are O(log n) or better and a loop
//! turn with no due timer costs O(1), however many timers are pending.
//! Postponing (the idle-timeout pattern: reset on every read) does not touch
//! the heap at all: the old heap entry fires early, sees the later deadline
//! and re-inserts itself. Equal deadlines fire in the order they were
//! scheduled (a sequence number breaks ties).
//!
//! The reactor's timer API (`call_later`, `call_later_on`, the counters)
//! is here too, beside the queue it drives.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use slab::Slab;

use crate::{catch_panic, ConnId, Protocol, Reactor, Transport};

pub(crate) enum TimerFn {
    Once(Box<dyn FnOnce(&mut Reactor)>),
    Repeat {
        f: Box<dyn FnMut(&mut Reactor)>,
        interval: Duration,
    },
}

struct Entry {
    gen: u32,
    /// The real deadline and its sequence number (the tie-breaker).
    deadline: Instant,
    seq: u64,
    /// The `(deadline, seq)` of the one heap entry that stands for this
    /// timer; any other heap entry for it is stale.
    queued: (Instant, u64),
    /// `None` while a repeating timer's callback runs.
    f: Option<TimerFn>,
}

/// Handle to a scheduled call (Twisted's `DelayedCall`). Cheap to copy; a
/// handle whose call has fired or been cancelled is inactive and its
/// operations report `false`.
///
/// ```
/// use std::time::Duration;
/// use twistor_reactor::Reactor;
/// let mut r = Reactor::with_manual_clock().unwrap();
/// let call = r.call_later(Duration::from_secs(5), |r| r.stop());
/// assert!(call.active(&r));
/// call.reset(&mut r, Duration::from_secs(10));
/// r.advance(Duration::from_secs(6));
/// assert!(call.active(&r));
/// assert!(call.cancel(&mut r));
/// assert!(!call.active(&r));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DelayedCall {
    index: u32,
    gen: u32,
}

impl DelayedCall {
    /// Cancel the call. Returns whether it was still pending.
    pub fn cancel(self, r: &mut Reactor) -> bool {
        r.timers.cancel(self)
    }

    /// Move the deadline to `delay` from now. Returns whether it was pending.
    pub fn reset(self, r: &mut Reactor, delay: Duration) -> bool {
        let now = r.now();
        r.timers.set_deadline(self, later(now, delay))
    }

    /// Postpone the deadline by `extra`. Returns whether it was pending.
    pub fn delay(self, r: &mut Reactor, extra: Duration) -> bool {
        match r.timers.deadline(self) {
            Some(d) => r.timers.set_deadline(self, later(d, extra)),
            None => false,
        }
    }

    /// Whether the call is still pending.
    pub fn active(self, r: &Reactor) -> bool {
        r.timers.deadline(self).is_some()
    }

    /// When the call is due, if it is pending.
    pub fn deadline(self, r: &Reactor) -> Option<Instant> {
        r.timers.deadline(self)
    }
}

/// Stands for "never" when a delay does not fit the clock.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `t + d`, or a time a century away when that overflows the clock: a
/// delay of `Duration::MAX` (or one parsed from a peer's message) means
/// "never" rather than a panic.
pub(crate) fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d).or_else(|| t.checked_add(NEVER)).unwrap_or(t)
}

type HeapItem = Reverse<(Instant, u64, u32, u32)>;

pub(crate) struct Timers {
    entries: Slab<Entry>,
    gens: Vec<u32>,
    heap: BinaryHeap<HeapItem>,
    next_seq: u64,
    /// Heap entries looked at by `next_deadline` and `pop_due`: the cost
    /// counter behind [`Reactor::timer_work`](crate::Reactor::timer_work).
    examined: u64,
}

impl Timers {
    pub(crate) fn new() -> Timers {
        Timers {
            entries: Slab::new(),
            gens: Vec::new(),
            heap: BinaryHeap::new(),
            next_seq: 0,
            examined: 0,
        }
    }

    /// Whether no heap entry is left (live or stale): nothing can fall due.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn examined(&self) -> u64 {
        self.examined
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    pub(crate) fn schedule(&mut self, deadline: Instant, f: TimerFn) -> DelayedCall {
        let seq = self.seq();
        let key = self.entries.vacant_key();
        if key >= self.gens.len() {
            self.gens.resize(key + 1, 0);
        }
        let gen = self.gens[key];
        self.entries.insert(Entry {
            gen,
            deadline,
            seq,
            queued: (deadline, seq),
            f: Some(f),
        });
        self.heap.push(Reverse((deadline, seq, key as u32, gen)));
        DelayedCall {
            index: key as u32,
            gen,
        }
    }

    fn get_mut(&mut self, h: DelayedCall) -> Option<&mut Entry> {
        self.entries.get_mut(h.index as usize).filter(|e| e.gen == h.gen)
    }

    pub(crate) fn deadline(&self, h: DelayedCall) -> Option<Instant> {
        self.entries
            .get(h.index as usize)
            .filter(|e| e.gen == h.gen)
            .map(|e| e.deadline)
    }

    pub(crate) fn cancel(&mut self, h: DelayedCall) -> bool {
        if self.get_mut(h).is_none() {
            return false;
        }
        // Its heap entry turns stale and is skipped (or compacted away). A
        // repeating timer cancelled from its own callback is not re-armed.
        self.remove(h.index as usize);
        self.maybe_compact();
        true
    }

    fn remove(&mut self, key: usize) {
        self.entries.remove(key);
        self.gens[key] = self.gens[key].wrapping_add(1);
    }

    pub(crate) fn set_deadline(&mut self, h: DelayedCall, deadline: Instant) -> bool {
        let seq = self.seq();
        let Some(e) = self.get_mut(h) else {
            return false;
        };
        e.deadline = deadline;
        e.seq = seq;
        if e.f.is_some() && deadline < e.queued.0 {
            // Earlier than its heap entry: it needs a new one. (Later is
            // handled lazily when the old entry comes up.)
            e.queued = (deadline, seq);
            self.heap.push(Reverse((deadline, seq, h.index, h.gen)));
            self.maybe_compact();
        }
        true
    }

    fn is_live(&self, item: &HeapItem) -> bool {
        let Reverse((d, seq, idx, gen)) = *item;
        matches!(self.entries.get(idx as usize),
            Some(e) if e.gen == gen && e.f.is_some() && e.queued == (d, seq))
    }

    /// Deadline of the earliest live heap entry. It may be earlier than the
    /// timer's real deadline (postponed timers): the loop then wakes a little
    /// early, finds nothing due, and sleeps again.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        loop {
            let top = self.heap.peek()?;
            self.examined += 1;
            if self.is_live(top) {
                return Some(top.0 .0);
            }
            self.heap.pop();
        }
    }

    /// Pop the next timer due at or before `now`, with its handle.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(DelayedCall, TimerFn)> {
        loop {
            let top = self.heap.peek()?;
            self.examined += 1;
            if top.0 .0 > now {
                return None;
            }
            let item = self.heap.pop().unwrap();
            if !self.is_live(&item) {
                continue;
            }
            let Reverse((d, seq, idx, gen)) = item;
            let e = self.entries.get_mut(idx as usize).unwrap();
            if (e.deadline, e.seq) != (d, seq) {
                // Reset since this entry was queued: take its real place.
                e.queued = (e.deadline, e.seq);
                self.heap.push(Reverse((e.deadline, e.seq, idx, gen)));
                continue;
            }
            let f = e.f.take().unwrap();
            if let TimerFn::Once(_) = f {
                self.remove(idx as usize);
            }
            return Some((DelayedCall { index: idx, gen }, f));
        }
    }

    /// Put a repeating timer back after its callback ran, with its next
    /// beat. Does nothing if it was cancelled meanwhile.
    pub(crate) fn rearm(&mut self, h: DelayedCall, f: TimerFn, now: Instant) {
        let seq = self.seq();
        let Some(e) = self.get_mut(h) else {
            return;
        };
        let TimerFn::Repeat { interval, .. } = &f else {
            return;
        };
        // Next beat on the original grid, skipping missed beats (Twisted's
        // LoopingCall does the same). A reset from inside the callback wins.
        let interval = (*interval).max(Duration::from_micros(1));
        let next = if e.deadline > now {
            e.deadline
        } else {
            let behind = now.duration_since(e.deadline).as_nanos() / interval.as_nanos();
            let beats = u32::try_from(behind + 1).unwrap_or(u32::MAX);
            later(e.deadline, interval.checked_mul(beats).unwrap_or(Duration::MAX))
        };
        e.deadline = next;
        e.seq = seq;
        e.queued = (next, seq);
        e.f = Some(f);
        self.heap.push(Reverse((next, seq, h.index, h.gen)));
    }

    /// Forget a repeating timer whose callback panicked.
    pub(crate) fn discard(&mut self, h: DelayedCall) {
        if self.get_mut(h).is_some() {
            self.remove(h.index as usize);
        }
    }

    fn maybe_compact(&mut self) {
        // Stale heap entries (cancelled or rescheduled timers) stay bounded:
        // rebuild when they outnumber the live ones by a wide margin.
        if self.heap.len() > 1024 && self.heap.len() > 4 * self.entries.len() {
            let heap = std::mem::take(&mut self.heap).into_vec();
            let live: Vec<HeapItem> = heap.into_iter().filter(|i| self.is_live(i)).collect();
            self.heap = BinaryHeap::from(live);
        }
    }
}

impl Reactor {
    /// How many timers are pending.
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// How many timer-queue entries the loop has examined so far: a cost
    /// counter. A turn with no timer due examines one or two, however many
    /// timers are pending; each timer that fires, or was cancelled or
    /// postponed, adds about one more.
    ///
    /// ```
    /// use std::time::Duration;
    /// let mut r = twistor_reactor::Reactor::with_manual_clock().unwrap();
    /// for i in 0..1000 {
    ///     r.call_later(Duration::from_secs(60 + i), |_| {});
    /// }
    /// let before = r.timer_work();
    /// r.advance(Duration::from_secs(1)); // nothing due
    /// assert!(r.timer_work() - before <= 2);
    /// ```
    pub fn timer_work(&self) -> u64 {
        self.timers.examined()
    }

    /// Run `f` after `delay` (Twisted's `reactor.callLater`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let mut r = twistor_reactor::Reactor::with_manual_clock().unwrap();
    /// let call = r.call_later(Duration::from_secs(1), |_| println!("tick"));
    /// r.advance(Duration::from_secs(1));
    /// assert!(!call.active(&r));
    /// ```
    pub fn call_later(&mut self, delay: Duration, f: impl FnOnce(&mut Reactor) + 'static) -> DelayedCall {
        let deadline = later(self.now(), delay);
        self.timers.schedule(deadline, TimerFn::Once(Box::new(f)))
    }

    /// Run `f` against connection `id`'s protocol after `delay`: how a
    /// protocol schedules a call to itself. If the connection is gone by
    /// then, nothing happens.
    pub fn call_later_on(
        &mut self,
        id: ConnId,
        delay: Duration,
        f: impl FnOnce(&mut dyn Protocol, &mut dyn Transport) + 'static,
    ) -> DelayedCall {
        self.call_later(delay, move |r| {
            let _ = r.call_on(id, f);
        })
    }

    pub(crate) fn run_timers(&mut self) -> bool {
        // No timer at all (a busy echo server's usual turn): not even the clock.
        if self.timers.is_empty() {
            return false;
        }
        let now = self.now();
        let mut ran = false;
        while let Some((h, f)) = self.timers.pop_due(now) {
            ran = true;
            match f {
                TimerFn::Once(f) => {
                    let _ = catch_panic(format_args!("timer callback"), || f(self));
                }
                TimerFn::Repeat { mut f, interval } => {
                    match catch_panic(format_args!("looping call"), || f(self)) {
                        Ok(()) => self.timers.rearm(h, TimerFn::Repeat { f, interval }, now),
                        Err(_) => {
                            log::error!("the looping call is stopped after its panic");
                            self.timers.discard(h);
                        }
                    }
                }
            }
            self.run_queued();
        }
        ran
    }
}

/// A call repeated at a fixed interval (Twisted's `task.LoopingCall`).
///
/// Beats follow a fixed grid from the start time; beats missed because the
/// loop was busy are skipped, not bunched.
///
/// ```
/// use std::{cell::Cell, rc::Rc, time::Duration};
/// use twistor_reactor::{LoopingCall, Reactor};
/// let mut r = Reactor::with_manual_clock().unwrap();
/// let n = Rc::new(Cell::new(0));
/// let n2 = n.clone();
/// let lc = LoopingCall::start(&mut r, Duration::from_secs(1), true, move |_| n2.set(n2.get() + 1));
/// r.advance(Duration::from_millis(3500));
/// assert_eq!(n.get(), 4); // now, 1 s, 2 s, 3 s
/// lc.stop(&mut r);
/// r.advance(Duration::from_secs(5));
/// assert_eq!(n.get(), 4);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopingCall {
    call: DelayedCall,
}

impl LoopingCall {
    /// Call `f` every `interval`. With `now`, the first call happens at
    /// once, inside `start` (as Twisted's `LoopingCall.start(interval,
    /// now=True)` does), and the next one interval later; without, the
    /// first call is one interval away. A call that panics is logged and
    /// stops the loop, the first one included.
    pub fn start(
        r: &mut Reactor,
        interval: Duration,
        now: bool,
        f: impl FnMut(&mut Reactor) + 'static,
    ) -> LoopingCall {
        let mut f = f;
        let start = r.now();
        if now && catch_panic(format_args!("looping call"), || f(r)).is_err() {
            log::error!("the looping call is stopped after its panic");
            // A handle that is already inactive.
            let call = r.timers.schedule(start, TimerFn::Once(Box::new(|_| {})));
            r.timers.cancel(call);
            return LoopingCall { call };
        }
        let call = r.timers.schedule(
            later(start, interval),
            TimerFn::Repeat {
                f: Box::new(f),
                interval,
            },
        );
        LoopingCall { call }
    }

    /// Stop repeating. Returns whether it was running.
    pub fn stop(self, r: &mut Reactor) -> bool {
        self.call.cancel(r)
    }

    /// Whether it is still running.
    pub fn running(self, r: &Reactor) -> bool {
        self.call.active(r)
    }
}
