//! The WebSocket reader on hostile bytes: never a panic, never more memory than the input, and
//! the same messages and outcome however the bytes are cut into reads.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_ws::{Limits, Message, Reader};

const LIMITS: Limits = Limits {
    max_frame: 512,
    max_message: 1024,
};

/// Feed `input` in pieces ending at `cuts`; the messages and whether it failed.
fn run(input: &[u8], cuts: &[usize]) -> (Vec<Message>, bool) {
    let mut reader = Reader::new(LIMITS);
    let mut got = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain([&input.len()]) {
        if reader
            .feed(&input[start..end], &mut |m| got.push(m))
            .is_err()
        {
            assert!(reader.is_done());
            return (got, true);
        }
        assert!(reader.buffered() <= input.len());
        start = end;
    }
    (got, false)
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks where to cut the rest into reads.
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let mut cuts: Vec<usize> = (0..seed % 8)
        .map(|i| (usize::from(seed) * 31 + i as usize * 97) % (input.len() + 1))
        .collect();
    cuts.sort_unstable();
    let whole = run(input, &[]);
    let pieces = run(input, &cuts);
    for message in &whole.0 {
        match message {
            Message::Text(t) => assert!(std::str::from_utf8(t).is_ok()),
            Message::Binary(b) => assert!(b.len() <= LIMITS.max_message),
            Message::Ping(p) | Message::Pong(p) => assert!(p.len() <= 125),
            Message::Close(_) => {}
        }
    }
    // A violation found from a header alone may be found earlier when cut, never later, and the
    // messages before it are the same.
    assert_eq!(whole.0, pieces.0);
    assert_eq!(whole.1, pieces.1);
});
