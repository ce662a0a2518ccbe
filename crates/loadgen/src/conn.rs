//! Opening the load's WebSockets, from a chosen source address if asked.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
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

/// A TCP connection to `url`'s host from `source`, on the next free port of [`next_port`].
async fn tcp_from(url: &str, source: IpAddr) -> Result<TcpStream, String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("{url}: only ws:// URLs with --source"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
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
    let mut last = String::new();
    for attempt in 0..5u64 {
        let mut request = url.into_client_request().map_err(|e| e.to_string())?;
        if v2 {
            request
                .headers_mut()
                .insert("sec-websocket-protocol", HeaderValue::from_static(V2));
        }
        let opened = match source {
            None => tokio_tungstenite::connect_async_with_config(request, Some(config), true).await,
            Some(source) => match tcp_from(url, source).await {
                Ok(tcp) => {
                    let tcp = MaybeTlsStream::Plain(tcp);
                    tokio_tungstenite::client_async_with_config(request, tcp, Some(config)).await
                }
                Err(e) => {
                    last = e;
                    tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await;
                    continue;
                }
            },
        };
        match opened {
            Ok((ws, response)) => {
                let accepted = response.headers().get("sec-websocket-protocol");
                if v2 && accepted.is_none_or(|p| p != V2) {
                    return Err(format!("{url} does not serve protocol v2"));
                }
                return Ok(ws);
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await;
    }
    Err(format!("cannot connect to {url}: {last}"))
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
    let failed = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        return Err(format!("{failed} of {n} connections failed; first: {e}"));
    }
    Ok(results.into_iter().flatten().collect())
}
