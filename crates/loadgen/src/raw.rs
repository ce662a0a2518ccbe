//! The bulk subscribers' reader: one thread, one edge-triggered epoll over every subscriber
//! socket, and a WebSocket frame parser of its own.
//!
//! A run flat out measures the server only while the server, not the load tool, is what limits
//! the pace. With each socket read by a task of the tool's runtime through tungstenite, the tool
//! spent about a third of its time in user space per frame (the task's wake-up, tungstenite's
//! read buffer, its waker registration), and a server that fans out faster than that waited for
//! it. Here a ready socket costs one `read` into a shared buffer and a scan of the frames in it;
//! every frame is still counted and timed by [`Shared::on_frame`], as the tungstenite reader does.
//!
//! Frames from a server are unmasked; no extension is negotiated, so the reserved bits must be
//! clear. A ping is answered with a pong (masked, as a client must); a close frame, the end of
//! the stream, or a frame no server may send closes the socket and counts it in
//! [`Shared::closed`].

use std::io::{self, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::epoll::{self, Epoll};
use crate::shared::Shared;

/// The largest message accepted (the tungstenite reader's default limit is larger; these runs'
/// frames are a few hundred bytes).
const MAX_MESSAGE: usize = 1 << 24;

/// One subscriber socket.
pub(crate) struct Conn {
    stream: TcpStream,
    /// Bytes of a frame not yet complete.
    tail: Vec<u8>,
    /// A fragmented message being put together.
    message: Option<Vec<u8>>,
    open: bool,
}

impl Conn {
    /// A connected, upgraded socket and the bytes the handshake read past its end.
    pub(crate) fn new(stream: TcpStream, leftover: Vec<u8>) -> io::Result<Conn> {
        stream.set_nonblocking(true)?;
        Ok(Conn {
            stream,
            tail: leftover,
            message: None,
            open: true,
        })
    }

    /// Stop reading the socket and count it as closed early.
    fn end(&mut self, shared: &Shared) {
        self.open = false;
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        shared.closed.fetch_add(1, Relaxed);
    }

    /// Read until the socket has nothing more; false once it is to be closed.
    fn read_ready(&mut self, buf: &mut [u8], shared: &Shared) -> bool {
        loop {
            match self.stream.read(buf) {
                Ok(0) => return false,
                Ok(n) => {
                    if !self.feed(&buf[..n], shared) {
                        return false;
                    }
                    // A short read emptied the socket: the next bytes to arrive raise a new
                    // edge, so there is no need for a read that would only say `EAGAIN`.
                    if n < buf.len() {
                        return true;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    /// Take `bytes` (after any kept from before); false once the socket is to be closed.
    fn feed(&mut self, bytes: &[u8], shared: &Shared) -> bool {
        if self.tail.is_empty() {
            match self.frames(bytes, shared) {
                Some(used) => {
                    self.tail.extend_from_slice(&bytes[used..]);
                    true
                }
                None => false,
            }
        } else {
            let mut tail = std::mem::take(&mut self.tail);
            tail.extend_from_slice(bytes);
            match self.frames(&tail, shared) {
                Some(used) => {
                    tail.drain(..used);
                    self.tail = tail;
                    true
                }
                None => false,
            }
        }
    }

    /// Handle every complete frame at the front of `buf`: the bytes used, or `None` once the
    /// socket is to be closed.
    fn frames(&mut self, buf: &[u8], shared: &Shared) -> Option<usize> {
        let mut at = 0;
        loop {
            let (head, payload) = match next_frame(&buf[at..]) {
                Ok(Some(f)) => f,
                Ok(None) => return Some(at),
                Err(_) => return None,
            };
            let body = &buf[at + payload.start..at + payload.end];
            at += payload.end;
            let fin = head & 0x80 != 0;
            match (head & 0x0f, self.message.as_mut()) {
                (1 | 2, None) if fin => {
                    shared.on_frame(body);
                }
                (1 | 2, None) => self.message = Some(body.to_vec()),
                (0, Some(m)) => {
                    if m.len() + body.len() > MAX_MESSAGE {
                        return None;
                    }
                    m.extend_from_slice(body);
                    if fin {
                        let m = self.message.take().unwrap_or_default();
                        shared.on_frame(&m);
                    }
                }
                (9, _) if body.len() <= 125 => {
                    // Pong with the ping's payload, masked with a zero key (a valid key: the
                    // payload goes out as it is).
                    let mut pong = Vec::with_capacity(6 + body.len());
                    pong.extend_from_slice(&[0x8a, 0x80 | body.len() as u8, 0, 0, 0, 0]);
                    pong.extend_from_slice(body);
                    if self.stream.write_all(&pong).is_err() {
                        return None;
                    }
                }
                (10, _) => {}
                // Close, or a frame out of place.
                _ => return None,
            }
        }
    }
}

/// The next complete frame at the front of `buf`: its first byte (FIN and opcode) and where its
/// payload lies; `Ok(None)` if it is not all there yet; `Err` for a frame no server may send.
fn next_frame(buf: &[u8]) -> Result<Option<(u8, Range<usize>)>, &'static str> {
    let [b0, b1, rest @ ..] = buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err("reserved bits set, and no extension was negotiated");
    }
    if b1 & 0x80 != 0 {
        return Err("a masked frame from the server");
    }
    let (len, head) = match b1 & 0x7f {
        126 => match rest {
            [a, b, ..] => (u64::from(u16::from_be_bytes([*a, *b])), 4),
            _ => return Ok(None),
        },
        127 => match rest.get(..8) {
            Some(b) => (u64::from_be_bytes(b.try_into().unwrap_or_default()), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if len > MAX_MESSAGE as u64 {
        return Err("a frame larger than the limit");
    }
    let end = head + len as usize;
    Ok((buf.len() >= end).then_some((*b0, head..end)))
}

/// The reader thread; dropping it stops the thread and closes its sockets.
pub(crate) struct Reader {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Reader {
    /// Start reading `conns`, counting into `shared`.
    pub(crate) fn start(mut conns: Vec<Conn>, shared: Arc<Shared>) -> io::Result<Reader> {
        let epoll = Epoll::new()?;
        for (i, c) in conns.iter().enumerate() {
            epoll.add(&c.stream, i as u64)?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("subscribers".into())
            .spawn(move || read_all(&epoll, &mut conns, &shared, &flag))?;
        Ok(Reader {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_all(epoll: &Epoll, conns: &mut [Conn], shared: &Shared, stop: &AtomicBool) {
    let mut events = epoll::events(512);
    let mut buf = vec![0u8; 64 * 1024];
    let mut open = conns.len();
    // What the handshakes read past their ends.
    for c in conns.iter_mut().filter(|c| !c.tail.is_empty()) {
        if !c.feed(&[], shared) {
            c.end(shared);
            open -= 1;
        }
    }
    while open > 0 && !stop.load(Relaxed) {
        let Ok(n) = epoll.wait(&mut events, 50) else {
            break;
        };
        for ev in &events[..n] {
            let Some(c) = conns.get_mut(ev.u64 as usize) else {
                continue;
            };
            if c.open && !c.read_ready(&mut buf, shared) {
                c.end(shared);
                open -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notice;
    use std::net::TcpListener;

    /// A server frame (unmasked) with this first byte and payload.
    fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![b0];
        match payload.len() {
            n @ 0..=125 => f.push(n as u8),
            n @ 126..=65535 => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    /// A connection whose peer end is returned beside it.
    fn pair() -> (Conn, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (theirs, _) = listener.accept().unwrap();
        (Conn::new(ours, Vec::new()).unwrap(), theirs)
    }

    #[test]
    fn frames_follow_the_three_length_encodings() {
        for len in [0, 125, 126, 65_535, 65_536] {
            let f = frame(0x81, &vec![b'x'; len]);
            let (b0, payload) = next_frame(&f).unwrap().unwrap();
            assert_eq!((b0, payload.len(), payload.end), (0x81, len, f.len()));
            // Any shorter prefix is not a frame yet.
            for cut in [0, 1, f.len() / 2, f.len() - 1] {
                if cut < f.len() {
                    assert_eq!(next_frame(&f[..cut]), Ok(None), "len {len} cut {cut}");
                }
            }
        }
    }

    #[test]
    fn frames_no_server_may_send_are_refused() {
        assert!(
            next_frame(&[0x81, 0x81, 0, 0, 0, 0, b'x']).is_err(),
            "masked"
        );
        assert!(
            next_frame(&[0xc1, 0x01, b'x']).is_err(),
            "RSV1 without an extension"
        );
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(next_frame(&huge).is_err(), "larger than the limit");
    }

    #[test]
    fn counts_every_notice_however_the_bytes_are_split() {
        let notices: Vec<String> = (0..5).map(|i| notice::build(true, i, 1, 0)).collect();
        let mut bytes: Vec<u8> = notices
            .iter()
            .flat_map(|n| frame(0x81, n.as_bytes()))
            .collect();
        // The fourth notice in three fragments: text, continuation, final continuation.
        let n = notice::build(true, 9, 1, 300);
        let (a, rest) = n.as_bytes().split_at(100);
        let (b, c) = rest.split_at(150);
        bytes.extend(frame(0x01, a));
        bytes.extend(frame(0x8a, b"")); // a pong in between
        bytes.extend(frame(0x00, b));
        bytes.extend(frame(0x80, c));
        for step in [1, 2, 7, 64, bytes.len()] {
            let (mut conn, _peer) = pair();
            let shared = Shared::new(2, 1);
            for chunk in bytes.chunks(step) {
                assert!(conn.feed(chunk, &shared), "step {step}");
            }
            assert!(
                conn.tail.is_empty() && conn.message.is_none(),
                "step {step}"
            );
            assert_eq!(shared.received.load(Relaxed), 6, "step {step}");
            assert_eq!(shared.unexpected.load(Relaxed), 0, "step {step}");
        }
    }

    #[test]
    fn answers_a_ping_with_a_masked_pong() {
        let (mut conn, mut peer) = pair();
        let shared = Shared::new(2, 1);
        assert!(conn.feed(&frame(0x89, b"hi"), &shared));
        let mut pong = [0u8; 8];
        peer.read_exact(&mut pong).unwrap();
        assert_eq!(pong, [0x8a, 0x82, 0, 0, 0, 0, b'h', b'i']);
    }

    #[test]
    fn a_close_or_a_frame_out_of_place_ends_the_socket() {
        let shared = Shared::new(2, 1);
        let (mut conn, _peer) = pair();
        assert!(!conn.feed(&frame(0x88, &[3, 232]), &shared), "close");
        let (mut conn, _peer) = pair();
        assert!(
            !conn.feed(&frame(0x80, b"x"), &shared),
            "continuation without a start"
        );
        let (mut conn, _peer) = pair();
        let mut two_starts = frame(0x01, b"a");
        two_starts.extend(frame(0x81, b"b"));
        assert!(
            !conn.feed(&two_starts, &shared),
            "a new message inside a fragmented one"
        );
    }

    #[test]
    fn reads_frames_sent_over_the_socket_and_the_handshake_leftover() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut theirs, _) = listener.accept().unwrap();
        let leftover = frame(0x81, notice::build(true, 0, 1, 0).as_bytes());
        let shared = Arc::new(Shared::new(2, 1));
        let reader = Reader::start(vec![Conn::new(ours, leftover).unwrap()], shared.clone());
        let reader = reader.unwrap();
        for seq in 1..=3 {
            theirs
                .write_all(&frame(0x81, notice::build(true, seq, 1, 0).as_bytes()))
                .unwrap();
        }
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while shared.received.load(Relaxed) < 4 && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(shared.received.load(Relaxed), 4);
        drop(theirs);
        while shared.closed.load(Relaxed) < 1 && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(
            shared.closed.load(Relaxed),
            1,
            "the peer's close is counted"
        );
        drop(reader);
    }
}
