//! What a system is, as data: its documented ports and paths, how its upgrade is authenticated,
//! its HTTP endpoints, its message types, and how to start its hub. [`crate::registry::SYSTEMS`]
//! lists one [`SystemSpec`] per system; transports, the runtime and every harness (doc vectors,
//! fuzz targets, benches) read what they need from it, so a new system is one module and one
//! line in the registry.
//!
//! # HTTP endpoints as data
//!
//! Each system lists its HTTP endpoints in [`SystemSpec::routes`]. A transport decides from the
//! request line and headers alone, before reading any body:
//!
//! ```
//! use switchboard_hub::Method;
//! use switchboard_protocol::spec::{authorize, Admission, Options, RouteMatch};
//!
//! let spec = switchboard_protocol::system("race").unwrap();
//! let options = Options::default().with_api_key("k1").with_api_key("k2");
//! let headers = [("x-api-key", "k2")];
//! let header = |name: &str| headers.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
//! match spec.admit(Method::Post, "/sessions/race-2024/updates", &options, header) {
//!     Admission::Proceed(route) => assert!(route.body), // read the body, hand it to the hub
//!     Admission::Refuse(response) => panic!("answer {} at once", response.status),
//!     Admission::NotFound => panic!("the transport's own endpoints, or 404"),
//! }
//! // The same two steps, separately:
//! let route = match spec.route(Method::Post, "/sessions/race-2024/updates") {
//!     RouteMatch::Found(route) => route,
//!     _ => unreachable!(),
//! };
//! assert_eq!(authorize(route, spec, &Options::default(), header).unwrap_err().status, 403);
//! ```
//!
//! Each module's decoder goes through the same table ([`SystemSpec::decode_request`]), so the
//! routes a transport sees and the ones the module answers cannot drift apart.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use switchboard_hub::{
    Config, Context, DynHub, HttpRequest, HttpResponse, Identity, Instant, Method,
};

use crate::codec;
use crate::error::DecodeError;

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Sent by a client to the server.
    ClientToServer,
    /// Sent by the server to a client.
    ServerToClient,
    /// A body a backend POSTs to the system's HTTP publish endpoint.
    Publish,
}

/// Decode a documented example and encode it again, for the doc-vector tests: `Ok` holds the
/// re-encoded bytes. Each module implements this for its own messages.
pub type RoundTrip = fn(Direction, &[u8]) -> Result<Vec<u8>, DecodeError>;

/// Start a system's hub: its protocol built with the options, under `config`, created at `now`.
pub type Build = fn(&Options, Config, Instant) -> Box<dyn DynHub>;

/// How a system's WebSocket upgrade is authenticated by the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Auth {
    /// Anyone may connect.
    None,
    /// An HS256 JWT in query parameter `param`; a missing or bad token closes with 1008.
    /// The secret comes from environment variable `secret_env`. The verified claims become the
    /// connection's [`Identity`] as [`Auth::identity`] says.
    #[non_exhaustive]
    JwtQuery {
        /// The query parameter, e.g. `token`.
        param: &'static str,
        /// The environment variable holding the HS256 secret.
        secret_env: &'static str,
        /// The claims that name the user, in order of preference: the first one present is the
        /// user id (e.g. `["user_id", "sub"]`).
        user_claims: &'static [&'static str],
        /// Further claims kept on the identity when present (e.g. `["email", "role"]`).
        kept_claims: &'static [&'static str],
    },
}

impl Auth {
    /// The identity a verified token stands for: the user is the first of `user_claims` that
    /// `claim` finds, and each of `kept_claims` it finds is kept. `claim` reads one claim as a
    /// string (a transport turns JSON numbers into their decimal text). `None` without
    /// authentication, or when the token names no user.
    ///
    /// ```
    /// use switchboard_protocol::system;
    /// let auth = system("dcdock").unwrap().auth;
    /// let claims = [("sub", "7"), ("user_id", "42"), ("email", "a@b.c"), ("exp", "1")];
    /// let id = auth
    ///     .identity(|name| claims.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
    ///     .unwrap();
    /// assert_eq!(id.user, "42");
    /// assert_eq!(id.claims, vec![("email".to_string(), "a@b.c".to_string())]);
    /// ```
    pub fn identity(&self, claim: impl Fn(&str) -> Option<String>) -> Option<Identity> {
        let Auth::JwtQuery {
            user_claims,
            kept_claims,
            ..
        } = self
        else {
            return None;
        };
        let user = user_claims.iter().find_map(|c| claim(c))?;
        let claims = kept_claims
            .iter()
            .filter_map(|c| claim(c).map(|v| (c.to_string(), v)))
            .collect();
        Some(Identity { user, claims })
    }
}

/// Browser origins allowed to open a WebSocket, as the seed configures them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginPolicy {
    /// Environment variable with a comma-separated list, e.g. `ALLOWED_ORIGINS`.
    pub env: &'static str,
    /// The list used when the variable is unset.
    pub default: &'static str,
}

/// The default of [`Options::max_id_bytes`].
pub const DEFAULT_MAX_ID_BYTES: usize = 256;

/// The most entries a status page lists (collab `GET /stats` projects, DCDock `GET /api/ws/stats`
/// clients); its totals stay exact and it says `"truncated": true` when it left some out.
pub const MAX_STATUS_ENTRIES: usize = 1000;

/// Settings a system's protocol is built with.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// Keys accepted on this system's keyed HTTP endpoints (`X-API-Key: <key>` or
    /// `Authorization: Bearer <key>`); any one matches, so a key can be rotated without downtime.
    /// Empty strings are ignored. See [`KeyRule`] for what happens when none is set.
    pub api_keys: Vec<String>,
    /// The longest identifier a client may turn into server state (a room, a user id, a session
    /// id, an event name), in bytes. Longer ones are refused with
    /// [`DecodeError::IdTooLong`].
    pub max_id_bytes: usize,
    /// This node's tag in a cluster: the client ids a system hands out (collab's
    /// `client_<ms>_<serial>`, DCDock's `user_<id>_<serial>`) end with `_<tag>`, so they are
    /// unique across nodes. `None` on a single node: the seeds' formats exactly.
    pub node_tag: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            api_keys: Vec::new(),
            max_id_bytes: DEFAULT_MAX_ID_BYTES,
            node_tag: None,
        }
    }
}

impl Options {
    /// These options on a cluster node tagged `tag` (see [`Options::node_tag`]).
    pub fn on_node(mut self, tag: impl Into<String>) -> Self {
        self.node_tag = Some(tag.into());
        self
    }

    /// A client id made unique across nodes: `id` with `_<tag>` appended on a cluster node.
    pub fn client_id(&self, id: String) -> String {
        match &self.node_tag {
            Some(tag) => format!("{id}_{tag}"),
            None => id,
        }
    }

    /// These options with `key` accepted too.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_keys.push(key.into());
        self
    }

    /// These options with every key of `keys` accepted too.
    pub fn with_api_keys<K: Into<String>>(mut self, keys: impl IntoIterator<Item = K>) -> Self {
        self.api_keys.extend(keys.into_iter().map(Into::into));
        self
    }

    /// These options with identifiers capped at `max` bytes.
    pub fn with_max_id_bytes(mut self, max: usize) -> Self {
        self.max_id_bytes = max;
        self
    }

    /// Whether at least one (non-empty) API key is configured.
    pub fn has_api_key(&self) -> bool {
        self.api_keys.iter().any(|k| !k.is_empty())
    }
}

/// The keys in a `*_API_KEY` value: comma-separated, surrounding spaces and empty entries dropped
/// (`"k1, k2,"` is `["k1", "k2"]`).
pub fn parse_api_keys(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(String::from)
        .collect()
}

/// Which paths one HTTP endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathPattern {
    /// Exactly this path, e.g. `/health`.
    Exact(&'static str),
    /// This prefix and anything after it (possibly empty, possibly with `/`), e.g. `/events/`.
    Prefix(&'static str),
    /// The prefix, one path segment (no `/`, possibly empty), then the suffix, e.g.
    /// `/sessions/` + `<id>` + `/updates`.
    Between(&'static str, &'static str),
}

impl PathPattern {
    /// A path the pattern matches, with `arg` as its variable part (ignored for
    /// [`PathPattern::Exact`]): for harnesses that call every endpoint.
    pub fn sample(&self, arg: &str) -> String {
        match *self {
            PathPattern::Exact(p) => p.to_string(),
            PathPattern::Prefix(p) => format!("{p}{arg}"),
            PathPattern::Between(prefix, suffix) => format!("{prefix}{arg}{suffix}"),
        }
    }

    /// The variable part of `path` if the pattern matches it: `""` for [`PathPattern::Exact`],
    /// the rest for [`PathPattern::Prefix`], the segment for [`PathPattern::Between`].
    pub fn capture<'p>(&self, path: &'p str) -> Option<&'p str> {
        match *self {
            PathPattern::Exact(p) => (path == p).then_some(""),
            PathPattern::Prefix(p) => path.strip_prefix(p),
            PathPattern::Between(prefix, suffix) => path
                .strip_prefix(prefix)?
                .strip_suffix(suffix)
                .filter(|segment| !segment.contains('/')),
        }
    }
}

/// Whether an endpoint needs an API key ([`Options::api_keys`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyRule {
    /// Never.
    Open,
    /// Only once a key is configured (endpoints the seeds had open).
    IfConfigured,
    /// Always: `403 publishing disabled: set <ENV>` until a key is configured, then `401` without
    /// a matching one (endpoints we added).
    Required,
}

/// One HTTP endpoint of a system: what a transport needs to know before reading the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Route {
    /// The methods it answers; `GET` implies `HEAD`.
    pub methods: &'static [Method],
    /// The paths it answers.
    pub path: PathPattern,
    /// Whether it needs an API key.
    pub key: KeyRule,
    /// Whether it reads a request body (else the transport may leave it unread).
    pub body: bool,
    /// Whether it publishes to clients.
    pub publishes: bool,
}

impl Route {
    /// An open `GET` (and `HEAD`) endpoint without a body, e.g. `/health`.
    pub const fn get(path: PathPattern) -> Self {
        Route {
            methods: &[Method::Get],
            path,
            key: KeyRule::Open,
            body: false,
            publishes: false,
        }
    }

    /// A `POST` endpoint that reads a body and publishes it, keyed by `key`.
    pub const fn publish(path: PathPattern, key: KeyRule) -> Self {
        Route {
            methods: &[Method::Post],
            path,
            key,
            body: true,
            publishes: true,
        }
    }

    /// Whether the endpoint answers `method` (`HEAD` wherever `GET` is).
    pub fn allows(&self, method: Method) -> bool {
        Allow::of(self.methods).contains(method)
    }
}

/// A set of methods, shown as an `Allow` header value (`GET, HEAD, POST`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Allow(u8);

const ALLOW_ORDER: [(Method, &str); 6] = [
    (Method::Get, "GET"),
    (Method::Head, "HEAD"),
    (Method::Post, "POST"),
    (Method::Put, "PUT"),
    (Method::Delete, "DELETE"),
    (Method::Options, "OPTIONS"),
];

impl Allow {
    fn bit(method: Method) -> u8 {
        ALLOW_ORDER
            .iter()
            .position(|(m, _)| *m == method)
            .map_or(0, |i| 1 << i)
    }

    /// The methods in `methods`, with `HEAD` added wherever `GET` is.
    pub fn of(methods: &[Method]) -> Self {
        let mut allow = Allow::default();
        for m in methods {
            allow.0 |= Allow::bit(*m);
            if *m == Method::Get {
                allow.0 |= Allow::bit(Method::Head);
            }
        }
        allow
    }

    /// Whether `method` is in the set ([`Method::Other`] never is).
    pub fn contains(self, method: Method) -> bool {
        let bit = Allow::bit(method);
        bit != 0 && self.0 & bit != 0
    }

    fn union(self, other: Allow) -> Self {
        Allow(self.0 | other.0)
    }

    fn names(self) -> impl Iterator<Item = &'static str> {
        ALLOW_ORDER
            .into_iter()
            .enumerate()
            .filter(move |(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, (_, name))| name)
    }
}

impl fmt::Display for Allow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.names().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

/// What a system's route table says about a method and a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteMatch {
    /// The endpoint that answers.
    Found(&'static Route),
    /// The path is the system's, the method is not: answer [`method_not_allowed`].
    MethodNotAllowed {
        /// The methods the path answers, for the `Allow` header.
        allow: Allow,
    },
    /// Not the system's path: the transport's own endpoints, or 404.
    NotFound,
}

/// What to do with a request, decided from its method, path and headers alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Read the body (if [`Route::body`]) and hand the request to the system.
    Proceed(&'static Route),
    /// Answer this at once, the body unread (405 with `Allow`, 401, 403).
    Refuse(HttpResponse),
    /// Not the system's path.
    NotFound,
}

/// `405 {"error":"method not allowed","details":"use POST"}` with an `Allow` header.
pub fn method_not_allowed(allow: Allow) -> HttpResponse {
    let mut details = String::from("use ");
    // HEAD goes without saying where GET is allowed.
    let shown = allow
        .names()
        .filter(|n| *n != "HEAD" || !allow.contains(Method::Get));
    for (i, name) in shown.enumerate() {
        if i > 0 {
            details.push_str(" or ");
        }
        details.push_str(name);
    }
    codec::http_error(405, "method not allowed", Some(&details))
        .with_header("allow", format!("{allow}"))
}

/// Whether a request may use `route`: `Ok` or the answer to send at once (`401`/`403`, with
/// the JSON error shape of every system). `header` looks a request header up by its lower-case
/// name; nothing else of the request is needed, so this runs before the body is read.
pub fn authorize<'h>(
    route: &Route,
    spec: &SystemSpec,
    options: &Options,
    header: impl Fn(&str) -> Option<&'h str>,
) -> Result<(), HttpResponse> {
    let configured = options.has_api_key();
    match route.key {
        KeyRule::Open => return Ok(()),
        KeyRule::IfConfigured if !configured => return Ok(()),
        KeyRule::Required if !configured => {
            let error = format!("publishing disabled: set {}", spec.api_key_env);
            return Err(codec::http_error(403, &error, None));
        }
        _ => {}
    }
    if codec::api_key_matches(header, &options.api_keys) {
        Ok(())
    } else {
        Err(codec::http_error(401, "invalid or missing API key", None)
            .with_header("www-authenticate", "Bearer"))
    }
}

/// One system: its seed's documented defaults, what harnesses need to cover it, and how to start
/// its hub.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct SystemSpec {
    /// Short name used on the command line and in metrics, e.g. `collab`; its protocol document
    /// is `docs/protocol/<name>-v1.md`.
    pub name: &'static str,
    /// What it is, a few words for `--help` and logs.
    pub title: &'static str,
    /// What it does, one line for `--help` and system listings.
    pub about: &'static str,
    /// The seed's default port.
    pub default_port: u16,
    /// The seed's environment variable for the port, honoured when this system runs alone.
    pub port_env: Option<&'static str>,
    /// The WebSocket path; `None` accepts an upgrade on any path (as `ws` with no `path` does).
    pub ws_path: Option<&'static str>,
    /// How the upgrade is authenticated.
    pub auth: Auth,
    /// Which browser origins may connect; `None`: any.
    pub origins: Option<OriginPolicy>,
    /// The environment variable for [`Options::api_keys`] (comma-separated, see
    /// [`parse_api_keys`]).
    pub api_key_env: &'static str,
    /// Its HTTP endpoints: every one its decoder routes and its protocol's `on_http` answers.
    pub routes: &'static [Route],
    /// The `type` tags a client may send (each documented with an example).
    pub client_types: &'static [&'static str],
    /// The fixed `type` tags the server sends (each documented with an example).
    pub server_types: &'static [&'static str],
    /// Decode a documented example and encode it again (the doc-vector tests, the fuzz target).
    pub round_trip: RoundTrip,
    /// Start its hub, type-erased: the runtime starts any system through this.
    pub build: Build,
    /// What a server-sent-event client's query parameters stand for: the client messages it
    /// would have sent right after opening, as v1 JSON text (see [`SseSetup`]).
    pub sse_setup: SseSetup,
}

/// The messages a server-sent-event client (which cannot send) stands for with its query
/// parameters: v1 client messages as JSON text, in order, which the runtime decodes and hands
/// to the hub as if the client had sent them right after opening. The query is the request's,
/// decoded; parameters a system does not use are ignored.
pub type SseSetup = fn(&[(String, String)]) -> Vec<String>;

/// [`SseSetup`] of a system whose clients choose nothing by message (or choose it in the
/// query already, as race's `sessionId`).
pub fn no_sse_setup(_: &[(String, String)]) -> Vec<String> {
    Vec::new()
}

/// The suffix of a system's WebSocket path that names its server-sent-event stream.
pub const SSE_SUFFIX: &str = "/sse";

/// An HTTP request as a system's decoder leaves it for the hub: routed, its key checked, its
/// body decoded and validated. Only [`DecodedRequest::Apply`] needs the hub's state; the rest
/// are answers known before the hub sees the request.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum DecodedRequest<R> {
    /// Not one of the system's endpoints: the transport answers (its own endpoints, or 404).
    NotFound,
    /// Answer this and change nothing: a 405, 401 or 403 from the route table, or a 400 for a
    /// body that could not be used.
    Refuse {
        /// The answer.
        response: HttpResponse,
        /// The error label the hub counts ([`Context::count_error`]), for a refused body.
        error: Option<&'static str>,
    },
    /// A valid request for the hub to carry out.
    Apply(R),
}

impl<R> DecodedRequest<R> {
    /// A 400 (or other) answer for a body that could not be used, counted as `error`.
    pub fn invalid(error: &'static str, response: HttpResponse) -> Self {
        DecodedRequest::Refuse {
            response,
            error: Some(error),
        }
    }

    /// On the hub: the request to carry out, or (`Err`) the answer to give instead, with a
    /// refused body counted through `cx`.
    pub fn accept(self, cx: &mut Context<'_>) -> Result<R, Option<HttpResponse>> {
        match self {
            DecodedRequest::Apply(r) => Ok(r),
            DecodedRequest::NotFound => Err(None),
            DecodedRequest::Refuse { response, error } => {
                if let Some(kind) = error {
                    cx.count_error(kind);
                }
                Err(Some(response))
            }
        }
    }
}

impl SystemSpec {
    /// The path of its server-sent-event stream: the WebSocket path with [`SSE_SUFFIX`]
    /// appended (`/sse` for a system that takes upgrades on any path).
    ///
    /// ```
    /// let spec = switchboard_protocol::system("dcdock").unwrap();
    /// assert_eq!(spec.sse_path(), "/api/ws/sse");
    /// assert!(spec.is_sse_path("/api/ws/sse"));
    /// assert_eq!(switchboard_protocol::system("laptimes").unwrap().sse_path(), "/sse");
    /// ```
    pub fn sse_path(&self) -> String {
        format!("{}{SSE_SUFFIX}", self.ws_path.unwrap_or(""))
    }

    /// Whether `path` is its server-sent-event stream's path.
    pub fn is_sse_path(&self, path: &str) -> bool {
        path.strip_suffix(SSE_SUFFIX)
            .is_some_and(|base| base == self.ws_path.unwrap_or(""))
    }

    /// Which endpoint answers `method` on `path` (`GET` implies `HEAD`).
    pub fn route(&self, method: Method, path: &str) -> RouteMatch {
        let mut allow = Allow::default();
        for route in self.routes {
            if route.path.capture(path).is_some() {
                if route.allows(method) {
                    return RouteMatch::Found(route);
                }
                allow = allow.union(Allow::of(route.methods));
            }
        }
        if allow == Allow::default() {
            RouteMatch::NotFound
        } else {
            RouteMatch::MethodNotAllowed { allow }
        }
    }

    /// [`SystemSpec::route`] then [`authorize`]: everything decided before the body is read.
    pub fn admit<'h>(
        &self,
        method: Method,
        path: &str,
        options: &Options,
        header: impl Fn(&str) -> Option<&'h str>,
    ) -> Admission {
        match self.route(method, path) {
            RouteMatch::Found(route) => match authorize(route, self, options, header) {
                Ok(()) => Admission::Proceed(route),
                Err(response) => Admission::Refuse(response),
            },
            RouteMatch::MethodNotAllowed { allow } => Admission::Refuse(method_not_allowed(allow)),
            RouteMatch::NotFound => Admission::NotFound,
        }
    }

    /// Decode `request` for this system, wherever it arrived: [`SystemSpec::admit`] (route,
    /// method, key: refusals come back as [`DecodedRequest::Refuse`]), then `endpoint` with the
    /// route found and the path's variable part ([`PathPattern::capture`]) decodes the rest.
    pub fn decode_request<R>(
        &self,
        options: &Options,
        request: &HttpRequest,
        endpoint: impl FnOnce(&'static Route, &str) -> DecodedRequest<R>,
    ) -> DecodedRequest<R> {
        let route = match self.admit(request.method, &request.path, options, |h| {
            request.header(h)
        }) {
            Admission::Proceed(route) => route,
            Admission::Refuse(response) => {
                return DecodedRequest::Refuse {
                    response,
                    error: None,
                }
            }
            Admission::NotFound => return DecodedRequest::NotFound,
        };
        match route.path.capture(&request.path) {
            Some(arg) => endpoint(route, arg),
            // `admit` found the route by this very capture.
            None => DecodedRequest::NotFound,
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn client_ids_carry_the_node_tag_only_on_a_cluster() {
        let single = Options::default();
        assert_eq!(single.client_id("client_5_1".into()), "client_5_1");
        let node = Options::default().on_node("0a1b2c3d");
        assert_eq!(node.client_id("client_5_1".into()), "client_5_1_0a1b2c3d");
        assert_eq!(node.client_id("user_7_2".into()), "user_7_2_0a1b2c3d");
    }

    use super::*;
    use alloc::vec;

    const EXACT: PathPattern = PathPattern::Exact("/health");
    const PREFIX: PathPattern = PathPattern::Prefix("/events/");
    const BETWEEN: PathPattern = PathPattern::Between("/sessions/", "/updates");

    #[test]
    fn path_patterns_capture_their_variable_part() {
        assert_eq!(EXACT.capture("/health"), Some(""));
        assert_eq!(EXACT.capture("/health/"), None);
        assert_eq!(EXACT.capture("/healthz"), None);
        assert_eq!(PREFIX.capture("/events/todo-created"), Some("todo-created"));
        assert_eq!(PREFIX.capture("/events/"), Some(""));
        assert_eq!(PREFIX.capture("/events/a/b"), Some("a/b"));
        assert_eq!(PREFIX.capture("/events"), None);
        assert_eq!(BETWEEN.capture("/sessions/s1/updates"), Some("s1"));
        assert_eq!(BETWEEN.capture("/sessions//updates"), Some(""));
        assert_eq!(BETWEEN.capture("/sessions/../updates"), Some(".."));
        assert_eq!(BETWEEN.capture("/sessions/a/b/updates"), None);
        assert_eq!(BETWEEN.capture("/sessions/updates"), None);
        assert_eq!(BETWEEN.capture("/sessions/s1/updates/"), None);
    }

    #[test]
    fn allow_lists_methods_in_a_fixed_order_with_head_after_get() {
        assert_eq!(Allow::of(&[Method::Get]).to_string(), "GET, HEAD");
        assert_eq!(Allow::of(&[Method::Post]).to_string(), "POST");
        assert_eq!(
            Allow::of(&[Method::Post, Method::Get]).to_string(),
            "GET, HEAD, POST"
        );
        assert_eq!(Allow::default().to_string(), "");
        let a = Allow::of(&[Method::Get]);
        assert!(a.contains(Method::Head) && a.contains(Method::Get));
        assert!(!a.contains(Method::Post) && !a.contains(Method::Other));
        assert!(!Allow::of(&[Method::Other]).contains(Method::Other));
    }

    #[test]
    fn method_not_allowed_carries_allow_and_the_usual_body() {
        let r = method_not_allowed(Allow::of(&[Method::Post]));
        assert_eq!(r.status, 405);
        assert_eq!(r.header("allow"), Some("POST"));
        assert_eq!(
            &r.body[..],
            br#"{"error":"method not allowed","details":"use POST"}"#
        );
        let r = method_not_allowed(Allow::of(&[Method::Get]));
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
        assert_eq!(
            &r.body[..],
            br#"{"error":"method not allowed","details":"use GET"}"#
        );
        let r = method_not_allowed(Allow::of(&[Method::Get, Method::Post]));
        assert_eq!(r.header("allow"), Some("GET, HEAD, POST"));
        assert_eq!(
            &r.body[..],
            br#"{"error":"method not allowed","details":"use GET or POST"}"#
        );
    }

    static ROUTES: &[Route] = &[
        Route::get(EXACT),
        Route::publish(BETWEEN, KeyRule::Required),
        Route::publish(PREFIX, KeyRule::IfConfigured),
        Route::get(PathPattern::Exact("/both")),
        Route::publish(PathPattern::Exact("/both"), KeyRule::Open),
    ];

    fn no_hub(_: &Options, _: Config, _: Instant) -> Box<dyn DynHub> {
        unreachable!("these tests start no hub")
    }

    /// A system with the routes above (its own modules are not imported here: they import this).
    fn spec() -> SystemSpec {
        SystemSpec {
            name: "test",
            title: "test",
            about: "test",
            default_port: 1,
            port_env: None,
            ws_path: None,
            auth: Auth::None,
            origins: None,
            api_key_env: "RACE_API_KEY",
            routes: ROUTES,
            client_types: &[],
            server_types: &[],
            round_trip: |_, _| Err(DecodeError::NotAnObject),
            build: no_hub,
            sse_setup: no_sse_setup,
        }
    }

    #[test]
    fn route_finds_the_endpoint_or_says_what_is_allowed() {
        let spec = spec();
        assert_eq!(
            spec.route(Method::Get, "/health"),
            RouteMatch::Found(&ROUTES[0])
        );
        assert_eq!(
            spec.route(Method::Head, "/health"),
            RouteMatch::Found(&ROUTES[0])
        );
        assert_eq!(
            spec.route(Method::Post, "/health"),
            RouteMatch::MethodNotAllowed {
                allow: Allow::of(&[Method::Get])
            }
        );
        assert_eq!(
            spec.route(Method::Post, "/sessions/s1/updates"),
            RouteMatch::Found(&ROUTES[1])
        );
        for m in [Method::Get, Method::Head, Method::Put, Method::Other] {
            assert_eq!(
                spec.route(m, "/sessions/s1/updates"),
                RouteMatch::MethodNotAllowed {
                    allow: Allow::of(&[Method::Post])
                },
                "{m:?}"
            );
        }
        // Two routes on one path: each method finds its own, the rest get the union.
        assert_eq!(
            spec.route(Method::Get, "/both"),
            RouteMatch::Found(&ROUTES[3])
        );
        assert_eq!(
            spec.route(Method::Post, "/both"),
            RouteMatch::Found(&ROUTES[4])
        );
        assert_eq!(
            spec.route(Method::Delete, "/both"),
            RouteMatch::MethodNotAllowed {
                allow: Allow::of(&[Method::Get, Method::Post])
            }
        );
        for path in [
            "/",
            "/metrics",
            "/sessions/a/b/updates",
            "/events",
            "/health/",
        ] {
            assert_eq!(
                spec.route(Method::Post, path),
                RouteMatch::NotFound,
                "{path}"
            );
        }
    }

    fn headers<'a>(h: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> + 'a {
        move |name| h.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    /// `authorize` sees the route, the options and a header lookup: no body exists at this point.
    #[test]
    fn authorize_needs_only_the_headers() {
        let spec = spec();
        let none = Options::default();
        let keys = Options::default().with_api_key("old").with_api_key("new");
        let (open, required, if_configured) = (&ROUTES[0], &ROUTES[1], &ROUTES[2]);
        let good = [("x-api-key", "new")];
        let bearer = [("authorization", "Bearer old")];
        let bad = [("x-api-key", "nope")];

        assert_eq!(authorize(open, &spec, &keys, headers(&[])), Ok(()));
        assert_eq!(authorize(if_configured, &spec, &none, headers(&[])), Ok(()));
        assert_eq!(
            authorize(if_configured, &spec, &none, headers(&bad)),
            Ok(())
        );
        for h in [&good[..], &bearer[..]] {
            assert_eq!(authorize(if_configured, &spec, &keys, headers(h)), Ok(()));
            assert_eq!(authorize(required, &spec, &keys, headers(h)), Ok(()));
        }
        for route in [required, if_configured] {
            for h in [&bad[..], &[][..], &[("authorization", "new")][..]] {
                let r = authorize(route, &spec, &keys, headers(h)).unwrap_err();
                assert_eq!(r.status, 401);
                assert_eq!(&r.body[..], br#"{"error":"invalid or missing API key"}"#);
                assert_eq!(r.header("www-authenticate"), Some("Bearer"));
            }
        }
        let r = authorize(required, &spec, &none, headers(&good)).unwrap_err();
        assert_eq!(r.status, 403);
        assert_eq!(
            &r.body[..],
            br#"{"error":"publishing disabled: set RACE_API_KEY"}"#
        );
        // An empty key is no key: still 403, and an empty header does not match it.
        let empty = Options {
            api_keys: vec![String::new()],
            ..Options::default()
        };
        assert!(!empty.has_api_key());
        let r = authorize(required, &spec, &empty, headers(&[("x-api-key", "")]));
        assert_eq!(r.unwrap_err().status, 403);
        assert_eq!(
            authorize(if_configured, &spec, &empty, headers(&[])),
            Ok(())
        );
    }

    #[test]
    fn admit_combines_route_and_authorize() {
        let spec = spec();
        let keys = Options::default().with_api_key("k");
        let h = [("x-api-key", "k")];
        assert_eq!(
            spec.admit(Method::Post, "/sessions/s/updates", &keys, headers(&h)),
            Admission::Proceed(&ROUTES[1])
        );
        let Admission::Refuse(r) =
            spec.admit(Method::Post, "/sessions/s/updates", &keys, headers(&[]))
        else {
            panic!("expected a refusal")
        };
        assert_eq!(r.status, 401);
        let Admission::Refuse(r) =
            spec.admit(Method::Get, "/sessions/s/updates", &keys, headers(&h))
        else {
            panic!("expected a refusal")
        };
        assert_eq!((r.status, r.header("allow")), (405, Some("POST")));
        assert_eq!(
            spec.admit(Method::Get, "/nope", &keys, headers(&h)),
            Admission::NotFound
        );
    }

    #[test]
    fn api_key_values_are_comma_separated() {
        assert_eq!(parse_api_keys("k1"), vec!["k1"]);
        assert_eq!(parse_api_keys(" k1 , k2,,"), vec!["k1", "k2"]);
        assert!(parse_api_keys("").is_empty());
        assert!(parse_api_keys(" , ").is_empty());
    }

    #[test]
    fn options_default_to_no_key_and_256_byte_ids() {
        let o = Options::default();
        assert!(o.api_keys.is_empty() && !o.has_api_key());
        assert_eq!(o.max_id_bytes, DEFAULT_MAX_ID_BYTES);
        assert_eq!(DEFAULT_MAX_ID_BYTES, 256);
        assert_eq!(o.with_max_id_bytes(8).max_id_bytes, 8);
    }
}
