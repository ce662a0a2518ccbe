//! What a transport checks before a WebSocket upgrade becomes a hub connection: the path, the
//! browser origin, and the system's authentication. Shared by both transports.

use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use switchboard_hub::{CloseCode, Identity, OpenInfo};
use switchboard_protocol::registry::Auth;
use switchboard_protocol::SystemSpec;

/// One system's WebSocket endpoint, as configured at startup.
#[derive(Clone)]
pub struct Endpoint {
    /// The system's registry entry.
    pub spec: &'static SystemSpec,
    /// Browser origins allowed to connect; `None` allows any. Requests without an `Origin`
    /// header (non-browser clients) are always allowed: origin checks protect browsers only.
    pub allowed_origins: Option<Vec<String>>,
    /// HS256 secret for [`Auth::JwtQuery`]; when unset every token is refused.
    pub jwt_secret: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("system", &self.spec.name)
            .field("allowed_origins", &self.allowed_origins)
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// The verdict on an upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Upgrade and open a hub connection with this information.
    Accept(OpenInfo),
    /// Refuse the upgrade with an HTTP status and a reason.
    Refuse(u16, String),
    /// Upgrade, then close at once with this code (the seed's documented way to refuse a token).
    Close(CloseCode, &'static str),
}

/// Split a query string into decoded pairs.
pub fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

impl Endpoint {
    /// An endpoint with the seed's defaults read from the environment (origins and JWT secret).
    pub fn from_env(spec: &'static SystemSpec) -> Self {
        let allowed_origins = spec.origins.map(|o| {
            let list = std::env::var(o.env).unwrap_or_else(|_| o.default.to_string());
            list.split(',')
                .map(|s| s.trim().trim_end_matches('/').to_string())
                .filter(|s| !s.is_empty())
                .collect()
        });
        let jwt_secret = match spec.auth {
            Auth::JwtQuery { secret_env, .. } => std::env::var(secret_env).ok(),
            Auth::None => None,
        };
        Endpoint {
            spec,
            allowed_origins,
            jwt_secret,
        }
    }

    /// Whether `path` is this system's WebSocket path.
    pub fn is_ws_path(&self, path: &str) -> bool {
        self.spec.ws_path.is_none_or(|p| p == path)
    }

    /// Whether a browser at `origin` may connect (always, when the system has no origin policy).
    pub fn allows_origin(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/');
        self.allowed_origins
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|a| a == "*" || a == origin))
    }

    /// Judge an upgrade request.
    pub fn check(&self, path: &str, query: Option<&str>, origin: Option<&str>) -> Verdict {
        if !self.is_ws_path(path) {
            return Verdict::Refuse(404, format!("no WebSocket endpoint at {path}"));
        }
        if let Some(origin) = origin {
            if !self.allows_origin(origin) {
                let origin = origin.trim_end_matches('/');
                return Verdict::Refuse(403, format!("origin {origin} is not allowed"));
            }
        }
        let query = parse_query(query);
        let identity = match self.spec.auth {
            Auth::None => None,
            Auth::JwtQuery { param, .. } => {
                let token = query
                    .iter()
                    .find(|(k, _)| k == param)
                    .map(|(_, v)| v.as_str());
                match (token, &self.jwt_secret) {
                    (None, _) => {
                        return Verdict::Close(CloseCode::POLICY_VIOLATION, "missing token")
                    }
                    (Some(_), None) => {
                        return Verdict::Close(
                            CloseCode::POLICY_VIOLATION,
                            "server has no JWT secret configured",
                        )
                    }
                    (Some(token), Some(secret)) => match verify_jwt(token, secret) {
                        Some(identity) => Some(identity),
                        None => {
                            return Verdict::Close(
                                CloseCode::POLICY_VIOLATION,
                                "invalid or expired token",
                            )
                        }
                    },
                }
            }
        };
        Verdict::Accept(OpenInfo {
            path: path.to_string(),
            query,
            identity,
        })
    }
}

fn claim_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Verify an HS256 JWT (signature and `exp`) and read the identity from its claims: the user is
/// `user_id` if present, else `sub`; `email` and `role` are kept as claims.
pub fn verify_jwt(token: &str, secret: &str) -> Option<Identity> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 5;
    let data = decode::<Map<String, Value>>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .ok()?;
    let claims = data.claims;
    let user = claims
        .get("user_id")
        .and_then(claim_string)
        .or_else(|| claims.get("sub").and_then(claim_string))?;
    let extra = ["email", "role"]
        .iter()
        .filter_map(|k| {
            claims
                .get(*k)
                .and_then(claim_string)
                .map(|v| (k.to_string(), v))
        })
        .collect();
    Some(Identity {
        user,
        claims: extra,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn token(claims: Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn exp(offset: i64) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        now + offset
    }

    #[test]
    fn jwt_identity_and_failures() {
        let good = token(
            json!({"sub": "7", "email": "a@b.c", "exp": exp(600)}),
            "s3cret",
        );
        let id = verify_jwt(&good, "s3cret").unwrap();
        assert_eq!(id.user, "7");
        assert_eq!(id.claim("email"), Some("a@b.c"));
        let numeric = token(json!({"user_id": 3, "sub": "x", "exp": exp(600)}), "s3cret");
        assert_eq!(verify_jwt(&numeric, "s3cret").unwrap().user, "3");
        assert!(verify_jwt(&good, "wrong").is_none(), "bad signature");
        let expired = token(json!({"sub": "7", "exp": exp(-3600)}), "s3cret");
        assert!(verify_jwt(&expired, "s3cret").is_none(), "expired");
        let no_exp = token(json!({"sub": "7"}), "s3cret");
        assert!(verify_jwt(&no_exp, "s3cret").is_none(), "exp is required");
        assert!(verify_jwt("garbage", "s3cret").is_none());
    }

    #[test]
    fn origin_and_path_checks() {
        let spec = switchboard_protocol::system("collab").unwrap();
        let ep = Endpoint {
            spec,
            allowed_origins: Some(vec!["http://localhost:3000".into()]),
            jwt_secret: None,
        };
        assert!(matches!(
            ep.check("/ws", None, Some("http://localhost:3000")),
            Verdict::Accept(_)
        ));
        assert!(matches!(ep.check("/ws", None, None), Verdict::Accept(_)));
        assert_eq!(
            ep.check("/ws", None, Some("http://evil.example")).clone(),
            Verdict::Refuse(403, "origin http://evil.example is not allowed".into())
        );
        assert!(matches!(
            ep.check("/other", None, None),
            Verdict::Refuse(404, _)
        ));
    }
}
