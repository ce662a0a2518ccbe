//! Heap allocations of a fan-out to server-sent-event streams, counted by a global allocator:
//! a publication's event body (a copy, when the frame holds line breaks) and the position it
//! moves (a JSON parse, v2) are worked out once per publication, not once per recipient.

use std::sync::Arc;

use switchboard_alloc_count::{count, Counting};
use switchboard_hub::{ConnectionHandle, Text};
use switchboard_runtime::outbox::{Corks, FlushSink, Framing, Outbox};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Debug)]
struct NoHub;

impl FlushSink for NoHub {
    fn flushed(
        &self,
        _: ConnectionHandle,
        _: usize,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async {})
    }
    fn system(&self) -> &'static str {
        "test"
    }
}

const SESSION: &str = "3865b85aa318fb113d43cb337c20004a";

/// Allocations of handing one publication to `n` event streams of `framing` the way the hub
/// task does, after each stream took its session and earlier publications.
fn allocations(framing: Framing, n: usize, publication: &str) -> u64 {
    let sink: Arc<dyn FlushSink> = Arc::new(NoHub);
    let streams: Vec<_> = (0..n)
        .map(|_| Outbox::framed(sink.clone(), framing))
        .collect();
    let session = Text::from(format!(
        r#"{{"sb":"session","session":"{SESSION}","resumed":false}}"#
    ));
    let mut corks = Corks::default();
    // Stage `payload` for every stream and hand each its frames, as one hub drain and sweep do.
    let mut sweep = |payload: &Text| {
        let payload = corks.add(payload.clone());
        for (i, _) in streams.iter().enumerate() {
            corks.stage(i, i, payload);
        }
        for (i, out) in streams.iter().enumerate() {
            assert_eq!(corks.write(i, out), Some(0), "queued");
        }
        corks.clear();
    };
    // No socket yet: frames wait in the queue, as they do until the stream's headers are out.
    // Each stream takes its session and two earlier publications of the stream (a v2 session
    // now holds its position, and the queue has grown to hold the next one).
    let earlier = || Text::from(publication.to_string());
    for warm_up in [session, earlier(), earlier()] {
        sweep(&warm_up);
    }
    let publication = Text::from(publication.to_string());
    count(|| sweep(&publication)).1.allocations
}

#[test]
fn an_event_stream_fan_out_copies_a_multi_line_frame_once_per_publication() {
    let multi = "{\"table\":\"laps\",\n\"operation\":\"CHANGE\",\r\n\"x\":1}";
    let ten = allocations(Framing::Sse, 10, multi);
    let thousand = allocations(Framing::Sse, 1000, multi);
    assert_eq!(ten, thousand, "the same for 10 and 1000 recipients");
    assert!(thousand <= 8, "{thousand} allocations for one publication");
}

#[test]
fn a_v2_event_stream_fan_out_reads_the_frame_once_and_writes_each_recipients_id() {
    let publication =
        r#"{"sb":"pub","stream":"all","epoch":"69cecfdf41150212","offset":42,"msg":{"a":"b\nc"}}"#;
    let ten = allocations(Framing::SseV2, 10, publication);
    let thousand = allocations(Framing::SseV2, 1000, publication);
    // Each recipient's `id:` line is its own (its session's positions): the id, and the line
    // with it. What the frame moves (a JSON parse and the stream's name, encoded) and its body
    // are worked out once.
    let per_recipient = (thousand - ten) as f64 / 990.0;
    assert!(
        per_recipient <= 2.0,
        "{per_recipient} allocations per recipient"
    );
}
