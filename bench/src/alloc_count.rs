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
}

/// Count the allocations of the calling thread from now on.
pub fn count_this_thread() {
    COUNTED.with(|c| c.set(true));
}

/// Allocations (including reallocations) and bytes requested so far by
/// counted threads.
pub fn snapshot() -> (u64, u64) {
    (ALLOCS.load(Relaxed), BYTES.load(Relaxed))
}

/// Bytes allocated and not yet freed by counted threads. Memory one
/// counted thread allocates and another thread frees is not subtracted;
/// the servers measured with it keep their memory on one thread.
pub fn live_bytes() -> i64 {
    LIVE.load(Relaxed)
}

fn counted() -> bool {
    // try_with: never panic inside the allocator, even during thread exit.
    COUNTED.try_with(|c| c.get()).unwrap_or(false)
}

fn note(size: usize) {
    if counted() {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(size as u64, Relaxed);
        LIVE.fetch_add(size as i64, Relaxed);
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
            LIVE.fetch_sub(layout.size() as i64, Relaxed);
        }
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counted() {
            LIVE.fetch_sub(layout.size() as i64, Relaxed);
        }
        System.dealloc(ptr, layout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// The counters are process-wide: tests with a counted thread take
    /// turns.
    static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn counts_only_threads_that_opt_in() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        // No test thread opts in except the one spawned below.
        let before = snapshot();
        let v: Vec<Box<u64>> = (0..100).map(Box::new).collect();
        std::hint::black_box(&v);
        assert_eq!(snapshot(), before, "an uncounted thread was counted");

        std::thread::spawn(|| {
            count_this_thread();
            let before = snapshot();
            let v: Vec<u8> = Vec::with_capacity(1000);
            std::hint::black_box(&v);
            let after = snapshot();
            assert_eq!(after.0 - before.0, 1);
            assert_eq!(after.1 - before.1, 1000);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn live_bytes_follow_allocations_and_frees() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        std::thread::spawn(|| {
            count_this_thread();
            let before = live_bytes();
            let mut v: Vec<u8> = Vec::with_capacity(1000);
            assert_eq!(live_bytes() - before, 1000);
            v.reserve_exact(3000); // a realloc to 3000
            assert_eq!(live_bytes() - before, 3000);
            drop(v);
            assert_eq!(live_bytes(), before);
        })
        .join()
        .unwrap();
    }
}
