//! Socket.IO v4 over Engine.IO v4, websocket transport only (`/socket.io/?EIO=4&transport=websocket`):
//! the server opens with `0{..}`, the client joins the main namespace with `40`, the server
//! acknowledges with `40{"sid":..}`, events arrive as `42["name",data]`, and the server's pings
//! (`2`) are answered with pongs (`3`).

/// Joins the main namespace.
pub const CONNECT: &str = "40";
/// The answer to a ping.
pub const PONG: &str = "3";

/// What a frame from the server is.
#[derive(Debug, PartialEq)]
pub enum Frame<'a> {
    /// Engine.IO open (`0{"sid":..,"pingInterval":..}`): answer with [`CONNECT`].
    Open,
    /// Engine.IO ping (`2`): answer with [`PONG`].
    Ping,
    /// The main namespace's connect acknowledgement (`40{..}`).
    Connected,
    /// A Socket.IO event (`42[..]`): the JSON array of its name and arguments.
    Event(&'a [u8]),
    /// Anything else (close, noop, a connect error, another namespace).
    Other,
}

/// Classify one text frame from the server.
pub fn classify(frame: &[u8]) -> Frame<'_> {
    match frame {
        [b'0', ..] => Frame::Open,
        [b'2'] => Frame::Ping,
        [b'4', b'0', ..] => Frame::Connected,
        [b'4', b'2', rest @ ..] => Frame::Event(rest),
        _ => Frame::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notice;

    #[test]
    fn classifies_the_handshake_pings_and_events() {
        assert_eq!(
            classify(br#"0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#),
            Frame::Open
        );
        assert_eq!(classify(br#"40{"sid":"xyz"}"#), Frame::Connected);
        assert_eq!(classify(b"2"), Frame::Ping);
        assert_eq!(classify(b"3"), Frame::Other);
        assert_eq!(classify(b"1"), Frame::Other);
        assert_eq!(classify(br#"44{"message":"nope"}"#), Frame::Other);
        let frame = format!(
            r#"42["todo:created",{}]"#,
            notice::build_payload(true, 1, 99)
        );
        let Frame::Event(array) = classify(frame.as_bytes()) else {
            panic!("an event: {frame}");
        };
        assert!(array.starts_with(br#"["todo:created","#));
        assert_eq!(notice::parse(array), Some((true, 99)));
    }
}
