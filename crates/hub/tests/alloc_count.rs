//! Fan-out is O(1) in allocations: a room publication to 10, 1 000 or 10 000 members makes the
//! same number of heap allocations once the hub's queues have grown, because every recipient gets
//! a clone of the same `Bytes` buffer, never its own copy.
//!
//! A `#[global_allocator]` is per binary, so this test has a file of its own. The allocator
//! (`switchboard-alloc-count`) counts only the current thread's allocations inside `count`, so
//! the test harness's own threads do not disturb the count.

use switchboard_alloc_count::{count, Counting};
use switchboard_hub::{
    Config, ConnectionHandle, Context, Hub, Instant, OpenInfo, Output, Protocol, Publication,
    RawText, Text,
};

#[global_allocator]
static GLOBAL: Counting = Counting;

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
            // A driver's way: each recipient written from the one payload, not a clone each.
            let Output::Fanout {
                payload,
                recipients,
            } = out
            else {
                panic!("a room of {n} got {out:?}");
            };
            // Every publication is one buffer, the caller's.
            let p = payload.as_ptr();
            assert_eq!(*first.get_or_insert(p), p, "a recipient got its own copy");
            for connection in recipients {
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
    let ((), tally) = count(|| publish_and_drain(&mut hub, publication));
    tally.allocations
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
    // A `Text` made from a `String` (a `Bytes` from a `Vec`) allocates its shared header on
    // first clone, then only counts; the fan-out's list of recipients is the other one.
    eprintln!("allocations per room publication: {small}");
    assert!(small <= 2, "{small} allocations for one publication");
}
