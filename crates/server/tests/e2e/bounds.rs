//! Acceptance bounds measured on the real `switchboard` binary, its stderr in a log file: what
//! slow bodies cost in memory, what refusals cost in log bytes, and how the process behaves at
//! and past its file-descriptor budget (503 at accept; under `EMFILE` the listener survives
//! without spinning a core) and at the per-address limit (429).
//!
//! Figures are read from `/proc/<pid>/status` (VmRSS) and `/proc/<pid>/stat` (CPU time); each
//! bound is at least ten times what the behaviour asked for needs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::hostile::{connect_from, post_head, trickle, Trickled};
use crate::http;
use crate::support::{refused_status, try_connect, Ws, WAIT};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary, running one system on a free port of 127.0.0.1, its stderr in `log`.
struct Running {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    dir: PathBuf,
    log: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Running {
    /// Start `system` with `args` (and `LOG_LEVEL=info`), under an open-file limit of `nofile`
    /// if given (`prlimit` execs the binary, so the pid is the server's); wait until it answers.
    async fn start(name: &str, system: &str, args: &[&str], nofile: Option<u32>) -> Running {
        let dir =
            std::env::temp_dir().join(format!("switchboard-bounds-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("stderr.log");
        let port = free_port();
        let mut cmd = match nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        cmd.args(["--systems", system, "--bind", "127.0.0.1"])
            .arg(format!("--{system}-port"))
            .arg(port.to_string())
            .args(args)
            .env("LOG_LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true);
        let child = cmd.spawn().expect("start the switchboard binary");
        let pid = child.id().expect("running");
        let running = Running {
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
            log,
        };
        let started = Instant::now();
        while TcpStream::connect(running.addr).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "not listening; log:\n{}",
                running.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        running
    }

    fn log_text(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    fn log_bytes(&self) -> u64 {
        std::fs::metadata(&self.log).unwrap().len()
    }

    /// Resident memory, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// User plus system CPU time so far, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap();
        // The fields after the command name (which may hold spaces) in parentheses.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        // utime and stime are fields 14 and 15 of the whole line, 12 and 13 of `rest`.
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    /// Still running.
    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The `/metrics` text, retried while the server is still letting go of sockets.
    async fn metrics(&self) -> String {
        eventually(|| async {
            let r = http::get(self.addr, "/metrics").await;
            if r.status == 200 {
                Ok(r.text())
            } else {
                Err(r.status)
            }
        })
        .await
    }
}

/// The log without its colour codes.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux).
fn clock_ticks() -> u64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Retry `attempt` until it is `Ok` (a closed socket leaves the server's budget a moment later).
async fn eventually<T, E: std::fmt::Debug, F, Fut>(mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut last = None;
    for _ in 0..250 {
        match attempt().await {
            Ok(v) => return v,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never succeeded: {last:?}");
}

// ---------------------------------------------------------------------------------------------
// (a) Slow bodies: 401 from the head, 408 after the body timeout, and no memory to speak of.

const KEY: &str = "bounds-key";
const SLOW: usize = 40;
const MIB: usize = 1 << 20;

/// `SLOW` concurrent POSTs to collab's `/broadcast`, each declaring 1 MiB and sending it 4 bytes
/// every 100 ms, with `key`.
async fn slow_posts(addr: SocketAddr, key: &str) -> Vec<Trickled> {
    let mib = MIB.to_string();
    let head = post_head(
        "/broadcast",
        &[("X-API-Key", key), ("Content-Length", &mib)],
    );
    join_all((0..SLOW).map(|_| trickle(addr, &head, MIB, 2 * WAIT))).await
}

/// Both rounds: `SLOW` with a wrong key (each 401 before its body is sent), then `SLOW` with
/// the key (each 408). Returns the largest RSS seen meanwhile, in KiB.
async fn slow_round(server: &Running) -> u64 {
    let peak = std::cell::Cell::new(server.rss_kib());
    let sample = || peak.set(peak.get().max(server.rss_kib()));
    let watch = async {
        loop {
            sample();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let rounds = async {
        for t in slow_posts(server.addr, "wrong").await {
            assert_eq!(t.reply.status, 401);
            assert!(
                t.body_bytes_sent < 1024,
                "{} bytes first",
                t.body_bytes_sent
            );
        }
        for t in slow_posts(server.addr, KEY).await {
            assert_eq!(
                t.reply.status,
                408,
                "{}",
                String::from_utf8_lossy(&t.reply.body)
            );
            assert!(t.body_bytes_sent < MIB);
        }
    };
    tokio::select! {
        () = rounds => {}
        () = watch => unreachable!("the watch never ends"),
    }
    sample();
    peak.get()
}

#[tokio::test]
async fn slow_bodies_cost_no_memory_to_speak_of() {
    // Room to buffer every declared body at once, so each of the 40 waits for its 408 rather
    // than being turned away with 503 (`hostile` covers that budget).
    let budget = (64 * MIB).to_string();
    let server = Running::start(
        "slow-bodies",
        "collab",
        &[
            "--collab-api-key",
            KEY,
            "--body-timeout-secs",
            "1",
            "--max-buffered-body-bytes",
            &budget,
        ],
        None,
    )
    .await;
    // Warm up (threads, allocator arenas, buffers), then measure a second round.
    slow_round(&server).await;
    let baseline = server.rss_kib();
    let peak = slow_round(&server).await;
    let after = server.rss_kib();
    eprintln!("slow bodies: RSS baseline {baseline} KiB, peak {peak} KiB, after {after} KiB");
    assert!(
        peak.saturating_sub(baseline) < 2048,
        "RSS grew from {baseline} to {peak} KiB"
    );
    let metrics = server.metrics().await;
    let count = |reason: &str| crate::hostile::refusal_count(&metrics, "collab", "http", reason);
    assert_eq!(
        (count("401"), count("408")),
        (2 * SLOW as u64, 2 * SLOW as u64)
    );
}

// ---------------------------------------------------------------------------------------------
// (b) Refusals write little log: clipped values, no query strings, a rate budget.

#[tokio::test]
async fn refused_upgrades_with_huge_origins_write_little_log() {
    let server = Running::start(
        "log-bytes",
        "collab",
        &["--collab-allowed-origins", "http://localhost:3000"],
        None,
    )
    .await;
    let addr = server.addr;
    // The startup lines are in.
    eventually(|| async {
        if server.log_text().contains("listening") {
            Ok(())
        } else {
            Err(())
        }
    })
    .await;
    let before = server.log_bytes();
    let origin = format!("http://{}.example", "o".repeat(60_000));
    const SECRET: &str = "query-secret-0123456789";
    for _ in 0..100 {
        let refused =
            try_connect(addr, &format!("/ws?token={SECRET}"), &[("origin", &origin)]).await;
        assert_eq!(refused_status(refused), 403);
    }
    // Lines suppressed by the budget are summed up before the next line it allows.
    eventually(|| async {
        let refused = try_connect(addr, "/ws", &[("origin", "http://evil.example")]).await;
        assert_eq!(refused_status(refused), 403);
        if server
            .log_text()
            .contains("log lines suppressed by the log rate limit")
        {
            Ok(())
        } else {
            Err(())
        }
    })
    .await;
    let written = server.log_bytes() - before;
    eprintln!("101+ refused upgrades with a 60 KB Origin wrote {written} bytes of log");
    assert!(written < 64 * 1024, "{written} bytes of log");
    let log = server.log_text();
    assert!(!log.contains(SECRET), "a query string was logged");
    assert!(
        !log.contains(&"o".repeat(200)),
        "an origin was logged in full"
    );
    assert!(
        log.lines().all(|l| l.len() < 1024),
        "a line of 1 KiB or more"
    );
    let metrics = server.metrics().await;
    assert!(crate::hostile::refusal_count(&metrics, "collab", "upgrade", "origin") >= 101);
}

// ---------------------------------------------------------------------------------------------
// (c), (d) The file-descriptor budget: 503 at accept; under EMFILE the listener survives.

/// The socket budget the binary reports in its startup line.
fn budget_in(log: &str) -> usize {
    let at = log
        .find(" sockets=")
        .expect("a startup line with the budget")
        + " sockets=".len();
    log[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A WebSocket on laptimes, retried while an earlier socket (a probe, one just closed) still
/// holds its place.
async fn admitted(addr: SocketAddr) -> Ws {
    eventually(|| try_connect(addr, "/", &[])).await
}

#[tokio::test]
async fn past_the_socket_budget_connections_get_503_and_the_process_recovers() {
    const NOFILE: u32 = 256;
    let mut server = Running::start("fd-budget", "laptimes", &[], Some(NOFILE)).await;
    let addr = server.addr;
    let budget = eventually(|| async {
        let log = server.log_text();
        if log.contains(" sockets=") {
            Ok(budget_in(&log))
        } else {
            Err(())
        }
    })
    .await;
    let limit = NOFILE as usize;
    let expected = limit - switchboard_runtime::admission::FD_HEADROOM - limit / 20;
    assert_eq!(budget, expected);
    let mut held = Vec::new();
    for _ in 0..budget {
        held.push(admitted(addr).await);
    }
    // Past the budget: a prompt 503 for every kind of request, never a reset or a hang.
    const EXCESS: usize = 30;
    for i in 0..EXCESS {
        if i % 2 == 0 {
            assert_eq!(refused_status(try_connect(addr, "/", &[]).await), 503);
        } else {
            let r = http::get(addr, "/health").await;
            assert_eq!(r.status, 503);
            assert!(r
                .text()
                .contains(&format!("limit of {budget} open connections")));
        }
    }
    assert!(server.alive());
    // Those admitted still relay.
    use futures_util::SinkExt;
    let n = crate::support::notice("at-the-fd-budget");
    held[0]
        .send(tokio_tungstenite::tungstenite::Message::text(n.clone()))
        .await
        .unwrap();
    assert_eq!(crate::support::next_text(&mut held[1]).await, n);
    // Closing some makes room for as many new ones.
    held.truncate(budget - 10);
    for _ in 0..10 {
        held.push(admitted(addr).await);
    }
    held.truncate(budget - 5);
    let metrics = server.metrics().await;
    let refused = crate::hostile::refusal_count(&metrics, "laptimes", "socket", "sockets");
    assert!(refused >= EXCESS as u64, "{refused}\n{metrics}");
    assert!(server.alive());
}

/// Send an upgrade request over a new connection; `Some(socket)` once its `101` is read, `None`
/// when nothing came within `patience` (the connection waits in the listen backlog).
async fn upgrade_within(addr: SocketAddr, patience: Duration) -> (TcpStream, bool) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await.unwrap();
    let upgraded = read_101(&mut tcp, patience).await;
    (tcp, upgraded)
}

/// Whether a `101` arrives on `tcp` within `patience`.
async fn read_101(tcp: &mut TcpStream, patience: Duration) -> bool {
    let mut buf = Vec::new();
    let read = async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut piece = [0u8; 512];
            let n = tcp.read(&mut piece).await.unwrap();
            assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&piece[..n]);
        }
    };
    if tokio::time::timeout(patience, read).await.is_err() {
        return false;
    }
    assert!(
        buf.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    true
}

#[tokio::test]
async fn under_emfile_the_listener_backs_off_and_recovers() {
    // A budget far above what the descriptors allow, so `accept` itself fails with EMFILE.
    const NOFILE: u32 = 128;
    let mut server = Running::start(
        "emfile",
        "laptimes",
        &["--max-sockets", "100000"],
        Some(NOFILE),
    )
    .await;
    let addr = server.addr;
    // Upgrade until one is left waiting: the process is out of descriptors.
    let mut upgraded = Vec::new();
    let waiting = loop {
        assert!(
            upgraded.len() < NOFILE as usize,
            "never ran out of descriptors"
        );
        let (tcp, ok) = upgrade_within(addr, Duration::from_secs(1)).await;
        if !ok {
            break tcp;
        }
        upgraded.push(tcp);
    };
    // A few more wait in the backlog too.
    let mut backlog = vec![waiting];
    for _ in 0..4 {
        backlog.push(upgrade_within(addr, Duration::from_millis(1)).await.0);
    }
    // Two seconds of EMFILE: the listener retries every 50 ms, it does not spin.
    let ticks = clock_ticks();
    let (cpu_before, wall) = (server.cpu_ticks(), Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = (server.cpu_ticks() - cpu_before) as f64 / ticks as f64;
    let wall = wall.elapsed().as_secs_f64();
    eprintln!(
        "EMFILE: {} sockets upgraded under nofile={NOFILE}; {cpu:.2} s CPU in {wall:.2} s",
        upgraded.len()
    );
    assert!(cpu < 0.5, "{cpu:.2} s of CPU in {wall:.2} s of EMFILE");
    assert!(server.alive());
    // Closing clients frees descriptors: those waiting are accepted and upgraded, then new ones.
    upgraded.truncate(upgraded.len() - 20);
    for tcp in &mut backlog {
        assert!(
            read_101(tcp, WAIT).await,
            "a waiting connection was never accepted"
        );
    }
    let (_fresh, ok) = upgrade_within(addr, WAIT).await;
    assert!(ok, "a new connection after EMFILE");
    drop(backlog);
    upgraded.truncate(upgraded.len() - 10);
    let metrics = server.metrics().await;
    let errors = crate::hostile::refusal_count(&metrics, "laptimes", "socket", "accept_error");
    assert!(errors >= 1, "{metrics}");
    // At one retry per 50 ms, at most about 20 a second.
    assert!(errors < 400, "{errors} accept errors");
    assert!(server.alive());
}

// ---------------------------------------------------------------------------------------------
// (e) The per-address limit.

#[tokio::test]
async fn the_sixth_connection_from_one_address_gets_429() {
    let server = Running::start(
        "per-ip",
        "laptimes",
        &["--max-connections-per-ip", "5"],
        None,
    )
    .await;
    let addr = server.addr;
    // The readiness probe's socket may still hold a place for a moment: count those refusals.
    let (mut held, mut early) = (Vec::new(), 0);
    while held.len() < 5 {
        match try_connect(addr, "/", &[]).await {
            Ok(ws) => held.push(ws),
            Err(e) => {
                assert_eq!(refused_status(Err(e)), 429);
                assert!(early < 100, "the probe never let go");
                early += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert_eq!(refused_status(try_connect(addr, "/", &[]).await), 429);
    let r = http::get(addr, "/health").await;
    assert_eq!(r.status, 429);
    assert!(r
        .text()
        .contains("at most 5 connections per client address"));
    // Another address is admitted, up to its own five.
    let mut others = Vec::new();
    for _ in 0..5 {
        let tcp = connect_from([127, 0, 0, 2], addr).await;
        let (ws, _) = tokio::time::timeout(
            WAIT,
            tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp),
        )
        .await
        .unwrap()
        .expect("127.0.0.2 is admitted");
        others.push(ws);
    }
    let tcp = connect_from([127, 0, 0, 2], addr).await;
    let sixth = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp),
    )
    .await
    .unwrap();
    match sixth {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 429)
        }
        Err(e) => panic!("expected 429, got {e}"),
        Ok(_) => panic!("expected 429, the sixth from 127.0.0.2 was upgraded"),
    }
    // Read the counters from a third address, which has its own allowance.
    let mut tcp = connect_from([127, 0, 0, 3], addr).await;
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let metrics = crate::hostile::parse_reply(&buf).unwrap().text();
    let refused = crate::hostile::refusal_count(&metrics, "laptimes", "socket", "per_address");
    assert_eq!(refused, 3 + early, "{metrics}");
}

#[tokio::test]
async fn connect_and_disconnect_lines_are_under_a_rate_budget() {
    let server = Running::start("connection-log", "laptimes", &[], None).await;
    let addr = server.addr;
    eventually(|| async {
        if server.log_text().contains("listening") {
            Ok(())
        } else {
            Err(())
        }
    })
    .await;
    let lines = |log: &str| {
        log.lines()
            .filter(|l| l.contains(" connected system=") || l.contains(" disconnected system="))
            .count()
    };
    let start = Instant::now();
    const CONNECTS: usize = 400;
    for _ in 0..CONNECTS {
        let mut ws = try_connect(addr, "/", &[]).await.unwrap();
        // Closed by the client: a close handshake, then a disconnect line.
        ws.close(None).await.unwrap();
    }
    // One line each way per connection wanted; the budget allows 200 at once and 50 a
    // second, counted from before the first connect (which only over-allows).
    let logged = eventually(|| async {
        let n = lines(&server.log_text());
        if n >= 200 {
            Ok(n)
        } else {
            Err(n)
        }
    })
    .await;
    let allowed = 200.0 + 50.0 * start.elapsed().as_secs_f64();
    eprintln!(
        "{CONNECTS} connects: {logged} connect/disconnect lines in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    assert!(
        (logged as f64) <= allowed + 1.0,
        "{logged} lines; {allowed:.0} allowed"
    );
    // The next line allowed is preceded by the count of those left out.
    eventually(|| async {
        drop(try_connect(addr, "/", &[]).await.unwrap());
        let log = server.log_text();
        if log.contains("log lines suppressed by the log rate limit class=\"connection\"") {
            Ok(())
        } else {
            Err(())
        }
    })
    .await;
}
