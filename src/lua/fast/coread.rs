//! `coread(rec, id, slow)`: the common case of the coroutine layer's `read(id)` in C
//! (part of the raw hot-path module `fast`; issue 18), on Lua 5.3 and later, whose
//! C functions can yield and be continued (`lua_yieldk`). On 5.1 and LuaJIT the
//! module has no `coreader` and `skysocket.socket` reads in Lua only.
//!
//! `rec` is the socket's record in `skysocket.socket` (`{connected, reader, owner}`,
//! see the comment on `socks` there) and `id` its socket id. The closure:
//!
//! 1. unless `rec[2]` is `true` (the last read drained the buffer and nothing arrived
//!    since), takes everything buffered for `id` as one string and returns it
//!    (setting `rec[2] = true` if it was nil: the buffer is now empty);
//! 2. otherwise, if `slow` is false (no socket has a timeout or was paused), the
//!    socket is connected, nobody else waits on it (`rec[2]` nil or true), the running
//!    coroutine owns it (`rec[3]`) and can yield: parks the coroutine as the
//!    socket's reader (`rec[2] = co`) and yields the scheduler's `PARKED` value, as
//!    the Lua code does;
//! 3. when resumed: if `rec[2]` is neither `false` (woken by the readable handler) nor
//!    this coroutine, the socket was abandoned or closed by force meanwhile: returns
//!    `false`. Otherwise it takes what is buffered as in 1 (returning it, with
//!    `rec[2] = true`), or, with nothing there (the wake was a close or an open),
//!    clears `rec[2]` and returns nothing.
//!
//! Returns nothing (nil) whenever the Lua code must take over: in 2 when any condition
//! fails (Lua then raises the error, arms the timeout or reports the close), in 3 when
//! nothing was buffered. So the Lua side stays the one definition of read's
//! behaviour; this only does its most frequent turn without running Lua code.

use std::ffi::{c_char, c_int};
use std::panic::{catch_unwind, AssertUnwindSafe};

use mlua::{ffi, Function, Lua};

use super::{c_closure, closure_state, raise_panic};
use crate::lua::buffer;
use crate::lua::state::State;

const REC: c_int = 1;
const ID: c_int = 2;
const SLOW: c_int = 3;
/// The scheduler's `PARKED` value (upvalues 1-3 are `c_closure`'s).
const PARKED: c_int = ffi::lua_upvalueindex(4);

/// Push everything buffered for `id` as one string; false (nothing pushed) if the
/// socket has no buffer or nothing is buffered.
///
/// # Safety
///
/// `l` is inside a C function call with a free stack slot. A memory error raised by
/// the push leaves the buffer table borrowed (later reads then find nothing), as in
/// `read_closure`; no other Rust value is alive across it.
unsafe fn push_buffered(l: *mut ffi::lua_State, st: &State, id: u64) -> bool {
    // SAFETY: as the function's # Safety note.
    unsafe {
        let found = catch_unwind(AssertUnwindSafe(|| {
            buffer::begin_take(st, id, buffer::pick_some(usize::MAX))
        }));
        match found {
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

/// The socket id argument; `None` unless a positive integer (Lua takes over).
///
/// # Safety
///
/// `l` is inside a C function call.
unsafe fn id_arg(l: *mut ffi::lua_State) -> Option<u64> {
    // SAFETY: as the function's # Safety note.
    unsafe {
        let mut isnum: c_int = 0;
        let id = ffi::lua_tointegerx(l, ID, &mut isnum);
        (isnum != 0 && id > 0).then_some(id as u64)
    }
}

/// `coread(rec, id, slow)` (see the module comment).
///
/// # Safety
///
/// Called by Lua only, as a C closure made by `coreader_new`: upvalues 1-3 as
/// `c_closure`'s, 4 the `PARKED` value. `rec` is the caller's record table (checked
/// here: anything else returns nil). At most 4 slots are pushed (a C function has
/// `LUA_MINSTACK`, 20). `lua_yieldk`
/// longjmps out of this frame, which then holds no Rust value with a destructor.
unsafe extern "C-unwind" fn coread_closure(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: see the function's # Safety note. Only absolute indices 1-3 are read
    // (an absent one reads as none/nil), so extra arguments do no harm.
    unsafe {
        if ffi::lua_type(l, REC) != ffi::LUA_TTABLE {
            return 0;
        }
        let r = ffi::lua_rawgeti(l, REC, 2); // [.., r]
        let drained = r == ffi::LUA_TBOOLEAN && ffi::lua_toboolean(l, -1) != 0;
        let Some(id) = id_arg(l) else { return 0 };
        if !drained {
            if push_buffered(l, closure_state(l), id) {
                if r == ffi::LUA_TNIL {
                    ffi::lua_pushboolean(l, 1);
                    ffi::lua_rawseti(l, REC, 2);
                }
                return 1;
            }
            if r != ffi::LUA_TNIL {
                return 0; // another reader waits (or was just woken): Lua reports it
            }
        }
        if ffi::lua_toboolean(l, SLOW) != 0 || ffi::lua_isyieldable(l) == 0 {
            return 0;
        }
        ffi::lua_rawgeti(l, REC, 1); // connected
        ffi::lua_rawgeti(l, REC, 3); // owner (lua_tothread: null unless a coroutine)
        if ffi::lua_toboolean(l, -2) == 0 || ffi::lua_tothread(l, -1) != l {
            return 0;
        }
        ffi::lua_pushthread(l);
        ffi::lua_rawseti(l, REC, 2);
        ffi::lua_pushvalue(l, PARKED);
        // The id travels in the context (a positive lua_Integer; isize is 64-bit on
        // every target this builds for, see the assertion below).
        ffi::lua_yieldk(l, 1, id as ffi::lua_KContext, Some(coread_continue))
    }
}

const _: () = assert!(std::mem::size_of::<ffi::lua_KContext>() >= std::mem::size_of::<u64>());

/// `coread`'s continuation: step 3 of the module comment. It runs in `coread`'s
/// frame, so `closure_state` reads the same upvalues.
///
/// # Safety
///
/// Called by Lua as the continuation of `coread_closure`, in its frame: its
/// arguments are at 1-3 (the values the coroutine was resumed with above them).
unsafe extern "C-unwind" fn coread_continue(
    l: *mut ffi::lua_State,
    _status: c_int,
    ctx: ffi::lua_KContext,
) -> c_int {
    // SAFETY: see the function's # Safety note. The values the coroutine was resumed
    // with are dropped first, so at most 2 slots are pushed above the 3 arguments.
    unsafe {
        ffi::lua_settop(l, SLOW);
        let woken = match ffi::lua_rawgeti(l, REC, 2) {
            ffi::LUA_TBOOLEAN => ffi::lua_toboolean(l, -1) == 0,
            ffi::LUA_TTHREAD => ffi::lua_tothread(l, -1) == l,
            _ => false,
        };
        if !woken {
            ffi::lua_pushboolean(l, 0);
            return 1;
        }
        if push_buffered(l, closure_state(l), ctx as u64) {
            ffi::lua_pushboolean(l, 1);
            ffi::lua_rawseti(l, REC, 2);
            return 1;
        }
        ffi::lua_pushnil(l);
        ffi::lua_rawseti(l, REC, 2);
        0
    }
}

/// `coreader(parked)`: a new `coread` closure (above) whose `PARKED` is `parked`,
/// sharing this function's State upvalues.
///
/// # Safety
///
/// Called by Lua only, as a C closure made by `c_closure`.
unsafe extern "C-unwind" fn coreader_new(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: see the function's # Safety note; 4 values are pushed.
    unsafe {
        ffi::lua_settop(l, 1);
        for i in 1..=3 {
            ffi::lua_pushvalue(l, ffi::lua_upvalueindex(i));
        }
        ffi::lua_pushvalue(l, 1);
        ffi::lua_pushcclosure(l, coread_closure, 4);
        1
    }
}

/// The module's `coreader` function.
pub fn coreader_function(lua: &Lua, st: &std::rc::Rc<State>) -> mlua::Result<Function> {
    c_closure(lua, st, c"coreader", coreader_new)
}
