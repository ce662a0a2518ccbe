//! `post`: a backend's publications for a scale run. Posts `--count` events to one node, one
//! after the other on one keep-alive connection (back to back, or `--rate` a second), each
//! carrying its sequence number and its post time on the wall clock (read just before the
//! request is written), so that the `hold` processes can time every receipt from it.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::http::{self, Client};
use crate::notice;
use crate::run::json_str;

/// Options of `post`.
#[derive(Debug, Clone, clap::Args)]
pub struct PostArgs {
    /// Base URL of the node's HTTP API (AFC: `POST /events/<name>`).
    #[arg(long, default_value = "http://127.0.0.1:4001")]
    pub http: String,
    /// Event name (`<entity>-<action>`).
    #[arg(long, default_value = "bench-tick")]
    pub event: String,
    /// Events to post.
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// Sequence number of the first event; the next ones count up from it.
    #[arg(long, default_value_t = 0)]
    pub first_seq: u64,
    /// Posts per second (0: each as soon as the previous one was answered).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
}

/// Post the events; one JSON line: each post's sequence number, time and status.
pub async fn post(a: PostArgs, label: &str) -> Result<String, String> {
    let mut client = Client::new(http::authority(&a.http)?);
    let path = format!("/events/{}", a.event);
    let started = Instant::now();
    let mut posts = String::new();
    let mut refused = 0;
    let mut ticker = (a.rate > 0.0).then(|| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / a.rate));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    for seq in a.first_seq..a.first_seq + a.count {
        if let Some(t) = &mut ticker {
            t.tick().await;
        }
        let post_ns = notice::wall_ns();
        let status = client
            .post_json(&path, &notice::build_payload(true, seq, post_ns))
            .await?;
        if !(200..300).contains(&status) {
            refused += 1;
        }
        if !posts.is_empty() {
            posts.push(',');
        }
        let _ = write!(
            posts,
            "{{\"seq\":{seq},\"post_ns\":{post_ns},\"status\":{status},\"answered_ns\":{}}}",
            notice::wall_ns()
        );
    }
    let line = format!(
        "{{\"event\":\"posted\",\"label\":{},\"http\":{},\"count\":{},\"refused\":{refused},\
         \"secs\":{:.6},\"posts\":[{posts}]}}",
        json_str(label),
        json_str(&a.http),
        a.count,
        started.elapsed().as_secs_f64()
    );
    if refused > 0 {
        return Err(format!("{refused} of {} posts refused: {line}", a.count));
    }
    Ok(line)
}
