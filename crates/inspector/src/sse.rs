//! Server-sent events: the framing (`event:` and `data:` lines, a blank line after each), and a
//! response body fed from a bounded channel by the task that produces the events, so a client
//! that leaves ends its producer (the channel closes with the body).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

/// Events waiting for a slow client; the producer waits for room (one snapshot a second, a
/// tail at most ten events a second: a client that does not read holds a few events, no more).
pub const QUEUE: usize = 4;

/// The `Content-Type` of an event stream.
pub const CONTENT_TYPE: &str = "text/event-stream; charset=utf-8";

/// One event named `name` whose data is `data`, one `data:` line per line of it.
pub fn event(name: &str, data: &str) -> Bytes {
    let mut out = String::with_capacity(name.len() + data.len() + 16);
    out.push_str("event: ");
    out.push_str(name);
    out.push('\n');
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line.strip_suffix('\r').unwrap_or(line));
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

/// How long a client waits before it reconnects, in milliseconds (the stream's first field).
pub fn retry(millis: u64) -> Bytes {
    Bytes::from(format!("retry: {millis}\n\n"))
}

/// A comment line: it keeps the connection busy, so a client gone is noticed by the next write.
pub fn keep_alive() -> Bytes {
    Bytes::from_static(b": keep-alive\n\n")
}

/// A response body of events a producer sends through the channel [`stream`] returns.
#[derive(Debug)]
pub struct Stream {
    rx: mpsc::Receiver<Bytes>,
}

/// A new event stream: send events with the sender; the body ends when the sender is dropped.
pub fn stream() -> (mpsc::Sender<Bytes>, Stream) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (tx, Stream { rx })
}

impl Body for Stream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing() {
        assert_eq!(
            event("snapshot", r#"{"a":1}"#),
            "event: snapshot\ndata: {\"a\":1}\n\n"
        );
        assert_eq!(
            event("x", "a\nb\r\nc"),
            "event: x\ndata: a\ndata: b\ndata: c\n\n"
        );
        assert_eq!(retry(3000), "retry: 3000\n\n");
        assert!(keep_alive().starts_with(b":"));
    }
}
