//! Property tests: every DCDock message type, in both directions and as a publish body,
//! survives encode -> decode unchanged.

mod strategies;
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use serde_json::{Map, Value};
use strategies::json_value;
use switchboard_protocol::dcdock::v1::*;

fn object() -> impl Strategy<Value = Map<String, Value>> {
    btree_map(".{0,8}", json_value(), 0..5).prop_map(|m| m.into_iter().collect())
}

fn text() -> impl Strategy<Value = String> {
    ".{0,16}"
}

/// Ids are integers or non-empty strings.
fn id() -> impl Strategy<Value = Id> {
    prop_oneof![
        any::<i64>().prop_map(Id::Number),
        ".{1,16}".prop_map(Id::Text)
    ]
}

fn filters() -> impl Strategy<Value = Filters> {
    option::of(prop_oneof![
        Just(LoadDirection::Inbound),
        Just(LoadDirection::Outbound)
    ])
    .prop_map(|direction| Filters { direction })
}

fn change(action: Action) -> impl Strategy<Value = AssignmentChange> {
    (option::of(text()), id(), id(), text(), object()).prop_map(
        move |(timestamp, assignment_id, user_id, user_email, data)| AssignmentChange {
            timestamp,
            assignment_id,
            action,
            user_id,
            user_email,
            data,
        },
    )
}

fn event() -> impl Strategy<Value = ServerEvent> {
    let conflict = (
        option::of(text()),
        id(),
        any::<i64>(),
        any::<i64>(),
        object(),
        text(),
        id(),
    )
        .prop_map(
            |(
                timestamp,
                assignment_id,
                current_version,
                attempted_version,
                current_data,
                message,
                user_id,
            )| {
                ServerEvent::ConflictDetected(Conflict {
                    timestamp,
                    assignment_id,
                    current_version,
                    attempted_version,
                    current_data,
                    message,
                    user_id,
                })
            },
        );
    prop_oneof![
        change(Action::Create).prop_map(ServerEvent::AssignmentCreated),
        change(Action::Update).prop_map(ServerEvent::AssignmentUpdated),
        change(Action::Delete).prop_map(ServerEvent::AssignmentDeleted),
        conflict,
    ]
}

fn server(m: ServerMessage) -> Result<(), TestCaseError> {
    let bytes = encode_server(&m);
    prop_assert_eq!(decode_server(&bytes), Ok(m));
    Ok(())
}

proptest! {
    #[test]
    fn client_messages(m in prop_oneof![
        option::of(filters()).prop_map(|filters| ClientMessage::Subscribe(Subscribe { filters })),
        Just(ClientMessage::Unsubscribe),
        Just(ClientMessage::Ping),
    ]) {
        let bytes = encode_client(&m);
        prop_assert_eq!(decode_client(&bytes), Ok(m));
    }

    #[test]
    fn connection_ack(timestamp in text(), client_id in text(), message in text()) {
        server(ServerMessage::ConnectionAck(ConnectionAck { timestamp, client_id, message }))?;
    }

    #[test]
    fn subscribed(timestamp in text(), filters in filters()) {
        server(ServerMessage::Subscribed(Subscribed { timestamp, filters }))?;
    }

    #[test]
    fn unsubscribed_and_pong(timestamp in text()) {
        server(ServerMessage::Unsubscribed(Stamp { timestamp: timestamp.clone() }))?;
        server(ServerMessage::Pong(Stamp { timestamp }))?;
    }

    #[test]
    fn events(e in event()) {
        server(ServerMessage::Event(e.clone()))?;
        // The same value is also a valid publish body.
        let bytes = encode_event(&e);
        prop_assert_eq!(decode_publish(&bytes), Ok(e));
    }

    #[test]
    fn error_frames(timestamp in text(), message in text(), details in text()) {
        server(ServerMessage::Error(ErrorFrame { timestamp, message, details }))?;
    }

    /// The publication of any event carries it, timestamped, encoded once.
    #[test]
    fn publications_carry_the_event(e in event(), ms in 0u64..4_102_444_800_000) {
        let now = switchboard_hub::UnixTime::from_millis(ms);
        let p = event_publication(&e, now);
        let Ok(ServerMessage::Event(sent)) = decode_server(&p.payload) else {
            return Err(TestCaseError::fail("publication payload is not an event"));
        };
        let v: Value = serde_json::from_slice(&p.payload).unwrap();
        let ts = match &e {
            ServerEvent::AssignmentCreated(c)
            | ServerEvent::AssignmentUpdated(c)
            | ServerEvent::AssignmentDeleted(c) => c.timestamp.clone(),
            ServerEvent::ConflictDetected(c) => c.timestamp.clone(),
        };
        let expected_ts = ts.clone().unwrap_or_else(|| timestamp(now));
        prop_assert_eq!(v["timestamp"].as_str(), Some(expected_ts.as_str()));
        prop_assert_eq!(sent.type_tag(), e.type_tag());
        if ts.is_some() {
            prop_assert_eq!(sent, e);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..64)) {
        let _ = decode_client(&bytes);
        let _ = decode_server(&bytes);
        let _ = decode_publish(&bytes);
    }
}
