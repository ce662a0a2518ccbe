//! The change notices the publishers send: a valid laptimes notice with three extra fields that
//! every relay forwards verbatim: `m` (1 if sent in the measured window), `seq`, and `t` (the
//! send time in nanoseconds since the load tool started), always last. Across processes (`post`
//! and `hold`), `t` is the wall clock instead: nanoseconds of `CLOCK_REALTIME` ([`wall_ns`]),
//! which every process on one machine reads alike.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now on the wall clock (`CLOCK_REALTIME`), in nanoseconds since the Unix epoch.
pub fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Build one notice. `pad` adds a `"pad"` string of that many bytes (to test larger frames).
pub fn build(measured: bool, seq: u64, sent_ns: u64, pad: usize) -> String {
    let mut s = String::with_capacity(128 + pad);
    s.push_str(r#"{"table":"times","operation":"CHANGE","timestamp":"2025-10-25T12:34:56.789Z""#);
    if pad > 0 {
        s.push_str(r#","pad":""#);
        s.extend(std::iter::repeat_n('x', pad));
        s.push('"');
    }
    s.push_str(if measured { r#","m":1"# } else { r#","m":0"# });
    s.push_str(&format!(r#","seq":{seq},"t":{sent_ns}}}"#));
    s
}

/// The same fields as a JSON object of their own, `{"a":0,"m":1,"seq":3,"t":12345}`, for a
/// relay that re-encodes what it forwards (collab edits carry it as their `payload`): its keys
/// are in sorted order, so `t` stays last whether the relay keeps the order or sorts the keys.
pub fn build_payload(measured: bool, seq: u64, sent_ns: u64) -> String {
    let m = u8::from(measured);
    format!(r#"{{"a":0,"m":{m},"seq":{seq},"t":{sent_ns}}}"#)
}

/// What a received frame says about itself: (measured, send time in ns). `None` for a frame
/// that is not one of our notices (an error reply, say).
pub fn parse(frame: &[u8]) -> Option<(bool, u64)> {
    let t_at = rfind(frame, br#","t":"#)?;
    let digits = &frame[t_at + 5..];
    let end = digits.iter().position(|b| !b.is_ascii_digit())?;
    if end == 0 || digits.get(end) != Some(&b'}') {
        return None;
    }
    let sent = std::str::from_utf8(&digits[..end]).ok()?.parse().ok()?;
    let m_at = rfind(&frame[..t_at], br#","m":"#)?;
    let measured = match frame.get(m_at + 5) {
        Some(b'1') => true,
        Some(b'0') => false,
        _ => return None,
    };
    Some((measured, sent))
}

/// The `seq` field of one of our notices or payloads.
pub fn seq(frame: &[u8]) -> Option<u64> {
    let at = rfind(frame, br#""seq":"#)?;
    let digits = &frame[at + 6..];
    let end = digits.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for (measured, seq, t, pad) in [(true, 0, 0, 0), (false, 7, u64::MAX, 100)] {
            let s = build(measured, seq, t, pad);
            assert_eq!(parse(s.as_bytes()), Some((measured, t)), "{s}");
        }
    }

    #[test]
    fn is_a_valid_laptimes_notice() {
        let s = build(true, 3, 12345, 4);
        assert_eq!(
            s,
            r#"{"table":"times","operation":"CHANGE","timestamp":"2025-10-25T12:34:56.789Z","pad":"xxxx","m":1,"seq":3,"t":12345}"#
        );
    }

    #[test]
    fn a_payload_parses_inside_a_relayed_edit_and_a_v2_envelope() {
        let payload = build_payload(true, 9, 777);
        assert_eq!(seq(payload.as_bytes()), Some(9));
        let edit = format!(
            r#"{{"type":"TASK_UPDATE","payload":{payload},"operationId":null,"timestamp":1,"projectId":"r1","userId":null}}"#
        );
        assert_eq!(parse(edit.as_bytes()), Some((true, 777)));
        let v2 = format!(
            r#"{{"sb":"pub","stream":"all","epoch":"69cecfdf41150212","offset":4,"msg":{}}}"#,
            build(false, 1, 55, 0)
        );
        assert_eq!(parse(v2.as_bytes()), Some((false, 55)));
    }

    #[test]
    fn seq_of_a_relayed_event() {
        let afc = format!(
            r#"{{"type":"bench:tick","payload":{}}}"#,
            build_payload(true, 42, wall_ns())
        );
        assert_eq!(seq(afc.as_bytes()), Some(42));
        assert_eq!(seq(build(false, 7, 1, 3).as_bytes()), Some(7));
        for f in [&br#"{"seq":}"#[..], br#"{"seq":1"#, b"{}"] {
            assert_eq!(seq(f), None, "{}", String::from_utf8_lossy(f));
        }
        assert!(wall_ns() > 1_600_000_000_000_000_000, "after 2020");
    }

    #[test]
    fn other_frames_are_not_ours() {
        for f in [
            &br#"{"type":"error","message":"Invalid change notice"}"#[..],
            br#"{"t":5}"#,
            br#"{"m":1,"t":}"#,
            br#"{"m":2,"t":5}"#,
            b"",
        ] {
            assert_eq!(parse(f), None, "{}", String::from_utf8_lossy(f));
        }
    }
}
