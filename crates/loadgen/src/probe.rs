//! Probe sockets: a few subscribers spread through the fan-out order whose frames are read on a
//! thread of their own (a current-thread runtime), so that their latency is the server's and not
//! the time the load tool takes to read the bulk subscribers' frames ahead of them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{connect, Ws};
use crate::hist::Histogram;
use crate::shared::Shared;

/// Latency ratios are recorded in millionths.
const RATIO_SCALE: f64 = 1e6;

/// What the probes measured.
#[derive(Debug, Default)]
pub struct ProbeStats {
    /// Delivery latency of measured notices, in ns.
    pub latency: Histogram,
    /// Each measured delivery's latency over the fan-out floor at its probe's position, in
    /// millionths.
    pub over_floor: Histogram,
    /// Measured deliveries.
    pub received: AtomicU64,
    /// The probe thread runs under `SCHED_FIFO` (it preempts the bulk readers at once).
    pub realtime: AtomicBool,
}

impl ProbeStats {
    /// The `q` quantile of latency over floor.
    pub fn over_floor_quantile(&self, q: f64) -> f64 {
        self.over_floor.quantile(q) as f64 / RATIO_SCALE
    }
}

struct Open {
    url: String,
    v2: bool,
    /// The fan-out floor at this probe's position, in ns (0: not known).
    floor_ns: f64,
    done: oneshot::Sender<Result<(), String>>,
}

/// The probe thread and the way to hand it sockets to open.
pub struct Probes {
    opener: Option<mpsc::UnboundedSender<Open>>,
    thread: Option<JoinHandle<()>>,
    /// What the probes measured.
    pub stats: Arc<ProbeStats>,
    /// Probes opened.
    pub count: usize,
}

impl Probes {
    /// Start the probe thread.
    pub fn start(shared: Arc<Shared>) -> Result<Self, String> {
        let stats = Arc::new(ProbeStats::default());
        let (tx, mut rx) = mpsc::unbounded_channel::<Open>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the probe runtime: {e}"))?;
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("probes".into())
            .spawn(move || {
                thread_stats.realtime.store(realtime(), Relaxed);
                rt.block_on(async move {
                    while let Some(open) = rx.recv().await {
                        let result = connect(&open.url, open.v2).await.map(|ws| {
                            let (shared, stats) = (shared.clone(), thread_stats.clone());
                            tokio::spawn(read(ws, shared, stats, open.floor_ns));
                        });
                        let _ = open.done.send(result);
                    }
                });
                // Dropping the runtime here closes every probe socket.
            })
            .map_err(|e| format!("cannot start the probe thread: {e}"))?;
        Ok(Probes {
            opener: Some(tx),
            thread: Some(thread),
            stats,
            count: 0,
        })
    }

    /// Open one probe socket (on the probe thread) and wait until it is open.
    pub async fn open(&mut self, url: &str, v2: bool, floor_ns: f64) -> Result<(), String> {
        let (done, opened) = oneshot::channel();
        let open = Open {
            url: url.to_owned(),
            v2,
            floor_ns,
            done,
        };
        self.opener
            .as_ref()
            .and_then(|o| o.send(open).ok())
            .ok_or("the probe thread has stopped")?;
        opened
            .await
            .map_err(|_| "the probe thread has stopped".to_string())??;
        self.count += 1;
        Ok(())
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        self.opener.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Put the calling thread under `SCHED_FIFO` (lowest priority) if allowed: when a probe's frame
/// arrives, its thread then runs at once rather than after the bulk readers' time slice, which
/// matters when the load tool is pinned to one CPU. Without the privilege it stays as it is.
fn realtime() -> bool {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: pid 0 is the calling thread; param is a valid sched_param for the call.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
}

async fn read(mut ws: Ws, shared: Arc<Shared>, stats: Arc<ProbeStats>, floor_ns: f64) {
    while let Some(msg) = ws.next().await {
        let latency = match msg {
            Ok(Message::Text(t)) => shared.on_frame(t.as_bytes()),
            Ok(Message::Binary(b)) => shared.on_frame(&b),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => None,
        };
        if let Some(ns) = latency {
            stats.latency.record(ns);
            stats.received.fetch_add(1, Relaxed);
            if floor_ns > 0.0 {
                stats
                    .over_floor
                    .record((ns as f64 / floor_ns * RATIO_SCALE) as u64);
            }
        }
    }
    shared.closed.fetch_add(1, Relaxed);
}
