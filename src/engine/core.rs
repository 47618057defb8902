//! The part of the engine shared by the poll thread and every `Handle`: the slot
//! pool, the configuration, the clock, the resolver, the write budget counter, and
//! the command queue (with its waker) through which other threads hand the poll
//! thread what only it can do.

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use super::config::Config;
use super::fsm::State;
use super::message::Batch;
use super::resolver::{Job, Resolver};
use super::slots::{Slots, SocketId};
use super::socket::{Proto, Socket};
use crate::sys::net;
use crate::sys::Waker;

/// Work for the poll thread, queued from another thread (see `ops::Ops`).
pub(crate) enum Command {
    /// Bring the poller registration of this socket in line with its state (a TLS
    /// socket: flush it).
    Sync(SocketId),
    /// A flushing close began on another thread: arm the close timeout and sync.
    Closing(SocketId),
    /// The socket failed on another thread (its owner was told): release it.
    Free(SocketId),
    /// Messages produced by operations on another thread.
    Report(Batch),
    /// A TLS connection was attached on another thread: arm the handshake timeout
    /// and start the handshake.
    #[cfg(feature = "tls")]
    TlsStarted(SocketId),
    /// A resolver worker finished a lookup.
    Resolved {
        job: Job,
        result: io::Result<Vec<IpAddr>>,
    },
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
    pub next_request: AtomicU64,
    /// Bytes queued for writing in all sockets (checked against `write_budget`).
    queued_total: AtomicUsize,
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

    /// Advance the poll thread's clock (`now_cs`) to `now`, a fresh clock reading
    /// (one reading serves this and the timers of the same poll step).
    pub fn update_time(&self, now: Instant) {
        let cs = (now.saturating_duration_since(self.epoch).as_millis() / 10) as u64;
        self.time_cs.fetch_max(cs, Ordering::Relaxed);
    }

    pub fn queued(&self) -> usize {
        self.queued_total.load(Ordering::Relaxed)
    }

    pub fn add_queued(&self, n: usize) {
        self.queued_total.fetch_add(n, Ordering::Relaxed);
    }

    pub fn sub_queued(&self, n: usize) {
        self.queued_total.fetch_sub(n, Ordering::Relaxed);
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

    /// Fill a freshly reserved slot: state, owner and the configured read size,
    /// warning threshold and write limit; the descriptor if there is one yet.
    pub(crate) fn init_socket(
        &self,
        sock: &mut Socket,
        fd: Option<OwnedFd>,
        state: State,
        proto: Proto,
        owner: u64,
    ) {
        if let Some(fd) = &fd {
            if proto == Proto::Tcp && !matches!(state, State::PListen | State::Listen) {
                self.apply_nodelay(fd.as_raw_fd());
            }
        }
        sock.fd = fd;
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
    pub(crate) fn apply_nodelay(&self, fd: RawFd) {
        if self.config.nodelay {
            let _ = net::set_nodelay(fd, true);
        }
    }

    /// Give a socket that never got a descriptor registered back to the pool (an
    /// operation that failed half-way, on any thread).
    pub(crate) fn discard(&self, sock: &mut Socket) {
        let id = sock.id;
        *sock = Socket::default();
        self.slots.release(id);
    }
}
