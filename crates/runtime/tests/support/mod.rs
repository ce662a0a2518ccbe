//! What the outbox tests share: the server's half of a WebSocket opening handshake, a flush
//! sink that reports nowhere, and numbered frames checked on the client's side.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use switchboard_hub::{ConnectionHandle, Text};
use switchboard_runtime::outbox::FlushSink;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::{Error, Message};

/// Flush reports go nowhere: these tests watch the socket.
#[derive(Debug)]
pub struct NoHub;

impl FlushSink for NoHub {
    fn flushed(&self, _: ConnectionHandle, _: usize) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async {})
    }

    fn system(&self) -> &'static str {
        "test"
    }
}

/// Frame `i`: its number in eight digits, padded to `size` bytes.
pub fn numbered(i: usize, size: usize) -> Text {
    let mut s = format!("{i:08}");
    s.push_str(&"x".repeat(size - s.len()));
    Text::from(s)
}

/// Read frames `from..to` of `size` bytes, whole and in order.
pub async fn expect_numbered(
    client: &mut (impl Stream<Item = Result<Message, Error>> + Unpin),
    from: usize,
    to: usize,
    size: usize,
) {
    for i in from..to {
        let msg = tokio::time::timeout(Duration::from_secs(20), client.next())
            .await
            .expect("the backlog drains")
            .expect("the stream stays open")
            .expect("a valid frame");
        let Message::Text(t) = msg else {
            panic!("frame {i}: expected text, got {msg:?}")
        };
        assert_eq!(t.len(), size, "frame {i} arrives whole");
        assert_eq!(
            &t.as_str()[..8],
            format!("{i:08}"),
            "frames arrive in order"
        );
    }
}

/// Read a client's upgrade request from `stream` and answer `101`, as the transports do (the
/// tests here are about what the outbox writes afterwards).
pub async fn accept_upgrade(stream: &mut (impl AsyncRead + AsyncWrite + Unpin)) {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let key = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim())
        })
        .expect("a Sec-WebSocket-Key");
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    stream.write_all(answer.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
}
