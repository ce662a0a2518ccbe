//! The binary's admin listener (the inspector, docs/inspector.md): served on `--admin-bind`,
//! refused off loopback without `SWITCHBOARD_ADMIN_TOKEN`, and an address given but taken stops
//! the process before any system starts.

use std::net::SocketAddr;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::http;
use crate::support::WAIT;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const TOKEN: &str = "e2e-admin-token-0123456789";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary running laptimes on a free port, with `args` and `token` in its environment.
fn command(args: &[&str], token: Option<&str>) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["--systems", "laptimes", "--bind", "127.0.0.1"])
        .args(["--laptimes-port", &free_port().to_string()])
        .args(args)
        .env("LOG_LEVEL", "warn")
        .env_remove("SWITCHBOARD_ADMIN_TOKEN")
        .env_remove("SWITCHBOARD_ADMIN_BIND")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(token) = token {
        cmd.env("SWITCHBOARD_ADMIN_TOKEN", token);
    }
    cmd
}

/// Run to its end, which must come within the wait.
async fn run(args: &[&str], token: Option<&str>) -> Output {
    let child = command(args, token).spawn().expect("start the binary");
    tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("exits by itself")
        .unwrap()
}

/// `path` on the admin listener at `addr` once it answers.
async fn get_when_up(addr: SocketAddr, path: &str, child: &mut Child) -> http::Reply {
    let started = Instant::now();
    loop {
        assert!(child.try_wait().unwrap().is_none(), "the binary exited");
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return http::get(addr, path).await;
        }
        assert!(started.elapsed() < WAIT, "the inspector is not listening");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn off_loopback_the_binary_refuses_to_start_without_a_token() {
    let out = run(&["--admin-bind", "0.0.0.0:0"], None).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("SWITCHBOARD_ADMIN_TOKEN"), "{stderr}");

    let out = run(&["--admin-bind", "0.0.0.0:0"], Some("too-short")).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("16 characters"));
}

#[tokio::test]
async fn an_admin_address_given_but_taken_stops_the_binary() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(&["--admin-bind", &addr], None).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("admin listener"), "{stderr}");
}

#[tokio::test]
async fn the_binary_serves_the_inspector_on_its_admin_address() {
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let mut child = command(&["--admin-bind", &bind], None).spawn().unwrap();
    let addr: SocketAddr = bind.parse().unwrap();
    let page = get_when_up(addr, "/", &mut child).await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("switchboard inspector"));
    let snapshot = http::get(addr, "/api/snapshot").await;
    assert_eq!(snapshot.status, 200);
    assert_eq!(snapshot.json()["systems"][0]["name"], "laptimes");
    let post = http::post(addr, "/api/snapshot", &[], "").await;
    assert_eq!(post.status, 405);
}

#[tokio::test]
async fn with_a_token_the_binary_serves_the_inspector_off_loopback() {
    let port = free_port();
    let bind = format!("0.0.0.0:{port}");
    let mut child = command(&["--admin-bind", &bind], Some(TOKEN))
        .spawn()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(
        get_when_up(addr, "/api/snapshot", &mut child).await.status,
        401
    );
    let bearer = format!("Bearer {TOKEN}");
    let reply = http::request(
        addr,
        "GET",
        "/api/snapshot",
        &[("authorization", &bearer)],
        b"",
    )
    .await;
    assert_eq!(reply.status, 200);
    let login = http::get(addr, &format!("/login?token={TOKEN}")).await;
    assert_eq!(login.status, 303);
    assert!(login.header("set-cookie").unwrap().contains("HttpOnly"));
}
