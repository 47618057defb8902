//! The Lua functions of buffered and framed mode: `buffered`, `framed`, `unbuffer`,
//! `unread`, `readframe`, `sendframe`, `pack`, `buffers` (the raw `readn`,
//! `readline`, `readsome` are in `fast/read.rs`).

use mlua::{Lua, Table, Value};

use super::args::{false_msg, ret, Args, Fail, Ret};
use super::buffer::{
    after_read, pause_engine, protocol_error, take_with, DEFAULT_LIMIT, DEFAULT_MAX_FRAME_4,
    MAX_FRAME_2,
};
use super::readbuf::{Framing, ReadBuf};
use super::state::State;
use crate::engine::{Priority, SocketId};

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
    let b = bufs.entry(id).or_insert_with(|| new_buffer(st, id));
    if !b.buffered {
        b.buffered = true;
        b.set_limit(DEFAULT_LIMIT);
    }
    if let Some(l) = limit {
        b.set_limit(l);
    }
    after_read(st, &mut bufs, id);
    ret(lua, true)
}

/// A new read buffer for socket `id`, knowing its handler table (see `ReadBuf::handler`).
fn new_buffer(st: &State, id: SocketId) -> ReadBuf {
    ReadBuf {
        handler: st.handler_table(id),
        ..ReadBuf::default()
    }
}

/// An open socket, or a closed one whose buffer still holds unread bytes.
fn known(st: &State, id: SocketId) -> bool {
    st.buffers.borrow().contains_key(&id)
        || st.engine.borrow_mut().ops().is_open(id)
        || st.made_here(id)
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
    let b = bufs.entry(id).or_insert_with(|| new_buffer(st, id));
    b.extra().framing = Some(Framing { header, max });
    if buffered && !b.buffered {
        b.buffered = true;
        b.set_limit(DEFAULT_LIMIT);
    }
    if let Some(l) = limit {
        b.set_limit(l);
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
