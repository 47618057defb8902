//! `readn`/`readline`/`readsome` as raw C closures: one string pushed straight from
//! the socket's Rust read buffer (the coroutine layer calls them for every read).

use std::ffi::{c_char, c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use mlua::{ffi, Function, Lua};

use super::{
    arg_error, arg_typename, c_closure, check_id, check_integer, closure_state, raise_panic,
};
use crate::lua::buffer;
use crate::lua::state::State;

const READN: u8 = 0;
const READLINE: u8 = 1;
const READSOME: u8 = 2;

/// Check argument `i` as a byte count >= 0; `None` when it is absent and optional.
///
/// # Safety
///
/// `l` must be a valid state inside a C function call (as `arg_error` when it raises).
unsafe fn check_size(
    l: *mut ffi::lua_State,
    i: c_int,
    optional: bool,
    what: &CStr,
) -> Option<usize> {
    // SAFETY: the caller upholds this function's contract (see # Safety).
    unsafe {
        if optional && ffi::lua_type(l, i) <= ffi::LUA_TNIL {
            return None;
        }
        let v = check_integer(l, i);
        if v < 0 {
            arg_error(l, i, what.as_ptr());
        }
        Some(v as usize)
    }
}

/// `readn(id, n)`, `readline(id [, sep])`, `readsome(id [, max])` as C closures: one
/// Lua string pushed straight from the socket's Rust buffer, or nil.
///
/// # Safety
///
/// Called by Lua only, as a C function: `l` is a valid state inside that call.
unsafe extern "C-unwind" fn read_closure<const KIND: u8>(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: Lua calls this with a valid state, as a C function (see # Safety).
    unsafe {
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
        // Arguments are checked.
        let found = match KIND {
            READN => push_taken(l, st, id, buffer::pick_n(n)),
            READLINE => push_taken(l, st, id, buffer::pick_line(sep)),
            _ => push_taken(l, st, id, buffer::pick_some(n)),
        };
        if !found {
            ffi::lua_pushnil(l);
        }
        1
    }
}

/// Push the bytes `pick` chooses from `id`'s buffer as one string; false (nothing
/// pushed) if the socket has no buffer or `pick` finds nothing.
///
/// # Safety
///
/// `l` is inside a C function call with a free stack slot. A memory error raised by
/// the push leaves the buffer table borrowed (later reads then find nothing); no
/// other Rust value is alive across it. The Rust steps run under `catch_unwind`, the
/// string is pushed between them.
pub(super) unsafe fn push_taken(
    l: *mut ffi::lua_State,
    st: &State,
    id: u64,
    pick: impl FnOnce(&mut buffer::ReadBuf) -> Option<(usize, usize, usize)>,
) -> bool {
    // SAFETY: as the function's # Safety note.
    unsafe {
        match catch_unwind(AssertUnwindSafe(|| buffer::begin_take(st, id, pick))) {
            Err(payload) => raise_panic(l, payload),
            Ok(None) => false,
            Ok(Some(taking)) => {
                let bytes = taking.bytes();
                ffi::lua_pushlstring(l, bytes.as_ptr() as *const c_char, bytes.len());
                if let Err(payload) = catch_unwind(AssertUnwindSafe(|| taking.finish(st))) {
                    raise_panic(l, payload);
                }
                true
            }
        }
    }
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
