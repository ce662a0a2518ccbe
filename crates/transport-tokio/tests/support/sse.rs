//! A server-sent-event client for the tests: it sends one `GET` over any byte stream, reads the
//! response head, then parses the event stream as a browser does (`data:` lines joined with
//! `\n`, `id:`, comments, a blank line ends an event). Every wait is bounded ([`super::WAIT`]).

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{QUIET, WAIT};

/// A byte stream an event stream is read from (plain TCP, or TLS).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What arrives on an event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// An event: its data and its id (`None` when it has no `id:` line).
    Event { data: String, id: Option<String> },
    /// A comment line (without its `:`).
    Comment(String),
}

/// An open event stream.
pub struct Events {
    io: Box<dyn Io>,
    buf: Vec<u8>,
    /// The response head's lower-case header names and values.
    pub headers: Vec<(String, String)>,
    /// The id of the last event that had one, as a browser keeps it for `Last-Event-ID`.
    pub last_id: Option<String>,
}

/// A refused stream request: the status and the body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Open `path` on `addr` with extra request headers.
pub async fn open_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Events, Refused> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    request(Box::new(tcp), "GET", path, headers).await
}

/// Open `path` on `addr`; panics when refused.
pub async fn open(addr: SocketAddr, path: &str) -> Events {
    open_with(addr, path, &[])
        .await
        .unwrap_or_else(|r| panic!("event stream {path} refused: {r:?}"))
}

/// Send `method path` with `headers` over `io` and read the answer's head.
pub async fn request(
    mut io: Box<dyn Io>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Events, Refused> {
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    io.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let split = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return at;
            }
            let mut chunk = [0; 4096];
            let n = io.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "closed before a response head: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("a response head in time");
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let rest = buf[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    if status != 200 {
        let mut body = rest;
        if method != "HEAD" {
            let _ = tokio::time::timeout(WAIT, io.read_to_end(&mut body)).await;
        }
        let len = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(body.len());
        body.truncate(len);
        return Err(Refused {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    Ok(Events {
        io,
        buf: rest,
        headers,
        last_id: None,
    })
}

impl Events {
    /// A response header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// One line (without its `\n`), or `None` at the end of the stream.
    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(at) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=at).collect();
                return Some(String::from_utf8(line[..at].to_vec()).expect("UTF-8 lines"));
            }
            let mut chunk = [0; 8192];
            match self.io.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next event or comment; `None` at the end of the stream (bounded wait).
    pub async fn next_item(&mut self) -> Option<Item> {
        tokio::time::timeout(WAIT, self.read_item())
            .await
            .expect("an event, a comment or the end of the stream in time")
    }

    async fn read_item(&mut self) -> Option<Item> {
        let mut data: Option<String> = None;
        let mut id = None;
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                match data.take() {
                    Some(data) => {
                        if id.is_some() {
                            self.last_id.clone_from(&id);
                        }
                        return Some(Item::Event { data, id });
                    }
                    None => continue,
                }
            }
            if let Some(comment) = line.strip_prefix(':') {
                assert!(data.is_none(), "a comment inside an event: {line:?}");
                // A comment is its own item, up to the blank line that follows it here.
                let _ = self.line().await;
                return Some(Item::Comment(comment.trim_start().to_string()));
            }
            let (field, value) = line.split_once(':').unwrap_or((&line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "data" => match &mut data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => data = Some(value.to_string()),
                },
                "id" => id = Some(value.to_string()),
                other => panic!("unexpected field {other:?} in {line:?}"),
            }
        }
    }

    /// The next event, skipping comments (heartbeats); panics at the end of the stream.
    pub async fn next_event(&mut self) -> (String, Option<String>) {
        loop {
            match self.next_item().await {
                Some(Item::Event { data, id }) => return (data, id),
                Some(Item::Comment(_)) => continue,
                None => panic!("the event stream ended"),
            }
        }
    }

    /// The next event's data.
    pub async fn next_data(&mut self) -> String {
        self.next_event().await.0
    }

    /// The next event's data as JSON.
    pub async fn next_json(&mut self) -> Value {
        let data = self.next_data().await;
        serde_json::from_str(&data).unwrap_or_else(|e| panic!("not JSON ({e}): {data}"))
    }

    /// The next event whose JSON has `"type": ty` (others skipped).
    pub async fn expect_type(&mut self, ty: &str) -> Value {
        loop {
            let v = self.next_json().await;
            if v["type"] == ty {
                return v;
            }
        }
    }

    /// Nothing but comments arrives for [`QUIET`].
    pub async fn assert_quiet(&mut self) {
        let quiet = tokio::time::timeout(QUIET, async {
            loop {
                match self.read_item().await {
                    Some(Item::Comment(_)) => continue,
                    other => return other,
                }
            }
        })
        .await;
        if let Ok(item) = quiet {
            panic!("expected nothing, got {item:?}");
        }
    }

    /// Read until the stream ends; the comments and events seen meanwhile.
    pub async fn until_end(&mut self) -> Vec<Item> {
        let mut seen = Vec::new();
        while let Some(item) = self.next_item().await {
            seen.push(item);
        }
        seen
    }
}

/// Open `path` over a socket with a tiny receive buffer, for a client that will not read.
pub async fn open_small_buffer(addr: SocketAddr, path: &str) -> Events {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    request(Box::new(tcp), "GET", path, &[])
        .await
        .unwrap_or_else(|r| panic!("event stream {path} refused: {r:?}"))
}
