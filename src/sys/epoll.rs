//! Level-triggered epoll (Linux).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::{cvt, timeout_ms, Event, Interest};

/// How many kernel events one `wait` can return. Skynet uses 64; with a thousand busy
/// connections a larger batch means fewer wait calls and fewer entries into Lua per
/// message. Delivery stays bounded by the batch's byte budget.
const MAX_EVENTS: usize = 512;

pub struct Poller {
    epfd: OwnedFd,
    buf: Vec<libc::epoll_event>,
}

impl Poller {
    pub const NAME: &'static str = "epoll";

    pub fn new() -> io::Result<Poller> {
        // SAFETY: epoll_create1 takes no pointers; the returned fd is owned by us alone.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` is a fresh, valid descriptor nobody else owns.
        let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Poller {
            epfd,
            buf: vec![libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS],
        })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        let mut events = 0u32;
        if interest.read {
            events |= (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
        }
        if interest.write {
            events |= libc::EPOLLOUT as u32;
        }
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` lives across the call; the kernel copies it.
        cvt(unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut ev) })?;
        Ok(())
    }

    pub fn add(&mut self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, interest)
    }

    pub fn modify(&mut self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, interest)
    }

    pub fn delete(&mut self, fd: RawFd) -> io::Result<()> {
        // SAFETY: a null event pointer is allowed for EPOLL_CTL_DEL since Linux 2.6.9.
        cvt(unsafe {
            libc::epoll_ctl(
                self.epfd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        })?;
        Ok(())
    }

    /// Wait for readiness and append the events to `out`. `EINTR` returns with no events.
    pub fn wait(&mut self, out: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        // SAFETY: `buf` has room for MAX_EVENTS entries and outlives the call.
        let n = unsafe {
            libc::epoll_wait(
                self.epfd.as_raw_fd(),
                self.buf.as_mut_ptr(),
                MAX_EVENTS as libc::c_int,
                timeout_ms(timeout),
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return if err.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(err)
            };
        }
        // One reservation for all (`extend` over a slice knows the count).
        out.extend(self.buf[..n as usize].iter().map(|ev| {
            let flags = ev.events as libc::c_int;
            let readable = flags & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP) != 0;
            // EPOLLOUT (4) and EPOLLERR (8) one bit up are `WRITABLE` and `ERROR`.
            let others = ((flags >> 1) as u8) & (Event::WRITABLE | Event::ERROR);
            Event::from_bits(ev.u64, readable as u8 | others)
        }));
        Ok(())
    }
}
