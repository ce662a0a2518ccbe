//! What every connection task of a `fanout` run updates: the phase, the counters, the latency
//! histogram, and the window a flat-out publisher waits on.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::time::Instant;

use tokio::sync::Notify;

use crate::hist::Histogram;
use crate::notice;

pub(crate) const WARMUP: u8 = 0;
pub(crate) const MEASURE: u8 = 1;
pub(crate) const STOP: u8 = 2;

/// Counters every connection task updates.
pub(crate) struct Shared {
    /// Time zero of the send timestamps.
    pub(crate) base: Instant,
    pub(crate) phase: AtomicU8,
    /// Deliveries each publication should make: every other socket.
    pub(crate) fanout: u64,
    pub(crate) window: u64,
    pub(crate) sent: AtomicU64,
    pub(crate) sent_measured: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) received_measured: AtomicU64,
    /// Frames that were not our notices (error replies, say).
    pub(crate) unexpected: AtomicU64,
    /// Sockets that closed or failed before the end.
    pub(crate) closed: AtomicU64,
    pub(crate) latency: Histogram,
    /// A flat-out publisher is waiting for the deliveries in flight to drop below the window.
    pub(crate) waiting: AtomicBool,
    pub(crate) progress: Notify,
}

impl Shared {
    pub(crate) fn new(sockets: usize, window: u64) -> Self {
        Shared {
            base: Instant::now(),
            phase: AtomicU8::new(WARMUP),
            fanout: sockets.saturating_sub(1) as u64,
            window,
            sent: AtomicU64::new(0),
            sent_measured: AtomicU64::new(0),
            received: AtomicU64::new(0),
            received_measured: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            latency: Histogram::default(),
            waiting: AtomicBool::new(false),
            progress: Notify::new(),
        }
    }

    pub(crate) fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// Deliveries still expected for what has been sent.
    pub(crate) fn in_flight(&self) -> u64 {
        (self.sent.load(Relaxed) * self.fanout).saturating_sub(self.received.load(Relaxed))
    }

    pub(crate) fn window_open(&self) -> bool {
        self.in_flight() < self.window * self.fanout.max(1)
    }

    /// Count one received frame; the latency in ns of a notice sent in the measured window.
    pub(crate) fn on_frame(&self, frame: &[u8]) -> Option<u64> {
        if is_setup(frame) {
            return None;
        }
        let Some((measured, sent_ns)) = notice::parse(frame) else {
            self.unexpected.fetch_add(1, Relaxed);
            return None;
        };
        let latency = measured.then(|| self.now_ns().saturating_sub(sent_ns));
        if let Some(ns) = latency {
            self.latency.record(ns);
            self.received_measured.fetch_add(1, Relaxed);
        }
        self.received.fetch_add(1, Relaxed);
        if self.waiting.load(Relaxed) && self.window_open() {
            self.waiting.store(false, Relaxed);
            self.progress.notify_waiters();
        }
        latency
    }
}

/// Frames that are part of joining, not publications: v2's `session` and `subscribed`, and
/// collab's greeting and presence (v1, or in a v2 `msg`).
pub(crate) fn is_setup(frame: &[u8]) -> bool {
    let head = &frame[..frame.len().min(64)];
    let contains = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
    frame.starts_with(br#"{"sb":"session""#)
        || frame.starts_with(br#"{"sb":"subscribed""#)
        || contains(br#""type":"USER_PRESENCE""#)
        || contains(br#""type":"CONNECTION_ESTABLISHED""#)
}
