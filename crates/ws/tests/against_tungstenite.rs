//! The reader decodes what tungstenite decodes: the same bytes, generated frames (valid and
//! broken) cut at random places, go through both, and the messages must be the same, and where
//! one of them finds a violation the other must too.

use std::io::{self, Read, Write};

use bytes::Bytes;
use proptest::prelude::*;
use switchboard_ws::{Error, Limits, Message, Reader};
use tungstenite::protocol::{Role, WebSocket, WebSocketConfig};
use tungstenite::Message as TMessage;

const MAX: usize = 300;
/// The message limit: two long fragments pass it.
const MAX_MESSAGE: usize = 400;

/// What tungstenite reads from: the input, then `WouldBlock` (more may come), never EOF;
/// writes (pongs, close replies) are dropped.
struct Input {
    bytes: Vec<u8>,
    at: usize,
}

impl Read for Input {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = &self.bytes[self.at..];
        if rest.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.at += n;
        Ok(n)
    }
}

impl Write for Input {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How a run ended.
#[derive(Debug, PartialEq)]
enum End {
    /// Waiting for more input.
    More,
    /// A violation.
    Violation,
    /// After a close frame.
    Closed,
}

fn tungstenite(input: &[u8]) -> (Vec<Message>, End) {
    let config = WebSocketConfig::default()
        .max_frame_size(Some(MAX))
        .max_message_size(Some(MAX_MESSAGE));
    let stream = Input {
        bytes: input.to_vec(),
        at: 0,
    };
    let mut ws = WebSocket::from_raw_socket(stream, Role::Server, Some(config));
    let mut got = Vec::new();
    loop {
        match ws.read() {
            Ok(TMessage::Text(t)) => got.push(Message::Text(Bytes::from(t))),
            Ok(TMessage::Binary(b)) => got.push(Message::Binary(b)),
            Ok(TMessage::Ping(b)) => got.push(Message::Ping(b)),
            Ok(TMessage::Pong(b)) => got.push(Message::Pong(b)),
            Ok(TMessage::Close(c)) => {
                got.push(Message::Close(
                    c.map(|c| (u16::from(c.code), c.reason.to_string())),
                ));
                return (got, End::Closed);
            }
            Ok(TMessage::Frame(_)) => unreachable!("not given by read"),
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                return (got, End::More)
            }
            Err(_) => return (got, End::Violation),
        }
    }
}

fn ours(input: &[u8], cuts: &[usize]) -> (Vec<Message>, End, Option<Error>) {
    let mut reader = Reader::new(Limits {
        max_frame: MAX,
        max_message: MAX_MESSAGE,
    });
    let mut got = Vec::new();
    let mut start = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.sort_unstable();
    points.push(input.len());
    for end in points {
        if let Err(e) = reader.feed(&input[start..end], &mut |m| got.push(m)) {
            return (got, End::Violation, Some(e));
        }
        start = end;
    }
    let end = match got.last() {
        Some(Message::Close(_)) => End::Closed,
        _ => End::More,
    };
    assert!(end == End::Closed || reader.buffered() <= input.len());
    (got, end, None)
}

/// A client frame with every header field chosen.
#[derive(Debug, Clone)]
struct Frame {
    first: u8,
    masked: bool,
    mask: [u8; 4],
    payload: Vec<u8>,
    /// Use a longer length encoding than needed.
    long_length: bool,
}

impl Frame {
    fn bytes(&self) -> Vec<u8> {
        let mut out = vec![self.first];
        let m = if self.masked { 0x80 } else { 0 };
        let n = self.payload.len();
        if self.long_length {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        } else if n < 126 {
            out.push(m | n as u8);
        } else {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        if self.masked {
            out.extend_from_slice(&self.mask);
        }
        out.extend(self.payload.iter().enumerate().map(|(i, b)| {
            if self.masked {
                b ^ self.mask[i & 3]
            } else {
                *b
            }
        }));
        out
    }
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Text, sometimes cut inside a character.
        "[a-zé€😀]{0,40}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..8),
        // Close payloads: a code and a reason.
        (any::<u16>(), "[a-z]{0,5}")
            .prop_map(|(c, r)| [&c.to_be_bytes()[..], r.as_bytes()].concat()),
        (1000u16..1016).prop_map(|c| c.to_be_bytes().to_vec()),
        proptest::collection::vec(any::<u8>(), 120..130),
        proptest::collection::vec(any::<u8>(), 280..320),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    let first = prop_oneof![
        8 => prop::sample::select(vec![0x81u8, 0x82, 0x01, 0x02, 0x00, 0x80, 0x88, 0x89, 0x8A]),
        1 => any::<u8>(),
    ];
    (
        first,
        prop::bool::weighted(0.97),
        any::<[u8; 4]>(),
        payload(),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(first, masked, mask, payload, long_length)| Frame {
            first,
            masked,
            mask,
            payload,
            long_length,
        })
}

/// A fragmented message: a first frame, continuations (one of them maybe final), control frames
/// between them.
fn fragmented() -> impl Strategy<Value = Vec<Frame>> {
    (
        prop::sample::select(vec![0x01u8, 0x02]),
        proptest::collection::vec((frame(), prop::bool::weighted(0.3)), 1..5),
    )
        .prop_map(|(first, rest)| {
            let mut frames = vec![Frame {
                first,
                masked: true,
                mask: [1, 2, 3, 4],
                payload: vec![b'a'; 200],
                long_length: false,
            }];
            for (mut frame, continuation) in rest {
                if continuation {
                    frame.first &= 0x80; // FIN as generated, opcode 0
                }
                frames.push(frame);
            }
            frames
        })
}

fn frames() -> impl Strategy<Value = Vec<Frame>> {
    proptest::collection::vec(
        prop_oneof![3 => frame().prop_map(|f| vec![f]), 1 => fragmented()],
        1..6,
    )
    .prop_map(|groups| groups.concat())
}

fn check(input: &[u8], cuts: &[usize]) {
    let (theirs, their_end) = tungstenite(input);
    let (mine, my_end, error) = ours(input, cuts);
    assert_eq!(mine, theirs, "messages differ for {input:x?}");
    match (&their_end, &my_end) {
        (a, b) if a == b => {}
        // Header checks fire as soon as the header is in; tungstenite waits for the payload.
        (End::More, End::Violation) => {
            assert!(matches!(error, Some(Error::Protocol(_) | Error::TooBig)))
        }
        _ => panic!("tungstenite ended {their_end:?}, ours {my_end:?} ({error:?}) for {input:x?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn frames_decode_as_tungstenite_decodes_them(
        frames in frames(),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let input: Vec<u8> = frames.iter().flat_map(Frame::bytes).collect();
        check(&input, &cuts);
    }

    #[test]
    fn arbitrary_bytes_decode_as_tungstenite_decodes_them(
        input in proptest::collection::vec(any::<u8>(), 0..64),
        cuts in proptest::collection::vec(any::<usize>(), 0..4),
    ) {
        check(&input, &cuts);
    }
}
