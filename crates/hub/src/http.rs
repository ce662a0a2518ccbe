//! HTTP requests and responses as the hub sees them: read in full and bounded by the transport.

use alloc::string::String;
use alloc::vec::Vec;
use bytes::Bytes;

/// HTTP methods the hub distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// DELETE
    Delete,
    /// OPTIONS
    Options,
    /// Anything else.
    Other,
}

/// An HTTP request, already read in full by the transport (body bounded by the transport).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// The method.
    pub method: Method,
    /// The path, without the query, e.g. `/events/todo-created`.
    pub path: String,
    /// Decoded query parameters.
    pub query: Vec<(String, String)>,
    /// Headers with lower-case names.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl HttpRequest {
    /// The first header named `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP response for the transport to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// `Content-Type`, if there is a body.
    pub content_type: Option<&'static str>,
    /// The body.
    pub body: Bytes,
    /// Extra response headers (lower-case names), e.g. `("allow", "GET, HEAD")` on a 405.
    pub headers: Vec<(&'static str, String)>,
}

impl HttpResponse {
    /// A JSON response.
    pub fn json(status: u16, body: impl Into<Bytes>) -> Self {
        HttpResponse {
            status,
            content_type: Some("application/json"),
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// A plain-text response.
    pub fn text(status: u16, body: impl Into<Bytes>) -> Self {
        HttpResponse {
            status,
            content_type: Some("text/plain; charset=utf-8"),
            body: body.into(),
            headers: Vec::new(),
        }
    }

    /// A response with no body.
    pub fn empty(status: u16) -> Self {
        HttpResponse {
            status,
            content_type: None,
            body: Bytes::new(),
            headers: Vec::new(),
        }
    }

    /// The same response with one more header.
    ///
    /// ```
    /// use switchboard_hub::HttpResponse;
    /// let r = HttpResponse::empty(405).with_header("allow", "POST");
    /// assert_eq!(r.header("allow"), Some("POST"));
    /// assert!(HttpResponse::empty(204).headers.is_empty());
    /// ```
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The first extra header called `name`, if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP request's `Idempotency-Key` with a fingerprint of the request it came with: a
/// second request with the same key gets the first one's answer again instead of acting twice
/// ([`crate::Hub::handle_request_once`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    key: String,
    /// FNV-1a of method, path, query and body: the same key on another request is refused.
    fingerprint: u64,
}

/// Why an `Idempotency-Key` header is refused (a 400 to the sender).
pub const BAD_IDEMPOTENCY_KEY: &str = "Idempotency-Key must be 1-128 visible ASCII characters";

/// Longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;

impl IdempotencyKey {
    /// The request's `Idempotency-Key`, if it has one; `Err` when the header is not 1-128
    /// visible ASCII characters. Only the headers are read; the fingerprint covers the body, so
    /// call it on the request read in full, or check the header alone first with
    /// [`IdempotencyKey::check_header`].
    pub fn of(request: &HttpRequest) -> Result<Option<IdempotencyKey>, &'static str> {
        let Some(key) = request.header("idempotency-key") else {
            return Ok(None);
        };
        Self::check_header(key)?;
        let mut h = Fnv::default();
        h.write(&[request.method as u8]);
        h.write(request.path.as_bytes());
        for (k, v) in &request.query {
            h.write(&[0]);
            h.write(k.as_bytes());
            h.write(&[1]);
            h.write(v.as_bytes());
        }
        h.write(&[2]);
        h.write(&request.body);
        Ok(Some(IdempotencyKey {
            key: key.into(),
            fingerprint: h.0,
        }))
    }

    /// Whether `value` is an acceptable `Idempotency-Key`: 1-128 visible ASCII characters.
    pub fn check_header(value: &str) -> Result<(), &'static str> {
        let ok = (1..=MAX_IDEMPOTENCY_KEY_BYTES).contains(&value.len())
            && value.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(())
        } else {
            Err(BAD_IDEMPOTENCY_KEY)
        }
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether `other` was sent with the same request as this one.
    pub(crate) fn same_request(&self, other: &IdempotencyKey) -> bool {
        self.fingerprint == other.fingerprint
    }
}

/// FNV-1a, 64 bits: a fingerprint, not a defence (a client holding the API key who makes two
/// different requests collide only gets its own first answer back).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}
