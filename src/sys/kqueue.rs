//! kqueue backend (macOS, iOS, FreeBSD, OpenBSD, NetBSD, DragonFly).
//!
//! Written against `libc`'s definitions for those targets; it cannot be compiled on
//! the Linux CI machines, so it is kept small. Read and write are separate kernel
//! filters, so each registration change is one `kevent` call with up to two changes.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::{cvt, Event, Interest};

/// How many kernel events one `wait` can return. Skynet uses 64; with a thousand busy
/// connections a larger batch means fewer wait calls and fewer entries into Lua per
/// message. Delivery stays bounded by the batch's byte budget.
const MAX_EVENTS: usize = 512;

pub struct Poller {
    kq: OwnedFd,
    buf: Vec<libc::kevent>,
    /// Interest currently registered per fd, to know which filters to add or delete.
    current: std::collections::HashMap<RawFd, Interest>,
}

fn change(fd: RawFd, filter: i16, flags: u16, token: u64) -> libc::kevent {
    // SAFETY: kevent is plain old data; zero is valid for every field.
    let mut ev: libc::kevent = unsafe { std::mem::zeroed() };
    ev.ident = fd as _;
    ev.filter = filter as _;
    ev.flags = flags as _;
    ev.udata = token as _;
    ev
}

impl Poller {
    pub const NAME: &'static str = "kqueue";

    pub fn new() -> io::Result<Poller> {
        // SAFETY: no pointers; the new fd is ours alone.
        let fd = cvt(unsafe { libc::kqueue() })?;
        // SAFETY: fresh descriptor.
        let kq = unsafe { OwnedFd::from_raw_fd(fd) };
        super::net::set_nonblocking_cloexec(kq.as_raw_fd())?;
        Ok(Poller {
            kq,
            // SAFETY: zeroed kevents are valid placeholders for the kernel to fill.
            buf: vec![unsafe { std::mem::zeroed() }; MAX_EVENTS],
            current: std::collections::HashMap::new(),
        })
    }

    fn apply(&mut self, fd: RawFd, token: u64, old: Interest, new: Interest) -> io::Result<()> {
        let mut changes = Vec::with_capacity(2);
        for (was, is, filter) in [
            (old.read, new.read, libc::EVFILT_READ),
            (old.write, new.write, libc::EVFILT_WRITE),
        ] {
            if is {
                // EV_ADD on an existing filter updates its udata: always (re)add.
                changes.push(change(
                    fd,
                    filter as i16,
                    (libc::EV_ADD | libc::EV_ENABLE) as u16,
                    token,
                ));
            } else if was {
                changes.push(change(fd, filter as i16, libc::EV_DELETE as u16, token));
            }
        }
        if changes.is_empty() {
            return Ok(());
        }
        // SAFETY: `changes` holds `changes.len()` valid kevents; no event list is read.
        cvt(unsafe {
            libc::kevent(
                self.kq.as_raw_fd(),
                changes.as_ptr(),
                changes.len() as _,
                std::ptr::null_mut(),
                0,
                std::ptr::null(),
            )
        })?;
        Ok(())
    }

    pub fn add(&mut self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        self.apply(fd, token, Interest::NONE, interest)?;
        self.current.insert(fd, interest);
        Ok(())
    }

    pub fn modify(&mut self, fd: RawFd, token: u64, interest: Interest) -> io::Result<()> {
        let old = self.current.get(&fd).copied().unwrap_or(Interest::NONE);
        self.apply(fd, token, old, interest)?;
        self.current.insert(fd, interest);
        Ok(())
    }

    pub fn delete(&mut self, fd: RawFd) -> io::Result<()> {
        let old = self.current.remove(&fd).unwrap_or(Interest::NONE);
        self.apply(fd, 0, old, Interest::NONE)
    }

    pub fn wait(&mut self, out: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<()> {
        let ts = timeout.map(|d| libc::timespec {
            tv_sec: d.as_secs().min(i32::MAX as u64) as _,
            tv_nsec: d.subsec_nanos() as _,
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `buf` has room for MAX_EVENTS events; `ts_ptr` is null or points to a
        // live timespec.
        let n = unsafe {
            libc::kevent(
                self.kq.as_raw_fd(),
                std::ptr::null(),
                0,
                self.buf.as_mut_ptr(),
                MAX_EVENTS as _,
                ts_ptr,
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
        for ev in &self.buf[..n as usize] {
            let filter = ev.filter as i16;
            out.push(Event::new(
                ev.udata as u64,
                filter == libc::EVFILT_READ as i16,
                filter == libc::EVFILT_WRITE as i16,
                (ev.flags as u16 & libc::EV_ERROR as u16) != 0,
            ));
        }
        Ok(())
    }
}
