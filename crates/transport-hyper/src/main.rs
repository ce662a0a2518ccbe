//! `switchboard`: every selected system's WebSocket and HTTP endpoints, one port per system.

use std::process::ExitCode;

use switchboard_hyper::Server;
use switchboard_tokio::cli;

fn fail(message: &str) -> ExitCode {
    eprintln!("switchboard: error: {message}");
    ExitCode::FAILURE
}

#[tokio::main]
async fn main() -> ExitCode {
    let (cli, runs) = cli::parse();
    cli::init_tracing(&cli);
    let redis_url = cli.redis_url.as_deref();
    if let Some(url) = redis_url {
        tracing::info!(redis = %url, "joining the cluster through Redis");
    }
    let servers = match Server::start_all_clustered(runs, cli.hub.config(), redis_url).await {
        Ok(servers) => servers,
        Err(e) => return fail(&e.to_string()),
    };
    for s in &servers {
        tracing::info!(
            system = s.spec().name,
            addr = %s.local_addr(),
            ws_path = s.spec().ws_path.unwrap_or("*"),
            "listening"
        );
    }
    cli::terminated().await;
    tracing::info!("shutting down");
    for s in &servers {
        s.shutdown_handle().trigger();
    }
    let mut code = ExitCode::SUCCESS;
    for s in servers {
        let system = s.spec().name;
        if let Err(e) = s.wait().await {
            tracing::error!(system, error = %e, "server stopped with an error");
            code = ExitCode::FAILURE;
        }
    }
    code
}
