//! What an operator's inspector reads from the hub, without sockets: a tap on a room (its
//! publications sampled at the tap's rate, the ones passed over counted, only while tapped), the
//! largest rooms with a search, and the connections open longest.

use std::time::Duration;

use switchboard_hub::{
    Config, ConnectionHandle, Context, Frame, Hub, Instant, Limits, OpenInfo, Output, Protocol,
    Publication, RateLimit, RawText, TapError, Text, MAX_TAPS,
};

const T0: Instant = Instant::from_millis(5_000);

/// Ten a second, one at a time: what the inspector's tail uses.
const TEN_A_SECOND: RateLimit = RateLimit {
    per_second: 10,
    burst: 1,
};

/// `join:<room>`, `leave:<room>`, and `say:<room>:<text>` (to the room, except the sender).
struct Rooms;

impl Protocol for Rooms {
    type Decoder = RawText;

    fn name(&self) -> &'static str {
        "rooms"
    }

    fn decoder(&self) -> RawText {
        RawText
    }

    fn on_message(&mut self, cx: &mut Context<'_>, conn: ConnectionHandle, frame: Text) {
        let text = frame.as_str();
        if let Some(room) = text.strip_prefix("join:") {
            cx.join(conn, room).expect("under the limits");
        } else if let Some(room) = text.strip_prefix("leave:") {
            cx.leave(conn, room);
        } else if let Some((room, msg)) = text.strip_prefix("say:").and_then(|r| r.split_once(':'))
        {
            cx.publish(Publication::to_room(room, frame.slice_ref(msg)).except(conn));
        }
    }
}

struct Bench {
    hub: Hub<Rooms>,
    now: Instant,
}

impl Bench {
    fn new() -> Self {
        let config = Config {
            heartbeat_interval: None,
            idle_timeout: None,
            limits: Limits {
                inbound_rate: None,
                ..Limits::default()
            },
            ..Config::default()
        };
        Bench {
            hub: Hub::new(config, Rooms, T0),
            now: T0,
        }
    }

    fn open(&mut self) -> ConnectionHandle {
        self.hub
            .handle_open(self.now, OpenInfo::default())
            .expect("under the limit")
    }

    fn send(&mut self, conn: ConnectionHandle, text: &str) {
        let frame = Frame::Text(Text::from(text.to_string()));
        self.hub.handle_frame(self.now, conn, frame).unwrap();
    }

    fn advance(&mut self, by: Duration) {
        self.now = self.now + by;
    }

    /// Drain the output: what was tapped (room, payload, skipped), and every transmitted frame.
    fn drain(&mut self) -> (Vec<(String, Text, u64)>, Vec<Text>) {
        let (mut tapped, mut sent) = (Vec::new(), Vec::new());
        while let Some(out) = self.hub.poll_output() {
            for out in out.split() {
                match out {
                    Output::Tapped {
                        room,
                        payload,
                        skipped,
                    } => tapped.push((room, payload, skipped)),
                    Output::Transmit {
                        connection,
                        payload,
                    } => {
                        self.hub
                            .handle_flushed(self.now, connection, payload.len())
                            .unwrap();
                        sent.push(payload);
                    }
                    _ => {}
                }
            }
        }
        (tapped, sent)
    }
}

#[test]
fn a_tapped_room_shows_its_publications_sampled_and_counts_the_rest() {
    let mut b = Bench::new();
    let (a, c) = (b.open(), b.open());
    b.send(a, "join:r");
    b.send(c, "join:r");
    b.send(c, "join:quiet");
    b.drain();

    b.send(a, "say:r:before");
    assert!(b.drain().0.is_empty(), "nothing is tapped until asked");

    b.hub.tap(b.now, "r", TEN_A_SECOND).unwrap();
    assert_eq!(b.hub.tapped().collect::<Vec<_>>(), ["r"]);
    b.send(a, "say:r:one");
    let (tapped, sent) = b.drain();
    assert_eq!(tapped.len(), 1);
    assert_eq!((tapped[0].0.as_str(), tapped[0].2), ("r", 0));
    assert_eq!(tapped[0].1.as_str(), "one");
    // The tap shares the frame its recipients got: no copy.
    assert_eq!(sent.len(), 1);
    assert_eq!(tapped[0].1.as_bytes().as_ptr(), sent[0].as_bytes().as_ptr());

    // Within the same tenth of a second, the rest is passed over and counted.
    for i in 0..5 {
        b.send(a, &format!("say:r:burst {i}"));
    }
    b.send(a, "say:quiet:not tapped");
    let (tapped, sent) = b.drain();
    assert!(tapped.is_empty(), "over the tap's rate: {tapped:?}");
    assert_eq!(sent.len(), 6, "delivery is untouched by the tap");

    b.advance(Duration::from_millis(100));
    b.send(a, "say:r:next");
    let (tapped, _) = b.drain();
    assert_eq!(tapped.len(), 1);
    assert_eq!(tapped[0].1.as_str(), "next");
    assert_eq!(
        tapped[0].2, 5,
        "the five passed over since the last one shown"
    );

    // Over one simulated second of a publication every millisecond: at most the rate.
    let mut shown = 0;
    let mut skipped = 0;
    for _ in 0..1000 {
        b.advance(Duration::from_millis(1));
        b.send(a, "say:r:busy");
        let (tapped, _) = b.drain();
        shown += tapped.len();
        skipped += tapped.iter().map(|t| t.2).sum::<u64>();
    }
    assert!((10..=11).contains(&shown), "{shown} shown in one second");
    assert!(skipped + shown as u64 <= 1000);
    assert!(skipped >= 1000 - 11 - 100, "{skipped}");

    assert!(b.hub.untap("r"));
    b.advance(Duration::from_secs(1));
    b.send(a, "say:r:after");
    assert!(b.drain().0.is_empty(), "nothing once untapped");
    assert!(!b.hub.untap("r"));
}

#[test]
fn a_tap_sees_server_and_remote_publications_even_without_local_members() {
    let mut b = Bench::new();
    b.hub.tap(b.now, "empty", TEN_A_SECOND).unwrap();
    let delivered = b
        .hub
        .publish(b.now, Publication::to_room("empty", "from the server"));
    assert_eq!(delivered, 0);
    let (tapped, _) = b.drain();
    assert_eq!(tapped.len(), 1);
    assert_eq!(tapped[0].1.as_str(), "from the server");

    b.advance(Duration::from_secs(1));
    b.hub
        .handle_remote(b.now, Publication::to_room("empty", "from another node"));
    let (tapped, _) = b.drain();
    assert_eq!(tapped.len(), 1);
    assert_eq!(tapped[0].1.as_str(), "from another node");

    // Publications to everyone or to a user are not a room's.
    b.advance(Duration::from_secs(1));
    b.hub.publish(b.now, Publication::to_all("everyone"));
    b.hub.publish(b.now, Publication::to_user("u", "a user"));
    assert!(b.drain().0.is_empty());
}

#[test]
fn at_most_max_taps_rooms_are_tapped() {
    let mut b = Bench::new();
    for i in 0..MAX_TAPS {
        b.hub.tap(b.now, &format!("r{i}"), TEN_A_SECOND).unwrap();
    }
    assert_eq!(
        b.hub.tap(b.now, "one more", TEN_A_SECOND),
        Err(TapError::TooManyTaps { limit: MAX_TAPS })
    );
    // Tapping a tapped room again is fine, and untapping one makes room.
    b.hub.tap(b.now, "r0", TEN_A_SECOND).unwrap();
    assert!(b.hub.untap("r3"));
    b.hub.tap(b.now, "one more", TEN_A_SECOND).unwrap();
    assert_eq!(b.hub.tapped().count(), MAX_TAPS);
}

#[test]
fn largest_rooms_with_a_search_and_the_connections_open_longest() {
    let mut b = Bench::new();
    let conns: Vec<_> = (0..6).map(|_| b.open()).collect();
    // project:big has 5 members, project:mid 3, chat:mid 3, project:one 1.
    for &c in &conns[..5] {
        b.send(c, "join:project:big");
    }
    for &c in &conns[..3] {
        b.send(c, "join:project:mid");
        b.send(c, "join:chat:mid");
    }
    b.send(conns[5], "join:project:one");
    b.drain();

    let (rooms, matching) = b.hub.largest_rooms("", 3);
    assert_eq!(matching, 4);
    assert_eq!(
        rooms,
        [("project:big", 5), ("chat:mid", 3), ("project:mid", 3)]
    );
    let (rooms, matching) = b.hub.largest_rooms("PROJECT", 10);
    assert_eq!(matching, 3);
    assert_eq!(
        rooms,
        [("project:big", 5), ("project:mid", 3), ("project:one", 1)]
    );
    assert_eq!(b.hub.largest_rooms("nothing", 10), (vec![], 0));

    // Close the two oldest: the oldest open now are the third and fourth.
    b.hub.handle_close(b.now, conns[0]).unwrap();
    b.hub.handle_close(b.now, conns[1]).unwrap();
    let newer = b.open(); // May reuse a freed slot; it is still the newest.
    let oldest: Vec<_> = b
        .hub
        .oldest_connections(2)
        .iter()
        .map(|c| c.handle)
        .collect();
    assert_eq!(oldest, [conns[2], conns[3]]);
    let all = b.hub.oldest_connections(100);
    assert_eq!(all.len(), 5);
    assert_eq!(all.last().map(|c| c.handle), Some(newer));
    assert!(b.hub.oldest_connections(0).is_empty());
}
