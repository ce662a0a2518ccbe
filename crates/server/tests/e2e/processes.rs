//! Real processes for the end-to-end and fault tests: the `switchboard` binary, a
//! `redis-server` on a free port (needs it on PATH; `scripts/ensure-redis.sh` installs it), and
//! bounded waits for them to listen and for their backplane to be up.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::http::get;

pub const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `switchboard` node serving `system` on `port`, joined through the Redis on `redis_port`,
/// with `extra` flags; killed when dropped.
pub fn node(system: &str, port: u16, redis_port: u16, extra: &[&str]) -> Child {
    Command::new(BIN)
        .args(["--systems", system, "--bind", "127.0.0.1"])
        .args([format!("--{system}-port"), port.to_string()])
        .args(["--redis-url", &format!("redis://127.0.0.1:{redis_port}")])
        .args(extra)
        .env("LOG_LEVEL", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the switchboard binary")
}

pub fn redis(port: u16) -> Child {
    Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server on PATH (scripts/ensure-redis.sh installs it)")
}

/// Poll `/health` until the backplane says `up` (bounded).
pub async fn wait_until_up(addr: std::net::SocketAddr) -> serde_json::Value {
    let started = Instant::now();
    loop {
        if let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_secs(1), async {
            Ok::<_, ()>(get(addr, "/health").await)
        })
        .await
        {
            let health = reply.json();
            if health["backplane"]["state"] == "up" {
                return health;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "backplane never came up on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn wait_listening(addr: std::net::SocketAddr) {
    let started = Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{addr} not listening"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
