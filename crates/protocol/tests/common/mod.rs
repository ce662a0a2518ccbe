//! A socket-free harness for seed-flow tests: a hub, a fake clock, and per-connection inboxes.
//!
//! The hub is either a system started from its registry entry ([`Harness::new`], a
//! `Box<dyn DynHub>`, as the runtime starts it) or a typed `Hub<P>` ([`Harness::of`]) when a test
//! looks inside (rooms, filters, identities). The monotonic clock starts at an arbitrary origin
//! ([`T0`]) and the wall clock is set apart from it ([`WALL0`]), so every timestamp a test sees
//! proves it came from the wall clock.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use switchboard_hub::{
    CloseCode, Config, ConnectionHandle, DynHub, Frame, HttpRequest, HttpResponse, Hub, Identity,
    Instant, Method, OpenInfo, Output, Protocol, Publication, Text, UnixTime,
};
use switchboard_protocol::{Direction, Options, SystemSpec};

/// The monotonic clock at the start of every test: an arbitrary origin, far from the wall clock.
pub const T0: Instant = Instant::from_millis(42_000);

/// The wall clock at [`T0`]: 2025-01-01T12:30:00Z.
pub const WALL0: UnixTime = UnixTime::from_millis(1_735_734_600_000);

/// What the harness needs of a hub: the erased view, which every hub has.
pub trait AsDynHub {
    /// The hub as a `DynHub`.
    fn dyn_hub(&mut self) -> &mut dyn DynHub;
}

impl<P: Protocol> AsDynHub for Hub<P> {
    fn dyn_hub(&mut self) -> &mut dyn DynHub {
        self
    }
}

impl AsDynHub for Box<dyn DynHub> {
    fn dyn_hub(&mut self) -> &mut dyn DynHub {
        &mut **self
    }
}

pub struct Harness<H: AsDynHub = Box<dyn DynHub>> {
    pub hub: H,
    pub now: Instant,
    /// Frames each connection received, oldest first, not yet taken.
    inbox: HashMap<ConnectionHandle, Vec<Value>>,
    /// Close codes the hub sent.
    pub closed: HashMap<ConnectionHandle, (CloseCode, String)>,
    pub pings: Vec<ConnectionHandle>,
}

impl Harness {
    /// `spec`'s hub, started as the runtime starts it ([`SystemSpec::build`]).
    pub fn new(spec: &SystemSpec, options: Options) -> Self {
        Self::with_config(spec, options, Config::default())
    }

    pub fn with_config(spec: &SystemSpec, options: Options, config: Config) -> Self {
        Self::around((spec.build)(&options, config, T0))
    }
}

impl<P: Protocol> Harness<Hub<P>> {
    /// A typed hub running `protocol`.
    pub fn of(protocol: P) -> Self {
        Self::of_with_config(protocol, Config::default())
    }

    pub fn of_with_config(protocol: P, config: Config) -> Self {
        Self::around(Hub::new(config, protocol, T0))
    }
}

impl<H: AsDynHub> Harness<H> {
    fn around(mut hub: H) -> Self {
        hub.dyn_hub().set_wall_clock(T0, WALL0);
        Harness {
            hub,
            now: T0,
            inbox: HashMap::new(),
            closed: HashMap::new(),
            pings: Vec::new(),
        }
    }

    /// The wall clock now.
    pub fn wall(&self) -> UnixTime {
        WALL0 + self.now.saturating_since(T0)
    }

    pub fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
        self.hub.dyn_hub().handle_timeout(self.now);
        self.drain();
    }

    /// Drain every output; transmitted frames are "flushed" at once.
    pub fn drain(&mut self) {
        while let Some(out) = self.hub.dyn_hub().poll_output() {
            for out in out.split() {
                match out {
                    Output::Transmit {
                        connection,
                        payload,
                    } => {
                        let v: Value = serde_json::from_slice(&payload)
                            .unwrap_or_else(|e| panic!("server sent non-JSON {payload:?}: {e}"));
                        self.inbox.entry(connection).or_default().push(v);
                        self.hub
                            .dyn_hub()
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
                    _ => {}
                }
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
            ..OpenInfo::default()
        })
    }

    pub fn open_as(&mut self, identity: Identity) -> ConnectionHandle {
        self.open_with(OpenInfo {
            path: "/ws".into(),
            identity: Some(identity),
            ..OpenInfo::default()
        })
    }

    pub fn open_with(&mut self, info: OpenInfo) -> ConnectionHandle {
        let h = self
            .hub
            .dyn_hub()
            .handle_open(self.now, info)
            .expect("under the connection limit");
        self.drain();
        h
    }

    pub fn send(&mut self, conn: ConnectionHandle, json: &str) {
        self.hub
            .dyn_hub()
            .handle_frame(self.now, conn, Frame::Text(Text::from(json.to_string())))
            .expect("connection is open");
        self.drain();
    }

    pub fn send_value(&mut self, conn: ConnectionHandle, v: &Value) {
        self.send(conn, &v.to_string());
    }

    pub fn close(&mut self, conn: ConnectionHandle) {
        self.hub
            .dyn_hub()
            .handle_close(self.now, conn)
            .expect("connection is open");
        self.drain();
    }

    pub fn publish(&mut self, p: Publication) -> usize {
        let n = self.hub.dyn_hub().publish(self.now, p);
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
        let r = self
            .hub
            .dyn_hub()
            .handle_http(self.now, request(method, path_and_query, headers, body));
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

/// An HTTP request as a transport hands it over: lower-case header names, the query decoded.
pub fn request(
    method: Method,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpRequest {
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
    HttpRequest {
        method,
        path: path.to_string(),
        query,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect(),
        body: body.to_string().into(),
    }
}

pub fn body_json(r: &HttpResponse) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("non-JSON body {:?}: {e}", r.body))
}

/// `docs/protocol/<system>-v1.md`.
pub fn protocol_doc(system: &str) -> (std::path::PathBuf, String) {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/protocol")
        .join(format!("{system}-v1.md"));
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (path, doc)
}

/// (direction, json text, line number) for every fenced block of a protocol document tagged
/// `json client-to-server`, `json server-to-client` or `json publish`.
pub fn vectors(doc: &str) -> Vec<(Direction, String, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(Direction, String, usize)> = None;
    for (i, line) in doc.lines().enumerate() {
        let trimmed = line.trim();
        match &mut current {
            None => {
                let dir = match trimmed {
                    "```json client-to-server" => Some(Direction::ClientToServer),
                    "```json server-to-client" => Some(Direction::ServerToClient),
                    "```json publish" => Some(Direction::Publish),
                    _ => None,
                };
                if let Some(d) = dir {
                    current = Some((d, String::new(), i + 1));
                }
            }
            Some((_, body, _)) => {
                if trimmed == "```" {
                    out.push(current.take().unwrap());
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    assert!(current.is_none(), "unterminated code block");
    out
}
