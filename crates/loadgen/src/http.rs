//! A minimal HTTP/1.1 client for the backends of `publish-all`: one keep-alive connection,
//! one request at a time, `Content-Length` or chunked responses.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `host:port` of an `http://host:port[/...]` URL.
pub fn authority(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("{url}: no host"));
    }
    Ok(if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:80")
    })
}

/// One keep-alive connection to a server.
pub struct Client {
    authority: String,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    /// Header lines sent with every request (`Name: value\r\n` each).
    extra: String,
}

impl Client {
    /// A client of `authority` (`host:port`); it connects on the first request.
    pub fn new(authority: String) -> Self {
        Client {
            authority,
            stream: None,
            buf: Vec::with_capacity(4096),
            extra: String::new(),
        }
    }

    /// Send this header with every request too (e.g. an API key).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.extra.push_str(&format!("{name}: {value}\r\n"));
        self
    }

    /// `POST path` with a JSON body; the response's status. Reconnects once if the kept-alive
    /// connection was closed.
    pub async fn post_json(&mut self, path: &str, body: &str) -> Result<u16, String> {
        match self.try_post(path, body).await {
            Ok(status) => Ok(status),
            Err(_) if self.stream.is_none() => self.try_post(path, body).await,
            Err(e) => Err(e),
        }
    }

    async fn try_post(&mut self, path: &str, body: &str) -> Result<u16, String> {
        if self.stream.is_none() {
            let s = TcpStream::connect(&self.authority)
                .await
                .map_err(|e| format!("connect {}: {e}", self.authority))?;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            self.stream = Some(s);
            self.buf.clear();
        }
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             {}Content-Length: {}\r\n\r\n{body}",
            self.authority,
            self.extra,
            body.len()
        );
        let result = self.exchange(request.as_bytes()).await;
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn exchange(&mut self, request: &[u8]) -> Result<u16, String> {
        let stream = self.stream.as_mut().ok_or("not connected")?;
        stream.write_all(request).await.map_err(|e| e.to_string())?;
        let (status, head, body, close) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(&self.buf).map_err(|e| e.to_string())? {
                httparse::Status::Complete(head) => {
                    let status = resp.code.unwrap_or(0);
                    let value = |name: &str| {
                        resp.headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case(name))
                            .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
                    };
                    let body = if value("transfer-encoding").is_some_and(|v| v.contains("chunked"))
                    {
                        Body::Chunked
                    } else if let Some(n) = value("content-length") {
                        Body::Length(n.trim().parse().map_err(|_| "bad content-length")?)
                    } else if status == 204 || status == 304 || (100..200).contains(&status) {
                        Body::Length(0)
                    } else {
                        Body::UntilClose
                    };
                    let close = value("connection").is_some_and(|v| v.contains("close"));
                    break (status, head, body, close);
                }
                httparse::Status::Partial => read_more(stream, &mut self.buf).await?,
            }
        };
        self.buf.drain(..head);
        match body {
            Body::Length(n) => {
                while self.buf.len() < n {
                    read_more(stream, &mut self.buf).await?;
                }
                self.buf.drain(..n);
            }
            Body::Chunked => loop {
                let Some(line_end) = find(&self.buf, b"\r\n") else {
                    read_more(stream, &mut self.buf).await?;
                    continue;
                };
                let size_text = String::from_utf8_lossy(&self.buf[..line_end]);
                let size_text = size_text.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
                // The chunk, its CRLF; the last (empty) chunk is followed by one more CRLF.
                let need = line_end + 2 + size + 2;
                while self.buf.len() < need {
                    read_more(stream, &mut self.buf).await?;
                }
                self.buf.drain(..need);
                if size == 0 {
                    break;
                }
            },
            Body::UntilClose => {
                self.stream = None;
                return Ok(status);
            }
        }
        if close {
            self.stream = None;
        }
        Ok(status)
    }
}

enum Body {
    Length(usize),
    Chunked,
    UntilClose,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("connection closed".into());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn authorities() {
        assert_eq!(
            authority("http://127.0.0.1:4001").unwrap(),
            "127.0.0.1:4001"
        );
        assert_eq!(
            authority("http://127.0.0.1:4001/x").unwrap(),
            "127.0.0.1:4001"
        );
        assert_eq!(authority("http://localhost").unwrap(), "localhost:80");
        assert!(authority("ws://127.0.0.1:1/").is_err());
        assert!(authority("http://").is_err());
    }

    /// A server that answers each request in turn with the next canned response.
    async fn server(responses: Vec<&'static str>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            for r in responses {
                // Read one request: head, then its Content-Length body.
                loop {
                    if let Some(end) = find(&buf, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        if buf.len() >= end + 4 + len {
                            buf.drain(..end + 4 + len);
                            break;
                        }
                    }
                    let mut chunk = [0u8; 1024];
                    let n = s.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                }
                s.write_all(r.as_bytes()).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn keeps_the_connection_across_lengths_chunks_and_empty_bodies() {
        let addr = server(vec![
            "HTTP/1.1 204 No Content\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            "HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\n\r\n",
        ])
        .await;
        let mut c = Client::new(addr);
        for want in [204, 200, 200, 429] {
            assert_eq!(c.post_json("/events/x-y", r#"{"a":1}"#).await, Ok(want));
        }
    }
}
