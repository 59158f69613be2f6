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
