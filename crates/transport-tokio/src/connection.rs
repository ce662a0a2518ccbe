//! One WebSocket connection: a reader feeding the hub and a writer draining its outbox.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use switchboard_hub::{CloseCode, Frame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::driver::{HubHandle, Opened, Out};

/// Frames written before a flush is forced, so one slow flush never hides a long backlog.
const FLUSH_EVERY_BYTES: usize = 64 * 1024;
/// How long a close frame may take to go out before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A close frame with `reason` cut to the 123 bytes a control frame allows.
pub fn close_frame(code: CloseCode, reason: &str) -> Message {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame {
        code: WsCloseCode::from(code.0),
        reason: reason[..end].into(),
    }))
}

/// Send one close frame and give up after a short grace period.
pub async fn close_with<S>(ws: &mut WebSocketStream<S>, code: CloseCode, reason: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(CLOSE_GRACE, ws.send(close_frame(code, reason))).await;
}

enum End {
    /// The peer closed or the socket failed: the hub must be told.
    Peer(Option<(CloseCode, &'static str)>),
    /// The hub closed the connection (its close frame is sent or abandoned).
    Hub,
}

/// Run a registered connection until either side ends it.
pub async fn run<S>(ws: WebSocketStream<S>, hub: HubHandle, opened: Opened)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let Opened {
        handle,
        mut outbox,
        closed,
    } = opened;
    let (mut sink, mut stream) = ws.split();

    let reader = async {
        while let Some(msg) = stream.next().await {
            let sent = match msg {
                Ok(Message::Text(t)) => hub.frame(handle, Frame::Text(Bytes::from(t))).await,
                Ok(Message::Binary(b)) => hub.frame(handle, Frame::Binary(b)).await,
                // tungstenite answers pings itself; both show the peer is alive.
                Ok(Message::Ping(_) | Message::Pong(_)) => hub.activity(handle).await,
                Ok(Message::Close(_)) => return End::Peer(None),
                Ok(Message::Frame(_)) => Ok(()),
                Err(WsError::Capacity(_)) => {
                    return End::Peer(Some((
                        CloseCode::MESSAGE_TOO_BIG,
                        "frame exceeds the size limit",
                    )))
                }
                Err(WsError::Utf8(_)) => {
                    return End::Peer(Some((
                        CloseCode::INVALID_PAYLOAD,
                        "text frame is not valid UTF-8",
                    )))
                }
                Err(WsError::Protocol(_)) => {
                    return End::Peer(Some((CloseCode(1002), "WebSocket protocol error")))
                }
                Err(_) => return End::Peer(None),
            };
            if sent.is_err() {
                return End::Peer(Some((CloseCode::GOING_AWAY, "server shutting down")));
            }
        }
        End::Peer(None)
    };

    let writer = async {
        loop {
            let Some(first) = outbox.recv().await else {
                return End::Hub; // The hub task is gone.
            };
            let mut next = Some(first);
            let mut bytes = 0usize;
            let mut close = None;
            while let Some(out) = next.take() {
                let msg = match out {
                    Out::Frame(text) => {
                        bytes += text.len();
                        Message::Text(text)
                    }
                    Out::Ping => Message::Ping(Bytes::new()),
                    Out::Close(code, reason) => {
                        close = Some(close_frame(code, &reason));
                        break;
                    }
                };
                if sink.feed(msg).await.is_err() {
                    return End::Peer(None);
                }
                if bytes < FLUSH_EVERY_BYTES {
                    next = outbox.try_recv().ok();
                }
            }
            if let Some(frame) = close {
                let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(frame)).await;
                return End::Hub;
            }
            tokio::select! {
                r = sink.flush() => if r.is_err() { return End::Peer(None) },
                // The hub gave up on this connection while the socket would not take more bytes:
                // the client is not reading. Give the close a moment, then drop the socket.
                _ = closed.notified() => {
                    let _ = tokio::time::timeout(CLOSE_GRACE, async {
                        let _ = sink.flush().await;
                        while let Some(out) = outbox.recv().await {
                            if let Out::Close(code, reason) = out {
                                let _ = sink.send(close_frame(code, &reason)).await;
                                break;
                            }
                        }
                    })
                    .await;
                    return End::Hub;
                }
            }
            if bytes > 0 && hub.flushed(handle, bytes).await.is_err() {
                return End::Hub;
            }
        }
    };

    let end = tokio::select! {
        e = reader => e,
        e = writer => e,
    };
    if let End::Peer(close) = end {
        let _ = hub.closed(handle).await;
        if let Some((code, reason)) = close {
            let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(close_frame(code, reason))).await;
        }
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, sink.close()).await;
}

/// Turn an upgraded socket and the gate's verdict into a running hub connection.
pub async fn open<S>(
    mut ws: WebSocketStream<S>,
    verdict: crate::gate::Verdict,
    hub: HubHandle,
    peer: std::net::SocketAddr,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    use crate::gate::Verdict;
    let info = match verdict {
        Verdict::Accept(info) => info,
        Verdict::Close(code, reason) => {
            tracing::info!(%peer, system = hub.name(), reason, "connection refused after upgrade");
            close_with(&mut ws, code, reason).await;
            return;
        }
        Verdict::Refuse(..) => return,
    };
    match hub.open(info).await {
        Ok(Ok(opened)) => {
            tracing::debug!(%peer, system = hub.name(), conn = opened.handle.serial(), "connected");
            run(ws, hub, opened).await;
        }
        Ok(Err(e)) => {
            tracing::warn!(%peer, system = hub.name(), error = %e, "connection refused");
            close_with(
                &mut ws,
                CloseCode::TRY_AGAIN_LATER,
                "server is at its connection limit",
            )
            .await;
        }
        Err(_) => close_with(&mut ws, CloseCode::GOING_AWAY, "server shutting down").await,
    }
}
