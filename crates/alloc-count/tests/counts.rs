//! The allocator counts this thread's allocations inside `count`, and nothing else.

use switchboard_alloc_count::{count, Counting, Tally};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn counts_the_allocations_and_bytes_made_inside() {
    let (v, tally) = count(|| {
        let mut v: Vec<u8> = Vec::with_capacity(100);
        v.extend_from_slice(&[1; 100]);
        let boxed = Box::new(7u64);
        (v, boxed)
    });
    assert_eq!(v.0.len(), 100);
    assert_eq!(
        tally,
        Tally {
            allocations: 2,
            bytes: 108
        }
    );

    // A realloc counts once, with its new size.
    let mut grown = Vec::<u8>::with_capacity(8);
    let ((), tally) = count(|| grown.reserve_exact(64));
    assert_eq!(
        tally,
        Tally {
            allocations: 1,
            bytes: 64
        }
    );

    // Freeing is not an allocation.
    let ((), tally) = count(|| drop(grown));
    assert_eq!(tally, Tally::default());
}

#[test]
fn another_threads_allocations_are_not_counted() {
    // Spawning allocates on this thread (its handle and result slot); what the spawned thread
    // allocates must not add to that.
    let spawn = |work: fn()| count(|| std::thread::scope(|s| s.spawn(work).join().unwrap())).1;
    spawn(|| ()); // the first spawn also sets up what later ones reuse
    let idle = spawn(|| ());
    let busy = spawn(|| {
        for _ in 0..10 {
            drop(std::hint::black_box(vec![0u8; 4096]));
        }
    });
    assert_eq!(busy, idle, "the other thread's allocations were counted");
}
