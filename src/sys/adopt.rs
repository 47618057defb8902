//! Descriptors the engine did not create (Skynet's `bind`: stdin, a pipe, a terminal,
//! a socket made elsewhere). The engine works on a duplicate, so closing its socket
//! never closes the caller's descriptor, and writes with `writev`, which works on
//! any descriptor but, unlike `sendmsg` with `MSG_NOSIGNAL`, raises SIGPIPE when a
//! pipe's reader is gone: that signal is held back here so it can never kill the host.

use std::io;
use std::mem::zeroed;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use super::{cvt, retry_eintr};

/// A non-blocking, close-on-exec duplicate of `fd` for the engine to own. Refuses
/// what cannot be polled: regular files and directories (epoll rejects them, kqueue
/// and poll report them always ready) and whatever this build's poller rejects. O_NONBLOCK belongs to the open file, so `fd`
/// becomes non-blocking too (as in Skynet).
pub fn adopt(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: `st` is plain old data that fstat fills; `fd` is only read.
    let mut st: libc::stat = unsafe { zeroed() };
    // SAFETY: `st` is a valid, writable stat buffer.
    cvt(unsafe { libc::fstat(fd, &mut st) })?;
    let kind = st.st_mode & libc::S_IFMT;
    if kind == libc::S_IFREG || kind == libc::S_IFDIR {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a regular file or directory cannot be polled",
        ));
    }
    // SAFETY: F_DUPFD_CLOEXEC takes an integer argument and returns a new descriptor.
    let dup = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: `dup` was just returned by fcntl and is owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(dup) };
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own; integer arguments only.
    unsafe {
        let fl = cvt(libc::fcntl(dup, libc::F_GETFL))?;
        cvt(libc::fcntl(dup, libc::F_SETFL, fl | libc::O_NONBLOCK))?;
    }
    // What the poller refuses (epoll: /dev/null and other devices without poll
    // support) is refused now, with a clear reason, rather than failing later.
    let mut probe = super::Poller::new()?;
    probe
        .add(
            dup,
            0,
            super::Interest {
                read: true,
                write: false,
            },
        )
        .map_err(|e| io::Error::new(e.kind(), format!("this descriptor cannot be polled ({e})")))?;
    drop(probe);
    #[cfg(target_vendor = "apple")]
    // SAFETY: integer arguments only; on failure SIGPIPE stays possible, and `write`
    // below still holds it back.
    unsafe {
        libc::fcntl(dup, libc::F_SETNOSIGPIPE, 1);
    }
    Ok(owned)
}

/// `writev` on an adopted descriptor (at most 64 buffers), `EINTR` retried. SIGPIPE
/// is blocked in this thread for the call; one the call raised is taken off the
/// pending set before the mask is restored, so a gone reader yields `EPIPE` only.
pub fn write(fd: RawFd, bufs: &[&[u8]]) -> io::Result<usize> {
    let (iov, n) = super::net::iovecs(bufs);
    let guard = SigpipeGuard::new();
    let r = retry_eintr(|| {
        // SAFETY: `iov` holds `n` iovecs pointing at live buffers of `bufs`.
        let r = unsafe { libc::writev(fd, iov.as_ptr(), n as libc::c_int) };
        cvt(r).map(|r| r as usize)
    });
    guard.finish(matches!(&r, Err(e) if e.raw_os_error() == Some(libc::EPIPE)));
    r
}

/// SIGPIPE blocked in this thread while alive.
struct SigpipeGuard {
    old: libc::sigset_t,
    /// A SIGPIPE was already pending before: it is not ours to consume.
    was_pending: bool,
}

impl SigpipeGuard {
    fn new() -> SigpipeGuard {
        // SAFETY: sigset_t is plain old data; the calls only fill the given sets.
        unsafe {
            let mut set: libc::sigset_t = zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGPIPE);
            let mut old: libc::sigset_t = zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            let mut pending: libc::sigset_t = zeroed();
            libc::sigpending(&mut pending);
            SigpipeGuard {
                old,
                was_pending: libc::sigismember(&pending, libc::SIGPIPE) == 1,
            }
        }
    }

    /// Consume the SIGPIPE the write raised (`raised`), then restore the mask.
    fn finish(self, raised: bool) {
        // SAFETY: as in `new`; `self.old` is the mask saved there.
        unsafe {
            if raised && !self.was_pending {
                let mut set: libc::sigset_t = zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGPIPE);
                consume(&set);
            }
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}

/// Take a pending, blocked signal of `set` off this thread without waiting.
///
/// # Safety
/// `set` must be an initialised signal set whose signals are blocked.
#[cfg(not(target_vendor = "apple"))]
unsafe fn consume(set: &libc::sigset_t) {
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: the caller's set is valid; a zero timeout never blocks.
    unsafe {
        libc::sigtimedwait(set, std::ptr::null_mut(), &zero);
    }
}

/// macOS has no `sigtimedwait`; the descriptor has F_SETNOSIGPIPE (see `adopt`), and a
/// SIGPIPE raised anyway is taken with `sigwait`, which returns at once for a pending one.
///
/// # Safety
/// As above; the signal must be pending (it is: the write raised it).
#[cfg(target_vendor = "apple")]
unsafe fn consume(set: &libc::sigset_t) {
    let mut sig = 0;
    // SAFETY: valid sets; sigwait only runs when SIGPIPE is pending, so it cannot block.
    unsafe {
        let mut pending: libc::sigset_t = zeroed();
        libc::sigpending(&mut pending);
        if libc::sigismember(&pending, libc::SIGPIPE) == 1 {
            libc::sigwait(set, &mut sig);
        }
    }
}
