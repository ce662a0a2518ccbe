//! Helpers every module uses to turn bytes into typed messages and back.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::DecodeError;
use switchboard_hub::{HttpRequest, HttpResponse};

/// Parse `bytes` as a JSON object.
pub fn object(bytes: &[u8]) -> Result<Map<String, Value>, DecodeError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(DecodeError::NotAnObject),
        Err(e) => Err(crate::error::not_json(&e)),
    }
}

/// The object's `type` field, which must be a string.
pub fn type_tag(obj: &Map<String, Value>) -> Result<&str, DecodeError> {
    match obj.get("type") {
        None => Err(DecodeError::MissingField("type".to_string())),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(DecodeError::Invalid(
            "field `type` must be a string".to_string(),
        )),
    }
}

/// Read a typed message out of a JSON object.
pub fn from_object<T: DeserializeOwned>(obj: Map<String, Value>) -> Result<T, DecodeError> {
    serde_json::from_value(Value::Object(obj)).map_err(|e| DecodeError::from_serde(&e))
}

/// Encode a message as a JSON text frame.
pub fn to_bytes<T: Serialize>(msg: &T) -> Bytes {
    // Serialising these plain structs into a Vec cannot fail: no map has non-string keys and
    // every `Value` is already valid JSON.
    Bytes::from(serde_json::to_vec(msg).expect("message types serialise infallibly"))
}

/// Encode a message as JSON bytes.
pub fn to_vec<T: Serialize>(msg: &T) -> Vec<u8> {
    serde_json::to_vec(msg).expect("message types serialise infallibly")
}

/// `Some(value)` unless the value is JSON `null`, for optional payloads.
pub fn non_null(v: Value) -> Option<Value> {
    match v {
        Value::Null => None,
        v => Some(v),
    }
}

#[derive(Serialize)]
struct HttpError<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a str>,
}

/// An HTTP error answer, `{"error": "...", "details": "..."}` (`details` only when given); the
/// same shape on every system's HTTP endpoints.
pub fn http_error(status: u16, error: &str, details: Option<&str>) -> HttpResponse {
    HttpResponse::json(status, to_bytes(&HttpError { error, details }))
}

/// Whether `req` carries `key` as `x-api-key: <key>` or `authorization: Bearer <key>`.
/// The comparison takes the same time wherever the first differing byte is.
pub fn api_key_matches(req: &HttpRequest, key: &str) -> bool {
    let bearer = req.header("authorization").and_then(|v| {
        let (scheme, token) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    [req.header("x-api-key").map(str::trim), bearer]
        .into_iter()
        .flatten()
        .any(|given| constant_time_eq(given.as_bytes(), key.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_forms() {
        let req = |headers: &[(&str, &str)]| HttpRequest {
            method: switchboard_hub::Method::Post,
            path: "/p".into(),
            query: Vec::new(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: Bytes::new(),
        };
        assert!(api_key_matches(&req(&[("x-api-key", "k1")]), "k1"));
        assert!(api_key_matches(&req(&[("x-api-key", " k1 ")]), "k1"));
        assert!(api_key_matches(
            &req(&[("authorization", "Bearer k1")]),
            "k1"
        ));
        assert!(api_key_matches(
            &req(&[("authorization", "bearer  k1 ")]),
            "k1"
        ));
        assert!(!api_key_matches(
            &req(&[("authorization", "Basic k1")]),
            "k1"
        ));
        assert!(!api_key_matches(&req(&[("x-api-key", "k2")]), "k1"));
        assert!(!api_key_matches(&req(&[("x-api-key", "k")]), "k1"));
        assert!(!api_key_matches(&req(&[]), "k1"));
    }

    #[test]
    fn classifies_errors() {
        assert!(matches!(object(b"nope"), Err(DecodeError::NotJson(_))));
        assert_eq!(object(b"[1]").unwrap_err(), DecodeError::NotAnObject);
        let obj = object(br#"{"a":1}"#).unwrap();
        assert_eq!(
            type_tag(&obj).unwrap_err(),
            DecodeError::MissingField("type".into())
        );
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct NeedsB {
            b: String,
        }
        let e = from_object::<NeedsB>(obj).unwrap_err();
        assert_eq!(e, DecodeError::MissingField("b".into()));
        let e = from_object::<NeedsB>(object(br#"{"b":5}"#).unwrap()).unwrap_err();
        assert!(matches!(e, DecodeError::Invalid(_)), "{e:?}");
    }
}
