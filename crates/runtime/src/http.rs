//! HTTP requests that are not upgrades, judged the same way by any transport that serves HTTP:
//! everything is decided from the head before a byte of the body is read (`Host`, `Origin`,
//! route, API key, publish rate), bodies are read within per-system bounds, and the requests no
//! route claims get `/metrics`, `/health`, `/ready` or `404`. Answers are
//! [`switchboard_hub::HttpResponse`]s; the transport only translates them.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use switchboard_hub::{
    HttpRequest, HttpResponse, IdempotencyKey, Instant, Method, RateLimit, RateLimiter,
    BAD_IDEMPOTENCY_KEY,
};
use switchboard_protocol::spec::{authorize, method_not_allowed, Route, RouteMatch};
use tokio_tungstenite::tungstenite::http::{header, HeaderMap, HeaderValue};

use crate::gate::{host_problem, origin_header, parse_query, Endpoint};
use crate::logging::{Clip, REFUSALS};
use crate::metrics::{Metrics, CONTENT_TYPE};
use crate::system::System;
use crate::upgrade::RequestHead;

/// `Access-Control-Allow-Methods` in preflight answers.
pub const CORS_METHODS: &str = "GET, HEAD, POST, OPTIONS";
/// `Access-Control-Allow-Headers` in preflight answers.
pub const CORS_HEADERS: &str = "Content-Type, Authorization, X-API-Key, Idempotency-Key";
/// Largest request head (request line and headers) a transport reads; a larger one is answered
/// `431`.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Client addresses (or keys) whose publish rate is tracked at once; see [`RateLimiter`].
const RATE_KEYS: usize = 10_000;

/// Limits on the HTTP requests of one system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest request body; larger (declared or streamed) is answered `413`.
    pub max_body_bytes: usize,
    /// Request body bytes buffered at once by one system (counted as they arrive; one client
    /// address may hold at most a quarter of it, or one whole body if that is more); a body that
    /// would go past it is answered `503`.
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

/// A JSON `{"error": message}` answer.
pub fn error(status: u16, message: impl Into<String>) -> HttpResponse {
    HttpResponse::json(
        status,
        serde_json::json!({ "error": message.into() }).to_string(),
    )
}

/// How a request's `Origin` stands with the system's policy.
#[derive(Debug, Clone)]
pub enum Cors {
    /// No policy to answer with: no CORS headers.
    None,
    /// The system has an allow-list but this request gets no CORS headers (no `Origin`, or a
    /// disallowed one reading): only `Vary: Origin`, so a shared cache never hands this answer
    /// to a page the list allows.
    Vary,
    /// An allowed origin: answer with CORS headers for it.
    Allow {
        /// The origin as sent.
        origin: HeaderValue,
        /// The allow-list is `*`.
        any: bool,
    },
}

impl Cors {
    /// Add the CORS headers to `resp`.
    pub fn apply(&self, mut resp: HttpResponse) -> HttpResponse {
        if let Cors::Vary = self {
            return resp.with_header("vary", "Origin");
        }
        if let Cors::Allow { origin, any } = self {
            if *any {
                // With `*`, never credentials: any page could then read answers meant for the user.
                resp = resp.with_header("access-control-allow-origin", "*");
            } else {
                let origin = origin.to_str().unwrap_or_default().to_string();
                resp = resp
                    .with_header("access-control-allow-origin", origin)
                    .with_header("access-control-allow-credentials", "true");
            }
            resp = resp.with_header("vary", "Origin");
        }
        resp
    }
}

/// Judge a request's `Origin` against the system's allow-list before the request has any
/// effect. An allowed origin gets CORS headers. A disallowed one may still read (`GET`, `HEAD`:
/// served without CORS headers, so the browser hides the answer) but anything else is refused.
/// Without a list, pages of any origin may read but not write: the endpoints that change
/// something are for backends, which send no `Origin` (a browser's cross-site `fetch` POST
/// would otherwise take effect even though the browser hides the answer).
pub fn judge_origin(
    endpoint: &Endpoint,
    origin: Option<&HeaderValue>,
    writes: bool,
) -> Result<Cors, String> {
    let unlisted = if endpoint.allowed_origins.is_some() {
        Cors::Vary
    } else {
        Cors::None
    };
    let Some(value) = origin else {
        return Ok(unlisted);
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
        _ => Ok(unlisted),
    }
}

/// The hub's name for an HTTP method.
pub fn method(m: &tokio_tungstenite::tungstenite::http::Method) -> Method {
    use tokio_tungstenite::tungstenite::http::Method as M;
    match *m {
        M::GET => Method::Get,
        M::HEAD => Method::Head,
        M::POST => Method::Post,
        M::PUT => Method::Put,
        M::DELETE => Method::Delete,
        M::OPTIONS => Method::Options,
        _ => Method::Other,
    }
}

/// The first value of header `name`, if it is text.
pub fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// What to do with a request, decided from its head.
#[derive(Debug)]
pub enum Plan {
    /// Answer now (a refusal, a preflight), without reading the body.
    Answer(HttpResponse),
    /// A route of the system's: read the body if `route.body`, then [`HttpPolicy::answer`].
    Route {
        /// The route.
        route: &'static Route,
        /// The CORS headers the answer gets.
        cors: Cors,
    },
    /// No route: the transport's own endpoints ([`fallback`]).
    Fallback {
        /// The CORS headers the answer gets.
        cors: Cors,
    },
}

/// One system's HTTP policy: its limits, the publish rates per client address and per key, and
/// the body bytes it buffers now.
#[derive(Debug)]
pub struct HttpPolicy {
    limits: HttpLimits,
    buffered: AtomicUsize,
    /// Body bytes buffered per client address now (no entry at zero).
    buffered_by: Mutex<std::collections::HashMap<IpAddr, usize>>,
    per_ip: Option<Mutex<RateLimiter<IpAddr>>>,
    per_key: Option<Mutex<RateLimiter<usize>>>,
}

fn limiter<K: std::hash::Hash + Eq>(rate: Option<RateLimit>) -> Option<Mutex<RateLimiter<K>>> {
    rate.map(|r| Mutex::new(RateLimiter::new(r, RATE_KEYS)))
}

/// A monotonic instant for the rate limiters (microseconds since the process first asked).
fn monotonic() -> Instant {
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(std::time::Instant::now);
    Instant::from_micros(u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX))
}

/// Count a refused request, log it under the refusal log budget, and return the answer.
pub fn refuse(
    system: &System,
    peer: SocketAddr,
    reason: &'static str,
    resp: HttpResponse,
) -> HttpResponse {
    system.refusals().count("http", reason);
    if REFUSALS.allow() {
        tracing::info!(
            system = system.name(),
            %peer,
            status = resp.status,
            reason,
            "http refused"
        );
    }
    resp
}

impl HttpPolicy {
    /// A policy with `limits`.
    pub fn new(limits: HttpLimits) -> Self {
        HttpPolicy {
            per_ip: limiter(limits.publish_rate_per_ip),
            per_key: limiter(limits.publish_rate_per_key),
            limits,
            buffered: AtomicUsize::new(0),
            buffered_by: Mutex::default(),
        }
    }

    /// The limits.
    pub fn limits(&self) -> &HttpLimits {
        &self.limits
    }

    /// Judge a request from its head: `Host`, `Origin`, route, API key and publish rate, in that
    /// order, all before its body is read.
    pub fn judge(&self, system: &System, req: RequestHead<'_>, peer: SocketAddr) -> Plan {
        let refuse = |reason, resp| Plan::Answer(refuse(system, peer, reason, resp));
        if let Some(problem) = host_problem(req.version, req.headers) {
            return refuse("host", error(400, problem));
        }
        let origin = match origin_header(req.headers) {
            Ok(_) => req.headers.get(header::ORIGIN),
            Err(problem) => return refuse("origin", error(400, problem)),
        };
        let m = method(req.method);
        if m == Method::Options && origin.is_some() {
            return match judge_origin(&system.endpoint, origin, true) {
                Ok(cors @ Cors::Allow { .. }) => Plan::Answer(
                    cors.apply(
                        HttpResponse::empty(204)
                            .with_header("access-control-allow-methods", CORS_METHODS)
                            .with_header("access-control-allow-headers", CORS_HEADERS)
                            .with_header("access-control-max-age", "600"),
                    ),
                ),
                Ok(cors) => Plan::Answer(cors.apply(HttpResponse::empty(204))),
                Err(reason) => refuse("origin", error(403, reason)),
            };
        }
        let route = match system.spec.route(m, req.uri.path()) {
            RouteMatch::Found(route) => Some(route),
            RouteMatch::MethodNotAllowed { allow } => {
                return refuse("405", method_not_allowed(allow))
            }
            RouteMatch::NotFound => None,
        };
        let writes = !matches!(m, Method::Get | Method::Head);
        let cors = match judge_origin(&system.endpoint, origin, writes) {
            Ok(cors) => cors,
            Err(reason) => return refuse("origin", error(403, reason)),
        };
        let Some(route) = route else {
            return Plan::Fallback { cors };
        };
        let header = |name: &str| header_str(req.headers, name);
        if let Err(resp) = authorize(route, system.spec, &system.options, header) {
            let reason = if resp.status == 401 { "401" } else { "403" };
            return refuse(reason, cors.apply(resp));
        }
        if route.publishes {
            if let Some(key) = req.headers.get("idempotency-key") {
                let key = key.to_str().map_err(|_| BAD_IDEMPOTENCY_KEY);
                if let Err(why) = key.and_then(IdempotencyKey::check_header) {
                    return refuse("400", cors.apply(error(400, why)));
                }
            }
            if let Err(wait) = self.check_rate(system, peer.ip(), req.headers) {
                let secs = wait.as_secs().max(1).to_string();
                let resp = error(429, "too many publish requests; slow down")
                    .with_header("retry-after", secs);
                return refuse("429", cors.apply(resp));
            }
            // Past a full backplane queue a publication would reach this node's clients only:
            // the publisher is told to retry instead (nothing accepted is left behind).
            if system.backplane_saturated() {
                let resp = error(503, "the cluster backplane is behind; retry")
                    .with_header("retry-after", "1");
                return refuse("backplane", cors.apply(resp));
            }
        }
        Plan::Route { route, cors }
    }

    /// The publish rate of the client's address and of the API key it used.
    fn check_rate(&self, system: &System, ip: IpAddr, headers: &HeaderMap) -> Result<(), Duration> {
        let now = monotonic();
        if let Some(per_ip) = &self.per_ip {
            per_ip
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .check(now, ip)?;
        }
        if let Some(per_key) = &self.per_key {
            let header = |name: &str| header_str(headers, name);
            let key = system.options.api_keys.iter().position(|k| {
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

    /// An empty hold on the system's buffered-body budget for a body from `peer`; it grows as
    /// the body arrives ([`Reservation::grow`]). Bytes are counted as they arrive, not as
    /// declared: a client that declares a large body and sends nothing holds nothing.
    pub fn reserve(&self, peer: IpAddr) -> Reservation<'_> {
        Reservation {
            policy: self,
            peer,
            bytes: 0,
        }
    }

    /// What one client address may hold: a quarter of the budget, or one whole body if that is
    /// more (so a client can always send one body when the system is otherwise idle).
    fn share(&self) -> usize {
        (self.limits.max_buffered_body_bytes / 4).max(self.limits.max_body_bytes)
    }

    /// Ask the system's protocol to answer a routed request whose body was read; with
    /// `/health`'s registered extras (e.g. the backplane state).
    pub async fn answer(
        &self,
        system: &System,
        metrics: &Metrics,
        request: HttpRequest,
        route: &Route,
        cors: &Cors,
    ) -> HttpResponse {
        let is_health = request.path == "/health";
        let method = request.method;
        let path = request.path.clone();
        let answer = if route.publishes {
            system.hub().http_once(request).await
        } else {
            system.hub().http(request).await
        };
        let resp = match answer {
            Ok(Some(mut resp)) => {
                if is_health && resp.status == 200 {
                    resp.body = with_health_extras(resp.body, system, metrics);
                }
                resp
            }
            Ok(None) => fallback(method, &path, system, metrics).await,
            Err(_) => error(503, "server shutting down"),
        };
        cors.apply(resp)
    }
}

/// Body bytes held against a system's buffered-body budget (and its client address's share of
/// it); given back when dropped.
#[derive(Debug)]
pub struct Reservation<'a> {
    policy: &'a HttpPolicy,
    peer: IpAddr,
    bytes: usize,
}

impl Reservation<'_> {
    /// Hold `more` bytes more, if the system's budget and the address's share allow.
    pub fn grow(&mut self, more: usize) -> bool {
        let policy = self.policy;
        let limit = policy.limits.max_buffered_body_bytes;
        let taken = policy.buffered.fetch_add(more, Ordering::AcqRel);
        if taken + more > limit {
            policy.buffered.fetch_sub(more, Ordering::AcqRel);
            return false;
        }
        let mut by = policy
            .buffered_by
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let held = by.entry(self.peer).or_insert(0);
        if *held + more > policy.share() {
            if *held == 0 {
                by.remove(&self.peer);
            }
            drop(by);
            policy.buffered.fetch_sub(more, Ordering::AcqRel);
            return false;
        }
        *held += more;
        self.bytes += more;
        true
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let policy = self.policy;
        policy.buffered.fetch_sub(self.bytes, Ordering::AcqRel);
        let mut by = policy
            .buffered_by
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = by.get_mut(&self.peer) {
            *held -= self.bytes;
            if *held == 0 {
                by.remove(&self.peer);
            }
        }
    }
}

/// An [`HttpRequest`] from the head's parts and a body.
pub fn request(
    method: &tokio_tungstenite::tungstenite::http::Method,
    uri: &tokio_tungstenite::tungstenite::http::Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> HttpRequest {
    HttpRequest {
        method: self::method(method),
        path: uri.path().to_string(),
        query: parse_query(uri.query()),
        headers: headers
            .iter()
            .map(|(k, v)| {
                let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (k.as_str().to_string(), value)
            })
            .collect(),
        body,
    }
}

/// The transport's own endpoints, for requests no route claims: `/metrics`, `/health`,
/// `/ready` (`200` while serving, `503` once a drain began: for load balancers), `404`.
pub async fn fallback(
    method: Method,
    path: &str,
    system: &System,
    metrics: &Metrics,
) -> HttpResponse {
    let readable = matches!(method, Method::Get | Method::Head);
    match path {
        "/metrics" if readable => HttpResponse {
            content_type: Some(CONTENT_TYPE),
            ..HttpResponse::text(200, metrics.render().await)
        },
        "/health" if readable => {
            let body = serde_json::json!({"status": "ok", "system": system.name()});
            HttpResponse::json(
                200,
                with_health_extras(body.to_string().into(), system, metrics),
            )
        }
        "/ready" if readable => {
            if system.is_ready() {
                HttpResponse::json(200, r#"{"ready":true}"#)
            } else {
                HttpResponse::json(503, r#"{"ready":false,"reason":"draining"}"#)
            }
        }
        "/metrics" | "/health" | "/ready" => {
            error(405, "method not allowed").with_header("allow", "GET, HEAD")
        }
        _ => error(404, "not found"),
    }
}

/// Add the fields registered for this system (e.g. `backplane`) to a JSON object `/health` body;
/// any other body is returned as it is.
fn with_health_extras(body: Bytes, system: &System, metrics: &Metrics) -> Bytes {
    let extras = metrics.health_of(system.name());
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
