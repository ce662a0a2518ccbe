//! The `switchboard` binary itself: serve, relay, stop on SIGTERM; `--help`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use switchboard_protocol::SYSTEMS;
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{connect, next_text, notice, try_connect, WAIT};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn binary_relays_and_exits_on_sigterm() {
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["--systems", "laptimes", "--bind", "127.0.0.1"])
        .args(["--laptimes-port", &port.to_string()])
        .env("LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the switchboard binary");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));

    let started = Instant::now();
    let mut a = loop {
        match try_connect(addr, "/", &[]).await {
            Ok(ws) => break ws,
            Err(e) => {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "not listening: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let mut b = connect(addr, "/").await;
    // `b` is registered once it answers: a bad frame gets an error reply.
    b.send(Message::text("{}")).await.unwrap();
    next_text(&mut b).await;
    let n = notice("times");
    a.send(Message::text(n.clone())).await.unwrap();
    assert_eq!(next_text(&mut b).await, n);

    let pid = child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits within 10 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(
        tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(addr))
            .await
            .unwrap()
            .is_err()
    );
}

#[tokio::test]
async fn binary_help_lists_every_system() {
    let out = tokio::time::timeout(WAIT, Command::new(BIN).arg("--help").output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for s in SYSTEMS {
        let flag = format!("--{}-port", s.name);
        let env = format!("{}_PORT", s.name.to_ascii_uppercase());
        assert!(help.contains(&flag), "{flag} missing from --help:\n{help}");
        assert!(help.contains(&env), "{env} missing from --help");
        assert!(help.contains(s.api_key_env), "{} missing", s.api_key_env);
    }
    for env in [
        "DCDOCK_JWT_SECRET",
        "ALLOWED_ORIGINS",
        "SWITCHBOARD_SYSTEMS",
        "SWITCHBOARD_REDIS_URL",
    ] {
        assert!(help.contains(env), "{env} missing from --help");
    }
}
