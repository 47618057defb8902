//! Runs of `data` messages delivered inside one `exec_raw` entry: for each message
//! the handler's `data` (or, for a buffered socket, `readable`) function is found with
//! raw table reads and called under one `lua_pcall` per run (re-entered after a
//! callback error). The bytes pass through the same `route` as the high-level
//! dispatcher's, so both paths deliver alike (while no socket has a read buffer, the
//! loop skips the call: `route` would hand the bytes on unchanged).

use std::ffi::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use mlua::{ffi, Lua};

use super::co::{Tail, Waker};
use super::raise_panic;
use crate::engine::Batch;
use crate::lua::buffer::Routed;
use crate::lua::state::State;

/// Message handler for the per-message `lua_pcall`: append a traceback.
///
/// # Safety
///
/// Called by Lua only, as a C function: `l` is a valid state inside that call.
unsafe extern "C-unwind" fn traceback(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: Lua calls this with a valid state, as a C function (see # Safety).
    unsafe {
        let msg = ffi::lua_tostring(l, 1);
        if msg.is_null() {
            ffi::lua_pushstring(l, c"(error object is not a string)".as_ptr());
            return 1;
        }
        ffi::luaL_traceback(l, l, msg, 1);
        1
    }
}

/// State of one delivery run, kept in the frame that makes the protected calls: a
/// callback error unwinds `deliver_loop`'s frame, never this one, so delivery resumes
/// after the failing message with nothing lost.
struct Run<'a> {
    st: &'a State,
    batch: &'a Batch,
    route: &'a dyn Fn(u64, &[u8]) -> Routed,
    epoch: u64,
    /// Index of the next message to deliver.
    next: usize,
    /// Framed-mode packets of one message not yet delivered (from `frame_pos` on).
    frames: Vec<Vec<u8>>,
    frame_pos: usize,
    frame_id: ffi::lua_Integer,
    /// Which handler the `S_*` slots hold, and whether its callbacks are functions.
    cached: Cached,
    has_data: bool,
    has_readable: bool,
    /// `S_READABLE` is the coroutine layer's waker (`co::waker_kind`): its work is
    /// done here, on its tables in `S_READER` and `S_QUEUE` (and with its record slot
    /// `slot`), without a call per message.
    waker: Waker,
    slot: ffi::lua_Integer,
    /// The record field bytes are handed to (`waker(socks, queue, slot, hand)`), 0 if
    /// none: see `hand_to_reader`.
    hand: ffi::lua_Integer,
    /// The address of the cached handler table (`S_HANDLER`), null if not a table.
    handler_ptr: *const c_void,
    /// `S_QUEUE`'s `queue[0]` while only wakes ran since it was read (`co::wake`),
    /// written back once per run of wakes (`forget_tail`); forgotten after anything
    /// else (a callback, another handler). After an error unwinds `deliver_loop`,
    /// `deliver_data_run` saves what is unsaved (`save_tail_after_error`).
    tail: Tail,
}

/// Write back `run.tail` if a wake left it unsaved, and forget it: before any Lua code
/// runs (a callback may push to the queue) and before `S_QUEUE` changes.
///
/// # Safety
///
/// `l` is inside `deliver_loop` with its slots set up and a free stack slot.
unsafe fn forget_tail(l: *mut ffi::lua_State, run: &mut Run) {
    // SAFETY: as the function's # Safety note: an unsaved tail came from wakes on the
    // queue in S_QUEUE, which changes only after this.
    unsafe { super::co::save_tail(l, S_QUEUE, &mut run.tail) };
    run.tail.last = None;
}

#[derive(Clone, Copy, PartialEq)]
enum Cached {
    Nothing,
    /// The module-wide handler (`dispatch`).
    Default,
    /// The table in `S_HANDLER`, a socket's own handler.
    Own,
}

// Stack slots of `deliver_loop`: its arguments, then the handler whose functions are
// cached (a handler table's fields are read once per run, not once per message).
const A_RUN: c_int = 1;
const A_HANDLERS: c_int = 2;
const A_DEFAULT: c_int = 3;
const A_DATA_KEY: c_int = 4;
const A_READABLE_KEY: c_int = 5;
const S_HANDLER: c_int = 6;
const S_DATA: c_int = 7;
const S_READABLE: c_int = 8;
const S_READER: c_int = 9;
const S_QUEUE: c_int = 10;

/// Make the handler of socket `id` the cached one (slots `S_*`). `false` when the
/// handler needs the high-level dispatcher (a metatable, or not a table); `force_raw`
/// reads a table's fields raw even if it has a metatable (pending packets must go on).
///
/// # Safety
///
/// `l` is inside `deliver_loop`, whose slots are set up.
unsafe fn select_handler(
    l: *mut ffi::lua_State,
    run: &mut Run,
    id: ffi::lua_Integer,
    force_raw: bool,
) -> bool {
    // SAFETY: the caller upholds this function's contract (see # Safety).
    unsafe {
        // Most servers give no socket its own handler: then the table lookup is skipped.
        let own = run.st.own_handlers.get() > 0 && {
            // (raw_get_id: not lua_rawgeti on Lua 5.1 and LuaJIT, whose key is a C int.)
            let kind = super::co::raw_get_id(l, A_HANDLERS, id);
            // The cached handler table again (the common case: every socket of the
            // coroutine layer has the same one): compared by address, which is exact
            // for two live tables.
            if kind == ffi::LUA_TTABLE
                && run.cached == Cached::Own
                && ffi::lua_topointer(l, -1) == run.handler_ptr
            {
                ffi::lua_settop(l, -2);
                return true;
            }
            if kind == ffi::LUA_TNIL {
                ffi::lua_settop(l, -2);
            }
            kind != ffi::LUA_TNIL
        };
        if !own {
            if run.cached == Cached::Default {
                return true;
            }
            ffi::lua_pushvalue(l, A_DEFAULT);
        } else if run.cached == Cached::Own && ffi::lua_rawequal(l, -1, S_HANDLER) != 0 {
            ffi::lua_pop(l, 1);
            return true;
        }
        // Another handler (or the high-level dispatcher) from here on.
        forget_tail(l, run);
        match ffi::lua_type(l, -1) {
            ffi::LUA_TNIL => {
                // No handler at all: messages are dropped.
                ffi::lua_pushnil(l);
                ffi::lua_replace(l, S_DATA);
                ffi::lua_pushnil(l);
                ffi::lua_replace(l, S_READABLE);
            }
            ffi::LUA_TTABLE => {
                if !force_raw && ffi::lua_getmetatable(l, -1) != 0 {
                    ffi::lua_pop(l, 2);
                    return false;
                }
                ffi::lua_pushvalue(l, A_DATA_KEY);
                ffi::lua_rawget(l, -2);
                ffi::lua_replace(l, S_DATA);
                ffi::lua_pushvalue(l, A_READABLE_KEY);
                ffi::lua_rawget(l, -2);
                ffi::lua_replace(l, S_READABLE);
            }
            _ => {
                ffi::lua_pop(l, 1);
                return false;
            }
        }
        ffi::lua_replace(l, S_HANDLER);
        run.cached = if own { Cached::Own } else { Cached::Default };
        run.handler_ptr = if ffi::lua_type(l, S_HANDLER) == ffi::LUA_TTABLE {
            ffi::lua_topointer(l, S_HANDLER)
        } else {
            std::ptr::null()
        };
        run.has_data = ffi::lua_type(l, S_DATA) == ffi::LUA_TFUNCTION;
        run.has_readable = ffi::lua_type(l, S_READABLE) == ffi::LUA_TFUNCTION;
        run.waker = if run.has_readable {
            super::co::waker_kind(l, S_READABLE)
        } else {
            Waker::No
        };
        if run.waker != Waker::No {
            // A C closure's upvalues have the empty name: never null.
            ffi::lua_getupvalue(l, S_READABLE, 1);
            ffi::lua_replace(l, S_READER);
            ffi::lua_getupvalue(l, S_READABLE, 2);
            ffi::lua_replace(l, S_QUEUE);
            if run.waker == Waker::Record {
                ffi::lua_getupvalue(l, S_READABLE, 3);
                run.slot = ffi::lua_tointegerx(l, -1, std::ptr::null_mut());
                ffi::lua_getupvalue(l, S_READABLE, 4);
                run.hand = ffi::lua_tointegerx(l, -1, std::ptr::null_mut());
                ffi::lua_settop(l, -3);
            }
        }
        true
    }
}

/// `data(id, bytes)` of the cached handler (after saving the queue's tail: the
/// callback may push to the queue).
///
/// # Safety
///
/// `l` is inside `deliver_loop` with its slots set up and `S_DATA` a function; the
/// call may raise (the caller's frame holds no Rust value with a destructor).
#[inline(always)]
unsafe fn call_data(l: *mut ffi::lua_State, run: &mut Run, id: ffi::lua_Integer, data: &[u8]) {
    // SAFETY: as the function's # Safety note.
    unsafe {
        forget_tail(l, run);
        ffi::lua_pushvalue(l, S_DATA);
        ffi::lua_pushinteger(l, id);
        ffi::lua_pushlstring(l, data.as_ptr() as *const c_char, data.len());
        ffi::lua_call(l, 2, 0);
    }
}

/// Deliver the pending framed-mode packets of `run`.
///
/// # Safety
///
/// `l` must be a valid state inside a C function call (as `arg_error` when it raises).
unsafe fn deliver_frames(l: *mut ffi::lua_State, run: &mut Run) {
    // SAFETY: the caller upholds this function's contract (see # Safety).
    unsafe {
        while run.frame_pos < run.frames.len() {
            let f = &run.frames[run.frame_pos];
            run.frame_pos += 1;
            if run.has_data {
                ffi::lua_pushvalue(l, S_DATA);
                ffi::lua_pushinteger(l, run.frame_id);
                ffi::lua_pushlstring(l, f.as_ptr() as *const c_char, f.len());
                ffi::lua_call(l, 2, 0);
            }
        }
    }
}

/// The delivery loop, entered through `lua_pcall` by `deliver_data_run` and re-entered
/// after each callback error. Callbacks run with `lua_call`: one protected call covers
/// the whole run instead of one per message. Nothing in this frame has a destructor, so
/// an error unwinding it leaves no Rust state behind (progress lives in `Run`).
///
/// # Safety
///
/// Called by Lua only, as a C function: `l` is a valid state inside that call.
unsafe extern "C-unwind" fn deliver_loop(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: Lua calls this with a valid state, as a C function (see # Safety).
    unsafe {
        // SAFETY: argument 1 is the `Run` of the caller's frame, alive during this call.
        let run = &mut *(ffi::lua_touserdata(l, A_RUN) as *mut Run);
        ffi::lua_settop(l, S_QUEUE);
        run.cached = Cached::Nothing;
        // (An unsaved tail of the previous entry was saved by `deliver_data_run`.)
        run.tail = Tail {
            defer: true,
            ..Tail::default()
        };
        run.has_data = false;
        run.has_readable = false;
        run.waker = Waker::No;
        if run.frame_pos < run.frames.len() {
            // Packets left by a callback error go to the socket's handler as it is now
            // (if a callback made it something other than a table, they are dropped).
            select_handler(l, run, run.frame_id, true);
            deliver_frames(l, run);
        }
        while let Some((sid, data)) = run.batch.data_at(run.next) {
            if run.st.handler_epoch.get() != run.epoch {
                break;
            }
            let id = sid as ffi::lua_Integer;
            // The common cases without a call: the module-wide handler cached and no
            // socket has its own; or the socket's own handler is the cached table (every
            // socket of the coroutine layer has the same one), seen from the copy of it in
            // the socket's read buffer, with no Lua lookup (two live tables at one
            // address are the same table).
            let cached = match run.cached {
                Cached::Default => run.st.own_handlers.get() == 0,
                Cached::Own => {
                    !run.handler_ptr.is_null()
                        && run.st.buffered_handler(sid) == Some(run.handler_ptr as usize)
                }
                Cached::Nothing => false,
            };
            if !cached && !select_handler(l, run, id, false) {
                break; // the high-level dispatcher takes it from here
            }
            run.next += 1;
            // Most servers buffer no socket: then the bytes go to `data` as they are,
            // without the call through `route` (which would find the same).
            // (try_borrow: a panic must not unwind from here into Lua; a table left
            // borrowed takes the `route` path, whose panics are caught.)
            if run.st.buffers.try_borrow().is_ok_and(|b| b.is_empty()) {
                if run.has_data {
                    call_data(l, run, id, data);
                }
                continue;
            }
            // (Where the C read is absent, only a waker with a hand slot hands over.)
            if run.waker == Waker::Record
                && data.len() <= HAND_OFF_MAX
                && (cfg!(any(feature = "lua54", feature = "lua55")) || run.hand > 0)
                && hand_to_reader(l, run, sid, id, data)
            {
                continue;
            }
            let route = run.route;
            let routed = match catch_unwind(AssertUnwindSafe(|| route(sid, data))) {
                Ok(r) => r,
                // Reported as this message's callback error; delivery resumes after it.
                Err(payload) => {
                    forget_tail(l, run);
                    raise_panic(l, payload)
                }
            };
            match routed {
                Routed::Normal => {
                    if run.has_data {
                        call_data(l, run, id, data);
                    }
                }
                Routed::Readable(n) => {
                    if run.waker == Waker::Record {
                        super::co::wake_record(l, S_READER, S_QUEUE, run.slot, id, &mut run.tail);
                    } else if run.waker == Waker::Plain {
                        super::co::wake(l, S_READER, S_QUEUE, id, &mut run.tail);
                    } else if run.has_readable {
                        forget_tail(l, run);
                        ffi::lua_pushvalue(l, S_READABLE);
                        ffi::lua_pushinteger(l, id);
                        ffi::lua_pushinteger(l, n as ffi::lua_Integer);
                        ffi::lua_call(l, 2, 0);
                    }
                }
                Routed::Frames(frames) => {
                    forget_tail(l, run);
                    run.frames = frames;
                    run.frame_pos = 0;
                    run.frame_id = id;
                    deliver_frames(l, run);
                }
            }
        }
        forget_tail(l, run);
        0
    }
}

/// The largest arrival handed straight to a waiting reader. Larger ones go through the
/// read buffer. Measured on a stream of 128 KiB reads: with glibc's allocator (PUC Lua),
/// strings made at delivery with no buffer kept in between let it give the heap top
/// back to the kernel after every collection and fault it in again (a `brk` per poll,
/// 13 % less throughput), where the kept buffer avoided that, so the bound is 16 KiB
/// there; LuaJIT's own allocator does not (its reads stop at 127 KiB, all handed over:
/// +15 % stream throughput, half the user time per read).
#[cfg(not(feature = "luajit"))]
const HAND_OFF_MAX: usize = 16 * 1024;
#[cfg(feature = "luajit")]
const HAND_OFF_MAX: usize = 128 * 1024;

/// Bytes for a socket of the coroutine layer whose reader waits for whatever comes
/// while its read buffer is empty: given to the reader as one string and the reader
/// woken as the waker does, without a copy into the buffer and out again. False, with
/// nothing done, otherwise. Such a reader is, on Lua 5.4 and 5.5, one parked in the C
/// `read` (its frame shows the token, see `coread.rs`; the string replaces the token);
/// elsewhere (LuaJIT, 5.1: the Lua `read`), one whose record field `run.hand` is `true`
/// (the string replaces it there).
///
/// A memory error raised by the string leaves everything as it was (the message is
/// lost, as a callback's argument would be); one raised by the wake leaves the bytes
/// with the reader, where it still finds them when it runs (its frame or field then no
/// longer says it waits, so later bytes go through the buffer and the waker).
///
/// # Safety
///
/// `l` is inside `deliver_loop` with its slots set up, a `Waker::Record` cached and 4
/// free stack slots.
unsafe fn hand_to_reader(
    l: *mut ffi::lua_State,
    run: &mut Run,
    sid: u64,
    id: ffi::lua_Integer,
    data: &[u8],
) -> bool {
    // SAFETY: as the function's # Safety note; the record stays at `top + 1` while the
    // coroutine and the string are pushed above it. On 5.4/5.5 `co` is a suspended
    // coroutine (its status is checked) parked in `read`, whose frame has room for the
    // value moved (a parked read's frame holds 3 values of the LUA_MINSTACK (20) slots
    // a C function is given).
    unsafe {
        let top = ffi::lua_gettop(l);
        let rec = top + 1;
        let mut handed = false;
        if super::co::raw_get_id(l, S_READER, id) == ffi::LUA_TTABLE
            && ffi::lua_rawgeti(l, rec, run.slot as _) == ffi::LUA_TTHREAD
        {
            let co = ffi::lua_tothread(l, -1); // [rec, co]
            if reader_waits(l, run, rec, co) && crate::lua::buffer::can_hand_over(run.st, sid) {
                ffi::lua_pushlstring(l, data.as_ptr() as *const c_char, data.len());
                #[cfg(any(feature = "lua54", feature = "lua55"))]
                {
                    ffi::lua_xmove(l, co, 1);
                    ffi::lua_replace(co, 3); // in place of PARKED_IN_READ
                }
                #[cfg(not(any(feature = "lua54", feature = "lua55")))]
                super::co::raw_set_id(l, rec, run.hand);
                super::co::enqueue(l, rec, S_QUEUE, run.slot, &mut run.tail); // [rec]
                handed = true;
            }
        }
        ffi::lua_settop(l, top);
        handed
    }
}

/// Whether the reader `co` of the record at `rec` waits for whatever comes, so that
/// `hand_to_reader` may give it bytes: on 5.4/5.5, parked in the C `read`.
///
/// # Safety
///
/// As `hand_to_reader`, with `co` the record's reader (suspended).
#[cfg(any(feature = "lua54", feature = "lua55"))]
#[inline(always)]
unsafe fn reader_waits(
    _l: *mut ffi::lua_State,
    _run: &Run,
    _rec: c_int,
    co: *mut ffi::lua_State,
) -> bool {
    // SAFETY: as the function's # Safety note.
    unsafe { super::coread::parked_in_read(co) }
}

/// Elsewhere (no C `read`): its record field `run.hand` is `true`.
///
/// # Safety
///
/// As `hand_to_reader`, with the record at `rec` (one slot is pushed and popped).
#[cfg(not(any(feature = "lua54", feature = "lua55")))]
#[inline(always)]
unsafe fn reader_waits(
    l: *mut ffi::lua_State,
    run: &Run,
    rec: c_int,
    _co: *mut ffi::lua_State,
) -> bool {
    // SAFETY: as the function's # Safety note.
    unsafe {
        if run.hand <= 0 {
            return false;
        }
        let kind = ffi::lua_rawgeti(l, rec, run.hand as _);
        let yes = kind == ffi::LUA_TBOOLEAN && ffi::lua_toboolean(l, -1) != 0;
        ffi::lua_settop(l, -2);
        yes
    }
}

/// After an error unwound `deliver_loop` with a tail unsaved (a memory error while a
/// wake appended to the queue): write it into the queue of the handler that made those
/// wakes, the handler of the last message taken (no Lua code ran since the wakes, as the
/// tail is saved before any runs, so that socket's handler is the cached one). Without
/// this the woken coroutines, already marked woken, would never run.
///
/// # Safety
///
/// `l` is inside `deliver_data_run`'s closure; `h_idx` and `d_idx` are the handlers'
/// table and the default handler there. Nothing here raises: the stack is checked
/// first, `"readable"` is an existing string, and `queue[0]` an existing key.
unsafe fn save_tail_after_error(l: *mut ffi::lua_State, run: &mut Run, h_idx: c_int, d_idx: c_int) {
    // SAFETY: as the function's # Safety note.
    unsafe {
        let (Some(last), true) = (run.tail.last, run.tail.unsaved) else {
            return;
        };
        run.tail = Tail::default();
        let Some((sid, _)) = run.next.checked_sub(1).and_then(|i| run.batch.data_at(i)) else {
            return;
        };
        let top = ffi::lua_gettop(l);
        if ffi::lua_checkstack(l, 4) == 0 {
            return;
        }
        let mut kind = ffi::LUA_TNIL;
        if run.st.own_handlers.get() > 0 {
            kind = super::co::raw_get_id(l, h_idx, sid as ffi::lua_Integer);
            if kind == ffi::LUA_TNIL {
                ffi::lua_settop(l, top);
            }
        }
        if kind == ffi::LUA_TNIL {
            ffi::lua_pushvalue(l, d_idx);
            kind = ffi::lua_type(l, -1);
        }
        if kind == ffi::LUA_TTABLE {
            ffi::lua_pushstring(l, c"readable".as_ptr());
            ffi::lua_rawget(l, -2);
            if super::co::waker_kind(l, -1) != Waker::No
                && !ffi::lua_getupvalue(l, -1, 2).is_null()
                && ffi::lua_type(l, -1) == ffi::LUA_TTABLE
            {
                ffi::lua_pushinteger(l, last);
                ffi::lua_rawseti(l, -2, 0);
            }
        }
        ffi::lua_settop(l, top);
    }
}

/// Deliver messages from `start` on while they are `data` messages whose socket's
/// handler is a table without metatable (or no handler at all). `route(id, data)` passes
/// the bytes through the socket's read buffer, if it has one (so it must run exactly
/// once per message; it is not called while `st.buffers` is empty, where it must return
/// `Routed::Normal`): the handler then gets `data(id, s)`, `readable(id, unread)` or
/// one `data` per frame. Returns the index of the first message not delivered and the
/// texts of callback errors, in order.
pub fn deliver_data_run(
    lua: &Lua,
    st: &State,
    batch: &Batch,
    start: usize,
    route: &dyn Fn(u64, &[u8]) -> Routed,
) -> mlua::Result<(usize, Vec<String>)> {
    if batch.data_at(start).is_none() {
        return Ok((start, Vec::new()));
    }
    // The handlers' table by reference (it is never replaced); the default handler
    // cloned, as a callback may replace it (`dispatch`) while the run goes on.
    let handlers = &st.socket_handlers;
    let default = st.default_handler.borrow().clone();
    let mut run = Run {
        st,
        batch,
        route,
        epoch: st.handler_epoch.get(),
        next: start,
        frames: Vec::new(),
        frame_pos: 0,
        frame_id: 0,
        cached: Cached::Nothing,
        has_data: false,
        has_readable: false,
        waker: Waker::No,
        slot: 0,
        hand: 0,
        handler_ptr: std::ptr::null(),
        tail: Tail::default(),
    };
    let mut errors = Vec::new();
    // SAFETY: the closure keeps the stack balanced apart from the two arguments, which
    // exec_raw's guard removes; callbacks run under the lua_pcall of `deliver_loop`, so
    // nothing raises past it, and `run` outlives every call that points to it.
    unsafe {
        lua.exec_raw::<()>((handlers, default), |l| {
            let top = ffi::lua_gettop(l);
            let (h_idx, d_idx) = (top - 1, top);
            ffi::lua_pushcfunction(l, traceback);
            let msgh = ffi::lua_gettop(l);
            loop {
                ffi::lua_pushcfunction(l, deliver_loop);
                ffi::lua_pushlightuserdata(l, &mut run as *mut Run as *mut c_void);
                ffi::lua_pushvalue(l, h_idx);
                ffi::lua_pushvalue(l, d_idx);
                ffi::lua_pushstring(l, c"data".as_ptr());
                ffi::lua_pushstring(l, c"readable".as_ptr());
                if ffi::lua_pcall(l, 5, 0, msgh) == 0 {
                    break;
                }
                let mut len = 0usize;
                let p = ffi::lua_tolstring(l, -1, &mut len);
                errors.push(if p.is_null() {
                    "(error object is not a string)".to_string()
                } else {
                    String::from_utf8_lossy(std::slice::from_raw_parts(p as *const u8, len))
                        .into_owned()
                });
                ffi::lua_pop(l, 1);
                save_tail_after_error(l, &mut run, h_idx, d_idx);
            }
            ffi::lua_pop(l, 1); // the message handler
        })?;
    }
    Ok((run.next, errors))
}

#[cfg(test)]
mod tests {
    use mlua::{Function, Lua, Table, Value};

    use super::deliver_data_run;
    use crate::engine::{Batch, Config, Msg};
    use crate::lua::buffer::{self, ReadBuf};
    use crate::lua::state::State;

    /// One delivery run of [a waker's socket, a callback's socket, a waker's socket,
    /// a waker's socket], the callback pushing to the run queue itself: the wakes'
    /// tail (written once per run of wakes) must be in the queue before the callback
    /// runs and at the end, so nothing is overwritten and every coroutine is queued.
    #[test]
    fn a_callback_between_wakes_finds_the_queue_tail_written() {
        let lua = Lua::new();
        let st = State::new(&lua, Config::default()).expect("state");
        let waker: Function = super::super::co::waker_function(&lua).expect("waker");
        let env: Table = lua
            .load(
                r#"
                local waker = ...
                local queue, socks = { [0] = 0 }, {}
                local cos = {}
                for _, id in ipairs({ 1, 3, 4 }) do
                  cos[id] = coroutine.create(function() end)
                  socks[id] = { true, cos[id] }
                end
                local H = { readable = waker(socks, queue, 2) }
                local C = { data = function(id)
                  local t = queue[0] + 1
                  queue[0] = t
                  queue[t] = "callback " .. id
                end }
                return { queue = queue, cos = cos, H = H, C = C }
                "#,
            )
            .call(waker)
            .expect("setup");
        let h: Value = env.get("H").unwrap();
        let c: Value = env.get("C").unwrap();
        for id in [1u64, 3, 4] {
            st.set_handler(id as i64, h.clone()).unwrap();
            let b = ReadBuf {
                buffered: true,
                ..ReadBuf::default()
            };
            st.buffers.borrow_mut().insert(id, b);
        }
        st.set_handler(2, c).unwrap();
        let mut batch = Batch::new();
        for id in [1u64, 2, 3, 4] {
            batch.push(Msg::Data {
                id,
                owner: 0,
                data: b"x",
            });
        }
        let route = |id: u64, data: &[u8]| buffer::on_data(&st, id, data);
        let (next, errors) = deliver_data_run(&lua, &st, &batch, 0, &route).expect("run");
        assert_eq!((next, errors.len()), (4, 0));
        let queue: Table = env.get("queue").unwrap();
        let cos: Table = env.get("cos").unwrap();
        assert_eq!(queue.raw_get::<i64>(0).unwrap(), 4, "four entries");
        let entry = |i: i64| queue.raw_get::<Value>(i).unwrap();
        assert_eq!(
            entry(1),
            cos.raw_get::<Value>(1).unwrap(),
            "the first reader"
        );
        assert_eq!(
            entry(2),
            Value::String(lua.create_string("callback 2").unwrap()),
            "the callback's entry after it"
        );
        assert_eq!(
            entry(3),
            cos.raw_get::<Value>(3).unwrap(),
            "the second reader"
        );
        assert_eq!(
            entry(4),
            cos.raw_get::<Value>(4).unwrap(),
            "the third reader"
        );
    }

    /// Lua 5.4+: bytes for a socket whose reader is parked in the C `read` with an empty
    /// buffer go straight to it (the buffer never holds them); bytes after them in the
    /// same run go to the buffer, and the reader's next read takes those without waiting.
    /// A reader forgotten after the hand-off (abandoned, closed by force) reads nothing.
    #[cfg(any(feature = "lua54", feature = "lua55"))]
    #[test]
    fn bytes_for_a_parked_read_skip_the_buffer() {
        let lua = Lua::new();
        let st = std::rc::Rc::new(State::new(&lua, Config::default()).expect("state"));
        let waker: Function = super::super::co::waker_function(&lua).expect("waker");
        let coreader = super::super::coread::coreader_function(&lua, &st).expect("coreader");
        let env: Table = lua
            .load(
                r#"
                local waker, coreader = ...
                local PARKED, queue, socks, after = {}, { [0] = 0 }, {}, {}
                local read, setflag = coreader(PARKED, socks,
                  function() error("no Lua read here") end,
                  function(id) after[#after + 1] = id end)
                local function reader(id)
                  local a, e = read(id)
                  if a == false then return a, e end
                  return a, read(id)
                end
                local cos = {}
                for _, id in ipairs({ 7, 8 }) do
                  local co = coroutine.create(reader)
                  socks[id] = { true, nil, co }
                  local ok, v = coroutine.resume(co, id)
                  assert(ok and v == PARKED, "parked in read")
                  assert(socks[id][2] == co)
                  cos[id] = co
                end
                -- Set while they wait (a close waiting elsewhere): the continuation
                -- calls after_park(id) first, as the Lua read does.
                setflag(true)
                return { queue = queue, socks = socks, cos = cos, PARKED = PARKED,
                         after = after, H = { readable = waker(socks, queue, 2) } }
                "#,
            )
            .call((waker, coreader))
            .expect("setup");
        let h: Value = env.get("H").unwrap();
        for id in [7u64, 8] {
            st.set_handler(id as i64, h.clone()).unwrap();
            let b = ReadBuf {
                buffered: true,
                ..ReadBuf::default()
            };
            st.buffers.borrow_mut().insert(id, b);
        }
        let mut batch = Batch::new();
        for (id, data) in [(7u64, &b"one"[..]), (7, b"two"), (8, b"lost")] {
            batch.push(Msg::Data { id, owner: 0, data });
        }
        let route = |id: u64, data: &[u8]| buffer::on_data(&st, id, data);
        let (next, errors) = deliver_data_run(&lua, &st, &batch, 0, &route).expect("run");
        assert_eq!((next, errors.len()), (3, 0));
        let unread = |id: u64| st.buffers.borrow().get(&id).map(|b| b.unread());
        assert_eq!(unread(7), Some(3), "only the second arrival is buffered");
        assert_eq!(unread(8), Some(0), "handed over, not buffered");
        let queue: Table = env.get("queue").unwrap();
        assert_eq!(
            queue.raw_get::<i64>(0).unwrap(),
            2,
            "both readers woken once"
        );
        let got: (bool, String, String) = lua
            .load(
                r#"
                local env = ...
                env.socks[8][2] = nil -- forgotten after the hand-off
                local ok8, a8, b8 = coroutine.resume(env.cos[8])
                assert(ok8 and a8 == false and b8 == "", "a forgotten reader reads nothing")
                local ok, a, b = coroutine.resume(env.cos[7])
                assert(#env.after == 1 and env.after[1] == 7, "after_park(7) once")
                return ok, a, b
                "#,
            )
            .call(env.clone())
            .expect("resume");
        assert_eq!(got, (true, "one".into(), "two".into()));
        assert_eq!(unread(7), Some(0), "taken");
    }
}
