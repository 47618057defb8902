//! `waker(reader, threads, queue)`: the coroutine layer's `readable` handler as a C
//! closure (part of the raw hot-path module `fast`; issue 18).
//!
//! `skysocket.socket` is notified of every arrival on a buffered socket by its
//! handler's `readable(id, unread)`. All that handler does is wake the coroutine
//! parked in a read of that socket, and as a Lua function (plus `sched.ready`) it cost
//! about 1,500 instructions per message on lua5.4. This closure does the same with raw
//! table operations on the three tables of `skysocket.socket`/`skysocket.sched` it
//! holds as upvalues:
//!
//! - `reader[id]` is a coroutine whose `threads[co]` is `true` (parked, waiting): set
//!   `threads[co] = false` and append `co` to `queue` (`queue[0]` is the index of the
//!   last queued entry; the scheduler's run loop resumes them in order);
//! - `reader[id]` is `true` (the last `read(id)` drained the buffer; nothing arrived
//!   since): set it to `false` (something may be buffered now);
//! - anything else: nothing.
//!
//! Only raw gets and sets on tables the Lua side made, so no metamethod and no Lua code
//! runs; a memory error while setting may raise (nothing with a destructor is alive).

use std::ffi::c_int;

use mlua::{ffi, Function, Lua};

const READER: c_int = ffi::lua_upvalueindex(1);
const THREADS: c_int = ffi::lua_upvalueindex(2);
const QUEUE: c_int = ffi::lua_upvalueindex(3);

/// The `readable(id, unread)` closure (see the module comment).
///
/// SAFETY: called by Lua as a C closure made by `waker_new`, whose three upvalues are
/// tables (checked there). Every stack slot used is within the `LUA_MINSTACK` (20)
/// slots a C function gets: at most 4 are pushed at a time.
unsafe extern "C-unwind" fn wake_closure(l: *mut ffi::lua_State) -> c_int {
    let mut isnum: c_int = 0;
    let id = ffi::lua_tointegerx(l, 1, &mut isnum);
    if isnum == 0 {
        return 0;
    }
    ffi::lua_settop(l, 0);
    match ffi::lua_rawgeti(l, READER, id) {
        ffi::LUA_TTHREAD => {
            ffi::lua_pushvalue(l, 1);
            if ffi::lua_rawget(l, THREADS) != ffi::LUA_TBOOLEAN || ffi::lua_toboolean(l, 2) == 0 {
                return 0; // not waiting (queued, running, or not a scheduled coroutine)
            }
            ffi::lua_settop(l, 1);
            ffi::lua_pushvalue(l, 1);
            ffi::lua_pushboolean(l, 0);
            ffi::lua_rawset(l, THREADS);
            ffi::lua_rawgeti(l, QUEUE, 0);
            let tail = ffi::lua_tointegerx(l, 2, std::ptr::null_mut()) + 1;
            ffi::lua_settop(l, 1);
            ffi::lua_rawseti(l, QUEUE, tail);
            ffi::lua_pushinteger(l, tail);
            ffi::lua_rawseti(l, QUEUE, 0);
        }
        ffi::LUA_TBOOLEAN if ffi::lua_toboolean(l, 1) != 0 => {
            ffi::lua_pushboolean(l, 0);
            ffi::lua_rawseti(l, READER, id);
        }
        _ => {}
    }
    0
}

/// `waker(reader, threads, queue)`: checks its arguments (three tables) and returns
/// the closure above with them as upvalues.
///
/// SAFETY: called by Lua as a C function. An argument error longjmps (PUC Lua) or
/// throws (LuaJIT) through this frame only, which holds no Rust value.
unsafe extern "C-unwind" fn waker_new(l: *mut ffi::lua_State) -> c_int {
    for i in 1..=3 {
        if ffi::lua_type(l, i) != ffi::LUA_TTABLE {
            let got = ffi::lua_typename(l, ffi::lua_type(l, i));
            ffi::luaL_where(l, 1);
            ffi::lua_pushfstring(
                l,
                c"bad argument #%d to 'waker' (table expected, got %s)".as_ptr(),
                i,
                got,
            );
            ffi::lua_concat(l, 2);
            ffi::lua_error(l);
        }
    }
    ffi::lua_settop(l, 3);
    ffi::lua_pushcclosure(l, wake_closure, 3);
    1
}

/// The module's `waker` function.
pub fn waker_function(lua: &Lua) -> mlua::Result<Function> {
    // SAFETY: `waker_new` follows the C function protocol (see its comment).
    unsafe { lua.create_c_function(waker_new) }
}
