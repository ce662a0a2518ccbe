//! One connection (plain TCP, or TLS past its handshake): HTTP/1.1 requests until a WebSocket
//! upgrade or a server-sent-event stream, then that. Only the translation between hyper and the
//! runtime lives here.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use switchboard_hub::HttpResponse;
use switchboard_runtime::accept::Shutdown;
use switchboard_runtime::admission::Ticket;
use switchboard_runtime::gate::has_token;
use switchboard_runtime::http::{self as policy, error, HttpPolicy, Plan, Reservation};
use switchboard_runtime::metrics::Metrics;
use switchboard_runtime::reader;
use switchboard_runtime::sse::{self, Opening};
use switchboard_runtime::upgrade::{self, Decision, RequestHead};
use switchboard_runtime::{Stream, System};

use crate::handover::{Handover, Slot};
use crate::HEADER_READ_TIMEOUT;

/// The response body type.
type Body = Full<Bytes>;

/// What every connection of one server shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) system: Arc<System>,
    pub(crate) policy: HttpPolicy,
    pub(crate) metrics: Metrics,
}

/// What the connection becomes once hyper is done with it.
enum Pending {
    /// An upgrade answered with `101`, waiting for hyper to hand the socket back.
    Upgrade {
        on_upgrade: OnUpgrade,
        decision: Decision,
    },
    /// An accepted event stream: hyper's answer goes nowhere, the stream waits in the slot.
    Events(Opening),
}

/// Where a request's handler leaves the socket's next life for the connection task.
#[derive(Default)]
struct PendingSlot {
    next: Mutex<Option<Pending>>,
    handover: Arc<Slot>,
}

impl PendingSlot {
    fn set(&self, pending: Pending) {
        *self.next.lock().unwrap_or_else(PoisonError::into_inner) = Some(pending);
    }
}

/// Serve one accepted connection until it closes (HTTP keep-alive, then maybe a WebSocket).
///
/// Every connection holds this future for its whole life, so the HTTP phase and the hand-over
/// are its opening, which [`reader::Task`] boxes (their state is freed once done): the task
/// keeps just the ticket and the peer's address beside the WebSocket's own state.
pub(crate) fn serve_connection(
    stream: Stream,
    peer: SocketAddr,
    ticket: Ticket,
    shared: Arc<Shared>,
    shutdown: Shutdown,
) -> reader::Task {
    let opening = async move {
        let (pending, taken) = serve_http(stream, peer, &shared, shutdown).await?;
        let system = &shared.system;
        let (on_upgrade, decision) = match pending {
            Pending::Upgrade {
                on_upgrade,
                decision,
            } => (on_upgrade, decision),
            // An event stream lives in this box: it has no WebSocket phase.
            Pending::Events(opening) => {
                match (opening, taken) {
                    (Opening::Accept(accepted), Some(stream)) => {
                        sse::run(system, stream, *accepted, peer).await;
                    }
                    (opening, _) => sse::abandon(system, opening).await,
                }
                return None;
            }
        };
        let Some((stream, leftover)) = take_back(on_upgrade).await else {
            upgrade::abandon(system, decision).await;
            return None;
        };
        let (ws, accepted) = upgrade::socket(system, decision, stream, leftover).await?;
        Some((ws, accepted.opened, shared.system.clone()))
    };
    reader::Task::new(opening, peer, ticket)
}

/// HTTP/1.1 requests until the connection closes, upgrades or becomes an event stream; returns
/// what it becomes, if anything (with the stream hyper let go of, for an event stream).
async fn serve_http(
    stream: Stream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    mut shutdown: Shutdown,
) -> Option<(Pending, Option<Stream>)> {
    let slot: Arc<PendingSlot> = Arc::default();
    let service = {
        let (shared, slot) = (shared.clone(), slot.clone());
        service_fn(move |req| {
            let (shared, slot) = (shared.clone(), slot.clone());
            async move { Ok::<_, Infallible>(respond(req, peer, &shared, &slot).await) }
        })
    };
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(policy::MAX_HEAD_BYTES)
        .serve_connection(
            TokioIo::new(Handover::new(stream, slot.handover.clone())),
            service,
        )
        .with_upgrades();
    tokio::pin!(conn);
    let served = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.wait() => {
            // Finish the request in progress, then close instead of keeping the connection alive.
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
    if let Err(e) = served {
        tracing::debug!(%peer, system = shared.system.name(), error = %e, "HTTP connection ended with an error");
    }
    // A named binding: the guard must be dropped before `slot` is.
    let pending = slot
        .next
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    pending.map(|p| (p, slot.handover.taken()))
}

/// The stream hyper hands back after the `101`, with whatever the client sent after its
/// request (copied: it is a slice of hyper's whole read buffer, which it would keep alive).
async fn take_back(on_upgrade: OnUpgrade) -> Option<(Stream, Vec<u8>)> {
    let upgraded = on_upgrade.await.ok()?;
    let parts = upgraded.downcast::<TokioIo<Handover>>().ok()?;
    Some((parts.io.into_inner().into_inner()?, parts.read_buf.to_vec()))
}

async fn respond(
    req: Request<Incoming>,
    peer: SocketAddr,
    shared: &Shared,
    slot: &PendingSlot,
) -> Response<Body> {
    if has_token(req.headers(), &header::UPGRADE, "websocket") {
        upgrade_request(req, peer, shared, slot).await
    } else if shared.system.spec.is_sse_path(req.uri().path()) {
        events_request(req, peer, shared, slot).await
    } else {
        to_hyper(plain(req, peer, shared).await)
    }
}

/// A runtime answer as a hyper response.
fn to_hyper(resp: HttpResponse) -> Response<Body> {
    let mut out = Response::new(Full::new(resp.body));
    *out.status_mut() =
        StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = out.headers_mut();
    if let Some(ct) = resp.content_type {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    for (name, value) in resp.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.append(name, v);
        }
    }
    out
}

async fn upgrade_request(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    shared: &Shared,
    slot: &PendingSlot,
) -> Response<Body> {
    let decision = upgrade::decide(&shared.system, RequestHead::from(&req), peer).await;
    let (status, headers) = decision.response_head(req.headers().get(header::SEC_WEBSOCKET_KEY));
    let mut resp = Response::new(Full::new(upgrade::refusal_body(&decision)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
    if status == 101 {
        let on_upgrade = hyper::upgrade::on(&mut req);
        slot.set(Pending::Upgrade {
            on_upgrade,
            decision,
        });
    }
    resp
}

/// A request for the system's event stream: a refusal is hyper's to send; an accepted stream
/// is taken from hyper ([`Handover`]) and answered by the runtime, so hyper's own answer (a
/// `200` that closes the connection) never reaches the client.
async fn events_request(
    req: Request<Incoming>,
    peer: SocketAddr,
    shared: &Shared,
    slot: &PendingSlot,
) -> Response<Body> {
    let opening = sse::decide(&shared.system, RequestHead::from(&req), peer).await;
    if let Some((status, headers, body)) = opening.refusal() {
        let mut resp = Response::new(Full::new(body));
        *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        for (name, value) in headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                resp.headers_mut().insert(name, v);
            }
        }
        return resp;
    }
    slot.handover.take_at_next_write();
    slot.set(Pending::Events(opening));
    let mut resp = Response::new(Full::new(Bytes::new()));
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// A request that is not an upgrade: judged from its head, its body read only then.
async fn plain(req: Request<Incoming>, peer: SocketAddr, shared: &Shared) -> HttpResponse {
    let system = &shared.system;
    let (route, cors) = match shared.policy.judge(system, RequestHead::from(&req), peer) {
        Plan::Answer(resp) => return resp,
        Plan::Fallback { cors } => {
            let resp = policy::fallback(
                policy::method(req.method()),
                req.uri().path(),
                system,
                &shared.metrics,
            )
            .await;
            return cors.apply(resp);
        }
        Plan::Route { route, cors } => (route, cors),
    };
    let (parts, body) = req.into_parts();
    let (body, _reservation) = if route.body {
        match read_body(body, &parts.headers, &shared.policy, peer).await {
            Ok(read) => read,
            Err((reason, resp)) => return policy::refuse(system, peer, reason, cors.apply(resp)),
        }
    } else {
        (Bytes::new(), None)
    };
    let request = policy::request(&parts.method, &parts.uri, &parts.headers, body);
    shared
        .policy
        .answer(system, &shared.metrics, request, route, &cors)
        .await
}

/// Why a body was not read: the refusal reason and the answer.
type BodyRefusal = (&'static str, HttpResponse);

/// Read a request body within the policy's limits: `413` above the size (declared or
/// streamed), `503` when the bytes arrived would pass the system's buffered-body budget or the
/// client address's share of it, `408` when it has not arrived within the body timeout, `400`
/// when the stream breaks.
async fn read_body<'p>(
    mut body: Incoming,
    headers: &hyper::HeaderMap,
    policy: &'p HttpPolicy,
    peer: SocketAddr,
) -> Result<(Bytes, Option<Reservation<'p>>), BodyRefusal> {
    let limits = policy.limits();
    let max = limits.max_body_bytes;
    let too_large = || {
        let message = format!("request body exceeds the {max}-byte limit");
        ("413", error(413, message))
    };
    let busy = || {
        (
            "503",
            error(503, "too many request bodies in progress; retry"),
        )
    };
    let declared =
        policy::header_str(headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut reservation = policy.reserve(peer.ip());
    let read = async {
        let mut buf = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|_| ("400", error(400, "could not read the request body")))?;
            let Ok(data) = frame.into_data() else {
                continue; // Trailers.
            };
            let len = buf.len() + data.len();
            if len > max {
                return Err(too_large());
            }
            if len > reservation.bytes() && !reservation.grow(len - reservation.bytes()) {
                return Err(busy());
            }
            buf.extend_from_slice(&data);
        }
        Ok(buf.freeze())
    };
    let read = tokio::time::timeout(limits.body_timeout, read).await;
    match read {
        Ok(Ok(bytes)) => Ok((bytes, Some(reservation))),
        Ok(Err(refusal)) => Err(refusal),
        Err(_) => {
            let secs = limits.body_timeout.as_secs_f64();
            Err((
                "408",
                error(408, format!("request body not complete within {secs} s")),
            ))
        }
    }
}
