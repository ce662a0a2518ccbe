//! Starting and stopping what the command line asks for: one system per selected seed, served by
//! the chosen transport on its port, joined to the cluster when a Redis URL is given, and drained
//! on SIGTERM.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchboard_backplane_redis::history::HistoryKeys;
use switchboard_backplane_redis::{replication_channel, Backplane, NodeId, Options};
use switchboard_hub::Config;
use switchboard_protocol::SystemSpec;
use switchboard_runtime::accept::ShutdownHandle;
use switchboard_runtime::metrics::Registration;
use switchboard_runtime::{HubHandle, Process, Serving, System};
use tokio::net::TcpListener;

use crate::cli::{SystemRun, Transport};

/// One system running: its server and, in a cluster, its backplane.
#[derive(Debug)]
pub struct Running {
    spec: &'static SystemSpec,
    served: Serving,
    backplane: Option<(Backplane, [Registration; 2])>,
}

impl Running {
    /// The system.
    pub fn spec(&self) -> &'static SystemSpec {
        self.spec
    }

    /// Its hub.
    pub fn hub(&self) -> &HubHandle {
        self.served.hub()
    }

    /// The system served.
    pub fn system(&self) -> &Arc<System> {
        self.served.system()
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.served.local_addr()
    }

    /// A handle that stops it.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.served.shutdown_handle()
    }

    /// Wait until it stops (and its backplane has let go of Redis).
    pub async fn wait(self) -> io::Result<()> {
        let result = self.served.wait().await;
        if let Some((backplane, _registrations)) = self.backplane {
            backplane.shutdown().await;
        }
        result
    }

    /// Stop it and wait.
    pub async fn shutdown(self) -> io::Result<()> {
        self.shutdown_handle().trigger();
        self.wait().await
    }
}

/// How a process joins a cluster.
#[derive(Debug, Clone, Copy)]
pub struct Cluster<'a> {
    /// The Redis every node shares, or several: each stream lives on one of them (the same list,
    /// in the same order, on every node).
    pub redis_urls: &'a [String],
    /// Receive every room's channel (`--backplane-rooms every`), not only the joined ones.
    pub every_room: bool,
}

/// How the process leaves on SIGTERM (docs/drain.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drain {
    /// How long `/ready` answers 503 while everything is still served, before accepting stops.
    pub ready_delay: Duration,
    /// The window the WebSocket connections are then closed over, with 1012, each at its own
    /// random instant.
    pub window: Duration,
}

/// Drain every system of `running` and wait until each has stopped: all report not-ready at
/// once, keep serving for the ready delay, then stop accepting and close their connections with
/// 1012 spread over the window, then wait for them as any shutdown does. `cut_short` resolving
/// (a second SIGTERM) ends the delay and closes whatever is left at once. Each system's result.
pub async fn drain(
    running: Vec<Running>,
    plan: Drain,
    cut_short: impl Future<Output = ()>,
) -> Vec<(&'static str, io::Result<()>)> {
    let systems: Vec<Arc<System>> = running.iter().map(|s| s.system().clone()).collect();
    for s in &systems {
        s.begin_drain(plan.window);
    }
    let close_rest_now = || {
        tracing::info!("second SIGTERM or ctrl-c: closing every connection left at once");
        for s in &systems {
            s.close_rest_now();
        }
    };
    tokio::pin!(cut_short);
    let mut cut = false;
    tokio::select! {
        () = tokio::time::sleep(plan.ready_delay) => {}
        () = &mut cut_short => {
            cut = true;
            close_rest_now();
        }
    }
    for s in &running {
        s.shutdown_handle().trigger();
    }
    let stopped = async {
        let mut results = Vec::with_capacity(running.len());
        for s in running {
            let name = s.spec().name;
            results.push((name, s.wait().await));
        }
        results
    };
    tokio::pin!(stopped);
    if !cut {
        tokio::select! {
            results = &mut stopped => return results,
            () = &mut cut_short => close_rest_now(),
        }
    }
    stopped.await
}

/// Bind and start every system of `runs` on `transport`, as one `process`; with `cluster`,
/// every system also joins the cluster of nodes sharing that Redis (one backplane per system,
/// one node id for the process). If one cannot bind, the ones already started are stopped and
/// the error names the system and address. The backplane never fails at start: while Redis is
/// unreachable it retries and local delivery goes on.
pub async fn start(
    process: &Process,
    transport: Transport,
    runs: Vec<SystemRun>,
    config: Config,
    cluster: Option<Cluster<'_>>,
) -> io::Result<Vec<Running>> {
    let node = NodeId::random();
    let mut started: Vec<Running> = Vec::with_capacity(runs.len());
    for run in runs {
        let (name, addr) = (run.spec.name, run.addr);
        match start_one(process, transport, run, config.clone(), cluster, node).await {
            Ok(running) => started.push(running),
            Err(e) => {
                for s in started {
                    let _ = s.shutdown().await;
                }
                return Err(io::Error::new(e.kind(), format!("{name} on {addr}: {e}")));
            }
        }
    }
    Ok(started)
}

async fn start_one(
    process: &Process,
    transport: Transport,
    run: SystemRun,
    mut config: Config,
    cluster: Option<Cluster<'_>>,
    node: NodeId,
) -> io::Result<Running> {
    let redis_url = cluster.map(|c| c.redis_urls);
    let listener = TcpListener::bind(run.addr).await?;
    let spec = run.spec;
    // On a cluster the history is Redis's, shared by every node (see docs/cluster.md).
    let keys = match (redis_url, config.history.as_mut()) {
        (Some(_), Some(history)) => {
            history.shared = true;
            let limits = history.limits;
            Some(HistoryKeys::new(
                spec.name,
                limits.max_entries,
                limits.max_age,
            ))
        }
        _ => None,
    };
    let (replicate, inbound) = match redis_url {
        Some(_) => {
            let (tx, rx) = replication_channel();
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    // On a cluster, client ids carry this node's tag (8 hex digits of its id): unique across
    // nodes.
    let options = match redis_url {
        Some(_) => run.options.on_node(format!("{:08x}", node.get() >> 32)),
        None => run.options,
    };
    let system = System::start(
        run.endpoint,
        options,
        config,
        process.clock.clone(),
        replicate,
    );
    let served = match transport {
        Transport::Hyper => switchboard_hyper::serve(process, listener, system.clone())?,
        Transport::Tokio => switchboard_tokio::serve(process, listener, system.clone())?,
    };
    let backplane = match (redis_url, inbound) {
        (Some(urls), Some(rx)) => {
            let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
            let hub = system.hub().clone();
            let options = Options {
                history: keys,
                every_room: cluster.is_some_and(|c| c.every_room),
            };
            let backplane = Backplane::spawn_sharded(&urls, node, spec.name, hub, rx, options)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
            let status = backplane.status_handle();
            let for_metrics = status.clone();
            let registrations = [
                process
                    .metrics
                    .register_section(move |out| for_metrics.render_prometheus(out)),
                process
                    .metrics
                    .register_health(spec.name, "backplane", move || status.status().to_json()),
            ];
            Some((backplane, registrations))
        }
        _ => None,
    };
    Ok(Running {
        spec,
        served,
        backplane,
    })
}
