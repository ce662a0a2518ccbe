//! The Pusher channels protocol, as far as `publish-all` speaks it: a client subscribes to a
//! public channel; a backend triggers an event with a signed request to the HTTP API
//! (`POST /apps/<id>/events`, query signed with HMAC-SHA256 of the app secret, body md5).

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;

/// An app's credentials.
#[derive(Debug, Clone)]
pub struct App {
    /// App id (in the API path).
    pub id: String,
    /// App key (in the client URL and the signed query).
    pub key: String,
    /// App secret (signs API requests).
    pub secret: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The path and signed query of a `POST /apps/<id>/events` with `body`, at `timestamp` (Unix
/// seconds): the query's parameters in sorted order, signed as Pusher's HTTP API documents it.
pub fn signed_events_path(app: &App, body: &str, timestamp: u64) -> String {
    let path = format!("/apps/{}/events", app.id);
    let body_md5 = hex(&Md5::digest(body.as_bytes()));
    // Already in sorted order: auth_key < auth_timestamp < auth_version < body_md5.
    let query = format!(
        "auth_key={}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={body_md5}",
        app.key
    );
    let to_sign = format!("POST\n{path}\n{query}");
    let mut mac = Hmac::<Sha256>::new_from_slice(app.secret.as_bytes())
        .expect("HMAC takes a key of any size");
    mac.update(to_sign.as_bytes());
    let signature = hex(&mac.finalize().into_bytes());
    format!("{path}?{query}&auth_signature={signature}")
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The body of a trigger: event `name` on `channel` with `data` (a JSON text, sent as a string).
pub fn trigger_body(name: &str, channel: &str, data: &str) -> String {
    format!(
        r#"{{"name":{},"channels":[{}],"data":{}}}"#,
        json_string(name),
        json_string(channel),
        json_string(data)
    )
}

/// A client's subscription to `channel`.
pub fn subscribe(channel: &str) -> String {
    format!(
        r#"{{"event":"pusher:subscribe","data":{{"channel":{}}}}}"#,
        json_string(channel)
    )
}

/// The answer to a `pusher:ping`.
pub const PONG: &str = r#"{"event":"pusher:pong","data":{}}"#;

/// What a frame from the server is.
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// `pusher:connection_established`.
    Established,
    /// `pusher_internal:subscription_succeeded`.
    Subscribed,
    /// `pusher:ping`: answer with [`PONG`].
    Ping,
    /// `pusher:error` or any other `pusher:` event.
    Protocol,
    /// An application event; its `data` string with the quotes unescaped, so the notice
    /// inside parses as it does on the other servers.
    Event(Vec<u8>),
}

/// Classify one frame from the server.
pub fn classify(frame: &[u8]) -> Frame {
    let find = |needle: &[u8]| frame.windows(needle.len()).any(|w| w == needle);
    if find(br#""pusher:connection_established""#) {
        Frame::Established
    } else if find(br#""pusher_internal:subscription_succeeded""#) {
        Frame::Subscribed
    } else if find(br#""pusher:ping""#) {
        Frame::Ping
    } else if find(br#""event":"pusher"#) {
        Frame::Protocol
    } else {
        let mut out = Vec::with_capacity(frame.len());
        let mut i = 0;
        while i < frame.len() {
            if frame[i] == b'\\' && frame.get(i + 1) == Some(&b'"') {
                out.push(b'"');
                i += 2;
            } else {
                out.push(frame[i]);
                i += 1;
            }
        }
        Frame::Event(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notice;

    /// The worked example of Pusher's HTTP API documentation.
    #[test]
    fn signs_the_documented_example() {
        let app = App {
            id: "3".into(),
            key: "278d425bdf160c739803".into(),
            secret: "7ad3773142a6692b25b8".into(),
        };
        let body = trigger_body("foo", "project-3", r#"{"some":"data"}"#);
        assert_eq!(
            body,
            r#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#
        );
        assert_eq!(
            signed_events_path(&app, &body, 1_353_088_179),
            "/apps/3/events?auth_key=278d425bdf160c739803&auth_timestamp=1353088179\
             &auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f\
             &auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
    }

    #[test]
    fn classifies_server_frames_and_finds_the_notice_in_an_event() {
        assert_eq!(
            classify(br#"{"event":"pusher:connection_established","data":"{\"socket_id\":\"1.2\",\"activity_timeout\":120}"}"#),
            Frame::Established
        );
        assert_eq!(
            classify(br#"{"event":"pusher_internal:subscription_succeeded","channel":"bench","data":"{}"}"#),
            Frame::Subscribed
        );
        assert_eq!(
            classify(br#"{"event":"pusher:ping","data":{}}"#),
            Frame::Ping
        );
        assert_eq!(
            classify(br#"{"event":"pusher:error","data":{"message":"x","code":4001}}"#),
            Frame::Protocol
        );
        let data = notice::build_payload(true, 7, 123_456);
        let frame = format!(
            r#"{{"event":"todo-created","channel":"bench","data":{}}}"#,
            json_string(&data)
        );
        let Frame::Event(unescaped) = classify(frame.as_bytes()) else {
            panic!("an event: {frame}");
        };
        assert_eq!(notice::parse(&unescaped), Some((true, 123_456)));
        assert_eq!(
            subscribe("bench"),
            r#"{"event":"pusher:subscribe","data":{"channel":"bench"}}"#
        );
    }
}
