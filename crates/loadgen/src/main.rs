//! `switchboard-load`: a load tool for laptimes-style WebSocket relays (every client's message
//! goes to every other client), used to compare switchboard with other relays side by side.
//!
//! * `fanout`: opens N subscriber and P publisher sockets; the publishers send change notices at
//!   a fixed total rate or flat out (with a bounded number in flight); every socket counts what it
//!   receives. Reports deliveries per second, delivery latency (p50/p99/p999/max, from a send
//!   timestamp carried in each notice), lost deliveries, and the server's CPU seconds and RSS
//!   read from `/proc/<pid>` over the measured window.
//! * `publish-all`: N WebSocket clients, B backends posting E events over HTTP (AFC's
//!   `POST /events/<name>`, the same on a Socket.IO server, or a signed Pusher trigger), each
//!   event sent to every client: deliveries, losses, server CPU per delivery and RSS.
//! * `idle`: opens thousands of sockets that send nothing and reports the server's RSS per idle
//!   connection (the growth of `VmRSS` from a baseline of a few connections, divided by the
//!   number added).
//!
//! * `hold` and `post`: one load process of a scale run (`bench/cluster.sh`): `hold` opens N
//!   idle sockets from one source address, reports handshakes per second, then every receipt of
//!   the publications that `post` makes, timed on the wall clock from the post.
//!
//! Output is human-readable, or one JSON object per run with `--json` (for `bench/compare.sh`).

mod across;
mod conn;
mod epoll;
mod floor;
mod hist;
mod hold;
mod http;
mod notice;
mod post;
mod probe;
mod procfs;
mod publish_all;
mod pusher;
mod raw;
mod run;
mod shared;
mod socketio;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Load tool for WebSocket relays.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Worker threads of the load tool (default: the CPUs it may run on; 1 = single-threaded).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Print one JSON object instead of a human-readable report.
    #[arg(long, global = true)]
    json: bool,
    /// A name for the server under test, copied into the report.
    #[arg(long, global = true, default_value = "server")]
    label: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Subscribers and publishers: throughput, latency, losses, server CPU per delivery.
    Fanout(FanoutArgs),
    /// Idle sockets: server memory per connection.
    Idle(IdleArgs),
    /// Backends post events over HTTP, every client receives each: server CPU per delivery.
    PublishAll(PublishAllArgs),
    /// Updates posted to one cluster node, followed on another, over many streams.
    Across(across::AcrossArgs),
    /// Idle sockets from one source address: handshakes per second, then each publication's
    /// receipts timed from its post (JSON lines).
    Hold(hold::HoldArgs),
    /// Post events to a node, each with its post time on the wall clock (one JSON line).
    Post(post::PostArgs),
}

/// How `publish-all` publishes and how its clients listen.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Protocol {
    /// `POST /events/<name>`, plain WebSocket clients (switchboard's AFC system, the seed's
    /// Fastify service).
    Afc,
    /// `POST /events/<name>`, Socket.IO v4 clients (websocket transport).
    Socketio,
    /// A signed trigger on the Pusher HTTP API, clients subscribed to a channel.
    Pusher,
}

/// Options of `publish-all`.
#[derive(Debug, Clone, Args)]
pub struct PublishAllArgs {
    /// How to publish and listen.
    #[arg(long, value_enum, default_value = "afc")]
    pub protocol: Protocol,
    /// WebSocket URL the clients open (Socket.IO: `ws://host:port/socket.io/?EIO=4&transport=websocket`;
    /// Pusher: `ws://host:port/app/<key>?protocol=7`).
    #[arg(long, default_value = "ws://127.0.0.1:4001/ws")]
    pub url: String,
    /// Base URL of the HTTP API the backends post to.
    #[arg(long, default_value = "http://127.0.0.1:4001")]
    pub http: String,
    /// WebSocket clients.
    #[arg(long, default_value_t = 200)]
    pub clients: usize,
    /// Backends posting at once, each one request at a time.
    #[arg(long, default_value_t = 8)]
    pub backends: usize,
    /// Events posted in all.
    #[arg(long, default_value_t = 4000)]
    pub events: usize,
    /// Event name (`<entity>-<action>`).
    #[arg(long, default_value = "todo-created")]
    pub event: String,
    /// Pusher: the channel the clients subscribe to.
    #[arg(long, default_value = "bench")]
    pub channel: String,
    /// Pusher: app id.
    #[arg(long, default_value = "bench")]
    pub app_id: String,
    /// Pusher: app key.
    #[arg(long, default_value = "bench-key")]
    pub app_key: String,
    /// Pusher: app secret.
    #[arg(long, default_value = "bench-secret")]
    pub app_secret: String,
    /// The server's process id, to read its CPU time and RSS from /proc.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Seconds to wait at most, after the last post, for the last deliveries.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// Seconds to wait after every client joined, before the first post.
    #[arg(long, default_value_t = 0.5)]
    pub settle: f64,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Bind every client socket to this source address (127.0.0.x on loopback), so that
    /// several load processes do not share one address's ephemeral ports.
    #[arg(long)]
    pub source: Option<std::net::IpAddr>,
}

/// Options of `fanout`.
#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// WebSocket URL of the relay.
    #[arg(long, default_value = "ws://127.0.0.1:3002/")]
    pub url: String,
    /// Sockets that only receive.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,
    /// Sockets that send (and also receive the other publishers' notices).
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Publications per second, all publishers together; 0 sends flat out.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Flat out only: publications in flight (sent, not yet delivered everywhere) at most.
    #[arg(long, default_value_t = 4)]
    pub window: u64,
    /// Seconds of publishing before the measured window (connections settle, caches warm).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Seconds of the measured window.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds to wait at most, after publishing stops, for the last deliveries.
    #[arg(long, default_value_t = 10.0)]
    pub drain: f64,
    /// Extra bytes of padding in each notice.
    #[arg(long, default_value_t = 0)]
    pub pad: usize,
    /// The server's process id, to read its CPU time and RSS from /proc.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Speak protocol v2 (subprotocol `switchboard.v2`): sends go in the envelope, publications
    /// arrive positioned.
    #[arg(long)]
    pub v2: bool,
    /// Rooms instead of one audience (the collab system, `--url ws://host:3001/ws`): the
    /// sockets form this many projects of `--members` each; each project's first member
    /// publishes edits to the others. `--subscribers` and `--publishers` are then ignored and
    /// `--rate` is for all rooms together.
    #[arg(long, default_value_t = 0)]
    pub rooms: usize,
    /// Members per room (with `--rooms`).
    #[arg(long, default_value_t = 5)]
    pub members: usize,
    /// Every this many subscribers, one is a probe: read on a thread of its own, its latency is
    /// reported apart and against the fan-out floor at its position (0: no probes; not with
    /// `--rooms`).
    #[arg(long, default_value_t = 100)]
    pub probe_every: usize,
    /// Rounds of sends timed to measure the fan-out floor before the run (0: not measured):
    /// enough that the p99 of their times to the probes' positions is not just the slowest.
    #[arg(long, default_value_t = 101)]
    pub floor_rounds: usize,
    /// The CPU the server runs on: the floor's sends are timed from there, as the server's
    /// are (before the run, while the server is idle). Any CPU if not given.
    #[arg(long)]
    pub floor_cpu: Option<usize>,
    /// Also time `--floor-rounds` rounds of the floor during the run (at a fixed rate only),
    /// each halfway between two publications, spread over the warm-up and the measured window:
    /// the machine's other work slows those rounds as it slows the server's fan-outs, so the
    /// probes' p99 can be compared with theirs even when that work comes and goes.
    #[arg(long)]
    pub floor_during: bool,
}

/// Options of `idle`.
#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    /// WebSocket URL of the relay.
    #[arg(long, default_value = "ws://127.0.0.1:3002/")]
    pub url: String,
    /// Idle connections to add after the baseline.
    #[arg(long, default_value_t = 5_000)]
    pub connections: usize,
    /// Connections open when the baseline RSS is read.
    #[arg(long, default_value_t = 100)]
    pub baseline: usize,
    /// Seconds to wait before each reading.
    #[arg(long, default_value_t = 3.0)]
    pub settle: f64,
    /// The server's process id.
    #[arg(long)]
    pub pid: u32,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Open protocol v2 connections (subprotocol `switchboard.v2`).
    #[arg(long)]
    pub v2: bool,
    /// Bind every client socket to this source address (127.0.0.x on loopback), so that
    /// several load processes do not share one address's ephemeral ports.
    #[arg(long)]
    pub source: Option<std::net::IpAddr>,
}

/// Raise the open-file limit to its hard maximum: every socket is a file.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    raise_fd_limit();
    let threads = cli.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchboard-load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Fanout(a) => run::fanout(a).await.map(|r| r.render(&cli.label, cli.json)),
            Command::Idle(a) => run::idle(a).await.map(|r| r.render(&cli.label, cli.json)),
            Command::Across(a) => across::across(a)
                .await
                .map(|r| r.render(&cli.label, cli.json)),
            Command::PublishAll(a) => publish_all::publish_all(a)
                .await
                .map(|r| r.render(&cli.label, cli.json)),
            Command::Hold(a) => hold::hold(a, &cli.label).await,
            Command::Post(a) => post::post(a, &cli.label).await,
        }
    });
    // Do not wait for the connection tasks: exiting closes every socket.
    rt.shutdown_background();
    match result {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchboard-load: {e}");
            ExitCode::FAILURE
        }
    }
}
