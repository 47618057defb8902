//! Wakes a poller blocked in `wait` from another thread: an eventfd on Linux, a
//! non-blocking pipe elsewhere.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::cvt;

pub struct Waker {
    read: OwnedFd,
    /// The write end (the same fd as `read` for an eventfd).
    #[cfg(not(target_os = "linux"))]
    write: OwnedFd,
}

impl Waker {
    #[cfg(target_os = "linux")]
    pub fn new() -> io::Result<Waker> {
        // SAFETY: no pointers; the new fd is ours alone.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        // SAFETY: fresh descriptor, owned from here on.
        let read = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Waker { read })
    }

    #[cfg(not(target_os = "linux"))]
    pub fn new() -> io::Result<Waker> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors pipe() writes.
        cvt(unsafe { libc::pipe(fds.as_mut_ptr()) })?;
        // SAFETY: both are fresh descriptors, owned from here on.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        for fd in [&read, &write] {
            super::net::set_nonblocking_cloexec(fd.as_raw_fd())?;
        }
        Ok(Waker { read, write })
    }

    /// The fd to register for read readiness.
    pub fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    fn write_fd(&self) -> RawFd {
        #[cfg(target_os = "linux")]
        {
            self.read.as_raw_fd()
        }
        #[cfg(not(target_os = "linux"))]
        {
            self.write.as_raw_fd()
        }
    }

    /// Make the read end readable. A full pipe or saturated counter already is.
    pub fn wake(&self) {
        let one: u64 = 1;
        loop {
            // SAFETY: writes 8 bytes from a live local.
            let n = unsafe { libc::write(self.write_fd(), (&one as *const u64).cast(), 8) };
            if n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return;
            }
        }
    }

    /// Consume pending wake-ups so a level-triggered poller stops reporting them.
    pub fn drain(&self) {
        let mut buf = [0u8; 64];
        loop {
            // SAFETY: reads into a live local buffer of the given length.
            let n =
                unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 && cfg!(not(target_os = "linux")) {
                continue; // a pipe may hold more than one buffer's worth
            }
            if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
    }
}
