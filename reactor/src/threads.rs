//! Crossing threads: `call_from_thread` (a mio `Waker` plus a queue) and a
//! small bounded pool for `defer_to_thread`, and the reactor's API for
//! both.
//!
//! The one lock here guards the cross-thread queue; the loop takes it once
//! per wake-up, never on the I/O path.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use mio::{Registry, Token, Waker};

use crate::{catch_panic, Gone, Reactor};

type RemoteFn = Box<dyn FnOnce(&mut Reactor) + Send>;

struct Shared {
    queue: Mutex<Vec<RemoteFn>>,
    waker: Waker,
    stop: AtomicBool,
    closed: AtomicBool,
}

pub(crate) struct RemoteQueue {
    shared: Arc<Shared>,
}

impl RemoteQueue {
    pub(crate) fn new(reg: &Registry, token: Token) -> std::io::Result<RemoteQueue> {
        Ok(RemoteQueue {
            shared: Arc::new(Shared {
                queue: Mutex::new(Vec::new()),
                waker: Waker::new(reg, token)?,
                stop: AtomicBool::new(false),
                closed: AtomicBool::new(false),
            }),
        })
    }

    pub(crate) fn handle(&self) -> Remote {
        Remote {
            shared: self.shared.clone(),
        }
    }

    pub(crate) fn drain(&self) -> Vec<RemoteFn> {
        std::mem::take(&mut *self.shared.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn take_stop(&self) -> bool {
        self.shared.stop.swap(false, Ordering::AcqRel)
    }
}

impl Drop for RemoteQueue {
    fn drop(&mut self) {
        let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
        self.shared.closed.store(true, Ordering::Release);
        q.clear();
    }
}

/// A handle to a reactor usable from any thread (Twisted's
/// `reactor.callFromThread`). Cheap to clone.
///
/// ```
/// let mut r = twistor_reactor::Reactor::new().unwrap();
/// let remote = r.remote();
/// std::thread::spawn(move || {
///     remote.call(|r| { println!("on the loop thread"); r.stop() }).unwrap();
/// });
/// r.run().unwrap();
/// ```
#[derive(Clone)]
pub struct Remote {
    shared: Arc<Shared>,
}

impl Remote {
    /// Run `f` on the loop thread soon. Fails with [`Gone`] once the reactor
    /// has been dropped.
    pub fn call(&self, f: impl FnOnce(&mut Reactor) + Send + 'static) -> Result<(), Gone> {
        let was_empty = {
            // Checked under the lock the reactor's drop takes too, so a call
            // either lands before the queue is cleared or is refused.
            let mut q = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            if self.shared.closed.load(Ordering::Acquire) {
                return Err(Gone);
            }
            q.push(Box::new(f));
            q.len() == 1
        };
        if was_empty {
            self.shared.waker.wake().map_err(|_| Gone)?;
        }
        Ok(())
    }

    /// Whether the reactor has been dropped.
    pub(crate) fn is_gone(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Ask the reactor to stop (as `stop()` would on the loop thread).
    pub fn stop(&self) -> Result<(), Gone> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Gone);
        }
        self.shared.stop.store(true, Ordering::Release);
        self.shared.waker.wake().map_err(|_| Gone)
    }
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Remote")
    }
}

impl Reactor {
    /// A handle other threads use to run closures on this loop
    /// (`call_from_thread`) or stop it. `Send + Clone`.
    pub fn remote(&self) -> Remote {
        self.remote.handle()
    }

    /// Run blocking `work` on a small thread pool and `done` with its result
    /// back on the loop thread (Twisted's `deferToThread`). If `work`
    /// panics, `done` gets `Err` with the panic message; if no pool thread
    /// can be started (the system refuses new threads), `done` gets `Err`
    /// saying so, on the next loop turn. Work still queued when the
    /// reactor is dropped is skipped.
    ///
    /// ```
    /// let mut r = twistor_reactor::Reactor::new().unwrap();
    /// r.defer_to_thread(|| 6 * 7, |r, answer| { assert_eq!(answer, Ok(42)); r.stop() });
    /// r.run().unwrap();
    /// ```
    pub fn defer_to_thread<T: Send + 'static>(
        &mut self,
        work: impl FnOnce() -> T + Send + 'static,
        done: impl FnOnce(&mut Reactor, Result<T, String>) + 'static,
    ) {
        if self.pool.is_none() {
            #[cfg(not(test))]
            let started = ThreadPool::start(None);
            #[cfg(test)]
            let started = ThreadPool::start(self.pool_stack);
            match started {
                Ok(pool) => self.pool = Some(pool),
                Err(e) => {
                    let msg = format!("cannot start a thread for defer_to_thread: {e}");
                    log::error!("{msg}");
                    self.call_soon(move |r| done(r, Err(msg)));
                    return;
                }
            }
        }
        let key = self.deferred.insert(Box::new(move |r, any| {
            let res = *any.downcast::<Result<T, String>>().expect("result type");
            done(r, res)
        }));
        let remote = self.remote.handle();
        let Some(pool) = self.pool.as_ref() else {
            return;
        };
        pool.submit(Box::new(move || {
            if remote.is_gone() {
                // Nobody is left to want the result: skip the blocking work.
                return;
            }
            let res = catch_panic(format_args!("defer_to_thread work"), work);
            let boxed: Box<dyn std::any::Any + Send> = Box::new(res);
            let _ = remote.call(move |r| r.finish_deferred(key, boxed));
        }));
    }

    fn finish_deferred(&mut self, key: usize, res: Box<dyn std::any::Any + Send>) {
        if let Some(done) = self.deferred.try_remove(key) {
            let _ = catch_panic(format_args!("defer_to_thread callback"), || done(self, res));
        }
    }

    pub(crate) fn run_remote(&mut self) {
        for f in self.remote.drain() {
            let _ = catch_panic(format_args!("call_from_thread callback"), || f(self));
            self.run_queued();
        }
        if self.remote.take_stop() {
            self.stop();
        }
    }
}

/// Threads in the `defer_to_thread` pool.
pub const POOL_THREADS: usize = 4;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed pool of worker threads fed by one channel. Threads are started
/// on first use and end when the reactor (the sender) is dropped: each
/// finishes the job it is running, and jobs still queued are skipped
/// (`defer_to_thread` checks that the reactor is still there).
pub(crate) struct ThreadPool {
    tx: Option<mpsc::Sender<Job>>,
    workers: Vec<thread::JoinHandle<()>>,
}

impl ThreadPool {
    /// Start the pool's threads (with `stack` bytes of stack each, or the
    /// default). Threads that cannot be started are logged and done
    /// without; the error is returned only if none could be.
    pub(crate) fn start(stack: Option<usize>) -> std::io::Result<ThreadPool> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::with_capacity(POOL_THREADS);
        let mut failed = None;
        for i in 0..POOL_THREADS {
            let rx = rx.clone();
            let mut b = thread::Builder::new().name(format!("twistor-pool-{i}"));
            if let Some(n) = stack {
                b = b.stack_size(n);
            }
            let spawned = b.spawn(move || loop {
                let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                match job {
                    Ok(job) => job(),
                    Err(_) => return,
                }
            });
            match spawned {
                Ok(h) => workers.push(h),
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            if workers.is_empty() {
                return Err(e);
            }
            log::warn!(
                "defer_to_thread pool: {} of {POOL_THREADS} threads started ({e})",
                workers.len()
            );
        }
        Ok(ThreadPool {
            tx: Some(tx),
            workers,
        })
    }

    pub(crate) fn submit(&self, job: Job) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(job);
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        // Closing the channel ends the workers once the queue is empty (the
        // jobs still in it find the reactor gone and return at once); do not
        // join (a blocking job must not hang the caller).
        self.tx.take();
        self.workers.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use crate::Reactor;

    #[test]
    fn a_pool_that_cannot_start_fails_the_job_instead_of_panicking() {
        let mut r = Reactor::with_manual_clock().unwrap();
        // No thread can have a stack this large: every spawn fails.
        r.pool_stack = Some(usize::MAX / 2);
        let got: Rc<RefCell<Option<Result<u32, String>>>> = Rc::default();
        let g = got.clone();
        r.defer_to_thread(|| 42, move |_, res| *g.borrow_mut() = Some(res));
        r.advance(std::time::Duration::ZERO);
        let res = got.borrow_mut().take().expect("done ran");
        let msg = res.expect_err("no thread ran the work");
        assert!(msg.contains("thread"), "{msg}");
        // Once the system allows threads again, the pool starts.
        r.pool_stack = None;
        let g = got.clone();
        r.defer_to_thread(
            || 7,
            move |r, res| {
                *g.borrow_mut() = Some(res);
                r.stop();
            },
        );
        let g = got.clone();
        r.run_until(std::time::Duration::from_secs(20), move |_| g.borrow().is_some())
            .unwrap();
        assert_eq!(got.borrow_mut().take(), Some(Ok(7)));
    }
}
