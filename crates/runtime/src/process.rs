//! What the systems of one process share.

use std::sync::Arc;

use crate::admission::Admission;
use crate::clock::HubClock;
use crate::http::HttpLimits;
use crate::metrics::Metrics;
use crate::tls::Tls;

/// What the systems of one process share: the metrics registry, the socket budget (and
/// per-address limit), the HTTP limits, the clock, and TLS.
#[derive(Debug, Clone)]
pub struct Process {
    /// `/metrics` on every port shows every system registered here.
    pub metrics: Metrics,
    /// Sockets admitted at accept, across every system.
    pub admission: Arc<Admission>,
    /// Limits on HTTP requests, per system.
    pub http: HttpLimits,
    /// The clock every hub reads.
    pub clock: HubClock,
    /// With TLS, every port of the process speaks TLS only (`wss://`, `https://`).
    pub tls: Option<Arc<Tls>>,
}

impl Default for Process {
    fn default() -> Self {
        Process {
            metrics: Metrics::new(),
            admission: Admission::for_process(),
            http: HttpLimits::default(),
            clock: HubClock::default(),
            tls: None,
        }
    }
}
