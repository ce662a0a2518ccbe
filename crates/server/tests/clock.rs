//! The wall clock steps by hours while the monotonic clock runs normally: timers (heartbeats,
//! idle closes) follow the monotonic clock only, so nothing is closed and no heartbeat stalls,
//! while the timestamps a protocol writes follow the wall clock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use switchboard_hub::Config;
use switchboard_runtime::clock::{Clock, HubClock};
use switchboard_runtime::{Endpoint, Process, System};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A wall clock that can be stepped; the monotonic clock is the real one.
#[derive(Default)]
struct SteppedWall {
    offset_secs: AtomicI64,
}

impl SteppedWall {
    fn step_to(&self, hours: i64) {
        self.offset_secs.store(hours * 3600, Ordering::SeqCst);
    }

    fn now_ms(&self) -> i64 {
        let real = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        real.as_millis() as i64 + self.offset_secs.load(Ordering::SeqCst) * 1000
    }
}

impl Clock for SteppedWall {
    fn monotonic(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
    }

    fn wall(&self) -> SystemTime {
        let offset = self.offset_secs.load(Ordering::SeqCst);
        let real = SystemTime::now();
        if offset >= 0 {
            real + Duration::from_secs(offset as u64)
        } else {
            real - Duration::from_secs(offset.unsigned_abs())
        }
    }
}

/// Read frames for `d`, answering pings (tungstenite does it as frames are read); returns the
/// pings seen, or panics if the server closed the socket.
async fn watch(ws: &mut Ws, d: Duration) -> usize {
    let mut pings = 0;
    let deadline = tokio::time::Instant::now() + d;
    while let Ok(msg) = tokio::time::timeout_at(deadline, ws.next()).await {
        match msg {
            Some(Ok(Message::Ping(_))) => pings += 1,
            Some(Ok(Message::Close(frame))) => panic!("closed by the server: {frame:?}"),
            Some(Ok(_)) => {}
            other => panic!("the connection ended: {other:?}"),
        }
    }
    pings
}

/// A new collab client's greeting timestamp (the wall clock, in Unix milliseconds).
async fn greeting_timestamp(addr: std::net::SocketAddr) -> (Ws, i64) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a greeting")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            assert_eq!(v["type"], "CONNECTION_ESTABLISHED");
            return (ws, v["timestamp"].as_i64().unwrap());
        }
    }
}

#[tokio::test]
async fn wall_clock_steps_move_timestamps_and_nothing_else() {
    let wall = Arc::new(SteppedWall::default());
    let process = Process {
        clock: HubClock::new(wall.clone()),
        ..Process::default()
    };
    let config = Config {
        heartbeat_interval: Some(Duration::from_millis(300)),
        idle_timeout: Some(Duration::from_millis(1500)),
        ..Config::default()
    };
    let spec = switchboard_protocol::system("collab").unwrap();
    let system = System::start(
        Endpoint::new(spec),
        Default::default(),
        config,
        process.clock.clone(),
        None,
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = switchboard_hyper::serve(&process, listener, system).unwrap();
    let addr = server.local_addr();

    let (mut steady, _) = greeting_timestamp(addr).await;
    for hours in [-5, 7, -3, 0] {
        wall.step_to(hours);
        // Heartbeats go on at their interval, and a client that answers them is never taken
        // for idle: a step of hours forward does not close it, one backwards does not stall
        // its pings.
        let pings = watch(&mut steady, Duration::from_millis(2500)).await;
        assert!(
            pings >= 2,
            "{pings} pings in 2.5 s at a 300 ms interval ({hours} h)"
        );
        // A timestamp written now follows the wall clock.
        let (_ws, stamped) = greeting_timestamp(addr).await;
        let expected = wall.now_ms();
        assert!(
            (stamped - expected).abs() < 2_000,
            "stamped {stamped}, wall clock {expected} ({hours} h)"
        );
    }
    // Still open and served after every step.
    steady
        .send(Message::text(r#"{"type":"JOIN_PROJECT","projectId":"p"}"#))
        .await
        .unwrap();
    let presence = loop {
        match steady.next().await.unwrap().unwrap() {
            Message::Text(t) => break serde_json::from_str::<Value>(t.as_str()).unwrap(),
            _ => continue,
        }
    };
    assert_eq!(presence["type"], "USER_PRESENCE");
    // A client that stops answering is still closed for idleness, on the monotonic clock.
    let (mut silent, _) = greeting_timestamp(addr).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut closed = None;
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(5), silent.next()).await {
        if let Ok(Message::Close(frame)) = msg {
            closed = frame.map(|f| u16::from(f.code));
            break;
        }
    }
    assert_eq!(closed, Some(4000), "the silent client is closed with 4000");
    server.shutdown().await.unwrap();
}
