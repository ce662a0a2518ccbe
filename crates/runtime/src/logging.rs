//! Log lines that a client can cause, kept bounded: values a client chose are clipped and
//! escaped ([`Clip`]), and classes of lines a client can trigger at will (connects, refusals) are
//! rate-limited ([`LogBudget`]), with a summary line counting what was left out.

use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// Bytes of a client-supplied value a log line shows.
pub const CLIP_BYTES: usize = 128;

/// A client-supplied value as it may appear in a log line: at most [`CLIP_BYTES`] bytes of it,
/// control characters and quotes escaped, and the full length noted when it was cut.
#[derive(Debug, Clone, Copy)]
pub struct Clip<'a>(pub &'a str);

impl fmt::Display for Clip<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        let mut end = s.len().min(CLIP_BYTES);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        for c in s[..end].chars() {
            if c.is_control() || c == '"' || c == '\\' {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_fmt(format_args!("{c}"))?;
            }
        }
        if end < s.len() {
            write!(f, "…({} bytes)", s.len())?;
        }
        Ok(())
    }
}

/// Bytes as a clipped, escaped string (invalid UTF-8 shown lossily).
pub fn clip_bytes(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(CLIP_BYTES)];
    let mut s = Clip(&String::from_utf8_lossy(cut)).to_string();
    if bytes.len() > cut.len() {
        s.push_str(&format!("…({} bytes)", bytes.len()));
    }
    s
}

struct Bucket {
    tokens: f64,
    at: Option<Instant>,
    suppressed: u64,
}

/// A token bucket on one class of log lines.
pub struct LogBudget {
    name: &'static str,
    per_second: f64,
    burst: f64,
    state: Mutex<Bucket>,
}

impl fmt::Debug for LogBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogBudget")
            .field("name", &self.name)
            .finish()
    }
}

impl LogBudget {
    /// `per_second` lines of class `name` on average, `burst` at once.
    pub const fn new(name: &'static str, per_second: u32, burst: u32) -> LogBudget {
        LogBudget {
            name,
            per_second: per_second as f64,
            burst: burst as f64,
            state: Mutex::new(Bucket {
                tokens: burst as f64,
                at: None,
                suppressed: 0,
            }),
        }
    }

    /// Whether a line of this class may be written now. When lines were suppressed since the
    /// last one allowed, a summary line with their count is written first.
    pub fn allow(&self) -> bool {
        let suppressed = {
            let mut b = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            if let Some(at) = b.at {
                let earned = now.duration_since(at).as_secs_f64() * self.per_second;
                b.tokens = (b.tokens + earned).min(self.burst);
            }
            b.at = Some(now);
            if b.tokens < 1.0 {
                b.suppressed += 1;
                return false;
            }
            b.tokens -= 1.0;
            std::mem::take(&mut b.suppressed)
        };
        if suppressed > 0 {
            tracing::warn!(
                class = self.name,
                suppressed,
                "log lines suppressed by the log rate limit"
            );
        }
        true
    }
}

/// Connect and disconnect lines: 50 a second, 200 at once.
pub static CONNECTIONS: LogBudget = LogBudget::new("connection", 50, 200);
/// Refused upgrades, requests and sockets: 10 a second, 50 at once.
pub static REFUSALS: LogBudget = LogBudget::new("refusal", 10, 50);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_cuts_and_escapes() {
        assert_eq!(Clip("plain").to_string(), "plain");
        assert_eq!(
            Clip("a\nb\r\u{1b}[31m\"").to_string(),
            "a\\nb\\r\\u{1b}[31m\\\""
        );
        let long = "x".repeat(60_000);
        let shown = Clip(&long).to_string();
        assert!(shown.starts_with(&"x".repeat(CLIP_BYTES)));
        assert!(shown.ends_with("…(60000 bytes)"), "{shown}");
        assert!(shown.len() < CLIP_BYTES + 32);
        // Never splits a character.
        let wide = "é".repeat(100);
        assert!(Clip(&wide).to_string().starts_with("éé"));
        assert!(clip_bytes(&[0xff; 300]).ends_with("…(300 bytes)"));
    }

    #[test]
    fn the_budget_allows_a_burst_then_suppresses() {
        let budget = LogBudget::new("test", 1, 5);
        let allowed = (0..100).filter(|_| budget.allow()).count();
        assert!((5..=6).contains(&allowed), "{allowed}");
        assert!(budget.state.lock().unwrap().suppressed >= 94);
    }
}
