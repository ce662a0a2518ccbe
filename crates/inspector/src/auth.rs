//! The admin token: what it may be, how a request presents it (`Authorization: Bearer`, or the
//! `sb_admin` cookie that `/login` sets, since `EventSource` sends no headers), and how it is
//! checked (in constant time, whatever was sent).

use hyper::header::{self, HeaderMap};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The cookie that carries the token.
pub const COOKIE: &str = "sb_admin";

/// Shortest token accepted: a token guessed over the network must not be a short one.
pub const MIN_TOKEN_BYTES: usize = 16;

/// Why a token is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadToken {
    /// Shorter than [`MIN_TOKEN_BYTES`].
    TooShort,
    /// A byte a cookie value cannot carry (space, `"`, `,`, `;`, `\`, control or non-ASCII).
    NotCookieSafe,
}

impl std::fmt::Display for BadToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadToken::TooShort => write!(
                f,
                "SWITCHBOARD_ADMIN_TOKEN must be at least {MIN_TOKEN_BYTES} characters"
            ),
            BadToken::NotCookieSafe => f.write_str(
                "SWITCHBOARD_ADMIN_TOKEN may hold printable ASCII except space, '\"', ',', ';' and '\\' (it travels in a cookie)",
            ),
        }
    }
}

impl std::error::Error for BadToken {}

/// A byte RFC 6265 allows in a cookie value.
fn cookie_safe(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

/// The admin token, kept as its SHA-256 digest.
#[derive(Clone)]
pub struct Token {
    digest: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Token {
    /// `token`, if it is long enough and a cookie can carry it.
    pub fn new(token: &str) -> Result<Token, BadToken> {
        if token.len() < MIN_TOKEN_BYTES {
            return Err(BadToken::TooShort);
        }
        if !token.bytes().all(cookie_safe) {
            return Err(BadToken::NotCookieSafe);
        }
        Ok(Token {
            digest: digest(token.as_bytes()),
        })
    }

    /// Whether `given` is the token. Digests are compared, in constant time: how long it takes
    /// says nothing of how much of `given` was right, nor of the token's length.
    pub fn verify(&self, given: &str) -> bool {
        digest(given.as_bytes()).ct_eq(&self.digest).into()
    }

    /// Whether the request presents the token: as `Authorization: Bearer <token>`, or in the
    /// [`COOKIE`] cookie. Every presented value is checked.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        presented(headers).any(|t| self.verify(t))
    }
}

/// The tokens a request presents: bearer credentials and [`COOKIE`] cookie values.
pub fn presented(headers: &HeaderMap) -> impl Iterator<Item = &str> + '_ {
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
        });
    let cookies = headers
        .get_all(header::COOKIE)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name.trim() == COOKIE).then_some(value.trim().trim_matches('"'))
        });
    bearer.chain(cookies)
}

/// The `Set-Cookie` value that keeps `token` for this listener's pages: not readable by
/// scripts, never sent with a request another site starts.
pub fn cookie(token: &str) -> String {
    format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    const GOOD: &str = "0123456789abcdef-token";

    #[test]
    fn tokens_must_be_long_and_cookie_safe() {
        assert!(Token::new(GOOD).is_ok());
        assert_eq!(Token::new("short").unwrap_err(), BadToken::TooShort);
        assert_eq!(
            Token::new("0123456789abcdef;x").unwrap_err(),
            BadToken::NotCookieSafe
        );
        assert_eq!(
            Token::new("0123456789 abcdef").unwrap_err(),
            BadToken::NotCookieSafe
        );
        assert_eq!(
            Token::new("0123456789abcdéf").unwrap_err(),
            BadToken::NotCookieSafe
        );
        assert_eq!(format!("{:?}", Token::new(GOOD).unwrap()), "Token(***)");
    }

    /// Right only when every byte and the length are right: a prefix, an extension, one byte
    /// off, or nothing are all wrong (the comparison is of digests, with `subtle`).
    #[test]
    fn verify_compares_the_whole_token() {
        let t = Token::new(GOOD).unwrap();
        assert!(t.verify(GOOD));
        assert!(!t.verify(""));
        assert!(!t.verify(&GOOD[..GOOD.len() - 1]));
        assert!(!t.verify(&format!("{GOOD}x")));
        let mut off = GOOD.as_bytes().to_vec();
        off[3] ^= 1;
        assert!(!t.verify(std::str::from_utf8(&off).unwrap()));
    }

    #[test]
    fn a_request_presents_a_bearer_token_or_the_cookie() {
        let t = Token::new(GOOD).unwrap();
        let with = |name: header::HeaderName, value: &str| {
            let mut h = HeaderMap::new();
            h.append(name, HeaderValue::from_str(value).unwrap());
            h
        };
        assert!(t.admits(&with(header::AUTHORIZATION, &format!("Bearer {GOOD}"))));
        assert!(t.admits(&with(header::AUTHORIZATION, &format!("bearer  {GOOD}"))));
        assert!(!t.admits(&with(header::AUTHORIZATION, &format!("Basic {GOOD}"))));
        assert!(!t.admits(&with(header::AUTHORIZATION, "Bearer wrong-token-wrong")));
        assert!(t.admits(&with(
            header::COOKIE,
            &format!("theme=dark; {COOKIE}={GOOD}; x=y")
        )));
        assert!(!t.admits(&with(header::COOKIE, &format!("not_{COOKIE}={GOOD}"))));
        assert!(!t.admits(&HeaderMap::new()));
        assert_eq!(
            cookie(GOOD),
            format!("sb_admin={GOOD}; HttpOnly; SameSite=Strict; Path=/")
        );
    }
}
