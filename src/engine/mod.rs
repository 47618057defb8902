//! The socket server: Skynet's `socket_server` state machine over a readiness poller.
//!
//! One thread owns the [`Engine`] and calls [`Engine::poll`]; any thread may use a
//! [`Handle`]. Sockets live in a slot pool addressed by tagged ids; every message
//! carries the socket's owner token.

pub mod address;
mod core;
mod error;
mod handle;
mod message;
pub mod resolver;
mod slots;
mod socket;
mod timer;
#[cfg(feature = "tls")]
mod tls;
#[cfg(feature = "tls")]
pub mod x509;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::core::{Command, Core, Sent};
pub use self::core::{SocketInfo, RESOLVE_FAILED};
pub use error::{Error, Result};
pub use handle::Handle;
pub use message::{Batch, Message, MsgKind};
use message::{OwnedMessage, Sink};
use resolver::{Job, ResolveFn};
pub use slots::SocketId;
pub use socket::Priority;
use socket::{Socket, State};
use timer::Timers;
#[cfg(feature = "tls")]
pub use tls::{TlsContext, TlsInfo, TlsOptions, TlsVersion};

use crate::sys::net::{self, Addr, ListenOptions};
use crate::sys::{Event, Interest, Poller};

/// Engine settings. `Default` gives Skynet's values where Skynet has one.
#[derive(Clone, Debug)]
pub struct Config {
    /// Most sockets open at once (slot memory is allocated lazily, 1,024 at a time).
    pub max_sockets: usize,
    /// First read size of a new socket; reads double while they fill the buffer.
    pub min_read: usize,
    /// Upper bound of the adaptive read size.
    pub max_read: usize,
    /// Queue size that triggers the first `Warning` (then each doubling).
    pub warn_size: usize,
    /// Hard write-queue limit given to new sockets (0 = none). A send past a socket's
    /// limit fails with `Error::LimitExceeded` and the socket is dropped: closed by
    /// force, its owner told with `Error` (the stream is broken anyway).
    pub default_write_limit: usize,
    /// TCP_NODELAY on every accepted and connected TCP socket (default `true`, as
    /// Redis, nginx and Go do: request/response traffic otherwise stalls ~40 ms per
    /// round trip on Nagle's algorithm against the peer's delayed ACK).
    pub nodelay: bool,
    /// For tests: the tag a slot's first socket gets, so ids can start near the top of
    /// the id space (2^53) and wrap. Default 0 (tags count 1, 2, …).
    pub first_tag: u64,
    /// Most bytes queued for writing in all sockets together (0 = none). Past it, a
    /// send that must queue behind data already queued on its socket fails with
    /// `Error::BudgetExceeded` and the socket is dropped as for the write limit, so the
    /// peers that do not read pay, not the process; a socket with an empty queue (a
    /// peer that keeps up) may still queue one send.
    pub write_budget: usize,
    /// A poll stops taking events once its batch holds this many payload bytes.
    pub batch_bytes: usize,
    /// Accepts taken per listener readiness event.
    pub accept_burst: usize,
    /// Keep a spare descriptor open for the `EMFILE` accept trick (free it, accept the
    /// pending connection, close that, re-open the spare). Off only for tests.
    pub reserve_fd: bool,
    /// When an accept fails for lack of descriptors and the spare cannot take the
    /// connection off the queue, the listener stops reading for this long instead of
    /// spinning on its level-triggered readiness.
    pub accept_backoff: Duration,
    /// A flushing `close` whose queue makes no progress (not one byte written) for this
    /// long is finished by force: the rest of the queue is dropped and the owner gets
    /// `Close` with a note in `data`. Measured from the last successful write, so a
    /// slow but live peer is never cut off. `None`: wait forever (Skynet's behaviour).
    /// Default: 60 s.
    pub close_timeout: Option<Duration>,
    /// The host-name lookup used by `connect_host`, `listen_host` and `resolve*`
    /// (default: `resolver::system_resolve`, i.e. getaddrinfo).
    pub resolver: ResolveFn,
    /// Most resolver threads (started lazily, on the first lookup of a name).
    pub resolver_threads: usize,
    /// A TLS socket whose handshake has not finished this long after it started
    /// fails with a timeout error (`None`: no limit). Default: 30 s.
    pub tls_handshake_timeout: Option<Duration>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_sockets: 65536,
            min_read: 64,
            max_read: 128 * 1024,
            warn_size: 1024 * 1024,
            default_write_limit: 0,
            nodelay: true,
            first_tag: 0,
            write_budget: 0,
            batch_bytes: 4 * 1024 * 1024,
            accept_burst: 32,
            reserve_fd: true,
            accept_backoff: Duration::from_millis(100),
            close_timeout: Some(Duration::from_secs(60)),
            resolver: resolver::system_resolve,
            resolver_threads: 2,
            tls_handshake_timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// Engine-internal deadlines (never reported as `Timer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Internal {
    /// A listener's accept backoff is over.
    AcceptResume(SocketId),
    /// Check whether a flushing close has stalled past `close_timeout`.
    CloseCheck(SocketId),
    /// Fail a TLS socket still handshaking.
    #[cfg(feature = "tls")]
    HandshakeCheck(SocketId),
}

/// `now + after`, capped at `MAX_DELAY` from now so it can never overflow `Instant`.
fn deadline_after(after: Duration) -> Instant {
    const MAX_DELAY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    Instant::now() + after.min(MAX_DELAY)
}

/// Token of the waker in the poller; socket ids stay below 2^53.
const WAKER_TOKEN: u64 = u64::MAX;
/// Largest UDP payload we receive (IPv6 jumbograms aside).
const UDP_MAX: usize = 65535;

pub struct Engine {
    core: Arc<Core>,
    poller: Poller,
    events: Vec<Event>,
    event_pos: usize,
    /// Messages produced by operations between polls, delivered first by the next poll.
    pending: Vec<OwnedMessage>,
    commands: Vec<Command>,
    timers: Timers,
    /// The spare descriptor for the EMFILE accept trick.
    reserve_fd: Option<OwnedFd>,
    internal: BinaryHeap<Reverse<(Instant, Internal)>>,
    /// Ciphertext read buffer of the TLS sockets.
    #[cfg(feature = "tls")]
    tls_scratch: Vec<u8>,
}

impl Engine {
    pub fn new(config: Config) -> io::Result<Engine> {
        let core = Arc::new(Core::new(config)?);
        let mut poller = Poller::new()?;
        poller.add(
            core.waker.fd(),
            WAKER_TOKEN,
            Interest {
                read: true,
                write: false,
            },
        )?;
        Ok(Engine {
            poller,
            events: Vec::with_capacity(64),
            event_pos: 0,
            pending: Vec::new(),
            commands: Vec::new(),
            timers: Timers::default(),
            reserve_fd: if core.config.reserve_fd {
                net::reserve_fd().ok()
            } else {
                None
            },
            internal: BinaryHeap::new(),
            #[cfg(feature = "tls")]
            tls_scratch: Vec::new(),
            core,
        })
    }

    /// A thread-safe handle to this engine.
    pub fn handle(&self) -> Handle {
        Handle::new(self.core.clone())
    }

    pub fn config(&self) -> &Config {
        &self.core.config
    }

    /// Number of open sockets.
    pub fn socket_count(&self) -> usize {
        self.core.slots.live()
    }

    /// Bytes queued for writing in all sockets (what `write_budget` bounds).
    pub fn queued_bytes(&self) -> usize {
        self.core
            .queued_total
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// Whether a message can still arrive without new calls: open sockets, timers or
    /// undelivered messages.
    pub fn is_idle(&self) -> bool {
        self.socket_count() == 0
            && self.timers.len() == 0
            && self.pending.is_empty()
            && self.event_pos >= self.events.len()
            && self.core.resolver.in_flight() == 0
    }

    // ---- operations on the poll thread ----

    pub fn listen(
        &mut self,
        addr: &Addr,
        opts: ListenOptions,
        owner: u64,
    ) -> Result<(SocketId, Option<Addr>)> {
        self.core.listen(addr, opts, owner)
    }

    pub fn connect(&mut self, addr: &Addr, owner: u64) -> Result<SocketId> {
        let id = self.core.connect(addr, owner, &mut self.pending)?;
        self.sync_id(id)?;
        Ok(id)
    }

    /// Connect to `host:port` without blocking: a numeric host connects at once, a
    /// name is looked up on a resolver thread and each address is tried in turn. The
    /// id is valid at once (state `reserve` while resolving; sends queue). `Open` or
    /// `Error` (with the resolver's or the last connect's error text) follows.
    pub fn connect_host(&mut self, host: &str, port: u16, owner: u64) -> Result<SocketId> {
        let id = self
            .core
            .connect_host(host, port, owner, &mut self.pending)?;
        self.sync_id(id)?;
        Ok(id)
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
        self.core.listen_host(host, port, opts, owner)
    }

    /// Resolve a host name, blocking the caller (numeric addresses are parsed).
    pub fn resolve(&self, host: &str) -> io::Result<Vec<std::net::IpAddr>> {
        self.core.resolver.lookup(host)
    }

    /// Resolve in the background: returns a request id; a `MsgKind::Resolved` message
    /// with that id in `ud` and `owner` follows.
    pub fn resolve_async(&mut self, host: &str, owner: u64) -> u64 {
        self.core.resolve_async(host, owner, &mut self.pending)
    }

    pub fn start(&mut self, id: SocketId, owner: u64) -> Result<()> {
        if self.core.start(id, owner)? {
            self.sync_id(id)?;
        }
        Ok(())
    }

    pub fn pause(&mut self, id: SocketId) -> Result<()> {
        if self.core.pause(id)? {
            self.sync_id(id)?;
        }
        Ok(())
    }

    pub fn resume(&mut self, id: SocketId) -> Result<()> {
        if self.core.resume(id)? {
            self.sync_id(id)?;
        }
        Ok(())
    }

    pub fn send(&mut self, id: SocketId, data: &[u8], prio: Priority) -> Result<()> {
        let now = self.core.now_cs();
        match self.core.send(id, data, prio, now, &mut self.pending)? {
            Sent::Done => Ok(()),
            Sent::NeedSync => self.sync_id(id),
            Sent::Broken(err) => {
                let text = err.to_string();
                self.abort(id, err);
                Err(Error::Io(io::Error::other(text)))
            }
            Sent::Overflow(err) => {
                self.abort(id, io::Error::other(err.to_string()));
                Err(err)
            }
        }
    }

    /// Close: flush what is queued, then close (`force`: drop the queue now). The
    /// owner gets `Close` once the socket is really closed, unless it was told already.
    pub fn close(&mut self, id: SocketId, force: bool) -> Result<()> {
        let core = self.core.clone();
        let mut sock = core.slots.lock(id).ok_or(Error::UnknownId)?;
        let flushable = matches!(
            sock.state,
            State::Connected | State::HalfCloseRead | State::PAccept | State::HalfCloseWrite
        );
        // A TLS socket always flushes (its close_notify), unless its handshake is not
        // done: then nothing queued could be sent, and it closes at once.
        #[cfg(feature = "tls")]
        let must_flush = match sock.tls.as_ref() {
            Some(t) => !t.is_handshaking(),
            None => sock.wants_write(),
        };
        #[cfg(not(feature = "tls"))]
        let must_flush = sock.wants_write();
        if force || !flushable || !must_flush {
            if !sock.reported {
                self.pending
                    .emit(MsgKind::Close, id, sock.owner, 0, b"", b"");
            }
            free_socket(&core, &mut self.poller, &mut sock);
            return Ok(());
        }
        if !sock.closing {
            sock.closing = true;
            sock.close_since = core.fresh_cs();
            if let Some(t) = core.config.close_timeout {
                self.internal
                    .push(Reverse((deadline_after(t), Internal::CloseCheck(id))));
            }
        }
        #[cfg(feature = "tls")]
        if sock.is_tls() {
            tls::flush(&core, &mut self.poller, &mut sock, &mut self.pending);
            return Ok(());
        }
        sync_socket(&mut self.poller, &mut sock)?;
        Ok(())
    }

    pub fn shutdown_write(&mut self, id: SocketId) -> Result<()> {
        if self.core.shutdown_write(id)? {
            self.sync_id(id)?;
        }
        Ok(())
    }

    /// After the peer's EOF keep the socket open for replies until `close` (`on`), or
    /// close it as soon as nothing is queued (the default, as Skynet).
    pub fn set_keep_open(&mut self, id: SocketId, on: bool) -> Result<()> {
        let core = self.core.clone();
        let mut sock = core.slots.lock(id).ok_or(Error::UnknownId)?;
        sock.keep_open = on;
        if !on && sock.state == State::HalfCloseRead && sock.wq.is_empty() {
            free_socket(&core, &mut self.poller, &mut sock);
        }
        Ok(())
    }

    pub fn set_limit(&mut self, id: SocketId, limit: usize) -> Result<()> {
        self.core.set_limit(id, limit)
    }

    pub fn set_nodelay(&mut self, id: SocketId, on: bool) -> Result<()> {
        self.core.set_nodelay(id, on)
    }

    pub fn set_keepalive(&mut self, id: SocketId, on: bool) -> Result<()> {
        self.core.set_keepalive(id, on)
    }

    pub fn udp(&mut self, bind: Option<&Addr>, v6: bool, owner: u64) -> Result<SocketId> {
        let id = self.core.udp(bind, v6, owner)?;
        self.sync_id(id)?;
        Ok(id)
    }

    pub fn udp_connect(&mut self, id: SocketId, peer: &Addr) -> Result<()> {
        self.core.udp_connect(id, peer)
    }

    pub fn sendto(&mut self, id: SocketId, to: Option<&Addr>, data: &[u8]) -> Result<()> {
        if self.core.sendto(id, to, data, &mut self.pending)? {
            self.sync_id(id)?;
        }
        Ok(())
    }

    // ---- TLS ----

    /// Start TLS on a connected stream socket (STARTTLS): a server context answers a
    /// handshake, a client context starts one. Anything queued before this call is
    /// sent as plaintext first. `server_name` (client): the name to send and verify;
    /// default: the context's, else the peer's IP address. A `Handshake` message
    /// follows when the handshake is done, or `Error` if it fails.
    #[cfg(feature = "tls")]
    pub fn tls_upgrade(
        &mut self,
        id: SocketId,
        ctx: &Arc<TlsContext>,
        server_name: Option<&str>,
    ) -> Result<()> {
        let core = self.core.clone();
        let mut sock = core.slots.lock(id).ok_or(Error::UnknownId)?;
        if sock.is_tls() {
            return Err(Error::State("socket already uses TLS"));
        }
        if sock.proto == socket::Proto::Udp
            || !matches!(sock.state, State::Connected | State::PAccept)
        {
            return Err(Error::State("TLS needs a connected stream socket"));
        }
        if sock.closing || sock.shut_wr {
            return Err(Error::State("socket is closing"));
        }
        let peer_ip = sock
            .raw_fd()
            .and_then(|fd| net::peer_addr(fd).ok().flatten())
            .and_then(|a| match a {
                Addr::Inet(sa) => Some(sa.ip().to_string()),
                Addr::Unix(_) => None,
            });
        let conn = ctx
            .connection(server_name, peer_ip.as_deref())
            .map_err(Error::Invalid)?;
        sock.wq.promote_all_low();
        let prefix = sock.wq.len_bytes();
        sock.tls = Some(Box::new(tls::TlsStream::new(conn, false, prefix)));
        tls::arm_timeout(&core, &mut self.internal, id);
        tls::flush(&core, &mut self.poller, &mut sock, &mut self.pending);
        Ok(())
    }

    /// `connect` with TLS: `Open` is reported once the handshake is done (then
    /// `Handshake`); a failed handshake reports `Error`. The server name defaults to
    /// the context's, else the address's IP.
    #[cfg(feature = "tls")]
    pub fn tls_connect(
        &mut self,
        addr: &Addr,
        ctx: &Arc<TlsContext>,
        server_name: Option<&str>,
        owner: u64,
    ) -> Result<SocketId> {
        let ip = match addr {
            Addr::Inet(sa) => Some(sa.ip().to_string()),
            Addr::Unix(_) => None,
        };
        let conn = self.tls_client(ctx, server_name, ip.as_deref())?;
        let mut msgs = Vec::new();
        let id = self.core.connect(addr, owner, &mut msgs)?;
        self.tls_attach_connect(id, conn, msgs)
    }

    /// `connect_host` with TLS; the server name defaults to the context's, else `host`.
    #[cfg(feature = "tls")]
    pub fn tls_connect_host(
        &mut self,
        host: &str,
        port: u16,
        ctx: &Arc<TlsContext>,
        server_name: Option<&str>,
        owner: u64,
    ) -> Result<SocketId> {
        let conn = self.tls_client(ctx, server_name, Some(host))?;
        let mut msgs = Vec::new();
        let id = self.core.connect_host(host, port, owner, &mut msgs)?;
        self.tls_attach_connect(id, conn, msgs)
    }

    #[cfg(feature = "tls")]
    fn tls_client(
        &self,
        ctx: &Arc<TlsContext>,
        server_name: Option<&str>,
        fallback: Option<&str>,
    ) -> Result<rustls::Connection> {
        if ctx.is_server() {
            return Err(Error::Invalid("tls connect needs a client context".into()));
        }
        ctx.connection(server_name, fallback)
            .map_err(Error::Invalid)
    }

    #[cfg(feature = "tls")]
    fn tls_attach_connect(
        &mut self,
        id: SocketId,
        conn: rustls::Connection,
        msgs: Vec<OwnedMessage>,
    ) -> Result<SocketId> {
        let core = self.core.clone();
        // A connect that finished at once reported `Open`: hold it until the handshake.
        self.pending.extend(
            msgs.into_iter()
                .filter(|m| !(m.kind == MsgKind::Open && m.id == id)),
        );
        let Some(mut sock) = core.slots.lock(id) else {
            return Err(Error::UnknownId);
        };
        sock.tls = Some(Box::new(tls::TlsStream::new(conn, true, 0)));
        tls::arm_timeout(&core, &mut self.internal, id);
        tls::flush(&core, &mut self.poller, &mut sock, &mut self.pending);
        Ok(id)
    }

    /// Make a listener hand out TLS sockets: each accepted socket gets a server
    /// connection of `ctx`; its `Handshake` (or `Error`) follows `start`.
    #[cfg(feature = "tls")]
    pub fn tls_listen(&mut self, id: SocketId, ctx: &Arc<TlsContext>) -> Result<()> {
        if !ctx.is_server() {
            return Err(Error::Invalid(
                "a TLS listener needs a server context".into(),
            ));
        }
        let mut sock = self.core.slots.lock(id).ok_or(Error::UnknownId)?;
        if !matches!(sock.state, State::PListen | State::Listen) {
            return Err(Error::State("not a listening socket"));
        }
        sock.tls_listen = Some(ctx.clone());
        Ok(())
    }

    /// The TLS session of a socket (`Err(State)` for a plain socket).
    #[cfg(feature = "tls")]
    pub fn tls_info(&self, id: SocketId) -> Result<TlsInfo> {
        let sock = self.core.slots.lock(id).ok_or(Error::UnknownId)?;
        tls::info(&sock).ok_or(Error::State("not a TLS socket"))
    }

    /// Whether `id` names an open socket (a cheap check: no syscall).
    pub fn is_open(&self, id: SocketId) -> bool {
        self.core.slots.lock(id).is_some()
    }

    pub fn info(&self, id: SocketId) -> Option<SocketInfo> {
        self.core.info(id)
    }

    pub fn info_all(&self) -> Vec<SocketInfo> {
        self.core
            .slots
            .live_ids()
            .into_iter()
            .filter_map(|id| self.core.info(id))
            .collect()
    }

    /// A timer firing `after` from now as a `Timer` message whose `ud` is the returned id.
    /// A timer `after` from now. Durations past what `Instant` can hold (e.g. from a
    /// huge Lua number) are capped at about a century instead of panicking.
    pub fn add_timer(&mut self, after: Duration) -> u64 {
        self.timers.add(deadline_after(after))
    }

    pub fn cancel_timer(&mut self, timer: u64) -> bool {
        self.timers.cancel(timer)
    }

    fn sync_id(&mut self, id: SocketId) -> Result<()> {
        let core = self.core.clone();
        let Some(mut sock) = core.slots.lock(id) else {
            return Ok(()); // closed meanwhile: nothing to register
        };
        #[cfg(feature = "tls")]
        if sock.is_tls() {
            // Sends on TLS sockets are written here, by the poll thread.
            tls::flush(&core, &mut self.poller, &mut sock, &mut self.pending);
            return Ok(());
        }
        sync_socket(&mut self.poller, &mut sock).map_err(Error::Io)
    }

    fn abort(&mut self, id: SocketId, err: io::Error) {
        let core = self.core.clone();
        let Some(mut sock) = core.slots.lock(id) else {
            return;
        };
        if !sock.reported {
            self.pending.emit(
                MsgKind::Error,
                id,
                sock.owner,
                0,
                err.to_string().as_bytes(),
                b"",
            );
        }
        free_socket(&core, &mut self.poller, &mut sock);
    }

    // ---- the poll ----

    /// Run one step: deliver queued messages, due timers and commands, wait for
    /// readiness at most `timeout` (`None`: until something happens) and process what
    /// the poller reports. Messages go to `batch` (cleared first). Returns their number.
    pub fn poll(&mut self, batch: &mut Batch, timeout: Option<Duration>) -> io::Result<usize> {
        batch.clear();
        self.core.update_time();
        self.run_commands(batch);
        for m in self.pending.drain(..) {
            batch.emit(m.kind, m.id, m.owner, m.ud, &m.data, &m.extra);
        }
        self.fire_timers(batch);
        if self.event_pos >= self.events.len() {
            self.events.clear();
            self.event_pos = 0;
            let wait = if batch.is_empty() {
                self.wait_time(timeout)
            } else {
                Some(Duration::ZERO)
            };
            self.poller.wait(&mut self.events, wait)?;
            self.core.update_time();
            self.fire_timers(batch);
        }
        let budget = self.core.config.batch_bytes;
        while self.event_pos < self.events.len() && batch.arena_len() < budget {
            let ev = self.events[self.event_pos];
            self.event_pos += 1;
            if ev.token == WAKER_TOKEN {
                self.core.waker.drain();
                self.run_commands(batch);
            } else {
                self.handle_event(ev, batch);
            }
        }
        Ok(batch.len())
    }

    fn wait_time(&mut self, timeout: Option<Duration>) -> Option<Duration> {
        let user = self.timers.next_deadline();
        let internal = self.internal.peek().map(|Reverse((at, _))| *at);
        let next = match (user, internal) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match next {
            None => timeout,
            Some(at) => {
                let until = at.saturating_duration_since(Instant::now());
                Some(timeout.map_or(until, |t| t.min(until)))
            }
        }
    }

    fn fire_timers(&mut self, batch: &mut Batch) {
        let now = Instant::now();
        self.timers
            .expire(now, |t| batch.emit(MsgKind::Timer, 0, 0, t, b"", b""));
        while let Some(Reverse((at, what))) = self.internal.peek().copied() {
            if at > now {
                break;
            }
            self.internal.pop();
            match what {
                Internal::AcceptResume(id) => self.accept_resume(id),
                Internal::CloseCheck(id) => self.close_check(id, batch),
                #[cfg(feature = "tls")]
                Internal::HandshakeCheck(id) => {
                    let core = self.core.clone();
                    let sock = core.slots.lock(id);
                    if let Some(mut sock) = sock {
                        tls::handshake_check(&core, &mut self.poller, &mut sock, batch);
                    }
                }
            }
        }
    }

    fn accept_resume(&mut self, id: SocketId) {
        if self.reserve_fd.is_none() && self.core.config.reserve_fd {
            self.reserve_fd = net::reserve_fd().ok();
        }
        let core = self.core.clone();
        let Some(mut sock) = core.slots.lock(id) else {
            return;
        };
        sock.accept_backoff = false;
        if let Err(e) = sync_socket(&mut self.poller, &mut sock) {
            fail(&core, &mut self.poller, &mut sock, &e, &mut self.pending);
        }
    }

    /// Force a stalled flushing close once `close_timeout` passed without progress.
    fn close_check(&mut self, id: SocketId, batch: &mut Batch) {
        let core = self.core.clone();
        let Some(timeout) = core.config.close_timeout else {
            return;
        };
        let Some(mut sock) = core.slots.lock(id) else {
            return; // closed meanwhile
        };
        if !sock.closing {
            return;
        }
        let last = sock.close_since.max(sock.stats.wtime);
        let idle = Duration::from_millis(core.fresh_cs().saturating_sub(last) * 10);
        if idle + Duration::from_millis(10) >= timeout {
            let note = format!(
                "close timeout: peer read nothing for {} ms; {} queued bytes dropped",
                timeout.as_millis(),
                sock.wq.len_bytes()
            );
            if !sock.reported {
                batch.emit(MsgKind::Close, id, sock.owner, 0, note.as_bytes(), b"");
            }
            free_socket(&core, &mut self.poller, &mut sock);
        } else {
            let rest = (timeout - idle).max(Duration::from_millis(10));
            self.internal
                .push(Reverse((deadline_after(rest), Internal::CloseCheck(id))));
        }
    }

    fn run_commands(&mut self, batch: &mut Batch) {
        self.core.take_commands(&mut self.commands);
        let mut cmds = std::mem::take(&mut self.commands);
        for cmd in cmds.drain(..) {
            match cmd {
                Command::Sync(id) => {
                    let _ = self.sync_id(id);
                }
                Command::Close { id, force } => {
                    let _ = self.close(id, force);
                }
                Command::Abort { id, err } => self.abort(id, err),
                Command::Report(m) => self.pending.push(m),
                Command::Resolved { job, result } => self.resolved(job, result),
                Command::Exit => self.pending.emit(MsgKind::Exit, 0, 0, 0, b"", b""),
            }
        }
        self.commands = cmds;
        for m in self.pending.drain(..) {
            batch.emit(m.kind, m.id, m.owner, m.ud, &m.data, &m.extra);
        }
    }

    fn resolved(&mut self, job: Job, result: io::Result<Vec<std::net::IpAddr>>) {
        self.core.resolver.done();
        match job {
            Job::Request { req, owner, host } => {
                core::resolved_message(req, owner, &host, &result, &mut self.pending)
            }
            Job::Connect { id, host, port } => {
                let core = self.core.clone();
                let Some(mut sock) = core.slots.lock(id) else {
                    return; // closed while resolving
                };
                if sock.state != State::Reserve || sock.fd.is_some() {
                    return;
                }
                match result {
                    Ok(ips) => {
                        sock.connect_rest = Some(
                            ips.into_iter()
                                .map(|ip| std::net::SocketAddr::new(ip, port))
                                .collect(),
                        );
                        connect_next(&core, &mut self.poller, &mut sock, &mut self.pending, None);
                    }
                    Err(e) => {
                        let e = io::Error::new(e.kind(), format!("resolve {host}: {e}"));
                        fail(&core, &mut self.poller, &mut sock, &e, &mut self.pending);
                    }
                }
            }
        }
    }

    fn handle_event(&mut self, ev: Event, batch: &mut Batch) {
        // A plain borrow (no Arc clone: two atomic operations per event saved); the
        // fields used below are disjoint from `core`.
        let core = &*self.core;
        let Some(mut sock) = core.slots.lock(ev.token) else {
            return; // the socket closed after the kernel reported it
        };
        let poller = &mut self.poller;
        match sock.state {
            State::Listen => {
                if sock.wants_read()
                    && !accept_ready(
                        core,
                        &mut self.reserve_fd,
                        &mut sock,
                        batch,
                        &mut self.internal,
                    )
                {
                    // Out of descriptors with no spare to shed the connection: rest.
                    sock.accept_backoff = true;
                    if let Err(e) = sync_socket(poller, &mut sock) {
                        fail(core, poller, &mut sock, &e, batch);
                        return;
                    }
                    let at = deadline_after(core.config.accept_backoff);
                    self.internal
                        .push(Reverse((at, Internal::AcceptResume(sock.id))));
                }
            }
            State::Connecting => connect_ready(core, poller, &mut sock, batch),
            State::Bind => {
                if (ev.readable || ev.error) && sock.wants_read() {
                    udp_read(core, &mut sock, batch);
                }
                if ev.writable {
                    udp_flush(core, poller, &mut sock, batch);
                }
            }
            #[cfg(feature = "tls")]
            _ if sock.is_tls() => {
                tls::on_event(core, poller, &mut sock, ev, batch, &mut self.tls_scratch)
            }
            _ => {
                if (ev.readable || ev.error)
                    && sock.wants_read()
                    && !stream_read(core, poller, &mut sock, batch)
                {
                    return;
                }
                if (ev.writable || ev.error) && !sock.wq.is_empty() {
                    stream_flush(core, poller, &mut sock, batch);
                }
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.core.resolver.shutdown();
        // Close every socket (OwnedFd drops close the descriptors).
        for id in self.core.slots.live_ids() {
            if let Some(mut sock) = self.core.slots.lock(id) {
                free_socket(&self.core, &mut self.poller, &mut sock);
            }
        }
    }
}

// ---- per-socket steps of the poll thread ----

/// Make the poller registration match what the socket wants now.
fn sync_socket(poller: &mut Poller, sock: &mut Socket) -> io::Result<()> {
    let want = sock.interest();
    let Some(fd) = sock.raw_fd() else {
        return Ok(());
    };
    match sock.registered {
        None if want.is_none() => {}
        None => {
            poller.add(fd, sock.id, want)?;
            sock.registered = Some(want);
        }
        Some(_) if want.is_none() => {
            // Deregister rather than keep a no-interest entry: hang-ups are reported
            // regardless of interest and would spin a level-triggered loop.
            poller.delete(fd)?;
            sock.registered = None;
        }
        Some(cur) if cur != want => {
            poller.modify(fd, sock.id, want)?;
            sock.registered = Some(want);
        }
        Some(_) => {}
    }
    Ok(())
}

/// Release the socket: deregister, close the fd, return the slot.
fn free_socket(core: &Core, poller: &mut Poller, sock: &mut Socket) {
    if let (Some(_), Some(fd)) = (sock.registered, sock.raw_fd()) {
        let _ = poller.delete(fd);
    }
    let id = sock.id;
    let file = sock.unlink.take();
    core.queued_total
        .fetch_sub(sock.wq.len_bytes(), std::sync::atomic::Ordering::Relaxed);
    *sock = Socket::default(); // drops the OwnedFd: the descriptor is closed here
    if let Some(f) = file {
        f.remove(); // after the close, so nobody can connect to a dead listener's file
    }
    core.slots.release(id);
}

/// Tell the owner the socket failed (unless it already knows) and release it.
fn fail(core: &Core, poller: &mut Poller, sock: &mut Socket, err: &io::Error, out: &mut impl Sink) {
    if !sock.reported {
        out.emit(
            MsgKind::Error,
            sock.id,
            sock.owner,
            0,
            err.to_string().as_bytes(),
            b"",
        );
    }
    free_socket(core, poller, sock);
}

/// Accept what is pending. Returns false when the listener must back off: out of
/// descriptors and the spare could not take the connection off the queue.
/// Report a failed accept to the listener's owner; the listener stays open (`ud == 1`).
fn listener_error(listener: &Socket, msg: &str, out: &mut Batch) {
    out.emit(
        MsgKind::Error,
        listener.id,
        listener.owner,
        1,
        msg.as_bytes(),
        b"",
    );
}

fn accept_ready(
    core: &Core,
    reserve: &mut Option<OwnedFd>,
    listener: &mut Socket,
    out: &mut Batch,
    internal: &mut BinaryHeap<Reverse<(Instant, Internal)>>,
) -> bool {
    #[cfg(not(feature = "tls"))]
    let _ = internal;
    let lfd = listener.raw_fd().expect("listener has an fd");
    for _ in 0..core.config.accept_burst {
        match net::accept(lfd) {
            Ok((fd, peer)) => {
                let Some((id, mut sock)) = core.slots.reserve() else {
                    drop(fd); // closing it tells the peer at once
                    let msg = "accept: too many sockets (max_sockets reached)";
                    listener_error(listener, msg, out);
                    return true;
                };
                core.init_socket(
                    &mut sock,
                    fd,
                    State::PAccept,
                    listener.proto,
                    listener.owner,
                );
                #[cfg(feature = "tls")]
                if let Some(ctx) = &listener.tls_listen {
                    match ctx.connection(None, None) {
                        Ok(conn) => {
                            sock.tls = Some(Box::new(tls::TlsStream::new(conn, false, 0)));
                            tls::arm_timeout(core, internal, id);
                        }
                        Err(e) => {
                            *sock = Socket::default(); // closes the descriptor
                            core.slots.release(id);
                            listener_error(listener, &format!("accept: {e}"), out);
                            continue;
                        }
                    }
                }
                let text = core::display_addr(peer.as_ref());
                out.emit(
                    MsgKind::Accept,
                    listener.id,
                    listener.owner,
                    id,
                    text.as_bytes(),
                    b"",
                );
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) => {
                // Out of descriptors: free the spare, take the connection off the queue
                // and close it (the peer sees EOF), so the level-triggered listener does
                // not spin on it. Without a spare, or if that fails, back off instead.
                let shed = if reserve.take().is_some() {
                    let shed = match net::accept(lfd) {
                        Ok((fd, _)) => {
                            drop(fd);
                            true
                        }
                        Err(_) => false,
                    };
                    *reserve = if core.config.reserve_fd {
                        net::reserve_fd().ok()
                    } else {
                        None
                    };
                    shed && reserve.is_some()
                } else {
                    false
                };
                let msg = if shed {
                    format!("accept: {e}; the pending connection was closed")
                } else {
                    format!(
                        "accept: {e}; not accepting for {} ms",
                        core.config.accept_backoff.as_millis()
                    )
                };
                listener_error(listener, &msg, out);
                return shed;
            }
            // The peer gave up before we accepted: nothing to report.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ECONNABORTED) | Some(libc::EPROTO)
                ) => {}
            Err(e) => {
                let msg = format!("accept: {e}");
                listener_error(listener, &msg, out);
                return true;
            }
        }
    }
    true
}

/// `connect_host`: start a connect to the next address left, after `last` failed.
/// With none left, report the last error and release the socket.
fn connect_next(
    core: &Core,
    poller: &mut Poller,
    sock: &mut Socket,
    out: &mut impl Sink,
    mut last: Option<io::Error>,
) {
    if let (Some(_), Some(fd)) = (sock.registered, sock.raw_fd()) {
        let _ = poller.delete(fd);
    }
    sock.registered = None;
    sock.fd = None;
    sock.state = State::Reserve;
    while let Some(addr) = sock.connect_rest.as_mut().and_then(|r| r.pop_front()) {
        match net::connect(&Addr::Inet(addr)) {
            Ok((fd, done)) => {
                core.apply_nodelay(std::os::fd::AsRawFd::as_raw_fd(&fd));
                sock.fd = Some(fd);
                sock.state = State::Connecting;
                if done {
                    connected(core, poller, sock, out);
                } else if let Err(e) = sync_socket(poller, sock) {
                    fail(core, poller, sock, &e, out);
                }
                return;
            }
            Err(e) => last = Some(e),
        }
    }
    let e = last.unwrap_or_else(|| io::Error::other("no address to connect to"));
    fail(core, poller, sock, &e, out);
}

/// A connect finished: report `Open`, send a FIN asked for meanwhile, watch the socket.
fn connected(core: &Core, poller: &mut Poller, sock: &mut Socket, out: &mut impl Sink) {
    let fd = sock.raw_fd().expect("connected socket has an fd");
    sock.state = State::Connected;
    sock.connect_rest = None;
    let peer = net::peer_addr(fd).ok().flatten();
    let text = core::display_addr(peer.as_ref());
    // A TLS connect reports `Open` when its handshake is done.
    if !sock.is_tls() {
        out.emit(MsgKind::Open, sock.id, sock.owner, 0, text.as_bytes(), b"");
    }
    // `shutdown_write` while connecting with nothing queued: send the FIN now
    // (with data queued, the flush sends it once the queue drains).
    if sock.shut_wr && sock.wq.is_empty() && !sock.is_tls() {
        if let Err(e) = net::shutdown(fd, net::Shutdown::Write) {
            fail(core, poller, sock, &e, out);
            return;
        }
        sock.state = State::HalfCloseWrite;
    }
    #[cfg(feature = "tls")]
    if sock.is_tls() {
        tls::flush(core, poller, sock, out); // the ClientHello
        return;
    }
    if let Err(e) = sync_socket(poller, sock) {
        fail(core, poller, sock, &e, out);
    }
}

fn connect_ready(core: &Core, poller: &mut Poller, sock: &mut Socket, out: &mut Batch) {
    let fd = sock.raw_fd().expect("connecting socket has an fd");
    match net::take_error(fd) {
        Ok(None) => connected(core, poller, sock, out),
        Ok(Some(e)) | Err(e) => {
            if sock.connect_rest.as_ref().is_some_and(|r| !r.is_empty()) {
                connect_next(core, poller, sock, out, Some(e));
            } else {
                fail(core, poller, sock, &e, out);
            }
        }
    }
}

/// One read. Returns false when the socket was released.
fn stream_read(core: &Core, poller: &mut Poller, sock: &mut Socket, out: &mut Batch) -> bool {
    let fd = sock.raw_fd().expect("stream socket has an fd");
    let size = sock.read_size as usize;
    let start = out.arena_len();
    match net::read_append(fd, out.arena_mut(), size) {
        Ok(0) => {
            // Peer EOF. With nothing left to send (or our FIN already sent) the socket
            // is done, unless its owner asked to answer after EOF (`keep_open`);
            // otherwise keep it half-closed until the queue drains.
            let owner = sock.owner;
            let id = sock.id;
            if !sock.reported {
                out.emit(MsgKind::Close, id, owner, 0, b"", b"");
            }
            if (sock.wq.is_empty() && !sock.keep_open) || sock.state == State::HalfCloseWrite {
                free_socket(core, poller, sock);
                return false;
            }
            sock.state = State::HalfCloseRead;
            sock.reported = true;
            if let Err(e) = sync_socket(poller, sock) {
                free_socket(core, poller, sock);
                let _ = e;
                return false;
            }
            true
        }
        Ok(n) => {
            sock.stats.read += n as u64;
            sock.stats.rtime = core.now_cs();
            if n == size {
                sock.read_size = (size * 2).min(core.config.max_read) as u32;
            } else if size > core.config.min_read && n * 2 < size {
                sock.read_size = (size / 2) as u32;
            }
            out.push_appended(MsgKind::Data, sock.id, sock.owner, 0, start, start + n);
            true
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
        Err(e) => {
            fail(core, poller, sock, &e, out);
            false
        }
    }
}

/// Write as much of the queue as the kernel takes, with one gathering syscall per
/// round; on drain finish a pending close or write shutdown.
fn stream_flush(core: &Core, poller: &mut Poller, sock: &mut Socket, out: &mut Batch) {
    let fd = sock.raw_fd().expect("stream socket has an fd");
    loop {
        if sock.wq.is_empty() {
            break;
        }
        let mut slices: Vec<&[u8]> = Vec::new();
        sock.wq.front_slices(&mut slices, 64);
        let total: usize = slices.iter().map(|s| s.len()).sum();
        let res = if slices.len() == 1 {
            net::write(fd, slices[0])
        } else {
            net::write_vectored(fd, &slices)
        };
        drop(slices);
        match res {
            Ok(n) => {
                sock.wq.consume(n);
                core.queued_total
                    .fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
                sock.stats.written += n as u64;
                sock.stats.wtime = core.now_cs();
                if n < total {
                    break; // the kernel buffer is full: wait for the next writable event
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => {
                fail(core, poller, sock, &e, out);
                return;
            }
        }
    }
    if !sock.wq.is_empty() {
        return;
    }
    if sock.warn_at > core.config.warn_size {
        sock.warn_at = core.config.warn_size;
        out.emit(MsgKind::Warning, sock.id, sock.owner, 0, b"", b"");
    }
    if sock.closing || (sock.state == State::HalfCloseRead && !sock.keep_open) {
        if !sock.reported {
            out.emit(MsgKind::Close, sock.id, sock.owner, 0, b"", b"");
        }
        free_socket(core, poller, sock);
        return;
    }
    if sock.shut_wr && sock.state != State::HalfCloseWrite {
        if let Err(e) = net::shutdown(fd, net::Shutdown::Write) {
            fail(core, poller, sock, &e, out);
            return;
        }
        sock.state = State::HalfCloseWrite;
    }
    if let Err(e) = sync_socket(poller, sock) {
        fail(core, poller, sock, &e, out);
    }
}

fn udp_read(core: &Core, sock: &mut Socket, out: &mut Batch) {
    let fd = sock.raw_fd().expect("udp socket has an fd");
    let start = out.arena_len();
    match net::recvfrom_append(fd, out.arena_mut(), UDP_MAX) {
        Ok((n, from)) => {
            sock.stats.read += n as u64;
            sock.stats.rtime = core.now_cs();
            let mid = start + n;
            if let Some(a) = from {
                address::encode_compact(&a, out.arena_mut());
            }
            out.push_appended(MsgKind::Udp, sock.id, sock.owner, 0, start, mid);
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => {
            // ICMP errors (e.g. port unreachable after a connected send) fail a
            // datagram, not the socket.
            out.arena_mut().truncate(start);
            out.emit(
                MsgKind::Error,
                sock.id,
                sock.owner,
                1,
                e.to_string().as_bytes(),
                b"",
            );
        }
    }
}

fn udp_flush(core: &Core, poller: &mut Poller, sock: &mut Socket, out: &mut Batch) {
    let fd = sock.raw_fd().expect("udp socket has an fd");
    let (id, owner) = (sock.id, sock.owner);
    let now = core.now_cs();
    let mut written = 0u64;
    if let Some(udp) = sock.udp.as_mut() {
        while let Some((data, to)) = udp.queue.front() {
            match net::sendto(fd, data, Some(to)) {
                Ok(_) => {
                    written += data.len() as u64;
                    udp.queue.pop_front();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    udp.queue.pop_front();
                    out.emit(MsgKind::Error, id, owner, 1, e.to_string().as_bytes(), b"");
                }
            }
        }
    }
    if written > 0 {
        sock.stats.written += written;
        sock.stats.wtime = now;
    }
    if let Err(e) = sync_socket(poller, sock) {
        fail(core, poller, sock, &e, out);
    }
}
