//! A connection's read pace: how many of its frames may wait in the hub's queue, and whether the
//! hub paused reading it (`switchboard_hub::Output::PauseReading`).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;

use tokio::sync::Notify;

/// Frames (and control-frame notices) a connection's reader may have handed to the hub that the
/// hub has not processed yet; the reader waits for the hub beyond it. This bounds what one
/// connection can have in the hub's command queue, and how many frames arrive after the hub
/// paused it.
pub const MAX_IN_FLIGHT: u32 = 8;

/// A process-wide origin, so a pause deadline fits in an atomic.
fn origin() -> tokio::time::Instant {
    static ORIGIN: OnceLock<tokio::time::Instant> = OnceLock::new();
    *ORIGIN.get_or_init(tokio::time::Instant::now)
}

/// Shared by a connection's reader (which waits on it) and its hub task (which paces it). Kept
/// small: every open connection has one.
#[derive(Debug, Default)]
pub struct Pacing {
    /// Frames handed to the hub and not yet processed.
    in_flight: AtomicU32,
    /// While the hub has paused reading: when it may resume, in microseconds after [`origin`]
    /// (plus one, so that zero means "not paused").
    resume_at: AtomicU64,
    /// Raised when the hub processed an in-flight frame, or paused reading.
    changed: Notify,
}

impl Pacing {
    /// Resolves when the reader may take the next frame off the socket: fewer than
    /// [`MAX_IN_FLIGHT`] frames wait in the hub, and the hub has not paused reading. Returns at
    /// once in the common case.
    pub async fn readable(&self) {
        loop {
            let at = self.resume_at.load(Ordering::Acquire);
            if at != 0 {
                let until = origin() + std::time::Duration::from_micros(at - 1);
                if until > tokio::time::Instant::now() {
                    tokio::select! {
                        _ = tokio::time::sleep_until(until) => {}
                        // A new pause moves the deadline.
                        _ = self.changed.notified() => {}
                    }
                    continue;
                }
                // Over; unless a new pause came meanwhile.
                let _ = self
                    .resume_at
                    .compare_exchange(at, 0, Ordering::AcqRel, Ordering::Acquire);
                continue;
            }
            if self.in_flight.load(Ordering::Acquire) < MAX_IN_FLIGHT {
                return;
            }
            self.changed.notified().await;
        }
    }

    /// Whether [`Pacing::readable`] would return at once: nothing paused, credit left. The
    /// reader waits on [`Pacing::readable`] only when this says no.
    pub fn ready_now(&self) -> bool {
        self.resume_at.load(Ordering::Acquire) == 0
            && self.in_flight.load(Ordering::Acquire) < MAX_IN_FLIGHT
    }

    /// The reader handed a frame (or a control-frame notice) to the hub.
    pub fn sent_to_hub(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// The hub processed a frame from this connection.
    pub fn processed_by_hub(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
            self.changed.notify_one();
        }
    }

    /// The hub asks not to read from this connection before `until`.
    pub fn pause_until(&self, until: tokio::time::Instant) {
        let micros = until.saturating_duration_since(origin()).as_micros();
        let at = u64::try_from(micros).unwrap_or(u64::MAX - 1) + 1;
        self.resume_at.store(at, Ordering::Release);
        self.changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn credit_and_pauses_gate_the_reader() {
        let p = Pacing::default();
        p.readable().await;
        for _ in 0..MAX_IN_FLIGHT {
            p.sent_to_hub();
        }
        // Out of credit: waits until the hub processes one.
        assert!(
            tokio::time::timeout(Duration::from_millis(10), p.readable())
                .await
                .is_err()
        );
        p.processed_by_hub();
        p.readable().await;
        // Paused: waits until the deadline.
        p.processed_by_hub();
        let start = tokio::time::Instant::now();
        p.pause_until(start + Duration::from_millis(300));
        p.readable().await;
        assert!(tokio::time::Instant::now() >= start + Duration::from_millis(300));
    }
}
