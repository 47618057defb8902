//! Operating-system layer: the readiness pollers and thin socket syscall wrappers.
//!
//! Everything `unsafe` that the engine needs lives below this module. Each wrapper
//! converts the C convention (`-1` + `errno`) into `io::Result` and retries `EINTR`
//! where retrying is the only sensible answer. Platform lists are cfg aliases set by
//! `build.rs`: `epoll_os`, `kqueue_os`, `sock_flags_os`.

pub mod adopt;
pub mod dl;
pub mod net;
pub mod process;
pub mod random;
mod waker;

#[cfg(all(epoll_os, not(feature = "poll-backend")))]
mod epoll;
#[cfg(all(epoll_os, not(feature = "poll-backend")))]
pub use epoll::Poller;

#[cfg(all(kqueue_os, not(feature = "poll-backend")))]
mod kqueue;
#[cfg(all(kqueue_os, not(feature = "poll-backend")))]
pub use kqueue::Poller;

// The portable fallback: always compiled (so it is type-checked everywhere), used when
// the platform has no better poller or when the `poll-backend` feature asks for it.
mod poll;
#[cfg(any(feature = "poll-backend", not(any(epoll_os, kqueue_os))))]
pub use poll::Poller;

pub use waker::Waker;

/// Which readiness a registration asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Interest {
    pub read: bool,
    pub write: bool,
}

impl Interest {
    pub const NONE: Interest = Interest {
        read: false,
        write: false,
    };

    pub fn is_none(self) -> bool {
        !self.read && !self.write
    }
}

/// One readiness report. `token` is whatever was registered with the fd. The three
/// conditions are bits of one byte, so the poll loop tests its common case ("only
/// readable") at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub token: u64,
    bits: u8,
}

impl Event {
    const READABLE: u8 = 1;
    const WRITABLE: u8 = 2;
    const ERROR: u8 = 4;

    #[inline]
    pub fn new(token: u64, readable: bool, writable: bool, error: bool) -> Event {
        Event::from_bits(
            token,
            readable as u8 | (writable as u8) << 1 | (error as u8) << 2,
        )
    }

    /// `bits`: `READABLE`, `WRITABLE`, `ERROR` or'ed (what a backend computes at once).
    #[inline(always)]
    fn from_bits(token: u64, bits: u8) -> Event {
        Event { token, bits }
    }

    #[inline]
    pub fn readable(&self) -> bool {
        self.bits & Event::READABLE != 0
    }

    #[inline]
    pub fn writable(&self) -> bool {
        self.bits & Event::WRITABLE != 0
    }

    /// The fd reported an error or hang-up condition; reading or writing will tell which.
    #[inline]
    pub fn error(&self) -> bool {
        self.bits & Event::ERROR != 0
    }

    /// Readable, and neither writable nor in error.
    #[inline]
    pub fn only_readable(&self) -> bool {
        self.bits == Event::READABLE
    }
}

/// Name of the compiled-in poller backend, for diagnostics and `info`.
pub fn backend_name() -> &'static str {
    Poller::NAME
}

/// Retry a syscall wrapper while it fails with `EINTR`.
#[inline(always)]
pub(crate) fn retry_eintr<T>(mut f: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Turn a C return value into `io::Result`, reading `errno` on `-1`.
#[inline(always)]
pub(crate) fn cvt<T: PartialEq + From<i8>>(ret: T) -> std::io::Result<T> {
    if ret == T::from(-1) {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Milliseconds for a poll timeout: `None` waits forever; sub-millisecond waits round up
/// so a timer that is due in 0.4 ms does not turn into a busy loop.
pub(crate) fn timeout_ms(timeout: Option<std::time::Duration>) -> libc::c_int {
    match timeout {
        None => -1,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            ms.min(libc::c_int::MAX as u128) as libc::c_int
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Event;

    #[test]
    fn event_conditions_round_trip() {
        for bits in 0..8u8 {
            let (r, w, e) = (bits & 1 != 0, bits & 2 != 0, bits & 4 != 0);
            let ev = Event::new(42, r, w, e);
            assert_eq!(ev.token, 42);
            assert_eq!((ev.readable(), ev.writable(), ev.error()), (r, w, e));
            assert_eq!(ev.only_readable(), r && !w && !e);
        }
    }

    #[cfg(all(epoll_os, not(feature = "poll-backend")))]
    #[test]
    fn epoll_flags_map_to_the_conditions() {
        // The shift in epoll.rs relies on these values.
        assert_eq!(libc::EPOLLOUT >> 1, Event::WRITABLE as libc::c_int);
        assert_eq!(libc::EPOLLERR >> 1, Event::ERROR as libc::c_int);
    }
}
