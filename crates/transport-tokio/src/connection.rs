//! One WebSocket connection: a reader feeding the hub and a writer draining its outbox.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use switchboard_hub::{CloseCode, Frame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
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

/// Why a connection's reader stopped: the peer closed (or the socket failed), with the close
/// frame to answer with, if any.
type PeerEnd = Option<(CloseCode, &'static str)>;

/// Run a registered connection until either side ends it.
///
/// The reader runs in this task and the writer in its own, so a delivery wakes only the writer
/// and never polls the socket for reading.
pub async fn run<S>(ws: WebSocketStream<S>, hub: HubHandle, opened: Opened)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handle = opened.handle;
    let (sink, mut stream) = ws.split();
    let (stop, stopped) = oneshot::channel();
    let mut writer = tokio::spawn(write(sink, hub.clone(), opened, stopped));

    let reader = async {
        while let Some(msg) = stream.next().await {
            let sent = match msg {
                Ok(Message::Text(t)) => hub.frame(handle, Frame::Text(Bytes::from(t))).await,
                Ok(Message::Binary(b)) => hub.frame(handle, Frame::Binary(b)).await,
                // tungstenite answers pings itself; both show the peer is alive.
                Ok(Message::Ping(_) | Message::Pong(_)) => hub.activity(handle).await,
                Ok(Message::Close(_)) => return None,
                Ok(Message::Frame(_)) => Ok(()),
                Err(WsError::Capacity(_)) => {
                    return Some((CloseCode::MESSAGE_TOO_BIG, "frame exceeds the size limit"))
                }
                Err(WsError::Utf8(_)) => {
                    return Some((CloseCode::INVALID_PAYLOAD, "text frame is not valid UTF-8"))
                }
                Err(WsError::Protocol(_)) => {
                    return Some((CloseCode(1002), "WebSocket protocol error"))
                }
                Err(_) => return None,
            };
            if sent.is_err() {
                return Some((CloseCode::GOING_AWAY, "server shutting down"));
            }
        }
        None
    };

    let peer_end: Option<PeerEnd> = tokio::select! {
        end = reader => Some(end),
        _ = &mut writer => None,
    };
    match peer_end {
        // The peer is gone: let the writer answer with its close frame first (telling the hub
        // first would drop the outbox and end the writer without it), then tell the hub.
        Some(end) => {
            let _ = stop.send(end);
            if tokio::time::timeout(2 * CLOSE_GRACE, &mut writer)
                .await
                .is_err()
            {
                writer.abort();
            }
            let _ = hub.closed(handle).await;
        }
        // The writer stopped first: the hub closed the connection, or the socket failed while
        // writing (then the hub must hear of it; for a connection it closed, this is a no-op).
        None => {
            let _ = hub.closed(handle).await;
        }
    }
}

/// Drain the outbox onto the socket until the hub closes the connection, the socket fails, or
/// the reader reports the peer gone (`stopped`).
async fn write<W>(
    mut sink: W,
    hub: HubHandle,
    opened: Opened,
    mut stopped: oneshot::Receiver<PeerEnd>,
) where
    W: futures_util::Sink<Message> + Unpin,
{
    let Opened {
        handle,
        mut outbox,
        closed,
        report_every,
    } = opened;
    let mut unreported = 0usize;
    loop {
        let first = tokio::select! {
            biased;
            end = &mut stopped => {
                if let Ok(Some((code, reason))) = end {
                    let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(close_frame(code, reason))).await;
                }
                break;
            }
            out = outbox.recv() => out,
        };
        let Some(first) = first else {
            break; // The hub task is gone.
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
                return;
            }
            if bytes < FLUSH_EVERY_BYTES {
                next = outbox.try_recv().ok();
            }
        }
        if let Some(frame) = close {
            let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(frame)).await;
            break;
        }
        tokio::select! {
            r = sink.flush() => if r.is_err() { return },
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
                return;
            }
        }
        unreported += bytes;
        if unreported >= report_every || (unreported > 0 && outbox.is_empty()) {
            if hub.flushed(handle, unreported).await.is_err() {
                break;
            }
            unreported = 0;
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
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
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
