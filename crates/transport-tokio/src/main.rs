//! `switchboard-tokio`: the WebSocket-only server (no HTTP endpoints; see `switchboard` for those).

use switchboard_tokio::cli;
use switchboard_tokio::server::Server;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let (cli, runs) = cli::parse();
    cli::init_tracing(&cli);
    if cli.redis_url.is_some() {
        tracing::warn!(
            "--redis-url is served by the `switchboard` binary; this one runs a single node"
        );
    }
    cli::log_summary(&cli, &runs);
    let config = cli.hub.config();
    let admission = cli.hub.admission();
    let mut servers = Vec::new();
    for run in runs {
        let listener = tokio::net::TcpListener::bind(run.addr).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("{} on {}: {e}", run.spec.name, run.addr))
        })?;
        tracing::info!(system = run.spec.name, addr = %listener.local_addr()?, path = run.spec.ws_path.unwrap_or("*"), "listening");
        servers.push(Server::start_with(
            listener,
            run.endpoint,
            &run.options,
            config.clone(),
            admission.clone(),
            None,
        )?);
    }
    cli::terminated().await;
    tracing::info!("shutting down");
    for s in &servers {
        s.shutdown_handle().trigger();
    }
    for s in servers {
        s.wait().await?;
    }
    Ok(())
}
