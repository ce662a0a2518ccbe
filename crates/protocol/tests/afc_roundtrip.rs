//! Property tests: every AFC message type survives encode -> decode unchanged, and the HTTP
//! publish path embeds any JSON body (compact, pretty, padded) as the frame's `payload`.

mod strategies;
use proptest::prelude::*;
use serde_json::{Map, Value};
use strategies::json_value;
use switchboard_hub::Target;
use switchboard_protocol::afc::v1::{self as afc, ClientMessage, EventType, ServerMessage};
use switchboard_protocol::Direction;

fn entity() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_][A-Za-z0-9_-]{0,12}"
}

fn action() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_]{1,12}"
}

fn server_message() -> impl Strategy<Value = ServerMessage> {
    prop_oneof![
        (entity(), action(), json_value()).prop_map(|(e, a, payload)| ServerMessage::Event {
            kind: EventType::new(&e, &a).unwrap(),
            payload,
        }),
        "\\PC{0,30}".prop_map(|timestamp| ServerMessage::Pong { timestamp }),
        ("\\PC{0,30}", "\\PC{0,30}")
            .prop_map(|(message, details)| ServerMessage::Error { message, details }),
    ]
}

proptest! {
    #[test]
    fn server_messages_round_trip(msg in server_message()) {
        let bytes = afc::encode_server(&msg);
        prop_assert_eq!(afc::decode_server(&bytes).unwrap(), msg);
        // The documented-example path agrees.
        let again = afc::round_trip(Direction::ServerToClient, &bytes).unwrap();
        prop_assert_eq!(&again[..], &bytes[..]);
    }

    #[test]
    fn client_ping_round_trips_and_tolerates_extra_fields(
        extra in prop::collection::btree_map("[a-z]{1,8}", json_value(), 0..4)
    ) {
        let bytes = afc::encode_client(&ClientMessage::Ping);
        prop_assert_eq!(afc::decode_client(&bytes).unwrap(), ClientMessage::Ping);
        let mut obj: Map<String, Value> = extra.into_iter().collect();
        obj.insert("type".into(), "ping".into());
        let text = serde_json::to_vec(&obj).unwrap();
        prop_assert_eq!(afc::decode_client(&text).unwrap(), ClientMessage::Ping);
    }

    #[test]
    fn route_names_and_tags_agree(e in entity(), a in action()) {
        let from_route = EventType::from_route(&format!("{e}-{a}")).unwrap();
        prop_assert_eq!(from_route.entity(), e.as_str());
        prop_assert_eq!(from_route.action(), a.as_str());
        let tag = from_route.to_string();
        prop_assert_eq!(&tag, &format!("{e}:{a}"));
        prop_assert_eq!(EventType::from_tag(&tag).unwrap(), from_route);
    }

    #[test]
    fn published_bodies_become_the_payload(
        e in entity(),
        a in action(),
        v in json_value(),
        pretty in any::<bool>(),
        pad in "[ \t\r\n]{0,3}",
    ) {
        let body = if pretty {
            serde_json::to_string_pretty(&v).unwrap()
        } else {
            serde_json::to_string(&v).unwrap()
        };
        let padded = format!("{pad}{body}{pad}");
        prop_assert_eq!(afc::decode_publish(padded.as_bytes()).unwrap(), v.clone());
        let p = afc::event_publication(&format!("{e}-{a}"), padded.as_bytes()).unwrap();
        prop_assert_eq!(&p.target, &Target::All);
        // The body's bytes sit in the frame as they were sent, trimmed.
        let expected = format!(r#"{{"type":"{e}:{a}","payload":{body}}}"#);
        prop_assert_eq!(&p.payload[..], expected.as_bytes());
        let decoded = afc::decode_server(&p.payload).unwrap();
        prop_assert_eq!(decoded, ServerMessage::Event { kind: EventType::new(&e, &a).unwrap(), payload: v });
    }

    #[test]
    fn arbitrary_input_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64), name in "\\PC{0,16}") {
        let _ = afc::decode_client(&bytes);
        let _ = afc::decode_server(&bytes);
        let _ = afc::decode_publish(&bytes);
        if let Ok(p) = afc::event_publication(&name, &bytes) {
            // Whatever was accepted makes a frame that parses as JSON.
            prop_assert!(serde_json::from_slice::<Value>(&p.payload).is_ok());
        }
    }
}
