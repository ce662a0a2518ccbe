//! The fan-out floor: what the kernel alone spends to send one frame to one loopback TCP socket,
//! measured without any server, in the same run as the load it is compared with.
//!
//! A server that fans a publication out to N sockets makes N sends one after the other (no
//! system call sends to several TCP sockets at once), and on loopback each send also runs the
//! receiver's TCP input path. So the recipient in position k (k recipients ahead of it) cannot get
//! the frame sooner than `(k + 1) x` the cost of one send, whatever the server does in user space.
//! [`measure`] opens as many socket pairs as the run has sockets, registers every receiving end in
//! an epoll set (as a client that waits for frames has it, so the kernel's wake-up bookkeeping is
//! in the cost), and times rounds of one `send` of a frame of the run's size to every socket, on
//! one thread. The per-send cost is the median over the rounds.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

/// What [`measure`] found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Floor {
    /// The kernel's cost of one send, in nanoseconds (median of the rounds).
    pub per_send_ns: f64,
    /// Sockets sent to in each round.
    pub sockets: usize,
    /// Bytes of each send (the WebSocket frame: header and payload).
    pub frame_bytes: usize,
    /// Timed rounds.
    pub rounds: usize,
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

/// Time `rounds` rounds of one send of `frame_bytes` bytes to each of `sockets` loopback sockets.
pub fn measure(sockets: usize, frame_bytes: usize, rounds: usize) -> io::Result<Floor> {
    let sockets = sockets.max(1);
    let rounds = rounds.max(1);
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    // SAFETY: epoll_create1 has no preconditions; a negative return is an error, checked below.
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if epfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: epfd is a fresh descriptor owned by nothing else; OwnedFd closes it once.
    let epoll = unsafe { OwnedFd::from_raw_fd(epfd) };
    let mut pairs = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        let receiver = TcpStream::connect(addr)?;
        let (sender, _) = listener.accept()?;
        sender.set_nodelay(true)?;
        receiver.set_nonblocking(true)?;
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: 0,
        };
        // SAFETY: both descriptors are open; ev is a valid epoll_event for the call's duration.
        let rc = unsafe {
            libc::epoll_ctl(
                epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                receiver.as_raw_fd(),
                &mut ev,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        pairs.push((sender, receiver));
    }
    let frame = vec![b'x'; frame_bytes.max(1)];
    let mut sink = vec![0u8; 64 * 1024];
    let mut per_send = Vec::with_capacity(rounds);
    // Two untimed rounds first: the sockets' first sends allocate what later ones reuse.
    for round in 0..rounds + 2 {
        let started = Instant::now();
        for (sender, _) in &mut pairs {
            sender.write_all(&frame)?;
        }
        let elapsed = started.elapsed().as_nanos() as f64;
        if round >= 2 {
            per_send.push(elapsed / sockets as f64);
        }
        // Read everything back (untimed), so every round sends into empty receive queues.
        for (_, receiver) in &mut pairs {
            loop {
                match receiver.read(&mut sink) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    per_send.sort_by(f64::total_cmp);
    Ok(Floor {
        per_send_ns: per_send[per_send.len() / 2],
        sockets,
        frame_bytes,
        rounds,
    })
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
        let f = measure(8, 120, 3).unwrap();
        assert_eq!((f.sockets, f.frame_bytes, f.rounds), (8, 120, 3));
        assert!(f.per_send_ns > 0.0, "{f:?}");
        assert_eq!(f.at(0), f.per_send_ns);
        assert_eq!(f.at(99), 100.0 * f.per_send_ns);
    }
}
