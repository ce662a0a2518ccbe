//! The one JSON rule ([`codec::value`]): every decode function of every system refuses nesting
//! deeper than [`codec::MAX_JSON_DEPTH`] and duplicate keys, and accepts exactly what
//! `serde_json` accepts otherwise, building the same `Value`.

mod strategies;
use proptest::prelude::*;
use serde_json::{Map, Value};
use switchboard_protocol::codec::{self, MAX_JSON_DEPTH};
use switchboard_protocol::{afc, collab, dcdock, laptimes, race, DecodeError};

/// `depth` nested arrays around `1`.
fn arrays(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

type Decode = fn(&[u8]) -> Result<(), DecodeError>;

/// (name, decode, template with `X` where any JSON value may go, containers around `X`).
fn paths() -> Vec<(&'static str, Decode, &'static str, usize)> {
    macro_rules! d {
        ($f:expr) => {
            |b: &[u8]| $f(b).map(|_| ())
        };
    }
    vec![
        (
            "laptimes client",
            d!(laptimes::v1::decode_client),
            r#"{"table":"times","operation":"CHANGE","x":X}"#,
            1,
        ),
        (
            "laptimes server",
            d!(laptimes::v1::decode_server),
            r#"{"table":"times","operation":"CHANGE","x":X}"#,
            1,
        ),
        (
            "afc client",
            d!(afc::v1::decode_client),
            r#"{"type":"ping","x":X}"#,
            1,
        ),
        (
            "afc server",
            d!(afc::v1::decode_server),
            r#"{"type":"todo:created","payload":X}"#,
            1,
        ),
        ("afc publish", d!(afc::v1::decode_publish), "X", 0),
        (
            "afc event body",
            |b: &[u8]| {
                afc::v1::event_publication("todo-created", b)
                    .map(|_| ())
                    .map_err(|e| DecodeError::Invalid(e.to_string()))
            },
            r#"{"todo":X}"#,
            1,
        ),
        (
            "race client",
            d!(race::v1::decode_client),
            r#"{"type":"ping","data":X}"#,
            1,
        ),
        (
            "race server",
            d!(race::v1::decode_server),
            r#"{"type":"lap_update","data":X,"timestamp":"2024-01-01T12:00:00Z"}"#,
            1,
        ),
        (
            "race publish",
            d!(race::v1::decode_publish),
            r#"{"type":"lap_update","data":X}"#,
            1,
        ),
        (
            "collab client",
            d!(collab::v1::decode_client),
            r#"{"type":"TASK_UPDATE","projectId":"p","payload":X}"#,
            1,
        ),
        (
            "collab server",
            d!(collab::v1::decode_server),
            r#"{"type":"TASK_UPDATE","payload":X,"timestamp":1,"projectId":"p","userId":null}"#,
            1,
        ),
        (
            "collab broadcast",
            d!(collab::v1::decode_broadcast),
            r#"{"type":"TASK_UPDATE","projectId":"p","payload":X}"#,
            1,
        ),
        (
            "dcdock client",
            d!(dcdock::v1::decode_client),
            r#"{"type":"subscribe","filters":{"direction":"IB","x":X}}"#,
            2,
        ),
        (
            "dcdock server",
            d!(dcdock::v1::decode_server),
            r#"{"type":"assignment_created","timestamp":"2025-01-01T12:30:00","assignment_id":7,"action":"CREATE","user_id":3,"user_email":"a@b","data":{"x":X}}"#,
            2,
        ),
        (
            "dcdock publish",
            d!(dcdock::v1::decode_publish),
            r#"{"type":"conflict_detected","assignment_id":7,"current_version":5,"attempted_version":4,"current_data":{"x":X},"message":"m","user_id":3}"#,
            2,
        ),
    ]
}

fn fill(template: &str, x: &str) -> Vec<u8> {
    template.replacen('X', x, 1).into_bytes()
}

#[test]
fn every_path_accepts_depth_64_and_refuses_65() {
    for (name, decode, template, around) in paths() {
        for depth in [63, 64] {
            let doc = fill(template, &arrays(depth - around));
            assert_eq!(decode(&doc), Ok(()), "{name}: depth {depth}");
        }
        for depth in [65, 200, 100_000] {
            let doc = fill(template, &arrays(depth - around));
            let e = decode(&doc).unwrap_err();
            let too_deep = DecodeError::TooDeep { max: 64 };
            // AFC's event body check reports through its own error type.
            assert!(
                e == too_deep || e.to_string().contains(&too_deep.to_string()),
                "{name}: depth {depth}: {e:?}"
            );
        }
    }
}

#[test]
fn every_path_refuses_duplicate_keys_at_any_depth() {
    for (name, decode, template, _) in paths() {
        let nested = [
            (r#"{"k":1,"k":2}"#, "k"),
            (r#"[{"a":1},{"k":[],"b":0,"k":{}}]"#, "k"),
            (r#"{"a":{"b":{"c":1,"c":1}}}"#, "c"),
            (r#"{"k":1,"\u006b":2}"#, "k"),
        ];
        for (x, key) in nested {
            let e = decode(&fill(template, x)).unwrap_err();
            let dup = DecodeError::DuplicateKey(key.into());
            assert!(
                e == dup || e.to_string().contains(&dup.to_string()),
                "{name}: {x}: {e:?}"
            );
        }
        // The same key at the top level, as an extra field and as a documented one.
        let filled = String::from_utf8(fill(template, "0")).unwrap();
        if let Some(rest) = filled.strip_prefix('{') {
            let first_key = rest.split('"').nth(1).unwrap();
            for doc in [
                format!(r#"{{"zz":1,"zz":2,{rest}"#),
                format!(r#"{{"{first_key}":null,{rest}"#),
                format!(r#"{{{rest}"#).replacen('}', r#","zz":1,"\u007a\u007a":1}"#, 1),
            ] {
                let e = decode(doc.as_bytes()).unwrap_err();
                assert!(
                    matches!(&e, DecodeError::DuplicateKey(_))
                        || e.to_string().contains("duplicate key"),
                    "{name}: {doc}: {e:?}"
                );
            }
        }
    }
}

/// JSON values up to the depth limit, objects built from maps (so without duplicates).
fn deep_json() -> impl Strategy<Value = Value> {
    strategies::json_value().prop_recursive(8, 256, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z\\u{e9}\"\\\\]{0,3}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

proptest! {
    /// A valid document decodes to exactly what `serde_json::from_slice` gives, compact or
    /// pretty-printed.
    #[test]
    fn valid_documents_decode_like_serde_json(v in deep_json()) {
        prop_assume!(depth(&v) <= MAX_JSON_DEPTH);
        for text in [serde_json::to_vec(&v).unwrap(), serde_json::to_vec_pretty(&v).unwrap()] {
            let expected: Value = serde_json::from_slice(&text).unwrap();
            prop_assert_eq!(codec::value(&text), Ok(expected));
        }
    }

    /// Any bytes: the strict reader fails exactly when serde_json fails or the rule is broken.
    #[test]
    fn arbitrary_bytes_agree_with_serde_json(bytes in prop::collection::vec(any::<u8>(), 0..48)) {
        match codec::value(&bytes) {
            Ok(v) => prop_assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), v),
            Err(DecodeError::NotJson(_)) => {
                prop_assert!(serde_json::from_slice::<Value>(&bytes).is_err())
            }
            Err(DecodeError::DuplicateKey(_) | DecodeError::TooDeep { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected {:?}", e),
        }
    }

    /// Nesting of any mix of arrays and objects is accepted up to 64 levels, refused beyond.
    #[test]
    fn depth_limit_holds_for_any_mix(kinds in prop::collection::vec(any::<bool>(), 0..100)) {
        let mut text = String::new();
        for object in &kinds {
            text.push_str(if *object { r#"{"k":"# } else { "[" });
        }
        text.push_str("null");
        for object in kinds.iter().rev() {
            text.push(if *object { '}' } else { ']' });
        }
        let got = codec::value(text.as_bytes());
        if kinds.len() <= MAX_JSON_DEPTH {
            prop_assert_eq!(got, Ok(serde_json::from_str::<Value>(&text).unwrap()));
        } else {
            prop_assert_eq!(got, Err(DecodeError::TooDeep { max: MAX_JSON_DEPTH }));
        }
    }

    /// A key repeated anywhere in an object (with other keys between) is refused and named.
    #[test]
    fn repeated_keys_are_named(
        keys in prop::collection::btree_set("[a-z]{1,4}", 1..6),
        pick in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        escaped in any::<bool>(),
    ) {
        let keys: Vec<String> = keys.into_iter().collect();
        let dup = pick.get(&keys).clone();
        let spelled = if escaped {
            dup.chars().map(|c| format!("\\u{:04x}", c as u32)).collect()
        } else {
            dup.clone()
        };
        let mut members: Vec<String> = keys.iter().map(|k| format!(r#""{k}":1"#)).collect();
        let pos = at.index(members.len() + 1);
        members.insert(pos, format!(r#""{spelled}":[{{"x":2}}]"#));
        let text = format!("[{{{}}}]", members.join(","));
        prop_assert_eq!(codec::value(text.as_bytes()), Err(DecodeError::DuplicateKey(dup)));
    }
}

/// A number read and written again is the same number: what a protocol relays through a decode
/// and re-encode (collab edit payloads) keeps its value. The fuzz target found
/// `9.999999999999999e+41` coming back as `1e+42` before numbers were parsed to the nearest
/// `f64` (serde_json's `float_roundtrip`).
#[test]
fn numbers_survive_a_decode_and_reencode() {
    for text in [
        "9.999999999999999e+41",
        "0.1",
        "2.2250738585072014e-308",
        "1.7976931348623157e308",
        "5e-324",
        "123456789012345678901234567890",
        "-0.0",
        "18446744073709551615",
    ] {
        let once = switchboard_protocol::codec::value(text.as_bytes()).unwrap();
        let written = serde_json::to_string(&once).unwrap();
        let twice = switchboard_protocol::codec::value(written.as_bytes()).unwrap();
        assert_eq!(once, twice, "{text} -> {written}");
        assert_eq!(serde_json::to_string(&twice).unwrap(), written, "{text}");
        if let (Some(a), Ok(b)) = (once.as_f64(), text.parse::<f64>()) {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{text} read as {a:e}, nearest is {b:e}"
            );
        }
    }
}
