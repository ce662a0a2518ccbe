//! A thin WebSocket-only transport for switchboard.
//!
//! It accepts sockets ([`switchboard_runtime::accept::accept_loop`]), reads each opening
//! handshake's request head with `httparse` (at most [`MAX_HEAD_BYTES`], within
//! [`HEAD_TIMEOUT`]), lets the runtime decide the upgrade
//! ([`switchboard_runtime::upgrade::decide`]: the same answers as the HTTP transport, `503` at
//! the connection limit before any `101`), writes the answer, and hands the socket to the
//! runtime ([`switchboard_runtime::upgrade::socket`], [`switchboard_runtime::reader::Task`]). A
//! request for the system's server-sent-event stream (`GET <WebSocket path>/sse`) is decided
//! and run by the runtime too ([`switchboard_runtime::sse`]); any other request that is not an
//! upgrade gets `426`. On a TLS process
//! ([`switchboard_runtime::Process::tls`]) the runtime runs the TLS handshake first, in the
//! connection's task, and this reads the head from the TLS stream.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use switchboard_runtime::{Endpoint, Process, System};
//! let spec = switchboard_protocol::system("laptimes").unwrap();
//! let process = Process::default();
//! let system = System::start(Endpoint::new(spec), Default::default(), Default::default(), process.clock.clone(), None);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3002").await?;
//! let server = switchboard_tokio::serve(&process, listener, system)?;
//! // ... later:
//! server.shutdown().await
//! # }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use switchboard_runtime::admission::Ticket;
use switchboard_runtime::gate::has_token;
use switchboard_runtime::logging::REFUSALS;
use switchboard_runtime::reader;
use switchboard_runtime::sse::{self, Opening};
use switchboard_runtime::tungstenite::http::{
    header, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version,
};
use switchboard_runtime::upgrade::{self, Decision, RequestHead};
use switchboard_runtime::{Process, Serving, Stream, System};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Largest opening-handshake request head read; a larger one is answered `431` (the same limit
/// as the HTTP transport's).
pub const MAX_HEAD_BYTES: usize = switchboard_runtime::http::MAX_HEAD_BYTES;
/// How long a client may take to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Headers a request head may have.
const MAX_HEADERS: usize = 64;

/// A system served on one port by this transport.
pub type Server = Serving;

/// Serve `system` on `listener`, WebSocket only, as one system of `process` (its socket budget,
/// its metrics, and with [`Process::tls`] TLS only: `wss://`).
pub fn serve(process: &Process, listener: TcpListener, system: Arc<System>) -> io::Result<Server> {
    let sys = system.clone();
    Serving::spawn(process, listener, system, move |stream, peer, ticket, _| {
        connect(stream, peer, ticket, sys.clone())
    })
}

/// One connection's task: its handshake (boxed by [`reader::Task`], so its state is freed once
/// done, and owning what only it needs), then the connection.
fn connect(stream: Stream, peer: SocketAddr, ticket: Ticket, system: Arc<System>) -> reader::Task {
    let opening = async move {
        match handshake(stream, peer, &system).await? {
            Handshake::Upgrade(stream, decision, leftover) => {
                let (ws, accepted) = upgrade::socket(&system, decision, stream, leftover).await?;
                Some((ws, accepted.opened, system))
            }
            // An event stream lives in this box: it has no WebSocket phase.
            Handshake::Events(stream, accepted) => {
                sse::run(&system, stream, *accepted, peer).await;
                None
            }
        }
    };
    reader::Task::new(opening, peer, ticket)
}

/// What a connection becomes after its request head.
enum Handshake {
    /// A WebSocket (the `101` is sent): the decision and what the client sent after its head.
    Upgrade(Stream, Decision, Vec<u8>),
    /// An accepted server-sent-event stream, not answered yet.
    Events(Stream, Box<sse::Accepted>),
}

/// Read the request head, decide, and answer. `Some` when the socket is to become a WebSocket
/// or an event stream.
async fn handshake(mut tcp: Stream, peer: SocketAddr, system: &System) -> Option<Handshake> {
    let (req, leftover) = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut tcp)).await {
        Ok(Ok(read)) => read,
        Ok(Err(Some((status, reason)))) => {
            system.refusals().count("upgrade", "handshake");
            if REFUSALS.allow() {
                tracing::info!(system = system.name(), %peer, status, reason, "upgrade refused");
            }
            let _ = answer(&mut tcp, status, &[], reason.as_bytes()).await;
            return None;
        }
        Ok(Err(None)) | Err(_) => return None, // Gone, or too slow: nothing to answer.
    };
    let upgrade = has_token(req.headers(), &header::UPGRADE, "websocket");
    if !upgrade && system.spec.is_sse_path(req.uri().path()) {
        let opening = sse::decide(system, RequestHead::from(&req), peer).await;
        if let Some((status, headers, body)) = opening.refusal() {
            let _ = answer(&mut tcp, status, &headers, &body).await;
            return None;
        }
        let Opening::Accept(accepted) = opening else {
            return None;
        };
        return Some(Handshake::Events(tcp, accepted));
    }
    if !upgrade {
        let body = b"this endpoint serves WebSocket upgrades only";
        let _ = answer(&mut tcp, 426, &[("upgrade", "websocket".into())], body).await;
        return None;
    }
    let decision = upgrade::decide(system, RequestHead::from(&req), peer).await;
    let (status, headers) = decision.response_head(req.headers().get(header::SEC_WEBSOCKET_KEY));
    let body = upgrade::refusal_body(&decision);
    if answer(&mut tcp, status, &headers, &body).await.is_err() || status != 101 {
        upgrade::abandon(system, decision).await;
        return None;
    }
    Some(Handshake::Upgrade(tcp, decision, leftover))
}

/// Read one request head: the request and the bytes after it. The error is the answer to give
/// (`400`, `431`), or `None` when the peer went away.
async fn read_head(
    tcp: &mut Stream,
) -> Result<(Request<()>, Vec<u8>), Option<(u16, &'static str)>> {
    let mut buf = BytesMut::with_capacity(2048);
    loop {
        if tcp.read_buf(&mut buf).await.map_err(|_| None)? == 0 {
            return Err(None);
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let req = to_request(&parsed).ok_or(Some((400, "malformed request head")))?;
                return Ok((req, buf[len..].to_vec()));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD_BYTES => continue,
            Ok(httparse::Status::Partial) => return Err(Some((431, "request head too large"))),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Some((431, "too many request headers")))
            }
            Err(_) => return Err(Some((400, "malformed request head"))),
        }
    }
}

fn to_request(parsed: &httparse::Request<'_, '_>) -> Option<Request<()>> {
    let method = Method::from_bytes(parsed.method?.as_bytes()).ok()?;
    let uri: Uri = parsed.path?.parse().ok()?;
    let version = match parsed.version? {
        0 => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        headers.append(
            HeaderName::from_bytes(h.name.as_bytes()).ok()?,
            HeaderValue::from_bytes(h.value).ok()?,
        );
    }
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    Some(req)
}

/// Write a response head (and body, unless it is the `101`).
async fn answer(
    tcp: &mut Stream,
    status: u16,
    headers: &[(&'static str, String)],
    body: &[u8],
) -> io::Result<()> {
    let reason = switchboard_runtime::tungstenite::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut head = format!("HTTP/1.1 {status} {reason}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if status != 101 {
        head.push_str(&format!(
            "content-length: {}\r\nconnection: close\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes()).await?;
    if status != 101 {
        tcp.write_all(body).await?;
        tcp.shutdown().await?;
    } else {
        // Over TLS, the records rustls could not put on the socket yet.
        tcp.flush().await?;
    }
    Ok(())
}
