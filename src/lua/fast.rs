//! The hot path in raw Lua-stack code (the only `unsafe` module of the binding).
//!
//! Two things are done here without mlua's high-level wrappers, which cost several
//! thousand instructions per echoed message (see PERF-NOTES and BENCHMARKS.md):
//! - `send`/`write`/`lwrite` are plain C closures: arguments are read in place from the
//!   stack (no copy of the Lua string unless the engine must queue it), errors are raised
//!   with `lua_error` after every Rust value with a destructor has been dropped.
//! - `readn`/`readline`/`readsome` likewise push one string straight from the socket's
//!   Rust read buffer (the coroutine layer calls them for every read).
//! - runs of `data` messages are delivered inside one `exec_raw` entry: for each message
//!   the handler's `data` (or, for a buffered socket, `readable`) function is found with
//!   raw table reads and called with `lua_pcall` (per-message error isolation,
//!   traceback from a message handler).
//!
//! Anything unusual (a handler with a metatable, a userdata handler, any other message
//! kind) is left to the high-level dispatcher, so behaviour is the same on both paths.

use std::any::Any;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, Ordering};

use mlua::{ffi, AnyUserData, Function, Lua};

use super::buffer::{self, Routed};
use super::state::State;
use crate::engine::{Batch, Message, MsgKind, Priority};

/// `lua_typename` of argument `i`, or "no value" past the top.
///
/// SAFETY (for callers): `l` must be a valid state inside a C function call.
unsafe fn arg_typename(l: *mut ffi::lua_State, i: c_int) -> *const c_char {
    if i > ffi::lua_gettop(l) {
        c"no value".as_ptr()
    } else {
        ffi::lua_typename(l, ffi::lua_type(l, i))
    }
}

/// Raise `bad argument #i to 'name' (msg)` at the caller's line, like `luaL_argerror`.
///
/// SAFETY (for callers): no Rust value with a destructor may be alive in the frames
/// this error unwinds through (it longjmps on PUC Lua).
unsafe fn arg_error(l: *mut ffi::lua_State, i: c_int, msg: *const c_char) -> ! {
    let name = ffi::lua_tostring(l, ffi::lua_upvalueindex(2));
    ffi::luaL_where(l, 1);
    ffi::lua_pushfstring(l, c"bad argument #%d to '%s' (%s)".as_ptr(), i, name, msg);
    ffi::lua_concat(l, 2);
    ffi::lua_error(l)
}

/// Raise a Lua error for a Rust panic caught in this module, naming it an internal error.
///
/// Every Rust step of the raw closures runs under `catch_unwind`, and nothing that can
/// raise a Lua error runs inside one: on LuaJIT a Lua error is a foreign exception,
/// and a `catch_unwind` it reaches aborts the process. So a panic comes out of its
/// `catch_unwind` as a value, and only then becomes a Lua error.
///
/// SAFETY (for callers): as `arg_error`.
unsafe fn raise_panic(l: *mut ffi::lua_State, payload: Box<dyn Any + Send>) -> ! {
    let reason = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    };
    drop(payload);
    let text = format!("skysocket internal error (a bug, please report it): {reason}");
    ffi::lua_pushlstring(l, text.as_ptr() as *const c_char, text.len());
    drop(text);
    ffi::lua_error(l)
}

/// Check argument `i` as an integer (`luaL_checkinteger`'s messages).
unsafe fn check_integer(l: *mut ffi::lua_State, i: c_int) -> ffi::lua_Integer {
    let mut isnum: c_int = 0;
    let v = ffi::lua_tointegerx(l, i, &mut isnum);
    if isnum == 0 {
        if ffi::lua_type(l, i) == ffi::LUA_TNUMBER {
            arg_error(l, i, c"number has no integer representation".as_ptr());
        }
        let got = arg_typename(l, i);
        let msg = ffi::lua_pushfstring(l, c"number expected, got %s".as_ptr(), got);
        arg_error(l, i, msg);
    }
    v
}

/// Check argument `i` as a socket id (a positive integer).
unsafe fn check_id(l: *mut ffi::lua_State, i: c_int) -> u64 {
    let v = check_integer(l, i);
    if v <= 0 {
        arg_error(l, i, c"socket id must be a positive integer".as_ptr());
    }
    v as u64
}

/// The engine call behind `send`; returns the failure text, if any.
fn send_bytes(st: &State, id: u64, data: &[u8], prio: Priority) -> Option<String> {
    let Ok(mut eng) = st.engine.try_borrow_mut() else {
        return Some("engine busy".into());
    };
    eng.send(id, data, prio).err().map(|e| e.to_string())
}

/// The State of the only module instance the process ever opened: its closures then
/// find it without reading an upvalue (about 25 instructions per call). Set by the first
/// `open`; a second `open`, or the drop of the first State, turns it into `MANY` for
/// good, and every closure reads its upvalue from then on. A closure of a later
/// instance can never see the first one's pointer: its `open` wrote `MANY` first.
static ONLY_STATE: AtomicPtr<State> = AtomicPtr::new(std::ptr::null_mut());
const MANY: usize = 1;

/// Record a new module instance (see `ONLY_STATE`).
pub fn register_state(st: &std::rc::Rc<State>) {
    let p = std::rc::Rc::as_ptr(st) as *mut State;
    let first =
        ONLY_STATE.compare_exchange(std::ptr::null_mut(), p, Ordering::AcqRel, Ordering::Acquire);
    if first.is_err() {
        ONLY_STATE.store(MANY as *mut State, Ordering::Release);
    }
}

/// A State is going away: its pointer must not be used again.
pub fn forget_state(st: &State) {
    let p = st as *const State as *mut State;
    let _ = ONLY_STATE.compare_exchange(p, MANY as *mut State, Ordering::AcqRel, Ordering::Acquire);
}

/// The State of the running closure (upvalue 1, unless there is only one instance).
///
/// SAFETY (for callers): `l` is inside a closure made by `c_closure`.
unsafe fn closure_state<'a>(l: *mut ffi::lua_State) -> &'a State {
    let only = ONLY_STATE.load(Ordering::Acquire);
    if only as usize > MANY {
        // SAFETY: set from a live Rc<State> and cleared before that State drops; the
        // closure's upvalue 3 keeps the State alive meanwhile.
        &*only
    } else {
        // SAFETY: upvalue 1 is the State pointer, kept alive by upvalue 3.
        &*(ffi::lua_touserdata(l, ffi::lua_upvalueindex(1)) as *const State)
    }
}

/// `send(id, data)` as a C closure (`LOW`: `lwrite`). Upvalues: 1 = `*const State`,
/// 2 = the function's name for errors, 3 = the userdata keeping State alive.
unsafe extern "C-unwind" fn send_closure<const LOW: bool>(l: *mut ffi::lua_State) -> c_int {
    let id = check_id(l, 1);
    let mut len: usize = 0;
    // Strings and numbers (converted in place, as lua_tolstring does), or an array of
    // them (Skynet's `socket.write` takes a table too).
    let ptr = ffi::lua_tolstring(l, 2, &mut len);
    let prio = if LOW { Priority::Low } else { Priority::High };
    let st = closure_state(l);
    let sent = if !ptr.is_null() {
        // SAFETY: the string stays on the stack (argument 2) for the whole call.
        let data = std::slice::from_raw_parts(ptr as *const u8, len);
        catch_unwind(AssertUnwindSafe(|| send_bytes(st, id, data, prio)))
    } else if ffi::lua_type(l, 2) == ffi::LUA_TTABLE {
        let data = gather(l, 2);
        // `data` moves in, so it is dropped even if the send panics.
        catch_unwind(AssertUnwindSafe(move || send_bytes(st, id, &data, prio)))
    } else {
        let got = arg_typename(l, 2);
        let msg = ffi::lua_pushfstring(l, c"string expected, got %s".as_ptr(), got);
        arg_error(l, 2, msg)
    };
    let sent = match sent {
        Ok(sent) => sent,
        Err(payload) => raise_panic(l, payload),
    };
    match sent {
        None => {
            ffi::lua_pushboolean(l, 1);
            1
        }
        Some(text) => {
            ffi::lua_pushboolean(l, 0);
            // Only a memory error can raise here; `text` would then leak, nothing worse.
            ffi::lua_pushlstring(l, text.as_ptr() as *const c_char, text.len());
            drop(text);
            2
        }
    }
}

/// The strings of the array at stack index `t`, joined into one buffer (one copy, and
/// no Lua string is made for the whole). Every item is checked before anything is
/// allocated, so an argument error leaves nothing behind.
///
/// SAFETY (for callers): `l` is inside a C function call; `t` is a table argument.
unsafe fn gather(l: *mut ffi::lua_State, t: c_int) -> Vec<u8> {
    let n = ffi::lua_rawlen(l, t);
    let mut total = 0usize;
    for i in 1..=n {
        ffi::lua_pushinteger(l, i as ffi::lua_Integer);
        ffi::lua_rawget(l, t);
        let kind = ffi::lua_type(l, -1);
        if kind != ffi::LUA_TSTRING && kind != ffi::LUA_TNUMBER {
            let got = ffi::lua_typename(l, kind);
            let msg = ffi::lua_pushfstring(
                l,
                c"array of strings expected, item %d is %s".as_ptr(),
                i as c_int,
                got,
            );
            arg_error(l, t, msg);
        }
        let mut len = 0usize;
        ffi::lua_tolstring(l, -1, &mut len);
        total = total.saturating_add(len);
        ffi::lua_pop(l, 1);
    }
    let mut out = Vec::with_capacity(total);
    for i in 1..=n {
        ffi::lua_pushinteger(l, i as ffi::lua_Integer);
        ffi::lua_rawget(l, t);
        let mut len = 0usize;
        let p = ffi::lua_tolstring(l, -1, &mut len);
        if !p.is_null() {
            // SAFETY: the string is on the stack until the pop below.
            out.extend_from_slice(std::slice::from_raw_parts(p as *const u8, len));
        }
        ffi::lua_pop(l, 1);
    }
    out
}

/// Wrap `f` as a C closure with the upvalues every closure here expects: 1 = the
/// `*const State`, 2 = the function's name for errors, 3 = a userdata holding an `Rc`
/// of the State, which keeps the pointer valid for as long as the closure exists.
fn c_closure(
    lua: &Lua,
    st: &std::rc::Rc<State>,
    name: &'static CStr,
    f: ffi::lua_CFunction,
) -> mlua::Result<Function> {
    let keep: AnyUserData = lua.create_any_userdata(st.clone())?;
    let ptr = std::rc::Rc::as_ptr(st) as *mut c_void;
    // SAFETY: the closure pushes exactly one function on top of the argument it got,
    // which it removes, so mlua reads one result.
    unsafe {
        lua.exec_raw::<Function>(keep, |l| {
            ffi::lua_pushlightuserdata(l, ptr);
            ffi::lua_pushstring(l, name.as_ptr());
            ffi::lua_pushvalue(l, -3);
            ffi::lua_pushcclosure(l, f, 3);
            ffi::lua_remove(l, -2);
        })
    }
}

/// `send`, `write` or `lwrite` (which is `low`).
pub fn send_function(
    lua: &Lua,
    st: &std::rc::Rc<State>,
    name: &'static CStr,
    low: bool,
) -> mlua::Result<Function> {
    c_closure(
        lua,
        st,
        name,
        if low {
            send_closure::<true>
        } else {
            send_closure::<false>
        },
    )
}

/// The raw closure behind the `"raw"` test hook: a panic under `catch_unwind`, raised
/// as a Lua error as every closure here does.
unsafe extern "C-unwind" fn panic_closure(l: *mut ffi::lua_State) -> c_int {
    match catch_unwind(|| -> c_int { panic!("test hook: panic in a raw closure") }) {
        Ok(n) => n,
        Err(payload) => raise_panic(l, payload),
    }
}

/// `_test_panic("raw")`'s closure (see `hooks`).
pub fn panic_function(lua: &Lua, st: &std::rc::Rc<State>) -> mlua::Result<Function> {
    c_closure(lua, st, c"_test_panic", panic_closure)
}

const READN: u8 = 0;
const READLINE: u8 = 1;
const READSOME: u8 = 2;

/// Check argument `i` as a byte count >= 0; `None` when it is absent and optional.
unsafe fn check_size(
    l: *mut ffi::lua_State,
    i: c_int,
    optional: bool,
    what: &CStr,
) -> Option<usize> {
    if optional && ffi::lua_type(l, i) <= ffi::LUA_TNIL {
        return None;
    }
    let v = check_integer(l, i);
    if v < 0 {
        arg_error(l, i, what.as_ptr());
    }
    Some(v as usize)
}

/// `readn(id, n)`, `readline(id [, sep])`, `readsome(id [, max])` as C closures: one
/// Lua string pushed straight from the socket's Rust buffer, or nil.
unsafe extern "C-unwind" fn read_closure<const KIND: u8>(l: *mut ffi::lua_State) -> c_int {
    let id = check_id(l, 1);
    let sep: &[u8] = if KIND == READLINE {
        match ffi::lua_type(l, 2) {
            t if t <= ffi::LUA_TNIL => b"\n",
            ffi::LUA_TSTRING | ffi::LUA_TNUMBER => {
                let mut len = 0usize;
                let p = ffi::lua_tolstring(l, 2, &mut len);
                if len == 0 {
                    arg_error(l, 2, c"separator must not be empty".as_ptr());
                }
                // SAFETY: the string stays on the stack (argument 2) for the whole call.
                std::slice::from_raw_parts(p as *const u8, len)
            }
            _ => {
                let got = arg_typename(l, 2);
                let msg = ffi::lua_pushfstring(l, c"string expected, got %s".as_ptr(), got);
                arg_error(l, 2, msg)
            }
        }
    } else {
        b""
    };
    let n = match KIND {
        READN => check_size(l, 2, false, c"size must be >= 0").unwrap_or(0),
        READSOME => check_size(l, 2, true, c"limit must be >= 0").unwrap_or(usize::MAX),
        _ => 0,
    };
    let st = closure_state(l);
    // Arguments are checked. The Rust steps run under `catch_unwind`; the string is
    // pushed between them (a memory error raised there leaves the buffer table
    // borrowed: later reads then return nil, nothing worse).
    let found = catch_unwind(AssertUnwindSafe(|| match KIND {
        READN => buffer::begin_take(st, id, buffer::pick_n(n)),
        READLINE => buffer::begin_take(st, id, buffer::pick_line(sep)),
        _ => buffer::begin_take(st, id, buffer::pick_some(n)),
    }));
    match found {
        Err(payload) => raise_panic(l, payload),
        Ok(None) => ffi::lua_pushnil(l),
        Ok(Some(taking)) => {
            let bytes = taking.bytes();
            ffi::lua_pushlstring(l, bytes.as_ptr() as *const c_char, bytes.len());
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| taking.finish(st))) {
                raise_panic(l, payload);
            }
        }
    }
    1
}

/// `readn`, `readline` and `readsome` for the module table.
pub fn read_functions(
    lua: &Lua,
    st: &std::rc::Rc<State>,
) -> mlua::Result<[(&'static str, Function); 3]> {
    Ok([
        (
            "readn",
            c_closure(lua, st, c"readn", read_closure::<READN>)?,
        ),
        (
            "readline",
            c_closure(lua, st, c"readline", read_closure::<READLINE>)?,
        ),
        (
            "readsome",
            c_closure(lua, st, c"readsome", read_closure::<READSOME>)?,
        ),
    ])
}

/// Message handler for the per-message `lua_pcall`: append a traceback.
unsafe extern "C-unwind" fn traceback(l: *mut ffi::lua_State) -> c_int {
    let msg = ffi::lua_tostring(l, 1);
    if msg.is_null() {
        ffi::lua_pushstring(l, c"(error object is not a string)".as_ptr());
        return 1;
    }
    ffi::luaL_traceback(l, l, msg, 1);
    1
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

/// Make the handler of socket `id` the cached one (slots `S_*`). `false` when the
/// handler needs the high-level dispatcher (a metatable, or not a table); `force_raw`
/// reads a table's fields raw even if it has a metatable (pending packets must go on).
///
/// SAFETY (for callers): `l` is inside `deliver_loop`, whose slots are set up.
unsafe fn select_handler(
    l: *mut ffi::lua_State,
    run: &mut Run,
    id: ffi::lua_Integer,
    force_raw: bool,
) -> bool {
    // Most servers give no socket its own handler: then the table lookup is skipped.
    let own = run.st.own_handlers.get() > 0 && {
        // Not lua_rawgeti: on Lua 5.1 and LuaJIT it takes a C int, and ids go past 2^31.
        ffi::lua_pushinteger(l, id);
        ffi::lua_rawget(l, A_HANDLERS);
        let found = ffi::lua_type(l, -1) != ffi::LUA_TNIL;
        if !found {
            ffi::lua_pop(l, 1);
        }
        found
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
    run.has_data = ffi::lua_type(l, S_DATA) == ffi::LUA_TFUNCTION;
    run.has_readable = ffi::lua_type(l, S_READABLE) == ffi::LUA_TFUNCTION;
    true
}

/// Deliver the pending framed-mode packets of `run`.
unsafe fn deliver_frames(l: *mut ffi::lua_State, run: &mut Run) {
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

/// The delivery loop, entered through `lua_pcall` by `deliver_data_run` and re-entered
/// after each callback error. Callbacks run with `lua_call`: one protected call covers
/// the whole run instead of one per message. Nothing in this frame has a destructor, so
/// an error unwinding it leaves no Rust state behind (progress lives in `Run`).
unsafe extern "C-unwind" fn deliver_loop(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: argument 1 is the `Run` of the caller's frame, alive during this call.
    let run = &mut *(ffi::lua_touserdata(l, A_RUN) as *mut Run);
    ffi::lua_settop(l, S_READABLE);
    run.cached = Cached::Nothing;
    run.has_data = false;
    run.has_readable = false;
    if run.frame_pos < run.frames.len() {
        // Packets left by a callback error go to the socket's handler as it is now
        // (if a callback made it something other than a table, they are dropped).
        select_handler(l, run, run.frame_id, true);
        deliver_frames(l, run);
    }
    let msgs: &[Message] = run.batch.messages();
    while run.next < msgs.len() {
        let m = &msgs[run.next];
        if m.kind != MsgKind::Data || run.st.handler_epoch.get() != run.epoch {
            break;
        }
        let id = m.id as ffi::lua_Integer;
        // The common case, the module-wide handler already cached, without a call.
        let cached = run.cached == Cached::Default && run.st.own_handlers.get() == 0;
        if !cached && !select_handler(l, run, id, false) {
            break; // the high-level dispatcher takes it from here
        }
        run.next += 1;
        let (batch, route) = (run.batch, run.route);
        let routed = match catch_unwind(AssertUnwindSafe(|| {
            let data = batch.data(m);
            (data, route(m.id, data))
        })) {
            Ok(r) => r,
            // Reported as this message's callback error; delivery resumes after it.
            Err(payload) => raise_panic(l, payload),
        };
        let (data, routed) = routed;
        match routed {
            Routed::Normal => {
                if run.has_data {
                    ffi::lua_pushvalue(l, S_DATA);
                    ffi::lua_pushinteger(l, id);
                    ffi::lua_pushlstring(l, data.as_ptr() as *const c_char, data.len());
                    ffi::lua_call(l, 2, 0);
                }
            }
            Routed::Readable(n) => {
                if run.has_readable {
                    ffi::lua_pushvalue(l, S_READABLE);
                    ffi::lua_pushinteger(l, id);
                    ffi::lua_pushinteger(l, n as ffi::lua_Integer);
                    ffi::lua_call(l, 2, 0);
                }
            }
            Routed::Frames(frames) => {
                run.frames = frames;
                run.frame_pos = 0;
                run.frame_id = id;
                deliver_frames(l, run);
            }
        }
    }
    0
}

/// Deliver messages from `start` on while they are `data` messages whose socket's
/// handler is a table without metatable (or no handler at all). `route(id, data)` passes
/// the bytes through the socket's read buffer, if it has one (so it must run exactly
/// once per message): the handler then gets `data(id, s)`, `readable(id, unread)` or
/// one `data` per frame. Returns the index of the first message not delivered and the
/// texts of callback errors, in order.
pub fn deliver_data_run(
    lua: &Lua,
    st: &State,
    batch: &Batch,
    start: usize,
    route: &dyn Fn(u64, &[u8]) -> Routed,
) -> mlua::Result<(usize, Vec<String>)> {
    let msgs: &[Message] = batch.messages();
    if start >= msgs.len() || msgs[start].kind != MsgKind::Data {
        return Ok((start, Vec::new()));
    }
    let handlers = st.socket_handlers.clone();
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
            }
            ffi::lua_pop(l, 1); // the message handler
        })?;
    }
    Ok((run.next, errors))
}

/// A service's Lua state (and values of it) made movable between the worker threads.
///
/// `Lua` and the `Rc`s of the module state inside it are not `Send`: they must never be
/// used by two threads at once, and no clone of them may stay behind on one thread while
/// another uses the rest. A service's state, its module `State` and the functions kept
/// for delivery are created together, wrapped here together, and never cloned out of
/// this wrapper; the service runtime hands the wrapper to one worker at a time (a
/// service is in the run queue at most once, and its body is taken out of its slot
/// for the whole turn), with the mutex hand-over ordering every access. Neither the Lua
/// interpreters nor mlua keep thread-local data for a state, so which thread runs the
/// next turn does not matter.
pub struct Sendable<T>(pub T);

// SAFETY: see the type's documentation: exclusive, mutex-ordered use by one thread at a
// time of a value whose non-Send parts are all owned by (or reachable only from) it.
unsafe impl<T> Send for Sendable<T> {}

/// A new Lua state for a service, with every standard library (`debug` for the
/// schedulers' tracebacks) and C modules allowed: a service `require`s what its
/// creator could.
pub fn new_service_lua() -> Lua {
    // SAFETY: "unsafe" here means the state may load C code (debug library, C modules),
    // as the interpreter that loaded this module can; nothing else is assumed.
    unsafe { Lua::unsafe_new_with(mlua::StdLib::ALL, mlua::LuaOptions::new()) }
}
