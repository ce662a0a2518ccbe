//! Protocol decode and encode per message type, on the server's paths: decoding each documented
//! client-to-server message (what the server does with every inbound frame) and encoding each
//! documented server-to-client message (what it does once per publication or reply).
//!
//! The messages are the examples in `docs/protocol/<system>-v1.md`, the first of each `type`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchboard_benches::{codec, examples, protocol_docs};
use switchboard_protocol::Direction;

fn codecs(c: &mut Criterion) {
    let examples = examples(&protocol_docs()).expect("docs/protocol is readable");
    let mut decode = c.benchmark_group("decode");
    for e in examples
        .iter()
        .filter(|e| e.direction == Direction::ClientToServer)
    {
        let codec = codec(e.system).expect("every example comes from a known codec");
        let bytes = e.json.trim_end().as_bytes().to_vec();
        if let Err(err) = (codec.decode_client)(&bytes) {
            eprintln!("skipping decode/{}/{}: {err}", e.system, e.tag);
            continue;
        }
        decode.throughput(Throughput::Bytes(bytes.len() as u64));
        decode.bench_function(format!("{}/{}", e.system, e.tag), |b| {
            b.iter(|| (codec.decode_client)(black_box(&bytes)))
        });
    }
    decode.finish();

    let mut encode = c.benchmark_group("encode");
    for e in examples
        .iter()
        .filter(|e| e.direction == Direction::ServerToClient)
    {
        let codec = codec(e.system).expect("every example comes from a known codec");
        let encoder = match (codec.encoder)(e.json.trim_end().as_bytes()) {
            Ok(f) => f,
            Err(err) => {
                eprintln!("skipping encode/{}/{}: {err}", e.system, e.tag);
                continue;
            }
        };
        encode.throughput(Throughput::Bytes(encoder().len() as u64));
        encode.bench_function(format!("{}/{}", e.system, e.tag), |b| {
            b.iter(|| black_box(encoder()))
        });
    }
    encode.finish();
}

criterion_group! {
    name = benches;
    // Each message takes a microsecond or two; short windows keep ~60 benchmarks under a minute.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(500))
        .sample_size(30);
    targets = codecs
}
criterion_main!(benches);
