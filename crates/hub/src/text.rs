//! Text frames: bytes known to be UTF-8, so nothing on the way checks them again.

use alloc::string::String;
use bytes::Bytes;
use core::fmt;

/// The payload of a WebSocket text frame: a shared [`Bytes`] buffer that is valid UTF-8.
///
/// Every constructor either checks the bytes ([`Text::from_utf8`]) or starts from a type that
/// already guarantees UTF-8 (`String`, `&'static str`), so a publication built from a `Text` is
/// never checked again on its way to a thousand sockets. Cloning shares the buffer.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Text(Bytes);

impl Text {
    /// `bytes` as text, or the bytes back if they are not UTF-8.
    pub fn from_utf8(bytes: Bytes) -> Result<Text, Bytes> {
        match core::str::from_utf8(&bytes) {
            Ok(_) => Ok(Text(bytes)),
            Err(_) => Err(bytes),
        }
    }

    /// The text as a string slice.
    ///
    /// Validation is a cheap linear pass kept here rather than `unsafe` code; hot paths use
    /// [`Text::as_bytes`].
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.0).expect("a Text holds UTF-8 by construction")
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The shared buffer.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The part from byte `start` on, sharing the buffer; `None` unless `start` is a character
    /// boundary.
    pub fn slice_from(&self, start: usize) -> Option<Text> {
        self.as_str()
            .is_char_boundary(start)
            .then(|| Text(self.0.slice(start..)))
    }

    /// `part`, a substring of this text (e.g. from [`Text::as_str`]), as a `Text` sharing the
    /// buffer.
    pub fn slice_ref(&self, part: &str) -> Text {
        Text(self.0.slice_ref(part.as_bytes()))
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Text(Bytes::from(s))
    }
}

impl From<&'static str> for Text {
    fn from(s: &'static str) -> Self {
        Text(Bytes::from_static(s.as_bytes()))
    }
}

#[cfg(feature = "tungstenite")]
impl From<tungstenite::Utf8Bytes> for Text {
    /// tungstenite checked the frame's UTF-8 as it read it: taken over as it is.
    fn from(t: tungstenite::Utf8Bytes) -> Self {
        Text(Bytes::from(t))
    }
}

impl From<Text> for Bytes {
    fn from(t: Text) -> Bytes {
        t.0
    }
}

impl AsRef<[u8]> for Text {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl core::ops::Deref for Text {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_utf8_becomes_text() {
        assert!(Text::from_utf8(Bytes::from_static(b"caf\xc3\xa9")).is_ok());
        assert!(Text::from_utf8(Bytes::from_static(b"\xff")).is_err());
        let t = Text::from("héllo");
        assert_eq!(t.slice_from(2), None, "inside a character");
        assert_eq!(t.slice_from(3).unwrap().as_str(), "llo");
        let part = &t.as_str()[3..];
        assert_eq!(
            t.slice_ref(part).as_bytes().as_ptr(),
            t.as_bytes()[3..].as_ptr()
        );
    }
}
