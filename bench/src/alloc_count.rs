//! A counting global allocator: counts allocations made by the threads that
//! opt in, so the bench can measure allocations per request on the server's
//! loop thread alone (the load generator's own allocations are not counted).
//!
//! Threads that have not opted in pay one thread-local flag check per
//! allocation and nothing else.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The allocator installed by `main.rs`.
pub struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
    /// This thread's own allocations and bytes, once counted.
    static MINE: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
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

/// Allocations and bytes requested so far by the calling thread since it
/// opted in: unlike [`snapshot`], untouched by other counted threads (tests
/// run side by side).
pub fn this_thread() -> (u64, u64) {
    MINE.try_with(|c| c.get()).unwrap_or((0, 0))
}

fn note(size: usize) {
    // try_with: never panic inside the allocator, even during thread exit.
    if COUNTED.try_with(|c| c.get()).unwrap_or(false) {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(size as u64, Relaxed);
        let _ = MINE.try_with(|c| {
            let (n, b) = c.get();
            c.set((n + 1, b + size as u64));
        });
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
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
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
}
