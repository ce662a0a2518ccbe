//! One TCP connection: HTTP/1.1 requests until a WebSocket upgrade, then the WebSocket.
//!
//! Plain requests go to the system's protocol, then to `/metrics`, `/health`, or `404`. An upgrade
//! request is validated (RFC 6455 section 4.2.1), judged by the gate, and registered with the hub
//! before the `101` goes out; after hyper hands the socket over, the same task runs the
//! WebSocket with [`switchboard_tokio::connection::run`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use switchboard_hub::{CloseCode, ConnectionHandle, HttpRequest, HttpResponse, Method};
use switchboard_tokio::gate::{parse_query, Verdict};
use switchboard_tokio::outbox::{Duplex, Outbox};
use switchboard_tokio::server::Shutdown;
use switchboard_tokio::{connection, Endpoint, HubHandle};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use crate::metrics::{self, Metrics};

/// Largest request body read; a larger one is answered `413`.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// How long a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// `Access-Control-Allow-Methods` in preflight answers.
pub const CORS_METHODS: &str = "GET, HEAD, POST, OPTIONS";
/// `Access-Control-Allow-Headers` in preflight answers.
pub const CORS_HEADERS: &str = "Content-Type, Authorization, X-API-Key";

/// The response body type.
pub type Body = Full<Bytes>;

/// What every connection of one server shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) endpoint: Endpoint,
    pub(crate) hub: HubHandle,
    pub(crate) ws: WebSocketConfig,
    pub(crate) metrics: Metrics,
    /// Set once shutdown begins: new upgrades are refused with `503`.
    pub(crate) stopping: AtomicBool,
}

/// What the connection does once hyper has handed over the upgraded socket.
enum AfterUpgrade {
    /// Run the hub connection registered before the `101` (its greeting waits in the outbox).
    Run(ConnectionHandle, Arc<Outbox>),
    /// Send this close frame and stop (the gate's way to refuse a token).
    Close(CloseCode, &'static str),
}

struct Pending {
    on_upgrade: OnUpgrade,
    after: AfterUpgrade,
}

/// Where the upgrade handler leaves the socket's next life for the connection task.
type PendingSlot = Arc<Mutex<Option<Pending>>>;

/// Serve one accepted TCP connection until it closes (HTTP keep-alive, then maybe a WebSocket).
///
/// Every connection holds this future for its whole life, so the HTTP phase and the hand-over
/// are boxed (their state is freed once done), and it is a plain `fn` around an `async` block
/// (an `async fn` would keep a second copy of its arguments).
// Not an `async fn` on purpose (see above).
#[allow(clippy::manual_async_fn)]
pub(crate) fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Shutdown,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let Some(pending) = Box::pin(serve_http(tcp, peer, &shared, shutdown)).await else {
            return;
        };
        let Some((mut ws, handle)) = Box::pin(take_over(pending, peer, &shared)).await else {
            return;
        };
        let (hub, conn) = (&shared.hub, handle.serial());
        tracing::debug!(%peer, system = hub.name(), conn, "connected");
        connection::run(&mut ws, hub, handle).await;
        tracing::debug!(%peer, system = hub.name(), conn, "disconnected");
    }
}

/// HTTP/1.1 requests until the connection closes or upgrades; returns the upgrade, if any.
async fn serve_http(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    mut shutdown: Shutdown,
) -> Option<Pending> {
    let slot: PendingSlot = Arc::default();
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
        .serve_connection(TokioIo::new(tcp), service)
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
        tracing::debug!(%peer, system = shared.hub.name(), error = %e, "HTTP connection ended with an error");
    }
    // A named binding: the guard must be dropped before `slot` is.
    let pending = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
    pending
}

/// Take the socket back from hyper once the `101` is out: a WebSocket writing through an
/// [`Outbox`], and the hub connection registered before the `101`. `None` when the upgrade did
/// not complete or the gate asked for a close frame (sent here).
async fn take_over(
    pending: Pending,
    peer: SocketAddr,
    shared: &Shared,
) -> Option<(connection::Socket, ConnectionHandle)> {
    let hub = &shared.hub;
    let give_up = |after: AfterUpgrade| async move {
        if let AfterUpgrade::Run(handle, out) = after {
            out.abandon();
            let _ = hub.closed(handle).await;
        }
        None
    };
    let upgraded = match pending.on_upgrade.await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(%peer, system = hub.name(), error = %e, "upgrade did not complete");
            return give_up(pending.after).await;
        }
    };
    // The outbox writes to the socket directly, so take the TCP stream back from hyper, with
    // whatever the client sent after its request.
    let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
        tracing::error!(%peer, system = hub.name(), "upgraded connection is not a TCP stream");
        return give_up(pending.after).await;
    };
    let (read, write) = parts.io.into_inner().into_split();
    // A copy: the leftover is a slice of hyper's whole read buffer, which it would keep alive.
    let leftover = parts.read_buf.to_vec();
    let out = match &pending.after {
        AfterUpgrade::Run(_, out) => out.clone(),
        AfterUpgrade::Close(..) => Outbox::new(hub.clone()),
    };
    out.connect(write);
    let mut ws = WebSocketStream::from_partially_read(
        Duplex::new(read, out),
        leftover,
        Role::Server,
        Some(shared.ws),
    )
    .await;
    match pending.after {
        AfterUpgrade::Run(handle, _) => Some((ws, handle)),
        AfterUpgrade::Close(code, reason) => {
            connection::close_with(&mut ws, code, reason).await;
            None
        }
    }
}

async fn respond(
    req: Request<Incoming>,
    peer: SocketAddr,
    shared: &Shared,
    slot: &PendingSlot,
) -> Response<Body> {
    if has_token(req.headers(), &header::UPGRADE, "websocket") {
        upgrade(req, peer, shared, slot).await
    } else {
        http(req, peer, shared).await
    }
}

/// Whether any of `name`'s comma-separated values is `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn response(status: u16, content_type: Option<&str>, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(ct) = content_type.and_then(|ct| HeaderValue::from_str(ct).ok()) {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp
}

fn text(status: u16, reason: impl Into<String>) -> Response<Body> {
    response(status, Some("text/plain; charset=utf-8"), reason.into())
}

fn json(status: u16, body: &serde_json::Value) -> Response<Body> {
    response(status, Some("application/json"), body.to_string())
}

/// Why a request that asks for a WebSocket is not a valid opening handshake (RFC 6455 section
/// 4.2.1), as an HTTP status and a reason: `426` for a version other than 13, else `400`.
fn handshake_problem(req: &Request<Incoming>) -> Option<(u16, &'static str)> {
    let headers = req.headers();
    if req.method() != hyper::Method::GET {
        return Some((400, "a WebSocket upgrade must use GET"));
    }
    if !has_token(headers, &header::CONNECTION, "upgrade") {
        return Some((400, "a WebSocket upgrade needs `Connection: Upgrade`"));
    }
    if headers
        .get(header::SEC_WEBSOCKET_KEY)
        .is_none_or(|k| k.is_empty())
    {
        return Some((400, "a WebSocket upgrade needs a Sec-WebSocket-Key header"));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Some((426, "only WebSocket version 13 is supported"));
    }
    None
}

async fn upgrade(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    shared: &Shared,
    slot: &PendingSlot,
) -> Response<Body> {
    let system = shared.hub.name();
    if let Some((status, reason)) = handshake_problem(&req) {
        tracing::info!(%peer, system, status, reason, "bad WebSocket handshake refused");
        let mut resp = text(status, reason);
        if status == 426 {
            resp.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        return resp;
    }
    if shared.stopping.load(Ordering::Acquire) {
        return text(503, "server shutting down");
    }
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    let verdict = shared
        .endpoint
        .check(req.uri().path(), req.uri().query(), origin);
    let after = match verdict {
        Verdict::Refuse(status, reason) => {
            tracing::info!(%peer, system, status, reason, "upgrade refused");
            return text(status, reason);
        }
        Verdict::Close(code, reason) => {
            tracing::info!(%peer, system, code = code.0, reason, "connection refused after upgrade");
            AfterUpgrade::Close(code, reason)
        }
        Verdict::Accept(info) => {
            let out = Outbox::new(shared.hub.clone());
            match shared.hub.open(info, out.clone()).await {
                Ok(Ok(handle)) => AfterUpgrade::Run(handle, out),
                Ok(Err(e)) => {
                    tracing::info!(%peer, system, error = %e, "upgrade refused");
                    return text(503, e.to_string());
                }
                Err(_) => return text(503, "server shutting down"),
            }
        }
    };
    let accept = derive_accept_key(
        req.headers()
            .get(header::SEC_WEBSOCKET_KEY)
            .map_or(&b""[..], HeaderValue::as_bytes),
    );
    let on_upgrade = hyper::upgrade::on(&mut req);
    *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(Pending { on_upgrade, after });
    let mut resp = response(101, None, Bytes::new());
    let headers = resp.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    // The accept key is base64, always a valid header value.
    if let Ok(v) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

/// The request's `Origin` when the system has an origin policy and allows it.
fn cors_origin(endpoint: &Endpoint, headers: &HeaderMap) -> Result<Option<HeaderValue>, String> {
    let (Some(_), Some(origin)) = (&endpoint.allowed_origins, headers.get(header::ORIGIN)) else {
        return Ok(None);
    };
    let given = origin.to_str().unwrap_or("");
    if endpoint.allows_origin(given) {
        Ok(Some(origin.clone()))
    } else {
        Err(format!(
            "origin {} is not allowed",
            given.trim_end_matches('/')
        ))
    }
}

async fn http(req: Request<Incoming>, peer: SocketAddr, shared: &Shared) -> Response<Body> {
    let origin = cors_origin(&shared.endpoint, req.headers());
    let is_options = req.method() == hyper::Method::OPTIONS;
    let mut resp = match &origin {
        Err(reason) if is_options => json(403, &serde_json::json!({ "error": reason })),
        _ if is_options && shared.endpoint.allowed_origins.is_some() => {
            let mut resp = response(204, None, Bytes::new());
            let h = resp.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(CORS_METHODS),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(CORS_HEADERS),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
            resp
        }
        _ => plain(req, peer, shared).await,
    };
    if let Ok(Some(origin)) = origin {
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    resp
}

fn method(m: &hyper::Method) -> Method {
    match *m {
        hyper::Method::GET => Method::Get,
        hyper::Method::HEAD => Method::Head,
        hyper::Method::POST => Method::Post,
        hyper::Method::PUT => Method::Put,
        hyper::Method::DELETE => Method::Delete,
        hyper::Method::OPTIONS => Method::Options,
        _ => Method::Other,
    }
}

/// A request that is not an upgrade: the protocol's endpoints, then the transport's own.
async fn plain(req: Request<Incoming>, peer: SocketAddr, shared: &Shared) -> Response<Body> {
    let system = shared.hub.name();
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return body_too_large();
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return body_too_large(),
        Err(e) => {
            tracing::debug!(%peer, system, error = %e, "could not read a request body");
            return json(
                400,
                &serde_json::json!({"error": "could not read the request body"}),
            );
        }
    };
    let request = HttpRequest {
        method: method(&parts.method),
        path: parts.uri.path().to_string(),
        query: parse_query(parts.uri.query()),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (k.as_str().to_string(), value)
            })
            .collect(),
        body,
    };
    let is_health = parts.uri.path() == "/health";
    match shared.hub.http(request).await {
        Ok(Some(HttpResponse {
            status,
            content_type,
            body,
            headers,
        })) => {
            let body = if is_health && status == 200 {
                with_health_extras(body, shared)
            } else {
                body
            };
            let mut resp = response(status, content_type, body);
            for (name, value) in headers {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    resp.headers_mut().append(name, v);
                }
            }
            resp
        }
        Ok(None) => fallback(&parts.method, parts.uri.path(), shared).await,
        Err(_) => {
            tracing::warn!(%peer, system, path = parts.uri.path(), "hub task is gone; HTTP request refused");
            json(503, &serde_json::json!({"error": "server shutting down"}))
        }
    }
}

fn body_too_large() -> Response<Body> {
    json(
        413,
        &serde_json::json!({
            "error": format!("request body exceeds the {MAX_BODY_BYTES}-byte limit")
        }),
    )
}

/// The transport's own endpoints, for requests the protocol does not answer.
async fn fallback(method: &hyper::Method, path: &str, shared: &Shared) -> Response<Body> {
    let readable = matches!(*method, hyper::Method::GET | hyper::Method::HEAD);
    match path {
        "/metrics" if readable => response(
            200,
            Some(metrics::CONTENT_TYPE),
            shared.metrics.render().await,
        ),
        "/health" if readable => {
            let body = serde_json::json!({"status": "ok", "system": shared.hub.name()});
            response(
                200,
                Some("application/json"),
                with_health_extras(body.to_string().into(), shared),
            )
        }
        "/metrics" | "/health" => json(405, &serde_json::json!({"error": "method not allowed"})),
        _ => json(404, &serde_json::json!({"error": "not found"})),
    }
}

/// Add the fields registered for this system (e.g. `backplane`) to a JSON object `/health` body;
/// any other body is returned as it is.
fn with_health_extras(body: Bytes, shared: &Shared) -> Bytes {
    let extras = shared.metrics.health_of(shared.hub.name());
    if extras.is_empty() {
        return body;
    }
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Object(mut map)) => {
            map.extend(extras.into_iter().map(|(k, v)| (k.to_string(), v)));
            Bytes::from(serde_json::Value::Object(map).to_string())
        }
        _ => body,
    }
}
