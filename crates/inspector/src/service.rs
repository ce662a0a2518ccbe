//! The admin listener's connections and requests: a bounded accept loop, HTTP/1.1 through hyper
//! with a small request head, the guards (reads only, same origin, token), and the routes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use switchboard_hub::TapError;
use switchboard_runtime::accept::{Shutdown, ACCEPT_BACKOFF};
use switchboard_runtime::admission::Admission;
use switchboard_runtime::gate::parse_query;
use switchboard_runtime::inspect::{TAIL_PAYLOAD_BYTES, TAIL_RATE};
use switchboard_runtime::metrics::Metrics;
use switchboard_runtime::System;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::assets;
use crate::auth::{self, Token};
use crate::guard;
use crate::snapshot::{snapshot, Rates, Selection, Streams};
use crate::sse;

/// Connections the admin listener serves at once; one more is answered `503` and closed.
pub const MAX_CONNECTIONS: usize = 64;
/// Event streams (live snapshots and tails together) open at once; one more is answered `503`.
pub const MAX_STREAMS: usize = 16;
/// Largest request head (request line and headers); a larger one is answered `431`.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header lines in a request; more is answered `431`.
pub const MAX_HEADERS: usize = 64;
/// How long a client may take to send a request's head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest query parameter the routes read (a room name, a search); longer is answered `400`.
pub const MAX_PARAM_BYTES: usize = 1024;
/// How often a live stream sends a snapshot.
pub const TICK: Duration = Duration::from_secs(1);
/// How often a quiet tail sends a comment, so a client gone is noticed.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// How long an event-stream client waits before it reconnects.
const RETRY_MS: u64 = 2000;

/// Every response carries these: nothing cached, nothing framed, nothing loaded from elsewhere.
const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cross-origin-resource-policy", "same-origin"),
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
];

type Body = BoxBody<Bytes, Infallible>;

/// What every connection of the admin listener shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) systems: Vec<Arc<System>>,
    pub(crate) metrics: Metrics,
    pub(crate) admission: Arc<Admission>,
    /// `None`: no token, and then only a loopback `Host` is answered.
    pub(crate) token: Option<Token>,
    pub(crate) streams: Arc<Semaphore>,
}

impl Shared {
    fn system(&self, name: &str) -> Option<&Arc<System>> {
        self.systems.iter().find(|s| s.name() == name)
    }

    fn streams(&self) -> Streams {
        Streams {
            open: MAX_STREAMS - self.streams.available_permits(),
            limit: MAX_STREAMS,
        }
    }
}

/// Accept connections until `shutdown` (at most [`MAX_CONNECTIONS`] at once), then end them.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: Shutdown,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        conns.spawn(serve_connection(tcp, peer, shared.clone(), slot));
                    }
                    Err(_) => {
                        // Best effort and never waiting: the socket is closed either way.
                        let _ = tcp.try_write(
                            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        );
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "admin listener: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = shutdown.wait() => break,
        }
    }
    // Live streams end with the connections.
    conns.shutdown().await;
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    _slot: OwnedSemaphorePermit,
) {
    let _ = tcp.set_nodelay(true);
    let service = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(secure(respond(req, &shared).await)) }
    });
    let served = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .serve_connection(TokioIo::new(tcp), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(%peer, error = %e, "admin connection ended with an error");
    }
}

/// `resp` with [`SECURITY_HEADERS`].
fn secure(mut resp: Response<Body>) -> Response<Body> {
    let headers = resp.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(*name, HeaderValue::from_static(value));
    }
    resp
}

fn full(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()).boxed());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    full(status, "application/json", value.to_string())
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &json!({ "error": message }))
}

/// A query's parameters: the first value of each name.
struct Params(Vec<(String, String)>);

/// A query parameter is longer than [`MAX_PARAM_BYTES`].
struct TooLong;

impl Params {
    fn of(req: &Request<Incoming>) -> Result<Params, TooLong> {
        let params = parse_query(req.uri().query());
        if params.iter().any(|(_, v)| v.len() > MAX_PARAM_BYTES) {
            return Err(TooLong);
        }
        Ok(Params(params))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn respond(req: Request<Incoming>, shared: &Arc<Shared>) -> Response<Body> {
    if !guard::reads(req.method()) {
        let mut resp = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "the inspector is read-only: GET and HEAD only",
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let headers = req.headers();
    if shared.token.is_none() && !guard::loopback_host(headers) {
        return error(
            StatusCode::FORBIDDEN,
            "without SWITCHBOARD_ADMIN_TOKEN the inspector answers only to localhost",
        );
    }
    if let Some(why) = guard::cross_site(headers) {
        return error(
            StatusCode::FORBIDDEN,
            &format!("cross-site request refused: {why}"),
        );
    }
    let Ok(params) = Params::of(&req) else {
        let message = format!("a query parameter is longer than {MAX_PARAM_BYTES} bytes");
        return error(StatusCode::BAD_REQUEST, &message);
    };
    let path = req.uri().path();
    match path {
        "/inspector.js" | "/inspector.css" => return asset(path),
        "/favicon.ico" => return full(StatusCode::NO_CONTENT, "text/plain", Bytes::new()),
        "/login" => return login(shared, &params),
        _ => {}
    }
    if let Some(token) = &shared.token {
        if !token.admits(headers) {
            return if path.starts_with("/api/") {
                error(
                    StatusCode::UNAUTHORIZED,
                    "sign in: Authorization: Bearer <token>, or the cookie /login sets",
                )
            } else {
                full(
                    StatusCode::UNAUTHORIZED,
                    "text/html; charset=utf-8",
                    assets::login(""),
                )
            };
        }
    }
    let head = req.method() == Method::HEAD;
    match path {
        "/" | "/index.html" => asset(path),
        "/api/snapshot" => {
            let selection = selection(&params);
            let mut rates = Rates::default();
            let value = snapshot(
                &shared.systems,
                &shared.metrics,
                &shared.admission,
                &selection,
                &mut rates,
                shared.streams(),
            )
            .await;
            json(StatusCode::OK, &value)
        }
        "/api/connection" => connection(shared, &params).await,
        "/api/events" => events(shared, selection(&params), head),
        "/api/tail" => tail(shared, &params, head).await,
        _ => error(StatusCode::NOT_FOUND, "no such page"),
    }
}

fn asset(path: &str) -> Response<Body> {
    match assets::asset(path) {
        Some((text, content_type)) => full(StatusCode::OK, content_type, text),
        None => error(StatusCode::NOT_FOUND, "no such page"),
    }
}

fn see_other(location: &'static str) -> Response<Body> {
    let mut resp = full(StatusCode::SEE_OTHER, "text/plain", Bytes::new());
    resp.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(location));
    resp
}

/// `/login?token=`: the right token gets the cookie and goes to the page; anything else gets
/// the sign-in form (`401` for a wrong token).
fn login(shared: &Shared, params: &Params) -> Response<Body> {
    let Some(token) = &shared.token else {
        return see_other("/"); // Nothing to sign in to.
    };
    let Some(given) = params.get("token") else {
        return full(
            StatusCode::OK,
            "text/html; charset=utf-8",
            assets::login(""),
        );
    };
    if !token.verify(given) {
        return full(
            StatusCode::UNAUTHORIZED,
            "text/html; charset=utf-8",
            assets::login("That token is not right."),
        );
    }
    let mut resp = see_other("/");
    // A verified token is cookie-safe (`Token::new` checked it), so it is a header value.
    if let Ok(cookie) = HeaderValue::from_str(&auth::cookie(given)) {
        resp.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    resp
}

fn selection(params: &Params) -> Selection {
    Selection {
        system: params.get("system").map(str::to_string),
        search: params.get("q").unwrap_or("").to_string(),
    }
}

/// `/api/connection?system=&id=`: one connection in detail.
async fn connection(shared: &Shared, params: &Params) -> Response<Body> {
    let Some(system) = params.get("system").and_then(|s| shared.system(s)) else {
        return error(StatusCode::NOT_FOUND, "no such system");
    };
    let Some(id) = params.get("id").and_then(|id| id.parse::<u64>().ok()) else {
        return error(StatusCode::BAD_REQUEST, "id must be a connection's number");
    };
    match system.hub().connection_detail(id).await {
        Ok(Some(detail)) => json(StatusCode::OK, &json!(detail)),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "no such connection (it may have closed)",
        ),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the system has stopped"),
    }
}

/// The head of an event stream, its body to come.
fn stream_response(body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(sse::CONTENT_TYPE),
    );
    // Proxies that buffer would hold the events back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

fn too_many_streams() -> Response<Body> {
    let message = format!("at most {MAX_STREAMS} live streams at once; close one");
    let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, &message);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    resp
}

/// `/api/events?system=&q=`: a snapshot every [`TICK`], as server-sent events.
fn events(shared: &Arc<Shared>, selection: Selection, head: bool) -> Response<Body> {
    if head {
        return stream_response(Full::new(Bytes::new()).boxed());
    }
    let Ok(permit) = shared.streams.clone().try_acquire_owned() else {
        return too_many_streams();
    };
    let (tx, body) = sse::stream();
    let shared = shared.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let mut rates = Rates::default();
        if tx.send(sse::retry(RETRY_MS)).await.is_err() {
            return;
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = tx.closed() => return,
            }
            let value = snapshot(
                &shared.systems,
                &shared.metrics,
                &shared.admission,
                &selection,
                &mut rates,
                shared.streams(),
            )
            .await;
            if tx
                .send(sse::event("snapshot", &value.to_string()))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    stream_response(body.boxed())
}

/// `/api/tail?system=&room=`: the room's publications, sampled and cut short, as server-sent
/// events, for as long as the client reads; the room is tapped only meanwhile.
async fn tail(shared: &Arc<Shared>, params: &Params, head: bool) -> Response<Body> {
    let Some(system) = params.get("system").and_then(|s| shared.system(s)) else {
        return error(StatusCode::NOT_FOUND, "no such system");
    };
    let Some(room) = params.get("room").filter(|r| !r.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "room is required");
    };
    if head {
        return stream_response(Full::new(Bytes::new()).boxed());
    }
    let Ok(permit) = shared.streams.clone().try_acquire_owned() else {
        return too_many_streams();
    };
    let mut tail = match system.hub().tail(room).await {
        Ok(Ok(tail)) => tail,
        Ok(Err(TapError::TooManyTaps { limit })) => {
            let message = format!("{limit} rooms of this system are tailed already; close one");
            return error(StatusCode::SERVICE_UNAVAILABLE, &message);
        }
        Ok(Err(e)) => return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE, "the system has stopped"),
    };
    let started = json!({
        "system": system.name(),
        "room": tail.room(),
        "per_second": TAIL_RATE.per_second,
        "max_bytes": TAIL_PAYLOAD_BYTES,
    })
    .to_string();
    let (tx, body) = sse::stream();
    tokio::spawn(async move {
        let _permit = permit;
        for first in [sse::retry(RETRY_MS), sse::event("tail", &started)] {
            if tx.send(first).await.is_err() {
                return;
            }
        }
        let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
        keep_alive.tick().await; // The first tick is now.
        loop {
            let frame = tokio::select! {
                event = tail.next() => match event {
                    Some(event) => sse::event("publication", &json!(event).to_string()),
                    None => return,
                },
                _ = keep_alive.tick() => sse::keep_alive(),
                () = tx.closed() => return,
            };
            if tx.send(frame).await.is_err() {
                return;
            }
        }
    });
    stream_response(body.boxed())
}
