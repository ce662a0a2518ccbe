//! The one upgrade decision both transports make, before any `101` goes out: the handshake, the
//! path, the origin and the token (the gate), then the connection limit, by registering the
//! connection with its hub; and, once the transport has the upgraded socket, running it.

use std::net::SocketAddr;

use bytes::Bytes;
use switchboard_hub::{wire, CloseCode, Dialect, OpenInfo};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderValue, Method, Uri, Version};

use crate::gate::{handshake_problem, origin_header, RefusalReason, Verdict};
use crate::hub_task::{Link, Opened};
use crate::logging::{Clip, REFUSALS};
use crate::reader;
use crate::stream::Stream;
use crate::system::System;

/// The parts of an upgrade request the decision reads.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a Method,
    /// The HTTP version.
    pub version: Version,
    /// The target.
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
}

impl<'a, B> From<&'a tokio_tungstenite::tungstenite::http::Request<B>> for RequestHead<'a> {
    fn from(req: &'a tokio_tungstenite::tungstenite::http::Request<B>) -> Self {
        RequestHead {
            method: req.method(),
            version: req.version(),
            uri: req.uri(),
            headers: req.headers(),
        }
    }
}

/// What to answer an upgrade request with.
#[derive(Debug)]
pub enum Decision {
    /// Refuse with this HTTP status and reason (counted and logged already).
    Refuse {
        /// The status.
        status: u16,
        /// Why, for the response body (client-supplied parts clipped).
        reason: String,
    },
    /// Send the `101`, then this close frame (the seed's documented way to refuse a token).
    CloseAfterUpgrade(CloseCode, &'static str),
    /// Send the `101` and run the connection: it is registered with the hub, its greeting
    /// waits in the outbox.
    Accept(Accepted),
}

/// A connection registered with its hub before the `101`.
#[derive(Debug)]
pub struct Accepted {
    /// The hub's answer.
    pub opened: Opened,
    /// Its outbox and read pacing, waiting for the socket.
    pub link: Link,
}

impl Decision {
    /// The status line and headers to answer with, after `Sec-WebSocket-Key` `key`: the `101`
    /// for an upgrade, else the refusal (with `Sec-WebSocket-Version: 13` on a `426`).
    pub fn response_head(&self, key: Option<&HeaderValue>) -> (u16, Vec<(&'static str, String)>) {
        match self {
            Decision::Refuse { status, .. } => {
                let mut headers = vec![("content-type", "text/plain; charset=utf-8".into())];
                if *status == 426 {
                    headers.push(("sec-websocket-version", "13".into()));
                }
                (*status, headers)
            }
            _ => {
                let accept = derive_accept_key(key.map_or(&b""[..], HeaderValue::as_bytes));
                let mut headers = vec![
                    ("upgrade", "websocket".into()),
                    ("connection", "Upgrade".into()),
                    ("sec-websocket-accept", accept),
                ];
                if let Decision::Accept(a) = self {
                    if a.opened.dialect == Dialect::V2 {
                        headers.push(("sec-websocket-protocol", wire::SUBPROTOCOL.into()));
                    }
                }
                (101, headers)
            }
        }
    }
}

/// Count a refused upgrade, log it under the refusal log budget, and return the decision.
fn refuse(
    system: &System,
    peer: SocketAddr,
    status: u16,
    reason: String,
    why: RefusalReason,
) -> Decision {
    system.refusals().count("upgrade", why.as_str());
    if REFUSALS.allow() {
        tracing::info!(
            system = system.name(),
            %peer,
            status,
            reason = %Clip(&reason),
            "upgrade refused"
        );
    }
    Decision::Refuse { status, reason }
}

/// Decide an upgrade request for `system` from `peer`.
pub async fn decide(system: &System, req: RequestHead<'_>, peer: SocketAddr) -> Decision {
    if let Some((status, reason)) = handshake_problem(req.method, req.version, req.headers) {
        return refuse(
            system,
            peer,
            status,
            reason.into(),
            RefusalReason::Handshake,
        );
    }
    if system.is_stopping() {
        return Decision::Refuse {
            status: 503,
            reason: "server shutting down".into(),
        };
    }
    let verdict =
        system
            .endpoint
            .check(req.uri.path(), req.uri.query(), origin_header(req.headers));
    let info = match verdict {
        Verdict::Refuse(status, reason, why) => return refuse(system, peer, status, reason, why),
        Verdict::Close(code, reason) => {
            system
                .refusals()
                .count("upgrade", RefusalReason::Token.as_str());
            if REFUSALS.allow() {
                tracing::info!(system = system.name(), %peer, code = code.0, reason, "connection refused after upgrade");
            }
            return Decision::CloseAfterUpgrade(code, reason);
        }
        Verdict::Accept(info) => info,
    };
    let info = OpenInfo {
        // v2 when the client offers it and this system keeps history; else v1, and no
        // subprotocol is echoed (a browser then reports an empty `protocol` and speaks v1).
        dialect: if system.speaks_v2() && offers(req.headers, wire::SUBPROTOCOL) {
            Dialect::V2
        } else {
            Dialect::V1
        },
        ..info
    };
    register(system, info, peer).await
}

/// Whether the client lists `protocol` in its `Sec-WebSocket-Protocol` headers.
fn offers(headers: &HeaderMap, protocol: &str) -> bool {
    headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == protocol)
}

/// Register an accepted upgrade with the hub: at the connection limit the answer is `503`.
async fn register(system: &System, info: OpenInfo, peer: SocketAddr) -> Decision {
    let hub = system.hub();
    let link = Link {
        outbox: system.outbox(),
    };
    match hub.open(info, link.clone()).await {
        Ok(Ok(opened)) => Decision::Accept(Accepted { opened, link }),
        Ok(Err(e)) => refuse(system, peer, 503, e.to_string(), RefusalReason::Limit),
        Err(_) => Decision::Refuse {
            status: 503,
            reason: "server shutting down".into(),
        },
    }
}

/// Make the WebSocket of an upgraded connection on `stream` (after the `101` went out; `leftover`
/// is what the client sent after its request). For [`Decision::Accept`] it returns the socket
/// and the registration, for the caller to hand to a [`crate::reader::Task`] (from its opening,
/// which the task boxes: its state is freed once the connection is open). For
/// [`Decision::CloseAfterUpgrade`] the close frame is sent here and `None` returned.
pub async fn socket(
    system: &System,
    decision: Decision,
    stream: Stream,
    leftover: Vec<u8>,
) -> Option<(reader::Socket, Accepted)> {
    let (out, accepted) = match decision {
        Decision::Accept(accepted) => (accepted.link.outbox.clone(), Ok(accepted)),
        Decision::CloseAfterUpgrade(code, reason) => (system.outbox(), Err((code, reason))),
        Decision::Refuse { .. } => return None,
    };
    out.connect(stream);
    let mut ws = reader::Socket::new(out, &leftover, reader::limits(&system.config));
    match accepted {
        Ok(accepted) => Some((ws, accepted)),
        Err((code, reason)) => {
            reader::close_with(&mut ws, code, reason).await;
            None
        }
    }
}

/// Give up on a connection registered before the `101` whose upgrade did not complete.
pub async fn abandon(system: &System, decision: Decision) {
    if let Decision::Accept(accepted) = decision {
        accepted.link.outbox.abandon();
        let _ = system.hub().closed(accepted.opened.handle).await;
    }
}

/// The body of a refusal answer.
pub fn refusal_body(decision: &Decision) -> Bytes {
    match decision {
        Decision::Refuse { reason, .. } => Bytes::from(reason.clone()),
        _ => Bytes::new(),
    }
}
