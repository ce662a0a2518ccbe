//! Protocol v2 end to end over real sockets, one node: every system, 200 v2 clients each, a
//! publisher at a steady rate, and every client dropping its socket once, at a random moment,
//! for 0.5 to 3 s, then resuming with its session and position. Each client must end with
//! exactly the publications that were for it: none lost, none twice, in order. A client away
//! for longer than the history is told `recovered: false`. HTTP `Idempotency-Key` publishes once.
//!
//! The figures of a run are printed (`cargo test -p switchboard-server --test e2e resume --
//! --nocapture`); the seed of the random moments is `SB_RESUME_SEED` (printed too).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use switchboard_hub::history::HistoryLimits;
use switchboard_hub::{Config, HistoryConfig};
use tokio::sync::{watch, Barrier};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{assignment_created, options, try_connect, user_token, Ws, API_KEY, WAIT};
use crate::{http, start_with};

const CLIENTS: usize = 200;
const PUBLICATIONS: u64 = 300;
const EVERY: Duration = Duration::from_millis(20);
/// Collab projects the clients are spread over: every join sends the project's presence to
/// every member, so one project of 200 would spend the test on presence.
const PROJECTS: usize = 10;

/// A config with history: `max_entries` publications per stream.
fn history(max_entries: usize) -> Config {
    Config {
        history: Some(HistoryConfig {
            limits: HistoryLimits {
                max_entries,
                ..HistoryLimits::default()
            },
            ..HistoryConfig::with_seed([7; 32])
        }),
        ..Config::default()
    }
}

/// SplitMix64: the random moments, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.next() % (to - from + 1))
    }
}

/// What one system needs for the test: where a client connects, how it joins its stream, and
/// how the publisher publishes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Case {
    Laptimes,
    Afc,
    Race,
    Collab,
    Dcdock,
}

impl Case {
    fn system(self) -> &'static str {
        match self {
            Case::Laptimes => "laptimes",
            Case::Afc => "afc",
            Case::Race => "race",
            Case::Collab => "collab",
            Case::Dcdock => "dcdock",
        }
    }

    /// How many streams the clients are spread over.
    fn lanes(self) -> usize {
        if self == Case::Collab {
            PROJECTS
        } else {
            1
        }
    }

    /// The stream of lane `k`.
    fn stream(self, k: usize) -> String {
        match self {
            Case::Laptimes => "all".into(),
            Case::Afc => "events".into(),
            Case::Race => "session:r1".into(),
            Case::Collab => format!("project:p{k}"),
            Case::Dcdock => "assignments".into(),
        }
    }

    /// Publication `n` (1-based) goes to lane `(n - 1) % lanes`, where its offset is
    /// `(n - 1) / lanes + 1` (every stream starts empty).
    fn placed(self, n: u64) -> (usize, u64) {
        let lanes = self.lanes() as u64;
        (((n - 1) % lanes) as usize, (n - 1) / lanes + 1)
    }

    /// The offsets client `i` must end with: those of the publications for it, in order.
    fn expected(self, i: usize, publications: u64) -> Vec<u64> {
        (1..=publications)
            .filter(|n| self.is_for(i, *n))
            .map(|n| self.placed(n))
            .filter(|(k, _)| *k == i % self.lanes())
            .map(|(_, offset)| offset)
            .collect()
    }

    /// The upgrade path of client `i` (without the v2 query).
    fn path(self, i: usize) -> String {
        match self {
            Case::Laptimes => "/".into(),
            Case::Afc | Case::Collab => "/ws".into(),
            Case::Race => "/ws?sessionId=r1".into(),
            Case::Dcdock => format!("/api/ws?token={}", user_token(i as u64 + 1)),
        }
    }

    /// Whether client `i` filters (DCDock: odd clients follow inbound loads only).
    fn filtered(self, i: usize) -> bool {
        self == Case::Dcdock && i % 2 == 1
    }

    /// Whether publication `n` (1-based, = its offset in a fresh stream) is for client `i`.
    fn is_for(self, i: usize, n: u64) -> bool {
        !self.filtered(i) || direction(n) == "IB"
    }

    /// What a client sends right after connecting, to be in its stream (and its filter).
    fn join(self, i: usize, first: bool) -> Vec<Value> {
        match self {
            Case::Collab => {
                let project = format!("p{}", i % PROJECTS);
                vec![json!({"type": "JOIN_PROJECT", "projectId": project})]
            }
            // The filter is the session's: set once, restored by the resume.
            Case::Dcdock if first && self.filtered(i) => {
                vec![json!({"type": "subscribe", "filters": {"direction": "IB"}})]
            }
            _ => Vec::new(),
        }
    }

    /// Publish publication `n` into its lane.
    async fn publish(self, addr: SocketAddr, n: u64, laptimes: &mut Option<Ws>) {
        self.publish_to(addr, n, self.placed(n).0, laptimes).await;
    }

    /// Publish publication `n` into lane `lane`.
    async fn publish_to(self, addr: SocketAddr, n: u64, lane: usize, laptimes: &mut Option<Ws>) {
        let (path, body) = match self {
            Case::Laptimes => {
                let notice = json!({"table": "times", "operation": "CHANGE", "n": n});
                let ws = laptimes
                    .as_mut()
                    .expect("the laptimes publisher is connected");
                ws.send(Message::text(notice.to_string())).await.unwrap();
                return;
            }
            Case::Afc => ("/events/lap-created", json!({"n": n})),
            Case::Race => (
                "/sessions/r1/updates",
                json!({"type": "lap_update", "data": {"driverId": "VER", "lapNumber": n}}),
            ),
            Case::Collab => {
                let project = format!("p{lane}");
                let update =
                    json!({"type": "TASK_UPDATE", "projectId": project, "payload": {"n": n}});
                ("/broadcast", update)
            }
            Case::Dcdock => ("/api/ws/publish", assignment_created(n, direction(n))),
        };
        let r = http::post_with_key(addr, path, &body).await;
        assert!((200..300).contains(&r.status), "{path}: {}", r.text());
    }
}

/// DCDock publication `n` is an inbound load when `n` is odd.
fn direction(n: u64) -> &'static str {
    if n % 2 == 1 {
        "IB"
    } else {
        "OB"
    }
}

/// A v2 connection.
async fn connect_v2(addr: SocketAddr, path: &str) -> Ws {
    try_connect(addr, path, &[("Sec-WebSocket-Protocol", "switchboard.v2")])
        .await
        .unwrap_or_else(|e| panic!("v2 connect to {path}: {e}"))
}

/// `path` with the v2 query: the session and the position of `stream`.
fn resume_path(path: &str, session: &str, stream: &str, position: &(String, u64)) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    let since = format!("{stream}~{}~{}", position.0, position.1).replace(':', "%3A");
    format!("{path}{sep}sb_session={session}&sb_since={since}")
}

/// What one client saw.
#[derive(Debug, Default)]
struct Seen {
    session: Option<String>,
    /// The latest position of the followed stream (epoch, offset).
    position: Option<(String, u64)>,
    /// Offsets of the followed stream's publications, in arrival order.
    offsets: Vec<u64>,
    /// `subscribed` frames: (recovered, replayed, reason).
    subscriptions: Vec<(Option<bool>, u64, Option<String>)>,
    gaps: u64,
    /// Replies to the client's own messages (`msg` frames with `re`).
    replies: u64,
}

impl Seen {
    /// Take one server frame into account; panics on anything a v2 server must not send.
    fn take(&mut self, stream: &str, text: &str) {
        let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        let position = |v: &Value| {
            (
                v["epoch"].as_str().expect("an epoch").to_owned(),
                v["offset"].as_u64().expect("an offset"),
            )
        };
        match v["sb"].as_str() {
            Some("session") => self.session = Some(v["session"].as_str().unwrap().to_owned()),
            Some("pub") if v["stream"] == stream => {
                let p = position(&v);
                self.offsets.push(p.1);
                self.position = Some(p);
            }
            Some("subscribed") if v["stream"] == stream => {
                self.position = Some(position(&v));
                self.subscriptions.push((
                    v["recovered"].as_bool(),
                    v["replayed"].as_u64().unwrap_or(0),
                    v["reason"].as_str().map(str::to_owned),
                ));
            }
            Some("gap") => self.gaps += 1,
            Some("msg") if v.get("re").is_some() => self.replies += 1,
            Some("msg" | "ack" | "pub" | "subscribed") => {}
            _ => panic!("unexpected frame {text}"),
        }
    }
}

/// Read frames into `seen` until `until` says stop (checked after every frame) or `deadline`.
async fn read_until(
    ws: &mut Ws,
    seen: &mut Seen,
    stream: &str,
    deadline: Instant,
    until: impl Fn(&Seen) -> bool,
) -> bool {
    while !until(seen) {
        let next = tokio::time::timeout_at(deadline, ws.next()).await;
        match next {
            Err(_) => return false,
            Ok(Some(Ok(Message::Text(t)))) => seen.take(stream, &t),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(other) => panic!("the connection ended: {other:?}"),
        }
    }
    true
}

/// Connect client `i` (resuming when `seen` has a session) and wait until it is in its stream.
async fn join(addr: SocketAddr, case: Case, i: usize, seen: &mut Seen) -> Ws {
    let stream = &case.stream(i % case.lanes());
    let first = seen.session.is_none();
    let path = match (&seen.session, &seen.position) {
        (Some(s), Some(p)) => resume_path(&case.path(i), s, stream, p),
        _ => case.path(i),
    };
    let mut ws = connect_v2(addr, &path).await;
    for m in case.join(i, first) {
        // A new message needs a new id: a known id is a resend, answered and not processed.
        let id = format!("j-{i}-{}", seen.subscriptions.len());
        let frame = json!({"sb": "msg", "id": id, "msg": m});
        ws.send(Message::text(frame.to_string())).await.unwrap();
    }
    let subscribed = seen.subscriptions.len();
    // DCDock's filter must be in place (its reply seen) before anything is published.
    let replies = seen.replies + u64::from(case == Case::Dcdock && first && case.filtered(i));
    let joined = read_until(&mut ws, seen, stream, Instant::now() + WAIT, |s| {
        s.subscriptions.len() > subscribed && s.replies >= replies
    })
    .await;
    assert!(joined, "{case:?} client {i} never got its `subscribed`");
    ws
}

/// One system: 200 clients, a steady publisher, one drop and resume per client.
async fn every_client_resumes(case: Case, seed: u64) {
    let server = start_with(case.system(), history(1000), options()).await;
    let addr = server.local_addr();
    let mut rng = Rng(seed ^ case.system().len() as u64);

    let ready = Arc::new(Barrier::new(CLIENTS + 1));
    let (done_tx, done_rx) = watch::channel(false);
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let (ready, mut done) = (ready.clone(), done_rx.clone());
        let drop_at = rng.millis(200, PUBLICATIONS * EVERY.as_millis() as u64 - 1000);
        let away = rng.millis(500, 3000);
        clients.push(tokio::spawn(async move {
            let stream = &case.stream(i % case.lanes());
            let mut seen = Seen::default();
            let mut ws = join(addr, case, i, &mut seen).await;
            ready.wait().await;
            let start = Instant::now();
            read_until(&mut ws, &mut seen, stream, start + drop_at, |_| false).await;
            drop(ws); // No close frame: the socket just goes.
            tokio::time::sleep(away).await;
            let mut ws = join(addr, case, i, &mut seen).await;
            // Everything for this client, up to the last publication.
            let last = *case.expected(i, PUBLICATIONS).last().unwrap();
            let _ = done.wait_for(|d| *d).await;
            let deadline = Instant::now() + Duration::from_secs(30);
            read_until(&mut ws, &mut seen, stream, deadline, |s| {
                s.offsets.last().is_some_and(|o| *o >= last)
            })
            .await;
            (i, seen)
        }));
    }
    let mut laptimes = match case {
        Case::Laptimes => Some(crate::support::connect(addr, "/").await),
        _ => None,
    };
    ready.wait().await;
    let mut tick = tokio::time::interval(EVERY);
    for n in 1..=PUBLICATIONS {
        tick.tick().await;
        case.publish(addr, n, &mut laptimes).await;
    }
    done_tx.send(true).unwrap();

    let (mut lost, mut duplicated, mut disordered, mut delivered, mut replayed) = (0, 0, 0, 0, 0);
    for client in clients {
        let (i, seen) = client.await.expect("the client task ran to its end");
        let expected = case.expected(i, PUBLICATIONS);
        let mut sorted = seen.offsets.clone();
        sorted.sort_unstable();
        disordered += usize::from(sorted != seen.offsets);
        sorted.dedup();
        duplicated += seen.offsets.len() - sorted.len();
        lost += expected
            .iter()
            .filter(|n| sorted.binary_search(n).is_err())
            .count();
        delivered += seen.offsets.len();
        assert_eq!(
            seen.offsets, expected,
            "{case:?} client {i}: not exactly its publications, once, in order"
        );
        assert_eq!(
            seen.gaps, 0,
            "{case:?} client {i}: a gap under the close policy"
        );
        let resumed = seen.subscriptions.last().unwrap();
        assert_eq!(resumed.0, Some(true), "{case:?} client {i}: {resumed:?}");
        replayed += resumed.1;
    }
    eprintln!(
        "resume {}: {CLIENTS} v2 clients, {PUBLICATIONS} publications, {delivered} delivered \
         ({replayed} of them replayed after a resume), lost {lost}, duplicated {duplicated}, \
         out of order {disordered}",
        case.system()
    );
    assert_eq!((lost, duplicated, disordered), (0, 0, 0));
    // The operator sees the same.
    let metrics = crate::hostile::metrics(addr).await;
    let system = case.system();
    let sample = |name: &str| sample(&metrics, name, system);
    assert_eq!(sample("switchboard_sessions"), CLIENTS as u64);
    assert_eq!(sample("switchboard_sessions_resumed_total"), CLIENTS as u64);
    assert_eq!(sample("switchboard_recovered_total"), CLIENTS as u64);
    assert_eq!(sample("switchboard_replayed_total"), replayed);
    assert_eq!(sample("switchboard_kept_publications_total"), PUBLICATIONS);
    assert_eq!(sample("switchboard_history_entries"), PUBLICATIONS);
    assert_eq!(sample("switchboard_history_streams"), case.lanes() as u64);
    assert_eq!(sample("switchboard_gaps_total"), 0);
    server.shutdown().await.unwrap();
}

/// The value of `name{system="<system>"}` in a `/metrics` text.
fn sample(metrics: &str, name: &str, system: &str) -> u64 {
    let prefix = format!("{name}{{system=\"{system}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in /metrics"))
        .parse()
        .unwrap()
}

fn seed() -> u64 {
    let seed = std::env::var("SB_RESUME_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("SB_RESUME_SEED={seed}");
    seed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn laptimes_clients_resume_without_loss() {
    every_client_resumes(Case::Laptimes, seed()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn afc_clients_resume_without_loss() {
    every_client_resumes(Case::Afc, seed()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn race_clients_resume_without_loss() {
    every_client_resumes(Case::Race, seed()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collab_clients_resume_without_loss() {
    every_client_resumes(Case::Collab, seed()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcdock_clients_resume_without_loss() {
    every_client_resumes(Case::Dcdock, seed()).await;
}

/// A client away for longer than the history (5 publications here) is told so, with the
/// current position, and continues live from it.
#[tokio::test]
async fn a_client_beyond_the_history_is_told_it_did_not_recover() {
    for case in [
        Case::Laptimes,
        Case::Afc,
        Case::Race,
        Case::Collab,
        Case::Dcdock,
    ] {
        let server = start_with(case.system(), history(5), options()).await;
        let addr = server.local_addr();
        let stream = &case.stream(0);
        // Laptimes notices travel over a socket: an observer tells when they were relayed.
        let (mut laptimes, mut observer) = match case {
            Case::Laptimes => (
                Some(crate::support::connect(addr, "/").await),
                Some(crate::support::connect(addr, "/").await),
            ),
            _ => (None, None),
        };
        let mut seen = Seen::default();
        let mut ws = join(addr, case, 0, &mut seen).await;
        case.publish_to(addr, 1, 0, &mut laptimes).await;
        let deadline = Instant::now() + WAIT;
        let got = read_until(&mut ws, &mut seen, stream, deadline, |s| s.offsets == [1]).await;
        assert!(got, "{case:?}: the first publication arrived");
        drop(ws);
        for n in 2..=12 {
            case.publish_to(addr, n, 0, &mut laptimes).await;
        }
        if let Some(observer) = &mut observer {
            for _ in 1..=12 {
                crate::support::next_text(observer).await;
            }
        }
        let mut ws = join(addr, case, 0, &mut seen).await;
        let (recovered, _, reason) = seen.subscriptions.last().unwrap().clone();
        assert_eq!(recovered, Some(false), "{case:?}");
        assert_eq!(reason.as_deref(), Some("trimmed"), "{case:?}");
        assert_eq!(
            seen.position.as_ref().unwrap().1,
            12,
            "{case:?}: told the top"
        );
        assert_eq!(seen.offsets, [1], "{case:?}: nothing replayed past a hole");
        case.publish_to(addr, 13, 0, &mut laptimes).await;
        let deadline = Instant::now() + WAIT;
        let live = read_until(&mut ws, &mut seen, stream, deadline, |s| {
            s.offsets == [1, 13]
        })
        .await;
        assert!(
            live,
            "{case:?}: live from the top after: {:?}",
            seen.offsets
        );
        server.shutdown().await.unwrap();
    }
}

/// A v2 laptimes notice sent with an id is acked with its position; resent on a new connection
/// of the same session it is answered with the same position and relayed once.
#[tokio::test]
async fn a_resent_notice_is_relayed_once() {
    let server = start_with("laptimes", history(1000), options()).await;
    let addr = server.local_addr();
    let mut other = crate::support::connect(addr, "/").await;
    let mut a = connect_v2(addr, "/").await;
    let session = loop {
        let v: Value = serde_json::from_str(&crate::support::next_text(&mut a).await).unwrap();
        if v["sb"] == "session" {
            break v["session"].as_str().unwrap().to_owned();
        }
    };
    let notice = json!({"table": "times", "operation": "CHANGE"});
    let frame = json!({"sb": "msg", "id": "n-1", "msg": notice}).to_string();
    a.send(Message::text(frame.clone())).await.unwrap();
    let first = ack(&mut a).await;
    assert_eq!(first["id"], "n-1");
    assert_eq!(first["stream"], "all");
    assert_eq!(
        crate::support::next_text(&mut other).await,
        notice.to_string()
    );
    drop(a);
    let mut b = connect_v2(addr, &format!("/?sb_session={session}")).await;
    b.send(Message::text(frame)).await.unwrap();
    let again = ack(&mut b).await;
    assert_eq!(again["duplicate"], true);
    assert_eq!(
        (&again["epoch"], &again["offset"]),
        (&first["epoch"], &first["offset"])
    );
    crate::support::assert_quiet(&mut other).await;
    server.shutdown().await.unwrap();
}

/// The next `ack` frame.
async fn ack(ws: &mut Ws) -> Value {
    loop {
        let v: Value = serde_json::from_str(&crate::support::next_text(ws).await).unwrap();
        if v["sb"] == "ack" {
            return v;
        }
    }
}

/// `Idempotency-Key` on an HTTP publish: the same request again is answered again and not
/// published; another request under the key is refused; a malformed key is refused from the
/// headers, before any body.
#[tokio::test]
async fn an_idempotent_publish_is_published_once() {
    let server = start_with("afc", history(1000), options()).await;
    let addr = server.local_addr();
    let mut ws = crate::support::connect(addr, "/ws").await;
    let post = |key: &'static str, body: &'static str| {
        let headers = [
            ("Content-Type", "application/json"),
            ("X-API-Key", API_KEY),
            ("Idempotency-Key", key),
        ];
        async move { http::post(addr, "/events/lap-created", &headers, body).await }
    };
    let first = post("k-1", r#"{"n":1}"#).await;
    assert_eq!(first.status, 204);
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = post("k-1", r#"{"n":1}"#).await;
    assert_eq!(again.status, 204);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let other = post("k-1", r#"{"n":2}"#).await;
    assert_eq!(other.status, 422, "{}", other.text());
    assert_eq!(
        crate::support::next_text(&mut ws).await,
        r#"{"type":"lap:created","payload":{"n":1}}"#
    );
    crate::support::assert_quiet(&mut ws).await;
    // Another key publishes.
    assert_eq!(post("k-2", r#"{"n":1}"#).await.status, 204);
    assert_eq!(
        crate::support::next_text(&mut ws).await,
        r#"{"type":"lap:created","payload":{"n":1}}"#
    );
    // A malformed key: 400 at once, though the declared body never comes.
    let head = format!(
        "POST /events/lap-created HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {API_KEY}\r\n\
         Idempotency-Key: {}\r\nContent-Length: 100000\r\n\r\n",
        "k".repeat(129)
    );
    let refused = http::raw(addr, head.as_bytes()).await;
    assert_eq!(refused.status, 400);
    assert!(
        refused.text().contains("Idempotency-Key"),
        "{}",
        refused.text()
    );
    // Without the key's authority (a wrong API key), a known key gets nothing back.
    let headers = [("X-API-Key", "wrong"), ("Idempotency-Key", "k-1")];
    let r = http::post(addr, "/events/lap-created", &headers, r#"{"n":1}"#).await;
    assert_eq!(r.status, 401);
    server.shutdown().await.unwrap();
}
