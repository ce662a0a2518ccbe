//! `switchboard`: every selected system's WebSocket and HTTP endpoints, one port per system.

use std::process::ExitCode;

use std::time::Duration;

use switchboard_hub::RateLimit;
use switchboard_hyper::service::HttpLimits;
use switchboard_hyper::{Metrics, Process, Server};
use switchboard_tokio::cli;

fn fail(message: &str) -> ExitCode {
    eprintln!("switchboard: error: {message}");
    ExitCode::FAILURE
}

/// The HTTP limits the command line asks for.
fn http_limits(args: &cli::HttpArgs) -> HttpLimits {
    let rate = |per_second: u32| {
        (per_second > 0).then_some(RateLimit {
            per_second,
            burst: args.publish_burst.max(1),
        })
    };
    HttpLimits {
        max_body_bytes: args.max_body_bytes,
        max_buffered_body_bytes: args.max_buffered_body_bytes,
        body_timeout: Duration::from_secs(args.body_timeout_secs.max(1)),
        publish_rate_per_ip: rate(args.publish_rate_per_ip),
        publish_rate_per_key: rate(args.publish_rate_per_key),
    }
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
    cli::log_summary(&cli, &runs);
    let redis_url = cli.redis_url.as_deref();
    if let Some(url) = redis_url {
        tracing::info!(redis = %redacted(url), "joining the cluster through Redis");
    }
    let process = Process {
        metrics: Metrics::new(),
        admission: cli.hub.admission(),
        http: http_limits(&cli.http),
    };
    let servers =
        match Server::start_all_clustered(&process, runs, cli.hub.config(), redis_url).await {
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
