//! A running system: its hub, its accept loop, and its place in the process's metrics.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use switchboard_backplane_redis::{replication_channel, Backplane, NodeId};
use switchboard_hub::Config;
use switchboard_protocol::{Options, SystemSpec};
use switchboard_tokio::admission::{Admission, Refusals};
use switchboard_tokio::cli::SystemRun;
use switchboard_tokio::driver::{spawn_hub, Replication};
use switchboard_tokio::server::{
    accept_loop, drain, shutdown_pair, ws_config, Shutdown, ShutdownHandle,
};
use switchboard_tokio::{Endpoint, HubHandle};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::metrics::{Metrics, Registration};
use crate::service::{serve_connection, HttpLimits, Shared};

/// What the systems of one process share: the metrics registry, the socket budget (and
/// per-address limit) and the HTTP limits.
#[derive(Debug, Clone)]
pub struct Process {
    /// `/metrics` on every port shows every system registered here.
    pub metrics: Metrics,
    /// Sockets admitted at accept, across every system.
    pub admission: Arc<Admission>,
    /// Limits on HTTP requests, per system.
    pub http: HttpLimits,
}

impl Default for Process {
    fn default() -> Self {
        Process {
            metrics: Metrics::new(),
            admission: Admission::for_process(),
            http: HttpLimits::default(),
        }
    }
}

/// One system served on one port: WebSocket upgrades and HTTP requests.
#[derive(Debug)]
pub struct Server {
    spec: &'static SystemSpec,
    hub: HubHandle,
    local_addr: SocketAddr,
    shutdown: ShutdownHandle,
    metrics: Metrics,
    task: tokio::task::JoinHandle<io::Result<()>>,
    refusals: Arc<Refusals>,
    /// The cluster link, when the server runs as one node of several.
    backplane: Option<(Backplane, [Registration; 2])>,
}

impl Server {
    /// Start serving `endpoint` on `listener` with a fresh hub; its `/metrics` shows this system.
    pub fn start(
        listener: TcpListener,
        endpoint: Endpoint,
        options: &Options,
        config: Config,
    ) -> io::Result<Server> {
        Self::start_with(listener, endpoint, options, config, None)
    }

    /// As [`Server::start`], handing local publications and room changes to `replicate` (for a
    /// cluster backplane).
    pub fn start_with(
        listener: TcpListener,
        endpoint: Endpoint,
        options: &Options,
        config: Config,
        replicate: Option<mpsc::Sender<Replication>>,
    ) -> io::Result<Server> {
        Self::start_in(
            &Process::default(),
            listener,
            endpoint,
            options,
            config,
            replicate,
        )
    }

    /// As [`Server::start_with`], as one system of `process`: its hub is registered in the
    /// process's metrics (so `/metrics` on every port shows every system), its sockets count
    /// against the process's budget, and its HTTP requests get the process's limits.
    pub fn start_in(
        process: &Process,
        listener: TcpListener,
        endpoint: Endpoint,
        options: &Options,
        config: Config,
        replicate: Option<mpsc::Sender<Replication>>,
    ) -> io::Result<Server> {
        let local_addr = listener.local_addr()?;
        let ws = ws_config(&config);
        let spec = endpoint.spec;
        let (hub, _) = spawn_hub(config, (spec.build)(options), replicate);
        let refusals = Arc::new(Refusals::default());
        let registration = process.metrics.register(hub.clone(), refusals.clone());
        let (shutdown, signal) = shutdown_pair();
        let shared = Arc::new(Shared::new(
            endpoint,
            options.clone(),
            hub.clone(),
            ws,
            process.metrics.clone(),
            process.http.clone(),
            refusals.clone(),
        ));
        let task = tokio::spawn(serve(
            listener,
            shared,
            process.admission.clone(),
            signal,
            registration,
        ));
        Ok(Server {
            spec,
            hub,
            local_addr,
            shutdown,
            metrics: process.metrics.clone(),
            task,
            refusals,
            backplane: None,
        })
    }

    /// What this system refused so far (sockets, upgrades, HTTP requests), by reason.
    pub fn refusals(&self) -> &Refusals {
        &self.refusals
    }

    /// Bind and start every system of `runs` with one shared metrics registry. If one cannot
    /// bind, the ones already started are shut down and the error names the system and address.
    pub async fn start_all(runs: Vec<SystemRun>, config: Config) -> io::Result<Vec<Server>> {
        Self::start_all_clustered(&Process::default(), runs, config, None).await
    }

    /// As [`Server::start_all`]; with `redis_url`, every system also joins the cluster of nodes
    /// sharing that Redis (one backplane per system, one node id for the process). The backplane
    /// never fails at start: while Redis is unreachable it retries and local delivery goes on.
    /// Its state is in `/metrics` and, under `backplane`, in the system's `/health`.
    pub async fn start_all_clustered(
        process: &Process,
        runs: Vec<SystemRun>,
        config: Config,
        redis_url: Option<&str>,
    ) -> io::Result<Vec<Server>> {
        let node = NodeId::random();
        let mut servers: Vec<Server> = Vec::with_capacity(runs.len());
        for run in runs {
            let started =
                Self::start_run(process, run.clone(), config.clone(), redis_url, node).await;
            match started {
                Ok(server) => servers.push(server),
                Err(e) => {
                    for s in servers {
                        let _ = s.shutdown().await;
                    }
                    let msg = format!("{} on {}: {e}", run.spec.name, run.addr);
                    return Err(io::Error::new(e.kind(), msg));
                }
            }
        }
        Ok(servers)
    }

    async fn start_run(
        process: &Process,
        run: SystemRun,
        config: Config,
        redis_url: Option<&str>,
        node: NodeId,
    ) -> io::Result<Server> {
        let listener = TcpListener::bind(run.addr).await?;
        let Some(url) = redis_url else {
            return Self::start_in(process, listener, run.endpoint, &run.options, config, None);
        };
        let metrics = &process.metrics;
        let (tx, rx) = replication_channel();
        let mut server = Self::start_in(
            process,
            listener,
            run.endpoint,
            &run.options,
            config,
            Some(tx),
        )?;
        let backplane = Backplane::spawn(url, node, run.spec.name, server.hub.clone(), rx)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let status = backplane.status_handle();
        let for_metrics = status.clone();
        let registrations = [
            metrics.register_section(move |out| for_metrics.render_prometheus(out)),
            metrics.register_health(run.spec.name, "backplane", move || {
                serde_json::from_str(&status.status().to_json()).unwrap_or(serde_json::Value::Null)
            }),
        ];
        server.backplane = Some((backplane, registrations));
        Ok(server)
    }

    /// The system served.
    pub fn spec(&self) -> &'static SystemSpec {
        self.spec
    }

    /// The hub, for publishing from the embedding service.
    pub fn hub(&self) -> &HubHandle {
        &self.hub
    }

    /// The metrics registry this server's hub is in.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that stops the server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Stop accepting, close every WebSocket with 1001, finish in-flight HTTP requests, and wait
    /// (at most [`switchboard_tokio::server::SHUTDOWN_GRACE`] for connections).
    pub async fn shutdown(self) -> io::Result<()> {
        self.shutdown.trigger();
        self.wait().await
    }

    /// Wait until the server stops (and its backplane, if any, has let go of Redis).
    pub async fn wait(self) -> io::Result<()> {
        let result = self.task.await.map_err(io::Error::other)?;
        if let Some((backplane, _registrations)) = self.backplane {
            backplane.shutdown().await;
        }
        result
    }
}

/// Accept connections until shutdown, then refuse new upgrades and drain.
async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    admission: Arc<Admission>,
    shutdown: Shutdown,
    registration: Registration,
) -> io::Result<()> {
    let signal = shutdown.clone();
    let conns = accept_loop(
        listener,
        shared.hub.name(),
        shutdown,
        &admission,
        &shared.refusals,
        |tcp, peer, ticket| serve_connection(tcp, peer, ticket, shared.clone(), signal.clone()),
    )
    .await;
    shared.stopping.store(true, Ordering::Release);
    drain(&shared.hub, conns).await;
    drop(registration);
    Ok(())
}
