//! What a transport checks before a WebSocket upgrade becomes a hub connection: the handshake
//! itself (RFC 6455 section 4.2.1, RFC 9112's `Host` rule), the browser origin, and the system's
//! authentication. Shared by both transports.
//!
//! Everything here is decided from the request head alone and is pure: no I/O, no hub.

use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use switchboard_hub::{CloseCode, Identity, OpenInfo};
use switchboard_protocol::spec::Auth;
use switchboard_protocol::SystemSpec;
use tokio_tungstenite::tungstenite::http::{header, HeaderMap, Method, Version};

use crate::logging::Clip;

/// Leeway, in seconds, for a token's `exp` and `nbf` against the server's clock.
pub const JWT_LEEWAY_SECS: u64 = 5;

/// The HS256 keys that verify a system's tokens: any number, each with an optional key id.
#[derive(Clone, Default)]
pub struct JwtKeys {
    keys: Vec<(Option<String>, DecodingKey)>,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<_> = self
            .keys
            .iter()
            .map(|(kid, _)| kid.as_deref().unwrap_or("<no kid>"))
            .collect();
        f.debug_struct("JwtKeys").field("keys", &kids).finish()
    }
}

impl JwtKeys {
    /// One secret, taken verbatim (the seed's `DCDOCK_JWT_SECRET`).
    pub fn single(secret: &str) -> JwtKeys {
        let mut keys = JwtKeys::default();
        keys.add(None, secret);
        keys
    }

    /// Add a secret, named `kid` if given.
    pub fn add(&mut self, kid: Option<&str>, secret: &str) {
        self.keys.push((
            kid.map(str::to_owned),
            DecodingKey::from_secret(secret.as_bytes()),
        ));
    }

    /// Add the keys of a rotation list: comma-separated `kid:secret` entries (the key id may not
    /// contain `:` or `,`; the secret may not contain `,`).
    pub fn add_list(&mut self, list: &str) -> Result<(), String> {
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let Some((kid, secret)) = entry.split_once(':') else {
                return Err("each key must be written `kid:secret`".into());
            };
            if kid.is_empty() || secret.is_empty() {
                return Err("a key id and its secret must not be empty".into());
            }
            self.add(Some(kid), secret);
        }
        Ok(())
    }

    /// Whether no key is configured (every token is then refused).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys a token naming `kid` may be verified with: the key with that id when the token
    /// names one, else every key.
    fn candidates<'a>(&'a self, kid: Option<&'a str>) -> impl Iterator<Item = &'a DecodingKey> {
        self.keys
            .iter()
            .filter(move |(k, _)| kid.is_none() || k.as_deref() == kid)
            .map(|(_, key)| key)
    }
}

/// One system's WebSocket endpoint, as configured at startup.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The system's registry entry.
    pub spec: &'static SystemSpec,
    /// Browser origins allowed to connect; `None` allows any. Requests without an `Origin`
    /// header (non-browser clients) are always allowed: origin checks protect browsers only.
    pub allowed_origins: Option<Vec<String>>,
    /// Keys for [`Auth::JwtQuery`]; when empty every token is refused.
    pub jwt: JwtKeys,
    /// Longest user id a token may carry (the hub's cap on client-chosen identifiers).
    pub max_id_bytes: usize,
}

/// Why an upgrade was refused, as a stable label for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// Not a valid opening handshake (or a bad `Host`).
    Handshake,
    /// No WebSocket at that path.
    Path,
    /// A browser origin the system does not allow (or a malformed `Origin`).
    Origin,
    /// A missing, bad or expired token.
    Token,
    /// The connection limit.
    Limit,
}

impl RefusalReason {
    /// The label, e.g. `"origin"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::Handshake => "handshake",
            RefusalReason::Path => "path",
            RefusalReason::Origin => "origin",
            RefusalReason::Token => "token",
            RefusalReason::Limit => "limit",
        }
    }
}

/// The verdict on an upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Upgrade and open a hub connection with this information.
    Accept(OpenInfo),
    /// Refuse the upgrade with an HTTP status and a reason (client-supplied parts clipped).
    Refuse(u16, String, RefusalReason),
    /// Upgrade, then close at once with this code (the seed's documented way to refuse a token).
    Close(CloseCode, &'static str),
}

/// Split a query string into decoded pairs.
pub fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The request's `Origin`: `Ok(None)` without one; an error (for a `400`) when there are
/// several or its value is not visible ASCII. A browser sends exactly one, always ASCII
/// (RFC 6454), so anything else is not a browser and not to be guessed at.
pub fn origin_header(headers: &HeaderMap) -> Result<Option<&str>, &'static str> {
    let mut values = headers.get_all(header::ORIGIN).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("more than one Origin header");
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| "the Origin header is not ASCII")
}

/// Why a request is not a valid HTTP/1.1 request for this server (RFC 9112 section 3.2: an
/// HTTP/1.1 request needs exactly one `Host`; no request may carry two): a `400` reason.
pub fn host_problem(version: Version, headers: &HeaderMap) -> Option<&'static str> {
    let hosts = headers.get_all(header::HOST).iter().count();
    if hosts > 1 {
        return Some("more than one Host header");
    }
    if hosts == 0 && version >= Version::HTTP_11 {
        return Some("an HTTP/1.1 request needs a Host header");
    }
    None
}

/// Whether any of `name`'s comma-separated values is `token` (case-insensitive).
pub fn has_token(headers: &HeaderMap, name: &header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether `key` is a valid `Sec-WebSocket-Key`: the base64 encoding of 16 bytes (RFC 6455
/// section 4.1), decoded as strictly as tungstenite does.
pub fn valid_websocket_key(key: &[u8]) -> bool {
    key.len() == 24
        && data_encoding::BASE64
            .decode(key)
            .is_ok_and(|nonce| nonce.len() == 16)
}

/// Why a request that asks for a WebSocket is not a valid opening handshake (RFC 6455 section
/// 4.2.1), as an HTTP status and a reason: `426` for a version other than 13, else `400`.
pub fn handshake_problem(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
) -> Option<(u16, &'static str)> {
    if method != Method::GET {
        return Some((400, "a WebSocket upgrade must use GET"));
    }
    if version < Version::HTTP_11 {
        return Some((400, "a WebSocket upgrade needs HTTP/1.1"));
    }
    if let Some(problem) = host_problem(version, headers) {
        return Some((400, problem));
    }
    if !has_token(headers, &header::CONNECTION, "upgrade") {
        return Some((400, "a WebSocket upgrade needs `Connection: Upgrade`"));
    }
    let mut keys = headers.get_all(header::SEC_WEBSOCKET_KEY).iter();
    match (keys.next(), keys.next()) {
        (Some(key), None) if valid_websocket_key(key.as_bytes()) => {}
        (None, _) => return Some((400, "a WebSocket upgrade needs a Sec-WebSocket-Key header")),
        _ => {
            return Some((
                400,
                "Sec-WebSocket-Key must be one base64-encoded 16-byte value",
            ))
        }
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Some((426, "only WebSocket version 13 is supported"));
    }
    None
}

impl Endpoint {
    /// An endpoint with no origin list, no JWT keys and the default identifier cap.
    pub fn new(spec: &'static SystemSpec) -> Self {
        Endpoint {
            spec,
            allowed_origins: None,
            jwt: JwtKeys::default(),
            max_id_bytes: switchboard_protocol::spec::DEFAULT_MAX_ID_BYTES,
        }
    }

    /// An endpoint with the seed's defaults read from the environment (origins and JWT secret).
    pub fn from_env(spec: &'static SystemSpec) -> Self {
        let mut endpoint = Endpoint::new(spec);
        endpoint.allowed_origins = spec.origins.map(|o| {
            parse_origins(&std::env::var(o.env).unwrap_or_else(|_| o.default.to_string()))
        });
        if let Auth::JwtQuery { secret_env, .. } = spec.auth {
            if let Ok(secret) = std::env::var(secret_env) {
                endpoint.jwt = JwtKeys::single(&secret);
            }
        }
        endpoint
    }

    /// Whether `path` is this system's WebSocket path.
    pub fn is_ws_path(&self, path: &str) -> bool {
        self.spec.ws_path.is_none_or(|p| p == path)
    }

    /// Whether the system has an origin allow-list that contains `*`.
    pub fn allows_any_origin(&self) -> bool {
        self.allowed_origins
            .as_ref()
            .is_some_and(|list| list.iter().any(|a| a == "*"))
    }

    /// Whether a browser at `origin` may connect (always, when the system has no origin policy).
    pub fn allows_origin(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/');
        self.allowed_origins
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|a| a == "*" || a == origin))
    }

    /// Judge an upgrade request (its handshake already found valid) by its path, query and
    /// `Origin` (as [`origin_header`] read it).
    pub fn check(
        &self,
        path: &str,
        query: Option<&str>,
        origin: Result<Option<&str>, &'static str>,
    ) -> Verdict {
        if !self.is_ws_path(path) {
            return Verdict::Refuse(
                404,
                format!("no WebSocket endpoint at {}", Clip(path)),
                RefusalReason::Path,
            );
        }
        self.admit(path, query, origin)
    }

    /// Judge a request at a path already found to be this system's (the WebSocket's, or its
    /// server-sent-event stream's) by its query and `Origin`: the origin allow-list, then the
    /// token.
    pub fn admit(
        &self,
        path: &str,
        query: Option<&str>,
        origin: Result<Option<&str>, &'static str>,
    ) -> Verdict {
        match origin {
            Err(problem) => return Verdict::Refuse(400, problem.into(), RefusalReason::Origin),
            Ok(Some(origin)) if !self.allows_origin(origin) => {
                let origin = origin.trim_end_matches('/');
                return Verdict::Refuse(
                    403,
                    format!("origin {} is not allowed", Clip(origin)),
                    RefusalReason::Origin,
                );
            }
            Ok(_) => {}
        }
        let query = parse_query(query);
        let identity = match self.spec.auth {
            Auth::None => None,
            Auth::JwtQuery { param, .. } => {
                let token = query
                    .iter()
                    .find(|(k, _)| k == param)
                    .map(|(_, v)| v.as_str());
                match (token, self.jwt.is_empty()) {
                    (None, _) => {
                        return Verdict::Close(CloseCode::POLICY_VIOLATION, "missing token")
                    }
                    (Some(_), true) => {
                        return Verdict::Close(
                            CloseCode::POLICY_VIOLATION,
                            "server has no JWT secret configured",
                        )
                    }
                    (Some(token), false) => match verify_jwt(token, &self.jwt, &self.spec.auth) {
                        Ok(identity) if identity.user.len() > self.max_id_bytes => {
                            return Verdict::Close(
                                CloseCode::POLICY_VIOLATION,
                                "the token's user id is too long",
                            )
                        }
                        Ok(identity) => Some(identity),
                        Err(why) => return Verdict::Close(CloseCode::POLICY_VIOLATION, why),
                    },
                }
            }
            // An authentication scheme this gate does not know: fail closed.
            _ => {
                return Verdict::Close(
                    CloseCode::POLICY_VIOLATION,
                    "authentication this server cannot check",
                )
            }
        };
        Verdict::Accept(OpenInfo {
            path: path.to_string(),
            query,
            identity,
            ..OpenInfo::default()
        })
    }
}

/// Parse a comma-separated origin list (trailing slashes dropped, empty entries ignored).
pub fn parse_origins(list: &str) -> Vec<String> {
    list.split(',')
        .map(|s| s.trim().trim_end_matches('/').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn claim_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Verify an HS256 JWT (signature, `exp` required, `nbf` when present, both with
/// [`JWT_LEEWAY_SECS`]) with the key its `kid` names, or any key when it names none; read the
/// identity from its claims as the system's `auth` maps them ([`Auth::identity`]: e.g. the user
/// is `user_id` if present, else `sub`, a string or a number). The error is the close reason.
pub fn verify_jwt(token: &str, keys: &JwtKeys, auth: &Auth) -> Result<Identity, &'static str> {
    const INVALID: &str = "invalid or expired token";
    let header = decode_header(token).map_err(|_| INVALID)?;
    if header.alg != Algorithm::HS256 {
        return Err(INVALID);
    }
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = JWT_LEEWAY_SECS;
    validation.validate_nbf = true;
    let mut candidates = keys.candidates(header.kid.as_deref()).peekable();
    if candidates.peek().is_none() {
        return Err("the token's key id is not known");
    }
    let claims = candidates
        .find_map(|key| decode::<Map<String, Value>>(token, key, &validation).ok())
        .ok_or(INVALID)?
        .claims;
    auth.identity(|name| claims.get(name).and_then(claim_string))
        .ok_or("the token names no user")
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;
    use tokio_tungstenite::tungstenite::http::HeaderValue;

    fn token_with(claims: Value, secret: &str, kid: Option<&str>) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.map(str::to_owned);
        encode(
            &header,
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn dcdock() -> Auth {
        switchboard_protocol::system("dcdock").unwrap().auth
    }

    fn token(claims: Value, secret: &str) -> String {
        token_with(claims, secret, None)
    }

    fn at(offset: i64) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        now + offset
    }

    #[test]
    fn jwt_identity_and_failures() {
        let keys = JwtKeys::single("s3cret");
        let good = token(
            json!({"sub": "7", "email": "a@b.c", "exp": at(600)}),
            "s3cret",
        );
        let id = verify_jwt(&good, &keys, &dcdock()).unwrap();
        assert_eq!(id.user, "7");
        assert_eq!(id.claim("email"), Some("a@b.c"));
        let numeric = token(json!({"user_id": 3, "sub": "x", "exp": at(600)}), "s3cret");
        assert_eq!(verify_jwt(&numeric, &keys, &dcdock()).unwrap().user, "3");
        assert!(
            verify_jwt(&good, &JwtKeys::single("wrong"), &dcdock()).is_err(),
            "bad signature"
        );
        let expired = token(json!({"sub": "7", "exp": at(-3600)}), "s3cret");
        assert!(verify_jwt(&expired, &keys, &dcdock()).is_err(), "expired");
        let no_exp = token(json!({"sub": "7"}), "s3cret");
        assert!(
            verify_jwt(&no_exp, &keys, &dcdock()).is_err(),
            "exp is required"
        );
        assert!(verify_jwt("garbage", &keys, &dcdock()).is_err());
        let no_user = token(json!({"exp": at(600)}), "s3cret");
        assert_eq!(
            verify_jwt(&no_user, &keys, &dcdock()).unwrap_err(),
            "the token names no user"
        );
    }

    #[test]
    fn jwt_not_before_is_checked_with_the_same_leeway_as_exp() {
        let keys = JwtKeys::single("s3cret");
        let later = token(
            json!({"sub": "7", "exp": at(7200), "nbf": at(3600)}),
            "s3cret",
        );
        assert!(
            verify_jwt(&later, &keys, &dcdock()).is_err(),
            "valid only an hour ahead"
        );
        let almost = token(json!({"sub": "7", "exp": at(600), "nbf": at(3)}), "s3cret");
        assert!(
            verify_jwt(&almost, &keys, &dcdock()).is_ok(),
            "within the leeway"
        );
        let past = token(
            json!({"sub": "7", "exp": at(600), "nbf": at(-60)}),
            "s3cret",
        );
        assert!(verify_jwt(&past, &keys, &dcdock()).is_ok());
    }

    #[test]
    fn jwt_key_rotation_by_kid() {
        let mut keys = JwtKeys::single("primary");
        keys.add_list("old:previous-secret, new:next-secret")
            .unwrap();
        let claims = json!({"sub": "7", "exp": at(600)});
        // Named keys are used only for their id.
        let next = token_with(claims.clone(), "next-secret", Some("new"));
        assert!(verify_jwt(&next, &keys, &dcdock()).is_ok());
        let misnamed = token_with(claims.clone(), "next-secret", Some("old"));
        assert!(verify_jwt(&misnamed, &keys, &dcdock()).is_err());
        assert_eq!(
            verify_jwt(
                &token_with(claims.clone(), "primary", Some("nope")),
                &keys,
                &dcdock()
            )
            .unwrap_err(),
            "the token's key id is not known"
        );
        // Without a kid, any key.
        assert!(verify_jwt(&token(claims.clone(), "primary"), &keys, &dcdock()).is_ok());
        assert!(verify_jwt(&token(claims.clone(), "previous-secret"), &keys, &dcdock()).is_ok());
        assert!(verify_jwt(&token(claims, "unknown"), &keys, &dcdock()).is_err());
        assert!(JwtKeys::default().add_list("no-colon").is_err());
        assert!(JwtKeys::default().add_list("kid:").is_err());
    }

    #[test]
    fn origin_and_path_checks() {
        let spec = switchboard_protocol::system("collab").unwrap();
        let mut ep = Endpoint::new(spec);
        ep.allowed_origins = Some(vec!["http://localhost:3000".into()]);
        assert!(matches!(
            ep.check("/ws", None, Ok(Some("http://localhost:3000"))),
            Verdict::Accept(_)
        ));
        assert!(matches!(
            ep.check("/ws", None, Ok(None)),
            Verdict::Accept(_)
        ));
        assert_eq!(
            ep.check("/ws", None, Ok(Some("http://evil.example"))),
            Verdict::Refuse(
                403,
                "origin http://evil.example is not allowed".into(),
                RefusalReason::Origin
            )
        );
        assert!(matches!(
            ep.check("/other", None, Ok(None)),
            Verdict::Refuse(404, _, RefusalReason::Path)
        ));
        assert!(matches!(
            ep.check("/ws", None, Err("more than one Origin header")),
            Verdict::Refuse(400, _, RefusalReason::Origin)
        ));
        // A huge origin is clipped in the reason.
        let huge = format!("http://{}.example", "a".repeat(60_000));
        match ep.check("/ws", None, Ok(Some(&huge))) {
            Verdict::Refuse(403, reason, _) => assert!(reason.len() < 300, "{}", reason.len()),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn origin_header_must_be_one_ascii_value() {
        let mut h = HeaderMap::new();
        assert_eq!(origin_header(&h), Ok(None));
        h.append(header::ORIGIN, HeaderValue::from_static("http://a.example"));
        assert_eq!(origin_header(&h), Ok(Some("http://a.example")));
        h.append(header::ORIGIN, HeaderValue::from_static("http://b.example"));
        assert!(origin_header(&h).is_err(), "two Origin headers");
        let mut h = HeaderMap::new();
        h.insert(
            header::ORIGIN,
            HeaderValue::from_bytes("http://é.example".as_bytes()).unwrap(),
        );
        assert!(origin_header(&h).is_err(), "not ASCII");
    }

    #[test]
    fn websocket_keys() {
        assert!(valid_websocket_key(b"dGhlIHNhbXBsZSBub25jZQ=="));
        for bad in [
            &b""[..],
            b"x",
            b"dGhlIHNhbXBsZSBub25jZQ",
            b"dGhlIHNhbXBsZSBub25jZQ===",
            b"dGhlIHNhbXBsZSBub25jZB==",
            b"dGhlIHNhbXBsZSBub25j!Q==",
            b"AAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert!(!valid_websocket_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn handshake_checks() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("x"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        assert_eq!(handshake_problem(&Method::GET, Version::HTTP_11, &h), None);
        assert_eq!(
            handshake_problem(&Method::GET, Version::HTTP_10, &h).map(|p| p.0),
            Some(400)
        );
        assert_eq!(
            handshake_problem(&Method::POST, Version::HTTP_11, &h).map(|p| p.0),
            Some(400)
        );
        let mut two_hosts = h.clone();
        two_hosts.append(header::HOST, HeaderValue::from_static("y"));
        assert_eq!(
            handshake_problem(&Method::GET, Version::HTTP_11, &two_hosts),
            Some((400, "more than one Host header"))
        );
        let mut no_host = h.clone();
        no_host.remove(header::HOST);
        assert_eq!(
            handshake_problem(&Method::GET, Version::HTTP_11, &no_host).map(|p| p.0),
            Some(400)
        );
        let mut bad_key = h.clone();
        bad_key.insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static("short"));
        assert_eq!(
            handshake_problem(&Method::GET, Version::HTTP_11, &bad_key).map(|p| p.0),
            Some(400)
        );
        let mut v8 = h;
        v8.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        assert_eq!(
            handshake_problem(&Method::GET, Version::HTTP_11, &v8).map(|p| p.0),
            Some(426)
        );
    }
}
