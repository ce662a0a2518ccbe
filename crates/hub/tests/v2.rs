//! Protocol v2 on the hub, without sockets: sessions, positions, resume, acks, resends, gaps.
//!
//! The hub runs a small protocol defined here (`Notes`) and the in-memory history engine;
//! a [`Net`] drives both the way a runtime does, except that it can hold the engine's answers
//! back to show what happens while a fetch or an append is in flight.
//!
//! `Notes` is described in `notes/mod.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use switchboard_hub::history::{Entry, FetchId, HistoryLimits, MemoryHistory};
use switchboard_hub::{
    CloseCode, Config, ConnectionHandle, Dialect, Frame, HistoryConfig, Hub, Identity, Instant,
    Limits, OpenError, OpenInfo, Output, Position, SlowConsumerPolicy, Text,
};

const T0: Instant = Instant::from_millis(1_000_000);

mod notes;
use notes::Notes;

/// The hub, its history engine, and what each connection received.
struct Net {
    hub: Hub<Notes>,
    history: MemoryHistory,
    now: Instant,
    /// Answer the engine's requests at once (else they wait in `appends` and `fetches`).
    auto_append: bool,
    auto_fetch: bool,
    /// Report every transmit flushed at once.
    flush: bool,
    appends: Vec<(String, Arc<Entry>)>,
    fetches: Vec<(FetchId, String, Option<Position>)>,
    inbox: HashMap<ConnectionHandle, Vec<Value>>,
    v1: Vec<ConnectionHandle>,
    unflushed: HashMap<ConnectionHandle, usize>,
    closed: Vec<(ConnectionHandle, CloseCode)>,
}

fn history_config() -> HistoryConfig {
    HistoryConfig {
        session_ttl: Duration::from_secs(60),
        ..HistoryConfig::with_seed([7; 32])
    }
}

impl Net {
    fn new() -> Self {
        Self::with(
            Config {
                history: Some(history_config()),
                ..Config::default()
            },
            HistoryLimits::default(),
        )
    }

    /// A v1 publisher, and a v2 client that got its session and its position in `all`, then
    /// dropped its socket: (the publisher, the session, `all~<epoch>~<offset>`).
    fn away(&mut self) -> (ConnectionHandle, String, String) {
        let v1 = self.open_v1();
        let a = self.open(&[]);
        let fa = self.take(a);
        let (session, position) = (session_of(&fa), since(&fa, "all"));
        self.drop_conn(a);
        (v1, session, position)
    }

    /// With history and an outbound budget of `max` bytes under `policy`.
    fn with_queue(max: usize, policy: SlowConsumerPolicy) -> Self {
        let config = Config {
            limits: Limits {
                max_queued_bytes: max,
                slow_consumer: policy,
                ..Limits::default()
            },
            history: Some(history_config()),
            ..Config::default()
        };
        Self::with(config, HistoryLimits::default())
    }

    fn with(config: Config, limits: HistoryLimits) -> Self {
        Net {
            hub: Hub::new(config, Notes, T0),
            history: MemoryHistory::new(limits, 1),
            now: T0,
            auto_append: true,
            auto_fetch: true,
            flush: true,
            appends: Vec::new(),
            fetches: Vec::new(),
            inbox: HashMap::new(),
            v1: Vec::new(),
            unflushed: HashMap::new(),
            closed: Vec::new(),
        }
    }

    fn pump(&mut self) {
        while let Some(out) = self.hub.poll_output() {
            for out in out.split() {
                match out {
                    Output::Transmit {
                        connection,
                        payload,
                    } => {
                        let v: Value = serde_json::from_slice(&payload).expect("frames are JSON");
                        self.inbox.entry(connection).or_default().push(v);
                        if self.flush {
                            let _ = self.hub.handle_flushed(self.now, connection, payload.len());
                        } else {
                            *self.unflushed.entry(connection).or_default() += payload.len();
                        }
                    }
                    Output::Append { stream, entry } => {
                        if self.auto_append {
                            let p = self.history.append(self.now, &stream, entry);
                            self.hub
                                .handle_appended(self.now, &stream, Ok(p))
                                .expect("in order");
                        } else {
                            self.appends.push((stream, entry));
                        }
                    }
                    Output::Fetch { id, stream, since } => {
                        if self.auto_fetch {
                            let f = self.history.fetch(self.now, &stream, since);
                            self.hub.handle_fetched(self.now, id, Ok(f));
                        } else {
                            self.fetches.push((id, stream, since));
                        }
                    }
                    Output::Close {
                        connection, code, ..
                    } => self.closed.push((connection, code)),
                    _ => {}
                }
            }
        }
    }

    /// Answer the appends held back, in order.
    fn release_appends(&mut self) {
        for (stream, entry) in std::mem::take(&mut self.appends) {
            let p = self.history.append(self.now, &stream, entry);
            self.hub.handle_appended(self.now, &stream, Ok(p)).unwrap();
            self.pump();
        }
    }

    /// Answer the fetches held back, last asked first.
    fn release_fetches(&mut self) {
        while let Some((id, stream, since)) = self.fetches.pop() {
            let f = self.history.fetch(self.now, &stream, since);
            self.hub.handle_fetched(self.now, id, Ok(f));
            self.pump();
        }
    }

    /// Report everything written to `conn` flushed.
    fn drain(&mut self, conn: ConnectionHandle) {
        let bytes = self.unflushed.remove(&conn).unwrap_or(0);
        let _ = self.hub.handle_flushed(self.now, conn, bytes);
        self.pump();
    }

    fn open(&mut self, query: &[(&str, &str)]) -> ConnectionHandle {
        self.open_as(query, None)
    }

    fn open_as(&mut self, query: &[(&str, &str)], user: Option<&str>) -> ConnectionHandle {
        let info = OpenInfo {
            path: "/".into(),
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            identity: user.map(Identity::user),
            dialect: Dialect::V2,
            receive_only: false,
        };
        let h = self.hub.handle_open(self.now, info).expect("opens");
        self.pump();
        h
    }

    fn open_v1(&mut self) -> ConnectionHandle {
        let h = self
            .hub
            .handle_open(self.now, OpenInfo::default())
            .expect("opens");
        self.v1.push(h);
        self.pump();
        h
    }

    fn send(&mut self, conn: ConnectionHandle, frame: Value) {
        let text = Text::from(frame.to_string());
        self.hub
            .handle_frame(self.now, conn, Frame::Text(text))
            .unwrap();
        self.pump();
    }

    /// A v2 message with an id.
    fn say(&mut self, conn: ConnectionHandle, id: &str, cmd: &str) {
        self.send(conn, json!({"sb": "msg", "id": id, "msg": cmd}));
    }

    /// A message without an id (a v1 frame from a v1 connection).
    fn tell(&mut self, conn: ConnectionHandle, cmd: &str) {
        if self.v1.contains(&conn) {
            self.send(conn, json!(cmd));
        } else {
            self.send(conn, json!({"sb": "msg", "msg": cmd}));
        }
    }

    fn drop_conn(&mut self, conn: ConnectionHandle) {
        self.hub.handle_close(self.now, conn).unwrap();
        self.pump();
    }

    fn take(&mut self, conn: ConnectionHandle) -> Vec<Value> {
        self.inbox.remove(&conn).unwrap_or_default()
    }

    /// The `pub` frames `conn` received: (stream, offset, message).
    fn pubs(&mut self, conn: ConnectionHandle) -> Vec<(String, u64, String)> {
        self.take(conn)
            .into_iter()
            .filter(|v| v["sb"] == "pub")
            .map(|v| {
                (
                    v["stream"].as_str().unwrap().to_string(),
                    v["offset"].as_u64().unwrap(),
                    v["msg"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    fn advance(&mut self, by: Duration) {
        self.now = self.now + by;
        self.hub.handle_timeout(self.now);
        self.history.handle_timeout(self.now);
        self.pump();
    }
}

fn session_of(frames: &[Value]) -> String {
    frames[0]["session"].as_str().expect("session first").into()
}

fn kinds(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .map(|v| v["sb"].as_str().unwrap().to_string())
        .collect()
}

/// `stream~epoch~offset` of the latest `pub` or `subscribed` frame of `stream`.
fn since(frames: &[Value], stream: &str) -> String {
    let v = frames
        .iter()
        .rev()
        .find(|v| (v["sb"] == "pub" || v["sb"] == "subscribed") && v["stream"] == stream)
        .expect("a position of the stream");
    format!(
        "{stream}~{}~{}",
        v["epoch"].as_str().unwrap(),
        v["offset"].as_u64().unwrap()
    )
}

#[test]
fn a_v2_connection_gets_its_session_then_its_greeting_then_the_system_stream() {
    let mut net = Net::new();
    let a = net.open(&[]);
    let frames = net.take(a);
    assert_eq!(kinds(&frames), ["session", "msg", "subscribed"]);
    assert_eq!(frames[0]["resumed"], false);
    assert_eq!(frames[0]["session"].as_str().unwrap().len(), 32);
    assert_eq!(frames[1]["msg"], "hello");
    assert_eq!(frames[2]["stream"], "all");
    assert_eq!(frames[2]["offset"], 0);
    assert!(frames[2].get("recovered").is_none(), "fresh, not a resume");
    let b = net.open(&[]);
    assert_ne!(
        session_of(&net.take(b)),
        session_of(&frames),
        "sessions differ"
    );
}

#[test]
fn v1_connections_get_exactly_the_v1_bytes_and_v2_ones_get_positions() {
    let mut net = Net::new();
    let v1 = net.open_v1();
    let a = net.open(&[]);
    let b = net.open(&[]);
    net.take(v1);
    net.take(a);
    net.take(b);
    net.say(a, "m1", "afirst");
    assert_eq!(net.take(v1), [json!("first")], "the v1 frame, unwrapped");
    assert_eq!(net.pubs(b), [("all".to_string(), 1, "first".to_string())]);
    let ack = net.take(a);
    assert_eq!(
        ack.len(),
        1,
        "the sender gets its ack, not its own note: {ack:?}"
    );
    assert_eq!(ack[0]["sb"], "ack");
    assert_eq!(ack[0]["id"], "m1");
    assert_eq!(
        (ack[0]["stream"].as_str(), ack[0]["offset"].as_u64()),
        (Some("all"), Some(1))
    );
    net.tell(v1, "asecond");
    assert_eq!(net.pubs(a), [("all".to_string(), 2, "second".to_string())]);
    assert_eq!(net.pubs(b), [("all".to_string(), 2, "second".to_string())]);
    assert!(net.take(v1).is_empty(), "v1 sender excluded as always");
    // A reply (not kept) goes as `msg`, with `re` when it answers a message with an id.
    net.say(a, "m2", "eping");
    let frames = net.take(a);
    assert_eq!(frames[0], json!({"sb": "msg", "re": "m2", "msg": "ping"}));
    assert_eq!(frames[1], json!({"sb": "ack", "id": "m2"}));
    net.tell(a, "epong");
    assert_eq!(net.take(a), [json!({"sb": "msg", "msg": "pong"})]);
}

#[test]
fn a_resumed_client_gets_what_it_missed_once_in_order_and_never_its_own() {
    let mut net = Net::new();
    let a = net.open(&[]);
    let b = net.open(&[]);
    let fa = net.take(a);
    let fb = net.take(b);
    net.say(a, "1", "aone");
    let fb: Vec<Value> = fb.into_iter().chain(net.take(b)).collect();
    let (sa, sb) = (session_of(&fa), session_of(&fb));
    let b_since = since(&fb, "all");
    net.take(a);
    net.drop_conn(b);
    net.drop_conn(a);
    // While both are away: one from a v1 client, then a resumes and publishes two more.
    let v1 = net.open_v1();
    net.tell(v1, "atwo");
    let a_since = "all~".to_string() + b_since.split('~').nth(1).unwrap() + "~1";
    let a2 = net.open(&[("sb_session", &sa), ("sb_since", &a_since)]);
    let frames = net.take(a2);
    assert_eq!(frames[0]["resumed"], true);
    assert_eq!(
        net_pubs(&frames),
        [(2, "two".into())],
        "its own note is not replayed"
    );
    let sub = frames.iter().find(|v| v["sb"] == "subscribed").unwrap();
    assert_eq!(
        (sub["recovered"].as_bool(), sub["replayed"].as_u64()),
        (Some(true), Some(1))
    );
    net.say(a2, "2", "athree");
    net.say(a2, "3", "afour");
    let b2 = net.open(&[("sb_session", &sb), ("sb_since", &b_since)]);
    let frames = net.take(b2);
    assert_eq!(
        kinds(&frames),
        ["session", "msg", "pub", "pub", "pub", "subscribed"]
    );
    assert_eq!(
        net_pubs(&frames),
        [(2, "two".into()), (3, "three".into()), (4, "four".into())]
    );
    assert_eq!(frames.last().unwrap()["offset"], 4);
    assert_eq!(frames.last().unwrap()["replayed"], 3);
    let stats = net.hub.stats();
    assert_eq!(stats.counters.resumed, 2);
    assert_eq!(stats.counters.sessions_resumed, 2);
    assert_eq!(stats.counters.replayed, 4);
}

fn net_pubs(frames: &[Value]) -> Vec<(u64, String)> {
    frames
        .iter()
        .filter(|v| v["sb"] == "pub")
        .map(|v| {
            (
                v["offset"].as_u64().unwrap(),
                v["msg"].as_str().unwrap().into(),
            )
        })
        .collect()
}

#[test]
fn outside_the_window_the_client_is_told_it_did_not_recover() {
    let limits = HistoryLimits {
        max_entries: 2,
        ..HistoryLimits::default()
    };
    let config = Config {
        history: Some(history_config()),
        ..Config::default()
    };
    let mut net = Net::with(config, limits);
    let (v1, sa, position) = net.away();
    for i in 0..3 {
        net.tell(v1, &format!("a{i}"));
    }
    let a2 = net.open(&[("sb_session", &sa), ("sb_since", &position)]);
    let frames = net.take(a2);
    let sub = frames.iter().find(|v| v["sb"] == "subscribed").unwrap();
    assert_eq!(sub["recovered"], false);
    assert_eq!(sub["reason"], "trimmed");
    assert_eq!(sub["offset"], 3, "the current position, to carry on from");
    assert!(net_pubs(&frames).is_empty(), "no partial replay");
    // A position from another history (the server restarted) is told so, too.
    let stale = "all~00000000000000ff~1";
    net.drop_conn(a2);
    let a3 = net.open(&[("sb_session", &sa), ("sb_since", stale)]);
    let frames = net.take(a3);
    let sub = frames.iter().find(|v| v["sb"] == "subscribed").unwrap();
    assert_eq!(sub["reason"], "epoch");
    assert_eq!(net.hub.stats().counters.not_recovered, 2);
    // Live delivery carries on for both.
    net.tell(v1, "anew");
    assert_eq!(net.pubs(a3), [("all".into(), 4, "new".into())]);
}

#[test]
fn publications_during_a_fetch_are_held_and_never_doubled() {
    let mut net = Net::new();
    let (v1, sa, position) = net.away();
    net.tell(v1, "a1");
    net.tell(v1, "a2");
    net.auto_fetch = false;
    let a2 = net.open(&[("sb_session", &sa), ("sb_since", &position)]);
    assert_eq!(net.fetches.len(), 1, "a fetch in flight");
    net.tell(v1, "a3"); // Held: published after the fetch was asked, before it was answered.
    assert!(
        net_pubs(&net.inbox[&a2]).is_empty(),
        "nothing live before the replay"
    );
    net.release_fetches(); // The answer includes 3 (the engine has it): held 3 is not sent twice.
    net.tell(v1, "a4");
    let frames = net.take(a2);
    assert_eq!(
        net_pubs(&frames),
        [
            (1, "1".into()),
            (2, "2".into()),
            (3, "3".into()),
            (4, "4".into())
        ]
    );
    let at = frames.iter().position(|v| v["sb"] == "subscribed").unwrap();
    assert_eq!(frames[at]["offset"], 3);
    assert_eq!(
        net_pubs(&frames[at..]),
        [(4, "4".into())],
        "live after the marker"
    );
}

#[test]
fn a_fetch_answered_before_a_held_append_keeps_order() {
    // The engine answers the fetch (top 1) while an append is still waiting for its position.
    let mut net = Net::new();
    let (v1, sa, position) = net.away();
    net.tell(v1, "a1");
    net.auto_append = false;
    net.tell(v1, "a2");
    let a2 = net.open(&[("sb_session", &sa), ("sb_since", &position)]);
    net.release_appends();
    let frames = net.take(a2);
    assert_eq!(net_pubs(&frames), [(1, "1".into()), (2, "2".into())]);
}

#[test]
fn a_resend_is_acked_with_the_original_position_and_published_once() {
    let mut net = Net::new();
    let b = net.open(&[]);
    let a = net.open(&[]);
    let sa = session_of(&net.take(a));
    net.take(b);
    net.say(a, "n-1", "ahello");
    let first = net.take(a);
    net.drop_conn(a); // The client did not see its ack, say.
    let a2 = net.open(&[("sb_session", &sa)]);
    net.take(a2);
    net.say(a2, "n-1", "ahello");
    let again = net.take(a2);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["duplicate"], true);
    assert_eq!(again[0]["offset"], first[0]["offset"]);
    assert_eq!(net.pubs(b).len(), 1, "published once");
    assert_eq!(net.history.stats().entries, 1);
    assert_eq!(net.hub.stats().counters.duplicates, 1);
    // While the first is still waiting for its position, a resend is not processed either;
    // the one ack goes to the session's connection when the position comes.
    net.auto_append = false;
    net.say(a2, "n-2", "asecond");
    net.drop_conn(a2);
    let a3 = net.open(&[("sb_session", &sa)]);
    net.take(a3);
    net.say(a3, "n-2", "asecond");
    assert!(net.take(a3).is_empty());
    net.release_appends();
    let acks = net.take(a3);
    assert_eq!(acks.len(), 1);
    assert_eq!(
        (acks[0]["id"].as_str(), acks[0]["offset"].as_u64()),
        (Some("n-2"), Some(2))
    );
    assert_eq!(net.pubs(b).len(), 1);
}

#[test]
fn a_live_client_that_misses_publications_is_told_the_range() {
    let mut net = Net::with_queue(200, SlowConsumerPolicy::Drop);
    let v1 = net.open_v1();
    let a = net.open(&[]);
    net.take(a);
    net.flush = false;
    for i in 1..=6 {
        net.tell(v1, &format!("a{}", "x".repeat(40 + i)));
    }
    let got = net_pubs(&net.take(a));
    assert!(
        !got.is_empty() && got.len() < 6,
        "some fit, some did not: {got:?}"
    );
    net.drain(a);
    let frames = net.take(a);
    let gap = frames
        .iter()
        .find(|v| v["sb"] == "gap")
        .expect("told at once when room came");
    assert_eq!(gap["from"], got.len() as u64 + 1);
    assert_eq!(gap["to"], 6);
    assert_eq!(net.hub.stats().counters.gaps, 1);
    // The next publication follows the gap report.
    net.tell(v1, "aafter");
    assert_eq!(net_pubs(&net.take(a)), [(7, "after".into())]);
}

#[test]
fn a_replay_larger_than_the_queue_goes_out_as_it_drains() {
    let mut net = Net::with_queue(300, SlowConsumerPolicy::Close);
    let (v1, sa, position) = net.away();
    for i in 0..20 {
        net.tell(v1, &format!("a{i:02}{}", "y".repeat(50)));
    }
    net.flush = false;
    let a2 = net.open(&[("sb_session", &sa), ("sb_since", &position)]);
    let mut all = net.take(a2);
    let first = net_pubs(&all).len();
    assert!(first > 0 && first < 20, "a first window: {first}");
    for _ in 0..40 {
        net.drain(a2);
        all.extend(net.take(a2));
    }
    let offsets: Vec<u64> = net_pubs(&all).iter().map(|p| p.0).collect();
    assert_eq!(offsets, (1..=20).collect::<Vec<_>>());
    assert!(
        net.closed.is_empty(),
        "paced, not closed as a slow consumer"
    );
    assert_eq!(all.last().unwrap()["sb"], "subscribed");
}

/// The queue bound holds for v2 frames too (v1's rule: queued bytes never pass
/// `max_queued_bytes`). A kept publication larger than the whole bound can never be queued: a
/// replay skips it and reports it as a gap, after the `subscribed` frame, instead of stalling.
#[test]
fn a_publication_larger_than_the_queue_is_skipped_in_replay_and_reported() {
    let max = 300;
    let mut net = Net::with_queue(max, SlowConsumerPolicy::Close);
    let (v1, sa, position) = net.away();
    for i in 1..=6 {
        let pad = if i == 4 { 400 } else { 40 };
        net.tell(v1, &format!("a{i}{}", "z".repeat(pad)));
    }
    net.flush = false;
    let a2 = net.open(&[("sb_session", &sa), ("sb_since", &position)]);
    let mut all = Vec::new();
    for _ in 0..20 {
        let queued = net.hub.connection(a2).unwrap().queued_bytes;
        assert!(queued <= max, "{queued} bytes queued, over {max}");
        all.extend(net.take(a2));
        net.drain(a2);
    }
    all.extend(net.take(a2));
    let offsets: Vec<u64> = net_pubs(&all).iter().map(|p| p.0).collect();
    assert_eq!(offsets, [1, 2, 3, 5, 6]);
    let subscribed = all.iter().position(|v| v["sb"] == "subscribed").unwrap();
    assert_eq!(all[subscribed]["replayed"], 5);
    let gap = all
        .iter()
        .position(|v| v["sb"] == "gap")
        .expect("the skip is told");
    assert!(gap > subscribed);
    assert_eq!((&all[gap]["from"], &all[gap]["to"]), (&json!(4), &json!(4)));
    assert!(net.closed.is_empty());
}

#[test]
fn filters_and_user_targets_apply_to_replay_as_to_live_delivery() {
    let mut net = Net::new();
    let v1 = net.open_v1();
    let a = net.open_as(&[], Some("ann"));
    net.tell(a, "fdir=IB");
    let fa = net.take(a);
    let (sa, position) = (session_of(&fa), since(&fa, "all"));
    net.drop_conn(a);
    net.tell(v1, "tdir=IB:in");
    net.tell(v1, "tdir=OB:out");
    net.tell(v1, "dann:for ann");
    net.tell(v1, "dbob:for bob");
    let a2 = net.open_as(&[("sb_session", &sa), ("sb_since", &position)], Some("ann"));
    assert_eq!(
        net_pubs(&net.take(a2)),
        [(1, "in".into()), (3, "for ann".into())],
        "the filter came back with the session"
    );
    // Another user cannot take the session over.
    let c = net.open_as(&[("sb_session", &sa)], Some("eve"));
    let frames = net.take(c);
    assert_eq!(frames[0]["resumed"], false);
    assert_ne!(session_of(&frames), sa);
}

#[test]
fn room_streams_resume_on_join_with_the_position_given() {
    let mut net = Net::new();
    let a = net.open(&[]);
    let b = net.open(&[]);
    net.tell(a, "jproj-1");
    net.tell(b, "jproj-1");
    net.take(a);
    let fb = net.take(b);
    assert_eq!(kinds(&fb).last().unwrap(), "subscribed");
    net.tell(a, "rproj-1:x");
    net.tell(a, "pproj-1:presence");
    let fb: Vec<Value> = fb.into_iter().chain(net.take(b)).collect();
    let sb = session_of(&fb);
    assert_eq!(net_pubs(&fb), [(1, "x".into())]);
    assert!(
        fb.iter()
            .any(|v| v["sb"] == "msg" && v["msg"] == "presence"),
        "not kept, still sent"
    );
    let position = since(&fb, "proj-1");
    net.drop_conn(b);
    net.tell(a, "rproj-1:y");
    net.tell(a, "pproj-1:presence2");
    let b2 = net.open(&[("sb_session", &sb)]);
    net.take(b2);
    let (stream, rest) = position.split_once('~').unwrap();
    let (epoch, offset) = rest.split_once('~').unwrap();
    let since =
        json!([{"stream": stream, "epoch": epoch, "offset": offset.parse::<u64>().unwrap()}]);
    net.send(b2, json!({"sb": "msg", "since": since, "msg": "jproj-1"}));
    let frames = net.take(b2);
    assert_eq!(
        net_pubs(&frames),
        [(2, "y".into())],
        "presence is not replayed"
    );
    assert_eq!(frames.last().unwrap()["recovered"], true);
    // Leaving the room ends the stream for it.
    net.tell(b2, "lproj-1");
    net.tell(a, "rproj-1:z");
    assert!(net_pubs(&net.take(b2)).is_empty());
}

/// A connection that leaves a room and joins it again presents the position it was given on
/// this connection: honoured, though its session is a fresh one (not resumed). A fresh
/// connection presenting a position it did not get in its session is not (reason `session`).
#[test]
fn a_rejoin_on_the_same_connection_recovers_from_its_own_position() {
    let mut net = Net::new();
    let a = net.open(&[]);
    let b = net.open(&[]);
    net.tell(a, "jroom");
    net.tell(b, "jroom");
    net.take(b);
    net.tell(a, "rroom:x");
    let position = since(&net.take(b), "room");
    net.tell(b, "lroom");
    net.tell(a, "rroom:y");
    net.tell(a, "rroom:z");
    let (stream, rest) = position.split_once('~').unwrap();
    let (epoch, offset) = rest.split_once('~').unwrap();
    let since =
        json!([{"stream": stream, "epoch": epoch, "offset": offset.parse::<u64>().unwrap()}]);
    net.send(
        b,
        json!({"sb": "msg", "since": since.clone(), "msg": "jroom"}),
    );
    let frames = net.take(b);
    assert_eq!(net_pubs(&frames), [(2, "y".into()), (3, "z".into())]);
    assert_eq!(frames.last().unwrap()["recovered"], true);
    // A new connection with a new session cannot use it.
    let c = net.open(&[]);
    net.take(c);
    net.send(c, json!({"sb": "msg", "since": since, "msg": "jroom"}));
    let frames = net.take(c);
    assert!(net_pubs(&frames).is_empty());
    assert_eq!(frames.last().unwrap()["reason"], "session");
}

#[test]
fn resuming_a_session_still_connected_closes_the_old_connection() {
    let mut net = Net::new();
    let a = net.open(&[]);
    let sa = session_of(&net.take(a));
    let a2 = net.open(&[("sb_session", &sa)]);
    assert_eq!(net.take(a2)[0]["resumed"], true);
    assert_eq!(net.closed, [(a, CloseCode::SESSION_TAKEN_OVER)]);
    assert_eq!(net.hub.stats().sessions, 1);
}

#[test]
fn sessions_outlive_their_connection_for_the_ttl_only() {
    let mut net = Net::new();
    let a = net.open(&[]);
    let sa = session_of(&net.take(a));
    net.drop_conn(a);
    assert_eq!(net.hub.stats().sessions, 1);
    net.advance(Duration::from_secs(30));
    let a2 = net.open(&[("sb_session", &sa)]);
    assert_eq!(net.take(a2)[0]["resumed"], true);
    net.drop_conn(a2);
    assert!(net.hub.poll_timeout().is_some());
    net.advance(Duration::from_secs(61));
    assert_eq!(net.hub.stats().sessions, 0);
    let a3 = net.open(&[("sb_session", &sa)]);
    assert_eq!(net.take(a3)[0]["resumed"], false);
}

#[test]
fn detached_sessions_are_bounded() {
    let config = Config {
        history: Some(HistoryConfig {
            max_detached_sessions: 3,
            ..history_config()
        }),
        ..Config::default()
    };
    let mut net = Net::with(config, HistoryLimits::default());
    for _ in 0..10 {
        let c = net.open(&[]);
        net.drop_conn(c);
    }
    assert_eq!(net.hub.stats().sessions, 3);
}

/// What detached sessions hold (their message ids) is bounded in bytes as well as in count:
/// sessions full of long ids make the oldest go first.
#[test]
fn detached_sessions_are_bounded_in_bytes_too() {
    let config = Config {
        history: Some(HistoryConfig {
            max_detached_bytes: 4000,
            ..history_config()
        }),
        ..Config::default()
    };
    let mut net = Net::with(config, HistoryLimits::default());
    let mut sessions = Vec::new();
    for c in 0..5 {
        let a = net.open(&[]);
        sessions.push(session_of(&net.take(a)));
        for i in 0..20 {
            // A 60-byte id each: about 2.7 KB a session, so one fits the 4000-byte budget.
            net.say(a, &format!("{c:02}{i:02}{}", "i".repeat(56)), "ehi");
        }
        net.drop_conn(a);
    }
    assert_eq!(net.hub.stats().sessions, 1);
    let last = net.open(&[("sb_session", &sessions[4])]);
    assert_eq!(net.take(last)[0]["resumed"], true, "the newest is kept");
    let first = net.open(&[("sb_session", &sessions[0])]);
    assert_eq!(
        net.take(first)[0]["resumed"],
        false,
        "the oldest went first"
    );
}

#[test]
fn a_bad_envelope_gets_an_error_to_its_sender_alone() {
    let mut net = Net::new();
    let a = net.open(&[]);
    let b = net.open(&[]);
    net.take(a);
    net.take(b);
    for bad in [
        json!({"sb": "pub", "msg": "x"}),
        json!({"msg": "aX"}),
        json!("aX"),
    ] {
        net.send(a, bad);
        let frames = net.take(a);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0]["sb"], "error");
        assert!(frames[0]["error"].as_str().unwrap().len() <= 130);
    }
    assert!(net.take(b).is_empty());
    assert_eq!(net.hub.stats().counters.errors["bad_envelope"], 3);
}

#[test]
fn bad_positions_in_the_upgrade_are_counted_and_ignored() {
    let mut net = Net::new();
    let a = net.open(&[("sb_since", "nonsense"), ("sb_session", "zz")]);
    let frames = net.take(a);
    assert_eq!(frames[0]["resumed"], false);
    assert_eq!(kinds(&frames).last().unwrap(), "subscribed");
    assert_eq!(net.hub.stats().counters.errors["bad_since"], 1);
}

#[test]
fn v2_needs_a_hub_with_history() {
    let mut hub = Hub::new(Config::default(), Notes, T0);
    let info = OpenInfo {
        dialect: Dialect::V2,
        ..OpenInfo::default()
    };
    assert_eq!(hub.handle_open(T0, info), Err(OpenError::V2WithoutHistory));
}

#[test]
fn an_unexpected_append_answer_is_a_caller_error() {
    let mut net = Net::new();
    let p = Position {
        epoch: switchboard_hub::Epoch(1),
        offset: 1,
    };
    assert!(net.hub.handle_appended(T0, "all", Ok(p)).is_err());
    // A fetch answer nobody waits for is ignored.
    let f = net.history.fetch(T0, "all", None);
    net.hub.handle_fetched(T0, FetchId(99), Ok(f));
    net.pump();
}

#[test]
fn positions_without_their_session_are_not_honoured() {
    // Exclusion and filters live in the session: a position presented without it cannot be
    // replayed faithfully, so the client is told to refetch.
    let mut net = Net::new();
    let (v1, _, position) = net.away();
    net.tell(v1, "a1");
    let a2 = net.open(&[
        ("sb_since", &position),
        ("sb_session", "0123456789abcdef0123456789abcdef"),
    ]);
    let frames = net.take(a2);
    assert_eq!(frames[0]["resumed"], false);
    let sub = frames.iter().find(|v| v["sb"] == "subscribed").unwrap();
    assert_eq!(
        (sub["recovered"].as_bool(), sub["reason"].as_str()),
        (Some(false), Some("session"))
    );
    assert!(net_pubs(&frames).is_empty());
}
