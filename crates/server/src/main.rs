//! `switchboard`: every selected system's WebSocket (and, on the default transport, HTTP)
//! endpoints, one port per system.

use std::process::ExitCode;

use switchboard_runtime::clock::HubClock;
use switchboard_runtime::metrics::Metrics;
use switchboard_runtime::Process;
use switchboard_server::{admin, app, cli};

fn fail(message: &str) -> ExitCode {
    eprintln!("switchboard: error: {message}");
    ExitCode::FAILURE
}

/// A Redis URL without its password, for the log.
fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***@{}", &url[at + 1..]),
        _ => url.to_string(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let (cli, runs) = cli::parse();
    cli::init_tracing(&cli);
    let mut termination = cli::Termination::catch();
    cli::log_summary(&cli, &runs);
    let redis_url = cli.redis_url.as_deref();
    if let Some(url) = redis_url {
        tracing::info!(redis = %redacted(url), "joining the cluster through Redis");
    }
    // Bound before any system starts: an admin address given but taken stops the process here.
    let bound = match cli.admin.plan() {
        Ok(plan) => admin::bind(plan).await,
        Err(e) => Err(e),
    };
    let admin = match bound {
        Ok(bound) => bound,
        Err(e) => return fail(&e),
    };
    let process = Process {
        metrics: Metrics::new(),
        admission: cli.hub.admission(),
        http: cli.http.limits(),
        clock: HubClock::default(),
    };
    let cluster = redis_url.map(|redis_url| app::Cluster {
        redis_url,
        every_room: cli.backplane_rooms == cli::BackplaneRooms::Every,
    });
    let running = match app::start(&process, cli.transport, runs, cli.hub.config(), cluster).await {
        Ok(running) => running,
        Err(e) => return fail(&e.to_string()),
    };
    for s in &running {
        tracing::info!(
            system = s.spec().name,
            addr = %s.local_addr(),
            ws_path = s.spec().ws_path.unwrap_or("*"),
            "listening"
        );
    }
    let systems = running.iter().map(|s| s.system().clone()).collect();
    let admin = match admin::serve(admin, &process, systems) {
        Ok(admin) => admin,
        Err(e) => return fail(&e),
    };
    termination.next().await;
    let plan = app::Drain {
        ready_delay: cli.drain.ready_delay(),
        window: cli.drain.window(),
    };
    tracing::info!(
        ready_delay_secs = cli.drain.drain_ready_delay_secs,
        window_secs = cli.drain.drain_window_secs,
        "draining: /ready answers 503; a second SIGTERM or ctrl-c closes every connection at once"
    );
    let mut code = ExitCode::SUCCESS;
    for (system, result) in app::drain(running, plan, termination.next()).await {
        if let Err(e) = result {
            tracing::error!(system, error = %e, "server stopped with an error");
            code = ExitCode::FAILURE;
        }
    }
    if let Some(admin) = admin {
        admin.shutdown().await;
    }
    tracing::info!("stopped");
    code
}
