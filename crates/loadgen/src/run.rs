//! The two scenarios: `fanout` (publishers and subscribers) and `idle` (sockets that do nothing).

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{connect_all, connect_all_from, connect_all_raw};
use crate::floor::{self, Floor};
use crate::probe::Probes;
use crate::procfs::{self, Sample};
use crate::raw;
use crate::shared::{Shared, MEASURE, STOP};
use crate::{notice, FanoutArgs, IdleArgs};

/// Count and time everything a socket receives until it closes.
async fn receive<S>(mut stream: S, shared: Arc<Shared>)
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    while let Some(msg) = stream.next().await {
        match msg {
            Ok(Message::Text(t)) => {
                shared.on_frame(t.as_bytes());
            }
            Ok(Message::Binary(b)) => {
                shared.on_frame(&b);
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    shared.closed.fetch_add(1, Relaxed);
}

/// What a publisher sends.
#[derive(Debug, Clone)]
struct Shape {
    /// In the v2 envelope.
    v2: bool,
    /// A collab edit to this project, instead of a laptimes notice.
    room: Option<String>,
    pad: usize,
}

impl Shape {
    fn frame(&self, measured: bool, seq: u64, sent_ns: u64) -> String {
        let msg = match &self.room {
            None => notice::build(measured, seq, sent_ns, self.pad),
            Some(room) => format!(
                r#"{{"type":"TASK_UPDATE","projectId":"{room}","payload":{}}}"#,
                notice::build_payload(measured, seq, sent_ns)
            ),
        };
        if self.v2 {
            envelope(&msg)
        } else {
            msg
        }
    }
}

/// `msg` in the v2 envelope.
fn envelope(msg: &str) -> String {
    format!(r#"{{"sb":"msg","msg":{msg}}}"#)
}

/// Send notices until the stop phase: at `period` intervals, or flat out within the window.
async fn publish<S>(
    mut sink: S,
    shared: Arc<Shared>,
    period: Option<Duration>,
    offset: Duration,
    shape: Shape,
) where
    S: futures_util::Sink<Message> + Unpin,
{
    let mut ticker = period.map(|p| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + offset, p);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    let mut seq = 0u64;
    loop {
        match &mut ticker {
            Some(t) => {
                t.tick().await;
            }
            None => {
                while !shared.window_open() {
                    let notified = shared.progress.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    shared.waiting.store(true, Relaxed);
                    if shared.window_open() || shared.phase.load(Relaxed) == STOP {
                        break;
                    }
                    // A lost socket would stall the window forever: re-check now and then.
                    let _ = tokio::time::timeout(Duration::from_millis(20), notified).await;
                }
            }
        }
        let phase = shared.phase.load(Relaxed);
        if phase == STOP {
            return;
        }
        let measured = phase == MEASURE;
        let frame = shape.frame(measured, seq, shared.now_ns());
        seq += 1;
        shared.sent.fetch_add(1, Relaxed);
        if measured {
            shared.sent_measured.fetch_add(1, Relaxed);
        }
        if sink.send(Message::Text(frame.into())).await.is_err() {
            return;
        }
    }
}

pub(crate) fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

pub(crate) fn sample(pid: Option<u32>) -> Result<Option<Sample>, String> {
    pid.map(|p| procfs::sample(p).map_err(|e| format!("reading /proc/{p}: {e}")))
        .transpose()
}

/// What a `fanout` run measured.
#[derive(Debug, Clone)]
pub struct FanoutReport {
    args: FanoutArgs,
    /// Length of the measured window, in seconds.
    window_secs: f64,
    publications: u64,
    expected: u64,
    delivered: u64,
    deliveries_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    mean_us: f64,
    unexpected: u64,
    closed: u64,
    /// Deliveries between the two server readings (the CPU's denominator).
    cpu_deliveries: u64,
    server: Option<(Sample, Sample)>,
    tool_cpu_secs: f64,
    probes: Option<ProbeFigures>,
    floor: Option<Floor>,
    /// The same floor timed with its rounds 2 ms apart (how it was measured before the rounds
    /// were spaced as the run's publications), for comparison.
    back_to_back: Option<Floor>,
    /// The floor timed during the run, between its publications (`--floor-during`).
    during: Option<Floor>,
}

/// The probe sockets' latency (read on their own thread) and its ratio to the fan-out floor.
#[derive(Debug, Clone)]
struct ProbeFigures {
    count: usize,
    realtime: bool,
    received: u64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    /// Quantiles of each probe delivery's latency over the floor at its probe's position (the
    /// shallow probes' ratios are mostly the fixed cost of getting the publication to the server).
    over_floor_p50: Option<f64>,
    over_floor_p99: Option<f64>,
    /// Recipients ahead of the deepest probe.
    deepest: usize,
}

impl ProbeFigures {
    /// The probes' p99 over `floor`'s best case at the deepest probe.
    fn over_best(&self, floor: &Floor) -> f64 {
        self.p99_us * 1e3 / floor.at(self.deepest)
    }

    /// The probes' p99 over `floor`'s own p99 at the probes' positions.
    fn over_own(&self, floor: &Floor) -> Option<f64> {
        floor.marks_p99_ns.map(|ns| self.p99_us * 1e3 / ns)
    }
}

/// Run the `fanout` scenario.
pub async fn fanout(a: FanoutArgs) -> Result<FanoutReport, String> {
    if a.publishers == 0 {
        return Err("at least one publisher is needed".into());
    }
    if a.rate < 0.0 || !a.rate.is_finite() {
        return Err("--rate must be 0 (flat out) or positive".into());
    }
    let shared = if a.rooms > 0 {
        if a.members < 2 {
            return Err("--members must be at least 2: a publisher and someone to tell".into());
        }
        Arc::new(Shared::new(a.members, a.window.max(1)))
    } else {
        Arc::new(Shared::new(a.subscribers + a.publishers, a.window.max(1)))
    };
    let (concurrency, v2) = (a.connect_concurrency, a.v2);
    let mut publishers = Vec::new();
    // The probes' positions (see below): the floor is also timed to each of them.
    let probe_marks: Vec<usize> = match a.probe_every {
        0 => Vec::new(),
        every => (1..)
            .map(|j| j * every - 1)
            .take_while(|&k| k < a.subscribers)
            .collect(),
    };
    // The fan-out floor, before any socket to the server is open (the server is idle): its
    // rounds as far apart as the run's publications, and back to back.
    let (floor, back_to_back) = if a.rooms == 0 && a.floor_rounds > 0 {
        let payload = notice::build(true, 1_000_000, 10_000_000_000_000, a.pad).len();
        let sockets = a.subscribers + a.publishers;
        let frame = floor::ws_frame_bytes(payload);
        let back_to_back = Duration::from_millis(2);
        let period = if a.rate > 0.0 {
            secs(1.0 / a.rate).clamp(back_to_back, Duration::from_secs(1))
        } else {
            back_to_back
        };
        let measure = |gap| {
            floor::measure(
                sockets,
                frame,
                a.floor_rounds,
                a.floor_cpu,
                gap,
                &probe_marks,
            )
            .map_err(|e| format!("measuring the fan-out floor: {e}"))
        };
        let spaced = measure(period)?;
        let back = (period > back_to_back)
            .then(|| measure(back_to_back))
            .transpose()?;
        (Some(spaced), back)
    } else {
        (None, None)
    };
    // The socket pairs of the floor timed during the run, opened before the run's own.
    let during = match (&floor, a.floor_during && a.rate > 0.0) {
        (Some(f), true) => Some((
            floor::Pairs::open(f.sockets)
                .map_err(|e| format!("opening the fan-out floor's sockets: {e}"))?,
            f.frame_bytes,
        )),
        _ => None,
    };
    let mut probes: Option<Probes> = None;
    let mut deepest = None;
    let mut bulk_conns = Vec::new();
    if a.rooms > 0 {
        let sockets = connect_all(&a.url, a.rooms * a.members, concurrency, v2).await?;
        for (j, mut ws) in sockets.into_iter().enumerate() {
            let room = format!("r{}", j / a.members);
            let join = format!(r#"{{"type":"JOIN_PROJECT","projectId":"{room}"}}"#);
            let join = if v2 { envelope(&join) } else { join };
            ws.send(Message::Text(join.into()))
                .await
                .map_err(|e| format!("join {room}: {e}"))?;
            if j % a.members == 0 {
                publishers.push((ws, Some(room)));
            } else {
                tokio::spawn(receive(ws, shared.clone()));
            }
        }
        // Every join answered before the first publication.
        tokio::time::sleep(Duration::from_millis(500)).await;
    } else {
        // Subscribers in batches of `probe_every - 1`, each batch followed by one probe, so the
        // probes sit at positions probe_every - 1, 2 probe_every - 1, ... of the server's fan-out
        // order (the order sockets joined); the publishers come last.
        let every = a.probe_every;
        let mut opened = 0;
        while opened < a.subscribers {
            let left = a.subscribers - opened;
            let bulk = if every > 0 {
                (every - 1).min(left)
            } else {
                left
            };
            for (tcp, rest) in connect_all_raw(&a.url, bulk, concurrency, v2).await? {
                bulk_conns.push(
                    raw::Conn::new(tcp, rest).map_err(|e| format!("a subscriber socket: {e}"))?,
                );
            }
            opened += bulk;
            if every > 0 && opened < a.subscribers {
                let probes = match &mut probes {
                    Some(p) => p,
                    None => probes.insert(Probes::start(shared.clone())?),
                };
                // Let the server register the batch before the probe joins behind it.
                tokio::time::sleep(Duration::from_millis(5)).await;
                let floor_ns = floor.map_or(0.0, |f| f.at(opened));
                probes.open(&a.url, v2, floor_ns).await?;
                deepest = Some(opened);
                opened += 1;
            }
        }
        for ws in connect_all(&a.url, a.publishers, concurrency, v2).await? {
            publishers.push((ws, None));
        }
    }
    let _reader = raw::Reader::start(bulk_conns, shared.clone())
        .map_err(|e| format!("starting the subscribers' reader: {e}"))?;
    // The server may register a socket a moment after its handshake: let every one settle.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let n = publishers.len();
    let period = (a.rate > 0.0).then(|| secs(n as f64 / a.rate));
    // Publications go out every 1/rate from now (the publishers' tickers start now, spread over
    // one period): the floor's rounds fall halfway between two, spread over the whole run.
    let during = during.map(|(pairs, frame)| {
        let period = secs(1.0 / a.rate);
        let publications = (a.warmup + a.duration) * a.rate;
        let stride = (publications / (a.floor_rounds + 2) as f64)
            .floor()
            .max(1.0) as u32;
        let pace = floor::Pace::Between {
            first: Instant::now(),
            period,
            stride,
        };
        let (rounds, cpu, marks) = (a.floor_rounds, a.floor_cpu, probe_marks.clone());
        std::thread::spawn(move || pairs.time(frame, rounds, cpu, pace, &marks))
    });
    for (i, (ws, room)) in publishers.into_iter().enumerate() {
        let (sink, stream) = ws.split();
        tokio::spawn(receive(stream, shared.clone()));
        let offset = period.map_or(Duration::ZERO, |p| p.mul_f64(i as f64 / n as f64));
        let shape = Shape {
            v2,
            room,
            pad: a.pad,
        };
        tokio::spawn(publish(sink, shared.clone(), period, offset, shape));
    }
    let tool_start = procfs::sample(std::process::id()).map_err(|e| e.to_string())?;

    tokio::time::sleep(secs(a.warmup)).await;
    let server_start = sample(a.pid)?;
    let received_start = shared.received.load(Relaxed);
    let started = Instant::now();
    shared.phase.store(MEASURE, Relaxed);

    tokio::time::sleep(secs(a.duration)).await;
    shared.phase.store(STOP, Relaxed);
    shared.progress.notify_waiters();
    let window_secs = started.elapsed().as_secs_f64();
    let received_window = shared.received.load(Relaxed) - received_start;

    // Drain: wait for the measured publications' last deliveries, or for progress to stop.
    let drain_until = Instant::now() + secs(a.drain);
    let mut last = (shared.received.load(Relaxed), Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let expected = shared.sent_measured.load(Relaxed) * shared.fanout;
        let got = shared.received_measured.load(Relaxed);
        let now = Instant::now();
        let total = shared.received.load(Relaxed);
        if total != last.0 {
            last = (total, now);
        }
        if got >= expected || now >= drain_until || now - last.1 > Duration::from_secs(1) {
            break;
        }
    }
    let server_end = sample(a.pid)?;
    let cpu_deliveries = shared.received.load(Relaxed) - received_start;
    let tool_end = procfs::sample(std::process::id()).map_err(|e| e.to_string())?;
    let during = match during {
        // Its rounds ended with the run's publications (or soon after, if they fell behind).
        Some(timer) => Some(
            tokio::task::spawn_blocking(move || timer.join())
                .await
                .map_err(|e| e.to_string())?
                .map_err(|_| "the fan-out floor's timer panicked".to_string())?
                .map_err(|e| format!("timing the fan-out floor during the run: {e}"))?,
        ),
        None => None,
    };

    let h = &shared.latency;
    let us = |ns: u64| ns as f64 / 1_000.0;
    let publications = shared.sent_measured.load(Relaxed);
    let probes = probes.map(|p| {
        let s = &p.stats;
        ProbeFigures {
            count: p.count,
            realtime: s.realtime.load(Relaxed),
            received: s.received.load(Relaxed),
            p50_us: us(s.latency.quantile(0.5)),
            p99_us: us(s.latency.quantile(0.99)),
            p999_us: us(s.latency.quantile(0.999)),
            max_us: us(s.latency.max()),
            over_floor_p50: floor.map(|_| s.over_floor_quantile(0.5)),
            over_floor_p99: floor.map(|_| s.over_floor_quantile(0.99)),
            deepest: deepest.unwrap_or(0),
        }
    });
    Ok(FanoutReport {
        window_secs,
        publications,
        expected: publications * shared.fanout,
        delivered: shared.received_measured.load(Relaxed),
        deliveries_per_sec: received_window as f64 / window_secs,
        p50_us: us(h.quantile(0.5)),
        p99_us: us(h.quantile(0.99)),
        p999_us: us(h.quantile(0.999)),
        max_us: us(h.max()),
        mean_us: h.mean() / 1_000.0,
        unexpected: shared.unexpected.load(Relaxed),
        closed: shared.closed.load(Relaxed),
        cpu_deliveries,
        server: server_start.zip(server_end),
        tool_cpu_secs: tool_end.cpu_secs - tool_start.cpu_secs,
        probes,
        floor,
        back_to_back,
        during,
        args: a,
    })
}

/// `v` with `places` decimals, or JSON's `null`.
fn num(v: Option<f64>, places: usize) -> String {
    v.map_or("null".to_string(), |v| format!("{v:.places$}"))
}

pub(crate) fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl FanoutReport {
    /// Deliveries expected but not received.
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }

    /// Server CPU seconds over the window and per million deliveries.
    fn server_cpu(&self) -> Option<(f64, f64)> {
        self.server.map(|(a, b)| {
            let cpu = b.cpu_secs - a.cpu_secs;
            (cpu, cpu * 1e6 / self.cpu_deliveries.max(1) as f64)
        })
    }

    /// The report as text or as one JSON object.
    pub fn render(&self, label: &str, json: bool) -> String {
        let a = &self.args;
        let mode = if a.rate > 0.0 {
            format!("{} publications/s", a.rate)
        } else {
            format!("flat out, window {}", a.window)
        };
        let cpu = self.server_cpu();
        if json {
            let mut s = format!(
                "{{\"scenario\":\"fanout\",\"label\":{},\"url\":{},\"subscribers\":{},\"publishers\":{},\
                 \"rate\":{},\"in_flight\":{},\"window_secs\":{:.3},\"publications\":{},\"expected\":{},\"delivered\":{},\
                 \"lost\":{},\"deliveries_per_sec\":{:.1},\"latency_us\":{{\"p50\":{:.1},\"p99\":{:.1},\
                 \"p999\":{:.1},\"max\":{:.1},\"mean\":{:.1}}},\"unexpected\":{},\"closed\":{},\
                 \"tool_cpu_secs\":{:.3},\"v2\":{},\"rooms\":{},\"members\":{}",
                json_str(label),
                json_str(&a.url),
                a.subscribers,
                a.publishers,
                a.rate,
                // The window applies to flat-out runs only.
                if a.rate > 0.0 { "null".to_string() } else { a.window.to_string() },
                self.window_secs,
                self.publications,
                self.expected,
                self.delivered,
                self.lost(),
                self.deliveries_per_sec,
                self.p50_us,
                self.p99_us,
                self.p999_us,
                self.max_us,
                self.mean_us,
                self.unexpected,
                self.closed,
                self.tool_cpu_secs,
                a.v2,
                a.rooms,
                a.members,
            );
            if let (Some((start, end)), Some((cpu, per_million))) = (self.server, cpu) {
                // The split of the same figure: user space (the server's code) and the kernel.
                let user =
                    (end.user_secs - start.user_secs) * 1e6 / self.cpu_deliveries.max(1) as f64;
                let _ = write!(
                    s,
                    ",\"server\":{{\"cpu_secs\":{cpu:.3},\"deliveries\":{},\
                     \"cpu_secs_per_million\":{per_million:.3},\
                     \"user_secs_per_million\":{user:.3},\"system_secs_per_million\":{:.3},\
                     \"rss_kib\":{},\"hwm_kib\":{}}}",
                    self.cpu_deliveries,
                    (per_million - user).max(0.0),
                    end.rss_kib,
                    end.hwm_kib
                );
            }
            for (key, floor) in [
                ("floor", &self.floor),
                ("floor_back_to_back", &self.back_to_back),
                ("floor_during", &self.during),
            ] {
                if let Some(f) = floor {
                    let _ = write!(
                        s,
                        ",\"{key}\":{{\"per_send_ns\":{:.1},\"median_ns\":{:.1},\"sockets\":{},\
                         \"frame_bytes\":{},\"rounds\":{},\"gap_ms\":{:.1},\"marks_p50_ns\":{},\
                         \"marks_p99_ns\":{}}}",
                        f.per_send_ns,
                        f.median_ns,
                        f.sockets,
                        f.frame_bytes,
                        f.rounds,
                        f.gap_ms,
                        num(f.marks_p50_ns, 1),
                        num(f.marks_p99_ns, 1)
                    );
                }
            }
            if let Some(p) = &self.probes {
                let num = |v| num(v, 3);
                let _ = write!(
                    s,
                    ",\"probes\":{{\"every\":{},\"count\":{},\"realtime\":{},\"received\":{},\"deepest\":{},\
                     \"latency_us\":{{\"p50\":{:.1},\"p99\":{:.1},\"p999\":{:.1},\"max\":{:.1}}},\
                     \"floor_deepest_us\":{},\"p99_over_floor\":{},\"p50_over_own_floor\":{},\
                     \"p99_over_own_floor\":{},\"p99_over_back_to_back_floor\":{},\
                     \"p99_over_floor_p99\":{},\"p99_over_floor_during\":{},\
                     \"p99_over_floor_during_p99\":{}}}",
                    a.probe_every,
                    p.count,
                    p.realtime,
                    p.received,
                    p.deepest,
                    p.p50_us,
                    p.p99_us,
                    p.p999_us,
                    p.max_us,
                    num(self.floor.map(|f| f.at(p.deepest) / 1e3)),
                    num(self.floor.map(|f| p.over_best(&f))),
                    num(p.over_floor_p50),
                    num(p.over_floor_p99),
                    num(self.back_to_back.map(|f| p.over_best(&f))),
                    num(self.floor.and_then(|f| p.over_own(&f))),
                    num(self.during.map(|f| p.over_best(&f))),
                    num(self.during.and_then(|f| p.over_own(&f))),
                );
            }
            s.push('}');
            return s;
        }
        let mut s = String::new();
        let who = if a.rooms > 0 {
            format!("{} rooms x {} members", a.rooms, a.members)
        } else {
            format!(
                "{} subscribers + {} publishers",
                a.subscribers, a.publishers
            )
        };
        let protocol = if a.v2 { ", protocol v2" } else { "" };
        let _ = writeln!(
            s,
            "{label}: {who} at {}{protocol}, {:.1} s measured ({})",
            a.url, self.window_secs, mode
        );
        let _ = writeln!(
            s,
            "  publications {}  deliveries {} of {} expected  lost {}  ({:.0} deliveries/s)",
            self.publications,
            self.delivered,
            self.expected,
            self.lost(),
            self.deliveries_per_sec
        );
        let _ = writeln!(
            s,
            "  latency p50 {:.0} us  p99 {:.0} us  p99.9 {:.0} us  max {:.0} us  mean {:.0} us",
            self.p50_us, self.p99_us, self.p999_us, self.max_us, self.mean_us
        );
        if let (Some((_, end)), Some((cpu, per_million))) = (self.server, cpu) {
            let _ = writeln!(
                s,
                "  server CPU {cpu:.2} s for {} deliveries = {per_million:.2} CPU-s per million; \
                 RSS {} KiB (peak {} KiB)",
                self.cpu_deliveries, end.rss_kib, end.hwm_kib
            );
        }
        if let Some(p) = &self.probes {
            let _ = writeln!(
                s,
                "  probes ({} of them, every {}th socket, read on their own thread{}, {} deliveries): \
                 latency p50 {:.0} us  p99 {:.0} us  p99.9 {:.0} us  max {:.0} us",
                p.count,
                a.probe_every,
                if p.realtime { " (SCHED_FIFO)" } else { "" },
                p.received,
                p.p50_us, p.p99_us, p.p999_us, p.max_us
            );
        }
        if let Some(f) = &self.floor {
            let _ = write!(
                s,
                "  fan-out floor: {:.0} ns per send, fastest of {} rounds {:.0} ms apart (median {:.0} ns; \
                 {} sockets, {}-byte frames)",
                f.per_send_ns, f.rounds, f.gap_ms, f.median_ns, f.sockets, f.frame_bytes
            );
            if let Some(b) = &self.back_to_back {
                let _ = write!(s, "; {:.0} ns with the rounds back to back", b.per_send_ns);
            }
            if let Some(p) = &self.probes {
                let _ = write!(
                    s,
                    "; {:.0} us at the deepest probe ({} ahead): probe p99 / that floor {:.2}; \
                     each probe delivery over the floor at its own position: p50 {:.2}  p99 {:.2}",
                    f.at(p.deepest) / 1e3,
                    p.deepest,
                    p.over_best(f),
                    p.over_floor_p50.unwrap_or(f64::NAN),
                    p.over_floor_p99.unwrap_or(f64::NAN)
                );
                if let (Some(ns), Some(ratio)) = (f.marks_p99_ns, p.over_own(f)) {
                    let _ = write!(
                        s,
                        "; the floor's own p99 at the probes' positions {:.0} us: probe p99 / that {ratio:.2}",
                        ns / 1e3,
                    );
                }
            }
            s.push('\n');
        }
        if let (Some(f), Some(p)) = (&self.during, &self.probes) {
            let _ = writeln!(
                s,
                "  the floor timed during the run, between publications: {:.0} ns per send at best \
                 (median {:.0} ns; {} rounds, every {:.0} ms); probe p99 / its best case {:.2}{}",
                f.per_send_ns,
                f.median_ns,
                f.rounds,
                f.gap_ms,
                p.over_best(f),
                f.marks_p99_ns.zip(p.over_own(f)).map_or(String::new(), |(ns, ratio)| format!(
                    "; its own p99 at the probes' positions {:.0} us: probe p99 / that {ratio:.2}",
                    ns / 1e3,
                ))
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

/// What an `idle` run measured.
#[derive(Debug, Clone)]
pub struct IdleReport {
    args: IdleArgs,
    before: Sample,
    after: Sample,
    closed: u64,
}

/// Run the `idle` scenario.
pub async fn idle(a: IdleArgs) -> Result<IdleReport, String> {
    if a.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    let shared = Arc::new(Shared::new(0, 1));
    for ws in connect_all_from(&a.url, a.baseline, a.connect_concurrency, a.v2, a.source).await? {
        tokio::spawn(receive(ws, shared.clone()));
    }
    tokio::time::sleep(secs(a.settle)).await;
    let before = procfs::sample(a.pid).map_err(|e| e.to_string())?;
    for ws in connect_all_from(&a.url, a.connections, a.connect_concurrency, a.v2, a.source).await?
    {
        tokio::spawn(receive(ws, shared.clone()));
    }
    tokio::time::sleep(secs(a.settle)).await;
    let after = procfs::sample(a.pid).map_err(|e| e.to_string())?;
    Ok(IdleReport {
        closed: shared.closed.load(Relaxed),
        args: a,
        before,
        after,
    })
}

impl IdleReport {
    /// RSS growth per added connection, in bytes.
    pub fn bytes_per_connection(&self) -> f64 {
        (self.after.rss_kib as f64 - self.before.rss_kib as f64) * 1024.0
            / self.args.connections as f64
    }

    /// The report as text or as one JSON object.
    pub fn render(&self, label: &str, json: bool) -> String {
        let a = &self.args;
        if json {
            return format!(
                "{{\"scenario\":\"idle\",\"label\":{},\"url\":{},\"baseline\":{},\"connections\":{},\
                 \"rss_before_kib\":{},\"rss_after_kib\":{},\"hwm_kib\":{},\
                 \"rss_bytes_per_connection\":{:.0},\"closed\":{}}}",
                json_str(label),
                json_str(&a.url),
                a.baseline,
                a.connections,
                self.before.rss_kib,
                self.after.rss_kib,
                self.after.hwm_kib,
                self.bytes_per_connection(),
                self.closed
            );
        }
        format!(
            "{label}: RSS {} KiB with {} idle connections, {} KiB with {} more: {:.0} bytes per idle \
             connection (peak {} KiB; {} closed early)",
            self.before.rss_kib,
            a.baseline,
            self.after.rss_kib,
            a.connections,
            self.bytes_per_connection(),
            self.after.hwm_kib,
            self.closed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::is_setup;
    use std::sync::Mutex;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    type Peers = Arc<Mutex<Vec<(usize, mpsc::UnboundedSender<Message>)>>>;

    /// A minimal laptimes-style relay on 127.0.0.1: every text frame goes to every other socket.
    async fn relay() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let peers: Peers = Arc::default();
        tokio::spawn(async move {
            for id in 0.. {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let peers = peers.clone();
                tokio::spawn(async move {
                    let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
                        return;
                    };
                    let (mut sink, mut stream) = ws.split();
                    let (tx, mut rx) = mpsc::unbounded_channel();
                    peers.lock().unwrap().push((id, tx));
                    tokio::spawn(async move {
                        while let Some(m) = rx.recv().await {
                            if sink.send(m).await.is_err() {
                                return;
                            }
                        }
                    });
                    while let Some(Ok(msg)) = stream.next().await {
                        if let Message::Text(_) = msg {
                            for (other, tx) in peers.lock().unwrap().iter() {
                                if *other != id {
                                    let _ = tx.send(msg.clone());
                                }
                            }
                        }
                    }
                    peers.lock().unwrap().retain(|(other, _)| *other != id);
                });
            }
        });
        url
    }

    fn fanout_args(url: String, rate: f64) -> FanoutArgs {
        FanoutArgs {
            url,
            subscribers: 5,
            publishers: 2,
            rate,
            window: 2,
            warmup: 0.2,
            duration: 0.5,
            drain: 5.0,
            pad: 16,
            pid: Some(std::process::id()),
            connect_concurrency: 4,
            v2: false,
            rooms: 0,
            members: 5,
            probe_every: 3,
            floor_rounds: 3,
            floor_cpu: None,
            floor_during: false,
        }
    }

    #[tokio::test]
    async fn fixed_rate_run_counts_every_delivery() {
        let r = fanout(fanout_args(relay().await, 40.0)).await.unwrap();
        assert!(r.publications > 0, "{r:?}");
        // Each publication reaches the 5 subscribers and the other publisher.
        assert_eq!(r.expected, r.publications * 6);
        assert_eq!((r.delivered, r.lost()), (r.expected, 0), "{r:?}");
        assert_eq!((r.unexpected, r.closed), (0, 0));
        assert!(
            r.p50_us > 0.0 && r.p50_us <= r.p99_us && r.p99_us <= r.max_us,
            "{r:?}"
        );
        assert!(r.server.is_some() && r.cpu_deliveries >= r.delivered);
        let json = r.render("relay", true);
        assert!(
            json.starts_with(r#"{"scenario":"fanout","label":"relay""#),
            "{json}"
        );
        assert!(
            json.contains(r#""lost":0"#) && json.contains(r#""server":{"#),
            "{json}"
        );
        assert!(r.render("relay", false).contains("lost 0"));
    }

    #[tokio::test]
    async fn flat_out_run_stays_within_its_window_and_loses_nothing() {
        let r = fanout(fanout_args(relay().await, 0.0)).await.unwrap();
        assert!(r.publications > 0);
        assert_eq!((r.delivered, r.lost()), (r.expected, 0), "{r:?}");
    }

    #[tokio::test]
    async fn idle_run_reads_the_server_memory() {
        let a = IdleArgs {
            url: relay().await,
            connections: 20,
            baseline: 2,
            settle: 0.1,
            pid: std::process::id(),
            connect_concurrency: 8,
            v2: false,
            source: Some("127.0.0.2".parse().unwrap()),
        };
        let r = idle(a).await.unwrap();
        assert_eq!(r.closed, 0);
        assert!(r.after.rss_kib > 0 && r.before.rss_kib > 0);
        assert!(r.render("relay", true).contains(r#""connections":20"#));
    }

    #[test]
    fn publishers_send_notices_edits_and_envelopes() {
        let laptimes = Shape {
            v2: false,
            room: None,
            pad: 0,
        };
        assert_eq!(laptimes.frame(true, 1, 2), notice::build(true, 1, 2, 0));
        let edit = Shape {
            v2: true,
            room: Some("r7".into()),
            pad: 0,
        };
        assert_eq!(
            edit.frame(false, 3, 4),
            r#"{"sb":"msg","msg":{"type":"TASK_UPDATE","projectId":"r7","payload":{"a":0,"m":0,"seq":3,"t":4}}}"#
        );
        assert!(is_setup(
            br#"{"sb":"subscribed","stream":"all","epoch":"0","offset":0}"#
        ));
        assert!(is_setup(
            br#"{"sb":"msg","msg":{"type":"USER_PRESENCE","payload":{}}}"#
        ));
        assert!(is_setup(
            br#"{"sb":"msg","msg":{"type":"CONNECTION_ESTABLISHED","clientId":"c"}}"#
        ));
        assert!(!is_setup(notice::build(true, 1, 2, 0).as_bytes()));
    }

    #[tokio::test]
    async fn refuses_what_it_cannot_measure() {
        let mut a = fanout_args("ws://127.0.0.1:9/".into(), 1.0);
        a.publishers = 0;
        assert!(fanout(a).await.is_err());
        let mut a = fanout_args("ws://127.0.0.1:9/".into(), -1.0);
        a.subscribers = 0;
        assert!(fanout(a).await.is_err());
    }
}
