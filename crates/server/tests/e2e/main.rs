//! End to end over real sockets against the full server (`switchboard_hyper::Server`, the
//! application's wiring and the `switchboard` binary): every seed flow, HTTP endpoints included, bad input, limits, metrics and
//! shutdown. The WebSocket flows are shared with the WebSocket-only transport's tests, so both
//! transports pass the same assertions. Every wait is bounded (`support::WAIT`).

#[path = "../../../transport-tokio/tests/support/mod.rs"]
mod support;

mod http;

/// The embedding example, run as a test (`examples/embed.rs`; its `main` is unused here).
#[path = "../../../transport-hyper/examples/embed.rs"]
#[allow(dead_code)]
mod embed;

mod admin;
mod afc;
mod binary;
mod bounds;
mod cluster;
mod collab;
mod dcdock;
mod drain;
mod example;
mod hostile;
mod laptimes;
mod limits;
mod processes;
mod race;
mod resume;
mod sse;
mod tls;
mod transport;

use switchboard_hub::Config;
use switchboard_hyper::Server;
use switchboard_protocol::Options;
use switchboard_runtime::Process;
use tokio::net::TcpListener;

/// `system` on a free port with the test endpoint, the test API key and default limits.
pub async fn start(system: &str) -> Server {
    start_with(system, Config::default(), support::options()).await
}

/// `system` on a free port with the test endpoint, `config` and `options`.
pub async fn start_with(system: &str, config: Config, options: Options) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let process = Process::default();
    let system = support::system(&process, system, config, options);
    switchboard_hyper::serve(&process, listener, system).unwrap()
}
