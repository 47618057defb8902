//! [`Engine`]: the poll thread's side. `poll` delivers what operations produced
//! between polls, runs other threads' commands, fires timers and internal deadlines,
//! waits for readiness and hands each ready socket to its I/O step (`stream.rs`,
//! `tls`), all into one [`Batch`].

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::MutexGuard;

use super::config::Config;
use super::core::{Command, Core};
use super::error::Result;
use super::exec::PollIo;
use super::fsm::{State, Step};
use super::handle::Handle;
use super::message::{Batch, Msg};
use super::ops::{self, Direct, Ops};
use super::resolver::{addresses_text, Job};
use super::slots::SocketId;
use super::socket::{Priority, Socket};
use super::stream;
use super::timer::{deadline_after, Deadlines, Internal, Timers};
use crate::sys::net;
use crate::sys::{Event, Interest, Poller};

/// Token of the waker in the poller; socket ids stay below 2^53.
const WAKER_TOKEN: u64 = u64::MAX;

/// The socket server. One thread owns it and calls [`Engine::poll`]; its operations
/// are [`Engine::ops`], and any thread may use a [`Handle`] for the same operations.
pub struct Engine {
    core: Arc<Core>,
    /// The poller side; `None` in a remote view (`Handle::engine`, `Engine::detach`):
    /// its operations go to the poll thread like a `Handle`'s, and it cannot poll.
    io: Option<PollIo>,
    events: Vec<Event>,
    event_pos: usize,
    /// Messages produced by operations between polls, delivered first by the next poll.
    pending: Batch,
    commands: Vec<Command>,
    timers: Timers,
    /// The spare descriptor for the EMFILE accept trick.
    reserve_fd: Option<OwnedFd>,
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
            io: Some(PollIo {
                poller,
                deadlines: Deadlines::default(),
            }),
            events: Vec::with_capacity(64),
            event_pos: 0,
            pending: Batch::new(),
            commands: Vec::new(),
            timers: Timers::default(),
            reserve_fd: if core.config.reserve_fd {
                net::reserve_fd().ok()
            } else {
                None
            },
            #[cfg(feature = "tls")]
            tls_scratch: Vec::new(),
            core,
        })
    }

    /// The socket operations, carried out at once on this (the poll) thread.
    #[inline]
    pub fn ops(&mut self) -> Ops<'_> {
        ops_of(&self.core, &mut self.pending, &mut self.io)
    }

    /// `ops().send(id, data, prio)`, with its common case (a direct write the kernel
    /// takes whole, see `Ops::send`) done before the operations are set up: one send
    /// per message is the hot path of every echo-like server.
    #[inline(always)]
    pub fn send(&mut self, id: SocketId, data: &[u8], prio: Priority) -> Result<()> {
        let core = &self.core;
        let sock = ops::lock_socket(core, id)?;
        if sock.can_send_directly() && !data.is_empty() {
            return match ops::write_direct(core, self.io.is_some(), sock, data) {
                Direct::Sent => Ok(()),
                Direct::Rest(sock, res) => {
                    ops_of(core, &mut self.pending, &mut self.io).after_write(sock, data, prio, res)
                }
            };
        }
        ops_of(core, &mut self.pending, &mut self.io).send_slow(sock, id, data, prio)
    }

    /// A view of the engine behind `core` that cannot poll: its operations work as a
    /// [`Handle`]'s (for an owner living on another thread than the poll thread).
    pub(crate) fn remote(core: Arc<Core>) -> Engine {
        Engine {
            core,
            io: None,
            events: Vec::new(),
            event_pos: 0,
            pending: Batch::new(),
            commands: Vec::new(),
            timers: Timers::default(),
            reserve_fd: None,
            #[cfg(feature = "tls")]
            tls_scratch: Vec::new(),
        }
    }

    /// Move the poll side out, to be run on another thread: the returned engine polls
    /// (with this one's sockets, timers and undelivered messages); `self` becomes a
    /// remote view. `None` if `self` is a remote view already.
    pub fn detach(&mut self) -> Option<Engine> {
        let io = self.io.take()?;
        Some(Engine {
            core: self.core.clone(),
            io: Some(io),
            events: std::mem::take(&mut self.events),
            event_pos: std::mem::take(&mut self.event_pos),
            pending: std::mem::take(&mut self.pending),
            commands: std::mem::take(&mut self.commands),
            timers: std::mem::take(&mut self.timers),
            reserve_fd: self.reserve_fd.take(),
            #[cfg(feature = "tls")]
            tls_scratch: std::mem::take(&mut self.tls_scratch),
        })
    }

    /// Whether this is a remote view (it cannot poll; see [`Engine::detach`]).
    pub fn is_remote(&self) -> bool {
        self.io.is_none()
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
        self.core.queued()
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

    /// A timer firing `after` from now as a `Timer` message carrying the returned id.
    /// Durations past what `Instant` can hold (e.g. from a huge Lua number) are capped
    /// at about a century instead of panicking.
    pub fn add_timer(&mut self, after: Duration) -> u64 {
        self.timers.add(deadline_after(after))
    }

    pub fn cancel_timer(&mut self, timer: u64) -> bool {
        self.timers.cancel(timer)
    }

    // ---- the poll ----

    /// Run one step: deliver queued messages, due timers and commands, wait for
    /// readiness at most `timeout` (`None`: until something happens) and process what
    /// the poller reports. Messages go to `batch` (cleared first). Returns their number.
    pub fn poll(&mut self, batch: &mut Batch, timeout: Option<Duration>) -> io::Result<usize> {
        batch.clear();
        if self.io.is_none() {
            return Err(io::Error::other(
                "this engine is a remote view: its poll thread is elsewhere",
            ));
        }
        // One clock reading for the clock and the timers (and one after the wait).
        let now = Instant::now();
        self.core.update_time(now);
        self.run_commands(batch);
        self.fire_timers(batch, now);
        if self.event_pos >= self.events.len() {
            self.events.clear();
            self.event_pos = 0;
            let wait = if batch.is_empty() {
                self.wait_time(timeout)
            } else {
                Some(Duration::ZERO)
            };
            if let Some(io) = &mut self.io {
                io.poller.wait(&mut self.events, wait)?;
            }
            let now = Instant::now();
            self.core.update_time(now);
            self.fire_timers(batch, now);
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
        let internal = self.io.as_ref().and_then(|io| io.deadlines.next());
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

    /// Fire the user timers and internal deadlines due at `now`.
    fn fire_timers(&mut self, batch: &mut Batch, now: Instant) {
        self.timers
            .expire(now, |timer| batch.push(Msg::Timer { timer }));
        let Some(io) = &mut self.io else {
            return;
        };
        while let Some(what) = io.deadlines.pop_due(now) {
            let core = &*self.core;
            let id = match what {
                Internal::AcceptResume(id) | Internal::CloseCheck(id) => id,
                #[cfg(feature = "tls")]
                Internal::HandshakeCheck(id) => id,
            };
            if matches!(what, Internal::AcceptResume(_))
                && self.reserve_fd.is_none()
                && core.config.reserve_fd
            {
                self.reserve_fd = net::reserve_fd().ok();
            }
            let Some(mut sock) = core.slots.lock(id).filter(|s| !s.freeing) else {
                continue; // closed meanwhile
            };
            let step = match what {
                Internal::AcceptResume(_) => {
                    sock.accept_backoff = false;
                    Step::Sync
                }
                Internal::CloseCheck(_) => close_check(core, io, &mut sock, batch),
                #[cfg(feature = "tls")]
                Internal::HandshakeCheck(_) => super::tls::handshake_check(core, &mut sock, batch),
            };
            io.carry(core, &mut sock, step, batch);
        }
    }

    /// Carry out what other threads queued, then deliver every pending message.
    fn run_commands(&mut self, batch: &mut Batch) {
        self.core.take_commands(&mut self.commands);
        let mut cmds = std::mem::take(&mut self.commands);
        for cmd in cmds.drain(..) {
            match cmd {
                Command::Sync(id) => self.ops().sync(id),
                Command::Closing(id) => {
                    if let (Some(mut sock), Some(io)) = (self.core.slots.lock(id), &mut self.io) {
                        io.carry(&self.core, &mut sock, Step::Closing, &mut self.pending);
                    }
                }
                Command::Free(id) => {
                    if let (Some(mut sock), Some(io)) = (self.core.slots.lock(id), &mut self.io) {
                        io.free(&self.core, &mut sock);
                    }
                }
                Command::Report(b) => self.pending.append(&b),
                #[cfg(feature = "tls")]
                Command::TlsStarted(id) => {
                    if let (Some(mut sock), Some(io)) = (self.core.slots.lock(id), &mut self.io) {
                        super::tls::arm_timeout(&self.core, io, id);
                        io.carry(&self.core, &mut sock, Step::Sync, &mut self.pending);
                    }
                }
                Command::Resolved { job, result } => self.resolved(job, result),
            }
        }
        self.commands = cmds;
        if !self.pending.is_empty() {
            batch.append(&self.pending);
            self.pending.clear();
        }
    }

    fn resolved(&mut self, job: Job, result: io::Result<Vec<std::net::IpAddr>>) {
        self.core.resolver.done();
        match job {
            Job::Request { req, owner, host } => {
                let text = match &result {
                    Ok(ips) => Ok(addresses_text(ips)),
                    Err(e) => Err(format!("resolve {host}: {e}")),
                };
                self.pending.push(Msg::Resolved {
                    owner,
                    request: req,
                    result: match &text {
                        Ok(t) => Ok(t.as_bytes()),
                        Err(t) => Err(t.as_bytes()),
                    },
                });
            }
            Job::Connect { id, host, port } => {
                let core = &*self.core;
                let Some(io) = &mut self.io else {
                    return;
                };
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
                        stream::connect_next(core, io, &mut sock, &mut self.pending, None);
                    }
                    Err(e) => {
                        let step = sock.fail(&format!("resolve {host}: {e}"), &mut self.pending);
                        io.carry(core, &mut sock, step, &mut self.pending);
                    }
                }
            }
        }
    }

    #[inline(always)]
    fn handle_event(&mut self, ev: Event, batch: &mut Batch) {
        // A plain borrow (no Arc clone: two atomic operations per event saved); the
        // fields used below are disjoint from `core`.
        let core = &*self.core;
        let Some(sock) = core.slots.lock(ev.token) else {
            return; // the socket closed after the kernel reported it
        };
        let Some(io) = &mut self.io else {
            return;
        };
        // The common case, kept small in the poll loop: only readable, on a plain
        // connected stream that reads. `OtherEvent::handle` would do just this read
        // for it (no flush: the event is not writable).
        if ev.only_readable() && sock.reads_plain_stream() {
            let mut sock = sock;
            stream::stream_read(core, io, &mut sock, batch);
            return;
        }
        let mut other = OtherEvent {
            core,
            io,
            reserve_fd: &mut self.reserve_fd,
            #[cfg(feature = "tls")]
            tls_scratch: &mut self.tls_scratch,
        };
        other.handle(sock, ev, batch);
    }
}

/// What an event other than a plain read needs of the engine (`Engine::handle_event`).
struct OtherEvent<'a> {
    core: &'a Core,
    io: &'a mut PollIo,
    reserve_fd: &'a mut Option<OwnedFd>,
    #[cfg(feature = "tls")]
    tls_scratch: &'a mut Vec<u8>,
}

impl OtherEvent<'_> {
    #[inline(never)]
    fn handle(&mut self, mut sock: MutexGuard<'_, Socket>, ev: Event, batch: &mut Batch) {
        let (core, io) = (self.core, &mut *self.io);
        if sock.freeing {
            return; // released on another thread: its Free command is on the way
        }
        match sock.state {
            State::Listen => {
                if sock.wants_read()
                    && !stream::accept_ready(core, io, self.reserve_fd, &mut sock, batch)
                {
                    // Out of descriptors with no spare to shed the connection: rest.
                    sock.accept_backoff = true;
                    let id = sock.id;
                    io.deadlines
                        .push(core.config.accept_backoff, Internal::AcceptResume(id));
                    io.carry(core, &mut sock, Step::Sync, batch);
                }
            }
            State::Connecting => stream::connect_ready(core, io, &mut sock, batch),
            State::Bind => {
                if (ev.readable() || ev.error()) && sock.wants_read() {
                    stream::udp_read(core, &mut sock, batch);
                }
                if ev.writable() {
                    stream::udp_flush(core, io, &mut sock, batch);
                }
            }
            #[cfg(feature = "tls")]
            _ if sock.is_tls() => {
                super::tls::on_event(core, io, &mut sock, ev, batch, self.tls_scratch)
            }
            _ => {
                if (ev.readable() || ev.error())
                    && sock.wants_read()
                    && !stream::stream_read(core, io, &mut sock, batch)
                {
                    return;
                }
                if (ev.writable() || ev.error()) && !sock.wq.is_empty() {
                    stream::stream_flush(core, io, &mut sock, batch);
                }
            }
        }
    }
}

/// The operations of an engine whose fields are borrowed apart (`Engine::ops`).
#[inline(always)]
fn ops_of<'a>(core: &'a Arc<Core>, pending: &'a mut Batch, io: &'a mut Option<PollIo>) -> Ops<'a> {
    match io {
        Some(io) => Ops::on_poll_thread(core, pending, io),
        None => Ops::remote(core),
    }
}

/// A stalled flushing close is forced once `close_timeout` passed without progress
/// (measured from the last successful write); otherwise check again later.
fn close_check(core: &Core, io: &mut PollIo, sock: &mut Socket, batch: &mut Batch) -> Step {
    let (Some(timeout), true) = (core.config.close_timeout, sock.closing) else {
        return Step::Done;
    };
    let last = sock.close_since.max(sock.stats.wtime);
    let idle = Duration::from_millis(core.fresh_cs().saturating_sub(last) * 10);
    if idle + Duration::from_millis(10) >= timeout {
        let note = format!(
            "close timeout: peer read nothing for {} ms; {} queued bytes dropped",
            timeout.as_millis(),
            sock.wq.len_bytes()
        );
        sock.close_timed_out(&note, batch)
    } else {
        let rest = (timeout - idle).max(Duration::from_millis(10));
        io.deadlines.push(rest, Internal::CloseCheck(sock.id));
        Step::Done
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Only the engine that polls owns the sockets: a remote view leaves them be.
        let Some(io) = &mut self.io else {
            return;
        };
        self.core.resolver.shutdown();
        // Close every socket (OwnedFd drops close the descriptors).
        for id in self.core.slots.live_ids() {
            if let Some(mut sock) = self.core.slots.lock(id) {
                io.free(&self.core, &mut sock);
            }
        }
    }
}
