//! A shared history on a cluster, without sockets: several hubs with
//! [`HistoryConfig::shared`], one history engine between them standing for Redis, and a channel
//! per node that carries every appended publication with its position, in offset order, and
//! can lose some (a subscription re-established, a full queue).
//!
//! What must hold: every v2 client on every node gets each stream's publications in offset
//! order, each once, never its own; a publication a node's channel lost is fetched from the
//! history, or reported as a gap when the history no longer has it; a client resumes on
//! another node from its position; a history started afresh tells its clients they did not
//! recover.

mod notes;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use notes::Notes;
use serde_json::{json, Value};
use switchboard_hub::history::{Audience, Entry, HistoryError, HistoryLimits, MemoryHistory};
use switchboard_hub::{
    Config, ConnectionHandle, Dialect, Frame, HistoryConfig, Hub, Instant, OpenInfo, Output,
    Position, Publication, Target, Text,
};

const T0: Instant = Instant::from_millis(1_000_000);

/// What a node's channel carries: the publication's entry at its position, and which node
/// appended it.
type Carried = (String, Arc<Entry>, Position, usize);

struct Cluster {
    nodes: Vec<Hub<Notes>>,
    history: MemoryHistory,
    channels: Vec<VecDeque<Carried>>,
    /// Per node, how many of the next channel messages are lost.
    lose: Vec<usize>,
    /// Answer fetches `unavailable` (the history's connection is down).
    unavailable: bool,
    now: Instant,
    inbox: HashMap<(usize, ConnectionHandle), Vec<Value>>,
}

impl Cluster {
    fn new(nodes: usize, limits: HistoryLimits) -> Self {
        let hubs = (0..nodes)
            .map(|i| {
                let history = HistoryConfig {
                    shared: true,
                    ..HistoryConfig::with_seed([i as u8 + 1; 32])
                };
                let config = Config {
                    history: Some(history),
                    replicate: true,
                    ..Config::default()
                };
                Hub::new(config, Notes, T0)
            })
            .collect();
        Cluster {
            nodes: hubs,
            history: MemoryHistory::new(limits, 42),
            channels: vec![VecDeque::new(); nodes],
            lose: vec![0; nodes],
            unavailable: false,
            now: T0,
            inbox: HashMap::new(),
        }
    }

    /// Drive node `n`'s outputs: appends go to the shared history and onto every channel.
    fn pump(&mut self, n: usize) {
        while let Some(out) = self.nodes[n].poll_output() {
            for out in out.split() {
                match out {
                    Output::Transmit {
                        connection,
                        payload,
                    } => {
                        let v: Value = serde_json::from_slice(&payload).expect("frames are JSON");
                        self.inbox.entry((n, connection)).or_default().push(v);
                        let _ = self.nodes[n].handle_flushed(self.now, connection, payload.len());
                    }
                    Output::Append { stream, entry } => {
                        let p = self.history.append(self.now, &stream, entry.clone());
                        self.nodes[n]
                            .handle_appended(self.now, &stream, Ok(p))
                            .expect("in order");
                        for channel in &mut self.channels {
                            channel.push_back((stream.clone(), entry.clone(), p, n));
                        }
                    }
                    Output::Fetch { id, stream, since } => {
                        let f = match self.unavailable {
                            true => Err(HistoryError::Unavailable),
                            false => Ok(self.history.fetch(self.now, &stream, since)),
                        };
                        self.nodes[n].handle_fetched(self.now, id, f);
                    }
                    Output::Replicate(p) => {
                        assert!(!p.kept, "a kept publication travels with its position");
                    }
                    _ => {}
                }
            }
        }
    }

    /// Deliver what every channel carries (losing what `lose` says), until all is quiet.
    fn settle(&mut self) {
        loop {
            for n in 0..self.nodes.len() {
                self.pump(n);
            }
            let Some(n) = (0..self.nodes.len()).find(|&n| !self.channels[n].is_empty()) else {
                return;
            };
            let (stream, entry, position, origin) = self.channels[n].pop_front().unwrap();
            if self.lose[n] > 0 {
                self.lose[n] -= 1;
                continue;
            }
            let target = match (&entry.audience, stream.as_str()) {
                (Audience::User(u), "all") => Target::User(u.clone()),
                (_, "all") => Target::All,
                (_, room) => Target::Room(room.to_string()),
            };
            let mut p = Publication::new(target, entry.payload.clone()).keep();
            p.tags = entry.tags.clone();
            self.nodes[n].handle_positioned(self.now, p, position, entry.publisher, origin == n);
        }
    }

    fn open(&mut self, n: usize, query: &[(&str, &str)]) -> ConnectionHandle {
        let info = OpenInfo {
            path: "/".into(),
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            identity: None,
            dialect: Dialect::V2,
            receive_only: false,
        };
        let h = self.nodes[n].handle_open(self.now, info).expect("opens");
        self.settle();
        h
    }

    fn open_v1(&mut self, n: usize) -> ConnectionHandle {
        let h = self.nodes[n]
            .handle_open(self.now, OpenInfo::default())
            .expect("opens");
        self.settle();
        h
    }

    /// Send `cmd` from a connection of node `n` (in a v2 envelope unless `v1`).
    fn tell(&mut self, n: usize, conn: ConnectionHandle, cmd: &str, v1: bool) {
        let frame = if v1 {
            json!(cmd)
        } else {
            json!({"sb": "msg", "msg": cmd})
        };
        let text = Text::from(frame.to_string());
        self.nodes[n]
            .handle_frame(self.now, conn, Frame::Text(text))
            .unwrap();
        self.pump(n);
    }

    fn take(&mut self, n: usize, conn: ConnectionHandle) -> Vec<Value> {
        self.inbox.remove(&(n, conn)).unwrap_or_default()
    }

    /// The `pub` frames of `stream` a connection received: (offset, message).
    fn pubs(frames: &[Value], stream: &str) -> Vec<(u64, String)> {
        frames
            .iter()
            .filter(|v| v["sb"] == "pub" && v["stream"] == stream)
            .map(|v| {
                (
                    v["offset"].as_u64().unwrap(),
                    v["msg"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

fn limits() -> HistoryLimits {
    HistoryLimits::default()
}

/// Two nodes: a v1 publisher on node 0, and a v2 reader on node 1 that has received `one` at
/// offset 1: (the cluster, the publisher, the reader, what the reader received so far).
fn one_published(
    limits: HistoryLimits,
) -> (Cluster, ConnectionHandle, ConnectionHandle, Vec<Value>) {
    let mut c = Cluster::new(2, limits);
    let publisher = c.open_v1(0);
    let reader = c.open(1, &[]);
    c.tell(0, publisher, "aone", true);
    c.settle();
    let frames = c.take(1, reader);
    assert_eq!(Cluster::pubs(&frames, "all"), [(1, "one".into())]);
    (c, publisher, reader, frames)
}

fn field<'a>(frames: &'a [Value], kind: &str) -> Vec<&'a Value> {
    frames.iter().filter(|v| v["sb"] == kind).collect()
}

/// Three nodes, two v2 clients and one v1 client on each, everyone publishing into the system
/// stream with channel deliveries interleaved: every v2 client gets offsets 1..=N but its own,
/// in order, once; every v1 client gets every other client's publications.
#[test]
fn every_node_delivers_every_publication_in_offset_order() {
    let mut c = Cluster::new(3, limits());
    let v2: Vec<(usize, ConnectionHandle)> = (0..6).map(|i| (i % 3, c.open(i % 3, &[]))).collect();
    let v1: Vec<(usize, ConnectionHandle)> = (0..3).map(|n| (n, c.open_v1(n))).collect();
    for &(n, h) in v2.iter().chain(&v1) {
        c.take(n, h);
    }
    // Publish from everyone, settling the channels only now and then, so that a node's own
    // appends and the others' arrive interleaved.
    let mut sent: HashMap<(usize, ConnectionHandle), Vec<String>> = HashMap::new();
    for round in 0..20 {
        for (i, &(n, h)) in v2.iter().chain(&v1).enumerate() {
            let text = format!("m{round}-{i}");
            c.tell(n, h, &format!("a{text}"), i >= v2.len());
            sent.entry((n, h)).or_default().push(text);
        }
        if round % 3 == 0 {
            c.settle();
        }
    }
    c.settle();
    let total = 20 * 9;
    for &(n, h) in &v2 {
        let frames = c.take(n, h);
        let got = Cluster::pubs(&frames, "all");
        let offsets: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "in order, once");
        assert_eq!(got.len(), total - 20, "every publication but its own 20");
        let own = &sent[&(n, h)];
        assert!(got.iter().all(|(_, m)| !own.contains(m)), "never its own");
    }
    for &(n, h) in &v1 {
        let got = c.take(n, h).len();
        assert_eq!(got, total - 20, "v1: every other client's publication");
    }
}

/// A node whose channel lost publications fetches them from the history before delivering
/// anything after them: its clients miss nothing and get nothing twice.
#[test]
fn publications_a_channel_lost_are_fetched_before_going_on() {
    let mut c = Cluster::new(2, limits());
    let publisher = c.open_v1(0);
    let reader = c.open(1, &[]);
    c.take(1, reader);
    for i in 0..3 {
        c.tell(0, publisher, &format!("abefore{i}"), true);
    }
    c.settle();
    c.lose[1] = 4;
    for i in 0..10 {
        c.tell(0, publisher, &format!("aafter{i}"), true);
    }
    c.settle();
    let got = Cluster::pubs(&c.take(1, reader), "all");
    let offsets: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, (1..=13).collect::<Vec<_>>());
    assert_eq!(c.nodes[1].stats().counters.holes, 1);
    assert_eq!(c.nodes[1].stats().counters.holes_lost, 0);
}

/// The last publications lost with nothing after them: a check (after the driver's
/// subscription came back) fetches them.
#[test]
fn a_check_after_a_reconnect_finds_what_was_lost_at_the_end() {
    let (mut c, publisher, reader, _) = one_published(limits());
    c.lose[1] = 2;
    c.tell(0, publisher, "atwo", true);
    c.tell(0, publisher, "athree", true);
    c.settle();
    assert!(Cluster::pubs(&c.take(1, reader), "all").is_empty());
    c.nodes[1].handle_history_check(c.now);
    c.settle();
    let got = Cluster::pubs(&c.take(1, reader), "all");
    assert_eq!(got, [(2, "two".into()), (3, "three".into())]);
}

/// A hole whose fetch the history cannot answer (its connection is down) is not given up: what
/// came after it waits, and the next publication asks again.
#[test]
fn a_hole_fetch_that_fails_is_asked_again() {
    let (mut c, publisher, reader, _) = one_published(limits());
    c.lose[1] = 2;
    c.unavailable = true;
    for t in ["atwo", "athree", "afour"] {
        c.tell(0, publisher, t, true);
    }
    c.settle();
    assert!(Cluster::pubs(&c.take(1, reader), "all").is_empty(), "held");
    c.unavailable = false;
    c.tell(0, publisher, "afive", true);
    c.settle();
    let frames = c.take(1, reader);
    let offsets: Vec<u64> = Cluster::pubs(&frames, "all").iter().map(|p| p.0).collect();
    assert_eq!(offsets, [2, 3, 4, 5]);
    assert!(field(&frames, "gap").is_empty());
}

/// A hole the history no longer has is a gap for the clients, then delivery goes on.
#[test]
fn a_hole_the_history_no_longer_has_is_reported_as_a_gap() {
    let small = HistoryLimits {
        max_entries: 3,
        ..HistoryLimits::default()
    };
    let (mut c, publisher, reader, _) = one_published(small);
    c.lose[1] = 6;
    for i in 0..8 {
        c.tell(0, publisher, &format!("a{i}"), true);
    }
    c.settle();
    let frames = c.take(1, reader);
    let gaps = field(&frames, "gap");
    assert_eq!(gaps.len(), 1, "{frames:?}");
    assert_eq!(
        (gaps[0]["from"].as_u64(), gaps[0]["to"].as_u64()),
        (Some(2), Some(7))
    );
    let got = Cluster::pubs(&frames, "all");
    assert_eq!(got, [(8, "6".into()), (9, "7".into())]);
    assert_eq!(c.nodes[1].stats().counters.holes_lost, 6);
}

/// A client whose node went away resumes on another node from its position: it gets what it
/// missed, once, in order, but not what it published itself.
#[test]
fn a_client_resumes_on_another_node() {
    let mut c = Cluster::new(2, limits());
    let publisher = c.open_v1(1);
    let a = c.open(0, &[]);
    c.tell(1, publisher, "aone", true);
    c.settle();
    let frames = c.take(0, a);
    let session = frames[0]["session"].as_str().unwrap().to_string();
    let p = Cluster::pubs(&frames, "all");
    let epoch = field(&frames, "pub")[0]["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(p, [(1, "one".into())]);
    c.tell(0, a, "amine", false);
    c.settle();
    // Node 0 dies (its hub is simply never driven again); more is published meanwhile.
    for i in 0..3 {
        c.tell(1, publisher, &format!("amissed{i}"), true);
    }
    c.settle();
    let since = format!("all~{epoch}~1");
    let a2 = c.open(1, &[("sb_session", &session), ("sb_since", &since)]);
    let frames = c.take(1, a2);
    assert_eq!(frames[0]["resumed"], true);
    let got = Cluster::pubs(&frames, "all");
    assert_eq!(
        got,
        [
            (3, "missed0".into()),
            (4, "missed1".into()),
            (5, "missed2".into())
        ],
        "what it missed, not its own (offset 2)"
    );
    let sub = field(&frames, "subscribed");
    assert_eq!(sub[0]["recovered"], true);
    // And live from here, on its new node.
    c.tell(1, publisher, "alive", true);
    c.settle();
    assert_eq!(Cluster::pubs(&c.take(1, a2), "all"), [(6, "live".into())]);
}

/// The history is started afresh (a Redis that lost its data): each subscriber gets the new
/// epoch's publications from its start, then is told it did not recover (reason `epoch`: what
/// the old epoch held past its position is gone), then goes on live; nothing of the new epoch is
/// lost or doubled.
#[test]
fn a_history_started_afresh_tells_clients_they_did_not_recover() {
    let (mut c, publisher, reader, frames) = one_published(limits());
    let old = field(&frames, "pub")[0]["epoch"].clone();
    c.history = MemoryHistory::new(limits(), 4242);
    c.tell(0, publisher, "atwo", true);
    c.tell(0, publisher, "athree", true);
    c.settle();
    let frames = c.take(1, reader);
    assert_eq!(
        Cluster::pubs(&frames, "all"),
        [(1, "two".into()), (2, "three".into())],
        "the new epoch from its start"
    );
    let sub = field(&frames, "subscribed");
    assert_eq!(sub.len(), 1, "{frames:?}");
    assert_eq!(sub[0]["recovered"], false);
    assert_eq!(sub[0]["reason"], "epoch");
    assert_ne!(sub[0]["epoch"], old);
    assert_eq!(sub[0]["offset"], 2);
    assert_eq!(
        frames.last().unwrap()["sb"],
        "subscribed",
        "told after the replay"
    );
    c.tell(0, publisher, "afour", true);
    c.settle();
    let got = Cluster::pubs(&c.take(1, reader), "all");
    assert_eq!(got, [(3, "four".into())]);
}

/// A node that sees a new epoch first at a later offset (its subscription came back after the
/// new epoch's first publications) fetches the new epoch from its start for its clients.
#[test]
fn a_new_epoch_seen_late_is_fetched_from_its_start() {
    let (mut c, publisher, reader, _) = one_published(limits());
    c.history = MemoryHistory::new(limits(), 4243);
    c.lose[1] = 2;
    for t in ["atwo", "athree", "afour"] {
        c.tell(0, publisher, t, true);
    }
    c.settle();
    let frames = c.take(1, reader);
    let got = Cluster::pubs(&frames, "all");
    assert_eq!(
        got,
        [(1, "two".into()), (2, "three".into()), (3, "four".into())],
        "{frames:?}"
    );
    assert_eq!(field(&frames, "subscribed")[0]["reason"], "epoch");
}

/// Room streams: a node delivers a room's publications only while it has members there, and
/// forgets the room's order when its last member leaves (so a publication arriving after that
/// leaves nothing behind; a member joining later starts from the history's top).
#[test]
fn room_streams_follow_local_membership() {
    let mut c = Cluster::new(2, limits());
    let a = c.open(0, &[]);
    let b = c.open(1, &[]);
    c.tell(0, a, "jr", false);
    c.tell(1, b, "jr", false);
    c.settle();
    c.take(0, a);
    c.take(1, b);
    c.tell(0, a, "rr:one", false);
    c.settle();
    assert_eq!(Cluster::pubs(&c.take(1, b), "r"), [(1, "one".into())]);
    c.tell(1, b, "lr", false);
    c.tell(0, a, "rr:two", false);
    c.settle();
    assert!(Cluster::pubs(&c.take(1, b), "r").is_empty());
    c.tell(1, b, "jr", false);
    c.settle();
    c.tell(0, a, "rr:three", false);
    c.settle();
    let frames = c.take(1, b);
    assert_eq!(Cluster::pubs(&frames, "r"), [(3, "three".into())]);
    assert_eq!(
        c.nodes[1].stats().counters.holes,
        0,
        "no hole: it starts from the top"
    );
}
