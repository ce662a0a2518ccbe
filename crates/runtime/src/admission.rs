//! Admission at accept time, before a byte is read: the process's socket budget (derived from its
//! open-file limit, so the server answers `503` before `accept` starts failing with `EMFILE`) and
//! an optional limit per client address.
//!
//! A socket over either limit gets a short raw HTTP answer (`503` or `429`) and is closed; at most
//! [`MAX_REFUSING`] such answers are in progress at once (past that a socket is simply dropped),
//! so a connection flood cannot turn refusals into a way to exhaust file descriptors.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// File descriptors kept out of the socket budget for everything else the process opens
/// (listeners, Redis, logs, the runtime), on top of a twentieth of the limit.
pub const FD_HEADROOM: usize = 64;

/// Refusal answers being written at once; further over-limit sockets are dropped unanswered.
pub const MAX_REFUSING: usize = 64;

/// How long a refused socket is kept to let its answer reach the peer.
const REFUSAL_GRACE: Duration = Duration::from_secs(1);

/// The process's soft open-file limit, if it can be read.
pub fn open_file_limit() -> Option<usize> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    limit.current.and_then(|n| usize::try_from(n).ok())
}

/// The client sockets this process can hold at once: the open-file limit less
/// [`FD_HEADROOM`] and a twentieth of it (at least 16). Without a readable limit, 100 000.
pub fn socket_budget() -> usize {
    match open_file_limit() {
        Some(limit) => limit
            .saturating_sub(FD_HEADROOM + limit / 20)
            .clamp(16, 1 << 24),
        None => 100_000,
    }
}

/// Why a socket was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The process holds its whole socket budget.
    Full {
        /// The budget.
        budget: usize,
    },
    /// The client's address holds its whole allowance.
    PerAddress {
        /// The allowance.
        limit: usize,
    },
}

impl Refusal {
    /// A stable label for metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Full { .. } => "sockets",
            Refusal::PerAddress { .. } => "per_address",
        }
    }

    fn status_line(self) -> &'static str {
        match self {
            Refusal::Full { .. } => "503 Service Unavailable",
            Refusal::PerAddress { .. } => "429 Too Many Requests",
        }
    }

    fn message(self) -> String {
        match self {
            Refusal::Full { budget } => {
                format!("server is at its limit of {budget} open connections")
            }
            Refusal::PerAddress { limit } => {
                format!("at most {limit} connections per client address")
            }
        }
    }
}

/// The process-wide socket budget and per-address counts, shared by every listener.
#[derive(Debug)]
pub struct Admission {
    budget: usize,
    per_address: Option<usize>,
    open: AtomicUsize,
    refusing: AtomicUsize,
    by_address: Mutex<HashMap<IpAddr, usize>>,
}

/// A socket's place in the budget; released when dropped.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    address: Option<IpAddr>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.address {
            let mut map = self.admission.lock();
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

impl Admission {
    /// At most `budget` sockets in the process, and `per_address` per client address.
    pub fn new(budget: usize, per_address: Option<usize>) -> Arc<Admission> {
        Arc::new(Admission {
            budget: budget.max(1),
            per_address: per_address.filter(|&n| n > 0),
            open: AtomicUsize::new(0),
            refusing: AtomicUsize::new(0),
            by_address: Mutex::new(HashMap::new()),
        })
    }

    /// The process's whole [`socket_budget`], no per-address limit.
    pub fn for_process() -> Arc<Admission> {
        Admission::new(socket_budget(), None)
    }

    /// The socket budget.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Sockets admitted and still open.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.by_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Admit a socket from `peer`, or say why not.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Ticket, Refusal> {
        let taken = self.open.fetch_add(1, Ordering::AcqRel);
        if taken >= self.budget {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Full {
                budget: self.budget,
            });
        }
        let address = match self.per_address {
            None => None,
            Some(limit) => {
                let mut map = self.lock();
                let n = map.entry(peer).or_insert(0);
                if *n >= limit {
                    drop(map);
                    self.open.fetch_sub(1, Ordering::AcqRel);
                    return Err(Refusal::PerAddress { limit });
                }
                *n += 1;
                Some(peer)
            }
        };
        Ok(Ticket {
            admission: self.clone(),
            address,
        })
    }

    /// Answer a refused socket with a short HTTP error and close it, in the background; or drop
    /// it at once when [`MAX_REFUSING`] answers are already under way.
    pub fn refuse(self: &Arc<Self>, tcp: TcpStream, why: Refusal) {
        if self.refusing.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSING {
            self.refusing.fetch_sub(1, Ordering::AcqRel);
            return; // Dropped: the peer sees a reset.
        }
        let this = self.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REFUSAL_GRACE, answer(tcp, why)).await;
            this.refusing.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// Write the refusal, then read (and discard) what the peer already sent until it closes, so
/// that closing does not reset the connection before the answer is read.
async fn answer(mut tcp: TcpStream, why: Refusal) -> io::Result<()> {
    let body = serde_json::json!({ "error": why.message() }).to_string();
    let head = format!(
        "HTTP/1.1 {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 5\r\nconnection: close\r\n\r\n",
        why.status_line(),
        body.len()
    );
    tcp.write_all(head.as_bytes()).await?;
    tcp.write_all(body.as_bytes()).await?;
    tcp.shutdown().await?;
    let mut sink = [0u8; 1024];
    while tcp.read(&mut sink).await? > 0 {}
    Ok(())
}

/// What one system refused, by kind (`socket`, `upgrade`, `http`) and reason, for `/metrics`.
#[derive(Debug, Default)]
pub struct Refusals {
    counts: Mutex<std::collections::BTreeMap<(&'static str, &'static str), u64>>,
}

impl Refusals {
    /// Count one refusal.
    pub fn count(&self, kind: &'static str, reason: &'static str) {
        *self
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((kind, reason))
            .or_insert(0) += 1;
    }

    /// Every count so far, sorted by kind and reason.
    pub fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(&(kind, reason), &n)| (kind, reason, n))
            .collect()
    }

    /// How many of `kind` for `reason`.
    pub fn get(&self, kind: &str, reason: &str) -> u64 {
        self.snapshot()
            .into_iter()
            .find(|&(k, r, _)| k == kind && r == reason)
            .map_or(0, |(_, _, n)| n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_and_per_address_limits_release_on_drop() {
        let a = Admission::new(3, Some(2));
        let (one, two) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let t1 = a.admit(one).unwrap();
        let t2 = a.admit(one).unwrap();
        assert_eq!(a.admit(one).unwrap_err(), Refusal::PerAddress { limit: 2 });
        let t3 = a.admit(two).unwrap();
        assert_eq!(a.admit(two).unwrap_err(), Refusal::Full { budget: 3 });
        assert_eq!(a.open(), 3);
        drop(t1);
        let t4 = a.admit(one).unwrap();
        drop((t2, t3, t4));
        assert_eq!(a.open(), 0);
        assert!(a.lock().is_empty(), "no address entry outlives its sockets");
    }

    #[test]
    fn the_budget_leaves_headroom_below_the_open_file_limit() {
        let limit = open_file_limit().expect("Linux has RLIMIT_NOFILE");
        let budget = socket_budget();
        assert!(
            budget < limit || limit < FD_HEADROOM + 16,
            "{budget} vs {limit}"
        );
        assert!(budget >= 16);
    }
}
