//! The server side of RFC 6455 framing, without I/O: bytes in, whole messages out.
//!
//! A [`Reader`] is fed what the socket gave ([`Reader::feed`]) and hands back every message
//! those bytes complete: data messages reassembled from their fragments, text checked to be
//! UTF-8, control frames as they come. It keeps only the bytes of a frame that has not fully
//! arrived, and gives that memory back once the frame is complete, so a connection that is
//! quiet holds no read buffer at all: the caller reads into a buffer of its own (one per thread
//! is enough) and feeds from it.
//!
//! Writing is not here: a server's frames are unmasked and the runtime writes their headers
//! itself. Neither is any reply: a [`Message::Ping`] wants a pong and a [`Message::Close`] a
//! close, which the caller sends.
//!
//! Everything a client sends is checked as RFC 6455 asks of a server without extensions:
//! reserved bits clear, known opcodes, every frame masked, control frames final and at most 125
//! bytes, continuation frames only inside a fragmented message, close payloads of 0 or 2+ bytes
//! with a UTF-8 reason. A frame's length is checked against [`Limits::max_frame`] as soon as
//! its header is in, before its payload is kept, and a message's against
//! [`Limits::max_message`] as its fragments arrive. The first violation ends the reader: it is
//! returned as an [`Error`] that names the close code to answer with.
//!
//! What tungstenite decodes from the same bytes is what this decodes (the crate's tests compare
//! the two on generated and hostile input).
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use bytes::Bytes;
use core::fmt;

/// The largest payload of a control frame.
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// The longest frame header: two bytes, a 64-bit length and a mask.
pub const MAX_HEADER: usize = 14;

/// How large a frame and a message may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest payload of one frame; a longer frame is refused from its header.
    pub max_frame: usize,
    /// The largest message, all its fragments together.
    pub max_message: usize,
}

/// A complete message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message: its bytes are valid UTF-8.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping, with its payload (the pong must carry it back).
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A close frame: its code and reason, if it had any. A code a client may not send (1005,
    /// 1006, 1015, or outside 1000-1003, 1007-1013 and 3000-4999) reads as 1002 with the reason
    /// `Protocol violation`, as tungstenite reports it. Nothing after it is decoded.
    Close(Option<(u16, String)>),
}

/// How a client broke the protocol. Nothing after it is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// A framing rule was broken (close with 1002); the reason says which.
    Protocol(&'static str),
    /// A frame or message over the limits (close with 1009).
    TooBig,
    /// A text message or close reason that is not UTF-8 (close with 1007).
    InvalidUtf8,
}

impl Error {
    /// The close code RFC 6455 gives for it.
    pub fn close_code(self) -> u16 {
        match self {
            Error::Protocol(_) => 1002,
            Error::TooBig => 1009,
            Error::InvalidUtf8 => 1007,
        }
    }

    /// A short reason for the close frame.
    pub fn reason(self) -> &'static str {
        match self {
            Error::Protocol(why) => why,
            Error::TooBig => "frame exceeds the size limit",
            Error::InvalidUtf8 => "text is not valid UTF-8",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// A message whose first fragments arrived.
#[derive(Debug)]
struct Fragmented {
    text: bool,
    data: Vec<u8>,
    /// Bytes of `data` known to be UTF-8 (text only): a fragment may end inside a character.
    checked: usize,
}

/// Decodes one connection's frames. See the [crate documentation](crate).
#[derive(Debug)]
pub struct Reader {
    limits: Limits,
    /// The bytes of a frame that has not fully arrived (its header included); empty, holding no
    /// memory, between frames.
    pending: Vec<u8>,
    /// A fragmented message in progress (boxed: rare, and every connection has a reader).
    message: Option<Box<Fragmented>>,
    /// A close frame or an error was read: nothing more is decoded.
    done: bool,
    /// The error that ended it, if one did.
    error: Option<Error>,
}

/// A frame's header, once its first bytes are in.
#[derive(Debug, Clone, Copy)]
struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    len: usize,
    /// Bytes of the header itself.
    size: usize,
}

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

impl Reader {
    /// A reader for a new connection.
    pub fn new(limits: Limits) -> Reader {
        Reader {
            limits,
            pending: Vec::new(),
            message: None,
            done: false,
            error: None,
        }
    }

    /// Bytes held for frames and messages not complete yet.
    pub fn buffered(&self) -> usize {
        self.pending.len() + self.message.as_ref().map_or(0, |m| m.data.len())
    }

    /// Whether it has read a close frame or an error, and decodes nothing more.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The violation that ended it, if one did.
    pub fn error(&self) -> Option<Error> {
        self.error
    }

    /// Decode `input`, the next bytes from the socket: every message they complete goes to
    /// `out`, in order. The bytes of a frame still incomplete are kept for the next call. After
    /// an error or a close frame, input is ignored.
    pub fn feed(&mut self, input: &[u8], out: &mut impl FnMut(Message)) -> Result<(), Error> {
        if self.done {
            return Ok(());
        }
        let result = if self.pending.is_empty() {
            // The usual case: frames straight from the caller's buffer, nothing copied to keep.
            self.decode(input, out).map(|used| {
                if !self.done && used < input.len() {
                    self.pending.extend_from_slice(&input[used..]);
                }
            })
        } else {
            let mut pending = core::mem::take(&mut self.pending);
            pending.extend_from_slice(input);
            self.decode(&pending, out).map(|used| {
                if !self.done && used < pending.len() {
                    pending.drain(..used);
                    // Keep the allocation: the rest of a long frame is on its way.
                    self.pending = pending;
                }
            })
        };
        if let Err(e) = result {
            self.error = Some(e);
            self.done = true;
            self.pending = Vec::new();
            self.message = None;
        }
        result
    }

    /// Decode the whole frames at the start of `buf`; the bytes used.
    fn decode(&mut self, buf: &[u8], out: &mut impl FnMut(Message)) -> Result<usize, Error> {
        let mut at = 0;
        while !self.done {
            let Some(header) = self.header(&buf[at..])? else {
                break;
            };
            let Some(body) = buf.get(at + header.size..at + header.size + header.len) else {
                break;
            };
            at += header.size + header.len;
            let mut payload = Vec::with_capacity(body.len());
            payload.extend_from_slice(body);
            unmask(&mut payload, header.mask);
            self.frame(header, payload, out)?;
        }
        Ok(at)
    }

    /// The header at the start of `buf`, checked; `None` until all of it is in.
    fn header(&self, buf: &[u8]) -> Result<Option<Header>, Error> {
        let [first, second, ..] = *buf else {
            return Ok(None);
        };
        if first & 0x70 != 0 {
            return Err(Error::Protocol("reserved bits are set"));
        }
        let (fin, opcode) = (first & 0x80 != 0, first & 0x0F);
        let control = match opcode {
            CONTINUATION | TEXT | BINARY => false,
            CLOSE | PING | PONG => true,
            _ => return Err(Error::Protocol("unknown opcode")),
        };
        if second & 0x80 == 0 {
            return Err(Error::Protocol("frame is not masked"));
        }
        let (len, extra) = match second & 0x7F {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 2),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(b) => (u64::from_be_bytes(b.try_into().expect("8 bytes")), 8),
                None => return Ok(None),
            },
            n => (u64::from(n), 0),
        };
        if control && !fin {
            return Err(Error::Protocol("control frame is fragmented"));
        }
        if control && len > MAX_CONTROL_PAYLOAD as u64 {
            return Err(Error::Protocol("control frame is over 125 bytes"));
        }
        let len = match usize::try_from(len) {
            Ok(len) if len <= self.limits.max_frame => len,
            _ => return Err(Error::TooBig),
        };
        let size = 2 + extra + 4;
        let Some(mask) = buf.get(2 + extra..size) else {
            return Ok(None);
        };
        Ok(Some(Header {
            fin,
            opcode,
            mask: mask.try_into().expect("4 bytes"),
            len,
            size,
        }))
    }

    /// One whole frame.
    fn frame(
        &mut self,
        header: Header,
        payload: Vec<u8>,
        out: &mut impl FnMut(Message),
    ) -> Result<(), Error> {
        let max = self.limits.max_message;
        match header.opcode {
            CONTINUATION => {
                let Some(message) = self.message.as_mut() else {
                    return Err(Error::Protocol("continuation frame outside a message"));
                };
                if payload.len() > max - message.data.len() {
                    return Err(Error::TooBig);
                }
                message.data.extend_from_slice(&payload);
                if message.text {
                    message.checked += utf8_prefix(&message.data[message.checked..])?;
                }
                if header.fin {
                    let message = self.message.take().expect("checked above");
                    out(finish(message.text, message.data, message.checked)?);
                }
            }
            TEXT | BINARY => {
                if self.message.is_some() {
                    return Err(Error::Protocol("new message inside a fragmented one"));
                }
                if payload.len() > max {
                    return Err(Error::TooBig);
                }
                let text = header.opcode == TEXT;
                let checked = if text { utf8_prefix(&payload)? } else { 0 };
                if header.fin {
                    out(finish(text, payload, checked)?);
                } else {
                    self.message = Some(Box::new(Fragmented {
                        text,
                        data: payload,
                        checked,
                    }));
                }
            }
            PING => out(Message::Ping(Bytes::from(payload))),
            PONG => out(Message::Pong(Bytes::from(payload))),
            _ => {
                let close = close_payload(&payload)?;
                self.done = true;
                self.pending = Vec::new();
                self.message = None;
                out(Message::Close(close));
            }
        }
        Ok(())
    }
}

/// A complete data message; `checked` bytes of a text one are known to be UTF-8.
fn finish(text: bool, data: Vec<u8>, checked: usize) -> Result<Message, Error> {
    if !text {
        return Ok(Message::Binary(Bytes::from(data)));
    }
    if checked != data.len() {
        return Err(Error::InvalidUtf8); // It ends inside a character.
    }
    Ok(Message::Text(Bytes::from(data)))
}

/// How many leading bytes of `bytes` are UTF-8, where only the last character may be cut off
/// (the next fragment may complete it); an error if anything else is invalid.
fn utf8_prefix(bytes: &[u8]) -> Result<usize, Error> {
    match core::str::from_utf8(bytes) {
        Ok(_) => Ok(bytes.len()),
        Err(e) if e.error_len().is_none() => Ok(e.valid_up_to()),
        Err(_) => Err(Error::InvalidUtf8),
    }
}

/// The code and reason of a close frame's payload.
fn close_payload(payload: &[u8]) -> Result<Option<(u16, String)>, Error> {
    let (code, reason) = match payload {
        [] => return Ok(None),
        [_] => return Err(Error::Protocol("close frame with a one-byte payload")),
        [a, b, reason @ ..] => (u16::from_be_bytes([*a, *b]), reason),
    };
    let reason = core::str::from_utf8(reason).map_err(|_| Error::InvalidUtf8)?;
    if !close_code_allowed(code) {
        return Ok(Some((1002, String::from("Protocol violation"))));
    }
    Ok(Some((code, String::from(reason))))
}

/// Whether a client may send `code` in a close frame.
pub fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999)
}

/// Undo a client's masking.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const LIMITS: Limits = Limits {
        max_frame: 1000,
        max_message: 1500,
    };

    /// A client frame: `first` (FIN, RSV, opcode), masked with a fixed key.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xFA, 0x21, 0x3D];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    fn read_all(reader: &mut Reader, input: &[u8]) -> (Vec<Message>, Result<(), Error>) {
        let mut got = Vec::new();
        let result = reader.feed(input, &mut |m| got.push(m));
        (got, result)
    }

    #[test]
    fn a_text_frame_split_at_every_byte_arrives_once_and_frees_its_buffer() {
        let bytes = frame(0x81, "héllo".as_bytes());
        for cut in 0..=bytes.len() {
            let mut reader = Reader::new(LIMITS);
            let (mut got, first) = read_all(&mut reader, &bytes[..cut]);
            first.unwrap();
            let (rest, second) = read_all(&mut reader, &bytes[cut..]);
            second.unwrap();
            got.extend(rest);
            assert_eq!(
                got,
                vec![Message::Text(Bytes::from("héllo"))],
                "cut at {cut}"
            );
            assert_eq!(reader.buffered(), 0);
            assert_eq!(reader.pending.capacity(), 0, "cut at {cut}: memory kept");
        }
    }

    #[test]
    fn fragments_with_a_ping_between_reassemble_and_a_character_may_span_them() {
        let mut input = frame(0x01, &"é".as_bytes()[..1]);
        input.extend(frame(0x89, b"p"));
        input.extend(frame(0x80, &"é!".as_bytes()[1..]));
        let (got, result) = read_all(&mut Reader::new(LIMITS), &input);
        result.unwrap();
        assert_eq!(
            got,
            vec![
                Message::Ping(Bytes::from_static(b"p")),
                Message::Text(Bytes::from("é!"))
            ]
        );
    }

    #[test]
    fn each_violation_gets_its_close_code() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (frame(0xC1, b"x"), 1002),                // RSV1 without an extension
            (frame(0x83, b"x"), 1002),                // reserved data opcode
            (frame(0x8B, b"x"), 1002),                // reserved control opcode
            (vec![0x81, 0x01, b'x'], 1002),           // unmasked
            (frame(0x09, b"x"), 1002),                // fragmented ping
            (frame(0x89, &[0; 126]), 1002),           // control frame too long
            (frame(0x80, b"x"), 1002),                // continuation outside a message
            (frame(0x88, &[3]), 1002),                // one-byte close payload
            (frame(0x81, &[0xFF]), 1007),             // not UTF-8
            (frame(0x88, &[0x03, 0xE8, 0xFF]), 1007), // close reason not UTF-8
            (frame(0x82, &[0; 1001]), 1009),          // frame over the limit
            (
                [frame(0x02, &[0; 1000]), frame(0x80, &[0; 501])].concat(),
                1009,
            ),
            ([frame(0x01, b"a"), frame(0x81, b"b")].concat(), 1002),
            (
                [frame(0x01, &[0xE2, 0x82]), frame(0x80, b"")].concat(),
                1007,
            ),
        ];
        for (input, code) in cases {
            let mut reader = Reader::new(LIMITS);
            let (_, result) = read_all(&mut reader, &input);
            assert_eq!(result.map_err(Error::close_code), Err(code), "{input:x?}");
            assert!(reader.is_done());
            assert_eq!(read_all(&mut reader, &frame(0x81, b"late")).0, vec![]);
        }
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_from_its_header_alone() {
        // Only the header of a 1 GiB frame: refused before any payload is kept.
        let header = [0x82, 0x80 | 127, 0, 0, 0, 0, 0x40, 0, 0, 0];
        let mut reader = Reader::new(LIMITS);
        assert_eq!(read_all(&mut reader, &header).1, Err(Error::TooBig));
        assert_eq!(reader.buffered(), 0);
        // A length with the top bit set does not wrap around either.
        let header = [0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 5];
        assert_eq!(
            read_all(&mut Reader::new(LIMITS), &header).1,
            Err(Error::TooBig)
        );
    }

    #[test]
    fn a_close_ends_decoding_and_a_code_clients_may_not_send_reads_as_1002() {
        let input = [
            frame(0x88, &[0x03, 0xE8, b'b', b'y', b'e']),
            frame(0x81, b"x"),
        ]
        .concat();
        let (got, result) = read_all(&mut Reader::new(LIMITS), &input);
        result.unwrap();
        assert_eq!(got, vec![Message::Close(Some((1000, "bye".into())))]);
        for code in [0u16, 999, 1004, 1005, 1006, 1014, 1015, 2999, 5000] {
            let (got, _) = read_all(&mut Reader::new(LIMITS), &frame(0x88, &code.to_be_bytes()));
            assert_eq!(
                got,
                vec![Message::Close(Some((1002, "Protocol violation".into())))]
            );
        }
        let (got, _) = read_all(&mut Reader::new(LIMITS), &frame(0x88, b""));
        assert_eq!(got, vec![Message::Close(None)]);
    }
}
