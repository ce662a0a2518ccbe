//! A connection's read pace: how many of its frames may wait in the hub's queue, and whether the
//! hub paused reading it (`switchboard_hub::Output::PauseReading`).
//!
//! Kept inside the connection's [`crate::outbox::Outbox`], which wakes the connection task when
//! the pace changes (the task is the only one that waits on it): no allocation and no `Notify`
//! of its own for every open connection.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;

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

/// Shared by a connection's reader (which waits on it) and its hub task (which paces it).
#[derive(Debug, Default)]
pub struct Pacing {
    /// Frames handed to the hub and not yet processed.
    in_flight: AtomicU32,
    /// While the hub has paused reading: when it may resume, in microseconds after [`origin`]
    /// (plus one, so that zero means "not paused").
    resume_at: AtomicU64,
}

/// What the reader may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Take the next frame.
    Read,
    /// Wait until the hub processed a frame (the outbox wakes the reader then).
    Wait,
    /// Wait until this instant (or a new pause).
    Paused(tokio::time::Instant),
}

impl Pacing {
    /// Whether the reader may take the next frame off the socket: fewer than [`MAX_IN_FLIGHT`]
    /// frames wait in the hub, and the hub has not paused reading. A pause whose deadline has
    /// passed is cleared here.
    pub fn pace(&self) -> Pace {
        let at = self.resume_at.load(Ordering::Acquire);
        if at != 0 {
            let until = origin() + std::time::Duration::from_micros(at - 1);
            if until > tokio::time::Instant::now() {
                return Pace::Paused(until);
            }
            // Over; unless a new pause came meanwhile, which the next call sees.
            if self
                .resume_at
                .compare_exchange(at, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                return self.pace();
            }
        }
        if self.in_flight.load(Ordering::Acquire) < MAX_IN_FLIGHT {
            Pace::Read
        } else {
            Pace::Wait
        }
    }

    /// Whether [`Pacing::pace`] would say [`Pace::Read`], without reading the clock in the
    /// common case: nothing paused, credit left.
    pub fn ready_now(&self) -> bool {
        self.resume_at.load(Ordering::Acquire) == 0
            && self.in_flight.load(Ordering::Acquire) < MAX_IN_FLIGHT
    }

    /// The reader handed a frame (or a control-frame notice) to the hub.
    pub fn sent_to_hub(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// The hub processed a frame from this connection. Returns whether the reader may have
    /// been waiting for it (it had no credit left) and must be woken.
    pub fn processed_by_hub(&self) -> bool {
        self.in_flight.fetch_sub(1, Ordering::AcqRel) >= MAX_IN_FLIGHT
    }

    /// The hub asks not to read from this connection before `until`. The reader must be woken
    /// (a new pause moves its deadline).
    pub fn pause_until(&self, until: tokio::time::Instant) {
        let micros = until.saturating_duration_since(origin()).as_micros();
        let at = u64::try_from(micros).unwrap_or(u64::MAX - 1) + 1;
        self.resume_at.store(at, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn credit_and_pauses_gate_the_reader() {
        let p = Pacing::default();
        assert_eq!(p.pace(), Pace::Read);
        for _ in 0..MAX_IN_FLIGHT - 1 {
            p.sent_to_hub();
        }
        assert_eq!(p.pace(), Pace::Read);
        p.sent_to_hub();
        // Out of credit: waits until the hub processes one, which asks for a wake-up.
        assert_eq!(p.pace(), Pace::Wait);
        assert!(!p.ready_now());
        assert!(p.processed_by_hub());
        assert_eq!(p.pace(), Pace::Read);
        // With credit left, processing one needs no wake-up.
        assert!(!p.processed_by_hub());
        // Paused: waits until the deadline, then reads again.
        let start = tokio::time::Instant::now();
        let until = start + Duration::from_millis(300);
        p.pause_until(until);
        assert!(!p.ready_now());
        assert!(matches!(p.pace(), Pace::Paused(at) if at >= until - Duration::from_micros(1)));
        tokio::time::advance(Duration::from_millis(300)).await;
        assert_eq!(p.pace(), Pace::Read);
        assert!(p.ready_now());
    }
}
