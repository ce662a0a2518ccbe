//! A global allocator that counts heap allocations, for the tests and the report that keep a
//! fan-out at O(1) allocations per publication (`crates/hub/tests/alloc_count.rs`,
//! `crates/runtime/tests/event_allocations.rs`, `benches/benches/fanout_allocations.rs`).
//!
//! A `#[global_allocator]` is per binary, so each of those is a binary of its own that installs
//! it:
//!
//! ```
//! use switchboard_alloc_count::{count, Counting};
//!
//! #[global_allocator]
//! static GLOBAL: Counting = Counting;
//!
//! fn main() {
//!     let (frame, tally) = count(|| vec![0u8; 64]);
//!     assert_eq!((frame.len(), tally.allocations, tally.bytes), (64, 1, 64));
//! }
//! ```
//!
//! Only the thread that calls [`count`] is counted, and only inside it, so the test harness's
//! other threads (other tests, the output capture) do not disturb the figure.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, counting what the current thread allocates inside [`count`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Counting;

/// What a closure allocated: calls to `alloc`, `alloc_zeroed` or `realloc`, and the bytes they
/// asked for (a `realloc` counts its new size).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Allocations (a `realloc` is one).
    pub allocations: u64,
    /// Bytes asked for.
    pub bytes: u64,
}

thread_local! {
    /// This thread's tally while [`count`] runs, `None` otherwise.
    static TALLY: Cell<Option<Tally>> = const { Cell::new(None) };
}

fn note(size: usize) {
    // `try_with`: the allocator also runs while a thread's locals are torn down.
    let _ = TALLY.try_with(|t| {
        if let Some(mut tally) = t.get() {
            tally.allocations += 1;
            tally.bytes += size as u64;
            t.set(Some(tally));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting only touches a
// const-initialised thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Runs `f` and returns what it allocated on this thread. Counts nothing unless the binary's
/// `#[global_allocator]` is [`Counting`]. Calls do not nest: an inner `count` ends the outer one.
pub fn count<R>(f: impl FnOnce() -> R) -> (R, Tally) {
    TALLY.with(|t| t.set(Some(Tally::default())));
    let r = f();
    let tally = TALLY.with(|t| t.replace(None)).unwrap_or_default();
    (r, tally)
}
