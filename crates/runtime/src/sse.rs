//! A system's server-sent-event stream: `GET <WebSocket path>/sse` answered with
//! `text/event-stream`, for clients that only receive (a browser's `EventSource`, `curl -N`).
//!
//! It is a hub connection like a WebSocket's, admitted the same way ([`decide`]: the origin
//! allow-list, the system's token, the connection limit, `503` while shutting down; the socket
//! budget and per-address caps at accept), with the same limits, slow-consumer policy and
//! heartbeat; only the framing differs ([`crate::outbox::Framing`]). What a WebSocket client
//! would choose by sending a message, this one chooses with query parameters: the system's
//! [`switchboard_protocol::SystemSpec::sse_setup`] turns them into client messages, decoded
//! and handed to the hub here as if the client had sent them right after opening.
//!
//! Protocol v2 is asked for with `?sb=2` (or `Accept: text/event-stream; sb=2`): events are
//! v2 frames, and those that move a position carry an id naming every position of the session
//! ([`crate::event_id`]), so the `Last-Event-ID` a reconnecting client sends is turned into
//! the upgrade's `sb_session` and `sb_since`, a resume without a gap.
//!
//! The connection never sends, so it is never closed for idleness; a dead client shows when a
//! heartbeat comment cannot be written. Its task ([`run`]) only reads and discards what the
//! client sends (a fixed buffer) and notices its end. A close from the server is a comment
//! (`: close <code> <reason>`) and then the end of the stream (the response has no length, so
//! the end of the connection ends it).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use switchboard_hub::{Dialect, OpenInfo};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::http::{header, HeaderMap, Method};

use crate::event_id::{self, MAX_LAST_EVENT_ID_BYTES};
use crate::gate::{host_problem, origin_header, Verdict};
use crate::hub_task::{Link, Opened};
use crate::logging::{Clip, CONNECTIONS, REFUSALS};
use crate::outbox::{Framing, Outbox};
use crate::reader::CLOSE_GRACE;
use crate::stream::Stream;
use crate::system::System;
use crate::upgrade::RequestHead;

/// The longest query string of a stream request, in bytes; longer is answered `400`.
pub const MAX_QUERY_BYTES: usize = 8 * 1024;
/// The most client messages a query may stand for; more is answered `400`.
pub const MAX_SETUP_MESSAGES: usize = 64;
/// The `Content-Type` of the stream.
pub const CONTENT_TYPE: &str = "text/event-stream";
/// The label refusals of stream requests are counted under (`switchboard_refused_total`).
pub const REFUSAL_KIND: &str = "sse";

/// A refusal as a transport writes it: the status, the headers, the body.
pub type Refusal = (u16, Vec<(&'static str, String)>, Bytes);

/// What to answer a request for the event stream with.
#[derive(Debug)]
pub enum Opening {
    /// Refuse with this HTTP status and reason (counted and logged already).
    Refuse {
        /// The status.
        status: u16,
        /// Why, for the response body (client-supplied parts clipped).
        reason: String,
    },
    /// Answer `200` ([`Accepted::head`]) and run the stream ([`run`]): it is registered with
    /// the hub, its greeting waits in the outbox.
    Accept(Box<Accepted>),
}

/// A stream registered with its hub before its `200`.
#[derive(Debug)]
pub struct Accepted {
    /// The hub's answer.
    pub opened: Opened,
    /// Its outbox (event framing) and read pacing.
    pub link: Link,
    /// The client messages its query stands for, as the hub will be handed them.
    setup: Vec<String>,
    /// The `Origin` to allow in the answer (the page's, found allowed), if the request had one.
    allow_origin: Option<String>,
}

impl Accepted {
    /// The response head: `200`, `text/event-stream`, no caching, no proxy buffering, no length
    /// (the end of the connection ends the stream), and the page's origin allowed when it came
    /// from a browser page the system allows.
    pub fn head(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: {CONTENT_TYPE}\r\ncache-control: no-cache\r\n\
             x-accel-buffering: no\r\nconnection: close\r\n"
        );
        if let Some(origin) = &self.allow_origin {
            head.push_str(&format!(
                "access-control-allow-origin: {origin}\r\nvary: Origin\r\n"
            ));
        }
        head.push_str("\r\n");
        head.into_bytes()
    }
}

impl Opening {
    /// A refusal's status, headers and body (`Allow: GET` on a `405`); `None` for an accepted
    /// stream.
    pub fn refusal(&self) -> Option<Refusal> {
        let Opening::Refuse { status, reason } = self else {
            return None;
        };
        let mut headers = vec![("content-type", "text/plain; charset=utf-8".to_string())];
        if *status == 405 {
            headers.push(("allow", "GET".to_string()));
        }
        Some((*status, headers, Bytes::from(reason.clone())))
    }
}

/// Count a refused stream request, log it under the refusal log budget, and return the answer.
fn refuse(
    system: &System,
    peer: SocketAddr,
    status: u16,
    reason: String,
    why: &'static str,
) -> Opening {
    system.refusals().count(REFUSAL_KIND, why);
    if REFUSALS.allow() {
        tracing::info!(
            system = system.name(),
            %peer,
            status,
            reason = %Clip(&reason),
            "event stream refused"
        );
    }
    Opening::Refuse { status, reason }
}

/// Whether the client asks for protocol v2: `sb=2` in the query, or a `text/event-stream`
/// media range with the parameter `sb=2` in `Accept`.
fn wants_v2(query: &[(String, String)], headers: &HeaderMap) -> bool {
    query.iter().any(|(k, v)| k == "sb" && v == "2")
        || headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|range| {
                let mut parts = range.split(';').map(str::trim);
                parts
                    .next()
                    .is_some_and(|t| t.eq_ignore_ascii_case(CONTENT_TYPE))
                    && parts.any(|p| p.replace(' ', "") == "sb=2")
            })
}

/// The request's `Last-Event-ID`, if it has a non-empty one; an error (for a `400`) when there
/// are several, or it is not visible ASCII or too long.
fn last_event_id(headers: &HeaderMap) -> Result<Option<&str>, &'static str> {
    let mut values = headers.get_all("last-event-id").iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("more than one Last-Event-ID header");
    }
    if first.len() > MAX_LAST_EVENT_ID_BYTES {
        return Err("Last-Event-ID is too long");
    }
    let id = first
        .to_str()
        .map_err(|_| "Last-Event-ID is not visible ASCII")?;
    Ok(Some(id.trim()).filter(|id| !id.is_empty()))
}

/// Decide a request for `system`'s event stream from `peer` (its path already found to be the
/// stream's, and not a WebSocket upgrade).
pub async fn decide(system: &System, req: RequestHead<'_>, peer: SocketAddr) -> Opening {
    let path = req.uri.path();
    if req.method != Method::GET {
        let reason = format!(
            "{} is a server-sent-event stream: GET only, not {}",
            Clip(path),
            Clip(req.method.as_str())
        );
        return refuse(system, peer, 405, reason, "method");
    }
    if let Some(problem) = host_problem(req.version, req.headers) {
        return refuse(system, peer, 400, problem.into(), "request");
    }
    let query = req.uri.query();
    if query.is_some_and(|q| q.len() > MAX_QUERY_BYTES) {
        let reason = format!("the query string exceeds {MAX_QUERY_BYTES} bytes");
        return refuse(system, peer, 400, reason, "request");
    }
    let resume = match last_event_id(req.headers).map(|id| id.map(event_id::resume)) {
        Ok(None) => None,
        Ok(Some(Ok(resume))) => Some(resume),
        Err(why) | Ok(Some(Err(why))) => {
            return refuse(system, peer, 400, why.into(), "last_event_id")
        }
    };
    if system.is_stopping() {
        return Opening::Refuse {
            status: 503,
            reason: "server shutting down".into(),
        };
    }
    let origin = origin_header(req.headers);
    let allow_origin = origin.ok().flatten().map(str::to_string);
    let mut info = match system.endpoint.admit(path, query, origin) {
        Verdict::Accept(info) => info,
        Verdict::Refuse(status, reason, why) => {
            return refuse(system, peer, status, reason, why.as_str())
        }
        // A WebSocket is told with a close frame after its upgrade; a stream has no such
        // thing, and an `EventSource` refused with an error status does not retry.
        Verdict::Close(_, reason) => return refuse(system, peer, 401, reason.into(), "token"),
    };
    let v2 = system.speaks_v2() && wants_v2(&info.query, req.headers);
    if let (true, Some(resume)) = (v2, resume) {
        // The browser's last id is newer than the positions in the URL it keeps reopening.
        info.query
            .retain(|(k, _)| k != "sb_session" && k != "sb_since");
        info.query.extend(resume);
    }
    let setup = (system.spec.sse_setup)(&info.query);
    if setup.len() > MAX_SETUP_MESSAGES {
        let reason = format!("the query stands for more than {MAX_SETUP_MESSAGES} messages");
        return refuse(system, peer, 400, reason, "request");
    }
    let info = OpenInfo {
        dialect: if v2 { Dialect::V2 } else { Dialect::V1 },
        receive_only: true,
        ..info
    };
    let framing = if v2 { Framing::SseV2 } else { Framing::Sse };
    let link = Link {
        outbox: system.outbox_framed(framing),
    };
    match system.hub().open(info, link.clone()).await {
        Ok(Ok(opened)) => Opening::Accept(Box::new(Accepted {
            opened,
            link,
            setup,
            allow_origin,
        })),
        Ok(Err(e)) => refuse(system, peer, 503, e.to_string(), "limit"),
        Err(_) => Opening::Refuse {
            status: 503,
            reason: "server shutting down".into(),
        },
    }
}

/// Give up on a stream registered before its `200` that could not be answered.
pub async fn abandon(system: &System, opening: Opening) {
    if let Opening::Accept(accepted) = opening {
        accepted.link.outbox.abandon();
        let _ = system.hub().closed(accepted.opened.handle).await;
    }
}

/// How a stream ended.
enum End {
    /// The server closed it (its close comment is queued).
    Server,
    /// The client went away (the socket ended, or a write failed).
    Client,
}

/// Answer an accepted stream on `stream` and run it until either side ends it, then tell the
/// hub. One `info` line is logged when it starts and one when it ends, under the
/// [`CONNECTIONS`] log budget.
pub async fn run(system: &System, mut stream: Stream, accepted: Accepted, peer: SocketAddr) {
    let Accepted {
        opened,
        link,
        setup,
        ..
    } = &accepted;
    let (hub, out, handle) = (system.hub(), &link.outbox, opened.handle);
    let _open = system.sse_streams().opened();
    let head = accepted.head();
    let answered = async {
        stream.write_all(&head).await?;
        stream.flush().await
    };
    if answered.await.is_err() {
        out.abandon();
        let _ = hub.closed(handle).await;
        return;
    }
    out.connect(stream);
    for message in setup {
        let text = match opened.dialect {
            Dialect::V1 => message.clone(),
            _ => format!(r#"{{"sb":"msg","msg":{message}}}"#),
        };
        link.outbox.pacing().sent_to_hub(); // The hub reports each frame processed.
        if hub.text(handle, opened.dialect, text.into()).await.is_err() {
            break;
        }
    }
    if CONNECTIONS.allow() {
        tracing::info!(system = system.name(), client = %Clip(&opened.client_id), %peer, "event stream connected");
    }
    let end = watch(out).await;
    let (by, reason) = match (&end, out.closed_with()) {
        (End::Server, Some((code, reason))) => ("server", format!("{} {reason}", code.0)),
        _ => ("client", "connection lost".to_string()),
    };
    if let End::Server = end {
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            out.drained().await;
            out.shutdown().await;
        })
        .await;
    }
    out.abandon();
    let _ = hub.closed(handle).await;
    if CONNECTIONS.allow() {
        tracing::info!(
            system = system.name(),
            client = %Clip(&opened.client_id),
            %peer,
            by,
            reason = %Clip(&reason),
            secs = opened.at.elapsed().as_secs_f64(),
            "event stream disconnected"
        );
    }
}

/// Read and discard what the client sends until it goes away or the outbox ends.
async fn watch(out: &Arc<Outbox>) -> End {
    let mut discard = [0; 512];
    loop {
        let read = std::future::poll_fn(|cx| {
            let mut buf = tokio::io::ReadBuf::new(&mut discard);
            out.poll_read(cx, &mut buf).map_ok(|()| buf.filled().len())
        });
        let got = tokio::select! {
            biased;
            _ = out.ended() => None,
            got = read => Some(got),
        };
        match got {
            None if out.is_ended() => {
                return match out.closed_with() {
                    Some(_) => End::Server,
                    None => End::Client,
                }
            }
            None => {}
            Some(Ok(0) | Err(_)) => return End::Client,
            Some(Ok(_)) => {}
        }
    }
}
