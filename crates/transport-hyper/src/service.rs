//! One TCP connection: HTTP/1.1 requests until a WebSocket upgrade, then the WebSocket.
//!
//! Every request is judged from its head before a byte of its body is read: `Host` (RFC 9112),
//! `Origin` (one, ASCII, allowed), the route (the system's route table: `404`, or `405` with
//! `Allow`), the API key (`401`/`403`) and, for publish endpoints, the rate per client address
//! and per key (`429`). Only then is a body read: at most [`HttpLimits::max_body_bytes`]
//! (`413`), within [`HttpLimits::body_timeout`] of the headers (`408`), and while the system's
//! buffered bodies stay under [`HttpLimits::max_buffered_body_bytes`] (`503`). Requests no route
//! claims go to `/metrics`, `/health`, or `404`.
//!
//! An upgrade request is validated (RFC 6455 section 4.2.1), judged by the gate, and registered
//! with the hub before the `101` goes out; after hyper hands the socket over, the same task runs
//! the WebSocket with [`switchboard_tokio::connection::run`].

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use switchboard_hub::{
    CloseCode, HttpRequest, HttpResponse, Instant, Method, RateLimit, RateLimiter,
};
use switchboard_protocol::registry::{authorize, method_not_allowed, Route, RouteMatch};
use switchboard_protocol::Options;
use switchboard_tokio::admission::{Refusals, Ticket};
use switchboard_tokio::driver::Opened;
use switchboard_tokio::gate::{
    handshake_problem, has_token, host_problem, origin_header, parse_query, RefusalReason, Verdict,
};
use switchboard_tokio::logging::{Clip, REFUSALS};
use switchboard_tokio::outbox::{Duplex, Outbox};
use switchboard_tokio::server::Shutdown;
use switchboard_tokio::{connection, Endpoint, HubHandle};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use crate::metrics::{self, Metrics};

/// How long a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// `Access-Control-Allow-Methods` in preflight answers.
pub const CORS_METHODS: &str = "GET, HEAD, POST, OPTIONS";
/// `Access-Control-Allow-Headers` in preflight answers.
pub const CORS_HEADERS: &str = "Content-Type, Authorization, X-API-Key";

/// The response body type.
pub type Body = Full<Bytes>;

/// Limits on the HTTP requests of one system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest request body; larger (declared or streamed) is answered `413`.
    pub max_body_bytes: usize,
    /// Request bodies buffered at once by one system; a body that would go past it is answered
    /// `503`.
    pub max_buffered_body_bytes: usize,
    /// How long a body may take to arrive once the headers are in; slower is answered `408`.
    pub body_timeout: Duration,
    /// Publish requests per client address; above it `429`.
    pub publish_rate_per_ip: Option<RateLimit>,
    /// Publish requests per API key; above it `429`.
    pub publish_rate_per_key: Option<RateLimit>,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_body_bytes: 1024 * 1024,
            max_buffered_body_bytes: 4 * 1024 * 1024,
            body_timeout: Duration::from_secs(10),
            publish_rate_per_ip: Some(RateLimit {
                per_second: 200,
                burst: 400,
            }),
            publish_rate_per_key: Some(RateLimit {
                per_second: 2000,
                burst: 400,
            }),
        }
    }
}

/// Client addresses (or keys) whose publish rate is tracked at once; see [`RateLimiter`].
const RATE_KEYS: usize = 10_000;

/// What every connection of one server shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) endpoint: Endpoint,
    /// The protocol's options, for the key check done here before a body is read.
    options: Options,
    pub(crate) hub: HubHandle,
    pub(crate) ws: WebSocketConfig,
    pub(crate) metrics: Metrics,
    limits: HttpLimits,
    /// Body bytes buffered now by this system's requests.
    buffered: AtomicUsize,
    per_ip: Option<Mutex<RateLimiter<IpAddr>>>,
    per_key: Option<Mutex<RateLimiter<usize>>>,
    pub(crate) refusals: Arc<Refusals>,
    /// Set once shutdown begins: new upgrades are refused with `503`.
    pub(crate) stopping: AtomicBool,
}

impl Shared {
    pub(crate) fn new(
        endpoint: Endpoint,
        options: Options,
        hub: HubHandle,
        ws: WebSocketConfig,
        metrics: Metrics,
        limits: HttpLimits,
        refusals: Arc<Refusals>,
    ) -> Shared {
        fn limiter<K: std::hash::Hash + Eq>(
            rate: Option<RateLimit>,
        ) -> Option<Mutex<RateLimiter<K>>> {
            rate.map(|r| Mutex::new(RateLimiter::new(r, RATE_KEYS)))
        }
        Shared {
            endpoint,
            options,
            hub,
            ws,
            metrics,
            per_ip: limiter(limits.publish_rate_per_ip),
            per_key: limiter(limits.publish_rate_per_key),
            limits,
            buffered: AtomicUsize::new(0),
            refusals,
            stopping: AtomicBool::new(false),
        }
    }
}

/// A monotonic instant for the rate limiters (microseconds since the process first asked).
fn monotonic() -> Instant {
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(std::time::Instant::now);
    Instant::from_micros(u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX))
}

/// What the connection does once hyper has handed over the upgraded socket.
enum AfterUpgrade {
    /// Run the hub connection registered before the `101` (its greeting waits in the outbox).
    Run(Opened, Arc<Outbox>),
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
    ticket: Ticket,
    shared: Arc<Shared>,
    shutdown: Shutdown,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let _ticket = ticket;
        let Some(pending) = Box::pin(serve_http(tcp, peer, &shared, shutdown)).await else {
            return;
        };
        let Some((mut ws, opened)) = Box::pin(take_over(pending, peer, &shared)).await else {
            return;
        };
        connection::run(&mut ws, &shared.hub, &opened, peer).await;
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
) -> Option<(connection::Socket, Opened)> {
    let hub = &shared.hub;
    let give_up = |after: AfterUpgrade| async move {
        if let AfterUpgrade::Run(opened, out) = after {
            out.abandon();
            let _ = hub.closed(opened.handle).await;
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
        AfterUpgrade::Run(opened, _) => Some((ws, opened)),
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
        // An upgrade's `Host` is part of its handshake (`handshake_problem`), refused and
        // counted as the other transport does: `upgrade`, `handshake`.
        return upgrade(req, peer, shared, slot).await;
    }
    if let Some(problem) = host_problem(req.version(), req.headers()) {
        return refuse(shared, peer, "http", "host", text(400, problem));
    }
    http(req, peer, shared).await
}

/// Count a refusal (`kind` is `upgrade` or `http`), log it under the refusal log budget, and
/// answer with `resp`.
fn refuse(
    shared: &Shared,
    peer: SocketAddr,
    kind: &'static str,
    reason: &'static str,
    resp: Response<Body>,
) -> Response<Body> {
    shared.refusals.count(kind, reason);
    if REFUSALS.allow() {
        tracing::info!(
            system = shared.hub.name(),
            %peer,
            status = resp.status().as_u16(),
            reason,
            "{kind} refused"
        );
    }
    resp
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

/// `{"error": message}` with `status`.
fn error(status: u16, message: impl Into<String>) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message.into() }))
}

/// A protocol's (or the route table's) answer as a hyper response, extra headers included.
fn from_hub(resp: HttpResponse) -> Response<Body> {
    let mut out = response(resp.status, resp.content_type, resp.body);
    for (name, value) in resp.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            out.headers_mut().append(name, v);
        }
    }
    out
}

async fn upgrade(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    shared: &Shared,
    slot: &PendingSlot,
) -> Response<Body> {
    if let Some((status, reason)) = handshake_problem(req.method(), req.version(), req.headers()) {
        let mut resp = text(status, reason);
        if status == 426 {
            resp.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        return refuse(
            shared,
            peer,
            "upgrade",
            RefusalReason::Handshake.as_str(),
            resp,
        );
    }
    if shared.stopping.load(Ordering::Acquire) {
        return text(503, "server shutting down");
    }
    let verdict = shared.endpoint.check(
        req.uri().path(),
        req.uri().query(),
        origin_header(req.headers()),
    );
    let after = match verdict {
        Verdict::Refuse(status, reason, why) => {
            return refuse(shared, peer, "upgrade", why.as_str(), text(status, reason));
        }
        Verdict::Close(code, reason) => {
            shared
                .refusals
                .count("upgrade", RefusalReason::Token.as_str());
            if REFUSALS.allow() {
                tracing::info!(%peer, system = shared.hub.name(), code = code.0, reason, "connection refused after upgrade");
            }
            AfterUpgrade::Close(code, reason)
        }
        Verdict::Accept(info) => {
            let out = Outbox::new(shared.hub.clone());
            match shared.hub.open(info, out.clone()).await {
                Ok(Ok(opened)) => AfterUpgrade::Run(opened, out),
                Ok(Err(e)) => {
                    let why = RefusalReason::Limit.as_str();
                    return refuse(shared, peer, "upgrade", why, text(503, e.to_string()));
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

/// How a request's `Origin` stands with the system's policy.
enum Cors {
    /// No `Origin`, or no policy to answer with: no CORS headers.
    None,
    /// An allowed origin: answer with these CORS headers.
    Allow { origin: HeaderValue, any: bool },
}

/// Judge a request's `Origin` against the system's allow-list before the request has any
/// effect. An allowed origin gets CORS headers. A disallowed one may still read (`GET`, `HEAD`:
/// served without CORS headers, so the browser hides the answer) but anything else is refused.
/// Without a list, pages of any origin may read but not write: the endpoints that change
/// something are for backends, which send no `Origin` (a browser's cross-site `fetch` POST
/// would otherwise take effect even though the browser hides the answer).
fn judge_origin(
    endpoint: &Endpoint,
    origin: Option<&HeaderValue>,
    writes: bool,
) -> Result<Cors, String> {
    let Some(value) = origin else {
        return Ok(Cors::None);
    };
    let given = value.to_str().unwrap_or("").trim_end_matches('/');
    match &endpoint.allowed_origins {
        Some(_) if endpoint.allows_origin(given) => Ok(Cors::Allow {
            origin: value.clone(),
            any: endpoint.allows_any_origin(),
        }),
        Some(_) if writes => Err(format!("origin {} is not allowed", Clip(given))),
        None if writes => Err(format!(
            "cross-site requests that change something are refused (origin {}); allow origins with {}_ALLOWED_ORIGINS",
            Clip(given),
            endpoint.spec.name.to_ascii_uppercase()
        )),
        _ => Ok(Cors::None),
    }
}

fn with_cors(mut resp: Response<Body>, cors: &Cors) -> Response<Body> {
    if let Cors::Allow { origin, any } = cors {
        let h = resp.headers_mut();
        if *any {
            // With `*`, never credentials: any page could then read answers meant for the user.
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        } else {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

async fn http(req: Request<Incoming>, peer: SocketAddr, shared: &Shared) -> Response<Body> {
    let origin = match origin_header(req.headers()) {
        Ok(_) => req.headers().get(header::ORIGIN).cloned(),
        Err(problem) => return refuse(shared, peer, "http", "origin", error(400, problem)),
    };
    let spec = shared.endpoint.spec;
    let m = method(req.method());
    if m == Method::Options && origin.is_some() {
        return preflight(shared, peer, origin.as_ref());
    }
    let route = match spec.route(m, req.uri().path()) {
        RouteMatch::Found(route) => Some(route),
        RouteMatch::MethodNotAllowed { allow } => {
            return refuse(
                shared,
                peer,
                "http",
                "405",
                from_hub(method_not_allowed(allow)),
            );
        }
        RouteMatch::NotFound => None,
    };
    let writes = !matches!(m, Method::Get | Method::Head);
    let cors = match judge_origin(&shared.endpoint, origin.as_ref(), writes) {
        Ok(cors) => cors,
        Err(reason) => return refuse(shared, peer, "http", "origin", error(403, reason)),
    };
    let resp = match route {
        Some(route) => routed(req, route, peer, shared).await,
        None => fallback(req.method(), req.uri().path(), shared).await,
    };
    with_cors(resp, &cors)
}

/// An `OPTIONS` preflight from a browser: `204` with what may be sent when the system allows
/// the origin, else `403`.
fn preflight(shared: &Shared, peer: SocketAddr, origin: Option<&HeaderValue>) -> Response<Body> {
    let endpoint = &shared.endpoint;
    match judge_origin(endpoint, origin, true) {
        Ok(cors @ Cors::Allow { .. }) => {
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
            with_cors(resp, &cors)
        }
        Ok(Cors::None) => response(204, None, Bytes::new()),
        Err(reason) => refuse(shared, peer, "http", "origin", error(403, reason)),
    }
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

/// The first value of header `name`, if it is text.
fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A request a route of the system claims: key, rate and body checked in that order, the body
/// read only once the others pass; then the protocol answers.
async fn routed(
    req: Request<Incoming>,
    route: &'static Route,
    peer: SocketAddr,
    shared: &Shared,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let header = |name: &str| header_str(&parts.headers, name);
    if let Err(resp) = authorize(route, shared.endpoint.spec, &shared.options, header) {
        let reason = if resp.status == 401 { "401" } else { "403" };
        return refuse(shared, peer, "http", reason, from_hub(resp));
    }
    if route.publishes {
        if let Err(wait) = check_rate(shared, peer.ip(), &parts.headers) {
            let secs = wait.as_secs().max(1).to_string();
            let mut resp = error(429, "too many publish requests; slow down");
            if let Ok(v) = HeaderValue::from_str(&secs) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return refuse(shared, peer, "http", "429", resp);
        }
    }
    let (body, _reservation) = if route.body {
        match read_body(body, &parts.headers, shared).await {
            Ok(read) => read,
            Err((reason, resp)) => return refuse(shared, peer, "http", reason, resp),
        }
    } else {
        (Bytes::new(), None)
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
        Ok(Some(resp)) => {
            let mut resp = resp;
            if is_health && resp.status == 200 {
                resp.body = with_health_extras(resp.body, shared);
            }
            from_hub(resp)
        }
        Ok(None) => fallback(&parts.method, parts.uri.path(), shared).await,
        Err(_) => error(503, "server shutting down"),
    }
}

/// The publish rate of the client's address and of the API key it used.
fn check_rate(shared: &Shared, ip: IpAddr, headers: &HeaderMap) -> Result<(), Duration> {
    let now = monotonic();
    if let Some(per_ip) = &shared.per_ip {
        per_ip
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .check(now, ip)?;
    }
    if let Some(per_key) = &shared.per_key {
        let header = |name: &str| header_str(headers, name);
        let key = shared.options.api_keys.iter().position(|k| {
            switchboard_protocol::codec::api_key_matches(header, std::slice::from_ref(k))
        });
        if let Some(key) = key {
            per_key
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .check(now, key)?;
        }
    }
    Ok(())
}

/// Body bytes held against the system's buffered-body budget; given back when dropped.
struct Reservation<'a> {
    budget: &'a AtomicUsize,
    bytes: usize,
}

impl Reservation<'_> {
    /// Hold `more` bytes more, if the budget allows.
    fn grow(&mut self, more: usize, limit: usize) -> bool {
        let taken = self.budget.fetch_add(more, Ordering::AcqRel);
        if taken + more > limit {
            self.budget.fetch_sub(more, Ordering::AcqRel);
            return false;
        }
        self.bytes += more;
        true
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.budget.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Why a body was not read: the refusal reason and the answer.
type BodyRefusal = (&'static str, Response<Body>);

/// Read a request body within the limits: `413` above the size (declared or streamed), `503`
/// when the system's buffered bodies would pass their budget, `408` when it has not arrived
/// within the body timeout, `400` when the stream breaks.
async fn read_body<'s>(
    mut body: Incoming,
    headers: &HeaderMap,
    shared: &'s Shared,
) -> Result<(Bytes, Option<Reservation<'s>>), BodyRefusal> {
    let limits = &shared.limits;
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
    let declared = header_str(headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut reservation = Reservation {
        budget: &shared.buffered,
        bytes: 0,
    };
    let upfront = declared.map_or(0, |n| n as usize);
    if !reservation.grow(upfront, limits.max_buffered_body_bytes) {
        return Err(busy());
    }
    let read = async {
        let mut buf = BytesMut::with_capacity(upfront.min(64 * 1024));
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
            if len > reservation.bytes
                && !reservation.grow(len - reservation.bytes, limits.max_buffered_body_bytes)
            {
                return Err(busy());
            }
            buf.extend_from_slice(&data);
        }
        Ok(buf.freeze())
    };
    match tokio::time::timeout(limits.body_timeout, read).await {
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
        "/metrics" | "/health" => {
            let mut resp = error(405, "method not allowed");
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            resp
        }
        _ => error(404, "not found"),
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
