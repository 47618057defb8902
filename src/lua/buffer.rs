//! Per-socket read buffers and length-prefixed framing, kept in Rust.
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
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use mlua::{Lua, Table, Value};

use super::args::{false_msg, ret, Args, Fail, Ret};
use super::state::State;
use crate::engine::{Priority, SocketId};

/// Default unread size above which reading pauses.
pub const DEFAULT_LIMIT: usize = 128 * 1024;
/// Default maximum frame for a 2-byte header, and for a 4-byte one.
pub const MAX_FRAME_2: usize = 65535;
pub const DEFAULT_MAX_FRAME_4: usize = 16 * 1024 * 1024;
/// Storage of drained read buffers, kept for the next arrival on an empty buffer, so
/// neither the small-message hot path nor a stream pays malloc/free per read (for
/// reads of 64 KiB and more, a free at the top of the heap gives pages back to the
/// kernel with `brk` and the next read faults them in again). Bounded in count and
/// bytes, so idle connections hold no storage whatever they received before.
#[derive(Default)]
pub struct Spare {
    small: Vec<Vec<u8>>,
    large: Vec<Vec<u8>>,
    large_bytes: usize,
}

/// Small vectors: up to `SMALL_BYTES` each, at most `SMALL_MAX` of them.
const SMALL_BYTES: usize = 4096;
const SMALL_MAX: usize = 128;
/// Large vectors: up to `LARGE_BYTES` each, `LARGE_TOTAL` bytes in all.
const LARGE_BYTES: usize = 512 * 1024;
const LARGE_TOTAL: usize = 4 * 1024 * 1024;

impl Spare {
    /// Storage for an empty buffer about to receive `len` bytes, if any is kept.
    fn take(&mut self, len: usize) -> Option<Vec<u8>> {
        if len > SMALL_BYTES {
            if let Some(v) = self.large.pop() {
                self.large_bytes -= v.capacity();
                return Some(v);
            }
        }
        self.small.pop()
    }

    /// Keep the storage of a drained buffer, or free it.
    fn give(&mut self, mut v: Vec<u8>) {
        v.clear();
        let cap = v.capacity();
        if cap <= SMALL_BYTES {
            if self.small.len() < SMALL_MAX {
                self.small.push(v);
            }
        } else if cap <= LARGE_BYTES && self.large_bytes + cap <= LARGE_TOTAL {
            self.large_bytes += cap;
            self.large.push(v);
        }
    }
}

#[derive(Clone, Copy)]
pub struct Framing {
    header: usize,
    max: usize,
}

impl Framing {
    fn encode(&self, len: usize, out: &mut Vec<u8>) {
        if self.header == 2 {
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
    }

    fn decode(&self, b: &[u8]) -> usize {
        if self.header == 2 {
            u16::from_be_bytes([b[0], b[1]]) as usize
        } else {
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        }
    }
}

/// One per buffered socket, so kept small (56 bytes): an idle coroutine server holds
/// one per connection. What only framing or readline need lives in `Extra`, allocated
/// the first time it is used.
#[derive(Default)]
pub struct ReadBuf {
    data: Vec<u8>,
    /// Bytes before `pos` were consumed.
    pos: usize,
    /// Pause threshold (0 = never pause).
    limit: usize,
    extra: Option<Box<Extra>>,
    /// Data stays here and `readable` is called (false: framed callback mode).
    buffered: bool,
    /// We paused the engine's reading for back-pressure.
    auto_paused: bool,
    /// The user paused the socket: never resume it on their behalf.
    user_paused: bool,
    /// The `close`/`error` message was delivered (no more data will come).
    closed: bool,
}

const _: () = assert!(std::mem::size_of::<ReadBuf>() <= 56);

#[derive(Default)]
struct Extra {
    framing: Option<Framing>,
    /// Set when we closed the socket for a protocol error (oversized frame).
    error: Option<String>,
    /// readline: the separator last searched for and where the search can resume.
    scan: Option<(Vec<u8>, usize)>,
}

impl ReadBuf {
    fn framing(&self) -> Option<Framing> {
        self.extra.as_ref().and_then(|e| e.framing)
    }

    fn error(&self) -> Option<&String> {
        self.extra.as_ref().and_then(|e| e.error.as_ref())
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Default::default)
    }

    fn unread(&self) -> usize {
        self.data.len() - self.pos
    }

    fn bytes(&self) -> &[u8] {
        &self.data[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        if let Some(e) = self.extra.as_mut() {
            e.scan = None;
        }
        if self.pos == self.data.len() {
            self.data.clear();
            self.pos = 0;
        } else if self.pos >= 64 * 1024 && self.pos * 2 >= self.data.len() {
            self.data.drain(..self.pos);
            self.pos = 0;
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos * 2 >= self.data.len() {
            // Most of the vector is consumed: compact before growing.
            if let Some((_, scanned)) = self.extra.as_mut().and_then(|e| e.scan.as_mut()) {
                *scanned -= self.pos;
            }
            self.data.drain(..self.pos);
            self.pos = 0;
        }
        self.data.extend_from_slice(bytes);
    }

    /// The effective pause threshold: in framed mode at least one whole frame fits.
    fn pause_limit(&self) -> usize {
        match self.framing() {
            _ if self.limit == 0 => usize::MAX,
            Some(f) => self.limit.max(f.max + f.header),
            None => self.limit,
        }
    }

    /// Length of the next complete frame's payload, `Ok(None)` if incomplete,
    /// `Err(len)` if the prefix claims more than the maximum.
    fn next_frame(&self) -> Result<Option<usize>, usize> {
        let Some(f) = self.framing() else {
            return Ok(None);
        };
        let b = self.bytes();
        if b.len() < f.header {
            return Ok(None);
        }
        let len = f.decode(b);
        if len > f.max {
            return Err(len);
        }
        Ok((b.len() - f.header >= len).then_some(len))
    }

    /// Position of `sep` in the unread bytes, resuming the previous search.
    fn find(&mut self, sep: &[u8]) -> Option<usize> {
        let from = match self.extra.as_ref().and_then(|e| e.scan.as_ref()) {
            Some((s, at)) if s.as_slice() == sep => *at,
            _ => self.pos,
        };
        let hay = &self.data[from..];
        let hit = if sep.len() == 1 {
            hay.iter().position(|&c| c == sep[0])
        } else {
            hay.windows(sep.len()).position(|w| w == sep)
        };
        match hit {
            Some(i) => Some(from + i - self.pos),
            None => {
                // The separator may straddle the end: rescan its last len-1 bytes.
                let next = (self.data.len() + 1)
                    .saturating_sub(sep.len())
                    .max(self.pos);
                self.extra().scan = Some((sep.to_vec(), next));
                None
            }
        }
    }
}

pub type Buffers = HashMap<SocketId, ReadBuf, BuildHasherDefault<IdHasher>>;

/// Hashes socket ids with one multiplication (Fibonacci hashing) instead of SipHash:
/// the map is looked up several times per message, and its keys are ids the engine
/// hands out (a peer cannot choose them), so there is nothing to randomise against.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// What `deliver` should do with a socket's message after the buffer saw it.
pub enum Routed {
    /// Not a buffered socket: deliver normally.
    Normal,
    /// Appended: call `readable(id, unread)`.
    Readable(usize),
    /// Framed callback mode: call `data` with each of these packets (then maybe error).
    Frames(Vec<Vec<u8>>),
}

fn pause_engine(st: &State, id: SocketId, on: bool) {
    let mut eng = st.engine.borrow_mut();
    let _ = if on {
        eng.ops().pause(id)
    } else {
        eng.ops().resume(id)
    };
}

/// Protocol error: force-close the socket and remember the message so that the
/// `close` that follows is delivered as `error`.
fn protocol_error(st: &State, id: SocketId, b: &mut ReadBuf, msg: String) {
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
fn after_read(st: &State, bufs: &mut Buffers, id: SocketId) {
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

fn limit_arg(a: &Args, pos: usize) -> Result<Option<usize>, Fail> {
    if a.is_none(pos) {
        return Ok(None);
    }
    let v = a.integer(pos)?;
    usize::try_from(v)
        .map(Some)
        .map_err(|_| a.error(pos, "limit must be >= 0"))
}

/// `buffered(id [, limit])`: put the socket in buffered mode (or change its limit).
/// Bytes already delivered are not affected. → `true`.
pub fn buffered(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let limit = limit_arg(a, 2)?;
    if !known(st, id) {
        return false_msg(lua, crate::engine::Error::UnknownId);
    }
    let mut bufs = st.buffers.borrow_mut();
    let b = bufs.entry(id).or_default();
    if !b.buffered {
        b.buffered = true;
        b.limit = DEFAULT_LIMIT;
    }
    if let Some(l) = limit {
        b.limit = l;
    }
    after_read(st, &mut bufs, id);
    ret(lua, true)
}

/// An open socket, or a closed one whose buffer still holds unread bytes.
fn known(st: &State, id: SocketId) -> bool {
    st.buffers.borrow().contains_key(&id) || st.engine.borrow_mut().ops().is_open(id)
}

/// `framed(id [, opts])`: length-prefixed framing. `opts`: `{ header = 2|4, max = n,
/// buffered = bool, limit = n }`. → `true`.
pub fn framed(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let (mut header, mut max, mut buffered, mut limit) = (2usize, None, false, None);
    match a.get(2) {
        Value::Nil => {}
        Value::Table(t) => {
            let t: &Table = t;
            let get = |k: &str| -> Result<Option<i64>, Fail> {
                t.get::<Option<i64>>(k)
                    .map_err(|_| a.error(2, format!("field '{k}' must be an integer")))
            };
            if let Some(h) = get("header")? {
                if h != 2 && h != 4 {
                    return Err(a.error(2, "header must be 2 or 4"));
                }
                header = h as usize;
            }
            if let Some(m) = get("max")? {
                if m < 0 {
                    return Err(a.error(2, "max must be >= 0"));
                }
                max = Some(m as usize);
            }
            if let Some(l) = get("limit")? {
                if l < 0 {
                    return Err(a.error(2, "limit must be >= 0"));
                }
                limit = Some(l as usize);
            }
            buffered = t
                .get::<Option<bool>>("buffered")
                .ok()
                .flatten()
                .unwrap_or(false);
        }
        _ => return Err(a.error(2, "options table expected")),
    }
    let cap = if header == 2 {
        MAX_FRAME_2
    } else {
        u32::MAX as usize
    };
    let default = if header == 2 {
        MAX_FRAME_2
    } else {
        DEFAULT_MAX_FRAME_4
    };
    let max = max.unwrap_or(default);
    if max > cap {
        return Err(a.error(2, format!("max {max} does not fit a {header}-byte header")));
    }
    if !known(st, id) {
        return false_msg(lua, crate::engine::Error::UnknownId);
    }
    let mut bufs = st.buffers.borrow_mut();
    let b = bufs.entry(id).or_default();
    b.extra().framing = Some(Framing { header, max });
    if buffered && !b.buffered {
        b.buffered = true;
        b.limit = DEFAULT_LIMIT;
    }
    if let Some(l) = limit {
        b.limit = l;
    }
    ret(lua, true)
}

/// `unbuffer(id)`: leave buffered/framed mode and drop unread bytes. → bytes dropped,
/// or `false` if the socket had no buffer.
pub fn unbuffer(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let removed = st.buffers.borrow_mut().remove(&id);
    match removed {
        Some(b) => {
            if b.auto_paused && !b.user_paused && !b.closed {
                pause_engine(st, id, false);
            }
            ret(lua, b.unread() as i64)
        }
        None => ret(lua, false),
    }
}

/// `unread(id)` → `bytes, closed, error` for a buffered socket, or `nil`.
pub fn unread(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let bufs = st.buffers.borrow();
    match bufs.get(&id) {
        Some(b) => ret(lua, (b.unread() as i64, b.closed, b.error().cloned())),
        None => ret(lua, Value::Nil),
    }
}

/// A take in progress, found by `begin_take`: the bytes to hand out stay in the
/// socket's buffer (the buffer table stays borrowed) until `finish` consumes them. The
/// split lets the fast path push the string between the two steps, outside the
/// `catch_unwind` that guards the Rust parts (a Lua error must never cross one).
pub struct Taking<'a> {
    bufs: RefMut<'a, Buffers>,
    id: SocketId,
    start: usize,
    len: usize,
    used: usize,
}

impl Taking<'_> {
    /// The bytes to hand out (empty if `pick` gave a range outside the buffer).
    pub fn bytes(&self) -> &[u8] {
        self.bufs
            .get(&self.id)
            .and_then(|b| {
                b.bytes()
                    .get(self.start..self.start.saturating_add(self.len))
            })
            .unwrap_or(&[])
    }

    /// Consume the bytes taken and release the buffer table.
    pub fn finish(mut self, st: &State) {
        let id = self.id;
        let Some(b) = self.bufs.get_mut(&id) else {
            return;
        };
        b.consume(self.used.min(b.unread()));
        if b.closed && b.unread() == 0 {
            self.bufs.remove(&id);
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
    let mut bufs = st.buffers.try_borrow_mut().ok()?;
    let b = bufs.get_mut(&id)?;
    let (start, len, used) = pick(b)?;
    Some(Taking {
        bufs,
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

fn take(
    lua: &Lua,
    st: &State,
    id: SocketId,
    pick: impl FnOnce(&mut ReadBuf) -> Option<(usize, usize, usize)>,
) -> Ret {
    match take_with(st, id, pick, |bytes| lua.create_string(bytes)) {
        Some(s) => ret(lua, s?),
        None => ret(lua, Value::Nil),
    }
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

/// `readframe(id)` → one packet's payload (may be ""), or `nil` if incomplete.
pub fn readframe(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let mut bad = None;
    let r = take(lua, st, id, |b| {
        let f = b.framing()?;
        match b.next_frame() {
            Ok(Some(len)) => Some((f.header, len, f.header + len)),
            Ok(None) => None,
            Err(len) => {
                bad = Some((len, f.max));
                None
            }
        }
    });
    if let Some((len, max)) = bad {
        let mut bufs = st.buffers.borrow_mut();
        if let Some(b) = bufs.get_mut(&id) {
            let msg = format!("frame of {len} bytes exceeds the maximum of {max}");
            protocol_error(st, id, b, msg);
        }
        return ret(lua, Value::Nil);
    }
    r
}

fn frame_of(st: &State, id: SocketId) -> Framing {
    st.buffers
        .borrow()
        .get(&id)
        .and_then(|b| b.framing())
        .unwrap_or(Framing {
            header: 2,
            max: MAX_FRAME_2,
        })
}

/// `sendframe(id, data)`: send `data` with the socket's length prefix (2-byte by
/// default). An oversized payload is not sent: the socket is closed with an error
/// and `false, message` is returned.
pub fn sendframe(lua: &Lua, st: &State, a: &Args) -> Ret {
    let id = a.id(1)?;
    let data = match a.get(2) {
        Value::String(s) => s.as_bytes().to_vec(),
        _ => a.bytes(2)?,
    };
    let f = frame_of(st, id);
    if data.len() > f.max {
        let msg = format!(
            "frame of {} bytes exceeds the maximum of {}",
            data.len(),
            f.max
        );
        let mut bufs = st.buffers.borrow_mut();
        match bufs.get_mut(&id) {
            Some(b) => protocol_error(st, id, b, msg.clone()),
            None => {
                let _ = st.engine.borrow_mut().ops().close(id, true);
            }
        }
        return false_msg(lua, msg);
    }
    let mut out = Vec::with_capacity(f.header + data.len());
    f.encode(data.len(), &mut out);
    out.extend_from_slice(&data);
    let r = st.engine.borrow_mut().ops().send(id, &out, Priority::High);
    match r {
        Ok(()) => ret(lua, true),
        Err(e) => false_msg(lua, e),
    }
}

/// `pack(data [, header])` → `data` with a 2-byte (or `header`-byte) length prefix.
pub fn pack(lua: &Lua, _st: &State, a: &Args) -> Ret {
    let header = a.opt_integer(2, 2)?;
    if header != 2 && header != 4 {
        return Err(a.error(2, "header must be 2 or 4"));
    }
    let f = Framing {
        header: header as usize,
        max: if header == 2 {
            MAX_FRAME_2
        } else {
            u32::MAX as usize
        },
    };
    let data = match a.get(1) {
        Value::String(s) => s.as_bytes().to_vec(),
        _ => a.bytes(1)?,
    };
    if data.len() > f.max {
        return Err(a.error(
            1,
            format!(
                "frame of {} bytes exceeds the maximum of {}",
                data.len(),
                f.max
            ),
        ));
    }
    let mut out = Vec::with_capacity(f.header + data.len());
    f.encode(data.len(), &mut out);
    out.extend_from_slice(&data);
    ret(lua, lua.create_string(&out)?)
}

/// `buffers()` → number of live read buffers (for leak checks).
pub fn buffers(lua: &Lua, st: &State, _a: &Args) -> Ret {
    ret(lua, st.buffers.borrow().len() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_storage_is_reused_by_size_and_bounded() {
        let mut spare = Spare::default();
        assert!(spare.take(10).is_none());
        spare.give(Vec::with_capacity(100));
        spare.give(Vec::with_capacity(256 * 1024));
        // A big arrival gets the big vector, a small one the small vector.
        assert!(spare.take(64 * 1024).unwrap().capacity() >= 256 * 1024);
        assert_eq!(spare.large_bytes, 0);
        assert!(spare.take(10).unwrap().capacity() >= 100);
        assert!(spare.take(10).is_none());
        // Vectors past the size cap are freed, and the large list stays in budget.
        spare.give(Vec::with_capacity(LARGE_BYTES + 1));
        assert!(spare.large.is_empty());
        for _ in 0..100 {
            spare.give(Vec::with_capacity(LARGE_BYTES));
        }
        assert!(spare.large_bytes <= LARGE_TOTAL);
        assert_eq!(spare.large.len(), LARGE_TOTAL / LARGE_BYTES);
        for _ in 0..1000 {
            spare.give(Vec::with_capacity(64));
        }
        assert_eq!(spare.small.len(), SMALL_MAX);
        // Given-back storage comes back empty.
        let mut v = Vec::with_capacity(200);
        v.extend_from_slice(b"leftover");
        let mut s = Spare::default();
        s.give(v);
        assert!(s.take(1).unwrap().is_empty());
    }
}
