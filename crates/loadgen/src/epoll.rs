//! One edge-triggered epoll, for the threads that read many sockets without a runtime: the
//! bulk subscribers' reader ([`crate::raw`]) and the fan-out floor's ([`crate::floor`]).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// An epoll instance; each watched socket is known by the token it was added with.
pub(crate) struct Epoll(OwnedFd);

impl Epoll {
    pub(crate) fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 has no preconditions; a negative return is an error, checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a new descriptor that nothing else owns; OwnedFd closes it once.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Watch `socket` for input, edge-triggered (`EPOLLIN | EPOLLRDHUP | EPOLLET`).
    pub(crate) fn add(&self, socket: &impl AsRawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: token,
        };
        // SAFETY: both descriptors are open; ev is a valid epoll_event for the call.
        let rc = unsafe {
            libc::epoll_ctl(
                self.0.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                socket.as_raw_fd(),
                &mut ev,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Wait up to `timeout_ms` for events: their tokens, in `events[..n]`. An interrupted wait
    /// returns no events.
    pub(crate) fn wait(
        &self,
        events: &mut [libc::epoll_event],
        timeout_ms: i32,
    ) -> io::Result<usize> {
        let len = events.len().min(i32::MAX as usize) as i32;
        // SAFETY: events has room for len entries; the descriptor is open.
        let n =
            unsafe { libc::epoll_wait(self.0.as_raw_fd(), events.as_mut_ptr(), len, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(e)
            };
        }
        Ok(n as usize)
    }
}

/// A zeroed buffer of `n` events for [`Epoll::wait`].
pub(crate) fn events(n: usize) -> Vec<libc::epoll_event> {
    vec![libc::epoll_event { events: 0, u64: 0 }; n]
}
