//! Crossing threads: `Remote::call` (call_from_thread) and
//! `defer_to_thread` deliver on the loop thread, in order, bounded.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use twistor_reactor::{Gone, Reactor, POOL_THREADS};

const WAIT: Duration = Duration::from_secs(20);

fn reactor() -> Reactor {
    let mut r = Reactor::new().unwrap();
    r.set_install_signal_handlers(false);
    r
}

thread_local! {
    /// (sender, sequence) of each call, as seen by the thread it ran on.
    static SEEN: RefCell<Vec<(usize, usize)>> = const { RefCell::new(Vec::new()) };
}

#[test]
fn call_from_thread_runs_every_call_on_the_loop_thread_in_order() {
    const THREADS: usize = 4;
    const CALLS: usize = 1000;
    let mut r = reactor();
    let loop_thread = thread::current().id();
    let wrong_thread = Arc::new(Mutex::new(0usize));
    let senders: Vec<_> = (0..THREADS)
        .map(|k| {
            let remote = r.remote();
            let wrong = wrong_thread.clone();
            thread::spawn(move || {
                for i in 0..CALLS {
                    let wrong = wrong.clone();
                    remote
                        .call(move |_| {
                            if thread::current().id() != loop_thread {
                                *wrong.lock().unwrap() += 1;
                            }
                            SEEN.with(|s| s.borrow_mut().push((k, i)));
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    let done = r
        .run_until(WAIT, |_| SEEN.with(|s| s.borrow().len()) == THREADS * CALLS)
        .unwrap();
    assert!(done, "calls delivered: {}", SEEN.with(|s| s.borrow().len()));
    for s in senders {
        s.join().unwrap();
    }
    let seen = SEEN.with(|s| s.borrow().clone());
    assert_eq!(*wrong_thread.lock().unwrap(), 0, "calls ran off the loop thread");
    for k in 0..THREADS {
        let mine: Vec<usize> = seen.iter().filter(|(s, _)| *s == k).map(|(_, i)| *i).collect();
        assert_eq!(
            mine,
            (0..CALLS).collect::<Vec<_>>(),
            "order of thread {k}'s calls"
        );
    }
}

#[test]
fn remote_stop_and_calls_after_the_reactor_is_gone() {
    let r = reactor();
    let remote = r.remote();
    drop(r);
    assert_eq!(remote.call(|_| {}), Err(Gone));
    assert_eq!(remote.stop(), Err(Gone));
}

#[test]
fn defer_to_thread_works_off_the_loop_and_answers_on_it() {
    const JOBS: usize = 64;
    let mut r = reactor();
    let loop_thread = thread::current().id();
    let workers = Arc::new(Mutex::new(HashSet::new()));
    let results: Rc<RefCell<Vec<usize>>> = Rc::default();
    for i in 0..JOBS {
        let w = workers.clone();
        let res = results.clone();
        r.defer_to_thread(
            move || {
                w.lock().unwrap().insert(thread::current().id());
                assert_ne!(thread::current().id(), loop_thread);
                i * i
            },
            move |_, out| {
                assert_eq!(thread::current().id(), loop_thread, "done ran off the loop");
                res.borrow_mut().push(out.expect("work succeeded"));
            },
        );
    }
    let panicked: Rc<RefCell<Option<String>>> = Rc::default();
    let p2 = panicked.clone();
    r.defer_to_thread(
        || -> usize { panic!("work failed") },
        move |_, out| *p2.borrow_mut() = out.err(),
    );
    let (res, p3) = (results.clone(), panicked.clone());
    let ok = r
        .run_until(WAIT, move |_| res.borrow().len() == JOBS && p3.borrow().is_some())
        .unwrap();
    assert!(ok, "deferred results: {}", results.borrow().len());
    let mut got = results.borrow().clone();
    got.sort_unstable();
    assert_eq!(got, (0..JOBS).map(|i| i * i).collect::<Vec<_>>());
    let workers = workers.lock().unwrap();
    assert!(!workers.contains(&loop_thread));
    assert!(
        workers.len() <= POOL_THREADS,
        "{} worker threads for a pool of {POOL_THREADS}",
        workers.len()
    );
    assert!(panicked.borrow().as_deref().unwrap().contains("work failed"));
}

/// Sends on a channel when dropped: tells the test a job's closure is gone,
/// whether it ran or was skipped.
struct OnDrop(std::sync::mpsc::Sender<()>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

#[test]
fn work_still_queued_when_the_reactor_is_dropped_does_not_run() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    let mut r = reactor();
    // Occupy every worker until the gate opens.
    let (started_tx, started_rx) = mpsc::channel();
    let mut gates = Vec::new();
    for _ in 0..POOL_THREADS {
        let (gate_tx, gate_rx) = mpsc::channel::<()>();
        gates.push(gate_tx);
        let started = started_tx.clone();
        r.defer_to_thread(
            move || {
                started.send(()).unwrap();
                let _ = gate_rx.recv_timeout(WAIT);
            },
            |_, _| {},
        );
    }
    for _ in 0..POOL_THREADS {
        started_rx.recv_timeout(WAIT).expect("a worker started");
    }
    // Queued behind them: nobody is left to want its result.
    let ran = Arc::new(AtomicBool::new(false));
    let (gone_tx, gone_rx) = mpsc::channel();
    let (ran2, guard) = (ran.clone(), OnDrop(gone_tx));
    r.defer_to_thread(
        move || {
            let _guard = guard;
            ran2.store(true, Ordering::SeqCst);
        },
        |_, _| {},
    );
    drop(r);
    drop(gates);
    gone_rx
        .recv_timeout(WAIT)
        .expect("the queued job was run or dropped");
    assert!(
        !ran.load(Ordering::SeqCst),
        "blocking work ran for a reactor that is gone"
    );
}
