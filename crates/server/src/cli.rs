//! The command line: which systems to run, on which transport and ports, with which limits.
//!
//! Options that exist once per system (`--<system>-port`, `--<system>-api-key`, ...) are
//! generated from the protocol registry, so a new system gets its flags without a change here.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, ArgMatches, CommandFactory, FromArgMatches};
use switchboard_hub::history::HistoryLimits;
use switchboard_hub::{Config, HistoryConfig, Limits, RateLimit, RatePolicy, SlowConsumerPolicy};
use switchboard_protocol::spec::{parse_api_keys, Auth, KeyRule, DEFAULT_MAX_ID_BYTES};
use switchboard_protocol::{Options, SystemSpec, SYSTEMS};

use switchboard_runtime::gate::{parse_origins, Endpoint, JwtKeys};
use switchboard_runtime::http::HttpLimits;
use switchboard_runtime::tls::{CertificateFiles, DEFAULT_HANDSHAKE_TIMEOUT};

/// What to do with a client that does not read fast enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SlowConsumer {
    /// Close it with code 4008.
    Close,
    /// Skip the frames it cannot take and count them as dropped.
    Drop,
}

/// What to do with a client that sends faster than the inbound rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RatePolicyArg {
    /// Stop reading it until its budget refills; nothing it sent is lost.
    Throttle,
    /// Close it with code 1008.
    Close,
}

/// Which room channels a node of a cluster receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackplaneRooms {
    /// Every room's, through one pattern subscription: a join never races its node's
    /// subscription, so a publication made on another node right after a join is never missed.
    Every,
    /// Only the rooms with local members, each subscribed when its first member joins: less
    /// traffic when rooms are many and spread thin, but a publication made on another node in
    /// the moment between a join and its node's subscription can be missed by v1 clients.
    Joined,
}

/// Which transport serves the systems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// hyper: each system's WebSocket and HTTP endpoints on one port.
    Hyper,
    /// WebSocket only (tokio sockets and tokio-tungstenite): no HTTP endpoints.
    Tokio,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// Hub limits and timing.
#[derive(Debug, Clone, clap::Args)]
pub struct HubArgs {
    /// Largest inbound frame in bytes; larger closes the connection with 1009.
    #[arg(long, env = "SWITCHBOARD_MAX_FRAME_BYTES", default_value_t = Limits::default().max_frame_bytes)]
    pub max_frame_bytes: usize,
    /// Open connections per system; more are refused (HTTP 503, or close 1013). Default: the
    /// process's socket budget (see --max-sockets).
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Open client sockets in the whole process, every system together; more are answered 503
    /// at accept. Default: the open-file limit (`ulimit -n`) less a twentieth and 64 for
    /// everything else the process opens.
    #[arg(long, env = "SWITCHBOARD_MAX_SOCKETS")]
    pub max_sockets: Option<usize>,
    /// Open sockets per client address, every system together; more are answered 429 at accept.
    /// 0 (the default) turns it off: behind a reverse proxy every client has the proxy's address.
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: usize,
    /// Longest identifier a client may turn into server state (room, project and session ids,
    /// user ids, filter values); longer ones get an error reply.
    #[arg(long, env = "SWITCHBOARD_MAX_ID_BYTES", default_value_t = DEFAULT_MAX_ID_BYTES)]
    pub max_id_bytes: usize,
    /// Rooms (projects, sessions) one connection may be in.
    #[arg(
        long,
        env = "SWITCHBOARD_MAX_ROOMS_PER_CONNECTION",
        default_value_t = Limits::default().max_rooms_per_connection
    )]
    pub max_rooms_per_connection: usize,
    /// Rooms per system.
    #[arg(long, env = "SWITCHBOARD_MAX_ROOMS", default_value_t = Limits::default().max_rooms)]
    pub max_rooms: usize,
    /// Unflushed outbound bytes per connection before the slow-consumer policy applies.
    #[arg(long, env = "SWITCHBOARD_MAX_QUEUED_BYTES", default_value_t = Limits::default().max_queued_bytes)]
    pub max_queued_bytes: usize,
    /// What happens to a client whose outbound queue is full.
    #[arg(
        long,
        env = "SWITCHBOARD_SLOW_CONSUMER",
        value_enum,
        default_value = "close"
    )]
    pub slow_consumer: SlowConsumer,
    /// Sustained inbound messages per second per connection (0 disables the limit).
    #[arg(long, env = "SWITCHBOARD_RATE_PER_SEC", default_value_t = Limits::default().inbound_rate.map_or(0, |r| r.per_second))]
    pub rate_per_sec: u32,
    /// Inbound messages allowed at once above the sustained rate.
    #[arg(long, env = "SWITCHBOARD_RATE_BURST", default_value_t = Limits::default().inbound_rate.map_or(1, |r| r.burst))]
    pub rate_burst: u32,
    /// What happens to a client above the inbound rate (control frames count too).
    #[arg(
        long,
        env = "SWITCHBOARD_RATE_POLICY",
        value_enum,
        default_value = "throttle"
    )]
    pub rate_policy: RatePolicyArg,
    /// Seconds between WebSocket pings to each client, comment lines on an event stream (0 disables).
    #[arg(long, env = "SWITCHBOARD_HEARTBEAT_SECS", default_value_t = Config::default().heartbeat_interval.map_or(0, |d| d.as_secs()))]
    pub heartbeat_secs: u64,
    /// Seconds without any inbound frame or pong before a client is closed with 4000 (0 disables;
    /// never an event stream, which does not send).
    #[arg(long, env = "SWITCHBOARD_IDLE_TIMEOUT_SECS", default_value_t = Config::default().idle_timeout.map_or(0, |d| d.as_secs()))]
    pub idle_timeout_secs: u64,
    /// Publications kept per stream for v2 clients to resume from (0 turns history off, and
    /// with it protocol v2: every client then speaks v1).
    #[arg(long, env = "SWITCHBOARD_HISTORY_MAX_ENTRIES", default_value_t = HistoryLimits::default().max_entries)]
    pub history_max_entries: usize,
    /// Seconds a publication is kept; also how long a v2 session waits for its client to come
    /// back.
    #[arg(long, env = "SWITCHBOARD_HISTORY_MAX_AGE_SECS", default_value_t = HistoryLimits::default().max_age.as_secs())]
    pub history_max_age_secs: u64,
    /// Bytes of history per system, every stream together; the oldest entries go first.
    #[arg(long, env = "SWITCHBOARD_HISTORY_MAX_BYTES", default_value_t = HistoryLimits::default().max_bytes)]
    pub history_max_bytes: usize,
}

impl HttpArgs {
    /// The HTTP limits these options describe.
    pub fn limits(&self) -> HttpLimits {
        let rate = |per_second: u32| {
            (per_second > 0).then_some(RateLimit {
                per_second,
                burst: self.publish_burst.max(1),
            })
        };
        HttpLimits {
            max_body_bytes: self.max_body_bytes,
            max_buffered_body_bytes: self.max_buffered_body_bytes,
            body_timeout: Duration::from_secs(self.body_timeout_secs.max(1)),
            publish_rate_per_ip: rate(self.publish_rate_per_ip),
            publish_rate_per_key: rate(self.publish_rate_per_key),
        }
    }
}

impl HubArgs {
    /// The process's socket budget these options describe.
    pub fn socket_budget(&self) -> usize {
        self.max_sockets
            .unwrap_or_else(switchboard_runtime::admission::socket_budget)
    }

    /// The admission these options describe, shared by every system of the process.
    pub fn admission(&self) -> std::sync::Arc<switchboard_runtime::admission::Admission> {
        switchboard_runtime::admission::Admission::new(
            self.socket_budget(),
            (self.max_connections_per_ip > 0).then_some(self.max_connections_per_ip),
        )
    }

    /// The hub configuration these options describe.
    pub fn config(&self) -> Config {
        let secs = |s: u64| (s > 0).then(|| Duration::from_secs(s));
        Config {
            limits: Limits {
                max_frame_bytes: self.max_frame_bytes,
                max_connections: self.max_connections.unwrap_or_else(|| self.socket_budget()),
                max_rooms_per_connection: self.max_rooms_per_connection,
                max_rooms: self.max_rooms,
                max_queued_bytes: self.max_queued_bytes,
                slow_consumer: match self.slow_consumer {
                    SlowConsumer::Close => SlowConsumerPolicy::Close,
                    SlowConsumer::Drop => SlowConsumerPolicy::Drop,
                },
                inbound_rate: (self.rate_per_sec > 0).then_some(RateLimit {
                    per_second: self.rate_per_sec,
                    burst: self.rate_burst.max(1),
                }),
                rate_policy: match self.rate_policy {
                    RatePolicyArg::Throttle => RatePolicy::Throttle,
                    RatePolicyArg::Close => RatePolicy::Close,
                },
            },
            heartbeat_interval: secs(self.heartbeat_secs),
            idle_timeout: secs(self.idle_timeout_secs),
            replicate: false,
            history: (self.history_max_entries > 0).then(|| {
                let age = Duration::from_secs(self.history_max_age_secs.max(1));
                HistoryConfig {
                    limits: HistoryLimits {
                        max_entries: self.history_max_entries,
                        max_age: age,
                        max_bytes: self.history_max_bytes,
                        // Every room a stream, plus the system's own.
                        max_streams: self.max_rooms.saturating_add(1),
                    },
                    session_ttl: age,
                    // The seed is drawn per system when it starts.
                    ..HistoryConfig::with_seed([0; 32])
                }
            }),
        }
    }
}

/// A real-time WebSocket hub serving the laptimes, AFC, race, collab and DCDock protocols.
///
/// With no arguments every system runs on its seed's default port. Per-system options
/// (`--<system>-port`, `--<system>-api-key`, ...) are listed below with their environment
/// variables. A system's seed-native port variable (`WS_PORT`, `PORT`) is honoured when no other
/// selected system claims the same variable.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "switchboard", version)]
pub struct Cli {
    /// Systems to run, comma-separated (`all`, or any of: laptimes, afc, race, collab, dcdock).
    #[arg(
        long,
        env = "SWITCHBOARD_SYSTEMS",
        value_delimiter = ',',
        default_value = "all"
    )]
    pub systems: Vec<String>,
    /// Address to listen on.
    #[arg(long, env = "SWITCHBOARD_BIND", default_value = "0.0.0.0")]
    pub bind: IpAddr,
    /// The transport: `hyper` serves HTTP and WebSocket on each port, `tokio` WebSocket only.
    #[arg(
        long,
        env = "SWITCHBOARD_TRANSPORT",
        value_enum,
        default_value = "hyper"
    )]
    pub transport: Transport,
    /// Redis URL for running several nodes as one cluster (e.g. redis://127.0.0.1:6379), or a
    /// comma-separated list of up to 16 to spread the streams over several Redis instances
    /// (every node must be given the same list, in the same order). Without it the hub runs as
    /// a single in-memory node.
    #[arg(long, env = "SWITCHBOARD_REDIS_URL")]
    pub redis_url: Option<String>,
    /// With --redis-url: which room channels each node receives (see docs/cluster.md).
    #[arg(
        long,
        env = "SWITCHBOARD_BACKPLANE_ROOMS",
        value_enum,
        default_value = "every"
    )]
    pub backplane_rooms: BackplaneRooms,
    /// Log level filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing directive).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Hub limits.
    #[command(flatten)]
    pub hub: HubArgs,
    /// HTTP limits.
    #[command(flatten)]
    pub http: HttpArgs,
    /// How the process leaves on SIGTERM or ctrl-c.
    #[command(flatten)]
    pub drain: DrainArgs,
    /// The admin listener (the live inspector page).
    #[command(flatten)]
    pub admin: crate::admin::AdminArgs,
    /// TLS.
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// TLS on every port (docs/tls.md).
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate chain, the server's certificate first: with --tls-key, every port speaks
    /// TLS only (wss://, https://). Read again on SIGHUP.
    #[arg(
        long,
        env = "SWITCHBOARD_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, RSA or SEC1). Read again on SIGHUP.
    #[arg(
        long,
        env = "SWITCHBOARD_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Seconds a client may take to complete its TLS handshake; a slower one is closed.
    #[arg(long, env = "SWITCHBOARD_TLS_HANDSHAKE_TIMEOUT_SECS", default_value_t = DEFAULT_HANDSHAKE_TIMEOUT.as_secs())]
    pub tls_handshake_timeout_secs: u64,
}

impl TlsArgs {
    /// The certificate files, when TLS is on.
    pub fn files(&self) -> Option<CertificateFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(CertificateFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }

    /// How long a handshake may take (at least a second).
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.tls_handshake_timeout_secs.max(1))
    }
}

/// How the process leaves on SIGTERM or ctrl-c: a drain (docs/drain.md).
#[derive(Debug, Clone, clap::Args)]
pub struct DrainArgs {
    /// Seconds between SIGTERM (or ctrl-c) and the end of accepting: `/ready` answers 503 at
    /// once while everything is served as before, so a load balancer's health check takes the
    /// node out of rotation before any client is closed.
    #[arg(long, env = "SWITCHBOARD_DRAIN_READY_DELAY_SECS", default_value_t = 1)]
    pub drain_ready_delay_secs: u64,
    /// Seconds over which the WebSocket connections are then closed with 1012 (service
    /// restart), each at its own random instant, so their clients do not all reconnect to the
    /// other nodes at once (0 closes them all at once). A second SIGTERM or ctrl-c closes the
    /// rest at once.
    #[arg(long, env = "SWITCHBOARD_DRAIN_WINDOW_SECS", default_value_t = 5)]
    pub drain_window_secs: u64,
}

impl DrainArgs {
    /// How long `/ready` fails before accepting stops.
    pub fn ready_delay(&self) -> Duration {
        Duration::from_secs(self.drain_ready_delay_secs)
    }

    /// The window the closes are spread over.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.drain_window_secs)
    }
}

/// Limits on HTTP requests (the `switchboard` binary's endpoints).
#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// Largest request body in bytes; larger is answered 413.
    #[arg(long, env = "SWITCHBOARD_MAX_BODY_BYTES", default_value_t = HttpLimits::default().max_body_bytes)]
    pub max_body_bytes: usize,
    /// Request bodies buffered at once per system, in bytes; a request that would go past it
    /// is answered 503.
    #[arg(long, env = "SWITCHBOARD_MAX_BUFFERED_BODY_BYTES", default_value_t = HttpLimits::default().max_buffered_body_bytes)]
    pub max_buffered_body_bytes: usize,
    /// Seconds a request body may take to arrive after its headers; slower is answered 408.
    #[arg(long, env = "SWITCHBOARD_BODY_TIMEOUT_SECS", default_value_t = HttpLimits::default().body_timeout.as_secs())]
    pub body_timeout_secs: u64,
    /// Publish requests per second per client address (0 disables), above which 429.
    #[arg(long, env = "SWITCHBOARD_PUBLISH_RATE_PER_IP", default_value_t = HttpLimits::default().publish_rate_per_ip.map_or(0, |r| r.per_second))]
    pub publish_rate_per_ip: u32,
    /// Publish requests per second per API key (0 disables), above which 429.
    #[arg(long, env = "SWITCHBOARD_PUBLISH_RATE_PER_KEY", default_value_t = HttpLimits::default().publish_rate_per_key.map_or(0, |r| r.per_second))]
    pub publish_rate_per_key: u32,
    /// Publish requests at once above those rates (per address and per key).
    #[arg(long, env = "SWITCHBOARD_PUBLISH_BURST", default_value_t = HttpLimits::default().publish_rate_per_ip.map_or(1, |r| r.burst))]
    pub publish_burst: u32,
}

/// One system to run, fully resolved.
#[derive(Debug, Clone)]
pub struct SystemRun {
    /// Registry entry.
    pub spec: &'static SystemSpec,
    /// Where to listen.
    pub addr: SocketAddr,
    /// Upgrade checks.
    pub endpoint: Endpoint,
    /// Protocol options.
    pub options: Options,
}

fn leak(s: String) -> &'static str {
    // Flag names are built once at startup from the registry and live for the whole process.
    Box::leak(s.into_boxed_str())
}

fn upper(name: &str) -> String {
    name.to_ascii_uppercase().replace('-', "_")
}

fn system_args() -> Vec<Arg> {
    let mut args = Vec::new();
    for s in SYSTEMS {
        let n = s.name;
        args.push(
            Arg::new(leak(format!("{n}-port")))
                .long(leak(format!("{n}-port")))
                .env(leak(format!("{}_PORT", upper(n))))
                .value_parser(clap::value_parser!(u16))
                .help_heading("Per-system options")
                .help(leak(format!(
                    "Port for {} (default {})",
                    s.title, s.default_port
                ))),
        );
        args.push(
            Arg::new(leak(format!("{n}-api-key")))
                .long(leak(format!("{n}-api-key")))
                .env(s.api_key_env)
                .hide_env_values(true)
                .value_parser(clap::value_parser!(String))
                .help_heading("Per-system options")
                .help(leak(format!(
                    "Key(s) for {n}'s HTTP publish endpoints, comma-separated (several at once for rotation)"
                ))),
        );
        let default = match s.origins {
            Some(o) => format!("`{}` (also read from {})", o.default, o.env),
            None => "none: any page may connect".to_string(),
        };
        args.push(
            Arg::new(leak(format!("{n}-allowed-origins")))
                .long(leak(format!("{n}-allowed-origins")))
                .env(leak(format!("{}_ALLOWED_ORIGINS", upper(n))))
                .value_parser(clap::value_parser!(String))
                .help_heading("Per-system options")
                .help(leak(format!(
                    "Comma-separated browser origins allowed to connect to {n} and to call its HTTP endpoints (`*` for any; default {default})"
                ))),
        );
        if let Auth::JwtQuery { secret_env, .. } = s.auth {
            args.push(
                Arg::new(leak(format!("{n}-jwt-secret")))
                    .long(leak(format!("{n}-jwt-secret")))
                    .env(secret_env)
                    .hide_env_values(true)
                    .value_parser(clap::value_parser!(String))
                    .help_heading("Per-system options")
                    .help(leak(format!(
                        "HS256 secret that signs {n}'s JWTs (without it and --{n}-jwt-keys every token is refused)"
                    ))),
            );
            args.push(
                Arg::new(leak(format!("{n}-jwt-keys")))
                    .long(leak(format!("{n}-jwt-keys")))
                    .env(leak(format!("{}_JWT_KEYS", upper(n))))
                    .hide_env_values(true)
                    .value_parser(clap::value_parser!(String))
                    .help_heading("Per-system options")
                    .help(leak(format!(
                        "More HS256 secrets for {n}, for key rotation: comma-separated `kid:secret`; a token whose header names a kid is checked with that key only"
                    ))),
            );
        }
    }
    args
}

/// The full clap command, with the per-system options.
pub fn command() -> clap::Command {
    Cli::command().args(system_args())
}

/// Parse the process arguments.
pub fn parse() -> (Cli, Vec<SystemRun>) {
    parse_from(std::env::args_os())
}

/// Parse the given arguments (the first is the program name).
pub fn parse_from<I, T>(args: I) -> (Cli, Vec<SystemRun>)
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = command().get_matches_from(args);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let runs = resolve(&cli, &matches).unwrap_or_else(|e| {
        command()
            .error(clap::error::ErrorKind::InvalidValue, e)
            .exit()
    });
    (cli, runs)
}

fn resolve(cli: &Cli, m: &ArgMatches) -> Result<Vec<SystemRun>, String> {
    let mut selected: Vec<&'static SystemSpec> = Vec::new();
    for name in &cli.systems {
        let name = name.trim();
        if name == "all" {
            selected.extend(SYSTEMS.iter());
        } else {
            let spec = switchboard_protocol::system(name).ok_or_else(|| {
                let known: Vec<_> = SYSTEMS.iter().map(|s| s.name).collect();
                format!("unknown system `{name}`; known: all, {}", known.join(", "))
            })?;
            selected.push(spec);
        }
    }
    selected.sort_by_key(|s| s.name);
    selected.dedup_by_key(|s| s.name);
    let mut claims: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &selected {
        if let Some(env) = s.port_env {
            *claims.entry(env).or_default() += 1;
        }
    }
    let mut runs = Vec::new();
    for spec in selected {
        let n = spec.name;
        let native = spec
            .port_env
            .filter(|env| claims.get(env) == Some(&1))
            .and_then(|env| std::env::var(env).ok())
            .map(|v| {
                v.parse::<u16>()
                    .map_err(|e| format!("{}={v}: {e}", spec.port_env.unwrap_or("")))
            })
            .transpose()?;
        let port = m
            .get_one::<u16>(&format!("{n}-port"))
            .copied()
            .or(native)
            .unwrap_or(spec.default_port);
        let flag = |name: &str| {
            m.try_get_one::<String>(&format!("{n}-{name}"))
                .ok()
                .flatten()
                .cloned()
        };
        let mut endpoint = Endpoint::new(spec);
        endpoint.max_id_bytes = cli.hub.max_id_bytes;
        // `--<system>-allowed-origins` / `<SYSTEM>_ALLOWED_ORIGINS`, else the seed's own
        // variable and default (collab's ALLOWED_ORIGINS), else no list.
        let origins = flag("allowed-origins").or_else(|| {
            spec.origins
                .map(|o| std::env::var(o.env).unwrap_or_else(|_| o.default.to_string()))
        });
        endpoint.allowed_origins = origins.as_deref().map(parse_origins);
        if let Some(secret) = flag("jwt-secret") {
            endpoint.jwt = JwtKeys::single(&secret);
        }
        if let Some(list) = flag("jwt-keys") {
            endpoint
                .jwt
                .add_list(&list)
                .map_err(|e| format!("--{n}-jwt-keys: {e}"))?;
        }
        let options = Options::default()
            .with_api_keys(
                flag("api-key")
                    .map(|keys| parse_api_keys(&keys))
                    .unwrap_or_default(),
            )
            .with_max_id_bytes(cli.hub.max_id_bytes);
        runs.push(SystemRun {
            spec,
            addr: SocketAddr::new(cli.bind, port),
            endpoint,
            options,
        });
    }
    let mut ports: Vec<_> = runs.iter().map(|r| r.addr.port()).collect();
    ports.sort_unstable();
    if ports.windows(2).any(|w| w[0] == w[1] && w[0] != 0) {
        return Err("two systems are configured on the same port".into());
    }
    Ok(runs)
}

/// The Redis URLs of `--redis-url`: one, or several separated by commas (spaces around each
/// are ignored). An empty entry, or more than [`switchboard_backplane_redis::MAX_INSTANCES`], is
/// refused with a message saying so.
pub fn redis_urls(value: &str) -> Result<Vec<String>, String> {
    let urls: Vec<String> = value.split(',').map(|u| u.trim().to_string()).collect();
    if urls.iter().any(String::is_empty) {
        return Err(format!(
            "--redis-url: an empty URL in the list {value:?} (separate URLs with single commas)"
        ));
    }
    let max = switchboard_backplane_redis::MAX_INSTANCES;
    if urls.len() > max {
        return Err(format!(
            "--redis-url: {} Redis URLs given; at most {max} are supported",
            urls.len()
        ));
    }
    Ok(urls)
}

/// What is risky or silently off in this configuration, one sentence each, for the startup
/// summary.
pub fn warnings(cli: &Cli, runs: &[SystemRun]) -> Vec<String> {
    let mut out = Vec::new();
    let exposed = !cli.bind.is_loopback();
    let reach = if exposed {
        format!(" on {} (not loopback)", cli.bind)
    } else {
        String::new()
    };
    let mut claims: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for run in runs {
        let (n, spec) = (run.spec.name, run.spec);
        if let Some(env) = spec.port_env {
            claims.entry(env).or_default().push(n);
        }
        if let (Auth::JwtQuery { secret_env, .. }, true) = (spec.auth, run.endpoint.jwt.is_empty())
        {
            out.push(format!(
                "{n}: no JWT secret is set ({secret_env}), so every {n} connection is refused"
            ));
        }
        let keyed = run.options.has_api_key();
        for route in spec.routes.iter().filter(|r| r.publishes) {
            match route.key {
                KeyRule::Required if !keyed => out.push(format!(
                    "{n}: publishing over HTTP is disabled until {} is set",
                    spec.api_key_env
                )),
                KeyRule::Open | KeyRule::IfConfigured if !keyed => out.push(format!(
                    "{n}: its HTTP publish endpoint is open to anyone who can reach the port{reach} (set {} to require a key)",
                    spec.api_key_env
                )),
                _ => {}
            }
        }
        match &run.endpoint.allowed_origins {
            None => out.push(format!(
                "{n}: no origin allow-list ({}_ALLOWED_ORIGINS), so any web page can connect and publish{reach}",
                upper(n)
            )),
            Some(_) if run.endpoint.allows_any_origin() => out.push(format!(
                "{n}: its origin allow-list is `*`, so any web page can connect and publish{reach}"
            )),
            Some(_) => {}
        }
    }
    for (env, systems) in claims {
        if systems.len() > 1 && std::env::var_os(env).is_some() {
            out.push(format!(
                "{env} is ignored: {} both claim it; use {}",
                systems.join(" and "),
                systems
                    .iter()
                    .map(|s| format!("{}_PORT", upper(s)))
                    .collect::<Vec<_>>()
                    .join(" / ")
            ));
        }
    }
    let budget = cli.hub.socket_budget();
    if let Some(max) = cli.hub.max_connections.filter(|&m| m > budget) {
        out.push(format!(
            "--max-connections {max} is above the process's socket budget of {budget}: connections past it are answered 503 at accept"
        ));
    }
    out
}

/// Log one summary of what is in force (systems, ports, limits), then one warning per risky or
/// silent default ([`warnings`]).
pub fn log_summary(cli: &Cli, runs: &[SystemRun]) {
    let config = cli.hub.config();
    let limits = &config.limits;
    let systems: Vec<String> = runs
        .iter()
        .map(|r| format!("{}:{}", r.spec.name, r.addr.port()))
        .collect();
    tracing::info!(
        systems = %systems.join(" "),
        bind = %cli.bind,
        sockets = cli.hub.socket_budget(),
        open_files = switchboard_runtime::admission::open_file_limit().unwrap_or(0),
        connections_per_system = limits.max_connections,
        connections_per_ip = cli.hub.max_connections_per_ip,
        frame_bytes = limits.max_frame_bytes,
        queued_bytes = limits.max_queued_bytes,
        rate = %limits.inbound_rate.map_or("off".to_string(), |r| format!("{}/s burst {}", r.per_second, r.burst)),
        rate_policy = ?limits.rate_policy,
        id_bytes = cli.hub.max_id_bytes,
        body_bytes = cli.http.max_body_bytes,
        publish_rate_per_ip = cli.http.publish_rate_per_ip,
        cluster = cli.redis_url.is_some(),
        tls = cli.tls.files().is_some(),
        drain_ready_delay_secs = cli.drain.drain_ready_delay_secs,
        drain_window_secs = cli.drain.drain_window_secs,
        "switchboard configuration"
    );
    for warning in warnings(cli, runs) {
        tracing::warn!("{warning}");
    }
}

/// Install the tracing subscriber the options ask for.
pub fn init_tracing(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log file gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// SIGTERM and ctrl-c, caught from when this is made (not one is missed between two waits).
#[derive(Debug)]
pub struct Termination {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Termination {
    /// Catch SIGTERM and ctrl-c from now on (they no longer end the process by themselves).
    #[cfg(unix)]
    pub fn catch() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Termination {
            term: signal(SignalKind::terminate()).expect("installing a SIGTERM handler"),
            interrupt: signal(SignalKind::interrupt()).expect("installing a SIGINT handler"),
        }
    }

    /// Catch ctrl-c from now on.
    #[cfg(not(unix))]
    pub fn catch() -> Self {
        Termination {}
    }

    /// The next SIGTERM or ctrl-c.
    #[cfg(unix)]
    pub async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }

    /// The next ctrl-c.
    #[cfg(not(unix))]
    pub async fn next(&mut self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_url_takes_a_list_of_up_to_sixteen() {
        assert_eq!(redis_urls("redis://a:1").unwrap(), ["redis://a:1"]);
        assert_eq!(
            redis_urls("redis://a:1, redis://b:2,redis://c:3").unwrap(),
            ["redis://a:1", "redis://b:2", "redis://c:3"]
        );
        assert!(redis_urls("redis://a:1,,redis://b:2")
            .unwrap_err()
            .contains("empty URL"));
        let many: Vec<String> = (0..17).map(|i| format!("redis://h:{i}")).collect();
        assert!(redis_urls(&many[..16].join(",")).is_ok());
        let e = redis_urls(&many.join(",")).unwrap_err();
        assert!(e.contains("17 Redis URLs given; at most 16"), "{e}");
    }

    #[test]
    fn defaults_run_every_system_on_its_seed_port() {
        let (_, runs) = parse_from(["switchboard"]);
        let ports: BTreeMap<_, _> = runs.iter().map(|r| (r.spec.name, r.addr.port())).collect();
        assert_eq!(ports.len(), SYSTEMS.len());
        for s in SYSTEMS {
            // The environment of the test process may set a seed variable; only check defaults
            // where it does not.
            if s.port_env.is_none_or(|e| std::env::var(e).is_err())
                && std::env::var(format!("{}_PORT", upper(s.name))).is_err()
            {
                assert_eq!(ports[s.name], s.default_port, "{}", s.name);
            }
        }
    }

    #[test]
    fn flags_select_systems_and_ports() {
        let (_, runs) = parse_from([
            "switchboard",
            "--systems",
            "collab,dcdock",
            "--collab-port",
            "4100",
        ]);
        let names: Vec<_> = runs.iter().map(|r| r.spec.name).collect();
        assert_eq!(names, ["collab", "dcdock"]);
        assert_eq!(runs[0].addr.port(), 4100);
        command().debug_assert();
    }

    #[test]
    fn drain_flags_and_their_defaults() {
        let (cli, _) = parse_from(["switchboard"]);
        // The environment of the test process may set them; only check defaults where not.
        if std::env::var("SWITCHBOARD_DRAIN_READY_DELAY_SECS").is_err() {
            assert_eq!(cli.drain.ready_delay(), Duration::from_secs(1));
        }
        if std::env::var("SWITCHBOARD_DRAIN_WINDOW_SECS").is_err() {
            assert_eq!(cli.drain.window(), Duration::from_secs(5));
        }
        let (cli, _) = parse_from([
            "switchboard",
            "--drain-ready-delay-secs",
            "0",
            "--drain-window-secs",
            "30",
        ]);
        assert_eq!(cli.drain.ready_delay(), Duration::ZERO);
        assert_eq!(cli.drain.window(), Duration::from_secs(30));
    }
}
