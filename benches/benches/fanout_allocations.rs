//! Heap allocations per room publication, counted by a global allocator, for 1 to 100 000
//! members with and without filters: fan-out to N recipients makes O(1) allocations.
//!
//! Every recipient gets a clone of the same `Text` buffer (a reference count, no allocation) and
//! the hub's output queue keeps its capacity between publications, so the count is the same for
//! every room size. The process exits non-zero if it is not. (The hub's own test,
//! `crates/hub/tests/alloc_count.rs`, asserts the same for 10 to 10 000 members.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use switchboard_benches::FanOut;

struct Counting;

static ON: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

fn note(size: usize) {
    if ON.load(Relaxed) {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(size as u64, Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting only touches
// atomics, which never allocate.
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

#[global_allocator]
static GLOBAL: Counting = Counting;

const PUBLICATIONS: u64 = 10;

/// (deliveries, allocations, bytes allocated) per publication, averaged over ten after two
/// warm-up ones.
fn per_publication(members: usize, filtered: bool) -> (usize, u64, u64) {
    let mut fixture = FanOut::new(members, filtered);
    for _ in 0..2 {
        fixture.publish();
    }
    ALLOCS.store(0, Relaxed);
    BYTES.store(0, Relaxed);
    ON.store(true, Relaxed);
    for _ in 0..PUBLICATIONS {
        assert_eq!(fixture.publish(), fixture.deliveries());
    }
    ON.store(false, Relaxed);
    (
        fixture.deliveries(),
        ALLOCS.load(Relaxed) / PUBLICATIONS,
        BYTES.load(Relaxed) / PUBLICATIONS,
    )
}

fn main() -> ExitCode {
    let mut ok = true;
    println!("fan-out allocations per room publication (publish + drain + handle_flushed)");
    println!(
        "{:>9} {:>9} {:>11} {:>7} {:>11}",
        "members", "filtered", "deliveries", "allocs", "bytes"
    );
    for filtered in [false, true] {
        let mut first = None;
        for members in [1usize, 100, 10_000, 100_000] {
            let (deliveries, allocs, bytes) = per_publication(members, filtered);
            println!("{members:>9} {filtered:>9} {deliveries:>11} {allocs:>7} {bytes:>11}");
            if *first.get_or_insert(allocs) != allocs {
                ok = false;
            }
        }
    }
    if ok {
        println!("O(1): the count does not grow with the number of recipients");
        ExitCode::SUCCESS
    } else {
        eprintln!("FAIL: allocations per publication grow with the number of recipients");
        ExitCode::FAILURE
    }
}
