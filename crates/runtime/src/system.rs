//! A running system: its hub task, its upgrade checks, its refusal counts, its readiness, and
//! its shutdown (a plain stop, or a drain: see [`crate::drain`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switchboard_hub::history::MemoryHistory;
use switchboard_hub::{CloseCode, Config, Seed};
use switchboard_protocol::{Options, SystemSpec};
use tokio::sync::{mpsc, watch};
use tokio_util::task::TaskTracker;

use crate::admission::Refusals;
use crate::backplane::{nearly_full, Replication};
use crate::clock::HubClock;
use crate::drain::{spread, Closing, RESTART_REASON};
use crate::gate::Endpoint;
use crate::hub_task::{spawn_hub, HubHandle};
use crate::outbox::{FlushSink, Framing, Outbox};
use crate::tls::Handshakes;

/// How long shutdown waits for connections to finish their close handshakes.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// One system running in this process, shared by whichever transport serves it.
#[derive(Debug)]
pub struct System {
    /// Its registry entry.
    pub spec: &'static SystemSpec,
    /// Its upgrade checks (path, origins, tokens).
    pub endpoint: Endpoint,
    /// Its protocol's options (the transport checks API keys with them before reading a body).
    pub options: Options,
    /// The limits its hub runs with.
    pub config: Config,
    hub: HubHandle,
    /// Where every connection's outbox reports its flushes: the hub task, shared.
    sink: Arc<dyn FlushSink>,
    clock: HubClock,
    refusals: Arc<Refusals>,
    /// Its TLS handshakes, when served over TLS.
    handshakes: Handshakes,
    /// Set once shutdown begins: new upgrades are refused with `503`.
    stopping: AtomicBool,
    /// Set once a drain begins: `/ready` answers `503` while everything else is served.
    draining: AtomicBool,
    /// How shutdown closes the connections; a drain sets it, a second signal cuts it short.
    closing: watch::Sender<Closing>,
    /// Its server-sent-event streams.
    sse: SseStreams,
    /// The hub task's queue to the cluster backplane, to see how full it is.
    backplane: Option<mpsc::WeakSender<Replication>>,
}

/// How many of a system's connections are server-sent-event streams, for metrics (they are
/// counted with every other connection too).
#[derive(Debug, Default)]
pub struct SseStreams {
    open: AtomicU64,
    opened: AtomicU64,
}

impl SseStreams {
    /// Count a stream as open until the returned guard is dropped.
    pub fn opened(&self) -> OpenStream<'_> {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.opened.fetch_add(1, Ordering::Relaxed);
        OpenStream(self)
    }

    /// Streams open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Streams answered so far.
    pub fn total(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }
}

/// One open server-sent-event stream, counted while it lives.
#[derive(Debug)]
pub struct OpenStream<'a>(&'a SseStreams);

impl Drop for OpenStream<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl System {
    /// Start `endpoint`'s system: build its hub from its spec and start the hub task, reading
    /// time from `clock`. With `replicate`, the hub replicates to a cluster backplane.
    pub fn start(
        endpoint: Endpoint,
        options: Options,
        mut config: Config,
        clock: HubClock,
        replicate: Option<mpsc::Sender<Replication>>,
    ) -> Arc<System> {
        let spec = endpoint.spec;
        config.replicate = replicate.is_some();
        // Each system its own secret seed: session ids of one say nothing about another's.
        // A shared history is the backplane's to answer; without one, each node keeps its own.
        let history = config.history.as_mut().and_then(|h| {
            h.seed = Seed(random_seed());
            h.shared &= replicate.is_some();
            let epochs = u64::from_le_bytes(random_seed()[..8].try_into().expect("8 bytes"));
            (!h.shared).then(|| MemoryHistory::new(h.limits, epochs))
        });
        let hub = (spec.build)(&options, config.clone(), clock.now());
        let backplane = replicate.as_ref().map(mpsc::Sender::downgrade);
        let (hub, _task) = spawn_hub(hub, clock.clone(), replicate, history);
        let sink: Arc<dyn FlushSink> = Arc::new(hub.clone());
        Arc::new(System {
            spec,
            endpoint,
            options,
            config,
            hub,
            sink,
            clock,
            refusals: Arc::default(),
            handshakes: Handshakes::default(),
            stopping: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            closing: watch::Sender::new(Closing::AtOnce),
            sse: SseStreams::default(),
            backplane,
        })
    }

    /// Whether the cluster backplane is behind: its queue from the hub task is more than seven
    /// eighths full. A publication past a full queue would reach this node's clients only, so
    /// while it is, HTTP publishers are answered 503 (retry; see `crate::http`) and WebSocket
    /// connections are not read (see `crate::reader`).
    ///
    /// Every connection's reader asks before each frame: the hub task's hint is a load, and only
    /// while it is raised is the channel itself asked (which takes a sender for a moment).
    pub fn backplane_saturated(&self) -> bool {
        self.hub.backplane_behind()
            && self
                .backplane
                .as_ref()
                .and_then(mpsc::WeakSender::upgrade)
                .is_some_and(|tx| nearly_full(&tx))
    }

    /// The system's name.
    pub fn name(&self) -> &'static str {
        self.spec.name
    }

    /// Whether it keeps history and so speaks protocol v2.
    pub fn speaks_v2(&self) -> bool {
        self.config.history.is_some()
    }

    /// Its hub task.
    pub fn hub(&self) -> &HubHandle {
        &self.hub
    }

    /// An outbox for a new connection of this system, its flushes reported to the hub task.
    pub fn outbox(&self) -> Arc<Outbox> {
        Outbox::new(self.sink.clone())
    }

    /// An outbox writing frames as `framing` says (a server-sent-event stream's).
    pub fn outbox_framed(&self, framing: Framing) -> Arc<Outbox> {
        Outbox::framed(self.sink.clone(), framing)
    }

    /// Its server-sent-event streams.
    pub fn sse_streams(&self) -> &SseStreams {
        &self.sse
    }

    /// The clock its hub reads.
    pub fn clock(&self) -> &HubClock {
        &self.clock
    }

    /// What it refused so far (sockets, upgrades, HTTP requests), by reason.
    pub fn refusals(&self) -> &Arc<Refusals> {
        &self.refusals
    }

    /// Its TLS handshakes, completed and failed (all zero unless it is served over TLS).
    pub fn tls_handshakes(&self) -> &Handshakes {
        &self.handshakes
    }

    /// Whether shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Whether it takes new work: `false` once a drain or shutdown began (`/ready` says so).
    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Acquire) && !self.is_stopping()
    }

    /// Begin a drain: from now on `/ready` answers `503`, while everything is served as before;
    /// when shutdown comes, the connections are closed with 1012 (service restart), each at its
    /// own random instant within `window`, instead of all at once with 1001.
    pub fn begin_drain(&self, window: Duration) {
        self.draining.store(true, Ordering::Release);
        self.closing.send_replace(Closing::Spread(window));
    }

    /// Cut a drain short: the connections not closed yet are closed at once (still with 1012).
    pub fn close_rest_now(&self) {
        self.draining.store(true, Ordering::Release);
        self.closing.send_replace(Closing::Spread(Duration::ZERO));
    }

    /// Refuse new upgrades, close every connection (with 1001 at once, or with 1012 spread over
    /// the window after [`System::begin_drain`]) and wait for `conns` (the connection tasks) to
    /// finish, at most [`SHUTDOWN_GRACE`] after the last close. Tasks still running then (a
    /// handshake that never completes, say) end with the runtime.
    pub async fn drain(&self, conns: TaskTracker) {
        self.stopping.store(true, Ordering::Release);
        let (code, reason) = match *self.closing.borrow() {
            Closing::AtOnce => (CloseCode::GOING_AWAY, "server shutting down"),
            Closing::Spread(_) => (CloseCode::SERVICE_RESTART, RESTART_REASON),
        };
        self.close_spread().await;
        // Everything left: all of them in a plain stop, none or a few after a spread (those
        // upgraded meanwhile, or all the rest when the drain was cut short).
        let _ = self.hub.close_all(code, reason).await;
        conns.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, conns.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                system = self.name(),
                tasks = conns.len(),
                "connection tasks still running after the shutdown grace; they end with the process"
            );
        }
    }

    /// In a drain, close the connections open now with 1012, each at its own random instant
    /// within the window, until done or until the drain is cut short.
    async fn close_spread(&self) {
        let mut closing = self.closing.subscribe();
        let Closing::Spread(window) = *closing.borrow_and_update() else {
            return;
        };
        if window.is_zero() {
            return;
        }
        let Ok(conns) = self.hub.connections().await else {
            return;
        };
        let seed = u64::from_le_bytes(random_seed()[..8].try_into().expect("8 bytes"));
        let plan = spread(conns, window, seed);
        tracing::info!(
            system = self.name(),
            connections = plan.len(),
            window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            "closing connections for a restart, spread over the window"
        );
        let start = tokio::time::Instant::now();
        let closes = async {
            for (at, conn) in plan {
                tokio::time::sleep_until(start + at).await;
                let close = self
                    .hub
                    .close(conn, CloseCode::SERVICE_RESTART, RESTART_REASON);
                if close.await.is_err() {
                    return;
                }
            }
        };
        let cut_short = closing.wait_for(|c| *c == Closing::Spread(Duration::ZERO));
        tokio::select! {
            () = closes => {}
            _ = cut_short => {
                tracing::info!(system = self.name(), "drain cut short: closing the rest at once");
            }
        }
    }
}

/// 32 bytes from the operating system's random source.
fn random_seed() -> [u8; 32] {
    let mut seed = [0; 32];
    getrandom::fill(&mut seed).expect("the operating system provides randomness");
    seed
}
