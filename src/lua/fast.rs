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

use std::ffi::{c_char, c_int, c_void, CStr};

use mlua::{ffi, AnyUserData, Function, Lua, Value};

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

/// Check argument `i` as a socket id (a positive integer).
unsafe fn check_id(l: *mut ffi::lua_State, i: c_int) -> u64 {
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

/// `send(id, data)` as a C closure (`LOW`: `lwrite`). Upvalues: 1 = `*const State`,
/// 2 = the function's name for errors, 3 = the userdata keeping State alive.
unsafe extern "C-unwind" fn send_closure<const LOW: bool>(l: *mut ffi::lua_State) -> c_int {
    let id = check_id(l, 1);
    let t = ffi::lua_type(l, 2);
    if t != ffi::LUA_TSTRING && t != ffi::LUA_TNUMBER {
        let got = arg_typename(l, 2);
        let msg = ffi::lua_pushfstring(l, c"string expected, got %s".as_ptr(), got);
        arg_error(l, 2, msg);
    }
    let mut len: usize = 0;
    let ptr = ffi::lua_tolstring(l, 2, &mut len);
    let prio = if LOW { Priority::Low } else { Priority::High };
    // SAFETY: upvalue 1 is the State pointer, kept alive by upvalue 4.
    let st = &*(ffi::lua_touserdata(l, ffi::lua_upvalueindex(1)) as *const State);
    // SAFETY: the string stays on the stack (argument 2) for the whole call.
    let data = std::slice::from_raw_parts(ptr as *const u8, len);
    match send_bytes(st, id, data, prio) {
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
    if v < 0 {
        arg_error(l, i, what.as_ptr());
    }
    Some(v as usize)
}

/// `readn(id, n)`, `readline(id [, sep])`, `readsome(id [, max])` as C closures: one
/// Lua string pushed straight from the socket's Rust buffer, or nil.
unsafe extern "C-unwind" fn read_closure<const KIND: u8>(l: *mut ffi::lua_State) -> c_int {
    let id = check_id(l, 1);
    let push = |bytes: &[u8]| ffi::lua_pushlstring(l, bytes.as_ptr() as *const c_char, bytes.len());
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
    // SAFETY: upvalue 1 is the State pointer, kept alive by upvalue 3.
    let st = &*(ffi::lua_touserdata(l, ffi::lua_upvalueindex(1)) as *const State);
    // Arguments are checked: from here on nothing raises except a memory error while
    // pushing the string (which would leave the buffer table borrowed; fatal anyway).
    let pushed = match KIND {
        READN => buffer::take_with(st, id, buffer::pick_n(n), push),
        READLINE => buffer::take_with(st, id, buffer::pick_line(sep), push),
        _ => buffer::take_with(st, id, buffer::pick_some(n), push),
    };
    if pushed.is_none() {
        ffi::lua_pushnil(l);
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

/// Deliver messages from `start` on while they are `data` messages whose socket's
/// handler is a table without metatable. `route(id, data)` passes the bytes through the
/// socket's read buffer, if it has one (so it must run exactly once per message): the
/// handler then gets `data(id, s)`, `readable(id, unread)` or one `data` per frame.
/// Returns the index of the first message not delivered and the texts of callback
/// errors, in order.
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
    let epoch = st.handler_epoch.get();
    let mut next = start;
    let mut errors = Vec::new();
    // SAFETY: the closure keeps the stack balanced (every push is popped) apart from the
    // three arguments, which exec_raw's guard removes; only raw reads touch tables, and
    // callbacks run under lua_pcall, so nothing it does can raise past it.
    unsafe {
        lua.exec_raw::<()>((handlers, default, Value::Nil, Value::Nil), |l| {
            let top = ffi::lua_gettop(l);
            let (h_idx, d_idx, data_key, readable_key) = (top - 3, top - 2, top - 1, top);
            ffi::lua_pushstring(l, c"data".as_ptr());
            ffi::lua_replace(l, data_key);
            ffi::lua_pushstring(l, c"readable".as_ptr());
            ffi::lua_replace(l, readable_key);
            ffi::lua_pushcfunction(l, traceback);
            let msgh = ffi::lua_gettop(l);
            // Call handler[key](id, <pushed by `args`>) under lua_pcall; the handler
            // is at the top of the stack and stays there.
            let mut call =
                |l: *mut ffi::lua_State,
                 key: c_int,
                 args: &dyn Fn(*mut ffi::lua_State) -> c_int| {
                    ffi::lua_pushvalue(l, key);
                    ffi::lua_rawget(l, -2);
                    if ffi::lua_type(l, -1) != ffi::LUA_TFUNCTION {
                        ffi::lua_pop(l, 1);
                        return;
                    }
                    let n = args(l);
                    if ffi::lua_pcall(l, n, 0, msgh) != 0 {
                        let mut len = 0usize;
                        let p = ffi::lua_tolstring(l, -1, &mut len);
                        let text = if p.is_null() {
                            "(error object is not a string)".to_string()
                        } else {
                            String::from_utf8_lossy(std::slice::from_raw_parts(p as *const u8, len))
                                .into_owned()
                        };
                        errors.push(text);
                        ffi::lua_pop(l, 1);
                    }
                };
            while next < msgs.len() {
                let m = &msgs[next];
                if m.kind != MsgKind::Data || st.handler_epoch.get() != epoch {
                    break;
                }
                ffi::lua_rawgeti(l, h_idx, m.id as ffi::lua_Integer);
                if ffi::lua_type(l, -1) == ffi::LUA_TNIL {
                    ffi::lua_pop(l, 1);
                    ffi::lua_pushvalue(l, d_idx);
                }
                let t = ffi::lua_type(l, -1);
                if t == ffi::LUA_TTABLE && ffi::lua_getmetatable(l, -1) != 0 {
                    ffi::lua_settop(l, msgh); // handler and its metatable: the slow path decides
                    break;
                }
                if t != ffi::LUA_TTABLE && t != ffi::LUA_TNIL {
                    ffi::lua_settop(l, msgh); // a userdata handler: slow path
                    break;
                }
                let id = m.id as ffi::lua_Integer;
                let data = batch.data(m);
                next += 1;
                match route(m.id, data) {
                    _ if t == ffi::LUA_TNIL => {} // no handler at all: skipped
                    Routed::Normal => call(l, data_key, &|l| {
                        ffi::lua_pushinteger(l, id);
                        ffi::lua_pushlstring(l, data.as_ptr() as *const c_char, data.len());
                        2
                    }),
                    Routed::Readable(n) => call(l, readable_key, &|l| {
                        ffi::lua_pushinteger(l, id);
                        ffi::lua_pushinteger(l, n as ffi::lua_Integer);
                        2
                    }),
                    Routed::Frames(frames) => {
                        for f in &frames {
                            call(l, data_key, &|l| {
                                ffi::lua_pushinteger(l, id);
                                ffi::lua_pushlstring(l, f.as_ptr() as *const c_char, f.len());
                                2
                            });
                        }
                    }
                }
                ffi::lua_settop(l, msgh); // drops the handler
            }
            ffi::lua_pop(l, 1); // the message handler
        })?;
    }
    Ok((next, errors))
}
