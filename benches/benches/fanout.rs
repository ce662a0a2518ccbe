//! Fan-out cost per delivery: one room publication to 1, 100, 10 000 and 100 000 members,
//! without and with filters, including draining every output and reporting it flushed.
//!
//! Throughput is in deliveries (`Throughput::Elements`), so criterion prints the time per
//! delivery as `elem/s`; the filtered cases skip half the members, whose filter is still checked.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use switchboard_benches::FanOut;

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    for members in [1usize, 100, 10_000, 100_000] {
        if members >= 100_000 {
            // Milliseconds per iteration: ten samples are enough and keep the run short.
            group.sample_size(10);
            group.measurement_time(Duration::from_secs(3));
        } else {
            group.sample_size(50);
            group.measurement_time(Duration::from_secs(2));
        }
        for filtered in [false, true] {
            let mut fixture = FanOut::new(members, filtered);
            let name = if filtered { "room_filtered" } else { "room" };
            group.throughput(Throughput::Elements(fixture.deliveries() as u64));
            group.bench_function(BenchmarkId::new(name, members), |b| {
                b.iter(|| black_box(fixture.publish()))
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500));
    targets = fan_out
}
criterion_main!(benches);
