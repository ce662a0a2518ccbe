//! A running system: its hub task, its upgrade checks, its refusal counts, and its shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use switchboard_hub::history::MemoryHistory;
use switchboard_hub::{CloseCode, Config, Seed};
use switchboard_protocol::{Options, SystemSpec};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::admission::Refusals;
use crate::backplane::Replication;
use crate::clock::HubClock;
use crate::gate::Endpoint;
use crate::hub_task::{spawn_hub, HubHandle};
use crate::outbox::{FlushSink, Outbox};

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
    /// Set once shutdown begins: new upgrades are refused with `503`.
    stopping: AtomicBool,
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
            stopping: AtomicBool::new(false),
        })
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

    /// The clock its hub reads.
    pub fn clock(&self) -> &HubClock {
        &self.clock
    }

    /// What it refused so far (sockets, upgrades, HTTP requests), by reason.
    pub fn refusals(&self) -> &Arc<Refusals> {
        &self.refusals
    }

    /// Whether shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Refuse new upgrades, close every connection with 1001 and wait for `conns` (the
    /// connection tasks) to finish, at most [`SHUTDOWN_GRACE`].
    pub async fn drain(&self, mut conns: JoinSet<()>) {
        self.stopping.store(true, Ordering::Release);
        let _ = self
            .hub
            .close_all(CloseCode::GOING_AWAY, "server shutting down")
            .await;
        let done = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        if done.is_err() {
            conns.abort_all();
        }
    }
}

/// 32 bytes from the operating system's random source.
fn random_seed() -> [u8; 32] {
    let mut seed = [0; 32];
    getrandom::fill(&mut seed).expect("the operating system provides randomness");
    seed
}
