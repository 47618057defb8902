//! Thin wrappers over the libc calls the load generator needs: non-blocking
//! TCP sockets on loopback, level-triggered epoll, rlimits and /proc readers.

use std::io;
use std::time::{Duration, Instant};

/// Loopback address 127.a.b.c as a host-order u32.
pub fn loopback(last: u32) -> u32 {
    (127 << 24) | last
}

pub const TARGET: u32 = (127 << 24) | 1;

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn sockaddr(addr: u32, port: u16) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = port.to_be();
    sa.sin_addr = libc::in_addr {
        s_addr: addr.to_be(),
    };
    sa
}

fn setsockopt_int(fd: i32, level: i32, name: i32, val: i32) -> Result<(), i32> {
    // SAFETY: passing a pointer to a live c_int with its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &val as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// Starts a non-blocking connect to 127.0.0.1:`port`, optionally from the
/// loopback source address `src` (host order). Returns the fd; completion is
/// signalled by EPOLLOUT and checked with [`take_error`].
pub fn connect_nb(port: u16, src: Option<u32>) -> Result<i32, i32> {
    // SAFETY: plain syscall.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    let res = (|| {
        setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
        if let Some(src) = src {
            // Defer the port choice to connect() so that the 4-tuple, not the
            // local address alone, has to be unique.
            setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1)?;
            let sa = sockaddr(src, 0);
            // SAFETY: sa is a valid sockaddr_in of the given length.
            let rc = unsafe {
                libc::bind(
                    fd,
                    &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if rc < 0 {
                return Err(errno());
            }
        }
        let sa = sockaddr(TARGET, port);
        // SAFETY: as above.
        let rc = unsafe {
            libc::connect(
                fd,
                &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            let e = errno();
            if e != libc::EINPROGRESS {
                return Err(e);
            }
        }
        Ok(())
    })();
    match res {
        Ok(()) => Ok(fd),
        Err(e) => {
            close(fd);
            Err(e)
        }
    }
}

/// SO_ERROR of a socket (0 when the connect succeeded).
pub fn take_error(fd: i32) -> i32 {
    let mut val: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: val/len point to live locals of the right size.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            &mut val as *mut i32 as *mut libc::c_void,
            &mut len,
        )
    };
    if rc < 0 {
        errno()
    } else {
        val
    }
}

/// read(2): Ok(0) is EOF, Err(EAGAIN) means nothing available.
pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize, i32> {
    loop {
        // SAFETY: buf is a valid writable region of buf.len() bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = errno();
        if e != libc::EINTR {
            return Err(e);
        }
    }
}

/// write(2) with MSG_NOSIGNAL semantics (send), retrying EINTR.
pub fn write(fd: i32, buf: &[u8]) -> Result<usize, i32> {
    loop {
        // SAFETY: buf is a valid readable region of buf.len() bytes.
        let n = unsafe {
            libc::send(
                fd,
                buf.as_ptr() as *const libc::c_void,
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = errno();
        if e != libc::EINTR {
            return Err(e);
        }
    }
}

pub fn close(fd: i32) {
    // SAFETY: closing an fd we own.
    unsafe {
        libc::close(fd);
    }
}

pub fn strerror(e: i32) -> String {
    io::Error::from_raw_os_error(e).to_string()
}

pub struct Epoll {
    fd: i32,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    pub fn new(cap: usize) -> Epoll {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            panic!("epoll_create1: {}", io::Error::last_os_error());
        }
        Epoll {
            fd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; cap.max(16)],
        }
    }

    fn ctl(&self, op: i32, fd: i32, token: u64, events: u32) -> Result<(), i32> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: ev is a valid epoll_event.
        let rc = unsafe { libc::epoll_ctl(self.fd, op, fd, &mut ev) };
        if rc < 0 {
            Err(errno())
        } else {
            Ok(())
        }
    }

    pub fn add(&self, fd: i32, token: u64, events: u32) -> Result<(), i32> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, events)
    }

    pub fn modify(&self, fd: i32, token: u64, events: u32) -> Result<(), i32> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, events)
    }

    /// Waits at most until `deadline` (and at most `cap` ms); returns the
    /// ready (token, events) pairs.
    pub fn wait(&mut self, deadline: Instant, cap_ms: u64) -> Vec<(u64, u32)> {
        let now = Instant::now();
        let left = deadline.saturating_duration_since(now);
        let ms = left
            .min(Duration::from_millis(cap_ms))
            .as_micros()
            .div_ceil(1000) as i32;
        // SAFETY: events buffer has events.len() entries.
        let n = unsafe {
            libc::epoll_wait(
                self.fd,
                self.events.as_mut_ptr(),
                self.events.len() as i32,
                ms,
            )
        };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                return Vec::new();
            }
            panic!("epoll_wait: {}", strerror(e));
        }
        self.events[..n as usize]
            .iter()
            .map(|e| (e.u64, e.events))
            .collect()
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        close(self.fd);
    }
}

/// Raises RLIMIT_NOFILE's soft limit to at least `want` (capped by the hard
/// limit, which is also raised when the process is allowed to). Returns the
/// resulting soft limit.
pub fn raise_nofile(want: u64) -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: rl is a valid rlimit.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    if rl.rlim_cur >= want {
        return rl.rlim_cur;
    }
    if rl.rlim_max < want {
        let try_rl = libc::rlimit {
            rlim_cur: want,
            rlim_max: want,
        };
        // SAFETY: valid rlimit; fails harmlessly without CAP_SYS_RESOURCE.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &try_rl) } == 0 {
            return want;
        }
    }
    let new = libc::rlimit {
        rlim_cur: want.min(rl.rlim_max),
        rlim_max: rl.rlim_max,
    };
    // SAFETY: valid rlimit.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) };
    // SAFETY: as above.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    rl.rlim_cur
}

pub fn clk_tck() -> f64 {
    // SAFETY: plain libc call.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// (utime, stime) of a process in clock ticks, from /proc/PID/stat.
pub fn proc_cpu(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    Some((f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?))
}

/// VmRSS of a process in KiB, from /proc/PID/status.
pub fn proc_rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
