//! `switchboard`: every selected system's WebSocket (and, on the default transport, HTTP)
//! endpoints, one port per system.

use std::process::ExitCode;
use std::sync::Arc;

use switchboard_runtime::clock::HubClock;
use switchboard_runtime::metrics::{render_reloads, Metrics};
use switchboard_runtime::tls::Tls;
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

/// Read the TLS certificate again on every SIGHUP from now on: good files replace it for new
/// handshakes, bad ones are logged and the certificate in use stays. Its own task and its own
/// signal stream, so it never touches the SIGTERM drain.
#[cfg(unix)]
fn reload_on_sighup(tls: Arc<Tls>) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let reloading = tls.clone();
            // A few small files: off the workers all the same.
            let reloaded = tokio::task::spawn_blocking(move || reloading.reload()).await;
            let cert = tls.files().cert.display();
            match reloaded {
                Ok(Ok(chain)) => tracing::info!(%cert, chain, "SIGHUP: TLS certificate reloaded"),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "SIGHUP: TLS certificate not reloaded; the one in use stays")
                }
                Err(e) => tracing::error!(error = %e, "SIGHUP: TLS certificate reload failed"),
            }
        }
    });
    Ok(())
}

#[cfg(not(unix))]
fn reload_on_sighup(_: Arc<Tls>) -> std::io::Result<()> {
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let (cli, runs) = cli::parse();
    cli::init_tracing(&cli);
    let mut termination = cli::Termination::catch();
    cli::log_summary(&cli, &runs);
    let redis_urls = match cli.redis_url.as_deref().map(cli::redis_urls).transpose() {
        Ok(urls) => urls,
        Err(e) => return fail(&e),
    };
    if let Some(urls) = &redis_urls {
        let shown: Vec<String> = urls.iter().map(|u| redacted(u)).collect();
        tracing::info!(redis = %shown.join(","), instances = urls.len(), "joining the cluster through Redis");
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
    let tls = match cli.tls.files() {
        None => None,
        Some(files) => match Tls::new(files, cli.tls.handshake_timeout()) {
            Ok(tls) => Some(Arc::new(tls)),
            Err(e) => return fail(&format!("TLS: {e}")),
        },
    };
    if let Some(tls) = &tls {
        if let Err(e) = reload_on_sighup(tls.clone()) {
            return fail(&format!("installing the SIGHUP handler: {e}"));
        }
        let files = tls.files();
        tracing::info!(
            cert = %files.cert.display(),
            key = %files.key.display(),
            chain = tls.chain().len(),
            handshake_timeout_secs = tls.handshake_timeout().as_secs(),
            "TLS on every port (wss://, https://); SIGHUP reloads the certificate"
        );
    }
    let process = Process {
        metrics: Metrics::new(),
        admission: cli.hub.admission(),
        http: cli.http.limits(),
        clock: HubClock::default(),
        tls: tls.clone(),
    };
    let _reloads = tls.map(|tls| {
        process
            .metrics
            .register_section(move |out| render_reloads(out, tls.reloads()))
    });
    let cluster = redis_urls.as_deref().map(|redis_urls| app::Cluster {
        redis_urls,
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
            tls = process.tls.is_some(),
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
