//! Property tests: every race message type, both directions and the publish body, survives
//! encode -> decode unchanged; the embedding helper's frame decodes as the published update.

mod strategies;
use proptest::prelude::*;
use serde_json::{Map, Value};
use strategies::json_value;
use switchboard_hub::{Target, UnixTime};
use switchboard_protocol::race::v1::{
    self as race, ClientMessage, RaceUpdate, ServerMessage, UpdateType,
};
use switchboard_protocol::{codec, Direction};

fn json_object(inner: impl Strategy<Value = Value>) -> impl Strategy<Value = Value> {
    prop::collection::btree_map("\\PC{0,8}", inner, 0..5)
        .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>()))
}

/// Session ids: the allowed characters, with at least one letter or digit.
fn session_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.:-]{0,20}[A-Za-z0-9][A-Za-z0-9_.:-]{0,19}"
}

fn update_type() -> impl Strategy<Value = UpdateType> {
    prop::sample::select(UpdateType::ALL.to_vec())
}

fn iso() -> impl Strategy<Value = String> {
    (
        0u32..10_000,
        1u32..=12,
        1u32..=28,
        0u32..24,
        0u32..60,
        0u32..60,
        prop::option::of("[0-9]{1,6}"),
        prop_oneof![
            Just("Z".to_string()),
            (any::<bool>(), 0u32..24, 0u32..60)
                .prop_map(|(plus, h, m)| format!("{}{h:02}:{m:02}", if plus { '+' } else { '-' })),
        ],
    )
        .prop_map(|(y, mo, d, h, mi, s, frac, zone)| {
            let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{zone}")
        })
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,30}"
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        (session_id(), prop::option::of(text())).prop_map(|(session_id, timestamp)| {
            ClientMessage::Subscribe {
                session_id,
                timestamp,
            }
        }),
        (session_id(), prop::option::of(text())).prop_map(|(session_id, timestamp)| {
            ClientMessage::Unsubscribe {
                session_id,
                timestamp,
            }
        }),
        (
            prop::option::of(json_object(json_value())),
            prop::option::of(text())
        )
            .prop_map(|(data, timestamp)| ClientMessage::Ping { data, timestamp }),
    ]
}

fn server_message() -> impl Strategy<Value = ServerMessage> {
    prop_oneof![
        (session_id(), text()).prop_map(|(session_id, timestamp)| ServerMessage::Subscribed {
            session_id,
            timestamp
        }),
        (session_id(), text()).prop_map(|(session_id, timestamp)| {
            ServerMessage::Unsubscribed {
                session_id,
                timestamp,
            }
        }),
        text().prop_map(|timestamp| ServerMessage::Pong { timestamp }),
        (text(), text(), text()).prop_map(|(message, details, timestamp)| {
            ServerMessage::Error {
                message,
                details,
                timestamp,
            }
        }),
        (update_type(), json_value(), text()).prop_map(|(kind, data, timestamp)| {
            ServerMessage::Update {
                kind,
                data,
                timestamp,
            }
        }),
    ]
}

fn race_update() -> impl Strategy<Value = RaceUpdate> {
    (update_type(), json_value(), prop::option::of(iso())).prop_map(|(kind, data, timestamp)| {
        RaceUpdate {
            kind,
            data,
            timestamp,
        }
    })
}

proptest! {
    #[test]
    fn client_messages_round_trip(msg in client_message()) {
        let bytes = race::encode_client(&msg);
        prop_assert_eq!(race::decode_client(&bytes).unwrap(), msg);
        let again = race::round_trip(Direction::ClientToServer, &bytes).unwrap();
        prop_assert_eq!(&again[..], &bytes[..]);
    }

    #[test]
    fn server_messages_round_trip(msg in server_message()) {
        let bytes = race::encode_server(&msg);
        prop_assert_eq!(race::decode_server(&bytes).unwrap(), msg);
        let again = race::round_trip(Direction::ServerToClient, &bytes).unwrap();
        prop_assert_eq!(&again[..], &bytes[..]);
    }

    #[test]
    fn publish_bodies_round_trip(update in race_update()) {
        let bytes = codec::to_vec(&update);
        prop_assert_eq!(race::decode_publish(&bytes).unwrap(), update);
    }

    #[test]
    fn update_publication_frames_decode_as_the_update(
        session in session_id(),
        update in race_update(),
        millis in 0u64..4_102_444_800_000,
    ) {
        let p = race::update_publication(&session, &update, UnixTime::from_millis(millis));
        prop_assert_eq!(&p.target, &Target::Room(format!("session:{session}")));
        let ServerMessage::Update { kind, data, timestamp } = race::decode_server(&p.payload).unwrap() else {
            panic!("not an update");
        };
        prop_assert_eq!(kind, update.kind);
        prop_assert_eq!(data, update.data);
        match update.timestamp {
            Some(t) => prop_assert_eq!(timestamp, t),
            None => prop_assert!(race::is_iso8601(&timestamp), "{}", timestamp),
        }
    }

    #[test]
    fn generated_timestamps_are_iso8601(t in iso()) {
        prop_assert!(race::is_iso8601(&t), "{}", t);
    }

    #[test]
    fn arbitrary_input_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64), s in "\\PC{0,24}") {
        let _ = race::decode_client(&bytes);
        let _ = race::decode_server(&bytes);
        let _ = race::decode_publish(&bytes);
        let _ = race::is_iso8601(&s);
        let _ = race::check_session_id(&s, race::MAX_SESSION_ID_LEN);
        let _ = race::check_session_id(&s, 3);
    }
}
