//! `hold`: one load process of a scale run (`bench/cluster.sh`). It opens N idle sockets from one
//! source address and reports how fast they opened (connect and upgrade completed per second),
//! then waits for publications posted by someone else (`switchboard-load post`) and reports every
//! receipt's delay after the post, on the wall clock, so that several load processes on one
//! machine can be put together.
//!
//! Output, one JSON object a line on stdout:
//! * `{"event":"ready",..}` once every socket is open (or failed for good);
//! * `{"event":"publication","seq":..,"received":..,"expected":..,"delays_ns":[..],..}` when a
//!   publication reached every socket, or `--complete-timeout` seconds after its first receipt;
//! * `{"event":"done",..}` last, after `--publications` of them or at the deadline.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{connect_from, Ws};
use crate::notice;
use crate::run::{json_str, secs};

/// Options of `hold`.
#[derive(Debug, Clone, clap::Args)]
pub struct HoldArgs {
    /// WebSocket URL of the node these sockets open on (AFC: `ws://127.0.0.1:P/ws`).
    #[arg(long, default_value = "ws://127.0.0.1:4001/ws")]
    pub url: String,
    /// Sockets to open and hold.
    #[arg(long, default_value_t = 1_000)]
    pub connections: usize,
    /// Bind every socket to this source address (127.0.0.x on loopback).
    #[arg(long)]
    pub source: Option<IpAddr>,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Publications to wait for; the run ends when all of them are reported.
    #[arg(long, default_value_t = 1)]
    pub publications: usize,
    /// Seconds after a publication's first receipt to report it even if some socket has not
    /// received it yet (the rest count as lost).
    #[arg(long, default_value_t = 10.0)]
    pub complete_timeout: f64,
    /// Seconds after the sockets are open to give up waiting for publications.
    #[arg(long, default_value_t = 300.0)]
    pub deadline: f64,
    /// Seconds to stay after the last publication, sockets open (so that a last reading of this
    /// process and of the servers still finds them).
    #[arg(long, default_value_t = 0.0)]
    pub linger: f64,
}

/// The receipts of one publication so far.
#[derive(Debug)]
struct Pending {
    /// Its post time on the wall clock (ns), as it carries it.
    post_ns: u64,
    first_seen: Instant,
    /// Each receipt's wall-clock time less `post_ns`, in ns.
    delays_ns: Vec<u64>,
}

/// What every socket task shares.
#[derive(Debug, Default)]
struct Receipts {
    by_seq: Mutex<BTreeMap<u64, Pending>>,
    unexpected: AtomicU64,
    closed: AtomicU64,
}

impl Receipts {
    fn on_frame(&self, frame: &[u8], now_ns: u64, now: Instant) {
        let (Some((_, post_ns)), Some(seq)) = (notice::parse(frame), notice::seq(frame)) else {
            self.unexpected.fetch_add(1, Relaxed);
            return;
        };
        let mut map = self
            .by_seq
            .lock()
            .expect("no task panics holding the receipts");
        let p = map.entry(seq).or_insert_with(|| Pending {
            post_ns,
            first_seen: now,
            delays_ns: Vec::new(),
        });
        p.delays_ns.push(now_ns.saturating_sub(post_ns));
    }

    /// Take out the publications that are due: received `expected` times, or first seen more
    /// than `timeout` before `now`.
    fn take_due(&self, expected: usize, timeout: Duration, now: Instant) -> Vec<(u64, Pending)> {
        let mut map = self
            .by_seq
            .lock()
            .expect("no task panics holding the receipts");
        let due: Vec<u64> = map
            .iter()
            .filter(|(_, p)| is_due(p.delays_ns.len(), expected, now - p.first_seen, timeout))
            .map(|(s, _)| *s)
            .collect();
        due.into_iter()
            .filter_map(|s| map.remove(&s).map(|p| (s, p)))
            .collect()
    }
}

/// Whether a publication received `got` times of `expected`, first seen `age` ago, is reported.
fn is_due(got: usize, expected: usize, age: Duration, timeout: Duration) -> bool {
    got >= expected || age >= timeout
}

/// The `q`-quantile (0 to 1) of sorted values, nearest rank; 0 when empty.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The line reporting one publication (its delays sorted here).
fn publication_line(label: &str, seq: u64, mut p: Pending, expected: usize) -> String {
    p.delays_ns.sort_unstable();
    let d = &p.delays_ns;
    let mut s = format!(
        "{{\"event\":\"publication\",\"label\":{},\"seq\":{seq},\"post_ns\":{},\"received\":{},\
         \"expected\":{expected},\"lost\":{},\"first_ns\":{},\"p50_ns\":{},\"p99_ns\":{},\
         \"last_ns\":{},\"delays_ns\":[",
        json_str(label),
        p.post_ns,
        d.len(),
        expected.saturating_sub(d.len()),
        d.first().copied().unwrap_or(0),
        quantile(d, 0.5),
        quantile(d, 0.99),
        d.last().copied().unwrap_or(0),
    );
    for (i, v) in d.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{v}");
    }
    s.push_str("]}");
    s
}

/// Count what a socket receives until it closes.
async fn listen(mut ws: Ws, r: Arc<Receipts>) {
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(Message::Text(t)) => r.on_frame(t.as_bytes(), notice::wall_ns(), Instant::now()),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    r.closed.fetch_add(1, Relaxed);
}

fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout leaves nobody to tell; the run goes on to its end.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Run `hold`; the returned text is the last line (`done`).
pub async fn hold(a: HoldArgs, label: &str) -> Result<String, String> {
    if a.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    let r = Arc::new(Receipts::default());
    let start_ns = notice::wall_ns();
    let started = Instant::now();
    // Each socket is read from the moment it opens (its pings answered), not after the ramp.
    let (opened, failed, first_error) = futures_util::stream::iter(0..a.connections)
        .map(|_| connect_from(&a.url, false, a.source))
        .buffer_unordered(a.connect_concurrency.max(1))
        .fold((0usize, 0usize, None), |(ok, bad, first), result| {
            let r = r.clone();
            async move {
                match result {
                    Ok(ws) => {
                        tokio::spawn(listen(ws, r));
                        (ok + 1, bad, first)
                    }
                    Err(e) => (ok, bad + 1, first.or(Some(e))),
                }
            }
        })
        .await;
    let ramp_secs = started.elapsed().as_secs_f64();
    let end_ns = notice::wall_ns();
    let source = a
        .source
        .map_or("null".to_owned(), |s| json_str(&s.to_string()));
    emit(&format!(
        "{{\"event\":\"ready\",\"label\":{},\"url\":{},\"source\":{source},\"connections\":{},\
         \"opened\":{opened},\"failed\":{failed},\"first_error\":{},\"connect_start_ns\":{start_ns},\
         \"connect_end_ns\":{end_ns},\"ramp_secs\":{ramp_secs:.3},\"handshakes_per_sec\":{:.1}}}",
        json_str(label),
        json_str(&a.url),
        a.connections,
        first_error.map_or("null".to_owned(), |e| json_str(&e)),
        opened as f64 / ramp_secs.max(1e-9),
    ));

    let deadline = Instant::now() + secs(a.deadline);
    let timeout = secs(a.complete_timeout);
    let mut reported = 0;
    let mut lost = 0;
    while reported < a.publications && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        for (seq, p) in r.take_due(opened, timeout, Instant::now()) {
            lost += opened.saturating_sub(p.delays_ns.len());
            emit(&publication_line(label, seq, p, opened));
            reported += 1;
        }
    }
    tokio::time::sleep(secs(a.linger)).await;
    Ok(format!(
        "{{\"event\":\"done\",\"label\":{},\"publications\":{reported},\"wanted\":{},\"lost\":{lost},\
         \"unexpected\":{},\"closed\":{},\"timed_out\":{}}}",
        json_str(label),
        a.publications,
        r.unexpected.load(Relaxed),
        r.closed.load(Relaxed),
        reported < a.publications,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::SinkExt;
    use tokio::net::TcpListener;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 1.0), 100);
        assert_eq!(quantile(&v, 0.0), 1);
        assert_eq!(quantile(&[7], 0.99), 7);
        assert_eq!(quantile(&[], 0.5), 0);
    }

    #[test]
    fn a_publication_is_due_when_complete_or_late() {
        let t = Duration::from_secs(10);
        assert!(is_due(5, 5, Duration::ZERO, t));
        assert!(!is_due(4, 5, Duration::from_secs(9), t));
        assert!(is_due(4, 5, t, t));
    }

    #[test]
    fn receipts_are_grouped_by_publication_and_delayed_from_the_post() {
        let r = Receipts::default();
        let now = Instant::now();
        let frame = |seq, t| {
            format!(
                r#"{{"type":"bench:tick","payload":{}}}"#,
                notice::build_payload(true, seq, t)
            )
        };
        r.on_frame(frame(1, 1_000).as_bytes(), 1_500, now);
        r.on_frame(frame(2, 2_000).as_bytes(), 2_100, now);
        r.on_frame(frame(1, 1_000).as_bytes(), 1_900, now);
        r.on_frame(br#"{"type":"error"}"#, 5_000, now);
        assert_eq!(r.unexpected.load(Relaxed), 1);
        let due = r.take_due(2, Duration::from_secs(10), now);
        assert_eq!(due.len(), 1, "only publication 1 reached both sockets");
        let (seq, p) = due.into_iter().next().unwrap();
        assert_eq!(
            (seq, p.post_ns, p.delays_ns.clone()),
            (1, 1_000, vec![500, 900])
        );
        let line = publication_line("n0", seq, p, 2);
        assert!(
            line.contains(r#""received":2,"expected":2,"lost":0"#),
            "{line}"
        );
        assert!(
            line.ends_with(r#""last_ns":900,"delays_ns":[500,900]}"#),
            "{line}"
        );
        // Publication 2 is given up on once its time is over.
        let later = now + Duration::from_secs(10);
        let due = r.take_due(2, Duration::from_secs(10), later);
        assert_eq!(due.len(), 1);
        let line = publication_line("n0", due[0].0, due.into_iter().next().unwrap().1, 2);
        assert!(
            line.contains(r#""received":1,"expected":2,"lost":1"#),
            "{line}"
        );
    }

    /// Sockets open from the source address asked for, and every publication is reported once.
    #[tokio::test]
    async fn holds_sockets_from_a_source_and_reports_publications() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        let n = 5;
        let server = tokio::spawn(async move {
            let mut peers = Vec::new();
            for _ in 0..n {
                let (tcp, from) = listener.accept().await.unwrap();
                assert_eq!(from.ip().to_string(), "127.0.0.3");
                peers.push(tokio_tungstenite::accept_async(tcp).await.unwrap());
            }
            for seq in [10, 11] {
                let body = notice::build_payload(true, seq, notice::wall_ns());
                let frame = format!(r#"{{"type":"bench:tick","payload":{body}}}"#);
                for p in &mut peers {
                    p.send(Message::Text(frame.clone().into())).await.unwrap();
                }
            }
            peers
        });
        let a = HoldArgs {
            url,
            connections: n,
            source: Some("127.0.0.3".parse().unwrap()),
            connect_concurrency: 2,
            publications: 2,
            complete_timeout: 10.0,
            deadline: 30.0,
            linger: 0.0,
        };
        let done = hold(a, "n0").await.unwrap();
        assert_eq!(
            done,
            r#"{"event":"done","label":"n0","publications":2,"wanted":2,"lost":0,"unexpected":0,"closed":0,"timed_out":false}"#
        );
        drop(server.await.unwrap());
    }
}
