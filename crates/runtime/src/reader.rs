//! One WebSocket connection's task: read frames, decode them here, hand them to the hub, and end
//! the connection cleanly.
//!
//! Writes do not happen here: the hub task writes the hub's frames straight into the
//! connection's [`Outbox`]. This task only reads (so a delivery never wakes it) and decodes (so
//! every core decodes, not just the hub task's).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use switchboard_hub::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::hub_task::{HubHandle, Opened};
use crate::logging::{Clip, CONNECTIONS};
use crate::outbox::{Duplex, Outbox};
use crate::pacing::Pacing;

/// How long a close handshake may take before the socket is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// A WebSocket over a connection's socket, writing through its [`Outbox`].
pub type Socket = WebSocketStream<Duplex>;

/// Send a close frame after whatever is queued, give it [`CLOSE_GRACE`] to go out, and stop
/// writing (used for connections the hub never registered). The caller then drops `ws`.
pub async fn close_with(ws: &mut Socket, code: CloseCode, reason: &str) {
    let out = ws.get_ref().outbox().clone();
    out.close(code, reason);
    finish(ws, &out).await;
}

/// Wait (at most [`CLOSE_GRACE`]) for the queue to drain and for the peer to answer our close,
/// reading and discarding whatever it still sends, so it sees our close frame rather than a
/// reset; then stop writing.
async fn finish(ws: &mut Socket, out: &Outbox) {
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        out.drained().await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                break;
            }
        }
    })
    .await;
    out.abandon();
}

/// How the read loop ended.
enum End {
    /// The hub closed the connection (its close frame is queued) or the socket failed.
    Hub,
    /// The peer sent a close frame (its code and reason); tungstenite has queued the reply.
    PeerClosed(Option<(u16, String)>),
    /// The peer broke the protocol; answer with this close frame.
    PeerError(CloseCode, &'static str),
    /// The socket ended without a close handshake, or the hub task is gone.
    Gone,
}

impl End {
    /// Who ended it, the close code and the reason, for the disconnect log line (1006: no close
    /// frame, as RFC 6455 reports it).
    fn describe(&self, out: &Outbox) -> (&'static str, u16, String) {
        match self {
            End::Hub => match out.closed_with() {
                Some((code, reason)) => ("server", code.0, reason.into()),
                None => ("server", 1006, "socket failed".into()),
            },
            End::PeerClosed(Some((code, reason))) => ("client", *code, reason.clone()),
            End::PeerClosed(None) => ("client", 1005, String::new()),
            End::PeerError(code, reason) => ("server", code.0, (*reason).into()),
            End::Gone => ("client", 1006, "connection lost".into()),
        }
    }
}

/// Run a registered connection until either side ends it, then tell the hub. The caller owns
/// the socket and drops it afterwards.
///
/// Every connection task holds this future for the connection's life, so it takes references
/// (an `async fn` keeps a second copy of what it takes by value) and boxes its ending.
///
/// One `info` line is logged when it starts and one when it ends (system, client id, peer; at the
/// end who closed, the code, the reason and the duration), both under the
/// [`CONNECTIONS`] log budget.
pub async fn run(
    ws: &mut Socket,
    hub: &HubHandle,
    opened: &Opened,
    pacing: &Pacing,
    peer: SocketAddr,
) {
    let (system, handle) = (hub.name(), opened.handle);
    if CONNECTIONS.allow() {
        tracing::info!(system, client = %Clip(&opened.client_id), %peer, "connected");
    }
    let out = ws.get_ref().outbox().clone();
    let end = read(ws, &out, pacing, hub, opened).await;
    let (by, code, reason) = end.describe(&out);
    Box::pin(end_with(ws, &out, end)).await;
    let _ = hub.closed(handle).await;
    if CONNECTIONS.allow() {
        tracing::info!(
            system,
            client = %Clip(&opened.client_id),
            %peer,
            by,
            code,
            reason = %Clip(&reason),
            secs = opened.at.elapsed().as_secs_f64(),
            "disconnected"
        );
    }
}

async fn end_with(ws: &mut Socket, out: &Arc<Outbox>, end: End) {
    match end {
        End::Hub => finish(ws, out).await,
        End::PeerClosed(_) => {
            // Writes tungstenite's reply to the peer's close into the outbox.
            let _ = ws.flush().await;
            let _ = tokio::time::timeout(CLOSE_GRACE, out.drained()).await;
            out.abandon();
        }
        End::PeerError(code, reason) => {
            out.close(code, reason);
            let _ = tokio::time::timeout(CLOSE_GRACE, out.drained()).await;
            out.abandon();
        }
        End::Gone => out.abandon(),
    }
}

async fn read(
    ws: &mut Socket,
    out: &Arc<Outbox>,
    pacing: &Pacing,
    hub: &HubHandle,
    opened: &Opened,
) -> End {
    let (handle, dialect) = (opened.handle, opened.dialect);
    loop {
        let msg = tokio::select! {
            biased;
            _ = out.ended() => {
                if out.is_ended() {
                    return End::Hub;
                }
                continue;
            }
            // Wait while the hub has paused this connection or is behind on its frames.
            msg = async { pacing.readable().await; ws.next().await } => msg,
        };
        let sent = match msg {
            Some(Ok(Message::Text(t))) => {
                pacing.sent_to_hub();
                hub.text(handle, dialect, t.into()).await
            }
            Some(Ok(Message::Binary(b))) => {
                pacing.sent_to_hub();
                hub.binary(handle, b).await
            }
            // tungstenite answers pings itself; both show the peer is alive, and both count
            // against the inbound rate.
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                pacing.sent_to_hub();
                hub.activity(handle).await
            }
            Some(Ok(Message::Close(frame))) => {
                return End::PeerClosed(frame.map(|f| (u16::from(f.code), f.reason.to_string())))
            }
            Some(Ok(Message::Frame(_))) => Ok(()),
            Some(Err(WsError::Capacity(_))) => {
                return End::PeerError(CloseCode::MESSAGE_TOO_BIG, "frame exceeds the size limit")
            }
            Some(Err(WsError::Utf8(_))) => {
                return End::PeerError(CloseCode::INVALID_PAYLOAD, "text frame is not valid UTF-8")
            }
            Some(Err(WsError::Protocol(_))) => {
                return End::PeerError(CloseCode(1002), "WebSocket protocol error")
            }
            Some(Err(_)) | None => return End::Gone,
        };
        if sent.is_err() {
            out.close(CloseCode::GOING_AWAY, "server shutting down");
            return End::Hub;
        }
    }
}
