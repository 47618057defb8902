//! The socket operations, one set for every caller: [`Ops`], obtained from
//! `Engine::ops()` on the poll thread or `Handle::ops()` on any thread.
//!
//! An operation locks the socket, runs its state machine transition (`fsm.rs`) and
//! carries out the returned step. On the poll thread the step happens at once, under
//! the same lock. On another thread whatever needs the poller becomes a command for
//! the poll thread (which the waker interrupts), and so do messages produced on the
//! way (each operation hands them over before it returns); everything else (a direct
//! write, queueing, pause/resume flags, socket options) happens right there under the
//! socket's lock.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::MutexGuard;

use super::address;
use super::core::{Command, Core};
use super::error::{Error, Result};
use super::exec::PollIo;
use super::fsm::{State, Step};
use super::message::{Batch, Msg};
use super::resolver::Job;
use super::slots::SocketId;
use super::socket::{Priority, Proto, Socket, SocketFile};
use crate::sys::adopt;
use crate::sys::net::{self, Addr, ListenOptions};

/// Where an operation's messages go: the poll thread's pending batch, or a batch of
/// its own that another thread's `Ops` hands over before each operation returns.
enum Out<'a> {
    Poll(&'a mut Batch),
    Remote(Batch),
}

/// The socket operations, bound to the thread they are called from. Off the poll
/// thread every operation hands its messages over before it returns (`report`).
pub struct Ops<'a> {
    pub(crate) core: &'a Arc<Core>,
    out: Out<'a>,
    /// `Some` on the poll thread.
    pub(crate) io: Option<&'a mut PollIo>,
}

type Guard<'a> = MutexGuard<'a, Socket>;

/// Lock the socket of `id`: `UnknownId` if it is stale, unknown or being released.
#[inline(always)]
pub(crate) fn lock_socket(core: &Core, id: SocketId) -> Result<Guard<'_>> {
    let sock = core.slots.lock(id).ok_or(Error::UnknownId)?;
    if sock.freeing {
        return Err(Error::UnknownId);
    }
    Ok(sock)
}

/// The outcome of `write_direct`.
pub(crate) enum Direct<'a> {
    /// All of it went out (the socket is unlocked).
    Sent,
    /// The write's result, with the socket still locked: the rest must be queued
    /// (or the socket dropped) before anything else can write.
    Rest(Guard<'a>, io::Result<usize>),
}

/// A direct write of `data` on `sock`, which can take one (`can_write_now`), with
/// its stats; `poll_thread` says which clock to read.
#[inline(always)]
pub(crate) fn write_direct<'a>(
    core: &Core,
    poll_thread: bool,
    mut sock: Guard<'a>,
    data: &[u8],
) -> Direct<'a> {
    let fd = sock.raw_fd().expect("connected socket has an fd");
    let res = if sock.proto == Proto::Fd {
        super::stream::write_slices(sock.proto, fd, &[data])
    } else {
        net::write(fd, data)
    };
    if let Ok(n) = res {
        sock.stats.written += n as u64;
        // The poll thread's clock is refreshed every poll (as Skynet's); other threads
        // read the clock.
        sock.stats.wtime = if poll_thread {
            core.now_cs()
        } else {
            core.fresh_cs()
        };
        if n == data.len() {
            return Direct::Sent;
        }
    }
    Direct::Rest(sock, res)
}

impl<'a> Ops<'a> {
    pub(crate) fn on_poll_thread(
        core: &'a Arc<Core>,
        pending: &'a mut Batch,
        io: &'a mut PollIo,
    ) -> Ops<'a> {
        Ops {
            core,
            out: Out::Poll(pending),
            io: Some(io),
        }
    }

    pub(crate) fn remote(core: &'a Arc<Core>) -> Ops<'a> {
        Ops {
            core,
            out: Out::Remote(Batch::new()),
            io: None,
        }
    }

    pub(crate) fn out(&mut self) -> &mut Batch {
        match &mut self.out {
            Out::Poll(b) => b,
            Out::Remote(b) => b,
        }
    }

    #[inline]
    fn lock(&self, id: SocketId) -> Result<Guard<'a>> {
        lock_socket(self.core, id)
    }

    /// Carry out a transition's step: at once on the poll thread, as a command from
    /// elsewhere.
    pub(crate) fn carry(&mut self, sock: &mut Socket, step: Step) {
        let core: &Core = self.core;
        match (&mut self.io, &mut self.out) {
            (Some(io), Out::Poll(out)) => io.carry(core, sock, step, out),
            _ => match step {
                Step::Done => self.report(),
                Step::Sync => {
                    self.report();
                    core.command(Command::Sync(sock.id));
                }
                Step::Closing => {
                    self.report();
                    core.command(Command::Closing(sock.id));
                }
                Step::Free => {
                    self.report();
                    // The poll thread frees it soon; until then it is gone for everyone.
                    sock.freeing = true;
                    core.command(Command::Free(sock.id));
                }
            },
        }
    }

    /// Off the poll thread: hand the messages produced so far to the poll thread.
    fn report(&mut self) {
        if let Out::Remote(b) = &mut self.out {
            if !b.is_empty() {
                self.core.command(Command::Report(std::mem::take(b)));
            }
        }
    }

    /// A fresh slot for `fd`, or `TooManySockets` (the descriptor is then closed).
    fn reserve(
        &self,
        fd: Option<std::os::fd::OwnedFd>,
        state: State,
        proto: Proto,
        owner: u64,
    ) -> Result<(SocketId, Guard<'a>)> {
        let (id, mut sock) = self.core.slots.reserve().ok_or(Error::TooManySockets)?;
        self.core.init_socket(&mut sock, fd, state, proto, owner);
        Ok((id, sock))
    }

    // ---- creating sockets ----

    /// Listen on `addr` (TCP or a Unix socket path). The socket waits in `plisten`
    /// until `start`. Returns the id and the bound address (the port chosen for 0).
    pub fn listen(
        &mut self,
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
        match self.reserve(Some(fd), State::PListen, proto, owner) {
            Ok((id, mut sock)) => {
                sock.unlink = file;
                Ok((id, local))
            }
            Err(e) => {
                if let Some(f) = file {
                    f.remove();
                }
                Err(e)
            }
        }
    }

    /// Listen on `host:port`. A name is resolved synchronously: this call blocks for
    /// the lookup (listen is a setup call). The first address that works is used.
    pub fn listen_host(
        &mut self,
        host: &str,
        port: u16,
        opts: ListenOptions,
        owner: u64,
    ) -> Result<(SocketId, Option<Addr>)> {
        if let Some(a) = address::parse_numeric(host, port) {
            return self.listen(&Addr::Inet(a), opts, owner);
        }
        let ips = self
            .core
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

    /// Start a non-blocking connect; `Open` or `Error` follows.
    pub fn connect(&mut self, addr: &Addr, owner: u64) -> Result<SocketId> {
        let (id, mut sock) = self.connect_socket(addr, owner)?;
        if sock.state == State::Connected {
            // Finished at once (a Unix socket, loopback).
            let peer = addr.to_string();
            let step = sock.connected(&peer, self.out());
            self.carry(&mut sock, step);
        } else {
            self.carry(&mut sock, Step::Sync);
        }
        Ok(id)
    }

    /// The socket of a connect, `connecting` or already `connected`.
    pub(crate) fn connect_socket(&self, addr: &Addr, owner: u64) -> Result<(SocketId, Guard<'a>)> {
        let (fd, done) = net::connect(addr)?;
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
        self.reserve(Some(fd), state, proto, owner)
    }

    /// Connect to `host:port` without blocking: a numeric host connects at once, a
    /// name is looked up on a resolver thread and each address is tried in turn. The
    /// id is valid at once (state `reserve` while resolving; sends queue). `Open` or
    /// `Error` (with the resolver's or the last connect's error text) follows.
    pub fn connect_host(&mut self, host: &str, port: u16, owner: u64) -> Result<SocketId> {
        if let Some(a) = address::parse_numeric(host, port) {
            return self.connect(&Addr::Inet(a), owner);
        }
        let (id, _sock) = self.connect_host_socket(host, port, owner)?;
        Ok(id)
    }

    /// The `reserve` socket of a `connect_host` to a name, its lookup submitted.
    pub(crate) fn connect_host_socket(
        &self,
        host: &str,
        port: u16,
        owner: u64,
    ) -> Result<(SocketId, Guard<'a>)> {
        if host.is_empty() {
            return Err(Error::Invalid("empty host name".into()));
        }
        let (id, mut sock) = self.reserve(None, State::Reserve, Proto::Tcp, owner)?;
        let job = Job::Connect {
            id,
            host: host.to_string(),
            port,
        };
        if let Err(e) = self.core.resolver.submit(self.core, job) {
            self.core.discard(&mut sock);
            return Err(Error::Io(e));
        }
        Ok((id, sock))
    }

    /// Adopt an open descriptor (Skynet's `bind`: stdin, a pipe, a terminal, or a
    /// socket made elsewhere) as a connected stream; `Open` ("binding") follows at
    /// once and reading starts. The engine owns a duplicate: closing the id never
    /// closes `fd`. Regular files and directories are refused (they cannot be polled).
    pub fn bind(&mut self, fd: RawFd, owner: u64) -> Result<SocketId> {
        let dup = adopt::adopt(fd)?;
        let (id, mut sock) = self.reserve(Some(dup), State::Connected, Proto::Fd, owner)?;
        let step = sock.connected("binding", self.out());
        self.carry(&mut sock, step);
        Ok(id)
    }

    /// A UDP socket, bound to `bind` if given, otherwise unbound for `v6`'s family
    /// (an unbound IPv6 socket is dual-stack and reaches IPv4 peers too).
    pub fn udp(&mut self, bind: Option<&Addr>, v6: bool, owner: u64) -> Result<SocketId> {
        let v6 = match bind {
            Some(Addr::Inet(a)) => a.is_ipv6(),
            Some(Addr::Unix(_)) => return Err(Error::Invalid("UDP needs an IP address".into())),
            None => v6,
        };
        let fd = net::udp_socket(v6)?;
        if let Some(a) = bind {
            net::udp_bind(std::os::fd::AsRawFd::as_raw_fd(&fd), a)?;
        }
        let (id, mut sock) = self.reserve(Some(fd), State::Bind, Proto::Udp, owner)?;
        sock.udp = Some(Box::default());
        self.carry(&mut sock, Step::Sync);
        Ok(id)
    }

    // ---- name lookups ----

    /// Resolve a host name, blocking the caller (numeric addresses are parsed).
    pub fn resolve(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        self.core.resolver.lookup(host)
    }

    /// Resolve in the background: returns a request id; a `Msg::Resolved` with that
    /// `request` and `owner` follows.
    pub fn resolve_async(&mut self, host: &str, owner: u64) -> u64 {
        let request = self.core.next_request.fetch_add(1, Ordering::Relaxed);
        if let Some(a) = address::parse_numeric(host, 0) {
            let text = a.ip().to_string();
            self.out().push(Msg::Resolved {
                owner,
                request,
                result: Ok(text.as_bytes()),
            });
            self.report();
            return request;
        }
        let job = Job::Request {
            req: request,
            owner,
            host: host.to_string(),
        };
        if let Err(e) = self.core.resolver.submit(self.core, job) {
            let text = format!("resolve {host}: {e}");
            self.out().push(Msg::Resolved {
                owner,
                request,
                result: Err(text.as_bytes()),
            });
        }
        self.report();
        request
    }

    // ---- state changes ----

    /// Activate a listening or accepted socket and give it to `owner`.
    pub fn start(&mut self, id: SocketId, owner: u64) -> Result<()> {
        let mut sock = self.lock(id)?;
        let step = sock.start(owner);
        self.carry(&mut sock, step);
        Ok(())
    }

    /// Hold reading back (or let it go on) for a consumer that has not caught up;
    /// unlike `pause`, the owner's own pause/resume do not touch it.
    pub fn hold(&mut self, id: SocketId, on: bool) -> Result<()> {
        let mut sock = self.lock(id)?;
        let step = sock.hold(on);
        self.carry(&mut sock, step);
        Ok(())
    }

    pub fn pause(&mut self, id: SocketId) -> Result<()> {
        let mut sock = self.lock(id)?;
        let step = sock.pause();
        self.carry(&mut sock, step);
        Ok(())
    }

    pub fn resume(&mut self, id: SocketId) -> Result<()> {
        let mut sock = self.lock(id)?;
        let step = sock.resume()?;
        self.carry(&mut sock, step);
        Ok(())
    }

    /// Close: flush what is queued, then close (`force`: drop the queue now). The
    /// owner gets `Close` once the socket is really closed, unless it was told already.
    /// From another thread the transition happens at once too (a send right after a
    /// close is refused); the poll thread arms the close timeout or frees the slot.
    pub fn close(&mut self, id: SocketId, force: bool) -> Result<()> {
        let mut sock = self.lock(id)?;
        let now = self.core.fresh_cs();
        let step = sock.close(force, now, self.out());
        self.carry(&mut sock, step);
        Ok(())
    }

    pub fn shutdown_write(&mut self, id: SocketId) -> Result<()> {
        let mut sock = self.lock(id)?;
        let step = sock.shutdown_write()?;
        self.carry(&mut sock, step);
        Ok(())
    }

    /// After the peer's EOF keep the socket open for replies until `close` (`on`), or
    /// close it as soon as nothing is queued (the default, as Skynet).
    pub fn set_keep_open(&mut self, id: SocketId, on: bool) -> Result<()> {
        let mut sock = self.lock(id)?;
        let step = sock.set_keep_open(on);
        self.carry(&mut sock, step);
        Ok(())
    }

    // ---- sending ----

    /// Write `data`, or queue what the kernel does not take now. A direct write
    /// happens only when nothing is queued, under the socket's lock, so bytes from any
    /// number of threads never reorder. A hard write error, or a send past the write
    /// limit or budget, drops the socket (its owner gets `Error`) and is returned.
    /// (`Engine::send` is the same, with the common case taken before an `Ops` is set
    /// up.)
    #[inline(always)]
    pub fn send(&mut self, id: SocketId, data: &[u8], prio: Priority) -> Result<()> {
        let sock = self.lock(id)?;
        // The common case first, kept small: a writable stream with nothing queued
        // whose write the kernel takes whole. Refusals, partial or failed writes and
        // queueing are handled out of line.
        if sock.can_send_directly() && !data.is_empty() {
            return match write_direct(self.core, self.io.is_some(), sock, data) {
                Direct::Sent => Ok(()),
                Direct::Rest(sock, res) => self.after_write(sock, data, prio, res),
            };
        }
        self.send_slow(sock, id, data, prio)
    }

    /// `send` when its first test fails: refused, empty, or to be queued.
    #[inline(never)]
    pub(crate) fn send_slow(
        &mut self,
        sock: Guard<'a>,
        id: SocketId,
        data: &[u8],
        prio: Priority,
    ) -> Result<()> {
        if let Some(why) = sock.send_refusal() {
            // A UDP socket with a default peer (udp_connect): as in Skynet, `send`
            // sends one datagram to that peer.
            if sock.state == State::Bind && sock.udp.as_ref().is_some_and(|u| u.peer.is_some()) {
                drop(sock);
                return self.sendto(id, None, data);
            }
            return Err(Error::State(why));
        }
        if data.is_empty() {
            return Ok(());
        }
        if sock.can_write_now() {
            return match write_direct(self.core, self.io.is_some(), sock, data) {
                Direct::Sent => Ok(()),
                Direct::Rest(sock, res) => self.after_write(sock, data, prio, res),
            };
        }
        self.queue(sock, data, prio)
    }

    /// After a direct write of `data` that did not take it all (`res`): queue the
    /// rest, or drop the socket on a hard error.
    #[inline(never)]
    pub(crate) fn after_write(
        &mut self,
        mut sock: Guard<'a>,
        data: &[u8],
        prio: Priority,
        res: io::Result<usize>,
    ) -> Result<()> {
        match res {
            Ok(n) => self.queue(sock, &data[n..], prio),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.queue(sock, data, prio),
            Err(e) => {
                let step = sock.fail(&e.to_string(), self.out());
                self.carry(&mut sock, step);
                Err(Error::Io(e))
            }
        }
    }

    /// Queue `rest` behind what is queued (`Socket::enqueue`); past the limits the
    /// socket is dropped.
    fn queue(&mut self, mut sock: Guard<'a>, rest: &[u8], prio: Priority) -> Result<()> {
        let core: &Core = self.core;
        match sock.enqueue(core, rest, prio, self.out()) {
            Ok(step) => {
                self.carry(&mut sock, step);
                Ok(())
            }
            Err(e) => {
                let step = sock.fail(&e.to_string(), self.out());
                self.carry(&mut sock, step);
                Err(e)
            }
        }
    }

    /// Send one datagram to `to`, or to the `udp_connect` peer when `None`. A
    /// datagram error (unreachable, too big) fails this send only.
    pub fn sendto(&mut self, id: SocketId, to: Option<&Addr>, data: &[u8]) -> Result<()> {
        let mut sock = self.lock(id)?;
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
                    sock.stats.wtime = self.core.fresh_cs();
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(Error::Io(e)),
            }
        }
        let udp = sock.udp.as_mut().expect("udp state");
        udp.queue
            .push_back((bytes::Bytes::copy_from_slice(data), target));
        if sock.needs_sync() {
            self.carry(&mut sock, Step::Sync);
        }
        Ok(())
    }

    pub fn udp_connect(&mut self, id: SocketId, peer: &Addr) -> Result<()> {
        let mut sock = self.lock(id)?;
        if sock.proto != Proto::Udp {
            return Err(Error::State("udp_connect needs a UDP socket"));
        }
        let fd = sock.raw_fd().expect("udp socket has an fd");
        net::udp_connect(fd, &v6_mapped_if_needed(fd, peer))?;
        sock.udp.get_or_insert_with(Box::default).peer = Some(peer.clone());
        Ok(())
    }

    // ---- options ----

    pub fn set_limit(&mut self, id: SocketId, limit: usize) -> Result<()> {
        self.lock(id)?.limit = limit;
        Ok(())
    }

    fn with_fd<T>(
        &self,
        id: SocketId,
        f: impl FnOnce(&Socket, std::os::fd::RawFd) -> Result<T>,
    ) -> Result<T> {
        let sock = self.lock(id)?;
        let fd = sock
            .raw_fd()
            .ok_or(Error::State("socket has no descriptor"))?;
        f(&sock, fd)
    }

    pub fn set_nodelay(&mut self, id: SocketId, on: bool) -> Result<()> {
        self.with_fd(id, |s, fd| match s.proto {
            Proto::Tcp => Ok(net::set_nodelay(fd, on)?),
            _ => Err(Error::State("nodelay applies to TCP sockets")),
        })
    }

    pub fn set_keepalive(&mut self, id: SocketId, on: bool) -> Result<()> {
        self.with_fd(id, |s, fd| match s.proto {
            Proto::Tcp => Ok(net::set_keepalive(fd, on)?),
            _ => Err(Error::State("keepalive applies to TCP sockets")),
        })
    }

    // ---- owners ----

    /// Give the socket to another owner without touching its state: messages produced
    /// from now on carry `owner` (a handoff between consumers; `start` does the same
    /// for a socket that is not active yet).
    pub fn set_owner(&mut self, id: SocketId, owner: u64) -> Result<()> {
        self.lock(id)?.owner = owner;
        Ok(())
    }

    /// The owner token of socket `id`.
    pub fn owner_of(&self, id: SocketId) -> Result<u64> {
        Ok(self.lock(id)?.owner)
    }

    /// Close (at once, as `close(id, true)`) every socket owned by `owner`; returns
    /// how many. For a consumer that goes away with sockets still open.
    pub fn close_owned(&mut self, owner: u64) -> usize {
        let mut n = 0;
        for id in self.core.slots.live_ids() {
            let mine = matches!(self.lock(id), Ok(s) if s.owner == owner);
            if mine && self.close(id, true).is_ok() {
                n += 1;
            }
        }
        n
    }

    // ---- the rest ----

    /// Whether `id` names an open socket (a cheap check: no syscall).
    pub fn is_open(&self, id: SocketId) -> bool {
        self.lock(id).is_ok()
    }

    /// Number of open sockets.
    pub fn socket_count(&self) -> usize {
        self.core.slots.live()
    }

    /// Make the poll thread report `Exit`.
    pub fn exit(&mut self) {
        self.out().push(Msg::Exit);
        self.report();
    }

    /// Bring the registration of `id` in line with its state (for commands).
    pub(crate) fn sync(&mut self, id: SocketId) {
        if let Ok(mut sock) = self.lock(id) {
            self.carry(&mut sock, Step::Sync);
        }
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
