//! The part of the engine shared by the poll thread and every `Handle`: the slot
//! pool, the command queue with its waker, and the socket operations that need no
//! poller (the poll thread applies their effect on registrations).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;

use super::address;
use super::error::{Error, Result};
use super::message::{MsgKind, OwnedMessage, Sink};
use super::resolver::{addresses_text, Job, Resolver};
use super::slots::{Slots, SocketId};
use super::socket::{Priority, Proto, Socket, SocketFile, State};
use super::Config;
use crate::sys::net::{self, Addr, ListenOptions};
use crate::sys::{Interest, Waker};

/// Work for the poll thread, queued by a `Handle` on another thread.
pub(crate) enum Command {
    /// Bring the poller registration of this socket in line with its state.
    Sync(SocketId),
    Close {
        id: SocketId,
        force: bool,
    },
    /// A direct write from another thread failed: close the socket with this error.
    Abort {
        id: SocketId,
        err: io::Error,
    },
    Report(OwnedMessage),
    /// A resolver worker finished a lookup.
    Resolved {
        job: Job,
        result: io::Result<Vec<IpAddr>>,
    },
    Exit,
}

impl Sink for Vec<Command> {
    fn emit(
        &mut self,
        kind: MsgKind,
        id: SocketId,
        owner: u64,
        ud: u64,
        data: &[u8],
        extra: &[u8],
    ) {
        self.push(Command::Report(OwnedMessage::new(
            kind, id, owner, ud, data, extra,
        )));
    }
}

/// What a send did, and what the poll thread must do about it.
pub(crate) enum Sent {
    /// Everything went out (or was queued behind registered write interest).
    Done,
    /// Data was queued and the socket's registration must change (enable writes).
    NeedSync,
    /// The direct write failed hard: the socket must be closed with this error.
    Broken(io::Error),
    /// The send would pass the socket's write limit or the engine's write budget
    /// (`Error::LimitExceeded` / `Error::BudgetExceeded`): nothing of the rest was
    /// queued, and the socket must be dropped (closed by force, with this error).
    Overflow(Error),
}

/// A snapshot of one socket for `info`.
#[derive(Clone, Debug)]
pub struct SocketInfo {
    pub id: SocketId,
    pub kind: &'static str,
    pub state: &'static str,
    pub owner: u64,
    pub read: u64,
    pub written: u64,
    pub rtime: u64,
    pub wtime: u64,
    pub queued: usize,
    pub paused: bool,
    /// A TLS stream (or a TLS listener).
    pub tls: bool,
    pub peer: Option<String>,
    pub local: Option<String>,
    /// TCP_NODELAY of a TCP stream socket (`None` for listeners, UDP, Unix sockets).
    pub nodelay: Option<bool>,
}

pub(crate) struct Core {
    pub slots: Slots,
    pub config: Config,
    commands: Mutex<Vec<Command>>,
    has_commands: AtomicBool,
    pub waker: Waker,
    epoch: Instant,
    time_cs: AtomicU64,
    pub resolver: Resolver,
    next_request: AtomicU64,
    /// Bytes queued for writing in all sockets (checked against `write_budget`).
    pub queued_total: AtomicUsize,
}

impl Socket {
    /// Whether the poller registration differs from what the state wants.
    pub fn needs_sync(&self) -> bool {
        self.registered.unwrap_or(Interest::NONE) != self.interest()
    }
}

impl Core {
    pub fn new(config: Config) -> io::Result<Core> {
        Ok(Core {
            slots: Slots::with_first_tag(config.max_sockets, config.first_tag),
            resolver: Resolver::new(config.resolver, config.resolver_threads),
            next_request: AtomicU64::new(1),
            config,
            commands: Mutex::new(Vec::new()),
            has_commands: AtomicBool::new(false),
            waker: Waker::new()?,
            epoch: Instant::now(),
            time_cs: AtomicU64::new(0),
            queued_total: AtomicUsize::new(0),
        })
    }

    /// Centiseconds since the engine started, as of the last poll.
    pub fn now_cs(&self) -> u64 {
        self.time_cs.load(Ordering::Relaxed)
    }

    /// Centiseconds since the engine started, read from the clock now (for sends made
    /// between polls, possibly long after the last one, and from other threads).
    pub fn fresh_cs(&self) -> u64 {
        let cs = (self.epoch.elapsed().as_millis() / 10) as u64;
        self.time_cs.fetch_max(cs, Ordering::Relaxed);
        cs
    }

    pub fn update_time(&self) {
        let cs = (self.epoch.elapsed().as_millis() / 10) as u64;
        self.time_cs.fetch_max(cs, Ordering::Relaxed);
    }

    pub fn command(&self, cmd: Command) {
        self.commands.lock().push(cmd);
        self.has_commands.store(true, Ordering::Release);
        self.waker.wake();
    }

    pub fn take_commands(&self, into: &mut Vec<Command>) {
        if self.has_commands.swap(false, Ordering::Acquire) {
            std::mem::swap(&mut *self.commands.lock(), into);
        }
    }

    /// Fill a freshly reserved slot: descriptor, state, owner and the configured
    /// read size, warning threshold and write limit.
    pub(crate) fn init_socket(
        &self,
        sock: &mut Socket,
        fd: std::os::fd::OwnedFd,
        state: State,
        proto: Proto,
        owner: u64,
    ) {
        if proto == Proto::Tcp && !matches!(state, State::PListen | State::Listen) {
            self.apply_nodelay(std::os::fd::AsRawFd::as_raw_fd(&fd));
        }
        sock.fd = Some(fd);
        sock.state = state;
        sock.proto = proto;
        sock.owner = owner;
        sock.read_size = self.config.min_read as u32;
        sock.warn_at = self.config.warn_size;
        sock.limit = self.config.default_write_limit;
    }

    /// TCP_NODELAY on a new connection when the configuration asks for it (the
    /// default): a server writing several small replies would otherwise wait for the
    /// peer's delayed ACK (~40 ms) on each round trip. Best effort: a failure leaves
    /// Nagle on, which is slower but correct.
    pub(crate) fn apply_nodelay(&self, fd: std::os::fd::RawFd) {
        if self.config.nodelay {
            let _ = net::set_nodelay(fd, true);
        }
    }

    pub fn listen(
        &self,
        addr: &Addr,
        opts: ListenOptions,
        owner: u64,
    ) -> Result<(SocketId, Option<Addr>)> {
        let (fd, proto) = match addr {
            Addr::Unix(path) => (net::unix_listen(path, opts.backlog)?, Proto::Unix),
            Addr::Inet(_) => (net::listen(addr, opts)?, Proto::Tcp),
        };
        let local = net::local_addr(std::os::fd::AsRawFd::as_raw_fd(&fd))?;
        let file = match addr {
            Addr::Unix(path) => SocketFile::new(path).map(Box::new),
            Addr::Inet(_) => None,
        };
        let Some((id, mut sock)) = self.slots.reserve() else {
            if let Some(f) = file {
                f.remove();
            }
            return Err(Error::TooManySockets);
        };
        self.init_socket(&mut sock, fd, State::PListen, proto, owner);
        sock.unlink = file;
        Ok((id, local))
    }

    /// Start a non-blocking connect. The `Open`/`Error` message follows from the poll
    /// thread; a connect that completed at once is reported through `out`.
    pub fn connect(&self, addr: &Addr, owner: u64, out: &mut impl Sink) -> Result<SocketId> {
        let (fd, done) = net::connect(addr)?;
        let (id, mut sock) = self.slots.reserve().ok_or(Error::TooManySockets)?;
        let proto = if matches!(addr, Addr::Unix(_)) {
            Proto::Unix
        } else {
            Proto::Tcp
        };
        let state = if done {
            State::Connected
        } else {
            State::Connecting
        };
        self.init_socket(&mut sock, fd, state, proto, owner);
        if done {
            out.emit(
                MsgKind::Open,
                id,
                owner,
                0,
                addr.to_string().as_bytes(),
                b"",
            );
        }
        Ok(id)
    }

    /// Connect to `host:port`. A numeric host connects at once (as `connect`); a name
    /// reserves the id now (state `reserve`, sends queue) and is looked up on a
    /// resolver thread; the poll thread then tries each address in turn. Returns the id
    /// and whether the poll thread must sync its registration.
    pub fn connect_host(
        self: &Arc<Self>,
        host: &str,
        port: u16,
        owner: u64,
        out: &mut impl Sink,
    ) -> Result<SocketId> {
        if let Some(a) = address::parse_numeric(host, port) {
            return self.connect(&Addr::Inet(a), owner, out);
        }
        if host.is_empty() {
            return Err(Error::Invalid("empty host name".into()));
        }
        let id = {
            let (id, mut sock) = self.slots.reserve().ok_or(Error::TooManySockets)?;
            sock.state = State::Reserve;
            sock.proto = Proto::Tcp;
            sock.owner = owner;
            sock.read_size = self.config.min_read as u32;
            sock.warn_at = self.config.warn_size;
            sock.limit = self.config.default_write_limit;
            id
        };
        let job = Job::Connect {
            id,
            host: host.to_string(),
            port,
        };
        if let Err(e) = self.resolver.submit(self, job) {
            if let Some(mut sock) = self.slots.lock(id) {
                *sock = Socket::default();
                self.slots.release(id);
            }
            return Err(Error::Io(e));
        }
        Ok(id)
    }

    /// Resolve `host` without blocking: returns a request id; a `Resolved` message
    /// with `ud` = that id follows (see `MsgKind::Resolved`).
    pub fn resolve_async(self: &Arc<Self>, host: &str, owner: u64, out: &mut impl Sink) -> u64 {
        let req = self.next_request.fetch_add(1, Ordering::Relaxed);
        if let Some(a) = address::parse_numeric(host, 0) {
            let text = a.ip().to_string();
            out.emit(MsgKind::Resolved, 0, owner, req, text.as_bytes(), b"");
            return req;
        }
        let job = Job::Request {
            req,
            owner,
            host: host.to_string(),
        };
        if let Err(e) = self.resolver.submit(self, job) {
            let text = format!("resolve {host}: {e}");
            out.emit(
                MsgKind::Resolved,
                0,
                owner,
                req,
                text.as_bytes(),
                RESOLVE_FAILED,
            );
        }
        req
    }

    /// Listen on `host:port`, resolving a name synchronously (listen is a setup call;
    /// this blocks the caller for the lookup). Each address is tried in turn.
    pub fn listen_host(
        &self,
        host: &str,
        port: u16,
        opts: ListenOptions,
        owner: u64,
    ) -> Result<(SocketId, Option<Addr>)> {
        if let Some(a) = address::parse_numeric(host, port) {
            return self.listen(&Addr::Inet(a), opts, owner);
        }
        let ips = self
            .resolver
            .lookup(host)
            .map_err(|e| Error::Invalid(format!("resolve {host}: {e}")))?;
        let mut last = None;
        for ip in ips {
            match self.listen(&Addr::Inet(SocketAddr::new(ip, port)), opts, owner) {
                Ok(r) => return Ok(r),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Invalid(format!("resolve {host}: no addresses"))))
    }

    /// Activate a listening or accepted socket and give it to `owner`.
    pub fn start(&self, id: SocketId, owner: u64) -> Result<bool> {
        let mut sock = self.slots.lock(id).ok_or(Error::UnknownId)?;
        sock.owner = owner;
        match sock.state {
            State::PListen => sock.state = State::Listen,
            State::PAccept => sock.state = State::Connected,
            _ => {}
        }
        Ok(sock.needs_sync())
    }

    pub fn pause(&self, id: SocketId) -> Result<bool> {
        let mut sock = self.slots.lock(id).ok_or(Error::UnknownId)?;
        sock.paused = true;
        Ok(sock.needs_sync())
    }

    pub fn resume(&self, id: SocketId) -> Result<bool> {
        let mut sock = self.slots.lock(id).ok_or(Error::UnknownId)?;
        if sock.closing {
            return Err(Error::State("socket is closing"));
        }
        if sock.state == State::HalfCloseRead {
            return Err(Error::State("socket is half-closed: the peer sent EOF"));
        }
        sock.paused = false;
        Ok(sock.needs_sync())
    }

    /// Queue or directly write `data`. Direct write happens only when nothing is queued,
    /// under the socket's lock, so bytes from any number of threads never reorder.
    /// `now_cs` stamps `wtime` on a direct write: the poll thread passes its cached
    /// clock (refreshed every poll, as Skynet's), other threads read the clock.
    pub fn send(
        &self,
        id: SocketId,
        data: &[u8],
        prio: Priority,
        now_cs: u64,
        out: &mut impl Sink,
    ) -> Result<Sent> {
        let mut sock = self.slots.lock(id).ok_or(Error::UnknownId)?;
        if !sock.can_send() {
            // A UDP socket with a default peer (udp_connect, udp_dial): as in Skynet,
            // `send` sends one datagram to that peer.
            if sock.state == State::Bind && sock.udp.as_ref().is_some_and(|u| u.peer.is_some()) {
                drop(sock);
                return Ok(match self.sendto(id, None, data, out)? {
                    true => Sent::NeedSync,
                    false => Sent::Done,
                });
            }
            return Err(Error::State(match sock.state {
                _ if sock.closing => "socket is closing",
                _ if sock.shut_wr => "socket write side is shut down",
                State::Bind => "a UDP socket without a peer takes sendto, not send",
                State::Listen | State::PListen => "cannot send on a listening socket",
                _ => "socket cannot send in this state",
            }));
        }
        if data.is_empty() {
            return Ok(Sent::Done);
        }
        let mut rest = data;
        if sock.can_write_now() {
            let fd = sock.raw_fd().expect("connected socket has an fd");
            match net::write(fd, data) {
                Ok(n) => {
                    sock.stats.written += n as u64;
                    sock.stats.wtime = now_cs;
                    rest = &data[n..];
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Ok(Sent::Broken(e)),
            }
            if rest.is_empty() {
                return Ok(Sent::Done);
            }
        }
        let queued = sock.wq.len_bytes();
        // Bytes of this send already written stay written: the stream is broken, so
        // the caller drops the socket (`Sent::Overflow`).
        if sock.limit > 0 && queued + rest.len() > sock.limit {
            return Ok(Sent::Overflow(Error::LimitExceeded {
                queued,
                limit: sock.limit,
            }));
        }
        // Over the budget, a socket that already has a backlog is the one to drop: a
        // peer that keeps up has an empty queue between sends, so it may still queue
        // one (the total stays within the budget plus one send per socket).
        let budget = self.config.write_budget;
        let total = self.queued_total.load(Ordering::Relaxed);
        if budget > 0 && queued > 0 && total + rest.len() > budget {
            return Ok(Sent::Overflow(Error::BudgetExceeded { total, budget }));
        }
        self.queued_total.fetch_add(rest.len(), Ordering::Relaxed);
        sock.wq.push(Bytes::copy_from_slice(rest), prio);
        let size = sock.wq.len_bytes();
        if size >= sock.warn_at {
            out.emit(
                MsgKind::Warning,
                id,
                sock.owner,
                (size / 1024) as u64,
                b"",
                b"",
            );
            while sock.warn_at <= size {
                sock.warn_at *= 2;
            }
        }
        // A TLS socket is written by the poll thread only: always ask it to flush.
        Ok(if sock.needs_sync() || sock.is_tls() {
            Sent::NeedSync
        } else {
            Sent::Done
        })
    }

    /// Half-close the write side once the queue drains; reading goes on.
    pub fn shutdown_write(&self, id: SocketId) -> Result<bool> {
        let mut sock = self.slots.lock(id).ok_or(Error::UnknownId)?;
        match sock.state {
            State::Connected
            | State::PAccept
            | State::HalfCloseRead
            | State::Connecting
            | State::Reserve => {}
            State::HalfCloseWrite => return Ok(false),
            _ => {
                return Err(Error::State(
                    "shutdown_write needs a connected stream socket",
                ))
            }
        }
        if sock.closing {
            return Err(Error::State("socket is closing"));
        }
        sock.shut_wr = true;
        if sock.is_tls() {
            // close_notify, then the FIN: both sent by the poll thread's flush.
            return Ok(true);
        }
        if sock.wq.is_empty() && !matches!(sock.state, State::Connecting | State::Reserve) {
            let fd = sock.raw_fd().expect("stream socket has an fd");
            net::shutdown(fd, net::Shutdown::Write)?;
            if sock.state != State::HalfCloseRead {
                sock.state = State::HalfCloseWrite;
            }
        }
        Ok(sock.needs_sync())
    }

    pub fn set_limit(&self, id: SocketId, limit: usize) -> Result<()> {
        let mut sock = self.slots.lock(id).ok_or(Error::UnknownId)?;
        sock.limit = limit;
        Ok(())
    }

    fn with_fd<T>(
        &self,
        id: SocketId,
        f: impl FnOnce(&Socket, std::os::fd::RawFd) -> Result<T>,
    ) -> Result<T> {
        let sock = self.slots.lock(id).ok_or(Error::UnknownId)?;
        let fd = sock
            .raw_fd()
            .ok_or(Error::State("socket has no descriptor"))?;
        f(&sock, fd)
    }

    pub fn set_nodelay(&self, id: SocketId, on: bool) -> Result<()> {
        self.with_fd(id, |s, fd| match s.proto {
            Proto::Tcp => Ok(net::set_nodelay(fd, on)?),
            _ => Err(Error::State("nodelay applies to TCP sockets")),
        })
    }

    pub fn set_keepalive(&self, id: SocketId, on: bool) -> Result<()> {
        self.with_fd(id, |s, fd| match s.proto {
            Proto::Tcp => Ok(net::set_keepalive(fd, on)?),
            _ => Err(Error::State("keepalive applies to TCP sockets")),
        })
    }

    // ---- UDP ----

    /// A UDP socket, bound to `bind` if given, otherwise unbound for `v6`'s family
    /// (an unbound IPv6 socket is dual-stack and reaches IPv4 peers too).
    pub fn udp(&self, bind: Option<&Addr>, v6: bool, owner: u64) -> Result<SocketId> {
        let v6 = match bind {
            Some(Addr::Inet(a)) => a.is_ipv6(),
            Some(Addr::Unix(_)) => return Err(Error::Invalid("UDP needs an IP address".into())),
            None => v6,
        };
        let fd = net::udp_socket(v6)?;
        if let Some(a) = bind {
            net::udp_bind(std::os::fd::AsRawFd::as_raw_fd(&fd), a)?;
        }
        let (id, mut sock) = self.slots.reserve().ok_or(Error::TooManySockets)?;
        self.init_socket(&mut sock, fd, State::Bind, Proto::Udp, owner);
        sock.udp = Some(Box::default());
        Ok(id)
    }

    pub fn udp_connect(&self, id: SocketId, peer: &Addr) -> Result<()> {
        let mut sock = self.slots.lock(id).ok_or(Error::UnknownId)?;
        if sock.proto != Proto::Udp {
            return Err(Error::State("udp_connect needs a UDP socket"));
        }
        let fd = sock.raw_fd().expect("udp socket has an fd");
        net::udp_connect(fd, &v6_mapped_if_needed(fd, peer))?;
        sock.udp.get_or_insert_with(Box::default).peer = Some(peer.clone());
        Ok(())
    }

    /// Send one datagram to `to` (or the connected peer when `None`).
    pub fn sendto(
        &self,
        id: SocketId,
        to: Option<&Addr>,
        data: &[u8],
        out: &mut impl Sink,
    ) -> Result<bool> {
        let mut sock = self.slots.lock(id).ok_or(Error::UnknownId)?;
        if sock.proto != Proto::Udp {
            return Err(Error::State("sendto needs a UDP socket"));
        }
        let fd = sock.raw_fd().expect("udp socket has an fd");
        let udp = sock.udp.get_or_insert_with(Box::default);
        let target = match (to, &udp.peer) {
            (Some(a), _) => a.clone(),
            (None, Some(p)) => p.clone(),
            (None, None) => {
                return Err(Error::State(
                    "UDP socket has no peer: use sendto with an address",
                ))
            }
        };
        let target = v6_mapped_if_needed(fd, &target);
        if udp.queue.is_empty() {
            match net::sendto(fd, data, Some(&target)) {
                Ok(_) => {
                    sock.stats.written += data.len() as u64;
                    sock.stats.wtime = self.fresh_cs();
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    // A datagram error (unreachable, too big) fails this send only.
                    let _ = out;
                    return Err(Error::Io(e));
                }
            }
        }
        let udp = sock.udp.as_mut().expect("udp state");
        udp.queue.push_back((Bytes::copy_from_slice(data), target));
        Ok(sock.needs_sync())
    }

    pub fn info(&self, id: SocketId) -> Option<SocketInfo> {
        let sock = self.slots.lock(id)?;
        let fd = sock.raw_fd();
        let show = |a: Option<Addr>| a.map(|a| a.to_string());
        Some(SocketInfo {
            id,
            kind: match sock.proto {
                Proto::Tcp => "tcp",
                Proto::Udp => "udp",
                Proto::Unix => "unix",
            },
            state: sock.state.name(),
            owner: sock.owner,
            read: sock.stats.read,
            written: sock.stats.written,
            rtime: sock.stats.rtime,
            wtime: sock.stats.wtime,
            queued: sock.wq.len_bytes()
                + sock
                    .udp
                    .as_ref()
                    .map_or(0, |u| u.queue.iter().map(|(b, _)| b.len()).sum()),
            paused: sock.paused,
            tls: sock.is_tls() || sock.is_tls_listener(),
            peer: fd.and_then(|fd| show(net::peer_addr(fd).ok().flatten())),
            local: fd.and_then(|fd| show(net::local_addr(fd).ok().flatten())),
            nodelay: match (sock.proto, sock.state) {
                (Proto::Tcp, State::PListen | State::Listen) => None,
                (Proto::Tcp, _) => fd.and_then(|fd| net::nodelay(fd).ok()),
                _ => None,
            },
        })
    }
}

/// On a dual-stack IPv6 socket an IPv4 peer must be written as a v4-mapped address.
fn v6_mapped_if_needed(fd: std::os::fd::RawFd, addr: &Addr) -> Addr {
    if let Addr::Inet(std::net::SocketAddr::V4(a)) = addr {
        if let Ok(Some(Addr::Inet(std::net::SocketAddr::V6(_)))) = net::local_addr(fd) {
            let mapped = a.ip().to_ipv6_mapped();
            return Addr::Inet(std::net::SocketAddr::new(mapped.into(), a.port()));
        }
    }
    addr.clone()
}

/// `extra` of a `Resolved` message whose lookup failed (`data` is then the error text).
pub const RESOLVE_FAILED: &[u8] = b"error";

/// The `Resolved` message for a finished lookup.
pub(crate) fn resolved_message(
    req: u64,
    owner: u64,
    host: &str,
    result: &io::Result<Vec<IpAddr>>,
    out: &mut impl Sink,
) {
    match result {
        Ok(ips) => {
            let text = addresses_text(ips);
            out.emit(MsgKind::Resolved, 0, owner, req, text.as_bytes(), b"");
        }
        Err(e) => {
            let text = format!("resolve {host}: {e}");
            out.emit(
                MsgKind::Resolved,
                0,
                owner,
                req,
                text.as_bytes(),
                RESOLVE_FAILED,
            );
        }
    }
}

pub(crate) fn display_addr(addr: Option<&Addr>) -> String {
    address::display(addr)
}
