//! Heap allocations per room publication, counted by a global allocator, for 1 to 100 000
//! members with and without filters: fan-out to N recipients makes O(1) allocations.
//!
//! A publication to many is one output: the shared `Text` buffer and the list of its recipients
//! (one allocation, whatever its length); the hub's output queue keeps its capacity between
//! publications. So the count is the same for every room of two or more, and one less for a
//! room of one (a plain transmit, no list). The process exits non-zero if it is not. (The hub's
//! own test, `crates/hub/tests/alloc_count.rs`, asserts the same for 10 to 10 000 members.)

use std::process::ExitCode;

use switchboard_alloc_count::{count, Counting};
use switchboard_benches::FanOut;

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
    let ((), tally) = count(|| {
        for _ in 0..PUBLICATIONS {
            assert_eq!(fixture.publish(), fixture.deliveries());
        }
    });
    (
        fixture.deliveries(),
        tally.allocations / PUBLICATIONS,
        tally.bytes / PUBLICATIONS,
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
        let mut alone = None;
        let mut many = None;
        for members in [1usize, 100, 10_000, 100_000] {
            let (deliveries, allocs, bytes) = per_publication(members, filtered);
            println!("{members:>9} {filtered:>9} {deliveries:>11} {allocs:>7} {bytes:>11}");
            let expected = if deliveries < 2 {
                &mut alone
            } else {
                &mut many
            };
            if *expected.get_or_insert(allocs) != allocs {
                ok = false;
            }
        }
        // The list of recipients is the only allocation a room of many adds.
        if many
            .zip(alone)
            .is_some_and(|(many, alone)| many > alone + 1)
        {
            ok = false;
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
