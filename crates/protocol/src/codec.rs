//! Helpers every module uses to turn bytes into typed messages and back.
//!
//! # The JSON rule
//!
//! Every JSON text any system accepts (client frames, HTTP publish bodies, relayed payloads) is
//! read by [`value`] (or [`object`]), in one pass that builds the [`Value`] and refuses:
//!
//! - nesting deeper than [`MAX_JSON_DEPTH`] (each object or array opens a level), with
//!   [`DecodeError::TooDeep`];
//! - an object that names a key twice, at any depth, with [`DecodeError::DuplicateKey`]. Keys are
//!   compared after unescaping, so `{"a":1,"\u0061":2}` is refused too.
//!
//! Everything else is plain JSON (RFC 8259) as `serde_json` reads it. Typed messages are then
//! read out of the `Value` with [`from_object`].

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cell::Cell;
use core::fmt;
use serde::de::{DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::error::{self, DecodeError};
use switchboard_hub::{HttpResponse, Text};

/// The deepest nesting of objects and arrays accepted in any JSON text: `[[1]]` is 2 levels,
/// a scalar 0. Well under `serde_json`'s own recursion limit (128), so this rule, not the
/// parser's, is the one that applies.
pub const MAX_JSON_DEPTH: usize = 64;

/// Parse `bytes` as exactly one JSON value under [the JSON rule](self#the-json-rule).
pub fn value(bytes: &[u8]) -> Result<Value, DecodeError> {
    let refused = Cell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = Level {
        depth: 0,
        refused: &refused,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v));
    // A rule violation surfaces from serde_json as a custom error; the typed one was kept aside.
    parsed.map_err(|e| refused.take().unwrap_or_else(|| error::not_json(&e)))
}

/// Parse `bytes` as a JSON object under [the JSON rule](self#the-json-rule).
pub fn object(bytes: &[u8]) -> Result<Map<String, Value>, DecodeError> {
    match value(bytes)? {
        Value::Object(map) => Ok(map),
        _ => Err(DecodeError::NotAnObject),
    }
}

/// One nesting level of the strict reader: builds a [`Value`] exactly as `serde_json`'s own
/// `Deserialize for Value` does, refusing too-deep nesting and duplicate keys on the way.
#[derive(Clone, Copy)]
struct Level<'a> {
    /// Objects and arrays around the value being read.
    depth: usize,
    /// Where a violation of the rule is kept, so the caller gets a typed error back.
    refused: &'a Cell<Option<DecodeError>>,
}

impl Level<'_> {
    fn refuse<E: serde::de::Error>(self, e: DecodeError) -> E {
        let err = E::custom(&e);
        self.refused.set(Some(e));
        err
    }

    /// The level inside an object or array that opens here.
    fn enter<E: serde::de::Error>(self) -> Result<Self, E> {
        if self.depth >= MAX_JSON_DEPTH {
            return Err(self.refuse(DecodeError::TooDeep {
                max: MAX_JSON_DEPTH,
            }));
        }
        Ok(Level {
            depth: self.depth + 1,
            ..self
        })
    }
}

impl<'de> DeserializeSeed<'de> for Level<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Level<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
        // As serde_json's own `Value` does; JSON text cannot spell a non-finite number anyway.
        Ok(Number::from_f64(f).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_string()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(self.refuse(DecodeError::duplicate_key(&key)));
            }
            let value = map.next_value_seed(inner)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
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

/// Encode a message as a JSON text frame: `serde_json` writes a `String`, which becomes the
/// frame as it is (no UTF-8 check again).
pub fn to_text<T: Serialize>(msg: &T) -> Text {
    // Serialising these plain structs cannot fail: no map has non-string keys and every `Value`
    // is already valid JSON.
    Text::from(serde_json::to_string(msg).expect("message types serialise infallibly"))
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
    HttpResponse::json(status, to_text(&HttpError { error, details }))
}

/// Whether the request carries one of `keys` as `x-api-key: <key>` or
/// `authorization: Bearer <key>`; `header` looks a header up by its lower-case name. Empty keys
/// never match. Each comparison takes the same time wherever the first differing byte is, and
/// every key is compared (no early exit on a match).
pub fn api_key_matches<'h>(header: impl Fn(&str) -> Option<&'h str>, keys: &[String]) -> bool {
    let bearer = header("authorization").and_then(|v| {
        let (scheme, token) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    let mut matched = false;
    for given in [header("x-api-key").map(str::trim), bearer]
        .into_iter()
        .flatten()
    {
        for key in keys.iter().filter(|k| !k.is_empty()) {
            matched |= constant_time_eq(given.as_bytes(), key.as_bytes());
        }
    }
    matched
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuse an identifier longer than `max` bytes with [`DecodeError::IdTooLong`] naming `field`.
pub fn check_id(field: &'static str, id: &str, max: usize) -> Result<(), DecodeError> {
    if id.len() > max {
        Err(DecodeError::IdTooLong { field, max })
    } else {
        Ok(())
    }
}

/// Refuse an empty string where the document requires a non-empty one.
pub fn non_empty(field: &str, value: &str) -> Result<(), DecodeError> {
    if value.is_empty() {
        Err(DecodeError::Invalid(alloc::format!(
            "`{field}` must not be empty"
        )))
    } else {
        Ok(())
    }
}

/// Deserialize a struct-typed field only from a JSON object (serde's derive would also take an
/// array, filling the fields in order). Use as `#[serde(deserialize_with = "codec::object_only")]`.
pub fn object_only<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    match Value::deserialize(d)? {
        v @ Value::Object(_) => T::deserialize(v).map_err(serde::de::Error::custom),
        other => Err(serde::de::Error::invalid_type(
            unexpected(&other),
            &"an object",
        )),
    }
}

/// [`object_only`] for an optional field: absent or `null` is `None`.
pub fn object_or_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        v @ Value::Object(_) => T::deserialize(v)
            .map(Some)
            .map_err(serde::de::Error::custom),
        other => Err(serde::de::Error::invalid_type(
            unexpected(&other),
            &"an object or null",
        )),
    }
}

fn unexpected(v: &Value) -> serde::de::Unexpected<'_> {
    use serde::de::Unexpected;
    match v {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Unexpected::Unsigned(u),
            (_, Some(i), _) => Unexpected::Signed(i),
            (_, _, Some(f)) => Unexpected::Float(f),
            _ => Unexpected::Other("number"),
        },
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    fn headers<'a>(h: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> + 'a {
        move |name| h.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    #[test]
    fn api_key_forms() {
        let k1 = vec!["k1".to_string()];
        assert!(api_key_matches(headers(&[("x-api-key", "k1")]), &k1));
        assert!(api_key_matches(headers(&[("x-api-key", " k1 ")]), &k1));
        assert!(api_key_matches(
            headers(&[("authorization", "Bearer k1")]),
            &k1
        ));
        assert!(api_key_matches(
            headers(&[("authorization", "bearer  k1 ")]),
            &k1
        ));
        assert!(!api_key_matches(
            headers(&[("authorization", "Basic k1")]),
            &k1
        ));
        assert!(!api_key_matches(headers(&[("x-api-key", "k2")]), &k1));
        assert!(!api_key_matches(headers(&[("x-api-key", "k")]), &k1));
        assert!(!api_key_matches(headers(&[]), &k1));
    }

    #[test]
    fn any_of_several_keys_matches_and_empty_keys_never_do() {
        let keys = vec!["old".to_string(), String::new(), "new".to_string()];
        assert!(api_key_matches(headers(&[("x-api-key", "old")]), &keys));
        assert!(api_key_matches(
            headers(&[("authorization", "Bearer new")]),
            &keys
        ));
        assert!(!api_key_matches(headers(&[("x-api-key", "older")]), &keys));
        // An empty header value never matches the empty "key" an unset variable leaves behind.
        assert!(!api_key_matches(headers(&[("x-api-key", "")]), &keys));
        assert!(!api_key_matches(
            headers(&[("x-api-key", "")]),
            &[String::new()]
        ));
        assert!(!api_key_matches(headers(&[("x-api-key", "k")]), &[]));
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

    fn nested(depth: usize, open: &str, close: &str) -> String {
        let mut s = open.repeat(depth);
        s.push('1');
        s.push_str(&close.repeat(depth));
        s
    }

    #[test]
    fn depth_64_is_accepted_and_65_refused() {
        for (open, close) in [("[", "]"), (r#"{"a":"#, "}")] {
            for depth in [0, 1, 63, MAX_JSON_DEPTH] {
                let text = nested(depth, open, close);
                assert_eq!(
                    value(text.as_bytes()).unwrap(),
                    serde_json::from_str::<Value>(&text).unwrap(),
                    "{depth}"
                );
            }
            for depth in [MAX_JSON_DEPTH + 1, 129, 100_000] {
                let text = nested(depth, open, close);
                assert_eq!(
                    value(text.as_bytes()),
                    Err(DecodeError::TooDeep { max: 64 }),
                    "{depth}"
                );
            }
        }
        // Refused as soon as level 65 opens: an unterminated deep prefix is TooDeep, not NotJson.
        assert_eq!(
            value("[".repeat(65).as_bytes()),
            Err(DecodeError::TooDeep { max: 64 })
        );
        // Objects and arrays count alike.
        let mixed = format!("{}1{}", r#"[{"a":"#.repeat(32), "}]".repeat(32));
        assert!(value(mixed.as_bytes()).is_ok());
        let mixed = format!("[{}1{}]", r#"[{"a":"#.repeat(32), "}]".repeat(32));
        assert_eq!(
            value(mixed.as_bytes()),
            Err(DecodeError::TooDeep { max: 64 })
        );
        let e = DecodeError::TooDeep { max: 64 };
        assert_eq!(e.kind(), "too_deep");
        assert_eq!(e.to_string(), "JSON nested deeper than 64 levels");
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let dup = |k: &str| Err(DecodeError::DuplicateKey(k.into()));
        assert_eq!(value(br#"{"a":1,"a":1}"#), dup("a"));
        assert_eq!(value(br#"{"table":5,"table":"times"}"#), dup("table"));
        assert_eq!(value(br#"{"x":{"y":1,"z":2,"y":3}}"#), dup("y"));
        assert_eq!(value(br#"[{"a":1},{"b":1,"b":2}]"#), dup("b"));
        assert_eq!(value(br#"{"a":[1,[{"c":0,"c":0}]]}"#), dup("c"));
        // Escapes are resolved before comparing.
        assert_eq!(value(br#"{"a":1,"\u0061":2}"#), dup("a"));
        assert_eq!(value(br#"{"\u00e9":1,"\u00E9":2}"#), dup("\u{e9}"));
        assert_eq!(
            value("{\"\u{e9}\":1,\"\\u00e9\":2}".as_bytes()),
            dup("\u{e9}")
        );
        // The same key in sibling or nested objects is fine.
        assert!(value(br#"[{"a":1},{"a":2}]"#).is_ok());
        assert!(value(br#"{"a":{"a":{"a":1}}}"#).is_ok());
        // Keys are cut to 64 bytes in the error, at a character boundary.
        let long = "k".repeat(500);
        let text = format!(r#"{{"{long}":1,"{long}":2}}"#);
        assert_eq!(value(text.as_bytes()), dup(&"k".repeat(64)));
        let wide = "\u{e9}".repeat(40); // 80 bytes; 64 is a boundary.
        let text = format!(r#"{{"{wide}":1,"{wide}":2}}"#);
        assert_eq!(value(text.as_bytes()), dup(&"\u{e9}".repeat(32)));
        let odd = format!("x{wide}"); // 81 bytes; byte 64 is inside a character.
        let text = format!(r#"{{"{odd}":1,"{odd}":2}}"#);
        let Err(DecodeError::DuplicateKey(k)) = value(text.as_bytes()) else {
            panic!("expected a duplicate key")
        };
        assert_eq!(k.len(), 63);
        assert_eq!(
            DecodeError::DuplicateKey("a".into()).to_string(),
            "duplicate key `a`"
        );
        assert_eq!(
            DecodeError::DuplicateKey("a".into()).kind(),
            "duplicate_key"
        );
    }

    #[test]
    fn plain_json_errors_stay_not_json() {
        for bad in [
            &b""[..],
            b"{",
            b"{} {}",
            b"[1,]",
            b"\"\xff\"",
            b"{\"\xff\":1}",
            b"{\"a\":1}x",
        ] {
            assert!(
                matches!(value(bad), Err(DecodeError::NotJson(_))),
                "{bad:?}"
            );
        }
        // The message carries no position (shorter replies), as before.
        assert_eq!(
            value(b"nope"),
            Err(DecodeError::NotJson("expected ident".into()))
        );
    }

    #[test]
    fn ids_are_capped_in_bytes() {
        assert!(check_id("projectId", &"p".repeat(256), 256).is_ok());
        let e = check_id("projectId", &"p".repeat(257), 256).unwrap_err();
        assert_eq!(
            e,
            DecodeError::IdTooLong {
                field: "projectId",
                max: 256
            }
        );
        assert_eq!(e.to_string(), "`projectId` is longer than 256 bytes");
        assert_eq!(e.kind(), "id_too_long");
        // Bytes, not characters.
        assert!(check_id("userId", &"\u{e9}".repeat(128), 256).is_ok());
        assert!(check_id("userId", &"\u{e9}".repeat(129), 256).is_err());
    }

    #[test]
    fn struct_fields_read_only_from_objects() {
        #[derive(serde::Deserialize, Debug, PartialEq, Default)]
        struct Inner {
            #[serde(default)]
            a: Option<String>,
        }
        #[derive(serde::Deserialize, Debug)]
        struct Outer {
            #[serde(default, deserialize_with = "object_or_null")]
            opt: Option<Inner>,
            #[serde(default, deserialize_with = "object_only")]
            req: Inner,
        }
        let ok = from_object::<Outer>(object(br#"{"opt":{"a":"x"},"req":{}}"#).unwrap()).unwrap();
        assert_eq!(
            ok.opt,
            Some(Inner {
                a: Some("x".into())
            })
        );
        assert_eq!(ok.req, Inner::default());
        let null = from_object::<Outer>(object(br#"{"opt":null}"#).unwrap()).unwrap();
        assert_eq!(null.opt, None);
        for bad in [
            &br#"{"opt":["x"]}"#[..],
            br#"{"opt":[]}"#,
            br#"{"opt":"x"}"#,
            br#"{"req":["x"]}"#,
            br#"{"req":null}"#,
        ] {
            let e = from_object::<Outer>(object(bad).unwrap()).unwrap_err();
            assert!(
                matches!(&e, DecodeError::Invalid(m) if m.contains("expected an object")),
                "{e:?}"
            );
        }
    }
}
