//! Thin socket syscall wrappers. Every descriptor is created non-blocking and
//! close-on-exec and handed out as an `OwnedFd`, so dropping it always closes it.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use super::{cvt, retry_eintr};

/// A socket address of any family the engine speaks.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Addr {
    Inet(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addr::Inet(a) => write!(f, "{a}"),
            Addr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Raw storage for a C socket address plus its length.
struct RawAddr {
    storage: libc::sockaddr_storage,
    len: libc::socklen_t,
}

impl RawAddr {
    fn empty() -> RawAddr {
        RawAddr {
            // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
            storage: unsafe { zeroed() },
            len: size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        }
    }

    fn ptr(&self) -> *const libc::sockaddr {
        (&self.storage as *const libc::sockaddr_storage).cast()
    }

    fn mut_ptr(&mut self) -> *mut libc::sockaddr {
        (&mut self.storage as *mut libc::sockaddr_storage).cast()
    }

    fn from_addr(addr: &Addr) -> io::Result<RawAddr> {
        let mut raw = RawAddr::empty();
        match addr {
            Addr::Inet(SocketAddr::V4(a)) => {
                // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
                let sin = unsafe { &mut *(raw.mut_ptr() as *mut libc::sockaddr_in) };
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = a.port().to_be();
                sin.sin_addr = libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                };
                raw.len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            }
            Addr::Inet(SocketAddr::V6(a)) => {
                // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
                let sin6 = unsafe { &mut *(raw.mut_ptr() as *mut libc::sockaddr_in6) };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = a.port().to_be();
                sin6.sin6_flowinfo = a.flowinfo();
                sin6.sin6_addr = libc::in6_addr {
                    s6_addr: a.ip().octets(),
                };
                sin6.sin6_scope_id = a.scope_id();
                raw.len = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            }
            Addr::Unix(path) => {
                use std::os::unix::ffi::OsStrExt;
                let bytes = path.as_os_str().as_bytes();
                // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_un.
                let sun = unsafe { &mut *(raw.mut_ptr() as *mut libc::sockaddr_un) };
                if bytes.is_empty() || bytes.len() >= sun.sun_path.len() || bytes.contains(&0) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "unix socket path must be 1..{} bytes without NUL",
                            sun.sun_path.len() - 1
                        ),
                    ));
                }
                sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
                for (dst, &src) in sun.sun_path.iter_mut().zip(bytes) {
                    *dst = src as libc::c_char;
                }
                let base = size_of::<libc::sa_family_t>();
                raw.len = (base + bytes.len() + 1) as libc::socklen_t;
            }
        }
        Ok(raw)
    }

    fn to_addr(&self) -> Option<Addr> {
        match self.storage.ss_family as libc::c_int {
            libc::AF_INET => {
                // SAFETY: the family says the storage holds a sockaddr_in.
                let sin = unsafe { &*(self.ptr() as *const libc::sockaddr_in) };
                let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
                Some(Addr::Inet(SocketAddr::V4(SocketAddrV4::new(
                    ip,
                    u16::from_be(sin.sin_port),
                ))))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says the storage holds a sockaddr_in6.
                let sin6 = unsafe { &*(self.ptr() as *const libc::sockaddr_in6) };
                Some(Addr::Inet(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                ))))
            }
            libc::AF_UNIX => {
                use std::os::unix::ffi::OsStrExt;
                // SAFETY: the family says the storage holds a sockaddr_un.
                let sun = unsafe { &*(self.ptr() as *const libc::sockaddr_un) };
                let base = size_of::<libc::sa_family_t>();
                let max = (self.len as usize)
                    .saturating_sub(base)
                    .min(sun.sun_path.len());
                let bytes: Vec<u8> = sun.sun_path[..max]
                    .iter()
                    .take_while(|&&c| c != 0)
                    .map(|&c| c as u8)
                    .collect();
                Some(Addr::Unix(PathBuf::from(std::ffi::OsStr::from_bytes(
                    &bytes,
                ))))
            }
            _ => None,
        }
    }
}

fn family(addr: &Addr) -> libc::c_int {
    match addr {
        Addr::Inet(SocketAddr::V4(_)) => libc::AF_INET,
        Addr::Inet(SocketAddr::V6(_)) => libc::AF_INET6,
        Addr::Unix(_) => libc::AF_UNIX,
    }
}

/// Set O_NONBLOCK and FD_CLOEXEC (for platforms without SOCK_NONBLOCK).
pub fn set_nonblocking_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; no pointers.
    unsafe {
        let fl = cvt(libc::fcntl(fd, libc::F_GETFL))?;
        cvt(libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK))?;
        let fd_fl = cvt(libc::fcntl(fd, libc::F_GETFD))?;
        cvt(libc::fcntl(fd, libc::F_SETFD, fd_fl | libc::FD_CLOEXEC))?;
    }
    Ok(())
}

/// Platform socket flags, decided once: where socket(2)/accept4(2) take
/// SOCK_NONBLOCK|SOCK_CLOEXEC and send(2) takes MSG_NOSIGNAL, and where they do not
/// (then fcntl and SO_NOSIGPIPE do the same job).
#[cfg(sock_flags_os)]
mod flags {
    pub const SOCK: libc::c_int = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    pub const SEND: libc::c_int = libc::MSG_NOSIGNAL;

    /// # Safety
    /// `addr`/`len` must describe writable storage for a socket address.
    pub unsafe fn accept(
        fd: libc::c_int,
        addr: *mut libc::sockaddr,
        len: *mut libc::socklen_t,
    ) -> libc::c_int {
        // SAFETY: forwarded from the caller's contract.
        unsafe { libc::accept4(fd, addr, len, SOCK) }
    }
}

#[cfg(not(sock_flags_os))]
mod flags {
    pub const SOCK: libc::c_int = 0;
    pub const SEND: libc::c_int = 0;

    /// # Safety
    /// `addr`/`len` must describe writable storage for a socket address.
    pub unsafe fn accept(
        fd: libc::c_int,
        addr: *mut libc::sockaddr,
        len: *mut libc::socklen_t,
    ) -> libc::c_int {
        // SAFETY: forwarded from the caller's contract.
        unsafe { libc::accept(fd, addr, len) }
    }
}

fn new_socket(domain: libc::c_int, ty: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: no pointers; the new fd is ours alone.
    let fd = cvt(unsafe { libc::socket(domain, ty | flags::SOCK, 0) })?;
    // SAFETY: fresh descriptor.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    if flags::SOCK == 0 {
        set_nonblocking_cloexec(fd)?;
    }
    #[cfg(any(target_os = "macos", target_os = "ios"))]
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_NOSIGPIPE, 1)?;
    Ok(owned)
}

fn set_int_opt(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its exact size.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

fn get_int_opt(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live locals of the sizes the kernel expects.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(value)
}

fn bind(fd: RawFd, addr: &Addr) -> io::Result<()> {
    let raw = RawAddr::from_addr(addr)?;
    // SAFETY: `raw` holds a valid sockaddr of length `raw.len`.
    cvt(unsafe { libc::bind(fd, raw.ptr(), raw.len) })?;
    Ok(())
}

/// Options applied to a listening socket.
#[derive(Clone, Copy, Debug)]
pub struct ListenOptions {
    pub backlog: i32,
    pub reuseport: bool,
}

/// Create, bind and listen. `SO_REUSEADDR` is always set on TCP (it only allows binding
/// over TIME_WAIT leftovers); `SO_REUSEPORT` only when asked.
pub fn listen(addr: &Addr, opts: ListenOptions) -> io::Result<OwnedFd> {
    let fd = new_socket(family(addr), libc::SOCK_STREAM)?;
    let raw = fd.as_raw_fd();
    if let Addr::Inet(a) = addr {
        set_int_opt(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
        if opts.reuseport {
            set_int_opt(raw, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
        }
        if a.is_ipv6() {
            // An IPv6 listener serves IPv6 only; listen on 0.0.0.0 as well for both.
            set_int_opt(raw, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
        }
    }
    bind(raw, addr)?;
    // SAFETY: no pointers.
    cvt(unsafe { libc::listen(raw, opts.backlog) })?;
    Ok(fd)
}

/// Start a non-blocking connect. Returns the socket and whether it connected at once.
pub fn connect(addr: &Addr) -> io::Result<(OwnedFd, bool)> {
    let fd = new_socket(family(addr), libc::SOCK_STREAM)?;
    let raw = RawAddr::from_addr(addr)?;
    // SAFETY: `raw` holds a valid sockaddr of length `raw.len`.
    let ret = unsafe { libc::connect(fd.as_raw_fd(), raw.ptr(), raw.len) };
    if ret == 0 {
        return Ok((fd, true));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // EINTR: the connect goes on asynchronously, exactly like EINPROGRESS.
        Some(libc::EINPROGRESS) | Some(libc::EINTR) => Ok((fd, false)),
        // Unix sockets say EAGAIN when the listener's backlog is full.
        Some(libc::EAGAIN) if matches!(addr, Addr::Unix(_)) => Ok((fd, false)),
        _ => Err(err),
    }
}

/// Accept one pending connection (non-blocking, close-on-exec).
pub fn accept(listener: RawFd) -> io::Result<(OwnedFd, Option<Addr>)> {
    let mut raw = RawAddr::empty();
    let fd = retry_eintr(|| {
        raw.len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: `raw` provides storage and length for the peer address.
        cvt(unsafe { flags::accept(listener, raw.mut_ptr(), &mut raw.len) })
    })?;
    // SAFETY: accept returned a fresh descriptor.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    if flags::SOCK == 0 {
        set_nonblocking_cloexec(fd)?;
    }
    Ok((owned, raw.to_addr()))
}

/// The pending error of a socket (`SO_ERROR`), used to finish a non-blocking connect.
pub fn take_error(fd: RawFd) -> io::Result<Option<io::Error>> {
    let e = get_int_opt(fd, libc::SOL_SOCKET, libc::SO_ERROR)?;
    Ok((e != 0).then(|| io::Error::from_raw_os_error(e)))
}

/// `read(2)` with `EINTR` retried.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    retry_eintr(|| {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        cvt(n).map(|n| n as usize)
    })
}

/// Send on a stream socket with `EINTR` retried; never raises SIGPIPE.
#[inline(always)]
pub fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
        let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), flags::SEND) };
        if n >= 0 {
            return Ok(n as usize);
        }
        // (`retry_eintr` spelled out, as in `read_append`.)
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Most buffers one gathering write takes.
const IOV_BATCH: usize = 64;

/// The iovecs of the first `IOV_BATCH` buffers of `bufs`, and how many there are.
/// They point into `bufs`, which must outlive every use of them.
pub(super) fn iovecs(bufs: &[&[u8]]) -> ([libc::iovec; IOV_BATCH], usize) {
    let mut iov: [libc::iovec; IOV_BATCH] = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; IOV_BATCH];
    let n = bufs.len().min(IOV_BATCH);
    for (v, b) in iov.iter_mut().zip(bufs) {
        v.iov_base = b.as_ptr() as *mut libc::c_void;
        v.iov_len = b.len();
    }
    (iov, n)
}

/// Gathering send of several buffers in one syscall (at most `IOV_BATCH` of them).
pub fn write_vectored(fd: RawFd, bufs: &[&[u8]]) -> io::Result<usize> {
    let (mut iov, n) = iovecs(bufs);
    retry_eintr(|| {
        // SAFETY: a zeroed msghdr is valid; it points at `n` live iovecs whose buffers
        // outlive the call.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = n as _;
        // SAFETY: `msg` describes valid buffers as above.
        let r = unsafe { libc::sendmsg(fd, &msg, flags::SEND) };
        cvt(r).map(|r| r as usize)
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    Read,
    Write,
    Both,
}

pub fn shutdown(fd: RawFd, how: Shutdown) -> io::Result<()> {
    let how = match how {
        Shutdown::Read => libc::SHUT_RD,
        Shutdown::Write => libc::SHUT_WR,
        Shutdown::Both => libc::SHUT_RDWR,
    };
    // SAFETY: no pointers.
    cvt(unsafe { libc::shutdown(fd, how) })?;
    Ok(())
}

pub fn local_addr(fd: RawFd) -> io::Result<Option<Addr>> {
    let mut raw = RawAddr::empty();
    // SAFETY: `raw` provides storage and length for the address.
    cvt(unsafe { libc::getsockname(fd, raw.mut_ptr(), &mut raw.len) })?;
    Ok(raw.to_addr())
}

pub fn peer_addr(fd: RawFd) -> io::Result<Option<Addr>> {
    let mut raw = RawAddr::empty();
    // SAFETY: `raw` provides storage and length for the address.
    cvt(unsafe { libc::getpeername(fd, raw.mut_ptr(), &mut raw.len) })?;
    Ok(raw.to_addr())
}

/// Whether TCP_NODELAY is set.
pub fn nodelay(fd: RawFd) -> io::Result<bool> {
    Ok(get_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY)? != 0)
}

pub fn set_nodelay(fd: RawFd, on: bool) -> io::Result<()> {
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, on as libc::c_int)
}

pub fn set_keepalive(fd: RawFd, on: bool) -> io::Result<()> {
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, on as libc::c_int)
}

/// Whether the socket is a stream socket of family AF_UNIX (TCP options do not apply).
pub fn is_unix(fd: RawFd) -> bool {
    matches!(local_addr(fd), Ok(Some(Addr::Unix(_))))
}

// ---- UDP ----

/// A UDP socket. `bind_to` binds it; an unbound socket is created for `family_of`'s
/// family and may send to that family.
pub fn udp_socket(v6: bool) -> io::Result<OwnedFd> {
    let fd = new_socket(
        if v6 { libc::AF_INET6 } else { libc::AF_INET },
        libc::SOCK_DGRAM,
    )?;
    if v6 {
        // Dual-stack: an unbound IPv6 socket can then also reach IPv4 peers
        // through v4-mapped addresses.
        set_int_opt(fd.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0)?;
    }
    Ok(fd)
}

/// Bind a UDP socket. No `SO_REUSEADDR` here (unlike TCP, as in Skynet): for UDP it
/// lets several sockets bind the very same address and port, and Linux then even hands
/// the same ephemeral port to two sockets bound to port 0, so one would silently
/// receive the other's datagrams.
pub fn udp_bind(fd: RawFd, addr: &Addr) -> io::Result<()> {
    bind(fd, addr)
}

pub fn udp_connect(fd: RawFd, addr: &Addr) -> io::Result<()> {
    let raw = RawAddr::from_addr(addr)?;
    // SAFETY: `raw` holds a valid sockaddr of length `raw.len`.
    retry_eintr(|| cvt(unsafe { libc::connect(fd, raw.ptr(), raw.len) }))?;
    Ok(())
}

pub fn sendto(fd: RawFd, buf: &[u8], addr: Option<&Addr>) -> io::Result<usize> {
    let raw = addr.map(RawAddr::from_addr).transpose()?;
    let (ptr, len) = match &raw {
        Some(r) => (r.ptr(), r.len),
        None => (std::ptr::null(), 0),
    };
    retry_eintr(|| {
        // SAFETY: `buf` is readable for its length; `ptr`/`len` is a valid address or null.
        let n = unsafe { libc::sendto(fd, buf.as_ptr().cast(), buf.len(), 0, ptr, len) };
        cvt(n).map(|n| n as usize)
    })
}

pub fn recvfrom(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<Addr>)> {
    let mut raw = RawAddr::empty();
    retry_eintr(|| {
        raw.len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: `buf` is writable for its length; `raw` provides address storage.
        let n = unsafe {
            libc::recvfrom(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                raw.mut_ptr(),
                &mut raw.len,
            )
        };
        cvt(n).map(|n| n as usize)
    })
    .map(|n| (n, raw.to_addr()))
}

// ---- Unix domain ----

/// Listen on a filesystem path. A stale socket file (one nobody listens on any more) is
/// removed and the bind retried; a live one gives `EADDRINUSE`; a non-socket file is
/// never removed.
pub fn unix_listen(path: &Path, backlog: i32) -> io::Result<OwnedFd> {
    let addr = Addr::Unix(path.to_path_buf());
    let fd = new_socket(libc::AF_UNIX, libc::SOCK_STREAM)?;
    match bind(fd.as_raw_fd(), &addr) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) && is_stale_unix_socket(path) => {
            std::fs::remove_file(path)?;
            bind(fd.as_raw_fd(), &addr)?;
        }
        Err(e) => return Err(e),
    }
    // SAFETY: no pointers.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(fd)
}

fn is_stale_unix_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let is_socket = std::fs::symlink_metadata(path)
        .map(|m| m.file_type().is_socket())
        .unwrap_or(false);
    if !is_socket {
        return false;
    }
    // Probe with a blocking connect: refused means nobody listens.
    let Ok(probe) = new_socket(libc::AF_UNIX, libc::SOCK_STREAM) else {
        return false;
    };
    let Ok(raw) = RawAddr::from_addr(&Addr::Unix(path.to_path_buf())) else {
        return false;
    };
    // SAFETY: `raw` holds a valid sockaddr_un of length `raw.len`.
    let ret = unsafe { libc::connect(probe.as_raw_fd(), raw.ptr(), raw.len) };
    ret != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ECONNREFUSED)
}

/// A spare descriptor held open so an `EMFILE` accept can still take the pending
/// connection off the queue (and close it) instead of spinning on it.
pub fn reserve_fd() -> io::Result<OwnedFd> {
    // SAFETY: a static NUL-terminated path; the new fd is ours alone.
    let fd = cvt(unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Set `SO_LINGER {on, 0}` so closing sends RST instead of FIN (used by tests and
/// for aborting connections).
pub fn set_linger_zero(fd: RawFd) -> io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: passes a live linger struct of the exact size.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Read at most `max` bytes into the spare capacity of `buf`, appending them.
/// Returns the number of bytes read (0 at end of stream). `EINTR` is retried.
#[inline(always)]
pub fn read_append(fd: RawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    buf.reserve(max);
    let spare = buf.spare_capacity_mut();
    let (ptr, want) = (spare.as_mut_ptr(), max.min(spare.len()));
    loop {
        // SAFETY: `ptr` is the spare capacity, valid for writes of `want` bytes (nothing
        // touches `buf` until the read is done); the kernel initialises the first `n`.
        let n = unsafe { libc::read(fd, ptr.cast(), want) };
        if n >= 0 {
            // SAFETY: `read` initialised exactly `n <= want` bytes past the old length.
            unsafe { buf.set_len(buf.len() + n as usize) };
            return Ok(n as usize);
        }
        // (`retry_eintr` spelled out: its closure was not inlined on this hot path.)
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `recvfrom` appending the datagram to `buf` (at most `max` bytes).
pub fn recvfrom_append(
    fd: RawFd,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<(usize, Option<Addr>)> {
    buf.reserve(max);
    let spare = buf.spare_capacity_mut();
    let want = max.min(spare.len());
    let mut raw = RawAddr::empty();
    let n = retry_eintr(|| {
        raw.len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: the spare capacity is writable for `want` bytes; `raw` provides
        // address storage of the length given.
        let n = unsafe {
            libc::recvfrom(
                fd,
                spare.as_mut_ptr().cast(),
                want,
                0,
                raw.mut_ptr(),
                &mut raw.len,
            )
        };
        cvt(n).map(|n| n as usize)
    })?;
    // SAFETY: `recvfrom` initialised exactly `n <= want` bytes past the old length.
    unsafe { buf.set_len(buf.len() + n) };
    Ok((n, raw.to_addr()))
}
