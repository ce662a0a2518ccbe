//! Opening the load's WebSockets, from a chosen source address if asked.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
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

/// A TCP connection to `url`'s host from `source` (any port): the kernel picks the port at
/// `connect`, unique per destination (`IP_BIND_ADDRESS_NO_PORT`), so one source address
/// carries more than the ephemeral range's worth of sockets across several servers.
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
    let socket = if source.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| e.to_string())?;
    if source.is_ipv4() {
        let on: libc::c_int = 1;
        // SAFETY: the descriptor is open (owned by `socket`); the option value is a c_int
        // that outlives the call, and its size is passed with it.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&raw const on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(format!(
                "IP_BIND_ADDRESS_NO_PORT: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    socket
        .bind(SocketAddr::new(source, 0))
        .map_err(|e| format!("bind {source}: {e}"))?;
    let stream = socket
        .connect(server)
        .await
        .map_err(|e| format!("connect {server} from {source}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(stream)
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
