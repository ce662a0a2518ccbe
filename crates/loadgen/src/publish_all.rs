//! `publish-all`: the AFC shape. N WebSocket clients listen; B backends post E events over HTTP
//! (each backend one keep-alive connection, one request at a time, as a backend that awaits
//! its `fetch` does); the server sends every event to every client. Reports deliveries, losses,
//! latency, and the server's CPU per delivery and memory.
//!
//! Three ways to say it, one per kind of server:
//! * `afc`: `POST /events/<name>` with the JSON body; clients on a plain WebSocket (switchboard's
//!   AFC system, the seed's Fastify service).
//! * `socketio`: the same POST; clients speak Socket.IO v4 on the websocket transport.
//! * `pusher`: a signed trigger on the Pusher HTTP API; clients subscribe to a channel.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{connect_all_from, Ws};
use crate::hist::Histogram;
use crate::http::{self, Client};
use crate::procfs::{self, Sample};
use crate::run::{json_str, sample, secs};
use crate::{notice, pusher, socketio, Protocol, PublishAllArgs};

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    unexpected: AtomicU64,
    closed: AtomicU64,
    ready: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    latency: Histogram,
}

impl Counters {
    fn on_event(&self, frame: &[u8], base: Instant) {
        match notice::parse(frame) {
            Some((_, sent_ns)) => {
                let now = base.elapsed().as_nanos() as u64;
                self.latency.record(now.saturating_sub(sent_ns));
                self.received.fetch_add(1, Relaxed);
            }
            None => {
                self.unexpected.fetch_add(1, Relaxed);
            }
        }
    }
}

/// One client: joins as its protocol wants, answers pings, counts events until the socket
/// closes.
async fn client(mut ws: Ws, protocol: Protocol, channel: String, c: Arc<Counters>, base: Instant) {
    if let Protocol::Afc = protocol {
        c.ready.fetch_add(1, Relaxed);
    }
    while let Some(msg) = ws.next().await {
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let frame = text.as_bytes();
        let reply = match protocol {
            Protocol::Afc => {
                c.on_event(frame, base);
                None
            }
            Protocol::Socketio => match socketio::classify(frame) {
                socketio::Frame::Open => Some(socketio::CONNECT.to_owned()),
                socketio::Frame::Ping => Some(socketio::PONG.to_owned()),
                socketio::Frame::Connected => {
                    c.ready.fetch_add(1, Relaxed);
                    None
                }
                socketio::Frame::Event(array) => {
                    c.on_event(array, base);
                    None
                }
                socketio::Frame::Other => None,
            },
            Protocol::Pusher => match pusher::classify(frame) {
                pusher::Frame::Established => Some(pusher::subscribe(&channel)),
                pusher::Frame::Subscribed => {
                    c.ready.fetch_add(1, Relaxed);
                    None
                }
                pusher::Frame::Ping => Some(pusher::PONG.to_owned()),
                pusher::Frame::Protocol => {
                    c.unexpected.fetch_add(1, Relaxed);
                    None
                }
                pusher::Frame::Event(data) => {
                    c.on_event(&data, base);
                    None
                }
            },
        };
        if let Some(r) = reply {
            if ws.send(Message::Text(r.into())).await.is_err() {
                break;
            }
        }
    }
    c.closed.fetch_add(1, Relaxed);
}

/// One backend: posts its share of the events, one after the other.
async fn backend(
    a: Arc<PublishAllArgs>,
    index: usize,
    c: Arc<Counters>,
    base: Instant,
) -> Result<(), String> {
    let mut http = Client::new(http::authority(&a.http)?);
    let app = pusher::App {
        id: a.app_id.clone(),
        key: a.app_key.clone(),
        secret: a.app_secret.clone(),
    };
    for seq in (index..a.events).step_by(a.backends) {
        let data = notice::build_payload(true, seq as u64, base.elapsed().as_nanos() as u64);
        let (path, body) = match a.protocol {
            Protocol::Afc | Protocol::Socketio => (format!("/events/{}", a.event), data),
            Protocol::Pusher => {
                let body = pusher::trigger_body(&a.event, &a.channel, &data);
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                (pusher::signed_events_path(&app, &body, now), body)
            }
        };
        match http.post_json(&path, &body).await {
            Ok(s) if (200..300).contains(&s) => c.accepted.fetch_add(1, Relaxed),
            Ok(_) => c.rejected.fetch_add(1, Relaxed),
            Err(_) => c.failed.fetch_add(1, Relaxed),
        };
    }
    Ok(())
}

/// What a `publish-all` run measured.
#[derive(Debug, Clone)]
pub struct PublishAllReport {
    args: PublishAllArgs,
    accepted: u64,
    rejected: u64,
    failed: u64,
    delivered: u64,
    posting_secs: f64,
    total_secs: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    unexpected: u64,
    closed: u64,
    server: Option<(Sample, Sample)>,
    tool_cpu_secs: f64,
}

/// Run the `publish-all` scenario.
pub async fn publish_all(a: PublishAllArgs) -> Result<PublishAllReport, String> {
    if a.clients == 0 || a.backends == 0 {
        return Err("at least one client and one backend are needed".into());
    }
    http::authority(&a.http)?;
    let base = Instant::now();
    let c = Arc::new(Counters::default());
    let opened = connect_all_from(&a.url, a.clients, a.connect_concurrency, false, a.source);
    for ws in opened.await? {
        tokio::spawn(client(ws, a.protocol, a.channel.clone(), c.clone(), base));
    }
    // Every client joined (Socket.IO namespace, Pusher channel) before the first event.
    let joined_by = Instant::now() + Duration::from_secs(10);
    while c.ready.load(Relaxed) < a.clients as u64 {
        if Instant::now() > joined_by {
            return Err(format!(
                "only {} of {} clients joined within 10 s",
                c.ready.load(Relaxed),
                a.clients
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(secs(a.settle)).await;
    let unexpected_before = c.unexpected.load(Relaxed);

    let tool_start = procfs::sample(std::process::id()).map_err(|e| e.to_string())?;
    let server_start = sample(a.pid)?;
    let started = Instant::now();
    let args = Arc::new(a.clone());
    let backends: Vec<_> = (0..a.backends)
        .map(|i| tokio::spawn(backend(args.clone(), i, c.clone(), base)))
        .collect();
    for b in backends {
        b.await.map_err(|e| e.to_string())??;
    }
    let posting_secs = started.elapsed().as_secs_f64();

    // Drain: every accepted event everywhere, or no progress for 1 s, or the drain limit.
    let drain_until = Instant::now() + secs(a.drain);
    let mut last = (c.received.load(Relaxed), Instant::now());
    loop {
        let expected = c.accepted.load(Relaxed) * a.clients as u64;
        let got = c.received.load(Relaxed);
        let now = Instant::now();
        if got != last.0 {
            last = (got, now);
        }
        if got >= expected || now >= drain_until || now - last.1 > Duration::from_secs(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total_secs = started.elapsed().as_secs_f64();
    let server_end = sample(a.pid)?;
    let tool_end = procfs::sample(std::process::id()).map_err(|e| e.to_string())?;
    let us = |ns: u64| ns as f64 / 1_000.0;
    Ok(PublishAllReport {
        accepted: c.accepted.load(Relaxed),
        rejected: c.rejected.load(Relaxed),
        failed: c.failed.load(Relaxed),
        delivered: c.received.load(Relaxed),
        posting_secs,
        total_secs,
        p50_us: us(c.latency.quantile(0.5)),
        p99_us: us(c.latency.quantile(0.99)),
        max_us: us(c.latency.max()),
        unexpected: c.unexpected.load(Relaxed) - unexpected_before,
        closed: c.closed.load(Relaxed),
        server: server_start.zip(server_end),
        tool_cpu_secs: tool_end.cpu_secs - tool_start.cpu_secs,
        args: a,
    })
}

impl PublishAllReport {
    /// Deliveries of the events posted that did not arrive (refused posts count as lost).
    pub fn lost(&self) -> u64 {
        (self.args.events as u64 * self.args.clients as u64).saturating_sub(self.delivered)
    }

    /// The report as text or as one JSON object.
    pub fn render(&self, label: &str, json: bool) -> String {
        let a = &self.args;
        let protocol = match a.protocol {
            Protocol::Afc => "afc",
            Protocol::Socketio => "socketio",
            Protocol::Pusher => "pusher",
        };
        let per_million = |secs: f64| secs * 1e6 / self.delivered.max(1) as f64;
        let cpu = self.server.map(|(s, e)| {
            let total = e.cpu_secs - s.cpu_secs;
            let user = e.user_secs - s.user_secs;
            (total, user, e)
        });
        if json {
            let mut s = format!(
                "{{\"scenario\":\"publish-all\",\"label\":{},\"protocol\":\"{protocol}\",\"url\":{},\
                 \"http\":{},\"clients\":{},\"backends\":{},\"events\":{},\"accepted\":{},\
                 \"rejected\":{},\"failed\":{},\"expected\":{},\"delivered\":{},\"lost\":{},\
                 \"posting_secs\":{:.3},\"total_secs\":{:.3},\"events_per_sec\":{:.1},\
                 \"deliveries_per_sec\":{:.1},\"latency_us\":{{\"p50\":{:.1},\"p99\":{:.1},\
                 \"max\":{:.1}}},\"unexpected\":{},\"closed\":{},\"tool_cpu_secs\":{:.3}",
                json_str(label),
                json_str(&a.url),
                json_str(&a.http),
                a.clients,
                a.backends,
                a.events,
                self.accepted,
                self.rejected,
                self.failed,
                a.events as u64 * a.clients as u64,
                self.delivered,
                self.lost(),
                self.posting_secs,
                self.total_secs,
                self.accepted as f64 / self.posting_secs,
                self.delivered as f64 / self.total_secs,
                self.p50_us,
                self.p99_us,
                self.max_us,
                self.unexpected,
                self.closed,
                self.tool_cpu_secs,
            );
            if let Some((total, user, end)) = cpu {
                let _ = write!(
                    s,
                    ",\"server\":{{\"cpu_secs\":{total:.3},\"deliveries\":{},\
                     \"cpu_secs_per_million\":{:.3},\"user_secs_per_million\":{:.3},\
                     \"system_secs_per_million\":{:.3},\"rss_kib\":{},\"hwm_kib\":{}}}",
                    self.delivered,
                    per_million(total),
                    per_million(user),
                    per_million(total - user),
                    end.rss_kib,
                    end.hwm_kib
                );
            }
            s.push('}');
            return s;
        }
        let mut s = format!(
            "{label}: {} clients ({protocol}) at {}, {} backends posting {} events to {}\n",
            a.clients, a.url, a.backends, a.events, a.http
        );
        let _ = writeln!(
            s,
            "  events accepted {} refused {} failed {} in {:.2} s; deliveries {} of {}  lost {}",
            self.accepted,
            self.rejected,
            self.failed,
            self.posting_secs,
            self.delivered,
            a.events as u64 * a.clients as u64,
            self.lost()
        );
        let _ = writeln!(
            s,
            "  latency p50 {:.0} us  p99 {:.0} us  max {:.0} us",
            self.p50_us, self.p99_us, self.max_us
        );
        if let Some((total, user, end)) = cpu {
            let _ = writeln!(
                s,
                "  server CPU {total:.2} s = {:.2} CPU-s per million deliveries ({:.2} user, {:.2} \
                 kernel); RSS {} KiB (peak {} KiB)",
                per_million(total),
                per_million(user),
                per_million(total - user),
                end.rss_kib,
                end.hwm_kib
            );
        }
        let _ = write!(
            s,
            "  unexpected frames {}  sockets closed early {}  load tool CPU {:.2} s",
            self.unexpected, self.closed, self.tool_cpu_secs
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    type Clients = Arc<Mutex<Vec<mpsc::UnboundedSender<String>>>>;

    /// A minimal AFC service on 127.0.0.1: WebSocket clients on one port; on another, every
    /// `POST /events/<name>` goes to every client as `{"type":..,"payload":<body>}`, then 204.
    async fn afc() -> (String, String) {
        let clients: Clients = Arc::default();
        let ws = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ws_url = format!("ws://{}/ws", ws.local_addr().unwrap());
        let registry = clients.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = ws.accept().await {
                let registry = registry.clone();
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                        return;
                    };
                    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
                    registry.lock().unwrap().push(tx);
                    while let Some(text) = rx.recv().await {
                        if ws.send(Message::Text(text.into())).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_url = format!("http://{}", http.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = http.accept().await {
                let clients = clients.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let mut headers = [httparse::EMPTY_HEADER; 16];
                        let mut req = httparse::Request::new(&mut headers);
                        let Ok(status) = req.parse(&buf) else { return };
                        if let httparse::Status::Complete(head) = status {
                            let len: usize = req
                                .headers
                                .iter()
                                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                                .map_or(0, |h| {
                                    std::str::from_utf8(h.value).unwrap().parse().unwrap()
                                });
                            if buf.len() >= head + len {
                                let name = req.path.unwrap().trim_start_matches("/events/");
                                let body = String::from_utf8_lossy(&buf[head..head + len]);
                                let msg = format!(
                                    r#"{{"type":"{}","payload":{body}}}"#,
                                    name.replace('-', ":")
                                );
                                for c in clients.lock().unwrap().iter() {
                                    let _ = c.send(msg.clone());
                                }
                                buf.drain(..head + len);
                                let reply = b"HTTP/1.1 204 No Content\r\n\r\n";
                                if tcp.write_all(reply).await.is_err() {
                                    return;
                                }
                                continue;
                            }
                        }
                        let mut chunk = [0u8; 4096];
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        (ws_url, http_url)
    }

    fn args(url: String, http: String) -> PublishAllArgs {
        PublishAllArgs {
            protocol: Protocol::Afc,
            url,
            http,
            clients: 6,
            backends: 3,
            events: 40,
            event: "todo-created".into(),
            channel: "bench".into(),
            app_id: "bench".into(),
            app_key: "bench-key".into(),
            app_secret: "bench-secret".into(),
            pid: Some(std::process::id()),
            drain: 5.0,
            settle: 0.1,
            connect_concurrency: 4,
            source: None,
        }
    }

    #[tokio::test]
    async fn every_posted_event_reaches_every_client() {
        let (url, http) = afc().await;
        let r = publish_all(args(url, http)).await.unwrap();
        assert_eq!((r.accepted, r.rejected, r.failed), (40, 0, 0), "{r:?}");
        assert_eq!((r.delivered, r.lost()), (240, 0), "{r:?}");
        assert_eq!((r.unexpected, r.closed), (0, 0), "{r:?}");
        assert!(r.server.is_some() && r.p50_us <= r.p99_us, "{r:?}");
        let json = r.render("afc", true);
        assert!(
            json.starts_with(r#"{"scenario":"publish-all","label":"afc","protocol":"afc""#),
            "{json}"
        );
        assert!(json.contains(r#""lost":0"#) && json.contains(r#""server":{"#));
    }

    #[tokio::test]
    async fn refused_posts_count_as_lost() {
        let (url, _) = afc().await;
        // An HTTP server that refuses every post.
        let refuser = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = format!("http://{}", refuser.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = refuser.accept().await {
                tokio::spawn(async move {
                    let mut chunk = [0u8; 4096];
                    while let Ok(n) = tcp.read(&mut chunk).await {
                        if n == 0 {
                            return;
                        }
                        let reply = b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\n\r\n";
                        if tcp.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let mut a = args(url, http);
        a.events = 5;
        a.backends = 1;
        let r = publish_all(a).await.unwrap();
        assert_eq!((r.accepted, r.rejected), (0, 5), "{r:?}");
        assert_eq!((r.delivered, r.lost()), (0, 30), "{r:?}");
    }
}
