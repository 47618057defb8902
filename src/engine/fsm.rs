//! The socket state machine, in one place: the states, what each state wants from
//! the poller, and every transition as a method of [`Socket`].
//!
//! A transition changes the socket and returns a [`Step`]: what its caller must carry
//! out (change the poller registration, arm the close timeout, release the slot).
//! Messages for the owner go into the `out` batch it is given. Transitions never touch
//! the poller or the slot pool, so the same transition serves the poll thread (which
//! carries the step out at once, `ops::carry`) and any other thread (which turns it
//! into a command for the poll thread). The only system calls made here are the ones
//! that *are* the transition: the FIN of a write shutdown.
//!
//! | state | how it is entered | left by |
//! |---|---|---|
//! | `Reserve` | `connect_host` reserved the id, the name is being looked up | `connecting` (address found), `fail` |
//! | `PListen` | `listen` | `start` → `Listen`; `close` |
//! | `Listen` | `start` | `close`, `fail` |
//! | `Connecting` | non-blocking connect in progress | `connected` → `Connected`, `fail`, `close` |
//! | `Connected` | `connected`; `start` of a `PAccept` socket | `on_eof` → `HalfCloseRead`; `on_drained` with `shut_wr` → `HalfCloseWrite`; `close`, `fail` |
//! | `HalfCloseRead` | `on_eof` with writes queued or `keep_open` | `on_drained` / `set_keep_open(false)` / `close` → freed |
//! | `HalfCloseWrite` | FIN sent (`shutdown_write`, or `on_drained` after it) | `on_eof` → freed; `close`, `fail` |
//! | `PAccept` | accepted, waiting for `start` | `start` → `Connected`; `close` |
//! | `Bind` | a UDP socket | `close`, `fail` |
//!
//! A free slot (id 0) is Skynet's INVALID. Orthogonal flags: `paused` (reading
//! stopped), `closing` (a flushing close), `shut_wr` (FIN once drained),
//! `keep_open` (stay half-closed after EOF), `reported` (the owner has had its final
//! message), `accept_backoff` (a listener resting after EMFILE).

use super::core::Core;
use super::error::{Error, Result};
use super::message::{Batch, Msg};
use super::socket::{Priority, Socket};
use crate::sys::net;
use crate::sys::Interest;

/// The socket states (Skynet's SOCKET_TYPE_*, minus INVALID which is a free slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum State {
    /// Id allocated, nothing else yet (`connect_host` resolving).
    #[default]
    Reserve,
    /// Listening socket waiting for `start`.
    PListen,
    Listen,
    Connecting,
    Connected,
    /// The peer sent EOF; our queued writes still drain.
    HalfCloseRead,
    /// We sent FIN (`shutdown_write`); reading goes on.
    HalfCloseWrite,
    /// Accepted socket waiting for `start`.
    PAccept,
    /// A UDP socket.
    Bind,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Reserve => "reserve",
            State::PListen => "plisten",
            State::Listen => "listen",
            State::Connecting => "connecting",
            State::Connected => "connected",
            State::HalfCloseRead => "halfclose_read",
            State::HalfCloseWrite => "halfclose_write",
            State::PAccept => "paccept",
            State::Bind => "bind",
        }
    }
}

/// What a transition leaves for its caller to carry out.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing more.
    Done,
    /// Make the poller registration follow the socket's interest (a TLS socket:
    /// flush it, which does that too).
    Sync,
    /// A flushing close just began: arm the close timeout, then `Sync`.
    Closing,
    /// The socket is finished: deregister, close the descriptor, release the slot.
    Free,
}

impl Socket {
    // ---- what the state wants ----

    /// Whether reads should be watched now.
    pub fn wants_read(&self) -> bool {
        !self.paused
            && !self.held
            && !self.closing
            && !self.accept_backoff
            && matches!(
                self.state,
                State::Listen | State::Connected | State::HalfCloseWrite | State::Bind
            )
    }

    /// A connected plain (not TLS) stream that reads, not released elsewhere: what a
    /// readable event on it does is one `stream_read` (the poll loop's common case).
    #[inline(always)]
    pub fn reads_plain_stream(&self) -> bool {
        self.state == State::Connected && !self.freeing && !self.is_tls() && self.wants_read()
    }

    /// Whether writes should be watched now.
    pub fn wants_write(&self) -> bool {
        #[cfg(feature = "tls")]
        if let Some(w) = self.tls_wants_write() {
            return w || self.state == State::Connecting;
        }
        self.state == State::Connecting
            || !self.wq.is_empty()
            || self.udp.as_ref().is_some_and(|u| !u.queue.is_empty())
    }

    pub fn interest(&self) -> Interest {
        Interest {
            read: self.wants_read(),
            write: self.wants_write(),
        }
    }

    /// Whether the poller registration differs from what the state wants.
    pub fn needs_sync(&self) -> bool {
        self.registered.unwrap_or(Interest::NONE) != self.interest()
    }

    /// `Sync` if the registration must change, else `Done`.
    fn sync_step(&self) -> Step {
        if self.needs_sync() {
            Step::Sync
        } else {
            Step::Done
        }
    }

    /// Why a stream send is refused in this state (`None`: accepted).
    pub fn send_refusal(&self) -> Option<&'static str> {
        if self.closing {
            return Some("socket is closing");
        }
        if self.shut_wr {
            return Some("socket write side is shut down");
        }
        match self.state {
            State::Connected
            | State::Connecting
            | State::PAccept
            | State::HalfCloseRead
            | State::Reserve => None,
            State::Bind => Some("a UDP socket without a peer takes sendto, not send"),
            State::Listen | State::PListen => Some("cannot send on a listening socket"),
            State::HalfCloseWrite => Some("socket cannot send in this state"),
        }
    }

    /// Whether a send may go straight out: `can_write_now` and no refusal (closing or
    /// shut down). The send path's first test.
    #[inline]
    pub fn can_send_directly(&self) -> bool {
        !self.closing && !self.shut_wr && self.can_write_now()
    }

    /// Whether a direct write may go out now (not while connecting or queued).
    pub fn can_write_now(&self) -> bool {
        self.wq.is_empty()
            && !self.is_tls()
            && matches!(
                self.state,
                State::Connected | State::PAccept | State::HalfCloseRead
            )
    }

    // ---- transitions asked for by the owner ----

    /// `start`: activate a listening or accepted socket and give it to `owner`.
    pub fn start(&mut self, owner: u64) -> Step {
        self.owner = owner;
        match self.state {
            State::PListen => self.state = State::Listen,
            State::PAccept => self.state = State::Connected,
            _ => {}
        }
        self.sync_step()
    }

    /// `hold`: stop (or restart) reading for the consumer's back-pressure.
    pub fn hold(&mut self, on: bool) -> Step {
        self.held = on;
        self.sync_step()
    }

    pub fn pause(&mut self) -> Step {
        self.paused = true;
        self.sync_step()
    }

    pub fn resume(&mut self) -> Result<Step> {
        if self.closing {
            return Err(Error::State("socket is closing"));
        }
        if self.state == State::HalfCloseRead {
            return Err(Error::State("socket is half-closed: the peer sent EOF"));
        }
        self.paused = false;
        Ok(self.sync_step())
    }

    /// Queue what a send could not write at once. Past the socket's write limit or the
    /// engine's write budget nothing is queued and the error says which; the caller
    /// then drops the socket (`fail`), as bytes of this send may already be written.
    pub fn enqueue(
        &mut self,
        core: &Core,
        rest: &[u8],
        prio: Priority,
        out: &mut Batch,
    ) -> Result<Step> {
        let queued = self.wq.len_bytes();
        if self.limit > 0 && queued + rest.len() > self.limit {
            return Err(Error::LimitExceeded {
                queued,
                limit: self.limit,
            });
        }
        // Over the budget, a socket that already has a backlog is the one to drop: a
        // peer that keeps up has an empty queue between sends, so it may still queue
        // one (the total stays within the budget plus one send per socket).
        let budget = core.config.write_budget;
        if budget > 0 && queued > 0 {
            let total = core.queued();
            if total + rest.len() > budget {
                return Err(Error::BudgetExceeded { total, budget });
            }
        }
        core.add_queued(rest.len());
        self.wq.push(bytes::Bytes::copy_from_slice(rest), prio);
        let size = self.wq.len_bytes();
        if size >= self.warn_at {
            out.push(Msg::Warning {
                id: self.id,
                owner: self.owner,
                queued_kib: (size / 1024) as u64,
            });
            while self.warn_at <= size {
                self.warn_at *= 2;
            }
        }
        // A TLS socket is written by the poll thread only: always ask it to flush.
        Ok(if self.is_tls() {
            Step::Sync
        } else {
            self.sync_step()
        })
    }

    /// `close`: flush what is queued, then close (`force`: drop the queue now). The
    /// owner gets `Close` once the socket is really closed, unless it was told already.
    pub fn close(&mut self, force: bool, now_cs: u64, out: &mut Batch) -> Step {
        let flushable = matches!(
            self.state,
            State::Connected | State::HalfCloseRead | State::PAccept | State::HalfCloseWrite
        );
        // A TLS socket always flushes (its close_notify), unless its handshake is not
        // done: then nothing queued could be sent, and it closes at once.
        #[cfg(feature = "tls")]
        let must_flush = match self.tls.as_ref() {
            Some(t) => !t.is_handshaking(),
            None => self.wants_write(),
        };
        #[cfg(not(feature = "tls"))]
        let must_flush = self.wants_write();
        if force || !flushable || !must_flush {
            return self.closed(b"", out);
        }
        if self.closing {
            return Step::Sync;
        }
        self.closing = true;
        self.close_since = now_cs;
        Step::Closing
    }

    /// `shutdown_write`: half-close the write side once the queue drains; reading
    /// goes on. With nothing queued (and connected) the FIN goes out now.
    pub fn shutdown_write(&mut self) -> Result<Step> {
        if self.proto == super::socket::Proto::Fd {
            return Err(Error::State(
                "half-close needs a socket (this is a bound descriptor)",
            ));
        }
        match self.state {
            State::Connected
            | State::PAccept
            | State::HalfCloseRead
            | State::Connecting
            | State::Reserve => {}
            State::HalfCloseWrite => return Ok(Step::Done),
            _ => {
                return Err(Error::State(
                    "shutdown_write needs a connected stream socket",
                ))
            }
        }
        if self.closing {
            return Err(Error::State("socket is closing"));
        }
        self.shut_wr = true;
        if self.is_tls() {
            // close_notify, then the FIN: both sent by the poll thread's flush.
            return Ok(Step::Sync);
        }
        if self.wq.is_empty() && !matches!(self.state, State::Connecting | State::Reserve) {
            self.send_fin()?;
        }
        Ok(self.sync_step())
    }

    /// `set_keep_open`: after the peer's EOF stay open for replies until `close`
    /// (`on`), or close as soon as nothing is queued (the default, as Skynet).
    pub fn set_keep_open(&mut self, on: bool) -> Step {
        self.keep_open = on;
        if !on && self.state == State::HalfCloseRead && self.wq.is_empty() {
            Step::Free
        } else {
            Step::Done
        }
    }

    // ---- transitions driven by the network ----

    /// A connect finished: `Open` (for TLS: held back until the handshake is done),
    /// and a FIN asked for meanwhile with nothing queued goes out now.
    pub fn connected(&mut self, peer: &str, out: &mut Batch) -> Step {
        self.state = State::Connected;
        self.connect_rest = None;
        if self.is_tls() {
            return Step::Sync; // the flush sends the ClientHello
        }
        out.push(Msg::Open {
            id: self.id,
            owner: self.owner,
            peer: peer.as_bytes(),
        });
        if self.shut_wr && self.wq.is_empty() {
            if let Err(e) = self.send_fin() {
                return self.fail(&e.to_string(), out);
            }
        }
        Step::Sync
    }

    /// The peer sent EOF. `Close` goes to the owner now. With nothing left to send
    /// (or our FIN already sent) the socket is done, unless its owner asked to answer
    /// after EOF (`keep_open`); otherwise it stays half-closed until the queue drains.
    pub fn on_eof(&mut self, out: &mut Batch) -> Step {
        if !self.reported {
            out.push(Msg::Close {
                id: self.id,
                owner: self.owner,
                note: b"",
            });
        }
        if (self.wq.is_empty() && !self.keep_open) || self.state == State::HalfCloseWrite {
            return Step::Free;
        }
        self.state = State::HalfCloseRead;
        self.reported = true;
        Step::Sync
    }

    /// The write queue is empty again: end a warning, finish a flushing close or a
    /// drained half-close, or send the FIN a `shutdown_write` asked for.
    pub fn on_drained(&mut self, core: &Core, out: &mut Batch) -> Step {
        if self.warn_at > core.config.warn_size {
            self.warn_at = core.config.warn_size;
            out.push(Msg::Warning {
                id: self.id,
                owner: self.owner,
                queued_kib: 0,
            });
        }
        if self.closing || (self.state == State::HalfCloseRead && !self.keep_open) {
            return self.closed(b"", out);
        }
        if self.shut_wr && self.state != State::HalfCloseWrite {
            if let Err(e) = self.send_fin() {
                return self.fail(&e.to_string(), out);
            }
            self.state = State::HalfCloseWrite;
        }
        Step::Sync
    }

    /// A flushing close made no progress for the close timeout: give up on the queue.
    pub fn close_timed_out(&mut self, note: &str, out: &mut Batch) -> Step {
        self.closed(note.as_bytes(), out)
    }

    /// The socket failed: tell the owner (unless it knows already) and release it.
    pub fn fail(&mut self, text: &str, out: &mut Batch) -> Step {
        if !self.reported {
            self.reported = true;
            out.push(Msg::Error {
                id: self.id,
                owner: self.owner,
                text: text.as_bytes(),
                open: false,
            });
        }
        Step::Free
    }

    /// Closed for good: `Close` (unless told already), then release.
    fn closed(&mut self, note: &[u8], out: &mut Batch) -> Step {
        if !self.reported {
            self.reported = true;
            out.push(Msg::Close {
                id: self.id,
                owner: self.owner,
                note,
            });
        }
        Step::Free
    }

    /// Send the FIN now; a socket not half-closed for reading becomes `HalfCloseWrite`.
    fn send_fin(&mut self) -> std::io::Result<()> {
        let fd = self.raw_fd().expect("stream socket has an fd");
        net::shutdown(fd, net::Shutdown::Write)?;
        if self.state != State::HalfCloseRead {
            self.state = State::HalfCloseWrite;
        }
        Ok(())
    }
}
