//! Opening the load's WebSockets.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::net::TcpStream;
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
        match tokio_tungstenite::connect_async_with_config(request, Some(config), true).await {
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
    let results: Vec<Result<Ws, String>> = futures_util::stream::iter(0..n)
        .map(|_| connect(url, v2))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        return Err(format!("{failed} of {n} connections failed; first: {e}"));
    }
    Ok(results.into_iter().flatten().collect())
}
