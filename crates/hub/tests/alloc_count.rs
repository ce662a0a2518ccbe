//! Fan-out is O(1) in allocations: a room publication to 10, 1 000 or 10 000 members makes the
//! same number of heap allocations once the hub's queues have grown, because every recipient gets
//! a clone of the same `Bytes` buffer, never its own copy.
//!
//! A `#[global_allocator]` is per binary, so this test has a file of its own. The allocator counts
//! allocations made on the current thread only while counting is switched on, so the test
//! harness's own threads do not disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use switchboard_hub::{
    Config, ConnectionHandle, Context, Hub, Instant, OpenInfo, Output, Protocol, Publication,
    RawText, Text,
};

struct Counting;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: the thread-locals may already be gone while a thread is being torn down.
    let _ = ON.try_with(|on| {
        if on.get() {
            let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches only
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations `f` makes on this thread.
fn count<R>(f: impl FnOnce() -> R) -> (R, u64) {
    ALLOCS.with(|n| n.set(0));
    ON.with(|on| on.set(true));
    let r = f();
    ON.with(|on| on.set(false));
    (r, ALLOCS.with(Cell::get))
}

/// Puts every connection in room `r` on open; never sends anything itself.
struct Rooms;

impl Protocol for Rooms {
    type Decoder = RawText;
    fn name(&self) -> &'static str {
        "rooms"
    }
    fn decoder(&self) -> RawText {
        RawText
    }
    fn on_open(&mut self, cx: &mut Context<'_>, conn: ConnectionHandle, _: &OpenInfo) {
        cx.join(conn, "r").expect("within limits");
    }
    fn on_message(&mut self, _: &mut Context<'_>, _: ConnectionHandle, _: Text) {}
}

/// Publish once to a room of `n` members after warming up; return the allocations the measured
/// publication made (publish plus draining every output).
fn allocations_for_room_of(n: usize) -> u64 {
    let now = Instant::from_millis(1_000);
    let mut hub = Hub::new(Config::default(), Rooms, now);
    for _ in 0..n {
        hub.handle_open(now, OpenInfo::default()).unwrap();
    }
    assert_eq!(hub.rooms().collect::<Vec<_>>(), vec![("r", n)]);

    let publish_and_drain = |hub: &mut Hub<Rooms>, publication: Publication| {
        let delivered = hub.publish(now, publication);
        let mut first: Option<*const u8> = None;
        let mut transmits = 0;
        while let Some(out) = hub.poll_output() {
            if let Output::Transmit {
                connection,
                payload,
            } = out
            {
                // Every recipient holds the same buffer.
                let p = payload.as_ptr();
                assert_eq!(*first.get_or_insert(p), p, "a recipient got its own copy");
                transmits += 1;
                hub.handle_flushed(now, connection, payload.len()).unwrap();
            }
        }
        assert_eq!((delivered, transmits), (n, n));
    };

    // Warm-up: the output queue grows to hold `n` transmits and keeps that capacity.
    for _ in 0..2 {
        publish_and_drain(
            &mut hub,
            Publication::to_room("r", Text::from("x".repeat(256))),
        );
    }
    // The publication (its room name and payload) is built before counting starts: it is the
    // caller's one encoding, the same for any room size.
    let publication = Publication::to_room("r", Text::from("y".repeat(256)));
    let ((), allocs) = count(|| publish_and_drain(&mut hub, publication));
    allocs
}

#[test]
fn room_fan_out_allocates_the_same_for_10_1000_and_10000_members() {
    let small = allocations_for_room_of(10);
    let medium = allocations_for_room_of(1_000);
    let large = allocations_for_room_of(10_000);
    assert_eq!(
        (small, medium, large),
        (small, small, small),
        "allocations per room publication must not grow with the room"
    );
    // A `Text` made from a `String` (a `Bytes` from a `Vec`) allocates its shared header on first clone, then only counts.
    eprintln!("allocations per room publication: {small}");
    assert!(small <= 2, "{small} allocations for one publication");
}
