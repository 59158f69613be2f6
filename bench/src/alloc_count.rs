//! A counting global allocator: counts allocations made by the threads that
//! opt in, so the bench can measure allocations per request on the server's
//! loop thread alone (the load generator's own allocations are not counted).
//!
//! It also keeps the live heap bytes of those threads (allocated minus
//! freed, by the counted threads): what a server holds at a given moment,
//! for the idle-memory measurement.
//!
//! Threads that have not opted in pay one thread-local flag check per
//! allocation and nothing else.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// The allocator installed by `main.rs`.
pub struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicI64 = AtomicI64::new(0);

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
    /// This thread's own allocations and bytes, once counted.
    static MINE: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    /// This thread's own live bytes, once counted.
    static MINE_LIVE: Cell<i64> = const { Cell::new(0) };
}

/// Count the allocations of the calling thread from now on.
pub fn count_this_thread() {
    COUNTED.with(|c| c.set(true));
}

/// Allocations (including reallocations) and bytes requested so far by
/// counted threads.
#[cfg(test)]
pub fn snapshot() -> (u64, u64) {
    (ALLOCS.load(Relaxed), BYTES.load(Relaxed))
}

/// Allocations and bytes requested so far by the calling thread since it
/// opted in: unlike the global counts, untouched by other counted threads (tests
/// run side by side).
pub fn this_thread() -> (u64, u64) {
    MINE.try_with(|c| c.get()).unwrap_or((0, 0))
}

/// Bytes allocated and not yet freed by counted threads. Memory one
/// counted thread allocates and another thread frees is not subtracted;
/// the servers measured with it keep their memory on one thread.
pub fn live_bytes() -> i64 {
    LIVE.load(Relaxed)
}

/// Live bytes of the calling thread alone (see [`live_bytes`]), untouched
/// by other counted threads.
#[cfg(test)]
pub fn this_thread_live() -> i64 {
    MINE_LIVE.try_with(|c| c.get()).unwrap_or(0)
}

/// The allocation count (allocations, bytes) of a counted reactor's own
/// thread, read on that thread through its remote: the figure is that
/// thread's alone, whatever other counted threads run alongside.
pub fn server_count(remote: &twistor_reactor::Remote) -> std::io::Result<(u64, u64)> {
    // A rendezvous channel: sending on it allocates nothing.
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    remote
        .call(move |_| {
            let _ = tx.send(this_thread());
        })
        .map_err(|_| std::io::Error::other("the counted server is gone"))?;
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .map_err(|_| std::io::Error::other("the counted server did not answer"))
}

fn live(delta: i64) {
    LIVE.fetch_add(delta, Relaxed);
    let _ = MINE_LIVE.try_with(|c| c.set(c.get() + delta));
}

fn counted() -> bool {
    // try_with: never panic inside the allocator, even during thread exit.
    COUNTED.try_with(|c| c.get()).unwrap_or(false)
}

fn note(size: usize) {
    if counted() {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(size as u64, Relaxed);
        let _ = MINE.try_with(|c| {
            let (n, b) = c.get();
            c.set((n + 1, b + size as u64));
        });
        live(size as i64);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        if counted() {
            live(-(layout.size() as i64));
        }
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counted() {
            live(-(layout.size() as i64));
        }
        System.dealloc(ptr, layout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_threads_that_opt_in() {
        // This test thread has not opted in. (Per-thread counts: the
        // global ones move with any counted thread of a test running
        // alongside.)
        let before = this_thread();
        let v: Vec<Box<u64>> = (0..100).map(Box::new).collect();
        std::hint::black_box(&v);
        assert_eq!(this_thread(), before, "an uncounted thread was counted");

        std::thread::spawn(|| {
            count_this_thread();
            let (before, global) = (this_thread(), snapshot());
            let v: Vec<u8> = Vec::with_capacity(1000);
            std::hint::black_box(&v);
            let after = this_thread();
            assert_eq!(after.0 - before.0, 1);
            assert_eq!(after.1 - before.1, 1000);
            assert!(snapshot().0 > global.0, "the global count moved too");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn live_bytes_follow_allocations_and_frees() {
        // Per-thread figures: other tests' counted threads run alongside.
        std::thread::spawn(|| {
            count_this_thread();
            let before = this_thread_live();
            let mut v: Vec<u8> = Vec::with_capacity(1000);
            assert_eq!(this_thread_live() - before, 1000);
            v.reserve_exact(3000); // a realloc to 3000
            assert_eq!(this_thread_live() - before, 3000);
            drop(v);
            assert_eq!(this_thread_live(), before);
        })
        .join()
        .unwrap();
    }
}
