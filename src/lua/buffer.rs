//! Per-socket read buffers and length-prefixed framing, kept in Rust: this file routes
//! delivered bytes into them and takes bytes out (`readbuf.rs` holds the data
//! structures, `buffer_api.rs` the Lua functions).
//!
//! A socket put in *buffered mode* (`buffered(id [, limit])`) no longer gets `data`
//! callbacks: its bytes are appended to a buffer here and its handler's
//! `readable(id, unread)` is called instead. Lua takes bytes out with `readn`,
//! `readline`, `readsome` and `readframe`; each returns one Lua string made straight
//! from the buffer (no intermediate strings), or `nil` when not enough is there.
//!
//! Back-pressure: once more than `limit` bytes (default 128 KiB) are unread, reading
//! is paused in the engine; it resumes when a read brings the unread size back under
//! the limit (unless the user paused the socket explicitly).
//!
//! *Framed mode* (`framed(id [, opts])`) parses big-endian length prefixes (2 bytes by
//! default, 4 on request). Unbuffered, each complete packet is delivered as one
//! `data(id, packet)` callback; buffered, `readframe(id)` returns one packet. A length
//! prefix above the maximum closes the socket at once: the size it claims is never
//! allocated, and the handler gets `error(id, message)` instead of `close`.
//!
//! Lifetime: when the socket's `close` is delivered, an empty buffer is freed at once;
//! a buffer still holding data stays (flagged closed) until a read drains it or
//! `unbuffer(id)` drops it, so a reader can still take what arrived before EOF.

use std::cell::RefMut;

pub use super::readbuf::{Buffers, ReadBuf, Spare};
use super::state::State;
use crate::engine::SocketId;

/// Default unread size above which reading pauses.
pub const DEFAULT_LIMIT: usize = 128 * 1024;
/// Default maximum frame for a 2-byte header, and for a 4-byte one.
pub const MAX_FRAME_2: usize = 65535;
pub const DEFAULT_MAX_FRAME_4: usize = 16 * 1024 * 1024;
/// What `deliver` should do with a socket's message after the buffer saw it.
pub enum Routed {
    /// Not a buffered socket: deliver normally.
    Normal,
    /// Appended: call `readable(id, unread)`.
    Readable(usize),
    /// Framed callback mode: call `data` with each of these packets (then maybe error).
    Frames(Vec<Vec<u8>>),
}

pub(super) fn pause_engine(st: &State, id: SocketId, on: bool) {
    let mut eng = st.engine.borrow_mut();
    let _ = if on {
        eng.ops().pause(id)
    } else {
        eng.ops().resume(id)
    };
}

/// Protocol error: force-close the socket and remember the message so that the
/// `close` that follows is delivered as `error`.
pub(super) fn protocol_error(st: &State, id: SocketId, b: &mut ReadBuf, msg: String) {
    b.extra().error = Some(msg);
    b.data.clear();
    b.pos = 0;
    let _ = st.engine.borrow_mut().ops().close(id, true);
}

/// A `data` message for `id`.
pub fn on_data(st: &State, id: SocketId, bytes: &[u8]) -> Routed {
    let mut bufs = st.buffers.borrow_mut();
    super::hooks::maybe_panic_in_route();
    let Some(b) = bufs.get_mut(&id) else {
        return Routed::Normal;
    };
    if b.error().is_some() {
        return Routed::Frames(Vec::new()); // closing: drop
    }
    if b.data.capacity() == 0 {
        if let Some(v) = st.spare.borrow_mut().take(bytes.len()) {
            b.data = v;
        }
    }
    b.append(bytes);
    super::hooks::count_routed();
    if b.buffered {
        if let Some(f) = b.framing() {
            if let Err(len) = b.next_frame() {
                let msg = format!("frame of {len} bytes exceeds the maximum of {}", f.max);
                protocol_error(st, id, b, msg);
                return Routed::Frames(Vec::new());
            }
        }
        if !b.auto_paused && !b.user_paused && b.unread() > b.pause_limit() {
            b.auto_paused = true;
            pause_engine(st, id, true);
        }
        return Routed::Readable(b.unread());
    }
    // Framed callback mode: cut out every complete packet.
    let Some(f) = b.framing() else {
        // Unbuffered sockets are framed (`route` returned above otherwise).
        return Routed::Normal;
    };
    let mut frames = Vec::new();
    loop {
        match b.next_frame() {
            Ok(Some(len)) => {
                frames.push(b.bytes()[f.header..f.header + len].to_vec());
                b.consume(f.header + len);
            }
            Ok(None) => break,
            Err(len) => {
                let msg = format!("frame of {len} bytes exceeds the maximum of {}", f.max);
                protocol_error(st, id, b, msg);
                break;
            }
        }
    }
    Routed::Frames(frames)
}

/// Whether bytes arriving for `id` may skip its read buffer and go straight to a
/// reader that takes whatever comes next (a coroutine waiting in `read(id)`, see
/// `fast/deliver.rs`): a plain buffered socket (no framing, no protocol error, no
/// close seen) with nothing unread, so the bytes it would get from the buffer are
/// exactly these. Nothing changes here: the bytes then never were in the buffer.
pub fn can_hand_over(st: &State, id: SocketId) -> bool {
    let Ok(bufs) = st.buffers.try_borrow() else {
        return false;
    };
    bufs.get(&id).is_some_and(|b| {
        b.buffered && !b.closed && b.unread() == 0 && b.framing().is_none() && b.error().is_none()
    })
}

/// Whether `id` has no read buffer or nothing unread in it.
#[cfg(any(feature = "lua53", feature = "lua54", feature = "lua55"))]
pub fn is_empty(st: &State, id: SocketId) -> bool {
    let Ok(bufs) = st.buffers.try_borrow() else {
        return false;
    };
    bufs.get(&id).map_or(true, |b| b.unread() == 0)
}

/// The socket's final message is being delivered. Returns the protocol error text if
/// the socket was closed for one (the `close` is then delivered as `error`).
pub fn on_close(st: &State, id: SocketId) -> Option<String> {
    let mut bufs = st.buffers.borrow_mut();
    let b = bufs.get_mut(&id)?;
    b.closed = true;
    let err = b.error().cloned();
    if !b.buffered || b.unread() == 0 {
        bufs.remove(&id);
    }
    err
}

/// The user paused or resumed the socket.
pub fn on_user_pause(st: &State, id: SocketId, paused: bool) {
    if let Some(b) = st.buffers.borrow_mut().get_mut(&id) {
        b.user_paused = paused;
        if !paused {
            b.auto_paused = false;
        }
    }
}

/// After a read: resume reading below the limit; free a drained closed buffer.
pub(super) fn after_read(st: &State, bufs: &mut Buffers, id: SocketId) {
    let Some(b) = bufs.get_mut(&id) else { return };
    if b.closed && b.unread() == 0 {
        bufs.remove(&id);
        return;
    }
    after_take(st, id, b);
}

/// After bytes were taken from an open (or still unread) buffer: hand a drained
/// vector to the spare list, resume reading below the limit.
fn after_take(st: &State, id: SocketId, b: &mut ReadBuf) {
    if b.unread() == 0 && b.data.capacity() > 0 {
        let v = std::mem::take(&mut b.data);
        b.pos = 0;
        st.spare.borrow_mut().give(v);
    }
    if b.auto_paused && b.unread() <= b.pause_limit() {
        b.auto_paused = false;
        if !b.user_paused && !b.closed {
            pause_engine(st, id, false);
        }
    }
}

/// A take in progress, found by `begin_take`: the bytes to hand out stay in the
/// socket's buffer (the buffer table stays borrowed, through the one entry found)
/// until `finish` consumes them. The split lets the fast path push the string between
/// the two steps, outside the `catch_unwind` that guards the Rust parts (a Lua error
/// must never cross one).
pub struct Taking<'a> {
    buf: RefMut<'a, ReadBuf>,
    id: SocketId,
    start: usize,
    len: usize,
    used: usize,
}

impl Taking<'_> {
    /// The bytes to hand out (empty if `pick` gave a range outside the buffer).
    pub fn bytes(&self) -> &[u8] {
        self.buf
            .bytes()
            .get(self.start..self.start.saturating_add(self.len))
            .unwrap_or(&[])
    }

    /// Consume the bytes taken and release the buffer table.
    pub fn finish(mut self, st: &State) {
        let id = self.id;
        let b = &mut *self.buf;
        b.consume(self.used.min(b.unread()));
        if b.closed && b.unread() == 0 {
            drop(self.buf);
            st.buffers.borrow_mut().remove(&id);
        } else {
            after_take(st, id, b);
        }
    }
}

/// Run `pick` on the socket's buffer; it returns which bytes to hand out as one string
/// (`start` offset into the unread bytes, `len`) and how many to consume. `None` when
/// the socket has no buffer, `pick` declines, or the buffer table is in use.
pub fn begin_take(
    st: &State,
    id: SocketId,
    pick: impl FnOnce(&mut ReadBuf) -> Option<(usize, usize, usize)>,
) -> Option<Taking<'_>> {
    let bufs = st.buffers.try_borrow_mut().ok()?;
    let mut buf = RefMut::filter_map(bufs, |m| m.get_mut(&id)).ok()?;
    let (start, len, used) = pick(&mut buf)?;
    Some(Taking {
        buf,
        id,
        start,
        len,
        used,
    })
}

/// `begin_take`, `emit` on the bytes, `finish`.
pub fn take_with<R>(
    st: &State,
    id: SocketId,
    pick: impl FnOnce(&mut ReadBuf) -> Option<(usize, usize, usize)>,
    emit: impl FnOnce(&[u8]) -> R,
) -> Option<R> {
    let t = begin_take(st, id, pick)?;
    let r = emit(t.bytes());
    t.finish(st);
    Some(r)
}

/// What `readn`, `readline` and `readsome` take out of a buffer.
pub fn pick_n(n: usize) -> impl FnOnce(&mut ReadBuf) -> Option<(usize, usize, usize)> {
    move |b| (b.unread() >= n).then_some((0, n, n))
}

pub fn pick_line(sep: &[u8]) -> impl FnOnce(&mut ReadBuf) -> Option<(usize, usize, usize)> + '_ {
    move |b| b.find(sep).map(|i| (0, i, i + sep.len()))
}

pub fn pick_some(max: usize) -> impl FnOnce(&mut ReadBuf) -> Option<(usize, usize, usize)> {
    move |b| {
        let n = b.unread().min(max);
        (n > 0).then_some((0, n, n))
    }
}
