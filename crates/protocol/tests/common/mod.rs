//! A socket-free harness for seed-flow tests: a hub, a fake clock, and per-connection inboxes.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use switchboard_hub::{
    CloseCode, Config, ConnectionHandle, Frame, HttpRequest, HttpResponse, Hub, Identity, Instant,
    Method, OpenInfo, Output, Publication,
};
use switchboard_protocol::{Options, SystemSpec};

/// 2025-01-01T12:30:00Z
pub const T0: Instant = Instant::from_millis(1_735_734_600_000);

pub struct Harness {
    pub hub: Hub,
    pub now: Instant,
    /// Frames each connection received, oldest first, not yet taken.
    inbox: HashMap<ConnectionHandle, Vec<Value>>,
    /// Close codes the hub sent.
    pub closed: HashMap<ConnectionHandle, (CloseCode, String)>,
    pub pings: Vec<ConnectionHandle>,
}

impl Harness {
    pub fn new(spec: &SystemSpec, options: Options) -> Self {
        Self::with_config(spec, options, Config::default())
    }

    pub fn with_config(spec: &SystemSpec, options: Options, config: Config) -> Self {
        let hub = Hub::new(config, (spec.build)(&options), T0);
        Harness {
            hub,
            now: T0,
            inbox: HashMap::new(),
            closed: HashMap::new(),
            pings: Vec::new(),
        }
    }

    pub fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
        self.hub.handle_timeout(self.now);
        self.drain();
    }

    /// Drain every output; transmitted frames are "flushed" at once.
    pub fn drain(&mut self) {
        while let Some(out) = self.hub.poll_output() {
            match out {
                Output::Transmit {
                    connection,
                    payload,
                } => {
                    let v: Value = serde_json::from_slice(&payload)
                        .unwrap_or_else(|e| panic!("server sent non-JSON {payload:?}: {e}"));
                    self.inbox.entry(connection).or_default().push(v);
                    self.hub
                        .handle_flushed(self.now, connection, payload.len())
                        .ok();
                }
                Output::Ping { connection } => self.pings.push(connection),
                Output::Close {
                    connection,
                    code,
                    reason,
                } => {
                    self.closed.insert(connection, (code, reason.into_owned()));
                }
                Output::PauseReading { .. }
                | Output::Replicate(_)
                | Output::RoomOpened(_)
                | Output::RoomClosed(_) => {}
            }
        }
    }

    pub fn open(&mut self) -> ConnectionHandle {
        self.open_with(OpenInfo {
            path: "/ws".into(),
            ..OpenInfo::default()
        })
    }

    pub fn open_query(&mut self, query: &[(&str, &str)]) -> ConnectionHandle {
        self.open_with(OpenInfo {
            path: "/ws".into(),
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            identity: None,
        })
    }

    pub fn open_as(&mut self, identity: Identity) -> ConnectionHandle {
        self.open_with(OpenInfo {
            path: "/ws".into(),
            query: vec![],
            identity: Some(identity),
        })
    }

    pub fn open_with(&mut self, info: OpenInfo) -> ConnectionHandle {
        let h = self
            .hub
            .handle_open(self.now, info)
            .expect("under the connection limit");
        self.drain();
        h
    }

    pub fn send(&mut self, conn: ConnectionHandle, json: &str) {
        self.hub
            .handle_frame(self.now, conn, Frame::Text(json.to_string().into()))
            .expect("connection is open");
        self.drain();
    }

    pub fn send_value(&mut self, conn: ConnectionHandle, v: &Value) {
        self.send(conn, &v.to_string());
    }

    pub fn close(&mut self, conn: ConnectionHandle) {
        self.hub
            .handle_close(self.now, conn)
            .expect("connection is open");
        self.drain();
    }

    pub fn publish(&mut self, p: Publication) -> usize {
        let n = self.hub.publish(self.now, p);
        self.drain();
        n
    }

    pub fn http(
        &mut self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Option<HttpResponse> {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, q),
            None => (path_and_query, ""),
        };
        let query = query
            .split('&')
            .filter(|s| !s.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        let req = HttpRequest {
            method,
            path: path.to_string(),
            query,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
                .collect(),
            body: body.to_string().into(),
        };
        let r = self.hub.handle_http(self.now, &req);
        self.drain();
        r
    }

    /// Take everything `conn` received so far.
    pub fn take(&mut self, conn: ConnectionHandle) -> Vec<Value> {
        self.inbox.remove(&conn).unwrap_or_default()
    }

    /// Take exactly one frame, panicking otherwise.
    pub fn take_one(&mut self, conn: ConnectionHandle) -> Value {
        let mut v = self.take(conn);
        assert_eq!(v.len(), 1, "expected exactly one frame, got {v:#?}");
        v.pop().unwrap()
    }

    /// Assert `conn` received nothing.
    pub fn assert_silent(&mut self, conn: ConnectionHandle) {
        let v = self.take(conn);
        assert!(v.is_empty(), "expected no frames, got {v:#?}");
    }
}

pub fn body_json(r: &HttpResponse) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("non-JSON body {:?}: {e}", r.body))
}
