//! Property tests for the laptimes relay: change notices (extra fields included) and error
//! replies survive encode -> decode unchanged, and the relay forwards any valid notice byte for
//! byte to every other client while anything else gets an error to the sender alone.

mod common;

mod strategies;
use common::*;
use proptest::prelude::*;
use serde_json::Value;
use strategies::json_value;
use switchboard_hub::{Frame, Output};
use switchboard_protocol::laptimes::v1::{
    self as laptimes, ChangeNotice, ErrorReply, ErrorTag, ServerMessage,
};
use switchboard_protocol::{codec, Direction, Options};

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,24}"
}

/// `table` and `operation` are non-empty.
fn name() -> impl Strategy<Value = String> {
    "\\PC{1,24}"
}

fn notice() -> impl Strategy<Value = ChangeNotice> {
    (
        prop_oneof![
            Just("cars".to_string()),
            Just("tracks".to_string()),
            Just("drivers".to_string()),
            Just("times".to_string()),
            name(),
        ],
        prop_oneof![Just("CHANGE".to_string()), name()],
        prop::option::of(text()),
        prop::collection::btree_map("[a-zA-Z_]{1,10}", json_value(), 0..4),
    )
        .prop_map(|(table, operation, timestamp, extra)| ChangeNotice {
            table,
            operation,
            timestamp,
            extra: extra
                .into_iter()
                .filter(|(k, _)| !matches!(k.as_str(), "table" | "operation" | "timestamp"))
                .collect(),
        })
}

fn error_reply() -> impl Strategy<Value = ErrorReply> {
    (text(), prop::option::of(text())).prop_map(|(message, details)| ErrorReply {
        kind: ErrorTag::Error,
        message,
        details,
    })
}

proptest! {
    #[test]
    fn client_notices_round_trip(n in notice()) {
        let bytes = codec::to_vec(&n);
        prop_assert_eq!(laptimes::decode_client(&bytes).unwrap(), n);
        let again = laptimes::round_trip(Direction::ClientToServer, &bytes).unwrap();
        prop_assert_eq!(
            serde_json::from_slice::<Value>(&again).unwrap(),
            serde_json::from_slice::<Value>(&bytes).unwrap()
        );
    }

    #[test]
    fn server_messages_round_trip(
        msg in prop_oneof![
            notice().prop_map(ServerMessage::Change),
            error_reply().prop_map(ServerMessage::Error),
        ]
    ) {
        let bytes = laptimes::encode_server(&msg);
        prop_assert_eq!(laptimes::decode_server(&bytes).unwrap(), msg);
    }

    #[test]
    fn valid_notices_are_relayed_byte_for_byte_to_others_only(n in notice(), clients in 2usize..6) {
        let mut h = Harness::new(&laptimes::SPEC, Options::default());
        let conns: Vec<_> = (0..clients).map(|_| h.open()).collect();
        let frame = codec::to_text(&n);
        h.hub.handle_frame(h.now, conns[0], Frame::Text(frame.clone())).unwrap();
        let mut got = Vec::new();
        while let Some(out) = h.hub.poll_output() {
            for out in out.split() {
                let Output::Transmit { connection, payload } = out else {
                    panic!("unexpected {out:?}");
                };
                prop_assert_eq!(&payload[..], &frame[..]);
                got.push(connection);
            }
        }
        got.sort();
        prop_assert_eq!(got, conns[1..].to_vec());
    }

    #[test]
    fn any_text_is_relayed_or_answered_with_an_error_to_the_sender_alone(
        s in prop_oneof![
            "\\PC{0,48}",
            notice().prop_map(|n| serde_json::to_string(&n).unwrap()),
            // Valid notices with one field's value replaced by a number.
            (notice(), prop::sample::select(vec!["table", "operation", "timestamp"])).prop_map(
                |(n, field)| {
                    let mut v = serde_json::to_value(&n).unwrap();
                    v[field] = Value::from(1);
                    v.to_string()
                }
            ),
        ]
    ) {
        let mut h = Harness::new(&laptimes::SPEC, Options::default());
        let (a, b) = (h.open(), h.open());
        h.hub.handle_frame(h.now, a, Frame::Text(s.clone().into())).unwrap();
        let mut outs = Vec::new();
        while let Some(out) = h.hub.poll_output() {
            outs.push(out);
        }
        prop_assert_eq!(outs.len(), 1, "{:?}", outs);
        let Output::Transmit { connection, payload } = &outs[0] else {
            panic!("unexpected {outs:?}");
        };
        if laptimes::decode_client(s.as_bytes()).is_ok() {
            prop_assert_eq!(*connection, b);
            prop_assert_eq!(&payload[..], s.as_bytes());
        } else {
            prop_assert_eq!(*connection, a);
            let ServerMessage::Error(e) = laptimes::decode_server(payload).unwrap() else {
                panic!("not an error reply");
            };
            prop_assert_eq!(e.message, "Invalid change notice");
            prop_assert!(e.details.is_some());
        }
    }
}
