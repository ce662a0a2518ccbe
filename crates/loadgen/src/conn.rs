//! Opening the load's WebSockets, from a chosen source address if asked.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A load socket.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The `Sec-WebSocket-Protocol` of protocol v2.
const V2: &str = "switchboard.v2";

/// Open one WebSocket, retrying a few times (a busy server's accept queue may overflow); with
/// `v2`, asking for protocol v2 and failing if the server does not serve it.
pub(crate) async fn connect(url: &str, v2: bool) -> Result<Ws, String> {
    connect_from(url, v2, None).await
}

/// The next source port of this process: it counts through 1024..=65535 on its own source
/// address. Leaving the choice to the kernel (port 0, at `bind` or, with
/// `IP_BIND_ADDRESS_NO_PORT`, at `connect`) costs a search that grows with the sockets the
/// address already holds: 18 800 connects from one address took 5.3 s of system time, most of
/// the load tool's cost per handshake. A port named outright is one hash lookup.
static NEXT_PORT: AtomicU32 = AtomicU32::new(0);

fn next_port() -> u16 {
    let n = NEXT_PORT.fetch_add(1, Relaxed) % (65_536 - 1_024);
    1_024 + n as u16
}

/// A `ws://` URL's `host:port` (port 80 if none is given) and its path (`/` if none).
fn split_url(url: &str) -> Result<(String, &str), String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("{url}: only ws:// URLs here"))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    let authority = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path))
}

/// A TCP connection to `url`'s host from `source`, on the next free port of [`next_port`].
async fn tcp_from(url: &str, source: IpAddr) -> Result<TcpStream, String> {
    let (authority, _) = split_url(url)?;
    let server: SocketAddr = tokio::net::lookup_host(&authority)
        .await
        .map_err(|e| format!("{authority}: {e}"))?
        .find(|a| a.is_ipv4() == source.is_ipv4())
        .ok_or_else(|| format!("{authority}: no address of the source's family"))?;
    let mut last = String::new();
    // Ports taken (a listener, a socket of this run) or whose connection to this server is
    // still in TIME_WAIT from an earlier run are skipped.
    for _ in 0..64 {
        let from = SocketAddr::new(source, next_port());
        let socket = if source.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| e.to_string())?;
        // A port held only by TIME_WAIT sockets of an earlier run may be bound again.
        socket.set_reuseaddr(true).map_err(|e| e.to_string())?;
        if let Err(e) = socket.bind(from) {
            last = format!("bind {from}: {e}");
            continue;
        }
        match socket.connect(server).await {
            Ok(stream) => {
                stream.set_nodelay(true).map_err(|e| e.to_string())?;
                return Ok(stream);
            }
            Err(e) if matches!(e.kind(), ErrorKind::AddrInUse | ErrorKind::AddrNotAvailable) => {
                last = format!("connect {server} from {from}: {e}");
            }
            Err(e) => return Err(format!("connect {server} from {from}: {e}")),
        }
    }
    Err(last)
}

/// Why one attempt to open a WebSocket failed.
enum Failed {
    /// Worth another try (a busy server's accept queue overflowed, a source port was taken).
    Again(String),
    /// Not: the server does not serve what was asked.
    Fatal(String),
}

/// Make `attempt` up to five times, a little longer apart each time, until it opens a socket
/// or fails for good.
async fn retrying<T, F>(url: &str, mut attempt: impl FnMut() -> F) -> Result<T, String>
where
    F: std::future::Future<Output = Result<T, Failed>>,
{
    let mut last = String::new();
    for n in 0..5u64 {
        match attempt().await {
            Ok(opened) => return Ok(opened),
            Err(Failed::Fatal(e)) => return Err(e),
            Err(Failed::Again(e)) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100 * (n + 1))).await;
    }
    Err(format!("cannot connect to {url}: {last}"))
}

/// [`connect`], the client socket bound to `source` when given.
pub(crate) async fn connect_from(
    url: &str,
    v2: bool,
    source: Option<IpAddr>,
) -> Result<Ws, String> {
    // Small buffers: thousands of sockets, small frames. (tungstenite zero-fills the whole read
    // buffer before every read, so its size is paid in memory and in time per read.)
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0);
    retrying(url, || async move {
        let mut request = url
            .into_client_request()
            .map_err(|e| Failed::Fatal(e.to_string()))?;
        if v2 {
            request
                .headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_static(V2));
        }
        let opened = match source {
            None => tokio_tungstenite::connect_async_with_config(request, Some(config), true).await,
            Some(source) => {
                let tcp =
                    MaybeTlsStream::Plain(tcp_from(url, source).await.map_err(Failed::Again)?);
                tokio_tungstenite::client_async_with_config(request, tcp, Some(config)).await
            }
        };
        let (ws, response) = opened.map_err(|e| Failed::Again(e.to_string()))?;
        let accepted = response.headers().get("sec-websocket-protocol");
        if v2 && accepted.is_none_or(|p| p != V2) {
            return Err(Failed::Fatal(format!("{url} does not serve protocol v2")));
        }
        Ok(ws)
    })
    .await
}

/// A WebSocket opened without tungstenite, for the bulk subscribers' reader ([`crate::raw`]):
/// the socket (non-blocking, out of the runtime) and any bytes the server sent right after its
/// handshake response. Retries as [`connect_from`] does.
pub(crate) async fn connect_raw(
    url: &str,
    v2: bool,
    source: Option<IpAddr>,
) -> Result<(std::net::TcpStream, Vec<u8>), String> {
    let (authority, path) = split_url(url)?;
    let authority = authority.as_str();
    retrying(url, || async move {
        let tcp = match source {
            Some(source) => tcp_from(url, source).await,
            None => TcpStream::connect(authority)
                .await
                .and_then(|t| t.set_nodelay(true).map(|()| t))
                .map_err(|e| format!("connect {authority}: {e}")),
        }
        .map_err(Failed::Again)?;
        let (tcp, rest) = upgrade(tcp, authority, path, v2).await?;
        let tcp = tcp.into_std().map_err(|e| Failed::Fatal(e.to_string()))?;
        Ok((tcp, rest))
    })
    .await
}

/// The client's opening handshake (RFC 6455 section 4.1) on `tcp`: the bytes read past the
/// response's end.
async fn upgrade(
    mut tcp: TcpStream,
    authority: &str,
    path: &str,
    v2: bool,
) -> Result<(TcpStream, Vec<u8>), Failed> {
    let again = Failed::Again;
    let key = generate_key();
    let protocol = if v2 {
        format!("Sec-WebSocket-Protocol: {V2}\r\n")
    } else {
        String::new()
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         {protocol}\r\n"
    );
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| again(format!("sending the handshake: {e}")))?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        if buf.len() >= 16 * 1024 {
            return Err(again("a handshake response over 16 KiB".into()));
        }
        let n = tcp
            .read_buf(&mut buf)
            .await
            .map_err(|e| again(format!("reading the handshake response: {e}")))?;
        if n == 0 {
            return Err(again("the server closed during the handshake".into()));
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let end = match response.parse(&buf) {
            Ok(httparse::Status::Complete(end)) => end,
            Ok(httparse::Status::Partial) => continue,
            Err(e) => return Err(again(format!("a malformed handshake response: {e}"))),
        };
        if response.code != Some(101) {
            return Err(again(format!("the server answered {:?}", response.code)));
        }
        let header = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        if header("sec-websocket-accept") != Some(derive_accept_key(key.as_bytes()).as_bytes()) {
            return Err(again("a wrong or missing Sec-WebSocket-Accept".into()));
        }
        if v2 && header("sec-websocket-protocol") != Some(V2.as_bytes()) {
            let e = format!("ws://{authority}{path} does not serve protocol v2");
            return Err(Failed::Fatal(e));
        }
        return Ok((tcp, buf.split_off(end)));
    }
}

/// [`connect_raw`] `n` times, `concurrency` at a time. Fails if any cannot be opened.
pub(crate) async fn connect_all_raw(
    url: &str,
    n: usize,
    concurrency: usize,
    v2: bool,
) -> Result<Vec<(std::net::TcpStream, Vec<u8>)>, String> {
    let results: Vec<_> = futures_util::stream::iter(0..n)
        .map(|_| connect_raw(url, v2, None))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    gather(results, n)
}

/// Every socket, or how many failed and the first failure.
fn gather<T>(results: Vec<Result<T, String>>, n: usize) -> Result<Vec<T>, String> {
    let failed = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        return Err(format!("{failed} of {n} connections failed; first: {e}"));
    }
    Ok(results.into_iter().flatten().collect())
}

/// Open `n` sockets, `concurrency` at a time. Fails if any cannot be opened.
pub(crate) async fn connect_all(
    url: &str,
    n: usize,
    concurrency: usize,
    v2: bool,
) -> Result<Vec<Ws>, String> {
    connect_all_from(url, n, concurrency, v2, None).await
}

/// [`connect_all`], every client socket bound to `source` when given.
pub(crate) async fn connect_all_from(
    url: &str,
    n: usize,
    concurrency: usize,
    v2: bool,
    source: Option<IpAddr>,
) -> Result<Vec<Ws>, String> {
    let results: Vec<Result<Ws, String>> = futures_util::stream::iter(0..n)
        .map(|_| connect_from(url, v2, source))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    gather(results, n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use tokio::net::TcpListener;

    /// A server that answers one handshake with `reply(key)` and then sends `after`.
    async fn server(reply: fn(&str) -> String, after: &'static [u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/x?y=1", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                if tcp.read(&mut b).await.unwrap() == 0 {
                    return;
                }
                request.push(b[0]);
            }
            let request = String::from_utf8(request).unwrap();
            assert!(request.starts_with("GET /x?y=1 HTTP/1.1\r\n"), "{request}");
            let key = request
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap();
            let mut out = reply(key).into_bytes();
            out.extend_from_slice(after);
            tcp.write_all(&out).await.unwrap();
            // Hold the socket open until the client is done with it.
            let _ = tcp.read(&mut [0u8; 1]).await;
        });
        url
    }

    fn accept(key: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            derive_accept_key(key.as_bytes())
        )
    }

    #[tokio::test]
    async fn a_raw_handshake_keeps_what_follows_the_response() {
        let url = server(accept, b"\x81\x02hi").await;
        let (mut tcp, rest) = connect_raw(&url, false, None).await.unwrap();
        assert_eq!(rest, b"\x81\x02hi");
        // A plain socket, out of the runtime: nothing more to read, and no waiting for it.
        tcp.set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        assert!(tcp.read(&mut [0u8; 1]).is_err(), "nothing more to read");
    }

    #[tokio::test]
    async fn a_raw_handshake_checks_the_accept_key_and_the_protocol() {
        let wrong = |_: &str| accept("another key");
        let url = server(wrong, b"").await;
        let e = upgrade_once(&url, false).await.unwrap_err();
        assert!(e.contains("Sec-WebSocket-Accept"), "{e}");
        let url = server(accept, b"").await;
        let e = connect_raw(&url, true, None).await.unwrap_err();
        assert!(e.ends_with("does not serve protocol v2"), "{e}");
        let refused = |_: &str| "HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n".to_string();
        let url = server(refused, b"").await;
        let e = upgrade_once(&url, false).await.unwrap_err();
        assert!(e.contains("403"), "{e}");
    }

    /// One handshake attempt, without [`connect_raw`]'s retries.
    async fn upgrade_once(url: &str, v2: bool) -> Result<(), String> {
        let (authority, path) = split_url(url)?;
        let tcp = TcpStream::connect(&authority).await.unwrap();
        upgrade(tcp, &authority, path, v2)
            .await
            .map(drop)
            .map_err(|(Failed::Again(e) | Failed::Fatal(e))| e)
    }

    #[test]
    fn urls_split_into_authority_and_path() {
        assert_eq!(split_url("ws://h:1/a/b").unwrap(), ("h:1".into(), "/a/b"));
        assert_eq!(split_url("ws://h").unwrap(), ("h:80".into(), "/"));
        assert!(split_url("wss://h/").is_err());
    }
}
