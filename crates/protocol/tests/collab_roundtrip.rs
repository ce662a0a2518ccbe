//! Property tests: every collab message type, in both directions and as a `POST /broadcast` body,
//! survives encode -> decode unchanged.

mod strategies;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use strategies::json_value;
use switchboard_protocol::collab::v1::*;

fn text() -> impl Strategy<Value = String> {
    ".{0,16}"
}

fn non_empty() -> impl Strategy<Value = String> {
    ".{1,16}"
}

fn edit_kind() -> impl Strategy<Value = EditKind> {
    proptest::sample::select(EditKind::ALL.to_vec())
}

/// A server message type a broadcast may carry: an edit kind or the backend's own.
fn update_type() -> impl Strategy<Value = String> {
    prop_oneof![
        edit_kind().prop_map(|k| k.as_str().to_string()),
        "[A-Za-z_:.-]{1,20}".prop_filter("reserved for the server", |t| {
            !RESERVED_TYPES.contains(&t.as_str())
        }),
    ]
}

fn client(m: ClientMessage) -> Result<(), TestCaseError> {
    let bytes = encode_client(&m);
    prop_assert_eq!(decode_client(&bytes), Ok(m));
    Ok(())
}

fn server(m: ServerMessage) -> Result<(), TestCaseError> {
    let bytes = encode_server(&m);
    prop_assert_eq!(decode_server(&bytes), Ok(m));
    Ok(())
}

proptest! {
    #[test]
    fn set_user(
        user_id in option::of(text()),
        payload in option::of(option::of(text()).prop_map(|user_id| UserRef { user_id })),
    ) {
        let m = SetUser { user_id, payload };
        prop_assume!(m.user().is_some());
        client(ClientMessage::SetUser(m))?;
    }

    #[test]
    fn join_project(project_id in non_empty(), user_id in option::of(non_empty())) {
        client(ClientMessage::JoinProject(JoinProject { project_id, user_id }))?;
    }

    #[test]
    fn leave_project(project_id in non_empty()) {
        client(ClientMessage::LeaveProject(LeaveProject { project_id }))?;
    }

    #[test]
    fn client_edits(
        kind in edit_kind(),
        project_id in non_empty(),
        payload in json_value(),
        operation_id in option::of(text()),
    ) {
        client(ClientMessage::Edit(Edit { kind, project_id, payload, operation_id }))?;
    }

    #[test]
    fn connection_established(client_id in text(), timestamp in any::<u64>()) {
        server(ServerMessage::ConnectionEstablished(ConnectionEstablished { client_id, timestamp }))?;
    }

    #[test]
    fn user_presence(
        project_id in text(),
        users in vec((text(), text(), any::<u64>()), 0..5),
        operation_id in text(),
        timestamp in any::<u64>(),
    ) {
        let active_users: Vec<ActiveUser> = users
            .into_iter()
            .map(|(user_id, client_id, joined_at)| ActiveUser { user_id, client_id, joined_at })
            .collect();
        server(ServerMessage::UserPresence(UserPresence {
            payload: Presence { project_id, user_count: active_users.len(), active_users },
            operation_id,
            timestamp,
        }))?;
    }

    #[test]
    fn project_updates(
        kind in update_type(),
        payload in option::of(json_value()),
        operation_id in option::of(text()),
        timestamp in any::<u64>(),
        project_id in text(),
        user_id in option::of(text()),
    ) {
        server(ServerMessage::Update(ProjectUpdate {
            kind, payload, operation_id, timestamp, project_id, user_id,
        }))?;
    }

    #[test]
    fn error_frames(message in text(), details in text(), timestamp in any::<u64>()) {
        server(ServerMessage::Error(ErrorFrame {
            error: message.clone(), message, details, timestamp,
        }))?;
    }

    #[test]
    fn broadcast_bodies(
        kind in update_type(),
        project_id in non_empty(),
        payload in option::of(json_value()),
        operation_id in option::of(text()),
        timestamp in option::of(any::<u64>()),
        user_id in option::of(non_empty()),
    ) {
        let req = BroadcastRequest { kind, project_id, payload, operation_id, timestamp, user_id };
        let bytes = encode_broadcast(&req);
        prop_assert_eq!(decode_broadcast(&bytes), Ok(req));
    }

    /// Whatever a client sends, decoding never panics and an error is typed.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..64)) {
        let _ = decode_client(&bytes);
        let _ = decode_server(&bytes);
        let _ = decode_broadcast(&bytes);
    }
}
