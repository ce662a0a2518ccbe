//! `across`: publications carried between two nodes of a cluster, over many streams. Backends
//! post race-session updates flat out to one node (`POST /sessions/<id>/updates`, round-robin
//! over `--sessions` sessions, one request at a time each); clients on another node follow the
//! sessions (`/ws?sessionId=<id>`, v2 with `--v2`). Every update a follower receives crossed the
//! backplane. Reports the publications accepted per second on the first node and carried per
//! second to the second (the updates received there in the window, per follower of a session),
//! and what never arrived after a drain.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use crate::conn::connect;
use crate::http::{self, Client};
use crate::run::{json_str, secs};

/// Options of `across`.
#[derive(Debug, Clone, Args)]
pub struct AcrossArgs {
    /// Base URL of the node the backends post to (a race system).
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub publish: String,
    /// WebSocket URL of the node the followers listen on (its race path).
    #[arg(long, default_value = "ws://127.0.0.1:3001/ws")]
    pub url: String,
    /// Distinct sessions (streams) posted to, round-robin.
    #[arg(long, default_value_t = 300)]
    pub sessions: usize,
    /// Followers of each session on the listening node.
    #[arg(long, default_value_t = 1)]
    pub followers: usize,
    /// Backends posting at once, each one request at a time on its own keep-alive connection.
    #[arg(long, default_value_t = 16)]
    pub backends: usize,
    /// Seconds of posting (the measured window).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds to wait at most, after posting stops, for the last updates.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// The publish key (`RACE_API_KEY` of the posting node).
    #[arg(long, default_value = "bench-key")]
    pub key: String,
    /// Followers speak protocol v2 (positioned publications from the shared history).
    #[arg(long)]
    pub v2: bool,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    in_window: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    /// Posting: the measured window is open.
    open: AtomicBool,
}

/// What an `across` run measured.
#[derive(Debug, Clone)]
pub struct AcrossReport {
    args: AcrossArgs,
    window: f64,
    accepted: u64,
    refused: u64,
    failed: u64,
    received: u64,
    in_window: u64,
}

impl AcrossReport {
    /// Updates accepted (202) per second on the posting node.
    pub fn accepted_per_sec(&self) -> f64 {
        self.accepted as f64 / self.window
    }

    /// Updates that reached the other node per second of the window (one per session
    /// follower set).
    pub fn carried_per_sec(&self) -> f64 {
        self.in_window as f64 / self.args.followers.max(1) as f64 / self.window
    }

    /// Deliveries that never arrived.
    pub fn lost(&self) -> u64 {
        (self.accepted * self.args.followers as u64).saturating_sub(self.received)
    }

    /// Human-readable, or one JSON object.
    pub fn render(&self, label: &str, json: bool) -> String {
        let mut out = String::new();
        if json {
            let _ = write!(
                out,
                "{{\"label\":{},\"sessions\":{},\"followers\":{},\"backends\":{},\"window_secs\":{:.3},\
                 \"accepted\":{},\"refused\":{},\"failed\":{},\"received\":{},\"lost\":{},\
                 \"accepted_per_sec\":{:.1},\"carried_per_sec\":{:.1}}}",
                json_str(label),
                self.args.sessions,
                self.args.followers,
                self.args.backends,
                self.window,
                self.accepted,
                self.refused,
                self.failed,
                self.received,
                self.lost(),
                self.accepted_per_sec(),
                self.carried_per_sec(),
            );
        } else {
            let _ = write!(
                out,
                "{label}: {} sessions x {} followers, {} backends, {:.1} s: {:.0} updates/s \
                 accepted, {:.0}/s carried to the other node; {} refused, {} failed, {} lost",
                self.args.sessions,
                self.args.followers,
                self.args.backends,
                self.window,
                self.accepted_per_sec(),
                self.carried_per_sec(),
                self.refused,
                self.failed,
                self.lost(),
            );
        }
        out
    }
}

/// One follower: counts the updates it receives until its socket closes.
async fn follow(mut ws: crate::conn::Ws, c: Arc<Counters>) {
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Text(t) = msg {
            if t.as_str().contains("\"lap_update\"") {
                c.received.fetch_add(1, Relaxed);
                if c.open.load(Relaxed) {
                    c.in_window.fetch_add(1, Relaxed);
                }
            }
        }
    }
}

/// One backend: posts to sessions `first`, `first + step`, ... in turn until `until`.
async fn backend(args: Arc<AcrossArgs>, first: usize, c: Arc<Counters>, until: Instant) {
    let Ok(authority) = http::authority(&args.publish) else {
        return;
    };
    let mut client = Client::new(authority).with_header("X-API-Key", &args.key);
    let (step, mut at, mut n) = (args.backends.max(1), first, 0u64);
    while Instant::now() < until {
        let path = format!("/sessions/bench-{at}/updates");
        let body = format!(r#"{{"type":"lap_update","data":{{"n":{n}}}}}"#);
        match client.post_json(&path, &body).await {
            Ok(202) => c.accepted.fetch_add(1, Relaxed),
            Ok(_) => c.refused.fetch_add(1, Relaxed),
            Err(_) => c.failed.fetch_add(1, Relaxed),
        };
        n += 1;
        at += step;
        if at >= args.sessions {
            at = first;
        }
    }
}

/// Run `across`.
pub async fn across(a: AcrossArgs) -> Result<AcrossReport, String> {
    if a.sessions == 0 || a.backends == 0 || a.backends > a.sessions {
        return Err("--sessions and --backends must be positive, backends at most sessions".into());
    }
    http::authority(&a.publish)?;
    let c = Arc::new(Counters::default());
    let urls: Vec<String> = (0..a.sessions)
        .flat_map(|s| (0..a.followers).map(move |_| s))
        .map(|s| format!("{}?sessionId=bench-{s}", a.url))
        .collect();
    let v2 = a.v2;
    let sockets: Vec<Result<crate::conn::Ws, String>> = futures_util::stream::iter(urls)
        .map(|u| async move { connect(&u, v2).await })
        .buffer_unordered(a.connect_concurrency.max(1))
        .collect()
        .await;
    let mut followers = Vec::with_capacity(sockets.len());
    for ws in sockets {
        followers.push(tokio::spawn(follow(ws?, c.clone())));
    }
    // Every join reaches its hub before the first post.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let args = Arc::new(a.clone());
    let started = Instant::now();
    let until = started + secs(a.duration);
    c.open.store(true, Relaxed);
    let backends: Vec<_> = (0..a.backends)
        .map(|b| tokio::spawn(backend(args.clone(), b, c.clone(), until)))
        .collect();
    for b in backends {
        let _ = b.await;
    }
    c.open.store(false, Relaxed);
    let window = started.elapsed().as_secs_f64();
    let expected = c.accepted.load(Relaxed) * a.followers as u64;
    let deadline = Instant::now() + secs(a.drain);
    while c.received.load(Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for f in followers {
        f.abort();
    }
    Ok(AcrossReport {
        args: a,
        window,
        accepted: c.accepted.load(Relaxed),
        refused: c.refused.load(Relaxed),
        failed: c.failed.load(Relaxed),
        received: c.received.load(Relaxed),
        in_window: c.in_window.load(Relaxed),
    })
}
