//! Decoding where the bytes arrive changes nothing: for every system in `SYSTEMS`, a frame (or an
//! HTTP request) decoded by the system's decoder on another thread and handed to the hub as
//! `Frame::Decoded` (or through `handle_request`) gives exactly the outputs, answers and counters
//! of the same bytes decoded by the hub itself. A decode error is a value that reaches the hub in
//! arrival order, so its error frame never overtakes an earlier reply to the same connection,
//! however the decoding threads were scheduled.
//!
//! Frames and bodies come from each system's document (`docs/protocol/<name>-v1.md`) plus
//! hostile input, so a new system is covered here with nothing added.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{protocol_doc, request, vectors, T0, WALL0};
use switchboard_hub::{
    AnyMessage, Config, ConnectionHandle, Dialect, DynDecode, DynHub, Frame, HttpRequest, Identity,
    Instant, Method, OpenInfo, Output, Text,
};
use switchboard_protocol::{Direction, Options, SystemSpec, SYSTEMS};

const KEY: &str = "k";

fn start(spec: &SystemSpec) -> Box<dyn DynHub> {
    let mut hub = (spec.build)(&Options::default().with_api_key(KEY), Config::default(), T0);
    hub.set_wall_clock(T0, WALL0);
    hub
}

fn drain(hub: &mut dyn DynHub) -> Vec<Output> {
    std::iter::from_fn(|| hub.poll_output())
        .flat_map(Output::split)
        .collect()
}

/// Three connections with an identity each (a system that requires one gets it), drained.
fn open(hub: &mut dyn DynHub, spec: &SystemSpec) -> Vec<ConnectionHandle> {
    let conns = (1..=3)
        .map(|i| {
            let info = OpenInfo {
                path: spec.ws_path.unwrap_or("/").into(),
                identity: Some(Identity::user(format!("user-{i}"))),
                ..OpenInfo::default()
            };
            hub.handle_open(T0, info).expect("under the limit")
        })
        .collect();
    drain(hub);
    conns
}

fn documented(spec: &SystemSpec, direction: Direction) -> Vec<String> {
    let (_, doc) = protocol_doc(spec.name);
    vectors(&doc)
        .into_iter()
        .filter(|(d, _, _)| *d == direction)
        .map(|(_, text, _)| text)
        .collect()
}

/// Input no system accepts as it is.
fn hostile() -> Vec<String> {
    let mut v: Vec<String> = [
        "",
        "not json",
        "[1,2]",
        "{}",
        "null",
        r#"{"type":"nope"}"#,
        r#"{"type":7}"#,
        r#"{"a":1,"a":2}"#,
        r#"{"type":"ping","type":"ping"}"#,
    ]
    .map(String::from)
    .to_vec();
    v.push(format!("{}1{}", "[".repeat(65), "]".repeat(65)));
    v
}

/// Decode each of `texts` on its own thread, all at once, as connection tasks would.
fn decode_elsewhere(decoder: &Arc<dyn DynDecode>, texts: &[String]) -> Vec<AnyMessage> {
    std::thread::scope(|s| {
        let workers: Vec<_> = texts
            .iter()
            .map(|t| {
                let decoder = Arc::clone(decoder);
                let text = Text::from(t.clone());
                s.spawn(move || decoder.decode(Dialect::V1, &text))
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    })
}

#[test]
fn a_frame_decoded_on_another_thread_acts_as_one_the_hub_decodes() {
    for spec in SYSTEMS {
        let mut frames = documented(spec, Direction::ClientToServer);
        assert!(!frames.is_empty(), "{}: no client examples", spec.name);
        frames.extend(hostile());
        let (mut inline, mut offloaded) = (start(spec), start(spec));
        let conns = open(&mut *inline, spec);
        assert_eq!(open(&mut *offloaded, spec), conns);
        let decoded = decode_elsewhere(&offloaded.decoder(), &frames);
        let mut now = T0;
        let mut outputs = 0;
        for (i, (text, message)) in frames.iter().zip(decoded).enumerate() {
            now = now + Duration::from_millis(7);
            let conn = conns[i % conns.len()];
            let frame = Text::from(text.clone());
            inline
                .handle_frame(now, conn, Frame::Text(frame.clone()))
                .unwrap();
            let len = frame.len();
            offloaded
                .handle_frame(now, conn, Frame::Decoded { len, message })
                .unwrap();
            let expected = drain(&mut *inline);
            outputs += expected.len();
            assert_eq!(expected, drain(&mut *offloaded), "{}: {text}", spec.name);
        }
        // Every hostile frame at least is answered with an error.
        assert!(
            outputs >= hostile().len(),
            "{}: {outputs} outputs",
            spec.name
        );
        assert_eq!(inline.stats(), offloaded.stats(), "{}", spec.name);
    }
}

/// The requests thrown at each system: every route with each method it answers and `DELETE`,
/// with the key, a wrong key and none, and every documented publish body plus hostile ones; and
/// a path no system owns.
fn requests(spec: &SystemSpec) -> Vec<HttpRequest> {
    let mut bodies = documented(spec, Direction::Publish);
    bodies.extend(hostile());
    let mut out = Vec::new();
    for route in spec.routes {
        for arg in ["todo-created", "a b"] {
            let path = route.path.sample(arg);
            for method in route.methods.iter().copied().chain([Method::Delete]) {
                for headers in [&[("x-api-key", KEY)][..], &[("x-api-key", "no")], &[]] {
                    for body in &bodies {
                        out.push(request(method, &path, headers, body));
                    }
                }
            }
        }
    }
    out.push(request(Method::Get, "/nope", &[], ""));
    out
}

#[test]
fn a_request_decoded_on_another_thread_gets_the_answer_the_hub_gives() {
    for spec in SYSTEMS {
        let (mut inline, mut offloaded) = (start(spec), start(spec));
        let _ = open(&mut *inline, spec);
        let _ = open(&mut *offloaded, spec);
        let requests = requests(spec);
        let decoder = offloaded.decoder();
        let decoded: Vec<AnyMessage> = std::thread::scope(|s| {
            let workers: Vec<_> = requests
                .iter()
                .map(|r| {
                    let decoder = Arc::clone(&decoder);
                    let r = r.clone();
                    s.spawn(move || decoder.decode_request(r))
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let mut now = T0;
        let mut statuses = std::collections::BTreeSet::new();
        for (req, message) in requests.into_iter().zip(decoded) {
            now = now + Duration::from_millis(3);
            let what = format!(
                "{}: {:?} {} {:?}",
                spec.name, req.method, req.path, req.body
            );
            let answer = inline.handle_http(now, req);
            statuses.insert(answer.as_ref().map(|r| r.status));
            assert_eq!(answer, offloaded.handle_request(now, message), "{what}");
            assert_eq!(drain(&mut *inline), drain(&mut *offloaded), "{what}");
        }
        assert_eq!(inline.stats(), offloaded.stats(), "{}", spec.name);
        // Answered, refused and passed over alike.
        assert!(statuses.contains(&None), "{}", spec.name);
        if !spec.routes.is_empty() {
            for status in [200..300, 400..401, 401..402, 405..406] {
                assert!(
                    statuses.iter().flatten().any(|s| status.contains(s)),
                    "{}: no {status:?} among {statuses:?}",
                    spec.name
                );
            }
        }
    }
}

/// What `conn` was sent, in order.
fn sent_to(outputs: &[Output], conn: ConnectionHandle) -> Vec<Text> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Transmit {
                connection,
                payload,
            } if *connection == conn => Some(payload.clone()),
            _ => None,
        })
        .collect()
}

/// A hub with one fresh connection, and what `frames` sent to it (decoded by the hub).
fn replies(spec: &SystemSpec, frames: &[&str], now: Instant) -> Vec<Text> {
    let mut hub = start(spec);
    let conn = open(&mut *hub, spec)[0];
    let mut out = Vec::new();
    for f in frames {
        hub.handle_frame(now, conn, Frame::Text(Text::from(f.to_string())))
            .unwrap();
        out.extend(drain(&mut *hub));
    }
    sent_to(&out, conn)
}

#[test]
fn a_decode_error_never_overtakes_an_earlier_reply() {
    let bad = r#"{"type": 7"#; // Cut short: not JSON, for every system.
    let now = T0 + Duration::from_millis(1234);
    for spec in SYSTEMS {
        // The earlier frame: the first documented one its sender gets an answer to, else a
        // frame refused for another reason (also answered).
        let documented = documented(spec, Direction::ClientToServer);
        let first = documented
            .iter()
            .map(String::as_str)
            .find(|f| !replies(spec, &[f], now).is_empty())
            .unwrap_or("[]");
        let expected_first = replies(spec, &[first], now);
        let expected_error = replies(spec, &[bad], now);
        assert!(!expected_first.is_empty(), "{}: {first}", spec.name);
        assert_eq!(expected_error.len(), 1, "{}: one error frame", spec.name);

        let mut hub = start(spec);
        let conn = open(&mut *hub, spec)[0];
        let decoder = hub.decoder();
        // The bad frame's decoding finishes first; the connection still hands the hub its
        // frames in the order they arrived.
        let error = {
            let decoder = Arc::clone(&decoder);
            let text = Text::from(bad);
            std::thread::spawn(move || decoder.decode(Dialect::V1, &text))
                .join()
                .unwrap()
        };
        let answered = {
            let text = Text::from(first.to_string());
            std::thread::spawn(move || decoder.decode(Dialect::V1, &text))
                .join()
                .unwrap()
        };
        let frames = [
            Frame::Decoded {
                len: first.len(),
                message: answered,
            },
            Frame::Decoded {
                len: bad.len(),
                message: error,
            },
        ];
        for frame in frames {
            hub.handle_frame(now, conn, frame).unwrap();
        }
        let sent = sent_to(&drain(&mut *hub), conn);
        let mut expected = expected_first;
        expected.extend(expected_error);
        assert_eq!(sent, expected, "{}: reply first, then the error", spec.name);
    }
}
