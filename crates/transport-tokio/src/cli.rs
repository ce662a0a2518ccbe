//! The command line both binaries share: which systems to run, on which ports, with which limits.
//!
//! Options that exist once per system (`--<system>-port`, `--<system>-api-key`, ...) are
//! generated from the protocol registry, so a new system gets its flags without a change here.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Arg, ArgMatches, CommandFactory, FromArgMatches};
use switchboard_hub::{Config, Limits, RateLimit, RatePolicy, SlowConsumerPolicy};
use switchboard_protocol::registry::Auth;
use switchboard_protocol::{Options, SystemSpec, SYSTEMS};

use crate::gate::Endpoint;

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
    #[arg(long, env = "SWITCHBOARD_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,
    /// Open connections per system; more are refused (HTTP 503, or close 1013).
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,
    /// Rooms (projects, sessions) one connection may be in.
    #[arg(
        long,
        env = "SWITCHBOARD_MAX_ROOMS_PER_CONNECTION",
        default_value_t = 64
    )]
    pub max_rooms_per_connection: usize,
    /// Rooms per system.
    #[arg(long, env = "SWITCHBOARD_MAX_ROOMS", default_value_t = 100_000)]
    pub max_rooms: usize,
    /// Unflushed outbound bytes per connection before the slow-consumer policy applies.
    #[arg(long, env = "SWITCHBOARD_MAX_QUEUED_BYTES", default_value_t = 1024 * 1024)]
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
    #[arg(long, env = "SWITCHBOARD_RATE_PER_SEC", default_value_t = 100)]
    pub rate_per_sec: u32,
    /// Inbound messages allowed at once above the sustained rate.
    #[arg(long, env = "SWITCHBOARD_RATE_BURST", default_value_t = 200)]
    pub rate_burst: u32,
    /// What happens to a client above the inbound rate (control frames count too).
    #[arg(
        long,
        env = "SWITCHBOARD_RATE_POLICY",
        value_enum,
        default_value = "throttle"
    )]
    pub rate_policy: RatePolicyArg,
    /// Seconds between WebSocket pings to each client (0 disables).
    #[arg(long, env = "SWITCHBOARD_HEARTBEAT_SECS", default_value_t = 30)]
    pub heartbeat_secs: u64,
    /// Seconds without any inbound frame or pong before a client is closed with 4000 (0 disables).
    #[arg(long, env = "SWITCHBOARD_IDLE_TIMEOUT_SECS", default_value_t = 75)]
    pub idle_timeout_secs: u64,
}

impl HubArgs {
    /// The hub configuration these options describe.
    pub fn config(&self) -> Config {
        let secs = |s: u64| (s > 0).then(|| Duration::from_secs(s));
        Config {
            limits: Limits {
                max_frame_bytes: self.max_frame_bytes,
                max_connections: self.max_connections,
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
#[command(version)]
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
    /// Redis URL for running several nodes as one cluster (e.g. redis://127.0.0.1:6379).
    /// Without it the hub runs as a single in-memory node.
    #[arg(long, env = "SWITCHBOARD_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Log level filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing directive).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Hub limits.
    #[command(flatten)]
    pub hub: HubArgs,
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
                .help(leak(format!("Key for {n}'s HTTP publish endpoints"))),
        );
        if let Some(o) = s.origins {
            args.push(
                Arg::new(leak(format!("{n}-allowed-origins")))
                    .long(leak(format!("{n}-allowed-origins")))
                    .env(o.env)
                    .value_parser(clap::value_parser!(String))
                    .help_heading("Per-system options")
                    .help(leak(format!(
                        "Comma-separated browser origins allowed to connect to {n} (`*` for any; default {})",
                        o.default
                    ))),
            );
        }
        if let Auth::JwtQuery { secret_env, .. } = s.auth {
            args.push(
                Arg::new(leak(format!("{n}-jwt-secret")))
                    .long(leak(format!("{n}-jwt-secret")))
                    .env(secret_env)
                    .hide_env_values(true)
                    .value_parser(clap::value_parser!(String))
                    .help_heading("Per-system options")
                    .help(leak(format!(
                        "HS256 secret that signs {n}'s JWTs (without it every token is refused)"
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
        let mut endpoint = Endpoint::from_env(spec);
        if let Some(list) = m
            .try_get_one::<String>(&format!("{n}-allowed-origins"))
            .ok()
            .flatten()
        {
            endpoint.allowed_origins = Some(
                list.split(',')
                    .map(|s| s.trim().trim_end_matches('/').to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
            );
        }
        if let Some(secret) = m
            .try_get_one::<String>(&format!("{n}-jwt-secret"))
            .ok()
            .flatten()
        {
            endpoint.jwt_secret = Some(secret.clone());
        }
        let options = Options {
            api_keys: m
                .get_one::<String>(&format!("{n}-api-key"))
                .map(|keys| switchboard_protocol::registry::parse_api_keys(keys))
                .unwrap_or_default(),
            ..Options::default()
        };
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

/// Install the tracing subscriber the options ask for.
pub fn init_tracing(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves on ctrl-c or SIGTERM.
pub async fn terminated() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
