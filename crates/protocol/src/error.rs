//! Decode errors shared by every protocol module.

use alloc::string::{String, ToString};

/// Why an inbound frame or request body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame is larger than the module accepts.
    #[error("message of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not JSON.
    #[error("not valid JSON: {0}")]
    NotJson(String),
    /// JSON nested deeper than [`crate::codec::MAX_JSON_DEPTH`] objects and arrays.
    #[error("JSON nested deeper than {max} levels")]
    TooDeep {
        /// The deepest nesting accepted.
        max: usize,
    },
    /// An object names the same key twice (compared after unescaping, so `"a"` and `"\u0061"`
    /// are the same key). Holds the key, cut to [`MAX_KEY_IN_ERROR`] bytes.
    #[error("duplicate key `{0}`")]
    DuplicateKey(String),
    /// JSON, but not an object.
    #[error("expected a JSON object")]
    NotAnObject,
    /// A required field is absent.
    #[error("missing field `{0}`")]
    MissingField(String),
    /// The `type` tag names no message of this protocol.
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    /// A field is present but has the wrong type or value.
    #[error("invalid message: {0}")]
    Invalid(String),
    /// An identifier the client chose is longer than the server accepts
    /// ([`crate::Options::max_id_bytes`]).
    #[error("`{field}` is longer than {max} bytes")]
    IdTooLong {
        /// The field, as the document names it, e.g. `projectId`.
        field: &'static str,
        /// The limit in bytes.
        max: usize,
    },
}

/// The longest key a [`DecodeError::DuplicateKey`] repeats back, in bytes.
pub const MAX_KEY_IN_ERROR: usize = 64;

impl DecodeError {
    /// A stable label for metrics, e.g. `"not_json"`.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::NotJson(_) => "not_json",
            DecodeError::TooDeep { .. } => "too_deep",
            DecodeError::DuplicateKey(_) => "duplicate_key",
            DecodeError::NotAnObject => "not_an_object",
            DecodeError::MissingField(_) => "missing_field",
            DecodeError::UnknownType(_) => "unknown_type",
            DecodeError::Invalid(_) => "invalid_field",
            DecodeError::IdTooLong { .. } => "id_too_long",
        }
    }

    /// A duplicate-key error for `key`, cut to [`MAX_KEY_IN_ERROR`] bytes (at a character
    /// boundary) so that a hostile key is not echoed back in full.
    pub fn duplicate_key(key: &str) -> Self {
        DecodeError::DuplicateKey(cut(key, MAX_KEY_IN_ERROR).to_string())
    }

    /// Classify an error serde reported while reading a typed message out of a JSON object.
    pub(crate) fn from_serde(e: &serde_json::Error) -> Self {
        let msg = e.to_string();
        // serde's derive reports a missing field as "missing field `name`"; keep the name.
        if let Some(rest) = msg.strip_prefix("missing field `") {
            if let Some(name) = rest.split('`').next() {
                return DecodeError::MissingField(name.to_string());
            }
        }
        DecodeError::Invalid(strip_position(msg))
    }
}

/// serde_json appends " at line L column C" to syntax errors; drop it for a shorter reply.
fn strip_position(mut msg: String) -> String {
    if let Some(at) = msg.rfind(" at line ") {
        msg.truncate(at);
    }
    msg
}

pub(crate) fn not_json(e: &serde_json::Error) -> DecodeError {
    DecodeError::NotJson(strip_position(e.to_string()))
}

/// `s` cut to at most `max` bytes, at a character boundary.
pub(crate) fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
