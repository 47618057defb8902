//! `skysocket.socket`'s `read(id [, n])` as a C closure (part of the raw hot-path
//! module `fast`; issue 18), on Lua 5.3 and later, whose C functions can yield and be
//! continued (`lua_yieldk`, `lua_callk`). On 5.1 and LuaJIT the module has no
//! `coreader` and `read` is the Lua function alone.
//!
//! `coreader(PARKED, socks, lua_read, after_park)` returns `read, setflag`. `socks`
//! is the socket layer's table of records (`{connected, reader, owner}`, see the
//! comment on `socks` in socket.lua); `lua_read(id, n)` is its complete read in Lua;
//! `setflag(b)` tells `read` to leave every wait to `lua_read` (the Lua side sets it
//! while any socket has a timeout or pause, or a `close` waits for a reader);
//! `after_park(id)` is called after a wait while the flag is set (it wakes a waiting
//! closer). `read` does the common turns itself and hands anything else to
//! `lua_read`, so the Lua function stays the one definition of read's behaviour:
//!
//! - `read(id, n)`: `n` bytes if that many are buffered, else `lua_read`;
//! - `read(id)`: unless `rec[2]` is `true` (the last read drained the buffer and
//!   nothing arrived since), everything buffered as one string (then `rec[2] = true`
//!   if it was nil). Otherwise, if the flag is clear, the socket is connected, nobody
//!   else waits on it (`rec[2]` nil or true), the running coroutine owns it (`rec[3]`)
//!   and can yield: it parks the coroutine as the socket's reader (`rec[2] = co`) and
//!   yields the scheduler's `PARKED` value, as the Lua code does. When resumed: if
//!   `rec[2]` is neither `false` (woken by the readable handler) nor this coroutine,
//!   the socket was abandoned or closed by force meanwhile: `false, ""`. Otherwise
//!   what is buffered (with `rec[2] = true`), or, if nothing is (the wake was a close
//!   or an open), `rec[2]` is cleared and `lua_read` takes over.
//!
//! `lua_read` is called from here, so its errors name the caller of `read` one level
//! further up (socket.lua's `LV`).
//!
//! Hand-off (Lua 5.4+): a parked `read` leaves its frame as `[id, rec, PARKED_IN_READ]`
//! (a light userdata), which a suspended coroutine's stack shows on 5.4 and 5.5 (5.3
//! hides a yielded C function's frame). The delivery loop looks for it: when bytes
//! arrive for the socket of such a reader and its read buffer is empty, it puts them,
//! as one string, in place of that token and wakes the reader as the waker does
//! (`fast/deliver.rs`), instead of copying them into the buffer and out again. The
//! continuation returns that string (`rec[2] = true` unless later bytes were buffered
//! meanwhile).

use std::ffi::c_int;

use mlua::{ffi, Function, Lua};

use super::co::raw_get_id;
use super::read::push_taken;
use super::{c_closure, closure_state};
use crate::lua::buffer;
use crate::lua::state::State;

// Upvalues of `read` (1-3 are `c_closure`'s).
const PARKED: c_int = ffi::lua_upvalueindex(4);
const SOCKS: c_int = ffi::lua_upvalueindex(5);
const FLAG: c_int = ffi::lua_upvalueindex(6);
const LUA_READ: c_int = ffi::lua_upvalueindex(7);
const AFTER_PARK: c_int = ffi::lua_upvalueindex(8);
// Stack slots of `read` once it has found the record: the id, the record.
const ID: c_int = 1;
const REC: c_int = 2;

// The slot of a parked `read`'s frame that holds `PARKED_IN_READ`, replaced by the
// bytes the delivery loop hands over.
const DATA_AT: c_int = 3;

const _: () = assert!(std::mem::size_of::<ffi::lua_KContext>() >= std::mem::size_of::<u64>());

/// Its address, as a light userdata, marks the frame of a parked `read`.
static PARKED_IN_READ: u8 = 0;

fn parked_token() -> *mut std::ffi::c_void {
    &PARKED_IN_READ as *const u8 as *mut std::ffi::c_void
}

/// Whether `co` is suspended in this module's `read`, parked (its frame is
/// `[id, rec, PARKED_IN_READ]`, see the module comment) with no bytes handed to it yet:
/// then bytes may be, by replacing slot 3 with them (`lua_replace(co, 3)`).
///
/// # Safety
///
/// `co` is a valid thread of the running state, not the running one (a suspended
/// coroutine's stack is read through the API as `lua_xmove` does).
#[cfg(any(feature = "lua54", feature = "lua55"))]
pub(super) unsafe fn parked_in_read(co: *mut ffi::lua_State) -> bool {
    // SAFETY: as the function's # Safety note; index 3 is within its frame when the
    // top is 3 (a full userdata's address is never that of a static).
    unsafe {
        ffi::lua_status(co) == ffi::LUA_YIELD
            && ffi::lua_gettop(co) == 3
            && ffi::lua_touserdata(co, 3) == parked_token()
    }
}

/// Whether the Lua side asked for every wait to go through `lua_read`.
///
/// # Safety
///
/// `l` is inside `read` (upvalue 6 is the flag, a boolean `setflag` replaces).
unsafe fn flagged(l: *mut ffi::lua_State) -> bool {
    // SAFETY: as the function's # Safety note (an upvalue index of the running closure).
    unsafe { ffi::lua_toboolean(l, FLAG) != 0 }
}

/// Call `lua_read` with the values on the stack as its arguments and return what it
/// returns (through `lua_callk`: it may wait, that is yield).
///
/// # Safety
///
/// `l` is inside `read` or its continuation, with the arguments alone on the stack.
unsafe fn hand_over(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: as the function's # Safety note; one slot is pushed.
    unsafe {
        let n = ffi::lua_gettop(l);
        ffi::lua_pushvalue(l, LUA_READ);
        ffi::lua_insert(l, 1);
        ffi::lua_callk(l, n, ffi::LUA_MULTRET, 0, Some(handed_over));
        ffi::lua_gettop(l)
    }
}

/// `hand_over`'s continuation (after `lua_read` waited): its results are the stack.
///
/// # Safety
///
/// Called by Lua as a continuation of `read`.
unsafe extern "C-unwind" fn handed_over(
    l: *mut ffi::lua_State,
    _status: c_int,
    _ctx: ffi::lua_KContext,
) -> c_int {
    // SAFETY: `l` is the coroutine running `read`'s frame.
    unsafe { ffi::lua_gettop(l) }
}

/// The id argument; `None` unless a positive integer (`lua_read` then reports it).
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

/// `read(id [, n])` (see the module comment).
///
/// # Safety
///
/// Called by Lua only, as a C closure made by `coreader_new` (its upvalues as listed
/// above, checked there). At most 5 slots are pushed (a C function has
/// `LUA_MINSTACK`, 20). `lua_yieldk` and errors longjmp out of this frame, which then
/// holds no Rust value with a destructor.
unsafe extern "C-unwind" fn read_closure(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: see the function's # Safety note.
    unsafe {
        let nargs = ffi::lua_gettop(l);
        let Some(id) = id_arg(l) else {
            return hand_over(l);
        };
        if nargs >= 2 && ffi::lua_type(l, 2) != ffi::LUA_TNIL {
            // read(id, n): n bytes if they are there.
            let mut isnum: c_int = 0;
            let n = ffi::lua_tointegerx(l, 2, &mut isnum);
            if isnum != 0 && n >= 0 && ffi::lua_type(l, 2) == ffi::LUA_TNUMBER {
                ffi::lua_settop(l, 2);
                if raw_get_id(l, SOCKS, id as ffi::lua_Integer) == ffi::LUA_TTABLE
                    && push_taken(l, closure_state(l), id, buffer::pick_n(n as usize))
                {
                    return 1;
                }
                ffi::lua_settop(l, 2);
            }
            return hand_over(l);
        }
        if nargs != ID {
            ffi::lua_settop(l, ID);
        }
        if raw_get_id(l, SOCKS, id as ffi::lua_Integer) != ffi::LUA_TTABLE {
            ffi::lua_settop(l, ID);
            return hand_over(l);
        }
        let r = ffi::lua_rawgeti(l, REC, 2); // [id, rec, r]
        let drained = r == ffi::LUA_TBOOLEAN && ffi::lua_toboolean(l, -1) != 0;
        if !drained {
            if push_taken(l, closure_state(l), id, buffer::pick_some(usize::MAX)) {
                if r == ffi::LUA_TNIL {
                    ffi::lua_pushboolean(l, 1);
                    ffi::lua_rawseti(l, REC, 2);
                }
                return 1;
            }
            if r != ffi::LUA_TNIL {
                ffi::lua_settop(l, ID);
                return hand_over(l); // another reader waits (or was just woken)
            }
        }
        if flagged(l) || ffi::lua_isyieldable(l) == 0 {
            ffi::lua_settop(l, ID);
            return hand_over(l);
        }
        ffi::lua_rawgeti(l, REC, 1); // connected
        ffi::lua_rawgeti(l, REC, 3); // owner (lua_tothread: null unless a coroutine)
        if ffi::lua_toboolean(l, -2) == 0 || ffi::lua_tothread(l, -1) != l {
            ffi::lua_settop(l, ID);
            return hand_over(l);
        }
        // The frame while parked: [id, rec, PARKED_IN_READ] (see the module comment).
        ffi::lua_settop(l, REC);
        ffi::lua_pushlightuserdata(l, parked_token());
        ffi::lua_pushthread(l);
        ffi::lua_rawseti(l, REC, 2);
        ffi::lua_pushvalue(l, PARKED);
        // The id travels in the context (a positive lua_Integer; lua_KContext holds
        // it, see the assertion above).
        ffi::lua_yieldk(l, 1, id as ffi::lua_KContext, Some(read_continue))
    }
}

/// `read`'s continuation after its own wait (see the module comment).
///
/// # Safety
///
/// Called by Lua as the continuation of `read_closure`, in its frame (its upvalues
/// readable): the id and the record at 1 and 2, `PARKED_IN_READ` or the bytes handed
/// over at 3, then whatever the coroutine was resumed with (dropped first: at most 3
/// slots are then pushed).
unsafe extern "C-unwind" fn read_continue(
    l: *mut ffi::lua_State,
    _status: c_int,
    ctx: ffi::lua_KContext,
) -> c_int {
    // SAFETY: see the function's # Safety note.
    unsafe {
        // [id, rec, data] with bytes handed over by the delivery loop, else [id, rec,
        // PARKED_IN_READ] (resume values dropped; the steps below use relative indices).
        if ffi::lua_gettop(l) != DATA_AT {
            ffi::lua_settop(l, DATA_AT);
        }
        let handed = ffi::lua_type(l, DATA_AT) == ffi::LUA_TSTRING;
        let woken = match ffi::lua_rawgeti(l, REC, 2) {
            ffi::LUA_TBOOLEAN => ffi::lua_toboolean(l, -1) == 0,
            ffi::LUA_TTHREAD => ffi::lua_tothread(l, -1) == l,
            _ => false,
        };
        if !woken {
            // Abandoned, or closed by force, meanwhile.
            ffi::lua_pushboolean(l, 0);
            ffi::lua_pushstring(l, c"".as_ptr());
            return 2;
        }
        if handed {
            // [id, rec, data, r]: "drained" (true) unless bytes came after these.
            if buffer::is_empty(closure_state(l), ctx as u64) {
                ffi::lua_pushboolean(l, 1);
            } else {
                ffi::lua_pushnil(l);
            }
            ffi::lua_rawseti(l, REC, 2);
            call_after_park(l, ctx, handed_done);
            return handed_done(l, ffi::LUA_OK, ctx);
        }
        // [id, rec, PARKED_IN_READ, r]: the results below are pushed above r.
        call_after_park(l, ctx, after_park_done);
        after_park_done(l, ffi::LUA_OK, ctx)
    }
}

/// After a wait, while the flag is set: `after_park(id)`, as the Lua read does after
/// its wait (it may wait itself: `k` then continues).
///
/// # Safety
///
/// `l` is in `read`'s frame or a continuation of it, with 2 free stack slots.
unsafe fn call_after_park(
    l: *mut ffi::lua_State,
    ctx: ffi::lua_KContext,
    k: unsafe extern "C-unwind" fn(*mut ffi::lua_State, c_int, ffi::lua_KContext) -> c_int,
) {
    // SAFETY: as the function's # Safety note; the call pops what it pushes.
    unsafe {
        if flagged(l) {
            ffi::lua_pushvalue(l, AFTER_PARK);
            ffi::lua_pushvalue(l, ID);
            ffi::lua_callk(l, 1, 0, ctx, Some(k));
        }
    }
}

/// The end of `read_continue` after a hand-off, also its continuation should
/// `after_park` wait: returns the bytes (stack slot `DATA_AT`).
///
/// # Safety
///
/// Called by Lua as a continuation of `read_continue`, in `read`'s frame (the bytes
/// at `DATA_AT`, a free stack slot).
unsafe extern "C-unwind" fn handed_done(
    l: *mut ffi::lua_State,
    _status: c_int,
    _ctx: ffi::lua_KContext,
) -> c_int {
    // SAFETY: as the function's # Safety note.
    unsafe {
        ffi::lua_pushvalue(l, DATA_AT);
        1
    }
}

/// The rest of `read_continue`, also its continuation should `after_park` wait.
///
/// # Safety
///
/// As `read_continue`, with the stack at [id, rec, PARKED_IN_READ, r].
unsafe extern "C-unwind" fn after_park_done(
    l: *mut ffi::lua_State,
    _status: c_int,
    ctx: ffi::lua_KContext,
) -> c_int {
    // SAFETY: see the function's # Safety note.
    unsafe {
        if push_taken(
            l,
            closure_state(l),
            ctx as u64,
            buffer::pick_some(usize::MAX),
        ) {
            ffi::lua_pushboolean(l, 1);
            ffi::lua_rawseti(l, REC, 2);
            return 1;
        }
        ffi::lua_pushnil(l);
        ffi::lua_rawseti(l, REC, 2);
        ffi::lua_settop(l, ID);
        hand_over(l)
    }
}

/// `setflag(b)`: set or clear the flag, upvalue 6 of `read` (its upvalue 1): a boolean
/// replaced with `lua_setupvalue` (reading it costs `read` less than a userdata would).
///
/// # Safety
///
/// Called by Lua only, as a C closure made by `coreader_new` (upvalue 1 is `read`, a C
/// closure with 8 upvalues). One slot is pushed; `lua_setupvalue` pops it.
unsafe extern "C-unwind" fn setflag_closure(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: as the function's # Safety note.
    unsafe {
        let on = ffi::lua_toboolean(l, 1);
        ffi::lua_pushboolean(l, on);
        ffi::lua_setupvalue(l, ffi::lua_upvalueindex(1), 6);
        0
    }
}

/// `coreader(PARKED, socks, lua_read, after_park)` -> `read, setflag` (see the module
/// comment); `read` shares this function's State upvalues.
///
/// # Safety
///
/// Called by Lua only, as a C closure made by `c_closure`. An argument error longjmps
/// (PUC Lua) through this frame, which holds no Rust value.
unsafe extern "C-unwind" fn coreader_new(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: see the function's # Safety note; at most 9 slots are pushed above the
    // 4 arguments, after `lua_checkstack`.
    unsafe {
        let wanted = [
            (
                2,
                ffi::LUA_TTABLE,
                c"bad argument #2 to 'coreader' (table expected)",
            ),
            (
                3,
                ffi::LUA_TFUNCTION,
                c"bad argument #3 to 'coreader' (function expected)",
            ),
            (
                4,
                ffi::LUA_TFUNCTION,
                c"bad argument #4 to 'coreader' (function expected)",
            ),
        ];
        for (i, kind, msg) in wanted {
            if ffi::lua_type(l, i) != kind {
                ffi::luaL_where(l, 1);
                ffi::lua_pushstring(l, msg.as_ptr());
                ffi::lua_concat(l, 2);
                ffi::lua_error(l);
            }
        }
        ffi::lua_settop(l, 4);
        if ffi::lua_checkstack(l, 10) == 0 {
            ffi::lua_pushstring(l, c"coreader: stack overflow".as_ptr());
            ffi::lua_error(l);
        }
        for i in 1..=3 {
            ffi::lua_pushvalue(l, ffi::lua_upvalueindex(i));
        }
        ffi::lua_pushvalue(l, 1); // PARKED
        ffi::lua_pushvalue(l, 2); // socks
        ffi::lua_pushboolean(l, 0); // the flag
        ffi::lua_pushvalue(l, 3); // lua_read
        ffi::lua_pushvalue(l, 4); // after_park
        ffi::lua_pushcclosure(l, read_closure, 8); // 5
        ffi::lua_pushvalue(l, 5);
        ffi::lua_pushcclosure(l, setflag_closure, 1); // 6
        2
    }
}

/// The module's `coreader` function.
pub fn coreader_function(lua: &Lua, st: &std::rc::Rc<State>) -> mlua::Result<Function> {
    c_closure(lua, st, c"read", coreader_new)
}
