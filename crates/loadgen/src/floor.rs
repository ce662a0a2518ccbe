//! The fan-out floor: what the kernel alone spends to send one frame to one loopback TCP socket,
//! measured without any server, in the same run as the load it is compared with.
//!
//! A server that fans a publication out to N sockets makes N sends one after the other (no
//! system call sends to several TCP sockets at once), and on loopback each send also runs the
//! receiver's TCP input path. So the recipient in position k (k recipients ahead of it) cannot get
//! the frame sooner than `(k + 1) x` the cost of one send, whatever the server does in user space.
//! [`measure`] opens as many socket pairs as the run has sockets and times rounds of one `send` of
//! a frame of the run's size to every socket, from one thread on the server's CPU, while a thread
//! of the load tool waits for the frames in `epoll_wait` and reads them, as it does in the run
//! (so the wake-ups and the reader's competition for the sockets are in the cost). The per-send
//! cost is the fastest round's: other work on a shared machine only ever slows a round down.
//!
//! The rounds are as far apart as the run's publications: a socket's kernel state goes cold
//! between two sends to it, and a send costs more then. On the project's machine a round of
//! 1001 sends cost 2.1 to 2.4 us per send when the rounds were 2 ms apart and 3.3 to 3.9 us when
//! they were 50 ms apart (a 20/s run's period; fastest of 31 rounds each, three alternating
//! pairs), so a floor timed back to back understates what the kernel spends in the run.
//!
//! The fastest round is a best case, while the probes report a p99 of many publications. So each
//! round also notes when its sends reached the probes' positions, and the pool of those times
//! gives the floor's own p99 ([`Floor::marks_p99_ns`]): what the probes' p99 would be if the
//! server cost nothing but the sends. On the project's machine that p99 was 1.3 to 2.1 times
//! the fastest round's floor at the deepest probe, so a server's probe p99 cannot come within
//! 1.2 times the best case there, whatever it does; the like-for-like ratio shows what it adds.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::epoll::{self, Epoll};

/// What [`measure`] found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Floor {
    /// The kernel's cost of one send, in nanoseconds: the fastest round's (other work on the
    /// machine only ever adds to a round, so the fastest is the least disturbed).
    pub per_send_ns: f64,
    /// The median round's cost of one send, in nanoseconds (how much the machine disturbed it).
    pub median_ns: f64,
    /// Sockets sent to in each round.
    pub sockets: usize,
    /// Bytes of each send (the WebSocket frame: header and payload).
    pub frame_bytes: usize,
    /// Timed rounds.
    pub rounds: usize,
    /// Time between two rounds, in ms.
    pub gap_ms: f64,
    /// The floor as the probes would see it: every round's time to each of the marked positions
    /// (the probes'), pooled, at its median and its 99th percentile, in ns. The probes' p99 is a
    /// p99 of the same kind of pool, so this is the like-for-like floor for it, where
    /// [`Floor::per_send_ns`] is the best case. `None` without marks.
    pub marks_p50_ns: Option<f64>,
    /// See [`Floor::marks_p50_ns`].
    pub marks_p99_ns: Option<f64>,
}

/// When each round of [`Pairs::time`] sends.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// This long after the reader read the previous round (the server idle, before the run).
    After(Duration),
    /// Halfway between two publications of a run that publishes every `period` from `first`,
    /// one round every `stride` periods: the server is idle then too, and the machine's other
    /// work at that moment slows the floor as it slows the server, so the two can be compared
    /// p99 to p99 even when that work comes and goes.
    Between {
        /// The run's first publication.
        first: Instant,
        /// Its time between publications.
        period: Duration,
        /// Periods between two rounds.
        stride: u32,
    },
}

impl Floor {
    /// The earliest a recipient with `ahead` recipients before it can have its frame, in ns.
    pub fn at(&self, ahead: usize) -> f64 {
        (ahead + 1) as f64 * self.per_send_ns
    }
}

/// Bytes on the wire of a server's unmasked WebSocket frame carrying `payload` bytes.
pub fn ws_frame_bytes(payload: usize) -> usize {
    payload
        + match payload {
            0..=125 => 2,
            126..=65_535 => 4,
            _ => 10,
        }
}

/// Time `rounds` rounds of one send of `frame_bytes` bytes to each of `sockets` loopback sockets,
/// from a thread on `sender_cpu` (the server's CPU, idle before the run; any CPU if `None`),
/// while a reader thread on the load tool's CPUs waits in `epoll_wait` and reads, as the load
/// tool does during the run. Between rounds the sender waits until everything was read and then
/// `gap` (the reader is back asleep, as between two publications at a fixed rate). Each round
/// also notes the time its sends took to reach each position in `marks` (recipients ahead).
pub fn measure(
    sockets: usize,
    frame_bytes: usize,
    rounds: usize,
    sender_cpu: Option<usize>,
    gap: Duration,
    marks: &[usize],
) -> io::Result<Floor> {
    Pairs::open(sockets)?.time(frame_bytes, rounds, sender_cpu, Pace::After(gap), marks)
}

/// Loopback socket pairs to time the floor on: opened ahead (before the run's sockets), timed
/// when the caller chooses ([`Pairs::time`], on a thread of its own if during the run).
pub struct Pairs {
    senders: Vec<TcpStream>,
    receivers: Vec<TcpStream>,
    epoll: Epoll,
}

impl Pairs {
    /// `sockets` connected pairs, the receiving ends non-blocking and watched by one epoll.
    pub fn open(sockets: usize) -> io::Result<Pairs> {
        let sockets = sockets.max(1);
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let epoll = Epoll::new()?;
        let mut senders = Vec::with_capacity(sockets);
        let mut receivers = Vec::with_capacity(sockets);
        for i in 0..sockets {
            let receiver = TcpStream::connect(addr)?;
            let (sender, _) = listener.accept()?;
            sender.set_nodelay(true)?;
            receiver.set_nonblocking(true)?;
            epoll.add(&receiver, i as u64)?;
            senders.push(sender);
            receivers.push(receiver);
        }
        Ok(Pairs {
            senders,
            receivers,
            epoll,
        })
    }

    /// Time `rounds` rounds (after two untimed ones) as [`measure`] describes, paced by `pace`.
    pub fn time(
        self,
        frame_bytes: usize,
        rounds: usize,
        sender_cpu: Option<usize>,
        pace: Pace,
        marks: &[usize],
    ) -> io::Result<Floor> {
        let Pairs {
            mut senders,
            mut receivers,
            epoll,
        } = self;
        let sockets = senders.len();
        let rounds = rounds.max(1);
        let read = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (read, stop) = (read.clone(), stop.clone());
            std::thread::Builder::new()
                .name("floor-reader".into())
                .spawn(move || read_all(&epoll, &mut receivers, &read, &stop))?
        };
        let mut marks = marks.to_vec();
        marks.sort_unstable();
        marks.dedup();
        let sender = std::thread::Builder::new()
            .name("floor-sender".into())
            .spawn(move || {
                if let Some(cpu) = sender_cpu {
                    pin_to(cpu);
                }
                send_rounds(&mut senders, frame_bytes, rounds, pace, &read, &marks)
            })?;
        let sent = sender
            .join()
            .map_err(|_| io::Error::other("the floor sender panicked"));
        stop.store(true, Relaxed);
        reader
            .join()
            .map_err(|_| io::Error::other("the floor reader panicked"))??;
        let (mut per_send, mut at_marks) = sent??;
        per_send.sort_by(f64::total_cmp);
        at_marks.sort_by(f64::total_cmp);
        let gap = match pace {
            Pace::After(gap) => gap,
            Pace::Between { period, stride, .. } => period * stride,
        };
        Ok(Floor {
            per_send_ns: per_send[0],
            median_ns: per_send[per_send.len() / 2],
            sockets,
            frame_bytes,
            rounds,
            gap_ms: gap.as_secs_f64() * 1e3,
            marks_p50_ns: quantile(&at_marks, 0.5),
            marks_p99_ns: quantile(&at_marks, 0.99),
        })
    }
}

/// The nearest-rank `q` quantile of `sorted` (`None` if empty).
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

/// Pin the calling thread to `cpu` (best effort: left as it is if not allowed).
fn pin_to(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it (it ignores a cpu past its size);
    // pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The sender: per round, one send to every socket, timed; then wait for the reader. Returns
/// each round's cost per send and, pooled, each round's time to each marked position.
fn send_rounds(
    senders: &mut [TcpStream],
    frame_bytes: usize,
    rounds: usize,
    pace: Pace,
    read: &AtomicU64,
    marks: &[usize],
) -> io::Result<(Vec<f64>, Vec<f64>)> {
    let frame = vec![b'x'; frame_bytes.max(1)];
    let per_round = (frame.len() * senders.len()) as u64;
    let mut per_send = Vec::with_capacity(rounds);
    let mut at_marks = Vec::with_capacity(rounds * marks.len());
    let mut reached = Vec::with_capacity(marks.len());
    // Two untimed rounds first: the sockets' first sends allocate what later ones reuse.
    let mut slot = 0u32;
    for round in 0..rounds + 2 {
        if let Pace::Between {
            first,
            period,
            stride,
        } = pace
        {
            // The next slot halfway between two publications that has not begun yet.
            let at = |slot: u32| first + period * slot + period / 2;
            let now = Instant::now();
            while at(slot) < now {
                slot += stride.max(1);
            }
            std::thread::sleep(at(slot) - now);
            slot += stride.max(1);
        }
        reached.clear();
        let mut next = marks.iter().copied().peekable();
        let started = Instant::now();
        for (i, s) in senders.iter_mut().enumerate() {
            s.write_all(&frame)?;
            if next.next_if_eq(&i).is_some() {
                reached.push(started.elapsed().as_nanos() as f64);
            }
        }
        let elapsed = started.elapsed().as_nanos() as f64;
        if round >= 2 {
            per_send.push(elapsed / senders.len() as f64);
            at_marks.extend_from_slice(&reached);
        }
        let want = per_round * (round as u64 + 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while read.load(Relaxed) < want {
            if Instant::now() > deadline {
                return Err(io::Error::other("the floor reader fell behind"));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        // The reader is back in epoll_wait, as between two publications.
        if let Pace::After(gap) = pace {
            std::thread::sleep(gap);
        }
    }
    Ok((per_send, at_marks))
}

/// The reader: wait in epoll, read every ready socket until it would block, count the bytes.
fn read_all(
    epoll: &Epoll,
    receivers: &mut [TcpStream],
    read: &AtomicU64,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut events = epoll::events(256);
    let mut sink = vec![0u8; 16 * 1024];
    while !stop.load(Relaxed) {
        let n = epoll.wait(&mut events, 20)?;
        for ev in &events[..n] {
            let r = &mut receivers[ev.u64 as usize];
            loop {
                match r.read(&mut sink) {
                    Ok(0) => break,
                    Ok(k) => {
                        read.fetch_add(k as u64, Relaxed);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_sizes_follow_the_websocket_length_encoding() {
        assert_eq!(ws_frame_bytes(0), 2);
        assert_eq!(ws_frame_bytes(125), 127);
        assert_eq!(ws_frame_bytes(126), 130);
        assert_eq!(ws_frame_bytes(65_535), 65_539);
        assert_eq!(ws_frame_bytes(65_536), 65_546);
    }

    #[test]
    fn measures_a_positive_cost_and_scales_it_by_position() {
        let f = measure(8, 120, 3, None, Duration::from_millis(5), &[]).unwrap();
        assert_eq!((f.sockets, f.frame_bytes, f.rounds), (8, 120, 3));
        assert_eq!(f.gap_ms, 5.0);
        assert!(f.per_send_ns > 0.0 && f.per_send_ns <= f.median_ns, "{f:?}");
        assert_eq!(f.at(0), f.per_send_ns);
        assert_eq!(f.at(99), 100.0 * f.per_send_ns);
        assert_eq!((f.marks_p50_ns, f.marks_p99_ns), (None, None));
    }

    #[test]
    fn rounds_between_publications_fall_halfway_through_their_slots() {
        // A run publishing every 10 ms from now, a round every second period: the two untimed
        // rounds and three timed ones start at 5, 25, 45, 65 and 85 ms, never before.
        let period = Duration::from_millis(10);
        let first = Instant::now();
        let pace = Pace::Between {
            first,
            period,
            stride: 2,
        };
        let f = Pairs::open(8)
            .unwrap()
            .time(120, 3, None, pace, &[3])
            .unwrap();
        assert!(first.elapsed() >= Duration::from_millis(85), "{f:?}");
        assert_eq!(f.gap_ms, 20.0, "{f:?}");
        assert!(f.per_send_ns > 0.0 && f.marks_p99_ns.is_some(), "{f:?}");
        // Slots already past are skipped, not caught up with in a burst: a run that began 1 s
        // ago still gets its rounds one slot apart.
        let late = Instant::now();
        let pace = Pace::Between {
            first: late - Duration::from_secs(1),
            period,
            stride: 1,
        };
        Pairs::open(8)
            .unwrap()
            .time(120, 3, None, pace, &[])
            .unwrap();
        assert!(late.elapsed() >= Duration::from_millis(40));
    }

    #[test]
    fn times_the_rounds_to_the_marked_positions() {
        // Marks out of order, repeated and past the last socket: each round reaches 1 and 7.
        let f = measure(8, 120, 5, None, Duration::from_millis(1), &[7, 1, 7, 50]).unwrap();
        let (p50, p99) = (f.marks_p50_ns.unwrap(), f.marks_p99_ns.unwrap());
        assert!(0.0 < p50 && p50 <= p99, "{f:?}");
        // The last socket is reached when its round ends: no sooner than the fastest round.
        let f = measure(8, 120, 5, None, Duration::from_millis(1), &[7]).unwrap();
        assert!(f.marks_p50_ns.unwrap() >= 0.9 * f.at(7), "{f:?}");
        // No mark inside the round: nothing to report.
        let f = measure(8, 120, 2, None, Duration::from_millis(1), &[8]).unwrap();
        assert_eq!(f.marks_p99_ns, None);
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&sorted, 0.5), Some(50.0));
        assert_eq!(quantile(&sorted, 0.99), Some(99.0));
        assert_eq!(quantile(&sorted[..10], 0.99), Some(10.0));
        assert_eq!(quantile(&sorted[..1], 0.5), Some(1.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
